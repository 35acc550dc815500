"""Reading pretrained weights from disk, offline, and copying them into NNX modules with exact checks.

Every loader of the project (wav2vec 2.0, ViT / MAE / Sapiens) does the same three things: read a checkpoint's
tensors by name, rename and reshape them into the project's parameter paths, and copy them into a module. This
module does the first and the last, so every loader reports a bad checkpoint the same way: one line naming the
file and the tensor.

Formats: a Hugging Face directory (`config.json` + `model.safetensors`, a sharded `model.safetensors.index.json`,
or `pytorch_model.bin`) or a single `.safetensors` / `.bin` / `.pth` file. safetensors is read without torch
(bfloat16 tensors too, through jax's ml_dtypes). PyTorch pickles are read only when torch is installed, and only
with `weights_only=True`: never unpickle arbitrary objects from a downloaded file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PYTORCH_BIN = "pytorch_model.bin"
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


class CheckpointError(ValueError):
  """A checkpoint cannot be used; the message names the file and, where there is one, the tensor."""


def read_config(directory: str | os.PathLike) -> dict[str, Any]:
  """`config.json` of a Hugging Face checkpoint directory."""
  path = Path(directory) / "config.json"
  if not path.is_file():
    raise CheckpointError(f"{path}: no config.json (expected a Hugging Face checkpoint directory)")
  try:
    return json.loads(path.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise CheckpointError(f"{path}: not valid JSON ({e})") from None


def weights_file(path: str | os.PathLike) -> Path:
  """The weights file of a checkpoint directory (safetensors preferred), or `path` itself if it is a file."""
  path = Path(path)
  if path.is_file():
    return path
  if not path.is_dir():
    raise CheckpointError(f"{path}: no such checkpoint file or directory")
  for name in (SAFETENSORS, SAFETENSORS_INDEX, PYTORCH_BIN):
    if (path / name).is_file():
      return path / name
  raise CheckpointError(f"{path}: no weights file ({SAFETENSORS}, {SAFETENSORS_INDEX} or {PYTORCH_BIN})")


def read_tensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """All tensors of a checkpoint (file or directory) as numpy arrays, by their names in the file."""
  file = weights_file(path)
  if file.name.endswith(".index.json"):
    return _read_sharded_safetensors(file)
  if file.suffix == ".safetensors":
    return _read_safetensors(file)
  if file.suffix in _PICKLE_SUFFIXES:
    return _read_torch_pickle(file)
  raise CheckpointError(f"{file}: unknown weights format (expected .safetensors or a PyTorch {_PICKLE_SUFFIXES})")


def _read_safetensors(file: Path) -> dict[str, np.ndarray]:
  from safetensors import SafetensorError, safe_open
  try:
    # framework="flax" reads bfloat16 too (numpy alone cannot); np.asarray keeps the dtype via ml_dtypes.
    with safe_open(str(file), framework="flax") as f:
      return {name: np.asarray(f.get_tensor(name)) for name in f.keys()}
  except (SafetensorError, OSError, ValueError) as e:
    raise CheckpointError(f"{file}: unreadable safetensors file ({_truncated_tensor(file) or e})") from None


def _truncated_tensor(file: Path) -> str | None:
  """For a safetensors file cut short (an interrupted download or copy): which tensor lost its bytes."""
  try:
    with open(file, "rb") as f:
      header_size = int.from_bytes(f.read(8), "little")
      header = json.loads(f.read(header_size))
    data_size = file.stat().st_size - 8 - header_size
    ends = sorted((info["data_offsets"][1], name) for name, info in header.items() if name != "__metadata__")
  except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError):
    return None
  for end, name in ends:
    if end > data_size:
      return (f"tensor {name!r} is truncated: its data ends at byte {end} of the data section, the file holds "
              f"{max(data_size, 0)}")
  return None


def _read_sharded_safetensors(index_file: Path) -> dict[str, np.ndarray]:
  try:
    weight_map = json.loads(index_file.read_text())["weight_map"]
  except (json.JSONDecodeError, KeyError, TypeError) as e:
    raise CheckpointError(f"{index_file}: not a safetensors index ({e!r})") from None
  tensors = {}
  for shard in sorted(set(weight_map.values())):
    tensors.update(_read_safetensors(index_file.parent / shard))
  missing = sorted(set(weight_map) - set(tensors))
  if missing:
    raise CheckpointError(f"{index_file}: tensor {missing[0]!r} is listed in the index but in none of its shards")
  return tensors


def _read_torch_pickle(file: Path) -> dict[str, np.ndarray]:
  try:
    import torch
  except ImportError:
    raise CheckpointError(f"{file}: a PyTorch pickle needs torch installed; convert it to safetensors or install "
                          "torch") from None
  try:
    state = torch.load(file, map_location="cpu", weights_only=True)  # Refuses anything but tensors and containers.
  except Exception as e:  # torch raises many types (UnpicklingError, RuntimeError, EOFError) for bad files.
    raise CheckpointError(f"{file}: unreadable PyTorch checkpoint ({type(e).__name__}: {e})".splitlines()[0]) from None
  for wrapper in ("state_dict", "model"):  # mmpretrain / training-loop checkpoints wrap the weights.
    if isinstance(state, Mapping) and isinstance(state.get(wrapper), Mapping):
      state = state[wrapper]
  if not isinstance(state, Mapping):
    raise CheckpointError(f"{file}: expected a mapping of tensors, found {type(state).__name__}")
  tensors = {}
  for name, value in state.items():
    if not isinstance(value, torch.Tensor):
      continue  # Bookkeeping entries (e.g. step counters) carry no weights.
    value = value.detach()
    tensors[name] = (value.float() if value.dtype == torch.bfloat16 else value).numpy()
  return tensors


class TensorSource:
  """The tensors of one checkpoint, taken by name; every tensor must be taken or explicitly ignored.

  A loader `take`s each tensor it maps, then calls `finish()`, which rejects tensors nothing took (a checkpoint
  of another architecture or variant loads loudly, not silently half-way).
  """

  def __init__(self, tensors: Mapping[str, np.ndarray], file: str | os.PathLike):
    self.tensors = dict(tensors)
    self.file = str(file)
    self._taken: set[str] = set()

  @classmethod
  def open(cls, path: str | os.PathLike) -> "TensorSource":
    return cls(read_tensors(path), weights_file(path))

  def __contains__(self, name: str) -> bool:
    return name in self.tensors

  def error(self, name: str, problem: str) -> CheckpointError:
    return CheckpointError(f"{self.file}: tensor {name!r} {problem}")

  def take(self, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """The tensor `name` as float32; with `shape`, checked against it."""
    if name not in self.tensors:
      raise self.error(name, "is missing")
    value = np.asarray(self.tensors[name], dtype=np.float32)
    if shape is not None and value.shape != tuple(shape):
      raise self.error(name, f"has shape {value.shape}, expected {tuple(shape)}")
    if not np.all(np.isfinite(value)):
      raise self.error(name, "has non-finite values")
    self._taken.add(name)
    return value

  def finish(self, ignore: Callable[[str], bool] = lambda name: False) -> None:
    """Raises if any tensor was neither taken nor matched by `ignore`."""
    unexpected = sorted(n for n in self.tensors if n not in self._taken and not ignore(n))
    if unexpected:
      more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
      raise self.error(unexpected[0], f"is unexpected: no parameter of the model takes it{more}")


def param_paths(module: nnx.Module) -> dict[str, tuple[int, ...]]:
  """'/'-joined paths of a module's nnx.Params -> shapes (what `assign` expects as keys)."""
  return {"/".join(map(str, path)): tuple(v.shape) for path, v in nnx.to_flat_state(nnx.state(module, nnx.Param))}


def assign(module: nnx.Module, values: Mapping[str, tuple[str, np.ndarray]], file: str | os.PathLike, *,
           leave_out: Iterable[str] = ()) -> None:
  """Copies values {param path: (checkpoint tensor name, array)} into the module's nnx.Params, in place.

  Every param must get a value except those whose path starts with one of `leave_out` (they keep their fresh
  initialisation, e.g. the prompt tokens and heads on top of a pretrained ViT). A shape mismatch names both the
  checkpoint tensor and the parameter.
  """
  leave_out = tuple(leave_out)
  state = nnx.state(module, nnx.Param)
  flat = dict(nnx.to_flat_state(state))
  paths = {"/".join(map(str, path)): path for path in flat}
  unknown = sorted(set(values) - set(paths))
  if unknown:
    raise CheckpointError(f"{file}: tensor {values[unknown[0]][0]!r} maps to {unknown[0]!r}, which is not a "
                          "parameter of the model")
  missing = sorted(p for p in paths if p not in values and not p.startswith(leave_out))
  if missing:
    raise CheckpointError(f"{file}: no tensor for parameter {missing[0]!r}"
                          + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
  for key, (name, array) in values.items():
    variable = flat[paths[key]]
    if tuple(array.shape) != tuple(variable.shape):
      raise CheckpointError(f"{file}: tensor {name!r} has shape {tuple(array.shape)}, parameter {key!r} expects "
                            f"{tuple(variable.shape)}")
    variable.set_value(jnp.asarray(array, dtype=variable.dtype))
  nnx.update(module, nnx.from_flat_state(flat))

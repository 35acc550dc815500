"""Loading Hugging Face wav2vec 2.0 checkpoints into `synclipmae.models.wav2vec2.Wav2Vec2`, offline.

    model = load_wav2vec2("/path/to/wav2vec2-base")      # a directory with config.json + model.safetensors
    load_into(model.audio_encoder, path)                  # into an existing module (the trainer's path)

A checkpoint directory is what `save_pretrained` writes (or a hub snapshot): `config.json` plus `model.safetensors`
(read without torch) or `pytorch_model.bin` (read only when torch is installed, weights-only). The weights may be
those of `Wav2Vec2Model` (names `feature_extractor.…`) or of a model with a head on top (`Wav2Vec2ForCTC`,
`ForPreTraining`, `ForSequenceClassification`, …: names `wav2vec2.…`); the heads and the pretraining quantizer are
ignored by name, anything else the model does not take is an error.

The position-embedding conv is stored weight-normalised: `…pos_conv_embed.conv.parametrizations.weight.original0`
/ `original1` (torch >= 2.1) or `…weight_g` / `…weight_v` (older), g of shape [1, 1, K] (PyTorch `weight_norm`
with dim=2: one norm per kernel tap, over output and input channels). The encoder is frozen, so the kernel is
folded once here: w = g * v / ||v||.

Every problem is one line that names the file and the tensor (missing, unexpected, mis-shaped, non-finite), or
the config.json field that differs from the model being loaded into.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx

from synclipmae.models import wav2vec2 as model_lib
from synclipmae.pretrained import checkpoint_files as cf

BASE_PREFIX = "wav2vec2."
# Tensors of models built on Wav2Vec2Model that the hidden states do not depend on: heads and the pretraining
# quantizer (CTC, PreTraining, SequenceClassification, AudioFrameClassification, XVector: its `feature_extractor`
# is a Linear head outside the `wav2vec2.` prefix, and `objective` its AM-softmax weight).
HEADS = ("lm_head.", "quantizer.", "project_hid.", "project_q.", "projector.", "classifier.", "layer_weights",
         "feature_extractor.", "tdnn.", "objective.")
_WEIGHT_NORM = (("parametrizations.weight.original0", "parametrizations.weight.original1"),
                ("weight_g", "weight_v"))


def fold_weight_norm(g: np.ndarray, v: np.ndarray) -> np.ndarray:
  """w = g * v / ||v||, the norm over every axis where g has size 1 (PyTorch `weight_norm(dim=2)`: axes 0, 1)."""
  axes = tuple(a for a in range(v.ndim) if g.shape[a] == 1)
  v64 = v.astype(np.float64)
  return (g.astype(np.float64) * v64 / np.sqrt((v64 ** 2).sum(axis=axes, keepdims=True))).astype(np.float32)


def _hf_config(path: str | os.PathLike) -> tuple[dict | None, Path | None]:
  """The checkpoint's config.json (None for a bare weights file with no config.json beside it)."""
  path = Path(path)
  directory = path if path.is_dir() else path.parent
  if (directory / "config.json").is_file():
    return cf.read_config(directory), directory / "config.json"
  if path.is_dir():
    cf.read_config(path)  # Raises: a checkpoint directory must have its config.json.
  return None, None


def read_model_config(path: str | os.PathLike, **overrides) -> model_lib.Wav2Vec2Config:
  """The model config of a checkpoint directory: config.json, and `normalize` from preprocessor_config.json's
  `do_normalize` when that file exists (else the Wav2Vec2Config default, True) unless given in `overrides`."""
  hf, config_file = _hf_config(path)
  if hf is None:
    raise cf.CheckpointError(f"{path}: no config.json (expected a Hugging Face wav2vec 2.0 checkpoint directory)")
  preprocessor = config_file.parent / "preprocessor_config.json"
  if "normalize" not in overrides and preprocessor.is_file():
    try:
      overrides["normalize"] = bool(json.loads(preprocessor.read_text()).get("do_normalize", True))
    except json.JSONDecodeError as e:
      raise cf.CheckpointError(f"{preprocessor}: not valid JSON ({e})") from None
  try:
    return model_lib.Wav2Vec2Config.from_hf(hf, **overrides)
  except model_lib.Wav2Vec2ConfigError as e:
    raise cf.CheckpointError(f"{config_file}: {e}") from None


def _check_config(module: model_lib.Wav2Vec2, path: str | os.PathLike) -> dict | None:
  """Raises if the checkpoint's config.json describes another architecture than the module's."""
  hf, config_file = _hf_config(path)
  if hf is None:
    return None
  try:
    theirs = model_lib.Wav2Vec2Config.from_hf(hf)
  except model_lib.Wav2Vec2ConfigError as e:
    raise cf.CheckpointError(f"{config_file}: {e}") from None
  for field in model_lib.Wav2Vec2Config.ARCHITECTURE:
    ours, value = getattr(module.config, field), getattr(theirs, field)
    if ours != value:
      raise cf.CheckpointError(f"{config_file}: {field}={value!r} but the model was built with {field}={ours!r} "
                               "(choose the matching audio.wav2vec2.geometry, or build it with load_wav2vec2)")
  return hf


def _expected(cfg: model_lib.Wav2Vec2Config) -> dict[str, tuple[str, tuple[int, ...], str]]:
  """param path -> (HF tensor name without prefix, HF shape, how to convert: 'conv', 'linear' or 'copy')."""
  out = {}

  def linear(path, name, i, o):
    out[f"{path}/kernel"] = (f"{name}.weight", (o, i), "linear")
    out[f"{path}/bias"] = (f"{name}.bias", (o,), "copy")

  def norm(path, name, d):
    out[f"{path}/scale"] = (f"{name}.weight", (d,), "copy")
    out[f"{path}/bias"] = (f"{name}.bias", (d,), "copy")

  for i, (dim, kernel) in enumerate(zip(cfg.conv_dim, cfg.conv_kernel)):
    path, name = f"feature_extractor/conv_layers/{i}", f"feature_extractor.conv_layers.{i}"
    out[f"{path}/conv/kernel"] = (f"{name}.conv.weight", (dim, cfg.conv_dim[i - 1] if i else 1, kernel), "conv")
    if cfg.conv_bias:
      out[f"{path}/conv/bias"] = (f"{name}.conv.bias", (dim,), "copy")
    if cfg.feat_extract_norm == "layer" or i == 0:
      norm(f"{path}/layer_norm", f"{name}.layer_norm", dim)
  d = cfg.hidden_size
  norm("feature_projection/layer_norm", "feature_projection.layer_norm", cfg.conv_dim[-1])
  linear("feature_projection/projection", "feature_projection.projection", cfg.conv_dim[-1], d)
  # The pos-conv kernel is handled apart (weight norm); its bias is a plain tensor.
  out["encoder/pos_conv_embed/conv/bias"] = ("encoder.pos_conv_embed.conv.bias", (d,), "copy")
  norm("encoder/layer_norm", "encoder.layer_norm", d)
  for i in range(cfg.num_hidden_layers):
    path, name = f"encoder/layers/{i}", f"encoder.layers.{i}"
    for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
      linear(f"{path}/attention/{proj}", f"{name}.attention.{proj}", d, d)
    norm(f"{path}/layer_norm", f"{name}.layer_norm", d)
    linear(f"{path}/feed_forward/intermediate_dense", f"{name}.feed_forward.intermediate_dense", d,
           cfg.intermediate_size)
    linear(f"{path}/feed_forward/output_dense", f"{name}.feed_forward.output_dense", cfg.intermediate_size, d)
    norm(f"{path}/final_layer_norm", f"{name}.final_layer_norm", d)
  return out


def _pos_conv_kernel(source: cf.TensorSource, prefix: str, cfg: model_lib.Wav2Vec2Config) -> tuple[str, np.ndarray]:
  """The folded position-conv weight [C, C/groups, K] from whichever naming the checkpoint uses."""
  base = f"{prefix}encoder.pos_conv_embed.conv."
  shape = (cfg.hidden_size, cfg.hidden_size // cfg.num_conv_pos_embedding_groups, cfg.num_conv_pos_embeddings)
  for g_name, v_name in _WEIGHT_NORM:
    if base + g_name in source or base + v_name in source:
      g = source.take(base + g_name, (1, 1, cfg.num_conv_pos_embeddings))
      v = source.take(base + v_name, shape)
      norm = np.sqrt((v.astype(np.float64) ** 2).sum(axis=(0, 1)))
      if not np.all(norm > 0):
        raise source.error(base + v_name, f"has a kernel tap with zero norm (tap {int(np.argmin(norm))}): "
                           "the weight norm is undefined")
      return base + v_name, fold_weight_norm(g, v)
  if base + "weight" in source:  # Weight norm already removed (e.g. torch.nn.utils.remove_weight_norm).
    return base + "weight", source.take(base + "weight", shape)
  raise source.error(base + _WEIGHT_NORM[0][0], f"is missing (nor {base}{_WEIGHT_NORM[1][0]} / weight_v, nor "
                     f"{base}weight)")


def load_into(module: model_lib.Wav2Vec2, path: str | os.PathLike) -> None:
  """Copies a Hugging Face wav2vec 2.0 checkpoint (directory or weights file) into `module`, in place."""
  if not isinstance(module, model_lib.Wav2Vec2):
    raise TypeError(f"load_into expects a wav2vec 2.0 module, got {type(module).__name__} (set "
                    "model.audio.encoder='wav2vec2')")
  hf = _check_config(module, path)
  source = cf.TensorSource.open(path)
  cfg = module.config
  prefix = BASE_PREFIX if any(name.startswith(BASE_PREFIX) for name in source.tensors) else ""
  values = {}
  for param, (name, shape, kind) in _expected(cfg).items():
    array = source.take(prefix + name, shape)
    if kind == "conv":  # PyTorch Conv1d [out, in/groups, k] -> Flax [k, in/groups, out].
      array = array.transpose(2, 1, 0)
    elif kind == "linear":  # PyTorch Linear [out, in] -> Flax [in, out].
      array = array.T
    values[param] = (prefix + name, array)
  name, kernel = _pos_conv_kernel(source, prefix, cfg)
  values["encoder/pos_conv_embed/conv/kernel"] = (name, kernel.transpose(2, 1, 0))
  cf.assign(module, values, source.file)

  add_adapter = bool(hf and hf.get("add_adapter"))

  def ignored(tensor: str) -> bool:
    """Parts of the checkpoint the hidden states do not use."""
    if prefix and not tensor.startswith(prefix):
      return tensor.startswith(HEADS)
    local = tensor[len(prefix):]
    return local == "masked_spec_embed" or (add_adapter and local.startswith("adapter."))

  source.finish(ignore=ignored)


def load_wav2vec2(path: str | os.PathLike, *, layers=None, normalize: bool | None = None, dtype=jnp.float32,
                  precision=None) -> model_lib.Wav2Vec2:
  """A `Wav2Vec2` built from a checkpoint directory's config.json, with its weights.

  `normalize`: None takes preprocessor_config.json's `do_normalize` if present, else True (see read_model_config).
  """
  overrides = {} if normalize is None else {"normalize": normalize}
  cfg = read_model_config(path, **overrides)
  # Shapes only (no random init: every parameter is overwritten), then the checkpoint's values.
  model = nnx.eval_shape(lambda: model_lib.Wav2Vec2(cfg, rngs=nnx.Rngs(0), layers=layers, dtype=dtype,
                                                    precision=precision))
  load_into(model, path)
  return model

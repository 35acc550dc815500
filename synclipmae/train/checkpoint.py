"""Checkpoints: orbax `CheckpointManager` holding the train state and the data-iterator state.

Saves are asynchronous (training continues while the arrays are written) and atomic (orbax writes into a
temporary directory and renames it when complete), so a run killed at any moment resumes from the last finished
checkpoint. The data-iterator state is a small JSON dict snapshotted at save time: grain's `MapDataset` iterators
advance in lockstep on every process, so the primary process's state describes every process.

A damaged checkpoint (a truncated or missing file: a storage fault, a partial copy from a bucket) is named in one
line with its step and file (`DamagedCheckpoint`). Resuming (`restore(..., fallback=True)`) skips damaged steps,
newest first, to the newest one that restores, then moves each skipped step out of the managed directory (to
RUN/damaged_checkpoints/STEP, kept for inspection): orbax then neither counts it against `keep` — so no good
checkpoint is deleted to make room for it — nor collides with it when that step is saved again.
"""

from __future__ import annotations

import errno
import os
import re
from typing import Any

import orbax.checkpoint as ocp

from synclipmae import storage


class Checkpoints:
  """The checkpoints of one run directory."""

  def __init__(self, directory: str | os.PathLike, keep: int = 3, async_save: bool = True):
    self.directory = str(storage.path(directory))  # Local or a URL (gs://...; synclipmae/storage.py).
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=async_save)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state: Any, data_state: dict[str, Any] | None) -> None:
    items = {"state": ocp.args.StandardSave(state)}
    if data_state is not None:
      items["data"] = ocp.args.JsonSave(data_state)
    self._manager.save(step, args=ocp.args.Composite(**items), force=True)

  def restore(self, abstract_state: Any, step: int | None = None, with_data: bool = True, fallback: bool = False,
              log=print) -> tuple[Any, dict[str, Any] | None]:
    """Restores onto `abstract_state` (shapes, dtypes and shardings); returns (state, data_state).

    step None: the newest. fallback (resuming a run): damaged newer steps are skipped to the newest one that
    restores, and only then, each said in one line, moved aside (module docstring); if none restores (say, a config
    that no longer matches), nothing is moved. Without fallback a damaged step raises `DamagedCheckpoint`."""
    steps = [step] if step is not None else sorted(self.all_steps(), reverse=True)
    if not steps:
      raise FileNotFoundError(f"{self.directory}: no checkpoint to restore")
    failed = []
    for candidate in steps:
      try:
        restored = self._restore(abstract_state, candidate, with_data)
      except Exception as e:  # orbax / TensorStore raise ValueError, OSError, JSONDecodeError... for damaged files.
        damage = DamagedCheckpoint(self.directory, candidate, e, [s for s in self.all_steps() if s < candidate])
        if not fallback or step is not None:
          raise damage from e
        failed.append(damage)
        continue
      for damage in failed:
        log(f"skipping checkpoint step {damage.step}: {damage.reason} (moved to {self._set_aside(damage.step)}); "
            f"resuming from step {candidate}")
      return restored
    raise ValueError(f"{self.directory}: no checkpoint restores, none was moved: " + "; ".join(
        f"step {d.step}: {d.reason}" for d in failed)) from failed[0].error

  def _restore(self, abstract_state: Any, step: int, with_data: bool) -> tuple[Any, dict[str, Any] | None]:
    self._verify(step)
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    if with_data and "data" in (self._manager.item_metadata(step) or {}):
      items["data"] = ocp.args.JsonRestore()
    restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    return restored["state"], restored.get("data") if "data" in items else None

  def _verify(self, step: int) -> None:
    """Reads every stored byte of the step's arrays once, synchronously (TensorStore, in parallel): damage is found
    here, as one error, instead of halfway through orbax's asynchronous restore, whose abandoned reads would print
    hundreds of tracebacks after it. Costs about one more read of the checkpoint."""
    import tensorstore as ts
    path = storage.path(self.directory) / str(step) / "state"
    manifest = path / "manifest.ocdbt"
    if not manifest.exists():
      raise FileNotFoundError(errno.ENOENT, "no OCDBT manifest", str(manifest))
    base = f"{path}/" if storage.is_url(path) else f"file://{path}/"  # TensorStore's kvstore URL (gs:// as is).
    store = ts.KvStore.open({"driver": "ocdbt", "base": base}).result()
    for read in [store.read(key) for key in store.list().result()]:
      read.result()

  def _set_aside(self, step: int) -> str:
    """Moves a damaged step out of the managed directory (process 0 of a multi-process run; the others wait)."""
    import jax
    directory = storage.path(self.directory)
    target = directory.parent / "damaged_checkpoints" / str(step)
    if jax.process_index() == 0:
      target.parent.mkdir(parents=True, exist_ok=True)
      if target.exists():
        target.rmtree()  # An older copy of the same step, damaged before: the newer one replaces it.
      (directory / str(step)).rename(target)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      multihost_utils.sync_global_devices(f"set aside damaged checkpoint {step}")
    self._manager.reload()
    return str(target)

  def wait(self) -> None:
    """Blocks until any save in flight is on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


class DamagedCheckpoint(ValueError):
  """A checkpoint step that does not restore: names the step, the damaged file (as far as the error says) and the
  steps older than it."""

  def __init__(self, directory: str, step: int, error: BaseException, older_steps: list[int]):
    self.directory, self.step, self.error = directory, step, error
    self.file, self.reason = damaged_file(error, os.path.join(directory, str(step)))
    older = (f"; older checkpoints: {', '.join(map(str, older_steps))} (choose one with --step / step=)"
             if older_steps else "")
    super().__init__(f"{directory}: checkpoint step {step} is damaged: {self.reason}{older}")


def damaged_file(error: BaseException, step_dir: str) -> tuple[str, str]:
  """(file, one-line reason) from a restore error: TensorStore names the file it failed on as `local file "..."`
  (the last one is the innermost), Python's file errors carry it; else the step directory is all we know."""
  text = str(error).split(" [tensorstore_spec")[0].strip()
  files = re.findall(r'local file "([^"]+)"', text) or re.findall(r"File (\S+) not found", text)
  if getattr(error, "filename", None):
    files.append(str(error.filename))
  where = files[-1] if files else step_dir
  detail = text.rsplit(where, 1)[-1].strip(' "\':.') if files else text
  if not detail:
    detail = text.split(":", 1)[0]  # TensorStore's status, e.g. NOT_FOUND.
  return where, f"{where}: {type(error).__name__}: {detail.splitlines()[0][:300]}"


def load_config(workdir: str | os.PathLike):
  """The config a run in `workdir` was trained with (its `config.json`)."""
  import json

  import ml_collections
  path = storage.path(workdir) / "config.json"
  if not path.exists():
    raise FileNotFoundError(f"{path} not found: {workdir} is not a pretraining workdir")
  return ml_collections.ConfigDict(json.loads(path.read_text()))


def load_model(workdir: str | os.PathLike, step: int | None = None):
  """(model, config, step) from a pretraining workdir: the API evaluators, notebooks and users call."""
  import jax
  from flax import nnx

  from synclipmae.train import sharding
  from synclipmae.train.step import abstract_train_state
  config = load_config(workdir)
  graphdef, abstract, _ = abstract_train_state(config, sharding.make_mesh(1, 1, devices=jax.devices()[:1]))
  checkpoints = Checkpoints(storage.path(workdir) / "checkpoints", async_save=False)
  try:
    state, _ = checkpoints.restore(abstract, step=step, with_data=False)
  finally:
    checkpoints.close()
  return nnx.merge(graphdef, state.params, state.frozen), config, int(state.step)

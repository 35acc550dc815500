"""Checkpoints: orbax `CheckpointManager` holding the train state and the data-iterator state.

Saves are asynchronous (training continues while the arrays are written) and atomic (orbax writes into a
temporary directory and renames it when complete), so a run killed at any moment resumes from the last finished
checkpoint. The data-iterator state is a small JSON dict snapshotted at save time: grain's `MapDataset` iterators
advance in lockstep on every process, so the primary process's state describes every process.
"""

from __future__ import annotations

import os
from typing import Any

import orbax.checkpoint as ocp


class Checkpoints:
  """The checkpoints of one run directory."""

  def __init__(self, directory: str | os.PathLike, keep: int = 3, async_save: bool = True):
    self.directory = os.path.abspath(directory)
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

  def restore(self, abstract_state: Any, step: int | None = None, with_data: bool = True
              ) -> tuple[Any, dict[str, Any] | None]:
    """Restores onto `abstract_state` (shapes, dtypes and shardings); returns (state, data_state)."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"{self.directory}: no checkpoint to restore")
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    if with_data and "data" in (self._manager.item_metadata(step) or {}):
      items["data"] = ocp.args.JsonRestore()
    restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    return restored["state"], restored.get("data") if "data" in items else None

  def wait(self) -> None:
    """Blocks until any save in flight is on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


def load_config(workdir: str | os.PathLike):
  """The config a run in `workdir` was trained with (its `config.json`)."""
  import json

  import ml_collections
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} not found: {workdir} is not a pretraining workdir")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def load_model(workdir: str | os.PathLike, step: int | None = None):
  """(model, config, step) from a pretraining workdir: the API evaluators, notebooks and users call."""
  import jax
  from flax import nnx

  from synclipmae.train import sharding
  from synclipmae.train.step import abstract_train_state
  config = load_config(workdir)
  graphdef, abstract, _ = abstract_train_state(config, sharding.make_mesh(1, 1, devices=jax.devices()[:1]))
  checkpoints = Checkpoints(os.path.join(workdir, "checkpoints"), async_save=False)
  try:
    state, _ = checkpoints.restore(abstract, step=step, with_data=False)
  finally:
    checkpoints.close()
  return nnx.merge(graphdef, state.params, state.frozen), config, int(state.step)

"""Meshes and sharding rules: one `jax.sharding.Mesh` with axes ("data", "fsdp").

The batch is split over both axes. A parameter (and its optimiser state) is sharded over "fsdp" along its largest
dimension that divides evenly, and replicated otherwise; with fsdp=1 everything is replicated (plain data
parallelism). The model itself carries no sharding annotations: these rules are the only place sharding is decided,
and XLA inserts the collectives (including those of the global-batch contrastive loss).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

BATCH_AXES = ("data", "fsdp")
_MIN_SHARDED_SIZE = 2 ** 14  # Small tensors (biases, norms) stay replicated: sharding them costs more than it saves.


def make_mesh(data: int = -1, fsdp: int = 1, devices: list[jax.Device] | None = None) -> Mesh:
  """A ("data", "fsdp") mesh over all devices; -1 on one axis means "the rest"."""
  devices = list(jax.devices() if devices is None else devices)
  if data == -1 and fsdp == -1:
    raise ValueError("at most one mesh axis can be -1")
  if data == -1:
    data = len(devices) // fsdp
  if fsdp == -1:
    fsdp = len(devices) // data
  if data * fsdp != len(devices) or data < 1 or fsdp < 1:
    raise ValueError(f"mesh data={data} x fsdp={fsdp} does not match the {len(devices)} devices")
  return Mesh(np.asarray(devices).reshape(data, fsdp), ("data", "fsdp"))


def batch_size_per_process(global_batch: int, mesh: Mesh) -> int:
  """Clips each process loads; the global batch must split evenly over the devices."""
  if global_batch % mesh.size:
    raise ValueError(f"global batch size {global_batch} is not divisible by the {mesh.size} devices of the mesh")
  return global_batch // jax.process_count()


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over every device."""
  return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def param_spec(shape: tuple[int, ...], fsdp: int) -> PartitionSpec:
  """Shard the largest evenly divisible dimension over "fsdp" (large tensors only)."""
  if fsdp == 1 or not shape or int(np.prod(shape)) < _MIN_SHARDED_SIZE:
    return PartitionSpec()
  for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
    if shape[dim] % fsdp == 0:
      spec = [None] * len(shape)
      spec[dim] = "fsdp"
      return PartitionSpec(*spec)
  return PartitionSpec()


def state_shardings(abstract_state: Any, mesh: Mesh) -> Any:
  """NamedShardings for every leaf of a (abstract) train state, by `param_spec`."""
  fsdp = mesh.shape["fsdp"]
  return jax.tree.map(lambda x: NamedSharding(mesh, param_spec(tuple(x.shape), fsdp)), abstract_state)


def global_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Assembles each process's slice of the batch into global arrays sharded over the mesh."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local_batch.items()}

"""Per-device memory of a pretraining step, per variant and mesh, before renting the hardware.

    python experiments/memory_plan.py --variant=large --meshes=64x1,16x4,8x8 [--remat] [--dtype=bfloat16] \\
        [--batch=64] [overrides, e.g. model.decoder.depth=4]

For each mesh (data x fsdp; 64x1 is a v5e-64 / v4-128 slice data-parallel, 8x8 the same with parameters and
optimiser state sharded 8 ways; 8x1 is 8 GPUs of one node) the train step is compiled for that many fake CPU
devices, shapes only (`eval_shape`, nothing allocated), and reports per device:
  params + optimiser state   from the shardings (what `synclipmae/train/sharding.py` puts on each device),
  frozen                     the frozen weights (wav2vec 2.0 in small / base / large), replicated,
  batch                      this device's share of the global batch,
  temporaries                XLA's memory analysis of the compiled step: activations kept for the backward
                             pass, gradients, workspace — the part `--remat` trades for compute,
  peak (estimate)            arguments + temporaries + outputs not aliased to donated arguments.
CPU compilation is the planner, not the target: accelerator compilers fuse and schedule differently, so treat the
temporaries as an estimate (good to tens of percent) and leave headroom. Sizes in GiB.
"""

from __future__ import annotations

import argparse
import os
import sys


def parse_mesh(spec: str) -> tuple[int, int]:
  data, _, fsdp = spec.lower().partition("x")
  try:
    mesh = int(data), int(fsdp or 1)
  except ValueError:
    raise ValueError(f"mesh {spec!r}: expected DATAxFSDP, e.g. 16x4") from None
  if min(mesh) < 1:
    raise ValueError(f"mesh {spec!r}: axes must be positive")
  return mesh


def abstract_batch(config, sharding):
  """ShapeDtypeStructs of the global batch the train step reads (`pipeline.batch_spec`)."""
  import jax

  from synclipmae.data import pipeline
  return {k: jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)
          for k, (shape, dtype) in pipeline.batch_spec(config).items()}


def _per_device_bytes(tree) -> int:
  """Bytes one device holds of a tree of sharded ShapeDtypeStructs (the largest shard of each leaf)."""
  import jax
  import numpy as np
  total = 0
  for x in jax.tree.leaves(tree):
    shape = x.sharding.shard_shape(x.shape) if x.sharding is not None else x.shape
    total += int(np.prod(shape)) * x.dtype.itemsize
  return total


def plan(config, data: int, fsdp: int) -> dict[str, float]:
  """The per-device memory (bytes) of one train step of `config` on a data x fsdp mesh of this process's devices."""
  import jax

  from synclipmae.train import sharding
  from synclipmae.train import step as step_lib
  mesh = sharding.make_mesh(data, fsdp, devices=jax.devices()[:data * fsdp])
  if config.data.batch_size % (data * fsdp):
    raise ValueError(f"global batch {config.data.batch_size} does not split over {data * fsdp} devices")
  graphdef, abstract, shardings = step_lib.abstract_train_state(config, mesh)
  batch = abstract_batch(config, sharding.batch_sharding(mesh))
  step = step_lib.jit_train_step(graphdef, config, shardings, sharding.batch_sharding(mesh),
                                 sharding.replicated(mesh))
  memory = step.lower(abstract, batch).compile().memory_analysis()
  trained = _per_device_bytes((abstract.params, abstract.opt_state))
  out = {"params_and_optimizer": trained, "frozen": _per_device_bytes(abstract.frozen),
         "batch": _per_device_bytes(batch), "temporaries": memory.temp_size_in_bytes,
         "arguments": memory.argument_size_in_bytes, "outputs": memory.output_size_in_bytes,
         "aliased": memory.alias_size_in_bytes}
  out["peak"] = out["arguments"] + out["temporaries"] + out["outputs"] - out["aliased"]
  out["num_params"] = sum(x.size for x in jax.tree.leaves(abstract.params))
  return out


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
  parser.add_argument("--variant", default="large")
  parser.add_argument("--meshes", default="64x1,16x4,8x8,8x1", help="DATAxFSDP,...")
  parser.add_argument("--batch", type=int, default=None, help="Global batch in clips (default: the variant's).")
  parser.add_argument("--remat", action="store_true", help="Plan with model.remat on (and off, side by side).")
  parser.add_argument("--dtype", default=None, help="model.dtype (float32 | bfloat16).")
  parser.add_argument("overrides", nargs="*", help="config overrides, e.g. model.decoder.depth=4")
  args = parser.parse_args(argv)
  meshes = [parse_mesh(m) for m in args.meshes.split(",")]
  devices = max(d * f for d, f in meshes)
  # Before jax starts: as many fake CPU devices as the largest mesh (shapes and compilation only).
  os.environ["XLA_FLAGS"] = " ".join([f for f in os.environ.get("XLA_FLAGS", "").split()
                                      if not f.startswith("--xla_force_host_platform_device_count")] +
                                     [f"--xla_force_host_platform_device_count={devices}"])
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  from configs import pretrain
  from experiments.diagnose_sync import override
  gib = 2 ** 30
  print(f"{'variant':8s} {'mesh':>6s} {'remat':>5s} {'params':>7s} {'params+opt':>10s} {'frozen':>7s} "
        f"{'batch':>6s} {'temps':>7s} {'peak':>7s}   (GiB per device; batch {args.batch or 'default'})")
  for remat in ((False, True) if args.remat else (False,)):
    config = pretrain.get_config(args.variant)
    for assignment in args.overrides:
      override(config, assignment)
    config.model.remat = remat
    if args.dtype:
      config.model.dtype = args.dtype
    if args.batch:
      config.data.batch_size = args.batch
    for data, fsdp in meshes:
      r = plan(config, data, fsdp)
      print(f"{args.variant:8s} {f'{data}x{fsdp}':>6s} {str(remat):>5s} {r['num_params'] / 1e6:6.0f}M "
            f"{r['params_and_optimizer'] / gib:10.3f} {r['frozen'] / gib:7.3f} {r['batch'] / gib:6.3f} "
            f"{r['temporaries'] / gib:7.3f} {r['peak'] / gib:7.3f}", flush=True)


if __name__ == "__main__":
  main()

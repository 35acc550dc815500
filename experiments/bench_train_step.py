"""Train-step speed on this machine: step time, frames/s, and achieved FLOP/s as a fraction of a large matmul's.

    python experiments/bench_train_step.py [--variants mu,tiny] [--steps 10] [config overrides, e.g. model.decoder.depth=1]

Uses the variant's default batch (config.data.batch_size clips x num_frames frames) from the default synthetic
corpus (generated first if missing), one device, float32. FLOPs per step come from XLA's cost analysis of the
compiled step; the reference is a 4096 x 4096 float32 matmul timed in the same process.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import pretrain  # noqa: E402
from experiments.diagnose_sync import override  # noqa: E402
from synclipmae.data import pipeline  # noqa: E402
from synclipmae.train import loop  # noqa: E402
from synclipmae.train import step as step_lib  # noqa: E402


def matmul_flops_per_s(n: int = 4096, repeats: int = 5) -> float:
  a = jnp.ones((n, n), jnp.float32)
  mm = jax.jit(lambda x: x @ x)
  mm(a).block_until_ready()
  start = time.perf_counter()
  for _ in range(repeats):
    out = mm(a)
  out.block_until_ready()
  return 2 * n ** 3 * repeats / (time.perf_counter() - start)


def bench(variant: str, steps: int, overrides=()) -> dict[str, float]:
  config = pretrain.get_config(variant)
  for assignment in overrides:
    override(config, assignment)
  corpus = loop.ensure_corpus(config.data.dir)
  loop.validate_config(config, corpus)  # A clear error (e.g. a 64 px corpus for `small`) before a long compile.
  ds = pipeline.make_dataset(corpus, "train", batch_size=config.data.batch_size, num_frames=config.data.num_frames,
                             seed=0, patch_size=config.model.patch_size, process_index=0, process_count=1)
  batch = next(pipeline.make_iterator(ds))
  graphdef, _ = jax.eval_shape(lambda: step_lib.init_state(config))
  state = jax.jit(lambda: step_lib.init_state(config)[1])()
  step = jax.jit(lambda s, b: step_lib.train_step(graphdef, config, s, b), donate_argnums=0)
  compiled = step.lower(state, batch).compile()
  cost = compiled.cost_analysis()
  flops = (cost[0] if isinstance(cost, list) else cost)["flops"]
  state, metrics = step(state, batch)
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(steps):
    state, metrics = step(state, batch)
  jax.block_until_ready(metrics)
  seconds = (time.perf_counter() - start) / steps
  frames = config.data.batch_size * config.data.num_frames
  return {"step_s": seconds, "frames_per_s": frames / seconds, "frames": frames, "gflop": flops / 1e9,
          "gflop_per_s": flops / seconds / 1e9}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--variants", default="mu,tiny")
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("overrides", nargs="*", help="config overrides, e.g. model.decoder.depth=1")
  args = parser.parse_args()
  print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, jax {jax.__version__} on {jax.devices()[0].platform}")
  peak = matmul_flops_per_s()
  precision = jax.config.jax_default_matmul_precision or "default"
  print(f"reference 4096^2 f32 matmul: {peak / 1e9:.1f} GFLOP/s (matmul precision: {precision})")
  print(f"{'variant':8s} {'frames/step':>11s} {'step (s)':>9s} {'frames/s':>9s} {'GFLOP/step':>10s} "
        f"{'GFLOP/s':>8s} {'of matmul':>9s}")
  for variant in args.variants.split(","):
    r = bench(variant, args.steps, args.overrides)
    print(f"{variant:8s} {r['frames']:>11d} {r['step_s']:>9.3f} {r['frames_per_s']:>9.1f} {r['gflop']:>10.1f} "
          f"{r['gflop_per_s']:>8.1f} {r['gflop_per_s'] / (peak / 1e9):>9.1%}")


if __name__ == "__main__":
  main()

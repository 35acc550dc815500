"""Train-step speed: step time, frames/s, patch tokens/s, achieved FLOP/s and MFU, on this machine's device.

    python experiments/bench_train_step.py [--variants mu,tiny] [--steps 10] [--dtype bfloat16] \
        [--peak_tflops 989] [--profile] [config overrides, e.g. model.decoder.depth=1]

The variant's default batch (config.data.batch_size clips x num_frames frames) of random content in the shapes the
pipeline yields (`pipeline.batch_spec`: speed does not depend on the pixels, and no corpus of each variant's image
size is needed), one device. FLOPs per step come from XLA's cost analysis of the compiled step. MFU divides the
achieved FLOP/s by the chip's peak for the compute dtype (--peak_tflops, or the table below for known chips); on
CPU the reference is a 4096 x 4096 float32 matmul timed in the same process. Tokens are visible patch tokens
through the encoder per second (both bypasses; one with model.mode=mae).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import pretrain  # noqa: E402
from experiments.diagnose_sync import override  # noqa: E402
from synclipmae import masking  # noqa: E402
from synclipmae.data import pipeline  # noqa: E402
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


# Dense peak TFLOP/s by device kind (substring of jax's device_kind) and compute dtype, from the vendors' sheets.
PEAK_TFLOPS = {"H200": {"bfloat16": 989.0, "float32": 67.0}, "H100": {"bfloat16": 989.0, "float32": 67.0},
               "A100": {"bfloat16": 312.0, "float32": 19.5}, "TPU v5 lite": {"bfloat16": 197.0},
               "TPU v5p": {"bfloat16": 459.0}, "TPU v4": {"bfloat16": 275.0}, "TPU v6": {"bfloat16": 918.0}}


def peak_tflops(dtype: str) -> float | None:
  kind = jax.devices()[0].device_kind
  for name, peaks in PEAK_TFLOPS.items():
    if name.lower() in kind.lower():
      return peaks.get(dtype)
  return None


def random_batch(config, seed: int = 0) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  batch = {}
  for key, (shape, dtype) in pipeline.batch_spec(config).items():
    if key == "video":
      batch[key] = rng.integers(0, 256, shape, dtype=np.uint8)
    elif key == "audio":
      batch[key] = (0.1 * rng.standard_normal(shape)).astype(dtype)
    elif key in ("face_patches", "mouth_patches"):
      batch[key] = rng.random(shape).astype(dtype)
    elif key == "clip":
      batch[key] = np.arange(shape[0], dtype=dtype)
    else:
      batch[key] = np.zeros(shape, dtype)
  return batch


def make_config(variant: str, overrides=(), dtype: str | None = None):
  config = pretrain.get_config(variant)
  for assignment in overrides:
    override(config, assignment)
  if dtype:
    config.model.dtype = dtype
  return config


def bench(config, steps: int, profile: bool = False) -> dict[str, float]:
  """One compiled train step of `config` on a random batch of its shapes: time, throughput and XLA's FLOPs;
  profile: also where the time goes (`op_profile`)."""
  batch = random_batch(config)
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
  if profile:
    def run_steps(n):
      nonlocal state
      for _ in range(n):
        state, out = step(state, batch)
      return out
    print(op_profile(run_steps, steps=min(steps, 3)))
  frames = config.data.batch_size * config.data.num_frames
  patches = (config.model.image_size // config.model.patch_size) ** 2
  views = 1 if config.model.get("mode") == "mae" else 2  # Bypasses through the encoder.
  tokens = views * frames * masking.num_kept(patches, config.masking.mask_ratio)
  return {"step_s": seconds, "frames_per_s": frames / seconds, "tokens_per_s": tokens / seconds, "frames": frames,
          "gflop": flops / 1e9, "gflop_per_s": flops / seconds / 1e9, "dtype": config.model.dtype}


def op_profile(run_steps, steps: int = 3, top: int = 12) -> str:
  """Where a step's time goes, from a jax.profiler trace of `run_steps(steps)`: wall time, the time the XLA
  threads were busy (summed over threads: above the wall time only where ops ran side by side), and the busiest
  kinds of op (XLA fusion names without their numbers: ynn_fusion / dot = matmuls, copy / transpose = layout)."""
  import collections
  import glob
  import re
  import tempfile
  with tempfile.TemporaryDirectory() as trace_dir:
    jax.profiler.start_trace(trace_dir)
    start = time.perf_counter()
    jax.block_until_ready(run_steps(steps))
    wall = (time.perf_counter() - start) / steps
    jax.profiler.stop_trace()
    data = jax.profiler.ProfileData.from_file(glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True)[-1])
  kinds, threads = collections.Counter(), collections.Counter()
  for plane in data.planes:
    for line in plane.lines:
      if not line.name.startswith("tf_XLA"):  # XLA's compute threads (not Python, not the client's waits).
        continue
      for event in line.events:
        if event.name.startswith(("ThunkExecutor", "end:")):
          continue
        kinds[re.sub(r"[.\d]+$", "", event.name)] += event.duration_ns / 1e9 / steps
        threads[line.name] += event.duration_ns / 1e9 / steps
  rows = [f"  {name:28s} {seconds:8.3f} s" for name, seconds in kinds.most_common(top)]
  return "\n".join([f"profile: {wall:.3f} s per step (wall, traced); XLA threads busy {sum(threads.values()):.3f} s "
                    f"in all over {len(threads)} threads; busiest op kinds:", *rows])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--variants", default="mu,tiny")
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--dtype", default=None, help="model.dtype (default: the variant's, float32)")
  parser.add_argument("--peak_tflops", type=float, default=None, help="the chip's peak (default: PEAK_TFLOPS)")
  parser.add_argument("--profile", action="store_true", help="also print where each step's time goes (op_profile)")
  parser.add_argument("overrides", nargs="*", help="config overrides, e.g. model.decoder.depth=1")
  args = parser.parse_args()
  device = jax.devices()[0]
  print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, jax {jax.__version__} on {device.platform} "
        f"({device.device_kind})")
  if device.platform == "cpu":
    reference = matmul_flops_per_s() / 1e12
    precision = jax.config.jax_default_matmul_precision or "default"
    print(f"reference 4096^2 f32 matmul: {reference * 1e3:.1f} GFLOP/s (matmul precision: {precision}); "
          "'MFU' below is against it")
  print(f"{'variant':8s} {'dtype':>8s} {'frames/step':>11s} {'step (s)':>9s} {'frames/s':>9s} {'tokens/s':>9s} "
        f"{'GFLOP/step':>10s} {'TFLOP/s':>8s} {'MFU':>6s}")
  for variant in args.variants.split(","):
    r = bench(make_config(variant, args.overrides, args.dtype), args.steps, args.profile)
    peak = args.peak_tflops or (reference if device.platform == "cpu" else peak_tflops(r["dtype"]))
    mfu = f"{r['gflop_per_s'] / 1e3 / peak:6.1%}" if peak else "   n/a"
    print(f"{variant:8s} {r['dtype']:>8s} {r['frames']:>11d} {r['step_s']:>9.3f} {r['frames_per_s']:>9.1f} "
          f"{r['tokens_per_s']:>9.0f} {r['gflop']:>10.1f} {r['gflop_per_s'] / 1e3:>8.3f} {mfu}")


if __name__ == "__main__":
  main()

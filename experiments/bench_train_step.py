"""Train-step speed: step time, frames/s, patch tokens/s, achieved FLOP/s and MFU, on this machine's device.

    python experiments/bench_train_step.py [--variants mu,tiny] [--steps 10] [--dtype bfloat16] \
        [--peak_tflops 989] [config overrides, e.g. model.decoder.depth=1]

The variant's default batch (config.data.batch_size clips x num_frames frames) of random content in the shapes the
pipeline yields (`pipeline.batch_spec`: speed does not depend on the pixels, and no corpus of each variant's image
size is needed), one device. FLOPs per step come from XLA's cost analysis of the compiled step. MFU divides the
achieved FLOP/s by the chip's peak for the compute dtype (--peak_tflops, or the table below for known chips); on
CPU the reference is a 4096 x 4096 float32 matmul timed in the same process. Tokens are visible patch tokens
through the encoder per second (both bypasses).
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


def bench(variant: str, steps: int, overrides=(), dtype: str | None = None) -> dict[str, float]:
  config = pretrain.get_config(variant)
  for assignment in overrides:
    override(config, assignment)
  if dtype:
    config.model.dtype = dtype
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
  frames = config.data.batch_size * config.data.num_frames
  patches = (config.model.image_size // config.model.patch_size) ** 2
  tokens = 2 * frames * masking.num_kept(patches, config.masking.mask_ratio)
  return {"step_s": seconds, "frames_per_s": frames / seconds, "tokens_per_s": tokens / seconds, "frames": frames,
          "gflop": flops / 1e9, "gflop_per_s": flops / seconds / 1e9, "dtype": config.model.dtype}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--variants", default="mu,tiny")
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--dtype", default=None, help="model.dtype (default: the variant's, float32)")
  parser.add_argument("--peak_tflops", type=float, default=None, help="the chip's peak (default: PEAK_TFLOPS)")
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
    r = bench(variant, args.steps, args.overrides, args.dtype)
    peak = args.peak_tflops or (reference if device.platform == "cpu" else peak_tflops(r["dtype"]))
    mfu = f"{r['gflop_per_s'] / 1e3 / peak:6.1%}" if peak else "   n/a"
    print(f"{variant:8s} {r['dtype']:>8s} {r['frames']:>11d} {r['step_s']:>9.3f} {r['frames_per_s']:>9.1f} "
          f"{r['tokens_per_s']:>9.0f} {r['gflop']:>10.1f} {r['gflop_per_s'] / 1e3:>8.3f} {mfu}")


if __name__ == "__main__":
  main()

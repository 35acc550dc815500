"""experiments/bench_train_step.py runs on CPU for `mu` (on an accelerator it reports MFU against the chip's peak)."""

import sys

import jax

from test_train import REPO

sys.path.insert(0, REPO)
from experiments import bench_train_step  # noqa: E402


def test_bench_reports_speed_and_flops_for_mu():
  r = bench_train_step.bench("mu", steps=1)
  assert r["frames"] == 8 * 16 and r["step_s"] > 0 and r["dtype"] == "float32"
  assert r["gflop"] > 1.0 and r["tokens_per_s"] > r["frames_per_s"]  # Several visible patches per frame.
  assert bench_train_step.peak_tflops("bfloat16") is None or jax.devices()[0].platform != "cpu"

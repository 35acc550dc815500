"""Wall time of the three ways to preprocess a corpus: `synclipmae prep` (worker pool), a TFDS builder in this
process, and the same builder on Apache Beam (DirectRunner, worker processes), on the same videos.

    python experiments/bench_corpus_builders.py [--seconds 20] [--copies 4] [--size 640x360] [--beam_workers 2]

The videos are `bench_prep.py`'s (the real carphone face at `--size`, 29.97 fps H.264 + AAC speech), laid out like
LRS3 (`pretrain/TALK/talk.mp4`) so `synclipmae_lrs3` builds them. Every way runs prep's per-input function, so the
clip counts must agree; the Beam rows need the `[beam]` environment (`.venv-beam`, `make test-beam` makes it) and
are skipped elsewhere. Beam's figure includes starting its worker processes and each loading the face models.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_prep  # noqa: E402  (same folder)


def frames_of(directory: Path) -> tuple[int, int]:
  from synclipmae.data import corpus as corpus_lib
  corpus = corpus_lib.Corpus(directory)
  entries = [e for split in corpus.splits for e in corpus.manifest(split)]
  return len(entries), sum(e["num_frames"] for e in entries)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seconds", type=float, default=20.0)
  parser.add_argument("--copies", type=int, default=4, help="Talks (input videos).")
  parser.add_argument("--size", default="640x360")
  parser.add_argument("--prep_workers", type=int, nargs="+", default=[1, 2])
  parser.add_argument("--beam_workers", type=int, nargs="+", default=[2])
  args = parser.parse_args()
  from data_pipelines.prep import run, settings
  from synclipmae.commands import tfds_build
  from synclipmae.data import records
  width, height = map(int, args.size.split("x"))
  print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; {args.copies} x "
        f"{args.seconds:.0f} s inputs at {args.size}, 128 px crops")
  print(f"{'way':>28} {'clips':>5} {'frames':>6} {'wall s':>7} {'frames/s':>8}")
  with tempfile.TemporaryDirectory() as tmp:
    manual = Path(tmp) / "LRS3"
    bench_prep.make_inputs(manual / "pretrain", (width, height), args.seconds, args.copies)
    ways = [(f"prep, {w} worker(s)", w, None) for w in args.prep_workers] + [("tfds-build, this process", 0, None)]
    if importlib.util.find_spec("apache_beam"):
      ways += [(f"tfds-build, Beam {w} workers", 0,
                f"runner=DirectRunner,direct_num_workers={w},direct_running_mode=multi_processing")
               for w in args.beam_workers]
    for i, (name, workers, beam) in enumerate(ways):
      out = Path(tmp) / f"out{i}"
      start = time.perf_counter()
      if workers:
        run.run(str(manual), out, settings.PrepConfig(speaker_pattern="{speaker}/*.mp4"), num_workers=workers,
                quiet=True)
        directory = out
      else:
        argv = ["synclipmae_lrs3/default", f"--manual_dir={manual}", f"--data_dir={out}"]
        with contextlib.redirect_stdout(io.StringIO()):  # TFDS prints the whole DatasetInfo.
          tfds_build.run(argv + ([f"--beam_pipeline_options={beam}"] if beam else []))
        directory = out / "synclipmae_lrs3" / "default" / f"{records.SCHEMA_VERSION}.0.0"
      wall = time.perf_counter() - start
      clips, frames = frames_of(directory)
      print(f"{name:>28} {clips:>5} {frames:>6} {wall:>7.1f} {frames / wall:>8.1f}", flush=True)


if __name__ == "__main__":
  main()

"""Speed of the synthetic corpus's two generators: the face renderer and the speech synthesiser (a benchmark, not a
test: wall-clock times depend on the machine and on what else runs on it).

    python experiments/bench_synthesis.py [--repeats 5]

Prints the best of `repeats` renders of 100 frames at 64 x 64 px, and the median time of synthesising an 8-word
sentence with its per-frame labels over 10 random sentences and voices.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from data_pipelines.synthetic import render, speech  # noqa: E402


def render_time(repeats: int, frames: int = 100) -> float:
  rng = np.random.default_rng(11)
  identity = render.sample_identity(rng)
  ambient = render.sample_ambient(rng, frames)
  mouth = rng.uniform(0, 1, (frames, 3)).astype(np.float32)
  render.render(identity, mouth, ambient)  # Warm-up.
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    render.render(identity, mouth, ambient)
    best = min(best, time.perf_counter() - start)
  return best


def speech_time(sentences: int = 10, words: int = 8, fps: float = 25.0) -> float:
  rng = np.random.default_rng(99)
  speech.synthesize("warm up", speech.sample_voice(rng))
  times = []
  for _ in range(sentences):
    text, voice = speech.sample_sentence(rng, words, words), speech.sample_voice(rng)
    start = time.perf_counter()
    utterance = speech.synthesize(text, voice)
    speech.frame_labels(utterance, int(np.ceil(len(utterance.audio) / speech.SAMPLE_RATE * fps)))
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args()
  print(f"render: 100 frames at 64x64 in {render_time(args.repeats) * 1e3:.1f} ms (best of {args.repeats})")
  print(f"speech: synthesize + frame_labels, 8 words, median of 10: {speech_time() * 1e3:.1f} ms")


if __name__ == "__main__":
  main()

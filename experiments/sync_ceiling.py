"""What sync accuracy can a perfect mouth reader reach on a synthetic corpus? The ceiling of the evaluation.

    python experiments/sync_ceiling.py [--data=runs/demo/corpus] [--split=heldout] [--num_samples=400]

Runs the exact plan of `synclipmae eval-sync` (same clips, windows, true offsets, seed) but replaces both token
streams with ground truth: the video side with the true mouth state (open, width, round) of each frame, the audio
side with the true mouth state of the frame the shifted audio came from (closed where the shifted track is
silent). Each candidate offset is scored by the mean squared distance over the K context frames. Where the K
frames are silence or a held vowel, no offset can be told apart from its neighbours by any model; this bounds
what `eval-sync` can report at each K. --noise adds Gaussian noise (that fraction of the corpus's per-channel
mouth-state std) to both sides independently: how good a per-frame mouth reading 90 % at K=5 needs (a reading
with noise n has R^2 = 1 / (1 + n^2)). Results: BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from synclipmae.data.corpus import Corpus  # noqa: E402
from synclipmae.eval import sync  # noqa: E402


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data", default="runs/demo/corpus")
  parser.add_argument("--split", default="heldout")
  parser.add_argument("--num_samples", type=int, default=400)
  parser.add_argument("--max_offset", type=int, default=15)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--noise", type=float, nargs="+", default=[0.0])
  args = parser.parse_args()

  corpus = Corpus(args.data)
  contexts = (1, 5, 15)
  window = max(contexts) + 2 * args.max_offset
  plan = sync._plan(corpus, args.split, args.num_samples, window, args.max_offset, args.seed)
  candidates = np.arange(-args.max_offset, args.max_offset + 1)
  mouths = {index: np.asarray(corpus.read(args.split, index).labels["mouth"], np.float32) for index, _, _ in plan}
  std = np.concatenate(list(mouths.values())).std(0)
  for noise in args.noise:
    accuracy = _accuracy(plan, mouths, noise * std, window, contexts, candidates, args.seed)
    print(f"{args.data} [{args.split}], {len(plan)} samples, offsets +-{args.max_offset}, tolerance +-"
          f"{sync.TOLERANCE_FRAMES}, noise {noise:g} (R^2 {1 / (1 + noise ** 2):.2f}): oracle sync accuracy " +
          ", ".join(f"K={k} {100 * a:.1f} %" for k, a in accuracy.items()))


def _accuracy(plan, mouths, noise_std, window, contexts, candidates, seed) -> dict[int, float]:
  rng = np.random.default_rng(seed)
  correct = {k: [] for k in contexts}
  for index, start, shift in plan:
    mouth = mouths[index]
    closed = mouth[0]  # Every clip starts in silence (speech.frame_labels: "_" before the sentence).
    video = mouth[start:start + window]
    source = np.arange(start, start + window) - shift  # Frame whose sound the shifted track plays at each time.
    inside = (source >= 0) & (source < len(mouth))
    audio = np.where(inside[:, None], mouth[np.clip(source, 0, len(mouth) - 1)], closed)
    video = video + noise_std * rng.standard_normal(video.shape)
    audio = audio + noise_std * rng.standard_normal(audio.shape)
    for k in contexts:
      first = (window - k) // 2
      v = video[first:first + k]
      scores = [-np.mean(np.sum((v - audio[first + d:first + d + k]) ** 2, -1)) for d in candidates]
      # Ties (identical windows) are resolved at random, as a model's noise would.
      best = np.flatnonzero(np.isclose(scores, np.max(scores), rtol=0, atol=1e-9))
      predicted = candidates[rng.choice(best)]
      correct[k].append(abs(predicted - shift) <= sync.TOLERANCE_FRAMES)
  return {k: float(np.mean(c)) for k, c in correct.items()}


if __name__ == "__main__":
  main()

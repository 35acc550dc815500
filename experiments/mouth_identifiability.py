"""How much of the mouth state do the lips of one frame of an unseen person show, and how much of the person?

    python experiments/mouth_identifiability.py [--data=runs/demo/corpus] [--groups=20] [--seed=0]

The synthetic renderer (data_pipelines/synthetic/render.py, the mouth section of `render`) draws the lips of a
frame from the person's own mouth (half width `mouth_width` 0.082-0.112, `lip_thickness` 0.016-0.03) and the
speech track's state (open, width, round): half width = mouth_width * (0.78 + 0.44 width) * (1 - 0.36 round), lip
thickness = lip_thickness * (0.95 + 0.45 round) * (1 - 0.2 (width - 0.5)), cavity height = open * (0.095 + 0.025
round), every length times the head's pose scale. A frame shows only these products, so a reader that has never
seen the person must split each into person and state using the prior alone — as with the pose
(`experiments/pose_identifiability.py`).

This script reads the corpus's mouth tracks (the train split's per-frame `mouth` labels), pairs them with
identities and head poses drawn as the corpus draws them (`sample_identity`, `sample_ambient`), computes what the
lips show from the true parameters (a perfect reader of the lips' three lengths), and
1. fits the least-squares quadratic estimator of each state column on half of the draws and scores it (R^2) on the
   other half: how much of the state the lips' lengths tell about an unseen face (not a ceiling of a pixel model,
   which also sees the lips' shape, the teeth and the rest of the face);
2. in groups of 8 identities x 12 clips (the size of a validation or test split), probes identity with the
   protocol of `eval-factors` (ridge classifier, 2 folds by clip within each identity) from the true state
   (chance: the state is independent of the person), from that estimate, and from the lips' lengths themselves —
   what a token that kept the lips as they look would hold.
Results: BENCHMARKS.md "Where does z_voc's identity come from?".
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from data_pipelines.synthetic import render  # noqa: E402
from experiments.pose_identifiability import quadratic  # noqa: E402
from synclipmae.data.corpus import Corpus  # noqa: E402
from synclipmae.eval import factors, probes  # noqa: E402


def lips(ident: render.Identity, state: np.ndarray, scale: np.ndarray) -> np.ndarray:
  """What frames [T] show of the mouth [T, 3] of `ident` at pose scales [T]: log half width, log lip thickness and
  cavity height, in image units (the renderer's formulas; see the module docstring)."""
  op, wd, rd = state[:, 0], state[:, 1], state[:, 2]
  width = ident.mouth_width * (0.78 + 0.44 * wd) * (1.0 - 0.36 * rd)
  thickness = ident.lip_thickness * (0.95 + 0.45 * rd) * (1.0 - 0.2 * (wd - 0.5))
  height = op * (render._OPEN_BASE + render._OPEN_ROUND * rd)
  return np.stack([np.log(scale * width), np.log(scale * thickness), scale * height], axis=1)


def fit_estimator(seen: np.ndarray, state: np.ndarray):
  """The least-squares quadratic estimator of the state [n, 3] from what frames show [n, 3], fitted on the first
  half: (predict, R^2 per column on the second half)."""
  half = len(state) // 2
  mean, std = seen[:half].mean(0), seen[:half].std(0) + 1e-12
  design = lambda x: quadratic((x - mean) / std)
  coef, *_ = np.linalg.lstsq(design(seen[:half]), state[:half], rcond=None)
  predict = lambda x: design(x) @ coef
  r2 = 1 - ((predict(seen[half:]) - state[half:]) ** 2).mean(0) / state[half:].var(0)
  return predict, r2


def mouth_tracks(corpus: Corpus, split: str = "train") -> list[np.ndarray]:
  return [np.asarray(corpus.read(split, i).labels["mouth"], np.float64) for i in range(len(corpus.manifest(split)))]


def draw_clips(rng: np.random.Generator, tracks: list[np.ndarray], num_identities: int, clips_each: int):
  """(identity index, clip index, true state, lip measurements) per frame of num_identities x clips_each clips."""
  ids, clips, states, seen = [], [], [], []
  for k in range(num_identities):
    ident = render.sample_identity(rng)
    for c in range(clips_each):
      track = tracks[rng.integers(len(tracks))]
      scale = render.sample_ambient(rng, len(track))["pose"][:, 3].astype(np.float64)
      ids.append(np.full(len(track), k))
      clips.append(np.full(len(track), k * clips_each + c))
      states.append(track)
      seen.append(lips(ident, track, scale))
  return np.concatenate(ids), np.concatenate(clips), np.concatenate(states), np.concatenate(seen)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data", default="runs/demo/corpus", help="a synthetic corpus (its train mouth tracks)")
  parser.add_argument("--groups", type=int, default=20, help="groups of 8 identities x 12 clips to probe")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  rng = np.random.default_rng(args.seed)
  tracks = mouth_tracks(Corpus(args.data))

  # 1. The best per-frame estimator of the state, fitted across 2,000 identities (one clip each).
  _, _, state, seen = draw_clips(rng, tracks, 2000, 1)
  predict, r2 = fit_estimator(seen, state)
  print(f"{len(state)} frames of {len(tracks)} corpus mouth tracks, 2000 drawn identities")
  print("mouth R^2 of the quadratic estimate from the lips of unseen faces (open / width / round, mean): "
        + " / ".join(f"{v:.2f}" for v in r2) + f" ({r2.mean():.2f})")

  # 2. Identity in 8-identity groups, probed as eval-factors does.
  scores = {"the true state": [], "the best per-frame estimate of the state": [], "the lip measurements": []}
  for _ in range(args.groups):
    ids, clips, state, seen = draw_clips(rng, tracks, 8, 12)
    folds = probes.folds(ids, clips, by="clip")
    for name, x in zip(scores, (state, predict(seen), seen)):
      scores[name].append(factors.probe(x, ids, "class", folds)["score"])
  print(f"identity accuracy, {args.groups} groups of 8 identities x 12 clips (chance 0.125; mean, min-max):")
  for name, values in scores.items():
    print(f"  from {name}: {np.mean(values):.2f} ({np.min(values):.2f}-{np.max(values):.2f})")


if __name__ == "__main__":
  main()

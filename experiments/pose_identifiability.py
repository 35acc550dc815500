"""How much of each head-pose column can a model that sees one frame of an unseen person know at all?

    python experiments/pose_identifiability.py [--samples=40000] [--seed=0]

The synthetic renderer (data_pipelines/synthetic/render.py) maps a canonical face point c to the image point
s * R(rot) c + (tx, ty). Every identity draws its own face size (face_width 0.275-0.34, ...) and the heights of its
features (face_center_y, eye_y, mouth_y, ...) from ranges comparable to the pose's own spread, so a frame shows
only products and sums: each length as s * L, each feature height as ty + s * Y. A model that has never seen the
person must split them using the prior alone. This script draws identities and poses exactly as the corpus does
(`sample_identity`, one frame of `sample_ambient` per draw), computes those observable lengths and heights from
the true parameters (a perfect landmark reader: better than any pixel model), and fits the best quadratic
estimator of each pose column on half the draws; the R^2 on the other half is a ceiling for any per-frame token
probed without the person's identity — the situation of the factor probes (`eval-factors`, folds by identity).
tx and rotation need no such split (the faces are left-right symmetric: the midline gives both), so their ceiling
is 1 up to pixel precision and is not estimated here.

Two rows: every length and height the face shows, and the same without the mouth's (what z_amb can see under
`model.encoder.mouth_private`). Results: BENCHMARKS.md "What can `mu` learn of the ambient factors at all?".
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from data_pipelines.synthetic import render  # noqa: E402


def geometry(ident: render.Identity) -> tuple[dict[str, float], dict[str, float]]:
  """(lengths, heights) of one identity in canonical units, as the renderer draws them (pose scale 1, ty 0)."""
  lengths = {"face_width": ident.face_width, "face_height": ident.face_height,
             "jaw_width": ident.jaw_width * ident.face_width, "jaw_length": ident.jaw_length * ident.face_height,
             "neck_width": ident.neck_width * ident.face_width, "eye_width": ident.eye_width,
             "eye_spacing": ident.eye_spacing, "eye_opening": ident.eye_openness * ident.eye_width,
             "iris": ident.iris_size * ident.eye_width, "brow_length": ident.brow_length * ident.eye_width,
             "brow_thickness": ident.brow_thickness, "nose_width": ident.nose_width,
             "mouth_width": ident.mouth_width, "lip_thickness": ident.lip_thickness}
  heights = {"face_center": ident.face_center_y, "eyes": ident.eye_y, "mouth": ident.mouth_y,
             "chin": ident.face_center_y + ident.jaw_length * ident.face_height,
             "brow": ident.eye_y - ident.eye_openness * ident.eye_width - ident.brow_gap,
             "hairline": ident.hairline}
  return lengths, heights


MOUTH = ("mouth_width", "lip_thickness", "mouth")  # What only the mouth region shows.


def observe(ident: render.Identity, pose: np.ndarray, drop: tuple[str, ...] = ()) -> np.ndarray:
  """What one frame shows of the geometry: each length times the pose scale (as a log), each height as
  ty + scale * height (rotation left out: the faces are symmetric, so it does not mix with these)."""
  lengths, heights = geometry(ident)
  _, ty, _, scale = (float(v) for v in pose)
  return np.array([np.log(scale * v) for k, v in lengths.items() if k not in drop]
                  + [ty + scale * v for k, v in heights.items() if k not in drop])


def quadratic(x: np.ndarray) -> np.ndarray:
  """[n, d] -> [n, 1 + d + d(d+1)/2]: constant, linear and every product of two features."""
  i, j = np.triu_indices(x.shape[1])
  return np.concatenate([np.ones((len(x), 1)), x, x[:, i] * x[:, j]], axis=1)


def ceiling(features: np.ndarray, target: np.ndarray) -> float:
  """R^2 on the second half of the draws of the least-squares quadratic fit on the first half."""
  half = len(target) // 2
  x = quadratic((features - features[:half].mean(0)) / features[:half].std(0))
  coef, *_ = np.linalg.lstsq(x[:half], target[:half], rcond=None)
  residual = target[half:] - x[half:] @ coef
  return float(1 - residual.var() / target[half:].var())


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--samples", type=int, default=40000)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  rng = np.random.default_rng(args.seed)
  draws = []
  for _ in range(args.samples):
    ident = render.sample_identity(rng)
    draws.append((ident, render.sample_ambient(rng, 250)["pose"][rng.integers(250)]))  # A frame of a 10 s clip.
  ty = np.array([pose[1] for _, pose in draws], np.float64)
  scale = np.array([pose[3] for _, pose in draws], np.float64)
  print(f"{args.samples} draws; pose spread (sd): ty {ty.std():.4f}, scale {scale.std():.4f}")
  print("| what the model sees | ty R^2 ceiling | scale R^2 ceiling |")
  print("|---|---|---|")
  for label, drop in (("every length and height of the face", ()), ("the same without the mouth's", MOUTH)):
    observed = np.stack([observe(ident, pose, drop) for ident, pose in draws])
    print(f"| {label} ({observed.shape[1]} lengths and heights) | {ceiling(observed, ty):.2f} | "
          f"{ceiling(observed, scale):.2f} |")


if __name__ == "__main__":
  main()

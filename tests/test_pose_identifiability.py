"""The absolute-pose ceiling of experiments/pose_identifiability.py: exact when faces do not vary, blind to noise."""

import numpy as np

from data_pipelines.synthetic import render
from experiments import pose_identifiability as ident_lib


def _poses(rng, n):
  return [render.sample_ambient(rng, 50)["pose"][rng.integers(50)] for _ in range(n)]


def test_one_face_gives_the_pose_away_and_many_faces_hide_its_scale():
  rng = np.random.default_rng(0)
  poses = _poses(rng, 3000)
  ty, scale = (np.array([p[c] for p in poses], np.float64) for c in (1, 3))
  same = render.sample_identity(rng)
  observed = np.stack([ident_lib.observe(same, p) for p in poses])
  assert ident_lib.ceiling(observed, ty) > 0.99 and ident_lib.ceiling(observed, scale) > 0.99
  faces = [render.sample_identity(rng) for _ in poses]
  observed = np.stack([ident_lib.observe(f, p) for f, p in zip(faces, poses)])
  # Each face's own size confounds the scale; the sizes of many features together still tell part of it.
  assert 0.2 < ident_lib.ceiling(observed, scale) < 0.8
  assert ident_lib.ceiling(rng.normal(size=observed.shape), scale) < 0.1  # Features unrelated to the pose.

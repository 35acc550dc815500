"""experiments/mouth_identifiability.py: what a reader of the lips can know of the state and of the person."""

import numpy as np

from experiments import mouth_identifiability as mouth_lib
from synclipmae.eval import factors, probes


def _tracks(rng, count=40, length=60):
  return [rng.uniform(0.0, 1.0, (length, 3)) for _ in range(count)]


def test_the_opening_shows_whatever_the_face_and_other_faces_hide_the_width():
  rng = np.random.default_rng(0)
  tracks = _tracks(rng)
  _, _, state, seen = mouth_lib.draw_clips(rng, tracks, 1, 40)
  _, one = mouth_lib.fit_estimator(seen, state)
  _, _, state, seen = mouth_lib.draw_clips(rng, tracks, 400, 1)
  _, many = mouth_lib.fit_estimator(seen, state)
  assert one[0] > 0.99 and many[0] > 0.97  # The cavity height is the opening in image units for everyone.
  assert many[1] < one[1] - 0.1  # Each person's own mouth width hides part of the width state.


def test_identity_is_at_chance_from_the_state_and_readable_from_the_lips():
  rng = np.random.default_rng(1)
  ids, clips, state, seen = mouth_lib.draw_clips(rng, _tracks(rng, length=40), 8, 12)
  folds = probes.folds(ids, clips, by="clip")
  assert factors.probe(state, ids, "class", folds)["score"] < 0.2
  assert factors.probe(seen, ids, "class", folds)["score"] > 0.25

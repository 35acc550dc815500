"""The factor evaluator: probes find planted signals and nothing in shuffled labels; folds keep test identities
(or clips) unseen; the matrix of a pretrained model."""

import json

import numpy as np

from synclipmae import inference
from synclipmae.data.corpus import Corpus
from synclipmae.eval import factors, probes


def _planted(seed=0, n=1200, dim=16):
  rng = np.random.default_rng(seed)
  identity = np.repeat(np.arange(8), n // 8)
  clip = np.repeat(np.arange(40), n // 40)
  x = rng.normal(size=(n, dim))
  continuous = x[:, :3] @ rng.normal(size=(3, 2)) + 0.1 * rng.normal(size=(n, 2))
  classes = np.argmax(x[:, 3:7], axis=1)
  return x, continuous, classes, identity, clip


def test_probe_recovers_planted_signals_and_is_at_chance_on_shuffled_labels():
  x, continuous, classes, identity, clip = _planted()
  folds = probes.folds(identity, by="speaker")
  r2 = factors.probe(x, continuous, "r2", folds)
  assert r2["score"] > 0.95 and len(r2["columns"]) == 2
  acc = factors.probe(x, classes, "class", folds)
  assert acc["score"] > 0.8 and acc["chance"] < 0.4
  rng = np.random.default_rng(1)
  shuffled_r2 = factors.probe(x, rng.permutation(continuous), "r2", folds)
  shuffled_acc = factors.probe(x, rng.permutation(classes), "class", folds)
  assert shuffled_r2["score"] < 0.05
  assert abs(shuffled_acc["score"] - 0.25) < 0.06


def test_relative_pose_ignores_what_each_identity_adds_to_token_and_pose():
  """A token that follows the head, plus a per-identity offset in both token and pose that no probe can know for
  an unseen identity: absolute R^2 suffers from the offsets, the identity-relative score does not."""
  x, continuous, _, identity, _ = _planted()
  rng = np.random.default_rng(2)
  offsets = rng.normal(scale=3.0, size=(8, 2))[identity]
  pose = continuous + offsets  # The true pose: motion + the identity's own offset (face size, height).
  token = np.concatenate([x[:, :3], rng.normal(scale=3.0, size=(8, 2))[identity]], 1)  # Unrelated offsets.
  folds = probes.folds(identity, by="speaker")
  absolute = factors.probe(token, pose, "r2", folds)["score"]
  relative = factors.probe(factors.centred(token, identity), factors.centred(pose, identity), "r2", folds)["score"]
  assert absolute < 0.3 and relative > 0.95
  centred = factors.centred(pose, identity)
  assert all(np.allclose(centred[identity == i].mean(0), 0) for i in range(8))


def test_folds_hold_out_identities_for_motion_and_clips_for_identity():
  _, _, _, identity, clip = _planted()
  by_identity = probes.folds(identity, by="speaker")
  assert not set(identity[by_identity == 0]) & set(identity[by_identity == 1])
  by_clip = probes.folds(identity, clip, by="clip")
  assert not set(clip[by_clip == 0]) & set(clip[by_clip == 1])
  for name in np.unique(identity):  # Every identity is in both folds: seen in training, tested on new clips.
    assert set(by_clip[identity == name]) == {0, 1}


def test_factor_matrix_of_a_pretrained_model(trained_run, tmp_path):
  pretrained = inference.load_pretrained(trained_run["export"])
  result = factors.evaluate(pretrained, Corpus(trained_run["corpus"]), "heldout")
  assert result["num_identities"] == 4 and result["missing_factors"] == []
  assert set(result["matrix"]) == set(factors.TOKENS) and set(result["metric"]) == {*factors.FACTORS, "pose_rel"}
  assert result["matrix"]["z_id"]["identity"] > 0.9  # Identity is what z_id is for, and the easiest factor.
  assert result["matrix"]["audio"]["mouth"] > 0.2  # The audio token hears the mouth of unseen identities.
  written = factors.write_results(result, tmp_path)
  assert json.load(open(written["json"]))["matrix"] == result["matrix"]
  assert "| z_voc |" in factors.format_matrix(result)

"""Lip reading (`train-vsr` / `eval-vsr`): CTC decoding, targets, a head that learns a planted reading, and the
commands on a pretrained model."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from synclipmae.data.corpus import Corpus
from synclipmae.eval import vsr
from synclipmae.inference import load_pretrained

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_beam_search_sums_alignments_that_the_best_path_misses():
  # Two steps over {blank, a}: the best path is (blank, blank) = 0.36, but "a" has 0.16 + 0.24 + 0.24 = 0.64.
  log_probs = np.log(np.array([[0.6, 0.4], [0.6, 0.4]]))
  assert vsr.greedy_decode(log_probs) == []
  assert vsr.beam_decode(log_probs) == [1]
  # Repeats collapse unless a blank separates them.
  steps = np.log(np.eye(3)[[1, 1, 0, 1, 2, 2]] * 0.97 + 0.01)
  assert vsr.greedy_decode(steps) == vsr.beam_decode(steps) == [1, 1, 2]


def test_targets():
  assert vsr.normalise_text("Hello,  World's END.") == "hello world's end"
  assert vsr.viseme_sequence(["sil", "aa", "aa", "PP", "sil", "PP", "PP", "sil"]) == ["aa", "PP", "PP"]


def test_augment_masks_spans_of_valid_frames_only():
  import jax
  x = np.ones((64, 40, 6), np.float32)
  valid = np.arange(40)[None] < np.random.default_rng(0).integers(10, 41, size=(64, 1))
  key = jax.random.key(3)
  out = np.asarray(vsr.augment(x, valid, key, time_masks=2, mask_frames=5, feature_drop=0.0))
  hidden = (out == 0).all(-1)
  assert hidden.any() and not (hidden & ~valid).any()  # Padding is never "masked" (it is ignored anyway).
  assert ((out == 0) | (out == 1)).all() and (hidden == (out == 0).any(-1)).all()  # Whole frames, nothing else.
  assert hidden.sum(1).max() <= 10  # Two spans of at most five frames.
  again = np.asarray(vsr.augment(x, valid, key, time_masks=2, mask_frames=5, feature_drop=0.0))
  np.testing.assert_array_equal(out, again)  # A pure function of its key.
  dropped = np.asarray(vsr.augment(x, valid, key, time_masks=0, mask_frames=5, feature_drop=0.25))
  assert abs((dropped == 0).mean() - 0.25) < 0.02 and np.allclose(dropped[dropped != 0], 1 / 0.75)
  assert abs(dropped.mean() - 1.0) < 0.03  # Inverted dropout keeps the mean.
  data = vsr.Sequences(["c0"], [x[0]], ["ab"], None)
  with pytest.raises(ValueError, match="feature_drop=1.0"):
    vsr.train(data, feature_drop=1.0, steps=1, log=None)  # Would divide by zero: refused before any work.


def _planted(rng, n, length=24, dim=8):
  """Sequences whose frame t shows the character to read (one-hot over the first 4 letters) or nothing."""
  features, texts = [], []
  for _ in range(n):
    chars = rng.integers(0, 4, size=length // 3)
    frames = np.zeros((length, dim), np.float32)
    for k, c in enumerate(chars):
      frames[3 * k, c] = 1.0
    frames += 0.05 * rng.normal(size=frames.shape).astype(np.float32)
    features.append(frames)
    texts.append("".join("abcd"[c] for c in chars))
  return features, texts


def test_head_learns_a_planted_reading_and_nothing_from_shuffled_targets():
  rng = np.random.default_rng(0)
  features, texts = _planted(rng, 96)
  train = vsr.Sequences([f"c{i}" for i in range(64)], features[:64], texts[:64], None)
  test = vsr.Sequences([f"t{i}" for i in range(32)], features[64:], texts[64:], None)
  kwargs = dict(width=64, depth=1, num_heads=2, steps=300, batch_size=16, learning_rate=3e-3, log=None)
  planted_head = vsr.train(train, **kwargs)
  planted = vsr.evaluate(planted_head, test)
  assert planted["cer"] < 0.1, planted["examples"][:2]
  shuffled = vsr.Sequences(train.clip_ids, train.features, list(np.array(texts[:64])[rng.permutation(64)]), None)
  shuffled_head = vsr.train(shuffled, **kwargs)
  assert vsr.evaluate(shuffled_head, test)["cer"] > 0.4
  # The reported training loss is a mean over the last 100 steps, and tells a reader from a memoriser.
  losses = [h.info["training"] for h in (planted_head, shuffled_head)]
  assert [l["final_loss_steps"] for l in losses] == [100, 100]
  assert losses[0]["final_loss"] < losses[1]["final_loss"], losses


def test_train_and_eval_vsr_commands(trained_run, tmp_path):
  head = tmp_path / "head"
  run = lambda *args: subprocess.run([sys.executable, "-m", "synclipmae.cli", *args], cwd=REPO,
                                     capture_output=True, text=True, timeout=600)
  trained = run("train-vsr", f"--model={trained_run['export']}", "--inputs=z_voc", "--eval_split=heldout",
                "--max_clips=8", "--steps=20", "--width=32", "--depth=1", f"--out={head}")
  assert trained.returncode == 0, trained.stderr[-3000:]
  assert (head / vsr.HEAD_FILE).is_file() and (head / "vsr_eval_heldout_greedy.png").is_file()
  scored = run("eval-vsr", f"--head={head}", "--split=heldout", "--max_clips=8", "--decode=beam")
  assert scored.returncode == 0, scored.stderr[-3000:]
  result = json.load(open(head / "vsr_eval_heldout_beam.json"))
  assert result["num_clips"] == 8 and result["inputs"] == "z_voc"
  assert 0 <= result["cer"] and "viseme_error_rate" in result and len(result["examples"]) == 8
  # The saved head is the trained one: a reload reads the held-out clips as training's own evaluation did.
  loaded = vsr.load(head)
  assert loaded.info["viseme_names"][0] == "sil" and loaded.info["inputs"] == "z_voc"
  data = vsr.collect(load_pretrained(trained_run["export"]), Corpus(trained_run["corpus"]), "heldout", "z_voc",
                     max_clips=8)
  after_training = json.load(open(head / "vsr_eval_heldout_greedy.json"))
  assert vsr.evaluate(loaded, data)["examples"] == after_training["examples"]
  missing = run("eval-vsr", f"--head={tmp_path / 'none'}")
  assert missing.returncode == 2 and "not a VSR head written by `synclipmae train-vsr`" in missing.stderr

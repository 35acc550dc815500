"""Swap renders: the pairs, the PSNR, the truth they are scored against, and renders of a pretrained model."""

import json

import numpy as np
import pytest

from data_pipelines.synthetic import clips
from synclipmae import inference
from synclipmae.data.corpus import Corpus
from synclipmae.eval import swaps


def test_psnr():
  a = np.zeros((4, 4, 3))
  assert swaps.psnr(a, a + 0.1) == pytest.approx(20.0)
  mask = np.zeros((4, 4), bool)
  mask[0, 0] = True
  b = a.copy()
  b[1:] = 1.0  # Differs only outside the mask.
  assert swaps.psnr(a, b, mask) == pytest.approx(100.0)


def test_pairs_cross_identities_and_keep_the_reference_apart(synthetic_corpus):
  corpus = Corpus(synthetic_corpus)
  entries = corpus.manifest("heldout")
  pairs = swaps.plan(corpus, "heldout", 50, seed=1)
  assert pairs == swaps.plan(corpus, "heldout", 50, seed=1) != swaps.plan(corpus, "heldout", 50, seed=2)
  for p in pairs:
    assert entries[p["a"]]["speaker_id"] != entries[p["b"]]["speaker_id"]
    assert abs(p["reference"] - p["t"]) >= min(swaps.SECOND, entries[p["a"]]["num_frames"] // 2)
    assert 0 <= p["u"] < entries[p["b"]]["num_frames"]


def test_the_truth_is_a_with_the_mouth_of_b(synthetic_corpus):
  """What swaps score against: A's frame everywhere but the mouth region, where B's mouth track shows."""
  corpus = Corpus(synthetic_corpus)
  spec = swaps._spec(corpus)
  a, b = corpus.read("heldout", 0), corpus.read("heldout", len(corpus.manifest("heldout")) - 1)
  assert a.speaker_id != b.speaker_id
  t, u = 10, int(np.argmax(np.asarray(b.labels["mouth"])[:, 0]))  # B's widest-open mouth.
  truth = clips.render_factors(spec, a.metadata["identity_vector"], np.asarray(b.labels["mouth"])[u:u + 1],
                               {k: np.asarray(a.labels[k])[t:t + 1] for k in clips.AMBIENT_LABELS})
  frame_a = a.decode_frames(t, t + 1)[0]
  region = truth["mouth_mask"][0] | a.mouth_masks[t]
  outside = ~region
  for axis in (0, 1):  # Allow the one-pixel anti-aliasing fringe.
    outside &= ~np.roll(region, 1, axis) & ~np.roll(region, -1, axis)
  np.testing.assert_array_equal(truth["frames"][0][outside], frame_a[outside])
  assert np.abs(truth["frames"][0][region].astype(int) - frame_a[region]).max() > 30


def test_swap_renders_of_a_pretrained_model(trained_run, tmp_path):
  pretrained = inference.load_pretrained(trained_run["export"])
  result = swaps.evaluate(pretrained, Corpus(trained_run["corpus"]), "heldout", num_pairs=12, grid=3)
  for driving in ("video_driven", "audio_driven"):  # How good they are is a benchmark (BENCHMARKS.md), not a test.
    s = result[driving]
    assert all(np.isfinite(v) and 0 < v < 100 for k, v in s.items() if k.startswith(("psnr", "mouth_psnr")))
  # Truth and A differ only in the mouth region: nearly equal over the frame, far apart in the region.
  assert result["baseline"]["psnr_truth_vs_source_a"] > result["baseline"]["mouth_psnr_truth_vs_source_a"] + 5
  grid = result["_grid"]
  assert grid["video"].shape == (9, 64, 64, 3) and 0 <= grid["video"].min() and grid["video"].max() <= 1
  written = swaps.write_results(result, tmp_path)
  assert json.load(open(written["json"]))["num_pairs"] == 12
  assert "| video |" in swaps.format_summary(result)


def test_swaps_through_the_warp_decoder(synthetic_corpus):
  """A model with the warp decoder (model.ambient_pose, *_appearance) gets its swaps drawn both ways; with its
  heads at their zero initialisation the warp decoder returns the reference frame untouched."""
  from flax import nnx

  from configs import pretrain
  from synclipmae.models.synclipmae import SyncLipMAE
  config = pretrain.get_config("mu")
  config.data.dir = str(synthetic_corpus)
  config.model.ambient_pose, config.model.ambient_appearance, config.model.driving_appearance = True, 8, True
  pretrained = inference.Pretrained(SyncLipMAE(config.model, rngs=nnx.Rngs(0)),
                                    inference.info_from_config(config, 0), "fresh warp-decoder model")
  assert pretrained.has_warp_decoder
  corpus = Corpus(synthetic_corpus)
  clip = corpus.read("heldout", 0)
  frames = clip.decode_frames()[:3]
  tokens = pretrained.encode_frames(frames, clip.face_masks[:3], clip.mouth_masks[:3])
  drawn = pretrained.render_warp(frames, tokens["z_amb"], tokens["z_amb"][::-1], tokens["z_voc"],
                                 tokens["z_voc"][::-1])
  np.testing.assert_allclose(drawn, frames / 255.0, atol=1e-5)
  with pytest.raises(ValueError, match="3 reference frames but 2 z_amb"):
    pretrained.render_warp(frames, tokens["z_amb"], tokens["z_amb"][:2])
  result = swaps.evaluate(pretrained, corpus, "heldout", num_pairs=4, grid=2)
  assert {"warp_video_driven", "warp_audio_driven"} <= set(result)
  assert result["_grid"]["warp_video"].shape == (4, 64, 64, 3)
  assert "| warp decoder, video |" in swaps.format_summary(result)

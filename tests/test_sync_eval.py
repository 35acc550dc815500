"""The zero-shot sync evaluation: sign convention and scoring, with a model whose tokens are known exactly."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from synclipmae.data import corpus as corpus_lib
from synclipmae.data import records
from synclipmae.eval import sync

FREQUENCIES = np.linspace(1.0, 40.0, 24)


def _embed(x):
  """Random-Fourier features of a scalar per frame: equal scalars give equal tokens."""
  return jnp.concatenate([jnp.cos(x[..., None] * FREQUENCIES), jnp.sin(x[..., None] * FREQUENCIES)], -1)


class CodeModel(nnx.Module):
  """Reads frame t's grey level as its 'vocal' code and the audio level under frame t as the audio code."""

  def __init__(self, margin=2):
    self.margin = margin

  def encode_frames(self, frames, keep=None, mouth=None):
    return {"z_voc": _embed(frames.mean(axis=(1, 2, 3)))}

  def encode_audio(self, audio, num_frames):
    per_frame = audio.reshape(audio.shape[0], num_frames + 2 * self.margin, 640).mean(-1)
    return _embed(per_frame[:, self.margin:self.margin + num_frames] * 2.0 + 0.5)


def _code_corpus(directory, num_clips=4, num_frames=60):
  rng = np.random.default_rng(0)
  clips = []
  for i in range(num_clips):
    codes = rng.uniform(0.1, 0.9, num_frames)
    frames = np.repeat(np.round(codes * 255).astype(np.uint8), 16 * 16 * 3).reshape(num_frames, 16, 16, 3)
    audio = np.repeat((np.round(codes * 255) / 255 - 0.5) / 2.0, 640)
    mask = np.ones((num_frames, 16, 16), bool)
    clips.append(records.ClipRecord(
        clip_id=f"code{i}", speaker_id=f"s{i}", source="test", fps=25.0, sample_rate=16000,
        frames=records.encode_frames(frames), frame_codec="png", audio=records.float_to_pcm16(audio),
        face_masks=mask, mouth_masks=mask))
  corpus_lib.write_corpus_info(directory, {"heldout": corpus_lib.write_split(directory, "heldout", clips, 1)})
  return corpus_lib.Corpus(directory)


def test_delayed_audio_is_reported_as_a_positive_offset():
  audio = np.arange(10 * 640, dtype=np.float32)
  window = sync.shifted_audio_window(audio, first_frame=4, num_frames=3, shift_frames=2, margin_frames=0,
                                     samples_per_frame=640)
  # Delayed by 2 frames: what plays under video frame 4 is the sound of frame 2.
  np.testing.assert_array_equal(window, audio[2 * 640:5 * 640])
  early = sync.shifted_audio_window(audio, 0, 2, shift_frames=1, margin_frames=1, samples_per_frame=640)
  np.testing.assert_array_equal(early[:2 * 640], 0)  # Nothing plays before the delayed track starts.
  np.testing.assert_array_equal(early[2 * 640:], audio[:2 * 640])


def test_protocol_finds_every_known_offset(tmp_path):
  corpus = _code_corpus(tmp_path / "corpus")
  result = sync.evaluate(CodeModel(), corpus, "heldout", context_frames=5, max_offset=15, num_samples=40,
                         contexts=(5,), batch_size=8)
  curves = result["_curves"]
  assert curves["predicted"] == curves["truth"]  # Exact, including the sign, for offsets in -15..15.
  assert len(set(curves["truth"])) > 15 and min(curves["truth"]) < 0 < max(curves["truth"])
  assert result["accuracy"] == 1.0 and result["num_samples"] == 40
  assert abs(result["chance_accuracy"] - 3 / 31) < 0.01
  assert result["lse_c"] > 0.3 and result["lse_d"] < 1e-3
  written = sync.write_results(result, tmp_path / "out")
  saved = json.load(open(written["json"]))
  assert {"accuracy", "num_samples", "context_frames", "chance_accuracy", "offset_convention"} <= saved.keys()
  with pytest.raises(ValueError, match="num_samples=0: the sync evaluation needs at least one sample"):
    sync.evaluate(CodeModel(), corpus, "heldout", num_samples=0)


class WindowCodeModel(CodeModel):
  """CodeModel as a peer that reads several frames per embedding (the SyncNet interface): the evaluator hands it
  windows, of which it must embed the right frames."""
  reads_frame_windows = True
  context_frames = 5

  def video_embeddings(self, frames):
    return _embed(frames.mean(axis=(2, 3, 4)))


def test_protocol_with_a_window_reading_model_and_either_metric(tmp_path):
  corpus = _code_corpus(tmp_path / "corpus")
  for metric in sync.METRICS:
    result = sync.evaluate(WindowCodeModel(), corpus, "heldout", context_frames=5, max_offset=15, num_samples=24,
                           contexts=(1, 5, 15), batch_size=8, metric=metric)
    assert result["_curves"]["predicted"] == result["_curves"]["truth"], metric  # K=5, exact.
    # One frame's code can coincide with another frame's: K=1 is near, not at, 1.
    assert result["accuracy_by_context"]["15"] == 1.0 and result["accuracy_by_context"]["1"] > 0.9
    assert result["metric"] == metric


SEEN_KEEP = []


class ViewRecordingModel(CodeModel):
  """CodeModel that records (from inside jit) the patch indices it was asked to encode."""

  def encode_frames(self, frames, keep=None, mouth=None):
    assert keep is not None and keep.shape == (frames.shape[0], 4), keep
    jax.debug.callback(lambda k: SEEN_KEEP.append(np.asarray(k)), keep)
    return super().encode_frames(frames, keep)


def test_bypass2_view_encodes_the_heaviest_patches(tmp_path):
  corpus = _code_corpus(tmp_path / "corpus")  # Masks cover every pixel: all weights tie, lower indices win.
  model = ViewRecordingModel()
  view = {"patch_size": 4, "mask_ratio": 0.75, "face_bias": 8.0, "mouth_bias": 100.0}
  result = sync.evaluate(model, corpus, "heldout", num_samples=8, contexts=(5,), batch_size=8, view=view)
  assert result["accuracy"] == 1.0
  assert SEEN_KEEP
  for keep in SEEN_KEEP:
    np.testing.assert_array_equal(keep, np.broadcast_to(np.arange(4), keep.shape))


def test_the_headline_path_end_to_end_with_a_negative_control(trained_run):
  """pretrain's own sync number (bypass-2 view -> evaluate, written to sync_eval.json) is what loading the
  checkpoint (`eval-sync`) reproduces; the same path with an untrained model, or with audio from other clips, is
  at chance."""
  from synclipmae.data.corpus import Corpus
  from synclipmae.inference import load_pretrained
  from synclipmae.models import SyncLipMAE
  trained = json.load(open(trained_run["workdir"] / "sync_eval.json"))
  assert trained["split"] == "heldout"  # The fixture corpus has no validation split: the test split, said so.
  assert trained["accuracy_by_context"]["15"] > 0.5 and trained["accuracy"] > trained["chance_accuracy"] + 0.15
  pretrained = load_pretrained(trained_run["workdir"])  # What `synclipmae eval-sync --workdir` runs.
  config, corpus = pretrained.run_config, Corpus(trained_run["corpus"])
  again = sync.evaluate_config(pretrained.model, corpus, config)
  assert again["accuracy"] == trained["accuracy"] and again["num_samples"] == trained["num_samples"] == 64
  untrained = sync.evaluate_config(SyncLipMAE(config.model, rngs=nnx.Rngs(7)), corpus, config, num_samples=64)
  assert untrained["accuracy"] < untrained["chance_accuracy"] + 0.12
  # Scrambling which audio goes with which video (the scores then compare unrelated clips) is at chance too.
  shuffled = sync.evaluate(_OtherClipsAudio(pretrained.model), corpus, "heldout", num_samples=64,
                           view=sync.bypass2_view(config), seed=sync.eval_seed(config))
  assert shuffled["accuracy"] < shuffled["chance_accuracy"] + 0.12


class _OtherClipsAudio(nnx.Module):
  """A trained model whose audio tokens come from another sample of the batch (rolled by one)."""

  def __init__(self, model):
    self.model = model

  def encode_frames(self, frames, keep=None, mouth=None):
    return self.model.encode_frames(frames, keep, mouth)

  def encode_audio(self, audio, num_frames):
    return jnp.roll(self.model.encode_audio(audio, num_frames), 1, axis=0)


def test_evaluation_split_and_seed_come_from_the_config(tmp_path, capsys):
  import ml_collections
  corpus = _code_corpus(tmp_path / "corpus")  # Only a "heldout" split, like a corpus from `prep`.
  config = ml_collections.ConfigDict({"seed": 3, "data": {"eval_split": "validation"}, "eval": {"seed": 2026}})
  assert sync.evaluation_split(config, corpus) == "heldout"
  assert "has no 'validation' split; evaluating on 'heldout'" in capsys.readouterr().out
  config.data.eval_split = "train"  # Named explicitly: used as it is (and fails later if missing).
  assert sync.evaluation_split(config, corpus) == "train"
  assert sync.eval_seed(config) == 2026  # Not the training seed.
  del config.eval["seed"]
  assert sync.eval_seed(config) == 3  # Configs from before eval.seed existed.


def test_zero_samples_or_frames_are_named_not_replaced_by_the_config():
  """`eval-sync --num_samples=0` (or --context_frames=0) is an error naming the value, not the config's count."""
  from configs import pretrain as pretrain_config
  config = pretrain_config.get_config("mu")
  with pytest.raises(ValueError, match="num_samples=0: the sync evaluation needs at least one sample"):
    sync.evaluate_config(None, None, config, split="heldout", num_samples=0)
  with pytest.raises(ValueError, match="context_frames=0: each offset is scored over at least one frame"):
    sync.evaluate_config(None, None, config, split="heldout", context_frames=0)

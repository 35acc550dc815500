"""The synthetic corpus: reproducible, split by identity, lips in sync with speech, factors re-renderable."""

import numpy as np
import pytest

from data_pipelines.synthetic import clips, generate, speech
from synclipmae.data import corpus as corpus_lib
from synclipmae.data import pipeline

SMALL = clips.SyntheticSpec(num_identities=5, num_heldout=2, num_validation=1, clips_per_identity=2, min_words=3,
                            max_words=5, seed=7)


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
  directory = tmp_path_factory.mktemp("synthetic")
  generate.generate(SMALL, directory, num_workers=2, train_shards=2, heldout_shards=1, quiet=True)
  return corpus_lib.Corpus(directory)


def _all_records(corpus):
  """Every shard's bytes, per split."""
  return {split: [open(path, "rb").read() for path in corpus.shard_paths(split)] for split in corpus.splits}


def test_default_spec_is_the_documented_corpus():
  spec = clips.SyntheticSpec()
  assert spec.num_identities >= 40 and spec.num_clips >= 500 and spec.image_size == 64
  assert len(clips.heldout_identities(spec)) == spec.num_heldout
  assert len(set(clips.sentences(spec))) == spec.num_clips  # No two clips say the same thing.


def test_identity_split_has_no_overlap(small_corpus):
  speakers = {split: {e["speaker_id"] for e in small_corpus.manifest(split)} for split in clips.SPLITS}
  assert [len(speakers[s]) for s in clips.SPLITS] == [2, 1, 2]  # train, validation, heldout (test).
  assert not (speakers["train"] & speakers["validation"] or speakers["train"] & speakers["heldout"]
              or speakers["validation"] & speakers["heldout"])
  for split in clips.SPLITS:
    assert all(e["split"] == split for e in small_corpus.manifest(split))
  assert sum(len(small_corpus.manifest(s)) for s in clips.SPLITS) == SMALL.num_clips
  # The test identities do not depend on whether a validation split is carved out.
  without = clips.SyntheticSpec(**{**SMALL.__dict__, "num_validation": 0})
  assert clips.heldout_identities(without) == clips.heldout_identities(SMALL)


def test_same_seed_same_corpus_other_seed_differs(small_corpus, tmp_path):
  generate.generate(SMALL, tmp_path / "again", num_workers=1, train_shards=2, heldout_shards=1, quiet=True)
  assert _all_records(corpus_lib.Corpus(tmp_path / "again")) == _all_records(small_corpus)
  other = clips.make_clip(clips.SyntheticSpec(**{**SMALL.__dict__, "seed": 8}), 0)
  assert other.metadata["transcript"] != clips.make_clip(SMALL, 0).metadata["transcript"]
  assert other.metadata["identity_vector"] != clips.make_clip(SMALL, 0).metadata["identity_vector"]


def test_runs_started_together_on_a_missing_corpus_agree(small_corpus, tmp_path):
  # A local sweep whose units all find no default corpus: each generates it, none sees another's half-written shard.
  from concurrent.futures import ThreadPoolExecutor
  target = tmp_path / "shared"
  run = lambda _: generate.generate(SMALL, target, num_workers=1, train_shards=2, heldout_shards=1, quiet=True)
  with ThreadPoolExecutor(2) as pool:
    infos = list(pool.map(run, range(2)))
  assert infos[0]["splits"] == infos[1]["splits"]
  assert _all_records(corpus_lib.Corpus(target)) == _all_records(small_corpus)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["shared"]  # No staging directory left behind.


def test_rerun_is_a_no_op_and_other_spec_is_refused(small_corpus, capsys):
  generate.generate(SMALL, small_corpus.directory, num_workers=1)
  assert "nothing to do" in capsys.readouterr().out
  with pytest.raises(FileExistsError, match="already holds a different corpus"):
    generate.generate(clips.SyntheticSpec(seed=1), small_corpus.directory)


def test_mouth_opening_follows_audio_energy(small_corpus):
  lags = range(-5, 6)
  mouth, energy = [], []
  for split in small_corpus.splits:
    for i in range(len(small_corpus.manifest(split))):
      clip = small_corpus.read(split, i)
      mouth.append(clip.labels["mouth"][:, 0])
      energy.append(speech.audio_frame_energy(clip.audio_float(), clip.num_frames, clip.fps))

  def correlation(lag):  # corr(mouth[t], energy[t + lag]) pooled over clips
    pairs = [(m[max(-lag, 0):len(m) - max(lag, 0)], e[max(lag, 0):len(e) - max(-lag, 0)])
             for m, e in zip(mouth, energy)]
    return np.corrcoef(np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs]))[0, 1]

  by_lag = {lag: correlation(lag) for lag in lags}
  assert by_lag[0] > 0.5, by_lag
  assert by_lag[0] == max(by_lag.values()), by_lag
  assert by_lag[-5] < by_lag[0] - 0.2 and by_lag[5] < by_lag[0] - 0.2, by_lag


def test_records_are_complete_and_aligned(small_corpus):
  clip = small_corpus.read("train", 0)
  assert clip.frame_size == (64, 64) and len(clip.audio) == clip.num_frames * 640
  for key in ("identity", "phoneme", "viseme", "mouth", "blink", "pose", "expression", "expression_intensity"):
    assert len(clip.labels[key]) == clip.num_frames, key
  assert small_corpus.label_vocab["expression"][int(clip.labels["expression"][0])] == clip.metadata["expression"]
  lead = int(clip.metadata["speech_start_s"] * clip.fps)
  assert (clip.labels["phoneme"][:lead] == 0).all()  # Silent lead-in: closed mouth, phoneme "_".
  assert clip.labels["mouth"][:lead, 0].max() < 0.05


def test_factors_re_render_exactly_and_swap_cleanly(small_corpus):
  a, b = small_corpus.read("train", 0), small_corpus.read("train", 1)
  again = clips.render_factors(SMALL, a.metadata["identity_vector"], a.labels["mouth"], a.labels)
  np.testing.assert_array_equal(again["frames"], a.decode_frames())  # PNG is lossless: exact.
  np.testing.assert_array_equal(again["face_mask"], a.face_masks)
  # Identity and ambient motion of A with the lips of B: changes only A's mouth region.
  swapped = clips.render_factors(SMALL, a.metadata["identity_vector"], b.labels["mouth"], a.labels)
  n = len(swapped["frames"])
  changed = np.abs(swapped["frames"].astype(int) - again["frames"][:n]).max(-1) > 0
  assert changed.any() and not (changed & ~_dilate(a.mouth_masks[:n])).any()


def _dilate(mask):
  out = mask.copy()
  for axis in (1, 2):
    out |= np.roll(out, 1, axis) | np.roll(out, -1, axis)
  return out


def test_pipeline_reads_the_synthetic_corpus(small_corpus):
  ds = pipeline.make_dataset(small_corpus, "train", batch_size=2, num_frames=25, seed=0, patch_size=8,
                             labels=("phoneme", "mouth"), process_index=0, process_count=1)
  batch = next(pipeline.make_iterator(ds))
  assert batch["video"].shape == (2, 25, 64, 64, 3) and batch["face_patches"].shape == (2, 25, 64)
  assert 0.2 < batch["face_patches"].mean() < 0.8  # The face is a clear, partial region of the frame.


@pytest.mark.parametrize("changes, message", [
    ({"num_heldout": 0}, "num_heldout must be in"),
    ({"num_identities": 10, "num_heldout": 4, "num_validation": 6}, "num_validation must be in"),
    ({"image_size": 16}, "image_size must be in"),
    ({"fps": 24.5}, "fps must divide"),
    ({"min_words": 6, "max_words": 3}, "min_words <= max_words"),
])
def test_bad_spec_is_a_clear_error(changes, message):
  with pytest.raises(ValueError, match=message):
    clips.SyntheticSpec(**changes)

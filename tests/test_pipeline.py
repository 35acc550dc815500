"""The Grain pipeline: windows, alignment, determinism, resumable iterators, per-process sharding."""

import numpy as np
import pytest
from absl import flags

from synclipmae.data import corpus as corpus_lib
from synclipmae.data import pipeline


def _dataset(corpus, **overrides):
  kwargs = dict(batch_size=4, num_frames=8, seed=0, patch_size=4, labels=("frame", "pose"),
                process_index=0, process_count=1)
  kwargs.update(overrides)
  return pipeline.make_dataset(corpus, "train", **kwargs)


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def _assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for key in x:
      np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def test_batch_contents_are_aligned(tiny_corpus):
  corpus = corpus_lib.Corpus(tiny_corpus)
  batch = next(pipeline.make_iterator(_dataset(corpus)))
  assert batch["video"].shape == (4, 8, 16, 16, 3) and batch["video"].dtype == np.uint8
  assert batch["audio"].shape == (4, (8 + 4) * 640) and batch["audio"].dtype == np.float32
  assert batch["face_patches"].shape == (4, 8, 16) and batch["face_mask"].shape == (4, 8, 16, 16)
  for b in range(4):
    clip = corpus.read("train", int(batch["clip"][b]))
    start = int(batch["start"][b])
    frames = clip.decode_frames(start, start + 8)
    np.testing.assert_array_equal(batch["video"][b], frames)
    np.testing.assert_array_equal(batch["labels/frame"][b], np.arange(start, start + 8))
    np.testing.assert_array_equal(batch["face_mask"][b], clip.face_masks[start:start + 8])
    # The audio window starts 2 frames before the first frame, zero-padded before the clip.
    audio = clip.audio_float()
    lo = (start - 2) * 640
    expected = np.concatenate([np.zeros(max(-lo, 0), np.float32), audio[max(lo, 0):(start + 10) * 640]])
    expected = np.pad(expected, (0, 12 * 640 - len(expected)))
    np.testing.assert_array_equal(batch["audio"][b], expected)
    assert corpus.speakers[int(batch["speaker"][b])] == clip.speaker_id
  # Face fraction per 4x4 patch: the fixture's face box covers [4, 12) x [4, 12).
  np.testing.assert_allclose(batch["face_patches"][0, 0].reshape(4, 4),
                             [[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]])
  # Mouth fraction: the fixture's mouth box covers rows [8, 12) x columns [5, 10).
  np.testing.assert_allclose(batch["mouth_patches"][0, 0].reshape(4, 4),
                             [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0.75, 0.5, 0], [0, 0, 0, 0]])


def test_deterministic_given_seed(tiny_corpus):
  a = _take(pipeline.make_iterator(_dataset(tiny_corpus, seed=3)), 5)
  b = _take(pipeline.make_iterator(_dataset(tiny_corpus, seed=3)), 5)
  c = _take(pipeline.make_iterator(_dataset(tiny_corpus, seed=4)), 5)
  _assert_batches_equal(a, b)
  assert not all(np.array_equal(x["clip"], y["clip"]) for x, y in zip(a, c))


def test_each_epoch_visits_every_clip_once_and_reshuffles(tiny_corpus):
  ds = _dataset(tiny_corpus, batch_size=1)
  clips = np.array([int(x["clip"][0]) for x in _take(pipeline.make_iterator(ds), 48)])
  assert sorted(clips[:24]) == list(range(24)) and sorted(clips[24:]) == list(range(24))
  assert not np.array_equal(clips[:24], clips[24:])


def test_restored_iterator_continues_exactly(tiny_corpus):
  ds = _dataset(tiny_corpus)
  uninterrupted = _take(pipeline.make_iterator(ds), 12)
  first = pipeline.make_iterator(ds)
  _take(first, 7)
  state = first.get_state()
  resumed = pipeline.make_iterator(_dataset(tiny_corpus))  # A fresh pipeline, as after a restart.
  resumed.set_state(state)
  _assert_batches_equal(_take(resumed, 5), uninterrupted[7:])


def test_process_shards_are_disjoint_and_complete(tiny_corpus):
  num_processes = 3
  seen = []
  for index in range(num_processes):
    ds = _dataset(tiny_corpus, batch_size=2, num_epochs=1, process_index=index, process_count=num_processes)
    seen.append([int(c) for batch in pipeline.make_iterator(ds) for c in batch["clip"]])
  assert all(len(s) == 8 for s in seen)
  everything = [c for s in seen for c in s]
  assert sorted(everything) == list(range(24))


@pytest.mark.parametrize("identity_pairs", [False, True])
def test_processes_assemble_the_one_process_batches_row_for_row(tiny_corpus, identity_pairs):
  # So a run can move between process counts, and 3 processes train exactly as 1 with the same global batch.
  def batches(index, count):
    ds = _dataset(tiny_corpus, batch_size=6 // count, process_index=index, process_count=count,
                  identity_pairs=identity_pairs)
    return _take(pipeline.make_iterator(ds), 3)
  one, parts = batches(0, 1), [batches(i, 3) for i in range(3)]
  for k, expected in enumerate(one):
    for key in ("clip", "start", "video", "audio", "labels/frame"):
      np.testing.assert_array_equal(np.concatenate([p[k][key] for p in parts]), expected[key])


def test_short_clips_are_left_out(tiny_corpus):
  corpus = corpus_lib.Corpus(tiny_corpus)
  lengths = np.array([e["num_frames"] for e in corpus.manifest("train")])
  ds = _dataset(corpus, batch_size=1, num_frames=15, num_epochs=1, shuffle=False)
  clips = [int(b["clip"][0]) for b in pipeline.make_iterator(ds)]
  assert clips == list(np.flatnonzero(lengths >= 15))
  with pytest.raises(ValueError, match="no clip has 99 frames"):
    _dataset(corpus, num_frames=99)


def test_missing_label_is_a_clear_error(tiny_corpus):
  with pytest.raises(Exception, match="has no label 'viseme'"):
    next(pipeline.make_iterator(_dataset(tiny_corpus, labels=("viseme",))))


def test_worker_processes_give_the_same_batches(tiny_corpus):
  flags.FLAGS.mark_as_parsed()  # grain workers read absl flags.
  ds = _dataset(tiny_corpus)
  expected = _take(pipeline.make_iterator(ds), 6)
  iterator = pipeline.make_iterator(ds, num_workers=2)
  try:
    _assert_batches_equal(_take(iterator, 6), expected)
  finally:
    iterator.close()


def test_identity_pairs_put_two_clips_of_one_speaker_side_by_side(tiny_corpus):
  corpus = corpus_lib.Corpus(tiny_corpus)
  entries = corpus.manifest("train")
  batches = _take(pipeline.make_iterator(_dataset(corpus, batch_size=6, identity_pairs=True)), 8)
  for batch in batches:
    assert batch["video"].shape[:2] == (6, 8) and batch["speaker"].shape == (6,)
    speaker, clip = batch["speaker"].reshape(3, 2), batch["clip"].reshape(3, 2)
    assert np.all(speaker[:, 0] == speaker[:, 1]) and np.all(clip[:, 0] != clip[:, 1])
    for c, s in zip(batch["clip"], batch["speaker"]):
      assert corpus.speakers.index(entries[c]["speaker_id"]) == s
  # Every clip is a first member once per epoch (24 clips = 8 batches of 3 pairs), as without pairs.
  firsts = np.concatenate([b["clip"][::2] for b in batches])
  assert sorted(firsts) == list(range(24))
  with pytest.raises(ValueError, match="even batch size"):
    _dataset(corpus, batch_size=3, identity_pairs=True)

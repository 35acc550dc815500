"""The clip record: exact round trips and clear errors on malformed records."""

import dataclasses

import numpy as np
import pytest
from conftest import random_clip

from synclipmae.data import corpus as corpus_lib
from synclipmae.data import records


def _assert_same(a: records.ClipRecord, b: records.ClipRecord):
  for field in ("clip_id", "speaker_id", "source", "fps", "sample_rate", "frame_codec", "frames"):
    assert getattr(a, field) == getattr(b, field), field
  for field in ("audio", "face_masks", "mouth_masks"):
    x, y = getattr(a, field), getattr(b, field)
    assert x.dtype == y.dtype and np.array_equal(x, y), field
  assert a.labels.keys() == b.labels.keys()
  for key in a.labels:
    assert a.labels[key].dtype == b.labels[key].dtype and np.array_equal(a.labels[key], b.labels[key])
  assert dict(a.metadata) == dict(b.metadata)


@pytest.mark.parametrize("codec", ["png", "jpeg"])
def test_serialize_round_trip(codec):
  clip = random_clip(np.random.default_rng(1), "a", "s", 7, size=24, codec=codec)
  back = records.deserialize(records.serialize(clip), records.label_spec(clip))
  _assert_same(clip, back)
  assert back.decode_frames().shape == (7, 24, 24, 3)


def test_png_frames_are_lossless():
  frames = np.random.default_rng(2).integers(0, 256, (5, 8, 12, 3), dtype=np.uint8)
  np.testing.assert_array_equal(records.decode_frames(records.encode_frames(frames, "png")), frames)


def test_pcm_round_trip_and_clipping():
  pcm = np.array([-32768, -1, 0, 1, 32767], np.int16)
  np.testing.assert_array_equal(records.float_to_pcm16(records.pcm16_to_float(pcm)), pcm)
  np.testing.assert_array_equal(records.float_to_pcm16(np.array([-3.0, 3.0])), [-32768, 32767])


def test_shards_round_trip_bytes_identical(tiny_corpus):
  corpus = corpus_lib.Corpus(tiny_corpus)
  manifest = corpus.manifest("train")
  assert len(manifest) == 24 and len(corpus.shard_paths("train")) == 3
  rng = np.random.default_rng(0)  # Same stream as the fixture: rebuild clip 0 and compare.
  expected = random_clip(rng, "c000", "s0", int(rng.integers(10, 21)))
  index = corpus.find(["c000"], "train")[0]
  _assert_same(expected, corpus.read("train", index))
  for i, entry in enumerate(manifest):  # Manifest line i describes record i.
    clip = corpus.read("train", i)
    assert (clip.clip_id, clip.num_frames) == (entry["clip_id"], entry["num_frames"])
  assert corpus.speakers == sorted({f"s{i}" for i in range(6)} | {"s_held"})


def _broken(**changes):
  return dataclasses.replace(random_clip(np.random.default_rng(3), "bad-clip", "s", 6), **changes)


@pytest.mark.parametrize("changes, message", [
    ({"speaker_id": ""}, "speaker_id must be a non-empty string"),
    ({"fps": 0.0}, "fps must be a positive number"),
    ({"frame_codec": "gif"}, "frame_codec must be one of"),
    ({"frames": ()}, "has no frames"),
    ({"face_masks": np.zeros((5, 16, 16), bool)}, "face_masks has 5 frames but the clip has 6"),
    ({"mouth_masks": np.zeros((6, 16, 16), np.uint8)}, "mouth_masks must be a bool array"),
    ({"audio": np.zeros(100, np.int16)}, "audio has 100 samples but 6 frames"),
    ({"audio": np.zeros(6 * 640, np.float32)}, "audio must be int16"),
    ({"labels": {"x": np.zeros(5)}}, "label 'x' must be an array with leading dimension 6"),
    ({"face_masks": np.zeros((6, 8, 8), bool), "mouth_masks": np.zeros((6, 8, 8), bool)},
     "frame 0 is 16x16 but the masks are 8x8"),
])
def test_validation_names_clip_and_problem(changes, message):
  with pytest.raises(records.RecordError, match="bad-clip") as error:
    records.serialize(_broken(**changes))
  assert message in str(error.value)


def test_corrupt_frame_bytes_rejected():
  clip = random_clip(np.random.default_rng(3), "bad-clip", "s", 6)
  broken = dataclasses.replace(clip, frames=(b"not an image",) + clip.frames[1:])
  with pytest.raises(records.RecordError, match="frame 0 is not a decodable image"):
    broken.validate()


def test_deserialize_rejects_junk_and_other_label_specs():
  clip = random_clip(np.random.default_rng(4), "v", "s", 3)
  spec = records.label_spec(clip)
  assert records.spec_from_json(records.spec_to_json(spec)) == spec == {"frame": ("int32", ()),
                                                                         "pose": ("float32", (4,))}
  with pytest.raises(records.RecordError, match="shard-7 #3: not a clip record of this corpus"):
    records.deserialize(b"\xc1 junk", spec, where="shard-7 #3")
  other = {"frame": ("int32", ()), "pose": ("float32", (3,))}
  with pytest.raises(records.RecordError, match=r"clip record 'v': labels .*pose.*float32\[4\].*float32\[3\]"):
    records.serialize(clip, other)


def test_failed_write_leaves_no_shard(tmp_path):
  good = random_clip(np.random.default_rng(5), "ok", "s", 4)
  bad = dataclasses.replace(good, clip_id="broken", fps=-1.0)
  with pytest.raises(records.RecordError, match="broken"):
    corpus_lib.write_split(tmp_path, "train", [good, bad], num_shards=2)
  assert list(tmp_path.iterdir()) == []
  with pytest.raises(corpus_lib.CorpusError, match="no corpus.json"):
    corpus_lib.Corpus(tmp_path)

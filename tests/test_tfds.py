"""Corpora are TFDS datasets that TFDS opens without TensorFlow; old corpora convert record for record."""

import importlib.util
import json

import msgpack
import numpy as np
import pytest
import tensorflow_datasets as tfds
from array_record.python import array_record_module
from conftest import random_clip
from test_records import _assert_same

from synclipmae.data import convert
from synclipmae.data import corpus as corpus_lib
from synclipmae.data import pipeline, records


def test_tensorflow_is_absent():
  assert importlib.util.find_spec("tensorflow") is None


def test_tfds_opens_a_corpus_as_written(tiny_corpus):
  corpus = corpus_lib.Corpus(tiny_corpus)
  builder = tfds.builder_from_directory(str(tiny_corpus))
  assert builder.info.splits["train"].num_examples == 24 and builder.info.splits["train"].num_shards == 3
  assert str(builder.info.version) == f"{records.SCHEMA_VERSION}.0.0"
  source = builder.as_data_source("train")
  for i in (0, 7, 23):
    _assert_same(records.from_example(source[i]), corpus.read("train", i))
  features = json.loads((tiny_corpus / "features.json").read_text())
  assert "pose" in json.dumps(features) and "Per-frame label" in json.dumps(features)


def test_the_synthetic_builder_builds_a_corpus_tfds_opens_by_name(tmp_path):
  """`synclipmae tfds-build` (TFDS's build command, TensorFlow absent) -> a TFDS dataset that is also a Corpus."""
  from data_pipelines.synthetic import clips, tfds_builder
  from synclipmae.commands import tfds_build
  tfds_build.run(["synclipmae_synthetic/tiny", f"--data_dir={tmp_path}"])
  spec = next(c for c in tfds_builder.SynclipmaeSynthetic.BUILDER_CONFIGS if c.name == "tiny").spec
  sources = tfds.data_source("synclipmae_synthetic/tiny", data_dir=str(tmp_path))
  assert {k: len(v) for k, v in sources.items()} == {"train": 8, "validation": 2, "heldout": 2}
  corpus = corpus_lib.Corpus(tmp_path / "synclipmae_synthetic" / "tiny" / f"{records.SCHEMA_VERSION}.0.0")
  assert corpus.info["generator"]["spec"]["seed"] == spec.seed and corpus.speakers == [
      clips.speaker_id(i) for i in range(spec.num_identities)]
  for split in ("train", "heldout"):  # In clip order, the clips `synclipmae synth` makes.
    for i, entry in enumerate(corpus.manifest(split)):
      clip = int(entry["clip_id"].rsplit("-", 1)[1])
      _assert_same(clips.make_clip(spec, clip), corpus.read(split, i))
      _assert_same(records.from_example(sources[split][i]), corpus.read(split, i))
  batch = pipeline.make_dataset(corpus, "train", batch_size=2, num_frames=8, process_index=0, process_count=1)[0]
  assert batch["video"].shape == (2, 8, spec.image_size, spec.image_size, 3)
  with pytest.raises(SystemExit, match="no dataset 'synclipmae_nope'; the project's datasets: synclipmae_celebv_hq, "
                     "synclipmae_hdtf, synclipmae_lrs3, synclipmae_mead, synclipmae_synthetic, synclipmae_voxceleb2"):
    tfds_build.run(["synclipmae_nope", f"--data_dir={tmp_path}"])


def test_damaged_corpora_are_named(tiny_corpus, tmp_path):
  import shutil
  broken = tmp_path / "broken"
  shutil.copytree(tiny_corpus, broken)
  shard = broken / corpus_lib.Corpus(broken).info["splits"]["heldout"]["shards"][0]
  data = bytearray(shard.read_bytes())
  data[len(data) // 3:len(data) // 3 + 4096] = b"\x00" * 4096
  shard.write_bytes(bytes(data))
  with pytest.raises(records.RecordError, match=r"broken/heldout record \d"):
    corpus = corpus_lib.Corpus(broken)
    for i in range(4):
      corpus.read("heldout", i)
  (broken / "dataset_info.json").unlink()
  with pytest.raises(corpus_lib.CorpusError, match="TFDS cannot open it"):
    corpus_lib.Corpus(broken).source("train")


def _write_v1(directory, splits):
  """A corpus as schema 1 wrote it: msgpack records, round-robin shards, corpus.json of schema_version 1."""
  def pack(a):
    return {"dtype": a.dtype.str, "shape": list(a.shape), "data": np.ascontiguousarray(a).tobytes()}

  def mask(m):
    return {"shape": list(m.shape), "bits": np.packbits(m, axis=None).tobytes()}

  info = {"schema_version": 1, "splits": {}, "speakers": [], "label_vocab": {"frame": ["zero"]},
          "generator": {"name": "synclipmae.synthetic", "spec": {"seed": 1}}}
  for split, (clips, count) in splits.items():
    names = [f"{split}-{i:05d}-of-{count:05d}.array_record" for i in range(count)]
    writers = [array_record_module.ArrayRecordWriter(str(directory / n), "group_size:1") for n in names]
    entries = []
    for i, c in enumerate(clips):
      writers[i % count].write(msgpack.packb({
          "schema_version": 1, "clip_id": c.clip_id, "speaker_id": c.speaker_id, "source": c.source, "fps": c.fps,
          "sample_rate": c.sample_rate, "frame_codec": c.frame_codec, "frames": list(c.frames),
          "audio": pack(c.audio), "face_masks": mask(c.face_masks), "mouth_masks": mask(c.mouth_masks),
          "labels": {k: pack(v) for k, v in c.labels.items()}, "metadata": dict(c.metadata)}, use_bin_type=True))
      entries.append((i % count, i // count, {"clip_id": c.clip_id, "speaker_id": c.speaker_id,
                                              "num_frames": c.num_frames, "shard": names[i % count]}))
    for w in writers:
      w.close()
    entries.sort(key=lambda e: e[:2])
    (directory / f"{split}.jsonl").write_text("".join(json.dumps(e[2]) + "\n" for e in entries))
    info["splits"][split] = {"shards": names, "manifest": f"{split}.jsonl", "num_clips": len(entries),
                             "speakers": sorted({c.speaker_id for c in clips})}
  (directory / "corpus.json").write_text(json.dumps(info))
  return [e[2]["clip_id"] for e in entries]


def test_an_old_corpus_converts_record_for_record(tmp_path):
  rng = np.random.default_rng(7)
  train = [random_clip(rng, f"c{i}", f"s{i % 3}", int(rng.integers(8, 13))) for i in range(10)]
  heldout = [random_clip(rng, f"h{i}", "sh", 9, codec="jpeg") for i in range(3)]
  old, new = tmp_path / "old", tmp_path / "new"
  old.mkdir()
  _write_v1(old, {"train": (train, 3), "heldout": (heldout, 1)})
  with pytest.raises(corpus_lib.CorpusError, match="synclipmae convert-corpus"):
    corpus_lib.Corpus(old)
  info = convert.convert(old, new)
  assert info["name"] == "synclipmae_synthetic" and info["label_vocab"] == {"frame": ["zero"]}
  assert info["converted_from"]["schema_version"] == 1
  old_source = __import__("grain").sources.ArrayRecordDataSource(
      [str(old / s) for s in json.loads((old / "corpus.json").read_text())["splits"]["train"]["shards"]])
  corpus = corpus_lib.Corpus(new)
  assert info["splits"]["train"]["shard_lengths"] == [4, 3, 3]
  for i in range(10):  # Record i stays record i.
    _assert_same(convert.read_v1(old_source[i]), corpus.read("train", i))
  assert [e["clip_id"] for e in corpus.manifest("train")] == [f"c{i}" for i in (0, 3, 6, 9, 1, 4, 7, 2, 5, 8)]
  _assert_same(heldout[2], corpus.read("heldout", 2))
  # Serialisation is deterministic: the converted shards are byte for byte those the current writer makes.
  direct = corpus_lib.write_split(tmp_path / "direct", "train", train, 3, name=info["name"])
  for shard in direct["shards"]:
    assert (tmp_path / "direct" / shard).read_bytes() == (new / shard).read_bytes()
  with pytest.raises(FileExistsError, match="not empty"):
    convert.convert(old, new)
  with pytest.raises(corpus_lib.CorpusError, match="only schema 1"):
    convert.convert(new, tmp_path / "again")


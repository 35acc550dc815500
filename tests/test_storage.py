"""Workdir paths: local paths become absolute, object-storage URLs pass through unmangled, and appending a line
works both by appending (local) and by rewriting the object (URL: object stores cannot append). Corpora on object
storage are staged into a local cache and read like local ones (a local directory stands in for the bucket)."""

import os
import shutil

import numpy as np
import pytest

from synclipmae import storage


def test_urls_stay_urls_and_local_paths_become_absolute(tmp_path, monkeypatch):
  run = storage.path("gs://bucket/runs/mu")
  assert storage.is_url(run) and str(run / "checkpoints" / "250") == "gs://bucket/runs/mu/checkpoints/250"
  assert str(run.parent / "damaged_checkpoints") == "gs://bucket/runs/damaged_checkpoints"
  monkeypatch.chdir(tmp_path)
  local = storage.path("runs/mu")
  assert not storage.is_url(local) and str(local) == str(tmp_path / "runs" / "mu")


def test_append_line_appends_locally_and_rewrites_objects(tmp_path, monkeypatch):
  local = storage.path(tmp_path / "metrics.jsonl")
  storage.append_line(local, '{"step": 1}')
  storage.append_line(local, '{"step": 2}')
  assert local.read_text() == '{"step": 1}\n{"step": 2}\n'
  # The object-storage branch through a local file: it must keep every earlier line.
  monkeypatch.setattr(storage, "is_url", lambda path: True)
  storage.append_line(local, '{"step": 3}')
  assert local.read_text().splitlines() == ['{"step": 1}', '{"step": 2}', '{"step": 3}']


def _bucket(tmp_path, monkeypatch, name="bucket"):
  """A local directory standing in for a bucket: paths under it take the object-storage branches."""
  bucket = str(tmp_path / name)
  monkeypatch.setattr(storage, "is_url", lambda path: os.fspath(path).startswith(bucket))
  monkeypatch.setenv(storage.CACHE_ENV, str(tmp_path / "cache"))
  return bucket


def test_stage_copies_once_and_again_when_the_object_changes(tmp_path, monkeypatch):
  bucket = _bucket(tmp_path, monkeypatch)
  os.makedirs(f"{bucket}/data")
  with open(f"{bucket}/data/a.bin", "wb") as f:
    f.write(b"first")
  local = storage.stage(storage.path(f"{bucket}/data"), ["a.bin"])
  assert str(local).startswith(str(tmp_path / "cache")) and (local / "a.bin").read_bytes() == b"first"
  os.utime(local / "a.bin", (2e9, 2e9))  # Reused while the object is unchanged: the copy keeps its mtime.
  assert storage.stage(storage.path(f"{bucket}/data"), ["a.bin"]) == local
  assert os.path.getmtime(local / "a.bin") == 2e9
  with open(f"{bucket}/data/a.bin", "wb") as f:  # A rewritten object (another size) is copied again.
    f.write(b"second version")
  storage.stage(storage.path(f"{bucket}/data"), ["a.bin"])
  assert (local / "a.bin").read_bytes() == b"second version"
  assert not [n for n in os.listdir(local) if n.endswith(".partial")]
  with pytest.raises(FileNotFoundError, match=f"{bucket}/data/b.bin: no such file"):
    storage.stage(storage.path(f"{bucket}/data"), ["b.bin"])


def test_a_corpus_on_object_storage_reads_like_the_local_one(tiny_corpus, tmp_path, monkeypatch):
  """Staged split by split into the cache (ArrayRecord reads local files only), the same records; a shard missing
  from the bucket is named by its URL."""
  from synclipmae.data import pipeline
  from synclipmae.data.corpus import Corpus, CorpusError
  bucket = _bucket(tmp_path, monkeypatch)
  shutil.copytree(tiny_corpus, f"{bucket}/corpus")
  local, remote = Corpus(tiny_corpus), Corpus(f"{bucket}/corpus")
  assert str(remote.directory) == f"{bucket}/corpus" and remote.info == local.info
  staged = next((tmp_path / "cache" / "staged").iterdir())
  assert not [n for n in os.listdir(staged) if "array_record" in n]  # Nothing of a split before it is read.
  assert remote.manifest("heldout") == local.manifest("heldout")
  for i in range(len(remote.manifest("heldout"))):
    a, b = remote.read("heldout", i), local.read("heldout", i)
    assert a.clip_id == b.clip_id and np.array_equal(a.decode_frames(), b.decode_frames())
  assert not [n for n in os.listdir(staged) if "-train." in n]  # Only the split that was read.
  batch = next(iter(pipeline.make_dataset(remote, "train", batch_size=2, num_frames=8, seed=0, num_epochs=1)))
  reference = next(iter(pipeline.make_dataset(local, "train", batch_size=2, num_frames=8, seed=0, num_epochs=1)))
  assert batch.keys() == reference.keys()
  for key in batch:
    assert np.array_equal(batch[key], reference[key]), key
  os.remove(f"{bucket}/corpus/{local.info['splits']['train']['shards'][1]}")
  shutil.rmtree(tmp_path / "cache")
  with pytest.raises(CorpusError, match=f"{bucket}/corpus/.*train.*: no such file: the corpus {bucket}/corpus is "
                     "incomplete"):
    Corpus(f"{bucket}/corpus").source("train")

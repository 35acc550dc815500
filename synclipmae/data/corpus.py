"""A corpus on disk: ArrayRecord shards of clip records, a JSONL manifest per split, and `corpus.json`.

Layout of a corpus directory:

    corpus.json                              splits, their shards and sizes, speakers, label vocabularies
    train.jsonl                              one line per record: line i describes record i of the split
    train-00000-of-00008.array_record        records of the split, shard after shard
    heldout.jsonl, heldout-0000x-of-...

Writes are atomic: a shard is written as `*.partial` and renamed when complete, and `corpus.json` is written last,
so a killed writer never leaves a file that a reader would take for a finished one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from array_record.python import array_record_module

from synclipmae.data import records

CORPUS_FILE = "corpus.json"
_WRITER_OPTIONS = "group_size:1"  # one record per chunk: cheapest random access.


class CorpusError(RuntimeError):
  """A corpus directory is missing, incomplete or inconsistent."""


def shard_name(split: str, index: int, count: int) -> str:
  return f"{split}-{index:05d}-of-{count:05d}.array_record"


class ShardWriter:
  """Writes one ArrayRecord shard atomically (`*.partial`, renamed on a clean close)."""

  def __init__(self, path: str | os.PathLike):
    self.path = Path(path)
    self._partial = self.path.with_name(self.path.name + ".partial")
    self._writer = array_record_module.ArrayRecordWriter(str(self._partial), _WRITER_OPTIONS)
    self.count = 0

  def write(self, data: bytes) -> int:
    """Appends serialized bytes and returns their index in the shard."""
    self._writer.write(data)
    self.count += 1
    return self.count - 1

  def close(self) -> None:
    self._writer.close()
    os.replace(self._partial, self.path)

  def abort(self) -> None:
    self._writer.close()
    self._partial.unlink(missing_ok=True)

  def __enter__(self) -> "ShardWriter":
    return self

  def __exit__(self, exc_type, *_) -> None:
    self.abort() if exc_type else self.close()


def manifest_entry(record: records.ClipRecord, **extra: Any) -> dict[str, Any]:
  """The manifest line of a record: ids, sizes and the JSON-able metadata."""
  return {
      "clip_id": record.clip_id,
      "speaker_id": record.speaker_id,
      "source": record.source,
      "num_frames": record.num_frames,
      "fps": record.fps,
      "duration_s": round(record.num_frames / record.fps, 4),
      **extra,
      **{k: v for k, v in record.metadata.items() if isinstance(v, (str, int, float, bool))},
  }


def write_split(directory: str | os.PathLike, split: str, clips: Iterable[records.ClipRecord],
                num_shards: int) -> dict[str, Any]:
  """Writes clips round-robin into `num_shards` shards plus `{split}.jsonl`; returns the split's summary.

  Round-robin keeps shards of equal size, so readers on many hosts get even slices.
  """
  directory = Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  names = [shard_name(split, i, num_shards) for i in range(num_shards)]
  writers = [ShardWriter(directory / name) for name in names]
  entries: list[tuple[int, int, dict[str, Any]]] = []
  clip_ids: set[str] = set()
  try:
    for i, clip in enumerate(clips):
      if clip.clip_id in clip_ids:
        raise records.RecordError(f"clip record {clip.clip_id!r}: duplicate clip_id in split {split!r}")
      clip_ids.add(clip.clip_id)
      shard = i % num_shards
      index = writers[shard].write(records.serialize(clip))
      entries.append((shard, index, manifest_entry(clip, split=split, shard=names[shard], index=index)))
  except BaseException:
    for writer in writers:
      writer.abort()
    raise
  for writer in writers:
    writer.close()
  entries.sort(key=lambda e: e[:2])  # Manifest line i <-> record i of the concatenated shards.
  write_atomic(directory / f"{split}.jsonl", "".join(json.dumps(e[2]) + "\n" for e in entries))
  return {"shards": names, "manifest": f"{split}.jsonl", "num_clips": len(entries),
          "num_frames": sum(e[2]["num_frames"] for e in entries),
          "speakers": sorted({e[2]["speaker_id"] for e in entries})}


def write_corpus_info(directory: str | os.PathLike, splits: Mapping[str, Mapping[str, Any]],
                      **info: Any) -> dict[str, Any]:
  """Writes `corpus.json` last, marking the corpus complete."""
  speakers = sorted({s for split in splits.values() for s in split["speakers"]})
  content = {"schema_version": records.SCHEMA_VERSION, "splits": dict(splits), "speakers": speakers, **info}
  write_atomic(Path(directory) / CORPUS_FILE, json.dumps(content, indent=1) + "\n")
  return content


def write_atomic(path: str | os.PathLike, text: str) -> None:
  """Writes `path` via a `.partial` file and a rename, so readers see the old file or the whole new one."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  partial = path.with_name(path.name + ".partial")
  partial.write_text(text)
  os.replace(partial, path)


def append_jsonl(path: str | os.PathLike, entry: Mapping[str, Any]) -> None:
  """Appends one JSON line and fsyncs it: a log that a killed process leaves whole up to its last line."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, "a") as f:
    f.write(json.dumps(entry) + "\n")
    f.flush()
    os.fsync(f.fileno())


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
  """Lines of a JSONL file (none if it does not exist); a torn last line (a killed writer) is ignored."""
  path = Path(path)
  if not path.exists():
    return []
  out = []
  for line in path.read_text().splitlines():
    try:
      out.append(json.loads(line))
    except json.JSONDecodeError:
      continue
  return out


class Corpus:
  """Read access to a finished corpus directory."""

  def __init__(self, directory: str | os.PathLike):
    self.directory = Path(directory)
    info_path = self.directory / CORPUS_FILE
    if not info_path.is_file():
      raise CorpusError(f"{self.directory}: no {CORPUS_FILE}; not a corpus, or its writer did not finish")
    self.info = json.loads(info_path.read_text())
    if self.info.get("schema_version") != records.SCHEMA_VERSION:
      raise CorpusError(f"{info_path}: schema_version {self.info.get('schema_version')!r} is not supported "
                        f"(this code reads {records.SCHEMA_VERSION})")
    self._manifests: dict[str, list[dict[str, Any]]] = {}

  @property
  def splits(self) -> list[str]:
    return list(self.info["splits"])

  @property
  def speakers(self) -> list[str]:
    """All speaker ids of the corpus, sorted; a speaker's index here is its integer id."""
    return self.info["speakers"]

  @property
  def label_vocab(self) -> dict[str, list[str]]:
    """Names of integer label values, e.g. {"expression": ["neutral", ...]} (may be empty)."""
    return self.info.get("label_vocab", {})

  def _split(self, split: str) -> Mapping[str, Any]:
    if split not in self.info["splits"]:
      raise CorpusError(f"{self.directory}: no split {split!r}; it has {self.splits}")
    return self.info["splits"][split]

  def shard_paths(self, split: str) -> list[str]:
    paths = [self.directory / name for name in self._split(split)["shards"]]
    for path in paths:
      if not path.is_file():
        raise CorpusError(f"{path}: shard listed in {CORPUS_FILE} is missing")
    return [str(p) for p in paths]

  def manifest(self, split: str) -> list[dict[str, Any]]:
    if split not in self._manifests:
      path = self.directory / self._split(split)["manifest"]
      with open(path) as f:
        self._manifests[split] = [json.loads(line) for line in f if line.strip()]
      expected = self._split(split)["num_clips"]
      if len(self._manifests[split]) != expected:
        raise CorpusError(f"{path}: {len(self._manifests[split])} lines but {CORPUS_FILE} says {expected} clips")
    return self._manifests[split]

  def source(self, split: str):
    """A random-access `grain.sources.ArrayRecordDataSource` of the split's serialized records."""
    import grain  # Imported here so that writers need not load grain.
    return grain.sources.ArrayRecordDataSource(self.shard_paths(split))

  def read(self, split: str, index: int) -> records.ClipRecord:
    data = self.source(split)[index]
    return records.deserialize(data, where=f"{self.directory}/{split} record {index}")

  def spread(self, split: str, max_clips: int | None = None) -> list[int]:
    """Record indices of a split: all of them, or at most `max_clips` spread evenly over it (evaluators' subsets)."""
    count = len(self.manifest(split))
    if not max_clips or max_clips >= count:
      return list(range(count))
    return sorted(set(np.linspace(0, count - 1, max_clips).round().astype(int).tolist()))

  def find(self, clip_ids: Sequence[str], split: str) -> list[int]:
    """Record indices of the given clip ids in a split."""
    where = {entry["clip_id"]: i for i, entry in enumerate(self.manifest(split))}
    missing = [c for c in clip_ids if c not in where]
    if missing:
      raise CorpusError(f"{self.directory}: clips {missing[:5]} are not in split {split!r}")
    return [where[c] for c in clip_ids]

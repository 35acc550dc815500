"""A corpus on disk: a TensorFlow Datasets dataset of clip records, plus a JSONL manifest per split and `corpus.json`.

Layout of a corpus directory (a TFDS dataset version directory: `tfds.builder_from_directory(dir)` opens it, and
`tfds.data_source(NAME, data_dir=D)` does when it lies at `D/NAME/VERSION`; TensorFlow need not be installed):

    dataset_info.json, features.json             TFDS's: splits and shard lengths; the record spec (`records.features`)
    NAME-train.array_record-00000-of-00008       records of the split, shard after shard (ArrayRecord)
    train.jsonl                                  one line per record: line i describes record i of the split
    heldout.jsonl, NAME-heldout.array_record-0000x-of-...
    corpus.json                                  ours, written last: speakers, label vocabularies, what made it

Writes are atomic: a shard is written as `*.partial` and renamed when complete, and `corpus.json` is written last,
so a killed writer never leaves a file that a reader would take for a finished one. Records are read through
TFDS's data source (`Corpus.source`), which Grain reads directly.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from array_record.python import array_record_module

from synclipmae import storage
from synclipmae.data import records

CORPUS_FILE = "corpus.json"
TFDS_FILES = ("dataset_info.json", "features.json")  # TFDS's metadata of the dataset directory.
DEFAULT_NAME = "synclipmae_corpus"
FILE_FORMAT = "array_record"
_WRITER_OPTIONS = "group_size:1"  # one record per chunk: cheapest random access.


class CorpusError(RuntimeError):
  """A corpus directory is missing, incomplete or inconsistent."""


def shard_name(name: str, split: str, index: int, count: int) -> str:
  """TFDS's default shard file name: `{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}`."""
  return f"{name}-{split}.{FILE_FORMAT}-{index:05d}-of-{count:05d}"


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
  """The manifest line of a record: ids, sizes, its label spec and the JSON-able metadata."""
  return {
      "clip_id": record.clip_id,
      "speaker_id": record.speaker_id,
      "source": record.source,
      "num_frames": record.num_frames,
      "fps": record.fps,
      "duration_s": round(record.num_frames / record.fps, 4),
      "labels": records.spec_to_json(records.label_spec(record)),
      **extra,
      **{k: v for k, v in record.metadata.items() if isinstance(v, (str, int, float, bool))},
  }


def write_split(directory: str | os.PathLike, split: str, clips: Iterable[records.ClipRecord], num_shards: int, *,
                name: str = DEFAULT_NAME, shard_of: Callable[[int], int] | None = None) -> dict[str, Any]:
  """Writes clips into `num_shards` shards plus `{split}.jsonl`; returns the split's summary.

  Clip i goes to shard `shard_of(i)`, by default round-robin (shards of equal size, so readers on many hosts get
  even slices). Every clip must have the first clip's label spec.
  """
  directory = Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  names = [shard_name(name, split, i, num_shards) for i in range(num_shards)]
  writers = [ShardWriter(directory / shard) for shard in names]
  shard_of = shard_of or (lambda i: i % num_shards)
  entries: list[tuple[int, int, dict[str, Any]]] = []
  clip_ids: set[str] = set()
  spec = None
  try:
    for i, clip in enumerate(clips):
      if clip.clip_id in clip_ids:
        raise records.RecordError(f"clip record {clip.clip_id!r}: duplicate clip_id in split {split!r}")
      clip_ids.add(clip.clip_id)
      spec = records.label_spec(clip) if spec is None else spec
      shard = shard_of(i)
      index = writers[shard].write(records.serialize(clip, spec))
      entries.append((shard, index, manifest_entry(clip, split=split, shard=names[shard], index=index)))
  except BaseException:
    for writer in writers:
      writer.abort()
    raise
  for writer in writers:
    writer.close()
  entries.sort(key=lambda e: e[:2])  # Manifest line i <-> record i of the concatenated shards.
  write_atomic(directory / f"{split}.jsonl", "".join(json.dumps(e[2]) + "\n" for e in entries))
  return split_summary(directory, split, [e[2] for e in entries], names)


def split_summary(directory: Path, split: str, entries: Sequence[Mapping[str, Any]],
                  shards: Sequence[str]) -> dict[str, Any]:
  """A split's entry in corpus.json, from its manifest lines (in record order) and its shard files."""
  lengths = [0] * len(shards)
  for entry in entries:
    lengths[shards.index(entry["shard"])] += 1
  specs = {json.dumps(e["labels"], sort_keys=True) for e in entries}
  if len(specs) > 1:
    raise CorpusError(f"{directory}/{split}: clips have different label specs {sorted(specs)}; a corpus has one")
  return {"shards": list(shards), "shard_lengths": lengths, "manifest": f"{split}.jsonl",
          "num_clips": len(entries), "num_frames": sum(e["num_frames"] for e in entries),
          "num_bytes": sum((directory / shard).stat().st_size for shard in shards),
          "labels": entries[0]["labels"] if entries else None,
          "speakers": sorted({e["speaker_id"] for e in entries})}


def link_shard(source: Path, target: Path) -> None:
  """Makes `target` the shard `source` (a hard link; a copy where the file system has none)."""
  target.unlink(missing_ok=True)
  try:
    os.link(source, target)
  except OSError:
    shutil.copyfile(source, target)


def write_corpus_info(directory: str | os.PathLike, splits: Mapping[str, Mapping[str, Any]], *,
                      name: str = DEFAULT_NAME, description: str = "", **info: Any) -> dict[str, Any]:
  """Writes TFDS's `dataset_info.json` / `features.json`, then `corpus.json` last, marking the corpus complete."""
  import tensorflow_datasets as tfds  # Imported here: the record writers do not need it.
  directory = Path(directory)
  specs = {json.dumps(s["labels"], sort_keys=True): k for k, s in splits.items() if s["labels"] is not None}
  if len(specs) > 1:
    raise CorpusError(f"{directory}: splits have different label specs {sorted(specs)}; a corpus has one")
  labels = json.loads(next(iter(specs))) if specs else {}
  version = f"{records.SCHEMA_VERSION}.0.0"
  tfds_info = tfds.core.DatasetInfo(
      builder=tfds.core.DatasetIdentity(name=name, version=tfds.core.Version(version), data_dir=str(directory),
                                        module_name=__name__),
      description=description or f"Talking-face clip records (synclipmae, schema {records.SCHEMA_VERSION}); "
                                 f"speakers, label vocabularies and provenance are in {CORPUS_FILE}.",
      features=records.features(records.spec_from_json(labels)))
  tfds_info.set_file_format(FILE_FORMAT)
  tfds_info.set_splits(tfds.core.SplitDict([
      tfds.core.SplitInfo(name=split, shard_lengths=s["shard_lengths"], num_bytes=s["num_bytes"],
                          filename_template=tfds.core.ShardedFileTemplate(
                              data_dir=directory, dataset_name=name, split=split, filetype_suffix=FILE_FORMAT))
      for split, s in splits.items()]))
  tfds_info.write_to_directory(directory)
  return _write_corpus_json(directory, splits, name=name, version=version, labels=labels, **info)


def _write_corpus_json(directory: Path, splits: Mapping[str, Mapping[str, Any]], **info: Any) -> dict[str, Any]:
  speakers = sorted({s for split in splits.values() for s in split["speakers"]})
  content = {"schema_version": records.SCHEMA_VERSION, **info, "splits": dict(splits), "speakers": speakers}
  write_atomic(directory / CORPUS_FILE, json.dumps(content, indent=1) + "\n")
  return content


def write_index(directory: str | os.PathLike, **info: Any) -> dict[str, Any]:
  """Manifests and `corpus.json` for clip records that TFDS itself wrote (a TFDS builder's output directory).

  Reads every record once (the manifest describes each); shard names and positions come from TFDS's split info.
  """
  import tensorflow_datasets as tfds
  directory = Path(directory)
  builder = tfds.builder_from_directory(str(directory))
  labels = builder.info.features["labels"]
  spec = {k: (np.dtype(f.np_dtype).name, tuple(f.shape[1:])) for k, f in labels.items()}
  splits = {}
  for split, split_info in builder.info.splits.items():
    shards = [Path(p).name for p in split_info.filepaths]
    where = [(shard, index) for shard, n in zip(shards, split_info.shard_lengths) for index in range(n)]
    source = RecordSource(builder.as_data_source(split, deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES),
                          spec, where=f"{directory}/{split} record")
    entries = [manifest_entry(source[i], split=split, shard=where[i][0], index=where[i][1])
               for i in range(len(source))]
    write_atomic(directory / f"{split}.jsonl", "".join(json.dumps(e) + "\n" for e in entries))
    splits[split] = split_summary(directory, split, entries, shards)
  return _write_corpus_json(directory, splits, name=builder.info.name, version=str(builder.info.version),
                            labels=records.spec_to_json(spec), **info)


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


class RecordSource:
  """Random access to a split's `ClipRecord`s: TFDS's data source reads the bytes, `records.deserialize` parses them
  (5x faster than TFDS's generic decoding); errors name the record."""

  def __init__(self, source, spec: Mapping[str, tuple[str, Sequence[int]]], where: str):
    self._source, self._spec, self._where = source, dict(spec), where

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> records.ClipRecord:
    where = f"{self._where} {index}"
    try:
      data = self._source[index]
    except IndexError:
      raise
    except Exception as e:  # array_record raises several types for damaged shards.
      raise records.RecordError(f"{where}: unreadable ({type(e).__name__}: {e}); the shard is damaged — rewrite "
                                "the corpus") from None
    return records.deserialize(data, self._spec, where=where, validate=False)


class Corpus:
  """Read access to a finished corpus directory."""

  def __init__(self, directory: str | os.PathLike):
    """`directory`: a local path, or an object-storage URL (gs://...), whose files are then read from a local copy
    (`storage.stage`: the metadata now, each split's records when the split is first read)."""
    self.directory = storage.as_given(directory)  # What messages name.
    if not (self.directory / CORPUS_FILE).is_file():
      raise CorpusError(f"{self.directory}: no {CORPUS_FILE}; not a corpus, or its writer did not finish")
    self._local = self._stage([CORPUS_FILE, *TFDS_FILES])  # What readers open.
    info_path = self._local / CORPUS_FILE
    self.info = json.loads(info_path.read_text())
    version = self.info.get("schema_version")
    if version == 1:
      raise CorpusError(f"{info_path}: an older corpus (schema_version 1: msgpack records); convert it once with "
                        f"`synclipmae convert-corpus --src={self.directory} --out=NEW_DIR`")
    if version != records.SCHEMA_VERSION:
      raise CorpusError(f"{info_path}: schema_version {version!r} is not supported "
                        f"(this code reads {records.SCHEMA_VERSION})")
    self._manifests: dict[str, list[dict[str, Any]]] = {}
    self._staged: dict[str, Path] = {}  # Split -> where its files are read.

  @functools.cached_property
  def builder(self):
    """The corpus as a TFDS read-only builder (`builder.info`, `builder.as_data_source(split)`)."""
    import tensorflow_datasets as tfds  # Imported here so that writers need not load it.
    try:
      return tfds.builder_from_directory(str(self._local))
    except Exception as e:  # TFDS raises several types for missing or malformed dataset_info.json.
      raise CorpusError(f"{self.directory}: TFDS cannot open it ({type(e).__name__}: {e})") from None

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

  def _stage(self, names: list[str]) -> Path:
    """Where these files of the corpus are read: its directory, or the local copy of a URL's (`storage.stage`)."""
    try:
      return storage.stage(self.directory, names)
    except FileNotFoundError as e:
      raise CorpusError(f"{e.args[0]}: the corpus {self.directory} is incomplete (or still being copied)") from None

  def _split_files(self, split: str) -> Path:
    """Where the split's manifest and shards are read: the corpus itself, or the local copy of a URL's (staged
    once per `Corpus`)."""
    if split not in self._staged:
      files = self._split(split)
      self._staged[split] = self._stage([files["manifest"], *files["shards"]])
    return self._staged[split]

  def shard_paths(self, split: str) -> list[str]:
    local = self._split_files(split)
    for name in self._split(split)["shards"]:
      if not (local / name).is_file():
        raise CorpusError(f"{self.directory / name}: shard listed in {CORPUS_FILE} is missing")
    return [str(local / name) for name in self._split(split)["shards"]]

  def manifest(self, split: str) -> list[dict[str, Any]]:
    if split not in self._manifests:
      path = self._split_files(split) / self._split(split)["manifest"]
      with open(path) as f:
        self._manifests[split] = [json.loads(line) for line in f if line.strip()]
      expected = self._split(split)["num_clips"]
      if len(self._manifests[split]) != expected:
        raise CorpusError(f"{path}: {len(self._manifests[split])} lines but {CORPUS_FILE} says {expected} clips")
    return self._manifests[split]

  def source(self, split: str) -> RecordSource:
    """A random-access source of the split's (unvalidated) `ClipRecord`s, read by TFDS's data source."""
    import tensorflow_datasets as tfds
    self.shard_paths(split)  # Names a missing shard before TFDS would.
    source = self.builder.as_data_source(split, deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)
    return RecordSource(source, records.spec_from_json(self.info["labels"]), where=f"{self.directory}/{split} record")

  def read(self, split: str, index: int) -> records.ClipRecord:
    record = self.source(split)[index]
    record.validate()
    return record

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

"""Corpora of schema 1 (msgpack records, before corpora were TFDS datasets) -> the current layout, record for record.

Schema 1 stored each record as a msgpack map in ArrayRecord shards listed by `corpus.json`. The conversion keeps
every split's shard count and each record's shard and position, so record i of a split stays record i: manifests,
precomputed audio features (`synclipmae.data.audio_features`, matched by index and clip id) and the Grain pipeline's
batches for a seed are the same before and after. The source directory is only read.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from synclipmae.data import corpus as corpus_lib
from synclipmae.data import records

_V1_FIELDS = ("schema_version", "clip_id", "speaker_id", "source", "fps", "sample_rate", "frame_codec",
              "frames", "audio", "face_masks", "mouth_masks", "labels", "metadata")
# A corpus's TFDS name from what generated it (corpus.json "generator"."name").
_NAMES = {"synclipmae.synthetic": "synclipmae_synthetic", "synclipmae.prep": "synclipmae_prep"}


def _array(packed: Mapping[str, Any]) -> np.ndarray:
  dtype = np.dtype(packed["dtype"])
  if dtype.kind not in "biuf":
    raise ValueError(f"unsupported dtype {dtype}")
  return np.frombuffer(packed["data"], dtype=dtype).reshape(packed["shape"])


def _mask(packed: Mapping[str, Any]) -> np.ndarray:
  shape = tuple(packed["shape"])
  bits = np.unpackbits(np.frombuffer(packed["bits"], np.uint8), count=math.prod(shape))
  return bits.reshape(shape).astype(bool)


def read_v1(data: bytes, *, where: str = "record") -> records.ClipRecord:
  """Parses a schema-1 record (a msgpack map); `where` names it in errors."""
  try:
    raw = msgpack.unpackb(data, raw=False)
  except Exception as e:
    raise records.RecordError(f"{where}: not a schema-1 clip record (msgpack: {e})") from None
  if not isinstance(raw, dict) or raw.get("schema_version") != 1:
    version = raw.get("schema_version") if isinstance(raw, dict) else None
    raise records.RecordError(f"{where}: not a schema-1 clip record (schema_version {version!r})")
  missing = [f for f in _V1_FIELDS if f not in raw]
  if missing:
    raise records.RecordError(f"{where} (clip {raw.get('clip_id')!r}): missing fields {missing}")
  try:
    record = records.ClipRecord(
        clip_id=raw["clip_id"], speaker_id=raw["speaker_id"], source=raw["source"], fps=raw["fps"],
        sample_rate=raw["sample_rate"], frames=tuple(raw["frames"]), frame_codec=raw["frame_codec"],
        audio=_array(raw["audio"]), face_masks=_mask(raw["face_masks"]), mouth_masks=_mask(raw["mouth_masks"]),
        labels={k: _array(v) for k, v in raw["labels"].items()}, metadata=raw["metadata"])
  except (KeyError, TypeError, ValueError) as e:
    raise records.RecordError(f"{where} (clip {raw.get('clip_id')!r}): malformed field ({e})") from None
  record.validate()
  return record


def convert(src: str | os.PathLike, out: str | os.PathLike, *, name: str | None = None) -> dict[str, Any]:
  """Writes the schema-1 corpus `src` as a current corpus in `out` (new or empty); returns its corpus.json content."""
  import grain  # The v1 shards are plain ArrayRecord files of msgpack bytes.
  src, out = Path(src), Path(out)
  info_path = src / corpus_lib.CORPUS_FILE
  if not info_path.is_file():
    raise corpus_lib.CorpusError(f"{src}: no {corpus_lib.CORPUS_FILE}; not a corpus, or its writer did not finish")
  info = json.loads(info_path.read_text())
  if info.get("schema_version") != 1:
    raise corpus_lib.CorpusError(f"{info_path}: schema_version {info.get('schema_version')!r}; only schema 1 "
                                 "corpora need converting")
  if out.exists() and any(out.iterdir()):
    raise FileExistsError(f"{out} is not empty; convert into a new directory")
  name = name or _NAMES.get(info.get("generator", {}).get("name"), corpus_lib.DEFAULT_NAME)
  start, splits = time.time(), {}
  for split, summary in info["splits"].items():
    entries = [json.loads(line) for line in (src / summary["manifest"]).read_text().splitlines() if line.strip()]
    shards = list(summary["shards"])
    source = grain.sources.ArrayRecordDataSource([str(src / shard) for shard in shards])
    if len(source) != len(entries):
      raise corpus_lib.CorpusError(f"{src}/{split}: {len(source)} records but {len(entries)} manifest lines")
    shard_of = [shards.index(entry["shard"]) for entry in entries]

    def clips(split=split, source=source) -> Iterator[records.ClipRecord]:
      for i in range(len(source)):
        yield read_v1(source[i], where=f"{src}/{split} record {i}")

    splits[split] = corpus_lib.write_split(out, split, clips(), len(shards), name=name,
                                           shard_of=shard_of.__getitem__)
  if (src / "failures.jsonl").is_file():  # A prep corpus's record of its bad inputs.
    shutil.copyfile(src / "failures.jsonl", out / "failures.jsonl")
  extra = {k: v for k, v in info.items() if k not in ("schema_version", "splits", "speakers")}
  extra["converted_from"] = {"path": str(src), "schema_version": 1, "seconds": round(time.time() - start, 1)}
  return corpus_lib.write_corpus_info(out, splits, name=name, **extra)

"""A prep output directory: its parts (shards + manifests), failures, job markers, and `finalize`.

    prep.json                      the settings; a rerun with different output-affecting settings is refused
    parts/SPLIT-JOB-TOKEN-SEQ.array_record   a shard: the clips of several whole inputs
    parts/SPLIT-JOB-TOKEN-SEQ.jsonl          its manifest (one line per record, in order); an input is *done*
                                             once a part manifest lists it
    failures/JOB-TOKEN.jsonl       one line per failed input: input, stage, reason
    jobs/JOB.json                  written when a job finishes (its summary)
    train.jsonl, heldout.jsonl, failures.jsonl, corpus.json   made by `finalize`, with TFDS's
    dataset_info.json, features.json and synclipmae_prep-SPLIT.array_record-I-of-N (hard links to the parts)

All of it is written without coordination between processes or machines: JOB is `jIIIIIofNNNNN`
(`--shard_index`/`--num_shards`), TOKEN is random per writer, so names never clash. A shard is written as
`*.partial` and renamed when closed (`corpus.ShardWriter`), and its manifest is written after the rename: a killed
worker leaves a `.partial` file or a shard without a manifest, never a part that counts (`clean_leftovers` deletes
them on the job's rerun).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from data_pipelines.prep.inputs import Input
from data_pipelines.prep.settings import PrepConfig, RunError
from synclipmae.data import corpus as corpus_lib
from synclipmae.data import records

PARTS_DIR, FAILURES_DIR, JOBS_DIR = "parts", "failures", "jobs"
PREP_FILE, FAILURES_FILE = "prep.json", "failures.jsonl"
GENERATOR = "synclipmae.prep"
TFDS_NAME = "synclipmae_prep"  # The finished corpus is a TFDS dataset of this name.


def job_name(shard_index: int, num_shards: int) -> str:
  return f"j{shard_index:05d}of{num_shards:05d}"


class PartWriter:
  """One worker's output: a shard per split, committed (closed + manifest) every `shard_size` clips and at close."""

  def __init__(self, out_dir: Path, job: str, config: PrepConfig):
    self.out_dir, self.config = out_dir, config
    self.token = f"{job}-{uuid.uuid4().hex[:8]}"
    self.failures_path = out_dir / FAILURES_DIR / f"{self.token}.jsonl"
    self._sequence = 0
    self._open: dict[str, tuple[str, corpus_lib.ShardWriter, list[dict[str, Any]], list[str]]] = {}

  def add(self, item: Input, clips: Sequence[records.ClipRecord], split: str) -> list[str]:
    """Writes one input's clips; returns the inputs committed by this call (when the shard filled up)."""
    if split not in self._open:
      name = f"{PARTS_DIR}/{split}-{self.token}-{self._sequence:04d}"
      self._sequence += 1
      (self.out_dir / PARTS_DIR).mkdir(parents=True, exist_ok=True)
      self._open[split] = (name, corpus_lib.ShardWriter(self.out_dir / f"{name}.array_record"), [], [])
    name, writer, entries, inputs = self._open[split]
    for clip in clips:
      index = writer.write(records.serialize(clip))
      entries.append(corpus_lib.manifest_entry(clip, split=split, shard=f"{name}.array_record", index=index))
    inputs.append(item.key)
    return self.commit(split) if writer.count >= self.config.shard_size else []

  def commit(self, split: str) -> list[str]:
    name, writer, entries, inputs = self._open.pop(split)
    writer.close()  # Renames *.partial to the shard's name ...
    corpus_lib.write_atomic(self.out_dir / f"{name}.jsonl",  # ... and only then does the part count.
                             "".join(json.dumps(e) + "\n" for e in entries))
    return inputs

  def close(self) -> list[str]:
    return [key for split in list(self._open) for key in self.commit(split)]

  def abort(self) -> None:
    for _, writer, _, _ in self._open.values():
      writer.abort()
    self._open = {}

  def fail(self, entry: dict[str, Any]) -> dict[str, Any]:
    """Appends an input's failures entry (`process.failure_entry`)."""
    corpus_lib.append_jsonl(self.failures_path, entry)
    return entry



def read_state(out_dir: str | os.PathLike) -> tuple[set[str], dict[str, dict[str, Any]]]:
  """(inputs done: listed in a committed part, {input: its latest failures entry}) of an output directory."""
  out_dir = Path(out_dir)
  done = set()
  for manifest in sorted((out_dir / PARTS_DIR).glob("*.jsonl")):
    done.update(e.get("input", e["source"]) for e in corpus_lib.read_jsonl(manifest))
  failed = {}
  for path in sorted((out_dir / FAILURES_DIR).glob("*.jsonl")):
    for entry in corpus_lib.read_jsonl(path):
      if "input" in entry:
        failed[entry["input"]] = entry
  return done, failed


def check_settings(out_dir: Path, config: PrepConfig) -> None:
  settings = config.output_settings()
  path = out_dir / PREP_FILE
  if path.is_file():
    previous = json.loads(path.read_text()).get("settings")
    if previous != json.loads(json.dumps(settings)):
      diff = {k: (previous.get(k), v) for k, v in settings.items() if previous.get(k) != v}
      raise RunError(f"{out_dir} holds a prep run with other settings (setting: (there, asked)): {diff}; "
                     "use the same settings or another --out")
    return
  corpus_lib.write_atomic(path, json.dumps({"generator": GENERATOR, "settings": settings}, indent=1) + "\n")


def clean_leftovers(out_dir: Path, job: str) -> list[Path]:
  """Deletes this job's `.partial` files and shards without a manifest (left by a killed run of the same job)."""
  removed = []
  parts = out_dir / PARTS_DIR
  for path in sorted(parts.glob(f"*-{job}-*.partial")) + sorted(parts.glob(f"*-{job}-*.array_record")):
    if path.suffix == ".partial" or not path.with_suffix(".jsonl").exists():
      path.unlink(missing_ok=True)
      removed.append(path)
  return removed


def finalize(out_dir: str | os.PathLike) -> dict[str, Any]:
  """Assembles `{split}.jsonl`, `failures.jsonl` and (last) `corpus.json` from all committed parts."""
  out_dir = Path(out_dir)
  if not (out_dir / PREP_FILE).is_file():
    raise RunError(f"{out_dir}: no {PREP_FILE}; not the output directory of synclipmae prep")
  per_split: dict[str, list[dict[str, Any]]] = {"train": []}
  seen: dict[str, str] = {}
  for manifest in sorted((out_dir / PARTS_DIR).glob("*.jsonl")):
    entries = corpus_lib.read_jsonl(manifest)
    shard = f"{PARTS_DIR}/{manifest.stem}.array_record"
    if not (out_dir / shard).is_file():
      raise RunError(f"{manifest}: its shard {shard} is missing")
    for entry in entries:
      if entry["clip_id"] in seen:
        raise RunError(f"clip {entry['clip_id']!r} is in both {seen[entry['clip_id']]} and {shard}: two runs "
                       "processed the same input (overlapping --shard_index/--num_shards?); delete one of the parts")
      seen[entry["clip_id"]] = shard
    if entries:
      per_split.setdefault(entries[0]["split"], []).extend(entries)
  splits = {}
  for split, entries in sorted(per_split.items()):
    parts = list(dict.fromkeys(e["shard"] for e in entries))
    # TFDS names shards by position: each part is linked (not copied) under that name; parts stay for resuming.
    shards = {part: corpus_lib.shard_name(TFDS_NAME, split, i, len(parts)) for i, part in enumerate(parts)}
    for stale in out_dir.glob(f"{TFDS_NAME}-{split}.{corpus_lib.FILE_FORMAT}-*"):
      if stale.name not in shards.values():
        stale.unlink()
    for part, shard in shards.items():
      corpus_lib.link_shard(out_dir / part, out_dir / shard)
    entries = [{**e, "shard": shards[e["shard"]]} for e in entries]
    corpus_lib.write_atomic(out_dir / f"{split}.jsonl", "".join(json.dumps(e) + "\n" for e in entries))
    splits[split] = corpus_lib.split_summary(out_dir, split, entries, list(shards.values()))
  done, failed = read_state(out_dir)
  failures = [failed[k] for k in sorted(failed) if k not in done]
  corpus_lib.write_atomic(out_dir / FAILURES_FILE, "".join(json.dumps(e) + "\n" for e in failures))
  prep = json.loads((out_dir / PREP_FILE).read_text())
  return corpus_lib.write_corpus_info(out_dir, splits, name=TFDS_NAME, generator={"name": GENERATOR, **prep},
                                      inputs={"done": len(done), "failed": len(failures)})

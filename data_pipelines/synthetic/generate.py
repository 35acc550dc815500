"""`synclipmae synth`: write the synthetic corpus as clip-record shards, split by identity.

Clips are made in worker processes (each clip is a pure function of the spec and its index, so the corpus is the
same whatever the number of workers) and written in clip order. A finished corpus directory is recognised and
left alone when the same spec is asked for again; a different spec in the same directory is an error. The corpus
is written into a staging directory beside `out_dir` and moved into place when complete, so runs started together
on a missing default corpus (a local sweep) never write the same shard at once, and a failed run leaves nothing.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import tqdm
from absl import flags

from data_pipelines.synthetic import clips as clips_lib
from synclipmae.data import corpus as corpus_lib
from synclipmae.data import records

GENERATOR = "synclipmae.synthetic"
TFDS_NAME = "synclipmae_synthetic"  # The corpus as a TFDS dataset (`tfds.data_source(TFDS_NAME, data_dir=...)`).


def _spec_json(spec: clips_lib.SyntheticSpec) -> dict[str, Any]:
  return json.loads(json.dumps(dataclasses.asdict(spec)))  # Tuples become lists, as when read back.


def _existing(out_dir: Path, spec: clips_lib.SyntheticSpec) -> dict[str, Any] | None:
  if not (out_dir / corpus_lib.CORPUS_FILE).is_file():
    return None
  info = corpus_lib.Corpus(out_dir).info
  if info.get("generator", {}).get("spec") != _spec_json(spec):
    raise FileExistsError(f"{out_dir} already holds a different corpus ({corpus_lib.CORPUS_FILE} records "
                          f"{info.get('generator')}); choose another --out or delete it")
  return info


def _move_into_place(staging: Path, out_dir: Path, spec: clips_lib.SyntheticSpec) -> dict[str, Any] | None:
  """Moves a finished corpus from `staging` to `out_dir` (renaming the directory when `out_dir` is absent or
  empty, else file by file with `corpus.json` last); returns the corpus another process put there first, if any."""
  try:
    os.rename(staging, out_dir)
    return None
  except OSError:  # `out_dir` holds files: a corpus finished meanwhile, or files of the user's.
    existing = _existing(out_dir, spec)
    if existing is not None:
      return existing
  for name in sorted(os.listdir(staging), key=lambda n: n == corpus_lib.CORPUS_FILE):
    os.replace(staging / name, out_dir / name)
  return None


def clips_by_split(spec: clips_lib.SyntheticSpec) -> dict[str, list[int]]:
  """Clip indices of each split (in clip order); no validation split when the spec has none."""
  per_split = {name: [] for name in clips_lib.SPLITS if name != "validation" or spec.num_validation}
  for clip in range(spec.num_clips):
    per_split[clips_lib.split_of(spec, clips_lib.identity_of_clip(spec, clip))].append(clip)
  return per_split


def corpus_info(spec: clips_lib.SyntheticSpec, **generator: Any) -> dict[str, Any]:
  """What corpus.json holds beyond the splits: label vocabularies, identity vectors, the generating spec."""
  identities = {clips_lib.speaker_id(i): [float(x) for x in clips_lib.identity_of(spec, i).to_vector()]
                for i in range(spec.num_identities)}
  return {"label_vocab": clips_lib.LABEL_VOCAB, "identity_vectors": identities,
          "generator": {"name": GENERATOR, "spec": _spec_json(spec), **generator}}


def _generate_clips(pool, spec: clips_lib.SyntheticSpec, indices: Sequence[int],
                    progress: tqdm.tqdm) -> Iterator[records.ClipRecord]:
  make = pool.imap if pool is not None else map
  for clip in make(_make_clip, [(spec, i) for i in indices], **({"chunksize": 4} if pool else {})):
    progress.update(1)
    yield clip


def _make_clip(args: tuple[clips_lib.SyntheticSpec, int]) -> records.ClipRecord:
  return clips_lib.make_clip(*args)


def generate(spec: clips_lib.SyntheticSpec, out_dir: str | os.PathLike, *, num_workers: int | None = None,
             train_shards: int = 8, heldout_shards: int = 2, quiet: bool = False) -> dict[str, Any]:
  """Generates the corpus into `out_dir` (or finds it already there) and returns its `corpus.json` content."""
  out_dir = Path(out_dir)
  existing = _existing(out_dir, spec)
  if existing is not None:
    if not quiet:
      print(f"{out_dir}: corpus already generated with this spec; nothing to do")
    return existing
  heldout = clips_lib.heldout_identities(spec)
  per_split = clips_by_split(spec)
  shards = {"train": train_shards, "validation": heldout_shards, "heldout": heldout_shards}  # Validation as test.
  if num_workers is None:
    num_workers = os.cpu_count() or 1
  start = time.time()
  out_dir.parent.mkdir(parents=True, exist_ok=True)
  staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.generating-", dir=out_dir.parent))
  progress = tqdm.tqdm(total=spec.num_clips, desc="synthetic clips", unit="clip", disable=quiet,
                       mininterval=2.0)
  # "spawn": workers start clean (no inherited espeak or JAX state), the same on every OS.
  pool = multiprocessing.get_context("spawn").Pool(num_workers) if num_workers > 1 else None
  try:
    splits = {
        name: corpus_lib.write_split(staging, name, _generate_clips(pool, spec, indices, progress), shards[name],
                                   name=TFDS_NAME)
        for name, indices in per_split.items()}
    info = corpus_lib.write_corpus_info(staging, splits, name=TFDS_NAME,
                                        **corpus_info(spec, seconds=round(time.time() - start, 1)))
    existing = _move_into_place(staging, out_dir, spec)
  finally:
    progress.close()
    if pool is not None:
      pool.terminate()
    shutil.rmtree(staging, ignore_errors=True)
  if existing is not None:
    return existing  # Another process finished the same corpus first; ours was the same and is dropped.
  if not quiet:
    frames = sum(s["num_frames"] for s in splits.values())
    print(f"{out_dir}: {spec.num_clips} clips ({frames} frames) of {spec.num_identities} identities "
          f"({spec.num_validation} for validation, {len(heldout)} held out) in {time.time() - start:.1f} s")
  return info


def define_flags() -> None:
  """Flags of `synclipmae synth`; defaults give the project's default corpus."""
  default = clips_lib.SyntheticSpec()
  flags.DEFINE_string("out", None, "Output corpus directory.", required=True)
  flags.DEFINE_integer("num_identities", default.num_identities, "Number of identities.")
  flags.DEFINE_integer("num_heldout", default.num_heldout, "Identities held out for testing (split 'heldout').")
  flags.DEFINE_integer("num_validation", default.num_validation,
                       "Identities kept out of training for model selection (split 'validation'; 0: none).")
  flags.DEFINE_integer("clips_per_identity", default.clips_per_identity, "Clips per identity.")
  flags.DEFINE_integer("image_size", default.image_size, "Frame height and width in pixels.")
  flags.DEFINE_integer("min_words", default.min_words, "Fewest words per sentence.")
  flags.DEFINE_integer("max_words", default.max_words, "Most words per sentence.")
  flags.DEFINE_integer("seed", default.seed, "Corpus seed.")
  flags.DEFINE_integer("num_workers", None, "Worker processes (default: one per CPU).")
  flags.DEFINE_integer("train_shards", 8, "ArrayRecord shards of the train split.")
  flags.DEFINE_integer("heldout_shards", 2, "ArrayRecord shards of the held-out and validation splits.")


def spec_from_flags() -> clips_lib.SyntheticSpec:
  f = flags.FLAGS
  return clips_lib.SyntheticSpec(num_identities=f.num_identities, num_heldout=f.num_heldout,
                                 num_validation=f.num_validation,
                                 clips_per_identity=f.clips_per_identity, image_size=f.image_size,
                                 min_words=f.min_words, max_words=f.max_words, seed=f.seed)


def main(argv: Sequence[str]) -> None:
  del argv
  f = flags.FLAGS
  generate(spec_from_flags(), f.out, num_workers=f.num_workers, train_shards=f.train_shards,
           heldout_shards=f.heldout_shards)

"""`PrepBuilder`: a TFDS builder that runs `synclipmae prep` over a corpus downloaded by hand (`manual_dir`).

    synclipmae tfds-build synclipmae_lrs3 --manual_dir=/data/LRS3 --data_dir=DATA_DIR
    synclipmae tfds-build synclipmae_voxceleb2/hd --manual_dir=/data/vox2 --data_dir=gs://bucket/tfds \
        --beam_pipeline_options="runner=DataflowRunner,project=...,region=...,temp_location=gs://bucket/tmp"

A public corpus is declared by its `Layout` (where its videos lie under `manual_dir`, its official splits, how a
path names the speaker) plus `MANUAL_DOWNLOAD_INSTRUCTIONS`, licence and per-clip metadata (`clip_metadata`). Every
input goes through `process.InputProcessor.handle`, the same per-input function as `synclipmae prep`: in this
process without Beam options, in Beam's workers with them (`beam_prep.PrepDoFn`, one face tracker per worker). An
input that yields no clip gets one line in `failures.jsonl` (input, path, stage, reason), as in `prep`.

Splits are by speaker: the corpus's official test set (or, where it has none, a stable hash of the speaker id,
`Layout.heldout_fraction`) is "heldout"; `Layout.validation_fraction` of the remaining speakers, by the same hash,
is "validation" (what recipe decisions are judged on); the rest is "train". The finished directory
`DATA_DIR/NAME/CONFIG/VERSION` is a TFDS dataset and, with the manifests and `corpus.json` added after TFDS has
written it, a `synclipmae.data.corpus.Corpus`.

A TFDS build is all or nothing: it does not resume. For a corpus that takes days on a cluster without Beam, run
`synclipmae prep` array jobs over the same videos with the layout's `--speaker_pattern` (and the official test
speakers as `--heldout_speakers`): its output is the same kind of directory, and it resumes.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import tensorflow_datasets as tfds
from etils import epath

from data_pipelines.prep import decode, inputs, process, settings
from data_pipelines.prep.parts import FAILURES_FILE, GENERATOR
from synclipmae.data import corpus as corpus_lib
from synclipmae.data import records

FAILURES_DIR = "failures"  # Per-split failure files while building; failures.jsonl (sorted by input) at the end.
SPLITS = ("train", "validation", "heldout")


@dataclasses.dataclass(frozen=True)
class Layout:
  """Where a corpus's videos lie under `manual_dir` and what their paths say.

  Attributes:
    official: {official split: glob patterns relative to manual_dir}; "test" is the corpus's held-out set.
    speaker_pattern: `inputs.SpeakerPattern` template (or regex) giving the speaker id from a relative path.
    heldout_speakers: speakers held out by name (a common test set of a corpus whose own split is not by speaker).
    heldout_fraction: for corpora without an official test split: the share of speakers held out by hash.
    validation_fraction: the share of the other speakers that forms "validation".
  """
  official: Mapping[str, Sequence[str]]
  speaker_pattern: str
  heldout_speakers: tuple[str, ...] = ()
  heldout_fraction: float = 0.0
  validation_fraction: float = 0.05

  def split_of(self, official: str, speaker: str) -> str:
    if official == "test" or speaker in self.heldout_speakers:
      return "heldout"
    h = inputs.speaker_hash(speaker)
    if h < self.heldout_fraction:
      return "heldout"
    if h < self.heldout_fraction + self.validation_fraction:
      return "validation"
    return "train"


@dataclasses.dataclass(frozen=True)
class Task:
  """One input of a build: the video and the metadata its clips carry besides prep's own."""
  item: inputs.Input
  metadata: Mapping[str, Any]


@dataclasses.dataclass(kw_only=True)
class PrepBuilderConfig(tfds.core.BuilderConfig):
  prep: settings.PrepConfig = settings.PrepConfig()


def examples_of(processor: process.InputProcessor, task: Task) -> tuple[list[tuple[str, dict]], dict | None]:
  """(the TFDS examples of one input's clips, keyed by clip id; its failures entry or None)."""
  outcome = processor.handle(task.item)
  if outcome.failure is not None:
    return [], outcome.failure
  return [(clip.clip_id, records.to_example(dataclasses.replace(clip, metadata={**clip.metadata, **task.metadata})))
          for clip in outcome.clips], None


class PrepBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base of the public corpora's builders; subclasses set LAYOUT, the instructions, licence and citation."""

  VERSION = tfds.core.Version(f"{records.SCHEMA_VERSION}.0.0")
  RELEASE_NOTES = {str(VERSION): f"Clip record schema {records.SCHEMA_VERSION} (synclipmae.data.records)."}
  BUILDER_CONFIGS = [
      PrepBuilderConfig(name="default", description="128x128 aligned face crops (the project's crop size), JPEG.",
                        prep=settings.PrepConfig()),
      PrepBuilderConfig(name="hd", description="224x224 aligned face crops (ViT-B geometry), JPEG.",
                        prep=settings.PrepConfig(size=224)),
  ]
  LAYOUT: Layout
  LICENSE: str = ""
  HOMEPAGE: str = ""
  CITATION: str = ""

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(features=records.features(process.label_spec(self.builder_config.prep)),
                                          description=self.__doc__, homepage=self.HOMEPAGE, citation=self.CITATION,
                                          license=self.LICENSE)

  def prep_config(self) -> settings.PrepConfig:
    return dataclasses.replace(self.builder_config.prep, speaker_pattern=self.LAYOUT.speaker_pattern)

  def clip_metadata(self, manual_dir: epath.Path, key: str) -> dict[str, Any]:
    """Per-clip metadata from the corpus's annotations (transcript, emotion, ...), by input key; none by default."""
    del manual_dir, key
    return {}

  def list_tasks(self, manual_dir: epath.Path) -> tuple[dict[str, list[Task]], list[dict[str, Any]]]:
    """({split: its inputs, sorted by key}, failures entries of inputs whose path names no speaker).

    A speaker of the official test set is held out with all their videos, wherever the others lie, so no split
    shares a speaker even where a corpus's own splits do (logged with the count)."""
    speaker_of = inputs.SpeakerPattern(self.LAYOUT.speaker_pattern)
    found: dict[str, tuple[inputs.Input, str, str]] = {}  # key -> (input, official split, speaker)
    failures = []
    for official, patterns in self.LAYOUT.official.items():
      for pattern in patterns:
        for path in sorted(manual_dir.glob(pattern)):
          key = path.relative_to(manual_dir).as_posix()
          if key in found or path.suffix.lower() not in inputs.VIDEO_EXTENSIONS:
            continue
          item = inputs.Input(key, str(path))
          try:
            found[key] = (item, official, speaker_of(item))
          except decode.PrepError as e:
            failures.append(process.failure_entry(item, e.stage, e.reason))
    if failures and not found:
      raise ValueError(f"{self.name}: none of the {len(failures)} videos under --manual_dir={manual_dir} names a "
                       f"speaker as {self.LAYOUT.speaker_pattern!r} reads it, e.g. {failures[0]['input']!r}.\n"
                       f"{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
    if not found:
      wanted = "; ".join(f"{o}: {', '.join(p)}" for o, p in self.LAYOUT.official.items())
      raise FileNotFoundError(f"{self.name}: no videos under --manual_dir={manual_dir} where the layout puts them "
                              f"({wanted}).\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
    test_speakers = {speaker for _, official, speaker in found.values() if official == "test"}
    moved = sum(official != "test" and speaker in test_speakers for _, official, speaker in found.values())
    if moved:
      logging.warning("%s: %d videos outside the official test set are of its speakers: held out with them",
                      self.name, moved)
    tasks: dict[str, list[Task]] = {split: [] for split in SPLITS}
    for key in sorted(found):
      item, official, speaker = found[key]
      split = "heldout" if speaker in test_speakers else self.LAYOUT.split_of(official, speaker)
      tasks[split].append(Task(item, self.clip_metadata(manual_dir, key)))
    return {split: split_tasks for split, split_tasks in tasks.items() if split_tasks}, failures

  def _download_and_prepare(self, dl_manager, download_config=None, **kwargs):
    self._beam = download_config is not None and (download_config.beam_options is not None
                                                  or download_config.beam_runner is not None)
    return super()._download_and_prepare(dl_manager, download_config=download_config, **kwargs)

  def _split_generators(self, dl_manager):
    tasks, failures = self.list_tasks(dl_manager.manual_dir)
    failures_dir = self.data_path / FAILURES_DIR  # The build's temporary directory, renamed when TFDS is done.
    failures_dir.mkdir(parents=True, exist_ok=True)
    (failures_dir / "listing.jsonl").write_text("".join(json.dumps(e) + "\n" for e in failures))
    return {split: self._generate_examples(split, split_tasks, failures_dir) for split, split_tasks in tasks.items()}

  def _generate_examples(self, split: str, tasks: Sequence[Task], failures_dir: epath.Path):
    if getattr(self, "_beam", False):
      from data_pipelines.corpora import beam_prep  # Imports apache_beam: only when building on Beam.
      return beam_prep.PrepTransform(self.prep_config(), tasks, str(failures_dir / split))
    return self._generate_here(split, tasks, failures_dir)

  def _generate_here(self, split: str, tasks: Sequence[Task], failures_dir: epath.Path) -> Iterator[tuple[str, dict]]:
    processor = process.InputProcessor(self.prep_config())
    try:
      with (failures_dir / f"{split}.jsonl").open("w") as failures:
        for task in tasks:
          examples, failure = examples_of(processor, task)
          if failure is not None:
            failures.write(json.dumps(failure) + "\n")
            failures.flush()
          yield from examples
    finally:
      processor.close()

  def download_and_prepare(self, *args, **kwargs):
    super().download_and_prepare(*args, **kwargs)
    if (self.data_path / corpus_lib.CORPUS_FILE).exists():
      return
    entries = {}
    for path in sorted((self.data_path / FAILURES_DIR).glob("*.jsonl")):  # Beam's files: SPLIT-I-of-N.jsonl.
      for line in path.read_text().splitlines():
        if line.strip():
          entry = json.loads(line)
          entries[entry["input"]] = entry  # A bundle Beam retried may have reported an input twice.
    failures = [entries[k] for k in sorted(entries)]
    corpus_lib.write_atomic(self.data_path / FAILURES_FILE, "".join(json.dumps(e) + "\n" for e in failures))
    stages = collections.Counter(e["stage"] for e in failures)
    corpus_lib.write_index(self.data_path, generator={
        "name": GENERATOR, "builder": self.name, "settings": self.prep_config().output_settings()},
        inputs={"failed": len(failures), "failed_by_stage": dict(sorted(stages.items()))})

"""The TFDS builders on Apache Beam (DirectRunner, 2 worker processes) give the records of the single-process
build: the synthetic corpus, and a public corpus's builder running prep in Beam's workers. Runs in the `[beam]`
environment (`make test-beam`); the core environment has no Beam."""

import importlib.util
import json

import pytest
from test_records import _assert_same

import prep_media
from synclipmae.commands import tfds_build
from synclipmae.data import corpus as corpus_lib

BEAM_OPTIONS = "runner=DirectRunner,direct_num_workers=2,direct_running_mode=multi_processing"
pytestmark = pytest.mark.skipif(importlib.util.find_spec("apache_beam") is None,
                                reason="apache-beam is only in the [beam] environment: make test-beam")


def test_beam_build_gives_the_single_process_records(tmp_path):
  assert importlib.util.find_spec("tensorflow") is None
  tfds_build.run(["synclipmae_synthetic/tiny", f"--data_dir={tmp_path / 'beam'}",
                  f"--beam_pipeline_options={BEAM_OPTIONS}"])
  tfds_build.run(["synclipmae_synthetic/tiny", f"--data_dir={tmp_path / 'local'}"])
  beam, local = (corpus_lib.Corpus(tmp_path / d / "synclipmae_synthetic" / "tiny" / "2.0.0") for d in ("beam", "local"))
  assert beam.splits == local.splits == ["train", "validation", "heldout"]
  for split in local.splits:
    assert beam.manifest(split) == local.manifest(split) and len(local.manifest(split)) > 0
    for i in range(len(local.manifest(split))):
      _assert_same(beam.read(split, i), local.read(split, i))


def test_prep_on_beam_gives_the_single_process_records_and_failures(tmp_path):
  """An LRS3-like folder: prep's per-input function in Beam's workers = in this process, bad inputs included."""
  expected = prep_media.lrs3_folder(tmp_path / "LRS3")
  tfds_build.run(["synclipmae_lrs3/default", f"--manual_dir={tmp_path / 'LRS3'}", f"--data_dir={tmp_path / 'beam'}",
                  f"--beam_pipeline_options={BEAM_OPTIONS}"])
  tfds_build.run(["synclipmae_lrs3/default", f"--manual_dir={tmp_path / 'LRS3'}", f"--data_dir={tmp_path / 'local'}"])
  beam, local = (tmp_path / d / "synclipmae_lrs3" / "default" / "2.0.0" for d in ("beam", "local"))
  failures = [(d / "failures.jsonl").read_text() for d in (beam, local)]
  assert failures[0] == failures[1]
  assert {e["input"]: e["stage"] for e in map(json.loads, failures[0].splitlines())} == expected["bad"]
  beam, local = corpus_lib.Corpus(beam), corpus_lib.Corpus(local)
  assert beam.splits == local.splits and "heldout" in local.splits
  for split in local.splits:
    assert beam.manifest(split) == local.manifest(split) and len(local.manifest(split)) > 0
    for i in range(len(local.manifest(split))):
      _assert_same(beam.read(split, i), local.read(split, i))

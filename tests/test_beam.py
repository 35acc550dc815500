"""The synthetic TFDS builder on Apache Beam (DirectRunner, 2 worker processes) gives the records of the
single-process build. Runs in the `[beam]` environment (`make test-beam`); the core environment has no Beam."""

import importlib.util

import pytest
from test_records import _assert_same

from synclipmae.commands import tfds_build
from synclipmae.data import corpus as corpus_lib

BEAM_OPTIONS = "runner=DirectRunner,direct_num_workers=2,direct_running_mode=multi_processing"


@pytest.mark.skipif(importlib.util.find_spec("apache_beam") is None,
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

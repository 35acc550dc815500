"""`synclipmae_synthetic`: the synthetic corpus as a TensorFlow Datasets builder (built without TensorFlow).

    synclipmae tfds-build synclipmae_synthetic/default --data_dir=DATA_DIR
    tfds.data_source("synclipmae_synthetic/default", data_dir=DATA_DIR)      # then, in any process

    # On Apache Beam (the `[beam]` extra): locally with 2 worker processes, or on Dataflow / Flink / Spark.
    synclipmae tfds-build synclipmae_synthetic/large --data_dir=DATA_DIR \
        --beam_pipeline_options="runner=DirectRunner,direct_num_workers=2,direct_running_mode=multi_processing"

With Beam options the clips are rendered in Beam's workers (`beam.Create(clip indices) | beam.Map(render)`);
without, in this process. Both give the same records in the same order (`disable_shuffling`: TFDS sorts Beam's
output by key, the clip index; `tests/test_beam.py`). The same clips as `synclipmae synth` (`clips.make_clip` of the
config's spec), written by TFDS's own writer in clip order (TFDS cuts the shards, so the record order differs from
`synth`'s round-robin shards, and with it the batches of a seed). After TFDS has written the dataset, the manifests
and `corpus.json` are added beside it (`corpus.write_index`), so the directory
`DATA_DIR/synclipmae_synthetic/CONFIG/VERSION` is also a `synclipmae.data.corpus.Corpus` for pretraining and the
evaluators.
"""

from __future__ import annotations

import dataclasses
import functools

import tensorflow_datasets as tfds

from data_pipelines.synthetic import clips as clips_lib
from data_pipelines.synthetic import generate
from synclipmae.data import corpus as corpus_lib
from synclipmae.data import records


@dataclasses.dataclass(kw_only=True)
class SyntheticConfig(tfds.core.BuilderConfig):
  spec: clips_lib.SyntheticSpec = clips_lib.SyntheticSpec()


def _make_example(spec: clips_lib.SyntheticSpec, clip: int) -> tuple[int, dict]:
  record = clips_lib.make_clip(spec, clip)
  return clip, records.to_example(record)  # An int key: with disable_shuffling TFDS orders (and Beam shards) by it.


class SynclipmaeSynthetic(tfds.core.GeneratorBasedBuilder):
  """Synthetic talking faces with every factor known: identity, speech-driven mouth, blinks, head pose, expression."""

  VERSION = tfds.core.Version(f"{records.SCHEMA_VERSION}.0.0")
  RELEASE_NOTES = {str(VERSION): f"Clip record schema {records.SCHEMA_VERSION} (synclipmae.data.records)."}
  BUILDER_CONFIGS = [
      SyntheticConfig(name="default", description="The project's default corpus: 56 identities x 12 clips "
                      "(40 train / 8 validation / 8 test), 64x64 at 25 fps.", spec=clips_lib.SyntheticSpec()),
      SyntheticConfig(name="large", description="224 identities x 12 clips (160 / 32 / 32), 64x64 at 25 fps.",
                      spec=clips_lib.SyntheticSpec(num_identities=224, num_heldout=32, num_validation=32)),
      SyntheticConfig(name="hd", description="The default identities and clips at 128x128.",
                      spec=clips_lib.SyntheticSpec(image_size=128)),
      SyntheticConfig(name="tiny", description="6 identities x 2 short clips (4 / 1 / 1): for tests.",
                      spec=clips_lib.SyntheticSpec(num_identities=6, num_heldout=1, num_validation=1,
                                                   clips_per_identity=2, min_words=3, max_words=4, seed=11)),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    clip = clips_lib.make_clip(clips_lib.SyntheticSpec(num_identities=2, num_heldout=1, num_validation=0,
                                                       clips_per_identity=1, min_words=1, max_words=1), 0)
    return self.dataset_info_from_configs(
        features=records.features(records.label_spec(clip)),  # The synthetic label set, from a 1-word clip.
        disable_shuffling=True,  # Clip order, as written.
        homepage="https://arxiv.org/abs/2510.10069")

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download: every clip is rendered from the spec.
    spec = self.builder_config.spec
    return {split: self._generate_examples(indices) for split, indices in generate.clips_by_split(spec).items()}

  def _download_and_prepare(self, dl_manager, download_config=None, **kwargs):
    self._beam = download_config is not None and (download_config.beam_options is not None
                                                  or download_config.beam_runner is not None)
    return super()._download_and_prepare(dl_manager, download_config=download_config, **kwargs)

  def _generate_examples(self, indices):
    spec = self.builder_config.spec
    if getattr(self, "_beam", False):  # Workers import this module by name: it must be installed (it is).
      import apache_beam as beam
      return beam.Create(list(indices)) | beam.Map(functools.partial(_make_example, spec))
    return (_make_example(spec, clip) for clip in indices)

  def download_and_prepare(self, *args, **kwargs):
    super().download_and_prepare(*args, **kwargs)
    if not (self.data_path / corpus_lib.CORPUS_FILE).exists():
      corpus_lib.write_index(self.data_path, **generate.corpus_info(self.builder_config.spec))

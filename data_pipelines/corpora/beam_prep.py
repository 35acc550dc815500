"""The Beam side of `builder.PrepBuilder`: a corpus's inputs fanned out to Beam's workers, each running prep.

Workers unpickle `PrepDoFn` by module name, so this module lives in the installed package; it is imported only
when a build has Beam options (it imports apache_beam, the `[beam]` extra).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import apache_beam as beam

from data_pipelines.corpora import builder as builder_lib
from data_pipelines.prep import process, settings


class PrepDoFn(beam.DoFn):
  """Inputs -> their examples (main output) and failures entries (JSON lines, tagged output FAILURES)."""

  FAILURES = "failures"

  def __init__(self, config: settings.PrepConfig):
    super().__init__()
    self.config = config

  def setup(self):
    self.processor = process.InputProcessor(self.config)  # The face models are loaded once per worker.

  def teardown(self):
    self.processor.close()

  def process(self, task: builder_lib.Task):
    examples, failure = builder_lib.examples_of(self.processor, task)
    if failure is not None:
      yield beam.pvalue.TaggedOutput(self.FAILURES, json.dumps(failure))
    yield from examples


class PrepTransform(beam.PTransform):
  """The examples of one split's inputs; their failures go to `failures_prefix`-I-of-N.jsonl."""

  def __init__(self, config: settings.PrepConfig, tasks: Sequence[builder_lib.Task], failures_prefix: str):
    super().__init__()
    self.config, self.tasks, self.failures_prefix = config, list(tasks), failures_prefix

  def expand(self, pbegin):
    outputs = (pbegin
               | "Inputs" >> beam.Create(self.tasks)
               | "Spread" >> beam.Reshuffle()  # One input per element, spread over the workers.
               | "Prep" >> beam.ParDo(PrepDoFn(self.config)).with_outputs(PrepDoFn.FAILURES, main="examples"))
    _ = outputs[PrepDoFn.FAILURES] | "Failures" >> beam.io.WriteToText(self.failures_prefix, file_name_suffix=".jsonl")
    return outputs["examples"]

"""experiments/memory_plan.py: the abstract batch is the pipeline's, and the per-device plan follows the mesh."""

import os
import sys

import jax
import numpy as np

from test_train import REPO, _first_batch, small_config

sys.path.insert(0, os.path.join(REPO, "experiments"))
import memory_plan  # noqa: E402


def test_batch_spec_is_what_the_pipeline_yields(synthetic_corpus):
  config = small_config(synthetic_corpus)
  real = _first_batch(config)
  for key, spec in memory_plan.abstract_batch(config, None).items():
    assert real[key].shape == spec.shape and real[key].dtype == spec.dtype, key


def test_fsdp_shards_parameters_and_optimizer_state_per_device(synthetic_corpus):
  config = small_config(synthetic_corpus)
  config.model.encoder.width = config.model.decoder.width = 64  # Tensors large enough for the FSDP rule.
  data_parallel, sharded = memory_plan.plan(config, 8, 1), memory_plan.plan(config, 4, 2)
  # AdamW: the parameters and two moments, float32, whole on every device of a data-parallel mesh.
  assert data_parallel["params_and_optimizer"] >= 3 * 4 * data_parallel["num_params"]
  assert sharded["params_and_optimizer"] < 0.75 * data_parallel["params_and_optimizer"]
  assert sharded["batch"] == data_parallel["batch"]  # The batch is split over both axes.
  for r in (data_parallel, sharded):
    assert r["temporaries"] > 0 and r["peak"] >= r["arguments"] >= r["params_and_optimizer"] + r["batch"]
  assert len(jax.devices()) == 8 and np.isfinite(sharded["peak"])

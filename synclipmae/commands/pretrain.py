"""`synclipmae pretrain --config=configs/pretrain.py:VARIANT --workdir=DIR [--config.x.y=z ...]`.

Trains (resuming from DIR if it holds checkpoints), then runs the zero-shot sync evaluation (and, on labelled
corpora, the factor probes) on the config's eval split (the validation identities) and prints where everything is.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from absl import flags
from ml_collections import config_flags


def define_flags() -> None:
  config_flags.DEFINE_config_file("config", None, "Config file and variant, e.g. configs/pretrain.py:mu.",
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, "Run directory: checkpoints, logs, results. Reruns resume from it.",
                      required=True)
  flags.DEFINE_bool("eval", True, "Run the zero-shot sync evaluation after training.")
  flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (multi-host; auto-detected on "
                    "TPU pods and Slurm, or set JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID).")


def train_and_evaluate(config, workdir: str, evaluate: bool = True) -> dict[str, str]:
  """Trains `config` in `workdir` (resuming), runs the zero-shot sync evaluation, prints and returns the paths.

  Exits with status 143 after SIGTERM (checkpoint saved) and 1 after a non-finite loss (last checkpoint kept).
  """
  import jax
  from synclipmae.eval import sync
  from synclipmae.train import loop
  try:
    run = loop.pretrain(config, workdir)
  except loop.Interrupted as e:
    print(e, file=sys.stderr)
    sys.exit(loop.EXIT_INTERRUPTED)
  except loop.NonFiniteLossError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  paths = {"checkpoints": run["checkpoints"], "tensorboard": os.path.abspath(run["tensorboard"]),
           "metrics": os.path.abspath(run["metrics"])}
  if evaluate and jax.process_index() == 0:
    model = loop.model_from_state(run["graphdef"], run["state"])
    result = sync.evaluate_config(model, run["corpus"], config)
    written = sync.write_results(result, workdir)
    print(f"zero-shot sync accuracy on {result['split']}: {result['accuracy']:.1%} "
          f"(K={result['context_frames']}, {result['num_samples']} samples, chance {result['chance_accuracy']:.1%})")
    paths.update(sync_eval=written["json"], sync_plot=written["plot"])
    paths.update(_evaluate_factors(model, run["corpus"], config, workdir, int(run["state"].step)))
  for name, path in paths.items():
    print(f"  {name + ':':13s} {os.path.abspath(path)}")
  return paths


def _evaluate_factors(model, corpus, config, workdir: str, step: int) -> dict[str, str]:
  """The factor matrix (`synclipmae eval-factors`) when the eval split carries the ground-truth factor labels (the
  synthetic corpus); nothing otherwise."""
  from synclipmae import inference
  from synclipmae.eval import factors
  from synclipmae.eval import sync
  split = sync.evaluation_split(config, corpus)
  if not corpus.manifest(split) or not all(label in corpus.read(split, 0).labels
                                           for label, _ in factors.FACTORS.values()):
    return {}
  pretrained = inference.Pretrained(model, inference.info_from_config(config, step), workdir, run_config=config)
  result = factors.evaluate(pretrained, corpus, split)
  result["step"] = step
  written = factors.write_results(result, workdir)
  print(f"factor probes on {split} ({result['num_frames']} frames):\n{factors.format_matrix(result)}")
  return {"factors": written["json"], "factors_plot": written["plot"]}


def main(argv: Sequence[str]) -> None:
  del argv
  f = flags.FLAGS
  if f.config is None:
    raise flags.ValidationError("--config is required, e.g. --config=configs/pretrain.py:mu")
  if f.distributed:
    import jax
    jax.distributed.initialize()
  train_and_evaluate(f.config, f.workdir, f.eval)

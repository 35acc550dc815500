"""`synclipmae pretrain --config=configs/pretrain.py:VARIANT --workdir=DIR [--config.x.y=z ...]`.

Trains (resuming from DIR if it holds checkpoints), then runs the zero-shot sync evaluation (and, on labelled
corpora, the factor probes) on the config's eval split (the validation identities) and prints where everything is.
"""

from __future__ import annotations

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
                    "TPU pods and Slurm, or give --coordinator, --num_processes and --process_id).")
  flags.DEFINE_string("coordinator", None, "HOST:PORT of process 0 (with --distributed).")
  flags.DEFINE_integer("num_processes", None, "Processes in the job (with --distributed).")
  flags.DEFINE_integer("process_id", None, "This process's index (with --distributed).")


def train_and_evaluate(config, workdir: str, evaluate: bool = True) -> dict[str, str]:
  """Trains `config` in `workdir` (resuming), runs the zero-shot sync evaluation, prints and returns the paths.

  Exits with status 143 after SIGTERM (checkpoint saved) and 1 after a non-finite loss (last checkpoint kept).
  """
  import jax
  from synclipmae import storage
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
  paths = {"checkpoints": run["checkpoints"], "tensorboard": run["tensorboard"], "metrics": run["metrics"]}
  state = run["state"]
  if evaluate and config.model.get("mode", "synclipmae") == "mae":
    print("no sync evaluation: model.mode='mae' has no prompt tokens and no audio branch")
    evaluate = False
  if evaluate and config.eval.num_samples < 1:
    print(f"no sync evaluation: eval.num_samples={config.eval.num_samples}")
    evaluate = False
  if evaluate and jax.process_count() > 1:
    # Process 0 evaluates alone: parameters sharded over other processes' devices (mesh.fsdp) are first gathered
    # whole, every process taking part.
    from jax.experimental import multihost_utils
    state = state.replace(params=multihost_utils.process_allgather(state.params, tiled=True),
                          frozen=multihost_utils.process_allgather(state.frozen, tiled=True))
  if evaluate and jax.process_index() == 0:
    model = loop.model_from_state(run["graphdef"], state)
    result = sync.evaluate_config(model, run["corpus"], config)
    written = sync.write_results(result, workdir)
    print(f"zero-shot sync accuracy on {result['split']}: {result['accuracy']:.1%} "
          f"(K={result['context_frames']}, {result['num_samples']} samples, chance {result['chance_accuracy']:.1%})")
    paths.update(sync_eval=written["json"], sync_plot=written["plot"])
    paths.update(_evaluate_factors(model, run["corpus"], config, workdir, int(state.step)))
  for name, path in paths.items():
    print(f"  {name + ':':13s} {storage.path(path)}")
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
    initialize_distributed(f.coordinator, f.num_processes, f.process_id)
  elif f.coordinator or f.num_processes or f.process_id is not None:
    raise flags.ValidationError("--coordinator / --num_processes / --process_id need --distributed")
  train_and_evaluate(f.config, f.workdir, f.eval)


def initialize_distributed(coordinator: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None) -> None:
  """jax.distributed.initialize, with gloo collectives so that CPU processes can form one job too (DESIGN.md
  section 4: two processes on loopback test the multi-host paths for real; accelerators ignore the setting)."""
  import jax
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id)
  print(f"process {jax.process_index()} of {jax.process_count()}: {jax.local_device_count()} local devices, "
        f"{jax.device_count()} in all")

"""`synclipmae eval-sync --workdir=DIR`: zero-shot AV-sync accuracy of a pretrained checkpoint.

Writes DIR/sync_eval.json and DIR/sync_eval.png (or into --out).
"""

from __future__ import annotations

from collections.abc import Sequence

from absl import flags


def define_flags() -> None:
  flags.DEFINE_string("workdir", None, "Pretraining workdir (its config.json and checkpoints).", required=True)
  flags.DEFINE_string("data", None, "Corpus directory (default: the one the run trained on).")
  flags.DEFINE_string("split", None, "Split to evaluate (default: the config's eval split).")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: the newest).")
  flags.DEFINE_integer("context_frames", None, "K, frames averaged per score (default: the config's).")
  flags.DEFINE_integer("num_samples", None, "Samples (default: the config's).")
  flags.DEFINE_string("out", None, "Output directory (default: the workdir).")


def main(argv: Sequence[str]) -> None:
  del argv
  f = flags.FLAGS
  from synclipmae.data.corpus import Corpus
  from synclipmae.eval import sync
  from synclipmae.inference import load_pretrained
  pretrained = load_pretrained(f.workdir, f.step)
  config, step = pretrained.run_config, pretrained.step
  if config is None:
    raise ValueError(f"{f.workdir} is an export; eval-sync evaluates a pretraining workdir (use `synclipmae sync` "
                     "on video files for an export)")
  result = sync.evaluate_config(pretrained.model, Corpus(f.data or config.data.dir), config, split=f.split,
                                context_frames=f.context_frames, num_samples=f.num_samples)
  result["checkpoint_step"] = step
  written = sync.write_results(result, f.out or f.workdir)
  print(f"step {step}: zero-shot sync accuracy on {result['split']}: {result['accuracy']:.1%} "
        f"(K={result['context_frames']}, {result['num_samples']} samples, chance {result['chance_accuracy']:.1%}); "
        f"LSE-D {result['lse_d']:.3f}, LSE-C {result['lse_c']:.3f}")
  for name, path in written.items():
    print(f"  {name}: {path}")

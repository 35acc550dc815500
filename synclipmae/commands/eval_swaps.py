"""`synclipmae eval-swaps --model=PATH [--data=CORPUS]`: draw A's face with B's mouth and score it against the truth.

For pairs of clips of different identities, the decoder gets z_id (a reference frame of A) and z_amb of A and the
driving token of B (z_voc, and B's audio token); the synthetic corpus renders the true frame (A's identity and head
motion, B's mouth). Reports PSNR of the renders to the truth and to either source, over the whole frame and the
mouth region (synclipmae/eval/swaps.py). Writes swaps.json and swaps.png (rows: identities, columns: mouth
sources) into --out. Needs a model whose decoder outputs pixels (model.decoder.patch_stats).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from absl import flags


def define_flags() -> None:
  flags.DEFINE_string("model", None, "An export directory or a pretraining workdir.", required=True)
  flags.DEFINE_string("data", None, "The synthetic corpus (default: the one the model was trained on).")
  flags.DEFINE_string("split", "heldout", "Split to draw the pairs from.")
  flags.DEFINE_integer("num_pairs", 64, "Swaps to score.")
  flags.DEFINE_integer("seed", 0, "Which pairs and frames are drawn.")
  flags.DEFINE_string("out", None, "Output directory (default: the model's directory).")


def main(argv: Sequence[str]) -> None:
  del argv
  f = flags.FLAGS
  from synclipmae.commands.eval_factors import default_corpus
  from synclipmae.data.corpus import Corpus
  from synclipmae.eval import swaps
  from synclipmae.inference import load_pretrained
  pretrained = load_pretrained(f.model)
  result = swaps.evaluate(pretrained, Corpus(f.data or default_corpus(pretrained)), f.split,
                          num_pairs=f.num_pairs, seed=f.seed)
  result["model"] = os.path.abspath(f.model)
  written = swaps.write_results(result, f.out or f.model)
  print(f"step {pretrained.step}, {result['split']}: {result['num_pairs']} swaps\n{swaps.format_summary(result)}")
  for name, path in written.items():
    print(f"  {name}: {path}")

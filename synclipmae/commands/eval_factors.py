"""`synclipmae eval-factors --model=PATH [--data=CORPUS]`: which token carries which ground-truth factor.

Linear probes from z_id, z_voc, z_amb and the audio tokens to identity, mouth (open / width / round), viseme,
head pose, blink and expression of a corpus with those labels (the synthetic corpus), on its held-out split:
motion factors scored on identities the probe never saw, identity on unseen clips of known identities
(synclipmae/eval/factors.py). Writes factors.json and factors.png (token x factor heatmap) into --out.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from absl import flags


def define_flags() -> None:
  flags.DEFINE_string("model", None, "An export directory or a pretraining workdir.", required=True)
  flags.DEFINE_string("data", None, "Corpus with factor labels (default: the one the model was trained on).")
  flags.DEFINE_string("split", "heldout", "Split to probe.")
  flags.DEFINE_integer("max_clips", None, "Use at most this many clips of the split (spread over it).")
  flags.DEFINE_string("out", None, "Output directory (default: the model's directory).")


def default_corpus(pretrained) -> str:
  """The corpus a model was trained on, from a workdir's config or an export's training summary."""
  if pretrained.run_config is not None:
    return pretrained.run_config.data.dir
  corpus = pretrained.info.get("training", {}).get("corpus")
  if not corpus:
    raise ValueError(f"{pretrained.path} does not name its training corpus; pass --data=CORPUS")
  return corpus


def main(argv: Sequence[str]) -> None:
  del argv
  f = flags.FLAGS
  from synclipmae.data.corpus import Corpus
  from synclipmae.eval import factors
  from synclipmae.inference import load_pretrained
  pretrained = load_pretrained(f.model)
  result = factors.evaluate(pretrained, Corpus(f.data or default_corpus(pretrained)), f.split,
                            max_clips=f.max_clips)
  result["model"], result["step"] = os.path.abspath(f.model), pretrained.step
  written = factors.write_results(result, f.out or f.model)
  print(f"step {pretrained.step}, {result['split']}: {result['num_frames']} frames of {result['num_identities']} "
        f"identities\n{factors.format_matrix(result)}")
  for name, path in written.items():
    print(f"  {name}: {path}")

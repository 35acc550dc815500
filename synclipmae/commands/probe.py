"""`synclipmae probe --model=PATH --label=NAME [--data=CORPUS] [--tokens=z_voc,z_amb] [--pool=mean]`: linear probes.

Frozen tokens of every clip (through `Pretrained.encode_clip`, each clip encoded once for every token set),
averaged per clip or kept per frame; a linear classifier / regressor trained with optax on --train_split and
scored on --test_split: accuracy, macro AUC and the confusion matrix for classes, mean AUC / macro F1 for
multi-label targets, R^2 for continuous ones
(synclipmae/eval/probes.py). Labels: the corpus's own (per-frame label arrays or per-clip metadata; "speaker" is
the speaker id) or --labels=FILE, a CSV / JSON file mapping clip ids to labels (CelebV-HQ's emotion or action
annotations). Writes probe_TOKENS_LABEL.json and .png into --out.

  synclipmae probe --model=runs/demo/export --label=expression --tokens=z_amb,z_voc   # two probes
  synclipmae probe --model=runs/demo/export --label=speaker --tokens=z_id --train_split=heldout \\
      --test_split=heldout    # unseen clips of known speakers
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from absl import flags


def define_flags() -> None:
  flags.DEFINE_string("model", None, "An export directory or a pretraining workdir.", required=True)
  flags.DEFINE_list("label", None, "Label(s) to probe, comma-separated.", required=True)
  flags.DEFINE_string("data", None, "Corpus (default: the one the model was trained on).")
  flags.DEFINE_string("labels", None, "CSV / JSON file mapping clip ids to labels (instead of the corpus's own).")
  flags.DEFINE_list("tokens", ["z_amb"], "Token sets to probe, one probe each: z_id, z_voc, z_amb, audio; '+' "
                    "concatenates (z_amb,z_voc,z_id+z_amb: three probes).")
  flags.DEFINE_enum("pool", "mean", ["mean", "frame"], "mean: one sample per clip (time-averaged); frame: per frame.")
  flags.DEFINE_enum("kind", None, ["class", "multilabel", "regression"], "Override the kind read off the labels.")
  flags.DEFINE_string("train_split", "train", "Split the probe is trained on.")
  flags.DEFINE_string("test_split", "heldout", "Split it is scored on (the same split: unseen clips of each speaker).")
  flags.DEFINE_integer("max_clips", None, "Use at most this many clips of each split (spread over it).")
  flags.DEFINE_integer("steps", 500, "Full-batch Adam steps.")
  flags.DEFINE_float("weight_decay", None, "L2 penalty on the probe's weights (inputs are standardised); default: "
                     "chosen by 3-fold cross-validation on the training split.")
  flags.DEFINE_string("out", None, "Output directory (default: MODEL/probes).")


def main(argv: Sequence[str]) -> None:
  del argv
  f = flags.FLAGS
  from synclipmae.commands.eval_factors import default_corpus
  from synclipmae.data.corpus import Corpus
  from synclipmae.eval import probes
  from synclipmae.inference import load_pretrained
  label_file = probes.read_label_file(f.labels) if f.labels else None
  pretrained = load_pretrained(f.model)
  result = probes.evaluate(pretrained, Corpus(f.data or default_corpus(pretrained)), f.label, tokens=f.tokens,
                           pool=f.pool, train_split=f.train_split, test_split=f.test_split, label_file=label_file,
                           kind=f.kind, max_clips=f.max_clips, steps=f.steps, weight_decay=f.weight_decay)
  result["model"], result["step"] = os.path.abspath(f.model), pretrained.step
  written = probes.write_results(result, f.out or os.path.join(f.model, "probes"))
  print(f"step {pretrained.step}, {probes.format_results(result)}")
  for name, path in written.items():
    print(f"  {name}: {path} (+ .png)")

"""`synclipmae train-vsr --model=PATH [--inputs=z_voc] [--data=CORPUS]`: a lip-reading head on frozen tokens.

A small temporal Transformer trained with CTC over characters (and visemes, on corpora that label them) on the
frozen per-frame sequence of --inputs: `z_voc` (what the paper reads speech from), `z_id` (a baseline that should
fail), or `pixels` (raw mouth-region pixels: what a model without pretraining gets), with the same head and
budget (synclipmae/eval/vsr.py). Scored on --eval_split (validation: where choices are made); `synclipmae
eval-vsr` reports the test split. Writes OUT/vsr_head.safetensors, vsr_head.json and vsr_eval_SPLIT.json/.png.

  synclipmae train-vsr --model=runs/demo/export --inputs=z_voc --out=runs/demo/vsr_z_voc
  synclipmae eval-vsr --head=runs/demo/vsr_z_voc --split=heldout --decode=beam
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from absl import flags


def define_flags() -> None:
  flags.DEFINE_string("model", None, "An export directory or a pretraining workdir.", required=True)
  flags.DEFINE_string("data", None, "Corpus (default: the one the model was trained on).")
  flags.DEFINE_enum("inputs", "z_voc", ["z_voc", "z_id", "z_amb", "audio", "pixels"], "What the head reads.")
  flags.DEFINE_string("transcripts", None, "JSON / CSV {clip_id: text} or a directory of LRS3-style CLIP_ID.txt "
                      "(default: each clip's metadata transcript).")
  flags.DEFINE_string("train_split", "train", "Split to train on.")
  flags.DEFINE_string("eval_split", "validation", "Split to score on after training.")
  flags.DEFINE_integer("max_clips", None, "Use at most this many clips of each split.")
  flags.DEFINE_integer("steps", 2000, "Training steps.")
  flags.DEFINE_integer("batch_size", 32, "Clips per step.")
  flags.DEFINE_integer("width", 128, "Head width.")
  flags.DEFINE_integer("depth", 2, "Head Transformer blocks.")
  flags.DEFINE_float("learning_rate", 1e-3, "Peak AdamW learning rate (cosine decay).")
  flags.DEFINE_integer("seed", 0, "Head initialisation and batch order.")
  flags.DEFINE_string("out", None, "Output directory (default: MODEL/vsr_INPUTS).")


def main(argv: Sequence[str]) -> None:
  del argv
  f = flags.FLAGS
  from synclipmae.commands.eval_factors import default_corpus
  from synclipmae.data.corpus import Corpus
  from synclipmae.eval import vsr
  from synclipmae.inference import load_pretrained
  transcripts = vsr.read_transcripts(f.transcripts) if f.transcripts else None
  pretrained = load_pretrained(f.model)
  data = f.data or default_corpus(pretrained)
  corpus = Corpus(data)
  out = f.out or os.path.join(f.model, f"vsr_{f.inputs}")
  train = vsr.collect(pretrained, corpus, f.train_split, f.inputs, transcripts, f.max_clips)
  held = vsr.collect(pretrained, corpus, f.eval_split, f.inputs, transcripts, f.max_clips)
  print(f"{len(train.clip_ids)} training clips, {len(held.clip_ids)} on {f.eval_split}; inputs {f.inputs} "
        f"({train.features[0].shape[-1]} per frame)")
  trained = vsr.train(train, width=f.width, depth=f.depth, steps=f.steps, batch_size=f.batch_size,
                      learning_rate=f.learning_rate, seed=f.seed, viseme_names=corpus.label_vocab.get("viseme"))
  trained.info.update({"inputs": f.inputs, "model": os.path.abspath(f.model), "corpus": os.path.abspath(data),
                       "train_split": f.train_split, "transcripts": f.transcripts})
  vsr.save(trained, out)
  written = vsr.write_evaluation(trained, held, f.eval_split, out)
  print(vsr.format_evaluation(json.load(open(written))))
  print(f"  head: {out}\n  evaluation: {written}")

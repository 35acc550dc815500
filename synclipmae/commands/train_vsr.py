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
  flags.DEFINE_integer("time_masks", 0, "Spans of frames masked per training clip (SpecAugment-style).")
  flags.DEFINE_integer("mask_frames", 10, "Longest masked span, in frames.")
  flags.DEFINE_float("feature_drop", 0.0, "Dropout rate on the head's input values during training.")
  flags.DEFINE_integer("seed", 0, "Head initialisation, batch order and masks.")
  flags.DEFINE_string("out", None, "Output directory (default: MODEL/vsr_INPUTS).")


def main(argv: Sequence[str]) -> None:
  del argv
  f = flags.FLAGS
  train_vsr(f.model, f.out or os.path.join(f.model, f"vsr_{f.inputs}"), inputs=f.inputs, data=f.data,
            transcripts=f.transcripts, train_split=f.train_split, eval_split=f.eval_split, max_clips=f.max_clips,
            steps=f.steps, batch_size=f.batch_size, width=f.width, depth=f.depth, learning_rate=f.learning_rate,
            time_masks=f.time_masks, mask_frames=f.mask_frames, feature_drop=f.feature_drop, seed=f.seed)


def train_vsr(model: str, out: str, *, inputs: str = "z_voc", data: str | None = None, transcripts: str | None = None,
              train_split: str = "train", eval_split: str = "validation", max_clips: int | None = None,
              steps: int = 2000, batch_size: int = 32, width: int = 128, depth: int = 2,
              learning_rate: float = 1e-3, time_masks: int = 0, mask_frames: int = 10, feature_drop: float = 0.0,
              seed: int = 0, log=print) -> dict:
  """The command (module docstring) as a function (`synclipmae demo` calls it); returns the evaluation."""
  from synclipmae.commands.eval_factors import default_corpus
  from synclipmae.data.corpus import Corpus
  from synclipmae.eval import vsr
  from synclipmae.inference import load_pretrained
  texts = vsr.read_transcripts(transcripts) if transcripts else None
  pretrained = load_pretrained(model)
  data = data or default_corpus(pretrained)
  corpus = Corpus(data)
  train = vsr.collect(pretrained, corpus, train_split, inputs, texts, max_clips)
  held = vsr.collect(pretrained, corpus, eval_split, inputs, texts, max_clips)
  log(f"{len(train.clip_ids)} training clips, {len(held.clip_ids)} on {eval_split}; inputs {inputs} "
      f"({train.features[0].shape[-1]} per frame)")
  trained = vsr.train(train, width=width, depth=depth, steps=steps, batch_size=batch_size,
                      learning_rate=learning_rate, time_masks=time_masks, mask_frames=mask_frames,
                      feature_drop=feature_drop, seed=seed, viseme_names=corpus.label_vocab.get("viseme"), log=log)
  trained.info.update({"inputs": inputs, "model": os.path.abspath(model), "corpus": os.path.abspath(data),
                       "train_split": train_split, "transcripts": transcripts})
  vsr.save(trained, out)
  written, result = vsr.write_evaluation(trained, held, eval_split, out)
  log(vsr.format_evaluation(result))
  log(f"  head: {out}\n  evaluation: {written}")
  return result

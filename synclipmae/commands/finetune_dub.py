"""`synclipmae finetune-dub --model=PATH --out=DUB_MODEL [--data=CORPUS]`: a model whose decoder dubs.

Pretraining teaches the decoder to fill a random three quarters of a frame in normalised pixels; dubbing asks it to
redraw the mouth region from the rest of the frame, in pixels (synclipmae/dubbing.py). This fine-tunes the decoder
alone for that on the --split clips: the encoders are frozen, so the new model's tokens (and sync, probe and VSR
results) are exactly the base model's. Writes an export directory (`load_pretrained`, `synclipmae dub`,
`eval-dub`) whose config.json records the base model and the fine-tuning under "dubbing".

  synclipmae finetune-dub --model=runs/demo/export --out=runs/demo/dub_model
  synclipmae eval-dub --model=runs/demo/dub_model --split=validation
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Sequence

from absl import flags


def define_flags() -> None:
  flags.DEFINE_string("model", None, "An export directory or a pretraining workdir.", required=True)
  flags.DEFINE_string("out", None, "The fine-tuned model (an export directory).", required=True)
  flags.DEFINE_string("data", None, "Corpus (default: the one the model was trained on).")
  flags.DEFINE_string("split", "train", "Split to fine-tune on.")
  flags.DEFINE_integer("max_clips", None, "Use at most this many clips of the split.")
  flags.DEFINE_integer("steps", 1500, "Training steps.")
  flags.DEFINE_integer("batch_size", 64, "Frames per step.")
  flags.DEFINE_float("learning_rate", 3e-4, "Peak AdamW learning rate (cosine decay); 1e-3 can kill the new "
                     "conditioning paths of a small decoder (BENCHMARKS.md).")
  flags.DEFINE_float("mouth_weight", 10.0, "Extra weight of the mouth-mask pixels in the pixel loss.")
  flags.DEFINE_float("grow", 0.0, "Grow each mouth-mask bounding box by this fraction of the crop on every side.")
  flags.DEFINE_string("decoder", None, "WIDTHxDEPTHxHEADS (e.g. 128x2x4): train a new decoder of that size from "
                      "scratch instead of fine-tuning the pretrained one.")
  flags.DEFINE_integer("seed", 0, "Batch order.")
  flags.DEFINE_bool("overwrite", False, "Replace --out if it exists.")


def main(argv: Sequence[str]) -> None:
  del argv
  f = flags.FLAGS
  finetune_dub(f.model, f.out, data=f.data, split=f.split, max_clips=f.max_clips, steps=f.steps,
               batch_size=f.batch_size, learning_rate=f.learning_rate, mouth_weight=f.mouth_weight, grow=f.grow,
               decoder=f.decoder, seed=f.seed, overwrite=f.overwrite)


def decoder_size(spec: str | None) -> tuple[int, int, int] | None:
  """'WIDTHxDEPTHxHEADS' -> (width, depth, heads); None stays None (fine-tune the pretrained decoder)."""
  if not spec:
    return None
  try:
    size = tuple(int(x) for x in spec.lower().split("x"))
  except ValueError:
    size = ()
  if len(size) != 3 or min(size) < 1:
    raise ValueError(f"--decoder={spec!r}: expected WIDTHxDEPTHxHEADS, e.g. 128x2x4")
  return size


def finetune_dub(model: str, out: str, *, data: str | None = None, split: str = "train", max_clips: int | None = None,
                 steps: int = 1500, batch_size: int = 64, learning_rate: float = 3e-4, mouth_weight: float = 10.0,
                 grow: float = 0.0, decoder: str | None = None, seed: int = 0, overwrite: bool = False,
                 log=print) -> str:
  """The command (module docstring) as a function (`synclipmae demo` calls it); returns the export directory."""
  from synclipmae import dubbing, export
  from synclipmae.commands.eval_factors import default_corpus
  from synclipmae.data.corpus import Corpus
  from synclipmae.inference import load_pretrained
  if os.path.exists(out) and not overwrite:
    raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
  start = time.time()
  pretrained = dubbing.with_conditioning_paths(load_pretrained(model), decoder_size(decoder))
  data = data or default_corpus(pretrained)
  training = dubbing.training_set(pretrained, Corpus(data), split, max_clips=max_clips, grow=grow, log=log)
  log(f"{len(training.frames)} frames of {training.clip[-1] + 1} clips ({split}) ready in "
      f"{time.time() - start:.0f} s; fine-tuning the decoder for {steps} steps")
  summary = dubbing.finetune(pretrained, training, steps=steps, batch_size=batch_size, learning_rate=learning_rate,
                             mouth_weight=mouth_weight, seed=seed, log=log)
  info = copy.deepcopy(pretrained.info)
  info["dubbing"] = {**summary, "decoder": decoder or "pretrained (fine-tuned)",
                     "base_model": os.path.abspath(model), "corpus": os.path.abspath(data),
                     "split": split, "num_frames": len(training.frames)}
  written = export.write_export(pretrained.model, info, out, overwrite=overwrite)
  log(f"dubbing model written in {time.time() - start:.0f} s: {os.path.abspath(written)}\n"
      f"  synclipmae dub --model={written} --video=TARGET.mp4 --audio=NEW.wav --out=DUB.mp4\n"
      f"  synclipmae eval-dub --model={written} --split=validation")
  return str(written)

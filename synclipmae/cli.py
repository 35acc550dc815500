"""The `synclipmae` command: `synclipmae <subcommand> [--flags]`.

Each subcommand is a module with `define_flags()` (absl flags) and `main(argv)` (or, with a parser of its own,
`run(argv)`); only the chosen one is imported and defines its flags, so flag names never collide and start-up
stays fast. `synclipmae <subcommand> --help` lists its flags.
"""

from __future__ import annotations

import importlib
import os
import sys

COMMANDS = {
    "demo": ("synclipmae.commands.demo", "the main job: synthetic corpus, preview, pretrain mu, evaluate sync"),
    "pretrain": ("synclipmae.commands.pretrain", "pretrain SyncLipMAE (resumes from its workdir)"),
    "precompute-audio": ("synclipmae.commands.precompute_audio", "store the frozen audio encoder's features of a "
                         "corpus (wav2vec 2.0)"),
    "eval-sync": ("synclipmae.commands.eval_sync", "zero-shot AV-sync accuracy of a checkpoint"),
    "eval-factors": ("synclipmae.commands.eval_factors", "which token carries which ground-truth factor (probes)"),
    "eval-swaps": ("synclipmae.commands.eval_swaps", "A's face and motion with B's mouth, scored against the truth"),
    "probe": ("synclipmae.commands.probe", "linear probes of frozen tokens for any label (emotion, action, ...)"),
    "train-vsr": ("synclipmae.commands.train_vsr", "a lip-reading head (CTC) on frozen z_voc, z_id or mouth pixels"),
    "eval-vsr": ("synclipmae.commands.eval_vsr", "WER, CER and viseme error rate of a lip-reading head"),
    "finetune-dub": ("synclipmae.commands.finetune_dub", "fine-tune the decoder to redraw mouths (for dub / eval-dub)"),
    "dub": ("synclipmae.commands.dub", "a video's mouth redrawn to new audio or another video's mouth (mp4)"),
    "eval-dub": ("synclipmae.commands.eval_dub", "dubbing against the truth: mouth PSNR / SSIM, sync, identity"),
    "export": ("synclipmae.commands.export", "a pretraining run -> safetensors + config.json + model card"),
    "extract": ("synclipmae.commands.extract", "per-frame tokens (z_id, z_voc, z_amb, audio) of videos"),
    "sync": ("synclipmae.commands.sync", "zero-shot AV-sync offset + confidence of any video (and --fix_out)"),
    "synth": ("data_pipelines.synthetic.generate", "generate the synthetic talking-face corpus"),
    "prep": ("synclipmae.commands.prep", "real talking-face videos -> aligned face-crop clip records"),
    "convert-corpus": ("synclipmae.commands.convert_corpus", "an old corpus (schema 1) -> the TFDS layout"),
    "tfds-build": ("synclipmae.commands.tfds_build", "build a TFDS dataset (synclipmae_synthetic, ...), no TensorFlow"),
    "preview": ("data_pipelines.preview", "contact sheet PNG + mp4 with audio of clips in a corpus"),
}


def _usage() -> str:
  width = max(map(len, COMMANDS))
  lines = [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
  return "usage: synclipmae <command> [--flags]\n\ncommands:\n" + "\n".join(lines) + "\n"


def _user_errors() -> tuple[type[BaseException], ...]:
  """Errors that report bad input or a bad config (a ValueError, or the corpus reader's error), not a bug."""
  from synclipmae.data.corpus import CorpusError
  return (ValueError, FileNotFoundError, FileExistsError, CorpusError)


def main(argv: list[str] | None = None) -> None:
  argv = list(sys.argv if argv is None else argv)
  if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
    sys.stdout.write(_usage())
    sys.exit(0 if len(argv) >= 2 else 2)
  command = argv[1]
  if command not in COMMANDS:
    sys.stderr.write(f"synclipmae: unknown command {command!r}\n\n{_usage()}")
    sys.exit(2)
  module = importlib.import_module(COMMANDS[command][0])
  if hasattr(module, "run"):  # A command with its own parser (tfds-build: TFDS's).
    return module.run(argv[2:])
  from absl import app, flags, logging  # absl parses the subcommand's flags (and grain workers need absl flags parsed).
  module.define_flags()
  # `--help` prints __main__'s docstring and the key flags of the program: make those the subcommand's.
  sys.modules["__main__"].__doc__ = module.__doc__
  for flag in flags.FLAGS.get_flags_for_module(module.__name__):
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)

  def run(args):
    if not flags.FLAGS["verbosity"].present:  # orbax and grain log every file operation at INFO.
      logging.set_verbosity(logging.WARNING)
    try:
      return module.main(args)
    except _user_errors() as e:  # Bad input or config: its message names the input and the problem; no traceback.
      if flags.FLAGS["verbosity"].present or os.environ.get("SYNCLIPMAE_TRACEBACK"):
        raise
      sys.stderr.write(f"synclipmae {command}: error: {e}\n(set SYNCLIPMAE_TRACEBACK=1 for the traceback)\n")
      sys.exit(2)

  app.run(run, argv=[f"synclipmae {command}", *argv[2:]])


if __name__ == "__main__":
  main()

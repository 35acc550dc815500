"""`synclipmae export --workdir=RUN --out=DIR [--step=N]`: a pretraining run -> a model directory for users.

DIR holds model.safetensors (every weight, the frozen audio encoder included; no optimiser state), config.json and
a model card (README.md); `synclipmae.load_pretrained(DIR)` loads it. See synclipmae/export.py.
"""

from __future__ import annotations

from collections.abc import Sequence

from absl import flags


def define_flags() -> None:
  flags.DEFINE_string("workdir", None, "Pretraining workdir (config.json + checkpoints/).", required=True)
  flags.DEFINE_string("out", None, "Export directory to create.", required=True)
  flags.DEFINE_integer("step", None, "Checkpoint step (default: the newest).")
  flags.DEFINE_string("data", None, "Corpus for the aligned-crop mean masks (default: the run's training corpus).")
  flags.DEFINE_bool("overwrite", False, "Replace an existing export directory.")


def main(argv: Sequence[str]) -> None:
  del argv
  f = flags.FLAGS
  from synclipmae import export
  out = export.export(f.workdir, f.out, step=f.step, data=f.data, overwrite=f.overwrite)
  size = sum(p.stat().length for p in out.iterdir())
  print(f"exported step {export.inference.read_export_info(out)['step']} of {f.workdir} to {out} "
        f"({size / 1e6:.1f} MB): load it with synclipmae.load_pretrained({str(out)!r})")

"""`synclipmae demo`: the main job, end to end on the built-in synthetic corpus.

Generates the default synthetic corpus (or reuses it), writes a contact sheet and an mp4 with audio (so a person
can see and hear that the lips follow the speech), pretrains the `mu` variant on it (configs/pretrain.py:mu,
resuming if WORKDIR/mu holds checkpoints), evaluates zero-shot audio-visual sync on the held-out identities and
exports the model to WORKDIR/export (`synclipmae.load_pretrained`, `synclipmae sync --model=WORKDIR/export`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

from absl import flags

from data_pipelines import preview
from data_pipelines.synthetic import clips, generate


def define_flags() -> None:
  flags.DEFINE_string("workdir", "runs/demo", "Everything the job writes goes here.")
  flags.DEFINE_string("data", None, "Corpus directory (default: WORKDIR/corpus).")
  flags.DEFINE_integer("seed", 0, "Corpus seed.")
  flags.DEFINE_integer("num_workers", None, "Corpus worker processes (default: one per CPU).")
  flags.DEFINE_bool("pretrain", True, "Pretrain `mu` and evaluate sync after generating the corpus.")


def main(argv: Sequence[str]) -> None:
  del argv
  f = flags.FLAGS
  start = time.time()
  data = f.data or os.path.join(f.workdir, "corpus")
  info = generate.generate(clips.SyntheticSpec(seed=f.seed), data, num_workers=f.num_workers)
  paths = preview.preview(data, os.path.join(f.workdir, "preview"), split="train", num_clips=8, num_videos=1)
  print(f"corpus and preview ready in {time.time() - start:.0f} s")
  for name, split in info["splits"].items():
    print(f"  {name:8s} {split['num_clips']} clips, {split['num_frames']} frames, {len(split['speakers'])} "
          "identities")
  print(f"  corpus:        {os.path.abspath(data)}")
  for name, path in paths.items():
    print(f"  {name + ':':14s} {os.path.abspath(path)}")
  if f.pretrain:
    from configs import pretrain as pretrain_configs
    from synclipmae.commands import pretrain
    config = pretrain_configs.get_config("mu")
    config.data.dir = data
    print("\npretraining mu (configs/pretrain.py:mu) ...")
    run = os.path.join(f.workdir, "mu")
    pretrain.train_and_evaluate(config, run)
    from synclipmae import export
    out = export.export(run, os.path.join(f.workdir, "export"), overwrite=True)
    size = sum(p.stat().st_size for p in out.iterdir()) / 1e6
    print(f"\nexported for downstream use ({size:.1f} MB): {os.path.abspath(out)}\n"
          f"  synclipmae sync --model={out} VIDEO.mp4        # zero-shot AV sync of any video\n"
          f"  python: synclipmae.load_pretrained({str(out)!r})")
  print(f"\ndemo finished in {time.time() - start:.0f} s")

"""`synclipmae demo`: the main job, end to end on the built-in synthetic corpus.

Generates the default synthetic corpus (or reuses it), writes a contact sheet and an mp4 with audio (so a person
can see and hear that the lips follow the speech), pretrains the `mu` variant on it (configs/pretrain.py:mu,
resuming if WORKDIR/mu holds checkpoints), evaluates zero-shot audio-visual sync and the factor probes on the
validation identities (where recipes are chosen), then sync once on the test identities ("heldout", written to
WORKDIR/mu/test/), and exports the model to WORKDIR/export (`synclipmae.load_pretrained`, `synclipmae sync`).
Last, every downstream family once, in cheap versions (the full evaluations are commands, BENCHMARKS.md): linear
probes (WORKDIR/probes), a lip-reading head on z_voc (WORKDIR/vsr) and dubs of test identities with another's
audio, retrieved from the target's own mouths by the tokens, beside their truth (WORKDIR/dub).
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
  flags.DEFINE_bool("downstream", True, "After the export: probes, lip reading and dubbing, cheaply.")


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
    _report_test_split(config, run)
    from synclipmae import export
    out = export.export(run, os.path.join(f.workdir, "export"), overwrite=True)
    size = sum(p.stat().length for p in out.iterdir()) / 1e6
    print(f"\nexported for downstream use ({size:.1f} MB): {os.path.abspath(out)}\n"
          f"  synclipmae sync --model={out} VIDEO.mp4        # zero-shot AV sync of any video\n"
          f"  python: synclipmae.load_pretrained({str(out)!r})")
    if f.downstream:
      _downstream(str(out), data, f.workdir)
  print(f"\ndemo finished in {time.time() - start:.0f} s")


def _report_test_split(config, run: str) -> None:
  """The headline: sync on the held-out (test) identities, with the config's own evaluation seed."""
  from synclipmae.data.corpus import Corpus
  from synclipmae.eval import sync
  from synclipmae.inference import load_pretrained
  corpus = Corpus(config.data.dir)
  if "heldout" not in corpus.splits or sync.evaluation_split(config, corpus) == "heldout":
    return
  result = sync.evaluate_config(load_pretrained(run).model, corpus, config, split="heldout")
  written = sync.write_results(result, os.path.join(run, "test"))
  by_k = result["accuracy_by_context"]
  print(f"zero-shot sync accuracy on the test identities (heldout): {by_k['1']:.1%} / {result['accuracy']:.1%} / "
        f"{by_k['15']:.1%} at K=1 / 5 / 15 (chance {result['chance_accuracy']:.1%}): {written['json']}")


# Cheap versions of the downstream evaluations: enough clips and steps to show each family working end to end in
# about three minutes of CPU; their numbers are not the ones BENCHMARKS.md reports (full data, longer training).
DEMO_PROBE_CLIPS = 48
DEMO_VSR = dict(max_clips=64, steps=300, batch_size=16)
DEMO_DUB_PAIRS = 4


def _downstream(model: str, data: str, workdir: str) -> None:
  """Probes, a lip-reading head and a dub (issue 14's families), each through the command's own code."""
  from synclipmae.commands.train_vsr import train_vsr
  from synclipmae.data.corpus import Corpus
  from synclipmae.eval import dubbing, probes, vsr
  from synclipmae.inference import load_pretrained
  quiet = lambda *args: None
  start, corpus = time.time(), Corpus(data)
  pretrained = load_pretrained(model)
  print("\nlinear probes (frozen tokens; held-out identities for expression, unseen clips for speaker) ...")
  for labels, tokens, splits, pool in ((["expression"], "z_amb,z_voc", ("train", "heldout"), "mean"),
                                       (["speaker"], "z_id", ("heldout", "heldout"), "frame")):
    result = probes.evaluate(pretrained, corpus, labels, tokens=tokens, train_split=splits[0], test_split=splits[1],
                             pool=pool, max_clips=DEMO_PROBE_CLIPS)
    written = probes.write_results(result, os.path.join(workdir, "probes"))
    print(probes.format_results(result) + f"\n  {', '.join(written.values())}")
  print(f"\nlip reading: a CTC head on z_voc, {DEMO_VSR['steps']} steps ...")
  vsr_dir = os.path.join(workdir, "vsr")
  result = train_vsr(model, vsr_dir, eval_split="heldout", log=quiet, **DEMO_VSR)
  print(f"{vsr.format_evaluation(result)}\n  {os.path.abspath(vsr_dir)}")
  print(f"\ndubbing: each frame's mouth retrieved from the target's own frames by the driving token and z_amb, "
        f"{DEMO_DUB_PAIRS} pairs ...")
  out = os.path.join(workdir, "dub")
  result = dubbing.evaluate(pretrained, corpus, "heldout", num_pairs=DEMO_DUB_PAIRS, mode="retrieve", num_videos=1,
                            videos_dir=out, log=quiet)
  written = dubbing.write_results(result, out)
  print(f"{dubbing.format_summary(result)}\n  dub of a test identity with another's audio (target | audio-driven | "
        f"video-driven | truth): {os.path.abspath(result['pairs'][0]['side_by_side'])}\n  {written['json']}\n"
        f"downstream done in {time.time() - start:.0f} s (cheap versions; BENCHMARKS.md has the full evaluations)")

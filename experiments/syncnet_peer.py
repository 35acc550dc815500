"""SyncNet vs SyncLipMAE on equal terms (issue 13): the SyncNet peer trained on the same corpus, with the same
CPU budget, scored by the same protocol (synclipmae.eval.sync: 400 samples, offsets +-15, tolerance +-1 frame,
the evaluation seed of configs/pretrain.py).

    python experiments/syncnet_peer.py --data=runs/demo/corpus --workdir=runs/syncnet/infonce_w050 --seeds=0,1 \
        [--steps=370 --batch_size=32 --width=0.5 --loss=infonce ...] [--splits=validation,heldout] [--eval_only] \
        [--compare=runs/fz/r4,runs/fz/r4_s1]

The defaults (peer.Settings) are the budget-matched peer of BENCHMARKS.md "SyncNet on equal terms": 370 steps of
32 pairs, about the 7 minutes `mu` trains for on this 2-core CPU.

Each seed trains into WORKDIR/seed_N (skipped with --eval_only), then is scored on each split twice: with our
protocol's cosine similarity and with SyncNet's own Euclidean distance. Results: WORKDIR/seed_N/sync_SPLIT_METRIC.json
and the table WORKDIR/syncnet.md (accuracy at K = 1, 5, 15 per seed, and the mean). Pass --compare=W1,W2 (SyncLipMAE
workdirs; their WORKDIR/test or sync_eval.json) to add SyncLipMAE's rows.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from configs import pretrain  # noqa: E402
from synclipmae.data.corpus import Corpus  # noqa: E402
from synclipmae.eval import sync  # noqa: E402
from synclipmae.peers import syncnet as peer  # noqa: E402

CONTEXTS = (1, 5, 15)


def _parse() -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--data", required=True)
  p.add_argument("--workdir", required=True)
  p.add_argument("--seeds", default="0,1")
  p.add_argument("--splits", default="validation,heldout")
  p.add_argument("--num_samples", type=int, default=400)
  p.add_argument("--eval_only", action="store_true", help="score saved runs (reusing scores already written)")
  p.add_argument("--rescore", action="store_true", help="with --eval_only: score again even if written")
  p.add_argument("--compare", default="", help="SyncLipMAE workdirs to tabulate beside SyncNet")
  for field in dataclasses.fields(peer.Settings):
    if field.name != "seed":
      p.add_argument(f"--{field.name}", type=type(field.default), default=field.default)
  return p.parse_args()


def score(model, corpus: Corpus, split: str, metric: str, num_samples: int) -> dict:
  """The evaluation pretraining runs (configs/pretrain.py's eval section), on the peer's embeddings."""
  cfg = pretrain.get_config("mu").eval
  return sync.evaluate(model, corpus, split, context_frames=cfg.context_frames, max_offset=cfg.max_offset,
                       num_samples=num_samples, contexts=CONTEXTS, margin_frames=model.margin_frames,
                       seed=cfg.seed, metric=metric)


def main() -> None:
  args = _parse()
  corpus = Corpus(args.data)
  settings = {f.name: getattr(args, f.name) for f in dataclasses.fields(peer.Settings) if f.name != "seed"}
  rows = []
  for seed in (int(s) for s in args.seeds.split(",")):
    run = Path(args.workdir) / f"seed_{seed}"
    if args.eval_only:
      model = functools.cache(lambda run=run: peer.load(run))  # Loaded only if something is to be scored.
    else:
      trained = peer.train(corpus, run, peer.Settings(seed=seed, **settings))
      model = lambda trained=trained: trained
    timing = json.loads((run / "timing.json").read_text()) if (run / "timing.json").exists() else {}
    for split in args.splits.split(","):
      for metric in sync.METRICS:
        path = run / f"sync_{split}_{metric}.json"
        if args.eval_only and path.exists() and not args.rescore:
          result = json.loads(path.read_text())  # Scored before: the same plan and seed give the same numbers.
        else:
          result = score(model(), corpus, split, metric, args.num_samples)
          errors = np.abs(np.array(result["_curves"]["predicted"]) - np.array(result["_curves"]["truth"]))
          result.pop("_curves")
          path.write_text(json.dumps(result, indent=1))
          print(f"seed {seed} {split} {metric}: errors of 0 / 1 / 2 / >2 frames: {np.bincount(errors.clip(0, 3), minlength=4)}")
        acc = result["accuracy_by_context"]
        rows.append((f"SyncNet seed {seed}", split, metric, *(acc[str(k)] for k in CONTEXTS),
                     result["lse_c"], timing.get("train_s")))
        print(f"seed {seed} {split} {metric}: " + " ".join(f"K={k} {acc[str(k)]:.3f}" for k in CONTEXTS)
              + f" (chance {result['chance_accuracy']:.3f})", flush=True)
  for workdir in filter(None, args.compare.split(",")):
    for split, path in (("validation", Path(workdir) / "sync_eval.json"),
                        ("heldout", Path(workdir) / "test" / "sync_eval.json")):
      if path.exists():
        result = json.loads(path.read_text())
        acc = result.get("accuracy_by_context", {})
        rows.append((f"SyncLipMAE {workdir}", result.get("split", split), result.get("metric", "cosine"),
                     *(acc.get(str(k), float("nan")) for k in CONTEXTS), result["lse_c"], None))
  lines = ["| model | split | metric | K=1 | K=5 | K=15 | LSE-C | train s |", "|---|---|---|---|---|---|---|---|"]
  lines += [f"| {m} | {s} | {me} | {a:.1%} | {b:.1%} | {c:.1%} | {lse:.3f} | {t if t is not None else ''} |"
            for m, s, me, a, b, c, lse, t in rows]
  table = "\n".join(lines)
  Path(args.workdir, "syncnet.md").write_text(table + "\n")
  print(table)


if __name__ == "__main__":
  main()

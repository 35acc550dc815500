"""Zero-shot sync of ordinary video files with known offsets: `synclipmae sync --aligned` on held-out clips.

    python experiments/sync_videos.py --model=runs/demo/export --data=runs/demo/corpus --out=runs/sync_videos

Writes --num_videos held-out clips of the corpus as mp4 (H.264 + AAC) with the audio delayed by every offset in
-15..+15 once and the rest unshifted, runs the `sync` command's function on them (whole-clip context, the same
code path as the command), and prints the accuracy (predicted offset within +-1 frame of the truth), exact
accuracy, and the confidence of unshifted vs shifted videos, as a BENCHMARKS.md table row. `--untrained` scores
the same videos with a freshly initialised model of the same config (the negative control: chance is ~3/31).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model", required=True, help="Export directory or pretraining workdir.")
  parser.add_argument("--data", required=True, help="Corpus whose clips are written as videos.")
  parser.add_argument("--split", default="heldout")
  parser.add_argument("--out", required=True)
  parser.add_argument("--num_videos", type=int, default=40)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--untrained", action="store_true", help="Random weights, the model's config and views.")
  args = parser.parse_args()

  from flax import nnx

  from synclipmae import inference
  from synclipmae.commands.sync import sync_videos
  from synclipmae.data.corpus import Corpus
  from synclipmae.eval import sync
  from synclipmae.models import SyncLipMAE
  model = inference.load_pretrained(args.model)
  if args.untrained:
    model = inference.Pretrained(SyncLipMAE(model.config, rngs=nnx.Rngs(args.seed)), model.info, "untrained")
  videos_dir = os.path.join(args.out, "videos")
  plan = sync.write_shifted_videos(Corpus(args.data), args.split, videos_dir, num_videos=args.num_videos,
                                   seed=args.seed)
  json_path = os.path.join(args.out, "sync.jsonl")
  if os.path.exists(json_path):
    os.remove(json_path)
  start = time.time()
  sync_videos(model, [p["video"] for p in plan], out=os.path.join(args.out, "details"), json_path=json_path,
              aligned=True, retry_failed=True, quiet=True, echo=lambda *_: None)
  seconds = time.time() - start
  results = {r["video"]: r for r in map(json.loads, open(json_path))}
  rows = []
  for p in plan:
    r = results.get(p["video"])
    rows.append({**p, **(r or {}), "found": r is not None})
  found = [r for r in rows if r["found"]]
  error = np.array([r["offset_frames"] - r["true_offset"] for r in found])
  unshifted = [r for r in found if r["true_offset"] == 0]
  shifted = [r for r in found if r["true_offset"] != 0]
  summary = {
      "videos": len(rows), "scored": len(found),
      "accuracy": float(np.mean(np.abs(error) <= 1)) if len(found) else 0.0,
      "accuracy_exact": float(np.mean(error == 0)) if len(found) else 0.0,
      "unshifted_offset0": float(np.mean([abs(r["offset_frames"]) <= 1 for r in unshifted])) if unshifted else None,
      "confidence_unshifted": float(np.mean([r["confidence"] for r in unshifted])) if unshifted else None,
      "confidence_shifted": float(np.mean([r["confidence"] for r in shifted])) if shifted else None,
      "mean_frames": float(np.mean([r["num_frames"] for r in found])) if found else 0.0,
      "seconds": round(seconds, 1)}
  with open(os.path.join(args.out, "summary.json"), "w") as f:
    json.dump({"summary": summary, "videos": rows}, f, indent=1)
  for r in rows:
    if not r["found"] or abs(r["offset_frames"] - r["true_offset"]) > 1:
      print(f"  miss: {r['video']} true {r['true_offset']:+d} predicted {r.get('offset_frames')}")
  print(json.dumps(summary, indent=1))
  print(f"| {model.path} | {summary['scored']}/{summary['videos']} | {summary['mean_frames']:.0f} | "
        f"**{summary['accuracy']:.1%}** | {summary['accuracy_exact']:.1%} | {summary['unshifted_offset0']:.0%} | "
        f"{summary['confidence_unshifted']:.3f} / {summary['confidence_shifted']:.3f} |")


if __name__ == "__main__":
  main()

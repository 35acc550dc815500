"""Which samples does a run's sync evaluation get wrong? Its errors against the speech in each sample's window.

    python experiments/sync_errors.py --run=W [--run=W2 ...] [--data=runs/demo/corpus] [--seed=2026]

Rebuilds the plan of the run's `sync_eval.json` (same split, samples and evaluation seed; checked against the true
offsets the file holds), then compares the samples it got wrong (more than the tolerance off) with those it got
right: how much the true mouth opening moves within the K video context frames (mean absolute frame-to-frame
change, in the renderer's units), the share of still contexts (change < 0.01: nothing to align), and how far off
the wrong predictions are. If the errors were contexts without speech, no reader could fix them; if they look like
the right ones, the tokens are what fails. Results: BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from synclipmae.data.corpus import Corpus  # noqa: E402
from synclipmae.eval import sync  # noqa: E402


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--run", action="append", required=True, help="A workdir or directory with sync_eval.json.")
  parser.add_argument("--data", default="runs/demo/corpus")
  parser.add_argument("--seed", type=int, default=2026, help="The evaluation seed the run used (eval.seed).")
  args = parser.parse_args()
  corpus = Corpus(args.data)
  for run in args.run:
    result = json.load(open(os.path.join(run, "sync_eval.json")))
    k, max_offset, curves = result["context_frames"], result["max_offset"], result["curves"]
    window = max(int(c) for c in result["accuracy_by_context"]) + 2 * max_offset
    plan = sync._plan(corpus, result["split"], result["num_samples"], window, max_offset, args.seed)
    if [shift for _, _, shift in plan] != curves["truth"]:
      raise SystemExit(f"{run}: the plan of seed {args.seed} does not match the run's true offsets; pass --seed")
    miss = np.abs(np.asarray(curves["predicted"]) - np.asarray(curves["truth"]))
    wrong = miss > result["tolerance_frames"]
    first = (window - k) // 2
    motion = np.array([
        np.abs(np.diff(np.asarray(corpus.read(result["split"], index).labels["mouth"])[
            start + first:start + first + k, 0])).mean() for index, start, _ in plan])
    print(f"{run} [{result['split']}], K={k}: {wrong.sum()} of {len(plan)} wrong ({np.sum(miss >= 5)} of them "
          f">= 5 frames off); mouth-opening change per frame in the context: wrong {motion[wrong].mean():.3f}, "
          f"right {motion[~wrong].mean():.3f}; still contexts (< 0.01): wrong {np.mean(motion[wrong] < 0.01):.0%}, "
          f"right {np.mean(motion[~wrong] < 0.01):.0%}")


if __name__ == "__main__":
  main()

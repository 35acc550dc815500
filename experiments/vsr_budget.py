"""Is the lip-reading head short of steps? Train it for several budgets on the same frozen inputs; score each on
validation.

    python experiments/vsr_budget.py --model=runs/ablations/full_s1 --inputs=z_voc --steps=1000,2000,4000,8000

`synclipmae train-vsr` trains one head for one budget (2000 steps). Here each split's inputs are encoded once and
a fresh head is trained for every budget in --steps (its own warmup-cosine schedule, as train-vsr would), then
scored on --split with greedy decoding: CER, WER, viseme error rate, and the training CTC loss at the end. The
same seed and head for every budget, so the rows differ in steps only. Choosing a budget is a recipe decision, so
it is judged on validation, never on the test identities. Results: BENCHMARKS.md ("Lip reading").
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from synclipmae.commands.eval_factors import default_corpus  # noqa: E402
from synclipmae.data.corpus import Corpus  # noqa: E402
from synclipmae.eval import vsr  # noqa: E402
from synclipmae.inference import load_pretrained  # noqa: E402


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", required=True, help="an export directory or a pretraining workdir")
  parser.add_argument("--data", help="corpus (default: the model's)")
  parser.add_argument("--inputs", default="z_voc", choices=vsr.INPUTS)
  parser.add_argument("--steps", default="1000,2000,4000,8000", help="comma-separated budgets")
  parser.add_argument("--split", default="validation", help="where each head is scored")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", help="JSON of the rows (default: print only)")
  args = parser.parse_args()

  pretrained = load_pretrained(args.model)
  corpus = Corpus(args.data or default_corpus(pretrained))
  start = time.time()
  train = vsr.collect(pretrained, corpus, "train", args.inputs)
  held = vsr.collect(pretrained, corpus, args.split, args.inputs)
  print(f"encoded {len(train.clip_ids)} training and {len(held.clip_ids)} {args.split} clips "
        f"({args.inputs}) in {time.time() - start:.0f} s", flush=True)
  rows = []
  for steps in [int(s) for s in args.steps.split(",")]:
    losses = []
    start = time.time()
    trained = vsr.train(train, steps=steps, seed=args.seed, viseme_names=corpus.label_vocab.get("viseme"),
                        log_every=max(steps // 4, 1), log=lambda line: losses.append(float(line.split()[-1])))
    seconds = time.time() - start
    result = vsr.evaluate(trained, held, "greedy", examples=2)
    rows.append({"steps": steps, "train_seconds": round(seconds, 1), "final_ctc_loss": losses[-1],
                 **{k: result.get(k) for k in ("cer", "wer", "viseme_error_rate")}})
    r = rows[-1]
    ver = "-" if r["viseme_error_rate"] is None else f"{r['viseme_error_rate']:.1%}"
    print(f"{steps:6d} steps ({seconds:5.0f} s): CER {r['cer']:.1%}, WER {r['wer']:.1%}, viseme error rate {ver}, "
          f"training CTC loss per symbol (characters + visemes) {r['final_ctc_loss']:.2f}", flush=True)
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
      json.dump({"model": args.model, "inputs": args.inputs, "split": args.split, "seed": args.seed, "rows": rows},
                f, indent=1)


if __name__ == "__main__":
  main()

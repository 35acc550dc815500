"""Is the lip-reading head short of steps? Train it for several budgets on the same frozen inputs; score each on
validation.

    python experiments/vsr_budget.py --model=runs/ablations/full_s1 --inputs=z_voc --steps=1000,2000,4000,8000 \
        [--head=width=64,time_masks=2,feature_drop=0.1 ...]

`synclipmae train-vsr` trains one head for one budget (2000 steps). Here each split's inputs are encoded once and
a fresh head is trained for every budget in --steps and every head in --head (keyword arguments of
`synclipmae.eval.vsr.train`; the default head when none is given), each with its own warmup-cosine schedule as
train-vsr would, then scored on --split with greedy decoding: CER, WER, viseme error rate, and the training CTC
loss at the end. The same seed for every row, so rows differ in steps and head only. Choosing a budget or a head
is a recipe decision, so it is judged on validation, never on the test identities. Results: BENCHMARKS.md ("Lip
reading").
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


def parse_head(text: str) -> dict:
  """"width=64,feature_drop=0.1" -> {"width": 64, "feature_drop": 0.1}."""
  head = {}
  for item in filter(None, text.split(",")):
    key, _, value = item.partition("=")
    try:
      head[key.strip()] = int(value)
    except ValueError:
      try:
        head[key.strip()] = float(value)
      except ValueError:
        raise argparse.ArgumentTypeError(f"--head={text!r}: {item!r} is not KEY=NUMBER") from None
  return head


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", required=True, help="an export directory or a pretraining workdir")
  parser.add_argument("--data", help="corpus (default: the model's)")
  parser.add_argument("--inputs", default="z_voc", choices=vsr.INPUTS)
  parser.add_argument("--steps", default="1000,2000,4000,8000", help="comma-separated budgets")
  parser.add_argument("--split", default="validation", help="where each head is scored")
  parser.add_argument("--head", action="append", default=[], type=parse_head,
                      help="a head: comma-separated KEY=VALUE arguments of vsr.train (repeat for several)")
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
  for head in args.head or [{}]:
    for steps in [int(s) for s in args.steps.split(",")]:
      start = time.time()
      trained = vsr.train(train, steps=steps, seed=args.seed, viseme_names=corpus.label_vocab.get("viseme"),
                          log=None, **head)
      seconds = time.time() - start
      result = vsr.evaluate(trained, held, "greedy", examples=2)
      rows.append({"head": head, "steps": steps, "train_seconds": round(seconds, 1),
                   "final_ctc_loss": trained.info["training"]["final_loss"],
                   **{k: result.get(k) for k in ("cer", "wer", "viseme_error_rate")}})
      r = rows[-1]
      ver = "-" if r["viseme_error_rate"] is None else f"{r['viseme_error_rate']:.1%}"
      print(f"{head or 'default head'}, {steps} steps ({seconds:.0f} s): CER {r['cer']:.1%}, WER {r['wer']:.1%}, "
            f"viseme error rate {ver}, training CTC loss per symbol (characters + visemes) "
            f"{r['final_ctc_loss']:.2f}", flush=True)
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
      json.dump({"model": args.model, "inputs": args.inputs, "split": args.split, "seed": args.seed, "rows": rows},
                f, indent=1)


if __name__ == "__main__":
  main()

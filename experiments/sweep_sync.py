"""Pretrain several config variations side by side and tabulate their zero-shot sync accuracy.

    python experiments/sweep_sync.py --out=runs/sweep --parallel=4 [--variant=mu] [--common="k=v ..."] \
        base: lr3e3:optim.lr=3e-3 seed1:seed=1 ...

Each positional argument is NAME[:OVERRIDE,OVERRIDE...] with overrides as `section.key=value` (the same values
as --config.section.key on the command line). Every run is a plain `synclipmae pretrain` in OUT/NAME, started by
experiments/launch.py's local executor (so a rerun resumes or skips finished runs), and ends with the sync
evaluation; the table reads OUT/NAME/sync_eval.json.
--parallel runs that many at once: on an accelerator small variants leave most of it idle, so several runs share
one device (each process takes --mem_fraction of its memory). On a 2-core CPU keep --parallel=1.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import launch  # noqa: E402  (experiments/launch.py: the local executor)


def parse_run(spec: str) -> tuple[str, list[str]]:
  name, _, overrides = spec.partition(":")
  return name, [o for o in overrides.split(",") if o]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True)
  parser.add_argument("--variant", default="mu")
  parser.add_argument("--parallel", type=int, default=1)
  parser.add_argument("--mem_fraction", type=float, default=None,
                      help="XLA_PYTHON_CLIENT_MEM_FRACTION per run (default 0.9 / parallel)")
  parser.add_argument("--common", default="", help="overrides for every run, space- or comma-separated")
  parser.add_argument("runs", nargs="+", help="NAME[:section.key=value,...]")
  args = parser.parse_args()
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  common = [o for o in args.common.replace(",", " ").split() if o]
  runs = [parse_run(s) for s in args.runs]
  names = [n for n, _ in runs]
  if len(set(names)) != len(names):
    sys.exit(f"sweep_sync: run names must be unique, got {names}")
  env = dict(os.environ, XLA_PYTHON_CLIENT_MEM_FRACTION=str(args.mem_fraction or round(0.9 / args.parallel, 3)))
  pending = [launch.WorkUnit(n, tuple(common + o)) for n, o in runs
             if launch.summary(os.path.join(args.out, n)) is None]
  status = launch.run_local(pending, f"{root}/configs/pretrain.py:{args.variant}", args.out, parallel=args.parallel,
                            env=env)
  failed = {n: c for n, c in status.items() if c}
  print(f"\n{'run':16s} {'K=5':>6s} {'K=1':>6s} {'K=15':>6s} {'LSE-C':>6s}  overrides")
  for name, overrides in runs:
    s = launch.summary(os.path.join(args.out, name))
    if s is None:
      print(f"{name:16s} failed (exit {failed.get(name)}; see {os.path.join(args.out, name, 'launch.log')})")
      continue
    fmt = lambda v: "   -  " if v is None else f"{v:6.1%}"
    print(f"{name:16s} {fmt(s['accuracy'])} {fmt(s['k1'])} {fmt(s['k15'])} {s['lse_c']:6.3f}  "
          f"{' '.join(common + overrides)}")


if __name__ == "__main__":
  main()

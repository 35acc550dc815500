"""Pretrain several config variations side by side and tabulate their zero-shot sync accuracy.

    python experiments/sweep_sync.py --out=runs/sweep --parallel=4 [--variant=mu] [--common="k=v ..."] \
        base: lr3e3:optim.lr=3e-3 seed1:seed=1 ...

Each positional argument is NAME[:OVERRIDE,OVERRIDE...] with overrides as `section.key=value` (the same values
as --config.section.key on the command line). Every run is a plain `synclipmae pretrain` in OUT/NAME (so a rerun
resumes or skips finished runs) and ends with the sync evaluation; the table reads OUT/NAME/sync_eval.json.
--parallel runs that many at once: on an accelerator small variants leave most of it idle, so several runs share
one device (each process takes --mem_fraction of its memory). On a 2-core CPU keep --parallel=1.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def parse_run(spec: str) -> tuple[str, list[str]]:
  name, _, overrides = spec.partition(":")
  return name, [o for o in overrides.split(",") if o]


def summary(workdir: str) -> dict | None:
  path = os.path.join(workdir, "sync_eval.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    r = json.load(f)
  by_k = r.get("accuracy_by_context", {})
  return {"accuracy": r["accuracy"], "k1": by_k.get("1"), "k15": by_k.get("15"), "lse_c": r["lse_c"]}


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
  os.makedirs(args.out, exist_ok=True)
  pending = [(n, o) for n, o in runs if summary(os.path.join(args.out, n)) is None]
  active: dict[str, tuple[subprocess.Popen, object, float]] = {}  # name -> (process, its log file, start time)
  failed = {}
  while pending or active:
    while pending and len(active) < args.parallel:
      name, overrides = pending.pop(0)
      workdir = os.path.join(args.out, name)
      os.makedirs(workdir, exist_ok=True)
      cmd = [sys.executable, "-m", "synclipmae.cli", "pretrain", f"--config={root}/configs/pretrain.py:{args.variant}",
             f"--workdir={workdir}", *(f"--config.{o}" for o in common + overrides)]
      log = open(os.path.join(workdir, "sweep.log"), "w")
      print(f"start {name}: {' '.join(cmd[3:])}", flush=True)
      active[name] = (subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT), log, time.time())
    time.sleep(2)
    for name, (proc, log, started) in list(active.items()):
      if proc.poll() is not None:
        del active[name]
        log.close()
        print(f"done  {name}: exit {proc.returncode} after {time.time() - started:.0f} s", flush=True)
        if proc.returncode:
          failed[name] = proc.returncode
        elif (s := summary(os.path.join(args.out, name))) is not None:
          print(f"      {name}: {s['accuracy']:.1%} at K=5", flush=True)
  print(f"\n{'run':16s} {'K=5':>6s} {'K=1':>6s} {'K=15':>6s} {'LSE-C':>6s}  overrides")
  for name, overrides in runs:
    s = summary(os.path.join(args.out, name))
    if s is None:
      print(f"{name:16s} failed (exit {failed.get(name)}; see {os.path.join(args.out, name, 'sweep.log')})")
      continue
    fmt = lambda v: "   -  " if v is None else f"{v:6.1%}"
    print(f"{name:16s} {fmt(s['accuracy'])} {fmt(s['k1'])} {fmt(s['k15'])} {s['lse_c']:6.3f}  "
          f"{' '.join(common + overrides)}")


if __name__ == "__main__":
  main()

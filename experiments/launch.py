"""Launch pretraining experiments, xmanager-style: a config + a sweep of overrides -> work units -> an executor.

    python experiments/launch.py --config=configs/pretrain.py:mu --workdir=runs/sweep \\
        --sweep=optim.lr=1e-3,3e-3 --sweep=seed=0,1 --set=train.num_steps=200 \\
        --executor=local [--parallel=2] [--processes=2] [--dry_run]
    python experiments/launch.py ... --executor=tpu_vm --tpu=my-v5e-64 --zone=us-west4-a --workdir=gs://b/runs
    python experiments/launch.py ... --executor=slurm --nodes=2 --gpus_per_node=8 --partition=gpu

Every --sweep axis is KEY=V1,V2,...; the work units are their product (one unit without --sweep), each a plain
`synclipmae pretrain --config=CONFIG --workdir=WORKDIR/UNIT --config.KEY=V ...` (so a rerun resumes, and a unit
is reproduced by its printed command). Executors:
  local   subprocesses here, --parallel units at a time; --processes=N runs each unit as N processes of one
          multi-host job on loopback (`--distributed`, gloo CPU collectives; one device each unless
          XLA_FLAGS says otherwise). Logs: WORKDIR/UNIT/launch.log (launch_pN.log per process).
  tpu_vm  copies this checkout (`git archive` of HEAD) to every worker of a TPU VM slice, installs it, and runs
          each unit on all workers at once with `gcloud compute tpus tpu-vm ssh --worker=all` (as big_vision and
          MaxText do); JAX finds the slice's processes itself. Every worker must see the same workdir: a gs://
          URL (the workers then also install the `[gcs]` extra; synclipmae/storage.py) or a filesystem mounted
          on all of them. Logs: ~/UNIT.log on each worker.
  slurm   one sbatch script per unit (WORKDIR/UNIT/job.sbatch): --nodes x --gpus_per_node, one task per node,
          `srun` starts the processes and JAX reads Slurm's environment; submitted with `sbatch`.
--dry_run prints every command (and script) instead of running it. A failed unit is named with its exit status
and the end of its log; the launcher exits non-zero when any unit failed. Why not xmanager itself: its
open-source executors cannot target TPU v4+ slices, and it pins protobuf < 7 (DESIGN.md section 5); this file
takes its shape (experiment -> work units -> executor) without the dependency.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import shlex
import socket
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REMOTE_DIR = "synclipmae"  # Where the checkout goes in each TPU VM worker's home directory.


@dataclasses.dataclass(frozen=True)
class WorkUnit:
  name: str
  overrides: tuple[str, ...]  # KEY=VALUE, for --config.KEY=VALUE.

  def args(self, config: str, workdir: str) -> list[str]:
    """`synclipmae pretrain` arguments of this unit (without the program)."""
    return ["pretrain", f"--config={config}", f"--workdir={unit_dir(workdir, self)}",
            *(f"--config.{o}" for o in self.overrides)]


def unit_dir(workdir: str, unit: WorkUnit) -> str:
  return f"{workdir.rstrip('/')}/{unit.name}"


def work_units(sweep: list[str], fixed: list[str]) -> list[WorkUnit]:
  """The product of the sweep axes (KEY=V1,V2,...), each unit with the fixed overrides first."""
  axes = []
  for axis in sweep:
    key, sep, values = axis.partition("=")
    if not sep or not key or not values:
      raise ValueError(f"--sweep={axis!r}: expected KEY=V1,V2,... (e.g. optim.lr=1e-3,3e-3)")
    axes.append([f"{key}={v}" for v in values.split(",")])
  for override in fixed:
    if "=" not in override:
      raise ValueError(f"--set={override!r}: expected KEY=VALUE")
  units = []
  for combination in itertools.product(*axes):
    name = "_".join(o.replace("=", "").replace("/", "-") for o in combination) or "run"  # e.g. optim.lr1e-3
    units.append(WorkUnit(name, (*fixed, *combination)))
  if len({u.name for u in units}) != len(units):
    raise ValueError(f"sweep values give clashing unit names: {[u.name for u in units]}")
  return units


# ----------------------------------------------------------------------------------------------------------------
# local: subprocesses on this machine.


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def local_commands(unit: WorkUnit, config: str, workdir: str, processes: int) -> list[list[str]]:
  """One command per process of the unit: one plain run, or a multi-host job on loopback."""
  base = [sys.executable, "-m", "synclipmae.cli", *unit.args(config, workdir)]
  if processes == 1:
    return [base]
  coordinator = f"127.0.0.1:{free_port()}"
  return [[*base, "--distributed", f"--coordinator={coordinator}", f"--num_processes={processes}",
           f"--process_id={i}"] for i in range(processes)]


def run_local(units: list[WorkUnit], config: str, workdir: str, *, parallel: int = 1, processes: int = 1,
              env: dict[str, str] | None = None, dry_run: bool = False, log=print) -> dict[str, int]:
  """Runs the units, `parallel` at a time; returns {unit name: exit status} (the worst of its processes)."""
  env = dict(os.environ if env is None else env)
  if processes > 1:  # One device per process unless the caller chose otherwise.
    env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split()
                                if not f.startswith("--xla_force_host_platform_device_count"))
  pending, active, status = list(units), {}, {}
  while pending or active:
    while pending and len(active) < parallel:
      unit = pending.pop(0)
      commands = local_commands(unit, config, workdir, processes)
      if dry_run:
        for command in commands:
          log(shlex.join(command))
        status[unit.name] = 0
        continue
      directory = unit_dir(workdir, unit)
      os.makedirs(directory, exist_ok=True)
      names = ["launch.log"] if processes == 1 else [f"launch_p{i}.log" for i in range(processes)]
      logs = [open(os.path.join(directory, n), "w") for n in names]
      log(f"start {unit.name}: {shlex.join(commands[0][2:])}" + (f" (x{processes} processes)" if processes > 1
                                                                  else ""))
      active[unit.name] = ([subprocess.Popen(c, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT)
                            for c, f in zip(commands, logs)], logs, time.time())
    time.sleep(0.5 if active else 0)
    for name, (procs, logs, started) in list(active.items()):
      codes = [p.poll() for p in procs]
      if any(c not in (None, 0) for c in codes) and None in codes:  # One process died: its peers would hang.
        for p in procs:
          p.kill()
        codes = [p.wait() for p in procs]
      if None in codes:
        continue
      del active[name]
      for f in logs:
        f.close()
      status[name] = next((c for c in codes if c), 0)
      if status[name]:
        worst = logs[codes.index(status[name])].name
        with open(worst) as f:
          tail = f.read().strip().splitlines()[-3:]
        log(f"FAILED {name}: exit {status[name]} after {time.time() - started:.0f} s; {worst}:\n  " +
            "\n  ".join(tail))
      else:
        log(f"done  {name} in {time.time() - started:.0f} s")
  return status


def summary(directory: str) -> dict | None:
  """A finished unit's zero-shot sync result (its sync_eval.json), or None."""
  path = os.path.join(directory, "sync_eval.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    r = json.load(f)
  by_k = r.get("accuracy_by_context", {})
  return {"accuracy": r["accuracy"], "k1": by_k.get("1"), "k15": by_k.get("15"), "lse_c": r["lse_c"]}


# ----------------------------------------------------------------------------------------------------------------
# tpu_vm: every worker of a TPU VM slice.


def jax_version() -> str:
  """The jax version setup.cfg pins (the TPU runtime must match it)."""
  for line in open(os.path.join(REPO, "setup.cfg")):
    if line.strip().startswith("jax=="):
      return line.strip().removeprefix("jax==")
  raise ValueError("setup.cfg pins no jax version")


def tpu_vm_commands(units: list[WorkUnit], config: str, workdir: str, *, tpu: str, zone: str,
                    project: str | None = None) -> list[list[str]]:
  """The gcloud commands: copy the checkout to every worker, install it, run each unit on all workers."""
  where = [f"--zone={zone}", *([f"--project={project}"] if project else [])]
  ssh = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", tpu, *where, "--worker=all", "--command"]
  archive = f"/tmp/{REMOTE_DIR}.tar.gz"
  urls = "://" in workdir or any("://" in o for u in units for o in u.overrides)  # gs:// workdir or corpus
  extras = " && .venv/bin/pip install --quiet -e '.[gcs]'" if urls else ""  # (synclipmae/storage.py)
  commands = [
      ["git", "-C", REPO, "archive", "--format=tar.gz", f"--output={archive}", "HEAD"],
      ["gcloud", "compute", "tpus", "tpu-vm", "scp", archive, f"{tpu}:~/", *where, "--worker=all"],
      [*ssh, f"mkdir -p ~/{REMOTE_DIR} && tar -xzf ~/{REMOTE_DIR}.tar.gz -C ~/{REMOTE_DIR} && "
             f"cd ~/{REMOTE_DIR} && make install && .venv/bin/pip install --quiet 'jax[tpu]=={jax_version()}'"
             f"{extras}"]]
  for unit in units:
    run = shlex.join([".venv/bin/synclipmae", *unit.args(config, workdir), "--distributed"])
    commands.append([*ssh, f"set -o pipefail; cd ~/{REMOTE_DIR} && {run} 2>&1 | tee -a ~/{unit.name}.log"])
  return commands


# ----------------------------------------------------------------------------------------------------------------
# slurm: one batch script per unit.


def slurm_script(unit: WorkUnit, config: str, workdir: str, *, nodes: int, gpus_per_node: int,
                 partition: str | None = None, time_limit: str = "24:00:00") -> str:
  """An sbatch script running the unit as one process per node; JAX reads Slurm's environment."""
  lines = ["#!/bin/bash", f"#SBATCH --job-name=synclipmae-{unit.name}", f"#SBATCH --nodes={nodes}",
           "#SBATCH --ntasks-per-node=1", f"#SBATCH --gpus-per-node={gpus_per_node}",
           f"#SBATCH --time={time_limit}", f"#SBATCH --output={unit_dir(workdir, unit)}/slurm-%j.log"]
  if partition:
    lines.append(f"#SBATCH --partition={partition}")
  run = shlex.join([".venv/bin/synclipmae", *unit.args(config, workdir), "--distributed"])
  return "\n".join([*lines, "set -euo pipefail", f"cd {shlex.quote(REPO)}", f"srun {run}", ""])


# ----------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
  parser.add_argument("--config", default="configs/pretrain.py:mu")
  parser.add_argument("--workdir", required=True, help="Each unit runs in WORKDIR/UNIT.")
  parser.add_argument("--sweep", action="append", default=[], help="KEY=V1,V2,... (repeat for a product).")
  parser.add_argument("--set", action="append", default=[], dest="fixed", help="KEY=VALUE for every unit.")
  parser.add_argument("--executor", choices=["local", "tpu_vm", "slurm"], default="local")
  parser.add_argument("--dry_run", action="store_true", help="Print the commands / scripts; run nothing.")
  parser.add_argument("--parallel", type=int, default=1, help="local: units at a time.")
  parser.add_argument("--processes", type=int, default=1, help="local: processes per unit (multi-host on loopback).")
  parser.add_argument("--tpu", help="tpu_vm: the TPU VM's name.")
  parser.add_argument("--zone", help="tpu_vm: its zone.")
  parser.add_argument("--project", help="tpu_vm: its project (default: gcloud's).")
  parser.add_argument("--nodes", type=int, default=1, help="slurm: nodes per unit.")
  parser.add_argument("--gpus_per_node", type=int, default=8, help="slurm: GPUs per node.")
  parser.add_argument("--partition", help="slurm: partition.")
  parser.add_argument("--time", default="24:00:00", help="slurm: time limit.")
  args = parser.parse_args(argv)
  try:
    units = work_units(args.sweep, args.fixed)
  except ValueError as e:
    parser.error(str(e))
  config = args.config  # Relative paths are relative to the checkout (here, on every worker, on every node).
  if "://" in args.workdir and args.executor != "tpu_vm":
    parser.error(f"--workdir={args.workdir}: the {args.executor} executor writes each unit's log into its workdir "
                 "and needs a filesystem path; object-storage workdirs go with --executor=tpu_vm")
  if args.executor == "local":
    status = run_local(units, config, args.workdir, parallel=args.parallel, processes=args.processes,
                       dry_run=args.dry_run)
    failed = {n: c for n, c in status.items() if c}
    if args.dry_run:
      return 0
    for unit in units:
      result = summary(unit_dir(args.workdir, unit))
      if result:
        print(f"  {unit.name}: zero-shot sync {result['accuracy']:.1%} at K=5 on the eval split")
    print(f"{len(units) - len(failed)} of {len(units)} units succeeded" +
          (f"; failed: {', '.join(f'{n} (exit {c})' for n, c in failed.items())}" if failed else ""))
    return 1 if failed else 0
  if args.executor == "tpu_vm":
    if not args.tpu or not args.zone:
      parser.error("--executor=tpu_vm needs --tpu and --zone")
    for command in tpu_vm_commands(units, config, args.workdir, tpu=args.tpu, zone=args.zone, project=args.project):
      print(shlex.join(command))
      if not args.dry_run:
        if subprocess.run(command).returncode:
          print(f"FAILED: {shlex.join(command)}", file=sys.stderr)
          return 1
    return 0
  for unit in units:  # slurm
    script = slurm_script(unit, config, args.workdir, nodes=args.nodes, gpus_per_node=args.gpus_per_node,
                          partition=args.partition, time_limit=args.time)
    if args.dry_run:
      print(f"# {unit.name}\n{script}")
      continue
    path = os.path.join(unit_dir(args.workdir, unit), "job.sbatch")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
      f.write(script)
    result = subprocess.run(["sbatch", path], capture_output=True, text=True)
    print(f"{unit.name}: {(result.stdout or result.stderr).strip()}")
    if result.returncode:
      return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())

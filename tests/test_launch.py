"""experiments/launch.py: sweeps become work units; the local executor runs them (also as multi-host jobs on
loopback) and names the unit that failed; the TPU VM and Slurm executors print the exact commands and scripts."""

import os
import shlex
import sys

import pytest

from test_train import REPO, SMALL_MODEL

sys.path.insert(0, os.path.join(REPO, "experiments"))
import launch  # noqa: E402


def test_sweep_axes_give_their_product_with_the_fixed_overrides_first():
  units = launch.work_units(["optim.lr=1e-3,3e-3", "seed=0,1"], ["train.num_steps=10"])
  assert [u.name for u in units] == ["optim.lr1e-3_seed0", "optim.lr1e-3_seed1", "optim.lr3e-3_seed0",
                                     "optim.lr3e-3_seed1"]
  assert units[1].args("configs/pretrain.py:mu", "runs/s") == [
      "pretrain", "--config=configs/pretrain.py:mu", "--workdir=runs/s/optim.lr1e-3_seed1",
      "--config.train.num_steps=10", "--config.optim.lr=1e-3", "--config.seed=1"]
  assert [u.name for u in launch.work_units([], [])] == ["run"]
  with pytest.raises(ValueError, match="expected KEY=V1,V2"):
    launch.work_units(["optim.lr"], [])


def test_tpu_vm_dry_run_copies_installs_and_runs_every_unit_on_all_workers(capsys):
  assert launch.main(["--workdir=/mnt/shared/runs", "--sweep=seed=0,1", "--executor=tpu_vm", "--tpu=v5e-64",
                      "--zone=us-west4-a", "--project=lab", "--dry_run"]) == 0
  lines = capsys.readouterr().out.strip().splitlines()
  assert lines[0].startswith("git -C ") and "archive" in lines[0]
  assert lines[1].startswith("gcloud compute tpus tpu-vm scp ") and "--worker=all" in lines[1]
  assert "make install" in lines[2] and "jax[tpu]==" in lines[2] and "[gcs]" not in lines[2]
  for line, seed in zip(lines[3:], (0, 1)):
    assert line.startswith("gcloud compute tpus tpu-vm ssh v5e-64 --zone=us-west4-a --project=lab --worker=all")
    assert f"--workdir=/mnt/shared/runs/seed{seed} --config.seed={seed} --distributed" in line
  assert len(lines) == 5
  # A gs:// workdir: the workers also install the [gcs] extra, and each unit writes into the bucket.
  assert launch.main(["--workdir=gs://bucket/runs", "--executor=tpu_vm", "--tpu=t", "--zone=z", "--dry_run"]) == 0
  lines = capsys.readouterr().out.strip().splitlines()
  install, run = (shlex.split(line)[-1] for line in lines[2:4])  # The remote commands.
  assert "pip install --quiet -e '.[gcs]'" in install and "--workdir=gs://bucket/runs/run " in run
  # A corpus on object storage with a workdir on a shared mount: the extra too (it reads the corpus).
  assert launch.main(["--workdir=/mnt/shared/runs", "--set=data.dir=gs://bucket/corpora/lrs3", "--executor=tpu_vm",
                      "--tpu=t", "--zone=z", "--dry_run"]) == 0
  install = shlex.split(capsys.readouterr().out.strip().splitlines()[2])[-1]
  assert "pip install --quiet -e '.[gcs]'" in install
  with pytest.raises(SystemExit):  # The local executor keeps unit logs in the workdir: a URL is refused.
    launch.main(["--workdir=gs://bucket/runs", "--executor=local", "--dry_run"])


def test_slurm_dry_run_prints_one_multi_node_script_per_unit(capsys):
  assert launch.main(["--workdir=/scratch/runs", "--sweep=seed=0,1", "--executor=slurm", "--nodes=4",
                      "--gpus_per_node=8", "--partition=h100", "--dry_run"]) == 0
  out = capsys.readouterr().out
  assert out.count("#!/bin/bash") == 2
  for line in ("#SBATCH --nodes=4", "#SBATCH --ntasks-per-node=1", "#SBATCH --gpus-per-node=8",
               "#SBATCH --partition=h100", "#SBATCH --output=/scratch/runs/seed1/slurm-%j.log",
               "srun .venv/bin/synclipmae pretrain --config=configs/pretrain.py:mu --workdir=/scratch/runs/seed0 "
               "--config.seed=0 --distributed"):
    assert line in out


def test_local_executor_runs_a_two_process_unit_and_names_the_failed_one(synthetic_corpus, tmp_path):
  fixed = [f"data.dir={synthetic_corpus}", "train.num_steps=2", "train.checkpoint_every=2", "mesh.data=2",
           "optim.warmup_steps=1", *(o.removeprefix("--config.") for o in SMALL_MODEL)]
  lines = []
  status = launch.run_local(launch.work_units(["loss.mouth_weight=0.0,-1.0"], fixed), "configs/pretrain.py:mu",
                            str(tmp_path), parallel=2, processes=2, log=lines.append)
  good, bad = "loss.mouth_weight0.0", "loss.mouth_weight-1.0"
  assert status[good] == 0 and status[bad] != 0
  good = tmp_path / good
  assert (good / "checkpoints" / "2").is_dir()
  logs = [(good / f"launch_p{i}.log").read_text() for i in range(2)]
  assert "process 0 of 2" in logs[0] and "process 1 of 2" in logs[1]
  failure = next(l for l in lines if l.startswith("FAILED"))
  assert bad in failure and "loss.mouth_weight=-1.0 must be a non-negative weight" in failure  # Its log's end.

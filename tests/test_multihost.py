"""Multi-host for real: two processes on loopback (gloo CPU collectives, one device each) train exactly as one
process with two devices and the same global batch, and a run's checkpoint moves from 2 processes to 1 and back."""

import json
import os
import shutil
import socket
import subprocess
import sys

import jax
import numpy as np

from test_train import REPO, SMALL_MODEL, _params

STEPS = 8  # Checkpoints every 4: the runs below switch process count at step 4.


def _command(workdir, corpus, steps, *extra):
  return [sys.executable, "-m", "synclipmae.cli", "pretrain", "--config=configs/pretrain.py:mu",
          f"--workdir={workdir}", f"--config.data.dir={corpus}", "--config.optim.warmup_steps=2",
          f"--config.train.num_steps={steps}", "--config.train.checkpoint_every=4", "--config.train.log_every=1",
          "--config.mesh.data=2", "--noeval", *SMALL_MODEL, *extra]  # Later flags win: --eval, another mesh.


def _env(devices):
  flags = os.environ.get("XLA_FLAGS", "").replace("--xla_force_host_platform_device_count=8", "").strip()
  return {**os.environ, "JAX_PLATFORMS": "cpu",
          "XLA_FLAGS": f"{flags} --xla_force_host_platform_device_count={devices}".strip()}


def one_process(workdir, corpus, steps, *extra):
  result = subprocess.run(_command(workdir, corpus, steps, *extra), cwd=REPO, env=_env(2), capture_output=True,
                          text=True, timeout=600)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
  return result.stdout


def two_processes(workdir, corpus, steps, logs, *extra):
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  logs.mkdir(exist_ok=True)
  files = [open(logs / f"process_{i}.log", "w") for i in range(2)]  # Files, not pipes: neither process may block.
  processes = [subprocess.Popen(_command(workdir, corpus, steps, *extra, "--distributed",
                                         f"--coordinator=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}"),
                                cwd=REPO, env=_env(1), stdout=f, stderr=subprocess.STDOUT, text=True)
               for i, f in enumerate(files)]
  try:
    codes = [p.wait(timeout=600) for p in processes]
  finally:
    for p in processes:
      p.kill()
    for f in files:
      f.close()
  outputs = [(logs / f"process_{i}.log").read_text() for i in range(2)]
  assert codes == [0, 0], "\n\n".join(o[-3000:] for o in outputs)
  return outputs


def _losses(workdir):
  return {l["step"]: l["loss"] for l in map(json.loads, open(workdir / "metrics.jsonl"))}


def _assert_same(workdir, reference):
  np.testing.assert_allclose([_losses(workdir)[s] for s in range(1, STEPS + 1)],
                             [_losses(reference)[s] for s in range(1, STEPS + 1)], rtol=1e-6, atol=1e-5)
  (step, params), (ref_step, ref_params) = _params(workdir), _params(reference)
  assert step == ref_step == STEPS
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ref_params)):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


def _rewound(run, to):
  """A copy of `run` as it was at its step-4 checkpoint (the same num_steps, so the same learning-rate schedule)."""
  shutil.copytree(run, to)
  shutil.rmtree(to / "checkpoints" / str(STEPS))
  lines = [l for l in open(to / "metrics.jsonl") if json.loads(l)["step"] <= 4]
  (to / "metrics.jsonl").write_text("".join(lines))
  return to


def test_two_processes_train_as_one_and_checkpoints_move_between_them(synthetic_corpus, tmp_path):
  one, two = tmp_path / "one", tmp_path / "two"
  one_process(one, synthetic_corpus, STEPS)
  outputs = two_processes(two, synthetic_corpus, STEPS, tmp_path / "logs")
  assert "process 0 of 2" in outputs[0] and "process 1 of 2" in outputs[1]
  _assert_same(two, one)

  # Steps 5-8 on one process from the two processes' step-4 checkpoint, and the other way round.
  two_then_one = _rewound(two, tmp_path / "two_then_one")
  assert "at step 4" in one_process(two_then_one, synthetic_corpus, STEPS)
  _assert_same(two_then_one, one)
  one_then_two = _rewound(one, tmp_path / "one_then_two")
  assert "at step 4" in two_processes(one_then_two, synthetic_corpus, STEPS, tmp_path / "logs_resumed")[0]
  _assert_same(one_then_two, one)


def test_parameters_sharded_across_processes_train_and_evaluate_as_one(synthetic_corpus, tmp_path):
  # FSDP over the two processes (the audio adapter's input layer is large enough to be sharded), and the
  # end-of-training evaluation, which process 0 runs alone on parameters gathered from both.
  extra = ["--config.mesh.data=1", "--config.mesh.fsdp=2", "--eval", "--config.eval.num_samples=16"]
  one, two = tmp_path / "one", tmp_path / "two"
  one_process(one, synthetic_corpus, 4, *extra)
  two_processes(two, synthetic_corpus, 4, tmp_path / "logs", *extra)
  np.testing.assert_allclose([_losses(two)[s] for s in range(1, 5)], [_losses(one)[s] for s in range(1, 5)],
                             rtol=1e-6, atol=1e-5)
  results = [json.loads((w / "sync_eval.json").read_text()) for w in (one, two)]
  assert results[0]["num_samples"] == results[1]["num_samples"] == 16
  np.testing.assert_allclose(results[1]["lse_c"], results[0]["lse_c"], rtol=1e-4)
  assert results[1]["accuracy"] == results[0]["accuracy"]

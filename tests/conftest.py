"""Shared fixtures: small corpora built once per test session; 8 fake CPU devices for sharding tests."""

import os
from pathlib import Path

# Before anything imports jax: 8 CPU devices, so sharded code paths run for real (DESIGN.md section 4).
os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
# Tests compile many programs and run each for a few steps of a tiny model, so XLA's backend optimisations (LLVM)
# cost more than they save: the shrunk pretraining step compiles in less than half the time without them (JAX's own
# test suite runs this way). Inherited by the commands tests run in subprocesses; `trained_run`, which trains for
# minutes, turns them back on. A value already set wins.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")

import numpy as np
import pytest

from synclipmae.data import corpus as corpus_lib
from synclipmae.data import records


def random_clip(rng: np.random.Generator, clip_id: str, speaker_id: str, num_frames: int, size: int = 16,
                codec: str = "png") -> records.ClipRecord:
  """A clip of random content with a distinctive frame index baked into pixel (0, 0)."""
  frames = rng.integers(0, 256, (num_frames, size, size, 3), dtype=np.uint8)
  frames[:, 0, 0, 0] = np.arange(num_frames) % 256
  face = np.zeros((num_frames, size, size), bool)
  face[:, size // 4:-size // 4, size // 4:-size // 4] = True
  mouth = np.zeros_like(face)
  mouth[:, size // 2:-size // 4, size // 3:-size // 3] = True
  audio = rng.integers(-2000, 2000, num_frames * 640, dtype=np.int16)
  return records.ClipRecord(
      clip_id=clip_id, speaker_id=speaker_id, source="test", fps=25.0, sample_rate=16000,
      frames=records.encode_frames(frames, codec), frame_codec=codec, audio=audio, face_masks=face,
      mouth_masks=mouth, labels={"frame": np.arange(num_frames, dtype=np.int32),
                                 "pose": rng.normal(size=(num_frames, 4)).astype(np.float32)},
      metadata={"transcript": f"clip {clip_id}"})


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
  """24 random clips of 10..20 frames from 6 speakers in 3 shards, plus a 4-clip held-out split."""
  directory = tmp_path_factory.mktemp("tiny_corpus")
  rng = np.random.default_rng(0)
  train = [random_clip(rng, f"c{i:03d}", f"s{i % 6}", int(rng.integers(10, 21))) for i in range(24)]
  heldout = [random_clip(rng, f"h{i:03d}", "s_held", 12) for i in range(4)]
  splits = {"train": corpus_lib.write_split(directory, "train", train, num_shards=3),
            "heldout": corpus_lib.write_split(directory, "heldout", heldout, num_shards=1)}
  corpus_lib.write_corpus_info(directory, splits)
  return directory


@pytest.fixture(scope="session")
def synthetic_corpus(tmp_path_factory):
  """A small synthetic corpus (6 identities, 2 held out) with clips long enough for sync evaluation."""
  from data_pipelines.synthetic import clips, generate
  directory = tmp_path_factory.mktemp("synthetic_corpus")
  spec = clips.SyntheticSpec(num_identities=6, num_heldout=2, num_validation=0, clips_per_identity=3, min_words=6,
                             max_words=8, seed=3)
  generate.generate(spec, directory, num_workers=1, train_shards=2, heldout_shards=1, quiet=True)
  return directory


TRAINED_STEPS = 300


def built_once(directory: Path, build, fresh: bool = True) -> Path:
  """`directory`, filled by `build(directory)` once: under a file lock, so pytest-xdist's workers (`make test` runs
  two) wait for the one that builds and reuse its result. `fresh`: clear what a failed build left first."""
  import fcntl
  import shutil
  done = directory / ".built"
  with open(directory.parent / f"{directory.name}.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # Released when the file closes.
    if not done.exists():
      if fresh:
        shutil.rmtree(directory, ignore_errors=True)
      directory.mkdir(parents=True, exist_ok=True)
      build(directory)
      done.touch()
  return directory


def session_dir(tmp_path_factory, name: str) -> Path:
  """A path for `name` shared by the session's pytest-xdist workers (their base temp directories share a parent)."""
  base = tmp_path_factory.getbasetemp()
  return (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / name


def _run_cli(args, env=None) -> None:
  import subprocess
  import sys
  repo = Path(__file__).resolve().parent.parent
  result = subprocess.run([sys.executable, "-m", "synclipmae.cli", *args], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=900)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
  """`mu` pretrained for TRAINED_STEPS steps on a 16-identity synthetic corpus, and its export.

  Trained by the real command in a subprocess on one CPU device (about three minutes on 2 cores): long enough that
  whole-clip sync of held-out clips works, so downstream tests and notebooks see a model that has learnt
  something. Built once per session (`built_once`). Returns {"corpus", "workdir", "export"} (paths).
  """
  from data_pipelines.synthetic import clips, generate

  def build(root: Path) -> None:
    corpus, workdir, export = root / "corpus", root / "mu", root / "export"
    if (export / "model.safetensors").exists():  # A kept run (below).
      return
    spec = clips.SyntheticSpec(num_identities=16, num_heldout=4, num_validation=0, clips_per_identity=8, seed=5)
    generate.generate(spec, corpus, num_workers=2, quiet=True)
    # One device: strip the 8 fake devices (an all-blank XLA_FLAGS is read as a flags file name, so strip blanks).
    flags = os.environ["XLA_FLAGS"].replace("--xla_force_host_platform_device_count=8", "").strip()
    env = {**os.environ, "XLA_FLAGS": flags, "JAX_DISABLE_MOST_OPTIMIZATIONS": "0"}  # Minutes of training.
    # Without loss.id_con: at 300 steps on this 16-identity corpus it delays sync (held-out videos in
    # test_sync_videos: 31/40 within a frame with it, 37/40 without), and the fixture exists to have learnt sync.
    _run_cli(["pretrain", "--config=configs/pretrain.py:mu", f"--workdir={workdir}", f"--config.data.dir={corpus}",
              f"--config.train.num_steps={TRAINED_STEPS}", "--config.train.checkpoint_every=100",
              "--config.eval.num_samples=64", "--config.loss.id_con=0"], env)
    _run_cli(["export", f"--workdir={workdir}", f"--out={export}"], env)

  # SYNCLIPMAE_TEST_TRAINED_RUN=DIR keeps the run in DIR and reuses it in later sessions (while editing tests).
  keep = os.environ.get("SYNCLIPMAE_TEST_TRAINED_RUN")
  if keep:
    root = built_once(Path(keep).absolute(), build, fresh=False)
  else:
    root = built_once(session_dir(tmp_path_factory, "trained_run"), build)
  return {"corpus": root / "corpus", "workdir": root / "mu", "export": root / "export"}


@pytest.fixture(scope="session")
def dub_model(trained_run, tmp_path_factory):
  """The trained run's export with its decoder fine-tuned for dubbing (60 steps: enough to exercise everything;
  tests/test_dubbing.py and the notebooks)."""
  def build(root: Path) -> None:
    _run_cli(["finetune-dub", f"--model={trained_run['export']}", f"--out={root / 'model'}", "--max_clips=12",
              "--steps=60", "--batch_size=32"])
  return built_once(session_dir(tmp_path_factory, "dub"), build) / "model"


SHARED_MODEL_FIXTURES = {"trained_run", "dub_model"}


def pytest_collection_modifyitems(config, items):
  """The tests of the trained model go first. Under pytest-xdist (`make test`) its load scheduler hands each
  worker a first chunk of an eighth of the suite (40 tests), so one worker gets all of them and builds the model
  while the other takes the rest; `built_once` keeps any other split correct. Without xdist only the order
  changes."""
  shared = [item for item in items if SHARED_MODEL_FIXTURES & set(getattr(item, "fixturenames", ()))]
  items[:] = shared + [item for item in items if item not in shared]

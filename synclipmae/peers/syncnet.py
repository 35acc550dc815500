"""Training the SyncNet peer (models/syncnet.py) on a clip corpus, SyncNet's way: pairs of a 5-frame face stack
and 0.2 s of audio, synced or shifted, and the contrastive loss on their Euclidean distance.

Each training example is one video stack with two audio windows: its own (synced) and the same clip's audio
shifted by d frames, 2 <= |d| <= max_shift (the negatives of the SyncNet paper are shifted copies of the same
clip; we draw them from the evaluation's offset range, outside its +-1 frame tolerance). The clips are decoded
into memory once (a few hundred MB for the synthetic corpus); the loop is one jitted step over split state
(params, BatchNorm statistics, optimiser), as the SyncLipMAE trainer's.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx

from synclipmae.data.corpus import Corpus
from synclipmae.eval import sync
from synclipmae.models import audio as audio_lib
from synclipmae.models import syncnet

SPF = audio_lib.SAMPLES_PER_VIDEO_FRAME
HALF = syncnet.CONTEXT_FRAMES // 2
LOSSES = ("contrastive", "infonce")


@dataclasses.dataclass(frozen=True)
class Settings:
  """What a peer run is: every field is written to the run's settings.json and can be set on the command line."""
  # Defaults: the comparison's peer (BENCHMARKS.md "SyncNet on equal terms"): 370 steps take the ~7 minutes the
  # `mu` main job trains for on a 2-core CPU; loss and width chosen on the validation identities.
  steps: int = 370
  batch_size: int = 32
  width: float = 0.5  # Channel scale (1.0 = published SyncNet).
  lr: float = 1e-3
  weight_decay: float = 1e-4
  warmup_steps: int = 50
  # "contrastive" (SyncNet's, on the Euclidean distance: still at chance after 370 steps) | "infonce" (ours, on
  # cosine similarity, the shifted windows as hard negatives).
  loss: str = "infonce"
  margin: float = 10.0  # Contrastive-loss margin on the Euclidean distance.
  temperature: float = 0.07  # InfoNCE temperature.
  max_shift: int = 15  # Negatives: audio shifted by 2..max_shift frames either way.
  seed: int = 0
  split: str = "train"


class ClipBank:
  """A split's clips decoded into memory: frames uint8 [T, H, W, 3] and audio float32 per clip."""

  def __init__(self, corpus: Corpus, split: str):
    self.frames, self.audio = [], []
    for i in range(len(corpus.manifest(split))):
      clip = corpus.read(split, i)
      if int(clip.samples_per_frame) != SPF:
        raise ValueError(f"{corpus.directory}/{split} record {i}: {clip.samples_per_frame} audio samples per frame, "
                         f"SyncNet needs {SPF} (16 kHz at 25 fps)")
      self.frames.append(clip.decode_frames())
      self.audio.append(clip.audio_float())
    self.lengths = np.array([len(f) for f in self.frames])
    usable = self.lengths >= 2 * HALF + 3
    if not np.any(usable):
      raise ValueError(f"{corpus.directory}/{split}: no clip has the {2 * HALF + 3} frames a SyncNet pair needs")
    self.clip_weights = np.where(usable, self.lengths, 0) / np.sum(self.lengths[usable])  # Frames drawn uniformly.

  def audio_window(self, clip: int, first: int, count: int) -> np.ndarray:
    """Audio under frames [first, first + count), zeros outside the clip."""
    return sync.shifted_audio_window(self.audio[clip], first, count, shift_frames=0, margin_frames=0,
                                     samples_per_frame=SPF)

  def batch(self, rng: np.random.Generator, size: int, max_shift: int) -> dict[str, np.ndarray]:
    """size stacks [B, 5, H, W, 3] (float32 in [0, 1]) and their synced / shifted audio [B, 7 * 640] (the 0.2 s
    window plus one frame each side, so the MFCC edges see real audio, as in a long evaluation window)."""
    clips = rng.choice(len(self.lengths), size=size, p=self.clip_weights)
    stacks, synced, shifted, shifts = [], [], [], []
    for c in clips:
      n = int(self.lengths[c])
      t = int(rng.integers(HALF, n - HALF))
      # Shifts keeping the shifted window inside the clip where possible.
      options = [d for d in range(-max_shift, max_shift + 1) if abs(d) >= 2 and HALF <= t + d < n - HALF]
      d = int(rng.choice(options)) if options else int(rng.choice([-1, 1]) * max(2, max_shift))
      stacks.append(self.frames[c][t - HALF:t + HALF + 1])
      synced.append(self.audio_window(c, t - HALF - 1, 2 * HALF + 3))
      shifted.append(self.audio_window(c, t + d - HALF - 1, 2 * HALF + 3))
      shifts.append(d)
    return {"stacks": np.stack(stacks).astype(np.float32) / 255.0, "synced": np.stack(synced),
            "shifted": np.stack(shifted), "shifts": np.asarray(shifts)}


def _centre_embedding(model: syncnet.SyncNet, audio: jax.Array) -> jax.Array:
  """Audio of 7 frames -> the embedding of the middle frame's 0.2 s (margin 3 around one frame)."""
  windows = syncnet.mfcc_windows(audio, 1, HALF + 1)[:, 0]
  return model.embed_mfcc(windows)


def make_model(image_size: int, settings: Settings) -> syncnet.SyncNet:
  return syncnet.SyncNet(image_size=image_size, width=settings.width, rngs=nnx.Rngs(settings.seed))


def train(corpus: Corpus, workdir: str | os.PathLike, settings: Settings, *, log_every: int = 25
          ) -> syncnet.SyncNet:
  """Trains a SyncNet on `settings.split` and saves it (workdir/params, settings.json, metrics.jsonl)."""
  if settings.loss not in LOSSES:
    raise ValueError(f"loss={settings.loss!r}: choose one of {LOSSES}")
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  t0 = time.time()
  bank = ClipBank(corpus, settings.split)
  load_s = time.time() - t0
  model = make_model(bank.frames[0].shape[1], settings)
  model.train()
  warmup = min(settings.warmup_steps, settings.steps // 2)
  schedule = optax.warmup_cosine_decay_schedule(0.0, settings.lr, warmup, settings.steps)
  tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=settings.weight_decay))
  graphdef, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, stats, opt_state, stacks, synced, shifted):
    def loss_fn(params, stats):  # stats an argument: BatchNorm updates them inside the gradient's trace.
      m = nnx.merge(graphdef, params, stats, copy=True)
      video = m.embed_lips(stacks)
      audio = _centre_embedding(m, jnp.concatenate([synced, shifted]))
      b = len(stacks)
      if settings.loss == "contrastive":
        labels = jnp.concatenate([jnp.ones(b), jnp.zeros(b)])
        loss = syncnet.contrastive_loss(jnp.concatenate([video, video]), audio, labels, settings.margin)
      else:
        loss = syncnet.info_nce_loss(video, audio[:b], audio[b:], settings.temperature)
      pairs = (jnp.concatenate([video, video]), audio)
      if settings.loss == "infonce":  # Distances as the loss sees them: between unit vectors.
        pairs = tuple(x / jnp.linalg.norm(x, axis=-1, keepdims=True) for x in pairs)
      d = jnp.linalg.norm(pairs[0] - pairs[1], axis=-1)
      aux = {"d_synced": d[:b].mean(), "d_shifted": d[b:].mean(), "pair_acc": jnp.mean(d[:b] < d[b:])}
      return loss, (aux, nnx.state(m, nnx.BatchStat))
    (loss, (aux, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, stats)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), stats, opt_state, {"loss": loss, **aux}

  rng = np.random.default_rng(settings.seed)
  (workdir / "settings.json").write_text(json.dumps(dataclasses.asdict(settings), indent=1))
  t_train = time.time()
  with open(workdir / "metrics.jsonl", "w") as log:
    for i in range(1, settings.steps + 1):
      b = bank.batch(rng, settings.batch_size, settings.max_shift)
      params, stats, opt_state, metrics = step(params, stats, opt_state, b["stacks"], b["synced"], b["shifted"])
      if i % log_every == 0 or i == settings.steps:
        row = {"step": i, **{k: float(v) for k, v in jax.device_get(metrics).items()},
               "elapsed_s": round(time.time() - t_train, 1)}
        log.write(json.dumps(row) + "\n")
        log.flush()
        print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
  model = nnx.merge(graphdef, params, stats)
  model.eval()
  save(model, workdir)
  timing = {"load_s": round(load_s, 1), "train_s": round(time.time() - t_train, 1), "steps": settings.steps}
  (workdir / "timing.json").write_text(json.dumps(timing, indent=1))
  return model


def save(model: syncnet.SyncNet, workdir: str | os.PathLike) -> None:
  """params + BatchNorm statistics as an orbax checkpoint; the geometry in syncnet.json."""
  workdir = Path(workdir).absolute()
  (workdir / "syncnet.json").write_text(json.dumps({"image_size": model.image_size, "width": model.width}))
  with ocp.StandardCheckpointer() as ckpt:
    ckpt.save(workdir / "params", nnx.state(model), force=True)


def load(workdir: str | os.PathLike) -> syncnet.SyncNet:
  """A trained SyncNet from `save`, in evaluation mode (BatchNorm running statistics)."""
  workdir = Path(workdir).absolute()
  geometry_file = workdir / "syncnet.json"
  if not geometry_file.exists():
    raise FileNotFoundError(f"{workdir}: not a SyncNet run (no syncnet.json; train one with "
                            "experiments/syncnet_peer.py)")
  geometry: dict[str, Any] = json.loads(geometry_file.read_text())
  model = syncnet.SyncNet(rngs=nnx.Rngs(0), **geometry)
  with ocp.StandardCheckpointer() as ckpt:
    state = ckpt.restore(workdir / "params", nnx.state(model))
  nnx.update(model, state)
  model.eval()
  return model

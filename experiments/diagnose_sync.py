"""Which side of the audio-visual contrastive objective learns slowly? Replace one side by ground truth.

    python experiments/diagnose_sync.py --side=video [--steps=200] [section.key=value ...]

Trains the `mu` model on the InfoNCE term alone on the synthetic corpus, with one side of the loss replaced by a
fixed embedding of ground truth from the synthetic labels:
  --side=video   video tokens := embedding of the true mouth state (open, width, round): only the audio branch learns
  --side=audio   audio tokens := embedding of the true per-frame loudness: only the video encoder learns
  --side=none    both sides learned (the plain contrastive objective)
Prints the contrastive loss (log N = 4.85 at chance for 128 frames) and retrieval accuracy every 50 steps.
Measured results are in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import optax
from flax import nnx

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import pretrain  # noqa: E402
from synclipmae import losses  # noqa: E402
from synclipmae.data import pipeline  # noqa: E402
from synclipmae.train import loop  # noqa: E402
from synclipmae.train import step as step_lib  # noqa: E402


def override(config, assignment: str) -> None:
  key, value = assignment.split("=", 1)
  *parents, leaf = key.split(".")
  node = config
  for p in parents:
    node = node[p]
  node[leaf] = (value == "True") if isinstance(node[leaf], bool) else type(node[leaf])(value)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--side", choices=("video", "audio", "none"), required=True)
  parser.add_argument("--steps", type=int, default=200)
  parser.add_argument("overrides", nargs="*", help="config overrides, e.g. masking.face_bias=100.0")
  args = parser.parse_args()
  config = pretrain.get_config("mu")
  config.optim.warmup_steps = 10
  for assignment in args.overrides:
    override(config, assignment)
  b, t = config.data.batch_size, config.data.num_frames
  margin, spf = config.model.audio.margin_frames, 640
  corpus = loop.ensure_corpus(config.data.dir)
  ds = pipeline.make_dataset(corpus, "train", batch_size=b, num_frames=t, seed=0, patch_size=config.model.patch_size,
                             labels=("mouth",), audio_margin_frames=margin, process_index=0, process_count=1)
  iterator = pipeline.make_iterator(ds)
  graphdef, _ = jax.eval_shape(lambda: step_lib.init_state(config))
  state = jax.jit(lambda: step_lib.init_state(config)[1])()
  tx = step_lib.make_optimizer(config.optim, args.steps)
  projection = jax.random.normal(jax.random.key(5), (3, 32)) * 3.0

  def embed(x):  # Fixed random Fourier features: close states -> close tokens.
    h = x @ projection
    return jnp.concatenate([jnp.cos(h), jnp.sin(h)], -1)

  def loss_fn(params, frozen, batch, key):
    model = nnx.merge(graphdef, params, frozen)
    inputs, aux = step_lib.model_inputs(key, batch, config)
    out = model(inputs, num_frames=t)
    video, audio = out["z_voc"], out["audio_tokens"]
    if args.side == "video":
      video = embed(batch["labels/mouth"].reshape(b * t, 3))
    if args.side == "audio":
      frames = batch["audio"].reshape(b, t + 2 * margin, spf)[:, margin:margin + t]
      loudness = ((jnp.log(jnp.mean(frames ** 2, -1) + 1e-8) + 10.0) / 5.0).reshape(b * t, 1)
      audio = embed(jnp.tile(loudness, (1, 3)))
    return losses.info_nce(video, audio, aux["clip_ids"], aux["frame_ids"], out["logit_scale"],
                           config.loss.neighbour_frames)

  @jax.jit
  def train(state, batch):
    key = jax.random.fold_in(jax.random.key(0), state.step)
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, state.frozen, batch, key)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                         opt_state=opt_state), loss, metrics

  start = time.time()
  for i in range(1, args.steps + 1):
    state, loss, metrics = train(state, next(iterator))
    if i % 50 == 0:
      print(f"side={args.side} step {i}: contrastive loss {float(loss):.3f}, retrieval "
            f"{float(metrics['con_acc_v2a']):.3f} ({time.time() - start:.0f} s)", flush=True)


if __name__ == "__main__":
  main()

"""How fast can the `mu` frame encoder learn to see the mouth? A supervised check of the bypass-2 view.

    python experiments/probe_mouth.py --view=mouth [--steps=800]

Trains the `mu` FrameEncoder + a linear layer on z_voc to regress the synthetic corpus's true mouth state
(open, width, round) with MSE, from scratch, and prints R^2 on held-out identities every 100 steps. The view is
what the encoder sees of each frame:
  all     every patch of the clean frame
  face    bypass 2 without the mouth weight: jittered frame, 25 % of patches, face patches 8x likelier
  mouth   bypass 2 as configured: as `face`, plus mouth-region patches `masking.mouth_bias` times likelier
This isolates the encoder from the contrastive objective: if supervision cannot make z_voc follow the mouth in a
few hundred steps, InfoNCE against a from-scratch audio branch will not either. Results: BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import pretrain  # noqa: E402
from experiments.diagnose_sync import override  # noqa: E402
from synclipmae import masking  # noqa: E402
from synclipmae.data import pipeline  # noqa: E402
from synclipmae.train import loop  # noqa: E402
from synclipmae.train import step as step_lib  # noqa: E402


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--view", choices=("all", "face", "mouth"), required=True)
  parser.add_argument("--steps", type=int, default=800)
  parser.add_argument("--lr", type=float, default=1e-3)
  parser.add_argument("overrides", nargs="*", help="config overrides, e.g. model.encoder.stem=conv")
  args = parser.parse_args()
  config = pretrain.get_config("mu")
  for assignment in args.overrides:
    override(config, assignment)
  b, t, p = config.data.batch_size, config.data.num_frames, config.model.patch_size
  n, num_patches = b * t, (config.model.image_size // p) ** 2
  num_keep = masking.num_kept(num_patches, config.masking.mask_ratio)
  mouth_bias = config.masking.mouth_bias if args.view == "mouth" else 1.0
  corpus = loop.ensure_corpus(config.data.dir)

  def batches(split, seed):
    return pipeline.make_iterator(pipeline.make_dataset(
        corpus, split, batch_size=b, num_frames=t, seed=seed, patch_size=p, labels=("mouth",),
        process_index=0, process_count=1))

  train_batches, heldout = batches("train", 0), batches("heldout", 1)
  heldout = [next(heldout) for _ in range(4)]
  encoder = step_lib.create_model(config).encoder
  readout = nnx.Linear(config.model.prompt_dim, 3, rngs=nnx.Rngs(1))
  graphdef, params = nnx.split(nnx.List([encoder, readout]), nnx.Param)
  tx = optax.adamw(optax.warmup_cosine_decay_schedule(0.0, args.lr, 30, args.steps), b1=0.9, b2=0.95,
                   weight_decay=0.05)
  opt_state = tx.init(params)

  def errors(params, batch, key):
    enc, lin = nnx.merge(graphdef, params)
    frames = batch["video"].reshape(n, *batch["video"].shape[2:]).astype(jnp.float32) / 255.0
    keep = None
    if args.view != "all":
      k_keep, k_jitter = jax.random.split(key)
      keep = masking.face_aware_keep(k_keep, batch["face_patches"].reshape(n, -1), num_keep,
                                     config.masking.face_bias, batch["mouth_patches"].reshape(n, -1), mouth_bias)
      frames = masking.photometric_jitter(k_jitter, frames, **config.masking.jitter,
                                          frames_per_draw=t if config.masking.jitter_per_clip else 1)
    target = batch["labels/mouth"].reshape(n, 3)
    return (lin(enc(frames, keep)["z_voc"]) - target) ** 2, target

  @jax.jit
  def train(params, opt_state, batch, key):
    loss, grads = jax.value_and_grad(lambda q: errors(q, batch, key)[0].mean(0).sum())(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  @jax.jit
  def heldout_errors(params, batch):
    err, target = errors(params, batch, jax.random.key(0))
    return err.mean(0), target.var(0)

  start = time.time()
  for i in range(1, args.steps + 1):
    params, opt_state, loss = train(params, opt_state, next(train_batches), jax.random.key(i))
    if i % 100 == 0:
      results = jax.device_get([heldout_errors(params, h) for h in heldout])
      r2 = 1 - np.mean([mse for mse, _ in results], 0) / np.mean([var for _, var in results], 0)
      print(f"view={args.view} step {i}: train MSE {float(loss):.4f}, held-out R^2 open {r2[0]:.3f} "
            f"width {r2[1]:.3f} round {r2[2]:.3f} ({time.time() - start:.0f} s)", flush=True)


if __name__ == "__main__":
  main()

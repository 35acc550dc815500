"""How well, and how fast, can the `mu` frame encoder learn a factor when it is told the answer? A supervised ceiling.

    python experiments/probe_supervised.py --factors=mouth --view=mouth [--steps=800] [overrides ...]
    python experiments/probe_supervised.py --factors=pose,blink,expression --steps=1050 data.dir=runs/demo/corpus
    python experiments/probe_supervised.py --variant=tiny --factors=pose,blink,expression data.dir=runs/demo/corpus
    python experiments/probe_supervised.py --encoder=cnn --view=all --factors=expression data.dir=runs/demo/corpus
    python experiments/probe_supervised.py --factors=pose,blink,expression --steps=3000 data.dir=runs/demo/corpus \
        model.encoder.amb_readout=grid

Trains the `mu` (or --variant's) FrameEncoder + one linear layer on a prompt token (z_voc for the mouth, z_amb for
the ambient factors) from scratch to predict the synthetic corpus's true factors, and prints, every 100 steps, the
score on the validation identities: R^2 per column for mouth (open, width, round), pose (tx, ty, rot, scale) and
blink, accuracy for expression (5 classes; per frame, and per clip window from the window's mean logits).
Regression targets are standardised with the training batches' statistics so that every column weighs the same;
expression is a cross-entropy. Several factors train one shared encoder (summed losses), as z_amb must hold them
together. `--encoder=cnn` trains a small convnet on the whole clean frame instead (`ConvEncoder`): a yardstick of
what the pixels of unseen identities hold, against which the ViT's ceiling is read; the override
`model.encoder.amb_readout=grid` adds to z_amb a linear map of the patch grid (synclipmae/models/encoder.py), a
readout that keeps where each feature is.

The view is what the encoder sees of each frame:
  all     every patch of the clean frame
  face    bypass 2 without the mouth weight: jittered frame, 25 % of patches, face patches 8x likelier
  mouth   bypass 2 as configured: as `face`, plus mouth-region patches `masking.mouth_bias` times likelier
  motion  the deterministic bypass-2 view inference uses (`masking.view_keep`: the heaviest patches), clean frame
The encoder gets the mouth fractions, so with `model.encoder.mouth_private` (the mu default) z_amb cannot read the
mouth region in any view, exactly as in pretraining.

Why: it separates "the encoder cannot see it" from "pretraining does not ask for it". If supervision cannot make a
token follow a factor in the main job's number of steps, no self-supervised term will; if it can, the gap to
pretraining's probes is the objective's. Results: BENCHMARKS.md.
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

# factor: (token, output columns, "r2" | "class")
FACTORS = {"mouth": ("z_voc", 3, "r2"), "pose": ("z_amb", 4, "r2"), "blink": ("z_amb", 1, "r2"),
           "expression": ("z_amb", 5, "class")}


class ConvEncoder(nnx.Module):
  """A small convnet (5 3x3 layers, stride 8 in all) on the whole frame: a yardstick of whether a factor can be read
  from the pixels of unseen identities at all, by an encoder built for local detail rather than for the main job."""

  def __init__(self, image_size: int, dim: int, rngs: nnx.Rngs, pool: bool = False):
    """pool: average the last feature map over positions before the linear layer (a readout that forgets where
    each feature is), instead of flattening it."""
    widths = ((3, 32, 1), (32, 64, 2), (64, 64, 1), (64, 128, 2), (128, 128, 2))
    self.convs = nnx.List([nnx.Conv(i, o, (3, 3), strides=s, rngs=rngs) for i, o, s in widths])
    self.pool = pool
    self.out = nnx.Linear(128 if pool else 128 * (image_size // 8) ** 2, dim, rngs=rngs)

  def __call__(self, frames, keep, mouth):
    del keep, mouth  # The whole frame; one code serves as every token.
    x = frames - 0.5
    for conv in self.convs:
      x = jax.nn.gelu(conv(x))
    z = self.out(x.mean((1, 2)) if self.pool else x.reshape(x.shape[0], -1))
    return {"z_voc": z, "z_amb": z}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--variant", default="mu", help="the configs/pretrain.py variant whose encoder learns")
  parser.add_argument("--factors", default="mouth", help=f"comma-separated, from {list(FACTORS)}")
  parser.add_argument("--view", choices=("all", "face", "mouth", "motion"), default="mouth")
  parser.add_argument("--encoder", choices=("vit", "cnn"), default="vit",
                      help="vit: the variant's FrameEncoder; cnn: a small convnet on the whole clean frame")
  parser.add_argument("--cnn_pool", action="store_true", help="cnn: average its map over positions, not flatten")
  parser.add_argument("--steps", type=int, default=800)
  parser.add_argument("--lr", type=float, default=1e-3)
  parser.add_argument("--split", default="validation", help="where the scores are measured")
  parser.add_argument("overrides", nargs="*", help="config overrides, e.g. model.encoder.stem=conv")
  args = parser.parse_intermixed_args()  # Overrides may come before or after the flags.
  factors = [f for f in args.factors.split(",") if f]
  unknown = [f for f in factors if f not in FACTORS]
  if unknown:
    sys.exit(f"probe_supervised: unknown factors {unknown}; choose from {list(FACTORS)}")
  if args.encoder == "cnn" and args.view != "all":
    sys.exit("probe_supervised: --encoder=cnn sees the whole clean frame; pass --view=all")
  config = pretrain.get_config(args.variant)
  for assignment in args.overrides:
    override(config, assignment)
  b, t, p = config.data.batch_size, config.data.num_frames, config.model.patch_size
  n, num_patches = b * t, (config.model.image_size // p) ** 2
  num_keep = masking.num_kept(num_patches, config.masking.mask_ratio)
  mouth_bias = 1.0 if args.view == "face" else config.masking.mouth_bias
  corpus = loop.ensure_corpus(config.data.dir)

  def batches(split, seed):
    return pipeline.make_iterator(pipeline.make_dataset(
        corpus, split, batch_size=b, num_frames=t, seed=seed, patch_size=p, labels=tuple(factors),
        process_index=0, process_count=1))

  train_batches, evaluation = batches("train", 0), batches(args.split, 1)
  evaluation = [next(evaluation) for _ in range(16)]
  # Standardisation of the regression targets from a few training batches (fixed for the run).
  first = [next(train_batches) for _ in range(4)]
  stats = {}
  for f in factors:
    if FACTORS[f][2] == "r2":
      y = np.concatenate([np.asarray(x[f"labels/{f}"]).reshape(n, -1) for x in first])
      stats[f] = (jnp.asarray(y.mean(0)), jnp.asarray(y.std(0) + 1e-6))
  rngs = nnx.Rngs(1)
  encoder = (step_lib.create_model(config).encoder if args.encoder == "vit"
             else ConvEncoder(config.model.image_size, config.model.prompt_dim, rngs, pool=args.cnn_pool))
  heads = nnx.List([nnx.Linear(config.model.prompt_dim, FACTORS[f][1], rngs=rngs) for f in factors])
  graphdef, params = nnx.split(nnx.List([encoder, heads]), nnx.Param)
  warmup = min(30, args.steps // 2)
  tx = optax.adamw(optax.warmup_cosine_decay_schedule(0.0, args.lr, warmup, max(args.steps, warmup + 1)),
                   b1=0.9, b2=0.95, weight_decay=0.05)
  opt_state = tx.init(params)

  def predict(params, batch, key):
    """-> {factor: [n, columns]} predictions in standardised units (logits for classes)."""
    enc, heads = nnx.merge(graphdef, params)
    frames = batch["video"].reshape(n, *batch["video"].shape[2:]).astype(jnp.float32) / 255.0
    face, mouth = batch["face_patches"].reshape(n, -1), batch["mouth_patches"].reshape(n, -1)
    if args.view == "all":
      keep = None
    elif args.view == "motion" or key is None:  # Evaluation of the random views: the deterministic one too.
      keep = masking.face_aware_keep(None, face, num_keep, config.masking.face_bias, mouth, mouth_bias)
    else:
      k_keep, k_jitter = jax.random.split(key)
      keep = masking.face_aware_keep(k_keep, face, num_keep, config.masking.face_bias, mouth, mouth_bias)
      frames = masking.photometric_jitter(k_jitter, frames, **config.masking.jitter,
                                          frames_per_draw=t if config.masking.jitter_per_clip else 1)
    z = enc(frames, keep, mouth)
    return {f: head(z[FACTORS[f][0]]) for f, head in zip(factors, heads)}

  def loss_fn(params, batch, key):
    outputs, total = predict(params, batch, key), 0.0
    for f in factors:
      y = batch[f"labels/{f}"].reshape(n, -1)
      if FACTORS[f][2] == "r2":
        total = total + jnp.mean(jnp.square(outputs[f] - (y - stats[f][0]) / stats[f][1]))
      else:
        total = total + jnp.mean(optax.softmax_cross_entropy_with_integer_labels(outputs[f], y[:, 0]))
    return total

  @jax.jit
  def train(params, opt_state, batch, key):
    loss, grads = jax.value_and_grad(loss_fn)(params, batch, key)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  predict_eval = jax.jit(lambda params, batch: predict(params, batch, None))

  def scores(params) -> str:
    out = []
    for f in factors:
      pred = np.concatenate([np.asarray(predict_eval(params, x)[f]) for x in evaluation])
      y = np.concatenate([np.asarray(x[f"labels/{f}"]).reshape(n, -1) for x in evaluation])
      if FACTORS[f][2] == "r2":
        pred = pred * np.asarray(stats[f][1]) + np.asarray(stats[f][0])
        r2 = 1 - ((pred - y) ** 2).mean(0) / np.maximum(y.var(0), 1e-12)
        out.append(f"{f} R^2 " + " / ".join(f"{v:.2f}" for v in r2) + f" (mean {r2.mean():.2f})")
      else:
        # Per frame, and per clip window (mean logits over its t frames: the clip-level protocol of `probe`).
        window = pred.reshape(-1, t, pred.shape[-1]).mean(1).argmax(-1) == y.reshape(-1, t)[:, 0]
        out.append(f"{f} acc {np.mean(pred.argmax(-1) == y[:, 0]):.2f} (per window {window.mean():.2f})")
    return "; ".join(out)

  start = time.time()
  for i in range(1, args.steps + 1):
    batch = first[i - 1] if i <= len(first) else next(train_batches)
    params, opt_state, loss = train(params, opt_state, batch, jax.random.key(i))
    if i % 100 == 0 or i == args.steps:
      print(f"view={args.view} step {i}: train loss {float(loss):.4f}; {args.split}: {scores(params)} "
            f"({time.time() - start:.0f} s)", flush=True)


if __name__ == "__main__":
  main()

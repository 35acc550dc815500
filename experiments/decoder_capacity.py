"""Can the decoder draw a frame from codes? Train it alone, conditioned on the ground-truth factors.

    python experiments/decoder_capacity.py [--visible=none|context] [--steps=600] [--mouth_weight=0] \
        [model.decoder.depth=2 ...]

The decoder (the config's, `mu` by default) is conditioned on linear maps of the synthetic corpus's true
factors instead of tokens: identity (the identity vector), ambient (pose, blink, expression x intensity) and mouth
(open, width, round), in the identity / ambient / driving slots. --visible=none draws the whole frame from them;
--visible=context also shows it a quarter of the frame's own patches, never from the mouth region (a stand-in
linear patch embedding), so only the mouth must come from a code. Every 100 steps it prints the loss on held-back
batches (all patches for none, mouth-region patches for context) with the true codes and with each slot taken
from another clip. If a slot's swap does not raise the loss, the decoder has not learnt to use that code, even
though it is exact: then no encoder token in that slot can be shaped by reconstruction either.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # The repo root, for configs/.

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

from configs import pretrain  # noqa: E402
from synclipmae import losses, masking  # noqa: E402
from synclipmae.data import pipeline  # noqa: E402
from synclipmae.data.corpus import Corpus  # noqa: E402
from synclipmae.models.decoder import Decoder  # noqa: E402

LABELS = ("mouth", "pose", "blink", "expression", "expression_intensity")
B, T = 8, 16


class CodeDecoder(nnx.Module):
  """The decoder with linear maps from true factors to its three conditioning slots."""

  def __init__(self, cfg, identity_dim: int, *, rngs: nnx.Rngs):
    self.decoder = Decoder(cfg, rngs=rngs)
    self.identity = nnx.Linear(identity_dim, cfg.prompt_dim, rngs=rngs)
    self.ambient = nnx.Linear(10, cfg.prompt_dim, rngs=rngs)
    self.mouth = nnx.Linear(3, cfg.prompt_dim, rngs=rngs)
    self.embed = nnx.Linear(cfg.patch_size ** 2 * 3, cfg.encoder.width, rngs=rngs)

  def __call__(self, identity, ambient, mouth, target, keep):
    cond = jnp.stack([self.identity(identity), self.ambient(ambient), self.mouth(mouth)], axis=1)
    if keep is None:
      return self.decoder(None, None, cond)[0]
    return self.decoder(self.embed(jnp.take_along_axis(target, keep[..., None], axis=1)), keep, cond)[0]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data", default="runs/demo/corpus")
  parser.add_argument("--variant", default="mu")
  parser.add_argument("--visible", choices=("none", "context"), default="none")
  parser.add_argument("--steps", type=int, default=600)
  parser.add_argument("--mouth_weight", type=float, default=0.0)
  parser.add_argument("--lr", type=float, default=3e-3)
  parser.add_argument("overrides", nargs="*", help="model config overrides, e.g. model.decoder.depth=2")
  args = parser.parse_args()
  cfg = pretrain.get_config(args.variant)
  for override in args.overrides:
    key, value = override.split("=")
    *parents, leaf = key.split(".")
    node = cfg
    for name in parents:
      node = node[name]
    node[leaf] = value == "True" if isinstance(node[leaf], bool) else type(node[leaf])(value)
  cfg = cfg.model
  corpus = Corpus(args.data)
  vectors = {s: np.asarray(v, np.float32) for s, v in corpus.info["identity_vectors"].items()}
  all_vectors = np.stack(list(vectors.values()))
  v_mean, v_std = all_vectors.mean(0), all_vectors.std(0) + 1e-3
  p = cfg.patch_size
  num_patches = (cfg.image_size // p) ** 2
  num_keep = masking.num_kept(num_patches, 0.75)

  def batches(split, seed):
    ds = pipeline.make_dataset(corpus, split, batch_size=B, num_frames=T, seed=seed, patch_size=p, labels=LABELS,
                               process_index=0, process_count=1)
    for i, b in enumerate(pipeline.make_iterator(ds)):
      n = B * T
      identity = (np.stack([vectors[corpus.speakers[s]] for s in np.repeat(b["speaker"], T)]) - v_mean) / v_std
      pose = (b["labels/pose"].reshape(n, 4) - (0, 0, 0, 1)) / (0.04, 0.04, 0.07, 0.05)
      expression = np.eye(5)[b["labels/expression"].reshape(n)] * b["labels/expression_intensity"].reshape(n, 1)
      ambient = np.concatenate([pose, b["labels/blink"].reshape(n, 1), expression], 1)
      mouth_patch = b["mouth_patches"].reshape(n, num_patches) > 0
      frames = b["video"].reshape(n, cfg.image_size, cfg.image_size, 3).astype(np.float32) / 255
      keep = None
      weights = np.ones((n, num_patches), np.float32)
      if args.visible == "context":  # A random quarter of the patches outside the mouth region.
        scores = np.random.default_rng([seed, i]).random((n, num_patches)) - 10.0 * mouth_patch
        keep = np.sort(np.argsort(-scores, axis=1)[:, :num_keep], axis=1).astype(np.int32)
        np.put_along_axis(weights, keep, 0.0, axis=1)
      yield (jnp.asarray(identity, jnp.float32), jnp.asarray(ambient, jnp.float32),
             jnp.asarray(b["labels/mouth"].reshape(n, 3), jnp.float32), masking.patchify(jnp.asarray(frames), p),
             None if keep is None else jnp.asarray(keep), weights, mouth_patch)

  model = CodeDecoder(cfg, all_vectors.shape[1], rngs=nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, optax.adamw(args.lr, b1=0.9, b2=0.95, weight_decay=0.05), wrt=nnx.Param)

  @nnx.jit
  def train_step(model, optimizer, identity, ambient, mouth, target, keep, weights):
    def loss_fn(m):
      return losses.reconstruction_loss(m(identity, ambient, mouth, target, keep), target, weights, True)
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss

  @nnx.jit
  def swapped_losses(model, identity, ambient, mouth, target, keep, weights):
    other = lambda x, clips=1: jnp.roll(x, clips * T, axis=0)  # Same time, another clip of the batch.
    loss = lambda i, a, m: losses.reconstruction_loss(model(i, a, m, target, keep), target, weights, True)
    return {"true codes": loss(identity, ambient, mouth), "ambient swapped": loss(identity, other(ambient), mouth),
            "mouth swapped": loss(identity, ambient, other(mouth)), "identity swapped": loss(other(identity), ambient,
                                                                                         mouth)}

  train, held = batches("train", 0), batches("validation", 1)
  start = time.time()
  print(f"decoder {cfg.decoder.to_dict()}, visible={args.visible}, mouth_weight={args.mouth_weight}")
  for step in range(1, args.steps + 1):
    identity, ambient, mouth, target, keep, weights, mouth_patch = next(train)
    weights = weights * (1.0 + args.mouth_weight * mouth_patch)
    loss = train_step(model, optimizer, identity, ambient, mouth, target, keep, jnp.asarray(weights))
    if step % 100 == 0 or step == args.steps:
      identity, ambient, mouth, target, keep, weights, mouth_patch = next(held)
      scored = weights * mouth_patch if args.visible == "context" else weights
      result = swapped_losses(model, identity, ambient, mouth, target, keep, jnp.asarray(scored))
      print(f"step {step} ({time.time() - start:.0f} s) train loss {float(loss):.3f}; held-out "
            + ", ".join(f"{k} {float(v):.3f}" for k, v in result.items()), flush=True)


if __name__ == "__main__":
  main()

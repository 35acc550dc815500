"""Which conditioning tokens does the decoder use? Reconstruction loss with each slot swapped for another clip's.

    python experiments/decoder_usage.py --workdir=runs/demo/mu [--split=validation] [--batches=4]

Runs the training forward pass (the run's own masking, jitter, identity sources) on batches of a split and
reports the reconstruction loss of the video-driven pass, over all target patches and over the mouth-region
patches, when the identity, ambient or driving slot holds the token of another clip (rolled by one clip in the
batch), and with the audio token driving. A slot whose swap leaves the loss unchanged carries nothing the decoder
uses. The issue that introduced the factorised recipe quotes these numbers for the old one.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from synclipmae import losses
from synclipmae.data import pipeline
from synclipmae.data.corpus import Corpus
from synclipmae.inference import load_pretrained
from synclipmae.train import step as step_lib


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--split", default="validation")
  parser.add_argument("--batches", type=int, default=4)
  args = parser.parse_args()
  pretrained = load_pretrained(args.workdir)
  config, model = pretrained.run_config, pretrained.model
  corpus = Corpus(config.data.dir)
  ds = pipeline.make_dataset(corpus, args.split, batch_size=config.data.batch_size,
                             num_frames=config.data.num_frames, seed=1, patch_size=config.model.patch_size,
                             audio_margin_frames=config.model.audio.margin_frames, process_index=0, process_count=1,
                             identity_pairs=config.data.get("identity_pairs", False))
  t = config.data.num_frames

  @jax.jit
  def losses_of(batch, key):
    inputs, aux = step_lib.model_inputs(key, batch, config)
    out = model(inputs, num_frames=t)
    n = out["z_id"].shape[0]
    roll = lambda x: jnp.roll(x, t, axis=0)  # The same time of the next clip in the batch.
    ident, amb, voc = out["z_id_cond"], out["z_amb_cond"], out["z_voc"]
    variants = {"as trained": (ident, amb, voc), "driving = audio token": (ident, amb, out["audio_tokens"]),
                "driving of another clip": (ident, amb, roll(voc)), "driving = 0": (ident, amb, 0 * voc),
                "ambient of another clip": (ident, roll(amb), voc), "identity of another clip": (roll(ident), amb, voc)}
    seen, keep = out["patches_uniform"], inputs["keep_uniform"]
    if model.decoder_visible == "identity_source":
      seen, keep = seen[inputs["id_source"]], keep[inputs["id_source"]]
    mouth = (inputs["mouth_patches"] > 0) & (aux["masked"] > 0)
    result = {}
    for name, (a, b, c) in variants.items():
      recon = model.decode(seen, keep, jnp.stack([a, b, c], axis=1))
      result[name] = (losses.reconstruction_loss(recon, aux["target"], aux["masked"], config.loss.norm_pix),
                      losses.reconstruction_loss(recon, aux["target"], mouth, config.loss.norm_pix))
    del n
    return result

  totals: dict[str, np.ndarray] = {}
  iterator = pipeline.make_iterator(ds)
  for i in range(args.batches):
    result = jax.device_get(losses_of(next(iterator), jax.random.key(i)))
    for name, value in result.items():
      totals[name] = totals.get(name, 0) + np.asarray(value) / args.batches
  print(f"{args.workdir} (step {pretrained.step}), {args.split}, {args.batches} batches: reconstruction loss "
        "(video-driven pass)")
  print("| conditioning | all target patches | mouth-region patches |\n|---|---|---|")
  for name, (whole, mouth) in totals.items():
    print(f"| {name} | {whole:.4f} | {mouth:.4f} |")


if __name__ == "__main__":
  main()

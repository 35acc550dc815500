"""`synclipmae precompute-audio --config=configs/pretrain.py:VARIANT [--config.x=y ...] [--output=DIR]`.

Runs the frozen audio encoder the config names (wav2vec 2.0 with the checkpoint at model.audio.wav2vec2.path)
once over every clip of the corpus and stores the per-video-frame features the adapter reads
(`synclipmae.data.audio_features`). Then train with the same config plus `--config.data.audio_features=DIR`: the
train step reads those features instead of running the encoder on every window.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import ml_collections
import numpy as np
from absl import flags
from ml_collections import config_flags


def define_flags() -> None:
  config_flags.DEFINE_config_file("config", None, "Config file and variant, e.g. configs/pretrain.py:base.",
                                  lock_config=True)
  flags.DEFINE_string("output", None, "Features directory (default: DATA_DIR/audio_features).")
  flags.DEFINE_list("splits", None, "Splits to compute (default: the config's train and eval splits).")


def frame_feature_fn(config: ml_collections.ConfigDict) -> Callable[[np.ndarray], np.ndarray]:
  """audio [B, S] -> per-video-frame features [B, V, L, C] of the config's frozen encoder, with its weights (jitted;
  one compile per distinct length)."""
  import jax
  from flax import nnx

  from synclipmae.models import audio as audio_lib
  from synclipmae.pretrained import wav2vec2 as wav2vec2_loader
  w = config.model.audio.wav2vec2
  make = lambda: audio_lib.make_audio_encoder(config.model.audio, rngs=nnx.Rngs(config.seed))
  if w.path:
    encoder = nnx.eval_shape(make)  # Shapes only: every parameter comes from the checkpoint.
    wav2vec2_loader.load_into(encoder, w.path)
  elif w.get("allow_random"):
    encoder = nnx.merge(nnx.graphdef(nnx.eval_shape(make)), jax.jit(lambda: nnx.state(make()))())
  else:
    raise ValueError("model.audio.wav2vec2.path is empty: point it at a Hugging Face wav2vec 2.0 checkpoint "
                     "directory (or set model.audio.wav2vec2.allow_random=True for a smoke test)")
  graphdef, state = nnx.split(encoder)
  run = jax.jit(lambda state, audio: audio_lib.pool_video_frames(nnx.merge(graphdef, state)(audio)))
  return lambda audio: run(state, audio)


def main(argv: Sequence[str]) -> None:
  del argv
  f = flags.FLAGS
  if f.config is None:
    raise flags.ValidationError("--config is required, e.g. --config=configs/pretrain.py:base")
  from synclipmae.data import audio_features
  from synclipmae.data.corpus import Corpus
  config = f.config
  settings = audio_features.describe(config)
  corpus = Corpus(config.data.dir)
  splits = f.splits or list(dict.fromkeys([config.data.train_split, config.data.eval_split]))
  output = f.output or os.path.join(config.data.dir, "audio_features")
  info = audio_features.write_features(corpus, splits, output, frame_feature_fn(config), settings)
  counts = ", ".join(f"{split}: {v['num_clips']} clips" for split, v in info["splits"].items())
  print(f"wrote {output} ({counts}); train with --config.data.audio_features={output}")

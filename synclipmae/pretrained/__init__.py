"""Pretrained weights: reading checkpoint files and loading them into the model's parts.

`load_pretrained(model, config)` is the one place a run starts from pretrained weights: the frozen wav2vec 2.0
audio encoder (`config.model.audio.wav2vec2.path`) and the frame encoder's ViT backbone (`config.init.encoder`).
The trainer calls it once, on a fresh model, before the first step; a resumed run takes everything from its
checkpoint instead.
"""

from __future__ import annotations

import ml_collections
from flax import nnx


def load_pretrained(model: nnx.Module, config: ml_collections.ConfigDict) -> list[str]:
  """Loads the pretrained parts the config names into `model` (a SyncLipMAE), in place; returns what it loaded."""
  loaded = []
  audio = config.model.audio
  if audio.encoder == "wav2vec2" and audio.get("wav2vec2", {}).get("path"):
    from synclipmae.pretrained import wav2vec2
    wav2vec2.load_into(model.audio_encoder, audio.wav2vec2.path)
    loaded.append(f"audio encoder <- {audio.wav2vec2.path}")
  init = config.get("init", {})
  if init.get("encoder"):
    from synclipmae.pretrained import vit
    summary = vit.load_into(model.encoder, init.encoder)
    loaded.append(f"frame encoder backbone <- {init.encoder} ({summary})")
  return loaded

"""SyncLipMAE: the frame encoder, the audio branch and the shared decoder, wired for one training step.

The model knows nothing of masking policies, augmentation or losses: the masks (kept-patch indices), the
jittered frames and the identity-shuffling indices come in as inputs, and every intermediate a loss, probe or
notebook needs comes out in a dict. Shapes are static: N = B*T frames (frame n = clip n // T, time n % T),
K kept patches per frame, equal for both bypasses so they share one encoder call.

For the trainer: the whole model state is nnx.Param (fixed position embeddings and the mel filterbank are
compile-time constants, not state). Differentiate and optimise `model.trainable_filter()` only: a frozen audio
encoder (wav2vec 2.0) gets stop_gradient here, but AdamW weight decay would still move its weights.
`logit_scale` is the raw log inverse temperature; clamping it (CLIP: at log 100) is the loss's business.
"""

from __future__ import annotations

import collections
import math

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from synclipmae.models import audio as audio_lib
from synclipmae.models import vit
from synclipmae.models.decoder import Decoder, denormalize
from synclipmae.models.encoder import FrameEncoder


ENCODER_EXTRAS = ("prompt_tokens", "head_id", "head_voc", "head_amb")  # Encoder params outside the plain ViT.


def param_counts(model: nnx.Module) -> dict[str, int]:
  """Parameter counts of a SyncLipMAE by part; works on an abstract model from `nnx.eval_shape` (no allocation).

  Keys: encoder, encoder_backbone (the plain ViT: encoder without prompt tokens and heads), audio_encoder,
  audio_adapter, decoder, logit_scale, total.
  """
  counts = collections.Counter()
  for path, variable in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    size = math.prod(variable.shape)
    counts[path[0]] += size
    counts["total"] += size
    if path[0] == "encoder" and path[1] not in ENCODER_EXTRAS:
      counts["encoder_backbone"] += size
  return dict(counts)


COMPUTE_DTYPES = ("float32", "bfloat16")
# Which bypass-1 patches the decoder sees (decoder.py): the frame's own (paper), those of the frame that gave z_id,
# or none.
DECODER_VISIBLE = ("target", "identity_source", "none")


def compute_dtype(name) -> jnp.dtype:
  """The layers' computation dtype (`model.dtype`). Parameters, optimiser state, the log-mel front end, every
  output of the model and so every loss stay float32: bfloat16 only changes what the matmuls and activations use."""
  try:
    dtype = jnp.dtype(name)
  except TypeError:
    dtype = None
  if dtype is None or dtype.name not in COMPUTE_DTYPES:
    raise ValueError(f"model.dtype={name!r} is not supported; choose one of {COMPUTE_DTYPES}")
  return dtype


class SyncLipMAE(nnx.Module):
  """Built from the model config (`configs/pretrain.py:model_config`): `SyncLipMAE(cfg, rngs=nnx.Rngs(0))`."""

  def __init__(self, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs, dtype=None):
    dtype = compute_dtype(dtype or cfg.get("dtype", "float32"))
    self.encoder = FrameEncoder(cfg, rngs=rngs, dtype=dtype)
    self.audio_encoder = audio_lib.make_audio_encoder(cfg.audio, rngs=rngs, dtype=dtype)
    self.audio_adapter = audio_lib.AudioAdapter(cfg, self.audio_encoder.hidden_size,
                                                self.audio_encoder.num_layers, rngs=rngs, dtype=dtype)
    self.decoder = Decoder(cfg, rngs=rngs, dtype=dtype)
    self.decoder_visible = cfg.decoder.get("visible", "target")
    if self.decoder_visible not in DECODER_VISIBLE:
      raise ValueError(f"model.decoder.visible={self.decoder_visible!r}: expected one of {DECODER_VISIBLE}")
    # Inverse temperature of the contrastive loss (CLIP): exp(logit_scale) multiplies cosine similarities.
    self.logit_scale = nnx.Param(jnp.asarray(math.log(1 / 0.07), jnp.float32))

  def trainable_filter(self) -> nnx.filterlib.Filter:
    """The params the optimiser updates: every nnx.Param except those of a frozen audio encoder."""
    if self.audio_encoder.frozen:
      return nnx.All(nnx.Param, nnx.Not(nnx.PathContains("audio_encoder")))
    return nnx.Param

  # Inference helpers (evaluation, notebooks, precomputing features).

  def encode_frames(self, frames: jax.Array, keep: jax.Array | None = None, mouth: jax.Array | None = None
                    ) -> dict[str, jax.Array]:
    """frames [N,H,W,3] in [0,1] -> {"z_id","z_voc","z_amb": [N,Dp], "patches": [N,K,E]}; all patches if keep=None.

    mouth [N,P]: per-patch mouth fractions, needed by an encoder with `mouth_private` (FrameEncoder)."""
    return self.encoder(frames, keep, mouth)

  def encode_audio(self, audio: jax.Array, num_frames: int) -> jax.Array:
    """audio [B, (T + 2*margin) * 640] -> audio tokens [B, T, Dp], T = num_frames."""
    hidden = self.audio_encoder(audio)
    if self.audio_encoder.frozen:
      hidden = [jax.lax.stop_gradient(h) for h in hidden]
    tokens = self.audio_adapter(hidden)
    if tokens.shape[1] != num_frames:
      raise ValueError(f"audio of {audio.shape[1]} samples gives {tokens.shape[1]} frames, expected {num_frames} "
                       f"(it must cover num_frames + 2*{self.audio_adapter.margin} video frames of 640 samples)")
    return tokens

  def audio_frame_features(self, audio: jax.Array) -> jax.Array:
    """audio [B, V * 640] -> the frozen encoder's per-video-frame features [B, V, L, C] (what gets precomputed)."""
    return jax.lax.stop_gradient(self.audio_adapter.pool(self.audio_encoder(audio)))

  def encode_audio_features(self, features: jax.Array, num_frames: int) -> jax.Array:
    """Precomputed per-video-frame features [B, T + 2*margin, L, C] -> audio tokens [B, T, Dp]."""
    if not self.audio_encoder.frozen:
      raise ValueError("precomputed audio features need a frozen audio encoder (model.audio.encoder='wav2vec2'); "
                       f"{type(self.audio_encoder).__name__} is trained with the model")
    tokens = self.audio_adapter.from_pooled(features)
    if tokens.shape[1] != num_frames:
      raise ValueError(f"audio features of {features.shape[1]} frames give {tokens.shape[1]} tokens, expected "
                       f"{num_frames} (they must cover num_frames + 2*{self.audio_adapter.margin} video frames)")
    return tokens

  def decode(self, patches: jax.Array | None, keep: jax.Array | None, cond: jax.Array) -> jax.Array:
    """patches [M,K,E], keep [M,K] (None, None for decoder.visible="none"), cond [M,3,Dp] (identity, ambient,
    driving) -> pixels [M, P, p*p*3]."""
    return self._decode(patches, keep, cond)[0]

  def _decode(self, patches, keep, cond):
    if self.decoder_visible == "none":
      patches = keep = None
    return self.decoder(patches, keep, cond)

  def render(self, patches: jax.Array | None, keep: jax.Array | None, cond: jax.Array, *, norm_pix: bool = True
             ) -> jax.Array:
    """`decode` as images [M, H, W, 3] in [0, 1]. A norm_pix-trained decoder needs `decoder.patch_stats` (its
    patches come without their mean and spread); norm_pix=False: the pixel head's output is the image."""
    pixels, stats = self._decode(patches, keep, cond)
    if norm_pix:
      if stats is None:
        raise ValueError("this decoder predicts per-patch normalised pixels (loss.norm_pix) without their statistics; "
                         "rendering images needs a model trained with model.decoder.patch_stats=True")
      pixels = denormalize(pixels, stats)
    grid = self.decoder.grid
    return vit.unpatchify(jnp.clip(pixels, 0.0, 1.0), self.encoder.patch_size, grid)

  def __call__(self, inputs: dict[str, jax.Array], *, num_frames: int) -> dict[str, jax.Array]:
    """One training forward pass; see the module docstring for the layout of N.

    inputs: "frames", "frames_jittered" [N,H,W,3]; "keep_uniform", "keep_face" int32 [N,K];
    "audio" [B, (T + 2*margin) * 640] or "audio_features" [B, T + 2*margin, L, C] (precomputed);
    "id_source" int32 [N] (the frame whose z_id, and with decoder.visible="identity_source" whose visible patches,
    condition frame n); optional "amb_source" int32 [N] (the frame whose z_amb conditions frame n; default: frame
    n itself); "mouth_patches" [N,P] per-patch mouth fractions (needed with encoder.mouth_private).
    """
    n = inputs["frames"].shape[0]
    mouth = inputs.get("mouth_patches")
    # Both bypasses in one encoder call: 1 = clean frames, uniform mask; 2 = jittered frames, face-aware mask.
    enc = self.encoder(jnp.concatenate([inputs["frames"], inputs["frames_jittered"]]),
                       jnp.concatenate([inputs["keep_uniform"], inputs["keep_face"]]),
                       None if mouth is None else jnp.concatenate([mouth, mouth]))
    z_id, patches = enc["z_id"][:n], enc["patches"][:n]
    z_voc, z_amb = enc["z_voc"][n:], enc["z_amb"][n:]

    if "audio_features" in inputs:  # Precomputed by the frozen encoder (synclipmae.data.audio_features).
      audio_tokens = self.encode_audio_features(inputs["audio_features"], num_frames).reshape(n, -1)
    else:
      audio_tokens = self.encode_audio(inputs["audio"], num_frames).reshape(n, -1)
    z_id_cond = z_id[inputs["id_source"]]
    z_amb_cond = z_amb[inputs["amb_source"]] if "amb_source" in inputs else z_amb

    # Both reconstructions in one decoder call: driving token z_voc (video-driven), then a (audio-driven).
    cond = jnp.concatenate([jnp.stack([z_id_cond, z_amb_cond, z_voc], axis=1),
                            jnp.stack([z_id_cond, z_amb_cond, audio_tokens], axis=1)])
    seen, keep = patches, inputs["keep_uniform"]
    if self.decoder_visible == "identity_source":  # The reference frame's patches, not the target's.
      seen, keep = seen[inputs["id_source"]], keep[inputs["id_source"]]
    recon, stats = self._decode(jnp.concatenate([seen, seen]), jnp.concatenate([keep, keep]), cond)
    return {"z_id": z_id, "z_voc": z_voc, "z_amb": z_amb, "audio_tokens": audio_tokens, "z_id_cond": z_id_cond,
            "z_amb_uniform": enc["z_amb"][:n],  # z_amb of the bypass-1 view: the second view of loss.amb_con.
            "z_amb_cond": z_amb_cond,
            "patches_uniform": patches, "recon_video": recon[:n], "recon_audio": recon[n:],
            "logit_scale": self.logit_scale[...],
            **({} if stats is None else {"stats_video": stats[:n], "stats_audio": stats[n:]})}

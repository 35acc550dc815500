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

from synclipmae import warp
from synclipmae.models import audio as audio_lib
from synclipmae.models import vit
from synclipmae.models.decoder import Decoder, denormalize
from synclipmae.models.encoder import FrameEncoder


# Encoder params outside the plain ViT.
ENCODER_EXTRAS = ("prompt_tokens", "head_id", "head_voc", "head_amb", "amb_grid")


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
    # model.ambient_pose (ours, issue 13): each frame's head pose (tx, ty, rot, log scale; synclipmae/warp.py) read
    # linearly off z_amb, for loss.amb_warp. Zero-initialised: training starts from "every frame in one pose".
    zeros = nnx.initializers.zeros_init()
    self.ambient_pose = (nnx.Linear(cfg.prompt_dim, 4, kernel_init=zeros, bias_init=zeros, rngs=rngs)
                         if cfg.get("ambient_pose", False) else None)
    # model.ambient_appearance = g > 0 (ours): with the pose, a g x g RGB image in face coordinates, linear in z_amb
    # (an active-appearance model: closed lids, raised brows are what a warp of another frame cannot draw).
    g = cfg.get("ambient_appearance", 0)
    if g and self.ambient_pose is None:
      raise ValueError("model.ambient_appearance needs model.ambient_pose=True (the appearance lives in face "
                       "coordinates, which the pose places in the frame)")
    self.ambient_appearance = (nnx.Linear(cfg.prompt_dim, g * g * 3, kernel_init=zeros, bias_init=zeros, rngs=rngs)
                               if g else None)
    # model.driving_appearance (ours): the driving token (z_voc, or the audio token) paints the mouth the same way,
    # one head for both passes like the shared decoder: a reconstruction signal that reaches the driving token.
    if cfg.get("driving_appearance", False) and not g:
      raise ValueError("model.driving_appearance needs model.ambient_appearance > 0 (the appearance grid size)")
    self.driving_appearance = (nnx.Linear(cfg.prompt_dim, g * g * 3, kernel_init=zeros, bias_init=zeros, rngs=rngs)
                               if cfg.get("driving_appearance", False) else None)

    # model.speaker_classes = C > 0 (ours, loss.id_adversary): a linear speaker classifier on each motion token,
    # trained to name the speaker while z_voc / z_amb are trained to leave it guessing (losses.speaker_adversary).
    classes = cfg.get("speaker_classes", 0)
    self.speaker_voc, self.speaker_amb = (
        (nnx.Linear(cfg.prompt_dim, classes, rngs=rngs), nnx.Linear(cfg.prompt_dim, classes, rngs=rngs))
        if classes else (None, None))

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

  def pose(self, z_amb: jax.Array) -> jax.Array:
    """z_amb [N, Dp] -> the predicted head pose [N, 4] (tx, ty, rot, log scale); needs model.ambient_pose."""
    if self.ambient_pose is None:
      raise ValueError("this model has no pose head: it was trained without model.ambient_pose=True")
    return self.ambient_pose(z_amb.astype(jnp.float32))

  def appearance(self, tokens: jax.Array, slot: str = "ambient") -> jax.Array:
    """z_amb (slot "ambient") or a driving token (z_voc / audio; slot "driving") [N, Dp] -> its appearance image
    [N, g, g, 3] in face coordinates (model.ambient_appearance / model.driving_appearance)."""
    head = {"ambient": self.ambient_appearance, "driving": self.driving_appearance}[slot]
    if head is None:
      raise ValueError(f"this model has no {slot} appearance head: it was trained without model.{slot}_appearance")
    g = round((head.out_features // 3) ** 0.5)
    return head(tokens.astype(jnp.float32)).reshape(-1, g, g, 3)

  def warp_render(self, reference: jax.Array, reference_z_amb: jax.Array, z_amb: jax.Array,
                  reference_driving: jax.Array | None = None, driving: jax.Array | None = None) -> jax.Array:
    """The warp decoder (model.ambient_pose and *_appearance; synclipmae/warp.py): reference frames [M,H,W,3] in
    [0, 1], moved from their own pose into z_amb's [M, Dp], with the appearance change from the reference's codes
    to z_amb's (and, with model.driving_appearance, from the reference's driving token to `driving`: the mouth)
    -> [M, H, W, 3] in [0, 1]. What loss.amb_warp trains, as swap renders and dubbing use it."""
    change = None
    if self.ambient_appearance is not None:
      change = self.appearance(z_amb) - self.appearance(reference_z_amb)
      if self.driving_appearance is not None and driving is not None:
        change = change + self.appearance(driving, "driving") - self.appearance(reference_driving, "driving")
    return jnp.clip(warp.draw(reference, self.pose(z_amb), self.pose(reference_z_amb), change), 0.0, 1.0)

  def __call__(self, inputs: dict[str, jax.Array], *, num_frames: int, audio_reach: int = 0
               ) -> dict[str, jax.Array]:
    """One training forward pass; see the module docstring for the layout of N.

    inputs: "frames", "frames_jittered" [N,H,W,3]; "keep_uniform", "keep_face" int32 [N,K];
    "audio" [B, (T + 2*margin) * 640] or "audio_features" [B, T + 2*margin, L, C] (precomputed);
    "id_source" int32 [N] (the frame whose z_id, and with decoder.visible="identity_source" whose visible patches,
    condition frame n); optional "amb_source" int32 [N] (the frame whose z_amb conditions frame n; default: frame
    n itself); "mouth_patches" [N,P] per-patch mouth fractions (needed with encoder.mouth_private).
    audio_reach: R > 0 when the audio covers R more frames on each side than T + 2*margin (loss.clip_reach): the
    audio tokens of those frames come out too, as "audio_tokens_wide" [B * (T + 2R), Dp]; every other use of the
    audio tokens takes the window's own.
    """
    n = inputs["frames"].shape[0]
    mouth = inputs.get("mouth_patches")
    # Both bypasses in one encoder call: 1 = clean frames, uniform mask; 2 = jittered frames, face-aware mask.
    enc = self.encoder(jnp.concatenate([inputs["frames"], inputs["frames_jittered"]]),
                       jnp.concatenate([inputs["keep_uniform"], inputs["keep_face"]]),
                       None if mouth is None else jnp.concatenate([mouth, mouth]))
    z_id, patches = enc["z_id"][:n], enc["patches"][:n]
    z_voc, z_amb = enc["z_voc"][n:], enc["z_amb"][n:]

    wide = num_frames + 2 * audio_reach
    if "audio_features" in inputs:  # Precomputed by the frozen encoder (synclipmae.data.audio_features).
      audio_wide = self.encode_audio_features(inputs["audio_features"], wide)
    else:
      audio_wide = self.encode_audio(inputs["audio"], wide)
    audio_tokens = audio_wide[:, audio_reach:audio_reach + num_frames].reshape(n, -1)
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
            **({"audio_tokens_wide": audio_wide.reshape(-1, audio_wide.shape[-1])} if audio_reach else {}),
            **({} if self.speaker_voc is None else {  # The classifiers themselves: the loss plays both sides.
                f"speaker_{k}_{p}": getattr(getattr(self, f"speaker_{k}"), p)[...]
                for k in ("voc", "amb") for p in ("kernel", "bias")}),
            **({} if self.ambient_pose is None else {"amb_pose": self.pose(z_amb)}),
            **({} if self.ambient_appearance is None else {"amb_appearance": self.appearance(z_amb)}),
            **({} if self.driving_appearance is None else {
                "voc_appearance": self.appearance(z_voc, "driving"),
                "audio_appearance": self.appearance(audio_tokens, "driving")}),
            **({} if stats is None else {"stats_video": stats[:n], "stats_audio": stats[n:]})}

"""The frame encoder: a per-frame ViT that turns the visible patches of one frame into three prompt tokens.

No CLS token and no temporal layers (the paper encodes single frames). Three learned prompt tokens (identity,
vocal, ambient) are appended to the visible patch tokens; their outputs pass through per-factor heads
(LayerNorm + Linear to `prompt_dim`) and become z_id, z_voc, z_amb.

Each frame is its own sequence, so a frame's outputs never depend on other frames of the batch, and masked
patches are dropped before the transformer (MAE), so they cannot influence anything.

Two options exist for starting from a pretrained ViT / MAE / Sapiens (synclipmae/pretrained/vit.py); the defaults
keep the design above:
  encoder.pos_embed  "sincos" (default): the fixed 2-D sin-cos table, a compile-time constant, no state.
                     "learned": an nnx.Param [P, E] for the config's patch grid, initialised from the sin-cos table,
                     so a checkpoint's learned (or differently ordered sin-cos) table can be loaded and trained. At
                     another input size it is resized bicubically on the fly (`vit.resize_pos_embed`).
  encoder.cls_token  False (default). True: one learned token, first in the sequence, as in MAE / ViT checkpoints;
                     it carries no position embedding of its own (a checkpoint's CLS position row is folded into it
                     on loading), stays in the sequence in training, and is returned only by `backbone`.

One option keeps the mouth out of z_id and z_amb (ours; BENCHMARKS.md "Tokens that factorize"):
  encoder.mouth_private  True: patches of the mouth region (any pixel of the frame's mouth mask) and the vocal
                     prompt token form a private group: it reads every token, while the other patches, the
                     identity and ambient prompt tokens (and a CLS token) attend only to tokens outside it.
                     So z_id and z_amb provably carry nothing that only the mouth shows, while z_voc reads the whole
                     view. The encoder then needs each frame's per-patch mouth fractions (`mouth`).
  encoder.mouth_isolated  With mouth_private, True: the private group reads nothing outside itself either, so z_voc
                     sees the mouth region alone (on the synthetic corpus all the speech ever changes) and none of
                     the rest of the face.

And one gives z_amb a readout that keeps where each feature is (ours; BENCHMARKS.md "Which encoder can read the
ambient factors"):
  encoder.amb_readout  "token" (default): z_amb is the ambient prompt token's head alone. "grid": plus a linear map
                     of the patch tokens laid out on their patch grid (`GridReadout`). A head tilt or a raised brow
                     is a difference between the heights of features a patch apart; a prompt token must find it by
                     attention, a map of the grid reads it directly (told the answers, rotation R^2 0.04 -> 0.43,
                     expression 0.57 -> 0.69 at 3000 steps; pretrained without the answers, z_amb gains head
                     translation only). Masked patches enter as zeros, and under mouth_private so do the mouth
                     patches, so z_amb still reads nothing of the mouth.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from synclipmae.models import vit

FACTORS = ("id", "voc", "amb")  # Order of the prompt tokens.
AMB_READOUTS = ("token", "grid")


class FactorHead(nnx.Module):
  """LayerNorm + Linear from the encoder width to the prompt width; one per factor."""

  def __init__(self, width: int, out: int, *, rngs: nnx.Rngs, dtype=jnp.float32):
    self.norm = vit.layer_norm(width, rngs=rngs, dtype=dtype)
    self.proj = vit.dense(width, out, rngs=rngs, dtype=dtype)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.proj(self.norm(x)).astype(jnp.float32)


class GridReadout(nnx.Module):
  """A linear map of the patch tokens laid out on their patch grid -> [N, out] (`encoder.amb_readout="grid"`).

  Each token is first reduced to a few features, so the map stays small (mu: 64 patches x 8 -> 64)."""

  def __init__(self, width: int, num_patches: int, out: int, *, rngs: nnx.Rngs, dtype=jnp.float32,
               per_patch: int = 8):
    self.num_patches = num_patches
    self.reduce = vit.dense(width, per_patch, rngs=rngs, dtype=dtype)
    self.proj = vit.dense(num_patches * per_patch, out, rngs=rngs, dtype=dtype)

  def __call__(self, patches: jax.Array, keep: jax.Array, hidden: jax.Array | None = None) -> jax.Array:
    """patches [N,K,E] (outputs of the kept patches), keep [N,K] their grid indices, hidden optional bool [N,K]
    (patches to leave out, e.g. the mouth's) -> [N, out] float32. Patches not kept or hidden enter as zeros."""
    n = patches.shape[0]
    features = self.reduce(patches)
    if hidden is not None:
      features = jnp.where(hidden[..., None], 0, features)
    grid = jnp.zeros((n, self.num_patches, features.shape[-1]), features.dtype)
    grid = grid.at[jnp.arange(n)[:, None], keep].set(features)
    return self.proj(grid.reshape(n, -1)).astype(jnp.float32)


class FrameEncoder(nnx.Module):
  """Per-frame ViT: frames [N,H,W,3] in [0,1] + visible-patch indices [N,K] -> patch tokens and z_id/z_voc/z_amb."""

  def __init__(self, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs, dtype=jnp.float32, prompts: bool = True):
    """prompts=False: the plain ViT of model.mode="mae" (no prompt tokens, no heads; call `backbone`)."""
    e = cfg.encoder
    self.patch_size = cfg.patch_size
    self.image_size = cfg.image_size
    self.width = e.width
    stem = e.get("stem", "linear")
    if stem not in ("linear", "conv"):
      raise ValueError(f"model.encoder.stem={stem!r}: expected 'linear' or 'conv'")
    embed = vit.PatchEmbed if stem == "linear" else vit.ConvPatchEmbed
    self.patch_embed = embed(cfg.patch_size, e.width, rngs=rngs, dtype=dtype)
    # One learned vector per factor; prompt tokens carry no position embedding (they are not patches).
    self.prompt_tokens = (nnx.Param(nnx.initializers.normal(0.02)(rngs.params(), (len(FACTORS), e.width)))
                          if prompts else None)
    self.blocks = nnx.List([vit.Block(e.width, e.num_heads, e.mlp_ratio, rngs=rngs, dtype=dtype)
                            for _ in range(e.depth)])
    self.norm = vit.layer_norm(e.width, rngs=rngs, dtype=dtype)
    self.remat = bool(cfg.get("remat", False))
    self.head_id, self.head_voc, self.head_amb = (
        [FactorHead(e.width, cfg.prompt_dim, rngs=rngs, dtype=dtype) for _ in FACTORS] if prompts else [None] * 3)
    self.dtype = dtype
    # Options for pretrained backbones (module docstring); created last so the default init stream is unchanged.
    pos_embed = e.get("pos_embed", "sincos")
    if pos_embed not in ("sincos", "learned"):
      raise ValueError(f"model.encoder.pos_embed={pos_embed!r}: expected 'sincos' or 'learned'")
    self.grid = (cfg.image_size // cfg.patch_size,) * 2
    self.pos_embed = (nnx.Param(jnp.asarray(vit.sincos_pos_embed_2d(e.width, self.grid)))
                      if pos_embed == "learned" else None)
    self.cls_token = (nnx.Param(nnx.initializers.normal(0.02)(rngs.params(), (e.width,)))
                      if e.get("cls_token", False) else None)
    self.mouth_private = prompts and bool(e.get("mouth_private", False))  # Only the prompt tokens can be kept out.
    # And the other way round: the private group (mouth patches, z_voc) reads nothing outside itself.
    self.mouth_isolated = self.mouth_private and bool(e.get("mouth_isolated", False))
    if e.get("mouth_isolated", False) and not e.get("mouth_private", False):
      raise ValueError("model.encoder.mouth_isolated=True needs model.encoder.mouth_private=True (it isolates the "
                       "private group of mouth patches and z_voc that mouth_private defines)")
    amb_readout = e.get("amb_readout", "token")
    if amb_readout not in AMB_READOUTS:
      raise ValueError(f"model.encoder.amb_readout={amb_readout!r}: expected one of {AMB_READOUTS}")
    self.amb_grid = (GridReadout(e.width, self.num_patches, cfg.prompt_dim, rngs=rngs, dtype=dtype)
                     if prompts and amb_readout == "grid" else None)

  @property
  def num_patches(self) -> int:
    return (self.image_size // self.patch_size) ** 2

  def all_patches(self, n: int, num_patches: int | None = None) -> jax.Array:
    """keep indices [n, P] selecting every patch (no masking)."""
    num_patches = num_patches or self.num_patches
    return jnp.broadcast_to(jnp.arange(num_patches, dtype=jnp.int32), (n, num_patches))

  def position_table(self, grid: tuple[int, int]) -> jax.Array:
    """Position embeddings [rows*cols, E] of a patch grid: fixed sin-cos, or the learned table (resized if needed)."""
    if self.pos_embed is None:
      return jnp.asarray(vit.sincos_pos_embed_2d(self.width, grid))
    return vit.resize_pos_embed(self.pos_embed[...], self.grid, grid)

  def _embed(self, frames: jax.Array, keep: jax.Array | None) -> jax.Array:
    """Visible patch tokens with their positions [N,K,E], in the computation dtype."""
    n, h, w, _ = frames.shape
    p = self.patch_size
    if h % p or w % p:
      raise ValueError(f"frame size {h}x{w} is not a multiple of the patch size {p}")
    grid = (h // p, w // p)
    mean, std = jnp.asarray(vit.IMAGENET_MEAN), jnp.asarray(vit.IMAGENET_STD)
    pixels = vit.patchify((frames - mean) / std, p)  # [N, P, p*p*3]
    pos = jnp.broadcast_to(self.position_table(grid), (n, grid[0] * grid[1], self.width))
    if keep is not None:  # Drop masked patches before embedding: they cannot influence anything.
      pixels = jnp.take_along_axis(pixels, keep[..., None], axis=1)
      pos = jnp.take_along_axis(pos, keep[..., None], axis=1)
    return self.patch_embed(pixels.astype(self.dtype)) + pos.astype(self.dtype)

  def _transform(self, tokens: list[jax.Array], private: jax.Array | None = None
                 ) -> tuple[jax.Array, jax.Array | None]:
    """[CLS] + tokens through the blocks and the final norm -> (outputs of `tokens` concatenated, CLS output).

    private: optional bool [N, S] over the concatenated tokens; a token outside the private group does not
    attend to the private ones (`mouth_private`), nor, with `mouth_isolated`, a private one to the others."""
    n = tokens[0].shape[0]
    if self.cls_token is not None:
      tokens = [jnp.broadcast_to(self.cls_token[...].astype(self.dtype), (n, 1, self.width)), *tokens]
      if private is not None:
        private = jnp.concatenate([jnp.zeros((n, 1), bool), private], axis=1)
    x = jnp.concatenate(tokens, axis=1)
    if private is None:
      mask = None
    elif self.mouth_isolated:  # [N, query, key]: two groups that never meet.
      mask = private[:, :, None] == private[:, None, :]
    else:
      mask = private[:, :, None] | ~private[:, None, :]
    x = self.norm(vit.run_blocks(self.blocks, x, mask, remat=self.remat))
    return (x[:, 1:], x[:, 0]) if self.cls_token is not None else (x, None)

  def backbone(self, frames: jax.Array, keep: jax.Array | None = None) -> dict[str, jax.Array]:
    """The plain ViT, without prompt tokens: {"patches": [N,K,E]} (+ "cls": [N,E] with a CLS token), float32.

    What a pretrained ViT / MAE computes for the same visible patches (the parity check of the weight loaders).
    """
    x, cls = self._transform([self._embed(frames, keep)])
    out = {"patches": x.astype(jnp.float32)}
    if cls is not None:
      out["cls"] = cls.astype(jnp.float32)
    return out

  def private_tokens(self, keep: jax.Array, mouth: jax.Array | None) -> jax.Array | None:
    """bool [N, K + 3]: the private group of `mouth_private` (kept mouth patches, then z_voc); None when off."""
    if not self.mouth_private:
      return None
    if mouth is None:
      raise ValueError("model.encoder.mouth_private=True: the encoder needs each frame's per-patch mouth fractions "
                       "(mouth [N, P], e.g. the pipeline's mouth_patches or pipeline.patch_fractions(mouth_masks))")
    mouth_kept = jnp.take_along_axis(jnp.asarray(mouth) > 0, keep, axis=1)
    prompts = jnp.broadcast_to(jnp.asarray([f == "voc" for f in FACTORS]), (keep.shape[0], len(FACTORS)))
    return jnp.concatenate([mouth_kept, prompts], axis=1)

  def __call__(self, frames: jax.Array, keep: jax.Array | None = None, mouth: jax.Array | None = None
               ) -> dict[str, jax.Array]:
    """frames float32 [N,H,W,3] in [0,1]; keep int32 [N,K] visible patch indices (None: all patches); mouth
    [N,P] the fraction of each patch inside the mouth mask (needed with `mouth_private`, ignored otherwise).

    Returns {"patches": [N,K,E] visible-patch outputs after the final norm, "z_id", "z_voc", "z_amb": [N,Dp]}.
    """
    if self.prompt_tokens is None:
      raise ValueError("this encoder has no prompt tokens (model.mode='mae'): call backbone() for its patch tokens")
    if self.amb_grid is not None and frames.shape[1:3] != (self.image_size,) * 2:
      raise ValueError(f"model.encoder.amb_readout='grid' reads a {self.grid[0]}x{self.grid[1]} patch grid: frames "
                       f"must be {self.image_size}x{self.image_size}, got {frames.shape[1]}x{frames.shape[2]}")
    x = self._embed(frames, keep)
    n = x.shape[0]
    if keep is None:
      keep = self.all_patches(n, x.shape[1])
    private = self.private_tokens(keep, mouth)
    prompts = jnp.broadcast_to(self.prompt_tokens[...].astype(self.dtype), (n, len(FACTORS), self.width))
    x, _ = self._transform([x, prompts], private)
    patches, prompts = x[:, :-len(FACTORS)], x[:, -len(FACTORS):]
    z_amb = self.head_amb(prompts[:, 2])
    if self.amb_grid is not None:  # Without the private group's patches: z_amb stays blind to the mouth.
      z_amb = z_amb + self.amb_grid(patches, keep, None if private is None else private[:, :-len(FACTORS)])
    return {"patches": patches.astype(jnp.float32), "z_id": self.head_id(prompts[:, 0]),
            "z_voc": self.head_voc(prompts[:, 1]), "z_amb": z_amb}

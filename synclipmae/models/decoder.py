"""The MAE-style decoder, conditioned on three tokens: {identity, ambient, driving}.

The visible patch tokens go back to their grid positions, learned mask tokens fill the rest, and every block
self-attends over all P tokens and then cross-attends to the conditioning tokens. The driving slot holds z_voc
(video-driven pass) or the audio token (audio-driven pass); one set of weights serves both.

Which visible patches (`decoder.visible`, chosen by the model, not here): "target" — the frame's own bypass-1
patches (the paper); "identity_source" — the bypass-1 patches of the frame that gave z_id (a reference frame, as
in Wav2Lip); "none" — no patches, the frame is drawn from the three tokens alone.

`decoder.cond_broadcast` (ours) also adds a projection of all three tokens, concatenated, to every position
before the blocks: each position's MLP then sees its position and the whole conditioning together, which a
decoder that draws the frame from tokens (visible="none") needs to place a face in its pose (BENCHMARKS.md).

With a per-patch normalised target (loss.norm_pix, MAE) the pixel head alone cannot draw a frame: each patch's
mean and spread are divided out. `decoder.patch_stats` adds a second head for them (`losses.patch_statistics`), so the
decoder outputs pixels (`render`) for swap renders and dubbing.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from synclipmae.models import vit

COND_SLOTS = ("identity", "ambient", "driving")  # Order of the conditioning tokens.


class Decoder(nnx.Module):
  """(visible patches [M,K,E] | None, keep [M,K] | None, cond [M,3,Dp]) -> pixels of every patch [M, P, p*p*3]
  (`vit.patchify`). Without patches every position starts as the mask token."""

  def __init__(self, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs, dtype=jnp.float32, conditioned: bool = True):
    d = cfg.decoder
    self.grid = (cfg.image_size // cfg.patch_size,) * 2
    self.width = d.width
    self.embed = vit.dense(cfg.encoder.width, d.width, rngs=rngs, dtype=dtype)
    self.mask_token = nnx.Param(nnx.initializers.normal(0.02)(rngs.params(), (d.width,)))
    # Without conditioning (model.mode="mae") neither exists. cond_type tells the decoder which slot is which (the
    # tokens themselves live in one shared space per slot).
    self.cond_proj = vit.dense(cfg.prompt_dim, d.width, rngs=rngs, dtype=dtype) if conditioned else None
    self.cond_type = (nnx.Param(nnx.initializers.normal(0.02)(rngs.params(), (len(COND_SLOTS), d.width)))
                      if conditioned else None)
    block = vit.CrossBlock if conditioned else vit.Block
    self.blocks = nnx.List([block(d.width, d.num_heads, d.mlp_ratio, rngs=rngs, dtype=dtype)
                            for _ in range(d.depth)])
    self.norm = vit.layer_norm(d.width, rngs=rngs, dtype=dtype)
    self.remat = bool(cfg.get("remat", False))
    self.head = vit.dense(d.width, cfg.patch_size ** 2 * 3, rngs=rngs, dtype=dtype)
    self.stats_head = vit.dense(d.width, 2, rngs=rngs, dtype=dtype) if d.get("patch_stats", False) else None
    self.cond_broadcast = (vit.dense(len(COND_SLOTS) * cfg.prompt_dim, d.width, rngs=rngs, dtype=dtype)
                           if conditioned and d.get("cond_broadcast", False) else None)
    # Scale and shift of the final normalised tokens from the conditioning (AdaLN, as in DiT), zero-initialised
    # so that training starts from the plain decoder.
    zeros = nnx.initializers.zeros_init()
    self.cond_modulation = (nnx.Linear(len(COND_SLOTS) * cfg.prompt_dim, 2 * d.width, kernel_init=zeros,
                                       bias_init=zeros, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)
                            if conditioned and d.get("cond_modulation", False) else None)
    self.dtype = dtype

  @property
  def num_patches(self) -> int:
    return self.grid[0] * self.grid[1]

  def __call__(self, patches: jax.Array | None, keep: jax.Array | None, cond: jax.Array | None = None
               ) -> tuple[jax.Array, jax.Array | None]:
    """-> (pixels [M,P,p*p*3], patch statistics [M,P,2] (mean, std; `losses.patch_statistics`) or None).

    An unconditioned decoder (`conditioned=False`: the plain MAE decoder of model.mode="mae") takes no cond."""
    if (self.cond_proj is None) != (cond is None):
      raise ValueError("the conditioned decoder needs cond [M, 3, Dp]; the unconditioned one (model.mode='mae') "
                       "takes none")
    if cond is not None and cond.shape[1:2] != (len(COND_SLOTS),):
      raise ValueError(f"cond must be [M, {len(COND_SLOTS)}, Dp] ({', '.join(COND_SLOTS)}), got {cond.shape}")
    m = (cond if patches is None else patches).shape[0]
    tokens = jnp.broadcast_to(self.mask_token[...].astype(self.dtype), (m, self.num_patches, self.width))
    if patches is not None:  # Visible tokens back to their positions.
      tokens = tokens.at[jnp.arange(m)[:, None], keep].set(self.embed(patches.astype(self.dtype)))
    tokens = tokens + jnp.asarray(vit.sincos_pos_embed_2d(self.width, self.grid), self.dtype)
    if cond is None:  # The plain MAE decoder: self-attention only.
      return self._heads(self.norm(vit.run_blocks(self.blocks, tokens, remat=self.remat)))
    context = self.cond_proj(cond.astype(self.dtype)) + self.cond_type[...].astype(self.dtype)
    if self.cond_broadcast is not None or self.cond_modulation is not None:
      c = cond.astype(jnp.float32)  # The whole conditioning, each token on one scale.
      c = ((c - c.mean(-1, keepdims=True)) * jax.lax.rsqrt(c.var(-1, keepdims=True) + 1e-6)).reshape(m, -1)
    if self.cond_broadcast is not None:  # The whole conditioning at every position.
      tokens = tokens + self.cond_broadcast(c.astype(self.dtype))[:, None]
    tokens = self.norm(vit.run_blocks(self.blocks, tokens, context, remat=self.remat))
    if self.cond_modulation is not None:  # out_p = head(LN(x_p) * (1 + scale(c)) + shift(c)): bilinear in (p, c).
      scale, shift = jnp.split(self.cond_modulation(c.astype(self.dtype))[:, None], 2, axis=-1)
      tokens = tokens * (1 + scale) + shift
    return self._heads(tokens)

  def _heads(self, tokens: jax.Array) -> tuple[jax.Array, jax.Array | None]:
    stats = None if self.stats_head is None else self.stats_head(tokens).astype(jnp.float32)
    return self.head(tokens).astype(jnp.float32), stats


def denormalize(pixels: jax.Array, stats: jax.Array) -> jax.Array:
  """Normalised patches [..., D] and their (mean, std) [..., 2] -> pixel patches in [0, 1]."""
  return jnp.clip(pixels * jnp.maximum(stats[..., 1:], 0.0) + stats[..., :1], 0.0, 1.0)

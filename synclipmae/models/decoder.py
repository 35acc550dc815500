"""The MAE-style decoder, conditioned on three tokens: {identity, ambient, driving}.

The visible patch tokens go back to their grid positions, learned mask tokens fill the rest, and every block
self-attends over all P tokens and then cross-attends to the conditioning tokens. The driving slot holds z_voc
(video-driven pass) or the audio token (audio-driven pass); one set of weights serves both.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from synclipmae.models import vit

COND_SLOTS = ("identity", "ambient", "driving")  # Order of the conditioning tokens.


class Decoder(nnx.Module):
  """(visible patches [M,K,E], keep [M,K], cond [M,3,Dp]) -> pixels of every patch [M, P, p*p*3] (`vit.patchify`)."""

  def __init__(self, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs, dtype=jnp.float32):
    d = cfg.decoder
    self.grid = (cfg.image_size // cfg.patch_size,) * 2
    self.width = d.width
    self.embed = vit.dense(cfg.encoder.width, d.width, rngs=rngs, dtype=dtype)
    self.mask_token = nnx.Param(nnx.initializers.normal(0.02)(rngs.params(), (d.width,)))
    self.cond_proj = vit.dense(cfg.prompt_dim, d.width, rngs=rngs, dtype=dtype)
    # Tells the decoder which slot is which (the tokens themselves live in one shared space per slot).
    self.cond_type = nnx.Param(nnx.initializers.normal(0.02)(rngs.params(), (len(COND_SLOTS), d.width)))
    self.blocks = nnx.List([vit.CrossBlock(d.width, d.num_heads, d.mlp_ratio, rngs=rngs, dtype=dtype)
                            for _ in range(d.depth)])
    self.norm = vit.layer_norm(d.width, rngs=rngs, dtype=dtype)
    self.head = vit.dense(d.width, cfg.patch_size ** 2 * 3, rngs=rngs, dtype=dtype)
    self.dtype = dtype

  @property
  def num_patches(self) -> int:
    return self.grid[0] * self.grid[1]

  def __call__(self, patches: jax.Array, keep: jax.Array, cond: jax.Array) -> jax.Array:
    m = patches.shape[0]
    if cond.shape[1:2] != (len(COND_SLOTS),):
      raise ValueError(f"cond must be [M, {len(COND_SLOTS)}, Dp] ({', '.join(COND_SLOTS)}), got {cond.shape}")
    x = self.embed(patches.astype(self.dtype))
    tokens = jnp.broadcast_to(self.mask_token[...].astype(self.dtype), (m, self.num_patches, self.width))
    tokens = tokens.at[jnp.arange(m)[:, None], keep].set(x)  # Visible tokens back to their positions.
    tokens = tokens + jnp.asarray(vit.sincos_pos_embed_2d(self.width, self.grid), self.dtype)
    context = self.cond_proj(cond.astype(self.dtype)) + self.cond_type[...].astype(self.dtype)
    for block in self.blocks:
      tokens = block(tokens, context)
    return self.head(self.norm(tokens)).astype(jnp.float32)

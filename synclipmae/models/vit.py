"""ViT building blocks shared by the frame encoder and the decoder.

Pre-LN transformer pieces (attention, MLP, Block, CrossBlock), the patch embedding and the fixed 2-D sin-cos
position embedding. Layouts follow MAE / timm so that pretrained ViT, MAE or Sapiens weights map one-to-one:
separate q/k/v projections, exact GELU, LayerNorm eps 1e-6, Xavier-uniform Linear init, patches flattened in
(row, column, channel) order.

Parameters are always float32; `dtype` is the computation dtype (bfloat16 on accelerators).
"""

from __future__ import annotations

import functools

import einops
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

# The fixed pixel normalisation of the frame encoder (ImageNet, as MAE, Sapiens and most ViTs use).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LN_EPS = 1e-6


def dense(in_features: int, out_features: int, *, rngs: nnx.Rngs, dtype=jnp.float32) -> nnx.Linear:
  """A Linear with the MAE init (Xavier-uniform kernel, zero bias)."""
  return nnx.Linear(in_features, out_features, kernel_init=nnx.initializers.xavier_uniform(),
                    bias_init=nnx.initializers.zeros_init(), dtype=dtype, param_dtype=jnp.float32, rngs=rngs)


def layer_norm(features: int, *, rngs: nnx.Rngs, dtype=jnp.float32, eps: float = LN_EPS) -> nnx.LayerNorm:
  """LayerNorm with two-pass variance: flax's fast E[x^2]-E[x]^2 loses digits on inputs with a large mean, and
  its rounding then depends on the reduction order (the batch shape, so 1 vs 8 devices)."""
  return nnx.LayerNorm(features, epsilon=eps, dtype=dtype, param_dtype=jnp.float32, use_fast_variance=False,
                       rngs=rngs)


def patchify(images: jax.Array, patch_size: int) -> jax.Array:
  """[N, H, W, C] -> [N, P, p*p*C], patches in row-major grid order, pixels in (row, column, channel) order.

  This is THE pixel layout of the decoder output: reconstruction targets must be made with this function.
  """
  return einops.rearrange(images, "n (h p1) (w p2) c -> n (h w) (p1 p2 c)", p1=patch_size, p2=patch_size)


def unpatchify(patches: jax.Array, patch_size: int, grid: tuple[int, int], channels: int = 3) -> jax.Array:
  """Inverse of `patchify`: [N, P, p*p*C] -> [N, H, W, C] for a (rows, columns) patch grid."""
  return einops.rearrange(patches, "n (h w) (p1 p2 c) -> n (h p1) (w p2) c", h=grid[0], w=grid[1],
                          p1=patch_size, p2=patch_size, c=channels)


@functools.lru_cache(maxsize=None)
def sincos_pos_embed_2d(dim: int, grid: tuple[int, int]) -> np.ndarray:
  """Fixed 2-D sin-cos position embedding [rows*cols, dim] (MAE): half the channels encode the row, half the column.

  A pure function of the grid, so it is a compile-time constant rather than model state: it is never trained,
  never checkpointed, and a model built for one image size runs at any other (the grid is read from the input).
  """
  if dim % 4:
    raise ValueError(f"2-D sin-cos position embedding needs a width divisible by 4, got {dim}")
  omega = 1.0 / 10000 ** (np.arange(dim // 4, dtype=np.float64) / (dim // 4))
  rows, cols = np.meshgrid(np.arange(grid[0], dtype=np.float64), np.arange(grid[1], dtype=np.float64),
                           indexing="ij")

  def embed_1d(pos):
    angles = pos.reshape(-1)[:, None] * omega[None]
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)

  return np.concatenate([embed_1d(rows), embed_1d(cols)], axis=1).astype(np.float32)


def resize_pos_embed(table: jax.Array | np.ndarray, from_grid: tuple[int, int], to_grid: tuple[int, int]) -> jax.Array:
  """A position table [r*c, E] of a (r, c) patch grid resized to [R*C, E] for an (R, C) grid.

  Bicubic on the [r, c, E] grid (Keys a=-0.5, half-pixel centres, antialiased when shrinking): the same numbers as
  PyTorch's `interpolate(mode="bicubic", antialias=True)`, which timm uses to resample ViT position embeddings.
  The identity when the grids are equal. Tokens that are not patches (a CLS token) are the caller's business.
  """
  from_grid, to_grid = tuple(from_grid), tuple(to_grid)
  if from_grid == to_grid:
    return jnp.asarray(table)
  width = table.shape[-1]
  grid = jnp.reshape(jnp.asarray(table), (*from_grid, width))
  return jax.image.resize(grid, (*to_grid, width), method="bicubic", antialias=True).reshape(-1, width)


class Attention(nnx.Module):
  """Multi-head attention; self-attention when called with one argument, cross-attention with a context."""

  def __init__(self, dim: int, num_heads: int, *, context_dim: int | None = None, rngs: nnx.Rngs,
               dtype=jnp.float32):
    if dim % num_heads:
      raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
    context_dim = context_dim or dim
    self.num_heads = num_heads
    self.q = dense(dim, dim, rngs=rngs, dtype=dtype)
    self.k = dense(context_dim, dim, rngs=rngs, dtype=dtype)
    self.v = dense(context_dim, dim, rngs=rngs, dtype=dtype)
    self.out = dense(dim, dim, rngs=rngs, dtype=dtype)

  def __call__(self, x: jax.Array, context: jax.Array | None = None, mask: jax.Array | None = None) -> jax.Array:
    """mask: optional bool [B, Sq, Sk], True where query i may attend to key j (every row needs one True)."""
    context = x if context is None else context
    heads = lambda t: einops.rearrange(t, "b s (h d) -> b s h d", h=self.num_heads)
    q, k, v = heads(self.q(x)), heads(self.k(context)), heads(self.v(context))
    mask = None if mask is None else mask[:, None]  # One mask for all heads.
    # Scaled by 1/sqrt(head_dim); XLA on CPU, fused where available.
    out = jax.nn.dot_product_attention(q, k, v, mask=mask)
    return self.out(einops.rearrange(out, "b s h d -> b s (h d)"))


class Mlp(nnx.Module):
  def __init__(self, dim: int, hidden: int, *, rngs: nnx.Rngs, dtype=jnp.float32):
    self.fc1 = dense(dim, hidden, rngs=rngs, dtype=dtype)
    self.fc2 = dense(hidden, dim, rngs=rngs, dtype=dtype)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.fc2(jax.nn.gelu(self.fc1(x), approximate=False))


def run_blocks(blocks, x: jax.Array, *args, remat: bool = False) -> jax.Array:
  """`x` through each block in turn. remat: each block's activations are recomputed in the backward pass instead
  of stored (`nnx.remat`): activation memory of one block instead of all, for about a third more compute."""
  call = lambda block, x, *args: block(x, *args)
  if remat:
    call = nnx.remat(call)
  for block in blocks:
    x = call(block, x, *args)
  return x


class Block(nnx.Module):
  """Pre-LN transformer block: x + attn(LN(x)), then x + mlp(LN(x))."""

  def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, *, rngs: nnx.Rngs, dtype=jnp.float32):
    self.norm1 = layer_norm(dim, rngs=rngs, dtype=dtype)
    self.attn = Attention(dim, num_heads, rngs=rngs, dtype=dtype)
    self.norm2 = layer_norm(dim, rngs=rngs, dtype=dtype)
    self.mlp = Mlp(dim, int(dim * mlp_ratio), rngs=rngs, dtype=dtype)

  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    x = x + self.attn(self.norm1(x), mask=mask)
    return x + self.mlp(self.norm2(x))


class CrossBlock(nnx.Module):
  """Pre-LN block with cross-attention between self-attention and MLP (the decoder's conditioning path).

  The context (a few conditioning tokens) gets its own LayerNorm, so tokens of different scales (encoder heads,
  audio adapter) enter the attention on an equal footing.
  """

  def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, *, rngs: nnx.Rngs, dtype=jnp.float32):
    self.norm1 = layer_norm(dim, rngs=rngs, dtype=dtype)
    self.attn = Attention(dim, num_heads, rngs=rngs, dtype=dtype)
    self.norm2 = layer_norm(dim, rngs=rngs, dtype=dtype)
    self.norm_context = layer_norm(dim, rngs=rngs, dtype=dtype)
    self.cross_attn = Attention(dim, num_heads, rngs=rngs, dtype=dtype)
    self.norm3 = layer_norm(dim, rngs=rngs, dtype=dtype)
    self.mlp = Mlp(dim, int(dim * mlp_ratio), rngs=rngs, dtype=dtype)

  def __call__(self, x: jax.Array, context: jax.Array) -> jax.Array:
    x = x + self.attn(self.norm1(x))
    x = x + self.cross_attn(self.norm2(x), self.norm_context(context))
    return x + self.mlp(self.norm3(x))


class PatchEmbed(nnx.Module):
  """Linear on flattened p*p*C patches (= a stride-p conv; a conv kernel [p,p,C,E] reshapes to [p*p*C, E])."""

  def __init__(self, patch_size: int, width: int, channels: int = 3, *, rngs: nnx.Rngs, dtype=jnp.float32):
    self.patch_size = patch_size
    self.proj = dense(patch_size * patch_size * channels, width, rngs=rngs, dtype=dtype)

  def __call__(self, patch_pixels: jax.Array) -> jax.Array:
    """[..., p*p*C] flattened patches (see `patchify`) -> [..., E]."""
    return self.proj(patch_pixels)


class ConvPatchEmbed(nnx.Module):
  """A small conv net run on each p x p patch on its own, then a Linear to the width (`encoder.stem="conv"`).

  Why: a linear patch embedding must learn the same edge detector at every sub-patch offset, and small ViTs
  trained from scratch learn local structure slowly (Xiao et al. 2021, "Early convolutions help transformers see
  better"). Convolving within each patch (zero padding at the patch border, no pixel of a neighbour) keeps the
  MAE contract: a visible token depends on its own pixels only, so masked patches still cannot leak in. Stride-2
  3x3 convs halve the patch until it is at most 2 x 2 pixels.
  """

  def __init__(self, patch_size: int, width: int, channels: int = 3, *, base_channels: int = 32,
               rngs: nnx.Rngs, dtype=jnp.float32):
    self.patch_size, self.channels = patch_size, channels
    convs, size, c_in, c_out = [], patch_size, channels, base_channels
    while size > 2:
      convs.append(nnx.Conv(c_in, c_out, (3, 3), strides=(2, 2), padding="SAME", rngs=rngs, dtype=dtype))
      size, c_in, c_out = -(-size // 2), c_out, 2 * c_out
    self.convs = nnx.List(convs)
    self.proj = dense(size * size * c_in, width, rngs=rngs, dtype=dtype)

  def __call__(self, patch_pixels: jax.Array) -> jax.Array:
    """[..., p*p*C] flattened patches (see `patchify`) -> [..., E]."""
    p, lead = self.patch_size, patch_pixels.shape[:-1]
    x = patch_pixels.reshape(-1, p, p, self.channels)
    for conv in self.convs:
      x = jax.nn.gelu(_stride2_conv3x3(x, conv))
    return self.proj(x.reshape(*lead, -1))


def _stride2_conv3x3(x: jax.Array, conv: nnx.Conv) -> jax.Array:
  """`conv(x)` (3x3, stride 2, SAME) as one matmul over the 9 gathered taps.

  Why by hand: XLA's CPU convolution is slow on thousands of tiny (8x8, 4x4) images; the same arithmetic as
  strided slices + a matmul takes mu's stem (forward + backward) from 87 to 65 ms per step on CPU
  (BENCHMARKS.md; the test checks it equals `conv(x)`)."""
  n, size, _, c = x.shape
  out = -(-size // 2)
  pad = max(2 * (out - 1) + 3 - size, 0)  # SAME: the smaller half of the padding before, the rest after.
  x = jnp.pad(x, ((0, 0), (pad // 2, pad - pad // 2), (pad // 2, pad - pad // 2), (0, 0)))
  taps = jnp.concatenate([x[:, dy:dy + 2 * out - 1:2, dx:dx + 2 * out - 1:2] for dy in range(3) for dx in range(3)],
                         axis=-1)  # [n, out, out, 9c] in the kernel's (dy, dx, c) order.
  dtype = conv.dtype or x.dtype
  y = jnp.einsum("nhwk,ko->nhwo", taps.astype(dtype), conv.kernel[...].reshape(9 * c, -1).astype(dtype))
  return y + conv.bias[...].astype(dtype)

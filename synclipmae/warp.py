"""Head-pose warps: a frame's similarity pose as 4 numbers, and another frame of the same face warped into it.

Why (issue 13): a decoder that draws faces from tokens learns to use a pose code far too slowly for `z_amb` to be
shaped by reconstruction (BENCHMARKS.md "Can the decoder draw from codes?"). Pose acts on the whole image through
four numbers, so it needs no decoder at all: if z_amb predicts each frame's pose, a reference frame of the same
person warped from its predicted pose into the target's must match the target outside the mouth. The gradient of
that match through bilinear sampling reaches the four numbers directly (a spatial transformer, Jaderberg et al.
2015), and so z_amb.

Pose convention (the synthetic renderer's, `data_pipelines/synthetic/render.py`): pose (tx, ty, rot, scale) maps a
canonical face point c to the image point p = (tx, ty) + scale * R(rot) @ c, in units of the image width with the
origin at the image centre, y down. Predicted poses are (tx, ty, rot, log scale), zero = the identity. Only
relative poses are observable: poses P_n o H for any fixed H explain the frames equally well (a reparametrised
canonical face), so a learned pose is the true one up to that.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def pose_to_affine(pose: jax.Array) -> tuple[jax.Array, jax.Array]:
  """pose [..., 4] (tx, ty, rot, log scale) -> (linear part [..., 2, 2] = scale * R(rot), translation [..., 2])."""
  pose = pose.astype(jnp.float32)
  rot, scale = pose[..., 2], jnp.exp(pose[..., 3])
  cos, sin = jnp.cos(rot) * scale, jnp.sin(rot) * scale
  linear = jnp.stack([jnp.stack([cos, -sin], -1), jnp.stack([sin, cos], -1)], -2)
  return linear, pose[..., :2]


def sampling_grid(target_pose: jax.Array, reference_pose: jax.Array, size: int, reference_size: int | None = None
                  ) -> jax.Array:
  """Where each pixel of the target sits in the reference: [N, 4] poses -> (row, col) [N, size, size, 2], in pixels
  of a reference of `reference_size` (default: size; both images span the same square).

  A target pixel p shows the canonical point c = A_t^-1 (p - t_t), which the reference shows at A_r c + t_r. With
  a zero reference pose the "reference" is the canonical face itself (an image in face coordinates).
  """
  a_t, t_t = pose_to_affine(target_pose)
  a_r, t_r = pose_to_affine(reference_pose)
  centres = (jnp.arange(size, dtype=jnp.float32) + 0.5) / size - 0.5
  p = jnp.stack(jnp.meshgrid(centres, centres, indexing="xy"), -1)  # [H, W, (x, y)]
  c = jnp.einsum("nij,nhwj->nhwi", jnp.linalg.inv(a_t), p[None] - t_t[:, None, None])
  q = jnp.einsum("nij,nhwj->nhwi", a_r, c) + t_r[:, None, None]
  return (q[..., ::-1] + 0.5) * (reference_size or size) - 0.5  # (x, y) in width units -> (row, col) in pixels.


def warp(images: jax.Array, coords: jax.Array) -> jax.Array:
  """Bilinear sampling, differentiable in the coordinates: images [N, H, W, C], coords (row, col) [N, h, w, 2]
  -> [N, h, w, C]; points outside the image take the nearest edge pixel."""
  def one(image, rows_cols):
    per_channel = lambda channel: jax.scipy.ndimage.map_coordinates(
        channel, [rows_cols[..., 0], rows_cols[..., 1]], order=1, mode="nearest")
    return jax.vmap(per_channel, in_axes=-1, out_axes=-1)(image)
  return jax.vmap(one)(images.astype(jnp.float32), coords)


def blur(images: jax.Array, sigma: float) -> jax.Array:
  """Gaussian blur of [N, H, W, C] (square images) with edge-renormalised weights; sigma in pixels, 0 = none.

  Blurred images give the warp a wide basin: a sharp edge 5 pixels off has no gradient to pull it in."""
  if sigma <= 0:
    return images
  size = images.shape[1]
  x = jnp.arange(size, dtype=jnp.float32)
  weights = jnp.exp(-0.5 * jnp.square((x[:, None] - x[None, :]) / sigma))
  weights = weights / weights.sum(1, keepdims=True)
  return jnp.einsum("ij,njkc,lk->nilc", weights, images.astype(jnp.float32), weights)


def draw(reference: jax.Array, pose: jax.Array, reference_pose: jax.Array, change: jax.Array | None = None,
         sigma: float = 0.0) -> jax.Array:
  """The warp decoder: the reference frame [N, H, W, 3] carried from its pose into `pose`, plus an appearance
  change [N, g, g, 3] given in face coordinates (placed by `pose`); both blurred by `sigma` pixels if > 0.

  What the pose-warp loss scores (losses.pose_warp_loss) and what swap renders draw with the same heads.
  """
  size = reference.shape[1]
  out = warp(blur(reference, sigma), sampling_grid(pose, reference_pose, size))
  if change is not None:
    placed = warp(change, sampling_grid(pose, jnp.zeros_like(pose), size, change.shape[1]))
    out = out + blur(placed, sigma)
  return out

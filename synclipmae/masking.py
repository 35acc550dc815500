"""Masking and augmentation for the two encoder bypasses: pure functions of arrays and explicit PRNG keys.

SyncLipMAE encodes every frame twice (DESIGN.md section 2):

* bypass 1 — uniform random masking (`uniform_keep`), 75 % masked as in MAE. It yields the identity token `z_id`
  and the visible patches the decoder reads.
* bypass 2 — face-aware masking (`face_aware_keep`) on a photometrically jittered frame (`photometric_jitter`).
  Face patches are kept with higher probability, and mouth-region patches with much higher probability, so
  `z_voc` / `z_amb` see the lips, jaw and eyes, while the jitter stops them from carrying colour (identity)
  information. Why the mouth weight: a per-frame ViT trained from scratch finds the ~5 % of the frame where vocal
  motion shows slowly when the prompt token must search all face patches (BENCHMARKS.md, "mouth-aware bypass 2").

Both bypasses keep the same number K of patches, so their visible tokens stack into one static-shape encoder
call. A "keep" array holds the K kept patch indices of each frame, sorted ascending (so the kept tokens stay in
raster order and gathers are cache friendly); `keep_to_mask` turns it into the boolean MAE mask.

Patches are numbered row-major (index = row * W/p + col), the order of a stride-p convolution's output and of the
data pipeline's `face_patches`; inside a patch the pixels are (row, col, channel), again like a conv kernel.

Identity shuffling (`identity_sources`, or `partner_identity_sources` across a same-speaker pair of clips)
decides which frame's `z_id` conditions the decoder for each frame, so the decoder cannot read the pose,
expression or mouth of the target frame out of `z_id`.

Every function is jit compatible: sizes are Python ints (static), randomness comes only from the key argument.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from synclipmae.models import vit
from synclipmae.models.vit import patchify  # The decoder's pixel layout; reconstruction targets use it.

# ITU-R 601 luma weights, as torchvision's rgb_to_grayscale.
_LUMA = (0.2989, 0.587, 0.114)


def num_kept(num_patches: int, mask_ratio: float) -> int:
  """Number of visible patches per frame for a mask ratio; one shared K keeps both bypasses the same shape."""
  if not 0.0 <= mask_ratio < 1.0:
    raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
  return max(1, int(round(num_patches * (1.0 - mask_ratio))))


# ----------------------------------------------------------------------------------------------------- patches

def unpatchify(patches: jax.Array, patch_size: int, height: int, width: int) -> jax.Array:
  """Exact inverse of `patchify`: [N, P, p*p*C] -> [N, H, W, C] (to look at reconstructions)."""
  grid = (height // patch_size, width // patch_size)
  return vit.unpatchify(patches, patch_size, grid, channels=patches.shape[-1] // patch_size ** 2)


# ----------------------------------------------------------------------------------------------------- masking

def _check_keep(num_patches: int, num_keep: int) -> None:
  if not 1 <= num_keep <= num_patches:
    raise ValueError(f"num_keep must be in [1, {num_patches}], got {num_keep}")


def _top_k_sorted(scores: jax.Array, num_keep: int) -> jax.Array:
  """Indices of the `num_keep` largest scores per row, sorted ascending (raster order of the kept patches)."""
  _, idx = jax.lax.top_k(scores, num_keep)
  return jnp.sort(idx, axis=-1).astype(jnp.int32)


def uniform_keep(key: jax.Array, num_rows: int, num_patches: int, num_keep: int) -> jax.Array:
  """Bypass 1: a uniformly random K-subset of patches per row (without replacement), int32 [rows, K], sorted.

  The top-K of i.i.d. uniform noise is a uniformly random subset (the MAE recipe), with no Python loop.
  """
  _check_keep(num_patches, num_keep)
  noise = jax.random.uniform(key, (num_rows, num_patches))
  return _top_k_sorted(noise, num_keep)


def face_aware_keep(key: jax.Array | None, face_fraction: jax.Array, num_keep: int, face_bias: float,
                    mouth_fraction: jax.Array | None = None, mouth_bias: float = 1.0) -> jax.Array:
  """Bypass 2: K patches per row sampled without replacement, face (and mouth) patches likelier.

  Weights w = 1 + (face_bias - 1) * face_fraction + (mouth_bias - 1) * mouth_fraction, so a full-face patch weighs
  `face_bias`, a background patch 1, and a patch of the mouth region (lips, jaw: where vocal motion shows) also
  gets `mouth_bias` on top. Adding Gumbel noise to log w and taking the top K draws exactly the same distribution
  as picking patches one at a time with probability proportional to the remaining weights (Gumbel top-k), with a
  static output shape. face_bias = mouth_bias = 1 is uniform masking.

  key None: no noise, the K heaviest patches (ties to the lower index): the deterministic view evaluation uses,
  so z_voc at test time sees what training showed it most often. Returns int32 [N, K], sorted ascending.
  """
  for name, bias in (("face_bias", face_bias), ("mouth_bias", mouth_bias)):
    if not isinstance(bias, jax.Array) and bias <= 0:
      raise ValueError(f"{name} must be > 0, got {bias}")
  num_patches = face_fraction.shape[-1]
  _check_keep(num_patches, num_keep)
  weights = 1.0 + (face_bias - 1.0) * jnp.clip(face_fraction.astype(jnp.float32), 0.0, 1.0)
  if mouth_fraction is not None:
    if mouth_fraction.shape != face_fraction.shape:
      raise ValueError(f"mouth_fraction {mouth_fraction.shape} and face_fraction {face_fraction.shape} differ")
    weights = weights + (mouth_bias - 1.0) * jnp.clip(mouth_fraction.astype(jnp.float32), 0.0, 1.0)
  scores = jnp.log(weights)
  if key is not None:
    scores = scores + jax.random.gumbel(key, face_fraction.shape)
  else:  # Stable tie-break towards lower indices: a tiny decreasing ramp, far below any weight difference.
    scores = scores - jnp.arange(num_patches, dtype=jnp.float32) * 1e-6
  return _top_k_sorted(scores, num_keep)


def view_keep(view: dict, face_fraction: np.ndarray, mouth_fraction: np.ndarray) -> np.ndarray:
  """The deterministic bypass-2 view: int32 [T, K], the K patches bypass 2 keeps most often (mouth region first,
  then face; `face_aware_keep` without noise) for per-patch fractions [T, P]. `view` holds the pretraining
  config's mask_ratio, face_bias and mouth_bias (what `synclipmae.inference` stores as views.motion)."""
  face_fraction, mouth_fraction = jnp.asarray(face_fraction), jnp.asarray(mouth_fraction)
  num_keep = num_kept(face_fraction.shape[-1], view["mask_ratio"])
  return np.asarray(face_aware_keep(None, face_fraction, num_keep, view["face_bias"], mouth_fraction,
                                    view.get("mouth_bias", 1.0)))


def keep_to_mask(keep: jax.Array, num_patches: int) -> jax.Array:
  """bool [N, P], True where a patch is MASKED (not in `keep`): the MAE convention the losses use."""
  rows = jnp.arange(keep.shape[0])[:, None]
  return jnp.ones((keep.shape[0], num_patches), bool).at[rows, keep].set(False)


# ----------------------------------------------------------------------------------------------- augmentation

def _grayscale(frames: jax.Array) -> jax.Array:
  """Luma [..., H, W, 1] of RGB frames."""
  return jnp.tensordot(frames, jnp.asarray(_LUMA, frames.dtype), axes=([-1], [0]))[..., None]


def _blend(image: jax.Array, other: jax.Array, factor: jax.Array) -> jax.Array:
  """factor * image + (1 - factor) * other, clamped to [0, 1] (torchvision's `_blend`); factor is per frame."""
  factor = factor[:, None, None, None]
  return jnp.clip(factor * image + (1.0 - factor) * other, 0.0, 1.0)


def _rgb_to_hsv(rgb: jax.Array) -> jax.Array:
  """RGB in [0, 1] -> HSV with hue in [0, 1) turns (torchvision's `_rgb2hsv`)."""
  r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
  maxc = jnp.max(rgb, axis=-1)
  minc = jnp.min(rgb, axis=-1)
  grey = maxc == minc
  chroma = maxc - minc
  sat = chroma / jnp.where(grey, 1.0, maxc)
  divisor = jnp.where(grey, 1.0, chroma)
  rc, gc, bc = (maxc - r) / divisor, (maxc - g) / divisor, (maxc - b) / divisor
  hue = jnp.where(maxc == r, bc - gc, jnp.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
  hue = jnp.mod(hue / 6.0, 1.0)
  return jnp.stack([hue, sat, maxc], axis=-1)


def _hsv_to_rgb(hsv: jax.Array) -> jax.Array:
  """Inverse of `_rgb_to_hsv` (torchvision's `_hsv2rgb`)."""
  h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
  sector = jnp.floor(h * 6.0)
  f = h * 6.0 - sector
  sector = jnp.mod(sector, 6).astype(jnp.int32)
  p = jnp.clip(v * (1.0 - s), 0.0, 1.0)
  q = jnp.clip(v * (1.0 - s * f), 0.0, 1.0)
  t = jnp.clip(v * (1.0 - s * (1.0 - f)), 0.0, 1.0)
  r = jnp.choose(sector, [v, q, p, p, t, v], mode="clip")
  g = jnp.choose(sector, [t, v, v, q, p, p], mode="clip")
  b = jnp.choose(sector, [p, p, t, v, v, q], mode="clip")
  return jnp.stack([r, g, b], axis=-1)


def _adjust_hue(frames: jax.Array, shift: jax.Array) -> jax.Array:
  """Rotates the hue of each frame by `shift` [N] turns of the colour wheel."""
  hsv = _rgb_to_hsv(frames)
  hue = jnp.mod(hsv[..., 0] + shift[:, None, None], 1.0)
  return _hsv_to_rgb(hsv.at[..., 0].set(hue))


def photometric_jitter(key: jax.Array, frames: jax.Array, brightness: float = 0.4, contrast: float = 0.4,
                       saturation: float = 0.4, hue: float = 0.1, grayscale_p: float = 0.2,
                       frames_per_draw: int = 1) -> jax.Array:
  """Colour jitter + random grayscale of the bypass-2 input, one draw per `frames_per_draw` consecutive frames.

  Why: `z_voc` / `z_amb` should encode motion, not colour; jittering their input removes skin/lighting cues
  (which belong to `z_id`). Semantics follow torchvision's ColorJitter + RandomGrayscale in a fixed order
  (brightness, contrast, saturation, hue, then grayscale): factors uniform in [max(0, 1 - x), 1 + x], hue shift
  uniform in [-hue, hue] turns, each step clamped to [0, 1]. Strengths are Python floats (static); a strength of 0
  skips its step, so all zeros is exactly the identity.

  Pretraining draws once per clip (`frames_per_draw` = T), as video augmentation does: the frames of a clip then
  differ only by what moved, so the jitter cannot pass for motion between them, while z_voc still cannot use
  colour to tell clips apart. 1 draws per frame.

  Args:
    key: PRNG key.
    frames: float [N, H, W, 3] in [0, 1]; N a multiple of `frames_per_draw`.
  Returns:
    float [N, H, W, 3] in [0, 1].
  """
  n = frames.shape[0]
  if n % frames_per_draw:
    raise ValueError(f"photometric_jitter: {n} frames are not whole groups of frames_per_draw={frames_per_draw}")
  k_b, k_c, k_s, k_h, k_g = jax.random.split(key, 5)
  out = frames

  def draw(sample, k, *args):
    return jnp.repeat(sample(k, (n // frames_per_draw,), *args), frames_per_draw)

  def factor(k, strength):
    return draw(jax.random.uniform, k, out.dtype, max(0.0, 1.0 - strength), 1.0 + strength)

  if brightness > 0:
    out = _blend(out, jnp.zeros_like(out), factor(k_b, brightness))
  if contrast > 0:
    mean = jnp.mean(_grayscale(out), axis=(1, 2, 3), keepdims=True)
    out = _blend(out, mean, factor(k_c, contrast))
  if saturation > 0:
    out = _blend(out, _grayscale(out), factor(k_s, saturation))
  if hue > 0:
    out = _adjust_hue(out, draw(jax.random.uniform, k_h, out.dtype, -hue, hue))
  if grayscale_p > 0:
    gray = draw(lambda k, shape: jax.random.bernoulli(k, grayscale_p, shape), k_g)[:, None, None, None]
    out = jnp.where(gray, jnp.broadcast_to(_grayscale(out), out.shape), out)
  return jnp.clip(out, 0.0, 1.0)


# ------------------------------------------------------------------------------------------ identity shuffling

def identity_sources(key: jax.Array, batch: int, num_frames: int) -> jax.Array:
  """For frame n = b*T + t, the flat index b*T + t' (t' != t, same clip) whose `z_id` conditions its decoding.

  Why: `z_id` from the frame itself could smuggle that frame's pose/mouth into the decoder; another frame of the
  same clip has the same identity but different motion. t' = (t + r) mod T with r uniform in {1, ..., T-1} is
  uniform over the other T - 1 frames. With T == 1 there is no other frame, so each frame keeps its own.
  Returns int32 [batch * num_frames].
  """
  if num_frames == 1:
    return jnp.arange(batch, dtype=jnp.int32)
  t = jnp.arange(num_frames, dtype=jnp.int32)[None, :]
  offset = jax.random.randint(key, (batch, num_frames), 1, num_frames, dtype=jnp.int32)
  source = jnp.arange(batch, dtype=jnp.int32)[:, None] * num_frames + jnp.mod(t + offset, num_frames)
  return source.reshape(-1)


def partner_identity_sources(key: jax.Array, batch: int, num_frames: int) -> jax.Array:
  """For frame n = b*T + t of a batch of same-speaker clip pairs (b, b^1), a uniformly random frame of the other
  clip of its pair: b' = b xor 1, the flat index b'*T + t'. Returns int32 [batch * num_frames].

  Why: another frame of the same clip still shows the clip's expression and the neighbourhood of its head pose, so
  z_id could hand them to the decoder; the partner clip (the data pipeline's `identity_pairs`) shares only the
  identity, so pose, blinks and expression must come from z_amb, the mouth from the driving token.
  """
  if batch % 2:
    raise ValueError(f"partner_identity_sources needs pairs of clips: batch {batch} is odd")
  partner = jnp.bitwise_xor(jnp.arange(batch, dtype=jnp.int32), 1)[:, None]
  t = jax.random.randint(key, (batch, num_frames), 0, num_frames, dtype=jnp.int32)
  return (partner * num_frames + t).reshape(-1)


def ambient_sources(key: jax.Array, batch: int, num_frames: int, min_shift: int, max_shift: int) -> jax.Array:
  """For frame n = b*T + t, the flat index b*T + t' whose `z_amb` conditions its decoding: |t' - t| is uniform in
  [min_shift, max_shift], the direction random (flipped where it would leave the clip window).

  Why: z_amb of the frame itself sees the frame's own mouth, so the decoder can take the mouth from z_amb and the
  driving token (z_voc, or the audio token) is left no work. A frame a few frames away has nearly the same pose,
  blink state and expression, which change slowly, but another mouth, which changes every frame: the mouth must
  then come from the driving token, which gives z_voc and the audio tokens a dense reconstruction signal.
  Needs num_frames > max_shift >= min_shift >= 1. Returns int32 [batch * num_frames].
  """
  if not 1 <= min_shift <= max_shift < num_frames:
    raise ValueError(f"ambient shift range [{min_shift}, {max_shift}] needs 1 <= min <= max < num_frames "
                     f"({num_frames})")
  k_size, k_sign = jax.random.split(key)
  t = jnp.arange(num_frames, dtype=jnp.int32)[None, :]
  size = jax.random.randint(k_size, (batch, num_frames), min_shift, max_shift + 1, dtype=jnp.int32)
  sign = jnp.where(jax.random.bernoulli(k_sign, 0.5, (batch, num_frames)), 1, -1)
  target = t + sign * size
  target = jnp.where((target < 0) | (target >= num_frames), t - sign * size, target)
  target = jnp.clip(target, 0, num_frames - 1)  # Only when neither direction fits (T < 2 * max_shift + 1).
  return (jnp.arange(batch, dtype=jnp.int32)[:, None] * num_frames + target).reshape(-1)

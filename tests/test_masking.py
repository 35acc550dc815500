"""Masking and augmentation: exact shapes and ratios, determinism, the statistics of face-aware sampling."""

import colorsys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from synclipmae import masking

# Every test runs the functions under jax.jit (how the train step calls them); sizes are static arguments.
# Eager op-by-op dispatch would also compile each primitive separately and dominate the test time.
_uniform_keep = jax.jit(masking.uniform_keep, static_argnums=(1, 2, 3))
_face_aware_keep = jax.jit(masking.face_aware_keep, static_argnums=2)  # face_bias traced
_keep_to_mask = jax.jit(masking.keep_to_mask, static_argnums=1)
_identity_sources = jax.jit(masking.identity_sources, static_argnums=(1, 2))
_ambient_sources = jax.jit(masking.ambient_sources, static_argnums=(1, 2, 3, 4))
_patchify = jax.jit(masking.patchify, static_argnums=1)
_unpatchify = jax.jit(masking.unpatchify, static_argnums=(1, 2, 3))
_jitter = jax.jit(masking.photometric_jitter,
                  static_argnames=("brightness", "contrast", "saturation", "hue", "grayscale_p", "frames_per_draw"))


def _check_keep(keep, num_rows, num_patches, num_keep):
  keep = np.asarray(keep)
  assert keep.shape == (num_rows, num_keep) and keep.dtype == np.int32
  assert keep.min() >= 0 and keep.max() < num_patches
  assert np.all(np.diff(keep, axis=1) > 0), "indices must be sorted ascending and unique"


def _half_face(num_rows, num_patches):
  """Face fraction with patches 0, 2, 4, ... fully face and the others background."""
  face = np.zeros((num_rows, num_patches), np.float32)
  face[:, ::2] = 1.0
  return face


def _plackett_luce_reference(rng, weights, num_keep, num_rows):
  """Weighted sampling without replacement done the slow, obvious way: one draw at a time, p ~ remaining weight."""
  weights = np.broadcast_to(weights, (num_rows, weights.shape[-1])).astype(np.float64)
  remaining = weights.copy()
  kept = np.zeros(weights.shape, bool)
  for _ in range(num_keep):
    p = remaining / remaining.sum(axis=1, keepdims=True)
    u = rng.random((num_rows, 1))
    pick = np.minimum((np.cumsum(p, axis=1) < u).sum(axis=1), weights.shape[1] - 1)
    kept[np.arange(num_rows), pick] = True
    remaining[np.arange(num_rows), pick] = 0.0
  return kept


def test_num_kept():
  assert masking.num_kept(196, 0.75) == 49
  assert masking.num_kept(16, 0.0) == 16
  assert masking.num_kept(4, 0.99) == 1
  for bad in (1.0, -0.1, 1.5):
    with pytest.raises(ValueError):
      masking.num_kept(16, bad)


def test_patchify_round_trip_and_order():
  frames = jax.random.uniform(jax.random.key(0), (2, 32, 48, 3))
  patches = _patchify(frames, 16)
  assert patches.shape == (2, 6, 16 * 16 * 3)
  # Row-major patch order, (row, col, channel) inside a patch: patch 4 = row 1, column 1.
  np.testing.assert_array_equal(patches[1, 4], np.asarray(frames[1, 16:32, 16:32]).reshape(-1))
  np.testing.assert_array_equal(_unpatchify(patches, 16, 32, 48), frames)


def test_patch_order_matches_strided_conv():
  """The patch embedding conv (kernel = stride = p) sees the patches in the same order and layout."""
  frames = jax.random.uniform(jax.random.key(1), (1, 8, 12, 3))
  kernel = jax.random.normal(jax.random.key(2), (4, 4, 3, 5))
  conv = jax.lax.conv_general_dilated(frames, kernel, (4, 4), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
  linear = _patchify(frames, 4) @ kernel.reshape(-1, 5)
  np.testing.assert_allclose(conv.reshape(1, -1, 5), linear, rtol=1e-5, atol=1e-5)


def test_uniform_keep_exact_and_deterministic():
  keep = _uniform_keep(jax.random.key(0), 64, 196, 49)
  _check_keep(keep, 64, 196, 49)
  np.testing.assert_array_equal(keep, _uniform_keep(jax.random.key(0), 64, 196, 49))
  assert not np.array_equal(keep, _uniform_keep(jax.random.key(1), 64, 196, 49))
  assert len({tuple(row) for row in np.asarray(keep)}) == 64, "rows are independent draws"
  with pytest.raises(ValueError):
    masking.uniform_keep(jax.random.key(0), 2, 16, 17)


def test_uniform_keep_is_uniform():
  rows, patches, k = 4000, 64, 16
  keep = _uniform_keep(jax.random.key(3), rows, patches, k)
  freq = np.bincount(np.asarray(keep).ravel(), minlength=patches) / rows
  # Each patch kept with probability K/P; 5 standard errors of tolerance.
  np.testing.assert_allclose(freq, k / patches, atol=5 * np.sqrt(0.25 * 0.75 / rows))


def test_face_aware_keep_exact_and_deterministic():
  face = jnp.asarray(_half_face(32, 64))
  keep = _face_aware_keep(jax.random.key(0), face, 16, 5.0)
  _check_keep(keep, 32, 64, 16)
  np.testing.assert_array_equal(keep, _face_aware_keep(jax.random.key(0), face, 16, 5.0))
  assert not np.array_equal(keep, _face_aware_keep(jax.random.key(1), face, 16, 5.0))
  with pytest.raises(ValueError):
    masking.face_aware_keep(jax.random.key(0), face, 16, 0.0)


def test_face_aware_keep_matches_sequential_weighted_sampling():
  """Gumbel top-k must reproduce draw-one-at-a-time sampling with p proportional to the remaining weights."""
  rows, patches, k, bias = 4000, 64, 16, 5.0
  face = _half_face(rows, patches)
  keep = _face_aware_keep(jax.random.key(4), jnp.asarray(face), k, bias)
  faces_kept = np.take_along_axis(face, np.asarray(keep), axis=1).sum(axis=1)

  weights = 1.0 + (bias - 1.0) * face[0]
  reference = _plackett_luce_reference(np.random.default_rng(0), weights, k, rows)
  reference_faces = (reference & (face > 0)).sum(axis=1)

  # Uniform masking keeps K/2 = 8 face patches on average; the bias must keep clearly more.
  assert faces_kept.mean() > k / 2 + 3
  stderr = np.sqrt(faces_kept.var() / rows + reference_faces.var() / rows)
  assert abs(faces_kept.mean() - reference_faces.mean()) < 5 * stderr, (faces_kept.mean(), reference_faces.mean())
  # The whole distribution of "face patches kept", not only its mean.
  hist = np.bincount(faces_kept.astype(int), minlength=k + 1) / rows
  ref_hist = np.bincount(reference_faces, minlength=k + 1) / rows
  assert np.abs(hist - ref_hist).max() < 0.03


def test_face_aware_keep_partial_faces_follow_weights():
  """A patch's weight is linear in its face fraction: a 0.5-face patch sits between background and full face."""
  rows = 4000
  face = np.tile(np.array([0.0, 0.5, 1.0, 0.0], np.float32), 4)[None].repeat(rows, axis=0)
  keep = np.asarray(_face_aware_keep(jax.random.key(5), jnp.asarray(face), 1, 5.0))
  # With K = 1 the kept patch is a single weighted draw: p = w / sum(w), w = 1, 3, 5, 1 (x4).
  freq = np.bincount(keep[:, 0] % 4, minlength=4) / rows
  np.testing.assert_allclose(freq, np.array([1, 3, 5, 1]) / 10, atol=0.03)


def test_mouth_bias_adds_to_the_face_weight():
  """w = 1 + (face_bias-1)*face + (mouth_bias-1)*mouth: with K = 1 the kept patch is one draw with p = w / sum(w)."""
  rows = 4000
  face = np.tile(np.array([0.0, 1.0, 1.0, 1.0], np.float32), 4)[None].repeat(rows, axis=0)
  mouth = np.tile(np.array([0.0, 0.0, 0.5, 1.0], np.float32), 4)[None].repeat(rows, axis=0)
  keep = np.asarray(masking.face_aware_keep(jax.random.key(7), jnp.asarray(face), 1, 3.0, jnp.asarray(mouth), 5.0))
  freq = np.bincount(keep[:, 0] % 4, minlength=4) / rows
  np.testing.assert_allclose(freq, np.array([1, 3, 5, 7]) / 16, atol=0.03)
  with pytest.raises(ValueError, match="mouth_bias"):
    masking.face_aware_keep(jax.random.key(0), jnp.asarray(face), 1, 3.0, jnp.asarray(mouth), 0.0)
  with pytest.raises(ValueError, match="differ"):
    masking.face_aware_keep(jax.random.key(0), jnp.asarray(face), 1, 3.0, jnp.asarray(mouth[:, :8]), 2.0)


def test_without_a_key_the_heaviest_patches_are_kept():
  """The evaluation view: no noise, the K heaviest patches, mouth before face before background, ties to lower index."""
  face = np.array([[0, 1, 1, 1, 1, 0, 0, 0]], np.float32)
  mouth = np.array([[0, 0, 0, 1, 0.5, 0, 0, 0]], np.float32)
  keep = masking.face_aware_keep(None, jnp.asarray(face), 4, 8.0, jnp.asarray(mouth), 100.0)
  np.testing.assert_array_equal(keep, [[1, 2, 3, 4]])
  keep = masking.face_aware_keep(None, jnp.asarray(face), 2, 8.0, jnp.asarray(mouth), 100.0)
  np.testing.assert_array_equal(keep, [[3, 4]])
  keep = masking.face_aware_keep(None, jnp.asarray(face), 6, 8.0)
  np.testing.assert_array_equal(keep, [[0, 1, 2, 3, 4, 5]])


def test_face_bias_one_is_uniform():
  rows, patches, k = 4000, 64, 16
  keep = _face_aware_keep(jax.random.key(6), jnp.asarray(_half_face(rows, patches)), k, 1.0)
  freq = np.bincount(np.asarray(keep).ravel(), minlength=patches) / rows
  np.testing.assert_allclose(freq, k / patches, atol=5 * np.sqrt(0.25 * 0.75 / rows))


def test_keep_to_mask():
  keep = jnp.array([[0, 2], [1, 3]], jnp.int32)
  mask = _keep_to_mask(keep, 5)
  np.testing.assert_array_equal(mask, [[False, True, False, True, True], [True, False, True, False, True]])
  keep = _uniform_keep(jax.random.key(0), 8, 196, 49)
  assert np.all(np.asarray(_keep_to_mask(keep, 196)).sum(axis=1) == 196 - 49)


def _frames(key, n=6, size=8):
  return jax.random.uniform(key, (n, size, size, 3))


def test_jitter_zero_strength_is_identity():
  frames = _frames(jax.random.key(0))
  out = masking.photometric_jitter(jax.random.key(1), frames, 0.0, 0.0, 0.0, 0.0, 0.0)
  np.testing.assert_array_equal(out, frames)
  out = _jitter(jax.random.key(1), frames, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0, grayscale_p=0.0)
  np.testing.assert_array_equal(out, frames)


def test_jitter_range_determinism_and_per_frame_draws():
  frame = _frames(jax.random.key(0), n=1)
  frames = jnp.concatenate([frame] * 8, axis=0)  # the same frame 8 times
  out = _jitter(jax.random.key(2), frames)
  assert out.shape == frames.shape and out.dtype == frames.dtype
  assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
  flat = np.asarray(out).reshape(8, -1)
  assert all(not np.allclose(flat[i], flat[j]) for i in range(8) for j in range(i + 1, 8))
  np.testing.assert_array_equal(out, _jitter(jax.random.key(2), frames))
  # Strong jitter pushes values past [0, 1] before clamping: the output must still be in range.
  strong = _jitter(jax.random.key(3), _frames(jax.random.key(4), n=16), brightness=2.0, contrast=2.0,
                   saturation=2.0, hue=0.5, grayscale_p=0.5)
  assert float(strong.min()) >= 0.0 and float(strong.max()) <= 1.0


def test_jitter_one_draw_per_clip():
  """frames_per_draw=T: the T frames of a clip get one transform (same input -> same output), clips differ."""
  clips, t = 4, 3
  frames = jnp.repeat(_frames(jax.random.key(0), n=1), clips * t, axis=0)
  for p in (0.0, 0.5):  # Also the grayscale draw, which only shows when some clips are grey and some not.
    out = np.asarray(_jitter(jax.random.key(8), frames, grayscale_p=p, frames_per_draw=t)).reshape(clips, t, -1)
    np.testing.assert_array_equal(out, np.broadcast_to(out[:, :1], out.shape))
    assert all(not np.allclose(out[i, 0], out[j, 0]) for i in range(clips) for j in range(i + 1, clips))
  with pytest.raises(ValueError, match="frames_per_draw=5"):
    masking.photometric_jitter(jax.random.key(0), frames, frames_per_draw=5)


def test_jitter_brightness_factor_range():
  frames = jnp.full((64, 2, 2, 3), 0.5)
  out = _jitter(jax.random.key(5), frames, brightness=0.4, contrast=0.0, saturation=0.0, hue=0.0, grayscale_p=0.0)
  factors = np.asarray(out[:, 0, 0, 0]) / 0.5
  assert factors.min() >= 0.6 - 1e-6 and factors.max() <= 1.4 + 1e-6
  assert factors.min() < 0.7 and factors.max() > 1.3  # spans the range
  np.testing.assert_allclose(np.asarray(out) / 0.5, np.broadcast_to(factors[:, None, None, None], out.shape),
                             rtol=1e-6)


def test_grayscale_with_probability_one():
  out = _jitter(jax.random.key(6), _frames(jax.random.key(7)), grayscale_p=1.0)
  np.testing.assert_allclose(out[..., 0], out[..., 1], atol=1e-6)
  np.testing.assert_allclose(out[..., 0], out[..., 2], atol=1e-6)


def test_hue_shift_matches_colorsys():
  pixels = np.random.default_rng(0).random((3, 5, 5, 3)).astype(np.float32)
  pixels[0, 0, 0] = [0.3, 0.3, 0.3]  # grey: hue undefined, must stay grey
  shifts = np.array([0.0, 0.1, -0.07], np.float32)
  out = np.asarray(jax.jit(masking._adjust_hue)(jnp.asarray(pixels), jnp.asarray(shifts)))
  for n in range(3):
    for y in range(5):
      for x in range(5):
        h, s, v = colorsys.rgb_to_hsv(*pixels[n, y, x])
        expected = colorsys.hsv_to_rgb((h + shifts[n]) % 1.0, s, v)
        np.testing.assert_allclose(out[n, y, x], expected, atol=1e-5)


def test_identity_sources():
  batch, t = 5, 4
  seen = np.zeros((batch * t, batch * t), bool)
  for seed in range(50):
    src = np.asarray(_identity_sources(jax.random.key(seed), batch, t))
    assert src.shape == (batch * t,) and src.dtype == np.int32
    n = np.arange(batch * t)
    assert np.all(src // t == n // t), "source frame must come from the same clip"
    assert np.all(src != n), "never the frame itself"
    seen[n, src] = True
  same_clip_other = (n[:, None] // t == n[None, :] // t) & (n[:, None] != n[None, :])
  np.testing.assert_array_equal(seen, same_clip_other)  # every other frame of the clip gets used
  np.testing.assert_array_equal(_identity_sources(jax.random.key(0), 3, 1), np.arange(3))
  a = _identity_sources(jax.random.key(0), 8, 4)
  np.testing.assert_array_equal(a, _identity_sources(jax.random.key(0), 8, 4))
  assert not np.array_equal(a, _identity_sources(jax.random.key(1), 8, 4))


def test_ambient_sources_shift_within_the_clip():
  batch, t, lo, hi = 4, 16, 3, 6
  n = np.arange(batch * t)
  shifts = []
  for seed in range(20):
    src = np.asarray(_ambient_sources(jax.random.key(seed), batch, t, lo, hi))
    assert src.shape == (batch * t,) and src.dtype == np.int32
    assert np.all(src // t == n // t), "z_amb must come from the same clip"
    shifts.append(src - n)
  shifts = np.concatenate(shifts)
  assert lo <= np.abs(shifts).min() and np.abs(shifts).max() <= hi  # even at the clip's ends (direction flipped)
  assert set(np.unique(np.abs(shifts))) == set(range(lo, hi + 1))
  assert (shifts > 0).any() and (shifts < 0).any()
  np.testing.assert_array_equal(_ambient_sources(jax.random.key(0), batch, t, lo, hi),
                                _ambient_sources(jax.random.key(0), batch, t, lo, hi))
  with pytest.raises(ValueError, match="ambient shift range"):
    masking.ambient_sources(jax.random.key(0), batch, 4, 3, 6)


def test_identity_sources_uniform_over_other_frames():
  batch, t = 2000, 4
  src = np.asarray(_identity_sources(jax.random.key(9), batch, t)).reshape(batch, t) % t
  for frame in range(t):
    freq = np.bincount(src[:, frame], minlength=t) / batch
    expected = np.where(np.arange(t) == frame, 0.0, 1.0 / (t - 1))
    np.testing.assert_allclose(freq, expected, atol=0.05)


def test_jit_matches_eager():
  key = jax.random.key(0)
  face = jnp.asarray(_half_face(4, 16))
  np.testing.assert_array_equal(_uniform_keep(key, 4, 16, 4), masking.uniform_keep(key, 4, 16, 4))
  np.testing.assert_array_equal(_face_aware_keep(key, face, 4, 5.0), masking.face_aware_keep(key, face, 4, 5.0))
  np.testing.assert_array_equal(_identity_sources(key, 3, 5), masking.identity_sources(key, 3, 5))


def test_partner_identity_sources_take_the_other_clip_of_the_pair():
  batch, t = 6, 8
  source = np.asarray(masking.partner_identity_sources(jax.random.key(0), batch, t)).reshape(batch, t)
  for b in range(batch):
    assert np.all(source[b] // t == (b ^ 1))  # Clips 2i and 2i+1 give each other z_id.
  # Uniform over the partner's frames: every frame is drawn, roughly equally often.
  many = np.asarray(masking.partner_identity_sources(jax.random.key(1), 2, 4000)) % 4000
  assert np.unique(many).size > 3000
  with pytest.raises(ValueError, match="odd"):
    masking.partner_identity_sources(jax.random.key(0), 3, t)

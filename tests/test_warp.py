"""Pose warps (synclipmae/warp.py) and the pose-warp loss, checked against the synthetic renderer's own poses."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from data_pipelines.synthetic import render
from synclipmae import losses, warp

POSES = np.array([[0.05, -0.03, 0.12, 1.08], [-0.04, 0.04, -0.10, 0.93]], np.float32)  # (tx, ty, rot, scale)


@pytest.fixture(scope="module")
def two_poses():
  """One face, closed mouth, eyes open, drawn in two head poses: frames, face-outside-mouth weights, true poses."""
  rng = np.random.default_rng(0)
  identity = render.sample_identity(rng)
  ambient = render.sample_ambient(rng, 2)
  ambient["pose"], ambient["blink"][:] = POSES, 0.0
  out = render.render(identity, np.tile([[0.0, 0.5, 0.0]], (2, 1)).astype(np.float32), ambient, 64)
  frames = jnp.asarray(out["frames"] / 255.0, jnp.float32)
  weights = jnp.asarray(out["face_mask"] & ~out["mouth_mask"], jnp.float32)
  true = jnp.asarray(np.c_[POSES[:, :3], np.log(POSES[:, 3])])
  return frames, weights, true


def _relative(pose):
  """The reference-from-target map A_r A_t^-1, t_r - A_r A_t^-1 t_t: all that frames can tell of two poses."""
  (a_t, t_t), (a_r, t_r) = warp.pose_to_affine(pose[0]), warp.pose_to_affine(pose[1])
  a = a_r @ jnp.linalg.inv(a_t)
  return np.asarray(a), np.asarray(t_r - a @ t_t)


def test_equal_poses_sample_every_pixel_at_its_centre():
  pose = jnp.asarray([[0.03, -0.02, 0.1, 0.05]] * 2)
  coords = warp.sampling_grid(pose[:1], pose[1:], 16)
  rows, cols = np.meshgrid(np.arange(16), np.arange(16), indexing="ij")
  np.testing.assert_allclose(coords[0], np.stack([rows, cols], -1), atol=1e-4)
  image = jax.random.uniform(jax.random.key(0), (1, 16, 16, 3))
  np.testing.assert_allclose(warp.warp(image, coords), image, atol=1e-5)


def test_translation_moves_the_image_by_whole_pixels():
  image = jax.random.uniform(jax.random.key(1), (1, 16, 16, 2))
  # The reference shows the face 2 pixels further right (+x) and 1 lower (+y): target pixel (r, c) = ref (r+1, c+2).
  coords = warp.sampling_grid(jnp.zeros((1, 4)), jnp.asarray([[2 / 16, 1 / 16, 0.0, 0.0]]), 16)
  np.testing.assert_allclose(warp.warp(image, coords)[0, :15, :14], image[0, 1:, 2:], atol=1e-5)


def test_blur_keeps_constants_and_smooths():
  flat = jnp.full((1, 8, 8, 3), 0.4)
  np.testing.assert_allclose(warp.blur(flat, 2.0), flat, atol=1e-6)
  spike = jnp.zeros((1, 9, 9, 1)).at[0, 4, 4, 0].set(1.0)
  out = np.asarray(warp.blur(spike, 1.0))[0, :, :, 0]
  assert out.sum() == pytest.approx(1.0, abs=0.01) and out[4, 4] < 0.2 and out[4, 5] == pytest.approx(out[5, 4])


def test_true_poses_explain_the_face_and_fitting_recovers_them(two_poses):
  """The loss is small at the renderer's poses, large without a warp, and Adam from zero finds the relative pose."""
  frames, weights, true = two_poses
  fn = jax.jit(jax.value_and_grad(lambda p: losses.pose_warp_loss(frames[:1], frames[1:], p[:1], p[1:],
                                                                  weights[:1])))
  at_truth, at_zero = float(fn(true)[0]), float(fn(jnp.zeros((2, 4)))[0])
  assert at_truth < 0.15 and at_zero > 20 * at_truth
  pose, opt = jnp.zeros((2, 4)), optax.adam(1e-2)
  state = opt.init(pose)
  for _ in range(300):
    _, grad = fn(pose)
    updates, state = opt.update(grad, state)
    pose = optax.apply_updates(pose, updates)
  (a_fit, t_fit), (a_true, t_true) = _relative(pose), _relative(true)
  np.testing.assert_allclose(a_fit, a_true, atol=0.02)
  np.testing.assert_allclose(t_fit, t_true, atol=0.005)  # A third of a pixel at 64 px.


def test_loss_ignores_pixels_without_weight(two_poses):
  """At the unblurred scale only weighted target pixels count (blurred scales see their neighbours too)."""
  frames, weights, true = two_poses
  changed = frames.at[0].set(jnp.where(weights[0][..., None] > 0, frames[0], 1.0 - frames[0]))
  loss = lambda f: losses.pose_warp_loss(f[:1], frames[1:], true[:1], true[1:], weights[:1], sigmas=(0.0,))
  np.testing.assert_allclose(loss(changed), loss(frames), rtol=1e-5)
  assert float(loss(frames.at[0].set(1.0 - frames[0]))) > 10 * float(loss(frames))


def test_appearance_codes_draw_what_a_warp_cannot():
  """A blink is no warp: the pose-warp loss of an open-eyed reference against a blinking target stays high at the
  true pose, and falls once a face-coordinate appearance difference (fitted here) may add the closed lids."""
  rng = np.random.default_rng(3)
  identity = render.sample_identity(rng)
  ambient = render.sample_ambient(rng, 2)
  ambient["pose"] = POSES
  ambient["blink"] = np.array([1.0, 0.0], np.float32)  # Target: eyes shut; reference: open.
  out = render.render(identity, np.tile([[0.0, 0.5, 0.0]], (2, 1)).astype(np.float32), ambient, 64)
  frames = jnp.asarray(out["frames"] / 255.0, jnp.float32)
  weights = jnp.asarray(out["face_mask"] & ~out["mouth_mask"], jnp.float32)[:1]
  pose = jnp.asarray(np.c_[POSES[:, :3], np.log(POSES[:, 3])])
  fn = jax.jit(jax.value_and_grad(lambda app: losses.pose_warp_loss(
      frames[:1], frames[1:], pose[:1], pose[1:], weights, appearance=app[:1], reference_appearance=app[1:])))
  app = jnp.zeros((2, 32, 32, 3))
  without = float(fn(app)[0])
  opt = optax.adam(1e-2)
  state = opt.init(app)
  for _ in range(200):
    _, grad = fn(app)
    updates, state = opt.update(grad, state)
    app = optax.apply_updates(app, updates)
  assert float(fn(app)[0]) < 0.5 * without

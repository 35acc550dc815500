"""Tests for the procedural face renderer: shapes, determinism, exact factor separation, visible responses."""

from __future__ import annotations

import numpy as np
import pytest

from data_pipelines.synthetic import render as R

SIZE = 64


def _ambient(n, blink=0.0, expr=0, intensity=0.0, pose=(0.0, 0.0, 0.0, 1.0)):
  return {
      "blink": np.full(n, blink, np.float32),
      "pose": np.tile(np.asarray(pose, np.float32), (n, 1)),
      "expression": np.full(n, expr, np.int32),
      "expression_intensity": np.full(n, intensity, np.float32),
  }


def _mouth(n, open_=0.0, width=0.5, round_=0.0):
  return np.tile(np.array([[open_, width, round_]], np.float32), (n, 1))


def _identity(seed):
  return R.sample_identity(np.random.default_rng(seed))


def _dilate(mask):
  """3x3 binary dilation over the last two axes."""
  out = mask.copy()
  out[..., 1:, :] |= mask[..., :-1, :]
  out[..., :-1, :] |= mask[..., 1:, :]
  grown = out.copy()
  out[..., :, 1:] |= grown[..., :, :-1]
  out[..., :, :-1] |= grown[..., :, 1:]
  return out


def _changed(a, b):
  return np.any(a != b, axis=-1)


def _canonical(pose, size):
  """Canonical face coordinates of every pixel centre: [T, size, size] each (the documented convention)."""
  c = (np.arange(size) + 0.5) / size - 0.5
  x, y = c[None, None, :], c[None, :, None]
  tx, ty, rot, s = (pose[:, i].astype(np.float64)[:, None, None] for i in range(4))
  dx, dy = x - tx, y - ty
  return (np.cos(rot) * dx + np.sin(rot) * dy) / s, (-np.sin(rot) * dx + np.cos(rot) * dy) / s


def test_shapes_and_dtypes():
  ident = _identity(0)
  amb = R.sample_ambient(np.random.default_rng(1), 7)
  out = R.render(ident, _mouth(7, 0.4), amb, size=SIZE)
  assert set(out) == {"frames", "face_mask", "mouth_mask"}
  assert out["frames"].shape == (7, SIZE, SIZE, 3) and out["frames"].dtype == np.uint8
  for key in ("face_mask", "mouth_mask"):
    assert out[key].shape == (7, SIZE, SIZE) and out[key].dtype == np.bool_
  assert out["face_mask"].any() and out["mouth_mask"].any()
  # The mouth region lies (almost entirely) on the face.
  assert (out["mouth_mask"] & out["face_mask"]).sum() > 0.8 * out["mouth_mask"].sum()


@pytest.mark.parametrize("size", [32, 128, 256])
def test_other_sizes(size):
  out = R.render(_identity(3), _mouth(2, 1.0), _ambient(2), size=size)
  assert out["frames"].shape == (2, size, size, 3)
  assert out["face_mask"].shape == out["mouth_mask"].shape == (2, size, size)
  assert out["face_mask"].mean() > 0.2


def test_empty_clip():
  out = R.render(_identity(0), np.zeros((0, 3), np.float32), _ambient(0))
  assert out["frames"].shape == (0, SIZE, SIZE, 3)


def test_determinism():
  ident_a, ident_b = _identity(5), _identity(5)
  assert ident_a == ident_b
  amb_a = R.sample_ambient(np.random.default_rng(9), 40)
  amb_b = R.sample_ambient(np.random.default_rng(9), 40)
  for key in amb_a:
    np.testing.assert_array_equal(amb_a[key], amb_b[key])
  mouth = np.random.default_rng(2).uniform(0, 1, (40, 3)).astype(np.float32)
  out_a = R.render(ident_a, mouth, amb_a)
  out_b = R.render(ident_b, mouth.copy(), amb_b)
  for key in out_a:
    np.testing.assert_array_equal(out_a[key], out_b[key])


def test_frames_do_not_depend_on_other_frames():
  """Rendering a clip, a sub-range or single frames gives identical pixels (re-rendered tracks may be cut)."""
  styles = set()
  for seed in range(12):
    ident = _identity(seed)
    styles.add(ident.hair_style)
    rng = np.random.default_rng(seed)
    n = 8
    amb = {"blink": rng.uniform(0, 1, n).astype(np.float32),
           "pose": np.stack([rng.uniform(-0.08, 0.08, n), rng.uniform(-0.08, 0.08, n), rng.uniform(-0.15, 0.15, n),
                             rng.uniform(0.9, 1.1, n)], 1).astype(np.float32),
           "expression": rng.integers(0, len(R.EXPRESSIONS), n).astype(np.int32),
           "expression_intensity": rng.uniform(0, 1, n).astype(np.float32)}
    mouth = rng.uniform(0, 1, (n, 3)).astype(np.float32)
    full = R.render(ident, mouth, amb)
    for t in (0, n // 2, n - 1):
      one = R.render(ident, mouth[t:t + 1], {k: v[t:t + 1] for k, v in amb.items()})
      for key in full:
        np.testing.assert_array_equal(full[key][t], one[key][0], err_msg=f"{key} seed={seed} t={t}")
  assert len(styles) >= 4


@pytest.mark.parametrize("size", [32, 64, 128])
def test_mouth_track_changes_only_mouth_mask(size):
  rng = np.random.default_rng(size)
  for seed in range(4):
    ident = _identity(seed)
    amb = R.sample_ambient(np.random.default_rng(100 + seed), 30)
    amb["pose"][:, 2] = np.linspace(-0.15, 0.15, 30)  # exercise rotation too
    amb["expression"][:] = seed + 1  # and expressions (they bend the mouth corners)
    m1 = rng.uniform(0, 1, (30, 3)).astype(np.float32)
    m2 = rng.uniform(0, 1, (30, 3)).astype(np.float32)
    m2[:5] = [[1, 1, 0]] * 5  # extreme states
    m2[5:10] = [[1, 0, 1]] * 5
    a, b = R.render(ident, m1, amb, size), R.render(ident, m2, amb, size)
    np.testing.assert_array_equal(a["face_mask"], b["face_mask"])
    np.testing.assert_array_equal(a["mouth_mask"], b["mouth_mask"])
    changed = _changed(a["frames"], b["frames"])
    assert changed.any()
    assert not (changed & ~_dilate(a["mouth_mask"])).any(), "mouth track leaked outside mouth_mask"


def test_masks_do_not_depend_on_mouth_blink_or_expression():
  ident = _identity(7)
  pose = (0.03, -0.02, 0.1, 1.05)
  ref = R.render(ident, _mouth(1), _ambient(1, pose=pose))
  for mouth, amb in ((_mouth(1, 1.0, 1.0, 1.0), _ambient(1, pose=pose)),
                     (_mouth(1), _ambient(1, blink=1.0, expr=1, intensity=1.0, pose=pose)),
                     (_mouth(1), _ambient(1, expr=3, intensity=1.0, pose=pose))):
    out = R.render(ident, mouth, amb)
    np.testing.assert_array_equal(out["face_mask"], ref["face_mask"])
    np.testing.assert_array_equal(out["mouth_mask"], ref["mouth_mask"])


def test_blink_changes_only_eye_areas():
  for seed in range(4):
    ident = _identity(seed)
    amb = R.sample_ambient(np.random.default_rng(200 + seed), 12)
    amb["expression"][:] = seed % len(R.EXPRESSIONS)
    amb["expression_intensity"][:] = 0.0 if seed % len(R.EXPRESSIONS) == 0 else 1.0
    open_eyes = dict(amb, blink=np.zeros(12, np.float32))
    closed = dict(amb, blink=np.ones(12, np.float32))
    mouth = np.random.default_rng(seed).uniform(0, 1, (12, 3)).astype(np.float32)
    a, b = R.render(ident, mouth, open_eyes), R.render(ident, mouth, closed)
    changed = _changed(a["frames"], b["frames"])
    assert changed.sum() > 12 * 10, "closing the eyes should be clearly visible"
    u, v = _canonical(amb["pose"], SIZE)
    margin = 1.5 / (SIZE * amb["pose"][:, 3].astype(np.float64))[:, None, None]
    ew, eh = ident.eye_width, ident.eye_openness * ident.eye_width
    in_eye = ((np.abs(np.abs(u) - ident.eye_spacing) <= 1.3 * ew + margin)
              & (v >= ident.eye_y - 2.0 * eh - 0.01 - margin) & (v <= ident.eye_y + 1.5 * eh + margin))
    assert not (changed & ~in_eye).any(), "blink changed pixels outside the eyes"
    assert not (changed & a["mouth_mask"]).any()


def test_mouth_visibly_opens():
  diffs = []
  for seed in range(10):
    out = R.render(_identity(seed), np.array([[0, 0.5, 0], [1, 0.5, 0]], np.float32), _ambient(2))
    frames = out["frames"].astype(np.float64)
    region = out["mouth_mask"][0]
    diffs.append(np.abs(frames[0] - frames[1]).mean(-1)[region].mean())
  assert min(diffs) > 12, diffs
  assert np.mean(diffs) > 20, diffs


def test_width_and_round_change_the_mouth():
  for seed in range(6):
    ident = _identity(seed)
    mouths = np.array([[0.3, 0.0, 0.0], [0.3, 1.0, 0.0], [0.3, 0.5, 0.0], [0.3, 0.5, 1.0]], np.float32)
    out = R.render(ident, mouths, _ambient(4))
    frames = out["frames"].astype(np.float64)
    region = out["mouth_mask"][0]
    width_diff = np.abs(frames[0] - frames[1]).mean(-1)[region].mean()
    round_diff = np.abs(frames[2] - frames[3]).mean(-1)[region].mean()
    assert width_diff > 3, (seed, width_diff)
    assert round_diff > 3, (seed, round_diff)


def test_identities_differ_more_than_ambient():
  between, within = [], []
  for seed in range(6):
    ident_a, ident_b = _identity(seed), _identity(seed + 50)
    amb_1 = R.sample_ambient(np.random.default_rng(seed), 20)
    amb_2 = R.sample_ambient(np.random.default_rng(seed + 999), 20)
    mouth = np.random.default_rng(seed).uniform(0, 1, (20, 3)).astype(np.float32)
    a1, a2, b1 = R.render(ident_a, mouth, amb_1), R.render(ident_a, mouth, amb_2), R.render(ident_b, mouth, amb_1)
    f_a1, f_a2, f_b1 = (o["frames"].astype(np.float64) for o in (a1, a2, b1))
    between.append(np.abs(f_a1 - f_b1).mean())
    outside_same = ~(a1["face_mask"] | a2["face_mask"])
    outside_diff = ~(a1["face_mask"] | b1["face_mask"])
    within_bg = np.abs(f_a1 - f_a2).mean(-1)[outside_same].mean()
    between_bg = np.abs(f_a1 - f_b1).mean(-1)[outside_diff].mean()
    within.append(within_bg)
    assert within_bg < 0.5 * between_bg, (seed, within_bg, between_bg)
  assert np.mean(between) > 30, between
  assert np.mean(within) < 0.4 * np.mean(between)


def test_identity_parameters_vary():
  idents = [_identity(s) for s in range(60)]
  vecs = np.stack([i.to_vector() for i in idents])
  assert np.all(vecs.std(0) > 0), "every identity parameter should vary"
  assert len({i.hair_style for i in idents}) == len(R.HAIR_STYLES)


@pytest.mark.parametrize("expr", [1, 2, 3, 4])
def test_expressions_visible_outside_mouth(expr):
  for seed in range(4):
    ident = _identity(seed)
    mouth = _mouth(1, 0.2)
    neutral = R.render(ident, mouth, _ambient(1))
    expressive = R.render(ident, mouth, _ambient(1, expr=expr, intensity=1.0))
    diff = np.abs(neutral["frames"][0].astype(int) - expressive["frames"][0]).max(-1)
    outside = (diff > 10) & ~neutral["mouth_mask"][0]
    assert outside.sum() >= 10, (R.EXPRESSIONS[expr], seed, outside.sum())
    # Intensity 0 is exactly neutral.
    zero = R.render(ident, mouth, _ambient(1, expr=expr, intensity=0.0))
    np.testing.assert_array_equal(zero["frames"], neutral["frames"])


def test_expression_moves_mouth_corners_not_opening():
  ident = _identity(1)
  mouth = _mouth(1, 0.0)
  neutral = R.render(ident, mouth, _ambient(1))["frames"][0].astype(int)
  for expr in (1, 2):  # happy: corners up; sad: corners down
    out = R.render(ident, mouth, _ambient(1, expr=expr, intensity=1.0))
    diff = np.abs(out["frames"][0].astype(int) - neutral).max(-1)
    assert ((diff > 10) & out["mouth_mask"][0]).sum() >= 4
  # The dark cavity of an open mouth has (nearly) the same area with and without an expression.
  def cavity_area(amb):
    frame = R.render(ident, _mouth(1, 1.0), amb, size=128)["frames"][0].astype(int)
    return ((frame.max(-1) < 60) & (frame[..., 0] < 50)).sum()
  base = cavity_area(_ambient(1))
  for expr in range(1, 5):
    area = cavity_area(_ambient(1, expr=expr, intensity=1.0))
    assert abs(area - base) <= 0.2 * base, (expr, area, base)


def test_identity_vector_round_trip():
  n = R.Identity.vector_length()
  for seed in range(20):
    ident = _identity(seed)
    vec = ident.to_vector()
    assert vec.dtype == np.float32 and vec.shape == (n,)
    back = R.Identity.from_vector(vec)
    assert back == ident
    np.testing.assert_array_equal(back.to_vector(), vec)
    np.testing.assert_array_equal(R.render(back, _mouth(1, 0.5), _ambient(1))["frames"],
                                  R.render(ident, _mouth(1, 0.5), _ambient(1))["frames"])
  with pytest.raises(ValueError):
    R.Identity.from_vector(np.zeros(n + 1, np.float32))


def test_face_fills_most_of_the_width_and_is_centred():
  for seed in range(20):
    mask = R.render(_identity(seed), _mouth(1), _ambient(1))["face_mask"][0]
    cols = np.nonzero(mask.any(0))[0]
    width = (cols[-1] - cols[0] + 1) / SIZE
    assert 0.5 <= width <= 0.72, (seed, width)
    assert abs((cols[0] + cols[-1]) / 2 - (SIZE - 1) / 2) <= 1.5


def test_pose_convention():
  ident = _identity(4)
  def centroid(mask):
    ys, xs = np.nonzero(mask)
    return xs.mean(), ys.mean()
  base = R.render(ident, _mouth(1), _ambient(1))
  moved = R.render(ident, _mouth(1), _ambient(1, pose=(0.08, -0.05, 0.0, 1.0)))
  (x0, y0), (x1, y1) = centroid(base["face_mask"][0]), centroid(moved["face_mask"][0])
  assert abs((x1 - x0) - 0.08 * SIZE) < 1.0 and abs((y1 - y0) + 0.05 * SIZE) < 1.0
  rotated = R.render(ident, _mouth(1), _ambient(1, pose=(0.0, 0.0, 0.15, 1.0)))
  # Positive rotation turns the face clockwise on screen: the mouth (below the centre) moves left.
  assert centroid(rotated["mouth_mask"][0])[0] < centroid(base["mouth_mask"][0])[0] - 1.0
  bigger = R.render(ident, _mouth(1), _ambient(1, pose=(0.0, 0.0, 0.0, 1.1)))
  assert bigger["face_mask"].sum() > 1.1 * base["face_mask"].sum()


def test_sample_ambient_statistics():
  fps, n = 25.0, 1000  # 40 s
  for seed in range(5):
    amb = R.sample_ambient(np.random.default_rng(seed), n, fps)
    assert amb["blink"].shape == (n,) and amb["blink"].dtype == np.float32
    assert amb["pose"].shape == (n, 4) and amb["pose"].dtype == np.float32
    assert amb["expression"].shape == (n,) and amb["expression"].dtype == np.int32
    assert amb["expression_intensity"].shape == (n,) and amb["expression_intensity"].dtype == np.float32
    blink = amb["blink"]
    assert blink.min() >= 0 and blink.max() <= 1
    onsets = np.nonzero((blink[1:] > 0.5) & (blink[:-1] <= 0.5))[0]
    assert 4 <= len(onsets) <= 25, len(onsets)  # one every ~2-6 s
    assert np.all(np.diff(onsets) / fps > 1.0)
    assert (blink > 0.5).mean() < 0.1
    pose = amb["pose"]
    assert np.abs(pose[:, :2]).max() <= 0.08 + 1e-6
    assert np.abs(pose[:, 2]).max() <= 0.15 + 1e-6
    assert 0.9 - 1e-6 <= pose[:, 3].min() and pose[:, 3].max() <= 1.1 + 1e-6
    assert np.abs(np.diff(pose, axis=0)).max() < 0.02  # smooth
    expr = amb["expression"]
    assert np.all(expr == expr[0]) and 0 <= expr[0] < len(R.EXPRESSIONS)
    inten = amb["expression_intensity"]
    assert inten.min() >= 0 and inten.max() <= 1
    if expr[0] == 0:
      assert np.all(inten == 0)
    else:
      assert inten[0] < 0.05 and inten[int(0.8 * fps):].min() > 0.5
      assert np.all(inten[int(0.8 * fps):] == inten[-1])


def test_sample_ambient_covers_all_expressions():
  seen = {int(R.sample_ambient(np.random.default_rng(s), 5)["expression"][0]) for s in range(40)}
  assert seen == set(range(len(R.EXPRESSIONS)))


def test_validation_errors():
  ident = _identity(0)
  with pytest.raises(ValueError, match="match"):
    R.render(ident, _mouth(5), _ambient(4))
  with pytest.raises(ValueError, match="mouth"):
    R.render(ident, np.zeros((5, 2), np.float32), _ambient(5))
  with pytest.raises(ValueError, match="size"):
    R.render(ident, _mouth(2), _ambient(2), size=8)
  with pytest.raises(ValueError, match="size"):
    R.render(ident, _mouth(2), _ambient(2), size=64.0)
  with pytest.raises(ValueError, match="missing"):
    R.render(ident, _mouth(2), {"blink": np.zeros(2, np.float32)})
  bad = _ambient(2)
  bad["expression"][:] = len(R.EXPRESSIONS)
  with pytest.raises(ValueError, match="expression"):
    R.render(ident, _mouth(2), bad)

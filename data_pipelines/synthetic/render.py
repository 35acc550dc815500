"""Procedural talking-face renderer with three independent, exactly known factors.

The synthetic corpus needs faces whose generating factors are known exactly, so that a self-supervised model can be
checked for disentangling them and evaluations can render arbitrary recombinations:

* identity: fixed per person (`Identity`, drawn by `sample_identity`): face shape, skin, hair, eyes, brows, nose,
  lips, ears, clothing and background.
* vocal motion: a per-frame mouth track `[T, 3]` = (open, width, round), produced from speech elsewhere.
* ambient motion: per-frame blinks, head pose and a facial expression (`sample_ambient`), independent of speech.

`render` draws all three into RGB frames with numpy only, vectorised over frames. Every shape is a smooth signed
distance function (ellipses, rounded boxes, bent bands) evaluated in canonical face coordinates and turned into
coverage with a one-pixel anti-aliased edge, so motion is sub-pixel smooth and the output is exactly deterministic.

Coordinate conventions (canonical face coordinates, shared by all `Identity` geometry fields):
  origin at the image centre, x to the right, y DOWN, unit = the image width at pose scale 1 (the image spans
  [-0.5, 0.5] in both axes). A frame's pose (tx, ty, rot, scale) maps a canonical point c to the image point
  p = (tx, ty) + scale * R(rot) @ c, with R(rot) = [[cos, -sin], [sin, cos]] (positive rot turns the face
  clockwise on screen because y points down). Pixel (row i, column j) has its centre at
  ((j + 0.5) / size - 0.5, (i + 0.5) / size - 0.5).

Factor separation is exact at the pixel level: the mouth track only affects pixels inside the returned
`mouth_mask` (plus at most the half-pixel anti-aliasing fringe around it), blinks only affect the two eye areas,
and `face_mask` depends on identity and pose only.
"""

from __future__ import annotations

import colorsys
import dataclasses
import math

import numpy as np

EXPRESSIONS: tuple[str, ...] = ("neutral", "happy", "sad", "surprised", "angry")

HAIR_STYLES: tuple[str, ...] = ("short", "long", "bob", "curly", "buzz")

MIN_SIZE = 16
MAX_SIZE = 1024

# Per-expression deltas at intensity 1, indexed like EXPRESSIONS. Canonical units unless noted.
# Expressions move brows, lids, cheeks and the mouth corners; they never change the mouth opening.
_BROW_DY = np.array([0.0, -0.008, -0.004, -0.045, 0.024], np.float32)  # whole brow up (<0) / down (>0)
_BROW_INNER = np.array([0.0, 0.0, 0.042, 0.004, -0.034], np.float32)  # inner end raised (>0) / lowered (<0)
_BROW_ARCH = np.array([0.0, 0.004, -0.006, 0.012, -0.004], np.float32)  # extra arch of the brow middle
_MOUTH_BEND = np.array([0.0, 0.034, -0.028, 0.0, -0.016], np.float32)  # mouth corners up (>0) / down (<0)
_LID_TOP = np.array([0.0, -0.18, -0.3, 0.45, -0.28], np.float32)  # relative change of the upper eye opening
_LID_BOT = np.array([0.0, -0.45, 0.0, 0.25, -0.12], np.float32)  # relative change of the lower eye opening
_CHEEK = np.array([0.0, 1.0, 0.0, 0.0, 0.0], np.float32)  # raised cheeks (happy)
_FROWN = np.array([0.0, 0.0, 0.35, 0.0, 1.0], np.float32)  # vertical frown lines between the brows

# Mouth geometry as a function of the vocal track (see the mouth section of `render`).
_OPEN_BASE = 0.095  # cavity height at open=1, round=0 (canonical units)
_OPEN_ROUND = 0.025  # extra cavity height from rounding
_UPPER_SHARE = 0.25  # share of the opening taken by the upper lip moving up (rest: jaw/lower lip down)

_CAVITY = (0.12, 0.02, 0.03)
_TEETH = (0.93, 0.91, 0.86)
_TONGUE = (0.72, 0.30, 0.32)
_EYE_WHITE = (0.94, 0.93, 0.90)
_PUPIL = (0.05, 0.04, 0.04)

_RGB_FIELDS = frozenset({"skin_color", "hair_color", "brow_color", "iris_color", "lip_color", "background_top",
                         "background_bottom", "shirt_color"})
_INT_FIELDS = frozenset({"hair_style"})


def _f32(x) -> float:
  """Rounds to the nearest float32 so that `Identity.to_vector` / `from_vector` round-trip exactly."""
  return float(np.float32(x))


@dataclasses.dataclass(frozen=True)
class Identity:
  """Everything that is fixed for one synthetic person.

  Geometry is in canonical face coordinates (see the module docstring); colours are RGB in [0, 1]. All floats are
  stored rounded to float32 so `to_vector` / `from_vector` are exact inverses.
  """
  # Face shape.
  face_width: float  # half width of the cranium ellipse
  face_height: float  # half height scale of the face
  face_center_y: float  # vertical position of the face centre
  jaw_width: float  # jaw half width relative to face_width (narrow = pointed chin)
  jaw_length: float  # jaw half height relative to face_height (long = long chin)
  skin_color: tuple[float, float, float]
  ear_size: float
  neck_width: float  # relative to face_width
  # Hair.
  hair_style: int  # index into HAIR_STYLES
  hair_color: tuple[float, float, float]
  hair_volume: float  # how far the hair stands off the head (relative)
  hair_length: float  # how far long hair falls below the face centre (canonical units, 0 = short)
  hairline: float  # y of the hair's lower edge on the forehead at x = 0
  hair_part: float  # slope of that edge (side parting / swept fringe)
  hair_side: float  # how far the hair comes down at the temples (sideburns)
  # Eyes.
  eye_spacing: float  # x of the eye centres (half the inter-eye distance)
  eye_y: float  # y of the eye centres
  eye_width: float  # half width of an eye
  eye_openness: float  # upper half height of the eye opening / eye_width
  iris_size: float  # iris radius / eye_width
  iris_color: tuple[float, float, float]
  # Brows.
  brow_color: tuple[float, float, float]
  brow_thickness: float  # half thickness at the inner end
  brow_length: float  # half length / eye_width
  brow_gap: float  # distance of the brow above the eye opening
  brow_tilt: float  # outer end raised (>0) or lowered (<0), canonical units
  brow_arch: float  # middle of the brow raised by this much
  # Nose.
  nose_length: float  # 0..1: nose bottom between just below the eyes and just above the mouth region
  nose_width: float  # half width of the nose bottom
  # Mouth.
  mouth_y: float  # y of the lip seam of the closed mouth
  mouth_width: float  # half width of the neutral mouth (width=0.5, round=0)
  lip_thickness: float
  lip_color: tuple[float, float, float]
  # Scene.
  background_top: tuple[float, float, float]
  background_bottom: tuple[float, float, float]
  background_angle: float  # direction of the background gradient (radians, 0 = top to bottom)
  shirt_color: tuple[float, float, float]

  def __post_init__(self):
    for f in dataclasses.fields(self):
      value = getattr(self, f.name)
      if f.name in _RGB_FIELDS:
        value = tuple(_f32(c) for c in value)
        if len(value) != 3:
          raise ValueError(f"Identity.{f.name} must be an RGB triple, got {value!r}")
      elif f.name in _INT_FIELDS:
        value = int(value)
      else:
        value = _f32(value)
      object.__setattr__(self, f.name, value)
    if not 0 <= self.hair_style < len(HAIR_STYLES):
      raise ValueError(f"Identity.hair_style must be in [0, {len(HAIR_STYLES)}), got {self.hair_style}")

  @classmethod
  def vector_length(cls) -> int:
    """Length of `to_vector()`, so label storage can be allocated up front."""
    return sum(3 if f.name in _RGB_FIELDS else 1 for f in dataclasses.fields(cls))

  def to_vector(self) -> np.ndarray:
    """Flattens all fields (declaration order, RGB as 3 values) into float32 for labels / metadata."""
    out: list[float] = []
    for f in dataclasses.fields(self):
      value = getattr(self, f.name)
      out.extend(value if f.name in _RGB_FIELDS else (value,))
    return np.asarray(out, dtype=np.float32)

  @classmethod
  def from_vector(cls, v) -> "Identity":
    """Exact inverse of `to_vector`."""
    v = np.asarray(v, dtype=np.float32).reshape(-1)
    if v.shape[0] != cls.vector_length():
      raise ValueError(f"identity vector must have length {cls.vector_length()}, got {v.shape[0]}")
    kwargs, i = {}, 0
    for f in dataclasses.fields(cls):
      if f.name in _RGB_FIELDS:
        kwargs[f.name] = tuple(float(c) for c in v[i:i + 3])
        i += 3
      elif f.name in _INT_FIELDS:
        kwargs[f.name] = int(round(float(v[i])))
        i += 1
      else:
        kwargs[f.name] = float(v[i])
        i += 1
    return cls(**kwargs)


# ----------------------------------------------------------------------------------------------------------------
# Sampling.

_SKIN_ANCHORS = np.array([(0.31, 0.19, 0.12), (0.45, 0.29, 0.19), (0.66, 0.46, 0.33), (0.84, 0.64, 0.50),
                          (0.96, 0.80, 0.69), (0.99, 0.88, 0.80)])
_HAIR_PALETTE = np.array([(0.07, 0.06, 0.06), (0.22, 0.13, 0.08), (0.42, 0.27, 0.15), (0.80, 0.65, 0.38),
                          (0.93, 0.82, 0.55), (0.62, 0.25, 0.10), (0.62, 0.62, 0.62), (0.90, 0.90, 0.88)])
_HAIR_WEIGHTS = np.array([0.24, 0.2, 0.15, 0.1, 0.06, 0.09, 0.07, 0.04])
_IRIS_PALETTE = np.array([(0.32, 0.18, 0.08), (0.14, 0.09, 0.06), (0.25, 0.48, 0.80), (0.28, 0.55, 0.30),
                          (0.50, 0.56, 0.62), (0.52, 0.40, 0.18)])


def _hsv(h: float, s: float, v: float) -> tuple[float, float, float]:
  return colorsys.hsv_to_rgb(h % 1.0, float(np.clip(s, 0, 1)), float(np.clip(v, 0, 1)))


def _clip_rgb(c) -> tuple[float, float, float]:
  return tuple(float(x) for x in np.clip(np.asarray(c, dtype=np.float64), 0.0, 1.0))


def sample_identity(rng: np.random.Generator) -> Identity:
  """Draws one person. Parameters are spread widely so identities are easy to tell apart even at 32x32."""
  u = rng.uniform
  # Face.
  face_width = u(0.275, 0.34)
  face_height = u(0.325, 0.38)
  face_center_y = u(0.015, 0.045)
  jaw_width = u(0.66, 0.95)
  jaw_length = u(0.66, 0.8)
  t = u(0, len(_SKIN_ANCHORS) - 1)
  k = min(int(t), len(_SKIN_ANCHORS) - 2)
  skin = _SKIN_ANCHORS[k] + (t - k) * (_SKIN_ANCHORS[k + 1] - _SKIN_ANCHORS[k])
  skin = skin * u(0.94, 1.04) + rng.normal(0, 0.02, 3) + np.array([u(-0.02, 0.04), 0.0, u(-0.04, 0.02)])
  skin_color = _clip_rgb(skin)
  ear_size = u(0.8, 1.2)
  neck_width = u(0.45, 0.62)
  # Hair.
  hair_style = int(rng.choice(len(HAIR_STYLES), p=[0.3, 0.22, 0.18, 0.15, 0.15]))
  if u() < 0.07:  # occasional dyed hair, for colour variety
    hair = np.array(_hsv(u(), u(0.5, 0.85), u(0.45, 0.9)))
  else:
    hair = _HAIR_PALETTE[rng.choice(len(_HAIR_PALETTE), p=_HAIR_WEIGHTS / _HAIR_WEIGHTS.sum())]
    hair = hair * u(0.85, 1.12) + rng.normal(0, 0.025, 3)
  hair_color = _clip_rgb(hair)
  # Eyes and brows (needed before the hairline, which must stay above the brows).
  eye_width = u(0.046, 0.066)
  eye_spacing = u(max(0.092, eye_width * 1.7), 0.128)
  eye_y = face_center_y + u(-0.045, -0.005)
  eye_openness = u(0.5, 0.72)
  iris_size = u(0.48, 0.62)
  iris = _IRIS_PALETTE[rng.integers(len(_IRIS_PALETTE))] * u(0.85, 1.15) + rng.normal(0, 0.03, 3)
  iris_color = _clip_rgb(iris)
  brow_dark = u(0.35, 0.75)
  brow_color = _clip_rgb(np.asarray(hair_color) * brow_dark + np.asarray(skin_color) * 0.1 * brow_dark)
  brow_thickness = u(0.008, 0.018)
  brow_length = u(1.0, 1.35)
  brow_gap = u(0.026, 0.045)
  brow_tilt = u(-0.012, 0.018)
  brow_arch = u(0.0, 0.016)
  brow_top = eye_y - eye_openness * eye_width - brow_gap - brow_thickness - brow_arch
  # Hair shape per style.
  style = HAIR_STYLES[hair_style]
  skull_top = face_center_y - 0.03 - 0.9 * face_height
  if style == "short":
    hair_volume, hair_length = u(0.04, 0.3), 0.0
    hairline = u(skull_top + 0.09, brow_top - 0.05)
    hair_part, hair_side = u(-0.25, 0.25), u(0.04, 0.12)
  elif style == "long":
    hair_volume, hair_length = u(0.1, 0.45), u(0.3, 0.55)
    hairline = u(skull_top + 0.08, brow_top - 0.04)
    hair_part, hair_side = u(-0.4, 0.4), u(0.08, 0.2)
  elif style == "bob":
    hair_volume, hair_length = u(0.15, 0.4), u(0.16, 0.3)
    hairline = u(brow_top - 0.07, brow_top - 0.022)
    hair_part, hair_side = u(-0.08, 0.08), u(0.1, 0.2)
  elif style == "curly":
    hair_volume, hair_length = u(0.5, 0.95), u(0.0, 0.2)
    hairline = u(skull_top + 0.08, brow_top - 0.045)
    hair_part, hair_side = u(-0.1, 0.1), u(0.05, 0.14)
  else:  # buzz / receding
    hair_volume, hair_length = u(0.0, 0.03), 0.0
    hairline = u(skull_top + 0.05, skull_top + 0.13)
    hair_part, hair_side = 0.0, u(0.0, 0.06)
  # Keep the eyes uncovered (blinks must stay visible): raise the hairline where it would reach them.
  xs = np.linspace(-(eye_spacing + eye_width), eye_spacing + eye_width, 17)
  line = _hairline_y(xs, hairline, hair_part, hair_side, face_width)
  hairline -= max(0.0, float(line.max()) - (eye_y - eye_openness * eye_width - 0.012))
  # Mouth and nose.
  mouth_width = u(0.082, 0.112)
  lip_thickness = u(0.016, 0.03)
  mouth_y = face_center_y + face_height * u(0.47, 0.54)
  nose_length = u(0.2, 1.0)
  nose_width = u(0.028, 0.048)
  lip = np.asarray(skin_color) * np.array([0.9, 0.58, 0.58]) + np.array([0.08, 0.0, 0.02])
  lip = lip + u(0.0, 0.45) * (np.array([0.72, 0.16, 0.26]) - lip) + rng.normal(0, 0.02, 3)
  lip_color = _clip_rgb(lip)
  # Scene.
  h = u()
  bg_top = _hsv(h, u(0.1, 0.7), u(0.35, 0.97))
  bg_bottom = _hsv(h + u(-0.15, 0.15), u(0.1, 0.7), u(0.2, 0.9))
  background_angle = u(-math.pi, math.pi)
  shirt_color = _hsv(u(), u(0.0, 0.8), u(0.15, 0.9))
  return Identity(
      face_width=face_width, face_height=face_height, face_center_y=face_center_y, jaw_width=jaw_width,
      jaw_length=jaw_length, skin_color=skin_color, ear_size=ear_size, neck_width=neck_width,
      hair_style=hair_style, hair_color=hair_color, hair_volume=hair_volume, hair_length=hair_length,
      hairline=hairline, hair_part=hair_part, hair_side=hair_side, eye_spacing=eye_spacing, eye_y=eye_y,
      eye_width=eye_width, eye_openness=eye_openness, iris_size=iris_size, iris_color=iris_color,
      brow_color=brow_color, brow_thickness=brow_thickness, brow_length=brow_length, brow_gap=brow_gap,
      brow_tilt=brow_tilt, brow_arch=brow_arch, nose_length=nose_length, nose_width=nose_width, mouth_y=mouth_y,
      mouth_width=mouth_width, lip_thickness=lip_thickness, lip_color=lip_color, background_top=bg_top,
      background_bottom=bg_bottom, background_angle=background_angle, shirt_color=shirt_color)


def _hairline_y(x, hairline, part, side, face_width):
  """y of the lower edge of the hair in front at canonical x: a tilted, curved line that drops at the temples."""
  ax = np.abs(x)
  t = np.clip((ax - 0.5 * face_width) * (1.0 / (0.5 * face_width)), 0.0, 1.0)
  return hairline + part * x + side * (t * t) + (0.35 / face_width) * (ax * ax)


def _smoothstep(x):
  x = np.clip(x, 0.0, 1.0)
  return x * x * (3.0 - 2.0 * x)


def sample_ambient(rng: np.random.Generator, num_frames: int, fps: float = 25.0) -> dict[str, np.ndarray]:
  """Draws the speech-independent motion of one clip: blinks, head pose and one expression.

  Returns float32 "blink" [T] (lid closure in [0, 1]), float32 "pose" [T, 4] (tx, ty, rot, scale), int32
  "expression" [T] (index into EXPRESSIONS, constant over the clip) and float32 "expression_intensity" [T]
  (ramps in over the first ~0.5 s; 0 for neutral). It never sees the mouth track, so the factors stay independent.
  """
  num_frames = int(num_frames)
  if num_frames < 0:
    raise ValueError(f"num_frames must be >= 0, got {num_frames}")
  if not fps > 0:
    raise ValueError(f"fps must be > 0, got {fps}")
  t = np.arange(num_frames, dtype=np.float64) / fps
  duration = num_frames / fps

  # Blinks: a renewal process with ~2-6 s gaps; each blink closes quickly, holds briefly and opens more slowly.
  blink = np.zeros(num_frames, np.float64)
  start = rng.uniform(0.1, 3.0)
  while start < duration:
    length = rng.uniform(0.1, 0.25)
    lo, hi = int(math.floor(start * fps)), min(num_frames, int(math.ceil((start + length) * fps)) + 1)
    ph = (t[lo:hi] - start) / length
    closing = _smoothstep(ph / 0.35)
    opening = _smoothstep((1.0 - ph) / 0.5)
    blink[lo:hi] = np.maximum(blink[lo:hi], np.where((ph >= 0) & (ph <= 1), np.minimum(closing, opening), 0.0))
    start += length + min(1.6 + rng.exponential(2.4), 8.0)

  # Head pose: static offset plus a few slow sinusoids per component, then clipped to the documented ranges.
  limits = ((0.03, 0.045, 0.078), (0.03, 0.045, 0.078), (0.05, 0.09, 0.15), (0.04, 0.05, 0.1))
  pose = np.zeros((num_frames, 4), np.float64)
  for c, (off, amp, lim) in enumerate(limits):
    comp = np.full(num_frames, rng.uniform(-off, off))
    weights = rng.dirichlet(np.ones(3)) * amp * rng.uniform(0.3, 1.0)
    for w in weights:
      comp += w * np.sin(2 * np.pi * rng.uniform(0.05, 0.6) * t + rng.uniform(0, 2 * np.pi))
    pose[:, c] = np.clip(comp, -lim, lim)
  pose[:, 3] += 1.0

  # One expression per clip, ramping in over ~0.3-0.7 s and then held.
  expr = int(rng.integers(len(EXPRESSIONS)))
  level = 0.0 if expr == 0 else rng.uniform(0.6, 1.0)
  ramp = rng.uniform(0.3, 0.7)
  intensity = level * _smoothstep(t / ramp)
  return {
      "blink": blink.astype(np.float32),
      "pose": pose.astype(np.float32),
      "expression": np.full(num_frames, expr, np.int32),
      "expression_intensity": intensity.astype(np.float32),
  }


# ----------------------------------------------------------------------------------------------------------------
# Signed distance helpers. All take canonical coordinates (arrays broadcastable to [T, h, w]); negative inside.

def _sd_ellipse(x, y, a, b, thin=False):
  """Approximate signed distance to an axis-aligned ellipse (good to a few % near the edge, which is all AA needs).

  thin=True adds the exact bounds |x|-a and |y|-b, which keeps very flat ellipses (closing lids, a closed mouth)
  from leaking a line along their major axis.
  """
  xa, yb = x / a, y / b
  k0 = np.sqrt(xa * xa + yb * yb)
  xa /= a
  yb /= b
  k1 = np.sqrt(xa * xa + yb * yb)
  k1 += 1e-7 / np.minimum(a, b)
  k0m = k0 - 1.0
  k0 += 1e-7
  d = k0 * k0m / k1
  if thin:
    d = np.maximum(d, np.maximum(np.abs(x) - a, np.abs(y) - b))
  return d


def _sd_ellipse_fast(x, y, a: float, b: float):
  """Cheap ellipse distance, (r - 1) * min(a, b): fine for big roundish shapes, where only the edge width matters."""
  xa = x * (1.0 / a)
  xa *= xa
  yb = y * (1.0 / b)
  yb *= yb
  xa += yb
  np.sqrt(xa, out=xa)
  xa -= 1.0
  xa *= min(a, b)
  return xa


def _sd_ellipse_asym(x, y, a, b_top, b_bottom, thin=False):
  """Ellipse whose upper half (y < 0) and lower half have different half heights."""
  b = (y < 0) * (b_top - b_bottom)  # arithmetic select: np.where is several times slower here
  b += b_bottom
  return _sd_ellipse(x, y, a, b, thin)


def _sd_rbox(x, y, hx, hy, r):
  """Rounded box centred at the origin with half sizes (hx, hy) and corner radius r."""
  qx = np.abs(x) - (hx - r)
  qy = np.abs(y) - (hy - r)
  inside = np.minimum(np.maximum(qx, qy), 0.0)
  qx = np.maximum(qx, 0.0)
  qy = np.maximum(qy, 0.0)
  return np.sqrt(qx * qx + qy * qy) + inside - r


def _smin(a, b, k):
  """Smooth union of two distance fields (rounded join of width ~k)."""
  h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
  return b + (a - b) * h - k * h * (1.0 - h)


def _cover(d, inv_px):
  """Coverage with a one-pixel anti-aliased edge: clip(0.5 - d / pixel_size, 0, 1)."""
  a = d * -inv_px
  a += 0.5
  return np.clip(a, 0.0, 1.0, out=a)


def _over(img, a, color):
  """Composites colour with coverage `a` over the channel-planar image `img` [3, T, h, w] in place.

  `color` holds one entry per channel, each a scalar or an array broadcastable to `a` (per-pixel colour). The
  planar layout matters: broadcasting against a trailing RGB axis is ~10x slower in numpy.
  """
  tmp = np.empty_like(a)
  for k in range(3):
    ch = img[k]
    np.subtract(color[k], ch, out=tmp)
    tmp *= a
    ch += tmp


class _Patch:
  """A pixel window of one size in every frame, placed per frame around a canonical box.

  Drawing into per-frame windows (gathered from and scattered back to the image through a strided view) keeps the
  work proportional to a feature's size even when the head moves, unlike one window covering all frames' boxes.
  """

  def __init__(self, canvas: "_Canvas", i0: np.ndarray, j0: np.ndarray, h: int, w: int):
    self.t = np.arange(canvas.n)
    self.i0, self.j0, self.h, self.w = i0, j0, h, w
    xs = canvas.centers[j0[:, None] + np.arange(w)][:, None, :]
    ys = canvas.centers[i0[:, None] + np.arange(h)][:, :, None]
    (a, b, c), (d, e, f) = canvas.coef
    self.u = a * xs + (b * ys + c)  # [T, h, w] canonical x
    self.v = d * xs + (e * ys + f)  # [T, h, w] canonical y

  def _windows(self, arr):
    *lead, n_t, rows, cols = arr.shape
    st = arr.strides
    return np.lib.stride_tricks.as_strided(
        arr, (*lead, n_t, rows - self.h + 1, cols - self.w + 1, self.h, self.w),
        st[:-3] + (st[-3], st[-2], st[-1], st[-2], st[-1]), writeable=True)

  def get(self, arr: np.ndarray) -> np.ndarray:
    """Copies this patch out of `arr` [..., T, size, size] -> [..., T, h, w]."""
    return self._windows(arr)[..., self.t, self.i0, self.j0, :, :]

  def put(self, arr: np.ndarray, values) -> None:
    """Writes `values` [..., T, h, w] back into `arr` [..., T, size, size]."""
    self._windows(arr)[..., self.t, self.i0, self.j0, :, :] = values


class _Canvas:
  """Per-frame inverse pose: maps pixel windows to canonical face coordinates."""

  def __init__(self, pose: np.ndarray, size: int):
    self.size, self.n = size, len(pose)
    tx, ty, rot, scale = (pose[:, i].astype(np.float64) for i in range(4))
    self.tx, self.ty, self.scale, self.cos, self.sin = tx, ty, scale, np.cos(rot), np.sin(rot)
    # c = R^T (p - t) / scale  ->  u = A x + B y + C,  v = D x + E y + F.
    inv = 1.0 / scale
    coef = [(self.cos * inv, self.sin * inv, -(self.cos * tx + self.sin * ty) * inv),
            (-self.sin * inv, self.cos * inv, (self.sin * tx - self.cos * ty) * inv)]
    self.coef = [[k.astype(np.float32)[:, None, None] for k in row] for row in coef]
    self.inv_px = (size * scale).astype(np.float32)[:, None, None]  # 1 / (pixel size in canonical units)
    self.centers = ((np.arange(size) + 0.5) / size - 0.5).astype(np.float32)

  def patch(self, u0: float, u1: float, v0: float, v1: float) -> _Patch:
    """Per-frame windows covering the canonical box [u0, u1] x [v0, v1] plus a 1-2 pixel margin."""
    cu = np.array([u0, u1, u0, u1])[None, :]
    cv = np.array([v0, v0, v1, v1])[None, :]
    s, co, si = self.scale[:, None], self.cos[:, None], self.sin[:, None]
    x = self.tx[:, None] + s * (co * cu - si * cv)
    y = self.ty[:, None] + s * (si * cu + co * cv)
    n = self.size

    def span(p):
      lo = np.floor((p.min(1) + 0.5) * n - 0.5).astype(np.int64) - 1
      hi = np.ceil((p.max(1) + 0.5) * n - 0.5).astype(np.int64) + 2
      length = int(min(n, max(1, (hi - lo).max())))
      return np.clip(lo, 0, n - length), length

    j0, w = span(x)
    i0, h = span(y)
    return _Patch(self, i0, j0, h, w)


def _col(c, k=1.0):
  return np.asarray(c, np.float32) * np.float32(k)


def _frame_param(table: np.ndarray, expr: np.ndarray, intensity: np.ndarray) -> np.ndarray:
  return (table[expr] * intensity)[:, None, None]


def _mouth_extent(ident: Identity):
  """Canonical (half width, extent above, extent below mouth_y) containing every possible mouth state."""
  w_max = ident.mouth_width * 1.22
  upper = ident.lip_thickness * 1.4 * 1.1
  lower = ident.lip_thickness * 1.2 * 1.4 * 1.1
  h_max = _OPEN_BASE + _OPEN_ROUND
  bend = float(np.abs(_MOUTH_BEND).max())
  margin = 0.014
  above = max(_UPPER_SHARE * h_max + upper, bend + 0.02) + margin
  below = max((1 - _UPPER_SHARE) * h_max + lower, bend + 0.02) + margin
  return w_max + margin, above, below


def _mouth_region_sdf(ident: Identity, u, v):
  half_w, above, below = _mouth_extent(ident)
  half_h = 0.5 * (above + below)
  box = _sd_rbox(u, v - (ident.mouth_y + 0.5 * (below - above)), half_w, half_h, min(0.03, half_h))
  # Cut the lower corners: the lower lip's reach is an ellipse below the seam.
  return np.maximum(box, _sd_ellipse(u, v - ident.mouth_y, half_w / 0.92, below))


def _nose_bottom(ident: Identity) -> float:
  _, above, _ = _mouth_extent(ident)
  lo = ident.eye_y + 0.075
  hi = ident.mouth_y - above - 0.012
  return lo + ident.nose_length * max(hi - lo, 0.0)


# ----------------------------------------------------------------------------------------------------------------
# Rendering.

def _validate(identity, mouth, ambient, size):
  if not isinstance(identity, Identity):
    raise TypeError(f"identity must be an Identity, got {type(identity).__name__}")
  if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not MIN_SIZE <= size <= MAX_SIZE:
    raise ValueError(f"size must be an int in [{MIN_SIZE}, {MAX_SIZE}], got {size!r}")
  mouth = np.asarray(mouth, dtype=np.float32)
  if mouth.ndim != 2 or mouth.shape[1] != 3:
    raise ValueError(f"mouth must have shape [T, 3] (open, width, round), got {mouth.shape}")
  if not np.all(np.isfinite(mouth)):
    raise ValueError("mouth contains non-finite values")
  t = mouth.shape[0]
  missing = {"blink", "pose", "expression", "expression_intensity"} - set(ambient)
  if missing:
    raise ValueError(f"ambient is missing keys {sorted(missing)}")
  blink = np.asarray(ambient["blink"], np.float32)
  pose = np.asarray(ambient["pose"], np.float32)
  expr = np.asarray(ambient["expression"])
  inten = np.asarray(ambient["expression_intensity"], np.float32)
  for name, arr, shape in (("blink", blink, (t,)), ("pose", pose, (t, 4)), ("expression", expr, (t,)),
                           ("expression_intensity", inten, (t,))):
    if arr.shape != shape:
      raise ValueError(f"ambient[{name!r}] must have shape {shape} to match mouth [T={t}, 3], got {arr.shape}")
  if not (np.all(np.isfinite(blink)) and np.all(np.isfinite(pose)) and np.all(np.isfinite(inten))):
    raise ValueError("ambient contains non-finite values")
  if t and np.any(pose[:, 3] <= 0):
    raise ValueError("ambient['pose'] scale (column 3) must be > 0")
  if t and not np.issubdtype(expr.dtype, np.integer):
    raise ValueError(f"ambient['expression'] must be integer indices into EXPRESSIONS, got dtype {expr.dtype}")
  if t and (expr.min() < 0 or expr.max() >= len(EXPRESSIONS)):
    raise ValueError(f"ambient['expression'] must be in [0, {len(EXPRESSIONS)})")
  return np.clip(mouth, 0, 1), np.clip(blink, 0, 1), pose, expr.astype(np.int64), np.clip(inten, 0, 1)


def render(identity: Identity, mouth: np.ndarray, ambient: dict[str, np.ndarray], size: int = 64
           ) -> dict[str, np.ndarray]:
  """Renders identity + mouth track + ambient motion into frames and the face / mouth masks.

  Args:
    identity: the person.
    mouth: float32 [T, 3] (open, width, round), each in [0, 1] (values outside are clipped). open=0 closed lips,
      1 wide open; width 0.5 neutral, 1 spread, 0 narrow; round=1 pursed "oo".
    ambient: as returned by `sample_ambient` (per-frame expression / intensity changes are accepted too).
    size: output height and width in pixels (MIN_SIZE..MAX_SIZE; designed for 32..256).

  Returns:
    "frames" uint8 [T, size, size, 3]; "face_mask" bool [T, size, size] (face skin incl. features, excluding hair,
    ears, neck and background); "mouth_mask" bool [T, size, size] (fixed region in face coordinates that contains
    the mouth in every possible state: the mouth track changes no pixel outside it, up to the anti-aliased rim).
  """
  mouth, blink, pose, expr, inten = _validate(identity, mouth, ambient, size)
  ident = identity
  n_t = mouth.shape[0]
  img = np.empty((3, n_t, size, size), np.float32)  # channel-planar while drawing (see `_over`)
  face_mask = np.zeros((n_t, size, size), bool)
  mouth_mask = np.zeros((n_t, size, size), bool)
  if n_t == 0:
    return {"frames": np.zeros((0, size, size, 3), np.uint8), "face_mask": face_mask, "mouth_mask": mouth_mask}

  # Background: a static two-colour gradient (the camera does not move with the head).
  c = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
  g = (np.sin(ident.background_angle) * c[None, :] + np.cos(ident.background_angle) * c[:, None]) * 1.2 + 0.5
  g = _smoothstep(g)
  for k in range(3):
    img[k] = (ident.background_top[k] * (1 - g) + ident.background_bottom[k] * g)[None]

  cv = _Canvas(pose, size)
  ipx = cv.inv_px
  exp_f = lambda table: _frame_param(table, expr, inten)  # noqa: E731
  skin = _col(ident.skin_color)
  fw, fh, fcy = ident.face_width, ident.face_height, ident.face_center_y
  skull_cy, skull_a, skull_b = fcy - 0.03, fw, 0.9 * fh
  jaw_cy, jaw_a, jaw_b = fcy + 0.25 * fh, fw * ident.jaw_width, fh * ident.jaw_length
  chin = jaw_cy + jaw_b
  style = HAIR_STYLES[ident.hair_style]
  hair = _col(ident.hair_color)
  vol = 1.0 + 0.3 * ident.hair_volume
  hair_a = skull_a * (1.04 + 0.1 * ident.hair_volume) * vol
  hair_b = skull_b * (1.02 + 0.12 * ident.hair_volume) * vol
  hair_cy = skull_cy - (hair_b - skull_b) * 0.55
  if style == "buzz":
    hair_a, hair_b, hair_cy = skull_a * 1.012, skull_b * 1.012, skull_cy
  curl = 0.011 if style == "curly" else 0.0

  # Hair behind the head, cut off below the ears (long hair falls behind the shoulders).
  # Every layer's patch must contain its whole shape: a frame's pixels must not depend on the other frames' poses.
  if style != "buzz":
    bottom = max(hair_cy, fcy + ident.hair_length) + 0.05
    p = cv.patch(-hair_a - curl, hair_a + curl, hair_cy - hair_b - curl, bottom + curl)
    buf = p.get(img)
    d = np.maximum(_sd_ellipse_fast(p.u, p.v - hair_cy, hair_a, hair_b), p.v - bottom)
    if ident.hair_length > 0.02:
      box = _sd_rbox(p.u, p.v - 0.5 * (hair_cy + bottom), hair_a * 0.96, 0.5 * (bottom - hair_cy), 0.07)
      d = np.minimum(d, box)
    if curl:
      d += curl * np.sin(p.u * 75.0) * np.sin(p.v * 75.0)
    _over(buf, _cover(d, ipx), hair * 0.8)
    p.put(img, buf)

  # The neck, then shoulders / shirt with a neckline.
  neck_w = fw * ident.neck_width
  p = cv.patch(-neck_w, neck_w, chin - 0.12, chin + 0.52)
  buf = p.get(img)
  _over(buf, _cover(_sd_rbox(p.u, p.v - (chin + 0.2), neck_w, 0.32, 0.02), ipx), skin * 0.8)
  p.put(img, buf)
  shirt_top = fcy + fh + 0.02
  p = cv.patch(-0.56, 0.56, shirt_top, shirt_top + 0.56)
  buf = p.get(img)
  u, v = p.u, p.v
  shirt = np.maximum(_sd_ellipse_fast(u, v - (shirt_top + 0.28), 0.56, 0.28),
                     -_sd_ellipse_fast(u, v - (fcy + fh + 0.025), neck_w * 1.25, 0.07))
  _over(buf, _cover(shirt, ipx), _col(ident.shirt_color))
  p.put(img, buf)

  # Ears (behind the face edge).
  ear_y = ident.eye_y + 0.045
  ear_x = fw * 0.97
  ea, eb = 0.04 * ident.ear_size, 0.07 * ident.ear_size
  for side in (-1.0, 1.0):
    p = cv.patch(side * ear_x - ea, side * ear_x + ea, ear_y - eb, ear_y + eb)
    buf = p.get(img)
    au = p.u * side - ear_x
    vv = p.v - ear_y
    _over(buf, _cover(_sd_ellipse_fast(au, vv, ea, eb), ipx), skin * 0.9)
    _over(buf, _cover(_sd_ellipse_fast(au - 0.2 * ea, vv, ea * 0.45, eb * 0.6), ipx) * 0.6, skin * 0.68)
    p.put(img, buf)

  # Face: smooth union of the cranium and the jaw, darkened towards its rim and lit slightly from above.
  p = cv.patch(-fw - 0.01, fw + 0.01, skull_cy - skull_b, chin)
  buf = p.get(img)
  u, v = p.u, p.v
  d = _smin(_sd_ellipse_fast(u, v - skull_cy, skull_a, skull_b), _sd_ellipse_fast(u, v - jaw_cy, jaw_a, jaw_b), 0.06)
  face_cov = _cover(d, ipx)
  rim = np.clip(d * (1.0 / 0.09) + 1.0, 0.0, 1.0)
  rim *= rim
  shade = 1.0 - 0.2 * rim
  shade -= np.clip((v - fcy) * (0.07 / fh), -0.07, 0.07)
  _over(buf, face_cov, [shade * c for c in skin])
  p.put(img, buf)
  p.put(face_mask, face_cov > 0.5)

  # Eyes (both at once through |x|): socket shading, white, iris, pupil, highlight, lids that close with the blink.
  ew = ident.eye_width
  eh_top = ident.eye_openness * ew
  eh_bot = 0.8 * eh_top
  ex, ey = ident.eye_spacing, ident.eye_y
  b = blink[:, None, None]
  top_f = np.maximum(1.0 + exp_f(_LID_TOP), 0.05) * (1.0 - b)
  bot_f = np.maximum(1.0 + exp_f(_LID_BOT), 0.05) * (1.0 - b)
  close_dy = 0.3 * eh_bot  # the lids meet this far below the eye centre
  lash = max(0.0065, 0.45 / size)
  p = cv.patch(-ex - ew * 1.15, ex + ew * 1.15, ey - eh_top * 1.5 - lash, ey + eh_bot * 1.25 + lash)
  buf = p.get(img)
  x = np.abs(p.u) - ex
  y = p.v - ey
  socket = _sd_ellipse_asym(x, y, ew * 1.12, eh_top * 1.45, eh_bot * 1.1)
  _over(buf, _cover(socket, ipx) * 0.35, skin * 0.72)
  oc = y - b * close_dy  # the opening's centre moves down to where the lids meet
  d_open = _sd_ellipse_asym(x, oc, ew, eh_top * top_f + 1e-4, eh_bot * bot_f + 1e-4, thin=True)
  a_open = _cover(d_open, ipx)
  _over(buf, a_open, _EYE_WHITE)
  ir = ident.iris_size * ew
  r_iris = np.sqrt(x * x + y * y)
  _over(buf, _cover(r_iris - ir, ipx) * a_open, _col(ident.iris_color))
  _over(buf, _cover(r_iris - ir * 0.45, ipx) * a_open, _PUPIL)
  hx, hy = x + ir * 0.35, y + ir * 0.35
  _over(buf, _cover(np.sqrt(hx * hx + hy * hy) - ir * 0.22, ipx) * a_open * 0.85, (1.0, 1.0, 1.0))
  # Lash line along the upper lid (it is also the closed-eye line), faint line along the lower lid.
  upper = np.clip((close_dy - y) * (1.0 / (0.4 * eh_bot)) + 0.6, 0.0, 1.0)
  d_lash = np.maximum(np.abs(d_open) - lash, np.abs(x) - ew * 1.04)
  _over(buf, _cover(d_lash, ipx) * upper, _col(ident.brow_color, 0.45))
  _over(buf, _cover(d_lash + 0.4 * lash, ipx) * (1.0 - upper) * 0.25, skin * 0.5)
  p.put(img, buf)

  # Brows: a tapered band, shifted / sheared / arched by the expression. Frown lines between them.
  bl = ident.brow_length * ew
  bt = ident.brow_thickness
  by = ey - eh_top - ident.brow_gap - bt
  bx = ex + 0.1 * ew
  brow_dy, brow_in, brow_arch = exp_f(_BROW_DY), exp_f(_BROW_INNER), exp_f(_BROW_ARCH) + ident.brow_arch
  reach = float(np.abs(_BROW_DY).max() + np.abs(_BROW_INNER).max() + np.abs(_BROW_ARCH).max())
  reach += ident.brow_arch + abs(ident.brow_tilt) + bt
  p = cv.patch(-bx - bl, bx + bl, by - reach, by + reach)
  buf = p.get(img)
  xm = np.abs(p.u) - bx  # inner end at xm = -bl, outer end at xm = +bl
  s = xm * (1.0 / bl)
  yc = by + brow_dy + (brow_in * 0.5) * s - (ident.brow_tilt * 0.5) * s - brow_arch * (1.0 - s * s)
  thick = bt * (1.0 - 0.4 * np.clip(0.5 * (s + 1.0), 0.0, 1.0))
  d = np.maximum(np.abs(p.v - yc) - thick, np.abs(xm) - bl)
  _over(buf, _cover(d, ipx), _col(ident.brow_color))
  frown = exp_f(_FROWN)
  if np.any(frown > 0):
    d = np.maximum(np.abs(np.abs(p.u) - 0.018) - 0.0045, np.abs(p.v - (by + 0.02)) - 0.022)
    _over(buf, _cover(d, ipx) * frown * 0.55, skin * 0.6)
  p.put(img, buf)

  # Nose: side shading, tip shadow and highlight, nostrils.
  ny = _nose_bottom(ident)
  nw = ident.nose_width
  p = cv.patch(-nw * 1.1, nw * 1.1, ey + 0.025, ny + 0.006)
  buf = p.get(img)
  u, v = p.u, p.v
  side = np.maximum(np.abs(np.abs(u) - nw * 0.55) - 0.006, np.maximum(ey + 0.03 - v, v - (ny - 0.015)))
  _over(buf, _cover(side, ipx) * 0.25, skin * 0.6)
  _over(buf, _cover(_sd_ellipse_fast(u, v - (ny - 0.014), nw * 1.05, 0.02), ipx) * 0.5, skin * 0.8)
  _over(buf, _cover(_sd_ellipse_fast(u, v - (ny - 0.018), nw * 0.55, 0.015), ipx) * 0.5, skin * 1.1)
  _over(buf, _cover(_sd_ellipse_fast(np.abs(u) - nw * 0.52, v - (ny - 0.006), nw * 0.34, 0.008), ipx) * 0.8,
        skin * 0.38)
  p.put(img, buf)

  # Cheeks (happy): raised and slightly flushed.
  cheek = exp_f(_CHEEK)
  if np.any(cheek > 0):
    cy_ = ey + 0.085
    p = cv.patch(-ex * 1.05 - 0.05, ex * 1.05 + 0.05, cy_ - 0.045, cy_ + 0.035)
    buf = p.get(img)
    d = _sd_ellipse_fast(np.abs(p.u) - ex * 1.05, p.v - (cy_ - 0.012 * cheek), 0.05, 0.032)
    a = np.clip(d * (-1.0 / 0.03), 0.0, 1.0) * cheek * 0.45
    _over(buf, a, np.minimum(skin * 1.12 + _col((0.08, 0.0, 0.0)), 1.0))
    p.put(img, buf)

  # Hair in front: the hair shape above the hairline (fringe, parting, temples). It is cut out of face_mask.
  hl0, part, side_drop = ident.hairline, ident.hair_part, ident.hair_side
  lowest = float(_hairline_y(np.linspace(-hair_a, hair_a, 257), hl0, part, side_drop, fw).max())
  p = cv.patch(-hair_a - curl, hair_a + curl, hair_cy - hair_b - curl, min(lowest, hair_cy + hair_b) + curl + 0.005)
  buf = p.get(img)
  u, v = p.u, p.v
  line = _hairline_y(u, hl0, part, side_drop, fw)
  d = np.maximum(_sd_ellipse_fast(u, v - hair_cy, hair_a, hair_b), v - line)
  if curl:
    d += curl * np.sin(u * 75.0) * np.sin(v * 75.0)
  a = _cover(d, ipx)
  if style == "buzz":
    a *= 0.7
  shade = 1.0 - 0.25 * np.clip((v - line) * (1.0 / 0.08) + 1.0, 0.0, 1.0)
  _over(buf, a, [shade * c for c in hair])
  p.put(img, buf)
  fm = p.get(face_mask)
  fm &= a < 0.5
  p.put(face_mask, fm)

  # Mouth: lips, seam, cavity with teeth and tongue. Everything is clipped to the fixed mouth region, so the vocal
  # track cannot change any pixel outside mouth_mask.
  half_w, above, below = _mouth_extent(ident)
  my = ident.mouth_y
  p = cv.patch(-half_w, half_w, my - above, my + below)
  buf = p.get(img)
  u, v = p.u, p.v
  d_reg = _mouth_region_sdf(ident, u, v)
  p.put(mouth_mask, d_reg <= 0)
  clip = _cover(d_reg, ipx)
  op, wd, rd = (mouth[:, i][:, None, None] for i in range(3))
  w = ident.mouth_width * (0.78 + 0.44 * wd) * (1.0 - 0.36 * rd)
  h = op * (_OPEN_BASE + _OPEN_ROUND * rd)
  ch = 0.5 * h
  cav_y = my + (0.5 - _UPPER_SHARE) * h
  spread = 1.0 - 0.2 * (wd - 0.5)
  ut = ident.lip_thickness * (0.95 + 0.45 * rd) * spread
  lt = ident.lip_thickness * 1.2 * (0.95 + 0.45 * rd) * spread
  xr = u / w
  yy = v - cav_y
  yy += exp_f(_MOUTH_BEND) * (xr * xr)  # corners up (happy) or down (sad, angry)
  lip = _col(ident.lip_color)
  lips = _sd_ellipse_asym(u, yy, w, ch + ut, ch + lt, thin=True)
  upper_lip = (yy < 0).astype(np.float32)
  lo_col = np.minimum(lip * 1.06, 1.0)
  _over(buf, _cover(lips, ipx) * clip, [lo_col[k] + (lip[k] * 0.85 - lo_col[k]) * upper_lip for k in range(3)])
  st = max(0.004, 0.4 / size)  # the seam between the lips; the cavity covers it when open
  d_seam = np.maximum(np.abs(yy) - st, np.abs(u) - w * 0.96)
  _over(buf, _cover(d_seam, ipx) * clip * 0.85, lip * 0.4)
  cw = w * (0.84 - 0.2 * rd)
  a_cav = _cover(_sd_ellipse(u, yy, cw, ch + 1e-4, thin=True), ipx) * clip
  teeth_h = np.minimum(0.4 * h, 0.024)
  a_teeth = _cover(np.maximum(yy - (teeth_h - ch), np.abs(u) - cw * 0.78), ipx)
  tb = 0.6 * ch + 1e-4
  tx = u / (cw * 0.7)
  ty = (yy - 0.9 * ch) / tb
  a_tongue = _cover((np.sqrt(tx * tx + ty * ty) - 1.0) * tb, ipx)
  low_h = np.minimum(0.2 * h, 0.012)
  a_low = _cover(np.maximum((ch - low_h) - yy, np.abs(u) - cw * 0.6), ipx) * 0.9
  mouth_col = []
  for k in range(3):
    col_k = _CAVITY[k] + a_teeth * (_TEETH[k] - _CAVITY[k])
    col_k += a_tongue * (_TONGUE[k] - col_k)
    col_k += a_low * (_TEETH[k] - col_k)
    mouth_col.append(col_k)
  _over(buf, a_cav, mouth_col)
  p.put(img, buf)

  img *= 255.0
  img += 0.5
  np.clip(img, 0.0, 255.0, out=img)
  frames = np.empty((n_t, size, size, 3), np.uint8)
  for k in range(3):
    frames[..., k] = img[k]
  return {"frames": frames, "face_mask": face_mask, "mouth_mask": mouth_mask}

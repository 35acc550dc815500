"""Face alignment: a similarity transform per frame onto a canonical template, crops, and face/mouth masks.

Why: the model sees faces at one scale and position, so that a mouth patch is in about the same place in every
clip and head motion does not masquerade as lip motion. A similarity transform (rotation, uniform scale,
translation) keeps the face's shape — an affine or projective fit would stretch faces towards the template.

Public API (stable; the prep runner calls it):

    clip = align_track(frames, track, size=128)   # frames uint8 [T, H, W, 3], track: faces.FaceTrack (all found)
    clip.frames       uint8 [T, S, S, 3]  aligned crops
    clip.face_masks   bool [T, S, S]      inside the face oval (forehead to chin, cheek to cheek)
    clip.mouth_masks  bool [T, S, S]      the outer lip contour, dilated by `mouth_margin`, within the face mask
    clip.landmarks    float32 [T, 468, 2] landmarks in crop pixels
    clip.transforms   float32 [T, 2, 3]   frame pixel -> crop pixel affine maps (cv2 convention)

`align_frames(frames, landmarks, size)` does the same from a landmark array, for callers without a FaceTrack.

The template: five anchors — the two eye centres (mean of each eye's contour, steadier than any single corner),
the nose tip and the two mouth corners — placed in a unit square (`TEMPLATE`, scaled by the crop size) so that
the whole face oval, chin included with the mouth open, fits inside with a margin. The layout is a generic
frontal face of our own choosing, in interocular units: eyes at (+-0.5, 0), nose tip 0.6 below the eye line, mouth
corners +-0.42 wide and 1.05 below; the eye line sits at 36 % of the crop height and the eyes are 28 % of the
crop width apart (36 px at 128).

The fit is a weighted least-squares similarity (Umeyama's closed form; in 2-D a complex-number regression).
Written here rather than taken from skimage.transform.SimilarityTransform because that has no point weights and
fits one frame per Python call; this fits all frames in one vectorised step. The weights favour the eyes
(`TEMPLATE_WEIGHTS`): the nose tip moves with head pitch and the mouth corners move with speech, and letting them
pull the fit would make the eyes — and the whole crop — wobble with every syllable. They still count, so that the
crop's scale and rotation use the whole face and a single bad eye point cannot tilt it.

Warping uses cv2.warpAffine (bilinear, edges replicated). When the crop shrinks the face by more than 2x
(e.g. 720p input), the frame is first reduced by an integer factor with area averaging, so the crop is not aliased.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from data_pipelines.prep import faces

ANCHOR_NAMES = ("right_eye", "left_eye", "nose_tip", "mouth_right", "mouth_left")
# (x, y) of the anchors in a unit square; x right, y down; "right" is the subject's (image left).
TEMPLATE = np.array([[0.36, 0.36], [0.64, 0.36], [0.50, 0.528], [0.3824, 0.654], [0.6176, 0.654]], np.float64)
TEMPLATE_WEIGHTS = np.array([1.0, 1.0, 0.25, 0.1, 0.1], np.float64)
DEFAULT_MOUTH_MARGIN = 0.03  # mouth mask dilation as a fraction of the crop size (4 px at 128)


class AlignmentError(ValueError):
  """Bad input to alignment; the message names the input and the problem."""


@dataclasses.dataclass(frozen=True, eq=False)
class AlignedClip:
  """Aligned crops, masks, crop-space landmarks and the transforms used (see the module docstring)."""
  frames: np.ndarray
  face_masks: np.ndarray
  mouth_masks: np.ndarray
  landmarks: np.ndarray
  transforms: np.ndarray

  def __len__(self) -> int:
    return len(self.frames)


def template(size: int) -> np.ndarray:
  """The anchor template [5, 2] in pixel coordinates of a `size` x `size` crop (pixel centres at integers)."""
  return TEMPLATE * size - 0.5


def anchor_points(landmarks: np.ndarray) -> np.ndarray:
  """[..., 468, >=2] landmarks -> [..., 5, 2] anchors in `ANCHOR_NAMES` order."""
  xy = np.asarray(landmarks)[..., :2]
  return np.stack([xy[..., list(faces.RIGHT_EYE), :].mean(-2), xy[..., list(faces.LEFT_EYE), :].mean(-2),
                   xy[..., faces.NOSE_TIP, :], xy[..., faces.MOUTH_RIGHT_CORNER, :],
                   xy[..., faces.MOUTH_LEFT_CORNER, :]], axis=-2)


def eye_centres(landmarks: np.ndarray) -> np.ndarray:
  """[..., 468, >=2] landmarks -> [..., 2, 2]: the subject's right then left eye centre."""
  return anchor_points(landmarks)[..., :2, :]


def fit_similarity(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
  """Weighted least-squares similarity maps: src [T, N, 2] -> dst [N, 2]; returns [T, 2, 3] (x' = A x + b).

  Minimises sum_i w_i |s R src_i + b - dst_i|^2 per frame. With points as complex numbers the map is
  z -> a z + b, and the optimum is a = sum w (d - d_mean) conj(s - s_mean) / sum w |s - s_mean|^2.
  """
  src = np.asarray(src, np.float64)
  dst = np.asarray(dst, np.float64)
  n = dst.shape[0]
  if src.ndim != 3 or src.shape[1:] != (n, 2) or dst.shape != (n, 2) or n < 2:
    raise AlignmentError(f"fit_similarity needs src [T, N, 2] and dst [N, 2] with N >= 2, got {src.shape} and "
                         f"{dst.shape}")
  w = np.ones(n) if weights is None else np.asarray(weights, np.float64)
  if w.shape != (n,) or (w < 0).any() or w.sum() <= 0:
    raise AlignmentError(f"weights must be {n} non-negative numbers, not all zero, got {w}")
  w = w / w.sum()
  s = src[..., 0] + 1j * src[..., 1]
  d = dst[:, 0] + 1j * dst[:, 1]
  s_mean = (s * w).sum(-1, keepdims=True)
  d_mean = (d * w).sum()
  s0, d0 = s - s_mean, d - d_mean
  spread = (w * np.abs(s0) ** 2).sum(-1)
  if not np.all(spread > 1e-12):
    raise AlignmentError("fit_similarity: source points of some frame coincide (or are NaN); cannot fit")
  a = (w * d0 * np.conj(s0)).sum(-1) / spread
  b = d_mean - a * s_mean[:, 0]
  return np.stack([np.stack([a.real, -a.imag, b.real], -1), np.stack([a.imag, a.real, b.imag], -1)], axis=-2)


def apply_transforms(transforms: np.ndarray, points: np.ndarray) -> np.ndarray:
  """[T, 2, 3] maps applied to [T, N, >=2] points -> [T, N, 2]."""
  points = np.asarray(points)[..., :2]
  return np.einsum("tij,tnj->tni", transforms[..., :2], points) + transforms[:, None, :, 2]


def _warp(frame: np.ndarray, transform: np.ndarray, size: int) -> np.ndarray:
  """One crop; when the map shrinks the frame more than 2x, the part of the frame under the crop is first reduced
  by an integer factor with area averaging (bilinear sampling alone would alias)."""
  scale = float(np.sqrt(abs(np.linalg.det(transform[:, :2]))))
  factor = int(1 / scale) if scale < 0.5 else 1
  if factor > 1:
    height, width = frame.shape[:2]
    # The frame window under the crop (plus a margin), with a size divisible by the factor.
    inverse = cv2.invertAffineTransform(transform)
    corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], np.float64) - 0.5
    source = corners @ inverse[:, :2].T + inverse[:, 2]
    x0, y0 = np.maximum(np.floor(source.min(0)).astype(int) - 2 * factor, 0)
    x1, y1 = np.minimum(np.ceil(source.max(0)).astype(int) + 2 * factor, [width, height])
    x1, y1 = x0 + (x1 - x0) // factor * factor, y0 + (y1 - y0) // factor * factor
    if x1 - x0 < factor or y1 - y0 < factor:  # the crop lies off the frame: reduce the whole frame
      x0, y0, x1, y1 = 0, 0, width - width % factor, height - height % factor
    reduced = cv2.resize(frame[y0:y1, x0:x1], ((x1 - x0) // factor, (y1 - y0) // factor),
                         interpolation=cv2.INTER_AREA)
    # Reduced pixel q averages window pixels factor*q ... factor*q + factor - 1, centred at factor*q + (factor-1)/2.
    offset = np.array([x0, y0]) + (factor - 1) / 2
    transform = np.concatenate([transform[:, :2] * factor, (transform[:, 2] + transform[:, :2] @ offset)[:, None]],
                               axis=1)
    frame = reduced
  return cv2.warpAffine(frame, transform, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _fill(points: np.ndarray, size: int) -> np.ndarray:
  """Filled polygon [N, 2] (crop pixels) as a uint8 {0, 1} image, with 1/16-pixel vertex precision."""
  image = np.zeros((size, size), np.uint8)
  cv2.fillPoly(image, [np.round(points * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
  return image


def region_masks(landmarks: np.ndarray, size: int, mouth_margin: float = DEFAULT_MOUTH_MARGIN
                 ) -> tuple[np.ndarray, np.ndarray]:
  """Face and mouth masks bool [T, size, size] from crop-space landmarks [T, 468, >=2].

  The mouth mask is the outer lip polygon dilated by round(mouth_margin * size) pixels (a disc): enough to cover
  the landmark error (1-2 px at 128) and the skin round the lips that moves with articulation, and to keep a thin
  closed mouth from becoming a sliver. It is then clipped to the face mask, so mouth ⊂ face always holds.
  """
  radius = int(round(mouth_margin * size))
  kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1)) if radius > 0 else None
  face_masks = np.zeros((len(landmarks), size, size), bool)
  mouth_masks = np.zeros_like(face_masks)
  for t, points in enumerate(np.asarray(landmarks)[..., :2]):
    face = _fill(points[list(faces.FACE_OVAL)], size)
    mouth = _fill(points[list(faces.LIPS_OUTER)], size)
    if kernel is not None:
      mouth = cv2.dilate(mouth, kernel)
    face_masks[t] = face > 0
    mouth_masks[t] = (mouth > 0) & face_masks[t]
  return face_masks, mouth_masks


def _check(frames, landmarks) -> tuple[np.ndarray, np.ndarray]:
  frames = np.asarray(frames)
  if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
    raise AlignmentError(f"frames must be uint8 RGB [T, H, W, 3], got {frames.dtype} array of shape {frames.shape}")
  landmarks = np.asarray(landmarks)
  if landmarks.ndim != 3 or landmarks.shape[:2] != (len(frames), faces.NUM_LANDMARKS) or landmarks.shape[2] < 2:
    raise AlignmentError(f"landmarks must be [T={len(frames)}, {faces.NUM_LANDMARKS}, 2 or 3] to match the frames, "
                         f"got shape {landmarks.shape}")
  missing = np.flatnonzero(~np.isfinite(landmarks[..., :2]).all(axis=(1, 2)))
  if missing.size:
    raise AlignmentError(f"landmarks are missing (NaN) on {missing.size} of {len(frames)} frames, first at frame "
                         f"{missing[0]}; align only the frames where a face was found (FaceTrack.segments())")
  return frames, landmarks


def align_frames(frames, landmarks, size: int = 128, mouth_margin: float = DEFAULT_MOUTH_MARGIN,
                 weights: np.ndarray = TEMPLATE_WEIGHTS) -> AlignedClip:
  """Aligns uint8 [T, H, W, 3] frames using landmarks [T, 468, 2|3] in frame pixels (none missing)."""
  if not isinstance(size, (int, np.integer)) or size < 16:
    raise AlignmentError(f"crop size must be an integer >= 16, got {size!r}")
  frames, landmarks = _check(frames, landmarks)
  transforms = fit_similarity(anchor_points(landmarks), template(size), weights)
  crops = np.stack([_warp(frame, m, size) for frame, m in zip(frames, transforms)]) if len(frames) else (
      np.zeros((0, size, size, 3), np.uint8))
  crop_landmarks = apply_transforms(transforms, landmarks).astype(np.float32)
  face_masks, mouth_masks = region_masks(crop_landmarks, size, mouth_margin)
  return AlignedClip(frames=crops, face_masks=face_masks, mouth_masks=mouth_masks, landmarks=crop_landmarks,
                     transforms=transforms.astype(np.float32))


def align_track(frames, track: faces.FaceTrack, size: int = 128, mouth_margin: float = DEFAULT_MOUTH_MARGIN,
                weights: np.ndarray = TEMPLATE_WEIGHTS) -> AlignedClip:
  """Aligns frames with a FaceTrack of the same length that found a face on every frame."""
  if len(track) != len(frames):
    raise AlignmentError(f"the track has {len(track)} frames but frames has {len(frames)}")
  return align_frames(frames, track.landmarks, size, mouth_margin, weights)

"""Alignment: the similarity fit, crops that hold the eyes on the template, face/mouth masks, known motion undone."""

import cv2
import numpy as np
import pytest
from skimage import data, transform
from test_faces import load_carphone

from data_pipelines.prep import align, faces


@pytest.fixture(scope="module")
def analyzer():
  with faces.FaceAnalyzer() as analyzer:
    yield analyzer


@pytest.fixture(scope="module")
def carphone_aligned(analyzer):
  frames = load_carphone()
  track = analyzer.track(frames)
  assert track.found.all()
  return frames, track, align.align_track(frames, track, size=128)


def _eye_error(clip: align.AlignedClip, size: int) -> np.ndarray:
  """Per frame, the larger distance (crop pixels) of the two eye centres from the template's."""
  return np.linalg.norm(align.eye_centres(clip.landmarks) - align.template(size)[:2], axis=-1).max(-1)


def test_fit_similarity_matches_skimage_and_recovers_a_known_map():
  rng = np.random.default_rng(0)
  src = rng.uniform(0, 100, (4, 7, 2))
  dst = rng.uniform(0, 100, (7, 2))
  ours = align.fit_similarity(src, dst)  # unweighted: the plain Umeyama fit
  for t in range(4):
    reference = transform.SimilarityTransform.from_estimate(src[t], dst)
    np.testing.assert_allclose(ours[t], reference.params[:2], atol=1e-8)
  # Points related exactly by a similarity are recovered with any weights.
  angle, scale, shift = 0.3, 1.7, np.array([5.0, -3.0])
  a = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
  maps = align.fit_similarity(((dst - shift) @ np.linalg.inv(a).T)[None], dst, weights=np.arange(1, 8))
  np.testing.assert_allclose(maps[0], np.concatenate([a, shift[:, None]], 1), atol=1e-9)
  # Weights pull the fit towards the heavy points.
  noisy = src[:1].copy()
  noisy[0, 0] += 30
  heavy = np.ones(7)
  heavy[0] = 50
  error = lambda m: np.linalg.norm(align.apply_transforms(m, noisy)[0, 0] - dst[0])
  assert error(align.fit_similarity(noisy, dst, heavy)) < error(align.fit_similarity(noisy, dst))
  with pytest.raises(align.AlignmentError, match="coincide"):
    align.fit_similarity(np.zeros((1, 7, 2)), dst)


def test_carphone_eyes_stay_on_the_template(carphone_aligned):
  frames, _, clip = carphone_aligned
  assert clip.frames.shape == (120, 128, 128, 3) and clip.frames.dtype == np.uint8
  assert clip.transforms.shape == (120, 2, 3) and clip.landmarks.shape == (120, faces.NUM_LANDMARKS, 2)
  assert _eye_error(clip, 128).max() < 2.0
  # The transforms really produced the crops: warping frame t with transforms[t] reproduces crop t.
  again = cv2.warpAffine(frames[7], clip.transforms[7].astype(np.float64), (128, 128), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REPLICATE)
  assert np.abs(again.astype(int) - clip.frames[7]).max() <= 1


def test_masks_cover_face_and_mouth(carphone_aligned):
  _, _, clip = carphone_aligned
  face, mouth = clip.face_masks, clip.mouth_masks
  assert face.dtype == np.bool_ and face.shape == (120, 128, 128) and mouth.shape == face.shape
  assert not (mouth & ~face).any()  # mouth inside face
  face_area, mouth_area = face.mean((1, 2)), mouth.mean((1, 2))
  assert (face_area > 0.25).all() and (face_area < 0.7).all()
  assert (mouth_area > 0.01).all() and (mouth_area < 0.15).all()
  eye_row = align.template(128)[:2, 1].max()
  rows = np.nonzero(mouth.any(axis=2))[1]
  assert rows.min() > eye_row + 10  # the mouth is well below the eyes
  # Every lip landmark is inside the mouth mask; eyes and nose are inside the face mask but not the mouth mask.
  for t in (0, 60, 119):
    for index in faces.LIPS_OUTER:
      x, y = np.round(clip.landmarks[t, index]).astype(int)
      assert mouth[t, y, x]
    for x, y in np.round(align.anchor_points(clip.landmarks[t])[:3]).astype(int):
      assert face[t, y, x] and not mouth[t, y, x]


def test_mouth_mask_margin(carphone_aligned):
  _, _, clip = carphone_aligned
  _, tight = align.region_masks(clip.landmarks[:5], 128, mouth_margin=0.0)
  _, wide = align.region_masks(clip.landmarks[:5], 128, mouth_margin=0.06)
  assert (tight <= clip.mouth_masks[:5]).all() and (clip.mouth_masks[:5] <= wide).all()
  assert tight.sum() < clip.mouth_masks[:5].sum() < wide.sum()


def _astronaut_video(num_frames: int = 20, size: int = 256):
  """The astronaut photo moved by a known, smoothly varying similarity: frame t = motion[t] applied to the photo.

  Over the 20 frames the head turns through +-15 degrees, zooms by +-15 % and drifts by +-15 px, as a real head
  might in under a second (smoothing assumes continuous motion, as in real video).
  """
  photo = data.astronaut()
  frames, motions = [], []
  for t in range(num_frames):
    phase = 2 * np.pi * t / num_frames
    angle, scale = np.deg2rad(15 * np.sin(phase)), 1 + 0.15 * np.sin(phase + 1)
    shift = 15 * np.array([np.sin(phase + 2), np.cos(phase)])
    # The photo's face centre (~(225, 130)) goes to the middle of the frame, rotated and scaled about it.
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    a = np.array([[c, -s], [s, c]])
    b = np.array([size / 2, size / 2]) + shift - a @ np.array([225.0, 130.0])
    motion = np.concatenate([a, b[:, None]], 1)
    frames.append(cv2.warpAffine(photo, motion, (size, size), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REFLECT))
    motions.append(motion)
  return np.stack(frames), np.stack(motions)


@pytest.mark.parametrize("smooth", [False, True])
def test_alignment_undoes_known_motion(analyzer, smooth):
  frames, motions = _astronaut_video()
  track = analyzer.track(frames, smooth=smooth)
  assert track.found.all()
  clip = align.align_track(frames, track, size=128)
  assert _eye_error(clip, 128).max() < 2.0
  # transforms[t] composed with motion[t] maps the photo to the crop; it should be the same map for every frame.
  homogeneous = lambda m: np.concatenate([m, [[0, 0, 1]]], 0)
  photo_to_crop = np.stack([clip.transforms[t].astype(np.float64) @ homogeneous(motions[t]) for t in range(20)])

  def spread(points):  # distance (crop pixels) of each frame's image of photo points from their mean image
    mapped = np.einsum("tij,nj->tni", photo_to_crop[:, :, :2], points) + photo_to_crop[:, None, :, 2]
    return np.linalg.norm(mapped - mapped.mean(0), axis=-1)

  inner = spread(np.array([[195.0, 100.0], [255.0, 100.0], [195.0, 170.0], [255.0, 170.0]]))  # eyes to mouth
  whole = spread(np.array([[175.0, 60.0], [275.0, 60.0], [175.0, 200.0], [275.0, 200.0]]))  # ~the whole crop
  assert inner.max() < 1.5 and whole.max() < 2.5 and whole.mean() < 1.0
  # Hence the crops themselves agree inside the face.
  inside = clip.face_masks.all(0)
  assert inside.mean() > 0.25
  crops = clip.frames.astype(np.float32)[:, inside]
  diff = np.abs(crops - crops.mean(0))
  assert diff.mean() < 5.0 and np.median(diff) < 3.0  # of 255; resampling and landmark noise only


def test_large_frames_are_reduced_before_warping():
  """A crop that shrinks the frame 5x samples the right places (checked on a linear ramp, which any correct
  averaging and interpolation keep exact), through the area-reduction path."""
  height, width = 720, 1280
  ramp = np.zeros((height, width, 3), np.float32)
  ramp[..., 0] = np.arange(width)[None, :]
  ramp[..., 1] = np.arange(height)[:, None]
  angle, scale = 0.2, 0.2
  a = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
  m = np.concatenate([a, (np.array([64.0, 64.0]) - a @ np.array([640.0, 360.0]))[:, None]], 1)
  crop = align._warp(ramp, m, 128)
  q = np.stack(np.meshgrid(np.arange(128), np.arange(128), indexing="xy"), -1).astype(np.float64)
  source = (q - m[:, 2]) @ np.linalg.inv(a).T
  inside = (source[..., 0] > 5) & (source[..., 0] < width - 6) & (source[..., 1] > 5) & (source[..., 1] < height - 6)
  assert inside.mean() > 0.9
  np.testing.assert_allclose(crop[inside][:, :2], source[inside], atol=0.05)


def test_alignment_at_256_and_bad_input(analyzer, carphone_aligned):
  frames, track, _ = carphone_aligned
  clip = align.align_track(frames[:10], track.slice(0, 10), size=256)
  assert clip.frames.shape == (10, 256, 256, 3) and clip.face_masks.shape == (10, 256, 256)
  assert _eye_error(clip, 256).max() < 4.0
  missing = track.landmarks[:10].copy()
  missing[3] = np.nan
  with pytest.raises(align.AlignmentError, match="first at frame 3"):
    align.align_frames(frames[:10], missing)
  with pytest.raises(align.AlignmentError, match="the track has 10 frames but frames has 12"):
    align.align_track(frames[:12], track.slice(0, 10))
  with pytest.raises(align.AlignmentError, match="frames must be uint8"):
    align.align_frames(frames[:10].astype(np.float32), track.landmarks[:10])
  with pytest.raises(align.AlignmentError, match="crop size"):
    align.align_track(frames[:10], track.slice(0, 10), size=8)

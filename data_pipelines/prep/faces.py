"""Faces in real video: detection, 468 landmarks, one tracked speaker per video, temporal smoothing.

Why this shape: the paper's inputs are aligned face crops with face and mouth masks, and alignment needs stable,
dense landmarks on every frame of one speaker. Running a detector on every frame is wasteful and jittery, so the
detector only acquires the face; afterwards each frame's landmark crop (ROI) comes from the previous frame's
landmarks, as mediapipe's face mesh does. The models are the mediapipe 0.10.21 files kept in `models/`
(see its README): the detectors run through the mediapipe 1.2.2 Tasks `FaceDetector`, the landmark model through
`ai_edge_litert` (mediapipe 1.2.2 ships no face-mesh solution, and hand-built `.task` bundles give wrong points).

Public API (stable; the prep runner calls it):

    analyzer = FaceAnalyzer(FaceConfig())  # loads the models; one per process (not thread-safe); close it (or
                                           # use `with`) before the process exits
    track = analyzer.track(frames)         # frames uint8 [T, H, W, 3] RGB -> FaceTrack, smoothed

    tracker = analyzer.tracker()           # streaming: detection/tracking state carried across chunks
    parts = [tracker.update(chunk) for chunk in chunks]      # raw (unsmoothed) FaceTracks, track ids continue
    track = smooth_track(FaceTrack.concatenate(parts))       # or smooth each clip's slice: track.slice(a, b)

`FaceTrack` holds, per frame t:
  landmarks  float32 [T, 468, 3]  (x, y) in frame pixels (cv2 convention: pixel centres at integers, x right,
                                  y down); z is relative depth in the same pixel units (smaller = nearer the
                                  camera); NaN where no face was found.
  found      bool [T]
  score      float32 [T]          the landmark model's face-presence probability (0 where not found).
  track_id   int32 [T]            -1 where not found. A new id starts each time the tracker acquires a face
                                  after losing one (or at a caller-given break), so a change of id marks a break
                                  even without a missing frame. `segments()` lists the runs of one id.

Streaming or whole array: both. The tracker itself is causal (frame t needs only frame t-1's state), so the
runner can feed a long video in chunks and keep memory bounded; `track()` is the whole-array convenience. Smoothing
is centred (it looks ahead a few frames), so it is a separate step applied to a finished run of frames — in
practice to each clip, which is cut at track breaks anyway.

Tracking: at acquisition the detector runs (short-range model; the full-range model when that finds nothing and
`detector="auto"`), and the speaker is the largest face, discounted by distance from the frame centre. Then the
landmark model follows it; the track ends when its face-presence score drops below `min_presence`, after which the
same frame is re-detected. Every `redetect_every` frames the detector also checks that a detected face still
lies under the track (it catches the landmark model locking onto a non-face after a cut). Callers that know shot
boundaries pass them as `breaks` to force a new track there.

Smoothing: a Savitzky-Golay filter (local quadratic fit over 5 frames by default), centred and restarted at every
track break. Chosen over a One-Euro filter because preprocessing is offline, so a zero-lag centred filter is
possible and a causal one only adds lag; chosen over a moving average because fitting a quadratic keeps the peaks
of fast lip motion (a mouth opening for 3-4 frames) that an average of the same length flattens, while still
removing the frame-to-frame jitter that makes aligned crops shake.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import tempfile
import time
import weakref
from collections.abc import Iterable, Sequence

import cv2
import numpy as np
from scipy import signal

MODEL_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models")
SHORT_RANGE_MODEL = "face_detection_short_range.tflite"
FULL_RANGE_MODEL = "face_detection_full_range_sparse.tflite"
LANDMARK_MODEL = "face_landmark.tflite"

NUM_LANDMARKS = 468
LANDMARK_INPUT_SIZE = 192  # the landmark model's square RGB input, values in [0, 1]

# ----------------------------------------------------------------------------------------------------------------
# Landmark indices of the 468-point mediapipe face mesh, in one place. "Right"/"left" are the subject's: the
# subject's right eye appears on the image's left in an unmirrored frontal view. Polygons are ordered loops.

RIGHT_EYE_OUTER_CORNER = 33
LEFT_EYE_OUTER_CORNER = 263
RIGHT_EYE_INNER_CORNER = 133
LEFT_EYE_INNER_CORNER = 362
NOSE_TIP = 1
MOUTH_RIGHT_CORNER = 61
MOUTH_LEFT_CORNER = 291
UPPER_LIP_TOP = 0  # middle of the upper lip's outer edge
LOWER_LIP_BOTTOM = 17  # middle of the lower lip's outer edge
CHIN = 152
FOREHEAD = 10

# Eye contours (upper and lower lid), starting at the outer corner.
RIGHT_EYE = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
LEFT_EYE = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
# Outer lip contour: from the right mouth corner along the upper lip to the left corner, back along the lower lip.
LIPS_OUTER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181, 91, 146)
# Inner lip contour (the mouth opening), same direction.
LIPS_INNER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95)
# Face oval: from the forehead clockwise in the image (towards the subject's left side first), round the chin.
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148,
             176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)


class FaceInputError(ValueError):
  """Bad input to the face analyzer; the message names the input and the problem."""


@dataclasses.dataclass(frozen=True)
class FaceConfig:
  """Detection and tracking settings.

  Attributes:
    detector: "short" (short-range model: faces filling a good part of the frame), "full" (full-range model:
      also small, distant faces; ~3x slower) or "auto" (short-range, then full-range when it finds nothing).
    min_detection_score: detector confidence threshold.
    min_presence: the landmark model's face-presence probability below which the track is lost.
    redetect_every: frames between detector checks while tracking (0: detect only when the track is lost).
    roi_scale: the landmark crop's side as a multiple of the face size (detector box or landmark extent).
    min_face_size: detections smaller than this many pixels (box side) are ignored.
    smooth_window: Savitzky-Golay window in frames (odd; 1 disables smoothing).
    smooth_order: Savitzky-Golay polynomial order.
    num_threads: CPU threads for the landmark model (1 suits one worker process per core).
  """
  detector: str = "auto"
  min_detection_score: float = 0.5
  min_presence: float = 0.5
  redetect_every: int = 30
  roi_scale: float = 1.5
  min_face_size: int = 12
  smooth_window: int = 5
  smooth_order: int = 2
  num_threads: int = 1

  def validate(self) -> None:
    if self.detector not in ("short", "full", "auto"):
      raise FaceInputError(f"FaceConfig.detector must be 'short', 'full' or 'auto', got {self.detector!r}")
    for name in ("min_detection_score", "min_presence"):
      if not 0.0 <= getattr(self, name) <= 1.0:
        raise FaceInputError(f"FaceConfig.{name} must be in [0, 1], got {getattr(self, name)!r}")
    if self.redetect_every < 0:
      raise FaceInputError(f"FaceConfig.redetect_every must be >= 0, got {self.redetect_every}")
    if self.roi_scale <= 1.0:
      raise FaceInputError(f"FaceConfig.roi_scale must be > 1, got {self.roi_scale}")
    if self.smooth_window < 1 or self.smooth_window % 2 == 0:
      raise FaceInputError(f"FaceConfig.smooth_window must be a positive odd number, got {self.smooth_window}")
    if self.smooth_window > 1 and not 0 <= self.smooth_order < self.smooth_window:
      raise FaceInputError(f"FaceConfig.smooth_order must be in [0, smooth_window), got {self.smooth_order}")
    if self.num_threads < 1:
      raise FaceInputError(f"FaceConfig.num_threads must be >= 1, got {self.num_threads}")


# ----------------------------------------------------------------------------------------------------------------
# Tracks.


@dataclasses.dataclass(frozen=True, eq=False)
class FaceTrack:
  """Per-frame landmarks of the tracked speaker (see the module docstring for the fields)."""
  landmarks: np.ndarray  # float32 [T, 468, 3]
  found: np.ndarray  # bool [T]
  score: np.ndarray  # float32 [T]
  track_id: np.ndarray  # int32 [T]

  def __post_init__(self):
    t = len(self.found)
    if self.landmarks.shape != (t, NUM_LANDMARKS, 3) or self.score.shape != (t,) or self.track_id.shape != (t,):
      raise FaceInputError(f"FaceTrack fields disagree: landmarks {self.landmarks.shape}, found {self.found.shape}, "
                           f"score {self.score.shape}, track_id {self.track_id.shape}")

  def __len__(self) -> int:
    return len(self.found)

  @classmethod
  def empty(cls, num_frames: int = 0) -> FaceTrack:
    """A track with no face on any of `num_frames` frames."""
    return cls(landmarks=np.full((num_frames, NUM_LANDMARKS, 3), np.nan, np.float32),
               found=np.zeros(num_frames, bool), score=np.zeros(num_frames, np.float32),
               track_id=np.full(num_frames, -1, np.int32))

  @classmethod
  def concatenate(cls, tracks: Sequence[FaceTrack]) -> FaceTrack:
    """Joins consecutive pieces (e.g. the chunks of one streaming tracker) in order."""
    if not tracks:
      return cls.empty()
    return cls(*(np.concatenate([getattr(t, f.name) for t in tracks]) for f in dataclasses.fields(cls)))

  def slice(self, start: int, stop: int) -> FaceTrack:
    """Frames [start, stop) (views of these arrays, not copies)."""
    return FaceTrack(*(getattr(self, f.name)[start:stop] for f in dataclasses.fields(self)))

  def segments(self, min_length: int = 1) -> list[tuple[int, int]]:
    """[(start, stop), ...]: maximal runs of consecutive frames with a face of one track id."""
    out = []
    start = None
    for t in range(len(self) + 1):
      if start is not None and (t == len(self) or self.track_id[t] != self.track_id[start]):
        if t - start >= min_length:
          out.append((start, t))
        start = None
      if t < len(self) and self.found[t] and start is None:
        start = t
    return out


def smooth_track(track: FaceTrack, window: int = 5, order: int = 2) -> FaceTrack:
  """Centred Savitzky-Golay smoothing of the landmarks, restarted at every track break.

  Runs shorter than `window` use the longest odd window that fits (and stay raw when that is not above `order`).
  """
  if window <= 1:
    return track
  landmarks = track.landmarks.copy()
  for start, stop in track.segments():
    n = stop - start
    w = min(window, n if n % 2 else n - 1)
    if w > order:
      landmarks[start:stop] = signal.savgol_filter(track.landmarks[start:stop], w, order, axis=0, mode="interp")
  return dataclasses.replace(track, landmarks=landmarks)


# ----------------------------------------------------------------------------------------------------------------
# Geometry: a rotated square region of interest (ROI) in frame pixels.


@dataclasses.dataclass(frozen=True)
class Roi:
  """A rotated square region of interest in frame pixels: what the landmark model looks at."""
  cx: float
  cy: float
  size: float  # side length in pixels
  angle: float  # radians; the ROI's x axis is the frame's x axis rotated by `angle` (y down)

  def to_input(self, out_size: int) -> np.ndarray:
    """2x3 affine: frame pixel -> ROI image pixel (out_size x out_size)."""
    k = out_size / self.size
    c, s = math.cos(self.angle), math.sin(self.angle)
    rot = k * np.array([[c, s], [-s, c]])
    shift = (out_size - 1) / 2 - rot @ np.array([self.cx, self.cy])
    return np.concatenate([rot, shift[:, None]], axis=1)

  def contains(self, x: float, y: float) -> bool:
    c, s = math.cos(self.angle), math.sin(self.angle)
    dx, dy = x - self.cx, y - self.cy
    return abs(c * dx + s * dy) <= self.size / 2 and abs(-s * dx + c * dy) <= self.size / 2


def _roi_from_points(points: np.ndarray, scale: float) -> Roi:
  """The ROI around landmarks [468, 2]: rotated so the eye corners are level, square, `scale` x their extent."""
  d = points[LEFT_EYE_OUTER_CORNER] - points[RIGHT_EYE_OUTER_CORNER]
  angle = math.atan2(d[1], d[0])
  c, s = math.cos(angle), math.sin(angle)
  rotated = points @ np.array([[c, -s], [s, c]])  # rows: (p . x_axis, p . y_axis) of the ROI
  lo, hi = rotated.min(0), rotated.max(0)
  mid = (lo + hi) / 2
  centre = mid @ np.array([[c, s], [-s, c]])
  return Roi(float(centre[0]), float(centre[1]), float((hi - lo).max() * scale), angle)


@dataclasses.dataclass(frozen=True)
class Detection:
  """One detector box in frame pixels, with its eye keypoints (subject's right eye, then left)."""
  x: float
  y: float
  width: float
  height: float
  score: float
  right_eye: tuple[float, float]
  left_eye: tuple[float, float]

  @property
  def centre(self) -> tuple[float, float]:
    return self.x + self.width / 2, self.y + self.height / 2

  def roi(self, scale: float) -> Roi:
    dx, dy = self.left_eye[0] - self.right_eye[0], self.left_eye[1] - self.right_eye[1]
    cx, cy = self.centre
    return Roi(cx, cy, max(self.width, self.height) * scale, math.atan2(dy, dx))


def choose_speaker(detections: Sequence[Detection], height: int, width: int) -> Detection:
  """The largest face, discounted by its distance from the frame centre: size * (1 - 0.5 * dist / half-diagonal)."""
  half_diagonal = math.hypot(width, height) / 2

  def merit(d: Detection) -> float:
    cx, cy = d.centre
    dist = math.hypot(cx - width / 2, cy - height / 2)
    return math.sqrt(d.width * d.height) * (1 - 0.5 * min(dist / half_diagonal, 1.0))

  return max(detections, key=merit)


# ----------------------------------------------------------------------------------------------------------------
# The analyzer.


def _check_frames(frames, name: str = "frames") -> np.ndarray:
  frames = np.asarray(frames)
  if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
    raise FaceInputError(f"{name} must be uint8 RGB [T, H, W, 3], got {frames.dtype} array of shape {frames.shape}")
  if frames.shape[1] < 8 or frames.shape[2] < 8:
    raise FaceInputError(f"{name} are {frames.shape[1]}x{frames.shape[2]} pixels; need at least 8x8")
  return frames


class FaceAnalyzer:
  """Owns the detector and landmark models; `track` / `tracker` follow one speaker through a video."""

  def __init__(self, config: FaceConfig | None = None, model_dir: str = MODEL_DIR):
    # Imported here so that importing this module (e.g. for the constants) stays cheap.
    from ai_edge_litert.interpreter import Interpreter
    from mediapipe.tasks.python import vision
    from mediapipe.tasks.python.core.base_options import BaseOptions

    self.config = config = config or FaceConfig()
    config.validate()
    names = [LANDMARK_MODEL]
    names += [SHORT_RANGE_MODEL] if config.detector in ("short", "auto") else []
    names += [FULL_RANGE_MODEL] if config.detector in ("full", "auto") else []
    for name in names:
      if not os.path.isfile(os.path.join(model_dir, name)):
        raise FileNotFoundError(f"face model {name!r} is missing from {model_dir} (see data_pipelines/prep/models)")
    self._detectors = []
    with _native_stderr_silenced():  # ~60 lines of INFO/WARNING per detector from the native runtime
      for name in names[1:]:
        options = vision.FaceDetectorOptions(
            base_options=BaseOptions(model_asset_path=os.path.join(model_dir, name)),
            min_detection_confidence=config.min_detection_score)
        self._detectors.append(vision.FaceDetector.create_from_options(options))
      self._interpreter = Interpreter(model_path=os.path.join(model_dir, LANDMARK_MODEL),
                                      num_threads=config.num_threads)
      self._interpreter.allocate_tensors()
    # Close the detectors when the analyzer is garbage-collected. Not at interpreter exit: by then mediapipe 1.2.2
    # has shut down its executor and every close fails, so an analyzer still open at exit prints harmless
    # "Exception ignored in FaceDetector.__del__" tracebacks — call close() or use `with` to avoid them.
    self._finalizer = weakref.finalize(self, _close_detectors, self._detectors)
    self._finalizer.atexit = False
    self._mp_image = _mp_image_factory()
    self._input_index = self._interpreter.get_input_details()[0]["index"]
    outputs = {int(np.prod(d["shape"])): d["index"] for d in self._interpreter.get_output_details()}
    self._points_index, self._presence_index = outputs[NUM_LANDMARKS * 3], outputs[1]
    # Seconds and calls per model, accumulated over all calls; `clock` may be swapped (e.g. time.process_time).
    self.clock = time.perf_counter
    self.timings = {"detect": 0.0, "landmarks": 0.0}
    self.counts = {"detect": 0, "landmarks": 0}

  def close(self) -> None:
    """Releases the detectors (also done by `with`); the analyzer cannot detect afterwards."""
    self._finalizer()

  def __enter__(self) -> FaceAnalyzer:
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  # -- the two models --------------------------------------------------------------------------------------------

  def detect(self, frame: np.ndarray) -> list[Detection]:
    """Faces in one uint8 RGB frame [H, W, 3]; with detector="auto" the full-range model runs only if the
    short-range one finds none."""
    if not self._detectors:
      raise RuntimeError("FaceAnalyzer is closed")
    start = self.clock()
    height, width = frame.shape[:2]
    image = self._mp_image(np.ascontiguousarray(frame))
    found = []
    for detector in self._detectors:
      for d in detector.detect(image).detections:
        box = d.bounding_box
        if min(box.width, box.height) < self.config.min_face_size or len(d.keypoints) < 2:
          continue
        eyes = [(k.x * width, k.y * height) for k in d.keypoints[:2]]
        found.append(Detection(float(box.origin_x), float(box.origin_y), float(box.width), float(box.height),
                               float(d.categories[0].score), eyes[0], eyes[1]))
      if found:
        break
    self.timings["detect"] += self.clock() - start
    self.counts["detect"] += 1
    return found

  def landmarks(self, frame: np.ndarray, roi: Roi) -> tuple[np.ndarray, float]:
    """Landmarks [468, 3] in frame pixels inside `roi`, and the face-presence probability."""
    start = self.clock()
    n = LANDMARK_INPUT_SIZE
    matrix = roi.to_input(n)
    crop = cv2.warpAffine(frame, matrix, (n, n), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    self._interpreter.set_tensor(self._input_index, (crop[None].astype(np.float32) * (1 / 255)))
    self._interpreter.invoke()
    raw = self._interpreter.get_tensor(self._points_index).reshape(NUM_LANDMARKS, 3)
    logit = float(self._interpreter.get_tensor(self._presence_index).reshape(()))
    # The model's coordinates are continuous (0..n spans the input); pixel centres sit at +0.5.
    inverse = cv2.invertAffineTransform(matrix)
    points = np.empty((NUM_LANDMARKS, 3), np.float32)
    points[:, :2] = (raw[:, :2] - 0.5) @ inverse[:, :2].T + inverse[:, 2]
    points[:, 2] = raw[:, 2] * (roi.size / n)
    self.timings["landmarks"] += self.clock() - start
    self.counts["landmarks"] += 1
    return points, 0.5 * (1.0 + math.tanh(0.5 * logit))  # the sigmoid, without overflow

  # -- tracking --------------------------------------------------------------------------------------------------

  def tracker(self) -> FaceTracker:
    """A new streaming tracker (its own state; shares these models)."""
    return FaceTracker(self)

  def track(self, frames, breaks: Iterable[int] = (), smooth: bool = True) -> FaceTrack:
    """Tracks the speaker through uint8 [T, H, W, 3] frames; smoothed unless `smooth=False`.

    `breaks`: frame indices where a new shot starts (the track restarts there).
    """
    track = self.tracker().update(frames, breaks)
    if smooth:
      track = smooth_track(track, self.config.smooth_window, self.config.smooth_order)
    return track


class FaceTracker:
  """Streaming state of one video: the current ROI, the track id and the frames since the last detector check."""

  def __init__(self, analyzer: FaceAnalyzer):
    self._analyzer = analyzer
    self._roi: Roi | None = None
    self._next_id = 0
    self._current_id = -1
    self._since_check = 0
    self.frames_seen = 0

  def update(self, frames, breaks: Iterable[int] = ()) -> FaceTrack:
    """Raw (unsmoothed) track of the next chunk of frames; `breaks` are indices into this chunk."""
    frames = _check_frames(frames)
    breaks = set(int(b) for b in breaks)
    track = FaceTrack.empty(len(frames))
    for t, frame in enumerate(frames):
      if t in breaks:
        self._roi = None
      result = self._step(frame)
      if result is not None:
        track.landmarks[t], track.score[t] = result
        track.found[t] = True
        track.track_id[t] = self._current_id
    self.frames_seen += len(frames)
    return track

  def _step(self, frame: np.ndarray) -> tuple[np.ndarray, float] | None:
    analyzer, config = self._analyzer, self._analyzer.config
    height, width = frame.shape[:2]
    if self._roi is not None:
      self._since_check += 1
      if config.redetect_every and self._since_check >= config.redetect_every:
        self._since_check = 0
        if not any(self._roi.contains(*d.centre) for d in analyzer.detect(frame)):
          self._roi = None  # the detector sees no face under the track: lost
      if self._roi is not None:
        points, presence = analyzer.landmarks(frame, self._roi)
        if presence >= config.min_presence:
          self._roi = _roi_from_points(points[:, :2], config.roi_scale)
          return points, presence
    # Acquire (or re-acquire on this same frame).
    previous, self._roi = self._roi, None
    detections = analyzer.detect(frame)
    self._since_check = 0
    if not detections:
      return None
    chosen = choose_speaker(detections, height, width)
    points, presence = analyzer.landmarks(frame, chosen.roi(config.roi_scale))
    if presence < config.min_presence:
      return None
    # Refine once: the landmark-derived ROI is tighter and better rotated than the detector's box.
    refined, refined_presence = analyzer.landmarks(frame, _roi_from_points(points[:, :2], config.roi_scale))
    if refined_presence >= presence:
      points, presence = refined, refined_presence
    if previous is None or not previous.contains(*chosen.centre):
      self._current_id = self._next_id
      self._next_id += 1
    self._roi = _roi_from_points(points[:, :2], config.roi_scale)
    return points, presence


def _close_detectors(detectors: list) -> None:
  with _native_stderr_silenced():
    for detector in detectors:
      detector.close()
  detectors.clear()


@contextlib.contextmanager
def _native_stderr_silenced():
  """Sends file descriptor 2 (where native libraries log) to a temporary file; replays it if loading fails."""
  try:
    saved = os.dup(2)
  except OSError:  # no usable stderr: nothing to silence
    yield
    return
  with tempfile.TemporaryFile() as sink:
    os.dup2(sink.fileno(), 2)
    try:
      yield
    except BaseException:
      os.dup2(saved, 2)
      sink.seek(0)
      os.write(2, sink.read())
      raise
    finally:
      os.dup2(saved, 2)
      os.close(saved)


def _mp_image_factory():
  import mediapipe as mp

  def make(frame: np.ndarray):
    return mp.Image(image_format=mp.ImageFormat.SRGB, data=frame)

  return make

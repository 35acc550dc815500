"""One input video -> its clip records, or the reason it gives none: the unit of work of every way prep runs.

`InputProcessor.handle(input)` is that one function: the local worker pool and array jobs (`run`) and the Beam
transform of the TFDS builders (`data_pipelines.corpora`) all call it, so a video gives the same clips, or the same
failures entry, however the corpus is built.

Per input: decode (25 fps by timestamps, 16 kHz mono; `decode`) -> shot changes (`segment`) -> track one speaker's
468 landmarks (`faces`) -> smooth them over time -> align each frame to the template and crop with face and mouth
masks (`align`) -> cut clips at face loss, shot change, missing audio and the maximum length -> `ClipRecord`s (JPEG
frames, 16-bit audio; per-frame crop transforms, landmarks and face score as labels).

Memory stays bounded on long videos: frames stream through in chunks, each frame is aligned as soon as its
smoothed landmarks are known (the centred smoothing window needs `smooth_window // 2` frames of look-ahead), and
only the aligned, encoded crops of the current run are buffered; a run is cut into clips while it grows, holding
at most 2 x the maximum clip length (`segment.split_run` cuts the same way on a whole array).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import itertools
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from data_pipelines.prep import decode, faces, segment
from data_pipelines.prep.inputs import Input, SpeakerPattern, video_id
from data_pipelines.prep.settings import PrepConfig
from synclipmae.data import records

# Stages after decoding (decode.STAGE_* come first; inputs.STAGE_SPEAKER before them).
STAGE_FACES = "faces"  # No face in any frame.
STAGE_CLIPS = "clips"  # Faces, but no run long enough to make a clip.
STAGE_ERROR = "error"  # An unexpected exception (its type and message are the reason).

_CHUNK = 16  # Frames per tracker call.


def failure_entry(item: Input, stage: str, reason: str) -> dict[str, Any]:
  """The failures-manifest line of an input."""
  return {"input": item.key, "path": item.path, "stage": stage, "reason": reason}


@dataclasses.dataclass
class Outcome:
  """What became of one input: its clips (and speaker), or its failures entry; never both."""
  item: Input
  clips: list[records.ClipRecord]
  speaker: str | None = None
  failure: dict[str, Any] | None = None
  frames: int = 0
  timings: dict[str, float] = dataclasses.field(default_factory=dict)
  seconds: float = 0.0


def label_spec(config: PrepConfig) -> dict[str, tuple[str, tuple[int, ...]]]:
  """The per-frame labels of prep's clip records (`records.label_spec` of each): what a TFDS builder declares."""
  spec = {"crop_transform": ("float32", (2, 3))}  # Frame pixel -> crop pixel affine map.
  if config.store_landmarks:
    spec |= {"face_score": ("float32", ()), "landmarks": ("float16", (faces.NUM_LANDMARKS, 2))}
  return dict(sorted(spec.items()))


@functools.lru_cache(maxsize=None)
def _savgol_projection(window: int, order: int) -> np.ndarray:
  """[window, window] matrix: values of the least-squares polynomial of `order` through `window` points.

  Row window // 2 holds the Savitzky-Golay coefficients; the first and last rows are what scipy's
  savgol_filter(mode="interp") uses at the ends. A matrix product is ~100x faster than calling scipy per frame.
  """
  x = np.arange(window, dtype=np.float64) - window // 2
  vander = np.vander(x, order + 1, increasing=True)
  return vander @ np.linalg.pinv(vander)


class _RunBuilder:
  """Turns the tracked frames of one run (one speaker, continuous, with audio) into aligned, encoded frames and
  cuts them into clips; see the module docstring for why it streams."""

  def __init__(self, config: PrepConfig, face_config, timings: collections.Counter):
    self.config, self.timings = config, timings
    self.window, self.order = face_config.smooth_window, face_config.smooth_order
    self.run_id: int | None = None
    self._raw: list[tuple[int, np.ndarray, np.ndarray, float]] = []  # (index, frame, landmarks, score) to align
    self._history: collections.deque = collections.deque(maxlen=max(self.window, 1))  # raw landmarks
    self._run_length = 0
    self._aligned: list[tuple[int, bytes, np.ndarray, np.ndarray, np.ndarray, float]] = []
    self.clips: list[list[tuple]] = []  # Finished clips: lists of aligned entries.
    self.longest_run = 0

  @property
  def open(self) -> bool:
    return self.run_id is not None

  def add(self, index: int, frame: np.ndarray, landmarks: np.ndarray, score: float, run_id: int) -> None:
    self.run_id = run_id
    self._raw.append((index, frame, landmarks, score))
    self._history.append(landmarks)
    self._run_length += 1
    self.longest_run = max(self.longest_run, self._run_length)
    w, h = self.window, self.window // 2
    if w <= 1:
      self._align(self._raw, [e[2] for e in self._raw])
      self._raw = []
    elif self._run_length == w:  # The first h + 1 frames: a quadratic fitted to the first window.
      smooth = self._smooth(np.stack(self._history), w)
      self._align(self._raw[:h + 1], smooth[:h + 1])
      self._raw = self._raw[h + 1:]
    elif self._run_length > w:  # Frame n - 1 - h: the centre of the last window.
      smooth = self._smooth(np.stack(self._history), w)
      self._align(self._raw[:1], smooth[h:h + 1])
      self._raw = self._raw[1:]
    while len(self._aligned) >= 2 * self.config.max_frames:
      self.clips.append(self._aligned[:self.config.max_frames])
      self._aligned = self._aligned[self.config.max_frames:]

  def end_run(self) -> None:
    if self._raw:
      n = self._run_length
      if n >= self.window:
        smooth = self._smooth(np.stack(self._history), self.window)[-len(self._raw):]
      else:  # A run shorter than the window: the longest odd window that fits, as faces.smooth_track does.
        w = n if n % 2 else n - 1
        stack = np.stack([e[2] for e in self._raw])
        smooth = self._smooth(stack, w) if w > self.order else stack
      self._align(self._raw, smooth)
    for a, b in segment.split_run(0, len(self._aligned), self.config.max_frames, self.config.min_frames):
      self.clips.append(self._aligned[a:b])
    self.run_id, self._raw, self._aligned, self._run_length = None, [], [], 0
    self._history.clear()

  def _smooth(self, landmarks: np.ndarray, window: int) -> np.ndarray:
    """Savitzky-Golay smoothing of exactly `window` frames (scipy's mode="interp" over that window)."""
    start = time.perf_counter()
    out = np.tensordot(_savgol_projection(window, self.order), landmarks, axes=(1, 0))
    self.timings["align"] += time.perf_counter() - start
    return out

  def _align(self, entries: Sequence[tuple], landmarks: Sequence[np.ndarray]) -> None:
    from data_pipelines.prep import align
    for (index, frame, _, score), points in zip(entries, landmarks):
      start = time.perf_counter()
      clip = align.align_frames(frame[None], np.asarray(points, np.float32)[None], self.config.size)
      middle = time.perf_counter()
      encoded = records.encode_frames(clip.frames, self.config.frame_codec, self.config.jpeg_quality)[0]
      self.timings["align"] += middle - start
      self.timings["encode"] += time.perf_counter() - middle
      self._aligned.append((index, encoded, clip.face_masks[0], clip.mouth_masks[0], clip.landmarks[0], score,
                            clip.transforms[0]))


class InputProcessor:
  """Everything one process needs to turn inputs into clip records (the face models are loaded once)."""

  def __init__(self, config: PrepConfig):
    config.validate()
    self.config = config
    self.face_config = config.face_config()
    self.analyzer = faces.FaceAnalyzer(self.face_config)
    self.speaker_of = SpeakerPattern(config.speaker_pattern)

  def close(self) -> None:
    self.analyzer.close()

  def handle(self, item: Input) -> Outcome:
    """The clips of one input, or its failures entry; never raises for a bad input (any exception becomes the
    entry's reason, with its type and where it was raised)."""
    start = time.perf_counter()
    try:
      clips, stats = self.process(item)
      outcome = Outcome(item, clips, speaker=stats["speaker"], frames=stats["frames"], timings=stats["timings"])
    except decode.PrepError as e:
      outcome = Outcome(item, [], failure=failure_entry(item, e.stage, e.reason))
    except Exception as e:  # noqa: BLE001 - one bad input must not stop the run; the reason names the error.
      where = traceback.extract_tb(e.__traceback__)[-1]
      reason = f"{type(e).__name__}: {e} (at {Path(where.filename).name}:{where.lineno})"
      outcome = Outcome(item, [], failure=failure_entry(item, STAGE_ERROR, reason))
    outcome.seconds = time.perf_counter() - start
    return outcome

  def process(self, item: Input) -> tuple[list[records.ClipRecord], dict[str, Any]]:
    """The clip records of one input and its stats; raises decode.PrepError when it yields none."""
    clips, stats, _ = self.process_media(item)
    return clips, stats

  def process_media(self, item: Input) -> tuple[list[records.ClipRecord], dict[str, Any], np.ndarray]:
    """`process`, plus the input's whole 16 kHz audio track (what feature extraction and sync scoring read)."""
    config = self.config
    timings: collections.Counter = collections.Counter()
    speaker = self.speaker_of(item)
    start = time.perf_counter()
    reader = decode.MediaReader(item.path, allow_silent=config.allow_silent, min_side=config.min_side,
                                max_side=config.max_side, max_decode_side=config.max_decode_side)
    audio = reader.audio()
    timings["decode"] += time.perf_counter() - start
    tracker = self.analyzer.tracker()
    shots = segment.ShotDetector(config.shot_threshold)
    builder = _RunBuilder(config, self.face_config, timings)
    frames = reader.frames()
    done, face_frames, audio_frames, num_cuts = 0, 0, 0, 0
    while True:
      start = time.perf_counter()
      chunk = list(itertools.islice(frames, _CHUNK))
      timings["decode"] += time.perf_counter() - start
      if not chunk:
        break
      start = time.perf_counter()
      cuts = shots.update(chunk)
      timings["shots"] += time.perf_counter() - start
      before = dict(self.analyzer.timings)
      track = tracker.update(np.stack(chunk), breaks=cuts)
      for stage in ("detect", "landmarks"):
        timings[stage] += self.analyzer.timings[stage] - before[stage]
      valid = reader.audio_valid(done, done + len(chunk))
      face_frames += int(track.found.sum())
      audio_frames += int(valid.sum())
      num_cuts += len(cuts) if done else len([c for c in cuts if c > 0])
      cut_set = set(cuts)
      for i, frame in enumerate(chunk):
        usable = bool(track.found[i] and valid[i])
        if builder.open and (not usable or i in cut_set or int(track.track_id[i]) != builder.run_id):
          builder.end_run()
        if usable:
          builder.add(done + i, frame, track.landmarks[i], float(track.score[i]), int(track.track_id[i]))
      done += len(chunk)
    builder.end_run()
    stats = {"frames": done, "face_frames": face_frames, "audio_frames": audio_frames, "shot_cuts": num_cuts,
             "clips": len(builder.clips), "timings": dict(timings)}
    if not builder.clips:
      if face_frames == 0:
        raise decode.PrepError(item.key, STAGE_FACES, f"no face found in any of {done} frames")
      raise decode.PrepError(item.key, STAGE_CLIPS, (
          f"no clip of at least {config.min_frames} frames: a face in {face_frames} of {done} frames, audio under "
          f"{audio_frames}, longest usable run {builder.longest_run} frames"))
    start = time.perf_counter()
    clips = [self._record(item, speaker, reader, audio, clip) for clip in builder.clips]
    timings["encode"] += time.perf_counter() - start
    stats["timings"] = dict(timings)
    stats["speaker"] = speaker
    return clips, stats, audio

  def _record(self, item: Input, speaker: str, reader: decode.MediaReader, audio: np.ndarray,
              clip: list[tuple]) -> records.ClipRecord:
    config = self.config
    first, last = clip[0][0], clip[-1][0] + 1
    spf = reader.samples_per_frame
    piece = np.zeros((last - first) * spf, np.float32)
    available = audio[first * spf:last * spf]
    piece[:len(available)] = available
    scores = np.array([e[5] for e in clip], np.float32)
    # The frame -> crop map of every frame (what pastes a crop, e.g. a dub, back into the source video).
    labels = {"crop_transform": np.stack([e[6] for e in clip]).astype(np.float32)}
    if config.store_landmarks:
      labels |= {"landmarks": np.stack([e[4] for e in clip]).astype(np.float16), "face_score": scores}
    info = reader.info
    return records.ClipRecord(
        clip_id=f"{video_id(item.key)}-{first:06d}", speaker_id=speaker, source=item.key, fps=config.fps,
        sample_rate=config.sample_rate, frames=tuple(e[1] for e in clip), frame_codec=config.frame_codec,
        audio=records.float_to_pcm16(piece), face_masks=np.stack([e[2] for e in clip]),
        mouth_masks=np.stack([e[3] for e in clip]), labels=labels,
        metadata={"input": item.key, "start_frame": first, "end_frame": last,
                  "start_s": round(first / config.fps, 4), "end_s": round(last / config.fps, 4),
                  "face_score_mean": round(float(scores.mean()), 4), "face_score_min": round(float(scores.min()), 4),
                  "source_width": info.width, "source_height": info.height,
                  "source_fps": round(info.source_fps, 3)})

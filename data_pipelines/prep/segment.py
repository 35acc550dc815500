"""Where to cut a video into clips: shot changes, face loss, missing audio, maximum and minimum length.

A clip must show one speaker continuously with their audio, so the runner cuts wherever any of that stops:

* Shot changes (`ShotDetector`): a hard cut changes the colour distribution of the whole frame at once, while
  talking, head motion and camera shake change it slowly. Each frame (shrunk to 64x48) gets an HSV colour
  histogram (8x4x4 bins); a cut is declared where the histogram distance (half the L1 distance, in [0, 1]) to the
  previous frame exceeds `threshold`, or where it exceeds `threshold / 2` while the grey-level thumbnail also
  changes by more than `pixel_threshold` on average (two shots with similar colours). Measured on the test media:
  within a shot the distance stays below 0.08 (carphone, with the countryside moving past the car window); cuts
  between carphone, the astronaut and a faceless video score 0.83-0.92. The cost is ~0.1 ms a frame.
  Gradual transitions (fades, dissolves) are not detected as cuts; the face tracker's presence score usually
  drops during them, which ends the clip anyway.
* Face loss and a change of tracked face: from the face tracker (`faces.FaceTrack.found` / `track_id`).
* Frames not fully covered by the audio track (a late start, an early end, a gap): from the decoder.

`split_run` then divides each uninterrupted run into clips of at most `max_frames` (a 12 s run becomes two 6 s
clips rather than 10 s + 2 s) and drops runs shorter than `min_frames`.
"""

from __future__ import annotations

from collections.abc import Iterable

import cv2
import numpy as np


class ShotDetector:
  """Streaming hard-cut detector: `update(frames)` returns the indices (into the chunk) where a new shot starts."""

  def __init__(self, threshold: float = 0.35, pixel_threshold: float = 0.12):
    self.threshold, self.pixel_threshold = threshold, pixel_threshold
    self._previous: tuple[np.ndarray, np.ndarray] | None = None
    self.scores: list[float] = []  # Histogram distance of every frame to the one before (0 for the first).

  @staticmethod
  def features(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(normalised HSV histogram [128], grey thumbnail [48, 64] in [0, 1]) of one uint8 RGB frame."""
    step = max(1, min(frame.shape[0] // 96, frame.shape[1] // 128))  # Subsample large frames first (cheap).
    small = cv2.resize(frame[::step, ::step], (64, 48), interpolation=cv2.INTER_AREA)
    hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV)
    hist = cv2.calcHist([hsv], [0, 1, 2], None, [8, 4, 4], [0, 180, 0, 256, 0, 256]).ravel()
    grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    return hist / max(float(hist.sum()), 1.0), grey

  def update(self, frames: Iterable[np.ndarray]) -> list[int]:
    cuts = []
    for i, frame in enumerate(frames):
      hist, grey = self.features(frame)
      score = 0.0
      if self._previous is not None:
        score = 0.5 * float(np.abs(hist - self._previous[0]).sum())
        pixels = float(np.abs(grey - self._previous[1]).mean())
        if score > self.threshold or (score > self.threshold / 2 and pixels > self.pixel_threshold):
          cuts.append(i)
      self.scores.append(score)
      self._previous = (hist, grey)
    return cuts


def split_run(start: int, stop: int, max_frames: int, min_frames: int) -> list[tuple[int, int]]:
  """Frames [start, stop) as clips of at most `max_frames`; [] if the run is shorter than `min_frames`.

  Clips of `max_frames` are taken from the front while at least 2 * max_frames remain, and the rest (under
  2 * max_frames) is split into one or two equal halves: every clip of a long run then has between max_frames / 2
  and max_frames frames, and a streaming writer needs to hold at most 2 * max_frames frames to cut the same way.
  """
  if max_frames < 1 or min_frames < 1 or min_frames > max_frames:
    raise ValueError(f"need 1 <= min_frames <= max_frames, got min_frames={min_frames}, max_frames={max_frames}")
  if stop - start < min_frames:
    return []
  spans = []
  while stop - start >= 2 * max_frames:
    spans.append((start, start + max_frames))
    start += max_frames
  if stop - start > max_frames:
    middle = start + (stop - start) // 2
    spans.append((start, middle))
    start = middle
  spans.append((start, stop))
  return spans


def runs(usable: np.ndarray, breaks: Iterable[int] = ()) -> list[tuple[int, int]]:
  """Maximal runs [start, stop) of usable frames, also split before every index in `breaks`."""
  usable = np.asarray(usable, bool)
  cut = np.zeros(len(usable) + 1, bool)
  cut[[b for b in breaks if 0 <= b < len(usable)]] = True
  out, start = [], None
  for t in range(len(usable) + 1):
    if start is not None and (t == len(usable) or not usable[t] or cut[t]):
      out.append((start, t))
      start = None
    if t < len(usable) and usable[t] and start is None:
      start = t
  return out


def clip_spans(found: np.ndarray, track_id: np.ndarray, audio_valid: np.ndarray, shot_cuts: Iterable[int] = (),
               *, max_frames: int = 250, min_frames: int = 25) -> list[tuple[int, int]]:
  """All clips [start, stop) of a whole video: runs of one tracked face with audio, cut at shots and split."""
  found, track_id = np.asarray(found, bool), np.asarray(track_id)
  breaks = set(shot_cuts) | set(np.flatnonzero(track_id[1:] != track_id[:-1]) + 1)
  spans = []
  for a, b in runs(found & np.asarray(audio_valid, bool), breaks):
    spans += split_run(a, b, max_frames, min_frames)
  return spans

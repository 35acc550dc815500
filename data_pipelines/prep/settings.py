"""Settings of a `synclipmae prep` run (`PrepConfig`) and the error for a run that cannot proceed."""

from __future__ import annotations

import dataclasses
from typing import Any

from data_pipelines.prep import decode
from synclipmae.data import records


class RunError(RuntimeError):
  """The run itself cannot proceed (bad arguments, conflicting output directory, a worker that cannot start)."""



@dataclasses.dataclass(frozen=True)
class PrepConfig:
  """Settings of a prep run; all but `shard_size` and `threads` shape the output, so reruns must repeat them.

  Attributes:
    size: side of the aligned square crops in pixels (the model's image_size).
    max_clip_s, min_clip_s: longest clip, and shortest run kept, in seconds.
    frame_codec, jpeg_quality: how crops are stored ("jpeg" or "png").
    allow_silent: accept videos without an audio track (with zero audio) instead of failing them.
    min_side, max_side: accepted source frame sizes in pixels (outside: "absurd resolution").
    max_decode_side: shrink decoded frames whose long side is larger (speed; None keeps full resolution).
    speaker_pattern: how to get the speaker id from an input's path (see `SpeakerPattern`); None: parent folder.
    heldout_speakers: speaker ids put in the "heldout" split.
    heldout_fraction: also hold out this fraction of speakers, chosen by a stable hash of the id.
    shot_threshold: histogram distance that counts as a hard cut (see `segment.ShotDetector`).
    detector, min_detection_score, min_presence, smooth_window: face detection and tracking (`faces.FaceConfig`).
    store_landmarks: keep the aligned 468 landmarks (float16 crop pixels) and face score as per-frame labels.
    shard_size: clips per output shard before a worker starts a new one.
  """
  size: int = 128
  max_clip_s: float = 10.0
  min_clip_s: float = 1.0
  frame_codec: str = "jpeg"
  jpeg_quality: int = 95
  allow_silent: bool = False
  min_side: int = decode.MIN_SIDE
  max_side: int = decode.MAX_SIDE
  max_decode_side: int | None = None
  speaker_pattern: str | None = None
  heldout_speakers: tuple[str, ...] = ()
  heldout_fraction: float = 0.0
  shot_threshold: float = 0.35
  detector: str = "auto"
  min_detection_score: float = 0.5
  min_presence: float = 0.5
  smooth_window: int = 5
  store_landmarks: bool = True
  shard_size: int = 1000

  @property
  def fps(self) -> float:
    return decode.FPS

  @property
  def sample_rate(self) -> int:
    return decode.SAMPLE_RATE

  @property
  def max_frames(self) -> int:
    return max(1, round(self.max_clip_s * self.fps))

  @property
  def min_frames(self) -> int:
    return max(1, round(self.min_clip_s * self.fps))

  def validate(self) -> None:
    if self.size < 16:
      raise RunError(f"--size must be at least 16 pixels, got {self.size}")
    if not 0 < self.min_clip_s <= self.max_clip_s:
      raise RunError(f"need 0 < min_clip_s <= max_clip_s, got {self.min_clip_s} and {self.max_clip_s}")
    if self.frame_codec not in records.FRAME_CODECS:
      raise RunError(f"--frame_codec must be one of {records.FRAME_CODECS}, got {self.frame_codec!r}")
    if not 0.0 <= self.heldout_fraction < 1.0:
      raise RunError(f"--heldout_fraction must be in [0, 1), got {self.heldout_fraction}")
    if self.shard_size < 1:
      raise RunError(f"--shard_size must be positive, got {self.shard_size}")
    from data_pipelines.prep import inputs
    inputs.SpeakerPattern(self.speaker_pattern)
    self.face_config().validate()

  def face_config(self):
    from data_pipelines.prep import faces
    return faces.FaceConfig(detector=self.detector, min_detection_score=self.min_detection_score,
                            min_presence=self.min_presence, smooth_window=self.smooth_window, num_threads=1)

  def output_settings(self) -> dict[str, Any]:
    """The settings that shape the output (compared on reruns)."""
    settings = dataclasses.asdict(self)
    settings.pop("shard_size")
    settings["heldout_speakers"] = sorted(self.heldout_speakers)
    return settings


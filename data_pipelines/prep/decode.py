"""Decoding a real video into the corpus's time base: RGB frames at 25 fps and 16 kHz mono audio, aligned.

Clip records store frame k together with audio samples [k * 640, (k + 1) * 640) (16 kHz / 25 fps), so decoding
must put both streams on one clock. Everything here is driven by presentation timestamps, never by frame counts:

* Time origin t0 is the start of the video stream. Output frame k covers [t0 + k/25, t0 + (k+1)/25) and shows the
  source frame on screen at the middle of that interval (the last one whose timestamp is <= the midpoint). This
  is correct for constant and variable frame rates alike and is off by at most half a source frame.
* Audio frames are placed on the same clock by their timestamps (AAC priming, edit lists, a track that starts
  before or after the video, gaps), downmixed to mono at the source rate by PyAV's `AudioResampler`, and the whole
  track is converted to 16 kHz with soxr (the resampler librosa uses; installed with librosa). soxr is used for the
  rate change rather than swresample because one call over the finished, timestamp-placed track has no streaming
  filter delay to account for, so sample n of the output is exactly time t0 + n / 16000.
* Where the track has no audio (it starts late, ends early, or has a gap) the samples are zero and
  `audio_valid` marks the frames that are not fully covered, so the segmenter can cut them out.

Policy: a video without an audio track is a failure ("no audio track") because the model learns from audio and
video together; `allow_silent=True` accepts it with zero audio (e.g. for vision-only uses). Inputs that cannot be
used raise `PrepError(path, stage, reason)`, which the runner records in the failures manifest.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np

FPS = 25.0
SAMPLE_RATE = 16000
MIN_SIDE = 32  # Smaller frames cannot hold a face worth aligning.
MAX_SIDE = 8192  # Larger than 8K is a broken header or not footage of people talking.

# Stages named in PrepError and the failures manifest, in pipeline order.
STAGE_OPEN = "open"  # The file is missing, empty, or not a readable media container.
STAGE_PROBE = "probe"  # Readable, but unusable streams: no video, no audio, absurd resolution.
STAGE_DECODE = "decode"  # The decoder failed part-way or produced no frames.


class PrepError(ValueError):
  """An input cannot be preprocessed; carries the input, the pipeline stage and a human-readable reason."""

  def __init__(self, path: str | os.PathLike, stage: str, reason: str):
    self.path, self.stage, self.reason = str(path), stage, reason
    super().__init__(f"{path}: {stage}: {reason}")


@dataclasses.dataclass(frozen=True)
class MediaInfo:
  """What probing found in a media file (times in seconds on the container clock)."""
  path: str
  width: int
  height: int
  video_codec: str
  source_fps: float  # Average frame rate reported by the container (informative; decoding uses timestamps).
  start_s: float  # t0: start of the video stream, the origin of frames and audio.
  duration_s: float  # Of the video stream (estimate from the container; decoding finds the exact end).
  has_audio: bool
  audio_codec: str | None
  audio_rate: int | None
  audio_channels: int | None


def _ffmpeg_reason(e: Exception) -> str:
  text = getattr(e, "strerror", None) or str(e)
  return text.split(": '")[0] if isinstance(text, str) else str(e)


def _open(path: Path) -> av.container.InputContainer:
  if not path.exists():
    raise PrepError(path, STAGE_OPEN, "no such file")
  if not path.is_file():
    raise PrepError(path, STAGE_OPEN, "not a regular file")
  if path.stat().st_size == 0:
    raise PrepError(path, STAGE_OPEN, "empty file (0 bytes)")
  try:
    return av.open(str(path), metadata_errors="ignore")
  except av.error.FFmpegError as e:
    raise PrepError(path, STAGE_OPEN, f"not a readable media file, or corrupt or truncated "
                                      f"({_ffmpeg_reason(e)})") from None
  except (OSError, UnicodeDecodeError, ValueError) as e:
    raise PrepError(path, STAGE_OPEN, f"cannot open ({e})") from None


def _seconds(value, time_base) -> float | None:
  return None if value is None or time_base is None else float(value * time_base)


def probe(path: str | os.PathLike, *, allow_silent: bool = False, min_side: int = MIN_SIDE,
          max_side: int = MAX_SIDE) -> MediaInfo:
  """Opens `path` and checks its streams; raises PrepError (stage "open" or "probe") if it is unusable."""
  path = Path(path)
  with _open(path) as container:
    return _probe(path, container, allow_silent, min_side, max_side)


def _probe(path: Path, container, allow_silent: bool, min_side: int, max_side: int) -> MediaInfo:
  if not container.streams.video:
    kinds = sorted({s.type for s in container.streams}) or ["none"]
    raise PrepError(path, STAGE_PROBE, f"no video stream (streams: {', '.join(kinds)})")
  video = container.streams.video[0]
  ctx = video.codec_context
  width, height = int(ctx.width or 0), int(ctx.height or 0)
  if width == 0 or height == 0:
    raise PrepError(path, STAGE_PROBE, "video stream has no frame size (corrupt header or no decodable frame)")
  if min(width, height) < min_side or max(width, height) > max_side:
    raise PrepError(path, STAGE_PROBE, f"absurd resolution {width}x{height} (each side must be in "
                                       f"[{min_side}, {max_side}] pixels)")
  audio = container.streams.audio[0] if container.streams.audio else None
  if audio is None and not allow_silent:
    raise PrepError(path, STAGE_PROBE, "no audio track")
  start = _seconds(video.start_time, video.time_base)
  if start is None:
    start = 0.0
  duration = _seconds(video.duration, video.time_base)
  if duration is None and container.duration is not None:
    duration = container.duration / av.time_base
  rate = video.average_rate or video.guessed_rate
  return MediaInfo(
      path=str(path), width=width, height=height, video_codec=ctx.name, source_fps=float(rate) if rate else 0.0,
      start_s=start, duration_s=float(duration or 0.0), has_audio=audio is not None,
      audio_codec=audio.codec_context.name if audio is not None else None,
      audio_rate=int(audio.codec_context.sample_rate or 0) if audio is not None else None,
      audio_channels=int(audio.codec_context.channels or 0) if audio is not None else None)


class MediaReader:
  """One input video: `info` (probed on construction), `audio()` and a streaming `frames()` iterator.

  Frames are streamed so that long videos never sit in memory at full resolution; the audio track (small) is
  decoded whole. Both start at `info.start_s`.
  """

  def __init__(self, path: str | os.PathLike, *, fps: float = FPS, sample_rate: int = SAMPLE_RATE,
               allow_silent: bool = False, min_side: int = MIN_SIDE, max_side: int = MAX_SIDE,
               max_decode_side: int | None = None, threads: int = 1):
    """`max_decode_side`: scale frames down (keeping the aspect) so the long side is at most this; `threads`:
    decoder threads (keep 1 when one process per core runs)."""
    if sample_rate % fps:
      raise ValueError(f"sample_rate {sample_rate} is not a whole number of samples per frame at {fps} fps")
    self.path = Path(path)
    self.fps, self.sample_rate = float(fps), int(sample_rate)
    self.samples_per_frame = int(sample_rate // fps)
    self.allow_silent, self.max_decode_side, self.threads = allow_silent, max_decode_side, threads
    self.info = probe(self.path, allow_silent=allow_silent, min_side=min_side, max_side=max_side)
    self.num_frames: int | None = None  # Known once frames() has run to the end.
    self.audio_spans: list[tuple[float, float]] = []  # [lo, hi) output samples the audio track covers.

  def output_size(self) -> tuple[int, int]:
    """(height, width) of the frames `frames()` yields."""
    w, h = self.info.width, self.info.height
    if self.max_decode_side and max(w, h) > self.max_decode_side:
      scale = self.max_decode_side / max(w, h)
      w, h = max(2, round(w * scale / 2) * 2), max(2, round(h * scale / 2) * 2)
    return h, w

  # --------------------------------------------------------------------------------------------------------------
  # Video.

  def frames(self) -> Iterator[np.ndarray]:
    """Yields uint8 [H, W, 3] RGB frames at `fps`; frame k shows the source frame on screen at t0 + (k + 0.5)/fps.

    Raises PrepError(stage "decode") if the decoder fails or no frame decodes.
    """
    height, width = self.output_size()
    period = 1.0 / self.fps
    t0 = self.info.start_s
    k = 0
    previous = None  # (time, rgb) of the newest decoded frame.
    intervals: list[float] = []
    last_duration = None
    try:
      with _open(self.path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO" if self.threads > 1 else "SLICE"
        stream.codec_context.thread_count = self.threads
        for frame in container.decode(stream):
          time = frame.time
          if time is None:
            time = t0 + (len(intervals) + (previous is not None)) / (self.info.source_fps or self.fps)
          if previous is not None:
            if time <= previous[0]:
              continue  # A duplicate or out-of-order timestamp: keep the first frame shown at that time.
            intervals.append(time - previous[0])
            while t0 + (k + 0.5) * period < time:
              yield previous[1]
              k += 1
          # reformat + to_ndarray: the same pixels as to_ndarray(format=...) in PyAV 18, about 4x faster.
          rgb = frame.reformat(format="rgb24", width=width, height=height).to_ndarray()
          if frame.duration and frame.time_base is not None:
            last_duration = float(frame.duration * frame.time_base)
          previous = (time, rgb)
    except av.error.FFmpegError as e:
      raise PrepError(self.path, STAGE_DECODE, f"video decoding failed after {k} frames "
                                               f"({_ffmpeg_reason(e)})") from None
    if previous is None:
      raise PrepError(self.path, STAGE_DECODE, "the video stream has no decodable frames")
    if last_duration is None or last_duration <= 0:
      last_duration = float(np.median(intervals[-8:])) if intervals else period
    end = previous[0] + last_duration
    while t0 + (k + 0.5) * period < end or k == 0:
      yield previous[1]
      k += 1
    self.num_frames = k

  # --------------------------------------------------------------------------------------------------------------
  # Audio.

  def audio(self) -> np.ndarray:
    """float32 [N] mono at `sample_rate`; sample n is at time t0 + n / sample_rate. Zeros where there is no audio.

    N covers the audio track up to its end (not cut to the video); see `audio_for_frames`.
    """
    if not self.info.has_audio:
      return np.zeros(0, np.float32)
    import soxr  # Installed with librosa; imported here so probing alone stays light.
    pieces: list[tuple[int, np.ndarray]] = []
    rate = None
    try:
      with _open(self.path) as container:
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate or self.sample_rate
        mono = av.AudioResampler(format="flt", layout="mono", rate=rate)
        expected = None  # Sample position right after the previous frame.
        for frame in container.decode(stream):
          if frame.samples == 0:
            continue
          at = frame.time
          position = expected if at is None else round((at - self.info.start_s) * rate)
          if expected is not None and abs(position - expected) <= 0.02 * rate:
            position = expected  # Contiguous: ignore timestamp rounding jitter.
          for converted in mono.resample(frame):
            data = converted.to_ndarray().reshape(-1).astype(np.float32)
            pieces.append((position, data))
            position += len(data)
          expected = position
    except av.error.FFmpegError as e:
      raise PrepError(self.path, STAGE_DECODE, f"audio decoding failed ({_ffmpeg_reason(e)})") from None
    if not pieces:
      return np.zeros(0, np.float32)
    end = max(p + len(d) for p, d in pieces)
    track = np.zeros(max(end, 0), np.float32)
    for position, data in pieces:
      if position + len(data) <= 0:
        continue  # Entirely before the video starts.
      cut = max(0, -position)
      track[position + cut:position + len(data)] = data[cut:]
    if rate != self.sample_rate:
      track = soxr.resample(track, rate, self.sample_rate, quality="HQ").astype(np.float32)
    self.audio_spans = _coverage(pieces, rate, self.sample_rate)
    return track

  def audio_valid(self, start: int, stop: int) -> np.ndarray:
    """bool [stop - start]: whether each of frames [start, stop) lies wholly inside the decoded audio track.

    All True when the video has no audio track and `allow_silent` is set (silence is then the accepted audio).
    """
    if not self.info.has_audio:
      return np.full(stop - start, self.allow_silent, bool)
    spf = self.samples_per_frame
    valid = np.zeros(stop - start, bool)
    for lo, hi in self.audio_spans:
      first, last = math.ceil(lo / spf - 1e-6), math.floor(hi / spf + 1e-6)  # Whole frames inside [lo, hi).
      first, last = max(first, start), min(last, stop)
      if last > first:
        valid[first - start:last - start] = True
    return valid

  def audio_for_frames(self, audio: np.ndarray, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Cuts/pads `audio()` to exactly num_frames * samples_per_frame; returns (audio, `audio_valid(0, num_frames)`)."""
    out = np.zeros(num_frames * self.samples_per_frame, np.float32)
    out[:min(len(audio), len(out))] = audio[:len(out)]
    return out, self.audio_valid(0, num_frames)


def _coverage(pieces: list[tuple[int, np.ndarray]], rate: int, out_rate: int) -> list[tuple[float, float]]:
  """Merged [lo, hi) sample ranges (at out_rate) that the decoded audio frames cover."""
  spans = sorted((p, p + len(d)) for p, d in pieces)
  merged: list[list[int]] = []
  for lo, hi in spans:
    if merged and lo <= merged[-1][1] + 1:
      merged[-1][1] = max(merged[-1][1], hi)
    else:
      merged.append([lo, hi])
  scale = out_rate / rate
  return [(lo * scale, hi * scale) for lo, hi in merged]


@dataclasses.dataclass(frozen=True)
class Decoded:
  """A whole decoded video (for short inputs and tests): frames [T, H, W, 3], audio [T * spf], valid [T]."""
  info: MediaInfo
  frames: np.ndarray
  audio: np.ndarray
  audio_valid: np.ndarray
  fps: float
  sample_rate: int


def decode(path: str | os.PathLike, **kwargs) -> Decoded:
  """Decodes a whole file into memory; keyword arguments as for `MediaReader`."""
  reader = MediaReader(path, **kwargs)
  audio = reader.audio()
  frames = np.stack(list(reader.frames()))
  audio, valid = reader.audio_for_frames(audio, len(frames))
  return Decoded(reader.info, frames, audio, valid, reader.fps, reader.sample_rate)

"""Writing media with PyAV: clips as H.264 + AAC mp4, and a video's audio moved in time with its video untouched.

Reading lives in `data_pipelines.prep.decode` (timestamps, 25 fps, 16 kHz); these are the writers the previews,
the sync command's `--fix_out` and the sync benchmarks use.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from data_pipelines.prep import decode


def write_mp4(path: str | os.PathLike, frames: Iterable[np.ndarray], audio: np.ndarray | None, *, fps: float = 25.0,
              sample_rate: int = 16000, crf: int = 18) -> Path:
  """frames: uint8 [H, W, 3] RGB (even H and W), audio: mono float32 in [-1, 1] starting with frame 0 (None:
  no audio track). H.264 (yuv420p) + AAC."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  rate = int(round(fps)) if float(fps).is_integer() else Fraction(fps).limit_denominator(1001)
  with av.open(str(path), "w") as container:
    video = None
    sound = container.add_stream("aac", rate=sample_rate) if audio is not None else None
    if sound is not None:
      sound.layout = "mono"
    for frame in frames:
      if video is None:
        video = container.add_stream("libx264", rate=rate)
        video.height, video.width = frame.shape[:2]
        video.pix_fmt, video.options = "yuv420p", {"crf": str(crf)}
      for packet in video.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
        container.mux(packet)
    if video is None:
      raise ValueError(f"{path}: no frames to write")
    if sound is not None:
      audio = np.asarray(audio, np.float32)
      for i in range(0, len(audio), 1024):
        piece = av.AudioFrame.from_ndarray(audio[None, i:i + 1024], format="flt", layout="mono")
        piece.sample_rate, piece.pts = sample_rate, i
        for packet in sound.encode(piece):
          container.mux(packet)
    for stream in (video, sound):
      if stream is not None:
        for packet in stream.encode(None):
          container.mux(packet)
  return path


def _decode_audio(container, start_s: float) -> tuple[np.ndarray, int, str]:
  """The first audio track as float32 [channels, S] at its own rate, sample 0 at `start_s` (the video's start),
  placed by timestamps (priming, edit lists, late starts) as `decode.MediaReader.audio` does."""
  stream = container.streams.audio[0]
  rate = stream.codec_context.sample_rate
  layout = stream.codec_context.layout.name
  resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
  pieces, expected = [], None
  for frame in container.decode(stream):
    if frame.samples == 0:
      continue
    position = expected if frame.time is None else round((frame.time - start_s) * rate)
    if expected is not None and abs(position - expected) <= 0.02 * rate:
      position = expected
    for converted in resampler.resample(frame):
      data = converted.to_ndarray()
      pieces.append((position, data))
      position += data.shape[1]
    expected = position
  channels = pieces[0][1].shape[0] if pieces else 1
  end = max((p + d.shape[1] for p, d in pieces), default=0)
  track = np.zeros((channels, max(end, 0)), np.float32)
  for position, data in pieces:
    cut = max(0, -position)
    if position + data.shape[1] > 0:
      track[:, position + cut:position + data.shape[1]] = data[:, cut:]
  return track, rate, layout


def shift_audio(src: str | os.PathLike, dst: str | os.PathLike, offset_s: float) -> Path:
  """A copy of `src` whose audio is `offset_s` seconds EARLIER (positive: the audio lagged the video and is moved
  back into sync, the `sync` sign convention; negative: later). The video packets are copied unchanged; the audio
  is re-encoded at its own rate and channel layout (AAC; Opus for webm), silence where the moved track has none,
  and keeps its original length. Written to a temporary file beside `dst` and renamed when complete."""
  src, dst = Path(src), Path(dst)
  info = decode.probe(src)
  dst.parent.mkdir(parents=True, exist_ok=True)
  fd, partial = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=dst.suffix or ".mp4", dir=dst.parent)
  os.close(fd)
  try:
    with av.open(str(src)) as inp:
      track, rate, layout = _decode_audio(inp, info.start_s)
    shift = int(round(offset_s * rate))
    moved = np.zeros_like(track)
    if shift >= 0:
      moved[:, :track.shape[1] - shift] = track[:, shift:]
    else:
      moved[:, -shift:] = track[:, :track.shape[1] + shift]
    codec = "libopus" if dst.suffix.lower() == ".webm" else "aac"
    with av.open(str(src)) as inp, av.open(partial, "w", format=_format_of(dst)) as out:
      vin = inp.streams.video[0]
      vout = out.add_stream_from_template(vin)
      aout = out.add_stream(codec, rate=rate if codec == "aac" else 48000, layout=layout)
      for packet in inp.demux(vin):
        if packet.dts is None:
          continue
        packet.stream = vout
        out.mux(packet)
      _encode_audio(out, aout, moved, rate, info.start_s)
    os.replace(partial, dst)
  except BaseException:
    if os.path.exists(partial):
      os.remove(partial)
    raise
  return dst


def _format_of(path: Path) -> str | None:
  return {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm"}.get(path.suffix.lower())


def _encode_audio(container, stream, track: np.ndarray, rate: int, start_s: float) -> None:
  """Encodes planar float audio [channels, S] at `rate`, sample 0 at `start_s` on the container clock."""
  resampler = None
  if stream.codec_context.sample_rate != rate:
    resampler = av.AudioResampler(format="fltp", layout=stream.layout.name, rate=stream.codec_context.sample_rate)
  first = int(round(start_s * rate))
  for i in range(0, track.shape[1], 1024):
    piece = av.AudioFrame.from_ndarray(np.ascontiguousarray(track[:, i:i + 1024]), format="fltp",
                                       layout=stream.layout.name)
    piece.sample_rate, piece.pts, piece.time_base = rate, first + i, Fraction(1, rate)
    for frame in (resampler.resample(piece) if resampler else [piece]):
      for packet in stream.encode(frame):
        container.mux(packet)
  for packet in stream.encode(None):
    container.mux(packet)

"""The clip record: one versioned schema shared by every writer and reader.

A clip is a run of consecutive face frames of one speaker with its audio. Every writer (the synthetic corpus,
real-video preprocessing) produces `ClipRecord`s and every reader (the Grain pipeline, previews, evaluators)
consumes them, so the format lives here and nowhere else.

On disk a record is a msgpack map (language-neutral, no pickling, fast to parse). Frames are stored as encoded
images, one per frame, so a reader decodes only the window it samples; audio is 16-bit PCM; masks are bit-packed.
Records live in ArrayRecord shards (random access, read by `grain.sources.ArrayRecordDataSource`) next to a JSONL
manifest whose i-th line describes the i-th record of the split (see `synclipmae.data.corpus`).
"""

from __future__ import annotations

import dataclasses
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import msgpack
import numpy as np
from PIL import Image

SCHEMA_VERSION = 1
FRAME_CODECS = ("png", "jpeg")
_PIL_FORMAT = {"png": "PNG", "jpeg": "JPEG"}
_FIELDS = ("schema_version", "clip_id", "speaker_id", "source", "fps", "sample_rate", "frame_codec",
           "frames", "audio", "face_masks", "mouth_masks", "labels", "metadata")


class RecordError(ValueError):
  """A clip record is malformed; the message names the clip and the problem."""


@dataclasses.dataclass(frozen=True, eq=False)
class ClipRecord:
  """One talking-face clip.

  Attributes:
    clip_id: unique id of the clip within its corpus.
    speaker_id: identity of the person (the unit of train/held-out splits).
    source: where the clip came from (an input video path, or "synthetic").
    fps: video frame rate.
    sample_rate: audio sample rate in Hz.
    frames: one encoded RGB image per frame (`frame_codec`), all of the same size.
    frame_codec: "png" (lossless) or "jpeg".
    audio: int16 [N] mono PCM covering the clip; N == round(T * sample_rate / fps).
    face_masks: bool [T, H, W] face region per frame.
    mouth_masks: bool [T, H, W] mouth region per frame.
    labels: optional per-frame arrays, leading dimension T (e.g. phoneme ids, pose).
    metadata: optional JSON-like per-clip values (e.g. the transcript).
  """
  clip_id: str
  speaker_id: str
  source: str
  fps: float
  sample_rate: int
  frames: tuple[bytes, ...]
  frame_codec: str
  audio: np.ndarray
  face_masks: np.ndarray
  mouth_masks: np.ndarray
  labels: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)
  metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def num_frames(self) -> int:
    return len(self.frames)

  @property
  def frame_size(self) -> tuple[int, int]:
    """(height, width) of every frame."""
    return tuple(self.face_masks.shape[1:3])

  @property
  def samples_per_frame(self) -> float:
    return self.sample_rate / self.fps

  def decode_frames(self, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Decodes frames [start, stop) to uint8 [t, H, W, 3]."""
    return decode_frames(self.frames[start:stop])

  def audio_float(self) -> np.ndarray:
    """The audio as float32 in [-1, 1)."""
    return pcm16_to_float(self.audio)

  def validate(self) -> None:
    """Raises RecordError naming the clip and the first problem found."""
    name = self.clip_id if isinstance(self.clip_id, str) and self.clip_id else "<no clip_id>"

    def fail(problem: str):
      raise RecordError(f"clip record {name!r}: {problem}")

    for field in ("clip_id", "speaker_id", "source"):
      value = getattr(self, field)
      if not isinstance(value, str) or not value:
        fail(f"{field} must be a non-empty string, got {value!r}")
    if not (isinstance(self.fps, (int, float)) and math.isfinite(self.fps) and self.fps > 0):
      fail(f"fps must be a positive number, got {self.fps!r}")
    if not (isinstance(self.sample_rate, (int, np.integer)) and self.sample_rate > 0):
      fail(f"sample_rate must be a positive integer, got {self.sample_rate!r}")
    if self.frame_codec not in FRAME_CODECS:
      fail(f"frame_codec must be one of {FRAME_CODECS}, got {self.frame_codec!r}")
    t = len(self.frames)
    if t == 0:
      fail("has no frames")
    if not all(isinstance(f, bytes) and f for f in self.frames):
      fail("every frame must be non-empty encoded image bytes")
    for field in ("face_masks", "mouth_masks"):
      mask = getattr(self, field)
      if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_ or mask.ndim != 3:
        fail(f"{field} must be a bool array [T, H, W], got {_describe(mask)}")
      if mask.shape[0] != t:
        fail(f"{field} has {mask.shape[0]} frames but the clip has {t}")
    if self.face_masks.shape != self.mouth_masks.shape:
      fail(f"face_masks {self.face_masks.shape} and mouth_masks {self.mouth_masks.shape} differ in shape")
    height, width = self.frame_size
    for i in sorted({0, t - 1}):
      got = _image_size(self.frames[i], name, i)
      if got != (height, width):
        fail(f"frame {i} is {got[0]}x{got[1]} but the masks are {height}x{width}")
    if not isinstance(self.audio, np.ndarray) or self.audio.dtype != np.int16 or self.audio.ndim != 1:
      fail(f"audio must be int16 [N], got {_describe(self.audio)}")
    expected = round(t * self.sample_rate / self.fps)
    if abs(len(self.audio) - expected) > 1:
      fail(f"audio has {len(self.audio)} samples but {t} frames at {self.fps} fps need {expected} "
           f"at {self.sample_rate} Hz")
    for key, value in self.labels.items():
      if not isinstance(key, str) or not key:
        fail(f"label names must be non-empty strings, got {key!r}")
      if not isinstance(value, np.ndarray) or value.ndim < 1 or value.shape[0] != t:
        fail(f"label {key!r} must be an array with leading dimension {t}, got {_describe(value)}")
      if value.dtype.kind not in "biuf":
        fail(f"label {key!r} must be numeric or bool, got dtype {value.dtype}")
    if not isinstance(self.metadata, Mapping):
      fail(f"metadata must be a mapping, got {type(self.metadata).__name__}")


def _describe(value: Any) -> str:
  if isinstance(value, np.ndarray):
    return f"{value.dtype} array of shape {value.shape}"
  return type(value).__name__


def _image_size(data: bytes, clip: str, index: int) -> tuple[int, int]:
  try:
    with Image.open(io.BytesIO(data)) as image:
      return image.height, image.width
  except Exception as e:  # PIL raises several types for junk bytes.
    raise RecordError(f"clip record {clip!r}: frame {index} is not a decodable image ({e})") from None


# ----------------------------------------------------------------------------------------------------------------
# Frames and audio.


def encode_frames(frames: np.ndarray, codec: str = "png", quality: int = 95) -> tuple[bytes, ...]:
  """Encodes uint8 [T, H, W, 3] frames, one image per frame."""
  if codec not in FRAME_CODECS:
    raise ValueError(f"frame codec must be one of {FRAME_CODECS}, got {codec!r}")
  frames = np.asarray(frames)
  if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
    raise ValueError(f"frames must be uint8 [T, H, W, 3], got {_describe(frames)}")
  options = {"quality": quality} if codec == "jpeg" else {"compress_level": 1}
  out = []
  for frame in frames:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format=_PIL_FORMAT[codec], **options)
    out.append(buffer.getvalue())
  return tuple(out)


def decode_frames(encoded: Sequence[bytes]) -> np.ndarray:
  """Decodes encoded images to uint8 [T, H, W, 3]."""
  decoded = []
  for data in encoded:
    with Image.open(io.BytesIO(data)) as image:
      decoded.append(np.asarray(image.convert("RGB")))
  return np.stack(decoded)


def float_to_pcm16(audio: np.ndarray) -> np.ndarray:
  """float [-1, 1] -> int16 PCM, clipping out-of-range samples."""
  return np.round(np.clip(np.asarray(audio, np.float32), -1.0, 32767 / 32768) * 32768).astype(np.int16)


def pcm16_to_float(audio: np.ndarray) -> np.ndarray:
  return np.asarray(audio, np.float32) / 32768.0


# ----------------------------------------------------------------------------------------------------------------
# Serialisation.


def _pack_array(array: np.ndarray) -> dict[str, Any]:
  array = np.ascontiguousarray(array)
  return {"dtype": array.dtype.str, "shape": list(array.shape), "data": array.tobytes()}


def _unpack_array(packed: Mapping[str, Any]) -> np.ndarray:
  dtype = np.dtype(packed["dtype"])
  if dtype.kind not in "biuf":
    raise ValueError(f"unsupported dtype {dtype}")
  return np.frombuffer(packed["data"], dtype=dtype).reshape(packed["shape"])


def _pack_mask(mask: np.ndarray) -> dict[str, Any]:
  return {"shape": list(mask.shape), "bits": np.packbits(mask, axis=None).tobytes()}


def _unpack_mask(packed: Mapping[str, Any]) -> np.ndarray:
  shape = tuple(packed["shape"])
  bits = np.unpackbits(np.frombuffer(packed["bits"], np.uint8), count=math.prod(shape))
  return bits.reshape(shape).astype(bool)


def serialize(record: ClipRecord) -> bytes:
  """Validates a record and returns its bytes."""
  record.validate()
  return msgpack.packb({
      "schema_version": SCHEMA_VERSION,
      "clip_id": record.clip_id,
      "speaker_id": record.speaker_id,
      "source": record.source,
      "fps": float(record.fps),
      "sample_rate": int(record.sample_rate),
      "frame_codec": record.frame_codec,
      "frames": list(record.frames),
      "audio": _pack_array(record.audio),
      "face_masks": _pack_mask(record.face_masks),
      "mouth_masks": _pack_mask(record.mouth_masks),
      "labels": {k: _pack_array(v) for k, v in record.labels.items()},
      "metadata": dict(record.metadata),
  }, use_bin_type=True)


def deserialize(data: bytes, *, where: str = "record", validate: bool = True) -> ClipRecord:
  """Parses record bytes; `where` names the record (e.g. "shard-00001 #17") in errors."""
  try:
    raw = msgpack.unpackb(data, raw=False)
  except Exception as e:
    raise RecordError(f"{where}: not a clip record (msgpack: {e})") from None
  if not isinstance(raw, dict):
    raise RecordError(f"{where}: not a clip record (top level is {type(raw).__name__})")
  version = raw.get("schema_version")
  if version != SCHEMA_VERSION:
    raise RecordError(f"{where}: schema_version {version!r} is not supported (this code reads {SCHEMA_VERSION})")
  missing = [f for f in _FIELDS if f not in raw]
  if missing:
    raise RecordError(f"{where} (clip {raw.get('clip_id')!r}): missing fields {missing}")
  try:
    record = ClipRecord(
        clip_id=raw["clip_id"], speaker_id=raw["speaker_id"], source=raw["source"], fps=raw["fps"],
        sample_rate=raw["sample_rate"], frames=tuple(raw["frames"]), frame_codec=raw["frame_codec"],
        audio=_unpack_array(raw["audio"]), face_masks=_unpack_mask(raw["face_masks"]),
        mouth_masks=_unpack_mask(raw["mouth_masks"]),
        labels={k: _unpack_array(v) for k, v in raw["labels"].items()}, metadata=raw["metadata"])
  except (KeyError, TypeError, ValueError) as e:
    raise RecordError(f"{where} (clip {raw.get('clip_id')!r}): malformed field ({e})") from None
  if validate:
    record.validate()
  return record

"""The clip record: one versioned schema shared by every writer and reader.

A clip is a run of consecutive face frames of one speaker with its audio. Every writer (the synthetic corpus,
real-video preprocessing) produces `ClipRecord`s and every reader (the Grain pipeline, previews, evaluators)
consumes them, so the format lives here and nowhere else.

On disk a record is a TensorFlow Datasets example (`features`: a `tfds.features.FeaturesDict`, serialised without
TensorFlow), so a corpus is a TFDS dataset that `tfds.builder_from_directory` / `tfds.data_source` open and Grain
reads. Frames are stored as encoded images, one per frame, so a reader decodes only the window it samples; audio is
16-bit PCM; masks are bit-packed. The spec's only per-corpus part is the label set (`label_spec`), recorded in
the corpus's `features.json`. Records live in ArrayRecord shards next to a JSONL manifest whose i-th line describes
the i-th record of the split (see `synclipmae.data.corpus`).
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

SCHEMA_VERSION = 2  # 1: msgpack records (read only by `synclipmae.data.convert`).
FRAME_CODECS = ("png", "jpeg")
_PIL_FORMAT = {"png": "PNG", "jpeg": "JPEG"}


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
# The TFDS feature spec and (de)serialisation.
#
# Arrays are stored as raw bytes (`Encoding.BYTES`): a tf.train.Example would otherwise hold int16 audio as
# varint int64s (a negative sample takes 10 bytes) and floats as float32 (fps 29.97 would not round-trip).


def label_spec(record: ClipRecord) -> dict[str, tuple[str, tuple[int, ...]]]:
  """{label name: (dtype, per-frame shape)} of a record; every record of a corpus has the same spec."""
  return {k: (np.dtype(v.dtype).name, tuple(int(d) for d in v.shape[1:])) for k, v in sorted(record.labels.items())}


def spec_to_json(spec: Mapping[str, tuple[str, Sequence[int]]]) -> dict[str, str]:
  """{"pose": "float32[4]"}: the label spec as manifest / JSON text."""
  return {k: f"{dtype}[{','.join(map(str, shape))}]" for k, (dtype, shape) in spec.items()}


def spec_from_json(text: Mapping[str, str]) -> dict[str, tuple[str, tuple[int, ...]]]:
  out = {}
  for key, value in text.items():
    dtype, _, shape = value.partition("[")
    out[key] = (dtype, tuple(int(d) for d in shape.rstrip("]").split(",") if d))
  return out


def features(labels: Mapping[str, tuple[str, Sequence[int]]]):
  """The clip record as a `tfds.features.FeaturesDict` (schema `SCHEMA_VERSION`), for a corpus's label spec.

  `tfds.builder_from_directory(corpus).as_data_source(split)` decodes records with it, TensorFlow absent.
  """
  import tensorflow_datasets as tfds  # Imported here: code that only handles decoded records does not need it.
  f = tfds.features
  raw = f.Encoding.BYTES

  def array(dtype, shape, doc):
    return f.Tensor(shape=shape, dtype=np.dtype(dtype), encoding=raw, doc=doc)

  return f.FeaturesDict({
      "clip_id": f.Text(doc="Unique id of the clip within its corpus."),
      "speaker_id": f.Text(doc="Identity of the person: the unit of train / held-out splits."),
      "source": f.Text(doc="Where the clip came from: an input video, or 'synthetic'."),
      "fps": array(np.float64, (), "Video frame rate."),
      "sample_rate": f.Scalar(np.int32, doc="Audio sample rate in Hz."),
      "frame_codec": f.Text(doc="'png' or 'jpeg': the encoding of every frame."),
      "frame_size": f.Tensor(shape=(2,), dtype=np.int32, doc="(height, width) of every frame."),
      "frames": f.Sequence(f.Scalar(np.object_), doc="One encoded RGB image per frame (decode only a window)."),
      "audio": array(np.int16, (None,), "Mono 16-bit PCM covering the clip: round(T * sample_rate / fps)."),
      "face_masks": array(np.uint8, (None,), "Face region per frame: bool [T, H, W], np.packbits-packed."),
      "mouth_masks": array(np.uint8, (None,), "Mouth region per frame: bool [T, H, W], np.packbits-packed."),
      "labels": f.FeaturesDict({k: array(dtype, (None, *shape), f"Per-frame label {k!r}.")
                                for k, (dtype, shape) in labels.items()}),
      "metadata": f.Text(doc="JSON object of per-clip values (e.g. the transcript)."),
  }, doc=f"A talking-face clip record, schema version {SCHEMA_VERSION} (synclipmae.data.records).")


def to_example(record: ClipRecord) -> dict[str, Any]:
  """A validated record as the nested dict `features(...)` serialises."""
  record.validate()
  return {
      "clip_id": record.clip_id, "speaker_id": record.speaker_id, "source": record.source,
      "fps": float(record.fps), "sample_rate": int(record.sample_rate), "frame_codec": record.frame_codec,
      "frame_size": np.array(record.frame_size, np.int32), "frames": list(record.frames), "audio": record.audio,
      "face_masks": np.packbits(record.face_masks, axis=None),
      "mouth_masks": np.packbits(record.mouth_masks, axis=None),
      "labels": dict(record.labels), "metadata": json.dumps(dict(record.metadata)),
  }


def from_example(example: Mapping[str, Any], *, where: str = "record", validate: bool = True) -> ClipRecord:
  """A decoded example (`features(...).deserialize_example_np`, a TFDS data source's item) -> a ClipRecord."""
  text = lambda value: value.decode() if isinstance(value, bytes) else str(value)
  try:
    t = len(example["frames"])
    shape = (t, *(int(d) for d in example["frame_size"]))

    def mask(bits):
      return np.unpackbits(np.asarray(bits, np.uint8), count=math.prod(shape)).reshape(shape).view(bool)

    record = ClipRecord(
        clip_id=text(example["clip_id"]), speaker_id=text(example["speaker_id"]), source=text(example["source"]),
        fps=float(example["fps"]), sample_rate=int(example["sample_rate"]), frames=tuple(example["frames"]),
        frame_codec=text(example["frame_codec"]), audio=np.asarray(example["audio"]),
        face_masks=mask(example["face_masks"]), mouth_masks=mask(example["mouth_masks"]),
        labels={k: np.asarray(v) for k, v in example["labels"].items()}, metadata=json.loads(example["metadata"]))
  except (KeyError, TypeError, ValueError) as e:
    clip = example.get("clip_id") if isinstance(example, Mapping) else None
    raise RecordError(f"{where} (clip {clip!r}): malformed field ({type(e).__name__}: {e})") from None
  if validate:
    record.validate()
  return record


def serialize(record: ClipRecord, spec: Mapping[str, tuple[str, Sequence[int]]] | None = None) -> bytes:
  """Validates a record and returns its bytes under the corpus's label spec (default: the record's own)."""
  own = label_spec(record)
  if spec is not None and own != dict(spec):
    raise RecordError(f"clip record {record.clip_id!r}: labels {spec_to_json(own)} differ from the corpus's "
                      f"{spec_to_json(spec)}")
  features_, serializer = _features_cached(_spec_key(own)), _serializer_cached(_spec_key(own))
  # What `features_.serialize_example` does, but with protobuf's deterministic map order: the same record gives
  # the same bytes in every process, so a corpus is reproducible shard for shard.
  return serializer.get_tf_example(features_.encode_example(to_example(record))).SerializeToString(deterministic=True)


def deserialize(data: bytes, spec: Mapping[str, tuple[str, Sequence[int]]], *, where: str = "record",
                validate: bool = True) -> ClipRecord:
  """Parses record bytes written under `spec`; `where` names the record (e.g. "train record 17") in errors.

  Reads the tf.train.Example directly: the same result as `from_example(features(spec).deserialize_example_np(data))`
  (a test checks it) at a fifth of the cost, which the input pipeline pays for every window it samples.
  """
  from tensorflow_datasets.proto import tf_example_pb2
  try:
    feature = tf_example_pb2.Example.FromString(data).features.feature
    one = lambda key: feature[key].bytes_list.value[0]
    text = lambda key: one(key).decode()
    frames = tuple(feature["frames"].bytes_list.value)
    shape = (len(frames), *feature["frame_size"].int64_list.value)

    def mask(key):
      bits = np.frombuffer(one(key), np.uint8)
      return np.unpackbits(bits, count=math.prod(shape)).reshape(shape).view(bool)  # 0 or 1: no copy.

    record = ClipRecord(
        clip_id=text("clip_id"), speaker_id=text("speaker_id"), source=text("source"),
        fps=float(np.frombuffer(one("fps"), np.float64)[0]),
        sample_rate=int(feature["sample_rate"].int64_list.value[0]),
        frames=frames, frame_codec=text("frame_codec"), audio=np.frombuffer(one("audio"), np.int16),
        face_masks=mask("face_masks"), mouth_masks=mask("mouth_masks"),
        labels={k: np.frombuffer(one(f"labels/{k}"), dtype).reshape(-1, *label_shape)
                for k, (dtype, label_shape) in spec.items()},
        metadata=json.loads(one("metadata")))
  except Exception as e:  # protobuf, numpy and json raise several types for damaged bytes.
    raise RecordError(f"{where}: not a clip record of this corpus ({type(e).__name__}: {e})") from None
  if validate:
    record.validate()
  return record


def _spec_key(spec: Mapping[str, tuple[str, Sequence[int]]]) -> tuple:
  return tuple((k, dtype, tuple(shape)) for k, (dtype, shape) in sorted(spec.items()))


@functools.lru_cache(maxsize=16)
def _features_cached(key: tuple):
  return features({k: (dtype, shape) for k, dtype, shape in key})


@functools.lru_cache(maxsize=16)
def _serializer_cached(key: tuple):
  from tensorflow_datasets.core import example_serializer
  return example_serializer.ExampleSerializer(_features_cached(key).get_serialized_info())

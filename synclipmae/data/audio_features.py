"""Precomputed features of the frozen audio encoder, stored beside a corpus: computed once per clip, read per window.

A frozen wav2vec 2.0 gives a clip the same features every time it is read, yet without this the train step runs
it on every window of every step. `synclipmae precompute-audio` runs it once per clip and writes a sidecar
directory; a run with `--config.data.audio_features=DIR` reads per-video-frame features from it instead of the
waveform, and the train step skips the encoder.

What is stored (well-defined, so a run can check it reads what it expects):
  * the clip's audio, extended by `margin_frames` video frames of silence on both sides, goes through the frozen
    encoder ONCE, whole; then the adapter's parameter-free half (`synclipmae.models.audio.pool_video_frames`:
    each layer normalised per frame, 50 Hz -> 25 fps) gives float16 [V + 2*margin, L, C] for a clip of V frames;
  * the window of video frames [s, s+T) reads rows [s, s + T + 2*margin): exactly the frames the waveform path's
    adapter reads, but computed with the whole clip as context (and, with `normalize`, the waveform normalised
    over the whole clip) rather than only the window's T + 2*margin frames. That is the paper's setting (features
    of the utterance); the two paths are therefore close, not bit-equal.

Layout of a features directory:

    audio_features.json             what computed them (see `describe`), per split its shard and clip count
    {split}.features.array_record   record i <-> record i of the corpus split: msgpack {clip_id, features}

float16 halves the size: a base model with all 13 layers stores 13 x 768 x 2 bytes = 20 KB per video frame
(500 KB per second of video); `--config.model.audio.wav2vec2.layers` stores only the layers the adapter reads.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgpack
import ml_collections
import numpy as np

from synclipmae import storage
from synclipmae.data import records
from synclipmae.data.corpus import Corpus, ShardWriter

FEATURES_FILE = "audio_features.json"
FORMAT_VERSION = 1


class AudioFeaturesError(ValueError):
  """A features directory is missing, incomplete, or was computed with other settings than the run's."""


def describe(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The settings precomputed features depend on, from a pretraining config (stored, then checked at run time)."""
  audio = config.model.audio
  if audio.encoder != "wav2vec2":
    raise AudioFeaturesError(f"precomputed audio features need the frozen encoder model.audio.encoder='wav2vec2', "
                             f"got {audio.encoder!r} (a trained encoder's features change every step)")
  w = audio.wav2vec2
  return {"encoder": "wav2vec2", "geometry": w.geometry, "layers": list(w.layers),
          "checkpoint": os.path.abspath(w.path) if w.path else f"random init (seed {config.seed})",
          "normalize": bool(w.normalize), "margin_frames": int(audio.margin_frames),
          "sample_rate": int(audio.sample_rate), "fps": float(audio.fps)}


def clip_audio_with_margin(clip: records.ClipRecord, margin_frames: int) -> np.ndarray:
  """float32 [(V + 2*margin) * samples_per_frame]: the clip's audio with `margin_frames` of silence each side."""
  spf = clip.samples_per_frame
  if spf != int(spf):
    raise records.RecordError(f"clip {clip.clip_id!r}: {clip.sample_rate} Hz / {clip.fps} fps is not a whole number "
                              "of samples per frame")
  spf = int(spf)
  out = np.zeros(((clip.num_frames + 2 * margin_frames) * spf,), np.float32)
  audio = clip.audio_float()[:clip.num_frames * spf]
  out[margin_frames * spf:margin_frames * spf + len(audio)] = audio
  return out


def write_features(corpus: Corpus, splits: Sequence[str], directory: str | os.PathLike,
                   frame_features: Callable[[np.ndarray], np.ndarray], settings: dict[str, Any], *,
                   log: Callable[[str], None] = print) -> dict[str, Any]:
  """Computes and writes every clip's features; `frame_features(audio [1, S]) -> [1, V', L, C]`.

  The JSON file is written last, so an interrupted run leaves no directory a reader would accept.
  """
  directory = Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  (directory / FEATURES_FILE).unlink(missing_ok=True)
  margin = settings["margin_frames"]
  info = {"format_version": FORMAT_VERSION, "settings": settings, "splits": {}}
  for split in splits:
    source, manifest = corpus.source(split), corpus.manifest(split)
    name = f"{split}.features.array_record"
    start, shape = time.time(), None
    with ShardWriter(directory / name) as writer:
      for i in range(len(manifest)):
        clip = source[i]
        audio = clip_audio_with_margin(clip, margin)
        features = np.asarray(frame_features(audio[None]))[0]
        expected = clip.num_frames + 2 * margin
        if features.shape[0] != expected:
          raise AudioFeaturesError(f"clip {clip.clip_id!r}: the encoder gave {features.shape[0]} video frames of "
                                   f"features, expected {expected}")
        shape = features.shape[1:]
        writer.write(msgpack.packb({"clip_id": clip.clip_id,
                                    "features": _pack(features.astype(np.float16))},
                                   use_bin_type=True))
    info["splits"][split] = {"file": name, "num_clips": len(manifest)}
    log(f"{split}: {len(manifest)} clips, features [frames, {', '.join(map(str, shape or ()))}] in "
        f"{time.time() - start:.1f} s -> {directory / name}")
  info["shape"] = list(shape) if shape else None
  text = json.dumps(info, indent=1) + "\n"
  (directory / (FEATURES_FILE + ".partial")).write_text(text)
  os.replace(directory / (FEATURES_FILE + ".partial"), directory / FEATURES_FILE)
  return info


class AudioFeatures:
  """Read access to a finished features directory."""

  def __init__(self, directory: str | os.PathLike):
    """`directory`: local, or an object-storage URL whose files are read from a local copy (`storage.stage`)."""
    self.directory = storage.as_given(directory)
    if not (self.directory / FEATURES_FILE).is_file():
      raise AudioFeaturesError(f"{self.directory}: no {FEATURES_FILE}; not a features directory, or its writer did "
                               "not finish (run `synclipmae precompute-audio`)")
    path = self._local([FEATURES_FILE]) / FEATURES_FILE
    self.info = json.loads(path.read_text())
    if self.info.get("format_version") != FORMAT_VERSION:
      raise AudioFeaturesError(f"{path}: format_version {self.info.get('format_version')!r} is not supported")

  def check(self, settings: dict[str, Any], corpus: Corpus, split: str) -> None:
    """Raises naming the first setting that differs from the run's, or a split that does not match the corpus."""
    stored = self.info["settings"]
    for key, value in settings.items():
      if stored.get(key) != value:
        raise AudioFeaturesError(f"{self.directory}/{FEATURES_FILE}: computed with {key}={stored.get(key)!r}, but "
                                 f"this run has {key}={value!r}; recompute them (synclipmae precompute-audio)")
    if split not in self.info["splits"]:
      raise AudioFeaturesError(f"{self.directory}: no features for split {split!r} (it has "
                               f"{sorted(self.info['splits'])})")
    if self.info["splits"][split]["num_clips"] != len(corpus.manifest(split)):
      raise AudioFeaturesError(f"{self.directory}: {self.info['splits'][split]['num_clips']} clips of split "
                               f"{split!r}, the corpus has {len(corpus.manifest(split))}")

  def source(self, split: str):
    """A random-access source of the split's serialized feature records (record i <-> corpus record i)."""
    import grain
    name = self.info["splits"][split]["file"]
    return grain.sources.ArrayRecordDataSource([str(self._local([name]) / name)])

  def _local(self, names: list[str]) -> Path:
    """Where these files are read: the directory itself, or the local copy of a URL's (`storage.stage`)."""
    try:
      return storage.stage(self.directory, names)
    except FileNotFoundError as e:
      raise AudioFeaturesError(f"{e.args[0]}: the features directory {self.directory} is incomplete") from None


def parse(data: bytes, clip_id: str, where: str) -> np.ndarray:
  """A feature record's array [V + 2*margin, L, C] (float16), checked to belong to `clip_id`."""
  raw = msgpack.unpackb(data, raw=False)
  if raw.get("clip_id") != clip_id:
    raise AudioFeaturesError(f"{where}: features of clip {raw.get('clip_id')!r} where clip {clip_id!r} was expected "
                             "(the features directory does not belong to this corpus)")
  packed = raw["features"]
  return np.frombuffer(packed["data"], dtype=np.dtype(packed["dtype"])).reshape(packed["shape"])


def _pack(array: np.ndarray) -> dict[str, Any]:
  array = np.ascontiguousarray(array)
  return {"dtype": array.dtype.str, "shape": list(array.shape), "data": array.tobytes()}

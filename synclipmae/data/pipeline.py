"""The Grain input pipeline: clip records -> batches of T-frame windows with their aligned audio.

    source -> (shuffle, reshuffled every epoch) -> repeat -> sample a window of T consecutive frames + the audio
    under them -> this process's rows -> decode -> masks (pixel and per-patch) -> batch

Everything is a `grain.MapDataset`, so an element is a pure function of (seed, position): the pipeline is
deterministic, its iterator state is one small dict (saved with the model checkpoints), and worker processes
(`num_workers`) change the speed but never the batches.

Identity pairs (`identity_pairs`): each element is two windows of the same speaker from two different clips
(the second clip drawn at random among the speaker's others), so a batch of B clips holds B/2 speakers, clips
2i and 2i+1 sharing one. The trainer then takes z_id for a frame from the other clip of its pair: it shares the
identity, but not the clip's expression, head motion or speech. A speaker with one clip pairs it with itself
(another window).

Multi-host: the global order is shuffled identically on every process; global batch k is positions
[kB, (k+1)B) of it (B = n x `batch_size`, the per-process batch) and process `i` of `n` takes rows
[i x batch_size, (i+1) x batch_size) of each (`ProcessRows`), so one epoch is split across processes disjointly and
completely, and the trainer assembles global batches that are the same, row for row and window for window (the
window is drawn from the global position), whatever the number of processes: a run can resume on another count.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import einops
import grain
import numpy as np

from synclipmae.data import audio_features as audio_features_lib
from synclipmae.data import records
from synclipmae.data.corpus import Corpus


class _ClipSubset:
  """Random-access view of the records long enough for a window; yields (record index, ClipRecord[, features])."""

  def __init__(self, source, indices: np.ndarray, features=None):
    self._source = source
    self._indices = indices
    self._features = features  # Optional: precomputed audio features, record i <-> record i.

  def __len__(self) -> int:
    return len(self._indices)

  def __getitem__(self, i: int) -> tuple[int, records.ClipRecord] | tuple[int, records.ClipRecord, bytes]:
    index = int(self._indices[i])
    if self._features is None:
      return index, self._source[index]
    return index, self._source[index], self._features[index]


def patch_fractions(masks: np.ndarray, patch_size: int) -> np.ndarray:
  """bool masks [T, H, W] -> float32 [T, num_patches]: the fraction of each patch (row-major) inside the mask."""
  return einops.reduce(masks.astype(np.float32), "t (h p) (w q) -> t (h w)", "mean", p=patch_size, q=patch_size)


@dataclasses.dataclass(frozen=True)
class WindowLoader:
  """Parses a record and cuts a window of `num_frames` frames with the audio under them (a grain random map).

  The audio window extends `audio_margin_frames` frames on each side (zeros beyond the clip), so that audio
  features for the first and last frames see the same context as the others.
  """
  num_frames: int
  speakers: tuple[str, ...]
  patch_size: int | None = None
  audio_margin_frames: int = 2
  labels: tuple[str, ...] = ()
  random_window: bool = True
  where: str = "record"

  def __call__(self, element: tuple[int, records.ClipRecord], rng: np.random.Generator) -> dict[str, Any]:
    index, clip, *features = element
    t, n = self.num_frames, clip.num_frames
    start = int(rng.integers(0, n - t + 1)) if self.random_window else 0
    stop = start + t
    spf = clip.samples_per_frame
    if spf != int(spf):
      raise records.RecordError(f"clip {clip.clip_id!r}: {clip.sample_rate} Hz / {clip.fps} fps is not a whole "
                                "number of samples per frame")
    spf, margin = int(spf), self.audio_margin_frames
    audio = np.zeros(((t + 2 * margin) * spf,), np.float32)
    lo, hi = (start - margin) * spf, (stop + margin) * spf
    piece = clip.audio[max(lo, 0):min(hi, len(clip.audio))]
    audio[max(lo, 0) - lo:max(lo, 0) - lo + len(piece)] = records.pcm16_to_float(piece)
    face_mask = clip.face_masks[start:stop]
    out = {
        "video": clip.decode_frames(start, stop),
        "audio": audio,
        "face_mask": face_mask,
        "mouth_mask": clip.mouth_masks[start:stop],
        "speaker": np.int32(self.speakers.index(clip.speaker_id)),
        "clip": np.int32(index),
        "start": np.int32(start),
    }
    if self.patch_size:
      p = self.patch_size
      out["face_patches"] = patch_fractions(face_mask, p)
      out["mouth_patches"] = patch_fractions(out["mouth_mask"], p)
    if features:  # Precomputed per-video-frame audio features: rows [start, stop + 2*margin) of the clip's.
      rows = audio_features_lib.parse(features[0], clip.clip_id, f"{self.where} {index} (audio features)")
      out["audio_features"] = np.asarray(rows[start:stop + 2 * margin])
    for key in self.labels:
      if key not in clip.labels:
        raise records.RecordError(f"clip {clip.clip_id!r} has no label {key!r}; it has {sorted(clip.labels)}")
      out[f"labels/{key}"] = np.asarray(clip.labels[key][start:stop])
    return out


@dataclasses.dataclass(frozen=True)
class PairLoader:
  """An element of `_ClipSubset` -> the stacked windows [2, ...] of it and of another clip of the same speaker."""
  loader: WindowLoader
  subset: _ClipSubset
  partners: dict  # record index -> subset positions of the same speaker's other eligible clips.

  def __call__(self, element: tuple, rng: np.random.Generator) -> dict[str, Any]:
    others = self.partners[element[0]]
    partner = self.subset[int(others[rng.integers(len(others))])] if len(others) else element
    first, second = self.loader(element, rng), self.loader(partner, rng)
    return {k: np.stack([first[k], second[k]]) for k in first}


def _same_speaker_partners(entries: Sequence[dict[str, Any]], eligible: np.ndarray) -> dict[int, np.ndarray]:
  """record index -> positions in `eligible` of the other eligible records of the same speaker."""
  by_speaker: dict[str, list[int]] = {}
  for position, index in enumerate(eligible):
    by_speaker.setdefault(entries[index]["speaker_id"], []).append(position)
  return {int(index): np.array([p for p in by_speaker[entries[index]["speaker_id"]] if p != position], np.int64)
          for position, index in enumerate(eligible)}


def _flatten_pairs(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """[B/2, 2, ...] -> [B, ...]: pair members next to each other (clips 2i, 2i+1)."""
  return {k: v.reshape(v.shape[0] * 2, *v.shape[2:]) for k, v in batch.items()}


def make_dataset(corpus: Corpus | str, split: str, *, batch_size: int, num_frames: int, seed: int = 0,
                 patch_size: int | None = None, audio_margin_frames: int = 2, labels: Sequence[str] = (),
                 shuffle: bool = True, random_window: bool = True, num_epochs: int | None = None,
                 process_index: int | None = None, process_count: int | None = None,
                 drop_remainder: bool = True, audio_features: str | None = None,
                 identity_pairs: bool = False) -> grain.MapDataset:
  """The batched dataset of one split for this process.

  Args:
    corpus: a `Corpus` or its directory.
    split: e.g. "train" or "heldout".
    batch_size: per-process batch size.
    num_frames: frames per window (T); shorter clips are left out.
    seed: controls the order and the windows.
    patch_size: if set, also yields "face_patches" and "mouth_patches" [T, num_patches], the fraction of each
      patch inside the face / mouth mask.
    audio_margin_frames: audio context on each side of the window, in frames.
    labels: per-frame label names to include as "labels/<name>".
    shuffle: shuffle clips (each epoch differently).
    random_window: random window start; otherwise the first T frames.
    num_epochs: None repeats forever.
    process_index, process_count: this process's slice; default `jax.process_index()` / `jax.process_count()`.
    drop_remainder: drop a last partial batch.
    audio_features: a directory of precomputed audio features (`synclipmae.data.audio_features`); if set, also
      yields "audio_features" float16 [T + 2*audio_margin_frames, L, C].
    identity_pairs: batches of `batch_size` / 2 same-speaker pairs of clips (module docstring); batch_size even.
  """
  corpus = corpus if isinstance(corpus, Corpus) else Corpus(corpus)
  if process_index is None or process_count is None:
    import jax  # Only for the defaults: the pipeline itself does not need jax.
    process_index, process_count = jax.process_index(), jax.process_count()
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} is not in [0, {process_count})")
  if batch_size < 1 or num_frames < 1:
    raise ValueError(f"batch_size and num_frames must be positive, got {batch_size} and {num_frames}")
  if identity_pairs and batch_size % 2:
    raise ValueError(f"identity_pairs needs an even batch size (pairs of clips), got {batch_size}")
  entries = corpus.manifest(split)
  lengths = np.array([entry["num_frames"] for entry in entries])
  eligible = np.flatnonzero(lengths >= num_frames)
  if len(eligible) == 0:
    raise ValueError(f"{corpus.directory}/{split}: no clip has {num_frames} frames (longest: {lengths.max()})")
  features = audio_features_lib.AudioFeatures(audio_features).source(split) if audio_features else None
  subset = _ClipSubset(corpus.source(split), eligible, features)
  ds = grain.MapDataset.source(subset)
  if shuffle:
    ds = ds.shuffle(seed=seed)
  ds = ds.repeat(num_epochs)
  loader = WindowLoader(num_frames=num_frames, speakers=tuple(corpus.speakers), patch_size=patch_size,
                        audio_margin_frames=audio_margin_frames, labels=tuple(labels),
                        random_window=random_window, where=f"{corpus.directory}/{split} record")
  if identity_pairs:
    ds = ds.random_map(PairLoader(loader, subset, _same_speaker_partners(entries, eligible)), seed=seed)
    ds = ProcessRows(ds, process_index, process_count, batch_size // 2)
    return ds.batch(batch_size // 2, drop_remainder=drop_remainder).map(_flatten_pairs)
  ds = ProcessRows(ds.random_map(loader, seed=seed), process_index, process_count, batch_size)
  return ds.batch(batch_size, drop_remainder=drop_remainder)


def training_audio_margin(config) -> int:
  """Audio frames on each side of a training window: the adapter's context (model.audio.margin_frames) plus the
  reach of the same-clip InfoNCE's audio negatives beyond the window (loss.clip_reach)."""
  return config.model.audio.margin_frames + config.loss.get("clip_reach", 0)


def batch_spec(config) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
  """(shape, dtype) of each global-batch array the train step reads, for a pretraining config: what
  `make_dataset` yields, for planning memory and benchmarking speed without a corpus of that image size."""
  b, t, s, p = config.data.batch_size, config.data.num_frames, config.model.image_size, config.model.patch_size
  samples = int(round(config.model.audio.sample_rate / config.model.audio.fps)) * (
      t + 2 * training_audio_margin(config))
  patches = (s // p) ** 2
  return {"video": ((b, t, s, s, 3), np.dtype(np.uint8)), "audio": ((b, samples), np.dtype(np.float32)),
          "face_patches": ((b, t, patches), np.dtype(np.float32)),
          "mouth_patches": ((b, t, patches), np.dtype(np.float32)),
          "clip": ((b,), np.dtype(np.int32)), "start": ((b,), np.dtype(np.int32))}


class ProcessRows(grain.MapDataset):
  """Process `index` of `count`'s `rows` consecutive elements of every global batch of `count` x `rows` elements.

  Grain's `slice(index, None, count)` would interleave the processes' rows, so a global batch would be ordered
  differently with 2 processes than with 1 (and per-row randomness would follow the rows). Lazy like every
  MapDataset: an element the process does not take is never read or decoded."""

  def __init__(self, parent: grain.MapDataset, index: int, count: int, rows: int):
    super().__init__(parent)
    self._index, self._count, self._rows = index, count, rows

  def __len__(self) -> int:
    return len(self._parent) // self._count

  def __getitem__(self, j):
    if isinstance(j, slice):
      return self.slice(j)
    batch, row = divmod(j, self._rows)
    return self._parent[(batch * self._count + self._index) * self._rows + row]

  def __str__(self) -> str:
    return f"ProcessRows(process {self._index} of {self._count}, {self._rows} rows of each global batch)"


def make_iterator(dataset: grain.MapDataset, *, num_workers: int = 0, num_threads: int = 2,
                  prefetch: int = 4) -> grain.DatasetIterator:
  """An iterator with `get_state()` / `set_state()`; `num_workers` > 0 decodes in worker processes."""
  ds = dataset.to_iter_dataset(grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch))
  if num_workers > 0:
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  return iter(ds)

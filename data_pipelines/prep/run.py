"""`synclipmae prep`: a folder (or list) of talking-face videos -> a corpus of aligned face-crop clip records.

Per input (`InputProcessor`): decode (25 fps by timestamps, 16 kHz mono; `decode`) -> shot changes (`segment`) ->
track one speaker's 468 landmarks (`faces`) -> smooth them over time -> align each frame to the template and crop
with face and mouth masks (`align`) -> cut clips at face loss, shot change, missing audio and the maximum length
-> `ClipRecord`s (JPEG frames, 16-bit audio; per-frame crop transforms, landmarks and face score as labels).

Memory stays bounded on long videos: frames stream through in chunks, each frame is aligned as soon as its
smoothed landmarks are known (the centred smoothing window needs `smooth_window // 2` frames of look-ahead), and
only the aligned, encoded crops of the current run are buffered; a run is cut into clips while it grows, holding
at most 2 x the maximum clip length (`segment.split_run` cuts the same way on a whole array).

Output directory (`--out`), all written without coordination between processes or machines:

    prep.json                      the settings; a rerun with different output-affecting settings is refused
    parts/SPLIT-JOB-TOKEN-SEQ.array_record   a shard: the clips of several whole inputs
    parts/SPLIT-JOB-TOKEN-SEQ.jsonl          its manifest (one line per record, in order); an input is *done*
                                             once a part manifest lists it
    failures/JOB-TOKEN.jsonl       one line per failed input: input, stage, reason
    jobs/JOB.json                  written when a job finishes (its summary)
    train.jsonl, heldout.jsonl, failures.jsonl, corpus.json   made by `finalize`, with TFDS's
    dataset_info.json, features.json and synclipmae_prep-SPLIT.array_record-I-of-N (hard links to the parts)

JOB is `jIIIIIofNNNNN` (`--shard_index`/`--num_shards`), TOKEN is random per worker process, so names never clash.
An input's clips all go into one shard, written only after the whole input succeeded (a failing input leaves no
clips). A shard is written as `*.partial` and renamed when closed (`corpus.ShardWriter`), and its manifest is
written after the rename: a killed worker leaves a `.partial` file or a shard without a manifest, never a part
that counts. A rerun of the same job deletes those leftovers, reads every part manifest and failures file, and
skips inputs that are done or failed (`retry_failed` retries the failed ones).

Splitting work: the sorted input list is dealt round-robin to `num_shards` jobs (input i goes to job i mod N), so
array jobs (Slurm, Kubernetes indexed jobs, xmanager) share one `--out` without talking to each other. Held-out
speakers are chosen per speaker without coordination too (an explicit list, or a stable hash of the speaker id
under `heldout_fraction`), and every worker writes separate shards per split. The last job to finish (the one
that finds every `jobs/JOB.json` of its N) runs `finalize`, which lists all parts into `{split}.jsonl` and writes
`corpus.json` last, making the directory a `synclipmae.data.corpus.Corpus`; `synclipmae prep --finalize_only`
does the same by hand (e.g. after a job was lost).

Failure policy: every input ends either with clips in a committed part or with exactly one failures entry
(stage and reason) — unreadable, corrupt, truncated or empty files, no video stream, no audio track (unless
`allow_silent`), absurd resolution, decoding errors, no face, no clip long enough, a worker process that died,
and any unexpected exception (recorded with its type, so one bad file never stops a run). The command's exit
status is 1 when any input of the job has a failures entry.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import itertools
import json
import multiprocessing
import os
import queue
import re
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from data_pipelines.prep import decode, segment
from synclipmae.data import corpus as corpus_lib
from synclipmae.data import records

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".flv", ".mpg", ".mpeg", ".ts", ".3gp", ".wmv")
PARTS_DIR, FAILURES_DIR, JOBS_DIR = "parts", "failures", "jobs"
PREP_FILE, FAILURES_FILE = "prep.json", "failures.jsonl"
GENERATOR = "synclipmae.prep"
TFDS_NAME = "synclipmae_prep"  # The finished corpus is a TFDS dataset of this name.

# Stages after decoding (decode.STAGE_* come first).
STAGE_SPEAKER = "speaker"  # The path does not match the speaker pattern.
STAGE_FACES = "faces"  # No face in any frame.
STAGE_CLIPS = "clips"  # Faces, but no run long enough to make a clip.
STAGE_WORKER = "worker"  # The worker process died (e.g. a native crash) while on this input.
STAGE_ERROR = "error"  # An unexpected exception (its type and message are the reason).

_CHUNK = 16  # Frames per tracker call.
MAX_WORKER_RETRIES = 1  # An input whose worker process dies is retried this often before it counts as failed.


class RunError(RuntimeError):
  """The run itself cannot proceed (bad arguments, conflicting output directory, a worker that cannot start)."""


# ----------------------------------------------------------------------------------------------------------------
# Settings.


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
    SpeakerPattern(self.speaker_pattern)
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


# ----------------------------------------------------------------------------------------------------------------
# Inputs, speakers, splits.


@dataclasses.dataclass(frozen=True)
class Input:
  """One input video: `key` names it in manifests and failures (a path relative to the input root, '/'-separated)."""
  key: str
  path: str


def list_inputs(specs: str | Sequence[str]) -> list[Input]:
  """Inputs from directories (searched recursively for VIDEO_EXTENSIONS), list files (one path per line, relative
  to the list's folder; '#' comments) or single video files; sorted by key, which must be unique."""
  specs = [specs] if isinstance(specs, (str, os.PathLike)) else list(specs)
  found: dict[str, Input] = {}
  for spec in specs:
    root = Path(spec)
    if root.is_dir():
      items = [Input(p.relative_to(root).as_posix(), str(p)) for p in sorted(root.rglob("*"))
               if p.suffix.lower() in VIDEO_EXTENSIONS and not p.is_dir()]
    elif root.is_file() and root.suffix.lower() not in VIDEO_EXTENSIONS:
      items = []
      for line in root.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
          path = Path(line) if Path(line).is_absolute() else root.parent / line
          items.append(Input(Path(line).as_posix().lstrip("/"), str(path)))
    elif root.suffix.lower() in VIDEO_EXTENSIONS:
      items = [Input(root.name, str(root))]  # May not exist: then it becomes a failures entry.
    else:
      raise RunError(f"--input {spec}: not a directory, a list file or a video file")
    for item in items:
      if item.key in found and found[item.key].path != item.path:
        raise RunError(f"two inputs share the key {item.key!r}: {found[item.key].path} and {item.path}")
      found[item.key] = item
  return [found[k] for k in sorted(found)]


def shard_inputs(inputs: Sequence[Input], shard_index: int, num_shards: int) -> list[Input]:
  """This job's inputs: every num_shards-th of the sorted list, starting at shard_index."""
  if num_shards < 1 or not 0 <= shard_index < num_shards:
    raise RunError(f"need 0 <= shard_index < num_shards, got {shard_index} and {num_shards}")
  return list(sorted(inputs, key=lambda i: i.key))[shard_index::num_shards]


class SpeakerPattern:
  """Speaker id from an input key.

  * None: the name of the folder holding the file.
  * A regex with a `(?P<speaker>...)` group, searched in the key ('/'-separated path relative to the input root).
  * A path template such as `{speaker}/{video}/*.mp4`: `{name}` matches one path component (or part of one),
    `*` anything within a component, `**` any number of components; matched against the end of the key.
  """

  def __init__(self, pattern: str | None):
    self.pattern = pattern
    if pattern is None:
      self._regex = None
      return
    if "(?P<" in pattern:
      source = pattern
    else:
      source = ""
      for token in re.split(r"(\{\w+\}|\*\*/?|\*)", pattern):
        if token.startswith("{"):
          source += f"(?P<{token[1:-1]}>[^/]+?)"
        elif token.startswith("**"):
          source += "(?:.*/)?" if token.endswith("/") else ".*"
        elif token == "*":
          source += "[^/]*"
        else:
          source += re.escape(token)
      source = f"(?:^|/){source}$"
    try:
      self._regex = re.compile(source)
    except re.error as e:
      raise RunError(f"--speaker_pattern {pattern!r} is not a valid pattern ({e})") from None
    if "speaker" not in self._regex.groupindex:
      raise RunError(f"--speaker_pattern {pattern!r} has no {{speaker}} field or (?P<speaker>...) group")

  def __call__(self, item: Input) -> str:
    if self._regex is None:
      return Path(item.path).resolve().parent.name or "unknown"
    match = self._regex.search(item.key)
    if not match or not match.group("speaker"):
      raise decode.PrepError(item.key, STAGE_SPEAKER, f"path does not match --speaker_pattern {self.pattern!r}")
    return match.group("speaker")


def split_of(speaker: str, config: PrepConfig) -> str:
  """"heldout" for held-out speakers (listed, or by a stable hash under heldout_fraction), else "train"."""
  if speaker in config.heldout_speakers:
    return "heldout"
  if config.heldout_fraction > 0:
    h = int.from_bytes(hashlib.sha256(speaker.encode()).digest()[:8], "big") / 2.0 ** 64
    if h < config.heldout_fraction:
      return "heldout"
  return "train"


def video_id(key: str) -> str:
  """A file-name-safe id of an input, unique by a short hash of its key."""
  stem = re.sub(r"[^A-Za-z0-9._-]+", "_", key.rsplit(".", 1)[0].replace("/", "--")).strip("_") or "video"
  return f"{stem[-80:]}-{hashlib.sha1(key.encode()).hexdigest()[:6]}"


# ----------------------------------------------------------------------------------------------------------------
# One input.


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
    from data_pipelines.prep import faces
    config.validate()
    self.config = config
    self.face_config = config.face_config()
    self.analyzer = faces.FaceAnalyzer(self.face_config)
    self.speaker_of = SpeakerPattern(config.speaker_pattern)

  def close(self) -> None:
    self.analyzer.close()

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


# ----------------------------------------------------------------------------------------------------------------
# Writing parts and failures (one writer per worker process).


def job_name(shard_index: int, num_shards: int) -> str:
  return f"j{shard_index:05d}of{num_shards:05d}"


class PartWriter:
  """One worker's output: a shard per split, committed (closed + manifest) every `shard_size` clips and at close."""

  def __init__(self, out_dir: Path, job: str, config: PrepConfig):
    self.out_dir, self.config = out_dir, config
    self.token = f"{job}-{uuid.uuid4().hex[:8]}"
    self.failures_path = out_dir / FAILURES_DIR / f"{self.token}.jsonl"
    self._sequence = 0
    self._open: dict[str, tuple[str, corpus_lib.ShardWriter, list[dict[str, Any]], list[str]]] = {}

  def add(self, item: Input, clips: Sequence[records.ClipRecord], split: str) -> list[str]:
    """Writes one input's clips; returns the inputs committed by this call (when the shard filled up)."""
    if split not in self._open:
      name = f"{PARTS_DIR}/{split}-{self.token}-{self._sequence:04d}"
      self._sequence += 1
      (self.out_dir / PARTS_DIR).mkdir(parents=True, exist_ok=True)
      self._open[split] = (name, corpus_lib.ShardWriter(self.out_dir / f"{name}.array_record"), [], [])
    name, writer, entries, inputs = self._open[split]
    for clip in clips:
      index = writer.write(records.serialize(clip))
      entries.append(corpus_lib.manifest_entry(clip, split=split, shard=f"{name}.array_record", index=index))
    inputs.append(item.key)
    return self.commit(split) if writer.count >= self.config.shard_size else []

  def commit(self, split: str) -> list[str]:
    name, writer, entries, inputs = self._open.pop(split)
    writer.close()  # Renames *.partial to the shard's name ...
    corpus_lib.write_atomic(self.out_dir / f"{name}.jsonl",  # ... and only then does the part count.
                             "".join(json.dumps(e) + "\n" for e in entries))
    return inputs

  def close(self) -> list[str]:
    return [key for split in list(self._open) for key in self.commit(split)]

  def abort(self) -> None:
    for _, writer, _, _ in self._open.values():
      writer.abort()
    self._open = {}

  def fail(self, item: Input, stage: str, reason: str) -> dict[str, Any]:
    entry = {"input": item.key, "path": item.path, "stage": stage, "reason": reason}
    corpus_lib.append_jsonl(self.failures_path, entry)
    return entry


class Worker:
  """An InputProcessor plus its PartWriter: `handle(input)` never raises for a bad input."""

  def __init__(self, out_dir: Path, job: str, config: PrepConfig):
    self.config = config
    self.processor = InputProcessor(config)
    self.parts = PartWriter(out_dir, job, config)

  def handle(self, item: Input) -> dict[str, Any]:
    start = time.perf_counter()
    result: dict[str, Any] = {"input": item.key, "clips": 0, "frames": 0, "failure": None, "committed": [],
                              "timings": {}}
    try:
      clips, stats = self.processor.process(item)
      start_write = time.perf_counter()
      result["committed"] = self.parts.add(item, clips, split_of(stats["speaker"], self.config))
      stats["timings"]["write"] = time.perf_counter() - start_write
      result.update(clips=len(clips), frames=stats["frames"], timings=stats["timings"])
    except decode.PrepError as e:
      result["failure"] = self.parts.fail(item, e.stage, e.reason)
    except Exception as e:  # noqa: BLE001 - one bad input must not stop the run; the reason names the error.
      where = traceback.extract_tb(e.__traceback__)[-1]
      reason = f"{type(e).__name__}: {e} (at {Path(where.filename).name}:{where.lineno})"
      result["failure"] = self.parts.fail(item, STAGE_ERROR, reason)
    result["seconds"] = time.perf_counter() - start
    return result

  def close(self) -> list[str]:
    committed = self.parts.close()
    self.processor.close()
    return committed


def _worker_main(out_dir: str, job: str, config: PrepConfig, wid: int, tasks, results) -> None:
  """Entry point of a worker process: inputs from `tasks` until None, messages to `results`."""
  try:
    worker = Worker(Path(out_dir), job, config)
  except BaseException:
    results.put(("error", wid, traceback.format_exc()))
    return
  results.put(("ready", wid, None))
  parent = os.getppid()
  while True:
    try:
      item = tasks.get(timeout=2.0)
    except queue.Empty:
      if os.getppid() != parent:  # The main process was killed: stop (the unfinished shard stays *.partial).
        worker.parts.abort()
        return
      continue
    if item is None:
      break
    results.put(("start", wid, item.key))
    results.put(("done", wid, worker.handle(item)))
  results.put(("closed", wid, worker.close()))


# ----------------------------------------------------------------------------------------------------------------
# State of an output directory, the run, finalize.


def read_state(out_dir: str | os.PathLike) -> tuple[set[str], dict[str, dict[str, Any]]]:
  """(inputs done: listed in a committed part, {input: its latest failures entry}) of an output directory."""
  out_dir = Path(out_dir)
  done = set()
  for manifest in sorted((out_dir / PARTS_DIR).glob("*.jsonl")):
    done.update(e.get("input", e["source"]) for e in corpus_lib.read_jsonl(manifest))
  failed = {}
  for path in sorted((out_dir / FAILURES_DIR).glob("*.jsonl")):
    for entry in corpus_lib.read_jsonl(path):
      if "input" in entry:
        failed[entry["input"]] = entry
  return done, failed


def _check_settings(out_dir: Path, config: PrepConfig) -> None:
  settings = config.output_settings()
  path = out_dir / PREP_FILE
  if path.is_file():
    previous = json.loads(path.read_text()).get("settings")
    if previous != json.loads(json.dumps(settings)):
      diff = {k: (previous.get(k), v) for k, v in settings.items() if previous.get(k) != v}
      raise RunError(f"{out_dir} holds a prep run with other settings (setting: (there, asked)): {diff}; "
                     "use the same settings or another --out")
    return
  corpus_lib.write_atomic(path, json.dumps({"generator": GENERATOR, "settings": settings}, indent=1) + "\n")


def _clean_leftovers(out_dir: Path, job: str) -> list[Path]:
  """Deletes this job's `.partial` files and shards without a manifest (left by a killed run of the same job)."""
  removed = []
  parts = out_dir / PARTS_DIR
  for path in sorted(parts.glob(f"*-{job}-*.partial")) + sorted(parts.glob(f"*-{job}-*.array_record")):
    if path.suffix == ".partial" or not path.with_suffix(".jsonl").exists():
      path.unlink(missing_ok=True)
      removed.append(path)
  return removed


def finalize(out_dir: str | os.PathLike) -> dict[str, Any]:
  """Assembles `{split}.jsonl`, `failures.jsonl` and (last) `corpus.json` from all committed parts."""
  out_dir = Path(out_dir)
  if not (out_dir / PREP_FILE).is_file():
    raise RunError(f"{out_dir}: no {PREP_FILE}; not the output directory of synclipmae prep")
  per_split: dict[str, list[dict[str, Any]]] = {"train": []}
  seen: dict[str, str] = {}
  for manifest in sorted((out_dir / PARTS_DIR).glob("*.jsonl")):
    entries = corpus_lib.read_jsonl(manifest)
    shard = f"{PARTS_DIR}/{manifest.stem}.array_record"
    if not (out_dir / shard).is_file():
      raise RunError(f"{manifest}: its shard {shard} is missing")
    for entry in entries:
      if entry["clip_id"] in seen:
        raise RunError(f"clip {entry['clip_id']!r} is in both {seen[entry['clip_id']]} and {shard}: two runs "
                       "processed the same input (overlapping --shard_index/--num_shards?); delete one of the parts")
      seen[entry["clip_id"]] = shard
    if entries:
      per_split.setdefault(entries[0]["split"], []).extend(entries)
  splits = {}
  for split, entries in sorted(per_split.items()):
    parts = list(dict.fromkeys(e["shard"] for e in entries))
    # TFDS names shards by position: each part is linked (not copied) under that name; parts stay for resuming.
    shards = {part: corpus_lib.shard_name(TFDS_NAME, split, i, len(parts)) for i, part in enumerate(parts)}
    for stale in out_dir.glob(f"{TFDS_NAME}-{split}.{corpus_lib.FILE_FORMAT}-*"):
      if stale.name not in shards.values():
        stale.unlink()
    for part, shard in shards.items():
      corpus_lib.link_shard(out_dir / part, out_dir / shard)
    entries = [{**e, "shard": shards[e["shard"]]} for e in entries]
    corpus_lib.write_atomic(out_dir / f"{split}.jsonl", "".join(json.dumps(e) + "\n" for e in entries))
    splits[split] = corpus_lib.split_summary(out_dir, split, entries, list(shards.values()))
  done, failed = read_state(out_dir)
  failures = [failed[k] for k in sorted(failed) if k not in done]
  corpus_lib.write_atomic(out_dir / FAILURES_FILE, "".join(json.dumps(e) + "\n" for e in failures))
  prep = json.loads((out_dir / PREP_FILE).read_text())
  return corpus_lib.write_corpus_info(out_dir, splits, name=TFDS_NAME, generator={"name": GENERATOR, **prep},
                                      inputs={"done": len(done), "failed": len(failures)})


def run(inputs: str | Sequence[str], out_dir: str | os.PathLike, config: PrepConfig = PrepConfig(), *,
        shard_index: int = 0, num_shards: int = 1, num_workers: int = 1, retry_failed: bool = False,
        finalize_when: str = "auto", quiet: bool = False) -> dict[str, Any]:
  """Processes this job's share of `inputs` into `out_dir`; returns a summary (see `summary_line`).

  `num_workers` processes (1: in this process); `finalize_when`: "auto" (when every job of `num_shards` has
  finished), "always" or "never".
  """
  import tqdm
  config.validate()
  if num_workers < 1:
    raise RunError(f"--num_workers must be positive, got {num_workers}")
  if finalize_when not in ("auto", "always", "never"):
    raise RunError(f"finalize_when must be 'auto', 'always' or 'never', got {finalize_when!r}")
  started = time.time()
  out_dir = Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  _check_settings(out_dir, config)
  job = job_name(shard_index, num_shards)
  marker = out_dir / JOBS_DIR / f"{job}.json"
  marker.unlink(missing_ok=True)  # This job is running again: it must not count as finished meanwhile.
  _clean_leftovers(out_dir, job)
  mine = shard_inputs(list_inputs(inputs), shard_index, num_shards)
  done, failed = read_state(out_dir)
  todo = collections.deque(i for i in mine if i.key not in done and (retry_failed or i.key not in failed))
  summary: dict[str, Any] = {"job": job, "inputs": len(mine), "skipped": len(mine) - len(todo), "processed": 0,
                             "clips": 0, "frames": 0, "failures": [], "timings": collections.Counter(),
                             "worker_seconds": 0.0}
  progress = tqdm.tqdm(total=len(todo), desc=f"prep {job}", unit="file", disable=quiet, mininterval=1.0,
                       dynamic_ncols=True)

  def account(result: dict[str, Any], undo: bool = False) -> None:
    """Counts a handled input; `undo` takes back one whose clips were lost (it will be handled again)."""
    sign = -1 if undo else 1
    summary["processed"] += sign
    summary["clips"] += sign * result["clips"]
    summary["frames"] += sign * result["frames"]
    if result["failure"] is not None:
      summary["failures"].append(result["failure"])
    if undo:
      progress.total += 1
    else:
      summary["worker_seconds"] += result.get("seconds", 0.0)
      summary["timings"].update(result["timings"])
    elapsed = max(time.time() - started, 1e-6)
    progress.set_postfix(clips=summary["clips"], failed=len(summary["failures"]),
                         fps=f"{summary['frames'] / elapsed:.1f}", refresh=False)
    progress.update(0 if undo else 1)

  try:
    if not todo:
      pass
    elif num_workers == 1 or len(todo) == 1:
      worker = Worker(out_dir, job, config)
      try:
        while todo:
          account(worker.handle(todo.popleft()))
      except BaseException:
        worker.parts.abort()
        raise
      worker.close()
    else:
      _run_pool(out_dir, job, config, todo, min(num_workers, len(todo)), account, progress)
  finally:
    progress.close()
  _clean_leftovers(out_dir, job)  # E.g. the unfinished shards of workers that died.
  summary["seconds"] = round(time.time() - started, 2)
  summary["timings"] = {k: round(v, 3) for k, v in summary["timings"].items()}
  done, failed = read_state(out_dir)
  summary["failed_inputs"] = sorted(i.key for i in mine if i.key in failed and i.key not in done)
  corpus_lib.write_atomic(marker, json.dumps({k: v for k, v in summary.items() if k != "failures"}, indent=1))
  finished = {p.stem for p in (out_dir / JOBS_DIR).glob(f"j*of{num_shards:05d}.json")}
  summary["finalized"] = False
  if finalize_when == "always" or (finalize_when == "auto" and
                                   all(job_name(i, num_shards) in finished for i in range(num_shards))):
    finalize(out_dir)
    summary["finalized"] = True
  return summary


def _run_pool(out_dir: Path, job: str, config: PrepConfig, todo: collections.deque, num_workers: int,
              account: Callable[..., None], progress) -> None:
  """Feeds `todo` to `num_workers` spawned processes one input at a time and survives their deaths.

  If a worker dies, the inputs whose clips sat in its uncommitted shard go back on the queue, and so does the
  input it was on, once (MAX_WORKER_RETRIES): when a worker dies on it again it gets a failures entry (stage
  "worker"), since then the input itself is the likely cause (a crash in native code). A replacement starts.
  """
  context = multiprocessing.get_context("spawn")  # Clean processes: no inherited model or codec state.
  results = context.Queue()
  workers: dict[int, dict[str, Any]] = {}
  failures = PartWriter(out_dir, job, config)  # Only for failures entries written here.
  deaths: collections.Counter = collections.Counter()  # Worker deaths per input.

  def start_worker() -> None:
    wid = max(workers, default=-1) + 1  # Ids are never reused.
    tasks = context.Queue()
    process = context.Process(target=_worker_main, args=(str(out_dir), job, config, wid, tasks, results),
                              daemon=True)
    process.start()
    workers[wid] = {"process": process, "tasks": tasks, "state": "starting", "item": None, "uncommitted": {},
                    "handled": 0}

  for _ in range(num_workers):
    start_worker()
  try:
    while True:
      for wid, w in list(workers.items()):
        if w["state"] == "idle":
          if todo:
            w["item"] = todo.popleft()
            w["tasks"].put(w["item"])
            w["state"] = "busy"
          elif not any(v["state"] in ("busy", "starting") for v in workers.values()):
            w["tasks"].put(None)
            w["state"] = "closing"
      if all(w["state"] == "closed" for w in workers.values()):
        return
      try:
        kind, wid, payload = results.get(timeout=0.5)
      except queue.Empty:
        for wid, w in list(workers.items()):
          if w["state"] != "closed" and not w["process"].is_alive():
            _replace_dead(wid, w, workers, todo, failures, account, progress, start_worker, deaths)
        continue
      w = workers[wid]
      if kind == "error":
        raise RunError(f"a prep worker could not start:\n{payload}")
      if kind == "ready":
        w["state"] = "idle"
      elif kind == "start":
        pass
      elif kind == "done":
        w["handled"] += 1
        if payload["clips"]:
          w["uncommitted"][payload["input"]] = (w["item"], payload)
        for key in payload["committed"]:
          w["uncommitted"].pop(key, None)
        w["item"], w["state"] = None, "idle"
        account(payload)
      elif kind == "closed":
        for key in payload:
          w["uncommitted"].pop(key, None)
        w["state"] = "closed"
        w["process"].join(timeout=30)
  finally:
    for w in workers.values():
      if w["process"].is_alive():
        w["process"].terminate()
        w["process"].join(timeout=10)


def _replace_dead(wid, w, workers, todo, failures, account, progress, start_worker, deaths) -> None:
  code = w["process"].exitcode
  w["state"] = "closed"
  if w["handled"] == 0 and w["item"] is None:
    raise RunError(f"prep worker {wid} exited with code {code} before taking any input")
  lost = []
  for item, result in w["uncommitted"].values():  # Their clips were in the dead worker's unfinished shard.
    account(result, undo=True)
    lost.append(item)
  item = w["item"]
  if item is not None:
    deaths[item.key] += 1
    if deaths[item.key] <= MAX_WORKER_RETRIES:
      lost.append(item)  # Perhaps killed from outside (e.g. out of memory elsewhere): try once more.
    else:
      entry = failures.fail(item, STAGE_WORKER, f"the worker process died (exit code {code}) on this input "
                                                f"{deaths[item.key]} times")
      account({"input": item.key, "clips": 0, "frames": 0, "failure": entry, "timings": {}})
  todo.extendleft(reversed(lost))
  start_worker()


def summary_line(summary: dict[str, Any], out_dir: str | os.PathLike) -> str:
  failed = summary["failed_inputs"]
  line = (f"prep {summary['job']}: {summary['inputs']} inputs ({summary['skipped']} already done or failed before), "
          f"{summary['processed']} processed: {summary['clips']} clips, {summary['frames']} frames in "
          f"{summary['seconds']:.1f} s; {len(failed)} failed")
  if failed:
    line += f" (see {Path(out_dir) / (FAILURES_FILE if summary['finalized'] else FAILURES_DIR)})"
  return line + ("; corpus.json written" if summary["finalized"] else "; not finalized yet (other jobs running)")

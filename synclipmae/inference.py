"""A trained SyncLipMAE in users' hands: `load_pretrained` and the one way to get the tokens of a video.

    import synclipmae
    pretrained = synclipmae.load_pretrained("runs/demo/export")   # an export directory or a pretraining workdir
    tokens = synclipmae.video_tokens(pretrained, "talk.mp4")       # raw video: faces found and aligned as `prep`
    tokens = synclipmae.video_tokens(pretrained, "crop.mp4", aligned=True)   # already aligned face crops
    tokens.z_voc, tokens.frame_index, tokens.audio_tokens          # per-frame tokens on the 25 fps timeline

Every command (`extract`, `sync`, later probes and dubbing), evaluator and notebook goes through these, so the
same video gives the same tokens everywhere.

Views. The encoder never saw a whole frame in pretraining: bypass 1 showed it a uniformly random quarter of the
patches (-> z_id), bypass 2 a face- and mouth-weighted quarter (-> z_voc, z_amb). Inference shows it the same
kinds of view, deterministically:
  * motion view (z_voc, z_amb): the K patches bypass 2 kept most often (`masking.face_aware_keep` without noise):
    mouth region first, then face. From each frame's own face / mouth masks where they exist (raw videos through
    the face pipeline, corpus clips); for aligned crops, which come without masks, from the mean masks of the
    training corpus (`aligned_masks`, stored in exports), i.e. where faces and mouths sit in aligned crops.
  * identity view (z_id): one fixed uniformly random K-subset of patches (seed 0), the same for every frame.
Audio tokens are encoded in windows of the training window's length (`audio_window_frames`) with the model's
audio margin on both sides, as pretraining saw them; zeros beyond the track's ends.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from synclipmae import masking
from synclipmae.models.synclipmae import SyncLipMAE

EXPORT_FORMAT = "synclipmae-export"
EXPORT_VERSION = 1
CONFIG_FILE, WEIGHTS_FILE, CARD_FILE = "config.json", "model.safetensors", "README.md"
IDENTITY_VIEW_SEED = 0
SAMPLES_PER_FRAME = 640  # 16 kHz audio, 25 fps video.
FPS = 25.0


class ModelFileError(ValueError):
  """A model path that cannot be loaded: names the file (and tensor) and the problem."""


# ----------------------------------------------------------------------------------------------------------------
# The loaded model.


@dataclasses.dataclass
class Pretrained:
  """A SyncLipMAE ready for inference and what it needs besides its weights.

  model: the nnx module (`model.encode_frames`, `encode_audio`, `decode`; see SyncLipMAE).
  info: the export's config.json (variant, step, model config, views, training corpus, sync results).
  path: where it was loaded from.
  run_config: the whole pretraining config when loaded from a workdir (None for an export).
  """
  model: SyncLipMAE
  info: dict[str, Any]
  path: str
  run_config: ml_collections.ConfigDict | None = None

  def __post_init__(self):
    self.config = ml_collections.ConfigDict(self.info["model"])
    self._graphdef, self._state = nnx.split(self.model)
    self._jitted: dict[str, Callable] = {}

  @property
  def image_size(self) -> int:
    return int(self.config.image_size)

  @property
  def step(self) -> int:
    return int(self.info["step"])

  @property
  def num_patches(self) -> int:
    return (self.image_size // self.config.patch_size) ** 2

  @property
  def num_keep(self) -> int:
    return masking.num_kept(self.num_patches, self.info["views"]["motion"]["mask_ratio"])

  # Views --------------------------------------------------------------------------------------------------------

  def identity_keep(self) -> np.ndarray:
    """int32 [K]: the identity view's patches."""
    rng = np.random.default_rng(self.info["views"]["identity"].get("seed", IDENTITY_VIEW_SEED))
    return np.sort(rng.permutation(self.num_patches)[:self.num_keep]).astype(np.int32)

  def patch_fractions(self, face_masks: np.ndarray | None = None, mouth_masks: np.ndarray | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Per-patch face and mouth fractions, float32 [T, P] from per-frame masks [T, H, W]; without masks [1, P],
    the aligned-crop mean masks of the training corpus."""
    if face_masks is not None:
      from synclipmae.data import pipeline
      p = self.info["views"]["motion"]["patch_size"]
      return pipeline.patch_fractions(face_masks, p), pipeline.patch_fractions(mouth_masks, p)
    aligned = self.info["views"].get("aligned_masks")
    if not aligned:
      raise ModelFileError(
          f"{self.path}: the model has no mean face / mouth masks for aligned crops (views.aligned_masks); "
          "load it with its training corpus present, or export it with --data=CORPUS")
    return (np.asarray(aligned["face_fraction"], np.float32)[None],
            np.asarray(aligned["mouth_fraction"], np.float32)[None])

  def motion_keep(self, face_masks: np.ndarray | None = None, mouth_masks: np.ndarray | None = None
                  ) -> np.ndarray:
    """int32 [T, K] from per-frame masks [T, H, W]; without masks, [1, K] from the aligned-crop mean masks."""
    if face_masks is None:
      return self._aligned_keep  # Constant for aligned crops: computed once per model.
    return self._motion_keep_of(self.patch_fractions(face_masks, mouth_masks))

  def _motion_keep_of(self, fractions: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    return masking.view_keep(self.info["views"]["motion"], *fractions)

  @functools.cached_property
  def _aligned_keep(self) -> np.ndarray:
    return self._motion_keep_of(self.patch_fractions())

  # Encoding -----------------------------------------------------------------------------------------------------

  def _jit(self, name: str, fn: Callable) -> Callable:
    if name not in self._jitted:
      graphdef = self._graphdef
      self._jitted[name] = jax.jit(lambda state, *args: fn(nnx.merge(graphdef, state), *args))
    return self._jitted[name]

  def encode_frames(self, frames: np.ndarray, face_masks: np.ndarray | None = None,
                    mouth_masks: np.ndarray | None = None, *, batch_size: int = 64) -> dict[str, np.ndarray]:
    """Aligned face crops uint8 [N, S, S, 3] (S = image_size) -> {"z_id", "z_voc", "z_amb"}: float32 [N, Dp].

    With masks [N, S, S] the motion view follows each frame's face and mouth; without, the aligned-crop view.
    Runs in fixed batches of `batch_size` frames (one compilation).
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[1:] != (self.image_size, self.image_size, 3):
      raise ValueError(f"frames must be [N, {self.image_size}, {self.image_size}, 3] face crops, got {frames.shape}")
    n = len(frames)
    identity = self.identity_keep()
    fractions = self.patch_fractions(face_masks, mouth_masks)
    motion = self._aligned_keep if face_masks is None else self._motion_keep_of(fractions)
    mouth = fractions[1]  # For an encoder with mouth_private.

    def encode(model, frames, keep_id, keep_motion, mouth):
      x = frames.astype(jnp.float32) / 255.0
      both = model.encode_frames(jnp.concatenate([x, x]), jnp.concatenate([keep_id, keep_motion]),
                                 jnp.concatenate([mouth, mouth]))
      b = frames.shape[0]
      return {"z_id": both["z_id"][:b], "z_voc": both["z_voc"][b:], "z_amb": both["z_amb"][b:]}

    fn = self._jit("frames", encode)
    out: dict[str, list[np.ndarray]] = {"z_id": [], "z_voc": [], "z_amb": []}
    for start in range(0, n, batch_size):
      stop = min(start + batch_size, n)
      rows = lambda x: _rows(x, start, stop, batch_size)
      result = jax.device_get(fn(self._state, rows(frames), np.repeat(identity[None], batch_size, 0), rows(motion),
                                 rows(mouth)))
      for k in out:
        out[k].append(result[k][:stop - start])
    dim = self.config.prompt_dim
    return {k: np.concatenate(v) if v else np.zeros((0, dim), np.float32) for k, v in out.items()}

  def encode_clip(self, clip, tokens: Sequence[str] = ("z_id", "z_voc", "z_amb", "audio")) -> dict[str, np.ndarray]:
    """A corpus clip (`records.ClipRecord`) -> the requested per-frame tokens {name: float32 [T, Dp]}: the frame
    tokens through its face and mouth masks, "audio" through its soundtrack. Evaluators on corpora use this."""
    unknown = [t for t in tokens if t not in ("z_id", "z_voc", "z_amb", "audio")]
    if unknown:
      raise ValueError(f"unknown tokens {unknown}; choose from z_id, z_voc, z_amb, audio")
    out = {}
    if any(t != "audio" for t in tokens):
      out = self.encode_frames(clip.decode_frames(), clip.face_masks, clip.mouth_masks)
    if "audio" in tokens:
      out["audio"] = self.encode_audio(clip.audio_float(), clip.num_frames)
    return {t: out[t] for t in tokens}

  def render(self, reference: np.ndarray, z_amb: np.ndarray, driving: np.ndarray,
             reference_masks: tuple[np.ndarray, np.ndarray] | None = None, *, batch_size: int = 64) -> np.ndarray:
    """Frames drawn by the decoder from tokens: float32 [M, S, S, 3] in [0, 1].

    reference: uint8 [M, S, S, 3] frames whose identity view gives z_id (and, unless decoder.visible="none",
    the visible patches: the reference frame of a dub); z_amb [M, Dp] the ambient motion to draw; driving [M, Dp]
    the mouth: a z_voc (video-driven) or an audio token (audio-driven). reference_masks: their (face, mouth)
    masks [M, S, S], or None for aligned crops. Needs a decoder that outputs pixels (decoder.patch_stats, or a
    model trained without norm_pix).
    """
    reference = np.asarray(reference)
    m = len(reference)
    if len(z_amb) != m or len(driving) != m:
      raise ValueError(f"render: {m} reference frames but {len(z_amb)} z_amb and {len(driving)} driving tokens")
    identity = self.identity_keep()
    mouth = self.patch_fractions(*(reference_masks or (None, None)))[1]
    norm_pix = bool(self.info.get("decoder_target", {}).get("norm_pix", True))

    def draw(model, frames, keep, mouth, z_amb, driving):
      enc = model.encode_frames(frames.astype(jnp.float32) / 255.0, keep, mouth)
      cond = jnp.stack([enc["z_id"], z_amb, driving], axis=1)
      return model.render(enc["patches"], keep, cond, norm_pix=norm_pix)

    return self._draw_in_batches("render", draw, [reference, np.repeat(identity[None], m, 0), mouth,
                                                  np.asarray(z_amb, np.float32), np.asarray(driving, np.float32)],
                                 batch_size)

  def redraw(self, frames: np.ndarray, keep: np.ndarray, mouth: np.ndarray, z_id: np.ndarray, z_amb: np.ndarray,
             driving: np.ndarray, *, batch_size: int = 64) -> np.ndarray:
    """The decoder's drawing of frames uint8 [M, S, S, 3] from their own visible patches keep int32 [M, K],
    conditioned on (z_id, z_amb, driving) [M, Dp] each: float32 [M, S, S, 3] in [0, 1] (what dubbing pastes).
    mouth [M, P] or [1, P]: per-patch mouth fractions (`patch_fractions`), for encoders with mouth_private."""
    m = len(frames)
    for name, x in (("keep", keep), ("z_id", z_id), ("z_amb", z_amb), ("driving", driving)):
      if len(x) != m:
        raise ValueError(f"redraw: {m} frames but {len(x)} {name}")
    norm_pix = bool(self.info.get("decoder_target", {}).get("norm_pix", True))

    def draw(model, frames, keep, mouth, z_id, z_amb, driving):
      enc = model.encode_frames(frames.astype(jnp.float32) / 255.0, keep, mouth)
      return model.render(enc["patches"], keep, jnp.stack([z_id, z_amb, driving], axis=1), norm_pix=norm_pix)

    return self._draw_in_batches("redraw", draw, [
        np.asarray(frames), np.asarray(keep, np.int32), np.asarray(mouth, np.float32), np.asarray(z_id, np.float32),
        np.asarray(z_amb, np.float32), np.asarray(driving, np.float32)], batch_size)

  def refresh(self) -> None:
    """Call after changing the model's weights in place (fine-tuning): inference reads the new ones."""
    self._graphdef, self._state = nnx.split(self.model)

  def _draw_in_batches(self, name: str, fn: Callable, arrays: list[np.ndarray], batch_size: int) -> np.ndarray:
    """fn(model, *rows of arrays) -> images, jitted once and run in fixed batches -> float32 [M, S, S, 3]."""
    fn = self._jit(name, fn)
    out = []
    for start in range(0, len(arrays[0]), batch_size):
      stop = min(start + batch_size, len(arrays[0]))
      batch = [_rows(np.asarray(x), start, stop, batch_size) for x in arrays]
      out.append(np.asarray(jax.device_get(fn(self._state, *batch)))[:stop - start])
    return np.concatenate(out) if out else np.zeros((0, self.image_size, self.image_size, 3), np.float32)

  @property
  def has_warp_decoder(self) -> bool:
    """Whether the model was trained with the warp decoder (model.ambient_pose; synclipmae/warp.py)."""
    return self.model.ambient_pose is not None

  def render_warp(self, reference: np.ndarray, reference_z_amb: np.ndarray, z_amb: np.ndarray,
                  reference_driving: np.ndarray | None = None, driving: np.ndarray | None = None, *,
                  batch_size: int = 64) -> np.ndarray:
    """Frames drawn by the warp decoder (`SyncLipMAE.warp_render`): float32 [M, S, S, 3] in [0, 1].

    reference: uint8 [M, S, S, 3] frames to move; reference_z_amb [M, Dp] their own z_amb (`encode_frames`);
    z_amb [M, Dp] the pose (and appearance) to draw; reference_driving / driving [M, Dp]: the reference's own
    driving token and the one to draw its mouth from (z_voc, or audio tokens for both), used by a model with
    model.driving_appearance.
    """
    if not self.has_warp_decoder:
      raise ValueError(f"{self.path}: this model has no warp decoder (trained without model.ambient_pose=True)")
    reference = np.asarray(reference)
    m = len(reference)
    dim = self.config.prompt_dim
    driving = np.zeros((m, dim), np.float32) if driving is None else np.asarray(driving, np.float32)
    reference_driving = (np.zeros((m, dim), np.float32) if reference_driving is None
                         else np.asarray(reference_driving, np.float32))
    for name, x in (("reference_z_amb", reference_z_amb), ("z_amb", z_amb), ("reference_driving", reference_driving),
                    ("driving", driving)):
      if len(x) != m:
        raise ValueError(f"render_warp: {m} reference frames but {len(x)} {name}")

    def draw(model, frames, reference_z_amb, z_amb, reference_driving, driving):
      return model.warp_render(frames.astype(jnp.float32) / 255.0, reference_z_amb, z_amb, reference_driving,
                               driving)

    return self._draw_in_batches("render_warp", draw, [reference, np.asarray(reference_z_amb, np.float32),
                                                       np.asarray(z_amb, np.float32), reference_driving, driving],
                                 batch_size)

  @property
  def audio_window_frames(self) -> int:
    return int(self.info.get("audio", {}).get("window_frames", 16))

  def encode_audio(self, audio: np.ndarray, num_frames: int, *, batch_size: int = 32) -> np.ndarray:
    """Mono 16 kHz float32 audio [S], sample 0 at the start of frame 0 -> audio tokens [num_frames, Dp].

    Encoded in windows of `audio_window_frames` frames, each with `margin_frames` of context on both sides.
    """
    window, margin = self.audio_window_frames, int(self.config.audio.margin_frames)
    spf = SAMPLES_PER_FRAME
    num_windows = max(1, -(-num_frames // window))
    track = np.zeros((num_windows * window + 2 * margin) * spf, np.float32)
    usable = np.asarray(audio, np.float32)[:num_windows * window * spf + margin * spf]
    track[margin * spf:margin * spf + len(usable)] = usable
    starts = np.arange(num_windows) * window * spf
    pieces = np.stack([track[s:s + (window + 2 * margin) * spf] for s in starts])
    fn = self._jit("audio", lambda model, a: model.encode_audio(a, window))
    tokens = []
    for start in range(0, num_windows, batch_size):
      stop = min(start + batch_size, num_windows)
      result = jax.device_get(fn(self._state, _pad_to(pieces[start:stop], batch_size)))
      tokens.append(result[:stop - start].reshape(-1, result.shape[-1]))
    return np.concatenate(tokens)[:num_frames]


def _rows(x: np.ndarray, start: int, stop: int, size: int) -> np.ndarray:
  """Rows start:stop of a per-frame array padded to `size`; a single row (a view shared by every frame) repeated."""
  return _pad_to(x[start:stop] if len(x) > 1 else np.repeat(x, stop - start, 0), size)


def _pad_to(x: np.ndarray, size: int) -> np.ndarray:
  """Pads the leading axis to `size` by repeating the last row (static shapes for jit)."""
  if len(x) == size:
    return x
  return np.concatenate([x, np.repeat(x[-1:], size - len(x), 0)])


# ----------------------------------------------------------------------------------------------------------------
# Loading.


def load_pretrained(path: str | os.PathLike, step: int | None = None) -> Pretrained:
  """An export directory (`synclipmae export`) or a pretraining workdir -> `Pretrained`.

  Loading an export needs neither orbax nor the training code: config.json + model.safetensors. A workdir
  is read from its newest orbax checkpoint (or `step`). Missing, truncated or mismatched files raise
  ModelFileError naming the file and the tensor.
  """
  from synclipmae import storage
  path = storage.path(path)  # Local, or a gs:// URL (synclipmae/storage.py).
  if not path.exists():
    raise ModelFileError(f"{path}: no such export directory or pretraining workdir")
  if (path / CONFIG_FILE).is_file() and (path / WEIGHTS_FILE).exists():
    if step is not None:
      raise ModelFileError(f"{path}: an export holds one step; --step applies to pretraining workdirs only")
    pretrained = _load_export(Path(storage.fetch(path, [CONFIG_FILE, WEIGHTS_FILE])))  # A local copy of a URL's.
    pretrained.path = str(path)
    return pretrained
  if (path / "checkpoints").is_dir():
    return _load_workdir(path, step)
  raise ModelFileError(f"{path}: neither an export ({CONFIG_FILE} + {WEIGHTS_FILE}) nor a pretraining workdir "
                       "(config.json + checkpoints/)")


def read_export_info(path: str | os.PathLike) -> dict[str, Any]:
  file = Path(path) / CONFIG_FILE
  try:
    info = json.loads(file.read_text())
  except (OSError, json.JSONDecodeError) as e:
    raise ModelFileError(f"{file}: not a readable JSON file ({e})") from None
  if info.get("format") != EXPORT_FORMAT:
    raise ModelFileError(f"{file}: not a SyncLipMAE export (format {info.get('format')!r}, expected "
                         f"{EXPORT_FORMAT!r})")
  if info.get("format_version", 0) > EXPORT_VERSION:
    raise ModelFileError(f"{file}: export format version {info['format_version']} is newer than this code reads "
                         f"({EXPORT_VERSION}); update synclipmae")
  for key in ("model", "views", "step"):
    if key not in info:
      raise ModelFileError(f"{file}: the {key!r} entry is missing")
  return info


def _load_export(path: Path) -> Pretrained:
  from synclipmae.pretrained import checkpoint_files
  info = read_export_info(path)
  config = ml_collections.ConfigDict(info["model"])
  try:
    abstract = nnx.eval_shape(lambda: SyncLipMAE(config, rngs=nnx.Rngs(0)))
  except (ValueError, KeyError, TypeError, AttributeError) as e:
    raise ModelFileError(f"{path / CONFIG_FILE}: the model config does not build a SyncLipMAE ({e})") from None
  graphdef, abstract_state = nnx.split(abstract)
  try:
    source = checkpoint_files.TensorSource.open(path / WEIGHTS_FILE)
  except checkpoint_files.CheckpointError as e:
    raise ModelFileError(str(e)) from None
  flat = []
  try:
    for key, variable in nnx.to_flat_state(abstract_state):
      name = "/".join(map(str, key))
      value = source.take(name, tuple(variable.shape)) if variable.dtype == jnp.float32 else None
      if value is None:
        raise source.error(name, f"has dtype {variable.dtype}; exports hold float32 tensors only")
      flat.append((key, variable.replace(value=jnp.asarray(value))))
    source.finish()
  except checkpoint_files.CheckpointError as e:
    raise ModelFileError(str(e)) from None
  model = nnx.merge(graphdef, nnx.from_flat_state(flat))
  return Pretrained(model=model, info=info, path=str(path))


def _load_workdir(path: Path, step: int | None) -> Pretrained:
  from synclipmae.train.checkpoint import load_config, load_model
  require_synclipmae(load_config(path), path)  # Before reading any checkpoint.
  model, config, step = load_model(path, step)
  return Pretrained(model=model, info=info_from_config(config, step), path=str(path), run_config=config)


def require_synclipmae(config: ml_collections.ConfigDict, path) -> None:
  """Raises ModelFileError for a run that is not a SyncLipMAE (model.mode='mae': nothing to export or evaluate)."""
  mode = config.model.get("mode", "synclipmae")
  if mode != "synclipmae":
    raise ModelFileError(f"{path}: a model.mode={mode!r} run (a plain MAE: no prompt tokens, no audio branch) has no "
                         "tokens to export or evaluate; synclipmae.train.checkpoint.load_model(WORKDIR) loads it")


def info_from_config(config: ml_collections.ConfigDict, step: int, corpus_dir: str | None = None,
                     max_clips: int = 64) -> dict[str, Any]:
  """What an export's config.json holds, from a pretraining config (the views, audio window and model config).

  The aligned-crop masks are averaged over the training corpus (`corpus_dir`, default the config's) when it can be
  read; without it they are left out (aligned crops then cannot be encoded).
  """
  views = {"motion": {"patch_size": config.model.patch_size, "mask_ratio": config.masking.mask_ratio,
                      "face_bias": config.masking.face_bias, "mouth_bias": config.masking.get("mouth_bias", 1.0)},
           "identity": {"kind": "uniform", "seed": IDENTITY_VIEW_SEED}}
  corpus_dir = corpus_dir or config.data.dir
  try:
    views["aligned_masks"] = mean_patch_masks(corpus_dir, config.data.train_split, config.model.patch_size,
                                              max_clips)
  except (FileNotFoundError, ValueError, RuntimeError):
    pass
  return {"format": EXPORT_FORMAT, "format_version": EXPORT_VERSION, "variant": config.get("variant", ""),
          "step": int(step), "model": config.model.to_dict(), "views": views,
          "decoder_target": {"norm_pix": bool(config.loss.norm_pix)},
          "audio": {"window_frames": int(config.data.num_frames), "sample_rate": int(config.model.audio.sample_rate),
                    "fps": float(config.model.audio.fps)}}


def mean_patch_masks(corpus_dir: str | os.PathLike, split: str, patch_size: int, max_clips: int = 64
                     ) -> dict[str, Any]:
  """Per-patch face and mouth fractions averaged over up to `max_clips` clips of a corpus split."""
  from synclipmae.data import pipeline
  from synclipmae.data.corpus import Corpus
  corpus = Corpus(corpus_dir)
  count = len(corpus.manifest(split))
  if count == 0:
    raise ValueError(f"{corpus_dir}/{split} has no clips")
  indices = np.linspace(0, count - 1, min(count, max_clips)).round().astype(int)
  face, mouth, frames = 0.0, 0.0, 0
  for i in sorted(set(indices.tolist())):
    clip = corpus.read(split, i)
    face = face + pipeline.patch_fractions(clip.face_masks, patch_size).sum(0)
    mouth = mouth + pipeline.patch_fractions(clip.mouth_masks, patch_size).sum(0)
    frames += clip.num_frames
  return {"face_fraction": np.round(np.float64(face / frames), 5).tolist(),
          "mouth_fraction": np.round(np.float64(mouth / frames), 5).tolist(),
          "source": {"corpus": os.path.abspath(corpus_dir), "split": split, "clips": len(set(indices.tolist())),
                     "frames": int(frames)}}


# ----------------------------------------------------------------------------------------------------------------
# Tokens of a video.


@dataclasses.dataclass
class VideoTokens:
  """The tokens of one video on its 25 fps timeline (frame k covers [k/25, (k+1)/25) s from the video's start).

  frame_index [N]: the frames that have a face (aligned crops: every frame); z_id, z_voc, z_amb [N, Dp] for them.
  audio_tokens [num_frames, Dp]: one per frame of the whole timeline, face or not.
  segments: [start, stop) runs of consecutive face frames (clips of the face pipeline).
  """
  video: str
  num_frames: int
  frame_index: np.ndarray
  z_id: np.ndarray
  z_voc: np.ndarray
  z_amb: np.ndarray
  audio_tokens: np.ndarray
  segments: list[tuple[int, int]]
  fps: float = FPS
  aligned: bool = False

  @property
  def frame_times(self) -> np.ndarray:
    """Start time in seconds of each face frame."""
    return self.frame_index / self.fps

  @property
  def duration_s(self) -> float:
    return self.num_frames / self.fps


@dataclasses.dataclass
class Footage:
  """An opened video: its audio track (16 kHz from the video's start), the face crops as (first frame, frames
  uint8 [n, S, S, 3], face masks, mouth masks or None) entries, and the timeline's length once they are read.
  clips: a raw video's clip records from the face pipeline (with each frame's crop transform), None if aligned."""
  audio: np.ndarray
  entries: Iterator[tuple]
  _num_frames: Callable[[], int]
  clips: list | None = None

  @property
  def num_frames(self) -> int:
    """Frames on the 25 fps timeline; known once `entries` has been consumed."""
    return self._num_frames()

  def audio_track(self) -> np.ndarray:
    """The audio cut or zero-padded to exactly num_frames * 640 samples."""
    track = np.zeros(self.num_frames * SAMPLES_PER_FRAME, np.float32)
    track[:min(len(self.audio), len(track))] = self.audio[:len(track)]
    return track


class VideoReader:
  """Reads videos into what the model encodes: face crops with masks (raw videos, through the `prep` face
  pipeline) or resized aligned crops, plus the 16 kHz audio track. Holds the face models between videos."""

  def __init__(self, image_size: int, aligned: bool = False, prep_config=None, *, allow_silent: bool = False):
    """allow_silent: accept videos without an audio track (zeros), e.g. the target of a dub."""
    self.image_size, self.aligned, self.allow_silent = image_size, aligned, allow_silent
    self._processor = None
    if not aligned:
      from data_pipelines.prep import process, settings
      config = prep_config or settings.PrepConfig(size=image_size, allow_silent=allow_silent)
      if config.size != image_size:
        raise ValueError(f"the face pipeline's crop size {config.size} differs from the model's {image_size}")
      self._processor = process.InputProcessor(config)

  def close(self) -> None:
    if self._processor is not None:
      self._processor.close()

  def __enter__(self) -> VideoReader:
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def read(self, path: str | os.PathLike, frame_batch: int = 64) -> Footage:
    """Opens a video; raises decode.PrepError naming it, the stage and the reason when it cannot be used.

    Aligned videos stream in batches of `frame_batch` frames (no masks); raw videos give one entry per clip of
    the face pipeline (decoded, tracked and aligned here, before this returns).
    """
    from data_pipelines.prep import decode
    if self.aligned:
      reader = decode.MediaReader(path, allow_silent=self.allow_silent)
      height, width = reader.output_size()
      if abs(height - width) > 0.02 * max(height, width):
        raise decode.PrepError(path, "aligned", f"aligned input must be square face crops, got {width}x{height}; "
                               "leave out --aligned to find and align the face")
      return Footage(reader.audio(), self._aligned_batches(reader, frame_batch), lambda: reader.num_frames)
    from data_pipelines.prep import inputs
    clips, stats, audio = self._processor.process_media(inputs.Input(str(path), str(path)))
    entries = ((c.metadata["start_frame"], c.decode_frames(), c.face_masks, c.mouth_masks) for c in clips)
    return Footage(audio, entries, lambda: stats["frames"], clips)

  def _aligned_batches(self, reader, frame_batch: int) -> Iterator[tuple]:
    batch, first = [], 0
    for frame in reader.frames():
      batch.append(self._resize(frame))
      if len(batch) == frame_batch:
        yield first, np.stack(batch), None, None
        first, batch = first + len(batch), []
    if batch:
      yield first, np.stack(batch), None, None

  def _resize(self, frame: np.ndarray) -> np.ndarray:
    if frame.shape[:2] == (self.image_size, self.image_size):
      return frame
    from PIL import Image
    return np.asarray(Image.fromarray(frame).resize((self.image_size, self.image_size), Image.BICUBIC))


def video_tokens(pretrained: Pretrained, path: str | os.PathLike, *, aligned: bool = False,
                 reader: VideoReader | None = None, frame_batch: int = 64) -> VideoTokens:
  """The tokens of a video file: raw footage (faces found, tracked and aligned exactly as `synclipmae prep` does)
  or, with `aligned=True`, a video of aligned face crops. Pass a `reader` to reuse its face models across videos.

  Raises data_pipelines.prep.decode.PrepError (a ValueError naming the video, stage and reason) for a missing,
  corrupt or silent video or one without a face.
  """
  own = reader is None
  reader = reader or VideoReader(pretrained.image_size, aligned)
  try:
    footage = reader.read(path, frame_batch)
    index, parts, segments = [], [], []
    for first, frames, face, mouth in footage.entries:
      parts.append(pretrained.encode_frames(frames, face, mouth, batch_size=frame_batch))
      index.append(first + np.arange(len(frames)))
      if segments and segments[-1][1] == first:
        segments[-1] = (segments[-1][0], first + len(frames))
      else:
        segments.append((first, first + len(frames)))
  finally:
    if own:
      reader.close()
  tokens = {k: np.concatenate([p[k] for p in parts]) for k in ("z_id", "z_voc", "z_amb")}
  num_frames = footage.num_frames
  return VideoTokens(video=str(path), num_frames=num_frames, frame_index=np.concatenate(index).astype(np.int64),
                     audio_tokens=pretrained.encode_audio(footage.audio_track(), num_frames), segments=segments,
                     aligned=reader.aligned, **tokens)

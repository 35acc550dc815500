"""Dubbing: a face's mouth region made to speak other words, retrieved from its own frames or drawn by the decoder.

Two ways (`mode`), one mouth region: the bounding box of each frame's mouth mask (prep: the outer lips dilated by 3 %
of the crop; the synthetic corpus: the area every mouth opening stays in), optionally grown by `grow` of the crop
on every side. Every other pixel is the target's own.

  * "retrieve" (the default): each frame's mouth region is the mean of the target's own frames whose own driving
    token is nearest the new one and whose z_amb is nearest the frame's (same head pose: `retrieve_mouths`), as
    Video Rewrite (Bregler et al. 1997) retrieved mouth images of the same speaker by phoneme, with our tokens as
    the index: the target's own audio tokens for audio-driven dubs, its z_voc for video-driven ones. It needs no
    fine-tuned decoder, and it is what meets issue 14's targets (test identities, means of two seeds: +4.1 / +4.4
    dB audio- / video-driven over the undubbed target, all pairs in sync; BENCHMARKS.md "Dubbing by retrieval").
    It can only show mouths the target shows somewhere in its footage.
  * "replace" / "residual" (the shared decoder, as the paper dubs): for each target frame t the patches over the
    mouth region are masked, the encoder reads the visible rest, and the decoder draws the frame from them
    conditioned on (z_id of a reference frame, z_amb of frame t, the driving token): the audio token of the new
    audio at t (audio-driven) or z_voc of another video's frame t (video-driven), the same decoder for both as in
    pretraining. "replace" pastes the drawing of the masked patches; "residual" adds to the target the difference
    between the drawing with the new driving token and the drawing with the target's own z_voc, so that what the
    decoder gets wrong in both cancels. With `mu`'s decoder neither is a dub yet (validation: residual +0.04 dB,
    replace -2.2 dB; the right driver beats a 4-frame-late one by ~0.15 dB; BENCHMARKS.md "Dubbing").

Choices the paper leaves open for the decoder, and ours:
  * every frame of a batch keeps the same number of visible patches (static shapes), so frames with a smaller
    region also lose the patches nearest it.
  * reference frame (z_id): the middle frame of the target sequence, one for all its frames (the paper takes the last
    frame of the previous segment when streaming; one fixed frame keeps the identity steady across a clip).
  * decoder: pretraining teaches the decoder to fill a *random* three quarters of the frame in normalised pixels
    (loss.norm_pix). `finetune` adapts it (decoder weights only: the encoders, hence every token, sync and probe
    result, stay as exported) to this task: mouth-region masks, a pixel-space loss through the decoder's patch
    statistics (decoder.patch_stats), both passes as in pretraining, and z_amb from another random frame of the clip
    so that the mouth can only come from the driving token. A decoder without them first gets the two direct paths
    from its conditioning to every position (`with_conditioning_paths`: decoder.cond_broadcast and cond_modulation,
    zero-initialised, so fine-tuning starts from the pretrained decoder): through cross-attention alone the
    pretrained mu decoder's drawing barely depends on its driving token (BENCHMARKS.md).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from synclipmae.models import vit
from synclipmae.models.decoder import denormalize

DEFAULT_GROW = 0.0  # Of the crop size, on every side of the mouth-mask bounding box (the masks carry a margin).
DECODER_MODES = ("replace", "residual")  # Drawn by the decoder: need a model fine-tuned by `finetune-dub`.
MODES = (*DECODER_MODES, "retrieve")
RETRIEVE_NEIGHBOURS = 3  # Own frames averaged per dubbed frame (chosen on validation pairs: BENCHMARKS.md).
RETRIEVE_AMBIENT_WEIGHT = 2.0  # Of the z_amb distance against the driving token's, each over its mean.


# ----------------------------------------------------------------------------------------------------------------
# The mouth region and the views of a dub.


def region_masks(mouth_masks: np.ndarray, grow: float = DEFAULT_GROW, *, where: str = "mouth_masks") -> np.ndarray:
  """bool [T, S, S]: each frame's mouth-mask bounding box grown by `grow` * S on every side. A frame with an
  empty mask takes the sequence's mean box; a sequence without any mouth pixel is an error (naming `where`)."""
  masks = np.asarray(mouth_masks, bool)
  t, s = masks.shape[0], masks.shape[1]
  rows, cols = masks.any(2), masks.any(1)
  has = rows.any(1)
  if not has.any():
    raise ValueError(f"{where}: no frame has a mouth mask, so there is no mouth region to redraw")
  first = lambda a: np.where(a.any(1), a.argmax(1), 0)
  last = lambda a: np.where(a.any(1), a.shape[1] - 1 - a[:, ::-1].argmax(1), 0)
  boxes = np.stack([first(rows), last(rows), first(cols), last(cols)], 1).astype(np.float64)
  boxes[~has] = boxes[has].mean(0)
  margin = grow * s
  top, bottom = np.floor(boxes[:, 0] - margin), np.ceil(boxes[:, 1] + margin)
  left, right = np.floor(boxes[:, 2] - margin), np.ceil(boxes[:, 3] + margin)
  y, x = np.arange(s)[None, :, None], np.arange(s)[None, None, :]
  return ((y >= top[:, None, None]) & (y <= bottom[:, None, None]) &
          (x >= left[:, None, None]) & (x <= right[:, None, None]))


def touched_patches(region: np.ndarray, patch_size: int) -> np.ndarray:
  """bool [T, P] (row-major patches): the patches a pixel region [T, S, S] touches."""
  t, s = region.shape[:2]
  g = s // patch_size
  return region.reshape(t, g, patch_size, g, patch_size).any((2, 4)).reshape(t, g * g)


def mask_exactly(touched: np.ndarray, num_masked: int) -> np.ndarray:
  """bool [T, P]: `num_masked` patches per frame, those `touched` [T, P] first, then the ones nearest their centre
  (static shapes: every frame of a batch keeps the same number of visible patches)."""
  t, p = touched.shape
  if (touched.sum(1) == num_masked).all():
    return touched
  g = int(round(p ** 0.5))
  centre = np.stack(np.meshgrid(np.arange(g), np.arange(g), indexing="ij"), -1).reshape(-1, 2) + 0.5
  masked = np.zeros_like(touched)
  for i in range(t):
    middle = centre[touched[i]].mean(0) if touched[i].any() else centre.mean(0)
    order = np.lexsort((np.square(centre - middle).sum(1), ~touched[i]))  # Touched first, then the nearest.
    masked[i, order[:num_masked]] = True
  return masked


def masked_patches(region: np.ndarray, patch_size: int) -> np.ndarray:
  """bool [T, P]: the patches a dub redraws, from pixel regions [T, S, S]: every patch touching the region, and
  as many more per frame as it takes to leave the same number visible in every frame (`mask_exactly`)."""
  return _mask_largest(touched_patches(region, patch_size))


def _mask_largest(touched: np.ndarray) -> np.ndarray:
  """`mask_exactly` as many patches per frame as the largest region of the batch touches."""
  num_masked = int(touched.sum(1).max())
  if num_masked >= touched.shape[1]:
    raise ValueError(f"the mouth region covers all {touched.shape[1]} patches of the frame; nothing is left to dub "
                     "from")
  return mask_exactly(touched, num_masked)


def visible_keep(masked: np.ndarray) -> np.ndarray:
  """int32 [T, K]: the indices of the visible (unmasked) patches, in order; K equal for every frame."""
  return np.stack([np.flatnonzero(~m) for m in masked]).astype(np.int32)


def patch_pixels(masked: np.ndarray, patch_size: int) -> np.ndarray:
  """bool [T, P] patches -> bool [T, S, S] pixels."""
  t, p = masked.shape
  g = int(round(p ** 0.5))
  grid = masked.reshape(t, g, 1, g, 1)
  return np.broadcast_to(grid, (t, g, patch_size, g, patch_size)).reshape(t, g * patch_size, g * patch_size)


# ----------------------------------------------------------------------------------------------------------------
# Dubbing a sequence of aligned face crops.


@dataclasses.dataclass
class Dub:
  """frames uint8 [T, S, S, 3] (the target outside `region`, the new mouth inside); region bool [T, S, S]
  (the redrawn pixels); reference: the frame whose z_id conditioned every frame (-1 for retrieved mouths); driven
  bool [T]: frames redrawn (the others are the target's own); sources int [T, k]: for retrieved mouths, the target's
  own frames each frame's mouth region is the mean of."""
  frames: np.ndarray
  region: np.ndarray
  reference: int
  driven: np.ndarray
  sources: np.ndarray | None = None


def _squared_distances(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """|x_t - y_s|^2 [T, N]."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  return np.maximum((x * x).sum(1)[:, None] + (y * y).sum(1)[None] - 2 * x @ y.T, 0.0)


def _mean_squared_distance(x: np.ndarray, y: np.ndarray) -> float:
  """The mean of |x_t - y_s|^2 over all pairs (t, s), in closed form (no [T, N] matrix); at least float tiny."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  mean = (x * x).sum(1).mean() + (y * y).sum(1).mean() - 2 * x.mean(0) @ y.mean(0)
  return max(float(mean), np.finfo(np.float64).tiny)


def retrieve_mouths(driving: np.ndarray, own_driving: np.ndarray, ambient: np.ndarray, *,
                    ambient_weight: float = RETRIEVE_AMBIENT_WEIGHT, neighbours: int = RETRIEVE_NEIGHBOURS,
                    rows: int = 1024) -> np.ndarray:
  """int [T, k]: for each target frame t, the k frames s of the target itself whose own driving token
  own_driving[s] is nearest driving[t] and whose z_amb is nearest the frame's own, ambient[s] to ambient[t] (head
  pose and lids: the mouth region of a frame in another pose would sit elsewhere), nearest first. Cost: the two
  squared distances, each divided by its mean over all (t, s), the ambient one weighted by `ambient_weight`.
  Computed `rows` target frames at a time, so long videos need memory linear in their length."""
  k = max(1, min(neighbours, len(own_driving)))
  drive_mean, pose_mean = _mean_squared_distance(driving, own_driving), _mean_squared_distance(ambient, ambient)
  out = np.empty((len(driving), k), np.int64)
  for start in range(0, len(driving), rows):
    part = slice(start, start + rows)
    cost = (_squared_distances(driving[part], own_driving) / drive_mean +
            ambient_weight * _squared_distances(ambient[part], ambient) / pose_mean)
    out[part] = np.argsort(cost, axis=1, kind="stable")[:, :k]
  return out


def dub_frames(pretrained, frames: np.ndarray, face_masks: np.ndarray | None, mouth_masks: np.ndarray | None,
               driving: np.ndarray, driven: np.ndarray | None = None, *, reference: int | None = None,
               grow: float | None = None, mode: str = "retrieve", own_driving: np.ndarray | None = None,
               neighbours: int = RETRIEVE_NEIGHBOURS, ambient_weight: float = RETRIEVE_AMBIENT_WEIGHT,
               batch_size: int = 64) -> Dub:
  """Redraws the mouth of aligned face crops uint8 [T, S, S, 3] with masks [T, S, S] (None for aligned crops
  without masks: the model's mean mouth position) to follow `driving` [T, Dp] (audio tokens or another video's
  z_voc). driven bool [T]: which frames have a driving token (default all); the rest are returned unchanged.
  mode: "replace", "residual" or "retrieve" (module docstring); own_driving [T, Dp]: for "retrieve", the target
  frames' own tokens of the driving's kind (their own audio tokens for audio-driven dubs; default their z_voc);
  neighbours, ambient_weight: `retrieve_mouths`'s."""
  if mode not in MODES:
    raise ValueError(f"dub: mode {mode!r} is not one of {MODES}")
  frames = np.asarray(frames)
  t = len(frames)
  if len(driving) != t:
    raise ValueError(f"dub: {t} target frames but {len(driving)} driving tokens")
  driven = np.ones(t, bool) if driven is None else np.asarray(driven, bool)
  settings = pretrained.info.get("dubbing", {})
  grow = settings.get("grow", DEFAULT_GROW) if grow is None else grow
  p = pretrained.config.patch_size
  tokens = pretrained.encode_frames(frames, face_masks, mouth_masks, batch_size=batch_size)
  if mouth_masks is None:  # Aligned crops: where mouths sit in the training corpus's crops.
    mouth_masks = np.repeat(patch_pixels(pretrained.patch_fractions()[1] > 0.05, p), t, 0)
  if mode == "retrieve":
    own = tokens["z_voc"] if own_driving is None else np.asarray(own_driving, np.float32)
    if len(own) != t:
      raise ValueError(f"dub: {t} target frames but {len(own)} of their own driving tokens")
    sources = retrieve_mouths(np.asarray(driving, np.float32), own, tokens["z_amb"], neighbours=neighbours,
                              ambient_weight=ambient_weight)
    boxes = region_masks(mouth_masks, grow)
    region = (boxes | boxes[sources].any(1)) & driven[:, None, None]
    out = frames.copy()
    out[region] = np.round(frames[sources].astype(np.float32).mean(1)[region]).astype(np.uint8)
    return Dub(frames=out, region=region, reference=-1, driven=driven, sources=sources)
  masked = masked_patches(region_masks(mouth_masks, grow), p)
  reference = t // 2 if reference is None else int(reference)
  if not 0 <= reference < t:
    raise ValueError(f"dub: reference frame {reference} is outside the {t} target frames")
  z_id = np.repeat(tokens["z_id"][reference:reference + 1], t, 0)
  keep = visible_keep(masked)
  mouth = pretrained.patch_fractions(*(None, None) if face_masks is None else (face_masks, mouth_masks))[1]
  draw = lambda tokens_of_mouth: pretrained.redraw(frames, keep, mouth, z_id, tokens["z_amb"], tokens_of_mouth,
                                                   batch_size=batch_size)
  drawn = draw(np.asarray(driving, np.float32))
  if mode == "residual":  # The change of mouth only: the target plus (new drawing - drawing of its own mouth).
    drawn = np.clip(frames / np.float32(255) + drawn - draw(tokens["z_voc"]), 0.0, 1.0)
  region = patch_pixels(masked, p) & driven[:, None, None]
  out = frames.copy()
  out[region] = np.round(drawn[region] * 255).astype(np.uint8)
  return Dub(frames=out, region=region, reference=reference, driven=driven)


# ----------------------------------------------------------------------------------------------------------------
# Fine-tuning the decoder for dubbing.


def with_conditioning_paths(pretrained, decoder_size: tuple[int, int, int] | None = None):
  """`pretrained` with decoder.cond_broadcast and decoder.cond_modulation switched on (a new `Pretrained`; the same
  weights, the new layers zero-initialised so the decoder draws exactly what it drew before).

  decoder_size (width, depth, heads): a new decoder of that size instead, freshly initialised (the encoders keep
  their weights): for when the pretrained decoder is too small to draw a mouth from its driving token."""
  import copy

  from synclipmae.inference import Pretrained
  from synclipmae.models.synclipmae import SyncLipMAE
  decoder = pretrained.config.decoder
  if decoder_size is None and decoder.get("cond_broadcast", False) and decoder.get("cond_modulation", False):
    return pretrained
  info = copy.deepcopy(pretrained.info)
  info["model"]["decoder"].update(cond_broadcast=True, cond_modulation=True)
  if decoder_size is not None:
    width, depth, heads = decoder_size
    if width % heads:
      raise ValueError(f"dubbing decoder: width {width} is not a multiple of its {heads} heads")
    info["model"]["decoder"].update(width=width, depth=depth, num_heads=heads)
  model = SyncLipMAE(ml_collections.ConfigDict(info["model"]), rngs=nnx.Rngs(0))
  if decoder_size is None:
    broadcast = model.decoder.cond_broadcast
    broadcast.kernel.set_value(jnp.zeros_like(broadcast.kernel.get_value()))
    nnx.update(model, nnx.state(pretrained.model))  # Every weight the pretrained model has; the new ones stay zero.
  else:
    nnx.update(model, nnx.state(pretrained.model, nnx.Not(nnx.PathContains("decoder"))))
  return Pretrained(model=model, info=info, path=pretrained.path, run_config=pretrained.run_config)


@dataclasses.dataclass
class TrainingSet:
  """The training split in memory: frames uint8 [N, S, S, 3], their mouth masks [N, S, S] and per-patch mouth
  fractions [N, P], the frozen tokens [N, Dp] (z_id, z_voc, z_amb, audio), the patches each frame's mouth region
  touches [N, P] (grown by `grow`), and the clip of each frame [N] (a clip's frames are contiguous)."""
  frames: np.ndarray
  mouth_masks: np.ndarray
  mouth: np.ndarray
  tokens: dict[str, np.ndarray]
  touched: np.ndarray
  clip: np.ndarray
  grow: float


def training_set(pretrained, corpus, split: str, *, max_clips: int | None = None, grow: float = DEFAULT_GROW,
                 log: Callable[[str], None] | None = print) -> TrainingSet:
  """Decodes and encodes (frozen) the clips of `split` (`Corpus.spread`), with their mouth regions."""
  frames, mouth_masks, mouth, touched, clip_of = [], [], [], [], []
  tokens: dict[str, list[np.ndarray]] = {k: [] for k in ("z_id", "z_voc", "z_amb", "audio")}
  p = pretrained.config.patch_size
  indices = corpus.spread(split, max_clips)
  start = time.time()
  for n, index in enumerate(indices):
    clip = corpus.read(split, index)
    for k, v in pretrained.encode_clip(clip).items():
      tokens[k].append(v)
    frames.append(clip.decode_frames())
    mouth_masks.append(clip.mouth_masks)
    mouth.append(pretrained.patch_fractions(clip.face_masks, clip.mouth_masks)[1])
    region = region_masks(clip.mouth_masks, grow, where=f"{corpus.directory}/{split} clip {clip.clip_id}")
    touched.append(touched_patches(region, p))
    clip_of.append(np.full(clip.num_frames, n))
    if log and (n + 1) % 100 == 0:
      log(f"encoded {n + 1}/{len(indices)} clips ({time.time() - start:.0f} s)")
  return TrainingSet(np.concatenate(frames), np.concatenate(mouth_masks), np.concatenate(mouth),
                     {k: np.concatenate(v) for k, v in tokens.items()}, np.concatenate(touched),
                     np.concatenate(clip_of), grow)


def _same_clip_other_frames(rng: np.random.Generator, clip: np.ndarray, rows: np.ndarray) -> np.ndarray:
  """For each row, a random frame of the same clip (the clips' frames are contiguous in `clip`)."""
  starts = np.searchsorted(clip, clip[rows], "left")
  stops = np.searchsorted(clip, clip[rows], "right")
  return starts + (rng.random(len(rows)) * (stops - starts)).astype(int)


def finetune(pretrained, data: TrainingSet, *, steps: int = 1500, batch_size: int = 64,
             learning_rate: float = 3e-4, mouth_weight: float = 10.0, seed: int = 0, log_every: int = 100,
             log: Callable[[str], None] | None = print) -> dict[str, Any]:
  """Trains the decoder of `pretrained.model` in place (AdamW, cosine decay) to redraw the masked mouth patches of
  `data` in pixels, each pixel of a mouth mask weighing 1 + `mouth_weight` (the lips are a small part of the masked
  patches, and the only part the driving token decides); returns the training summary (the export's `dubbing`)."""
  model = pretrained.model
  norm_pix = bool(pretrained.info.get("decoder_target", {}).get("norm_pix", True))
  if norm_pix and model.decoder.stats_head is None:
    raise ValueError(f"{pretrained.path}: the decoder predicts per-patch normalised pixels without their statistics "
                     "(trained without model.decoder.patch_stats), so it cannot be fine-tuned to draw pixels")
  p = pretrained.config.patch_size
  decoder_params = nnx.All(nnx.Param, nnx.PathContains("decoder"))
  graphdef, params, rest = nnx.split(model, decoder_params, ...)
  schedule = optax.warmup_cosine_decay_schedule(0.0, learning_rate, max(1, min(100, steps // 10)), steps)
  tx = optax.adamw(schedule, weight_decay=1e-4)
  opt_state = tx.init(params)

  def loss_fn(params, rest, batch):
    model = nnx.merge(graphdef, params, rest)
    x = batch["frames"].astype(jnp.float32) / 255.0
    patches = jax.lax.stop_gradient(model.encode_frames(x, batch["keep"], batch["mouth"])["patches"])
    cond = jnp.concatenate([jnp.stack([batch["z_id"], batch["z_amb"], batch["z_voc"]], 1),
                            jnp.stack([batch["z_id"], batch["z_amb"], batch["audio"]], 1)])
    pixels, stats = model._decode(jnp.concatenate([patches, patches]), jnp.concatenate([batch["keep"]] * 2), cond)
    drawn = denormalize(pixels, stats) if norm_pix else pixels
    target = jnp.concatenate([vit.patchify(x, p)] * 2)
    weight = 1.0 + mouth_weight * vit.patchify(batch["mouth_masks"][..., None].astype(jnp.float32), p)
    weight = jnp.concatenate([weight * batch["masked"][..., None]] * 2)  # [2M, P, p*p]: masked patches only.
    error = jnp.square(drawn - target).reshape(*weight.shape, 3).mean(-1)
    return jnp.sum(error * weight) / jnp.maximum(weight.sum(), 1.0)

  @jax.jit
  def train_step(params, opt_state, rest, batch):
    loss, grads = jax.value_and_grad(loss_fn)(params, rest, batch)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  def batch_of(rng):
    rows = rng.integers(len(data.frames), size=batch_size)
    reference = _same_clip_other_frames(rng, data.clip, rows)
    ambient = _same_clip_other_frames(rng, data.clip, rows)
    masked = _mask_largest(data.touched[rows])  # A few distinct sizes: one compilation each.
    return {"frames": data.frames[rows], "keep": visible_keep(masked), "mouth": data.mouth[rows], "masked": masked,
            "mouth_masks": data.mouth_masks[rows],
            "z_id": data.tokens["z_id"][reference], "z_amb": data.tokens["z_amb"][ambient],
            "z_voc": data.tokens["z_voc"][rows], "audio": data.tokens["audio"][rows]}

  # One fixed batch scored before and after: the fine-tune's effect without the noise of the training batches.
  monitor = batch_of(np.random.default_rng([seed, 1]))
  jitted_loss = jax.jit(loss_fn)
  monitor_loss = lambda params: float(jitted_loss(params, rest, monitor))
  before = monitor_loss(params)
  rng = np.random.default_rng(seed)
  start, losses = time.time(), []
  for i in range(1, steps + 1):
    params, opt_state, loss = train_step(params, opt_state, rest, batch_of(rng))
    losses.append(float(loss))
    if log and (i % log_every == 0 or i == steps):
      log(f"dub fine-tune step {i}/{steps}: mouth-region pixel MSE {np.mean(losses[-log_every:]):.5f} "
          f"({time.time() - start:.0f} s)")
  nnx.update(model, params)
  pretrained.refresh()
  return {"grow": data.grow, "max_masked": int(data.touched.sum(1).max()), "steps": steps, "batch_size": batch_size,
          "learning_rate": learning_rate, "mouth_weight": mouth_weight,
          "seed": seed, "first_loss": float(np.mean(losses[:min(10, len(losses))])),
          "final_loss": float(np.mean(losses[-min(10, len(losses)):])),
          "monitor_loss_before": before, "monitor_loss_after": monitor_loss(params),
          "monitor": f"the loss of one fixed batch of {batch_size} training frames before and after fine-tuning",
          "loss": "pixel MSE over the masked mouth-region patches (mouth-mask pixels weigh 1 + mouth_weight), video- "
                  "and audio-driven passes",
          "reference": "middle frame of the target sequence (training: a random frame of the clip)",
          "ambient": "z_amb of the target frame (training: of a random frame of the clip)"}



# ----------------------------------------------------------------------------------------------------------------
# Dubbing a video file.


def read_audio(path: str | os.PathLike, sample_rate: int = 16000) -> np.ndarray:
  """Mono float32 audio at `sample_rate` from an audio file (librosa) or a video's soundtrack (PyAV); raises
  ValueError naming the file when it cannot be read or holds no sound."""
  from data_pipelines.prep import decode
  path = Path(path)
  if not path.is_file():
    raise ValueError(f"{path}: no such audio file")
  try:
    info = decode.probe(path, allow_silent=True)
  except decode.PrepError:
    info = None  # No video stream: an audio file.
  if info is not None:
    if not info.has_audio:
      raise ValueError(f"{path}: the video has no audio track to dub with")
    audio = decode.MediaReader(path).audio()
  else:
    import librosa
    try:
      audio, _ = librosa.load(path, sr=sample_rate, mono=True)
    except Exception as e:  # librosa raises several kinds (soundfile, audioread) for unreadable files.
      raise ValueError(f"{path}: not a readable audio file ({type(e).__name__}: {e})") from None
  if len(audio) == 0:
    raise ValueError(f"{path}: the audio track is empty")
  return np.asarray(audio, np.float32)


def _fit_length(track: np.ndarray, num_frames: int, spf: int) -> tuple[np.ndarray, int]:
  """A soundtrack cut or silence-padded to num_frames * spf samples, and how many frames it covers."""
  out = np.zeros(num_frames * spf, np.float32)
  out[:min(len(track), len(out))] = track[:len(out)]
  return out, min(num_frames, len(track) // spf)


def _paste(full: np.ndarray, crop: np.ndarray, region: np.ndarray, transform: np.ndarray) -> np.ndarray:
  """Pastes the `region` pixels of an aligned crop back into its source frame through the inverse of its
  frame -> crop transform, with a one-pixel feathered edge."""
  import cv2
  h, w = full.shape[:2]
  inverse = cv2.invertAffineTransform(np.asarray(transform, np.float64))
  back = cv2.warpAffine(crop, inverse, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
  alpha = cv2.warpAffine(region.astype(np.float32), inverse, (w, h), flags=cv2.INTER_LINEAR)
  alpha = cv2.GaussianBlur(alpha, (3, 3), 0)[..., None]
  return np.round(full * (1 - alpha) + back * alpha).astype(np.uint8)


def dub_video(pretrained, video: str | os.PathLike, out: str | os.PathLike, *, audio: str | None = None,
              driving_video: str | None = None, aligned: bool = False, driving_aligned: bool | None = None,
              mode: str = "retrieve", retrieve: dict[str, Any] | None = None,
              log: Callable[[str], None] | None = print) -> dict[str, Any]:
  """`synclipmae dub` as a function: `video`'s mouth redrawn to follow `audio` (a file) or `driving_video`'s mouth,
  written to `out` (mp4) with the new soundtrack (the audio file's, or the driving video's). Returns a summary.

  Timelines: both videos are read on the 25 fps timeline (any frame rate is resampled, as `prep` does) and the
  new sound starts with the target's first frame. The output has the target's length: longer new audio (or a longer
  driving video) is cut at its end; shorter audio is padded with silence, and target frames past its end, or
  without a driving face, keep their own mouth. Raw videos are dubbed in their aligned crops and pasted back into
  the full frame; aligned crops (`aligned`) are written as crops. Nothing is written unless the whole dub succeeds.
  retrieve: `retrieve_mouths` settings for mode "retrieve" (neighbours, ambient_weight).
  """
  from data_pipelines import media
  from synclipmae import inference
  if (audio is None) == (driving_video is None):
    raise ValueError("dub: give exactly one of --audio (audio-driven) or --driving_video (video-driven)")
  if mode not in MODES:
    raise ValueError(f"dub: mode {mode!r} is not one of {MODES}")
  if mode in DECODER_MODES and "dubbing" not in pretrained.info:
    raise ValueError(f"{pretrained.path}: this model's decoder was not fine-tuned for dubbing; make one with "
                     f"`synclipmae finetune-dub --model={pretrained.path} --out=DUB_MODEL`, or dub with "
                     "--mode=retrieve (the target's own mouths, no decoder)")
  out = Path(out)
  if out.suffix.lower() != ".mp4":
    raise ValueError(f"{out}: the dub is written as mp4; name the output *.mp4")
  spf = inference.SAMPLES_PER_FRAME
  notes = []
  with inference.VideoReader(pretrained.image_size, aligned, allow_silent=True) as reader:
    footage = reader.read(video)
    entries = list(footage.entries)
  num_frames = footage.num_frames
  own_audio = None  # Retrieval's index of the target's own frames for audio-driven dubs: their own audio tokens.
  if mode == "retrieve" and audio is not None:
    if np.any(footage.audio):
      own_audio = pretrained.encode_audio(footage.audio_track(), num_frames)
    else:
      notes.append("the target has no audio track: its frames are indexed by their z_voc for retrieval (audio "
                   "tokens matched across modalities, less exact)")
  if audio is not None:
    sound = read_audio(audio)
    track, covered = _fit_length(sound, num_frames, spf)
    driving_tokens = pretrained.encode_audio(track, num_frames)
    has_driving = np.arange(num_frames) < covered
    if covered < num_frames:
      notes.append(f"the audio covers {covered} of the video's {num_frames} frames: it is padded with silence and "
                   "the frames past its end keep their own mouth")
    elif len(sound) > num_frames * spf + spf:
      notes.append(f"the audio is longer than the video ({num_frames} frames): cut at the video's end")
  else:
    driving = inference.video_tokens(pretrained, driving_video,
                                      aligned=aligned if driving_aligned is None else driving_aligned)
    track, _ = _fit_length(read_audio(driving_video), num_frames, spf)
    driving_tokens = np.zeros((num_frames, pretrained.config.prompt_dim), np.float32)
    has_driving = np.zeros(num_frames, bool)
    inside = driving.frame_index < num_frames
    driving_tokens[driving.frame_index[inside]] = driving.z_voc[inside]
    has_driving[driving.frame_index[inside]] = True
    if driving.num_frames != num_frames:
      notes.append(f"the driving video has {driving.num_frames} frames, the target {num_frames}: the output keeps "
                   "the target's length")
  dubbed = []
  if mode == "retrieve" and entries:  # One pool: every face frame of the target may lend its mouth to any other.
    index = np.concatenate([first + np.arange(len(frames)) for first, frames, _, _ in entries])
    joined = [None if entries[0][k] is None else np.concatenate([e[k] for e in entries]) for k in (1, 2, 3)]
    whole = dub_frames(pretrained, *joined, driving_tokens[index], has_driving[index], mode=mode,
                       own_driving=None if own_audio is None else own_audio[index], **(retrieve or {}))
    start = 0
    for first, frames, _, _ in entries:
      part = slice(start, start + len(frames))
      dubbed.append((first, Dub(frames=whole.frames[part], region=whole.region[part], reference=-1,
                                driven=whole.driven[part], sources=whole.sources[part])))
      start += len(frames)
  else:
    for first, frames, face, mouth in entries:
      index = first + np.arange(len(frames))
      dubbed.append((first, dub_frames(pretrained, frames, face, mouth, driving_tokens[index], has_driving[index],
                                       mode=mode)))
  face_frames = sum(len(d.frames) for _, d in dubbed)
  redrawn = sum(int(d.driven.sum()) for _, d in dubbed)
  if face_frames < num_frames:
    notes.append(f"{num_frames - face_frames} of {num_frames} target frames have no face and are left as they are")
  if aligned:
    frames = np.concatenate([d.frames for _, d in dubbed])
  else:
    transforms = {}
    for clip, (first, dub) in zip(footage.clips, dubbed):
      for i, transform in enumerate(clip.labels["crop_transform"]):
        transforms[first + i] = (dub.frames[i], dub.region[i], transform)

    def full_frames():
      from data_pipelines.prep import decode
      for k, frame in enumerate(decode.MediaReader(video, allow_silent=True).frames()):
        if k >= num_frames:
          break
        yield _paste(frame, *transforms[k]) if k in transforms else frame
    frames = full_frames()
  out.parent.mkdir(parents=True, exist_ok=True)
  partial = out.with_name(f".{out.name}.partial.mp4")
  try:
    media.write_mp4(partial, frames, track)
    os.replace(partial, out)
  finally:
    if partial.exists():
      partial.unlink()
  summary = {"video": str(video), "out": str(out), "driving": "audio" if audio is not None else "video", "mode": mode,
             "driving_source": str(audio or driving_video), "num_frames": num_frames, "face_frames": face_frames,
             "redrawn_frames": redrawn, "notes": notes}
  if log:
    for note in notes:
      log(f"note: {note}")
  return summary

"""Zero-shot audio-visual sync evaluation (VocaLiST / SyncNet protocol, DESIGN section 7).

For each sample: a held-out clip, a known offset d* in [-max_offset, max_offset] frames, and the clip's audio
shifted by d* (the waveform itself is shifted, then encoded). Each candidate offset d is scored by the cosine
similarity of z_voc(t) and the audio token a'(t + d), averaged over K consecutive context frames; the prediction is
the best-scoring d, correct if within +-1 frame of d*. z_voc is computed from the deterministic bypass-2 view
(`bypass2_view`) when the caller passes one, as the pretraining commands do.

Sign convention: a POSITIVE offset means the AUDIO LAGS the video (the sound of frame t is heard at frame t + d).
Shifting the audio later by n frames is reported as +n.

SyncNet-style scores are reported too: per offset, the mean Euclidean distance between the L2-normalised tokens;
LSE-D = the minimum over offsets, LSE-C = median - minimum (confidence).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from synclipmae import masking, storage
from synclipmae.data import pipeline
from synclipmae.data.corpus import Corpus

TOLERANCE_FRAMES = 1
OFFSET_CONVENTION = "positive offset = audio lags video (audio delayed by n frames is reported as +n)"


def shifted_audio_window(audio: np.ndarray, first_frame: int, num_frames: int, shift_frames: int,
                         margin_frames: int, samples_per_frame: int) -> np.ndarray:
  """Audio under video frames [first_frame, first_frame + num_frames) (+ margins) after delaying it by
  `shift_frames` frames; zeros where the shifted track has no sound."""
  start = (first_frame - shift_frames - margin_frames) * samples_per_frame
  length = (num_frames + 2 * margin_frames) * samples_per_frame
  out = np.zeros(length, np.float32)
  lo, hi = max(start, 0), min(start + length, len(audio))
  if hi > lo:
    out[lo - start:hi - start] = audio[lo:hi]
  return out


METRICS = ("cosine", "euclidean")


def offset_scores(video: np.ndarray, audio: np.ndarray, context: int, max_offset: int, metric: str = "cosine"
                  ) -> tuple[np.ndarray, np.ndarray]:
  """Score and distance per candidate offset for the `context` frames centred in the window.

  video [W, D], audio [W, D] token sequences of a window of W = max_context + 2 * max_offset frames.
  metric "cosine": score = mean cosine similarity, distance between the L2-normalised tokens (our protocol);
  "euclidean": score = minus the mean Euclidean distance of the raw embeddings (SyncNet's own scoring).
  Returns (score [2*max_offset+1], distance [2*max_offset+1]); the best offset has the highest score.
  """
  if metric not in METRICS:
    raise ValueError(f"metric={metric!r}: choose one of {METRICS}")
  w = len(video)
  first = (w - context) // 2
  v, a = video[first:first + context], audio
  if metric == "cosine":
    v = v / np.linalg.norm(v, axis=-1, keepdims=True)
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
  sims, dists = [], []
  for d in range(-max_offset, max_offset + 1):
    ad = a[first + d:first + d + context]
    dists.append(np.mean(np.linalg.norm(v - ad, axis=-1)))
    sims.append(np.mean(np.sum(v * ad, -1)) if metric == "cosine" else -dists[-1])
  return np.asarray(sims), np.asarray(dists)


def _plan(corpus: Corpus, split: str, num_samples: int, window: int, max_offset: int, seed: int
          ) -> list[tuple[int, int, int]]:
  """(record index, window start, true offset) per sample: clips cycled, starts and offsets random."""
  lengths = np.array([e["num_frames"] for e in corpus.manifest(split)])
  eligible = np.flatnonzero(lengths >= window)
  if len(eligible) == 0:
    raise ValueError(f"{corpus.directory}/{split}: no clip has the {window} frames a sync sample needs")
  rng = np.random.default_rng(seed)
  order = rng.permutation(eligible)
  plan = []
  for i in range(num_samples):
    index = int(order[i % len(order)])
    plan.append((index, int(rng.integers(0, lengths[index] - window + 1)),
                 int(rng.integers(-max_offset, max_offset + 1))))
  return plan


def bypass2_view(config) -> dict[str, Any]:
  """The deterministic bypass-2 view of a pretraining config (`evaluate(view=...)`): z_voc is computed from the
  K patches training kept most often (mouth region first, then face), not from all patches, which the encoder
  never saw together during pretraining."""
  return {"patch_size": config.model.patch_size, "mask_ratio": config.masking.mask_ratio,
          "face_bias": config.masking.face_bias, "mouth_bias": config.masking.get("mouth_bias", 1.0)}


def view_keep(view: dict[str, Any] | None, face_masks: np.ndarray, mouth_masks: np.ndarray) -> np.ndarray | None:
  """Kept-patch indices [T, K] of the deterministic bypass-2 view for face / mouth masks [T, H, W] (None: every
  patch). Pass them to `model.encode_frames(frames, keep)` to get the z_voc evaluation and notebooks use."""
  if view is None:
    return None
  return masking.view_keep(view, *(pipeline.patch_fractions(m, view["patch_size"]) for m in (face_masks, mouth_masks)))


def evaluate(model, corpus: Corpus, split: str, *, context_frames: int = 5, max_offset: int = 15,
             num_samples: int = 400, contexts: Sequence[int] = (1, 5, 15), batch_size: int = 16,
             margin_frames: int = 2, seed: int = 0, view: dict[str, Any] | None = None, metric: str = "cosine"
             ) -> dict[str, Any]:
  """Runs the protocol; returns the summary dict written to sync_eval.json (plus raw curves under "_curves").

  view: None encodes every patch of a frame; `bypass2_view(config)` encodes the view pretraining used for z_voc.
  model: a SyncLipMAE, or a peer with `reads_frame_windows` (models/syncnet.py), whose video embeddings read
  several frames and so get each sample's window whole.
  metric: how tokens are compared (`offset_scores`).
  """
  if metric not in METRICS:
    raise ValueError(f"metric={metric!r}: choose one of {METRICS}")
  if num_samples < 1:
    raise ValueError(f"num_samples={num_samples}: the sync evaluation needs at least one sample")
  if context_frames < 1:
    raise ValueError(f"context_frames={context_frames}: each offset is scored over at least one frame")
  contexts = sorted(set(contexts) | {context_frames})
  window = max(contexts) + 2 * max_offset
  plan = _plan(corpus, split, num_samples, window, max_offset, seed)
  graphdef, state = nnx.split(model)

  @jax.jit
  def embed(state, frames, keep, mouth, audio):
    m = nnx.merge(graphdef, state)
    if getattr(m, "reads_frame_windows", False):
      # Only the centre max(contexts) frames are ever scored: embed those (with the context the model reads on
      # each side) and leave zeros elsewhere.
      frames = frames.reshape(len(audio), window, *frames.shape[1:])
      lo, pad = (window - contexts[-1]) // 2, m.context_frames // 2
      centre = m.video_embeddings(frames[:, lo - pad:lo + contexts[-1] + pad])[:, pad:pad + contexts[-1]]
      video = jnp.zeros((len(audio), window, centre.shape[-1]), centre.dtype).at[:, lo:lo + contexts[-1]].set(centre)
    else:
      video = m.encode_frames(frames, keep, mouth)["z_voc"]
    return video.reshape(len(audio), window, -1), m.encode_audio(audio, window)

  results = {k: {"sims": [], "dists": []} for k in contexts}
  offsets = []
  for b in range(0, len(plan), batch_size):
    chunk = plan[b:b + batch_size]
    chunk = chunk + [chunk[-1]] * (batch_size - len(chunk))  # Static shapes: pad the last batch.
    frames, audio, masks = [], [], []
    for index, start, shift in chunk:
      clip = corpus.read(split, index)
      spf = int(clip.samples_per_frame)
      frames.append(clip.decode_frames(start, start + window))
      masks.append((clip.face_masks[start:start + window], clip.mouth_masks[start:start + window]))
      audio.append(shifted_audio_window(clip.audio_float(), start, window, shift, margin_frames, spf))
    frames = np.concatenate(frames).astype(np.float32) / 255.0
    keep = mouth = None  # view None: every patch (and no mouth fractions for encoder.mouth_private).
    if view is not None:
      face, mouth = (pipeline.patch_fractions(np.concatenate([m[i] for m in masks]), view["patch_size"])
                     for i in (0, 1))
      keep = masking.view_keep(view, face, mouth)
    z_voc, tokens = jax.device_get(embed(state, frames, keep, mouth, np.stack(audio)))
    for i in range(len(plan[b:b + batch_size])):
      offsets.append(chunk[i][2])
      for k in contexts:
        sims, dists = offset_scores(z_voc[i], tokens[i], k, max_offset, metric)
        results[k]["sims"].append(sims)
        results[k]["dists"].append(dists)

  candidates = np.arange(-max_offset, max_offset + 1)
  truth = np.asarray(offsets)

  def summary(k):
    sims, dists = np.stack(results[k]["sims"]), np.stack(results[k]["dists"])
    predicted = candidates[np.argmax(sims, axis=1)]
    return {"accuracy": float(np.mean(np.abs(predicted - truth) <= TOLERANCE_FRAMES)),
            "accuracy_exact": float(np.mean(predicted == truth)),
            "lse_d": float(np.mean(dists.min(1))),
            "lse_c": float(np.mean(np.median(dists, 1) - dists.min(1))),
            "mean_abs_error_frames": float(np.mean(np.abs(predicted - truth)))}, sims, predicted

  summaries = {k: summary(k) for k in contexts}
  main, sims, predicted = summaries[context_frames]
  chance = np.mean([np.sum(np.abs(candidates - t) <= TOLERANCE_FRAMES) for t in truth]) / len(candidates)
  # Similarity as a function of (candidate - true offset): the curve a synced model peaks at 0.
  relative = np.full((len(truth), 4 * max_offset + 1), np.nan)
  for i, t in enumerate(truth):
    relative[i, candidates - t + 2 * max_offset] = sims[i]
  return {
      **main,
      "num_samples": len(truth),
      "context_frames": context_frames,
      "max_offset": max_offset,
      "tolerance_frames": TOLERANCE_FRAMES,
      "chance_accuracy": float(chance),
      "offset_convention": OFFSET_CONVENTION,
      "split": split,
      "metric": metric,
      "accuracy_by_context": {str(k): summaries[k][0]["accuracy"] for k in contexts},
      "_curves": {"relative_offsets": list(range(-2 * max_offset, 2 * max_offset + 1)),
                  "mean_similarity": np.nanmean(relative, 0).tolist(),
                  "examples": [(int(t), s.tolist()) for t, s in zip(truth[:4], sims[:4])],
                  "candidates": candidates.tolist(), "predicted": predicted.tolist(), "truth": truth.tolist()},
  }


def evaluate_config(model, corpus: Corpus, config, *, split: str | None = None, context_frames: int | None = None,
                    num_samples: int | None = None) -> dict[str, Any]:
  """`evaluate` with the settings of a pretraining config (eval section incl. its sampling seed, audio margin,
  bypass-2 view); the keyword arguments override the config's."""
  default = lambda value, fallback: fallback if value is None else value  # 0 is a value (named by `evaluate`).
  return evaluate(model, corpus, split or evaluation_split(config, corpus),
                  context_frames=default(context_frames, config.eval.context_frames),
                  max_offset=config.eval.max_offset, num_samples=default(num_samples, config.eval.num_samples),
                  margin_frames=config.model.audio.margin_frames, seed=eval_seed(config), view=bypass2_view(config))


def evaluation_split(config, corpus: Corpus) -> str:
  """`data.eval_split`; a corpus without a validation split (e.g. from `prep`) is evaluated on "heldout", said in
  the log (and the result names its split)."""
  split = config.data.eval_split
  if split == "validation" and split not in corpus.splits and "heldout" in corpus.splits:
    print(f"note: {corpus.directory} has no 'validation' split; evaluating on 'heldout'")
    return "heldout"
  return split


def eval_seed(config) -> int:
  """The evaluation's sampling seed: `eval.seed`, independent of the training seed (configs from before it
  existed used the training seed)."""
  return int(config.eval.get("seed", config.seed))


def write_results(result: dict[str, Any], out_dir: str | os.PathLike) -> dict[str, str]:
  """Writes sync_eval.json and sync_eval.png (score vs offset) into `out_dir`."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  out = storage.output_dir(out_dir)  # Local or a URL (pretraining's closing evaluation of a gs:// workdir).
  curves = result["_curves"]
  json_path = storage.write_json(out / "sync_eval.json",
                                 {k: v for k, v in result.items() if k != "_curves"} | {"curves": curves})
  fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
  left.plot(curves["relative_offsets"], curves["mean_similarity"], "o-", ms=3)
  left.axvline(0, color="gray", ls="--")
  left.set(xlabel="candidate offset - true offset (frames)", ylabel="mean cosine similarity",
           title=f"{result['split']}: accuracy {result['accuracy']:.1%} (K={result['context_frames']}, "
                 f"chance {result['chance_accuracy']:.1%})")
  for truth, sims in curves["examples"]:
    right.plot(curves["candidates"], sims, label=f"true offset {truth:+d}")
    right.axvline(truth, ls=":", color=right.lines[-1].get_color())
  right.set(xlabel="candidate offset (frames; + = audio lags video)", ylabel="similarity",
            title="examples")
  right.legend(fontsize=8)
  fig.tight_layout()
  return {"json": json_path, "plot": storage.write_figure(fig, out / "sync_eval.png")}


# ----------------------------------------------------------------------------------------------------------------
# Sync of any video (`synclipmae sync`): the same scores on one video's own tokens.


def offset_curves(z_voc: np.ndarray, frame_index: np.ndarray, audio_tokens: np.ndarray, max_offset: int
                  ) -> tuple[np.ndarray, np.ndarray]:
  """Per face frame and candidate offset d in -max_offset..max_offset: cosine similarity and distance between the
  L2-normalised z_voc(t) and a(t + d). z_voc [N, D] at timeline frames `frame_index` [N]; audio_tokens [T, D].
  Returns (similarity, distance), each [N, 2*max_offset+1], NaN where t + d falls outside the timeline."""
  v = z_voc / np.maximum(np.linalg.norm(z_voc, axis=-1, keepdims=True), 1e-12)
  a = audio_tokens / np.maximum(np.linalg.norm(audio_tokens, axis=-1, keepdims=True), 1e-12)
  offsets = np.arange(-max_offset, max_offset + 1)
  target = frame_index[:, None] + offsets[None]
  valid = (target >= 0) & (target < len(a))
  paired = a[np.clip(target, 0, len(a) - 1)]  # [N, C, D]
  sims = np.where(valid, np.einsum("nd,ncd->nc", v, paired), np.nan)
  dists = np.where(valid, np.linalg.norm(v[:, None] - paired, axis=-1), np.nan)
  return sims, dists


def _decide(sims: np.ndarray, dists: np.ndarray, max_offset: int, fps: float) -> dict[str, Any]:
  """Offset (best mean similarity, as `evaluate` decides), LSE-D (min mean distance), LSE-C (median - min)."""
  with np.errstate(invalid="ignore"), warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)  # All-NaN columns: offsets no frame can reach.
    mean_sim, mean_dist = np.nanmean(sims, 0), np.nanmean(dists, 0)
  best = int(np.nanargmax(mean_sim))
  offset = best - max_offset
  finite = mean_dist[np.isfinite(mean_dist)]
  return {"offset_frames": offset, "offset_ms": round(offset * 1000.0 / fps, 1),
          "confidence": float(np.median(finite) - finite.min()), "min_dist": float(finite.min()),
          "_best": best, "_mean_sim": mean_sim, "_mean_dist": mean_dist}


def describe_offset(offset_frames: int, fps: float = 25.0) -> str:
  """The sign convention in words."""
  if offset_frames == 0:
    return "in sync (offset 0)"
  ms = abs(offset_frames) * 1000.0 / fps
  side = "lags" if offset_frames > 0 else "leads"
  return (f"audio {side} video by {abs(offset_frames)} frame{'s' if abs(offset_frames) != 1 else ''} "
          f"({ms:.0f} ms; offset {offset_frames:+d})")


def score_video(tokens, *, max_offset: int = 15, window_frames: int | None = 250,
                min_frames: int = 10) -> dict[str, Any]:
  """Sync of one video's tokens (`synclipmae.inference.VideoTokens`).

  The whole video is the context (every face frame); videos longer than `window_frames` are also scored per
  window (drift, a cut mid-video). Returns the summary keys `video`, `offset_frames`, `offset_ms`, `confidence`
  (LSE-C: median - min of the mean distance over offsets), `min_dist` (LSE-D), `num_frames` (face frames scored),
  plus `offset_in_words`, `timeline_frames`, `windows`, and the curves (`curve`, `frame_confidence`).
  Per-frame confidence is syncnet_python's: the median of the mean distance curve minus the frame's own distance
  at the chosen offset, median-filtered over 9 frames.
  """
  from scipy.signal import medfilt
  n = len(tokens.frame_index)
  if n < min_frames:
    raise ValueError(f"{tokens.video}: only {n} frames with a face; sync needs at least {min_frames}")
  sims, dists = offset_curves(tokens.z_voc, tokens.frame_index, tokens.audio_tokens, max_offset)
  overall = _decide(sims, dists, max_offset, tokens.fps)
  frame_dist = dists[:, overall["_best"]]
  frame_conf = np.median(overall["_mean_dist"][np.isfinite(overall["_mean_dist"])]) - frame_dist
  scored = np.isfinite(frame_conf)  # Frames whose audio at the chosen offset lies outside the video have none.
  if scored.sum() >= 1:
    frame_conf[scored] = medfilt(frame_conf[scored], kernel_size=min(9, scored.sum() - 1 + scored.sum() % 2))
  windows = []
  if window_frames and tokens.num_frames > window_frames:
    for start in range(0, tokens.num_frames, window_frames):
      inside = (tokens.frame_index >= start) & (tokens.frame_index < start + window_frames)
      if inside.sum() < min_frames:
        continue
      w = _decide(sims[inside], dists[inside], max_offset, tokens.fps)
      windows.append({"start_s": start / tokens.fps,
                      "end_s": min(start + window_frames, tokens.num_frames) / tokens.fps,
                      "num_frames": int(inside.sum()), **{k: v for k, v in w.items() if not k.startswith("_")}})
  return {"video": tokens.video, "offset_frames": overall["offset_frames"], "offset_ms": overall["offset_ms"],
          "confidence": round(overall["confidence"], 5), "min_dist": round(overall["min_dist"], 5), "num_frames": n,
          "offset_in_words": describe_offset(overall["offset_frames"], tokens.fps),
          "offset_convention": OFFSET_CONVENTION, "timeline_frames": tokens.num_frames, "fps": tokens.fps,
          "windows": windows,
          "curve": {"offsets": list(range(-max_offset, max_offset + 1)),
                    "similarity": np.round(overall["_mean_sim"], 5).tolist(),
                    "distance": np.round(overall["_mean_dist"], 5).tolist()},
          "frame_index": tokens.frame_index.tolist(),
          "frame_confidence": [round(float(c), 4) if np.isfinite(c) else None for c in frame_conf]}


SUMMARY_KEYS = ("video", "offset_frames", "offset_ms", "confidence", "min_dist", "num_frames")


def plot_video_sync(result: dict[str, Any], path: str | os.PathLike) -> str:
  """PNG: score vs offset (similarity and distance), per-frame confidence and per-window offsets over time.

  Drawn on a bare matplotlib Figure (no pyplot), so calling it leaves a notebook's plotting backend alone."""
  from matplotlib.figure import Figure
  curve = result["curve"]
  fig = Figure(figsize=(12, 4))
  left, right = fig.subplots(1, 2)
  similarity = left.plot(curve["offsets"], curve["similarity"], "o-", ms=3, label="mean cosine similarity")
  left.axvline(result["offset_frames"], color="gray", ls="--")
  twin = left.twinx()
  distance = twin.plot(curve["offsets"], curve["distance"], "s-", ms=2, color="tab:orange",
                       label="mean distance (LSE-D at its minimum)")
  twin.set_ylabel("mean distance")
  name = os.path.basename(result["video"])
  left.set(xlabel="candidate offset (frames; + = audio lags video)", ylabel="similarity",
           title=f"{name if len(name) <= 40 else '...' + name[-37:]}\n{result['offset_in_words']}")
  left.legend(handles=similarity + distance, loc="lower left", fontsize=8)
  times = np.asarray(result["frame_index"]) / result["fps"]
  confidence = np.array([np.nan if c is None else c for c in result["frame_confidence"]], float)
  right.plot(times, confidence, lw=1)
  right.set(xlabel="time (s)", ylabel="per-frame confidence",
            title=f"confidence {result['confidence']:.3f}, min dist {result['min_dist']:.3f}")
  if result["windows"]:
    twin = right.twinx()
    for w in result["windows"]:
      twin.hlines(w["offset_frames"], w["start_s"], w["end_s"], color="tab:red")
    twin.set_ylabel("window offset (frames)", color="tab:red")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  return str(path)


def write_shifted_videos(corpus: Corpus, split: str, out_dir: str | os.PathLike, *, num_videos: int = 40,
                         max_offset: int = 15, seed: int = 0) -> list[dict[str, Any]]:
  """Clips of a corpus split written as ordinary mp4 files (H.264 aligned crops + AAC audio) with their audio
  delayed by known offsets: every offset in -max_offset..max_offset once and the rest unshifted (offset 0), or a
  random subset of the offsets when num_videos is smaller; each video from a different clip while the split has
  enough. The audio keeps the clip's length (silence where the delayed track has none). Returns
  [{"video", "clip_id", "true_offset"}]: what `synclipmae sync --aligned` should find."""
  from data_pipelines import media
  rng = np.random.default_rng(seed)
  offsets = list(range(-max_offset, max_offset + 1))
  offsets += [0] * max(0, num_videos - len(offsets))
  if len(offsets) > num_videos:
    offsets = sorted(rng.choice(offsets, num_videos, replace=False).tolist())
  order = rng.permutation(len(corpus.manifest(split)))
  out = []
  for i, shift in enumerate(offsets):
    clip = corpus.read(split, int(order[i % len(order)]))
    spf = int(clip.samples_per_frame)
    audio = shifted_audio_window(clip.audio_float(), 0, clip.num_frames, shift, 0, spf)
    path = os.path.join(out_dir, f"{i:03d}-{clip.clip_id}-shift{shift:+03d}.mp4")
    media.write_mp4(path, clip.decode_frames(), audio, fps=clip.fps, sample_rate=clip.sample_rate)
    out.append({"video": path, "clip_id": clip.clip_id, "true_offset": int(shift)})
  return out

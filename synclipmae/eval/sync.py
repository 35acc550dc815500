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

import json
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from synclipmae import masking
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


def offset_scores(video: np.ndarray, audio: np.ndarray, context: int, max_offset: int
                  ) -> tuple[np.ndarray, np.ndarray]:
  """Similarity and distance per candidate offset for the `context` frames centred in the window.

  video [W, D], audio [W, D] token sequences of a window of W = max_context + 2 * max_offset frames.
  Returns (similarity [2*max_offset+1], distance [2*max_offset+1]).
  """
  w = len(video)
  first = (w - context) // 2
  v = video[first:first + context]
  v = v / np.linalg.norm(v, axis=-1, keepdims=True)
  a = audio / np.linalg.norm(audio, axis=-1, keepdims=True)
  sims, dists = [], []
  for d in range(-max_offset, max_offset + 1):
    ad = a[first + d:first + d + context]
    sims.append(np.mean(np.sum(v * ad, -1)))
    dists.append(np.mean(np.linalg.norm(v - ad, axis=-1)))
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
  face, mouth = (pipeline.patch_fractions(m, view["patch_size"]) for m in (face_masks, mouth_masks))
  num_keep = masking.num_kept(face.shape[1], view["mask_ratio"])
  return np.asarray(masking.face_aware_keep(None, jnp.asarray(face), num_keep, view["face_bias"],
                                            jnp.asarray(mouth), view["mouth_bias"]))


def evaluate(model, corpus: Corpus, split: str, *, context_frames: int = 5, max_offset: int = 15,
             num_samples: int = 400, contexts: Sequence[int] = (1, 5, 15), batch_size: int = 16,
             margin_frames: int = 2, seed: int = 0, view: dict[str, Any] | None = None) -> dict[str, Any]:
  """Runs the protocol; returns the summary dict written to sync_eval.json (plus raw curves under "_curves").

  view: None encodes every patch of a frame; `bypass2_view(config)` encodes the view pretraining used for z_voc.
  """
  contexts = sorted(set(contexts) | {context_frames})
  window = max(contexts) + 2 * max_offset
  plan = _plan(corpus, split, num_samples, window, max_offset, seed)
  graphdef, state = nnx.split(model)

  @jax.jit
  def embed(state, frames, keep, audio):
    m = nnx.merge(graphdef, state)
    z_voc = m.encode_frames(frames, keep)["z_voc"]
    return z_voc, m.encode_audio(audio, window)

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
    keep = view_keep(view, *(np.concatenate([m[i] for m in masks]) for i in (0, 1)))
    z_voc, tokens = jax.device_get(embed(state, frames, keep, np.stack(audio)))
    z_voc = z_voc.reshape(batch_size, window, -1)
    for i in range(len(plan[b:b + batch_size])):
      offsets.append(chunk[i][2])
      for k in contexts:
        sims, dists = offset_scores(z_voc[i], tokens[i], k, max_offset)
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
      "accuracy_by_context": {str(k): summaries[k][0]["accuracy"] for k in contexts},
      "_curves": {"relative_offsets": list(range(-2 * max_offset, 2 * max_offset + 1)),
                  "mean_similarity": np.nanmean(relative, 0).tolist(),
                  "examples": [(int(t), s.tolist()) for t, s in zip(truth[:4], sims[:4])],
                  "candidates": candidates.tolist(), "predicted": predicted.tolist(), "truth": truth.tolist()},
  }


def evaluate_config(model, corpus: Corpus, config, *, split: str | None = None, context_frames: int | None = None,
                    num_samples: int | None = None) -> dict[str, Any]:
  """`evaluate` with the settings of a pretraining config (eval section, audio margin, seed, bypass-2 view);
  the keyword arguments override the config's."""
  return evaluate(model, corpus, split or config.data.eval_split,
                  context_frames=context_frames or config.eval.context_frames, max_offset=config.eval.max_offset,
                  num_samples=num_samples or config.eval.num_samples,
                  margin_frames=config.model.audio.margin_frames, seed=config.seed, view=bypass2_view(config))


def write_results(result: dict[str, Any], out_dir: str | os.PathLike) -> dict[str, str]:
  """Writes sync_eval.json and sync_eval.png (score vs offset) into `out_dir`."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  os.makedirs(out_dir, exist_ok=True)
  curves = result["_curves"]
  json_path, png_path = os.path.join(out_dir, "sync_eval.json"), os.path.join(out_dir, "sync_eval.png")
  with open(json_path, "w") as f:
    json.dump({k: v for k, v in result.items() if k != "_curves"} | {"curves": curves}, f, indent=1)
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
  fig.savefig(png_path, dpi=110)
  plt.close(fig)
  return {"json": json_path, "plot": png_path}

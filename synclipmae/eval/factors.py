"""Which token carries which factor: linear probes from each token to every ground-truth factor of a corpus.

The synthetic corpus knows every factor of every frame (identity; mouth opening / width / rounding and the viseme;
head pose, blinks, expression), so the paper's central claim — `z_id` holds identity, `z_voc` the speech-driven
mouth, `z_amb` the rest of the motion — can be measured instead of argued. For each token (`z_id`, `z_voc`,
`z_amb`, the audio token) and each factor, a ridge probe on standardised tokens is fitted and scored on frames it
did not see:
  * motion factors (mouth, viseme, pose, blink, expression): two folds split by identity, so a probe never sees
    the test identities (a token that only memorised faces cannot score);
  * identity: two folds split by clip within each identity (unseen clips of known identities).
Continuous factors are scored by R^2 (mean over their columns; per column in `details`), discrete ones by
accuracy (a ridge regression onto one-hot targets, argmax: a linear classifier). Tokens come from
`Pretrained.encode_frames` / `encode_audio`, the inference path every tool uses.

`pose_rel` scores head pose relative to each identity's own mean pose, from tokens centred per identity. The
renderer gives each identity its own face size and height, which the absolute pose's scale and ty carry; across
unseen identities a probe of absolute pose must also guess that offset, which no token of one frame may reveal.
`pose_rel` asks only whether the token follows the head as it moves.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from synclipmae import storage
from synclipmae.eval import probes

TOKENS = ("z_id", "z_voc", "z_amb", "audio")
# name: (per-frame label, kind). Pose is (tx, ty, rotation, scale); mouth is (open, width, round).
FACTORS = {"identity": ("identity", "class"), "mouth": ("mouth", "r2"), "viseme": ("viseme", "class"),
           "pose": ("pose", "r2"), "blink": ("blink", "r2"), "expression": ("expression", "class")}
RELATIVE = ("pose",)  # Also scored relative to each identity's mean, as "pose_rel" (module docstring).
ORDER = ("identity", "mouth", "viseme", "pose", "pose_rel", "blink", "expression")  # Columns of tables and plots.


def collect(pretrained, corpus, split: str, max_clips: int | None = None) -> dict[str, Any]:
  """Per-frame tokens, labels, identity and clip index of a corpus split (up to `max_clips` clips, spread)."""
  indices = corpus.spread(split, max_clips)
  tokens = {k: [] for k in TOKENS}
  labels: dict[str, list[np.ndarray]] = {}
  identity, clip_index = [], []
  for i in indices:
    clip = corpus.read(split, i)
    encoded = pretrained.encode_clip(clip, TOKENS)
    for k in TOKENS:
      tokens[k].append(encoded[k])
    for name, (label, _) in FACTORS.items():
      if label in clip.labels:
        labels.setdefault(name, []).append(np.asarray(clip.labels[label]))
    identity.append(np.full(clip.num_frames, clip.speaker_id))
    clip_index.append(np.full(clip.num_frames, i))
  missing = [n for n in FACTORS if n not in labels or len(labels[n]) != len(identity)]
  return {"tokens": {k: np.concatenate(v).astype(np.float64) for k, v in tokens.items()},
          "labels": {n: np.concatenate(v) for n, v in labels.items() if n not in missing},
          "identity": np.concatenate(identity), "clip": np.concatenate(clip_index), "missing": missing}


def centred(x: np.ndarray, groups: np.ndarray) -> np.ndarray:
  """Rows of x minus the mean of their group's rows (e.g. per identity), as float64."""
  out = np.array(x, np.float64).reshape(len(x), -1)
  for g in np.unique(groups):
    rows = groups == g
    out[rows] -= out[rows].mean(0)
  return out


def _ridge_predict(x_train, y_train, x_test, alpha: float) -> np.ndarray:
  mean, scale = x_train.mean(0), x_train.std(0) + 1e-8
  a, b = (x_train - mean) / scale, (x_test - mean) / scale
  y_mean = y_train.mean(0)
  w = np.linalg.solve(a.T @ a + alpha * len(a) * np.eye(a.shape[1]), a.T @ (y_train - y_mean))
  return b @ w + y_mean


def probe(x: np.ndarray, y: np.ndarray, kind: str, folds: np.ndarray, alpha: float = 1e-3) -> dict[str, Any]:
  """Held-out score of a linear probe x [N, D] -> y [N] or [N, C], over folds (an int per row; each fold is
  tested on by a probe trained on all the others). kind "r2": R^2 per column pooled over folds ({"score": mean,
  "columns": [...]}); kind "class": accuracy ({"score", "chance": the majority class's test accuracy})."""
  y = np.asarray(y)
  if kind == "class":
    classes, codes = np.unique(y, return_inverse=True)
    correct, majority = 0, 0
    for f in np.unique(folds):
      test = folds == f
      onehot = np.eye(len(classes))[codes[~test]]
      predicted = _ridge_predict(x[~test], onehot, x[test], alpha).argmax(-1)
      correct += int(np.sum(predicted == codes[test]))
      majority += int(np.max(np.bincount(codes[test], minlength=len(classes))))
    return {"score": correct / len(y), "chance": majority / len(y)}
  y = y.reshape(len(y), -1).astype(np.float64)
  errors, totals = np.zeros(y.shape[1]), np.zeros(y.shape[1])
  for f in np.unique(folds):
    test = folds == f
    predicted = _ridge_predict(x[~test], y[~test], x[test], alpha)
    errors += ((predicted - y[test]) ** 2).sum(0)
    totals += ((y[test] - y[test].mean(0)) ** 2).sum(0)
  r2 = 1.0 - errors / np.maximum(totals, 1e-12)
  return {"score": float(r2.mean()), "columns": r2.tolist(), "chance": 0.0}


def evaluate(pretrained, corpus, split: str = "heldout", *, max_clips: int | None = None,
             alpha: float = 1e-3) -> dict[str, Any]:
  """The factor matrix of a model on a corpus split: {"matrix": {token: {factor: score}}, "metric", "chance",
  "details", "num_frames", "num_identities", ...}."""
  data = collect(pretrained, corpus, split, max_clips)
  identities = np.unique(data["identity"])
  if len(identities) < 2:
    raise ValueError(f"{corpus.directory}/{split}: factor probes need at least 2 identities, found "
                     f"{len(identities)}")
  by_identity = probes.folds(data["identity"], by="speaker")
  by_clip = probes.folds(data["identity"], data["clip"], by="clip")
  matrix: dict[str, dict[str, float]] = {k: {} for k in TOKENS}
  details: dict[str, dict[str, Any]] = {k: {} for k in TOKENS}
  metric, chance = {}, {}
  for name, y in data["labels"].items():
    kind = FACTORS[name][1]
    folds = by_clip if name == "identity" else by_identity
    if name == "identity":
      y = np.unique(data["identity"], return_inverse=True)[1]
    for token in TOKENS:
      result = probe(data["tokens"][token], y, kind, folds, alpha)
      matrix[token][name] = round(result["score"], 4)
      details[token][name] = result
      chance[name] = round(result["chance"], 4)
    metric[name] = "accuracy" if kind == "class" else "R^2"
  for name in RELATIVE:
    if name in data["labels"]:
      y = centred(data["labels"][name], data["identity"])
      for token in TOKENS:
        result = probe(centred(data["tokens"][token], data["identity"]), y, "r2", by_identity, alpha)
        matrix[token][f"{name}_rel"] = round(result["score"], 4)
        details[token][f"{name}_rel"] = result
      metric[f"{name}_rel"], chance[f"{name}_rel"] = "R^2", 0.0
  return {"matrix": matrix, "metric": metric, "chance": chance, "details": details, "split": split,
          "num_frames": int(len(data["identity"])), "num_identities": int(len(identities)),
          "num_clips": int(len(np.unique(data["clip"]))), "missing_factors": data["missing"],
          "folds": "motion factors: 2 folds by identity; identity: 2 folds by clip within identity; "
                   "pose_rel: tokens and pose centred per identity, 2 folds by identity",
          "alpha": alpha}


def write_results(result: dict[str, Any], out_dir: str | os.PathLike, name: str = "factors") -> dict[str, str]:
  """NAME.json and NAME.png (the token x factor heatmap, R^2 clipped at 0) into `out_dir`."""
  from matplotlib.figure import Figure
  out = storage.output_dir(out_dir)  # Local or a URL (pretraining's closing evaluation of a gs:// workdir).
  json_path = storage.write_json(out / f"{name}.json", result)
  factors = [f for f in ORDER if f in result["metric"]]
  values = np.array([[result["matrix"][t][f] for f in factors] for t in TOKENS])
  fig = Figure(figsize=(1.1 * len(factors) + 1.5, 4.0))
  ax = fig.subplots()
  ax.imshow(np.clip(values, 0, 1), vmin=0, vmax=1, cmap="viridis")
  ax.set_xticks(range(len(factors)), [f"{f}\n({result['metric'][f]})" for f in factors], fontsize=8)
  ax.set_yticks(range(len(TOKENS)), TOKENS)
  for i in range(len(TOKENS)):
    for j in range(len(factors)):
      ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", color="white" if values[i, j] < 0.6 else "k")
  ax.set_title(f"{result['split']}: {result['num_frames']} frames of {result['num_identities']} identities "
               "(chance: " + ", ".join(f"{f} {result['chance'][f]:.2f}" for f in factors if result['chance'][f]) + ")",
               fontsize=8)
  fig.tight_layout()
  return {"json": json_path, "plot": storage.write_figure(fig, out / f"{name}.png")}


def format_matrix(result: dict[str, Any], factors: Sequence[str] | None = None) -> str:
  """The matrix as a markdown table (BENCHMARKS.md rows)."""
  factors = list(factors or [f for f in ORDER if f in result["metric"]])
  lines = ["| token | " + " | ".join(f"{f} ({result['metric'][f]})" for f in factors) + " |",
           "|---|" + "---|" * len(factors)]
  for token in TOKENS:
    lines.append(f"| {token} | " + " | ".join(f"{result['matrix'][token][f]:.2f}" for f in factors) + " |")
  return "\n".join(lines)

"""Linear probes on frozen tokens (MARLIN's protocol): how linearly readable is a label from a token?

Tokens come from `Pretrained.encode_clip`, the inference path every tool uses, and are either averaged over each
clip (`pool="mean"`, one sample per clip: emotion / action recognition) or kept per frame (`pool="frame"`, e.g.
visemes or blinks). A linear layer is trained with optax on the train split's standardised tokens and scored on
the test split:
  * classes (strings, integers): accuracy, macro one-vs-rest AUC, the confusion matrix;
  * multi-label targets (a list of names per clip, CelebV-HQ's actions): mean AUC and macro F1 at 0.5;
  * continuous targets (floats, vectors): R^2 per column and their mean.
Labels come from the corpus (a per-frame label array of the clip record, averaged or voted per clip under mean
pooling, or a per-clip metadata field) or from a CSV / JSON file mapping clip ids to labels. When the train and
test splits are the same, each speaker's clips alternate between training and testing: unseen clips of known
speakers (how identity is probed).

Hand-written rather than scikit-learn's LogisticRegression: the same softmax / sigmoid / least-squares head, one
optimiser and one set of knobs for all three kinds, jitted; scikit-learn computes the metrics.
"""

from __future__ import annotations

import csv
import functools
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from synclipmae import storage

KINDS = ("class", "multilabel", "regression")
TOKENS = ("z_id", "z_voc", "z_amb", "audio")
POOLS = ("mean", "frame")


class LabelError(ValueError):
  """A label that cannot be probed: missing for some clips, of a mixed kind, or unknown to the corpus."""


def read_label_file(path: str | os.PathLike) -> dict[str, Any]:
  """A label file -> {clip_id: label}.

  JSON: an object {clip_id: label}, where a label is a string / number (one class or value), a list of strings
  (multi-label) or a list of numbers (a vector). CSV: a header row whose first column is the clip id; one further
  column is the label; several columns are a multi-hot row (1/0 per named label) when all are 0/1, else a vector.
  """
  path = str(path)
  if path.endswith(".json"):
    with open(path) as f:
      table = json.load(f)
    if not isinstance(table, dict):
      raise LabelError(f"{path}: expected a JSON object mapping clip ids to labels, got {type(table).__name__}")
    return table
  with open(path, newline="") as f:
    rows = list(csv.reader(f))
  if len(rows) < 2 or len(rows[0]) < 2:
    raise LabelError(f"{path}: expected a header (clip_id, label, ...) and at least one row")
  header, body = rows[0], rows[1:]
  bad = [i + 2 for i, r in enumerate(body) if len(r) != len(header)]
  if bad:
    raise LabelError(f"{path}: rows {bad[:5]} do not have the header's {len(header)} columns")
  if len(header) == 2:
    return {r[0]: _number_or_text(r[1]) for r in body}
  values = [[_number_or_text(v) for v in r[1:]] for r in body]
  if all(v in (0, 1) for row in values for v in row):
    return {r[0]: [name for name, v in zip(header[1:], row) if v == 1] for r, row in zip(body, values)}
  return {r[0]: row for r, row in zip(body, values)}


def _number_or_text(value: str):
  try:
    number = float(value)
  except ValueError:
    return value.strip()
  return int(number) if number.is_integer() and "." not in value else number


def kind_of(values: Sequence[Any]) -> str:
  """"class" (strings, integers, booleans), "multilabel" (lists of strings) or "regression" (floats, vectors)."""
  first = values[0]
  if isinstance(first, (list, tuple)) and (not first or isinstance(first[0], str)) and \
      all(isinstance(v, (list, tuple)) for v in values):
    return "multilabel"
  array = np.asarray(values)
  if array.dtype.kind in "USbiu":
    return "class"
  if array.dtype.kind == "f":
    return "regression"
  raise LabelError(f"labels of mixed or unsupported types (first: {first!r})")


def clip_label(clip, name: str, pool: str, label_file: Mapping[str, Any] | None, vocab: Sequence[str] | None):
  """The label of a clip: from the label file, else the clip's per-frame labels (per frame, or the clip's mean /
  most frequent value under mean pooling), else its metadata. None when the clip has none."""
  per_clip = lambda value: [value] * clip.num_frames if pool == "frame" else value
  if label_file is not None:
    value = label_file.get(clip.clip_id)
    return None if value is None else per_clip(value)
  if name in clip.labels:
    frames = np.asarray(clip.labels[name])
    if frames.dtype.kind in "biu" and vocab:  # Integer codes with names: probe (and report) the names.
      frames = np.asarray(vocab)[frames]
    if pool == "frame":
      return frames
    if frames.dtype.kind in "USbiu":
      values, counts = np.unique(frames, return_counts=True)
      return values[counts.argmax()].item()
    return frames.astype(np.float64).mean(0).tolist() if frames.ndim > 1 else float(frames.mean())
  if name == "speaker":
    value = clip.speaker_id
  elif name in clip.metadata:
    value = clip.metadata[name]
  else:
    return None
  return per_clip(value)


def read_labels(corpus, split: str, labels: Sequence[str], pool: str,
                label_file: Mapping[str, Any] | None = None, max_clips: int | None = None) -> dict[str, Any]:
  """The labels of a split's clips that carry every one of `labels`, one row per clip (mean pooling) or per frame:
  {"y": {label: [values]}, "speaker": [N], "clip": [N] (record index), "indices": the clips, "skipped": ids of
  clips without}. Reads no pixels, so a label problem is found before any encoding."""
  if pool not in POOLS:
    raise ValueError(f"pool={pool!r} must be one of {POOLS}")
  indices = corpus.spread(split, max_clips)
  y: dict[str, list[Any]] = {name: [] for name in labels}
  speaker, clip_index, kept, skipped = [], [], [], []
  for i in indices:
    clip = corpus.read(split, i)
    values = {n: clip_label(clip, n, pool, label_file, corpus.label_vocab.get(n)) for n in labels}
    if any(v is None for v in values.values()):
      skipped.append(clip.clip_id)
      continue
    rows = clip.num_frames if pool == "frame" else 1
    for n, v in values.items():
      y[n].extend(list(v) if pool == "frame" else [v])
    speaker.extend([clip.speaker_id] * rows)
    clip_index.extend([i] * rows)
    kept.append(i)
  if not kept:
    raise LabelError(f"{corpus.directory}/{split}: no clip carries the labels {list(labels)} "
                     f"({len(skipped)} clips without)")
  return {"y": y, "speaker": np.asarray(speaker), "clip": np.asarray(clip_index), "indices": kept,
          "skipped": skipped}


def token_sets(spec: str | Sequence[str]) -> list[tuple[str, ...]]:
  """"z_amb,z_voc,z_id+z_amb" (or its comma-split list) -> [("z_amb",), ("z_voc",), ("z_id", "z_amb")]: one
  probe per set, the tokens of a set concatenated."""
  items = spec.split(",") if isinstance(spec, str) else list(spec)
  sets = [tuple(t for t in item.split("+") if t) for item in items if item]
  unknown = sorted({t for group in sets for t in group} - set(TOKENS))
  if not sets or unknown:
    raise ValueError(f"tokens {spec!r}: {'unknown ' + str(unknown) if unknown else 'none given'}; choose from "
                     f"{TOKENS}, '+' to concatenate, ',' between probes")
  return sets


def encode(pretrained, corpus, split: str, indices: Sequence[int], tokens: Sequence[str], pool: str
           ) -> dict[int, dict[str, np.ndarray]]:
  """{record index: {token: [1, D] (mean over the clip's frames) or [T, D]}}, each clip encoded once."""
  encoded = {}
  for i in indices:
    of_clip = pretrained.encode_clip(corpus.read(split, i), tokens)
    encoded[i] = {t: v.astype(np.float64) if pool == "frame" else v.astype(np.float64).mean(0, keepdims=True)
                  for t, v in of_clip.items()}
  return encoded


def encode_targets(train_values: Sequence[Any], test_values: Sequence[Any], kind: str) -> dict[str, Any]:
  """Targets as arrays: class codes over the training classes (test rows of unseen classes dropped), multi-hot
  rows over the training labels, or float matrices."""
  if kind == "class":
    classes = np.unique(np.asarray(train_values).astype(str))
    test = np.asarray(test_values).astype(str)
    known = np.isin(test, classes)
    return {"names": classes.tolist(), "train": np.searchsorted(classes, np.asarray(train_values).astype(str)),
            "test": np.searchsorted(classes, test[known]), "test_rows": known}
  if kind == "multilabel":
    names = sorted({n for v in train_values for n in v})
    hot = lambda values: np.array([[n in set(v) for n in names] for v in values], np.float32)
    return {"names": names, "train": hot(train_values), "test": hot(test_values),
            "test_rows": np.ones(len(test_values), bool)}
  as_matrix = lambda values: np.asarray(values, np.float64).reshape(len(values), -1)
  return {"names": None, "train": as_matrix(train_values), "test": as_matrix(test_values),
          "test_rows": np.ones(len(test_values), bool)}


WEIGHT_DECAYS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)


def _loss(params, inputs, targets, weight_decay, kind: str):
  out = inputs @ params["w"] + params["b"]
  if kind == "class":
    data = optax.softmax_cross_entropy_with_integer_labels(out, targets).mean()
  elif kind == "multilabel":
    data = optax.sigmoid_binary_cross_entropy(out, targets).mean()
  else:
    data = jnp.mean((out - targets) ** 2)
  return data + weight_decay * jnp.sum(params["w"] ** 2)


@functools.partial(jax.jit, static_argnames=("kind", "num_out", "steps", "learning_rate"))
def _train(inputs, targets, weight_decay, key, *, kind: str, num_out: int, steps: int, learning_rate: float):
  """Full-batch Adam on the probe's loss; one compilation per data shape and kind (weight decay is traced)."""
  optimizer = optax.adam(learning_rate)
  params = {"w": 0.01 * jax.random.normal(key, (inputs.shape[1], num_out)), "b": jnp.zeros(num_out)}

  def step(carry, _):
    params, opt_state = carry
    grads = jax.grad(_loss)(params, inputs, targets, weight_decay, kind)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), None

  return jax.lax.scan(step, (params, optimizer.init(params)), None, length=steps)[0][0]


def fit_linear(x: np.ndarray, y: np.ndarray, kind: str, *, weight_decay: float = 1e-3, steps: int = 500,
               learning_rate: float = 0.05, seed: int = 0, num_classes: int | None = None) -> dict[str, np.ndarray]:
  """A linear head x [N, D] -> y, trained full-batch with Adam on standardised inputs (and, for regression,
  standardised targets), with an L2 penalty `weight_decay` on the weights. y: class codes [N] ("class"),
  multi-hot [N, C] ("multilabel") or floats [N, C] ("regression"). Returns the parameters with the scalers."""
  if kind not in KINDS:
    raise ValueError(f"kind={kind!r} must be one of {KINDS}")
  x_mean, x_scale = x.mean(0), x.std(0) + 1e-8
  inputs = jnp.asarray((x - x_mean) / x_scale, jnp.float32)
  if kind == "class":
    num_out, targets, y_mean, y_scale = num_classes or int(y.max()) + 1, jnp.asarray(y, jnp.int32), 0.0, 1.0
  else:
    y_mean, y_scale = (y.mean(0), y.std(0) + 1e-8) if kind == "regression" else (0.0, 1.0)
    num_out, targets = y.shape[1], jnp.asarray((y - y_mean) / y_scale, jnp.float32)
  params = jax.device_get(_train(inputs, targets, jnp.float32(weight_decay), jax.random.key(seed), kind=kind,
                                 num_out=num_out, steps=steps, learning_rate=learning_rate))
  return {"w": np.asarray(params["w"]), "b": np.asarray(params["b"]), "x_mean": x_mean, "x_scale": x_scale,
          "y_mean": np.asarray(y_mean), "y_scale": np.asarray(y_scale)}


def choose_weight_decay(x: np.ndarray, y: np.ndarray, kind: str, fold_ids: np.ndarray,
                        grid: Sequence[float] = WEIGHT_DECAYS, **fit) -> tuple[float, dict[str, float]]:
  """The L2 penalty of `grid` with the best mean validation score over `fold_ids` (an int per training row; each
  fold is scored by a probe trained on the others). Folds follow the test: by speaker when the test speakers are
  unseen, by clip when they are known. Returns (the choice, {penalty: mean score})."""
  num_classes = int(y.max()) + 1 if kind == "class" else None
  scores = {}
  for weight_decay in grid:
    per_fold = []
    for f in np.unique(fold_ids):
      held = fold_ids == f
      if kind == "class" and not np.isin(y[held], y[~held]).any():
        continue
      head = fit_linear(x[~held], y[~held], kind, weight_decay=weight_decay, num_classes=num_classes, **fit)
      per_fold.append(score(predict(head, x[held], kind), y[held], kind)[HEADLINE[kind]] or 0.0)
    scores[weight_decay] = float(np.mean(per_fold)) if per_fold else float("-inf")
  return max(scores, key=scores.get), scores


def predict(head: Mapping[str, np.ndarray], x: np.ndarray, kind: str) -> np.ndarray:
  """Class probabilities [N, C], label probabilities [N, C] or values [N, C] of a fitted head."""
  out = ((x - head["x_mean"]) / head["x_scale"]) @ head["w"] + head["b"]
  if kind == "class":
    return np.asarray(jax.nn.softmax(out, axis=-1))
  if kind == "multilabel":
    return 1.0 / (1.0 + np.exp(-out))
  return out * head["y_scale"] + head["y_mean"]


def score(predicted: np.ndarray, target: np.ndarray, kind: str, names: Sequence[str] | None = None,
          train_target: np.ndarray | None = None) -> dict[str, Any]:
  """The metrics of a kind (scikit-learn): accuracy, macro one-vs-rest AUC, the confusion matrix and the majority
  baseline for classes; mean AUC and macro F1 for multi-label targets; R^2 per column for continuous ones."""
  from sklearn import metrics
  if kind == "class":
    codes = predicted.argmax(-1)
    present = [c for c in range(predicted.shape[1]) if 0 < np.sum(target == c) < len(target)]
    aucs = [metrics.roc_auc_score(target == c, predicted[:, c]) for c in present]
    majority = np.bincount(train_target).argmax() if train_target is not None else np.bincount(target).argmax()
    return {"accuracy": float(np.mean(codes == target)), "macro_auc": float(np.mean(aucs)) if aucs else None,
            "chance": float(np.mean(target == majority)),
            "confusion": metrics.confusion_matrix(target, codes, labels=range(predicted.shape[1])).tolist()}
  if kind == "multilabel":
    usable = [c for c in range(target.shape[1]) if 0 < target[:, c].sum() < len(target)]
    aucs = [metrics.roc_auc_score(target[:, c], predicted[:, c]) for c in usable]
    f1 = metrics.f1_score(target, predicted >= 0.5, average="macro", zero_division=0)
    return {"mean_auc": float(np.mean(aucs)) if aucs else None, "macro_f1": float(f1),
            "auc_by_label": {names[c]: float(a) for c, a in zip(usable, aucs)} if names else None}
  r2 = metrics.r2_score(target, predicted, multioutput="raw_values")
  return {"r2": float(np.mean(r2)), "r2_columns": [float(v) for v in r2]}


HEADLINE = {"class": "accuracy", "multilabel": "mean_auc", "regression": "r2"}


def folds(speaker: np.ndarray, clip: np.ndarray | None = None, *, by: str, count: int = 2) -> np.ndarray:
  """A fold id per row: speakers (by="speaker": the speakers of a fold are unseen by the others) or each speaker's
  clips (by="clip": every speaker in every fold, on different clips) dealt round-robin in sorted order."""
  ids = np.zeros(len(speaker), int)
  for k, name in enumerate(np.unique(speaker)):
    rows = speaker == name
    if by == "speaker":
      ids[rows] = k % count
    else:
      for j, c in enumerate(np.unique(clip[rows])):
        ids[rows & (clip == c)] = j % count
  return ids


def _subset(data: Mapping[str, Any], rows: np.ndarray) -> dict[str, Any]:
  return {**data, "speaker": data["speaker"][rows], "clip": data["clip"][rows],
          "indices": sorted(set(data["clip"][rows].tolist())),
          "y": {n: [v for v, keep in zip(values, rows) if keep] for n, values in data["y"].items()}}


def _features(encoded: Mapping[int, Mapping[str, np.ndarray]], clips: np.ndarray, tokens: Sequence[str]
              ) -> np.ndarray:
  """The rows of `tokens` (concatenated) matching label rows whose record indices are `clips` (each clip's rows
  are contiguous)."""
  return np.concatenate([np.concatenate([encoded[c][t] for t in tokens], -1) for c in dict.fromkeys(clips.tolist())])


def evaluate(pretrained, corpus, labels: Sequence[str], *, tokens: str | Sequence[str] = "z_amb",
             pool: str = "mean", train_split: str = "train", test_split: str = "heldout",
             label_file: Mapping[str, Any] | None = None, kind: str | None = None, max_clips: int | None = None,
             weight_decay: float | None = None, steps: int = 500, learning_rate: float = 0.05,
             seed: int = 0) -> dict[str, Any]:
  """Probe each label from each token set (`token_sets`): {"probes": {"z_amb": {label: {kind, metrics...,
  "weight_decay", "num_train", "num_test", "classes"}}, "z_id+z_amb": {...}}, "pool", ...}. weight_decay None:
  chosen per probe from WEIGHT_DECAYS by 3-fold cross-validation on the training rows, folds by speaker when the
  test speakers are unseen and by clip when they are known (test data never chooses anything)."""
  sets = token_sets(tokens)
  needed = [t for t in TOKENS if any(t in group for group in sets)]
  train = read_labels(corpus, train_split, labels, pool, label_file, max_clips)
  if test_split == train_split:
    train_rows = folds(train["speaker"], train["clip"], by="clip") == 0  # Each speaker's clips alternate.
    train, test = _subset(train, train_rows), _subset(train, ~train_rows)
    held, folds_by = "unseen clips of the same speakers", "clip"
  else:
    test = read_labels(corpus, test_split, labels, pool, label_file, max_clips)
    held, folds_by = f"split {test_split!r}", "speaker"
  kinds, targets = {}, {}
  for name in labels:  # Every label checked before the (slow) encoding.
    kinds[name] = kind or kind_of(train["y"][name])
    targets[name] = encode_targets(train["y"][name], test["y"][name], kinds[name])
    if kinds[name] == "class" and len(targets[name]["names"]) < 2:
      raise LabelError(f"label {name!r} has a single class {targets[name]['names']} in {train_split!r}: nothing "
                       "to probe")
    if not targets[name]["test_rows"].any():
      raise LabelError(f"label {name!r}: no class of the {held} occurs in {train_split!r} (e.g. speakers of "
                       f"disjoint splits); probe one split against itself (train_split = test_split)")
  if test_split == train_split:
    encoded = {train_split: encode(pretrained, corpus, train_split, sorted({*train["indices"], *test["indices"]}),
                                   needed, pool)}
  else:
    encoded = {split: encode(pretrained, corpus, split, data["indices"], needed, pool)
               for data, split in ((train, train_split), (test, test_split))}
  fit = {"steps": steps, "learning_rate": learning_rate, "seed": seed}
  validation = folds(train["speaker"], train["clip"], by=folds_by, count=3)
  probes: dict[str, dict[str, Any]] = {}
  for group in sets:
    x_train = _features(encoded[train_split], train["clip"], group)
    x_test = _features(encoded[test_split], test["clip"], group)
    for name in labels:
      label_kind, target = kinds[name], targets[name]
      chosen, scores = weight_decay, None
      if chosen is None:
        chosen, scores = choose_weight_decay(x_train, target["train"], label_kind, validation, **fit)
      head = fit_linear(x_train, target["train"], label_kind, weight_decay=chosen, **fit)
      predicted = predict(head, x_test[target["test_rows"]], label_kind)
      probes.setdefault("+".join(group), {})[name] = {
          "kind": label_kind, **score(predicted, target["test"], label_kind, target["names"],
                                      target["train"] if label_kind == "class" else None),
          "classes": target["names"], "weight_decay": chosen, "validation": scores,
          "num_train": int(len(x_train)), "num_test": int(target["test_rows"].sum()),
          "num_test_unseen_class": int((~target["test_rows"]).sum())}
  return {"probes": probes, "labels": list(labels), "pool": pool, "train_split": train_split,
          "test_split": test_split, "tested_on": held,
          "clips_without_label": {train_split: len(train["skipped"]), test_split: len(test["skipped"])},
          "hyperparameters": {**fit, "weight_decay": weight_decay, "validation_folds": f"3 by {folds_by}"}}


def headline(probe: Mapping[str, Any]) -> float | None:
  return probe[HEADLINE[probe["kind"]]]


def _describe(p: Mapping[str, Any]) -> str:
  if p["kind"] == "class":
    auc = "n/a" if p["macro_auc"] is None else f"{p['macro_auc']:.3f}"
    return f"accuracy {p['accuracy']:.3f} (majority {p['chance']:.3f}), macro AUC {auc}"
  if p["kind"] == "multilabel":
    auc = "n/a" if p["mean_auc"] is None else f"{p['mean_auc']:.3f}"
    return f"mean AUC {auc}, macro F1 {p['macro_f1']:.3f}"
  return f"R^2 {p['r2']:.3f} (columns " + ", ".join(f"{v:.2f}" for v in p["r2_columns"]) + ")"


def format_results(result: Mapping[str, Any]) -> str:
  lines = [f"{result['pool']} pooling, trained on {result['train_split']!r}, tested on {result['tested_on']}:"]
  for group, by_label in result["probes"].items():
    for name, p in by_label.items():
      lines.append(f"  {name} from {group} ({p['kind']}, {p['num_train']} train / {p['num_test']} test, "
                   f"weight decay {p['weight_decay']:g}): {_describe(p)}")
  return "\n".join(lines)


def draw(ax, result: Mapping[str, Any], group: str, name: str) -> None:
  """One probe of `evaluate`'s result on a matplotlib axis: the confusion matrix (rows: truth, normalised per row,
  with counts) for classes, the AUC per label for multi-label targets, R^2 per column for continuous ones."""
  p = result["probes"][group][name]
  if p["kind"] == "class":
    confusion = np.asarray(p["confusion"], float)
    ax.imshow(confusion / np.maximum(confusion.sum(1, keepdims=True), 1), vmin=0, vmax=1, cmap="Blues")
    ticks = range(len(p["classes"]))
    ax.set_xticks(ticks, p["classes"], rotation=60, fontsize=7)
    ax.set_yticks(ticks, p["classes"], fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), v in np.ndenumerate(confusion):
      if v:
        ax.text(j, i, int(v), ha="center", va="center", fontsize=6)
  else:
    bars = dict(enumerate(p["r2_columns"])) if p["kind"] == "regression" else (p["auc_by_label"] or {})
    ax.bar(range(len(bars)), list(bars.values()))
    ax.set_xticks(range(len(bars)), [str(k) for k in bars], rotation=60, fontsize=7)
    ax.set_ylabel("R^2" if p["kind"] == "regression" else "AUC")
  value = headline(p)
  ax.set_title(f"{name} from {group} ({result['pool']}): {HEADLINE[p['kind']]} "
               + ("n/a" if value is None else f"{value:.3f}"), fontsize=8)


def write_results(result: Mapping[str, Any], out_dir: str | os.PathLike) -> dict[str, str]:
  """probe_TOKENS_LABEL.json and .png (`draw`) per probe into `out_dir`."""
  from matplotlib.figure import Figure
  out = storage.output_dir(out_dir)
  written = {}
  common = {k: v for k, v in result.items() if k != "probes"}
  for group, by_label in result["probes"].items():
    for name, p in by_label.items():
      base = f"probe_{group}_{name}"
      written[f"{group}/{name}"] = storage.write_json(out / f"{base}.json",
                                                      {**common, "tokens": group, "label": name, **p})
      fig = Figure(figsize=(5.0, 4.2))
      draw(fig.subplots(), result, group, name)
      fig.tight_layout()
      storage.write_figure(fig, out / f"{base}.png")
  return written

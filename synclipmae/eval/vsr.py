"""Visual speech recognition (lip reading) from frozen tokens: a small temporal Transformer trained with CTC.

The paper reads speech from `z_voc`; here a head on the frozen per-frame token sequence (or, as baselines, on
`z_id` — which should fail — or on raw mouth-region pixels — what a model without pretraining gets) is trained
with CTC over characters and, on corpora with per-frame viseme labels (the synthetic one), over visemes, and
scored by WER and CER (jiwer) and the viseme error rate (the edit distance of the viseme sequences, also through
jiwer), with greedy and prefix-beam decoding.

Targets: the transcript (a clip's `metadata["transcript"]`, or a {clip_id: text} mapping such as LRS3's text files
give), lower-cased to `CHARS`; the visemes are the clip's per-frame viseme labels with runs collapsed and silence
dropped — the visemes a 25 fps camera sees, the truth a lip reader can be held to. Every output frame emits two
CTC steps, so a transcript may have up to twice as many symbols as the clip has frames.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from synclipmae import storage
from synclipmae.models import vit

CHARS = " 'abcdefghijklmnopqrstuvwxyz"  # Index i + 1 in the CTC vocabulary; 0 is the blank.
INPUTS = ("z_voc", "z_id", "z_amb", "audio", "pixels")
SILENCE = "sil"
STEPS_PER_FRAME = 2
HEAD_FILE, HEAD_INFO = "vsr_head.safetensors", "vsr_head.json"


def normalise_text(text: str) -> str:
  """Lower case, only `CHARS`, single spaces: what WER and CER compare."""
  text = "".join(c for c in text.lower() if c in CHARS)
  return re.sub(" +", " ", text).strip()


def viseme_sequence(frame_visemes: Sequence[str]) -> list[str]:
  """Per-frame viseme names -> the sequence a camera sees: runs collapsed, silence dropped."""
  out, previous = [], None
  for v in frame_visemes:
    if v != SILENCE and v != previous:
      out.append(v)
    previous = v
  return out


def mouth_pixels(clip, size: int = 16) -> np.ndarray:
  """The raw-pixel baseline's input: each frame's mouth box (its mouth mask's bounding box grown by half, the whole
  lower face when the mask is empty), grey, resized to size x size -> float32 [T, size * size] in [0, 1]."""
  from PIL import Image
  frames, masks = clip.decode_frames(), np.asarray(clip.mouth_masks, bool)
  height, width = frames.shape[1:3]
  out = np.zeros((len(frames), size * size), np.float32)
  for t, (frame, mask) in enumerate(zip(frames, masks)):
    rows, cols = np.nonzero(mask)
    if len(rows):
      cy, cx = (rows.min() + rows.max()) / 2, (cols.min() + cols.max()) / 2
      half = 0.75 * max(rows.max() - rows.min() + 1, cols.max() - cols.min() + 1)
    else:
      cy, cx, half = 0.75 * height, 0.5 * width, 0.25 * height
    box = tuple(int(round(v)) for v in (cx - half, cy - half, cx + half, cy + half))
    grey = Image.fromarray(frame).convert("L").crop(box).resize((size, size), Image.BILINEAR)
    out[t] = np.asarray(grey, np.float32).reshape(-1) / 255.0
  return out


def read_transcripts(path: str | os.PathLike) -> dict[str, str]:
  """{clip_id: text} from a JSON object, a CSV (clip_id,text) or a directory of LRS3-style `CLIP_ID.txt` files
  (the text after "Text:" on the first line, or the whole first line)."""
  path = Path(path)
  if path.is_dir():
    out = {}
    for file in sorted(path.glob("*.txt")):
      first = file.read_text(errors="replace").splitlines()[:1]
      out[file.stem] = first[0].split("Text:", 1)[-1].strip() if first else ""
    return out
  if path.suffix == ".json":
    table = json.loads(path.read_text())
    if not isinstance(table, dict):
      raise ValueError(f"{path}: expected a JSON object mapping clip ids to transcripts")
    return {str(k): str(v) for k, v in table.items()}
  import csv
  with open(path, newline="") as f:
    rows = [r for r in csv.reader(f) if r]
  if not rows or len(rows[0]) != 2:
    raise ValueError(f"{path}: expected a CSV with two columns, clip_id and text")
  return {r[0]: r[1] for r in rows[1:] if len(r) == 2}


def plot_posteriors(log_probs: np.ndarray, truth: str, read: str, path: str | os.PathLike) -> None:
  """The character head's CTC posteriors of one clip (time x symbols), titled with the truth and the reading."""
  from matplotlib.figure import Figure
  fig = Figure(figsize=(10, 3.6))
  ax = fig.subplots()
  ax.imshow(np.exp(log_probs).T, aspect="auto", cmap="magma", vmin=0, vmax=1, interpolation="nearest")
  ax.set_yticks(range(len(CHARS) + 1), ["<b>", "_", *CHARS[1:]], fontsize=5)
  ax.set_xlabel(f"CTC step ({STEPS_PER_FRAME} per frame)")
  ax.set_title(f"truth: {truth}\nread:  {read}", fontsize=8, loc="left")
  fig.tight_layout()
  storage.write_figure(fig, storage.path(path))


@dataclasses.dataclass
class Sequences:
  """Per-clip inputs [T, D] and targets of a split."""
  clip_ids: list[str]
  features: list[np.ndarray]
  texts: list[str]
  visemes: list[list[str]] | None  # None when the corpus has no per-frame viseme labels.


def collect(pretrained, corpus, split: str, inputs: str = "z_voc", transcripts: Mapping[str, str] | None = None,
            max_clips: int | None = None) -> Sequences:
  """The inputs and targets of a split's clips that have a transcript (from `transcripts`, else the clip's
  metadata). `inputs`: a token (`Pretrained.encode_clip`) or "pixels" (`mouth_pixels`)."""
  if inputs not in INPUTS:
    raise ValueError(f"inputs={inputs!r} must be one of {INPUTS}")
  indices = corpus.spread(split, max_clips)
  vocab = corpus.label_vocab.get("viseme")
  out = Sequences([], [], [], [] if vocab else None)
  for i in indices:
    clip = corpus.read(split, i)
    text = (transcripts or {}).get(clip.clip_id, None if transcripts else clip.metadata.get("transcript"))
    if not text:
      continue
    features = mouth_pixels(clip) if inputs == "pixels" else pretrained.encode_clip(clip, [inputs])[inputs]
    out.clip_ids.append(clip.clip_id)
    out.features.append(np.asarray(features, np.float32))
    out.texts.append(normalise_text(text))
    if out.visemes is not None:
      out.visemes.append(viseme_sequence([vocab[int(v)] for v in clip.labels["viseme"]]))
  if not out.clip_ids:
    raise ValueError(f"{corpus.directory}/{split}: no clip has a transcript (metadata 'transcript' or the "
                     "transcripts given)")
  return out


class VSRHead(nnx.Module):
  """Per-frame inputs [B, T, D] -> CTC logits over characters [B, 2T, |CHARS|+1] (and visemes, when trained with
  them): a linear embedding, fixed sin-cos time positions, pre-LN Transformer blocks over the valid frames."""

  def __init__(self, in_dim: int, num_visemes: int, *, width: int = 128, depth: int = 2, num_heads: int = 4,
               rngs: nnx.Rngs):
    self.width = width
    self.embed = vit.dense(in_dim, width, rngs=rngs)
    self.blocks = nnx.List([vit.Block(width, num_heads, 4.0, rngs=rngs) for _ in range(depth)])
    self.norm = vit.layer_norm(width, rngs=rngs)
    self.chars = vit.dense(width, STEPS_PER_FRAME * (len(CHARS) + 1), rngs=rngs)
    self.visemes = vit.dense(width, STEPS_PER_FRAME * (num_visemes + 1), rngs=rngs) if num_visemes else None

  def __call__(self, x: jax.Array, valid: jax.Array) -> dict[str, jax.Array]:
    t = x.shape[1]
    positions = vit.sincos_pos_embed_2d(self.width, (1, t))  # Row 0: the column half encodes time.
    h = self.embed(x) + positions[None]
    mask = valid[:, None, :] & jnp.ones((1, t, 1), bool)
    for block in self.blocks:
      h = block(h, mask=mask)
    h = self.norm(h)
    upsample = lambda y: y.reshape(y.shape[0], t * STEPS_PER_FRAME, -1)
    out = {"chars": upsample(self.chars(h))}
    if self.visemes is not None:
      out["visemes"] = upsample(self.visemes(h))
    return out


def _pad(sequences: Sequence[np.ndarray], length: int) -> tuple[np.ndarray, np.ndarray]:
  dim = sequences[0].shape[-1] if sequences[0].ndim > 1 else None
  shape = (len(sequences), length) + ((dim,) if dim else ())
  out = np.zeros(shape, sequences[0].dtype)
  valid = np.zeros((len(sequences), length), bool)
  for i, s in enumerate(sequences):
    out[i, :len(s)] = s[:length]
    valid[i, :len(s)] = True
  return out, valid


def encode_targets(data: Sequences, viseme_names: Sequence[str] | None) -> dict[str, list[np.ndarray]]:
  """CTC label ids (blank = 0) of every clip: characters, and visemes when the head has them."""
  out = {"chars": [np.array([CHARS.index(c) + 1 for c in text], np.int32) for text in data.texts]}
  if viseme_names and data.visemes is not None:
    index = {v: i + 1 for i, v in enumerate(viseme_names)}
    out["visemes"] = [np.array([index[v] for v in seq], np.int32) for seq in data.visemes]
  return out


@dataclasses.dataclass
class Trained:
  """A trained head with what it needs at inference: input standardisation and the viseme vocabulary."""
  head: VSRHead
  info: dict[str, Any]

  @functools.cached_property
  def _log_probs(self):
    graphdef, _ = nnx.split(self.head)
    return jax.jit(lambda s, x, v: jax.tree.map(jax.nn.log_softmax, nnx.merge(graphdef, s)(x, v)))

  def logits(self, features: Sequence[np.ndarray], batch_size: int = 32) -> list[dict[str, np.ndarray]]:
    """CTC log-probabilities {"chars": [2T, |CHARS|+1], "visemes": ...} of each clip's inputs [T, D]."""
    mean, scale = np.asarray(self.info["input_mean"]), np.asarray(self.info["input_scale"])
    length = max(len(f) for f in features)
    fn, state = self._log_probs, nnx.state(self.head)
    out = []
    for start in range(0, len(features), batch_size):
      chunk = [(f - mean) / scale for f in features[start:start + batch_size]]
      x, valid = _pad([c.astype(np.float32) for c in chunk], length)
      x, valid = _pad_batch(x, batch_size), _pad_batch(valid, batch_size)
      result = jax.device_get(fn(state, x, valid))
      for i, f in enumerate(chunk):
        out.append({k: v[i, :len(f) * STEPS_PER_FRAME] for k, v in result.items()})
    return out


def augment(x: jax.Array, valid: jax.Array, key: jax.Array, *, time_masks: int, mask_frames: int,
            feature_drop: float) -> jax.Array:
  """Training-time masking of standardised inputs [B, T, D] (zero is the training mean), as lip readers are
  trained on small corpora (SpecAugment's time masks): `time_masks` spans of 0..`mask_frames` frames per clip
  set to zero, and each input value dropped with probability `feature_drop` (inverted dropout). Why: a head
  without it learns 480 clips by heart in 4000 steps (training loss 0.09 per symbol) and reads no better."""
  batch, frames = x.shape[:2]
  start_key, width_key, drop_key = jax.random.split(key, 3)
  starts = jax.random.randint(start_key, (batch, time_masks, 1), 0, frames)
  widths = jax.random.randint(width_key, (batch, time_masks, 1), 0, mask_frames + 1)
  t = jnp.arange(frames)
  hidden = ((t >= starts) & (t < starts + widths)).any(1) & valid
  x = jnp.where(hidden[..., None], 0.0, x)
  if feature_drop:
    keep = jax.random.bernoulli(drop_key, 1.0 - feature_drop, x.shape)
    x = jnp.where(keep, x / (1.0 - feature_drop), 0.0)
  return x


def _pad_batch(x: np.ndarray, size: int) -> np.ndarray:
  return np.concatenate([x, np.zeros((size - len(x), *x.shape[1:]), x.dtype)]) if len(x) < size else x


def train(data: Sequences, *, width: int = 128, depth: int = 2, num_heads: int = 4, steps: int = 2000,
          batch_size: int = 32, learning_rate: float = 1e-3, weight_decay: float = 0.05, seed: int = 0,
          time_masks: int = 0, mask_frames: int = 10, feature_drop: float = 0.0,
          viseme_names: Sequence[str] | None = None, log_every: int = 200, log=print) -> Trained:
  """Trains a head on `data` (AdamW, cosine decay, CTC on characters plus, with `viseme_names`, on visemes;
  inputs masked by `augment` when `time_masks` or `feature_drop` ask for it)."""
  if time_masks < 0 or mask_frames < 0 or not 0.0 <= feature_drop < 1.0:
    raise ValueError(f"VSR masking: time_masks={time_masks} and mask_frames={mask_frames} must be >= 0 and "
                     f"feature_drop={feature_drop} in [0, 1)")
  features = np.concatenate(data.features)
  mean, scale = features.mean(0), features.std(0) + 1e-6
  use_visemes = bool(viseme_names) and data.visemes is not None
  head = VSRHead(features.shape[-1], len(viseme_names) if use_visemes else 0, width=width, depth=depth,
                 num_heads=num_heads, rngs=nnx.Rngs(seed))
  targets = encode_targets(data, viseme_names if use_visemes else None)
  frames = max(len(f) for f in data.features)
  x, valid = _pad([((f - mean) / scale).astype(np.float32) for f in data.features], frames)
  labels = {k: _pad(v, max(len(s) for s in v) or 1) for k, v in targets.items()}
  too_long = [data.clip_ids[i] for i, (f, t) in enumerate(zip(data.features, targets["chars"]))
              if len(t) > STEPS_PER_FRAME * len(f)]
  if too_long:
    raise ValueError(f"transcripts longer than {STEPS_PER_FRAME} characters per frame cannot be aligned by CTC: "
                     f"clips {too_long[:5]}")
  schedule = optax.warmup_cosine_decay_schedule(0.0, learning_rate, min(100, steps // 10), steps)
  optimizer = nnx.Optimizer(head, optax.adamw(schedule, weight_decay=weight_decay), wrt=nnx.Param)

  @nnx.jit
  def step(head, optimizer, x, valid, labels, key):
    if time_masks or feature_drop:
      x = augment(x, valid, key, time_masks=time_masks, mask_frames=mask_frames, feature_drop=feature_drop)

    def loss_fn(head):
      logits = head(x, valid)
      paddings = 1.0 - jnp.repeat(valid, STEPS_PER_FRAME, axis=1).astype(jnp.float32)
      losses = {k: optax.ctc_loss(logits[k], paddings, ids, 1.0 - ok.astype(jnp.float32))
                for k, (ids, ok) in labels.items()}
      # Per symbol, so long and short clips weigh alike.
      return sum(jnp.mean(l / jnp.maximum(labels[k][1].sum(1), 1)) for k, l in losses.items()), losses
    (loss, losses), grads = nnx.value_and_grad(loss_fn, has_aux=True)(head)
    optimizer.update(head, grads)
    return loss

  rng, key = np.random.default_rng(seed), jax.random.key(seed)
  recent = collections.deque(maxlen=100)  # The last steps' losses (device arrays: reading them would stall dispatch).
  for i in range(1, steps + 1):
    rows = rng.choice(len(x), size=min(batch_size, len(x)), replace=False)
    loss = step(head, optimizer, x[rows], valid[rows], {k: (ids[rows], ok[rows]) for k, (ids, ok) in labels.items()},
                jax.random.fold_in(key, i))
    recent.append(loss)
    if log and (i % log_every == 0 or i == steps):
      log(f"vsr step {i}/{steps} ctc loss per symbol {float(loss):.3f}")
  info = {"input_mean": mean.tolist(), "input_scale": scale.tolist(), "in_dim": int(features.shape[-1]),
          "viseme_names": list(viseme_names) if use_visemes else [], "width": width, "depth": depth,
          "num_heads": num_heads, "chars": CHARS, "steps_per_frame": STEPS_PER_FRAME,
          "training": {"steps": steps, "batch_size": batch_size, "learning_rate": learning_rate,
                       "weight_decay": weight_decay, "seed": seed, "num_clips": len(x),
                       "time_masks": time_masks, "mask_frames": mask_frames, "feature_drop": feature_drop,
                       "final_loss": float(np.mean(jax.device_get(list(recent)))),
                       "final_loss_steps": len(recent)}}
  return Trained(head, info)


def greedy_decode(log_probs: np.ndarray) -> list[int]:
  """Best path: the most likely symbol per step, repeats collapsed, blanks dropped."""
  best = np.asarray(log_probs).argmax(-1)
  return [int(s) for i, s in enumerate(best) if s != 0 and (i == 0 or s != best[i - 1])]


def beam_decode(log_probs: np.ndarray, beam_width: int = 8) -> list[int]:
  """CTC prefix beam search (no language model): the most likely labelling summed over its alignments, kept to
  the `beam_width` best prefixes per step. Hand-written: ~25 lines, where a library (pyctcdecode, torchaudio's
  flashlight decoder) would add a dependency for the same search."""
  log_probs = np.asarray(log_probs, np.float64)
  beams = {(): (0.0, -np.inf)}  # prefix -> (log P(ending in blank), log P(ending in its last symbol))
  for frame in log_probs:
    grown: dict[tuple[int, ...], list[float]] = {}

    def add(prefix, which, value):
      scores = grown.setdefault(prefix, [-np.inf, -np.inf])
      scores[which] = np.logaddexp(scores[which], value)

    for prefix, (blank, last) in beams.items():
      total = np.logaddexp(blank, last)
      add(prefix, 0, total + frame[0])
      if prefix:
        add(prefix, 1, last + frame[prefix[-1]])  # The last symbol repeated: no new symbol.
      for s in np.argsort(frame[1:])[-beam_width:] + 1:
        s = int(s)
        # A symbol equal to the prefix's last is new only after a blank.
        add(prefix + (s,), 1, (blank if prefix and s == prefix[-1] else total) + frame[s])
    beams = dict(sorted(((p, tuple(v)) for p, v in grown.items()), key=lambda kv: -np.logaddexp(*kv[1]))
                 [:beam_width])
  return list(max(beams.items(), key=lambda kv: np.logaddexp(*kv[1]))[0])


def evaluate(trained: Trained, data: Sequences, decode: str = "greedy", beam_width: int = 8,
             examples: int = 8, logits: Sequence[Mapping[str, np.ndarray]] | None = None) -> dict[str, Any]:
  """WER and CER of the character head, and the viseme error rate of the viseme head, on `data` (jiwer).
  `logits`: the head's output on `data` when the caller already has it."""
  import jiwer
  if decode not in ("greedy", "beam"):
    raise ValueError(f"decode={decode!r} must be 'greedy' or 'beam'")
  decoder = greedy_decode if decode == "greedy" else (lambda lp: beam_decode(lp, beam_width))
  logits = trained.logits(data.features) if logits is None else logits
  hypotheses = [normalise_text("".join(CHARS[i - 1] for i in decoder(l["chars"]))) for l in logits]
  # jiwer rejects empty references; every transcript here has characters.
  result = {"decode": decode, "num_clips": len(data.clip_ids),
            "wer": float(jiwer.wer(data.texts, [h or "-" for h in hypotheses])),
            "cer": float(jiwer.cer(data.texts, hypotheses)),
            "examples": [{"clip_id": c, "truth": t, "read": h} for c, t, h in
                         list(zip(data.clip_ids, data.texts, hypotheses))[:examples]]}
  names = trained.info["viseme_names"]
  if names and data.visemes is not None:
    read = [[names[i - 1] for i in decoder(l["visemes"])] for l in logits]
    result["viseme_error_rate"] = viseme_error_rate(data.visemes, read)
  return result


def viseme_error_rate(truth: Sequence[Sequence[str]], read: Sequence[Sequence[str]]) -> float:
  """The edit distance of the viseme sequences over the truth's length (jiwer's WER on them), over the clips whose
  truth has a viseme (jiwer rejects empty references; an empty reading counts as one wrong viseme)."""
  import jiwer
  usable = [i for i, t in enumerate(truth) if t]
  return float(jiwer.wer([" ".join(truth[i]) for i in usable], [" ".join(read[i]) or "-" for i in usable]))


def write_evaluation(trained: Trained, data: Sequences, split: str, out: str | os.PathLike, *,
                     decode: str = "greedy", beam_width: int = 8) -> tuple[str, dict[str, Any]]:
  """Evaluates and writes OUT/vsr_eval_SPLIT_DECODE.json and .png (the posteriors of the first clip); returns the
  JSON's path and the result it holds."""
  logits = trained.logits(data.features)
  result = {"split": split, "inputs": trained.info.get("inputs"),
            **evaluate(trained, data, decode, beam_width, logits=logits)}
  out, base = storage.output_dir(out), f"vsr_eval_{split}_{decode}"
  first = result["examples"][0]
  plot_posteriors(logits[0]["chars"], first["truth"], first["read"], out / f"{base}.png")
  return storage.write_json(out / f"{base}.json", result), result


def format_evaluation(result: Mapping[str, Any]) -> str:
  ver = f", viseme error rate {result['viseme_error_rate']:.1%}" if "viseme_error_rate" in result else ""
  lines = [f"{result['inputs']} on {result['split']} ({result['num_clips']} clips, {result['decode']} decoding): "
           f"WER {result['wer']:.1%}, CER {result['cer']:.1%}{ver}"]
  for e in result["examples"][:3]:
    lines.append(f"  truth: {e['truth']}\n  read:  {e['read']}")
  return "\n".join(lines)


def save(trained: Trained, out: str | os.PathLike) -> Path:
  from safetensors.numpy import save_file

  from synclipmae.export import flat_weights
  out = Path(out)
  out.mkdir(parents=True, exist_ok=True)
  save_file(flat_weights(trained.head), str(out / HEAD_FILE))
  (out / HEAD_INFO).write_text(json.dumps(trained.info, indent=1))
  return out


def load(path: str | os.PathLike) -> Trained:
  """A head written by `save` (its directory)."""
  from synclipmae.pretrained import checkpoint_files
  path = Path(path)
  if not (path / HEAD_INFO).is_file():
    raise FileNotFoundError(f"{path}: no {HEAD_INFO}; not a VSR head written by `synclipmae train-vsr`")
  info = json.loads((path / HEAD_INFO).read_text())
  head = VSRHead(info["in_dim"], len(info["viseme_names"]), width=info["width"], depth=info["depth"],
                 num_heads=info["num_heads"], rngs=nnx.Rngs(0))
  source = checkpoint_files.TensorSource.open(path / HEAD_FILE)
  graphdef, state = nnx.split(head)
  flat = [(key, variable.replace(value=jnp.asarray(source.take("/".join(map(str, key)), tuple(variable.shape)))))
          for key, variable in nnx.to_flat_state(state)]
  return Trained(nnx.merge(graphdef, nnx.from_flat_state(flat)), info)

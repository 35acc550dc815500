"""Which token carries the mouth? Linear probes of a pretrained checkpoint on the synthetic corpus's mouth state.

    python experiments/probe_tokens.py --workdir=runs/demo/run [--split=heldout] [--window=32]

Encodes windows of held-out clips the way `eval-sync` does (z_voc, z_id, z_amb from the deterministic bypass-2
view; the audio tokens from the clip's own, unshifted audio) and fits a ridge regression from each token to the
true mouth state (open, width, round), two folds split by identity. Held-out R^2 per channel says which side of
the sync score is the weak one: `experiments/sync_ceiling.py --noise` turns an R^2 into the K=5 accuracy a reader
that good would reach. z_id and z_amb are the controls (the mouth should not be in them). Results: BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import numpy as np
from flax import nnx

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from synclipmae.data.corpus import Corpus  # noqa: E402
from synclipmae.eval import sync  # noqa: E402
from synclipmae.train.checkpoint import load_model  # noqa: E402

TOKENS = ("z_voc", "audio", "z_id", "z_amb")


def ridge_r2(x: np.ndarray, y: np.ndarray, groups: np.ndarray, alpha: float = 1.0) -> np.ndarray:
  """Held-out R^2 per output column of a ridge regression, two folds split by `groups` (identities)."""
  unique = np.unique(groups)
  fold = np.isin(groups, unique[::2])
  errors, totals = 0.0, 0.0
  for test in (fold, ~fold):
    xtr, ytr = x[~test], y[~test]
    mx, my = xtr.mean(0), ytr.mean(0)
    a = xtr - mx
    w = np.linalg.solve(a.T @ a + alpha * len(a) * np.eye(x.shape[1]), a.T @ (ytr - my))
    pred = (x[test] - mx) @ w + my
    errors = errors + ((pred - y[test]) ** 2).sum(0)
    totals = totals + ((y[test] - y[test].mean(0)) ** 2).sum(0)
  return 1.0 - errors / totals


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--split", default=None)
  parser.add_argument("--window", type=int, default=32)
  parser.add_argument("--alpha", type=float, default=1e-3)
  args = parser.parse_args()
  model, config, step = load_model(args.workdir)
  corpus = Corpus(config.data.dir)
  split = args.split or config.data.eval_split
  view, margin, w = sync.bypass2_view(config), config.model.audio.margin_frames, args.window
  graphdef, state = nnx.split(model)

  @jax.jit
  def embed(state, frames, keep, audio):
    m = nnx.merge(graphdef, state)
    out = m.encode_frames(frames, keep)
    return {"z_voc": out["z_voc"], "z_id": out["z_id"], "z_amb": out["z_amb"], "audio": m.encode_audio(audio, w)}

  tokens, mouths, groups = {k: [] for k in TOKENS}, [], []
  for index in range(len(corpus.manifest(split))):
    clip = corpus.read(split, index)
    audio, spf = clip.audio_float(), int(clip.samples_per_frame)
    for start in range(0, clip.num_frames - w + 1, w):
      frames = clip.decode_frames(start, start + w).astype(np.float32) / 255.0
      keep = sync.view_keep(view, clip.face_masks[start:start + w], clip.mouth_masks[start:start + w])
      window_audio = sync.shifted_audio_window(audio, start, w, 0, margin, spf)[None]
      out = jax.device_get(embed(state, frames, keep, window_audio))
      for k in TOKENS:
        tokens[k].append(out[k].reshape(w, -1))
      mouths.append(clip.labels["mouth"][start:start + w])
      groups.append(np.full(w, clip.metadata["identity"]))
  y, groups = np.concatenate(mouths).astype(np.float64), np.concatenate(groups)
  print(f"{args.workdir} step {step}, {split}: {len(y)} frames of {len(np.unique(groups))} identities; "
        f"ridge R^2 of the mouth state (open / width / round), 2 folds by identity")
  for k in TOKENS:
    r2 = ridge_r2(np.concatenate(tokens[k]).astype(np.float64), y, groups, args.alpha)
    print(f"  {k:6s} " + " / ".join(f"{v:.3f}" for v in r2))


if __name__ == "__main__":
  main()

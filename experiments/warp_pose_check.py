"""Does the warp decoder's pose head read head pose? Its predictions against the synthetic corpus's true poses.

    python experiments/warp_pose_check.py --model=RUN_OR_EXPORT [--data=runs/demo/corpus] [--split=validation]

For a model trained with `model.ambient_pose` (synclipmae/warp.py): per pose component (tx, ty, rotation, log
scale) the correlation of the head's prediction from z_amb with the truth and the two spreads, over every 4th clip
of the split; then, for pairs of clips of one speaker (as in training: the reference from the other clip of the
pair), the pose-warp loss (losses.pose_warp_loss, face outside the mouth, first 32 frames) with zero poses, the
predicted poses and the true poses: how much of the face the learnt poses explain, and how much exact ones would.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # The repo root.

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from synclipmae import losses  # noqa: E402
from synclipmae.data.corpus import Corpus  # noqa: E402
from synclipmae.inference import load_pretrained  # noqa: E402

COMPONENTS = ("tx", "ty", "rotation", "log scale")


def true_pose(pose: np.ndarray) -> np.ndarray:
  """The renderer's (tx, ty, rot, scale) -> the head's parametrisation (tx, ty, rot, log scale)."""
  return np.c_[pose[:, :3], np.log(pose[:, 3])]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", required=True)
  parser.add_argument("--data", default="runs/demo/corpus")
  parser.add_argument("--split", default="validation")
  parser.add_argument("--frames", type=int, default=32)
  args = parser.parse_args()
  pretrained, corpus = load_pretrained(args.model), Corpus(args.data)
  if not pretrained.has_warp_decoder:
    raise SystemExit(f"{args.model}: no warp decoder (trained without model.ambient_pose=True)")
  predict = lambda z: np.asarray(pretrained.model.pose(jnp.asarray(z)))

  def clip_poses(index):
    clip = corpus.read(args.split, index)
    frames = clip.decode_frames()
    z_amb = pretrained.encode_frames(frames, clip.face_masks, clip.mouth_masks)["z_amb"]
    return clip, frames, predict(z_amb), true_pose(np.asarray(clip.labels["pose"]))

  entries = corpus.manifest(args.split)
  predicted, truth = zip(*[clip_poses(i)[2:] for i in range(0, len(entries), 4)])
  predicted, truth = np.concatenate(predicted), np.concatenate(truth)
  print(f"pose head vs truth ({args.split}, {len(truth)} frames):")
  print("| component | correlation | predicted spread | true spread |\n|---|---|---|---|")
  for c, name in enumerate(COMPONENTS):
    r = np.corrcoef(predicted[:, c], truth[:, c])[0, 1]
    print(f"| {name} | {r:.2f} | {predicted[:, c].std():.4f} | {truth[:, c].std():.4f} |")

  speakers = np.array([e["speaker_id"] for e in entries])
  results = {"zero": [], "predicted": [], "true": []}
  n = args.frames
  for speaker in np.unique(speakers):
    a, b = np.flatnonzero(speakers == speaker)[:2]
    (clip_a, frames_a, pred_a, true_a), (_, frames_b, pred_b, true_b) = clip_poses(a), clip_poses(b)
    target = jnp.asarray(frames_a[:n] / 255.0, jnp.float32)
    reference = jnp.asarray(frames_b[:n] / 255.0, jnp.float32)
    weights = jnp.asarray(clip_a.face_masks[:n] & ~clip_a.mouth_masks[:n], jnp.float32)
    for name, (p, q) in {"zero": (0 * pred_a, 0 * pred_b), "predicted": (pred_a, pred_b),
                         "true": (true_a, true_b)}.items():
      results[name].append(float(losses.pose_warp_loss(target, reference, jnp.asarray(p[:n]), jnp.asarray(q[:n]),
                                                       weights)))
  print(f"\npose-warp loss, clip pairs of {len(results['zero'])} speakers (lower is better; 0 = exact):")
  print(" | ".join(f"{k} poses {np.mean(v):.3f}" for k, v in results.items()))


if __name__ == "__main__":
  main()

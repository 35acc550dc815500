"""Can a linear appearance model dub? The mouth region's change as a linear function of the driver's change.

    python experiments/dub_linear.py --model=runs/ablations/full_s0 [--max_clips=120] [--num_pairs=16]

A cheap alternative to a decoder that draws mouths: fitted by ridge regression on pairs of frames of the same
training clip, the change of the mouth-region pixels between the two frames as a linear function of the change of
the driving token (z_voc, or the audio token of the second frame against z_voc of the first; one map for both). A
dub is then the target frame plus the map applied to (driver of B at t - z_voc of A at t), inside the region any
training frame's mouth region covers. `--driver=mouth` fits and applies the same model to the renderer's true mouth
parameters (opening, width, rounding): an oracle for the tokens, so it bounds every linear appearance model of this
kind (the warp decoder's `model.driving_appearance` is one). `--fit_on=target` fits one map per pair on the target
clip's own frames instead (it then knows the speaker's mouth position and colours). Scored as `synclipmae eval-dub`
scores dubs: mouth-region PSNR against the corpus's render of A with B's mouth track, beside the undubbed target's,
on pairs of --split (`synclipmae.eval.dubbing.plan`, the same pairs). Results: BENCHMARKS.md ("Dubbing").
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from synclipmae import dubbing  # noqa: E402
from synclipmae.commands.eval_factors import default_corpus  # noqa: E402
from synclipmae.data.corpus import Corpus  # noqa: E402
from synclipmae.eval import dubbing as eval_dubbing  # noqa: E402
from synclipmae.inference import load_pretrained  # noqa: E402


def fit_ridge(x: np.ndarray, y: np.ndarray, weight_decay: float) -> np.ndarray:
  """W minimising |x W - y|^2 / N + weight_decay |W|^2 (no intercept: a zero change draws no change)."""
  gram = x.T @ x / len(x) + weight_decay * np.eye(x.shape[1])
  return np.linalg.solve(gram, x.T @ y / len(x))


def frame_pair_fit(driver: np.ndarray, pixels: np.ndarray, clip: np.ndarray, num_pairs: int, weight_decay: float,
                   audio: np.ndarray | None = None) -> np.ndarray:
  """The ridge map from a driver's change to the pixels' change over random pairs of frames of the same clip (clip:
  each frame's clip, contiguous); with `audio`, also from (audio token of the second frame - driver of the first)."""
  rng = np.random.default_rng(0)
  rows = rng.integers(len(pixels), size=num_pairs)
  other = dubbing._same_clip_other_frames(rng, clip, rows)
  change = pixels[other] - pixels[rows]
  x, y = driver[other] - driver[rows], change
  if audio is not None:
    x, y = np.concatenate([x, audio[other] - driver[rows]]), np.concatenate([change, change])
  return fit_ridge(x, y, weight_decay)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", required=True, help="an export directory or a pretraining workdir")
  parser.add_argument("--data", help="corpus (default: the model's)")
  parser.add_argument("--driver", default="tokens", choices=("tokens", "mouth"),
                      help="tokens: z_voc / audio tokens; mouth: the renderer's true mouth parameters (oracle)")
  parser.add_argument("--fit_on", default="training", choices=("training", "target"),
                      help="training: one map from training clips; target: one per pair, from the target clip")
  parser.add_argument("--max_clips", type=int, default=120, help="training clips the map is fitted on")
  parser.add_argument("--frame_pairs", type=int, default=40000)
  parser.add_argument("--weight_decay", type=float, default=1e-3)
  parser.add_argument("--split", default="validation")
  parser.add_argument("--num_pairs", type=int, default=16)
  args = parser.parse_args()

  pretrained = load_pretrained(args.model)
  corpus = Corpus(args.data or default_corpus(pretrained))
  as_float = lambda frames, region: frames[:, region].reshape(len(frames), -1).astype(np.float32) / 255
  mouth_of = lambda clip: np.asarray(clip.labels["mouth"], np.float32)
  if args.fit_on == "training":
    data = dubbing.training_set(pretrained, corpus, "train", max_clips=args.max_clips, log=None)
    region = dubbing.region_masks(data.mouth_masks, data.grow).any(0)  # [S, S]: every training mouth region.
    if args.driver == "mouth":
      mouth = np.concatenate([mouth_of(corpus.read("train", i)) for i in corpus.spread("train", args.max_clips)])
      weights = frame_pair_fit(mouth, as_float(data.frames, region), data.clip, args.frame_pairs, args.weight_decay)
    else:
      weights = frame_pair_fit(data.tokens["z_voc"], as_float(data.frames, region), data.clip, args.frame_pairs,
                               args.weight_decay, audio=data.tokens["audio"])

  drivings = ("mouth",) if args.driver == "mouth" else ("audio", "video")
  psnr = {k: [] for k in (*drivings, "undubbed")}
  for pair in eval_dubbing.plan(corpus, args.split, args.num_pairs):
    case = eval_dubbing.read_pair(corpus, args.split, pair)
    a, t = case["a"], case["num_frames"]
    frames, truth = (case[k].astype(np.float32) / 255 for k in ("frames", "truth"))
    psnr["undubbed"].append(eval_dubbing.region_psnr(frames, truth, case["region"]))
    wanted = ("z_voc", "audio") if args.fit_on == "target" else ("z_voc",)  # A's audio only to fit A's own map.
    tokens = None if args.driver == "mouth" else pretrained.encode_clip(a, wanted)
    own = mouth_of(a) if args.driver == "mouth" else tokens["z_voc"]
    if args.fit_on == "target":  # All of A's frames (not only the T dubbed), one clip.
      region = dubbing.region_masks(a.mouth_masks, dubbing.DEFAULT_GROW).any(0)
      weights = frame_pair_fit(own, as_float(a.decode_frames(), region), np.zeros(a.num_frames, int),
                               args.frame_pairs, args.weight_decay, audio=None if tokens is None else tokens["audio"])
    if args.driver == "mouth":
      deltas = {"mouth": mouth_of(case["b"])[:t] - own[:t]}
    else:
      driver = pretrained.encode_clip(case["b"], ("z_voc", "audio"))
      deltas = {"audio": driver["audio"][:t] - own[:t], "video": driver["z_voc"][:t] - own[:t]}
    for kind, delta in deltas.items():
      dub = frames.copy()
      dub[:, region] = np.clip(frames[:, region] + (delta @ weights).reshape(t, -1, 3), 0.0, 1.0)
      psnr[kind].append(eval_dubbing.region_psnr(dub, truth, case["region"]))
  floor = np.mean(psnr["undubbed"])
  fitted = (f"{args.max_clips} training clips" if args.fit_on == "training" else "each pair's target clip")
  print(f"{args.model}, driver {args.driver}, {len(psnr['undubbed'])} {args.split} pairs; fitted on "
        f"{args.frame_pairs} frame pairs of {fitted}:")
  print(f"  undubbed target: mouth-region PSNR {floor:.2f} dB")
  for kind in drivings:
    print(f"  {kind}-driven linear dub: {np.mean(psnr[kind]):.2f} dB ({np.mean(psnr[kind]) - floor:+.2f})")


if __name__ == "__main__":
  main()

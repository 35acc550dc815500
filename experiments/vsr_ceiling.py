"""How well could any lip reader of these inputs do? A per-frame viseme reader that is *told the alignment*.

    python experiments/vsr_ceiling.py --model=runs/ablations/full_s1 --inputs=z_voc [--context=2] [--data=CORPUS]
    python experiments/vsr_ceiling.py --model=runs/ablations/full_s1 --inputs=mouth --quadratic
    python experiments/vsr_ceiling.py --model=runs/ablations/full_s1 --inputs=pixels --centre_clips

The CTC head of `synclipmae train-vsr` learns from transcripts alone. The synthetic corpus also knows each frame's
viseme, so a linear classifier fitted on the training clips' frames (each frame's inputs with `--context` frames
either side) with those labels (`probes.fit_linear`), read frame by frame on --split (runs collapsed, silence
dropped, as `vsr.viseme_sequence` makes the truth; also without its one-frame runs), gives the viseme error rate of
a reader that never has to find the alignment: a yardstick for the CTC head on the same inputs, and a first look at
whether the inputs carry the visemes at all. `--inputs=mouth` reads the renderer's own mouth parameters (opening,
width, rounding per frame: everything the rendered mouth shows of speech), so its error rate bounds every reader of
the video of this corpus, however good its tokens; `--quadratic` adds the products of the inputs (for small inputs
such as these); `--centre_clips` subtracts each clip's mean input first (per-utterance mean normalisation, as
speech front ends do: it removes what is constant over a clip, e.g. a speaker's skin and lip colour). A reader of
real video never gets these labels; this is a diagnostic, not a result. Also printed: its per-frame accuracy and
that of always answering the most frequent viseme. Results: BENCHMARKS.md ("Lip reading").
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from synclipmae.commands.eval_factors import default_corpus  # noqa: E402
from synclipmae.data.corpus import Corpus  # noqa: E402
from synclipmae.eval import probes, vsr  # noqa: E402
from synclipmae.inference import load_pretrained  # noqa: E402


def with_context(features: np.ndarray, context: int) -> np.ndarray:
  """[T, D] -> [T, (2 * context + 1) * D]: each frame with its neighbours (edge frames repeated)."""
  padded = np.pad(features, ((context, context), (0, 0)), mode="edge")
  return np.concatenate([padded[i:i + len(features)] for i in range(2 * context + 1)], axis=1)


def drop_short_runs(frames: np.ndarray, shortest: int) -> np.ndarray:
  """Per-frame labels without the runs shorter than `shortest` frames (one-frame flickers of a frame reader)."""
  starts = np.flatnonzero(np.diff(frames, prepend=-1))
  lengths = np.diff(np.append(starts, len(frames)))
  return np.repeat(frames[starts], lengths)[np.repeat(lengths >= shortest, lengths)]


def quadratic(x: np.ndarray) -> np.ndarray:
  """[N, D] -> [N, D + D (D + 1) / 2]: the inputs and their pairwise products."""
  rows, cols = np.triu_indices(x.shape[1])
  return np.concatenate([x, x[:, rows] * x[:, cols]], axis=1)


def frame_labels(corpus: Corpus, split: str, clip_ids: list[str], names: tuple[str, ...]) -> list[dict]:
  """The per-frame labels `names` of each clip (one read of each)."""
  return [{n: np.asarray(corpus.read(split, i).labels[n]) for n in names} for i in corpus.find(clip_ids, split)]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", required=True, help="an export directory or a pretraining workdir")
  parser.add_argument("--data", help="corpus (default: the model's)")
  parser.add_argument("--inputs", default="z_voc", choices=vsr.INPUTS + ("mouth",),
                      help="what the reader sees; mouth: the renderer's true mouth parameters")
  parser.add_argument("--context", type=int, default=2, help="frames either side given to the classifier")
  parser.add_argument("--split", default="validation")
  parser.add_argument("--quadratic", action="store_true", help="add the pairwise products of the inputs")
  parser.add_argument("--weight_decay", type=float, default=1e-3)
  parser.add_argument("--centre_clips", action="store_true",
                      help="subtract each clip's mean input first (per-utterance mean normalisation)")
  args = parser.parse_args()

  pretrained = load_pretrained(args.model)
  corpus = Corpus(args.data or default_corpus(pretrained))
  names = corpus.label_vocab["viseme"]
  data = {s: vsr.collect(pretrained, corpus, s, "pixels" if args.inputs == "mouth" else args.inputs)
          for s in ("train", args.split)}
  wanted = ("viseme", "mouth") if args.inputs == "mouth" else ("viseme",)
  read_labels = {s: frame_labels(corpus, s, data[s].clip_ids, wanted) for s in data}
  labels = {s: [v["viseme"].astype(np.int64) for v in read_labels[s]] for s in data}
  if args.inputs == "mouth":
    for s in data:
      data[s].features = [v["mouth"].astype(np.float32) for v in read_labels[s]]
  if args.centre_clips:  # What stays constant over a clip (the speaker's look, lighting) says nothing of visemes.
    for split in data:
      data[split].features = [f - f.mean(0) for f in data[split].features]
  expand = quadratic if args.quadratic else (lambda x: x)
  features = lambda f: expand(with_context(f, args.context))
  x = np.concatenate([features(f) for f in data["train"].features])
  y = np.concatenate(labels["train"])
  head = probes.fit_linear(x, y, "class", weight_decay=args.weight_decay, num_classes=len(names))
  truth = data[args.split].visemes  # Each clip's per-frame visemes, runs collapsed and silence dropped.
  read, steady, correct, frames = [], [], 0, 0
  for clip_features, frame_truth in zip(data[args.split].features, labels[args.split]):
    best = probes.predict(head, features(clip_features), "class").argmax(-1)
    correct, frames = correct + int((best == frame_truth).sum()), frames + len(best)
    read.append(vsr.viseme_sequence([names[v] for v in best]))
    steady.append(vsr.viseme_sequence([names[v] for v in drop_short_runs(best, 2)]))
  ver, ver_steady = vsr.viseme_error_rate(truth, read), vsr.viseme_error_rate(truth, steady)
  majority = np.bincount(np.concatenate(labels[args.split])).max() / frames
  what = (f"{args.inputs}{' (quadratic)' if args.quadratic else ''}{', centred per clip' if args.centre_clips else ''}"
          f", context {args.context}")
  print(f"{what}, {args.split} ({len(truth)} clips, {frames} frames): per-frame accuracy "
        f"{correct / frames:.1%} (most frequent viseme {majority:.1%}); viseme error rate, frame by frame "
        f"{ver:.1%}, without one-frame runs {ver_steady:.1%}")
  print(f"  truth: {' '.join(truth[0])}\n  read:  {' '.join(read[0])}")


if __name__ == "__main__":
  main()

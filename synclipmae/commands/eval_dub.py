"""`synclipmae eval-dub --model=DUB_MODEL [--split=heldout]`: dubbing scored against the ground truth.

For pairs (clip A, clip B) of different identities, A is dubbed with B's audio (audio-driven) and with B's z_voc
(video-driven) by `synclipmae.dubbing` (as `synclipmae dub` does), and compared with the synthetic corpus's render of
A's identity and motion with B's mouth track: mouth-region PSNR / SSIM (and the undubbed target's, the floor), sync
of the dub with B's audio as `synclipmae sync --aligned` finds it (|offset| <= 1 counts as in sync), and the cosine
of z_id between dub and target (synclipmae/eval/dubbing.py). Writes dubbing.json, dubbing.png and side-by-side mp4s
(target | audio-driven | video-driven | truth, with B's audio) into --out. Choose settings on --split=validation;
report --split=heldout.

  synclipmae eval-dub --model=runs/demo/dub_model --split=heldout --num_pairs=48
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from absl import flags


def define_flags() -> None:
  flags.DEFINE_string("model", None, "A model fine-tuned by `synclipmae finetune-dub` (any model for "
                      "--mode=retrieve).", required=True)
  flags.DEFINE_string("data", None, "The synthetic corpus (default: the one the model was fine-tuned on).")
  flags.DEFINE_string("split", "heldout", "Split to draw the pairs from.")
  flags.DEFINE_integer("num_pairs", 32, "Pairs to dub (each both ways: audio- and video-driven).")
  flags.DEFINE_integer("num_videos", 3, "Side-by-side mp4s of the first pairs.")
  flags.DEFINE_enum("mode", "retrieve", ["replace", "residual", "retrieve"], "The decoder's drawing pasted whole "
                    "(replace) or as a change (residual), or the target's own mouths retrieved by the driving "
                    "token (retrieve; no fine-tuned decoder needed): synclipmae/dubbing.py.")
  flags.DEFINE_integer("seed", 0, "Which pairs are drawn.")
  flags.DEFINE_integer("neighbours", 3, "--mode=retrieve: own frames averaged per dubbed frame.")
  flags.DEFINE_float("ambient_weight", 2.0, "--mode=retrieve: weight of the z_amb (pose) distance against the "
                     "driving token's.")
  flags.DEFINE_string("judge", None, "Score sync with this model instead (e.g. another seed's), so that the dubs "
                      "are not judged by the tokens that made them.")
  flags.DEFINE_string("out", None, "Output directory (default: MODEL/dubbing_SPLIT).")


def main(argv: Sequence[str]) -> None:
  del argv
  f = flags.FLAGS
  from synclipmae.commands.eval_factors import default_corpus
  from synclipmae.data.corpus import Corpus
  from synclipmae.eval import dubbing
  from synclipmae.inference import load_pretrained
  pretrained = load_pretrained(f.model)
  if f.mode != "retrieve" and "dubbing" not in pretrained.info:
    raise ValueError(f"{f.model}: not fine-tuned for dubbing; run `synclipmae finetune-dub --model={f.model} "
                     "--out=DUB_MODEL` first, or score --mode=retrieve (no decoder)")
  data = f.data or pretrained.info.get("dubbing", {}).get("corpus") or default_corpus(pretrained)
  out = f.out or os.path.join(f.model, f"dubbing_{f.split}_{f.mode}")
  result = dubbing.evaluate(pretrained, Corpus(data), f.split, num_pairs=f.num_pairs, seed=f.seed, mode=f.mode,
                            retrieve={"neighbours": f.neighbours, "ambient_weight": f.ambient_weight},
                            judge=load_pretrained(f.judge) if f.judge else None, videos_dir=out,
                            num_videos=f.num_videos)
  written = dubbing.write_results(result, out)
  print(f"step {pretrained.step}, {result['split']}: {result['num_pairs']} pairs\n{dubbing.format_summary(result)}")
  for name, path in written.items():
    print(f"  {name}: {path}")

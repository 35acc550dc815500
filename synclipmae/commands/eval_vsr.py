"""`synclipmae eval-vsr --head=DIR [--split=heldout] [--decode=greedy|beam]`: score a lip-reading head.

WER and CER (jiwer) of the head written by `synclipmae train-vsr`, and its viseme error rate on corpora with
viseme labels, on --split (the test identities by default), reading the same inputs it was trained on through the
same model. Writes DIR/vsr_eval_SPLIT_DECODE.json and the CTC posteriors of one clip (.png).
"""

from __future__ import annotations

from collections.abc import Sequence

from absl import flags


def define_flags() -> None:
  flags.DEFINE_string("head", None, "A directory written by `synclipmae train-vsr`.", required=True)
  flags.DEFINE_string("split", "heldout", "Split to score.")
  flags.DEFINE_enum("decode", "greedy", ["greedy", "beam"], "CTC decoding.")
  flags.DEFINE_integer("beam_width", 8, "Prefixes kept by beam decoding.")
  flags.DEFINE_string("data", None, "Corpus (default: the one the head was trained on).")
  flags.DEFINE_string("transcripts", None, "JSON / CSV / directory of transcripts (default: as in training).")
  flags.DEFINE_integer("max_clips", None, "Score at most this many clips.")


def main(argv: Sequence[str]) -> None:
  del argv
  f = flags.FLAGS
  from synclipmae.data.corpus import Corpus
  from synclipmae.eval import vsr
  from synclipmae.inference import load_pretrained
  trained = vsr.load(f.head)
  info = trained.info
  transcripts = f.transcripts or info.get("transcripts")
  pretrained = load_pretrained(info["model"])
  data = vsr.collect(pretrained, Corpus(f.data or info["corpus"]), f.split, info["inputs"],
                     vsr.read_transcripts(transcripts) if transcripts else None, f.max_clips)
  written, result = vsr.write_evaluation(trained, data, f.split, f.head, decode=f.decode, beam_width=f.beam_width)
  print(vsr.format_evaluation(result))
  print(f"  {written}")

"""`synclipmae dub --model=DUB_MODEL --video=TARGET (--audio=NEW | --driving_video=OTHER) --out=OUT.mp4`.

Redraws the target's mouth to speak the new audio (audio-driven) or to move as the driving video's mouth does
(video-driven), and writes OUT.mp4 with the new sound (the audio file's, or the driving video's). --mode=retrieve
takes each frame's mouth from the target's own frames, found by the driving token and z_amb (any model); replace
and residual draw it with the shared decoder and need a model fine-tuned for dubbing (`synclipmae finetune-dub`).
Which meets what: synclipmae/dubbing.py and BENCHMARKS.md ("Dubbing").

  synclipmae dub --model=runs/demo/export --mode=retrieve --video=talk.mp4 --audio=new_words.wav --out=dubbed.mp4
  synclipmae dub --model=runs/demo/dub_model --video=talk.mp4 --audio=new_words.wav --out=dubbed.mp4
  synclipmae dub --model=M --video=crops.mp4 --aligned --driving_video=other.mp4 --out=dubbed.mp4

Raw videos go through the face pipeline (as `prep`); the dubbed crops are pasted back into the full frames, and
frames without a face are copied. --aligned: the target is a video of aligned face crops (and so, unless
--driving_aligned=false, is the driving video); the output is then the dubbed crops. Both videos are read on the
25 fps timeline (other frame rates are resampled) and the output has the target's length: longer audio is cut,
shorter audio is padded with silence (the frames past its end keep their mouth). Nothing is written on failure.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from absl import flags


def define_flags() -> None:
  flags.DEFINE_string("model", None, "A model fine-tuned by `synclipmae finetune-dub` (any model for "
                      "--mode=retrieve).", required=True)
  flags.DEFINE_string("video", None, "The target video (whose mouth is redrawn).", required=True)
  flags.DEFINE_string("audio", None, "Audio-driven: the new audio (an audio file or a video's soundtrack).")
  flags.DEFINE_string("driving_video", None, "Video-driven: the video whose mouth motion (and sound) to take.")
  flags.DEFINE_string("out", None, "The dubbed video (.mp4).", required=True)
  flags.DEFINE_bool("aligned", False, "The target is a video of aligned face crops (skip face detection).")
  flags.DEFINE_bool("driving_aligned", None, "The driving video is aligned face crops (default: as --aligned).")
  flags.DEFINE_enum("mode", "retrieve", ["replace", "residual", "retrieve"], "Paste the decoder's drawing of the "
                    "mouth region (replace) or the change of mouth it draws (residual), or the target's own mouths "
                    "retrieved by the driving token (retrieve; any model, no fine-tune): synclipmae/dubbing.py.")
  flags.DEFINE_string("json", None, "Also write the summary here.")
  flags.DEFINE_integer("neighbours", 3, "--mode=retrieve: own frames averaged per dubbed frame.")
  flags.DEFINE_float("ambient_weight", 2.0, "--mode=retrieve: weight of the z_amb (pose) distance against the "
                     "driving token's.")


def main(argv: Sequence[str]) -> None:
  del argv
  f = flags.FLAGS
  from synclipmae import dubbing
  from synclipmae.inference import load_pretrained
  pretrained = load_pretrained(f.model)
  summary = dubbing.dub_video(pretrained, f.video, f.out, audio=f.audio, driving_video=f.driving_video,
                              aligned=f.aligned, driving_aligned=f.driving_aligned, mode=f.mode,
                              retrieve={"neighbours": f.neighbours, "ambient_weight": f.ambient_weight})
  if f.json:
    with open(f.json, "w") as out:
      json.dump(summary, out, indent=1)
  print(f"{summary['out']}: {summary['redrawn_frames']} of {summary['num_frames']} frames of {summary['video']} "
        f"redrawn, {summary['driving']}-driven by {summary['driving_source']}")

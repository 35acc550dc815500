"""`synclipmae prep --input DIR_OR_LIST --out DIR`: real talking-face videos -> a corpus of aligned clip records.

    synclipmae prep --input=videos/ --out=runs/data/real --size=128 --num_workers=8
    # a cluster array job, task i of 64 (all tasks share --out; the last one to finish writes corpus.json):
    synclipmae prep --input=list.txt --out=/shared/real --shard_index=$SLURM_ARRAY_TASK_ID --num_shards=64
    synclipmae prep --out=/shared/real --finalize_only        # assemble corpus.json by hand

Reruns skip inputs already done (or failed: `--retry_failed`). Exit status 1 when any input of the job failed
(listed in OUT/failures.jsonl with its stage and reason). The pipeline is in `data_pipelines.prep` (`run` drives it).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from absl import flags


def define_flags() -> None:
  from data_pipelines.prep import settings
  default = settings.PrepConfig()
  flags.DEFINE_list("input", None, "Input videos: folders (searched recursively), list files (one path per line, "
                    "relative to the list) or video files; comma-separated.")
  flags.DEFINE_string("out", None, "Output corpus directory.", required=True)
  flags.DEFINE_integer("size", default.size, "Side of the aligned face crops in pixels (the model's image_size).")
  flags.DEFINE_float("max_clip_s", default.max_clip_s, "Longest clip in seconds.")
  flags.DEFINE_float("min_clip_s", default.min_clip_s, "Shortest clip in seconds.")
  flags.DEFINE_enum("frame_codec", default.frame_codec, ["jpeg", "png"], "How crops are stored.")
  flags.DEFINE_integer("jpeg_quality", default.jpeg_quality, "JPEG quality of the crops.")
  flags.DEFINE_bool("allow_silent", default.allow_silent, "Accept videos without an audio track (zero audio) "
                    "instead of recording them as failures.")
  flags.DEFINE_integer("max_decode_side", None, "Shrink decoded frames whose long side is larger (faster).")
  flags.DEFINE_string("speaker_pattern", None, "Speaker id from the input path: a template such as "
                      "'{speaker}/{video}/*.mp4' or a regex with a (?P<speaker>...) group; default: the folder name.")
  flags.DEFINE_list("heldout_speakers", [], "Speaker ids for the 'heldout' split.")
  flags.DEFINE_float("heldout_fraction", 0.0, "Also hold out this fraction of speakers (stable hash of the id).")
  flags.DEFINE_enum("detector", default.detector, ["short", "full", "auto"], "Face detector model.")
  flags.DEFINE_float("shot_threshold", default.shot_threshold, "Histogram distance counted as a shot change.")
  flags.DEFINE_bool("store_landmarks", default.store_landmarks, "Store aligned landmarks and face scores as labels.")
  flags.DEFINE_integer("shard_size", default.shard_size, "Clips per output shard.")
  flags.DEFINE_integer("num_workers", 1, "Worker processes on this machine (one per core is typical).")
  flags.DEFINE_integer("shard_index", 0, "This job's index among --num_shards jobs sharing the input list.")
  flags.DEFINE_integer("num_shards", 1, "Number of jobs sharing the input list (e.g. a cluster array job).")
  flags.DEFINE_bool("retry_failed", False, "Process again the inputs that failed in earlier runs.")
  flags.DEFINE_enum("finalize", "auto", ["auto", "always", "never"],
                    "Write corpus.json: when every job has finished (auto), at the end of this job, or never.")
  flags.DEFINE_bool("finalize_only", False, "Only assemble corpus.json from the parts already in --out.")
  flags.DEFINE_bool("quiet", False, "No progress bar.")


def main(argv: Sequence[str]) -> None:
  del argv
  f = flags.FLAGS
  from data_pipelines.prep import parts, run, settings
  try:
    if f.finalize_only:
      info = parts.finalize(f.out)
      sizes = ", ".join(f"{name} {split['num_clips']} clips" for name, split in info["splits"].items())
      print(f"{f.out}: corpus.json written ({sizes}; {info['inputs']['failed']} failed inputs)")
      sys.exit(1 if info["inputs"]["failed"] else 0)
    if not f.input:
      raise settings.RunError("--input is required (unless --finalize_only)")
    config = settings.PrepConfig(
        size=f.size, max_clip_s=f.max_clip_s, min_clip_s=f.min_clip_s, frame_codec=f.frame_codec,
        jpeg_quality=f.jpeg_quality, allow_silent=f.allow_silent, max_decode_side=f.max_decode_side,
        speaker_pattern=f.speaker_pattern, heldout_speakers=tuple(f.heldout_speakers),
        heldout_fraction=f.heldout_fraction, detector=f.detector, shot_threshold=f.shot_threshold,
        store_landmarks=f.store_landmarks, shard_size=f.shard_size)
    summary = run.run(f.input, f.out, config, shard_index=f.shard_index, num_shards=f.num_shards,
                      num_workers=f.num_workers, retry_failed=f.retry_failed, finalize_when=f.finalize,
                      quiet=f.quiet)
  except settings.RunError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  print(run.summary_line(summary, f.out))
  sys.exit(1 if summary["failed_inputs"] else 0)

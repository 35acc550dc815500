"""`synclipmae sync --model=PATH [--aligned] [--json=OUT.jsonl] VIDEO...`: zero-shot AV sync of any video.

    synclipmae sync --model=runs/demo/export talk.mp4                 # one video: the result in words
    synclipmae sync --model=M --json=scores.jsonl videos/ list.txt    # a folder / list: one JSON line per video
    synclipmae sync --model=M --fix_out=fixed/ videos/                # + copies with the audio moved to offset 0

Sign: a POSITIVE offset means the AUDIO LAGS the video (audio delayed by n frames is reported as +n, as
`eval-sync` does); `--fix_out` moves such audio n frames earlier. Confidence is LSE-C (median - min of the mean
distance over offsets), min_dist LSE-D, both on L2-normalised tokens (distances in [0, 2]; SyncNet's own scale is
not comparable, so thresholds such as LatentSync's confidence >= 3 do not transfer).

Writes into --out: per video `ID.json` (all results: per-window offsets, per-frame confidence, the curve) and
`ID.png` (score vs offset, confidence over time), `failures.jsonl` (video, stage, reason), and the one-line
summaries (keys `video`, `offset_frames`, `offset_ms`, `confidence`, `min_dist`, `num_frames`) into --json
(default OUT/sync.jsonl). Reruns skip videos already scored or failed. Exit status 1 when any video failed.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence

from absl import flags


def define_flags() -> None:
  flags.DEFINE_string("model", None, "An export directory (synclipmae export) or a pretraining workdir.",
                      required=True)
  flags.DEFINE_bool("aligned", False, "The videos are already aligned face crops (skip face detection).")
  flags.DEFINE_string("json", None, "Summaries, one JSON line per video (default: OUT/sync.jsonl).")
  flags.DEFINE_string("out", "sync_out", "Per-video details (JSON + PNG) and failures.jsonl.")
  flags.DEFINE_string("fix_out", None, "Write a copy of each video with its audio moved to offset 0 here.")
  flags.DEFINE_integer("max_offset", 15, "Candidate offsets -max_offset..+max_offset frames.")
  flags.DEFINE_float("window_s", 10.0, "Videos longer than this are also scored per window of this length.")
  flags.DEFINE_bool("retry_failed", False, "Try again the videos that failed in an earlier run.")
  flags.DEFINE_bool("quiet", False, "No progress bar.")


def sync_videos(model, videos: Sequence[str], *, out: str = "sync_out", json_path: str | None = None,
                aligned: bool = False, fix_out: str | None = None, max_offset: int = 15, window_s: float = 10.0,
                retry_failed: bool = False, quiet: bool = False, echo=print) -> dict[str, int]:
  """The command as a function: scores `videos` (files, folders, list files) with `model` (a path or a loaded
  `Pretrained`); returns counts."""
  from data_pipelines.prep import inputs
  from synclipmae import inference
  from synclipmae.commands import video_batch
  from synclipmae.eval import sync
  os.makedirs(out, exist_ok=True)

  def score(pretrained, reader, video):
    tokens = inference.video_tokens(pretrained, video, aligned=aligned, reader=reader)
    result = sync.score_video(tokens, max_offset=max_offset, window_frames=max(1, round(window_s * tokens.fps)))
    stem = os.path.join(out, inputs.video_id(video))
    with open(stem + ".json", "w") as f:
      json.dump(result, f)
    sync.plot_video_sync(result, stem + ".png")
    if fix_out:
      from data_pipelines import media
      media.shift_audio(video, os.path.join(fix_out, os.path.basename(video)), result["offset_ms"] / 1000.0)
    echo(f"{video}: {result['offset_in_words']}; confidence {result['confidence']:.3f}, "
         f"min dist {result['min_dist']:.3f}, {result['num_frames']} frames")
    return {k: result[k] for k in sync.SUMMARY_KEYS}

  return video_batch.run_videos(model, videos, score, results=json_path or os.path.join(out, "sync.jsonl"),
                                failures=os.path.join(out, "failures.jsonl"), aligned=aligned,
                                retry_failed=retry_failed, quiet=quiet, echo=echo)


def main(argv: Sequence[str]) -> None:
  f = flags.FLAGS
  videos = argv[1:]
  if not videos:
    raise ValueError("no videos given: synclipmae sync --model=PATH VIDEO_OR_DIR...")
  counts = sync_videos(f.model, videos, out=f.out, json_path=f.json, aligned=f.aligned, fix_out=f.fix_out,
                       max_offset=f.max_offset, window_s=f.window_s, retry_failed=f.retry_failed, quiet=f.quiet)
  if counts["failed"]:
    print(f"{counts['failed']} of {counts['done'] + counts['failed']} videos failed: see "
          f"{os.path.join(f.out, 'failures.jsonl')}", file=sys.stderr)
    sys.exit(1)

"""`synclipmae extract --model=PATH --out=DIR [--aligned] VIDEO_OR_DIR...`: per-frame tokens of videos.

Per video, DIR/ID.safetensors holds `z_id`, `z_voc`, `z_amb` [N, D] for the N frames with a face, `frame_index`
[N] (on the 25 fps timeline) and `frame_time_s` [N], `audio_tokens` [T, D] and `audio_time_s` [T] for every frame
of the timeline; its metadata holds the video path and the model. DIR/manifest.jsonl gets one line per video
(file, frames, face frames, segments), DIR/failures.jsonl one per unusable video (stage, reason). Reruns skip
videos already done or failed. Raw videos go through the `prep` face pipeline; `--aligned` takes face crops as
they are. Load a file with `safetensors.numpy.load_file(path)`. Exit status 1 when any video failed.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence

import numpy as np
from absl import flags


def define_flags() -> None:
  flags.DEFINE_string("model", None, "An export directory (synclipmae export) or a pretraining workdir.",
                      required=True)
  flags.DEFINE_string("out", None, "Output directory.", required=True)
  flags.DEFINE_bool("aligned", False, "The videos are already aligned face crops (skip face detection).")
  flags.DEFINE_integer("frame_batch", 64, "Frames per encoder call.")
  flags.DEFINE_bool("retry_failed", False, "Try again the videos that failed in an earlier run.")
  flags.DEFINE_bool("quiet", False, "No progress bar.")


def save_tokens(tokens, path: str, model_path: str, step: int) -> None:
  """Writes a VideoTokens as safetensors (atomically: a temporary file renamed)."""
  from safetensors.numpy import save_file
  tensors = {"z_id": tokens.z_id, "z_voc": tokens.z_voc, "z_amb": tokens.z_amb,
             "frame_index": tokens.frame_index.astype(np.int64),
             "frame_time_s": tokens.frame_times.astype(np.float64), "audio_tokens": tokens.audio_tokens,
             "audio_time_s": np.arange(tokens.num_frames, dtype=np.float64) / tokens.fps}
  metadata = {"video": tokens.video, "model": os.path.abspath(model_path), "step": str(step),
              "fps": str(tokens.fps), "aligned": str(tokens.aligned), "segments": json.dumps(tokens.segments)}
  partial = path + ".partial"
  save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, partial, metadata=metadata)
  os.replace(partial, path)


def extract_videos(model, videos: Sequence[str], out: str, *, aligned: bool = False, frame_batch: int = 64,
                   retry_failed: bool = False, quiet: bool = False, echo=print) -> dict[str, int]:
  """The command as a function (`model`: a path or a loaded `Pretrained`); returns counts."""
  from data_pipelines.prep import inputs
  from synclipmae import inference
  from synclipmae.commands import video_batch
  os.makedirs(out, exist_ok=True)

  def extract(pretrained, reader, video):
    tokens = inference.video_tokens(pretrained, video, aligned=aligned, reader=reader, frame_batch=frame_batch)
    file = inputs.video_id(video) + ".safetensors"
    save_tokens(tokens, os.path.join(out, file), pretrained.path, pretrained.step)
    return {"video": video, "file": file, "num_frames": tokens.num_frames,
            "face_frames": int(len(tokens.frame_index)), "duration_s": round(tokens.duration_s, 3),
            "segments": tokens.segments, "aligned": aligned}

  counts = video_batch.run_videos(model, videos, extract, results=os.path.join(out, "manifest.jsonl"),
                                  failures=os.path.join(out, "failures.jsonl"), aligned=aligned,
                                  retry_failed=retry_failed, quiet=quiet, echo=echo)
  echo(f"{out}: {counts['done']} videos extracted, {counts['failed']} failed, {counts['skipped']} skipped")
  return counts


def main(argv: Sequence[str]) -> None:
  f = flags.FLAGS
  videos = argv[1:]
  if not videos:
    raise ValueError("no videos given: synclipmae extract --model=PATH --out=DIR VIDEO_OR_DIR...")
  counts = extract_videos(f.model, videos, f.out, aligned=f.aligned, frame_batch=f.frame_batch,
                          retry_failed=f.retry_failed, quiet=f.quiet)
  if counts["failed"]:
    print(f"{counts['failed']} videos failed: see {os.path.join(f.out, 'failures.jsonl')}", file=sys.stderr)
    sys.exit(1)

"""Running a command over many videos: the input list, the JSONL of results, the failures manifest, reruns.

`extract` and `sync` take videos, folders (searched recursively) and list files, exactly as `prep --input` does.
Each finished video appends one line to the results file and each unusable one a line (video, stage, reason) to
the failures file, flushed at once, so a killed run loses at most the video in progress; a rerun skips the videos
already in either file (`retry_failed` tries the failed ones again).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from synclipmae.data.corpus import append_jsonl, read_jsonl


def list_videos(specs: Sequence[str]) -> list[str]:
  """Video paths from files, folders and list files (`synclipmae prep --input` rules), in a stable order."""
  from data_pipelines.prep import inputs, settings
  try:
    return [item.path for item in inputs.list_inputs(list(specs))]
  except settings.RunError as e:
    raise ValueError(str(e)) from None


def run_videos(model, videos: Sequence[str], work: Callable[[Any, Any, str], dict[str, Any]], *, results: str,
               failures: str, aligned: bool = False, retry_failed: bool = False, quiet: bool = False,
               echo=print) -> dict[str, int]:
  """Calls work(pretrained, reader, video) -> the video's results line, for each video not done yet, with a
  progress bar. `model` is a path (loaded once, only if there is work) or a loaded `Pretrained`; `reader` is one
  `VideoReader` (face models loaded once). A video whose work raises a ValueError (a decode.PrepError names the
  stage) goes to the failures file with its reason, printed on stderr, and the run goes on.
  Returns {"done", "failed", "skipped"} counts."""
  from tqdm import tqdm

  from synclipmae import inference
  inputs = list_videos(videos)
  done = {e.get("video") for e in read_jsonl(results)}
  failed = set() if retry_failed else {e.get("video") for e in read_jsonl(failures)}
  todo = [v for v in inputs if v not in done and v not in failed]
  counts = {"done": 0, "failed": 0, "skipped": len(inputs) - len(todo)}
  if counts["skipped"]:
    echo(f"skipping {counts['skipped']} videos already in {results} or {failures}")
  if not todo:
    return counts
  pretrained = model if isinstance(model, inference.Pretrained) else inference.load_pretrained(model)
  with inference.VideoReader(pretrained.image_size, aligned) as reader:
    bar = tqdm(todo, unit="video", disable=quiet or len(todo) < 2)
    for video in bar:
      bar.set_postfix_str(os.path.basename(video)[-30:])
      try:
        entry = work(pretrained, reader, video)
      except ValueError as e:
        stage, reason = getattr(e, "stage", "error"), getattr(e, "reason", str(e))
        append_jsonl(failures, {"video": video, "stage": stage, "reason": reason})
        tqdm.write(f"{video}: {stage}: {reason}", file=sys.stderr)
        counts["failed"] += 1
        continue
      append_jsonl(results, entry)
      counts["done"] += 1
  return counts

"""Running a command over many videos: the input list, the JSONL of results, the failures manifest, reruns.

`extract` and `sync` take videos, folders (searched recursively) and list files, exactly as `prep --input` does.
Each finished video appends one line to the results file and each unusable one a line (video, stage, reason) to
the failures file, flushed at once, so a killed run loses at most the video in progress; a rerun skips the videos
already in either file (`retry_failed` tries the failed ones again).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any


def list_videos(specs: Sequence[str]) -> list[str]:
  """Video paths from files, folders and list files (`synclipmae prep --input` rules), in a stable order."""
  from data_pipelines.prep import run
  try:
    return [item.path for item in run.list_inputs(list(specs))]
  except run.RunError as e:
    raise ValueError(str(e)) from None


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
  if not path.exists():
    return []
  out = []
  for line in path.read_text().splitlines():
    try:
      out.append(json.loads(line))
    except json.JSONDecodeError:
      continue  # A torn last line from a killed run.
  return out


class VideoBatch:
  """The bookkeeping of one batch run: `pending(videos)`, then `done(entry)` / `failed(video, stage, reason)`."""

  def __init__(self, results: str | os.PathLike | None, failures: str | os.PathLike, retry_failed: bool = False):
    self.results = Path(results) if results else None
    self.failures = Path(failures)
    self._done = {e.get("video") for e in _read_jsonl(self.results)} if self.results else set()
    self._failed = set() if retry_failed else {e.get("video") for e in _read_jsonl(self.failures)}
    self.num_done = self.num_failed = 0

  def pending(self, videos: Sequence[str]) -> tuple[list[str], int]:
    """(videos still to do, how many were skipped as finished or failed in an earlier run)."""
    todo = [v for v in videos if v not in self._done and v not in self._failed]
    return todo, len(videos) - len(todo)

  def done(self, entry: dict[str, Any]) -> None:
    if self.results:
      _append(self.results, entry)
    self.num_done += 1

  def failed(self, video: str, stage: str, reason: str) -> None:
    _append(self.failures, {"video": video, "stage": stage, "reason": reason})
    self.num_failed += 1


def _append(path: Path, entry: dict[str, Any]) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, "a") as f:
    f.write(json.dumps(entry) + "\n")
    f.flush()
    os.fsync(f.fileno())


def each_video(videos: Sequence[str], batch: VideoBatch, work, *, quiet: bool = False) -> Iterator[Any]:
  """Calls work(video) for each video with a progress bar; yields its results. A video whose work raises a
  ValueError (a decode.PrepError names the stage) is recorded as failed and the run goes on."""
  from tqdm import tqdm
  bar = tqdm(videos, unit="video", disable=quiet or len(videos) < 2)
  for video in bar:
    bar.set_postfix_str(os.path.basename(video)[-30:])
    try:
      yield work(video)
    except ValueError as e:
      stage = getattr(e, "stage", "error")
      reason = getattr(e, "reason", str(e))
      batch.failed(video, stage, reason)
      tqdm.write(f"{video}: {stage}: {reason}", file=sys.stderr)

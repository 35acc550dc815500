"""The inputs of a prep run: listing them, dealing them to array jobs, their speaker ids and splits.

An input is a video file named by its `key`, its path relative to the input root; the key is what manifests,
failures entries and reruns know it by. Speaker ids come from the key (`SpeakerPattern`), and splits from the
speaker (`split_of`), so any process decides both alone, without coordination.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path

from data_pipelines.prep import decode
from data_pipelines.prep.settings import PrepConfig, RunError

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".flv", ".mpg", ".mpeg", ".ts", ".3gp", ".wmv")
STAGE_SPEAKER = "speaker"  # The path does not match the speaker pattern.


@dataclasses.dataclass(frozen=True)
class Input:
  """One input video: `key` names it in manifests and failures (a path relative to the input root, '/'-separated)."""
  key: str
  path: str


def list_inputs(specs: str | Sequence[str]) -> list[Input]:
  """Inputs from directories (searched recursively for VIDEO_EXTENSIONS), list files (one path per line, relative
  to the list's folder; '#' comments) or single video files; sorted by key, which must be unique."""
  specs = [specs] if isinstance(specs, (str, os.PathLike)) else list(specs)
  found: dict[str, Input] = {}
  for spec in specs:
    root = Path(spec)
    if root.is_dir():
      items = [Input(p.relative_to(root).as_posix(), str(p)) for p in sorted(root.rglob("*"))
               if p.suffix.lower() in VIDEO_EXTENSIONS and not p.is_dir()]
    elif root.is_file() and root.suffix.lower() not in VIDEO_EXTENSIONS:
      items = []
      for line in root.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
          path = Path(line) if Path(line).is_absolute() else root.parent / line
          items.append(Input(Path(line).as_posix().lstrip("/"), str(path)))
    elif root.suffix.lower() in VIDEO_EXTENSIONS:
      items = [Input(root.name, str(root))]  # May not exist: then it becomes a failures entry.
    else:
      raise RunError(f"--input {spec}: not a directory, a list file or a video file")
    for item in items:
      if item.key in found and found[item.key].path != item.path:
        raise RunError(f"two inputs share the key {item.key!r}: {found[item.key].path} and {item.path}")
      found[item.key] = item
  return [found[k] for k in sorted(found)]


def shard_inputs(inputs: Sequence[Input], shard_index: int, num_shards: int) -> list[Input]:
  """This job's inputs: every num_shards-th of the sorted list, starting at shard_index."""
  if num_shards < 1 or not 0 <= shard_index < num_shards:
    raise RunError(f"need 0 <= shard_index < num_shards, got {shard_index} and {num_shards}")
  return list(sorted(inputs, key=lambda i: i.key))[shard_index::num_shards]


class SpeakerPattern:
  """Speaker id from an input key.

  * None: the name of the folder holding the file.
  * A regex with a `(?P<speaker>...)` group, searched in the key ('/'-separated path relative to the input root).
  * A path template such as `{speaker}/{video}/*.mp4`: `{name}` matches one path component (or part of one),
    `*` anything within a component, `**` any number of components; matched against the end of the key.
  """

  def __init__(self, pattern: str | None):
    self.pattern = pattern
    if pattern is None:
      self._regex = None
      return
    if "(?P<" in pattern:
      source = pattern
    else:
      source = ""
      for token in re.split(r"(\{\w+\}|\*\*/?|\*)", pattern):
        if token.startswith("{"):
          source += f"(?P<{token[1:-1]}>[^/]+?)"
        elif token.startswith("**"):
          source += "(?:.*/)?" if token.endswith("/") else ".*"
        elif token == "*":
          source += "[^/]*"
        else:
          source += re.escape(token)
      source = f"(?:^|/){source}$"
    try:
      self._regex = re.compile(source)
    except re.error as e:
      raise RunError(f"--speaker_pattern {pattern!r} is not a valid pattern ({e})") from None
    if "speaker" not in self._regex.groupindex:
      raise RunError(f"--speaker_pattern {pattern!r} has no {{speaker}} field or (?P<speaker>...) group")

  def __call__(self, item: Input) -> str:
    if self._regex is None:
      return Path(item.path).resolve().parent.name or "unknown"
    match = self._regex.search(item.key)
    if not match or not match.group("speaker"):
      raise decode.PrepError(item.key, STAGE_SPEAKER, f"path does not match --speaker_pattern {self.pattern!r}")
    return match.group("speaker")


def split_of(speaker: str, config: PrepConfig) -> str:
  """"heldout" for held-out speakers (listed, or by a stable hash under heldout_fraction), else "train"."""
  if speaker in config.heldout_speakers:
    return "heldout"
  if config.heldout_fraction > 0 and speaker_hash(speaker) < config.heldout_fraction:
    return "heldout"
  return "train"


def speaker_hash(speaker: str) -> float:
  """A stable number in [0, 1) per speaker id: any process, anywhere, puts a speaker in the same split."""
  return int.from_bytes(hashlib.sha256(speaker.encode()).digest()[:8], "big") / 2.0 ** 64


def video_id(key: str) -> str:
  """A file-name-safe id of an input, unique by a short hash of its key."""
  stem = re.sub(r"[^A-Za-z0-9._-]+", "_", key.rsplit(".", 1)[0].replace("/", "--")).strip("_") or "video"
  return f"{stem[-80:]}-{hashlib.sha1(key.encode()).hexdigest()[:6]}"

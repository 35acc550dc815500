"""Run directories on local disk or on object storage (gs://, s3://) through one API: etils `epath`, the path layer
orbax itself uses.

A workdir may be a URL (`--workdir=gs://bucket/runs/mu`): checkpoints go through orbax and TensorStore, which
speak gs:// natively; config.json, metrics.jsonl, parameters.txt and the closing evaluation's files through epath
(its gs:// backend is fsspec + gcsfs: `pip install -e '.[gcs]'`); TensorBoard events through tensorboardX (gs:// via
google-cloud-storage, which gcsfs brings). Object stores cannot append to an object, so `append_line` rewrites a
URL's file whole (metrics.jsonl: a few hundred kB at most). Exports (`synclipmae export --out=gs://...`,
`load_pretrained("gs://...")`) are staged on local disk and copied (`publish`, `fetch`). Corpora and audio
features are read by ArrayRecord, whose released reader opens local files only: a URL's files are copied once into
a local cache (`stage`; `$SYNCLIPMAE_CACHE`, default ~/.cache/synclipmae) and read there, each host copying the
splits it opens. Evaluation outputs (JSON, figures) go through `write_json` / `write_figure`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from etils import epath


CACHE_ENV = "SYNCLIPMAE_CACHE"


def is_url(path: str | os.PathLike) -> bool:
  return "://" in os.fspath(path)


def path(location: str | os.PathLike) -> epath.Path:
  """An absolute local path, or the URL as given."""
  return epath.Path(location if is_url(location) else os.path.abspath(location))


def as_given(location: str | os.PathLike) -> Path | epath.Path:
  """A URL as an epath, a local path as given (relative stays relative: what messages name)."""
  return path(location) if is_url(location) else Path(location)


def append_line(file: epath.Path, line: str) -> None:
  """Appends one line (without its newline) to `file`, creating it; rewrites it whole on object storage."""
  if not is_url(file):
    with open(file, "a") as f:
      f.write(line + "\n")
    return
  text = file.read_text() if file.exists() else ""
  file.write_text(text + line + "\n")


def publish(staging: epath.Path, out: epath.Path, *, last: str) -> None:
  """Moves a finished local directory `staging` to `out` (replacing it), so that readers see all of it or none.

  Local: one rename. Object storage has no directory rename: the files are copied one by one, `last` (the file
  whose presence makes the directory valid for readers, e.g. an export's config.json) after all the others, and the
  old `out` is removed first."""
  if not is_url(out):
    if out.exists():
      shutil.rmtree(out)
    os.rename(staging, out)
    return
  if out.exists():
    out.rmtree()
  out.mkdir(parents=True, exist_ok=True)
  for file in sorted(staging.iterdir(), key=lambda f: f.name == last):
    file.copy(out / file.name)
  shutil.rmtree(staging)


def fetch(directory: epath.Path, names: list[str]) -> Path:
  """`directory` itself when local; else a local copy of its files `names` (those that exist; `stage`)."""
  return stage(directory, [name for name in names if (directory / name).exists()])


def cache_dir() -> Path:
  """Where URLs' files are staged: `$SYNCLIPMAE_CACHE`, or ~/.cache/synclipmae."""
  return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "synclipmae")


def stage(directory: epath.Path, names: Iterable[str]) -> Path:
  """A local directory holding the files `names` of `directory`: the directory itself when it is local; for an
  object-storage URL, a copy (for readers that open local files only, such as ArrayRecord's).

  The copy lives in the cache (`cache_dir()/staged/`, one folder per URL) and is reused while the object has the
  same size and is not newer than it; each file is copied to a private name and renamed, so processes of one host
  staging the same corpus at once, or a copy killed half-way, never leave a torn file under its real name. A
  missing file raises FileNotFoundError naming its URL."""
  if not is_url(directory):
    return Path(directory)
  digest = hashlib.sha256(str(directory).encode()).hexdigest()[:12]
  local = cache_dir() / "staged" / f"{directory.name}-{digest}"
  local.mkdir(parents=True, exist_ok=True)
  for name in names:
    source, target = directory / name, local / name
    if not source.exists():
      raise FileNotFoundError(f"{source}: no such file")
    stat = source.stat()
    copied = target.stat() if target.exists() else None
    if copied and copied.st_size == stat.length and stat.mtime <= copied.st_mtime:
      continue
    partial = target.with_name(f".{name}.{os.getpid()}.partial")
    source.copy(epath.Path(partial), overwrite=True)
    os.replace(partial, target)
  return local


def output_dir(location: str | os.PathLike) -> epath.Path:
  """An evaluation's output directory (local or a URL), created."""
  out = path(location)
  out.mkdir(parents=True, exist_ok=True)
  return out


def write_json(file: epath.Path, data: Any) -> str:
  """`data` as indented JSON into `file` (local or a URL); returns its path."""
  file.write_text(json.dumps(data, indent=1))
  return str(file)


def write_figure(fig, file: epath.Path, dpi: int = 110) -> str:
  """Saves a matplotlib figure as PNG into `file` (local or a URL), and returns the path. A pyplot figure is closed;
  a bare `Figure` needs no closing (and pyplot, hence a notebook's backend, is then left alone)."""
  with file.open("wb") as f:
    fig.savefig(f, dpi=dpi, format="png")
  if fig.canvas.manager is not None:
    import matplotlib.pyplot as plt
    plt.close(fig)
  return str(file)

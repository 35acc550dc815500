"""Run directories on local disk or on object storage (gs://, s3://) through one API: etils `epath`, the path layer
orbax itself uses.

A workdir may be a URL (`--workdir=gs://bucket/runs/mu`): checkpoints go through orbax and TensorStore, which
speak gs:// natively; config.json, metrics.jsonl, parameters.txt and the closing evaluation's files through epath
(its gs:// backend is fsspec + gcsfs: `pip install -e '.[gcs]'`); TensorBoard events through tensorboardX (gs:// via
google-cloud-storage, which gcsfs brings). Object stores cannot append to an object, so `append_line` rewrites a
URL's file whole (metrics.jsonl: a few hundred kB at most). Exports (`synclipmae export --out=gs://...`,
`load_pretrained("gs://...")`) are staged on local disk and copied (`publish`, `fetch`). Corpora are read by
ArrayRecord, whose released reader opens local files only: keep them on local disk or a gcsfuse mount (README
"Scaling out").
"""

from __future__ import annotations

import os
import shutil
import tempfile

from etils import epath


def is_url(path: str | os.PathLike) -> bool:
  return "://" in os.fspath(path)


def path(location: str | os.PathLike) -> epath.Path:
  """An absolute local path, or the URL as given."""
  return epath.Path(location if is_url(location) else os.path.abspath(location))


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


def fetch(directory: epath.Path, names: list[str]) -> epath.Path:
  """`directory` itself when local; else a local temporary copy of its files `names` (those that exist)."""
  if not is_url(directory):
    return directory
  local = epath.Path(tempfile.mkdtemp(prefix="synclipmae-fetch-"))
  for name in names:
    if (directory / name).exists():
      (directory / name).copy(local / name)
  return local

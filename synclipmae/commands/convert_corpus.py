"""`synclipmae convert-corpus --src=OLD --out=NEW [--name=TFDS_NAME]`.

Rewrites a corpus of schema 1 (msgpack records, written before corpora became TFDS datasets) in the current layout,
record for record (`synclipmae.data.convert`): the same splits, shards and record order, so runs, precomputed audio
features and evaluations keep pointing at the same clips. The old directory is left as it was.
"""

from __future__ import annotations

from collections.abc import Sequence

from absl import flags


def define_flags() -> None:
  flags.DEFINE_string("src", None, "The schema-1 corpus directory.", required=True)
  flags.DEFINE_string("out", None, "A new (or empty) directory for the converted corpus.", required=True)
  flags.DEFINE_string("name", None, "TFDS dataset name (default: from what generated the corpus).")


def main(argv: Sequence[str]) -> None:
  del argv
  from synclipmae.data import convert
  f = flags.FLAGS
  info = convert.convert(f.src, f.out, name=f.name)
  clips = sum(s["num_clips"] for s in info["splits"].values())
  print(f"{f.out}: {clips} clips in {len(info['splits'])} splits, TFDS dataset {info['name']!r} version "
        f"{info['version']} ({info['converted_from']['seconds']} s)")

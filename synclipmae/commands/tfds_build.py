"""`synclipmae tfds-build DATASET[/CONFIG] [--data_dir=DIR] [any flag of `tfds build`]`: TFDS's build command,
without TensorFlow, with the project's builders registered.

    synclipmae tfds-build synclipmae_synthetic/default --data_dir=~/tensorflow_datasets
    synclipmae tfds-build synclipmae_synthetic --config=large --data_dir=gs://bucket/tfds   # 2,688 clips

The stock `tfds build` imports TensorFlow at start (through its other subcommands); its `build` command itself does
not, so this is that command, parsed by TFDS's own parser (`--help` lists every flag: `--overwrite`,
`--max_examples_per_split`, `--manual_dir`, ...). Files are written as ArrayRecord unless `--file_format` says
otherwise (the TFDS data source reads ArrayRecord only). The finished directory
`DATA_DIR/NAME/CONFIG/VERSION` is a TFDS dataset and a `synclipmae.data.corpus.Corpus`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

BUILDERS = ("data_pipelines.synthetic.tfds_builder", "data_pipelines.corpora.catalog")  # Modules whose import registers the project's builders.


def run(argv: Sequence[str]) -> None:
  """Parses `argv` (flags after the command name) with TFDS's build parser and builds."""
  import importlib

  import tensorflow_datasets as tfds
  from tensorflow_datasets.scripts.cli import build, cli_utils
  for module in BUILDERS:
    importlib.import_module(module)
  argv = list(argv)
  if not any(a.startswith("--file_format") for a in argv) and not any(a in ("-h", "--help") for a in argv):
    argv.append("--file_format=array_record")
  parse = cli_utils.make_flags_parser(build.Args, description=__doc__.splitlines()[0])
  args = parse(["synclipmae tfds-build", *argv])
  known = set(tfds.list_builders(with_community_datasets=False))
  unknown = [d for d in args.positional_datasets + args.datasets if d.split("/")[0].split(":")[0] not in known]
  if unknown:  # Else TFDS goes looking on GCS and in TensorFlow for it.
    sys.exit(f"synclipmae tfds-build: error: no dataset {unknown[0]!r}; the project's datasets: "
             f"{', '.join(sorted(n for n in known if n.startswith('synclipmae')))}")
  args.execute()


if __name__ == "__main__":
  run(sys.argv[1:])

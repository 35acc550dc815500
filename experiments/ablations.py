"""Turn SyncLipMAE's mechanisms off one at a time, over several seeds, and tabulate sync and the factor matrix.

    python experiments/ablations.py --out=runs/ablations [--seeds=0,1] [--only=full,no_xcov] [--common="k=v ..."]

Every run is a plain `synclipmae pretrain --config=configs/pretrain.py:mu --workdir=OUT/NAME_sSEED
--config.seed=SEED` plus the row's overrides; it ends with the sync evaluation and the factor probes on the
validation identities (the config's eval split), which is where recipes are judged. Finished runs are skipped, so
a rerun resumes. The table (printed and written to OUT/ablations.md) gives each row's mean over its seeds and the
spread (max - min) of the sync accuracy.

Rows: the paper's mechanisms (DESIGN.md section 2) and ours, each switched off alone on the default recipe.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

JITTER_OFF = [f"masking.jitter.{k}=0.0" for k in ("brightness", "contrast", "saturation", "hue", "grayscale_p")]
ROWS = {
    "full": ("the default recipe", []),
    "no_con": ("no L_con (neither InfoNCE)", ["loss.con=0.0", "loss.con_clip=0.0"]),
    "no_xcov": ("no L_xcov", ["loss.xcov=0.0"]),
    "no_jitter": ("no photometric jitter", JITTER_OFF),
    "uniform_bypass2": ("uniform masking in bypass 2", ["masking.face_bias=1.0", "masking.mouth_bias=1.0"]),
    "no_id_shuffle": ("no identity shuffling (z_id of the frame itself)", ["masking.identity_shuffle=False"]),
    "one_bypass": ("one bypass for all tokens", ["masking.one_bypass=True"]),
    "no_audio_pass": ("no audio-driven reconstruction", ["loss.rec_audio=0.0"]),
    "last_layer_audio": ("last audio layer only", ["model.audio.logmel.layers=(3,)"]),
    # Ours (BENCHMARKS.md "Tokens that factorize").
    "mouth_shared": ("mouth patches readable by every token", ["model.encoder.mouth_private=False"]),
    "no_pairs": ("z_id from the same clip, not a same-speaker pair", ["data.identity_pairs=False"]),
    "no_amb_con": ("no z_amb two-view InfoNCE", ["loss.amb_con=0.0"]),
}
FACTOR_CELLS = (("z_id", "identity"), ("z_voc", "identity"), ("z_amb", "identity"), ("z_voc", "mouth"),
                ("z_id", "mouth"), ("z_amb", "mouth"), ("z_amb", "pose"), ("z_amb", "pose_rel"), ("z_voc", "pose"),
                ("z_amb", "blink"), ("z_amb", "expression"))


def results(workdir: str) -> dict | None:
  """Sync (K=1/5/15) and the factor cells of a finished run; None if it has not finished."""
  sync_path, factor_path = (os.path.join(workdir, f) for f in ("sync_eval.json", "factors.json"))
  if not (os.path.exists(sync_path) and os.path.exists(factor_path)):
    return None
  with open(sync_path) as f:
    sync = json.load(f)
  with open(factor_path) as f:
    factors = json.load(f)["matrix"]
  by_k = sync["accuracy_by_context"]
  return {"k1": by_k["1"], "k5": sync["accuracy"], "k15": by_k["15"],
          **{f"{t}/{n}": factors[t].get(n, np.nan) for t, n in FACTOR_CELLS}}  # nan: not scored by that code


def table(out: str, names: list[str], seeds: list[int]) -> str:
  header = ("| row | what is off | seeds | sync K=1 / **K=5** (spread) / K=15 | "
            + " | ".join(f"{n} ({t})" for t, n in FACTOR_CELLS) + " |")
  lines = [header, "|" + "---|" * (4 + len(FACTOR_CELLS))]
  for name in names:
    done = [r for s in seeds if (r := results(os.path.join(out, f"{name}_s{s}")))]
    if not done:
      continue
    mean = {k: float(np.mean([r[k] for r in done])) for k in done[0]}
    spread = max(r["k5"] for r in done) - min(r["k5"] for r in done)
    cells = " | ".join(f"{mean[f'{t}/{n}']:.2f}" for t, n in FACTOR_CELLS)
    lines.append(f"| {name} | {ROWS[name][0]} | {len(done)} | {mean['k1']:.1%} / **{mean['k5']:.1%}** "
                 f"({spread:.1%}) / {mean['k15']:.1%} | {cells} |")
  return "\n".join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True)
  parser.add_argument("--seeds", default="0,1")
  parser.add_argument("--only", default="", help="comma-separated row names (default: all)")
  parser.add_argument("--common", default="", help="overrides for every run, space- or comma-separated")
  parser.add_argument("--variant", default="mu")
  args = parser.parse_args()
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  names = [n for n in args.only.split(",") if n] or list(ROWS)
  unknown = [n for n in names if n not in ROWS]
  if unknown:
    sys.exit(f"ablations: unknown rows {unknown}; choose from {list(ROWS)}")
  seeds = [int(s) for s in args.seeds.split(",")]
  common = [o for o in args.common.replace(",", " ").split() if o]
  for name in names:
    for seed in seeds:
      workdir = os.path.join(args.out, f"{name}_s{seed}")
      if results(workdir) is not None:
        continue
      os.makedirs(workdir, exist_ok=True)
      cmd = [sys.executable, "-m", "synclipmae.cli", "pretrain", f"--config={root}/configs/pretrain.py:{args.variant}",
             f"--workdir={workdir}", f"--config.seed={seed}",
             *(f"--config.{o}" for o in common + ROWS[name][1])]
      print(f"run {name} seed {seed}: {' '.join(cmd[3:])}", flush=True)
      with open(os.path.join(workdir, "ablation.log"), "w") as log:
        code = subprocess.call(cmd, cwd=root, stdout=log, stderr=subprocess.STDOUT)
      if code:
        print(f"  failed with exit {code}: see {workdir}/ablation.log", flush=True)
  text = table(args.out, names, seeds)
  with open(os.path.join(args.out, "ablations.md"), "w") as f:
    f.write(text + "\n")
  print(text)


if __name__ == "__main__":
  main()

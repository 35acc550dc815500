#!/usr/bin/env bash
# Does the sync accuracy come from the contrastive objective? Pretrains VARIANT twice, with the contrastive
# weights at their defaults and at 0 (both the global InfoNCE, loss.con, and its same-clip form, loss.con_clip),
# and prints both zero-shot sync accuracies (a leak in the evaluation would show up as the run without any
# contrastive term scoring far above chance).
#
#   bash experiments/ablate_contrastive.sh [VARIANT=mu] [OUT=runs/ablate_contrastive] [extra --config.* flags]
set -euo pipefail
cd "$(dirname "$0")/.."
variant=${1:-mu}
out=${2:-runs/ablate_contrastive}
shift $(( $# < 2 ? $# : 2 ))
bin=$( [ -x .venv/bin/synclipmae ] && echo .venv/bin/synclipmae || echo synclipmae )
for con in default 0; do
  flags=$( [ "$con" = default ] && echo "" || echo "--config.loss.con=0 --config.loss.con_clip=0" )
  "$bin" pretrain --config="configs/pretrain.py:$variant" --workdir="$out/con_$con" $flags "$@"
done
python3 - "$out" <<'PY'
import json, sys
for name in ("con_default", "con_0"):
    r = json.load(open(f"{sys.argv[1]}/{name}/sync_eval.json"))
    print(f"{name:12s} accuracy {r['accuracy']:.1%}  (K={r['context_frames']}, {r['num_samples']} samples, "
          f"chance {r['chance_accuracy']:.1%})")
PY

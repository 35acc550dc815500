#!/usr/bin/env bash
# The `tiny` variant pretrained end to end with a frozen wav2vec 2.0 as its audio encoder: builds a small wav2vec
# 2.0 at random initialisation with transformers (PyTorch; the test extra), saves it as a Hugging Face directory,
# and runs the real command line on it (load, train, checkpoint, sync evaluation). Nothing is downloaded.
#
#   bash experiments/tiny_wav2vec2.sh [OUT=runs/tiny_wav2vec2] [extra --config.* flags]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/tiny_wav2vec2}
shift $(( $# < 1 ? $# : 1 ))
bin=$( [ -x .venv/bin/python ] && echo .venv/bin || dirname "$(command -v python3)" )
"$bin/python" - "$out/wav2vec2" <<'PY'
import sys, torch, transformers
# The `test` geometry of synclipmae/models/wav2vec2.py: the real conv stack (hop 320, receptive field 400), narrow.
config = transformers.Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, conv_dim=(16,) * 7, num_conv_pos_embeddings=16,
                                     num_conv_pos_embedding_groups=4)
torch.manual_seed(0)
transformers.Wav2Vec2Model(config).save_pretrained(sys.argv[1])
print("saved a random wav2vec 2.0 to", sys.argv[1])
PY
"$bin/synclipmae" pretrain --config=configs/pretrain.py:tiny --workdir="$out/run" \
  --config.model.audio.encoder=wav2vec2 --config.model.audio.wav2vec2.path="$out/wav2vec2" \
  --config.model.audio.wav2vec2.geometry=test --config.train.num_steps=60 --config.train.checkpoint_every=30 \
  --config.eval.num_samples=100 "$@"

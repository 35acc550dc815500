"""Parameter counts of every SyncLipMAE variant, built abstractly with nnx.eval_shape (nothing is allocated).

    python experiments/param_counts.py

Also checks that the `large` encoder backbone (without prompt tokens and heads) has the Sapiens-0.3B / ViT-L/16
geometry: width 1024, 24 layers, 16 heads, patch 16, no CLS token, fixed sin-cos positions.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # The repo root, for configs/.

from flax import nnx  # noqa: E402

from configs import pretrain  # noqa: E402
from synclipmae.models import SyncLipMAE, param_counts  # noqa: E402

VARIANTS = ("mu", "tiny", "small", "base", "large")


def vit_backbone_params(width: int, depth: int, patch: int, mlp_ratio: float = 4.0) -> int:
  """A ViT without CLS token and with fixed positions: patch embedding, `depth` pre-LN blocks, final LayerNorm."""
  hidden = int(width * mlp_ratio)
  block = 4 * (width * width + width) + 2 * width * hidden + hidden + width + 4 * width
  return patch * patch * 3 * width + width + depth * block + 2 * width


def main() -> None:
  header = (f"{'variant':8} {'enc W/D/H':>12} {'patch':>5} {'image':>5} {'encoder':>12} {'(backbone)':>12} "
            f"{'audio enc':>10} {'adapter':>10} {'decoder':>11} {'total':>12} {'build s':>7}")
  print(header)
  print("-" * len(header))
  for variant in VARIANTS:
    cfg = pretrain.model_config(variant)
    start = time.perf_counter()
    model = nnx.eval_shape(lambda: SyncLipMAE(cfg, rngs=nnx.Rngs(0)))
    seconds = time.perf_counter() - start
    c = param_counts(model)
    e = cfg.encoder
    print(f"{variant:8} {f'{e.width}/{e.depth}/{e.num_heads}':>12} {cfg.patch_size:>5} {cfg.image_size:>5} "
          f"{c['encoder']:>12,} {c['encoder_backbone']:>12,} {c['audio_encoder']:>10,} {c['audio_adapter']:>10,} "
          f"{c['decoder']:>11,} {c['total']:>12,} {seconds:>7.1f}")
    if e.get("stem", "linear") == "linear":  # mu's conv stem is not a ViT patch embedding.
      assert c["encoder_backbone"] == vit_backbone_params(e.width, e.depth, cfg.patch_size, e.mlp_ratio), variant

  cfg = pretrain.model_config("large")
  e = cfg.encoder
  model = nnx.eval_shape(lambda: SyncLipMAE(cfg, rngs=nnx.Rngs(0)))
  geometry = (e.width, e.depth, e.num_heads, cfg.patch_size)
  built = (model.encoder.width, len(model.encoder.blocks), model.encoder.blocks[0].attn.num_heads,
           model.encoder.patch_size)
  backbone = param_counts(model)["encoder_backbone"]
  assert geometry == built == (1024, 24, 16, 16), (geometry, built)
  assert abs(backbone - 303e6) / 303e6 < 0.02, backbone
  print(f"\nlarge encoder backbone: width/depth/heads/patch = {'/'.join(map(str, built))}, {backbone:,} params "
        f"(ViT-L/16 without CLS: {vit_backbone_params(1024, 24, 16):,}; Sapiens-0.3B / ViT-L geometry: OK)")


if __name__ == "__main__":
  main()

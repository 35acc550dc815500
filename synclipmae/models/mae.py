"""`model.mode="mae"`: a plain masked autoencoder of single frames (He et al. 2022), built from SyncLipMAE's parts.

One view (clean frames, uniform random mask), no prompt tokens, no audio branch, and the decoder conditioned on
nothing: the paper's "single bypass, no audio" ablation, and the model to hold against other MAE code for speed
(experiments/bench_vitmae.py). The encoder is `FrameEncoder` without its prompt tokens (its `backbone`), the
decoder `Decoder` with self-attention blocks only, so both share every layer, init and the remat / dtype options
with the full model, and the train step (train/step.py) runs either through the same masking and reconstruction
loss.
"""

from __future__ import annotations

import jax
import ml_collections
from flax import nnx

from synclipmae.models.decoder import Decoder
from synclipmae.models.encoder import FrameEncoder
from synclipmae.models.synclipmae import SyncLipMAE, compute_dtype

MODES = ("synclipmae", "mae")  # config.model.mode


class MAE(nnx.Module):
  """Built from the model config like SyncLipMAE: `MAE(cfg, rngs=nnx.Rngs(0))`. Uses the encoder and decoder
  geometry, patch size, dtype, remat, encoder.stem / pos_embed / cls_token and decoder.patch_stats; the prompt,
  audio and conditioning options do not apply."""

  def __init__(self, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs, dtype=None):
    dtype = compute_dtype(dtype or cfg.get("dtype", "float32"))
    self.encoder = FrameEncoder(cfg, rngs=rngs, dtype=dtype, prompts=False)
    self.decoder = Decoder(cfg, rngs=rngs, dtype=dtype, conditioned=False)

  def trainable_filter(self) -> nnx.filterlib.Filter:
    return nnx.Param

  def __call__(self, inputs: dict[str, jax.Array], *, num_frames: int | None = None) -> dict[str, jax.Array]:
    """inputs: "frames" [N,H,W,3] in [0,1], "keep_uniform" int32 [N,K] (the visible patches).

    Returns {"patches_uniform": [N,K,E] the encoder's visible-patch outputs, "recon_video": [N,P,p*p*3] every
    patch as the decoder draws it, "stats_video": [N,P,2] with decoder.patch_stats}: the keys SyncLipMAE uses for
    the same quantities, so one reconstruction loss serves both."""
    del num_frames  # Frames are independent; accepted for the train step's uniform call.
    keep = inputs["keep_uniform"]
    patches = self.encoder.backbone(inputs["frames"], keep)["patches"]
    recon, stats = self.decoder(patches, keep)
    return {"patches_uniform": patches, "recon_video": recon, **({} if stats is None else {"stats_video": stats})}


def build_model(cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs) -> nnx.Module:
  """The model `cfg.mode` names: SyncLipMAE (default) or MAE."""
  mode = cfg.get("mode", "synclipmae")
  if mode not in MODES:
    raise ValueError(f"model.mode={mode!r}: expected one of {MODES}")
  return MAE(cfg, rngs=rngs) if mode == "mae" else SyncLipMAE(cfg, rngs=rngs)

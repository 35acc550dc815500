"""model.mode="mae": a plain MAE (one view, no prompt tokens, no audio) built from SyncLipMAE's parts, trained by the
same step, refused by the token-level API, and held against Hugging Face's ViTMAE at the same geometry."""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import pretrain as pretrain_config
from synclipmae import export, inference, masking
from synclipmae.commands import pretrain as pretrain_command
from synclipmae.models.mae import MAE, build_model
from synclipmae.models.synclipmae import ENCODER_EXTRAS, SyncLipMAE
from synclipmae.train import checkpoint
from test_train import REPO, small_config

sys.path.insert(0, REPO)
from experiments import bench_vitmae  # noqa: E402


def _param_names(model):
  return {"/".join(map(str, path)) for path, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def test_mae_is_the_plain_vit_and_an_unconditioned_decoder():
  cfg = pretrain_config.get_config("mu").model
  cfg.mode = "mae"
  mae = build_model(cfg, rngs=nnx.Rngs(0))
  assert isinstance(mae, MAE)
  names = _param_names(mae)
  assert {n.split("/")[0] for n in names} == {"encoder", "decoder"}  # No audio branch, no temperature.
  assert not any(word in n for n in names for word in ("cross_attn", "cond_proj", "cond_type", "norm_context"))
  # The encoder is exactly SyncLipMAE's plain ViT: its parameters without the prompt tokens and factor heads.
  full = _param_names(SyncLipMAE(pretrain_config.get_config("mu").model, rngs=nnx.Rngs(0)))
  backbone = {n for n in full if n.startswith("encoder/") and n.split("/")[1] not in ENCODER_EXTRAS}
  assert {n for n in names if n.startswith("encoder/")} == backbone
  with pytest.raises(ValueError, match="no prompt tokens"):
    mae.encoder(jnp.zeros((1, 64, 64, 3)))
  cfg.mode = "vae"
  with pytest.raises(ValueError, match="model.mode='vae'"):
    build_model(cfg, rngs=nnx.Rngs(0))


def test_mae_reconstruction_never_sees_masked_pixels():
  cfg = pretrain_config.get_config("mu").model
  cfg.mode = "mae"
  model = MAE(cfg, rngs=nnx.Rngs(0))
  frames = jax.random.uniform(jax.random.key(0), (2, 64, 64, 3))
  keep = masking.uniform_keep(jax.random.key(1), 2, 64, 16)
  out = model({"frames": frames, "keep_uniform": keep})
  assert out["recon_video"].shape == (2, 64, 8 * 8 * 3) and out["patches_uniform"].shape == (2, 16, 128)
  masked = np.setdiff1d(np.arange(64), np.asarray(keep[0]))[0]
  row, col = divmod(int(masked), 8)
  changed = frames.at[0, row * 8:(row + 1) * 8, col * 8:(col + 1) * 8].set(1.0)
  np.testing.assert_array_equal(model({"frames": changed, "keep_uniform": keep})["recon_video"], out["recon_video"])


def test_mae_mode_trains_on_reconstruction_alone_and_is_refused_as_a_synclipmae(synthetic_corpus, tmp_path,
                                                                                 capsys):
  config = small_config(synthetic_corpus, num_steps=8, log_every=1, checkpoint_every=8)
  config.model.mode = "mae"
  config.optim.lr = 1e-3
  pretrain_command.train_and_evaluate(config, str(tmp_path))
  assert "no sync evaluation: model.mode='mae'" in capsys.readouterr().out
  lines = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  assert {"loss", "loss_rec_video", "loss_rec_stats"} <= lines[-1].keys()
  assert not {"loss_rec_audio", "loss_con", "loss_xcov", "temperature"} & lines[-1].keys()
  assert lines[-1]["loss_rec_video"] < lines[0]["loss_rec_video"]
  model, _, step = checkpoint.load_model(tmp_path)
  assert isinstance(model, MAE) and step == 8
  for load in (inference.load_pretrained, lambda path: export.export(path, tmp_path / "export")):
    with pytest.raises(inference.ModelFileError, match="model.mode='mae' run"):
      load(tmp_path)


def test_vitmae_comparison_runs_both_sides_at_one_geometry():
  """The comparison script builds Hugging Face's ViTMAE with our config's geometry: the parameter counts differ by
  exactly their CLS token and their two position tables (theirs are stored, ours computed)."""
  shrink = ["model.encoder.depth=1", "model.decoder.depth=1", "data.batch_size=1", "data.num_frames=4"]
  r = bench_vitmae.compare("tiny", steps=1, overrides=shrink)
  patches, width, dwidth = (64 // 8) ** 2, 192, 128
  assert r["their_params"] - r["our_params"] == width + (patches + 1) * (width + dwidth)
  assert r["images"] == 4 and r["ours_s"] > 0 and r["theirs_s"] > 0 and r["ratio"] > 0

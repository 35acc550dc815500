"""Initialising the frame encoder from ViT / MAE / Sapiens checkpoints: parity with Hugging Face ViTMAEModel,
position-table resizing, Sapiens (mmpretrain) and MAE (timm) layouts, one-line errors, and a training run that
starts from the loaded weights.

The references are random-initialised models made here (transformers 4.57.6 PyTorch ViTMAE) or checkpoints written
here with the layouts' tensor names; nothing is downloaded.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import save_file

from configs import pretrain as pretrain_config
from synclipmae.models import FrameEncoder
from synclipmae.models import vit as vit_lib
from synclipmae.pretrained import checkpoint_files as cf
from synclipmae.pretrained import vit

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def model_config(image=32, patch=8, width=64, depth=2, heads=4, pos_embed="learned", cls_token=True, stem="linear"):
  cfg = pretrain_config.model_config("mu")
  cfg.image_size, cfg.patch_size, cfg.prompt_dim = image, patch, 16
  cfg.encoder.update(width=width, depth=depth, num_heads=heads, pos_embed=pos_embed, cls_token=cls_token, stem=stem,
                     mlp_ratio=4.0,  # The ViT / MAE geometry of the references (mu itself uses 2),
                     mouth_private=False)  # and their attention: every token reads every patch.
  return cfg


def param_variables(encoder, extras=False):
  """The backbone's params by path, or (extras=True) those of the prompt tokens and factor heads."""
  flat = nnx.to_flat_state(nnx.state(encoder, nnx.Param))
  is_extra = lambda path: str(path[0]).startswith(("prompt_tokens", "head_"))
  return {"/".join(map(str, path)): v for path, v in flat if is_extra(path) == extras}


def backbone_params(encoder):
  return {k: np.asarray(v[...]) for k, v in param_variables(encoder).items()}


def extras(encoder):
  return {k: np.asarray(v[...]) for k, v in param_variables(encoder, extras=True).items()}


# ---------------------------------------------------------------------------------------------------------------
# Hugging Face ViTMAE.

def save_hf(directory, *, pretraining=False, eps=1e-6, image=32, seed=0):
  """A random ViTMAE (every tensor perturbed, so each mapping matters) saved with save_pretrained; returns its ViT."""
  torch.manual_seed(seed)
  config = transformers.ViTMAEConfig(
      hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256, image_size=image,
      patch_size=8, mask_ratio=0.75, layer_norm_eps=eps, decoder_hidden_size=32, decoder_num_hidden_layers=1,
      decoder_num_attention_heads=4, decoder_intermediate_size=64)
  model = (transformers.ViTMAEForPreTraining if pretraining else transformers.ViTMAEModel)(config).eval()
  with torch.no_grad():
    for p in model.parameters():  # Includes the stored position table and its (zero) CLS row.
      p.add_(0.05 * torch.randn_like(p))
  model.save_pretrained(directory)
  return model.vit if pretraining else model


@pytest.mark.parametrize("pretraining, eps", [(False, 1e-6), (True, 1e-12)])
def test_matches_hf_vitmae_on_the_same_kept_patches(tmp_path, pretraining, eps):
  """ViTMAEModel with fixed noise keeps argsort(noise)[:, :len_keep], in that order; we pass those as `keep`.

  eps 1e-12 is what Hugging Face ViTMAE configs declare (MAE itself trained with the encoder's 1e-6): patch tokens
  still agree within 1e-4; the CLS token, small (init std 0.02) so that eps matters in its first LayerNorm, within
  1e-3 (measured 1e-6 / 1.5e-6 with equal eps; 6e-6 / 9e-5 with 1e-12).
  """
  reference = save_hf(tmp_path, pretraining=pretraining, eps=eps)
  encoder = FrameEncoder(model_config(), rngs=nnx.Rngs(1))
  summary = vit.load_into(encoder, tmp_path)
  assert summary.startswith("Hugging Face ViTMAE/ViT layout, width 64, depth 2, patch 8")

  rng = np.random.default_rng(0)
  frames = rng.uniform(size=(3, 32, 32, 3)).astype(np.float32)
  pixels = (frames - np.asarray(vit_lib.IMAGENET_MEAN)) / np.asarray(vit_lib.IMAGENET_STD)
  noise = torch.from_numpy(rng.uniform(size=(3, 16)).astype(np.float32))
  keep = torch.argsort(noise, dim=1)[:, :int(16 * (1 - 0.75))].numpy().astype(np.int32)
  assert not np.all(np.diff(keep, axis=1) > 0)  # Not sorted: the order of the kept tokens is exercised too.
  with torch.no_grad():
    hidden = reference(torch.from_numpy(pixels.transpose(0, 3, 1, 2)).float(), noise=noise).last_hidden_state.numpy()

  ours = jax.jit(lambda f, k: encoder.backbone(f, k))(jnp.asarray(frames), jnp.asarray(keep))
  assert hidden.shape == (3, 5, 64) and ours["patches"].shape == (3, 4, 64)
  np.testing.assert_allclose(ours["patches"], hidden[:, 1:], rtol=0, atol=1e-4)
  np.testing.assert_allclose(ours["cls"], hidden[:, 0], rtol=0, atol=1e-4 if eps == 1e-6 else 1e-3)
  # The full encoder (with prompt tokens) still runs and keeps its output dict.
  out = encoder(jnp.asarray(frames), jnp.asarray(keep))
  assert set(out) == {"patches", "z_id", "z_voc", "z_amb"} and out["patches"].shape == (3, 4, 64)


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints written with a layout's names (read off mmpretrain's and timm's VisionTransformer).

MMPRETRAIN = {"patch": "backbone.patch_embed.projection", "cls": "backbone.cls_token", "pos": "backbone.pos_embed",
              "layer": "backbone.layers.{i}.", "norm1": "ln1", "qkv": "attn.qkv", "out": "attn.proj", "norm2": "ln2",
              "fc1": "ffn.layers.0.0", "fc2": "ffn.layers.1", "norm": "backbone.ln1"}
TIMM = {"patch": "patch_embed.proj", "cls": "cls_token", "pos": "pos_embed", "layer": "blocks.{i}.",
        "norm1": "norm1", "qkv": "attn.qkv", "out": "attn.proj", "norm2": "norm2", "fc1": "mlp.fc1", "fc2": "mlp.fc2",
        "norm": "norm"}


def export(encoder, names, cls_row=None):
  """The encoder's backbone as a PyTorch-layout state dict with `names`; `cls_row`: a CLS position row to write
  (the CLS token is written minus it, so a loader that folds the row back in recovers the encoder's token)."""
  a = lambda x: np.array(x[...], np.float32)
  e, p = encoder.width, encoder.patch_size
  t = {}

  def linear(name, layer):
    t[name + ".weight"], t[name + ".bias"] = a(layer.kernel).T.copy(), a(layer.bias)

  def norm(name, layer):
    t[name + ".weight"], t[name + ".bias"] = a(layer.scale), a(layer.bias)

  t[names["patch"] + ".weight"] = a(encoder.patch_embed.proj.kernel).reshape(p, p, 3, e).transpose(3, 2, 0, 1).copy()
  t[names["patch"] + ".bias"] = a(encoder.patch_embed.proj.bias)
  for i, block in enumerate(encoder.blocks):
    layer = names["layer"].format(i=i)
    norm(layer + names["norm1"], block.norm1)
    t[layer + names["qkv"] + ".weight"] = np.concatenate([a(block.attn.q.kernel).T, a(block.attn.k.kernel).T,
                                                          a(block.attn.v.kernel).T])
    t[layer + names["qkv"] + ".bias"] = np.concatenate([a(block.attn.q.bias), a(block.attn.k.bias),
                                                        a(block.attn.v.bias)])
    linear(layer + names["out"], block.attn.out)
    norm(layer + names["norm2"], block.norm2)
    linear(layer + names["fc1"], block.mlp.fc1)
    linear(layer + names["fc2"], block.mlp.fc2)
  norm(names["norm"], encoder.norm)
  if encoder.pos_embed is not None:
    rows = [a(encoder.pos_embed)] if cls_row is None else [cls_row[None], a(encoder.pos_embed)]
    t[names["pos"]] = np.concatenate(rows)[None]
  if encoder.cls_token is not None:
    t[names["cls"]] = (a(encoder.cls_token) - (0 if cls_row is None else cls_row))[None, None]
  return t


def random_encoder(seed, **cfg):
  """An encoder whose position table is not sin-cos (as a trained one)."""
  encoder = FrameEncoder(model_config(**cfg), rngs=nnx.Rngs(seed))
  if encoder.pos_embed is not None:
    encoder.pos_embed[...] = np.random.default_rng(seed).normal(size=encoder.pos_embed.shape).astype(np.float32)
  return encoder


def save_safetensors(path, tensors):
  # C order: safetensors 0.8.0's numpy save_file writes a Fortran-ordered array's memory as is (transposed data).
  save_file({k: np.ascontiguousarray(v, np.float32) for k, v in tensors.items()}, str(path))
  return path


def save_torch(path, tensors, wrapped=True):
  state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()}
  torch.save({"meta": {"epoch": 1600}, "state_dict": state} if wrapped else state, path)
  return path


def test_sapiens_layout_round_trip(tmp_path):
  source = random_encoder(0)
  cls_row = np.random.default_rng(5).normal(size=64).astype(np.float32)
  tensors = export(source, MMPRETRAIN, cls_row=cls_row)
  tensors["neck.decoder_embed.weight"] = np.zeros((32, 64), np.float32)  # The MAE decoder: ignored.
  tensors["neck.mask_token"] = np.zeros((1, 1, 32), np.float32)
  path = save_torch(tmp_path / "sapiens.pth", tensors)

  target = FrameEncoder(model_config(), rngs=nnx.Rngs(1))
  fresh = extras(target)
  summary = vit.load_into(target, path)
  assert summary == "Sapiens/mmpretrain layout, width 64, depth 2, patch 8"
  expected, loaded = backbone_params(source), backbone_params(target)
  assert expected.keys() == loaded.keys() and "pos_embed" in loaded and "cls_token" in loaded
  for key in expected:
    np.testing.assert_allclose(loaded[key], expected[key], rtol=0, atol=1e-6, err_msg=key)
  for key, value in extras(target).items():  # Prompt tokens and factor heads stay freshly initialised.
    np.testing.assert_array_equal(value, fresh[key], err_msg=key)
  frames = jnp.asarray(np.random.default_rng(1).uniform(size=(2, 32, 32, 3)), jnp.float32)
  np.testing.assert_allclose(target.backbone(frames)["patches"], source.backbone(frames)["patches"], atol=1e-5)

  # Without a CLS token in the encoder (Sapiens' downstream models): the token and its position row are dropped.
  no_cls = FrameEncoder(model_config(cls_token=False), rngs=nnx.Rngs(1))
  assert vit.load_into(no_cls, path).endswith("CLS token dropped (model.encoder.cls_token=False)")
  np.testing.assert_array_equal(no_cls.pos_embed[...], source.pos_embed[...])
  # A LayerNorm before the first block (CLIP-style pre_norm) is refused by name.
  tensors["backbone.pre_norm.weight"] = np.ones(64, np.float32)
  with pytest.raises(cf.CheckpointError, match=r"tensor 'backbone\.pre_norm\.weight' belongs to a LayerNorm before"):
    vit.load_into(target, save_torch(tmp_path / "pre_norm.pth", tensors))


def test_mae_timm_layout_without_prefix_and_cls_row(tmp_path):
  """Original MAE checkpoints: unprefixed timm names; a table without a CLS row and no CLS token also loads."""
  source = random_encoder(2, cls_token=False)
  tensors = export(source, TIMM)
  tensors["decoder_embed.weight"], tensors["mask_token"] = np.zeros((32, 64), np.float32), np.zeros((1, 1, 32))
  save_safetensors(tmp_path / "mae.safetensors", tensors)
  target = FrameEncoder(model_config(cls_token=False), rngs=nnx.Rngs(3))
  assert vit.load_into(target, tmp_path / "mae.safetensors").startswith("MAE/timm layout")
  for key, value in backbone_params(source).items():
    np.testing.assert_array_equal(backbone_params(target)[key], value, err_msg=key)


def _torch_bicubic(table, grid, to):
  """Reference resize: PyTorch bicubic with antialiasing (what timm uses for position embeddings)."""
  x = torch.from_numpy(np.array(table).reshape(*grid, -1)).permute(2, 0, 1)[None]
  out = torch.nn.functional.interpolate(x, size=to, mode="bicubic", align_corners=False, antialias=True)
  return out[0].permute(1, 2, 0).reshape(-1, table.shape[-1]).numpy()


@pytest.mark.parametrize("from_image, to_image", [(32, 64), (64, 32), (32, 32)])
def test_position_table_is_resized_to_the_crop_grid(tmp_path, from_image, to_image):
  source = random_encoder(0, image=from_image)
  cls_row = np.random.default_rng(7).normal(size=64).astype(np.float32)
  path = save_torch(tmp_path / "vit.pth", export(source, MMPRETRAIN, cls_row=cls_row), wrapped=False)
  target = FrameEncoder(model_config(image=to_image), rngs=nnx.Rngs(1))
  summary = vit.load_into(target, path)
  table = np.asarray(source.pos_embed[...])
  g, G = from_image // 8, to_image // 8
  if g == G:
    np.testing.assert_array_equal(target.pos_embed[...], table)  # The identity when the sizes match.
    assert "resized" not in summary
  else:
    assert f"position table resized {g}x{g} -> {G}x{G}" in summary
    np.testing.assert_allclose(target.pos_embed[...], _torch_bicubic(table, (g, g), (G, G)), rtol=0, atol=1e-5)
  np.testing.assert_allclose(target.cls_token[...], source.cls_token[...], atol=1e-6)  # CLS row: not resized.
  # At run time, a learned table meets another input size the same way.
  np.testing.assert_allclose(target.position_table((2 * G, 2 * G)),
                             _torch_bicubic(np.asarray(target.pos_embed[...]), (G, G), (2 * G, 2 * G)), atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# Errors: one line, naming the file and the tensor; the encoder is left unchanged.

def _error(encoder, path):
  before = backbone_params(encoder)
  with pytest.raises(cf.CheckpointError) as error:
    vit.load_into(encoder, path)
  message = str(error.value)
  assert "\n" not in message
  for key, value in backbone_params(encoder).items():
    np.testing.assert_array_equal(value, before[key])
  return message


def test_mismatched_and_broken_checkpoints_name_file_and_tensor(tmp_path):
  good = export(random_encoder(0), MMPRETRAIN)

  write = lambda name, tensors: save_safetensors(tmp_path / name, tensors)

  message = _error(FrameEncoder(model_config(width=32, heads=2), rngs=nnx.Rngs(0)), write("a.safetensors", good))
  assert message.startswith(f"{tmp_path / 'a.safetensors'}: tensor 'backbone.patch_embed.projection.weight' has "
                            "shape (64, 3, 8, 8)") and "model.encoder.width" in message
  assert "'backbone.layers.1.ln1.weight' is one layer too many: the checkpoint has 2 layers, the encoder 1" in _error(
      FrameEncoder(model_config(depth=1), rngs=nnx.Rngs(0)), tmp_path / "a.safetensors")
  assert "tensor 'backbone.patch_embed.projection.weight' has shape (64, 3, 8, 8)" in _error(
      FrameEncoder(model_config(patch=16), rngs=nnx.Rngs(0)), tmp_path / "a.safetensors")

  encoder = FrameEncoder(model_config(), rngs=nnx.Rngs(0))
  missing = {k: v for k, v in good.items() if k != "backbone.layers.1.attn.proj.weight"}
  assert "b.safetensors: tensor 'backbone.layers.1.attn.proj.weight' is missing" in _error(
      encoder, write("b.safetensors", missing))
  assert "c.safetensors: tensor 'backbone.layers.0.attn.extra' is unexpected" in _error(
      encoder, write("c.safetensors", {**good, "backbone.layers.0.attn.extra": np.zeros(3, np.float32)}))
  nan = dict(good, **{"backbone.layers.0.ffn.layers.1.bias": np.full(64, np.nan, np.float32)})
  assert "d.safetensors: tensor 'backbone.layers.0.ffn.layers.1.bias' has non-finite values" in _error(
      encoder, write("d.safetensors", nan))
  wide_mlp = dict(good, **{"backbone.layers.1.ffn.layers.0.0.weight": np.zeros((128, 64), np.float32)})
  assert "tensor 'backbone.layers.1.ffn.layers.0.0.weight' has shape (128, 64), expected (256, 64)" in _error(
      encoder, write("e.safetensors", wide_mlp))
  data = (tmp_path / "a.safetensors").read_bytes()
  (tmp_path / "f.safetensors").write_bytes(data[:len(data) // 2])
  assert "f.safetensors: unreadable safetensors file" in _error(encoder, tmp_path / "f.safetensors")
  assert "g.safetensors: no patch-embedding tensor of a known ViT layout" in _error(
      encoder, write("g.safetensors", {"fc.weight": np.zeros((2, 2), np.float32)}))

  # Options the checkpoint needs are named, never switched silently.
  assert "tensor 'backbone.pos_embed' is a position table other than the encoder's fixed sin-cos embedding; set " \
         "--config.model.encoder.pos_embed=learned" in _error(
             FrameEncoder(model_config(pos_embed="sincos"), rngs=nnx.Rngs(0)), tmp_path / "a.safetensors")
  assert "tensor 'backbone.patch_embed.projection.weight' is a linear patch embedding, the encoder has a conv stem; " \
         "set --config.model.encoder.stem=linear" in _error(
             FrameEncoder(model_config(stem="conv"), rngs=nnx.Rngs(0)), tmp_path / "a.safetensors")
  no_cls = export(random_encoder(0, cls_token=False), MMPRETRAIN)
  assert "tensor 'backbone.cls_token' is missing: the encoder has a CLS token" in _error(
      encoder, write("h.safetensors", no_cls))
  odd = dict(good, **{"backbone.pos_embed": np.zeros((1, 12, 64), np.float32)})
  assert "tensor 'backbone.pos_embed' has 12 positions, not a square patch grid" in _error(
      encoder, write("i.safetensors", odd))


def test_hf_config_geometry_is_checked(tmp_path):
  save_hf(tmp_path)
  message = _error(FrameEncoder(model_config(heads=2), rngs=nnx.Rngs(0)), tmp_path)
  assert message == (f"{tmp_path / 'config.json'}: num_attention_heads=4 but the encoder has 2 "
                     "(model.encoder.num_heads)")
  message = _error(FrameEncoder(model_config(pos_embed="sincos"), rngs=nnx.Rngs(0)), tmp_path)
  assert "model.safetensors: tensor 'embeddings.position_embeddings' is a position table other than" in message


def test_sincos_checkpoint_loads_into_the_default_encoder(tmp_path):
  """A table equal to the encoder's own sin-cos embedding needs no flag (and a CLS row of zeros is dropped)."""
  source = random_encoder(0, pos_embed="sincos", cls_token=False)
  tensors = export(source, TIMM)
  tensors["pos_embed"] = np.concatenate([np.zeros((1, 64)), vit_lib.sincos_pos_embed_2d(64, (4, 4))])[None]
  tensors["cls_token"] = np.zeros((1, 1, 64))
  save_safetensors(tmp_path / "m.safetensors", tensors)
  target = FrameEncoder(model_config(pos_embed="sincos", cls_token=False), rngs=nnx.Rngs(1))
  assert "CLS token dropped" in vit.load_into(target, tmp_path / "m.safetensors")
  frames = jnp.asarray(np.random.default_rng(0).uniform(size=(2, 32, 32, 3)), jnp.float32)
  np.testing.assert_array_equal(target.backbone(frames)["patches"], source.backbone(frames)["patches"])


def test_large_geometry_with_pretrained_options():
  """`large` with a learned table and a CLS token: the backbone gains exactly P*E + E parameters (nothing allocated;
  experiments/param_counts.py checks the default `large` backbone against ViT-L/16)."""
  cfg = pretrain_config.model_config("large")
  cfg.encoder.depth = 2  # The difference does not depend on the depth; keeps tracing short.
  count = lambda encoder: sum(v.size for v in param_variables(encoder).values())
  plain = count(nnx.eval_shape(lambda: FrameEncoder(cfg, rngs=nnx.Rngs(0))))
  cfg.encoder.update(pos_embed="learned", cls_token=True)
  encoder = nnx.eval_shape(lambda: FrameEncoder(cfg, rngs=nnx.Rngs(0)))
  assert count(encoder) == plain + 16 * 16 * 1024 + 1024
  assert encoder.pos_embed.shape == (256, 1024) and encoder.cls_token.shape == (1024,)


# ---------------------------------------------------------------------------------------------------------------
# End to end: `pretrain` with --config.init.encoder starts from the checkpoint.

def test_pretrain_starts_from_the_checkpoint(synthetic_corpus, tmp_path, capsys):
  from synclipmae.train import loop, step as step_lib
  config = pretrain_config.get_config("mu")
  m = config.model
  m.encoder.update(width=32, depth=1, num_heads=2, pos_embed="learned", cls_token=True, stem="linear")
  m.decoder.update(width=32, depth=1, num_heads=2)
  m.prompt_dim, m.audio.logmel.width, m.audio.adapter_hidden = 16, 16, 32
  config.data.update(dir=str(synthetic_corpus), batch_size=8, num_frames=4)
  config.optim.update(warmup_steps=2, lr=1e-3)
  config.train.update(num_steps=2, log_every=1, checkpoint_every=2)

  source = FrameEncoder(m, rngs=nnx.Rngs(7))
  source.pos_embed[...] = np.random.default_rng(7).normal(size=source.pos_embed.shape).astype(np.float32)
  config.init.encoder = str(save_torch(tmp_path / "sapiens.pth", export(source, MMPRETRAIN)))
  result = loop.pretrain(config, str(tmp_path / "run"))
  assert "loaded pretrained weights: frame encoder backbone <- " in capsys.readouterr().out

  trained = loop.model_from_state(result["graphdef"], result["state"]).encoder
  scratch = step_lib.create_model(config).encoder  # What the run would have started from without the checkpoint.
  expected, after = backbone_params(source), backbone_params(trained)
  # Two AdamW steps (learning rate 0, then 5e-4) move a parameter by about 1e-3 at most.
  for key, value in expected.items():
    np.testing.assert_allclose(after[key], value, rtol=0, atol=2e-3, err_msg=key)
  assert np.abs(after["blocks/0/attn/q/kernel"] - backbone_params(scratch)["blocks/0/attn/q/kernel"]).max() > 0.05
  for key, value in extras(scratch).items():  # Prompt tokens and heads: the run's own fresh initialisation.
    np.testing.assert_allclose(extras(trained)[key], value, rtol=0, atol=2e-3, err_msg=key)

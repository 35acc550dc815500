"""wav2vec 2.0 in Flax NNX against the PyTorch reference (transformers 4.57), its checkpoint loader, and its use as
the frozen audio encoder of a pretraining run.

The references are small random-initialised transformers models saved locally with `save_pretrained`: nothing is
downloaded. Every hidden state must agree within 1e-4 (float32) on random 1-3 s waveforms, single and padded.
"""

import dataclasses
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file, save_file

from synclipmae.models import wav2vec2 as model_lib
from synclipmae.pretrained import checkpoint_files as cf
from synclipmae.pretrained import wav2vec2 as loader

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

SR = 16000
# Small, but every mapping is exercised: conv widths that change from layer to layer, 3 encoder layers, grouped pos
# conv with an even kernel (one frame dropped), heads of width 8.
SMALL = model_lib.Wav2Vec2Config(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=48,
                                 conv_dim=(16, 24, 16, 24, 16, 24, 32), num_conv_pos_embeddings=16,
                                 num_conv_pos_embedding_groups=4, normalize=False)
COMBINATIONS = [("group", False), ("group", True), ("layer", False), ("layer", True)]


def hf_config(cfg: model_lib.Wav2Vec2Config, **extra):
  fields = {f: getattr(cfg, f) for f in model_lib.Wav2Vec2Config.ARCHITECTURE}
  return transformers.Wav2Vec2Config(**fields, **extra)


def save_reference(directory, cfg, cls=None, seed=0, **save_kwargs):
  """A random-initialised transformers model of `cfg` saved with save_pretrained; returns it (eval mode)."""
  torch.manual_seed(seed)
  model = (cls or transformers.Wav2Vec2Model)(hf_config(cfg, vocab_size=12, num_codevectors_per_group=8,
                                                        codevector_dim=16, proj_codevector_dim=16)).eval()
  model.save_pretrained(directory, **save_kwargs)
  return model


def reference_hidden_states(model, waveform, attention_mask=None):
  with torch.no_grad():
    mask = None if attention_mask is None else torch.from_numpy(attention_mask.astype(np.int64))
    out = model(torch.from_numpy(waveform), attention_mask=mask, output_hidden_states=True)
  return [h.numpy() for h in out.hidden_states]


@nnx.jit
def hidden_states(model, waveform, attention_mask):
  return model.all_hidden_states(waveform, attention_mask)


def assert_parity(ours, theirs, atol=1e-4):
  assert len(ours) == len(theirs)
  for i, (a, b) in enumerate(zip(ours, theirs)):
    assert a.shape == b.shape, (i, a.shape, b.shape)
    np.testing.assert_allclose(np.asarray(a), b, rtol=0, atol=atol, err_msg=f"hidden state {i}")


def waveforms(seed, lengths_s):
  """Random speech-like waveforms (noise under a slow envelope) of the given lengths, zero-padded, with the mask."""
  rng = np.random.default_rng(seed)
  lengths = [int(s * SR) for s in lengths_s]
  x = np.zeros((len(lengths), max(lengths)), np.float32)
  mask = np.zeros(x.shape, bool)
  for i, n in enumerate(lengths):
    envelope = 0.05 + 0.3 * np.abs(np.sin(np.linspace(0, 6 * np.pi, n) + i))
    x[i, :n] = (rng.normal(size=n) * envelope).astype(np.float32)
    mask[i, :n] = True
  return x, mask


@pytest.fixture(scope="module")
def references(tmp_path_factory):
  out = {}
  for norm, stable in COMBINATIONS:
    cfg = dataclasses.replace(SMALL, feat_extract_norm=norm, do_stable_layer_norm=stable, conv_bias=norm == "layer")
    directory = tmp_path_factory.mktemp(f"w2v_{norm}_{stable}")
    out[norm, stable] = (directory, save_reference(directory, cfg, seed=len(out)), cfg)
  return out


@pytest.mark.parametrize("norm, stable", COMBINATIONS)
def test_hidden_states_match_pytorch(references, norm, stable):
  directory, reference, cfg = references[norm, stable]
  assert (directory / cf.SAFETENSORS).is_file()
  model = loader.load_wav2vec2(directory, normalize=False)
  assert model.config == cfg and model.frozen and model.num_layers == cfg.num_hidden_layers + 1

  single, _ = waveforms(1, [2.1])
  ours = hidden_states(model, jnp.asarray(single), None)
  assert ours[0].shape == (1, cfg.num_features(single.shape[1]), cfg.hidden_size)
  assert_parity(ours, reference_hidden_states(reference, single))

  # Padded batch of 1.3 s and 2.9 s: HF semantics everywhere, padded frames included.
  batch, mask = waveforms(2, [1.3, 2.9])
  ours = hidden_states(model, jnp.asarray(batch), jnp.asarray(mask))
  assert_parity(ours, reference_hidden_states(reference, batch, mask))
  # The padding really is masked: the short utterance's valid frames do not see what lies in its padding
  # (the layer-norm conv stack is per-frame; the group-norm one takes statistics over the padding, as in HF).
  if norm == "layer":
    noisy = batch.copy()
    noisy[0, mask[0].sum():] = np.random.default_rng(3).normal(size=(~mask[0]).sum())
    valid = int(cfg.num_features(mask[0].sum())) - 1  # The last frame's receptive field reaches into the padding.
    again = hidden_states(model, jnp.asarray(noisy), jnp.asarray(mask))
    for a, b in zip(ours, again):
      np.testing.assert_allclose(np.asarray(a)[0, :valid], np.asarray(b)[0, :valid], rtol=0, atol=1e-5)


def test_waveform_normalisation_matches_the_feature_extractor(references):
  directory, reference, _ = references["layer", True]
  batch, mask = waveforms(4, [1.7, 2.4])
  extractor = transformers.Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True)
  features = extractor([batch[0, :mask[0].sum()], batch[1]], sampling_rate=SR, padding=True, return_tensors="np")
  expected = reference_hidden_states(reference, features["input_values"].astype(np.float32),
                                     features["attention_mask"])
  model = loader.load_wav2vec2(directory, normalize=True)
  assert_parity(hidden_states(model, jnp.asarray(batch * 7.0), jnp.asarray(mask)), expected)  # Scale-free.


def test_pytorch_bin_old_weight_norm_names_and_task_checkpoints(references, tmp_path):
  _, reference, cfg = references["group", False]
  x, _ = waveforms(5, [1.1])
  expected = reference_hidden_states(reference, x)

  # pytorch_model.bin (torch present, weights-only loading).
  reference.save_pretrained(tmp_path / "bin", safe_serialization=False)
  assert (tmp_path / "bin" / cf.PYTORCH_BIN).is_file() and not (tmp_path / "bin" / cf.SAFETENSORS).exists()
  assert_parity(hidden_states(loader.load_wav2vec2(tmp_path / "bin", normalize=False), jnp.asarray(x), None),
                expected)

  # Pre-parametrisation weight-norm names (weight_g / weight_v), as in older checkpoints.
  old = tmp_path / "old"
  old.mkdir()
  renamed = {k.replace("parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1",
                                                                                 "weight_v"): v.numpy()
             for k, v in reference.state_dict().items()}
  assert "encoder.pos_conv_embed.conv.weight_g" in renamed and renamed["encoder.pos_conv_embed.conv.weight_g"].shape \
      == (1, 1, cfg.num_conv_pos_embeddings)  # weight_norm(dim=2): one norm per kernel tap.
  save_file(renamed, str(old / cf.SAFETENSORS))
  shutil.copy(tmp_path / "bin" / "config.json", old / "config.json")
  assert_parity(hidden_states(loader.load_wav2vec2(old, normalize=False), jnp.asarray(x), None), expected)

  # `wav2vec2.`-prefixed checkpoints with heads: CTC (lm_head) and pretraining (quantizer, projections).
  for cls in (transformers.Wav2Vec2ForCTC, transformers.Wav2Vec2ForPreTraining):
    task = save_reference(tmp_path / cls.__name__, cfg, cls=cls, seed=7)
    names = load_file(str(tmp_path / cls.__name__ / cf.SAFETENSORS))
    assert all(k.startswith(("wav2vec2.", "lm_head.", "quantizer.", "project_")) for k in names)
    assert_parity(hidden_states(loader.load_wav2vec2(tmp_path / cls.__name__, normalize=False), jnp.asarray(x),
                                None), reference_hidden_states(task.wav2vec2, x))


def _one_line_error(path, match, module=None):
  with pytest.raises(cf.CheckpointError, match=match) as error:
    if module is None:
      loader.load_wav2vec2(path, normalize=False)
    else:
      loader.load_into(module, path)
  assert "\n" not in str(error.value), str(error.value)
  return str(error.value)


def test_bad_checkpoints_name_the_file_and_the_tensor(references, tmp_path):
  source, _, cfg = references["group", False]
  good = load_file(str(source / cf.SAFETENSORS))
  config = json.loads((source / "config.json").read_text())

  def variant(name, tensors, config=config):
    directory = tmp_path / name
    directory.mkdir()
    save_file(tensors, str(directory / cf.SAFETENSORS))
    (directory / "config.json").write_text(json.dumps(config))
    return directory

  q = "encoder.layers.0.attention.q_proj.weight"
  message = _one_line_error(variant("shape", {**good, q: np.zeros((32, 16), np.float32)}),
                            rf"model\.safetensors: tensor '{q}' has shape \(32, 16\), expected \(32, 32\)")
  assert str(tmp_path / "shape") in message
  missing = {k: v for k, v in good.items() if k != "encoder.layers.2.final_layer_norm.bias"}
  _one_line_error(variant("missing", missing), "tensor 'encoder.layers.2.final_layer_norm.bias' is missing")
  extra = {**good, "encoder.layers.3.attention.q_proj.weight": good[q]}
  _one_line_error(variant("extra", extra), "tensor 'encoder.layers.3.attention.q_proj.weight' is unexpected")
  nan = {**good, q: np.full_like(good[q], np.nan)}
  _one_line_error(variant("nan", nan), f"tensor '{q}' has non-finite values")
  g = "encoder.pos_conv_embed.conv.parametrizations.weight.original0"
  _one_line_error(variant("g", {**good, g: np.ones((1, 32, 1), np.float32)}),
                  rf"tensor '{g}' has shape \(1, 32, 1\), expected \(1, 1, 16\)")
  no_pos = {k: v for k, v in good.items() if "pos_conv_embed.conv.parametrizations" not in k}
  _one_line_error(variant("no_pos", no_pos), f"tensor '{g}' is missing")

  # A checkpoint of another geometry: the config.json field is named before any tensor is read.
  deeper = variant("deeper", good, {**config, "num_hidden_layers": 4})
  built = nnx.eval_shape(lambda: model_lib.Wav2Vec2(cfg, rngs=nnx.Rngs(0)))
  _one_line_error(deeper, r"config\.json: num_hidden_layers=4 but the model was built with num_hidden_layers=3",
                  module=built)
  # A truncated (corrupt) file: the file and the first tensor whose bytes are cut off.
  cut = variant("cut", good)
  data = (cut / cf.SAFETENSORS).read_bytes()
  (cut / cf.SAFETENSORS).write_bytes(data[: len(data) * 2 // 3])
  _one_line_error(cut, r"cut/model\.safetensors: .*tensor '[\w.]+' .*truncated")
  with pytest.raises(TypeError, match="wav2vec 2.0 module"):
    loader.load_into(nnx.Linear(2, 2, rngs=nnx.Rngs(0)), source)


def test_layer_selection_and_geometries(references):
  assert model_lib.geometry("base").receptive_field == 400 and model_lib.geometry("base").hop_length == 320
  assert model_lib.geometry("test").receptive_field == 400 and model_lib.geometry("test").num_features(16000) == 49
  model = loader.load_wav2vec2(references["layer", True][0], layers=(0, 2))  # Not the last: no final LayerNorm.
  everything, picked = nnx.jit(lambda m, x: (m.all_hidden_states(x), m(x)))(model, jnp.asarray(waveforms(6, [1.0])[0]))
  assert model.num_layers == len(picked) == 2
  np.testing.assert_array_equal(picked[0], everything[0])
  np.testing.assert_array_equal(picked[1], everything[2])
  with pytest.raises(model_lib.Wav2Vec2ConfigError, match=r"layers=\(0, 3\)"):
    model_lib.Wav2Vec2(model_lib.geometry("test"), layers=(0, 3), rngs=nnx.Rngs(0))
  with pytest.raises(model_lib.Wav2Vec2ConfigError, match="feat_extract_norm='batch'"):
    model_lib.Wav2Vec2Config.from_hf({"feat_extract_norm": "batch"})
  base = nnx.eval_shape(lambda: model_lib.Wav2Vec2(model_lib.geometry("base"), rngs=nnx.Rngs(0)))
  num_params = sum(np.prod(v.shape) for v in jax.tree.leaves(nnx.state(base, nnx.Param)))
  assert 94e6 < num_params < 95.1e6  # facebook/wav2vec2-base: 94.4 M without masked_spec_embed.


def test_tiny_pretrains_with_a_frozen_pretrained_wav2vec2(synthetic_corpus, tmp_path):
  from configs import pretrain as pretrain_config
  from synclipmae.train import checkpoint, loop

  reference = save_reference(tmp_path / "w2v", model_lib.geometry("test"), seed=11)
  config = pretrain_config.get_config("tiny")
  assert config.model.audio.encoder == "logmel" and pretrain_config.get_config("small").model.audio.encoder == \
      "wav2vec2"
  config.model.audio.encoder = "wav2vec2"
  config.model.audio.wav2vec2.geometry = "test"
  # tiny's widths, one encoder and one decoder block: the compile dominates a 2-core CPU test (the full tiny
  # depth runs the same way, 3x slower to compile).
  config.model.encoder.depth = config.model.decoder.depth = 1
  config.data.update(dir=str(synthetic_corpus), batch_size=8, num_frames=4)
  config.optim.warmup_steps = 1
  config.train.update(num_steps=3, checkpoint_every=3, log_every=1)
  with pytest.raises(ValueError, match=r"model\.audio\.wav2vec2\.path"):  # No weights: refused unless allowed.
    loop.pretrain(config, str(tmp_path / "refused"))

  config.model.audio.wav2vec2.path = str(tmp_path / "w2v")
  result = loop.pretrain(config, str(tmp_path / "run"))
  lines = [json.loads(line) for line in open(result["metrics"])]
  assert [line["step"] for line in lines] == [1, 2, 3]
  assert all(np.isfinite(line["loss"]) and line["grad_norm"] > 0 for line in lines)

  model, _, step = checkpoint.load_model(tmp_path / "run")
  assert step == 3 and isinstance(model.audio_encoder, model_lib.Wav2Vec2)
  # Loaded from the checkpoint and untouched by 3 AdamW steps (frozen: no gradient, no weight decay).
  expected = reference.encoder.layers[1].feed_forward.intermediate_dense.weight.detach().numpy().T
  np.testing.assert_array_equal(model.audio_encoder.encoder.layers[1].feed_forward.intermediate_dense.kernel[...],
                                expected)
  assert all("audio_encoder" not in str(path) for path, _ in nnx.to_flat_state(nnx.state(
      model, model.trainable_filter())))


def test_precomputed_features_give_the_waveform_path_tokens(tiny_corpus, tmp_path):
  """Features stored once per clip, cut per window by the pipeline, give the tokens the waveform path gives when
  both see the same audio (a window covering the whole clip); a run with other settings is refused by name."""
  from configs import pretrain as pretrain_config
  from synclipmae.commands import precompute_audio
  from synclipmae.data import audio_features, pipeline
  from synclipmae.data.corpus import Corpus
  from synclipmae.models import audio as audio_lib
  from synclipmae.train import loop

  config = pretrain_config.get_config("mu")
  config.model.audio.encoder = "wav2vec2"
  config.model.audio.wav2vec2.update(geometry="test", allow_random=True)
  config.model.update(image_size=16, patch_size=8)
  config.data.dir = str(tiny_corpus)
  corpus = Corpus(tiny_corpus)
  encode = precompute_audio.frame_feature_fn(config)
  info = audio_features.write_features(corpus, ["heldout"], tmp_path / "features", encode,
                                       audio_features.describe(config), log=lambda _: None)
  assert info["shape"] == [3, 32]  # All L+1 = 3 hidden states of the test geometry, 32 channels.

  t, margin = 12, config.model.audio.margin_frames  # The held-out clips have 12 frames: the window is the clip.
  batch = next(pipeline.make_iterator(pipeline.make_dataset(
      corpus, "heldout", batch_size=2, num_frames=t, shuffle=False, process_index=0, process_count=1,
      audio_features=str(tmp_path / "features"))))
  assert batch["audio_features"].shape == (2, t + 2 * margin, 3, 32) and batch["audio_features"].dtype == np.float16

  def build(make):  # Initialised in one compiled program, not op by op.
    return nnx.merge(nnx.graphdef(nnx.eval_shape(make)), jax.jit(lambda: nnx.state(make()))())

  # The random encoder the features were computed with (frame_feature_fn's, with allow_random) and an adapter.
  encoder = build(lambda: audio_lib.make_audio_encoder(config.model.audio, rngs=nnx.Rngs(config.seed)))
  adapter = build(lambda: audio_lib.AudioAdapter(config.model, 32, 3, rngs=nnx.Rngs(1)))
  tokens = nnx.jit(lambda e, a, audio, features: (a(e(audio)), a.from_pooled(features)))
  from_waveform, from_features = tokens(encoder, adapter, jnp.asarray(batch["audio"]),
                                        jnp.asarray(batch["audio_features"]))
  assert from_waveform.shape == (2, t, config.model.prompt_dim)
  np.testing.assert_allclose(from_features, from_waveform, rtol=0, atol=5e-3)  # float16 storage.
  assert float(jnp.abs(from_features - from_waveform).mean()) < 2e-3

  config.data.train_split = "heldout"
  config.data.audio_features = str(tmp_path / "features")
  loop.validate_config(config, corpus)  # Matches: no error.
  config.model.audio.wav2vec2.layers = (0, 2)
  with pytest.raises(ValueError, match=r"data\.audio_features: .*computed with layers=\[\], but this run has "
                                       r"layers=\[0, 2\]"):
    loop.validate_config(config, corpus)

"""Tests of the SyncLipMAE models (CPU, float32, the `mu` config).

Every model function is jitted once per shape and reused: eager NNX is far slower than one compile.
"""

from __future__ import annotations

import math
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

try:
  from configs import pretrain
except ImportError:  # An editable install made before configs/ existed does not map it; use the checkout.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  from configs import pretrain

from synclipmae.models import audio as audio_lib
from synclipmae.models import vit
from synclipmae.models import SyncLipMAE, param_counts, patchify
from synclipmae.models.encoder import GridReadout

B, T = 2, 3
N = B * T
K = 16  # Of P = 64 patches (mu: 64 px, patch 8).


def random_keep(rng: np.random.Generator, n: int, num_patches: int, k: int) -> np.ndarray:
  return np.sort(np.stack([rng.permutation(num_patches)[:k] for _ in range(n)]), axis=1).astype(np.int32)


def make_inputs(cfg, seed: int = 0, k: int = K) -> dict[str, jax.Array]:
  rng = np.random.default_rng(seed)
  p = (cfg.image_size // cfg.patch_size) ** 2
  size = (N, cfg.image_size, cfg.image_size, 3)
  audio_len = (T + 2 * cfg.audio.margin_frames) * audio_lib.SAMPLES_PER_VIDEO_FRAME
  return {"frames": jnp.asarray(rng.random(size), jnp.float32),
          "frames_jittered": jnp.asarray(rng.random(size), jnp.float32),
          "keep_uniform": jnp.asarray(random_keep(rng, N, p, k)),
          "keep_face": jnp.asarray(random_keep(rng, N, p, k)),
          "audio": jnp.asarray(0.1 * rng.normal(size=(B, audio_len)), jnp.float32),
          "id_source": jnp.asarray(rng.integers(0, N, N), jnp.int32),
          "mouth_patches": jnp.asarray(mouth_fractions(N, p))}


def mouth_fractions(n: int, num_patches: int) -> np.ndarray:
  """Per-patch mouth fractions for encoders with mouth_private (mu's default): two patches in the mouth region."""
  mouth = np.zeros((n, num_patches), np.float32)
  mouth[:, [num_patches * 3 // 4 + 3, num_patches * 3 // 4 + 4]] = 0.5
  return mouth


@pytest.fixture(scope="module")
def cfg():
  return pretrain.model_config("mu")


@pytest.fixture(scope="module")
def model(cfg):
  return SyncLipMAE(cfg, rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def forward():
  return nnx.jit(lambda m, x: m(x, num_frames=T))


@pytest.fixture(scope="module")
def outputs(model, forward, cfg):
  inputs = make_inputs(cfg)
  return inputs, forward(model, inputs)


@pytest.fixture(scope="module")
def encode():
  return nnx.jit(lambda m, frames, keep: m.encode_frames(frames, keep, mouth_fractions(frames.shape[0],
                                                                                      m.encoder.num_patches)))


def test_forward_shapes_and_dtypes(outputs, cfg):
  _, out = outputs
  dp, e = cfg.prompt_dim, cfg.encoder.width
  p, pix = (cfg.image_size // cfg.patch_size) ** 2, cfg.patch_size ** 2 * 3
  expected = {"z_id": (N, dp), "z_voc": (N, dp), "z_amb": (N, dp), "audio_tokens": (N, dp), "z_id_cond": (N, dp),
              "z_amb_cond": (N, dp), "patches_uniform": (N, K, e), "recon_video": (N, p, pix),
              "recon_audio": (N, p, pix), "logit_scale": (), "z_amb_uniform": (N, dp), "stats_video": (N, p, 2),
              "stats_audio": (N, p, 2)}
  assert {k: v.shape for k, v in out.items()} == expected
  for name, value in out.items():
    assert value.dtype == jnp.float32, name
    assert np.isfinite(np.asarray(value)).all(), name
  np.testing.assert_allclose(out["logit_scale"], math.log(1 / 0.07), rtol=1e-6)


def test_bfloat16_compute_keeps_float32_params_and_outputs(cfg, outputs):
  """model.dtype=bfloat16: the same parameters (float32, same init), bf16 activations, float32 outputs close to
  the float32 model's."""
  inputs, out = outputs
  bf16_cfg = cfg.copy_and_resolve_references()
  bf16_cfg.dtype = "bfloat16"
  model = SyncLipMAE(bf16_cfg, rngs=nnx.Rngs(0))
  assert {x.dtype for x in jax.tree.leaves(nnx.state(model, nnx.Param))} == {jnp.dtype(jnp.float32)}
  assert model.encoder.blocks[0].mlp.fc1.dtype == jnp.bfloat16
  bf16_out = nnx.jit(lambda m, x: m(x, num_frames=T))(model, inputs)
  for name in ("z_voc", "audio_tokens", "recon_video"):
    assert bf16_out[name].dtype == jnp.float32, name
    a, b = np.asarray(out[name]).ravel(), np.asarray(bf16_out[name]).ravel()
    assert np.corrcoef(a, b)[0, 1] > 0.99, name  # bf16 has 8 mantissa bits: close, not equal.
    assert not np.array_equal(a, b), name  # ... and it did compute in bf16.
  with pytest.raises(ValueError, match=r"model.dtype='float16' is not supported"):
    SyncLipMAE(cfg, rngs=nnx.Rngs(0), dtype="float16")


def test_id_source_selects_identity(outputs):
  inputs, out = outputs
  np.testing.assert_array_equal(out["z_id_cond"], np.asarray(out["z_id"])[np.asarray(inputs["id_source"])])
  np.testing.assert_array_equal(out["z_amb_cond"], out["z_amb"])  # No amb_source: each frame's own z_amb.


def test_amb_source_selects_the_ambient_token(model, forward, cfg):
  inputs = make_inputs(cfg)
  inputs["amb_source"] = jnp.roll(jnp.arange(N, dtype=jnp.int32), 1)
  out = forward(model, inputs)
  np.testing.assert_array_equal(out["z_amb_cond"], np.roll(np.asarray(out["z_amb"]), 1, axis=0))


def test_keep_all_patches(model, forward, encode, cfg):
  p = (cfg.image_size // cfg.patch_size) ** 2
  inputs = make_inputs(cfg, k=p)
  out = forward(model, inputs)
  assert out["patches_uniform"].shape == (N, p, cfg.encoder.width)
  assert out["recon_video"].shape == (N, p, cfg.patch_size ** 2 * 3)
  # keep=None means every patch, and gives what keep=arange(P) gives.
  frames = inputs["frames"][:2]
  all_keep = model.encoder.all_patches(2)
  got, ref = encode(model, frames, None), encode(model, frames, all_keep)
  for name in ("z_id", "z_voc", "z_amb", "patches"):
    np.testing.assert_allclose(got[name], ref[name], atol=1e-6, err_msg=name)


def vit_l16_backbone_params() -> int:
  """ViT-L/16 without CLS token and with fixed positions: patch embed + 24 blocks + final LayerNorm."""
  e, hidden = 1024, 4096
  block = 4 * (e * e + e) + (e * hidden + hidden) + (hidden * e + e) + 2 * 2 * e
  return 16 * 16 * 3 * e + e + 24 * block + 2 * e


def test_eval_shape_every_variant():
  for variant in ("mu", "tiny", "small", "base", "large"):
    cfg = pretrain.model_config(variant)
    model = nnx.eval_shape(lambda: SyncLipMAE(cfg, rngs=nnx.Rngs(0)))
    leaves = jax.tree.leaves(nnx.state(model))
    assert leaves and all(isinstance(x, jax.ShapeDtypeStruct) for x in leaves), variant  # Nothing allocated.
    assert all(x.dtype == jnp.float32 for x in leaves), variant
    counts = param_counts(model)
    print(variant, counts)
    assert counts["total"] == sum(counts[k] for k in ("encoder", "audio_encoder", "audio_adapter", "decoder",
                                                      "logit_scale"))
  # `large` is the loop's last model: the Sapiens-0.3B / ViT-L/16 encoder geometry.
  assert (model.encoder.width, len(model.encoder.blocks), model.encoder.blocks[0].attn.num_heads,
          model.encoder.patch_size) == (1024, 24, 16, 16)
  assert model.encoder.patch_embed.proj.kernel.shape == (16 * 16 * 3, 1024)
  assert vit_l16_backbone_params() == 303_098_880
  assert counts["encoder_backbone"] == vit_l16_backbone_params()
  assert abs(counts["encoder_backbone"] - 303e6) / 303e6 < 0.02


def test_encoder_is_per_frame(model, encode, cfg):
  inputs = make_inputs(cfg, seed=1)
  frames, keep = inputs["frames"], inputs["keep_uniform"]
  ref = encode(model, frames, keep)
  perm = np.random.default_rng(2).permutation(N)
  permuted = encode(model, frames[perm], keep[perm])
  for name in ("z_id", "z_voc", "z_amb", "patches"):
    np.testing.assert_allclose(permuted[name], np.asarray(ref[name])[perm], atol=1e-5, err_msg=name)
  # Frame 0 with different companions in the batch.
  others = frames.at[1:].set(jnp.asarray(np.random.default_rng(3).random(frames[1:].shape), jnp.float32))
  alone = encode(model, others, keep)
  for name in ("z_id", "z_voc", "z_amb", "patches"):
    np.testing.assert_allclose(alone[name][0], ref[name][0], atol=1e-5, err_msg=name)
    assert not np.allclose(alone[name][1], ref[name][1], atol=1e-4), name


def patch_box(index: int, grid: int, p: int) -> tuple[slice, slice]:
  row, col = divmod(index, grid)
  return slice(row * p, (row + 1) * p), slice(col * p, (col + 1) * p)


@pytest.mark.parametrize("stem, amb_readout", [("linear", "token"), ("conv", "token"), ("conv", "grid")])
def test_encoder_sees_only_kept_patches(model, encode, cfg, stem, amb_readout):
  if (stem, amb_readout) != (cfg.encoder.stem, cfg.encoder.amb_readout):
    cfg = cfg.copy_and_resolve_references()
    cfg.encoder.stem, cfg.encoder.amb_readout = stem, amb_readout
    model = SyncLipMAE(cfg, rngs=nnx.Rngs(0))
  inputs = make_inputs(cfg, seed=4)
  frames, keep = inputs["frames"], inputs["keep_uniform"]
  p, grid = cfg.patch_size, cfg.image_size // cfg.patch_size
  masked = sorted(set(range(grid * grid)) - set(np.asarray(keep[0]).tolist()))
  ref = encode(model, frames, keep)

  rows, cols = patch_box(masked[0], grid, p)
  hidden = encode(model, frames.at[0, rows, cols].set(1.0 - frames[0, rows, cols]), keep)
  rows, cols = patch_box(int(keep[0, 0]), grid, p)
  visible = encode(model, frames.at[0, rows, cols].set(1.0 - frames[0, rows, cols]), keep)
  for name in ("z_id", "z_voc", "z_amb"):
    np.testing.assert_allclose(hidden[name], ref[name], atol=1e-6, err_msg=name)
    assert np.abs(np.asarray(visible[name][0] - ref[name][0])).max() > 1e-3, name


def test_conv_stem_token_sees_only_its_patch(cfg):
  """The conv stem convolves within each patch: a token changes with its own pixels, never a neighbour's."""
  embed = vit.ConvPatchEmbed(cfg.patch_size, 32, rngs=nnx.Rngs(0))
  p = cfg.patch_size
  images = jnp.asarray(np.random.default_rng(0).random((1, 2 * p, 2 * p, 3)), jnp.float32)
  ref = embed(patchify(images, p))
  changed = embed(patchify(images.at[0, :p, p:].set(0.0), p))  # Patch 1 of the 2 x 2 grid.
  np.testing.assert_array_equal(changed[0, [0, 2, 3]], ref[0, [0, 2, 3]])
  assert np.abs(np.asarray(changed[0, 1] - ref[0, 1])).max() > 1e-3


@pytest.mark.parametrize("size,channels", [(8, 3), (4, 32), (16, 3), (7, 5)])
def test_conv_stem_matmul_equals_the_convolution(size, channels):
  """The stem's hand-written stride-2 conv (taps + one matmul) computes exactly what nnx.Conv computes."""
  conv = nnx.Conv(channels, 6, (3, 3), strides=(2, 2), padding="SAME", rngs=nnx.Rngs(3))
  conv.bias[...] = jax.random.normal(jax.random.key(1), conv.bias[...].shape)
  x = jax.random.normal(jax.random.key(2), (5, size, size, channels))
  np.testing.assert_allclose(vit._stride2_conv3x3(x, conv), conv(x), rtol=1e-5, atol=1e-5)


def test_log_mel_matches_numpy_reference():
  """Our framing + FFT against np.fft on explicit frames, with librosa's window and mel filterbank."""
  librosa = pytest.importorskip("librosa")
  rng = np.random.default_rng(5)
  wave = (0.1 * rng.normal(size=(1, 7 * 320 + 123))).astype(np.float64)
  ours = np.asarray(audio_lib.log_mel_spectrogram(jnp.asarray(wave, jnp.float32), 40))[0]
  padded = np.pad(wave[0], (40, 400))  # Frame i reads samples [320 i - 40, 320 i + 360).
  frames = np.stack([padded[320 * i:320 * i + 400] for i in range(wave.shape[1] // 320)])
  window = librosa.filters.get_window("hann", 400, fftbins=True)
  power = np.abs(np.fft.rfft(frames * window, n=512)) ** 2
  ref = np.log(power @ librosa.filters.mel(sr=16000, n_fft=512, n_mels=40).T + 1e-6)
  assert ours.shape == ref.shape == (wave.shape[1] // 320, 40)
  np.testing.assert_allclose(ours, ref, atol=1e-3)


def test_audio_tokens_do_not_depend_on_the_batch(model, cfg):
  """A clip's audio tokens are the same alone and in a batch (as on 1 device vs sharded over 8): the log-mel front
  end must not amplify shape-dependent rounding (quiet frames near -10 log power; un-centred LayerNorm input)."""
  rng = np.random.default_rng(3)
  length = (T + 2 * cfg.audio.margin_frames) * audio_lib.SAMPLES_PER_VIDEO_FRAME
  audio = (0.003 * rng.normal(size=(6, length))).astype(np.float32)  # -50 dB noise: the quiet parts of a clip
  audio[:, length // 3: length // 2] += 0.3 * np.sin(np.arange(length // 2 - length // 3) * 0.07)
  encode = nnx.jit(lambda m, a: m.encode_audio(a, T))

  def batched_and_alone(audio):
    return (np.asarray(encode(model, audio)),
            np.concatenate([np.asarray(encode(model, audio[i:i + 1])) for i in range(len(audio))]))

  np.testing.assert_allclose(*batched_and_alone(audio), rtol=0, atol=1e-5)
  # Digital silence: a constant log-mel frame, whose band mean rounds differently per batch shape. The band
  # LayerNorm's eps (1e-2) keeps that from being amplified (with eps 1e-6 the tokens differed by 5e-2).
  audio[1, :1000] = 0.0
  np.testing.assert_allclose(*batched_and_alone(audio), rtol=0, atol=1e-3)


def test_audio_tokens_are_time_aligned(model, cfg):
  """A 10-sample burst changes exactly the tokens whose window reaches the feature frames the burst touches."""
  margin, w = cfg.audio.margin_frames, cfg.audio.window_frames
  depth = model.audio_encoder.receptive_field  # Kernel-3 convs: one feature frame per layer each side.
  t_frames = 11
  length = (t_frames + 2 * margin) * audio_lib.SAMPLES_PER_VIDEO_FRAME
  starts = [640 * 7, 640 * 7 + 315, 640 * 7 + 630, 640 * 3 + 100, 640 * 12 + 500]
  burst = 10
  base = (0.01 * np.random.default_rng(6).normal(size=length)).astype(np.float32)
  waves = np.stack([base] + [base.copy() for _ in starts])
  for row, s in enumerate(starts, 1):
    waves[row, s:s + burst] += 0.8
  tokens = np.asarray(nnx.jit(lambda m, a: m.encode_audio(a, t_frames))(model, jnp.asarray(waves)))

  hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(audio_lib.WIN_LENGTH) / audio_lib.WIN_LENGTH)
  num_features = length // audio_lib.HOP_LENGTH
  widest = 0
  for row, s in enumerate(starts, 1):
    # Log-mel frames whose (nonzero) window covers a burst sample; frame i starts at sample 320 i - 40.
    stft = {i for i in range(num_features) for x in range(s, s + burst)
            if 0 <= x - (320 * i - 40) < audio_lib.WIN_LENGTH and hann[x - (320 * i - 40)] > 0}
    features = {j for i in stft for j in range(i - depth, i + depth + 1) if 0 <= j < num_features}
    video = {j // 2 for j in features}
    expected = {t for t in range(t_frames) if any(abs(t + margin - v) <= w for v in video)}
    changed = {t for t in range(t_frames) if np.abs(tokens[row, t] - tokens[0, t]).max() > 1e-5}
    assert changed == expected, (s, sorted(changed), sorted(expected))
    j = s // 640 - margin  # The burst's video frame as a centre-frame index.
    widest = max(widest, max(abs(t - j) for t in changed))
  # The exact bound: a burst in video frame j reaches log-mel frames 2j-1 .. 2j+2 (windows overhang their hop by
  # 40 samples), the conv stack `depth` more feature frames each side, the adapter `w` more video frames:
  # w + ceil((depth + 1) / 2) video frames (4 for mu), reached by bursts at the start and at the end of a frame.
  bound = w + (depth + 2) // 2
  assert widest == bound, (widest, bound)


def test_adapter_accepts_wav2vec2_frame_count(model, cfg):
  """wav2vec 2.0 gives 2V-1 frames for V video frames; the adapter repeats the last and finds the same T."""
  v = T + 2 * cfg.audio.margin_frames
  c = model.audio_encoder.hidden_size
  hidden = [jnp.ones((B, 2 * v - 1, c)) * (k + 1) for k in range(model.audio_encoder.num_layers)]
  assert jax.eval_shape(model.audio_adapter, hidden).shape == (B, T, cfg.prompt_dim)


def test_audio_encoder_factory(model, cfg):
  assert isinstance(model.audio_encoder, audio_lib.AudioEncoder) and not model.audio_encoder.frozen
  audio_cfg = cfg.audio.copy_and_resolve_references()
  audio_cfg.encoder = "wav2vec2"  # Built frozen (tests/test_wav2vec2.py covers it); unknown names are errors.
  assert nnx.eval_shape(lambda: audio_lib.make_audio_encoder(audio_cfg, rngs=nnx.Rngs(0))).frozen
  audio_cfg.encoder = "hubert"
  with pytest.raises(ValueError, match="'logmel' or 'wav2vec2'"):
    audio_lib.make_audio_encoder(audio_cfg, rngs=nnx.Rngs(0))


def test_decoder_shared_and_conditioned(model, outputs, cfg):
  inputs, out = outputs
  decode = nnx.jit(lambda m, x, k, c: m.decode(x, k, c))
  patches, keep = out["patches_uniform"], inputs["keep_uniform"]
  cond_video = jnp.stack([out["z_id_cond"], out["z_amb"], out["z_voc"]], axis=1)
  cond_audio = jnp.stack([out["z_id_cond"], out["z_amb"], out["audio_tokens"]], axis=1)
  # Both passes are the one decoder: re-decoding each cond reproduces each reconstruction.
  np.testing.assert_allclose(decode(model, patches, keep, cond_video), out["recon_video"], atol=1e-5)
  np.testing.assert_allclose(decode(model, patches, keep, cond_audio), out["recon_audio"], atol=1e-5)
  # Same cond for both halves of the batch -> identical rows.
  both = decode(model, jnp.concatenate([patches[:3], patches[:3]]), jnp.concatenate([keep[:3], keep[:3]]),
                jnp.concatenate([cond_video[:3], cond_video[:3]]))
  np.testing.assert_allclose(both[:3], both[3:], atol=1e-6)
  # The output at masked positions depends on every conditioning slot.
  p = (cfg.image_size // cfg.patch_size) ** 2
  masked = np.setdiff1d(np.arange(p), np.asarray(keep[0]))
  ref = np.asarray(out["recon_video"])[0, masked]
  for slot in range(3):
    other = cond_video.at[:, slot].set(cond_video[::-1, slot] + 1.0)
    moved = np.asarray(decode(model, patches, keep, other))[0, masked]
    assert np.abs(moved - ref).max() > 1e-3, slot


@pytest.mark.parametrize("amb_readout", ["token", "grid"])
def test_gradients_reach_every_part(model, cfg, amb_readout):
  if amb_readout != cfg.encoder.amb_readout:
    cfg = cfg.copy_and_resolve_references()
    cfg.encoder.amb_readout = amb_readout
    model = SyncLipMAE(cfg, rngs=nnx.Rngs(0))
  inputs = make_inputs(cfg, seed=7)
  graphdef, params = nnx.split(model, nnx.Param)
  weights = {k: jnp.asarray(np.random.default_rng(i).normal(size=v.shape), jnp.float32)
             for i, (k, v) in enumerate(sorted(jax.eval_shape(lambda: model(inputs, num_frames=T)).items()))}

  def loss(params):
    out = nnx.merge(graphdef, params)(inputs, num_frames=T)
    return sum(jnp.sum(out[k] * weights[k]) for k in out)

  grads = jax.jit(jax.grad(loss))(params)
  flat = {path: np.asarray(v.get_value()) for path, v in nnx.to_flat_state(grads)}
  for path, g in flat.items():
    assert np.isfinite(g).all(), path
  for part in ("encoder", "audio_encoder", "audio_adapter", "decoder", "logit_scale"):
    norm = math.sqrt(sum(float((g ** 2).sum()) for path, g in flat.items() if path[0] == part))
    assert norm > 0, part
  dead = [path for path, g in flat.items() if not np.any(g)]
  assert not dead, dead  # Every single parameter tensor receives gradient.
  assert model.trainable_filter() == nnx.Param  # The log-mel encoder is trained.


def test_jit_split_merge_matches_nnx_jit(model, outputs):
  inputs, out = outputs
  graphdef, state = nnx.split(model)

  @jax.jit
  def apply(state, inputs):
    return nnx.merge(graphdef, state)(inputs, num_frames=T)

  got = apply(state, inputs)
  for name in out:
    np.testing.assert_allclose(got[name], out[name], atol=1e-5, err_msg=name)


def test_reconstruction_layout_is_patchify(cfg):
  """The decoder's pixel layout is `patchify`: a sanity check of the helper the losses use."""
  p = cfg.patch_size
  image = jnp.arange(2 * 16 * 16 * 3, dtype=jnp.float32).reshape(2, 16, 16, 3)
  patches = patchify(image, p)
  assert patches.shape == (2, 4, p * p * 3)
  np.testing.assert_array_equal(patches[0, 1].reshape(p, p, 3), image[0, :p, p:2 * p])


def _factorised_config(cfg, visible):
  cfg = cfg.copy_and_resolve_references()
  cfg.encoder.mouth_private = True
  cfg.decoder.visible = visible
  return cfg


@pytest.mark.parametrize("amb_readout", ["token", "grid"])
def test_mouth_private_keeps_the_mouth_out_of_z_id_and_z_amb(cfg, amb_readout):
  cfg = _factorised_config(cfg, "target")
  cfg.encoder.amb_readout = amb_readout
  model = SyncLipMAE(cfg, rngs=nnx.Rngs(0))
  encode3 = nnx.jit(lambda m, frames, keep, mouth: m.encode_frames(frames, keep, mouth))
  rng = np.random.default_rng(3)
  p, size = (cfg.image_size // cfg.patch_size) ** 2, cfg.patch_size
  frames = rng.random((2, cfg.image_size, cfg.image_size, 3)).astype(np.float32)
  keep = jnp.asarray(random_keep(rng, 2, p, K))
  mouth = np.zeros((2, p), np.float32)
  mouth[:, np.asarray(keep)[0, :3]] = 0.5  # Three kept patches of frame 0 lie in the mouth region...
  mouth[1] = mouth[0]
  changed = frames.copy()
  for index in np.asarray(keep)[0, :3]:  # ...and only their pixels change in frame 0.
    row, col = divmod(int(index), cfg.image_size // size)
    changed[0, row * size:(row + 1) * size, col * size:(col + 1) * size] = rng.random((size, size, 3))
  a, b = encode3(model, frames, keep, mouth), encode3(model, changed, keep, mouth)
  for name in ("z_id", "z_amb"):
    np.testing.assert_allclose(a[name], b[name], atol=1e-6, err_msg=name)
  assert np.abs(a["z_voc"][0] - b["z_voc"][0]).max() > 1e-3  # z_voc reads the mouth.
  np.testing.assert_array_equal(a["z_voc"][1], b["z_voc"][1])
  # Without the option the same change reaches every token; and the option needs the mouth fractions.
  shared = cfg.copy_and_resolve_references()
  shared.encoder.mouth_private = False
  plain = encode3(SyncLipMAE(shared, rngs=nnx.Rngs(0)), changed, keep, mouth)
  assert np.abs(plain["z_amb"][0] - b["z_amb"][0]).max() > 1e-3
  with pytest.raises(ValueError, match="mouth_private=True: the encoder needs"):
    model.encode_frames(jnp.asarray(frames), keep)


def test_mouth_isolated_keeps_the_rest_of_the_face_out_of_z_voc(cfg):
  """encoder.mouth_isolated: changing a kept patch outside the mouth region leaves z_voc bit-identical (it moves
  z_id and z_amb), a mouth patch still moves z_voc only; the option needs mouth_private."""
  cfg = _factorised_config(cfg, "target")
  cfg.encoder.mouth_isolated = True
  model = SyncLipMAE(cfg, rngs=nnx.Rngs(0))
  encode3 = nnx.jit(lambda m, frames, keep, mouth: m.encode_frames(frames, keep, mouth))
  rng = np.random.default_rng(4)
  p, size, grid = (cfg.image_size // cfg.patch_size) ** 2, cfg.patch_size, cfg.image_size // cfg.patch_size
  frames = rng.random((1, cfg.image_size, cfg.image_size, 3)).astype(np.float32)
  keep = jnp.asarray(random_keep(rng, 1, p, K))
  mouth = np.zeros((1, p), np.float32)
  mouth[0, np.asarray(keep)[0, :2]] = 1.0  # Two kept patches in the mouth region.

  def with_new_pixels(index):
    out = frames.copy()
    row, col = divmod(int(index), grid)
    out[0, row * size:(row + 1) * size, col * size:(col + 1) * size] = rng.random((size, size, 3))
    return out

  base = encode3(model, frames, keep, mouth)
  face = encode3(model, with_new_pixels(np.asarray(keep)[0, 3]), keep, mouth)  # A kept patch outside the mouth.
  np.testing.assert_array_equal(base["z_voc"], face["z_voc"])
  assert np.abs(base["z_amb"] - face["z_amb"]).max() > 1e-3
  lips = encode3(model, with_new_pixels(np.asarray(keep)[0, 0]), keep, mouth)
  assert np.abs(base["z_voc"] - lips["z_voc"]).max() > 1e-3
  for name in ("z_id", "z_amb"):
    np.testing.assert_allclose(base[name], lips[name], atol=1e-6, err_msg=name)
  cfg.encoder.mouth_private = False
  with pytest.raises(ValueError, match="mouth_isolated=True needs model.encoder.mouth_private=True"):
    SyncLipMAE(cfg, rngs=nnx.Rngs(0))


def test_grid_readout_is_a_linear_map_of_the_patch_grid():
  """GridReadout against a loop over the grid: each kept patch's features land at its index, the rest are zeros."""
  num_patches, width, out = 16, 6, 5
  readout = GridReadout(width, num_patches, out, rngs=nnx.Rngs(0), per_patch=3)
  rng = np.random.default_rng(0)
  patches = rng.normal(size=(2, 4, width)).astype(np.float32)
  keep = random_keep(rng, 2, num_patches, 4)
  hidden = np.zeros((2, 4), bool)
  hidden[1, 2] = True
  reduce_w, reduce_b = np.asarray(readout.reduce.kernel[...]), np.asarray(readout.reduce.bias[...])
  expected = []
  for i in range(2):
    grid = np.zeros((num_patches, 3), np.float32)
    for j in range(4):
      if not hidden[i, j]:
        grid[keep[i, j]] = patches[i, j] @ reduce_w + reduce_b
    expected.append(grid.reshape(-1) @ np.asarray(readout.proj.kernel[...]) + np.asarray(readout.proj.bias[...]))
  got = readout(jnp.asarray(patches), jnp.asarray(keep), jnp.asarray(hidden))
  np.testing.assert_allclose(got, np.stack(expected), rtol=1e-5, atol=1e-5)


def test_grid_readout_needs_the_configured_frame_size(cfg):
  cfg = cfg.copy_and_resolve_references()
  cfg.encoder.amb_readout = "grid"
  model = SyncLipMAE(cfg, rngs=nnx.Rngs(0))
  size = cfg.image_size + cfg.patch_size
  frames = jnp.zeros((1, size, size, 3))
  with pytest.raises(ValueError, match=f"amb_readout='grid' reads a 8x8 patch grid: frames must be 64x64, got {size}"):
    model.encode_frames(frames, None, jnp.zeros((1, (size // cfg.patch_size) ** 2)))
  cfg.encoder.amb_readout = "pooled"
  with pytest.raises(ValueError, match="model.encoder.amb_readout='pooled': expected one of"):
    SyncLipMAE(cfg, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("visible", ["identity_source", "none"])
def test_decoder_without_the_target_frame(cfg, visible):
  """With decoder.visible != "target", a frame's reconstruction does not read its own bypass-1 pixels."""
  cfg = _factorised_config(cfg, visible)
  model = SyncLipMAE(cfg, rngs=nnx.Rngs(0))
  forward = nnx.jit(lambda m, x: m(x, num_frames=T))
  inputs = make_inputs(cfg)
  p = (cfg.image_size // cfg.patch_size) ** 2
  inputs["mouth_patches"] = jnp.zeros((N, p), jnp.float32).at[:, :4].set(1.0)
  inputs["id_source"] = jnp.asarray(np.bitwise_xor(np.arange(N) // T, 1) * T, jnp.int32)  # Other clip, frame 0.
  changed = dict(inputs, frames=inputs["frames"].at[1].set(0.5))  # Frame 1 is nobody's identity source.
  a, b = forward(model, inputs), forward(model, changed)
  np.testing.assert_allclose(a["recon_video"], b["recon_video"], atol=1e-6)
  np.testing.assert_allclose(a["recon_audio"], b["recon_audio"], atol=1e-6)
  # The identity source's bypass-1 view does reach the frames it conditions (via z_id, and its patches).
  source = dict(inputs, frames=inputs["frames"].at[0].set(0.5))  # Frame 0 of clip 0 conditions clip 1.
  c = forward(model, source)
  assert np.abs(np.asarray(c["recon_video"][T:]) - np.asarray(a["recon_video"][T:])).max() > 1e-4
  np.testing.assert_allclose(c["recon_video"][:T], a["recon_video"][:T], atol=1e-6)


def test_render_draws_images_from_the_patch_statistics(cfg):
  """With decoder.patch_stats the decoder outputs pixels: normalised patches x predicted std + predicted mean."""
  from synclipmae.models.decoder import denormalize
  p = (cfg.image_size // cfg.patch_size) ** 2
  inputs = make_inputs(cfg)
  cond = jnp.asarray(np.random.default_rng(0).normal(size=(N, 3, cfg.prompt_dim)), jnp.float32)
  model = SyncLipMAE(cfg, rngs=nnx.Rngs(0))
  patches = model.encode_frames(inputs["frames"], inputs["keep_uniform"], inputs["mouth_patches"])["patches"]
  images = model.render(patches, inputs["keep_uniform"], cond)
  assert images.shape == (N, cfg.image_size, cfg.image_size, 3)
  assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
  pixels, stats = model.decoder(patches, inputs["keep_uniform"], cond)
  assert stats.shape == (N, p, 2)
  np.testing.assert_allclose(patchify(images, cfg.patch_size), denormalize(pixels, stats), atol=1e-6)
  plain = cfg.copy_and_resolve_references()
  plain.decoder.patch_stats = False
  with pytest.raises(ValueError, match="needs a model trained with model.decoder.patch_stats=True"):
    SyncLipMAE(plain, rngs=nnx.Rngs(0)).render(patches, inputs["keep_uniform"], cond)


def test_warp_decoder_moves_the_reference_by_the_pose_and_paints_the_change(cfg):
  """model.ambient_pose / *_appearance: equal codes give back the reference; a pose that z_amb puts 2 pixels to the
  right moves the face by 2 pixels; the driving token's appearance change is added where the mouth would be."""
  cfg = cfg.copy_and_resolve_references()
  cfg.ambient_pose, cfg.ambient_appearance, cfg.driving_appearance = True, 8, True
  model = SyncLipMAE(cfg, rngs=nnx.Rngs(0))
  reference = jax.random.uniform(jax.random.key(0), (2, cfg.image_size, cfg.image_size, 3))
  z = jax.random.normal(jax.random.key(1), (2, cfg.prompt_dim))
  np.testing.assert_allclose(model.warp_render(reference, z, z[::-1], z, z[::-1]), reference, atol=1e-5)
  model.ambient_pose.kernel[...] = jnp.zeros((cfg.prompt_dim, 4)).at[0, 0].set(2.0 / cfg.image_size)
  moved = model.warp_render(reference, jnp.zeros_like(z), jnp.zeros_like(z).at[:, 0].set(1.0))
  np.testing.assert_allclose(moved[:, :, 2:], reference[:, :, :-2], atol=1e-5)
  model.ambient_pose.kernel[...] = jnp.zeros((cfg.prompt_dim, 4))
  model.driving_appearance.bias[...] = jnp.full((8 * 8 * 3,), 0.1)  # A constant change cancels between codes...
  np.testing.assert_allclose(model.warp_render(reference, z, z, z, z[::-1]), reference, atol=1e-5)
  model.driving_appearance.kernel[...] = jnp.zeros((cfg.prompt_dim, 8 * 8 * 3)).at[0].set(0.1)  # ...a coded one not.
  drawn = model.warp_render(reference * 0.5, z, z, jnp.zeros_like(z), jnp.zeros_like(z).at[:, 0].set(1.0))
  np.testing.assert_allclose(drawn, reference * 0.5 + 0.1, atol=1e-5)

"""wav2vec 2.0 (Baevski et al. 2020) in Flax NNX: the frozen speech encoder of the paper's audio branch.

No Flax wav2vec 2.0 exists any more (transformers 5 removed every Flax model, and the old Flax class never
supported the group-norm "base" configuration), so the model is written here, to give the same hidden states as
the PyTorch `transformers.Wav2Vec2Model` (4.57) in evaluation mode for every configuration the released
checkpoints use:

  * the convolutional feature encoder, with group norm on its first layer ("group": base) or layer norm on every
    layer ("layer": large-lv60, XLS-R); with or without conv biases;
  * the feature projection (LayerNorm + Linear);
  * the convolutional position embedding (grouped conv, weight-normalised in the checkpoint: folded to a plain
    kernel when loading, since the encoder is frozen);
  * the Transformer encoder with post-LN layers (`do_stable_layer_norm=False`, base) or pre-LN layers and a final
    LayerNorm (`True`, large-lv60);
  * padding: `attention_mask` [B, S] over samples becomes a feature-level mask from the conv output lengths. As in
    Hugging Face, the mask is NOT applied inside the conv stack (so the group norm of the base model computes its
    statistics over the padding too: batch base-model inputs of different lengths only if you accept that, as HF
    does); padded feature frames are zeroed before the position embedding and never attended to.
  * all hidden states as HF's `output_hidden_states=True` returns them: L+1 arrays, the encoder input (after the
    position embedding; after its LayerNorm in the post-LN variant) and each layer's output (the last one after the
    final LayerNorm in the pre-LN variant).

Waveform normalisation: the HF feature extractor (`Wav2Vec2FeatureExtractor`, `do_normalize=True` in the released
base and large checkpoints' preprocessor configs) scales each utterance to zero mean and unit variance over its
unpadded samples before the model. Here it is part of the model (`Wav2Vec2Config.normalize`, default True, as
those checkpoints expect), so callers pass raw [-1, 1] audio.

Which hidden states the audio adapter reads: by default all L+1 (the paper concatenates the hidden states of all
layers); `layers=(i, j, ...)` (config `audio.wav2vec2.layers`) selects a subset by HF index (0 = encoder input,
L = last layer), and layers above the highest selected index are not computed.

Parameter names follow the Hugging Face module names (`feature_extractor/conv_layers/0/conv/kernel`, ...), so the
loader in `synclipmae.pretrained.wav2vec2` is a readable one-to-one mapping.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from synclipmae.models import vit


class Wav2Vec2ConfigError(ValueError):
  """A wav2vec 2.0 configuration this implementation cannot build or reproduce; names the field."""


_ACTIVATIONS = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),  # HF "gelu" is the exact (erf) GELU.
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
}


@dataclasses.dataclass(frozen=True)
class Wav2Vec2Config:
  """The architecture fields of a Hugging Face wav2vec 2.0 `config.json` (defaults: the base model), plus
  `normalize` (per-utterance zero-mean unit-variance scaling of the waveform, the HF feature extractor's
  `do_normalize`)."""
  hidden_size: int = 768
  num_hidden_layers: int = 12
  num_attention_heads: int = 12
  intermediate_size: int = 3072
  hidden_act: str = "gelu"
  layer_norm_eps: float = 1e-5
  feat_extract_norm: str = "group"
  feat_extract_activation: str = "gelu"
  conv_dim: tuple[int, ...] = (512,) * 7
  conv_stride: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
  conv_kernel: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
  conv_bias: bool = False
  num_conv_pos_embeddings: int = 128
  num_conv_pos_embedding_groups: int = 16
  do_stable_layer_norm: bool = False
  normalize: bool = True

  ARCHITECTURE = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
                  "layer_norm_eps", "feat_extract_norm", "feat_extract_activation", "conv_dim", "conv_stride",
                  "conv_kernel", "conv_bias", "num_conv_pos_embeddings", "num_conv_pos_embedding_groups",
                  "do_stable_layer_norm")

  def __post_init__(self):
    for name in ("conv_dim", "conv_stride", "conv_kernel"):
      object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
    fail = lambda field, problem: Wav2Vec2ConfigError(f"wav2vec 2.0 config: {field}={getattr(self, field)!r} "
                                                      f"{problem}")
    if not len(self.conv_dim) == len(self.conv_stride) == len(self.conv_kernel) > 0:
      raise fail("conv_dim", f"conv_stride {self.conv_stride} and conv_kernel {self.conv_kernel} must have the "
                 "same non-zero length")
    if self.feat_extract_norm not in ("group", "layer"):
      raise fail("feat_extract_norm", "must be 'group' or 'layer'")
    for field in ("hidden_act", "feat_extract_activation"):
      if getattr(self, field) not in _ACTIVATIONS:
        raise fail(field, f"is not supported (one of {sorted(_ACTIVATIONS)})")
    if self.hidden_size % self.num_attention_heads:
      raise fail("hidden_size", f"is not divisible by num_attention_heads={self.num_attention_heads}")
    if self.hidden_size % self.num_conv_pos_embedding_groups:
      raise fail("hidden_size", f"is not divisible by num_conv_pos_embedding_groups="
                 f"{self.num_conv_pos_embedding_groups}")

  @classmethod
  def from_hf(cls, hf: Mapping[str, Any], **overrides: Any) -> "Wav2Vec2Config":
    """From a Hugging Face `config.json` dict (missing fields take HF's defaults); `overrides` e.g. normalize."""
    model_type = hf.get("model_type", "wav2vec2")
    if model_type != "wav2vec2":
      raise Wav2Vec2ConfigError(f"wav2vec 2.0 config: model_type={model_type!r}, expected 'wav2vec2'")
    if hf.get("adapter_attn_dim") is not None:
      raise Wav2Vec2ConfigError(f"wav2vec 2.0 config: adapter_attn_dim={hf['adapter_attn_dim']!r} (per-layer "
                                "attention adapters, MMS) is not supported")
    fields = {f: hf[f] for f in cls.ARCHITECTURE if f in hf}
    return cls(**{**fields, **overrides})

  @property
  def hop_length(self) -> int:
    """Samples between consecutive feature frames (320 for every released checkpoint: 50 Hz at 16 kHz)."""
    return int(np.prod(self.conv_stride))

  @property
  def receptive_field(self) -> int:
    """Samples one feature frame sees through the conv stack (400 for the released checkpoints)."""
    field = 1
    for kernel, stride in zip(reversed(self.conv_kernel), reversed(self.conv_stride)):
      field = (field - 1) * stride + kernel
    return field

  def num_features(self, num_samples):
    """Conv output length for `num_samples` input samples (an int, or an integer array)."""
    for kernel, stride in zip(self.conv_kernel, self.conv_stride):
      num_samples = (num_samples - kernel) // stride + 1
    return num_samples


GEOMETRIES = {
    # facebook/wav2vec2-base(-960h): 95 M parameters.
    "base": Wav2Vec2Config(),
    # facebook/wav2vec2-large-lv60 / -large-960h-lv60-self, XLS-R 300M layout: 317 M parameters.
    "large": Wav2Vec2Config(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                            feat_extract_norm="layer", conv_bias=True, do_stable_layer_norm=True),
    # A few-thousand-parameter model with the real conv geometry (hop 320, receptive field 400): tests, smoke runs.
    "test": Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                           conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4),
}


def geometry(name: str, **overrides: Any) -> Wav2Vec2Config:
  """A named configuration ('base', 'large', 'test') with optional field overrides."""
  if name not in GEOMETRIES:
    raise Wav2Vec2ConfigError(f"unknown wav2vec 2.0 geometry {name!r}; choose one of {sorted(GEOMETRIES)}")
  return dataclasses.replace(GEOMETRIES[name], **overrides)


def normalize_waveform(waveform: jax.Array, sample_mask: jax.Array | None = None) -> jax.Array:
  """Zero mean, unit variance per utterance over its unpadded samples (HF `zero_mean_unit_var_norm`, eps 1e-7);
  padded samples become 0."""
  if sample_mask is None:
    sample_mask = jnp.ones(waveform.shape, bool)
  m = sample_mask.astype(jnp.float32)
  count = jnp.maximum(m.sum(-1, keepdims=True), 1.0)
  mean = (waveform * m).sum(-1, keepdims=True) / count
  var = (((waveform - mean) * m) ** 2).sum(-1, keepdims=True) / count
  return jnp.where(sample_mask, (waveform - mean) * jax.lax.rsqrt(var + 1e-7), 0.0)


def _layer_norm(features: int, eps: float, *, rngs: nnx.Rngs, dtype) -> nnx.LayerNorm:
  return vit.layer_norm(features, rngs=rngs, dtype=dtype, eps=eps)  # Two-pass variance, as PyTorch computes it.


def _linear(i: int, o: int, *, rngs: nnx.Rngs, dtype, precision) -> nnx.Linear:
  return nnx.Linear(i, o, dtype=dtype, param_dtype=jnp.float32, precision=precision,
                    kernel_init=nnx.initializers.normal(0.02), rngs=rngs)


class ConvLayer(nnx.Module):
  """One layer of the feature encoder: strided conv [-> GroupNorm over time | LayerNorm over channels] -> act."""

  def __init__(self, cfg: Wav2Vec2Config, index: int, *, rngs: nnx.Rngs, dtype, precision):
    in_dim = cfg.conv_dim[index - 1] if index else 1
    out_dim = cfg.conv_dim[index]
    self.conv = nnx.Conv(in_dim, out_dim, kernel_size=(cfg.conv_kernel[index],), strides=(cfg.conv_stride[index],),
                         padding="VALID", use_bias=cfg.conv_bias, dtype=dtype, param_dtype=jnp.float32,
                         precision=precision, kernel_init=nnx.initializers.he_normal(), rngs=rngs)
    if cfg.feat_extract_norm == "layer":
      self.layer_norm = _layer_norm(out_dim, 1e-5, rngs=rngs, dtype=dtype)
    elif index == 0:  # "group": one group per channel, statistics over time, first layer only.
      self.layer_norm = nnx.GroupNorm(out_dim, num_groups=out_dim, epsilon=1e-5, use_fast_variance=False,
                                      dtype=dtype, param_dtype=jnp.float32, rngs=rngs)
    else:
      self.layer_norm = None
    self.activation = cfg.feat_extract_activation

  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.conv(x)
    if self.layer_norm is not None:
      x = self.layer_norm(x)
    return _ACTIVATIONS[self.activation](x)


class FeatureEncoder(nnx.Module):
  """The conv stack: waveform [B, S, 1] -> [B, F, conv_dim[-1]] at 1 / hop_length of the sample rate."""

  def __init__(self, cfg: Wav2Vec2Config, *, rngs: nnx.Rngs, dtype, precision):
    self.conv_layers = nnx.List([ConvLayer(cfg, i, rngs=rngs, dtype=dtype, precision=precision)
                                 for i in range(len(cfg.conv_dim))])

  def __call__(self, x: jax.Array) -> jax.Array:
    for layer in self.conv_layers:
      x = layer(x)
    return x


class FeatureProjection(nnx.Module):
  def __init__(self, cfg: Wav2Vec2Config, *, rngs: nnx.Rngs, dtype, precision):
    self.layer_norm = _layer_norm(cfg.conv_dim[-1], cfg.layer_norm_eps, rngs=rngs, dtype=dtype)
    self.projection = _linear(cfg.conv_dim[-1], cfg.hidden_size, rngs=rngs, dtype=dtype, precision=precision)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.projection(self.layer_norm(x))


class PositionalConvEmbedding(nnx.Module):
  """Grouped conv over time, 'same' padding (one output frame dropped for an even kernel), then the activation.

  The checkpoint stores the kernel weight-normalised (g, v); the loader folds it to g * v / ||v|| once.
  """

  def __init__(self, cfg: Wav2Vec2Config, *, rngs: nnx.Rngs, dtype, precision):
    k = cfg.num_conv_pos_embeddings
    self.conv = nnx.Conv(cfg.hidden_size, cfg.hidden_size, kernel_size=(k,), padding=[(k // 2, k // 2)],
                         feature_group_count=cfg.num_conv_pos_embedding_groups, dtype=dtype,
                         param_dtype=jnp.float32, precision=precision,
                         kernel_init=nnx.initializers.normal(2 * (k * cfg.hidden_size) ** -0.5), rngs=rngs)
    self.drop_last = k % 2 == 0
    self.activation = cfg.feat_extract_activation

  def __call__(self, x: jax.Array) -> jax.Array:
    y = self.conv(x)
    if self.drop_last:
      y = y[:, :-1]
    return _ACTIVATIONS[self.activation](y)


class Attention(nnx.Module):
  def __init__(self, cfg: Wav2Vec2Config, *, rngs: nnx.Rngs, dtype, precision):
    d = cfg.hidden_size
    self.num_heads = cfg.num_attention_heads
    self.q_proj = _linear(d, d, rngs=rngs, dtype=dtype, precision=precision)
    self.k_proj = _linear(d, d, rngs=rngs, dtype=dtype, precision=precision)
    self.v_proj = _linear(d, d, rngs=rngs, dtype=dtype, precision=precision)
    self.out_proj = _linear(d, d, rngs=rngs, dtype=dtype, precision=precision)
    self.precision = precision

  def __call__(self, x: jax.Array, key_mask: jax.Array | None) -> jax.Array:
    b, f, d = x.shape
    heads = lambda t: t.reshape(b, f, self.num_heads, d // self.num_heads)
    q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, precision=self.precision) * (d // self.num_heads) ** -0.5
    if key_mask is not None:  # Padded frames are never attended to (every row keeps >= 1 valid key).
      logits = jnp.where(key_mask[:, None, None, :], logits, jnp.finfo(logits.dtype).min)
    weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
    out = jnp.einsum("bhqk,bkhd->bqhd", weights, v, precision=self.precision)
    return self.out_proj(out.reshape(b, f, d))


class FeedForward(nnx.Module):
  def __init__(self, cfg: Wav2Vec2Config, *, rngs: nnx.Rngs, dtype, precision):
    self.intermediate_dense = _linear(cfg.hidden_size, cfg.intermediate_size, rngs=rngs, dtype=dtype,
                                      precision=precision)
    self.output_dense = _linear(cfg.intermediate_size, cfg.hidden_size, rngs=rngs, dtype=dtype, precision=precision)
    self.activation = cfg.hidden_act

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.output_dense(_ACTIVATIONS[self.activation](self.intermediate_dense(x)))


class EncoderLayer(nnx.Module):
  """Post-LN (`stable=False`): LN(x + attn(x)), then LN(x + ff(x)). Pre-LN (`stable=True`): x + attn(LN(x)),
  then x + ff(LN(x))."""

  def __init__(self, cfg: Wav2Vec2Config, *, rngs: nnx.Rngs, dtype, precision):
    self.attention = Attention(cfg, rngs=rngs, dtype=dtype, precision=precision)
    self.layer_norm = _layer_norm(cfg.hidden_size, cfg.layer_norm_eps, rngs=rngs, dtype=dtype)
    self.feed_forward = FeedForward(cfg, rngs=rngs, dtype=dtype, precision=precision)
    self.final_layer_norm = _layer_norm(cfg.hidden_size, cfg.layer_norm_eps, rngs=rngs, dtype=dtype)
    self.stable = cfg.do_stable_layer_norm

  def __call__(self, x: jax.Array, key_mask: jax.Array | None) -> jax.Array:
    if self.stable:
      x = x + self.attention(self.layer_norm(x), key_mask)
      return x + self.feed_forward(self.final_layer_norm(x))
    x = self.layer_norm(x + self.attention(x, key_mask))
    return self.final_layer_norm(x + self.feed_forward(x))


class Encoder(nnx.Module):
  def __init__(self, cfg: Wav2Vec2Config, *, rngs: nnx.Rngs, dtype, precision):
    self.pos_conv_embed = PositionalConvEmbedding(cfg, rngs=rngs, dtype=dtype, precision=precision)
    self.layer_norm = _layer_norm(cfg.hidden_size, cfg.layer_norm_eps, rngs=rngs, dtype=dtype)
    self.layers = nnx.List([EncoderLayer(cfg, rngs=rngs, dtype=dtype, precision=precision)
                            for _ in range(cfg.num_hidden_layers)])
    self.stable = cfg.do_stable_layer_norm

  def __call__(self, x: jax.Array, frame_mask: jax.Array | None, num_states: int) -> list[jax.Array]:
    """The first `num_states` of the L+1 hidden states (HF `output_hidden_states` order)."""
    if frame_mask is not None:
      x = jnp.where(frame_mask[..., None], x, 0.0)
    x = x + self.pos_conv_embed(x)
    if not self.stable:
      x = self.layer_norm(x)
    states = [x]
    for i, layer in enumerate(self.layers[:num_states - 1]):
      x = layer(x, frame_mask)
      is_last = i == len(self.layers) - 1
      states.append(self.layer_norm(x) if self.stable and is_last else x)
    return states


class Wav2Vec2(nnx.Module):
  """wav2vec 2.0 as a frozen audio encoder (the `synclipmae.models.audio.AudioEncoder` protocol).

  `Wav2Vec2(cfg, rngs=..., layers=None)`; `__call__(waveform [B, S], attention_mask [B, S] | None)` returns the
  selected hidden states (all L+1 by default), each [B, F, hidden_size] at 50 Hz, F = cfg.num_features(S).
  Weights come from `synclipmae.pretrained.wav2vec2.load_into` / `load_wav2vec2`.
  """
  frozen = True

  def __init__(self, cfg: Wav2Vec2Config, *, rngs: nnx.Rngs, layers: Sequence[int] | None = None,
               dtype=jnp.float32, precision: jax.lax.PrecisionLike = None):
    num_states = cfg.num_hidden_layers + 1
    layers = tuple(range(num_states)) if layers is None or len(layers) == 0 else tuple(int(i) for i in layers)
    bad = [i for i in layers if not 0 <= i < num_states]
    if bad or len(set(layers)) != len(layers):
      raise Wav2Vec2ConfigError(f"wav2vec 2.0 layers={layers}: need distinct hidden-state indices in "
                                f"[0, {num_states - 1}] (0 = encoder input, {num_states - 1} = last layer)")
    self.config = cfg
    self.layers = layers
    self.num_layers = len(layers)
    self.hidden_size = cfg.hidden_size
    self.feature_extractor = FeatureEncoder(cfg, rngs=rngs, dtype=dtype, precision=precision)
    self.feature_projection = FeatureProjection(cfg, rngs=rngs, dtype=dtype, precision=precision)
    self.encoder = Encoder(cfg, rngs=rngs, dtype=dtype, precision=precision)
    self.dtype = dtype

  def feature_mask(self, attention_mask: jax.Array, num_features: int) -> jax.Array:
    """Sample mask [B, S] -> feature-frame mask [B, F]: frame f is valid if f < conv output length of the
    number of valid samples (HF `_get_feature_vector_attention_mask`: it counts the ones, wherever they are)."""
    lengths = self.config.num_features(attention_mask.astype(jnp.int32).sum(-1))
    return jnp.arange(num_features)[None, :] < lengths[:, None]

  def all_hidden_states(self, waveform: jax.Array, attention_mask: jax.Array | None = None,
                        num_states: int | None = None) -> list[jax.Array]:
    """The L+1 hidden states of HF `Wav2Vec2Model(..., output_hidden_states=True).hidden_states` (or the first
    `num_states` of them)."""
    cfg = self.config
    if waveform.ndim != 2:
      raise ValueError(f"wav2vec 2.0 expects a waveform [batch, samples], got shape {waveform.shape}")
    if waveform.shape[1] < cfg.receptive_field:
      raise ValueError(f"wav2vec 2.0 needs at least {cfg.receptive_field} samples, got {waveform.shape[1]}")
    if attention_mask is not None and attention_mask.shape != waveform.shape:
      raise ValueError(f"attention_mask shape {attention_mask.shape} differs from the waveform's {waveform.shape}")
    x = waveform.astype(jnp.float32)
    sample_mask = None if attention_mask is None else attention_mask.astype(bool)
    if cfg.normalize:
      x = normalize_waveform(x, sample_mask)
    x = x[..., None].astype(self.dtype)  # [B, S, 1]: channels last.
    x = self.feature_extractor(x)  # No mask in the conv stack (as HF).
    frame_mask = None if sample_mask is None else self.feature_mask(sample_mask, x.shape[1])
    x = self.feature_projection(x)
    return self.encoder(x, frame_mask, cfg.num_hidden_layers + 1 if num_states is None else num_states)

  def __call__(self, waveform: jax.Array, attention_mask: jax.Array | None = None) -> list[jax.Array]:
    states = self.all_hidden_states(waveform, attention_mask, num_states=max(self.layers) + 1)
    return [states[i] for i in self.layers]

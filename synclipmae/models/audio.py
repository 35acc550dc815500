"""The audio branch: an audio encoder (hidden states at 50 Hz) and the adapter (one token per video frame).

Timing conventions (16 kHz audio, 25 fps video):
  * feature frame i of every audio encoder is centred on samples [320 i, 320 (i+1)) (50 Hz, hop 320);
  * video frame j covers samples [640 j, 640 (j+1)), i.e. feature frames 2j and 2j+1;
  * the audio given with T video frames covers T + 2*margin_frames frames (margin on both sides), so centre
    frame t of the clip is audio video-frame t + margin.
wav2vec 2.0 (conv stack: receptive field 400 samples, hop 320, no padding) gives floor((S-400)/320)+1 = 2V-1
frames for V video frames; the adapter repeats the last one. LogMelEncoder pads so it gives exactly S // 320.
"""

from __future__ import annotations

import functools
from typing import Protocol, runtime_checkable

import einops
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from synclipmae.models import vit, wav2vec2

SAMPLE_RATE = 16000
HOP_LENGTH = 320  # 20 ms: 50 Hz features, two per 25 fps video frame.
WIN_LENGTH = 400  # 25 ms Hann window.
N_FFT = 512
SAMPLES_PER_VIDEO_FRAME = 640


@runtime_checkable
class AudioEncoder(Protocol):
  """What every audio encoder provides.

  `__call__(waveform [B, S] float32 16 kHz in [-1, 1]) -> list of L hidden states, each [B, F, C]` at 50 Hz
  (hop 320 samples; F = S // 320, or one less, as wav2vec 2.0 gives). The adapter reads all L of them.
  `frozen`: True when the weights are pretrained and not trained (wav2vec 2.0): the model stops gradients at its
  outputs and the trainer must leave its params out of the optimiser. False for LogMelEncoder.
  """
  frozen: bool
  num_layers: int  # L, the number of hidden states returned.
  hidden_size: int  # C.

  def __call__(self, waveform: jax.Array) -> list[jax.Array]:
    ...


@functools.lru_cache(maxsize=None)
def mel_filterbank(num_mels: int, sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT) -> np.ndarray:
  """Slaney mel filterbank [num_mels, n_fft//2 + 1] (librosa's default), built once in numpy: a constant."""
  import librosa  # Imported here: only needed once per filterbank, and it is slow to import.
  return librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=num_mels).astype(np.float32)


@functools.lru_cache(maxsize=None)
def _hann_window() -> np.ndarray:
  """Periodic Hann window of WIN_LENGTH samples (librosa's / torch's default)."""
  n = np.arange(WIN_LENGTH)
  return (0.5 - 0.5 * np.cos(2 * np.pi * n / WIN_LENGTH)).astype(np.float32)


def log_mel_spectrogram(waveform: jax.Array, num_mels: int, hop_length: int = HOP_LENGTH) -> jax.Array:
  """[B, S] -> [B, S // hop, num_mels] log(mel power + 1e-6), in JAX.

  Frame i covers samples [hop i - (400 - hop) / 2, ...) for 400 samples: centred on its hop (20 ms by default;
  the SyncNet peer's MFCCs use 10 ms), zero padding at the edges.
  """
  num_frames = waveform.shape[1] // hop_length
  pad = (WIN_LENGTH - hop_length) // 2
  padded = jnp.pad(waveform.astype(jnp.float32), ((0, 0), (pad, pad)))
  index = np.arange(num_frames)[:, None] * hop_length + np.arange(WIN_LENGTH)[None]
  frames = padded[:, index]  # [B, F, 400]
  # An FFT per frame rather than a DFT matmul: each frame is transformed on its own, so the result does not
  # depend on the batch shape (a matmul's blocking does, and log() of near-silent bins amplifies that rounding
  # into token differences between 1 and 8 devices), and its rounding grows with log N, not N.
  power = jnp.abs(jnp.fft.rfft(frames * _hann_window(), n=N_FFT)) ** 2
  mel = jnp.einsum("bfk,mk->bfm", power, mel_filterbank(num_mels), precision=jax.lax.Precision.HIGHEST)
  return jnp.log(mel + 1e-6)


LOUDNESS_FLOOR, LOUDNESS_RANGE = -10.5, 6.0  # Mean log-mel power: about -10.2 for -50 dB noise, -5 for loud speech.


class LogMelEncoder(nnx.Module):
  """A small trainable audio encoder: log-mel -> per-frame LayerNorm over bands (+ loudness) -> 1-D convs.

  The stand-in for wav2vec 2.0 where no pretrained weights exist (CPU, tests, the synthetic corpus).
  The LayerNorm over bands keeps every feature frame local in time and on one scale; it would also remove the
  frame's loudness, the most direct acoustic correlate of mouth opening, so the frame's mean log-mel is appended
  as one more input channel, on a fixed scale (about 0 for silence, 1 for loud speech).
  Returns every conv layer's output as the hidden states, or those listed in `logmel.layers` (1-based: 3 = the
  last of 3; the last-layer-only ablation of the paper's multi-layer audio features).
  """
  frozen = False

  def __init__(self, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs, dtype=jnp.float32):
    if cfg.sample_rate != SAMPLE_RATE:
      raise ValueError(f"LogMelEncoder is built for {SAMPLE_RATE} Hz audio, got sample_rate={cfg.sample_rate}")
    c = cfg.logmel
    self.num_mels = c.num_mels
    self.depth = c.depth
    self.layers = tuple(c.get("layers", ())) or tuple(range(1, c.depth + 1))
    if not all(1 <= k <= c.depth for k in self.layers):
      raise ValueError(f"model.audio.logmel.layers={self.layers}: layers are numbered 1..{c.depth}")
    self.num_layers = len(self.layers)
    self.hidden_size = c.width
    # eps 1e-2 (band variance is ~0.3 for the noise floor, 1-10 for speech): digital silence gives a constant
    # frame, whose normalised value would otherwise be rounding noise amplified 1000-fold.
    self.norm = vit.layer_norm(c.num_mels, rngs=rngs, eps=1e-2)
    conv = lambda i: nnx.Conv(i, c.width, kernel_size=(3,), padding="SAME", dtype=dtype, param_dtype=jnp.float32,
                              rngs=rngs)
    self.convs = nnx.List([conv(c.num_mels + 1 if k == 0 else c.width) for k in range(c.depth)])
    self.dtype = dtype

  @property
  def receptive_field(self) -> int:
    """How many feature frames each side an output frame reads (kernel 3: one per layer)."""
    return self.depth

  def __call__(self, waveform: jax.Array) -> list[jax.Array]:
    log_mel = log_mel_spectrogram(waveform, self.num_mels)
    loudness = (jnp.mean(log_mel, axis=-1, keepdims=True) - LOUDNESS_FLOOR) / LOUDNESS_RANGE
    x = jnp.concatenate([self.norm(log_mel), loudness], axis=-1).astype(self.dtype)
    hidden = []
    for conv in self.convs:
      y = jax.nn.gelu(conv(x), approximate=False)
      x = x + y if y.shape == x.shape else y  # Residual wherever widths match (all but the first layer).
      hidden.append(x)
    return [hidden[k - 1] for k in self.layers]


def make_audio_encoder(cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs, dtype=jnp.float32) -> AudioEncoder:
  """The audio encoder named by cfg.encoder (cfg is the model config's `audio` section)."""
  if cfg.encoder == "logmel":
    return LogMelEncoder(cfg, rngs=rngs, dtype=dtype)
  if cfg.encoder == "wav2vec2":  # Frozen; its weights come from synclipmae.pretrained.load_pretrained.
    w = cfg.wav2vec2
    encoder_cfg = wav2vec2.geometry(w.geometry, normalize=w.normalize)
    if encoder_cfg.hop_length != HOP_LENGTH or cfg.sample_rate != SAMPLE_RATE:
      raise ValueError(f"wav2vec 2.0 geometry {w.geometry!r} has hop {encoder_cfg.hop_length} at sample_rate="
                       f"{cfg.sample_rate}; the adapter needs {HOP_LENGTH} at {SAMPLE_RATE} Hz (50 Hz features)")
    return wav2vec2.Wav2Vec2(encoder_cfg, layers=tuple(w.layers) or None, rngs=rngs, dtype=dtype)
  raise ValueError(f"unknown audio encoder {cfg.encoder!r}: choose 'logmel' or 'wav2vec2'")


def _normalise(x: jax.Array, eps: float = 1e-6) -> jax.Array:
  """Parameter-free LayerNorm over the last axis: puts the layers of a frozen encoder on one scale."""
  mean = x.mean(-1, keepdims=True)
  return (x - mean) * jax.lax.rsqrt(((x - mean) ** 2).mean(-1, keepdims=True) + eps)


def pool_video_frames(hidden_states: list[jax.Array]) -> jax.Array:
  """L hidden states [B, F, C] at 50 Hz -> [B, V, L, C] at 25 fps: each layer normalised per frame, the two feature
  frames of each video frame averaged (F = 2V, or 2V-1 with the last frame repeated)."""
  h = _normalise(jnp.stack(hidden_states, axis=2).astype(jnp.float32))  # [B, F, L, C]
  if h.shape[1] % 2:  # wav2vec 2.0 is one frame short of 2 per video frame: repeat the edge.
    h = jnp.concatenate([h, h[:, -1:]], axis=1)
  return einops.reduce(h, "b (v two) l c -> b v l c", "mean", two=2)


class AudioAdapter(nnx.Module):
  """Hidden states of all layers at 50 Hz -> one token per video frame [B, T, Dp].

  Per layer: normalise, average the two feature frames of each video frame (50 Hz -> 25 fps), take the window
  of frames t-w..t+w around each centre frame, concatenate layers x window x channels, MLP, LayerNorm.
  """

  def __init__(self, cfg: ml_collections.ConfigDict, in_features: int, num_layers: int, *, rngs: nnx.Rngs,
               dtype=jnp.float32):
    a = cfg.audio
    if a.window_frames > a.margin_frames:
      raise ValueError(f"window_frames={a.window_frames} needs at least as many margin_frames "
                       f"(got {a.margin_frames}): the window of the first/last frame must lie inside the audio")
    self.window = a.window_frames
    self.margin = a.margin_frames
    self.num_layers = num_layers
    self.in_features = in_features
    fan_in = num_layers * (2 * a.window_frames + 1) * in_features
    self.fc1 = vit.dense(fan_in, a.adapter_hidden, rngs=rngs, dtype=dtype)
    self.fc2 = vit.dense(a.adapter_hidden, cfg.prompt_dim, rngs=rngs, dtype=dtype)
    self.norm = vit.layer_norm(cfg.prompt_dim, rngs=rngs, dtype=dtype)
    self.dtype = dtype

  def num_frames(self, num_features: int) -> int:
    """T, the number of centre video frames, for F feature frames (F = 2V or 2V-1 for V audio video-frames)."""
    return (num_features + 1) // 2 - 2 * self.margin

  def __call__(self, hidden_states: list[jax.Array]) -> jax.Array:
    return self.from_pooled(self.pool(hidden_states))

  def pool(self, hidden_states: list[jax.Array]) -> jax.Array:
    """The parameter-free half: L hidden states [B, F, C] at 50 Hz -> per-video-frame features [B, V, L, C].

    What a frozen encoder's precomputed features store (synclipmae.data.audio_features).
    """
    if len(hidden_states) != self.num_layers:
      raise ValueError(f"adapter built for {self.num_layers} hidden states, got {len(hidden_states)}")
    return pool_video_frames(hidden_states)

  def from_pooled(self, pooled: jax.Array) -> jax.Array:
    """Per-video-frame features [B, V, L, C] (from `pool`) -> tokens [B, T, Dp], T = V - 2*margin."""
    if pooled.shape[2:] != (self.num_layers, self.in_features):
      raise ValueError(f"adapter built for {self.num_layers} layers x {self.in_features} channels, got features "
                       f"of shape {pooled.shape}")
    t = pooled.shape[1] - 2 * self.margin
    if t < 1:
      raise ValueError(f"audio of {pooled.shape[1]} video frames leaves no centre frame with margin {self.margin}")
    index = self.margin + np.arange(t)[:, None] + np.arange(-self.window, self.window + 1)[None]  # [T, 2w+1]
    h = einops.rearrange(pooled.astype(jnp.float32)[:, index], "b t k l c -> b t (l k c)").astype(self.dtype)
    return self.norm(self.fc2(jax.nn.gelu(self.fc1(h), approximate=False))).astype(jnp.float32)

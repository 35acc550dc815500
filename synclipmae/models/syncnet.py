"""SyncNet (Chung & Zisserman, "Out of time: automated lip sync in the wild", 2016): the peer SyncLipMAE's
sync claim is measured against (issue 13), ported to Flax NNX.

The layers are those of `syncnet_python`'s `SyncNetModel.S` (the reference implementation; PyTorch, no weights
on PyPI): a video stream of 3-D then 2-D convolutions over 5 stacked RGB face frames, an audio stream of 2-D
convolutions over 13 MFCCs x 20 steps (0.2 s at 100 Hz), each with BatchNorm + ReLU and ending in two fully
connected layers. Two knobs make it trainable on this project's CPU budget, both off at the published values:
`width` scales every channel count (1.0 = published), and the last video convolution spans whatever spatial extent
is left (6 x 6 at the published 224 px, 1 x 1 at our 64 px crops).

For the sync evaluator (`synclipmae.eval.sync`) it offers the same two calls as SyncLipMAE, on whole windows:
`video_embeddings(frames [B, T, H, W, 3])` (each frame's embedding reads frames t-2..t+2, edges repeated) and
`encode_audio(audio, T)` with the audio convention of models/audio.py (T + 2*margin video frames of 640
samples; margin >= 2, the context of the 20 MFCC steps).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from synclipmae.models import audio as audio_lib

CONTEXT_FRAMES = 5  # Video frames (and 0.2 s of audio) behind one embedding.
NUM_MFCC = 13
MFCC_BANDS = 26  # python_speech_features' default filterbank size.
MFCC_HOP = 160  # 10 ms: 4 MFCC steps per 25 fps video frame.
PRE_EMPHASIS = 0.97
MFCC_PER_FRAME = audio_lib.SAMPLES_PER_VIDEO_FRAME // MFCC_HOP


def mfcc(waveform: jax.Array) -> jax.Array:
  """[B, S] 16 kHz -> [B, S // 160, 13] MFCCs as SyncNet reads them (python_speech_features' recipe: pre-emphasis
  0.97, 25 ms windows every 10 ms, 26 mel bands, log, DCT-II; our Slaney filterbank and Hann window instead of its
  HTK bands and rectangular window: a model trained from scratch on them does not care)."""
  emphasised = jnp.concatenate([waveform[:, :1], waveform[:, 1:] - PRE_EMPHASIS * waveform[:, :-1]], axis=1)
  log_mel = audio_lib.log_mel_spectrogram(emphasised, MFCC_BANDS, hop_length=MFCC_HOP)
  return jax.scipy.fft.dct(log_mel, type=2, axis=-1, norm="ortho")[..., :NUM_MFCC]


class _ConvBN(nnx.Module):
  """Convolution (PyTorch padding), BatchNorm, ReLU: the unit both streams are built of."""

  def __init__(self, cin: int, cout: int, kernel: tuple[int, ...], *, stride: tuple[int, ...] | None = None,
               padding: tuple[int, ...] | None = None, rngs: nnx.Rngs):
    padding = padding or (0,) * len(kernel)
    self.conv = nnx.Conv(cin, cout, kernel, strides=stride or 1, padding=[(p, p) for p in padding], rngs=rngs)
    # momentum 0.9 = PyTorch's 0.1; eps as PyTorch.
    self.norm = nnx.BatchNorm(cout, momentum=0.9, epsilon=1e-5, rngs=rngs)

  def __call__(self, x):
    return jax.nn.relu(self.norm(self.conv(x)))


def _max_pool(x, window, stride, padding=None):
  padding = [(p, p) for p in (padding or (0,) * len(window))]
  return nnx.max_pool(x, window, strides=stride, padding=padding)


class _Head(nnx.Module):
  """Linear, BatchNorm1d, ReLU, Linear."""

  def __init__(self, cin: int, hidden: int, out: int, *, rngs: nnx.Rngs):
    self.fc1 = nnx.Linear(cin, hidden, rngs=rngs)
    self.norm = nnx.BatchNorm(hidden, momentum=0.9, epsilon=1e-5, rngs=rngs)
    self.fc2 = nnx.Linear(hidden, out, rngs=rngs)

  def __call__(self, x):
    return self.fc2(jax.nn.relu(self.norm(self.fc1(x))))


def _video_extent(image_size: int) -> int:
  """Spatial size reaching the last video convolution (published: 224 -> 6)."""
  s = (image_size - 7) // 2 + 1  # conv 7x7 / 2
  s = (s - 3) // 2 + 1  # max pool 3 / 2
  s = (s + 2 - 5) // 2 + 1  # conv 5x5 / 2, pad 1
  s = (s + 2 - 3) // 2 + 1  # max pool 3 / 2, pad 1
  return (s - 3) // 2 + 1  # three 3x3 convs keep it; max pool 3 / 2


class SyncNet(nnx.Module):
  """SyncNet's two streams. Embeddings are the raw outputs of the last linear layers (the model is trained and
  scored on their Euclidean distance)."""

  reads_frame_windows = True  # The evaluator passes whole windows [B, T, ...] to video_embeddings.
  context_frames = CONTEXT_FRAMES

  def __init__(self, *, image_size: int = 64, width: float = 1.0, margin_frames: int = 2, rngs: nnx.Rngs):
    if margin_frames < CONTEXT_FRAMES // 2:
      raise ValueError(f"SyncNet's audio context needs margin_frames >= {CONTEXT_FRAMES // 2}, got {margin_frames}")
    extent = _video_extent(image_size)
    if extent < 1:
      raise ValueError(f"SyncNet needs face crops of at least 31 px, got image_size={image_size}")
    c = lambda n: max(1, round(n * width))
    self.image_size, self.width, self.margin_frames = image_size, width, margin_frames
    self.embed_dim = c(1024)
    self.video = nnx.List([
        _ConvBN(3, c(96), (5, 7, 7), stride=(1, 2, 2), rngs=rngs),
        _ConvBN(c(96), c(256), (1, 5, 5), stride=(1, 2, 2), padding=(0, 1, 1), rngs=rngs),
        _ConvBN(c(256), c(256), (1, 3, 3), padding=(0, 1, 1), rngs=rngs),
        _ConvBN(c(256), c(256), (1, 3, 3), padding=(0, 1, 1), rngs=rngs),
        _ConvBN(c(256), c(256), (1, 3, 3), padding=(0, 1, 1), rngs=rngs),
        _ConvBN(c(256), c(512), (1, extent, extent), rngs=rngs)])
    self.audio = nnx.List([
        _ConvBN(1, c(64), (3, 3), padding=(1, 1), rngs=rngs),
        _ConvBN(c(64), c(192), (3, 3), padding=(1, 1), rngs=rngs),
        _ConvBN(c(192), c(384), (3, 3), padding=(1, 1), rngs=rngs),
        _ConvBN(c(384), c(256), (3, 3), padding=(1, 1), rngs=rngs),
        _ConvBN(c(256), c(256), (3, 3), padding=(1, 1), rngs=rngs),
        _ConvBN(c(256), c(512), (5, 4), rngs=rngs)])
    self.video_head = _Head(c(512), c(512), self.embed_dim, rngs=rngs)
    self.audio_head = _Head(c(512), c(512), self.embed_dim, rngs=rngs)

  def embed_lips(self, stacks: jax.Array) -> jax.Array:
    """[N, 5, H, W, 3] face-crop stacks in [0, 1] -> [N, D]."""
    v = self.video
    x = _max_pool(v[0](stacks - 0.5), (1, 3, 3), (1, 2, 2))
    x = _max_pool(v[1](x), (1, 3, 3), (1, 2, 2), (0, 1, 1))
    x = _max_pool(v[4](v[3](v[2](x))), (1, 3, 3), (1, 2, 2))
    return self.video_head(v[5](x).reshape(len(stacks), -1))

  def embed_mfcc(self, mfccs: jax.Array) -> jax.Array:
    """[N, 20, 13] MFCC windows (time, coefficient) -> [N, D]."""
    a = self.audio
    x = jnp.swapaxes(mfccs, 1, 2)[..., None]  # [N, 13, 20, 1]: coefficients x time, as syncnet_python.
    x = _max_pool(a[1](a[0](x)), (3, 3), (1, 2))
    x = _max_pool(a[4](a[3](a[2](x))), (3, 3), (2, 2))
    return self.audio_head(a[5](x).reshape(len(mfccs), -1))

  def video_embeddings(self, frames: jax.Array) -> jax.Array:
    """frames [B, T, H, W, 3] in [0, 1] -> [B, T, D]; frame t reads frames t-2..t+2 (the edges repeated)."""
    b, t = frames.shape[:2]
    half = CONTEXT_FRAMES // 2
    padded = jnp.concatenate([frames[:, :1]] * half + [frames] + [frames[:, -1:]] * half, axis=1)
    stacks = jnp.stack([padded[:, k:k + t] for k in range(CONTEXT_FRAMES)], axis=2)  # [B, T, 5, H, W, 3]
    return self.embed_lips(stacks.reshape(b * t, *stacks.shape[2:])).reshape(b, t, -1)

  def encode_audio(self, audio: jax.Array, num_frames: int) -> jax.Array:
    """audio [B, (T + 2*margin) * 640] -> [B, T, D]: video frame t's embedding reads the 0.2 s under frames
    t-2..t+2."""
    expected = (num_frames + 2 * self.margin_frames) * audio_lib.SAMPLES_PER_VIDEO_FRAME
    if audio.shape[1] != expected:
      raise ValueError(f"audio of {audio.shape[1]} samples: {num_frames} frames with margin {self.margin_frames} "
                       f"need {expected}")
    windows = mfcc_windows(audio, num_frames, self.margin_frames)
    b = len(audio)
    return self.embed_mfcc(windows.reshape(b * num_frames, *windows.shape[2:])).reshape(b, num_frames, -1)


def mfcc_windows(audio: jax.Array, num_frames: int, margin_frames: int) -> jax.Array:
  """audio [B, (T + 2*margin) * 640] -> [B, T, 20, 13]: the MFCCs under video frames t-2..t+2 of each frame t."""
  m = mfcc(audio)  # [B, (T + 2 margin) * 4, 13]
  first = (margin_frames - CONTEXT_FRAMES // 2) * MFCC_PER_FRAME
  length = CONTEXT_FRAMES * MFCC_PER_FRAME
  return jnp.stack([m[:, first + MFCC_PER_FRAME * t:first + MFCC_PER_FRAME * t + length]
                    for t in range(num_frames)], axis=1)


def contrastive_loss(video: jax.Array, audio: jax.Array, synced: jax.Array, margin: float) -> jax.Array:
  """SyncNet's training loss (Hadsell et al. 2006): mean of y d^2 + (1 - y) max(margin - d, 0)^2 over pairs, d the
  Euclidean distance of a video and an audio embedding, y = 1 for a synced pair."""
  d = jnp.sqrt(jnp.sum((video - audio) ** 2, -1) + 1e-12)
  y = synced.astype(d.dtype)
  return jnp.mean(y * d ** 2 + (1 - y) * jax.nn.relu(margin - d) ** 2)


def info_nce_loss(video: jax.Array, synced: jax.Array, shifted: jax.Array, temperature: float) -> jax.Array:
  """The alternative objective (ours, to separate architecture from objective in the comparison): symmetric InfoNCE
  on cosine similarity, each video stack against every synced audio window of the batch plus every shifted one
  (hard negatives from its own clip), and each synced audio window against every video stack."""
  v, a, s = (x / jnp.linalg.norm(x, axis=-1, keepdims=True) for x in (video, synced, shifted))
  labels = jnp.arange(len(v))
  v2a = (v @ jnp.concatenate([a, s]).T) / temperature
  a2v = (a @ v.T) / temperature
  ce = lambda logits: -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1))
  return 0.5 * (ce(v2a) + ce(a2v))


def published_shapes() -> dict[str, tuple[int, ...]]:
  """Kernel shapes of syncnet_python's SyncNetModel.S in our (H, W[, D], in, out) layout, at width 1 and 224 px:
  what `SyncNet(image_size=224)` must reproduce (tests)."""
  return {"video.0": (5, 7, 7, 3, 96), "video.1": (1, 5, 5, 96, 256), "video.2": (1, 3, 3, 256, 256),
          "video.3": (1, 3, 3, 256, 256), "video.4": (1, 3, 3, 256, 256), "video.5": (1, 6, 6, 256, 512),
          "audio.0": (3, 3, 1, 64), "audio.1": (3, 3, 64, 192), "audio.2": (3, 3, 192, 384),
          "audio.3": (3, 3, 384, 256), "audio.4": (3, 3, 256, 256), "audio.5": (5, 4, 256, 512),
          "video_head.fc1": (512, 512), "video_head.fc2": (512, 1024),
          "audio_head.fc1": (512, 512), "audio_head.fc2": (512, 1024)}

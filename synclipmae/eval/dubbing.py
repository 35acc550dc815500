"""Dubbing scored against the truth: clip A's face made to speak clip B's words, audio- and video-driven.

For a pair (clip A, clip B) of different identities of one split, A's first T frames (T = the shorter clip) are
dubbed (`synclipmae.dubbing.dub_frames`) with B's audio tokens (audio-driven) or B's z_voc (video-driven). The
synthetic corpus renders the truth exactly: A's identity and head / eye / expression tracks with B's mouth track
(`clips.render_factors`). Per pair and driving:
  * mouth-region PSNR and SSIM to the truth (the region: the truth's mouth mask or A's, where the two can differ),
    and the same for A's own frames, undubbed: the floor a dub must beat;
  * sync with the new audio, as `synclipmae sync --aligned` scores it: the dub is written as an mp4 of aligned crops
    with B's soundtrack and read back through `video_tokens`; the pair counts as in sync when |offset| <= 1. The
    undubbed frames with B's audio (what a dub starts from) and the truth with B's audio (the ceiling) are scored
    the same way. A control tells a mouth that follows its driver from a redrawn mouth that sync merely fails to
    place: A dubbed with B's audio tokens delayed by CONTROL_DELAY frames, scored against B's audio, must be found
    at offset -CONTROL_DELAY (audio leads video), not at 0; and in pixels, its mouth-region PSNR to the truth
    must be lower than the audio-driven dub's (the gain of the right driver over a wrong one);
  * identity kept: the cosine of z_id of each dubbed frame to that of the target frame, averaged over frames.
Side-by-side mp4s (target | audio-driven dub | video-driven dub | truth, with B's audio) for the first pairs.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import numpy as np

from synclipmae import dubbing, inference, storage
from synclipmae.eval import swaps

DRIVINGS = ("audio", "video")
IN_SYNC_FRAMES = 1  # |offset| <= this counts as in sync.
CONTROL_DELAY = 4  # Frames by which the control dub's mouth lags B's audio.


def plan(corpus, split: str, num_pairs: int, seed: int = 0) -> list[dict[str, int]]:
  """Pairs {"a", "b"} of clip indices of different identities of `split`, each A used once while it lasts."""
  entries = corpus.manifest(split)
  speakers = np.array([e["speaker_id"] for e in entries])
  if len(set(speakers)) < 2:
    raise ValueError(f"{corpus.directory}/{split}: dubbing pairs need clips of two identities or more")
  rng = np.random.default_rng(seed)
  targets = np.concatenate([rng.permutation(len(entries)) for _ in range(-(-num_pairs // len(entries)))])
  return [{"a": int(a), "b": int(rng.choice(np.flatnonzero(speakers != speakers[a])))} for a in targets[:num_pairs]]


def read_pair(corpus, split: str, pair: dict[str, int], spec=None) -> dict[str, Any]:
  """A dubbing case of `plan`: clip A ("a") and B ("b"), T = the shorter's length ("num_frames"), A's first T frames
  uint8 [T, S, S, 3] with their face / mouth masks, the truth (the renderer's A with B's mouth track) [T, S, S, 3],
  the region scored (the truth's mouth mask or A's) [T, S, S], and B's audio for those frames (float32)."""
  from data_pipelines.synthetic import clips as clips_lib
  spec = swaps._spec(corpus) if spec is None else spec
  a, b = corpus.read(split, pair["a"]), corpus.read(split, pair["b"])
  t = min(a.num_frames, b.num_frames)
  mouth = a.mouth_masks[:t]
  truth = clips_lib.render_factors(spec, a.metadata["identity_vector"], np.asarray(b.labels["mouth"])[:t],
                                   {k: np.asarray(a.labels[k])[:t] for k in clips_lib.AMBIENT_LABELS})
  return {"a": a, "b": b, "num_frames": t, "frames": a.decode_frames()[:t], "face_masks": a.face_masks[:t],
          "mouth_masks": mouth, "truth": truth["frames"][:t], "region": truth["mouth_mask"][:t] | mouth,
          "audio": b.audio_float()[:t * inference.SAMPLES_PER_FRAME]}


def region_ssim(a: np.ndarray, b: np.ndarray, region: np.ndarray) -> float:
  """Mean SSIM (scikit-image, 7x7 windows) of frames [T, S, S, 3] in [0, 1] over the pixels of region [T, S, S]."""
  from skimage.metrics import structural_similarity
  values = []
  for x, y, r in zip(a, b, region):
    if r.any():
      _, full = structural_similarity(x, y, channel_axis=-1, data_range=1.0, full=True)
      values.append(full.mean(-1)[r].mean())
  return float(np.mean(values)) if values else float("nan")


def region_psnr(a: np.ndarray, b: np.ndarray, region: np.ndarray) -> float:
  """PSNR of frames [T, S, S, 3] in [0, 1] over all pixels of region [T, S, S] together."""
  return swaps.psnr(a, b, region)


def _cosine(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  x = x / np.linalg.norm(x, axis=-1, keepdims=True)
  y = y / np.linalg.norm(y, axis=-1, keepdims=True)
  return (x * y).sum(-1)


def _sync(pretrained, frames: np.ndarray, audio: np.ndarray, path: str) -> dict[str, Any]:
  """`synclipmae sync --aligned` of frames uint8 [T, S, S, 3] with a soundtrack, through an mp4 at `path`."""
  from data_pipelines import media
  from synclipmae.eval import sync
  media.write_mp4(path, frames, audio)
  result = sync.score_video(inference.video_tokens(pretrained, path, aligned=True), window_frames=None)
  return {"offset_frames": result["offset_frames"], "confidence": result["confidence"]}


def side_by_side(panels: list[np.ndarray], scale: int = 4) -> np.ndarray:
  """Frames [T, S, S, 3] (uint8) of each panel -> one video [T, scale*S, len * scale*S, 3], upscaled (nearest)."""
  row = np.concatenate([np.asarray(p) for p in panels], axis=2)
  return np.repeat(np.repeat(row, scale, axis=1), scale, axis=2)


def evaluate(pretrained, corpus, split: str = "heldout", *, num_pairs: int = 32, seed: int = 0,
             mode: str = "retrieve", retrieve: dict[str, Any] | None = None, judge=None, videos_dir=None,
             num_videos: int = 3, log=print) -> dict[str, Any]:
  """Dubs `num_pairs` pairs both ways and scores them (module docstring); writes side-by-side mp4s of the first
  `num_videos` pairs into `videos_dir` when given. retrieve: `dubbing.retrieve_mouths` settings for mode
  "retrieve"; judge: another loaded model to score sync with (default the dubbing model itself: a dub found by its
  own tokens might fool them alone). Returns the summary and the per-pair rows."""
  judge = pretrained if judge is None else judge
  from data_pipelines import media
  spec = swaps._spec(corpus)
  pairs = plan(corpus, split, num_pairs, seed)
  settings = {"neighbours": dubbing.RETRIEVE_NEIGHBOURS, "ambient_weight": dubbing.RETRIEVE_AMBIENT_WEIGHT,
              **(retrieve or {})} if mode == "retrieve" else {}
  rows = []
  with tempfile.TemporaryDirectory() as scratch:
    for n, pair in enumerate(pairs):
      case = read_pair(corpus, split, pair, spec)
      a, b, t, frames, face, mouth = (case[k] for k in ("a", "b", "num_frames", "frames", "face_masks", "mouth_masks"))
      truth_frames, region, audio = case["truth"], case["region"], case["audio"]
      target = pretrained.encode_frames(frames, face, mouth)
      driver = pretrained.encode_clip(b, ("z_voc", "audio"))
      # Retrieval indexes A's own frames by tokens of the driver's kind: A's audio tokens for audio-driven dubs.
      own = {"audio": pretrained.encode_clip(a, ("audio",))["audio"][:t] if mode == "retrieve" else None,
             "video": None}
      as_float = lambda x: np.asarray(x, np.float32) / 255
      row = {"a": a.clip_id, "b": b.clip_id, "num_frames": t,
             "undubbed": {"mouth_psnr": region_psnr(as_float(frames), as_float(truth_frames), region),
                          "mouth_ssim": region_ssim(as_float(frames), as_float(truth_frames), region),
                          **_sync(judge, frames, audio, os.path.join(scratch, "undubbed.mp4"))},
             "truth": _sync(judge, truth_frames, audio, os.path.join(scratch, "truth.mp4"))}
      dubs = {}
      for driving in DRIVINGS:
        tokens = driver["audio" if driving == "audio" else "z_voc"][:t]
        dub = dubbing.dub_frames(pretrained, frames, face, mouth, tokens, mode=mode, own_driving=own[driving],
                                 **settings)
        dubs[driving] = dub.frames
        z_id = pretrained.encode_frames(dub.frames, face, mouth)["z_id"]
        row[driving] = {"mouth_psnr": region_psnr(as_float(dub.frames), as_float(truth_frames), region),
                        "mouth_ssim": region_ssim(as_float(dub.frames), as_float(truth_frames), region),
                        "identity_cosine": float(_cosine(z_id, target["z_id"]).mean()),
                        **_sync(judge, dub.frames, audio, os.path.join(scratch, f"{driving}.mp4"))}
      late = np.concatenate([np.repeat(driver["audio"][:1], CONTROL_DELAY, 0), driver["audio"][:t - CONTROL_DELAY]])
      control = dubbing.dub_frames(pretrained, frames, face, mouth, late, mode=mode, own_driving=own["audio"],
                                   **settings)
      row["delayed"] = {"mouth_psnr": region_psnr(as_float(control.frames), as_float(truth_frames), region),
                        **_sync(judge, control.frames, audio, os.path.join(scratch, "delayed.mp4"))}
      rows.append(row)
      if videos_dir is not None and n < num_videos:
        written = os.path.join(scratch, "side_by_side.mp4")  # Then copied: `videos_dir` may be a URL.
        media.write_mp4(written, side_by_side([frames, dubs["audio"], dubs["video"], truth_frames]), audio)
        path = storage.output_dir(videos_dir) / f"dub_{n:02d}_{a.clip_id}_with_{b.clip_id}.mp4"
        storage.path(written).copy(path, overwrite=True)
        row["side_by_side"] = str(path)
      if log:
        log(f"pair {n + 1}/{len(pairs)} {a.clip_id} <- {b.clip_id}: mouth PSNR audio {row['audio']['mouth_psnr']:.2f}"
            f" / video {row['video']['mouth_psnr']:.2f} / undubbed {row['undubbed']['mouth_psnr']:.2f} dB; offsets "
            f"{row['audio']['offset_frames']:+d} / {row['video']['offset_frames']:+d} / "
            f"{row['undubbed']['offset_frames']:+d}")
  return {"split": split, "num_pairs": len(rows), "seed": seed, "mode": mode, "retrieve": settings or None,
          "sync_judge": judge.path,
          "step": pretrained.step,
          "model": pretrained.path,
          "dubbing": pretrained.info.get("dubbing"), "summary": summarise(rows), "pairs": rows}


def summarise(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
  """Means over pairs per kind (audio, video, undubbed, truth, delayed); in_sync = share of pairs with |offset| <= 1;
  for the delayed control also at_planted_offset (share found within 1 frame of -CONTROL_DELAY) and driver_gain_db
  (the audio-driven dub's mouth PSNR minus the control's)."""
  out = {}
  for kind in (*DRIVINGS, "undubbed", "truth", "delayed"):
    values = [r[kind] for r in rows]
    summary = {k: float(np.mean([v[k] for v in values])) for k in values[0] if k != "offset_frames"}
    summary["in_sync"] = float(np.mean([abs(v["offset_frames"]) <= IN_SYNC_FRAMES for v in values]))
    out[kind] = summary
  out["delayed"]["driver_gain_db"] = out["audio"]["mouth_psnr"] - out["delayed"]["mouth_psnr"]
  out["delayed"]["at_planted_offset"] = float(np.mean([abs(r["delayed"]["offset_frames"] + CONTROL_DELAY)
                                                        <= IN_SYNC_FRAMES for r in rows]))
  for kind in DRIVINGS:
    out[kind]["psnr_gain_db"] = out[kind]["mouth_psnr"] - out["undubbed"]["mouth_psnr"]
    out[kind]["pairs_better_than_undubbed"] = float(np.mean([r[kind]["mouth_psnr"] > r["undubbed"]["mouth_psnr"]
                                                             for r in rows]))
  return out


def format_summary(result: dict[str, Any]) -> str:
  """A markdown table of the summary."""
  s = result["summary"]
  lines = ["| | mouth PSNR (dB) | gain over undubbed | mouth SSIM | in sync (abs offset <= 1) | confidence | "
           "identity cosine |", "|---|---|---|---|---|---|---|"]
  for kind, label in (("audio", "audio-driven dub"), ("video", "video-driven dub"), ("undubbed", "undubbed target"),
                      ("truth", "truth")):
    v = s[kind]
    psnr = f"{v['mouth_psnr']:.2f}" if "mouth_psnr" in v else "-"
    gain = f"{v['psnr_gain_db']:+.2f}" if "psnr_gain_db" in v else "-"
    ssim = f"{v['mouth_ssim']:.3f}" if "mouth_ssim" in v else "-"
    ident = f"{v['identity_cosine']:.3f}" if "identity_cosine" in v else "-"
    lines.append(f"| {label} | {psnr} | {gain} | {ssim} | {v['in_sync']:.1%} | {v['confidence']:.3f} | {ident} |")
  control = s["delayed"]
  return "\n".join(lines) + (
      f"\n({result['num_pairs']} pairs, {result['split']} split, {result['mode']} dubs)\ncontrol: audio-driven dubs "
      f"with the mouth {CONTROL_DELAY} frames late are found at offset -{CONTROL_DELAY} (+-1) for "
      f"{control['at_planted_offset']:.1%} of pairs and in sync for {control['in_sync']:.1%} (a mouth that follows "
      f"its driver: ~100 % and ~0 %); mouth PSNR {control['mouth_psnr']:.2f} dB, the right driver "
      f"{control['driver_gain_db']:+.2f} dB better")


def write_results(result: dict[str, Any], out_dir: str | os.PathLike) -> dict[str, str]:
  """dubbing.json and dubbing.png (per pair: mouth PSNR of each dub against the undubbed floor)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  out = storage.output_dir(out_dir)
  json_path = storage.write_json(out / "dubbing.json", result)
  floor = np.array([r["undubbed"]["mouth_psnr"] for r in result["pairs"]])
  fig, ax = plt.subplots(figsize=(5, 4.5))
  for kind, marker in zip(DRIVINGS, ("o", "s")):
    ax.scatter(floor, [r[kind]["mouth_psnr"] for r in result["pairs"]], marker=marker, alpha=0.7,
               label=f"{kind}-driven")
  lo, hi = float(floor.min()) - 1, float(max(r[k]["mouth_psnr"] for r in result["pairs"] for k in DRIVINGS)) + 1
  ax.plot([lo, hi], [lo, hi], "k--", lw=0.8, label="no better than undubbed")
  ax.plot([lo, hi], [lo + 3, hi + 3], "g:", lw=0.8, label="+3 dB")
  ax.set_xlabel("undubbed target: mouth PSNR to truth (dB)")
  ax.set_ylabel("dub: mouth PSNR to truth (dB)")
  ax.set_title(f"dubbing, {result['split']} split ({result['num_pairs']} pairs)", fontsize=9)
  ax.legend(fontsize=8)
  fig.tight_layout()
  return {"json": json_path, "png": storage.write_figure(fig, out / "dubbing.png")}

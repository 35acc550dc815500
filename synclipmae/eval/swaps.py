"""Swap renders: draw identity + ambient motion of clip A with the mouth of clip B, and score against the truth.

If the tokens factorize, the decoder conditioned on A's `z_id` (its identity view, from another frame of A) and
A's `z_amb`, with the driving token of clip B (B's `z_voc`, or B's audio token for an audio-driven swap), draws A's
face in A's head pose, blink and expression, speaking with B's mouth. The synthetic corpus renders exactly that
frame (`clips.render_factors`: A's identity and ambient track, B's mouth track), so each swap is scored by PSNR
against the truth and against either source frame. A decoder that ignores its driving token draws A's mouth and
comes out closer to A than to the truth in the mouth region; one that copies B comes out closer to B. The mouth
region is where truth and A differ at all, so its PSNR is reported separately (`mouth_*`).

Pairs: clip A and clip B of different identities of one split, a random frame of each; the reference frame (z_id,
and the decoder's visible patches unless decoder.visible="none") is another random frame of A, at least a
second away. Everything goes through `Pretrained.encode_frames` / `encode_audio` / `render`.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from synclipmae import storage

SECOND = 25  # Frames between the swapped frame and A's reference frame, at least.


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
  """PSNR in dB of images in [0, 1] (over the pixels of a bool mask [H, W] if given)."""
  err = np.square(np.asarray(a, np.float64) - np.asarray(b, np.float64))
  mse = err[mask].mean() if mask is not None else err.mean()
  return float(10 * np.log10(1.0 / max(mse, 1e-10)))


def _spec(corpus):
  from data_pipelines.synthetic import clips
  spec = corpus.info.get("generator", {}).get("spec")
  if not spec:
    raise ValueError(f"{corpus.directory}: swap renders need the synthetic corpus's spec (corpus.json "
                     "generator.spec) to render the truth; this corpus has none")
  return clips.SyntheticSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec.items()})


def plan(corpus, split: str, num_pairs: int, seed: int = 0) -> list[dict[str, int]]:
  """Pairs (clip a, frame t, reference frame r of a; clip b of another identity, frame u)."""
  entries = corpus.manifest(split)
  speakers = np.array([e["speaker_id"] for e in entries])
  lengths = np.array([e["num_frames"] for e in entries])
  if len(set(speakers)) < 2:
    raise ValueError(f"{corpus.directory}/{split}: swap renders need clips of two identities or more")
  rng = np.random.default_rng(seed)
  pairs = []
  for _ in range(num_pairs):
    a = int(rng.integers(len(entries)))
    b = int(rng.choice(np.flatnonzero(speakers != speakers[a])))
    t = int(rng.integers(lengths[a]))
    far = np.flatnonzero(np.abs(np.arange(lengths[a]) - t) >= min(SECOND, lengths[a] // 2))
    pairs.append({"a": a, "t": t, "reference": int(rng.choice(far)), "b": b, "u": int(rng.integers(lengths[b]))})
  return pairs


def evaluate(pretrained, corpus, split: str = "heldout", *, num_pairs: int = 64, seed: int = 0, grid: int = 4
             ) -> dict[str, Any]:
  """Renders `num_pairs` swaps, video- and audio-driven, and scores them; returns the summary, plus under "_grid"
  a `grid` x `grid` table of renders (rows: the first pairs' A, columns: their B) for `write_results`."""
  from data_pipelines.synthetic import clips as clips_lib
  spec = _spec(corpus)
  pairs = plan(corpus, split, num_pairs, seed)
  cache: dict[int, dict[str, Any]] = {}

  def clip_data(index):
    if index not in cache:
      clip = corpus.read(split, index)
      frames = clip.decode_frames()
      tokens = pretrained.encode_frames(frames, clip.face_masks, clip.mouth_masks)
      tokens["audio"] = pretrained.encode_audio(clip.audio_float(), clip.num_frames)
      cache[index] = {"clip": clip, "frames": frames, "tokens": tokens}
    return cache[index]

  def swap(a_side, b_side):
    """Inputs, truth and sources of one swap: A's (clip, frame, reference frame) with B's (clip, frame)."""
    (a, t, r), (b, u) = (clip_data(a_side[0]), *a_side[1:]), (clip_data(b_side[0]), b_side[1])
    labels = a["clip"].labels
    truth = clips_lib.render_factors(spec, a["clip"].metadata["identity_vector"],
                                     np.asarray(b["clip"].labels["mouth"])[u:u + 1],
                                     {k: np.asarray(labels[k])[t:t + 1] for k in clips_lib.AMBIENT_LABELS})
    return {"reference": a["frames"][r], "face": a["clip"].face_masks[r], "mouth": a["clip"].mouth_masks[r],
            "z_amb": a["tokens"]["z_amb"][t], "video": b["tokens"]["z_voc"][u], "audio": b["tokens"]["audio"][u],
            # The reference's own codes, which the warp decoder draws from (its pose, appearance and mouth).
            "reference_z_amb": a["tokens"]["z_amb"][r], "reference_video": a["tokens"]["z_voc"][r],
            "reference_audio": a["tokens"]["audio"][r],
            "truth": truth["frames"][0] / np.float32(255), "source_a": a["frames"][t] / np.float32(255),
            "source_b": b["frames"][u] / np.float32(255),
            # Where truth and A can differ: the mouth regions of both (the renderer's exact factor separation).
            "region": truth["mouth_mask"][0] | a["clip"].mouth_masks[t]}

  def render_all(swaps):
    stack = {k: np.stack([s[k] for s in swaps]) for k in swaps[0]}
    for driving in ("video", "audio"):
      stack[f"render_{driving}"] = pretrained.render(stack["reference"], stack["z_amb"], stack[driving],
                                                     (stack["face"], stack["mouth"]))
      if pretrained.has_warp_decoder:
        stack[f"warp_{driving}"] = pretrained.render_warp(stack["reference"], stack["reference_z_amb"],
                                                          stack["z_amb"], stack[f"reference_{driving}"],
                                                          stack[driving])
    return stack

  scored = render_all([swap((p["a"], p["t"], p["reference"]), (p["b"], p["u"])) for p in pairs])
  rows = [(p["a"], p["t"], p["reference"]) for p in pairs[:grid]]
  columns = [(p["b"], p["u"]) for p in pairs[:grid]]
  table = render_all([swap(row, column) for row in rows for column in columns])

  def per_pair(images, target, region=False):
    masks = scored["region"] if region else [None] * len(images)
    return np.array([psnr(x, y, m) for x, y, m in zip(images, target, masks)])

  def scores(images):
    out = {}
    for name in ("truth", "source_a", "source_b"):
      out[f"psnr_{name}"] = float(per_pair(images, scored[name]).mean())
      out[f"mouth_psnr_{name}"] = float(per_pair(images, scored[name], region=True).mean())
    out["closer_to_truth"] = bool(out["psnr_truth"] > max(out["psnr_source_a"], out["psnr_source_b"]))
    out["mouth_closer_to_truth"] = bool(out["mouth_psnr_truth"] > max(out["mouth_psnr_source_a"],
                                                                      out["mouth_psnr_source_b"]))
    # Per pair: is the render's mouth region nearer the truth's than A's own?
    out["mouth_pairs_closer_to_truth"] = float(np.mean(per_pair(images, scored["truth"], True)
                                                       > per_pair(images, scored["source_a"], True)))
    return out

  # Reference points: how far apart the truth and the sources are themselves.
  baseline = {"psnr_truth_vs_source_a": float(per_pair(scored["truth"], scored["source_a"]).mean()),
              "mouth_psnr_truth_vs_source_a": float(per_pair(scored["truth"], scored["source_a"], True).mean()),
              "psnr_truth_vs_source_b": float(per_pair(scored["truth"], scored["source_b"]).mean())}
  warp = {}
  if pretrained.has_warp_decoder:  # The same swaps drawn by the warp decoder (synclipmae/warp.py).
    warp = {"warp_video_driven": scores(scored["warp_video"]), "warp_audio_driven": scores(scored["warp_audio"])}
  return {"split": split, "num_pairs": len(pairs), "seed": seed, "step": pretrained.step,
          "video_driven": scores(scored["render_video"]), "audio_driven": scores(scored["render_audio"]), **warp,
          "baseline": baseline, "pairs": pairs,
          "_grid": {"size": len(rows), "rows": table["source_a"][::len(columns)],
                    "columns": table["source_b"][:len(columns)], "truth": table["truth"],
                    "video": table["render_video"], "audio": table["render_audio"],
                    **({"warp_video": table["warp_video"], "warp_audio": table["warp_audio"]} if warp else {})}}


def format_summary(result: dict[str, Any]) -> str:
  """A markdown table: PSNR of the renders to the truth and to each source (whole frame / mouth region)."""
  lines = ["| driving | to truth | to A | to B | mouth: to truth | to A | to B |", "|---|---|---|---|---|---|---|"]
  for name in ("video_driven", "audio_driven", "warp_video_driven", "warp_audio_driven"):
    if name not in result:
      continue
    s = result[name]
    label = name.removesuffix("_driven").replace("warp_", "warp decoder, ")
    lines.append(f"| {label} | {s['psnr_truth']:.2f} | {s['psnr_source_a']:.2f} | "
                 f"{s['psnr_source_b']:.2f} | {s['mouth_psnr_truth']:.2f} | {s['mouth_psnr_source_a']:.2f} | "
                 f"{s['mouth_psnr_source_b']:.2f} |")
  base = result["baseline"]
  lines.append(f"(truth vs A itself: {base['psnr_truth_vs_source_a']:.2f} dB, mouth region "
               f"{base['mouth_psnr_truth_vs_source_a']:.2f} dB; truth vs B: {base['psnr_truth_vs_source_b']:.2f} dB)")
  return "\n".join(lines)


def write_results(result: dict[str, Any], out_dir: str | os.PathLike) -> dict[str, str]:
  """swaps.json and swaps.png: rows are identities (A: identity + ambient motion), columns mouth sources (B); three
  panels: the truth, the video-driven and the audio-driven renders, each row headed by A, each column by B."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  out = storage.output_dir(out_dir)
  json_path = storage.write_json(out / "swaps.json", {k: v for k, v in result.items() if k != "_grid"})
  g = result["_grid"]
  n, size = g["size"], g["truth"].shape[1]

  def panel(cells):
    canvas = np.ones(((n + 1) * size, (n + 1) * size, 3), np.float32)
    for j in range(n):
      canvas[:size, (j + 1) * size:(j + 2) * size] = g["columns"][j]
    for i in range(n):
      canvas[(i + 1) * size:(i + 2) * size, :size] = g["rows"][i]
      for j in range(n):
        canvas[(i + 1) * size:(i + 2) * size, (j + 1) * size:(j + 2) * size] = cells[i * n + j]
    return canvas

  panels = [("truth", "truth"), ("video-driven (z_voc of B)", "video"), ("audio-driven (audio of B)", "audio")]
  if "warp_video" in g:
    panels += [("warp decoder, video-driven", "warp_video"), ("warp decoder, audio-driven", "warp_audio")]
  fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4.4))
  for ax, (title, key) in zip(axes, panels):
    ax.imshow(panel(g[key]))
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
  v, a = result["video_driven"], result["audio_driven"]
  fig.suptitle(f"swap renders ({result['split']}; rows: identity + ambient of A, columns: mouth of B). PSNR to "
               f"truth / A / B: video {v['psnr_truth']:.1f} / {v['psnr_source_a']:.1f} / {v['psnr_source_b']:.1f}"
               f" dB, audio {a['psnr_truth']:.1f} / {a['psnr_source_a']:.1f} / {a['psnr_source_b']:.1f} dB",
               fontsize=9)
  fig.tight_layout()
  return {"json": json_path, "png": storage.write_figure(fig, out / "swaps.png")}

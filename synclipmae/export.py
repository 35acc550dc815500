"""`synclipmae export`: a pretraining run -> a self-contained model directory for downstream users.

    OUT/config.json        format, variant, step, the model config, the inference views (incl. the aligned-crop
                           mean masks), the audio window, the training corpus and the run's sync results
    OUT/model.safetensors  every weight of the model, float32, named by its nnx path ("encoder/blocks/0/...");
                           the frozen audio encoder included; no optimiser state
    OUT/README.md          a model card: what it is, how it was trained, how to load it

`synclipmae.load_pretrained(OUT)` reads it with safetensors alone (no orbax, optimiser or training code). The
directory is written under a temporary name beside OUT and renamed when complete, so a killed export leaves nothing
a loader accepts. OUT may be a gs:// URL (synclipmae/storage.py): then it is staged on local disk and its files are
copied up, config.json last (a directory without it is not an export).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from flax import nnx

from synclipmae import inference, storage


def flat_weights(model: nnx.Module) -> dict[str, np.ndarray]:
  """'/'-joined nnx paths -> float32 numpy arrays of every variable of the model."""
  return {"/".join(map(str, path)): np.asarray(variable.get_value(), np.float32)
          for path, variable in nnx.to_flat_state(nnx.state(model))}


def export(workdir: str | os.PathLike, out: str | os.PathLike, *, step: int | None = None,
           data: str | os.PathLike | None = None, overwrite: bool = False) -> Path:
  """Exports checkpoint `step` (default: the newest) of a pretraining workdir to `out`; returns `out`.

  data: the corpus to average the aligned-crop masks over (default: the one the run trained on).
  """
  from synclipmae.train.checkpoint import load_config, load_model
  workdir, out = storage.path(workdir), storage.path(out)  # Local or gs:// URLs.
  if out.exists() and not overwrite:
    raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
  inference.require_synclipmae(load_config(workdir), workdir)  # Before reading any checkpoint.
  model, config, step = load_model(workdir, step)
  info = inference.info_from_config(config, step, corpus_dir=str(data) if data else None)
  if "aligned_masks" not in info["views"]:
    raise FileNotFoundError(f"the training corpus {data or config.data.dir} cannot be read: it is needed for the "
                            "aligned-crop view of the export; pass --data=CORPUS (a corpus of the same crops)")
  info["training"] = _training_summary(workdir, config)
  sync_eval = _read_json(workdir / "sync_eval.json")
  if sync_eval:
    info["sync_eval"] = {k: sync_eval[k] for k in ("accuracy", "accuracy_by_context", "context_frames",
                                                    "num_samples", "chance_accuracy", "lse_d", "lse_c", "split",
                                                    "checkpoint_step", "offset_convention") if k in sync_eval}
  factors = _read_json(workdir / "factors.json")
  if factors and factors.get("step") == step:
    info["factors"] = {k: factors[k] for k in ("matrix", "metric", "chance", "split", "num_frames") if k in factors}
  return write_export(model, info, out, overwrite=True)


def write_export(model: nnx.Module, info: dict[str, Any], out: str | os.PathLike, *, overwrite: bool = False
                 ) -> Path:
  """Writes `model`'s weights, `info` (config.json) and the model card to `out`, atomically (see the module
  docstring); what `export` and `finetune-dub` write."""
  from safetensors.numpy import save_file
  out = storage.path(out)
  if out.exists() and not overwrite:
    raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
  weights = flat_weights(model)
  # Staged beside OUT (one rename makes it whole), or on local disk for a URL (copied up by storage.publish).
  beside = None if storage.is_url(out) else out.parent
  if beside is not None:
    beside.mkdir(parents=True, exist_ok=True)
  staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=beside))
  try:
    save_file(weights, str(staging / inference.WEIGHTS_FILE),
              metadata={"format": inference.EXPORT_FORMAT, "step": str(info["step"])})
    (staging / inference.CONFIG_FILE).write_text(json.dumps(info, indent=1) + "\n")
    (staging / inference.CARD_FILE).write_text(model_card(info, weights))
    for file in staging.iterdir():
      os.chmod(file, 0o644)
      with open(file, "rb") as f:
        os.fsync(f.fileno())
    os.chmod(staging, 0o755)
    storage.publish(storage.path(staging), out, last=inference.CONFIG_FILE)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  return out


def _read_json(path: Path) -> dict[str, Any] | None:
  try:
    return json.loads(path.read_text())
  except (OSError, json.JSONDecodeError):
    return None


def _generator_name(generator) -> str | None:
  """corpus.json names its generator as a string (prep) or a dict with a name (the synthetic corpus)."""
  return generator.get("name") if isinstance(generator, dict) else generator


def _training_summary(workdir, config) -> dict[str, Any]:
  corpus = _read_json(Path(config.data.dir) / "corpus.json") or {}
  splits = {name: {k: split.get(k) for k in ("num_clips", "num_frames") if k in split} |
            {"identities": len(split.get("speakers", []))} for name, split in corpus.get("splits", {}).items()}
  return {"workdir": str(workdir), "corpus": os.path.abspath(config.data.dir),
          "corpus_generator": _generator_name(corpus.get("generator")), "corpus_splits": splits, "seed": config.seed,
          "num_steps": config.train.num_steps, "batch": f"{config.data.batch_size} clips x {config.data.num_frames} "
          "frames", "losses": config.loss.to_dict()}


def model_card(info: dict[str, Any], weights: dict[str, np.ndarray]) -> str:
  """README.md of an export."""
  model, training = info["model"], info.get("training", {})
  size = sum(v.size for v in weights.values())
  enc = model["encoder"]
  lines = [
      f"# SyncLipMAE `{info.get('variant') or 'custom'}` (step {info['step']})", "",
      "Audio-visual talking-face representation (SyncLipMAE, arXiv 2510.10069), exported by `synclipmae export`.",
      "", "## What it is",
      f"- frame encoder: ViT width {enc['width']}, depth {enc['depth']}, {enc['num_heads']} heads, patch "
      f"{model['patch_size']}, {model['image_size']} px aligned face crops, `{enc['stem']}` stem;",
      f"- per-frame tokens `z_id`, `z_voc`, `z_amb` and one audio token per 25 fps frame, width {model['prompt_dim']};",
      f"- audio encoder: `{model['audio']['encoder']}` (16 kHz mono); {size:,} parameters in all (float32).", "",
      "## Training"]
  if training:
    lines += [f"- corpus: `{training['corpus']}` ({training.get('corpus_generator') or 'clip records'}); " +
              ", ".join(f"{name}: {s.get('num_clips', '?')} clips of {s['identities']} identities"
                        for name, s in training.get("corpus_splits", {}).items()),
              f"- {training['num_steps']} steps of {training['batch']}, seed {training['seed']}; run "
              f"`{training['workdir']}`"]
  sync = info.get("sync_eval")
  if sync:
    by_context = ", ".join(f"K={k}: {v:.1%}" for k, v in sync.get("accuracy_by_context", {}).items())
    lines += ["", "## Zero-shot AV sync (the run's own evaluation)",
              f"- {sync.get('split')} split, {sync.get('num_samples')} samples, offsets -15..+15, correct within "
              f"+-1 frame: **{sync['accuracy']:.1%} at K={sync.get('context_frames')}** ({by_context}; chance "
              f"{sync.get('chance_accuracy', float('nan')):.1%}); LSE-D {sync.get('lse_d', float('nan')):.3f}, "
              f"LSE-C {sync.get('lse_c', float('nan')):.3f}",
              f"- offset sign: {sync.get('offset_convention', '')}"]
  factors = info.get("factors")
  if factors:
    names = list(factors["metric"])
    lines += ["", f"## Which token carries which factor ({factors['split']} split, linear probes; "
              "`synclipmae eval-factors`)",
              "| token | " + " | ".join(f"{n} ({factors['metric'][n]})" for n in names) + " |",
              "|---|" + "---|" * len(names)]
    lines += [f"| {t} | " + " | ".join(f"{v[n]:.2f}" for n in names) + " |" for t, v in factors["matrix"].items()]
  dub = info.get("dubbing")
  if dub:
    lines += ["", "## Dubbing (`synclipmae finetune-dub`)",
              f"- decoder fine-tuned for {dub['steps']} steps of {dub['batch_size']} frames on `{dub.get('corpus')}` "
              f"({dub.get('split')}) from `{dub.get('base_model')}`; encoders unchanged (the same tokens)",
              f"- mouth region: mouth-mask box grown by {dub['grow']} of the crop (up to {dub['max_masked']} "
              f"patches masked); {dub['loss']}: {dub['monitor_loss_before']:.5f} before, "
              f"{dub['monitor_loss_after']:.5f} after (one fixed batch)",
              "- `synclipmae dub --model=THIS_DIRECTORY --video=TARGET.mp4 --audio=NEW.wav --out=DUB.mp4`"]
  lines += ["", "## How to use it", "```python", "import synclipmae",
            "pretrained = synclipmae.load_pretrained('THIS_DIRECTORY')",
            "tokens = synclipmae.video_tokens(pretrained, 'video.mp4')            # raw video: face pipeline",
            "tokens = synclipmae.video_tokens(pretrained, 'crops.mp4', aligned=True)",
            "tokens.z_id, tokens.z_voc, tokens.z_amb, tokens.audio_tokens", "```",
            "```bash", "synclipmae sync --model=THIS_DIRECTORY video.mp4        # offset + confidence",
            "synclipmae extract --model=THIS_DIRECTORY --out=FEATURES videos/", "```",
            "Files: `config.json` (model config, views, training), `model.safetensors` (weights by nnx path).", ""]
  return "\n".join(lines)

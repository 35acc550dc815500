"""The pretraining loop: data -> sharded train step -> metrics and checkpoints, resumable from its workdir.

    synclipmae pretrain --config=configs/pretrain.py:mu --workdir=runs/mu

Rerunning the same command continues from the newest checkpoint in the workdir (model, optimiser, step and the
data-iterator position), so an interrupted run ends with the parameters of an uninterrupted one. SIGTERM (a
preemption, `kill`) saves a checkpoint after the current step and exits; SIGKILL loses at most the steps since the
last checkpoint.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from synclipmae import pretrained, storage
from synclipmae.data import pipeline
from synclipmae.data.corpus import CORPUS_FILE, Corpus
from synclipmae.models.mae import MODES
from synclipmae.models.synclipmae import COMPUTE_DTYPES, DECODER_VISIBLE
from synclipmae.train import sharding
from synclipmae.train.checkpoint import Checkpoints
from synclipmae.train.metrics import MetricWriter, Progress
from synclipmae.train.step import TrainState, abstract_train_state, init_state, jit_train_step

EXIT_INTERRUPTED = 128 + signal.SIGTERM  # Exit status after a SIGTERM, as a shell reports it.


class NonFiniteLossError(RuntimeError):
  """The loss or the gradients became NaN/inf; the last checkpoint is left as it was."""


class Interrupted(Exception):
  """Training stopped on SIGTERM after saving a checkpoint."""


def ensure_corpus(data_dir: str) -> Corpus:
  """The corpus at `data_dir`, generating the default synthetic corpus there if the directory holds none (a local
  one: a URL must name a corpus)."""
  if not storage.is_url(data_dir) and not os.path.exists(os.path.join(data_dir, CORPUS_FILE)):
    if os.path.isdir(data_dir) and os.listdir(data_dir):
      raise FileNotFoundError(f"{data_dir}: not a corpus (no {CORPUS_FILE}) and not empty; point "
                              "--config.data.dir at a corpus or at an empty/new directory")
    from data_pipelines.synthetic import clips, generate  # Only needed to create the default corpus.
    print(f"{data_dir}: no corpus yet; generating the default synthetic corpus")
    generate.generate(clips.SyntheticSpec(), data_dir)
  return Corpus(data_dir)


def validate_config(config: ml_collections.ConfigDict, corpus: Corpus) -> None:
  """Raises ValueError naming every config value that cannot work with this corpus, before anything runs."""
  m, problems = config.model, []
  if m.get("mode", "synclipmae") not in MODES:
    problems.append(f"model.mode={m.mode!r} must be one of {MODES}")
  height, width = corpus.read(config.data.train_split, 0).frame_size
  if (height, width) != (m.image_size, m.image_size):
    problems.append(f"model.image_size={m.image_size} but the corpus {corpus.directory} has {height}x{width} frames")
  if m.image_size % m.patch_size:
    problems.append(f"model.patch_size={m.patch_size} does not divide model.image_size={m.image_size}")
  if not 0.0 <= config.masking.mask_ratio < 1.0:
    problems.append(f"masking.mask_ratio={config.masking.mask_ratio} must be in [0, 1)")
  for name in ("face_bias", "mouth_bias"):
    if not config.masking.get(name, 1.0) > 0:
      problems.append(f"masking.{name}={config.masking.get(name)} must be > 0 (1 = no preference)")
  if config.data.num_frames < 2 and config.masking.identity_shuffle:
    problems.append("data.num_frames must be >= 2 for masking.identity_shuffle (z_id comes from another frame)")
  if config.data.get("identity_pairs", False) and config.data.batch_size % 2:
    problems.append(f"data.identity_pairs needs an even data.batch_size (pairs of clips), got "
                    f"{config.data.batch_size}")
  if m.decoder.get("visible", "target") not in DECODER_VISIBLE:
    problems.append(f"model.decoder.visible={m.decoder.visible!r} must be one of {DECODER_VISIBLE}")
  for shift in ("ambient", "warp"):
    lo, hi = config.masking.get(f"{shift}_min_shift", 0), config.masking.get(f"{shift}_max_shift", 0)
    if hi and not 1 <= lo <= hi < config.data.num_frames:
      problems.append(f"masking.{shift}_min_shift={lo} / {shift}_max_shift={hi}: need 1 <= min <= max < "
                      f"data.num_frames={config.data.num_frames} (max 0 turns the shift off)")
  if not config.eval.num_samples >= 0:
    problems.append(f"eval.num_samples={config.eval.num_samples} must be >= 0 (0: no evaluation after training)")
  if config.loss.get("con_window", 0) and not 1 <= config.loss.window_frames <= config.data.num_frames:
    problems.append(f"loss.window_frames={config.loss.window_frames} must be in [1, data.num_frames="
                    f"{config.data.num_frames}] for loss.con_window")
  for name in ("id_con", "id_confusion"):
    if config.loss.get(name, 0) and not config.data.get("identity_pairs", False):
      problems.append(f"loss.{name} needs data.identity_pairs=True (it compares the two clips of a speaker)")
  if (config.loss.get("id_con", 0) or config.loss.get("id_confusion", 0)) and not config.loss.id_temperature > 0:
    problems.append(f"loss.id_temperature={config.loss.get('id_temperature')} must be > 0")
  for name, weight in config.loss.items():
    weights = ("rec_video", "rec_audio", "rec_stats", "con", "con_clip", "xcov", "xcov_id", "mouth_weight",
               "amb_con", "amb_warp", "id_con", "id_confusion", "con_window", "id_adversary")
    if name in weights and not weight >= 0:
      problems.append(f"loss.{name}={weight} must be a non-negative weight")
  if m.get("dtype", "float32") not in COMPUTE_DTYPES:
    problems.append(f"model.dtype={m.dtype!r} must be one of {COMPUTE_DTYPES}")
  classes = m.get("speaker_classes", 0)
  if config.loss.get("id_adversary", 0) and classes < len(corpus.speakers):
    problems.append(f"loss.id_adversary needs model.speaker_classes >= the corpus's {len(corpus.speakers)} speakers "
                    f"(got {classes})")
  reach = config.loss.get("clip_reach", 0)
  if not (isinstance(reach, int) and reach >= 0):
    problems.append(f"loss.clip_reach={reach!r} must be a whole number of frames >= 0")
  elif reach and not config.loss.get("con_clip", 0):
    problems.append(f"loss.clip_reach={reach} widens the same-clip InfoNCE's negatives, which is off (loss.con_clip=0)")
  elif reach and config.data.get("audio_features"):
    problems.append(f"loss.clip_reach={reach} needs the audio around each window, which precomputed features "
                    "(data.audio_features) do not hold beyond their margin; train on the audio or set it to 0")
  if m.audio.window_frames > m.audio.margin_frames:
    problems.append(f"model.audio.window_frames={m.audio.window_frames} needs margin_frames >= it "
                    f"(got {m.audio.margin_frames})")
  w2v = m.audio.wav2vec2
  if m.get("mode") != "mae" and m.audio.encoder == "wav2vec2" and not (w2v.path or w2v.get("allow_random")):
    problems.append("model.audio.encoder='wav2vec2' needs model.audio.wav2vec2.path (a Hugging Face wav2vec 2.0 "
                    "checkpoint directory: config.json + model.safetensors); set model.audio.wav2vec2.allow_random="
                    "True only for a random-weight smoke test (model.mode='mae' needs no audio encoder)")
  if config.data.get("audio_features"):
    from synclipmae.data import audio_features
    try:
      audio_features.AudioFeatures(config.data.audio_features).check(audio_features.describe(config), corpus,
                                                                     config.data.train_split)
    except audio_features.AudioFeaturesError as e:
      problems.append(f"data.audio_features: {e}")
  if problems:
    raise ValueError("invalid config: " + "; ".join(problems))


def _record_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  path = storage.path(workdir) / "config.json"
  text = config.to_json_best_effort(indent=1, sort_keys=True)
  if path.exists() and path.read_text() != text:
    print(f"note: {path} differs from this run's config; resuming with this run's config")
  path.write_text(text)


def pretrain(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains to `config.train.num_steps` (resuming from `workdir`) and returns the final state and paths."""
  workdir = storage.path(workdir)  # Local, or a URL such as gs://bucket/run (synclipmae/storage.py).
  workdir.mkdir(parents=True, exist_ok=True)
  if jax.process_index() == 0:
    _record_config(config, workdir)
  corpus = ensure_corpus(config.data.dir)
  validate_config(config, corpus)
  mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp)
  local_batch = sharding.batch_size_per_process(config.data.batch_size, mesh)
  dataset = pipeline.make_dataset(
      corpus, config.data.train_split, batch_size=local_batch, num_frames=config.data.num_frames,
      seed=config.seed, patch_size=config.model.patch_size,
      audio_margin_frames=pipeline.training_audio_margin(config),
      audio_features=config.data.get("audio_features") or None,
      identity_pairs=config.data.get("identity_pairs", False))
  iterator = pipeline.make_iterator(dataset, num_workers=config.data.num_workers)

  graphdef, abstract, shardings = abstract_train_state(config, mesh)
  checkpoints = Checkpoints(workdir / "checkpoints", keep=config.train.keep_checkpoints)
  if checkpoints.latest_step() is not None:
    state, data_state = checkpoints.restore(abstract, fallback=True)
    if data_state is not None:
      iterator.set_state(data_state)
    print(f"resumed from {checkpoints.directory} at step {int(state.step)}")
  else:
    state = jax.jit(lambda: init_state(config)[1], out_shardings=shardings)()
    state = _with_pretrained_weights(graphdef, state, config, shardings)
  _write_parameter_overview(state, workdir)
  step_fn = jit_train_step(graphdef, config, shardings, sharding.batch_sharding(mesh), sharding.replicated(mesh))

  stop = {"signal": None}
  previous_handler = signal.signal(signal.SIGTERM, lambda signum, _: stop.update(signal=signum))
  writer = MetricWriter(workdir)
  num_steps = config.train.num_steps
  progress = Progress(num_steps, config.data.batch_size * config.data.num_frames)
  step = int(state.step)
  unchecked: list[tuple[int, dict[str, jax.Array]]] = []  # Read in groups so dispatch stays asynchronous.
  start = time.time()

  def check_finite() -> None:
    flags = np.asarray(jax.device_get(jnp.stack([m["finite"] for _, m in unchecked]))) if unchecked else []
    for (s, metrics), finite in zip(unchecked, flags):
      if not finite:
        terms = {k: float(v) for k, v in jax.device_get(metrics).items() if k.startswith("loss")}
        raise NonFiniteLossError(
            f"non-finite loss or gradient at step {s} ({terms}); stopped without saving, the last checkpoint "
            f"({checkpoints.latest_step()}) is intact. Lower --config.optim.lr or check the data.")
    unchecked.clear()

  try:
    while step < num_steps:
      batch = sharding.global_batch(next(iterator), mesh)
      state, metrics = step_fn(state, batch)
      step += 1
      unchecked.append((step, metrics))
      is_last = step == num_steps
      if step % config.train.log_every == 0 or is_last:
        check_finite()
        scalars = jax.device_get(metrics)
        scalars.update(progress.report(step, scalars))
        writer.write(step, scalars)
      if step % config.train.checkpoint_every == 0 or is_last or stop["signal"] is not None:
        check_finite()
        checkpoints.save(step, state, iterator.get_state())
      if stop["signal"] is not None and not is_last:
        checkpoints.wait()
        raise Interrupted(f"stopped by signal {stop['signal']} at step {step}; checkpoint saved in "
                          f"{checkpoints.directory}. Rerun the same command to resume.")
    checkpoints.wait()
  finally:
    signal.signal(signal.SIGTERM, previous_handler)
    writer.close()
    checkpoints.close()
  print(f"trained to step {step} in {time.time() - start:.0f} s")
  return {"state": state, "graphdef": graphdef, "corpus": corpus, "checkpoints": checkpoints.directory,
          "metrics": writer.jsonl_path, "tensorboard": writer.tensorboard_dir}


def _write_parameter_overview(state, workdir: str) -> None:
  """WORKDIR/parameters.txt: every trained and frozen tensor's shape and size (clu's table), and one line here."""
  from clu import parameter_overview
  if jax.process_index() != 0:
    return
  tables, counts = [], {}
  for name, tree in (("trained", state.params), ("frozen", state.frozen)):
    pure = tree.to_pure_dict()
    counts[name] = int(parameter_overview.count_parameters(pure)) if jax.tree.leaves(pure) else 0
    tables.append(f"{name} parameters\n" + (parameter_overview.get_parameter_overview(pure, include_stats=False)
                                            if counts[name] else "(none)"))
  path = storage.path(workdir) / "parameters.txt"
  path.write_text("\n\n".join(tables) + "\n")
  print(f"parameters: {counts['trained']:,} trained, {counts['frozen']:,} frozen ({path})")


def _with_pretrained_weights(graphdef: nnx.GraphDef, state: TrainState, config: ml_collections.ConfigDict,
                             shardings: Any) -> TrainState:
  """The fresh state with the pretrained parts the config names loaded in (the optimiser state is unchanged:
  AdamW's initial moments do not depend on the parameter values)."""
  model = model_from_state(graphdef, state)
  loaded = pretrained.load_pretrained(model, config)
  if not loaded:
    return state
  print("loaded pretrained weights:", "; ".join(loaded))
  _, params, frozen = nnx.split(model, model.trainable_filter(), ...)
  return jax.device_put(state.replace(params=params, frozen=frozen), shardings)


def model_from_state(graphdef: nnx.GraphDef, state: TrainState):
  """The model with a train state's parameters (for evaluation right after training)."""
  return nnx.merge(graphdef, state.params, state.frozen)

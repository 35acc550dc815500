"""Training: sharding-invariant steps, bit-identical resume after SIGTERM / SIGKILL, the non-finite guard."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from configs import pretrain as pretrain_config
from synclipmae.data import pipeline
from synclipmae.train import checkpoint, loop, sharding
from synclipmae.train import step as step_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A `mu` shrunk further so that each compile and step takes seconds on 2 cores.
SMALL_MODEL = ["--config.model.encoder.width=32", "--config.model.encoder.depth=1",
               "--config.model.encoder.num_heads=2", "--config.model.decoder.width=32",
               "--config.model.decoder.depth=1", "--config.model.decoder.num_heads=2",
               "--config.model.prompt_dim=16", "--config.model.audio.logmel.width=16",
               "--config.model.audio.adapter_hidden=32", "--config.data.batch_size=8",
               "--config.data.num_frames=4", "--config.model.encoder.mlp_ratio=4.0",
               "--config.model.decoder.mlp_ratio=4.0"]


def small_config(data_dir, **train):
  config = pretrain_config.get_config("mu")
  for flag in SMALL_MODEL:
    key, value = flag.removeprefix("--config.").split("=")
    *parents, leaf = key.split(".")
    node = config
    for p in parents:
      node = node[p]
    node[leaf] = type(node[leaf])(value)
  config.data.dir = str(data_dir)
  config.optim.warmup_steps = 2
  config.train.update(train)
  return config


def _first_batch(config, mesh_size=8):
  ds = pipeline.make_dataset(config.data.dir, "train", batch_size=config.data.batch_size,
                             num_frames=config.data.num_frames, seed=0, patch_size=config.model.patch_size,
                             process_index=0, process_count=1)
  return next(pipeline.make_iterator(ds))


@pytest.mark.parametrize("data, fsdp", [(8, 1), (4, 2)])
def test_step_is_the_same_on_1_and_8_devices(synthetic_corpus, data, fsdp, con=0.5):
  """Same loss and gradients, within 1e-5 absolute, from one device and from 8 (data parallel, and data x FSDP).

  Every term is on (reconstruction, both contrastive terms, decorrelation), so the gradients compared are those of
  the whole loss.

  (This holds with the contrastive term too because the log-mel front end is batch-shape invariant: an FFT per
  frame and a two-pass LayerNorm over bands; a DFT matmul and flax's E[x^2]-E[x]^2 variance on log-mel values
  near -10 made the audio tokens differ by ~1e-4 between 1 and 8 devices, and the InfoNCE passed that on.)
  """
  config = small_config(synthetic_corpus)
  config.loss.con = config.loss.con_clip = con  # Both contrastive terms (global and same-clip) at weight con.
  batch = _first_batch(config)
  results = []
  for mesh in (sharding.make_mesh(1, 1, jax.devices()[:1]), sharding.make_mesh(data, fsdp)):
    graphdef, abstract, shardings = loop.abstract_train_state(config, mesh)
    state = jax.jit(lambda: step_lib.init_state(config)[1], out_shardings=shardings)()
    fn = jax.jit(lambda s, b: step_lib.loss_and_grads(graphdef, config, s, b),
                 in_shardings=(shardings, sharding.batch_sharding(mesh)))
    metrics, grads = fn(state, sharding.global_batch(batch, mesh))
    results.append((jax.device_get(metrics), jax.device_get(grads)))
  (m1, g1), (m8, g8) = results
  assert len(jax.devices()) == 8
  np.testing.assert_allclose(m1["loss"], m8["loss"], rtol=0, atol=1e-5)
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g8)):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


def test_fsdp_rule_shards_large_tensors():
  assert sharding.param_spec((1024, 4096), 2) == jax.sharding.PartitionSpec(None, "fsdp")
  assert sharding.param_spec((64,), 2) == jax.sharding.PartitionSpec()  # Small: replicated.
  assert sharding.param_spec((1024, 4096), 1) == jax.sharding.PartitionSpec()
  with pytest.raises(ValueError, match="does not match the 8 devices"):
    sharding.make_mesh(3, 1)


def _cli(workdir, data_dir, *extra):
  return [sys.executable, "-m", "synclipmae.cli", "pretrain", "--config=configs/pretrain.py:mu",
          f"--workdir={workdir}", f"--config.data.dir={data_dir}", "--config.optim.warmup_steps=2",
          "--config.train.num_steps=12", "--config.train.checkpoint_every=4", "--config.train.log_every=1",
          "--noeval", *SMALL_MODEL, *extra]


def _run(cmd, timeout=300):
  result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
  return result


def _interrupt(cmd, sig, after_step):
  """Starts a run and sends `sig` once it has printed step `after_step`; returns its exit code and output."""
  process = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  lines = []
  deadline = time.time() + 300
  for line in process.stdout:
    lines.append(line)
    if line.startswith(f"step {after_step}/"):
      process.send_signal(sig)
      break
    assert time.time() < deadline, "".join(lines)
  lines.extend(process.stdout)
  return process.wait(timeout=120), "".join(lines)


def _params(workdir):
  model, _, step = checkpoint.load_model(workdir)
  from flax import nnx
  return step, jax.device_get(nnx.state(model, nnx.Param))


def test_interrupted_runs_resume_to_identical_parameters(synthetic_corpus, tmp_path):
  _run(_cli(tmp_path / "straight", synthetic_corpus))
  step, expected = _params(tmp_path / "straight")
  assert step == 12
  lines = [json.loads(l) for l in open(tmp_path / "straight" / "metrics.jsonl")]
  assert [l["step"] for l in lines] == list(range(1, 13))
  assert {"loss_rec_video", "loss_rec_audio", "loss_con", "loss_xcov", "temperature", "grad_norm"} <= lines[-1].keys()
  assert os.listdir(tmp_path / "straight" / "tensorboard")

  # One run, interrupted twice. SIGTERM: a checkpoint is saved after the current step, exit status 143.
  run = _cli(tmp_path / "run", synthetic_corpus)
  code, output = _interrupt(run, signal.SIGTERM, after_step=5)
  assert code == loop.EXIT_INTERRUPTED, output
  assert "Rerun the same command to resume" in output
  saved = checkpoint.Checkpoints(tmp_path / "run" / "checkpoints").latest_step()
  assert 5 <= saved < 12
  # The rerun resumes there; SIGKILL it: nothing is saved on the way out, the rerun after starts from whatever was
  # last checkpointed (every 4 steps).
  code, output = _interrupt(run, signal.SIGKILL, after_step=min(saved + 4, 11))
  assert code == -signal.SIGKILL
  assert "resumed from" in output and f"at step {saved}" in output
  killed_at = checkpoint.Checkpoints(tmp_path / "run" / "checkpoints").latest_step()
  assert saved <= killed_at < 12
  resumed = _run(run)
  assert f"at step {killed_at}" in resumed.stdout

  step, params = _params(tmp_path / "run")
  assert step == 12
  for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, b)  # Bit-identical on CPU.


def test_non_finite_loss_stops_without_touching_the_last_checkpoint(synthetic_corpus, tmp_path):
  config = small_config(synthetic_corpus, num_steps=2, checkpoint_every=2, log_every=1)
  loop.pretrain(config, str(tmp_path))
  before = _params(tmp_path)
  config.train.num_steps = 4
  config.loss.rec_audio = 1e38  # Finite weight; the weighted loss overflows to inf.
  with pytest.raises(loop.NonFiniteLossError, match="non-finite loss or gradient at step 3"):
    loop.pretrain(config, str(tmp_path))
  after = _params(tmp_path)
  assert before[0] == after[0] == 2
  for a, b in zip(jax.tree.leaves(before[1]), jax.tree.leaves(after[1])):
    np.testing.assert_array_equal(a, b)


def test_bad_config_values_are_named_before_training(synthetic_corpus, tmp_path):
  config = small_config(synthetic_corpus)
  config.model.image_size, config.model.patch_size, config.masking.mask_ratio = 128, 24, 1.0
  config.masking.ambient_min_shift, config.masking.ambient_max_shift = 2, config.data.num_frames
  config.masking.warp_min_shift, config.masking.warp_max_shift = 0, 1
  config.model.dtype = "float16"
  config.model.decoder.visible = "neighbours"
  config.data.identity_pairs, config.data.batch_size = True, 3
  config.loss.mouth_weight = -1.0
  config.loss.id_con, config.loss.id_temperature = 1.0, 0.0
  config.loss.con_window, config.loss.window_frames = 1.0, config.data.num_frames + 1
  config.eval.num_samples = -1
  config.loss.clip_reach = -1
  with pytest.raises(ValueError) as error:
    loop.pretrain(config, str(tmp_path))
  message = str(error.value)
  assert "model.image_size=128 but the corpus" in message and "has 64x64 frames" in message
  assert "model.patch_size=24 does not divide" in message and "masking.mask_ratio=1.0" in message
  assert f"ambient_max_shift={config.data.num_frames}: need 1 <= min <= max < data.num_frames" in message
  assert "masking.warp_min_shift=0 / warp_max_shift=1: need 1 <= min <= max" in message
  assert "model.dtype='float16' must be one of ('float32', 'bfloat16')" in message
  assert "model.decoder.visible='neighbours' must be one of ('target', 'identity_source', 'none')" in message
  assert "data.identity_pairs needs an even data.batch_size (pairs of clips), got 3" in message
  assert "loss.mouth_weight=-1.0 must be a non-negative weight" in message
  assert "loss.id_temperature=0.0 must be > 0" in message and "eval.num_samples=-1 must be >= 0" in message
  assert f"loss.window_frames={config.data.num_frames + 1} must be in [1, data.num_frames=" in message
  assert "loss.clip_reach=-1 must be a whole number of frames >= 0" in message
  assert not (tmp_path / "checkpoints").exists()


def test_ambient_pose_head_is_trained_by_the_pose_warp(synthetic_corpus):
  """model.ambient_pose: z_amb's pose head starts at zero, the step adds loss.amb_warp with its weight, and only that
  term trains the head and the appearance heads of z_amb and the driving token (model.*_appearance)."""
  config = small_config(synthetic_corpus)
  config.model.ambient_pose = True
  config.model.ambient_appearance, config.model.driving_appearance = 8, True
  heads = ["ambient_pose", "ambient_appearance", "driving_appearance"]
  batch = _first_batch(config)
  graphdef, state = step_lib.init_state(config)
  assert not np.any(state.params["ambient_pose"]["kernel"].get_value())
  metrics, grads = jax.jit(lambda s, b: step_lib.loss_and_grads(graphdef, config, s, b))(state, batch)
  assert np.isfinite(metrics["loss_amb_warp"]) and metrics["loss_amb_warp"] > 0
  for head in heads:
    assert np.abs(grads[head]["kernel"].get_value()).max() > 0, head
  weight, config.loss.amb_warp = config.loss.amb_warp, 0.0
  without, grads_without = jax.jit(lambda s, b: step_lib.loss_and_grads(graphdef, config, s, b))(state, batch)
  np.testing.assert_allclose(metrics["loss"] - without["loss"], weight * metrics["loss_amb_warp"], rtol=1e-4)
  for head in heads:
    assert not np.any(grads_without[head]["kernel"].get_value()), head


def test_warp_reference_from_the_same_clip(synthetic_corpus):
  """masking.warp_*_shift: loss.amb_warp's reference is a frame of the frame's own clip, s in [min, max] away;
  without it, the frame that gave z_id."""
  config = small_config(synthetic_corpus)
  config.model.ambient_pose = True
  batch = _first_batch(config)
  b, t = batch["video"].shape[:2]
  inputs, aux = step_lib.model_inputs(jax.random.key(0), batch, config)
  np.testing.assert_array_equal(aux["warp_reference"], inputs["id_source"])
  config.masking.warp_min_shift, config.masking.warp_max_shift = 1, 2
  shifted_inputs, aux = step_lib.model_inputs(jax.random.key(0), batch, config)
  reference, frame = np.asarray(aux["warp_reference"]), np.arange(b * t)
  np.testing.assert_array_equal(reference // t, frame // t)
  assert set(np.abs(reference - frame)) == {1, 2}
  for name in ("keep_uniform", "keep_face", "id_source"):  # The other random draws are unchanged.
    np.testing.assert_array_equal(shifted_inputs[name], inputs[name])


def test_identity_terms_pair_each_frame_with_the_speakers_other_clip(synthetic_corpus):
  """loss.id_con (on in mu by default; 0 switches it off): the step adds the speaker InfoNCE of z_id with its
  weight, each frame's positive a frame of the other clip of its pair; loss.id_confusion likewise."""
  config = small_config(synthetic_corpus)
  batch = _first_batch(config)
  b, t = batch["video"].shape[:2]
  _, aux = step_lib.model_inputs(jax.random.key(0), batch, config)
  partner, frame = np.asarray(aux["id_partner"]), np.arange(b * t)
  np.testing.assert_array_equal(partner // t, (frame // t) ^ 1)
  graphdef, state = step_lib.init_state(config)
  step = lambda: jax.jit(lambda s, b: step_lib.loss_and_grads(graphdef, config, s, b)[0])(state, batch)
  config.loss.id_con = 0.0
  without = step()
  assert "loss_id_con" not in without and "id_acc" not in without
  config.loss.id_con = 2.0
  metrics = step()
  assert 0 < float(metrics["loss_id_con"]) and 0 <= float(metrics["id_acc"]) <= 1
  np.testing.assert_allclose(metrics["loss"] - without["loss"], 2.0 * metrics["loss_id_con"], rtol=1e-4)
  config.loss.id_con, config.loss.id_confusion = 0.0, 3.0  # loss.id_confusion: the same pairs, z_voc and z_amb.
  confused = step()
  assert float(confused["loss_id_confusion"]) > 0 and "loss_id_con" not in confused
  np.testing.assert_allclose(confused["loss"] - without["loss"], 3.0 * confused["loss_id_confusion"], rtol=1e-4)


def test_window_contrast_is_added_with_its_weight(synthetic_corpus):
  """loss.con_window: off by default; on, the step adds the windowed same-clip InfoNCE of z_voc and the audio
  tokens over data.num_frames-frame clip windows."""
  config = small_config(synthetic_corpus)
  config.loss.neighbour_frames = 0  # 4-frame clip windows: 2-frame windows at 3 starts, each the others' negative.
  batch = _first_batch(config)
  graphdef, state = step_lib.init_state(config)
  step = lambda: jax.jit(lambda s, b: step_lib.loss_and_grads(graphdef, config, s, b)[0])(state, batch)
  without = step()
  assert "loss_con_window" not in without
  config.loss.con_window, config.loss.window_frames = 4.0, 2
  metrics = step()
  assert 0 < float(metrics["loss_con_window"])
  np.testing.assert_allclose(metrics["loss"] - without["loss"], 4.0 * metrics["loss_con_window"], rtol=1e-4)


def test_voc_alignment_is_added_with_its_weight_from_its_start_step(synthetic_corpus):
  """loss.voc_align: off by default; on, the step adds the alignment of z_voc onto the audio tokens with its
  weight from step loss.voc_align_start on, and nothing before."""
  config = small_config(synthetic_corpus)
  batch = _first_batch(config)
  graphdef, state = step_lib.init_state(config)
  step = lambda s: jax.jit(lambda s, b: step_lib.loss_and_grads(graphdef, config, s, b)[0])(s, batch)
  later = state.replace(step=jax.numpy.asarray(5, jax.numpy.int32))  # Step 5 draws other masks than step 0.
  without = step(later)
  assert "loss_voc_align" not in without
  config.loss.voc_align, config.loss.voc_align_start = 8.0, 5
  assert float(step(state)["loss_voc_align"]) == 0.0
  metrics = step(later)
  assert 0 < float(metrics["loss_voc_align"]) <= 4
  np.testing.assert_allclose(metrics["loss"] - without["loss"], 8.0 * metrics["loss_voc_align"], rtol=1e-4)


def test_speaker_adversary_is_added_with_its_weight_and_trains_its_classifiers(synthetic_corpus):
  """loss.id_adversary with model.speaker_classes: the step adds the adversary of z_voc and z_amb with its weight,
  each frame labelled with its clip's speaker, and both classifiers get gradients; too few classes are named."""
  from synclipmae.data.corpus import Corpus
  config = small_config(synthetic_corpus)
  config.model.speaker_classes = len(Corpus(synthetic_corpus).speakers)
  batch = _first_batch(config)
  _, aux = step_lib.model_inputs(jax.random.key(0), batch, config)
  assert "speakers" not in aux
  graphdef, state = step_lib.init_state(config)
  step = lambda: jax.jit(lambda s, b: step_lib.loss_and_grads(graphdef, config, s, b))(state, batch)
  without, _ = step()
  config.loss.id_adversary = 2.0
  _, aux = step_lib.model_inputs(jax.random.key(0), batch, config)
  np.testing.assert_array_equal(aux["speakers"], np.repeat(batch["speaker"], config.data.num_frames))
  metrics, grads = step()
  assert float(metrics["loss_id_adversary"]) > 0
  np.testing.assert_allclose(metrics["loss"] - without["loss"], 2.0 * metrics["loss_id_adversary"], rtol=1e-4)
  for head in ("speaker_voc", "speaker_amb"):
    assert float(np.abs(grads[head]["kernel"][...]).sum()) > 0
  config.model.speaker_classes = 2
  with pytest.raises(ValueError, match="loss.id_adversary needs model.speaker_classes >= the corpus's"):
    loop.validate_config(config, Corpus(synthetic_corpus))


def test_clip_reach_widens_the_audio_and_the_same_clip_negatives(synthetic_corpus):
  """loss.clip_reach = R: the pipeline cuts R more audio frames on each side of every window, the model returns
  the audio tokens of the window +- R, the window's own are its centre, and loss.con_clip is the InfoNCE over them."""
  from flax import nnx

  from synclipmae import losses
  config = small_config(synthetic_corpus)
  config.loss.clip_reach = 3
  margin = pipeline.training_audio_margin(config)
  assert margin == config.model.audio.margin_frames + 3
  ds = pipeline.make_dataset(config.data.dir, "train", batch_size=config.data.batch_size,
                             num_frames=config.data.num_frames, seed=0, patch_size=config.model.patch_size,
                             audio_margin_frames=margin, identity_pairs=True, process_index=0, process_count=1)
  batch = next(pipeline.make_iterator(ds))
  b, t = batch["video"].shape[:2]
  assert batch["audio"].shape == (b, (t + 2 * margin) * 640)
  graphdef, state = step_lib.init_state(config)
  metrics = jax.jit(lambda s, b: step_lib.loss_and_grads(graphdef, config, s, b)[0])(state, batch)

  @jax.jit
  def outputs(state, batch):
    model = nnx.merge(graphdef, state.params, state.frozen)
    inputs, _ = step_lib.model_inputs(jax.random.fold_in(jax.random.key(config.seed), state.step), batch, config)
    return model(inputs, num_frames=t, audio_reach=3)

  out = outputs(state, batch)
  wide = out["audio_tokens_wide"].reshape(b, t + 6, -1)
  np.testing.assert_array_equal(out["audio_tokens"], wide[:, 3:3 + t].reshape(b * t, -1))
  expected = losses.reach_info_nce(out["z_voc"], out["audio_tokens_wide"], t, 3, out["logit_scale"],
                                   config.loss.neighbour_frames)
  np.testing.assert_allclose(metrics["loss_con_clip"], expected, rtol=1e-4)


def test_identity_decorrelation_term_pairs_z_id_with_each_motion_token(synthetic_corpus):
  """loss.xcov_id: off by default; on, the step adds the cross-correlation of (z_id, z_voc) and (z_id, z_amb), and
  not that of (z_voc, z_amb), with its weight."""
  from flax import nnx

  from synclipmae import losses
  config = small_config(synthetic_corpus)
  batch = _first_batch(config)
  graphdef, state = step_lib.init_state(config)
  # A fresh jit per call: the config is read at trace time.
  step = lambda: jax.jit(lambda s, b: step_lib.loss_and_grads(graphdef, config, s, b)[0])(state, batch)
  without = step()
  assert "loss_xcov_id" not in without
  config.loss.xcov_id = 2.0
  metrics = step()

  @jax.jit
  def expected_terms(state, batch):
    model = nnx.merge(graphdef, state.params, state.frozen)
    inputs, _ = step_lib.model_inputs(jax.random.fold_in(jax.random.key(config.seed), state.step), batch, config)
    out = model(inputs, num_frames=config.data.num_frames)
    with_id = 0.5 * (losses.cross_covariance_loss([out["z_id"], out["z_voc"]])
                     + losses.cross_covariance_loss([out["z_id"], out["z_amb"]]))
    return with_id, losses.cross_covariance_loss([out["z_id"], out["z_voc"], out["z_amb"]])

  expected, all_pairs = expected_terms(state, batch)
  np.testing.assert_allclose(metrics["loss_xcov_id"], expected, rtol=1e-4)
  assert abs(float(expected) - float(all_pairs)) > 1e-4
  np.testing.assert_allclose(metrics["loss"] - without["loss"], 2.0 * metrics["loss_xcov_id"], rtol=1e-4)


def test_a_damaged_newest_checkpoint_is_named_and_resuming_falls_back(synthetic_corpus, tmp_path):
  from test_checkpoint import array_file, damage
  workdir = tmp_path / "run"
  _run(_cli(workdir, synthetic_corpus))  # Checkpoints at steps 4, 8 and 12.
  victim = array_file(workdir / "checkpoints" / "12")
  damage(victim, "truncate")

  # Export and evaluation name the step and the file in one line, and touch nothing.
  result = subprocess.run([sys.executable, "-m", "synclipmae.cli", "export", f"--workdir={workdir}",
                           f"--out={tmp_path / 'export'}"], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode != 0 and "Traceback" not in result.stderr
  assert "checkpoint step 12 is damaged" in result.stderr and victim in result.stderr
  assert "older checkpoints: 4, 8" in result.stderr
  assert not (tmp_path / "export").exists()

  # Resuming skips it in one line, continues from step 8 and keeps the good checkpoints.
  resumed = _run(_cli(workdir, synthetic_corpus, "--config.train.num_steps=14"))
  assert f"skipping checkpoint step 12: {victim}" in resumed.stdout
  assert "at step 8" in resumed.stdout
  assert checkpoint.Checkpoints(workdir / "checkpoints").all_steps() == [8, 12, 14]
  assert (workdir / "damaged_checkpoints" / "12").is_dir()
  step, params = _params(workdir)
  assert step == 14
  # clu's overview of the run's tensors, written at start-up: its total is the trained parameter count.
  overview = (workdir / "parameters.txt").read_text()
  total = sum(int(np.size(x)) for x in jax.tree.leaves(params))
  assert f"Total: {total:,}" in overview or f"Total: {total}" in overview, overview[-400:]


def test_remat_recomputes_the_blocks_without_changing_loss_or_gradients(synthetic_corpus):
  results = []
  for remat in (False, True):
    config = small_config(synthetic_corpus)
    config.model.remat = remat
    config.model.encoder.depth = config.model.decoder.depth = 2
    mesh = sharding.make_mesh(1, 1, jax.devices()[:1])
    graphdef, _, shardings = loop.abstract_train_state(config, mesh)
    state = jax.jit(lambda: step_lib.init_state(config)[1], out_shardings=shardings)()
    fn = lambda s, b: step_lib.loss_and_grads(graphdef, config, s, b)
    batch = sharding.global_batch(_first_batch(config), mesh)
    jaxpr = str(jax.make_jaxpr(fn)(state, batch))
    assert ("remat" in jaxpr) == remat  # jax.checkpoint (primitive remat2) around each block, only when asked.
    metrics, grads = jax.jit(fn)(state, batch)
    results.append((jax.device_get(metrics), jax.device_get(grads)))
  (m0, g0), (m1, g1) = results
  np.testing.assert_allclose(m0["loss"], m1["loss"], rtol=1e-6, atol=0)  # float32 rounding of a loss of ~35.
  # Recomputed in another fusion: float32 rounding, up to 2.3e-5 relative on one gradient element on some x86 CPUs
  # (a wrong recomputation would differ by orders of magnitude more).
  for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)

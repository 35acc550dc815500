"""The train state and the pure train step.

`train_step(graphdef, config, state, batch) -> (state, metrics)` is a pure function of its inputs: the PRNG key of
step s is `fold_in(key(seed), s)`, so a run resumed from a checkpoint draws exactly the masks and jitter the
uninterrupted run would have drawn.
"""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from synclipmae import losses, masking
from synclipmae.models.mae import MAE, build_model
from synclipmae.models.synclipmae import SyncLipMAE
from synclipmae.train import sharding


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: nnx.State  # Trained.
  frozen: nnx.State  # Everything else in the model (e.g. a frozen audio encoder, constants).
  opt_state: optax.OptState


_NO_DECAY = ("prompt_tokens", "mask_token", "cond_type", "logit_scale")


def _decays(path, param) -> bool:
  """Weight decay on weight matrices only: not on biases, norms, learned tokens or the temperature."""
  names = [str(getattr(k, "key", k)) for k in path]
  return param.ndim >= 2 and not any(n in _NO_DECAY for n in names)


def learning_rate(optim: ml_collections.ConfigDict, num_steps: int) -> optax.Schedule:
  """Linear warmup to `optim.lr`, then cosine decay to 1 % of it at `num_steps`."""
  return optax.warmup_cosine_decay_schedule(0.0, optim.lr, optim.warmup_steps,
                                            max(num_steps, optim.warmup_steps + 1), end_value=optim.lr * 0.01)


def make_optimizer(optim: ml_collections.ConfigDict, num_steps: int) -> optax.GradientTransformation:
  """AdamW with the `learning_rate` schedule and global-norm clipping; no decay on biases, norms, scalars."""
  schedule = learning_rate(optim, num_steps)
  decay_mask = lambda params: jax.tree_util.tree_map_with_path(_decays, params)
  return optax.chain(
      optax.clip_by_global_norm(optim.grad_clip),
      optax.adamw(schedule, b1=optim.b1, b2=optim.b2, weight_decay=optim.weight_decay, mask=decay_mask))


def create_model(config: ml_collections.ConfigDict) -> SyncLipMAE | MAE:
  return build_model(config.model, rngs=nnx.Rngs(config.seed))


def init_state(config: ml_collections.ConfigDict) -> tuple[nnx.GraphDef, TrainState]:
  """A freshly initialised train state (call under jit, or eval_shape for shapes only)."""
  model = create_model(config)
  graphdef, params, frozen = nnx.split(model, model.trainable_filter(), ...)
  opt_state = make_optimizer(config.optim, config.train.num_steps).init(params)
  return graphdef, TrainState(step=jnp.zeros((), jnp.int32), params=params, frozen=frozen, opt_state=opt_state)


def abstract_train_state(config: ml_collections.ConfigDict, mesh) -> tuple[nnx.GraphDef, Any, Any]:
  """(graphdef, abstract state with shardings, shardings): shapes first, nothing allocated."""
  graphdef, abstract = jax.eval_shape(lambda: init_state(config))  # graphdef is static, passed through.
  shardings = sharding.state_shardings(abstract, mesh)
  abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract, shardings)
  return graphdef, abstract, shardings


def model_inputs(key: jax.Array, batch: dict[str, jax.Array], config: ml_collections.ConfigDict
                 ) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
  """Two-bypass masking, jitter and identity shuffling for a batch of clip windows.

  Returns the model's inputs and what the losses need besides the model outputs.
  """
  video = batch["video"]
  b, t, h, w, _ = video.shape
  n, p = b * t, config.model.patch_size
  num_patches = (h // p) * (w // p)
  num_keep = masking.num_kept(num_patches, config.masking.mask_ratio)
  frames = video.reshape(n, h, w, 3).astype(jnp.float32) / 255.0
  k_uniform, k_face, k_jitter, k_identity, k_ambient = jax.random.split(key, 5)
  keep_uniform = masking.uniform_keep(k_uniform, n, num_patches, num_keep)
  if config.model.get("mode", "synclipmae") == "mae":  # One view, nothing but the masked patches to draw.
    return ({"frames": frames, "keep_uniform": keep_uniform},
            {"target": masking.patchify(frames, p), "masked": masking.keep_to_mask(keep_uniform, num_patches)})
  keep_face = masking.face_aware_keep(k_face, batch["face_patches"].reshape(n, num_patches), num_keep,
                                      config.masking.face_bias, batch["mouth_patches"].reshape(n, num_patches),
                                      config.masking.mouth_bias)
  pairs = config.data.get("identity_pairs", False)  # Clips 2i, 2i+1 share a speaker (pipeline.py).
  if config.masking.identity_shuffle and pairs:
    id_source = masking.partner_identity_sources(k_identity, b, t)
  elif config.masking.identity_shuffle:
    id_source = masking.identity_sources(k_identity, b, t)
  else:
    id_source = jnp.arange(n, dtype=jnp.int32)
  if config.masking.get("ambient_max_shift", 0):
    amb_source = masking.ambient_sources(k_ambient, b, t, config.masking.ambient_min_shift,
                                         config.masking.ambient_max_shift)
  else:
    amb_source = jnp.arange(n, dtype=jnp.int32)
  jittered = masking.photometric_jitter(k_jitter, frames, **config.masking.jitter,
                                       frames_per_draw=t if config.masking.get("jitter_per_clip", False) else 1)
  if config.masking.get("one_bypass", False):  # Ablation: every token from the bypass-1 view.
    jittered, keep_face = frames, keep_uniform
  inputs = {
      "frames": frames,
      "frames_jittered": jittered,
      "keep_uniform": keep_uniform,
      "keep_face": keep_face,
      **({"audio_features": batch["audio_features"]} if "audio_features" in batch else {"audio": batch["audio"]}),
      "id_source": id_source,
      "amb_source": amb_source,
      "mouth_patches": batch["mouth_patches"].reshape(n, num_patches),
  }
  # The loss covers the patches the decoder did not see: with another frame's patches (or none), all of them.
  sees_target = config.model.decoder.get("visible", "target") == "target"
  aux = {
      "target": masking.patchify(frames, p),
      "masked": losses.patch_weights(
          masking.keep_to_mask(keep_uniform, num_patches) if sees_target else jnp.ones((n, num_patches), bool),
          inputs["mouth_patches"], config.loss.get("mouth_weight", 0.0)),
      "clip_ids": jnp.repeat(batch["clip"], t),
      # Frames of one speaker in the batch: a clip and its pair partner (data.identity_pairs), else the clip.
      "speaker_groups": jnp.repeat(jnp.arange(b) // (2 if pairs else 1), t),
      "frame_ids": (batch["start"][:, None] + jnp.arange(t)[None, :]).reshape(n),
  }
  if config.loss.get("id_adversary", 0):  # Each frame's index in the corpus's speaker list.
    aux["speakers"] = jnp.repeat(batch["speaker"], t)
  if pairs:  # loss.id_con / id_confusion's positive for each frame: a random frame of its speaker's other clip.
    aux["id_partner"] = masking.partner_identity_sources(jax.random.fold_in(k_identity, 1), b, t)
  if config.model.get("ambient_pose", False):  # loss.amb_warp's reference: the frame that gave z_id, or with
    face = batch["face_patches"].reshape(n, num_patches)  # masking.warp_max_shift a frame of the same clip.
    if not config.model.get("driving_appearance", False):  # Nothing may draw the mouth: leave it out.
      face = face * (1.0 - inputs["mouth_patches"])
    grid = h // p
    aux["frames"] = frames
    aux["warp_reference"] = (masking.ambient_sources(jax.random.fold_in(k_ambient, 1), b, t,
                                                     config.masking.warp_min_shift, config.masking.warp_max_shift)
                             if config.masking.get("warp_max_shift", 0) else id_source)
    aux["warp_weights"] = jnp.repeat(jnp.repeat(face.reshape(n, grid, grid), p, axis=1), p, axis=2)
  return inputs, aux


def compute_losses(out: dict[str, jax.Array], aux: dict[str, jax.Array], config: ml_collections.ConfigDict
                   ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The weighted SyncLipMAE objective and each of its terms (model.mode="mae": the reconstruction terms only)."""
  norm_pix = config.loss.norm_pix
  passes = ("video", "audio") if "recon_audio" in out else ("video",)  # model.mode="mae": no audio-driven pass.
  terms = {f"rec_{k}": losses.reconstruction_loss(out[f"recon_{k}"], aux["target"], aux["masked"], norm_pix)
           for k in passes}
  if "stats_video" in out:  # decoder.patch_stats: the patches' mean and spread, to draw pixels.
    terms["rec_stats"] = sum(losses.patch_stats_loss(out[f"stats_{k}"], aux["target"], aux["masked"])
                             for k in passes) / len(passes)
  if "z_voc" not in out:  # model.mode="mae": the reconstruction is the whole objective.
    total = losses.total_loss(terms, {k: config.loss[k] for k in terms})
    return total, {"loss": total, **{f"loss_{k}": v for k, v in terms.items()}}
  terms["con"], con_metrics = losses.info_nce(out["z_voc"], out["audio_tokens"], aux["clip_ids"],
                                              aux["frame_ids"], out["logit_scale"], config.loss.neighbour_frames)
  if config.loss.get("con_clip", 0) and config.loss.get("clip_reach", 0):  # Audio negatives beyond the window.
    terms["con_clip"] = losses.reach_info_nce(out["z_voc"], out["audio_tokens_wide"], config.data.num_frames,
                                              config.loss.clip_reach, out["logit_scale"], config.loss.neighbour_frames)
  elif config.loss.get("con_clip", 0):
    terms["con_clip"], _ = losses.info_nce(out["z_voc"], out["audio_tokens"], aux["clip_ids"], aux["frame_ids"],
                                           out["logit_scale"], config.loss.neighbour_frames, same_clip_only=True)
  if config.loss.get("voc_align", 0):  # Pull each frame's z_voc onto its own audio token, once the InfoNCE has
    on = aux["step"] >= config.loss.voc_align_start  # spread the tokens (before, both are nearly one vector).
    terms["voc_align"] = jnp.where(on, losses.alignment_loss(out["z_voc"], out["audio_tokens"]), 0.0)
  if config.loss.get("con_window", 0):
    terms["con_window"] = losses.window_info_nce(out["z_voc"], out["audio_tokens"], config.data.num_frames,
                                                 config.loss.window_frames, out["logit_scale"],
                                                 config.loss.neighbour_frames)
  if config.loss.get("amb_con", 0):
    terms["amb_con"], _ = losses.info_nce(
        out["z_amb"], out["z_amb_uniform"], aux["clip_ids"], aux["frame_ids"],
        jnp.log(1.0 / config.loss.amb_temperature), config.loss.neighbour_frames, groups=aux["speaker_groups"])
  metrics = dict(con_metrics)
  if config.loss.get("id_con", 0):  # z_id of two clips of one speaker agree; other speakers' differ.
    terms["id_con"], metrics["id_acc"] = losses.speaker_info_nce(
        out["z_id"], aux["id_partner"], aux["speaker_groups"], config.loss.id_temperature)
  if config.loss.get("id_confusion", 0):  # z_voc and z_amb should not tell a speaker's other clip from others.
    terms["id_confusion"] = 0.5 * sum(
        losses.speaker_confusion(out[k], aux["id_partner"], aux["speaker_groups"], config.loss.id_temperature)
        for k in ("z_voc", "z_amb"))
  if config.loss.get("id_adversary", 0):  # A speaker classifier on z_voc and z_amb that they must leave guessing.
    terms["id_adversary"] = 0.5 * sum(
        losses.speaker_adversary(out[f"z_{k}"], out[f"speaker_{k}_kernel"], out[f"speaker_{k}_bias"], aux["speakers"])
        for k in ("voc", "amb"))
  if "amb_pose" in out:  # model.ambient_pose: z_amb's pose must warp the reference frame onto the target.
    ref = aux["warp_reference"]
    warp_loss = lambda appearance: losses.pose_warp_loss(
        aux["frames"], aux["frames"][ref], out["amb_pose"], out["amb_pose"][ref], aux["warp_weights"],
        appearance=appearance, reference_appearance=None if appearance is None else appearance[ref])
    if "voc_appearance" in out:  # Video- and audio-driven, as the decoder's two passes.
      terms["amb_warp"] = 0.5 * (warp_loss(out["amb_appearance"] + out["voc_appearance"])
                                 + warp_loss(out["amb_appearance"] + out["audio_appearance"]))
    else:
      terms["amb_warp"] = warp_loss(out.get("amb_appearance"))
  terms["xcov"] = losses.cross_covariance_loss([out["z_id"], out["z_voc"], out["z_amb"]])
  if config.loss.get("xcov_id", 0):  # Identity out of the motion tokens: z_id against z_voc and z_amb only.
    terms["xcov_id"] = 0.5 * (losses.cross_covariance_loss([out["z_id"], out["z_voc"]])
                              + losses.cross_covariance_loss([out["z_id"], out["z_amb"]]))
  weights = {k: config.loss[k] for k in terms}
  total = losses.total_loss(terms, weights)
  return total, {"loss": total, **{f"loss_{k}": v for k, v in terms.items()}, **metrics}


def loss_and_grads(graphdef: nnx.GraphDef, config: ml_collections.ConfigDict, state: TrainState,
                   batch: dict[str, jax.Array]) -> tuple[dict[str, jax.Array], nnx.State]:
  """Metrics (including the loss) and the gradients w.r.t. the trained parameters at `state`."""
  key = jax.random.fold_in(jax.random.key(config.seed), state.step)
  num_frames = batch["video"].shape[1]

  def loss_fn(params):
    model = nnx.merge(graphdef, params, state.frozen)
    inputs, aux = model_inputs(key, batch, config)
    aux["step"] = state.step
    reach = config.loss.get("clip_reach", 0)  # Only a SyncLipMAE has audio (model.mode="mae" has none).
    out = model(inputs, num_frames=num_frames, **({"audio_reach": reach} if reach else {}))
    return compute_losses(out, aux, config)

  (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  return metrics, grads


def train_step(graphdef: nnx.GraphDef, config: ml_collections.ConfigDict, state: TrainState,
               batch: dict[str, jax.Array]) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimisation step. A non-finite loss or gradient leaves the state unchanged and reports finite=0."""
  metrics, grads = loss_and_grads(graphdef, config, state, batch)
  tx = make_optimizer(config.optim, config.train.num_steps)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  grad_norm = optax.tree.norm(grads)
  finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(grad_norm)
  keep_old = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
  state = TrainState(step=state.step + 1, params=keep_old(params, state.params), frozen=state.frozen,
                     opt_state=keep_old(opt_state, state.opt_state))
  metrics = {**metrics, "grad_norm": grad_norm, "finite": finite.astype(jnp.int32),
             "lr": learning_rate(config.optim, config.train.num_steps)(state.step - 1)}
  return state, metrics


def jit_train_step(graphdef: nnx.GraphDef, config: ml_collections.ConfigDict, state_shardings: Any,
                   batch_sharding: Any, replicated: Any):
  """The step compiled for a mesh: state sharded by rule, batch over devices, state buffers donated."""
  return jax.jit(lambda state, batch: train_step(graphdef, config, state, batch),
                 in_shardings=(state_shardings, batch_sharding), out_shardings=(state_shardings, replicated),
                 donate_argnums=0)

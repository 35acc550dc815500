"""The SyncLipMAE losses, pure functions of arrays (DESIGN.md section 2):

    L = L_rec(video-driven) + L_rec(audio-driven) + lambda_con * L_con + lambda_xcov * L_xcov

* `reconstruction_loss` — MAE pixel loss on the masked patches of the clean frame.
* `info_nce` — symmetric InfoNCE between `z_voc` and the audio token over every frame of the global batch, with
  temporally adjacent frames of the same clip removed from the negatives; optionally within each clip only.
* `info_nce` again, for z_amb (ours, loss.amb_con): the z_amb of a frame's two views (bypass 2 and bypass 1)
  are positives, the other frames of the same speaker (its clip and the paired clip) negatives, so z_amb must tell
  apart frames of one person: head pose, blinks, expression; never identity (constant among the candidates), and
  never the mouth (which z_amb cannot see with encoder.mouth_private).
* `window_info_nce` (ours, loss.con_window): the same-clip InfoNCE on K-frame windows, each scored by the mean of
  its per-frame cosines, as the sync evaluation scores an offset.
* `speaker_info_nce` (ours, loss.id_con): `z_id` of two clips of one speaker are positives, other speakers'
  frames negatives, so z_id is an identity code rather than whatever the decoder leaves to it.
* `speaker_adversary` (ours, loss.id_adversary): a linear speaker classifier on z_voc / z_amb, which the tokens are
  trained to leave at the uniform guess: identity out of the motion tokens as the factor probe would read it.
* `pose_warp_loss` (ours, loss.amb_warp): a reference frame of the same person, warped from its predicted head pose
  into the target's (`synclipmae.warp`), must match the target's face outside the mouth; the predicted poses come
  from z_amb, which so learns head pose without a decoder that can draw it. With appearance codes (z_amb's, and
  the driving token's, which then paints the mouth) it is the warp decoder's reconstruction loss.
* `alignment_loss` (ours, loss.voc_align): the squared distance between each frame's L2-normalised `z_voc` and its
  audio token held fixed (Wang & Isola's alignment term, one-sided), which keeps pulling z_voc onto the audio after
  the InfoNCE has ranked the positives.
* `cross_covariance_loss` — pushes the batch cross-correlation between prompt tokens towards zero so `z_id`,
  `z_voc` and `z_amb` carry different information.
* `total_loss` — the weighted sum, failing loudly on a term without a weight.

All reductions run in float32 whatever the input dtype. Nothing here knows about devices: under `jax.jit` with a
sharded batch, the compiler inserts the collectives the batch-wide means and matrix products need.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp

from synclipmae import warp

MAX_LOGIT_SCALE = 100.0  # CLIP's clamp on exp(logit_scale): keeps the temperature from collapsing.


def patch_statistics(patches: jax.Array, eps: float = 1e-6) -> jax.Array:
  """[..., p*p*3] pixel patches -> [..., 2]: (mean, sqrt(var + eps)) over each patch, what norm_pix divides out."""
  mean = jnp.mean(patches, axis=-1)
  return jnp.stack([mean, jnp.sqrt(jnp.var(patches, axis=-1) + eps)], axis=-1)


def reconstruction_loss(pred: jax.Array, target: jax.Array, mask: jax.Array, norm_pix: bool) -> jax.Array:
  """MSE per patch, averaged over MASKED patches only (visible ones are trivial to copy, as in MAE).

  Args:
    pred: [N, P, D] predicted patches.
    target: [N, P, D] `patchify(clean frames)`.
    mask: [N, P], True (or a float weight > 0) where the patch counts: the masked patches; a float mask gives a
      weighted mean (`patch_weights`).
    norm_pix: normalise each target patch by its own mean and variance (eps 1e-6), MAE's better-features option.
  Returns:
    scalar float32 (0 if nothing is masked).
  """
  pred = pred.astype(jnp.float32)
  target = target.astype(jnp.float32)
  if norm_pix:
    stats = patch_statistics(target)
    target = (target - stats[..., :1]) / stats[..., 1:]
  return _masked_mean(jnp.mean(jnp.square(pred - target), axis=-1), mask)


def _masked_mean(per_patch: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean of per-patch values [N, P] over the patches a (bool or float weight) mask [N, P] counts; 0 if none."""
  mask = mask.astype(jnp.float32)
  return jnp.sum(per_patch * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def patch_weights(masked: jax.Array, mouth_fraction: jax.Array, mouth_weight: float) -> jax.Array:
  """float [N, P]: weight 1 + mouth_weight * (fraction of the patch in the mouth region) on masked patches, 0 on
  visible ones (ours, loss.mouth_weight). Why: the mouth is a few patches of the frame, so an unweighted loss barely
  rewards the decoder for reading the driving token, which is the only place the mouth can come from."""
  return masked.astype(jnp.float32) * (1.0 + mouth_weight * jnp.clip(mouth_fraction.astype(jnp.float32), 0.0, 1.0))


def patch_stats_loss(pred_stats: jax.Array, target: jax.Array, mask: jax.Array) -> jax.Array:
  """Squared error of the predicted per-patch (mean, std) [N, P, 2] against those of the pixel target [N, P, D],
  in pixel units, averaged over MASKED patches: what a norm_pix decoder needs to draw pixels (decoder.patch_stats)."""
  error = jnp.square(pred_stats.astype(jnp.float32) - patch_statistics(target.astype(jnp.float32)))
  return _masked_mean(jnp.sum(error, axis=-1), mask)


def _l2_normalize(x: jax.Array, eps: float = 1e-6) -> jax.Array:
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(jnp.square(x), axis=-1, keepdims=True), eps * eps))


def _clamped_scale(logit_scale: jax.Array) -> jax.Array:
  """exp(logit_scale) clamped at MAX_LOGIT_SCALE (CLIP's guard against a collapsing temperature), float32."""
  return jnp.minimum(jnp.exp(logit_scale.astype(jnp.float32)), MAX_LOGIT_SCALE)


def neighbour_exclusion(clip_ids: jax.Array, frame_ids: jax.Array, neighbour_frames: int) -> jax.Array:
  """bool [N, N], True for pairs taken out of the negatives: other entries of the same clip within k frames.

  Entries i != j of one clip with |frame_i - frame_j| <= k look almost identical, so pushing them apart only adds
  noise. The diagonal (the positives) is never excluded. With k = 0 only exact duplicates (the same frame of the
  same clip appearing twice in a batch) are excluded, which never happens for distinct frames: k = 0 means no
  neighbour exclusion.
  """
  same_clip = clip_ids[:, None] == clip_ids[None, :]
  close = jnp.abs(frame_ids[:, None] - frame_ids[None, :]) <= neighbour_frames
  return same_clip & close & ~jnp.eye(clip_ids.shape[0], dtype=bool)


def info_nce(video: jax.Array, audio: jax.Array, clip_ids: jax.Array, frame_ids: jax.Array,
             logit_scale: jax.Array, neighbour_frames: int, same_clip_only: bool = False,
             groups: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Symmetric InfoNCE between the video (`z_voc`) and audio tokens of N frames; positives on the diagonal.

  logits = cos(video_i, audio_j) * min(exp(logit_scale), 100); cross-entropy video->audio (rows) and
  audio->video (columns), averaged. Same-clip neighbours (`neighbour_exclusion`) are removed from the negatives.
  It is one [N, N] matrix product over the whole global batch, so every frame is a negative for every other.

  With `same_clip_only` the negatives are only the other (non-neighbour) times of the same clip: the decision
  sync detection makes (which offset of this speaker's own audio?). Frames of other clips are easy negatives
  (another voice, another face) that the global loss mostly spends its gradient on.

  Args:
    video, audio: [N, D] tokens of the same N frames, in the same order.
    clip_ids: int [N] which clip (unique over the global batch) each frame comes from.
    frame_ids: int [N] the frame's time index within its clip.
    logit_scale: scalar, log of the inverse temperature (learnable; init log(1/0.07)).
    neighbour_frames: k, the exclusion radius in frames (Python int).
    same_clip_only: take the negatives from the same clip only (Python bool).
    groups: optional int [N]; negatives only from entries of the same group (e.g. a same-speaker pair of clips).
  Returns:
    (loss, metrics) with metrics "con_acc_v2a", "con_acc_a2v" (top-1 retrieval of the right partner among the
    same candidates the loss uses) and "temperature" (1 / the clamped scale).
  """
  scale = _clamped_scale(logit_scale)
  logits = scale * (_l2_normalize(video.astype(jnp.float32)) @ _l2_normalize(audio.astype(jnp.float32)).T)
  excluded = neighbour_exclusion(clip_ids, frame_ids, neighbour_frames)
  if same_clip_only:
    excluded = excluded | (clip_ids[:, None] != clip_ids[None, :])
  if groups is not None:
    excluded = excluded | (groups[:, None] != groups[None, :])
  loss, acc_rows, acc_columns = _symmetric_nce(logits, excluded)
  metrics = {"con_acc_v2a": acc_rows, "con_acc_a2v": acc_columns, "temperature": 1.0 / scale}
  return loss, jax.tree.map(jax.lax.stop_gradient, metrics)


def window_info_nce(video: jax.Array, audio: jax.Array, num_frames: int, window: int, logit_scale: jax.Array,
                    neighbour_frames: int) -> jax.Array:
  """Same-clip InfoNCE over windows of `window` frames, scored as the sync evaluation scores an offset (ours,
  loss.con_window): the logit of (video window at i, audio window at j) is the mean over k < window of the
  per-frame cosines cos(video_{i+k}, audio_{j+k}), times the scale; positives i = j, negatives the clip's other
  window starts more than `neighbour_frames` away.

  Why: the evaluation decides on K-frame sums of similarities, so a frame that says little (a pause, a mouth
  between shapes) need not be matched alone; the per-frame term spends gradient on such frames that this one does
  not. The tokens stay per frame: only the loss looks at windows.

  Args:
    video, audio: [B * T, D] tokens of B clip windows of T = num_frames consecutive frames, clip-major.
    num_frames: T (Python int); window: K <= T (Python int); neighbour_frames: the exclusion radius.
    logit_scale: scalar log inverse temperature (clamped as in `info_nce`).
  Returns:
    scalar float32, the mean over clips.
  """
  if not 1 <= window <= num_frames:
    raise ValueError(f"window={window} must be in [1, num_frames={num_frames}]")
  scale = _clamped_scale(logit_scale)
  as_clips = lambda x: _l2_normalize(x.astype(jnp.float32)).reshape(-1, num_frames, x.shape[-1])
  frames = jnp.einsum("bid,bjd->bij", as_clips(video), as_clips(audio))  # [B, T, T] per-frame cosines.
  starts = num_frames - window + 1
  windows = sum(frames[:, k:k + starts, k:k + starts] for k in range(window)) / window
  offsets = jnp.abs(jnp.arange(starts)[:, None] - jnp.arange(starts)[None, :])
  excluded = (offsets <= neighbour_frames) & (offsets > 0)
  per_clip = jax.vmap(lambda logits: _symmetric_nce(scale * logits, excluded)[0])(windows)
  return jnp.mean(per_clip)


def reach_info_nce(video: jax.Array, audio_wide: jax.Array, num_frames: int, reach: int, logit_scale: jax.Array,
                   neighbour_frames: int) -> jax.Array:
  """The same-clip InfoNCE with audio negatives reaching `reach` frames beyond the clip window (ours,
  loss.clip_reach): each frame's z_voc is told its own audio among every time of the window +- reach, the candidate
  offsets the sync evaluation weighs (-15..+15); each audio token of the window its frame among the window's frames
  (as in `info_nce(..., same_clip_only=True)`, which this equals at reach 0). Frames within `neighbour_frames` of
  the positive are neither positives nor negatives.

  Why: in a 16-frame window a frame near its start meets no audio from before it and few of the large offsets the
  evaluation must reject; audio tokens are cheap (no frame is encoded for them).

  Args:
    video: [B * T, D] z_voc of B clip windows of T = num_frames frames, clip-major.
    audio_wide: [B * (T + 2 * reach), D] audio tokens of the same clips, from `reach` frames before each window to
      `reach` frames after it (silence beyond the clip, as the pipeline pads it).
    num_frames, reach, neighbour_frames: Python ints.
    logit_scale: scalar log inverse temperature (clamped as in `info_nce`).
  Returns:
    scalar float32: the mean of the video->audio and audio->video cross-entropies.
  """
  t, wide = num_frames, num_frames + 2 * reach
  scale = _clamped_scale(logit_scale)
  v = _l2_normalize(video.astype(jnp.float32)).reshape(-1, t, video.shape[-1])
  a = _l2_normalize(audio_wide.astype(jnp.float32)).reshape(-1, wide, audio_wide.shape[-1])
  logits = scale * jnp.einsum("bid,bjd->bij", v, a)  # [B, T, T + 2R]; frame i's audio is column i + R.
  offsets = jnp.arange(wide)[None, :] - (jnp.arange(t)[:, None] + reach)
  near = (jnp.abs(offsets) <= neighbour_frames) & (offsets != 0)
  rows = jnp.where(near, -jnp.inf, logits)
  positives = logits[:, jnp.arange(t), jnp.arange(t) + reach]  # [B, T]
  columns = rows[:, :, reach:reach + t]  # Audio of the window against the window's frames.
  return 0.5 * (jnp.mean(jax.nn.logsumexp(rows, axis=-1) - positives)
                + jnp.mean(jax.nn.logsumexp(columns, axis=1) - positives))


def alignment_loss(video: jax.Array, audio: jax.Array) -> jax.Array:
  """Mean over frames of ||v/|v| - a/|a|||^2 = 2 - 2 cos(v, a) for the positives [N, D] of the InfoNCE, with no
  gradient to the audio tokens (ours, loss.voc_align; Wang & Isola 2020's alignment term, made one-sided).

  Why: within a clip a component of z_voc that is the same at every time (e.g. the speaker's face) only scales all
  of the same-clip InfoNCE's cosines alike, which the learned temperature absorbs, so that loss leaves it in place;
  this term charges for any part of z_voc the audio token does not share. Both sides trained by it collapse onto
  one constant vector (measured: the InfoNCE stays at chance), so the audio side is held fixed.
  """
  audio = jax.lax.stop_gradient(audio)
  cos = jnp.sum(_l2_normalize(video.astype(jnp.float32)) * _l2_normalize(audio.astype(jnp.float32)), axis=-1)
  return jnp.mean(2.0 - 2.0 * cos)


def _symmetric_nce(logits: jax.Array, excluded: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Cross-entropy of [N, N] logits with the positives on the diagonal, over rows and over columns, averaged;
  `excluded` entries are neither positives nor negatives. Returns (loss, top-1 accuracy by rows, by columns)."""
  logits = jnp.where(excluded, -jnp.inf, logits)
  positives = jnp.diagonal(logits)
  loss_rows = jnp.mean(jax.nn.logsumexp(logits, axis=1) - positives)
  loss_columns = jnp.mean(jax.nn.logsumexp(logits, axis=0) - positives)
  target = jnp.arange(logits.shape[0])
  return (0.5 * (loss_rows + loss_columns), jnp.mean(jnp.argmax(logits, axis=1) == target),
          jnp.mean(jnp.argmax(logits, axis=0) == target))


def _speaker_logits(tokens: jax.Array, partner: jax.Array, speakers: jax.Array, temperature: float
                    ) -> tuple[jax.Array, jax.Array]:
  """Cosine logits of every frame against every frame's partner [N, N] (positives on the diagonal), and the mask
  of the speaker's other frames, which are neither positives nor negatives."""
  z = _l2_normalize(tokens.astype(jnp.float32))
  same = speakers[:, None] == speakers[None, :]
  return (z @ z[partner].T) / temperature, same & ~jnp.eye(tokens.shape[0], dtype=bool)


def speaker_confusion(tokens: jax.Array, partner: jax.Array, speakers: jax.Array, temperature: float) -> jax.Array:
  """Identity out of a motion token (ours, loss.id_confusion): the candidates of `speaker_info_nce` (the partner
  frame of the same speaker, every frame of the other speakers) should look equally alike to each frame. The
  cross-entropy of the retrieval softmax against the uniform distribution over the candidates, less its minimum
  log(#candidates): 0 when a token cannot tell its speaker's other clip from other people (a domain-confusion
  loss, as in adversarial domain adaptation, without a discriminator to train). Symmetric over rows and columns."""
  logits, excluded = _speaker_logits(tokens, partner, speakers, temperature)
  candidates = ~excluded
  count = jnp.sum(candidates, axis=1).astype(jnp.float32)  # Symmetric mask: the same count by columns.
  masked = jnp.where(candidates, logits, -jnp.inf)
  mean_logit = lambda axis: jnp.sum(jnp.where(candidates, logits, 0.0), axis=axis) / count
  rows = jax.nn.logsumexp(masked, axis=1) - mean_logit(1) - jnp.log(count)
  columns = jax.nn.logsumexp(masked, axis=0) - mean_logit(0) - jnp.log(count)
  return 0.5 * (jnp.mean(rows) + jnp.mean(columns))


def speaker_adversary(tokens: jax.Array, kernel: jax.Array, bias: jax.Array, speakers: jax.Array) -> jax.Array:
  """Identity out of a motion token against a learned linear speaker classifier (ours, loss.id_adversary): the
  classifier (kernel [D, C], bias [C]) learns to name each frame's speaker from the token, which it sees without
  gradient; the token is trained, through the classifier held fixed, to leave it at the uniform guess (the
  cross-entropy to uniform, less its minimum log C). A linear readout of identity is what the factor probe
  measures, so this removes what the probe would read on the speakers trained on (domain confusion with a
  discriminator, Tzeng et al. 2015); `speaker_confusion` is the version without one.

  Args: tokens [N, D]; speakers int [N] in [0, C). Returns: scalar float32, the classifier's cross-entropy plus
  the confusion term (each only moves its own side: the classifier, or the token).
  """
  tokens, kernel, bias = (x.astype(jnp.float32) for x in (tokens, kernel, bias))
  logits = jax.lax.stop_gradient(tokens) @ kernel + bias
  classifier = jnp.mean(jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, speakers[:, None], -1)[:, 0])
  held = tokens @ jax.lax.stop_gradient(kernel) + jax.lax.stop_gradient(bias)
  confusion = jnp.mean(jax.nn.logsumexp(held, -1) - jnp.mean(held, -1)) - jnp.log(float(kernel.shape[-1]))
  return classifier + confusion


def speaker_info_nce(tokens: jax.Array, partner: jax.Array, speakers: jax.Array, temperature: float
                     ) -> tuple[jax.Array, jax.Array]:
  """Identity InfoNCE (ours, loss.id_con): frame i's token and that of frame partner[i], another clip of the same
  speaker, are positives; every frame of another speaker is a negative.

  Why: the decoder trains z_id only as far as the visible patches leave identity to explain; this asks z_id of two
  clips of one person (other pose, expression, mouth) to agree and those of different people to differ, which is
  what an identity code is for. The speaker's other frames are left out of the negatives (they are positives too).

  Args:
    tokens: [N, D] (z_id of every frame, from its own view).
    partner: int [N], for each frame the index of a frame of the same speaker in another clip.
    speakers: int [N], which speaker (group) each frame belongs to.
    temperature: softmax temperature of the cosine similarities (Python float).
  Returns:
    (loss, top-1 accuracy of finding the partner among the candidates).
  """
  loss, acc_rows, acc_columns = _symmetric_nce(*_speaker_logits(tokens, partner, speakers, temperature))
  return loss, jax.lax.stop_gradient(0.5 * (acc_rows + acc_columns))


def pose_warp_loss(frames: jax.Array, reference: jax.Array, pose: jax.Array, reference_pose: jax.Array,
                   weights: jax.Array, sigmas: Sequence[float] = (0.0, 2.0, 4.0),
                   appearance: jax.Array | None = None, reference_appearance: jax.Array | None = None) -> jax.Array:
  """How much of the target's face a pose-warped reference frame leaves unexplained, averaged over blur scales.

  Args:
    frames, reference: [N, H, W, 3] in [0, 1]; reference n is another frame of frame n's person.
    pose, reference_pose: [N, 4] predicted poses (`warp.pose_to_affine`) of the target and reference frames.
    weights: [N, H, W] >= 0, which pixels count: the face, without the mouth unless a driving token's appearance
      draws it (model.driving_appearance).
    sigmas: Gaussian blurs (pixels) at which the match is scored; the blurred scales widen the warp's basin.
    appearance, reference_appearance: optional [N, g, g, 3] images in face coordinates (pose 0): the prediction
      adds their difference, carried into the target's pose, to the warped reference, an active-appearance model
      whose appearance codes can hold what a warp cannot (closed lids, raised brows).
  Returns:
    scalar float32: per scale, sum w * |predicted - target|^2 / sum w * |target - its weighted mean|^2 (0 = exact,
    about 1 = no better than a flat face), averaged over the scales.
  """
  change = None if appearance is None else (appearance - reference_appearance).astype(jnp.float32)
  w = weights.astype(jnp.float32)[..., None]
  total_w = jnp.maximum(jnp.sum(w), 1e-6)
  fractions = []
  for sigma in sigmas:
    target = warp.blur(frames, sigma)
    predicted = warp.draw(reference, pose, reference_pose, change, sigma)
    mean = jnp.sum(w * target, axis=(1, 2), keepdims=True) / jnp.maximum(jnp.sum(w, axis=(1, 2), keepdims=True),
                                                                         1e-6)
    spread = jnp.sum(w * jnp.square(target - mean)) / total_w
    fractions.append(jnp.sum(w * jnp.square(predicted - target)) / total_w / jnp.maximum(spread, 1e-8))
  return jnp.mean(jnp.stack(fractions))


def _standardize(x: jax.Array, eps: float = 1e-5) -> jax.Array:
  """Zero mean, unit variance per dimension over the batch.

  eps is relative to the token's average variance, so rescaling a token changes nothing (with an absolute eps the
  encoder could escape the penalty by shrinking a token below it). A constant dimension becomes 0, not NaN; the
  absolute floor (1e-12) treats a collapsed token (variance below ~1e-7) as constant and keeps its gradients finite.
  """
  x = x.astype(jnp.float32)
  x = x - jnp.mean(x, axis=0, keepdims=True)
  var = jnp.mean(jnp.square(x), axis=0, keepdims=True)
  return x * jax.lax.rsqrt(var + eps * jnp.mean(var) + 1e-12)


def cross_covariance_loss(tokens: Sequence[jax.Array]) -> jax.Array:
  """Decorrelation of the prompt tokens: mean over pairs i < j of ||C_ij||_F^2 / sqrt(D_i * D_j).

  C_ij = X_i^T X_j / N is the batch cross-correlation of the standardised tokens X_i [N, D_i] (entries in
  [-1, 1]). Normalisation: for independent tokens every entry of C has variance ~1/N, so the loss is about
  sqrt(D_i * D_j) / N (near 0 for N >> D — the finite-batch floor); for a token that copies another with
  uncorrelated dimensions C ~ I and the loss is ~1; redundant dimensions push it higher (up to sqrt(D_i D_j)).
  Dividing by sqrt(D_i D_j) rather than D_j makes it symmetric in i, j and equals ||C||^2 / D for equal widths.
  Rescaling a token does not change it (a correlation with a relative eps), so the encoder cannot shrink the
  tokens to cheat.

  Args:
    tokens: two or more [N, D_i] arrays over the same N frames (e.g. z_id, z_voc, z_amb).
  Returns:
    scalar float32.
  """
  if len(tokens) < 2:
    raise ValueError(f"need at least two token sets to decorrelate, got {len(tokens)}")
  xs = [_standardize(t) for t in tokens]
  n = xs[0].shape[0]
  terms = []
  for i in range(len(xs)):
    for j in range(i + 1, len(xs)):
      c = xs[i].T @ xs[j] / n
      terms.append(jnp.sum(jnp.square(c)) / (xs[i].shape[1] * xs[j].shape[1]) ** 0.5)
  return jnp.mean(jnp.stack(terms))


def total_loss(terms: Mapping[str, jax.Array], weights: Mapping[str, float]) -> jax.Array:
  """sum_name weights[name] * terms[name]; a term without a weight is a config bug, so it raises KeyError.

  Weights for absent terms are ignored; a term whose weight is the Python number 0 is skipped, so a disabled term
  cannot turn the sum into NaN.
  """
  missing = [name for name in terms if name not in weights]
  if missing:
    raise KeyError(f"no weight for loss term(s) {missing}; weights given for {sorted(weights)}")
  total = jnp.zeros((), jnp.float32)
  for name, value in terms.items():
    weight = weights[name]
    if isinstance(weight, (int, float)) and weight == 0:
      continue
    total = total + weight * jnp.asarray(value, jnp.float32)
  return total

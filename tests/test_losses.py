"""Losses against direct NumPy references, limiting cases, and gradients."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from synclipmae import losses

_info_nce = jax.jit(losses.info_nce, static_argnums=(5, 6))


def _info_nce_reference(video, audio, clip_ids, frame_ids, logit_scale, k, same_clip_only=False, groups=None):
  """InfoNCE with neighbour exclusion written out with explicit loops (float64)."""
  n = video.shape[0]
  v = video / np.linalg.norm(video, axis=1, keepdims=True)
  a = audio / np.linalg.norm(audio, axis=1, keepdims=True)
  scale = min(math.exp(logit_scale), 100.0)

  def candidate(i, j):  # may j be used as a negative for i (or is it the positive)?
    if i == j:
      return True
    if same_clip_only and clip_ids[i] != clip_ids[j]:
      return False
    if groups is not None and groups[i] != groups[j]:
      return False
    return not (clip_ids[i] == clip_ids[j] and abs(frame_ids[i] - frame_ids[j]) <= k)

  loss_v2a = loss_a2v = 0.0
  hits_v2a = hits_a2v = 0
  for i in range(n):
    row = {j: scale * float(v[i] @ a[j]) for j in range(n) if candidate(i, j)}
    loss_v2a += -row[i] + math.log(sum(math.exp(x) for x in row.values()))
    hits_v2a += max(row, key=row.get) == i
    col = {j: scale * float(v[j] @ a[i]) for j in range(n) if candidate(j, i)}
    loss_a2v += -col[i] + math.log(sum(math.exp(x) for x in col.values()))
    hits_a2v += max(col, key=col.get) == i
  return 0.5 * (loss_v2a + loss_a2v) / n, hits_v2a / n, hits_a2v / n


def _clips(num_clips, num_frames):
  clip_ids = np.repeat(np.arange(num_clips), num_frames).astype(np.int32)
  frame_ids = np.tile(np.arange(num_frames), num_clips).astype(np.int32) + 3  # windows need not start at 0
  return clip_ids, frame_ids


# ------------------------------------------------------------------------------------------------ reconstruction

def test_reconstruction_counts_only_masked_patches():
  rng = np.random.default_rng(0)
  pred, target = rng.normal(size=(2, 3, 8, 12)).astype(np.float32)
  mask = rng.random((3, 8)) < 0.75
  mask[0, 0] = False
  loss = losses.reconstruction_loss(pred, target, mask, norm_pix=False)
  expected = ((pred - target) ** 2).mean(-1)[mask].mean()
  np.testing.assert_allclose(loss, expected, rtol=1e-5)
  changed = pred.copy()
  changed[~mask] += 100.0  # kept (visible) patches must not matter
  np.testing.assert_allclose(losses.reconstruction_loss(changed, target, mask, norm_pix=False), loss, rtol=1e-6)
  assert float(losses.reconstruction_loss(pred, target, np.zeros_like(mask), norm_pix=False)) == 0.0


def test_reconstruction_norm_pix_reference():
  rng = np.random.default_rng(1)
  pred = rng.normal(size=(3, 8, 12)).astype(np.float32)
  target = rng.uniform(size=(3, 8, 12)).astype(np.float32) * 5 + 2
  mask = rng.random((3, 8)) < 0.5
  total, count = 0.0, 0
  for n in range(3):
    for p in range(8):
      if mask[n, p]:
        t = target[n, p].astype(np.float64)
        t = (t - t.mean()) / math.sqrt(t.var() + 1e-6)
        total += np.mean((pred[n, p] - t) ** 2)
        count += 1
  loss = jax.jit(losses.reconstruction_loss, static_argnums=3)(pred, target, mask, True)
  np.testing.assert_allclose(loss, total / count, rtol=1e-5)


# ----------------------------------------------------------------------------------------------------- InfoNCE

@pytest.mark.parametrize("k,same_clip_only", [(0, False), (1, False), (2, False), (1, True)])
def test_info_nce_matches_reference(k, same_clip_only):
  rng = np.random.default_rng(k)
  clip_ids, frame_ids = _clips(num_clips=3, num_frames=5)
  n = len(clip_ids)
  perm = rng.permutation(n)  # frames of a clip need not be contiguous in the batch
  clip_ids, frame_ids = clip_ids[perm], frame_ids[perm]
  video = rng.normal(size=(n, 8))
  audio = video + rng.normal(size=(n, 8))  # partly aligned, so the accuracies are not trivially 0 or 1
  scale = math.log(1 / 0.07)
  loss, metrics = _info_nce(jnp.asarray(video, jnp.float32), jnp.asarray(audio, jnp.float32), clip_ids,
                            frame_ids, jnp.float32(scale), k, same_clip_only)
  ref_loss, ref_v2a, ref_a2v = _info_nce_reference(video, audio, clip_ids, frame_ids, scale, k, same_clip_only)
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-4)
  np.testing.assert_allclose(metrics["con_acc_v2a"], ref_v2a, atol=1e-6)
  np.testing.assert_allclose(metrics["con_acc_a2v"], ref_a2v, atol=1e-6)
  np.testing.assert_allclose(metrics["temperature"], 0.07, rtol=1e-5)
  if same_clip_only:  # a subset of the global negatives: a lower loss
    everything, _ = _info_nce(jnp.asarray(video, jnp.float32), jnp.asarray(audio, jnp.float32), clip_ids,
                              frame_ids, jnp.float32(scale), k, False)
    assert float(loss) < float(everything)
  elif k > 0:  # exclusion matters: the same inputs without it give a different value
    no_exclusion, _ = _info_nce(jnp.asarray(video, jnp.float32), jnp.asarray(audio, jnp.float32), clip_ids,
                                frame_ids, jnp.float32(scale), 0)
    assert abs(float(no_exclusion) - float(loss)) > 1e-3
    assert float(no_exclusion) > float(loss)  # fewer negatives, lower loss


def test_info_nce_within_groups_matches_reference():
  """The z_amb term (loss.amb_con): negatives only from the same group (a same-speaker pair of clips)."""
  rng = np.random.default_rng(5)
  clip_ids, frame_ids = _clips(num_clips=4, num_frames=5)
  groups = clip_ids // 2
  video = rng.normal(size=(len(clip_ids), 8))
  audio = video + rng.normal(size=video.shape)
  loss, metrics = losses.info_nce(jnp.asarray(video, jnp.float32), jnp.asarray(audio, jnp.float32), clip_ids,
                                  frame_ids, jnp.float32(math.log(10.0)), 1, groups=jnp.asarray(groups))
  ref_loss, ref_v2a, _ = _info_nce_reference(video, audio, clip_ids, frame_ids, math.log(10.0), 1, groups=groups)
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-4)
  np.testing.assert_allclose(metrics["con_acc_v2a"], ref_v2a, atol=1e-6)


def test_window_info_nce_scores_windows_as_the_sync_evaluation_does():
  """loss.con_window: with K = 1 it is the same-clip InfoNCE; with K = 5 each logit is the mean of the window's
  per-frame cosines (a loop reference)."""
  rng = np.random.default_rng(6)
  clip_ids, frame_ids = _clips(num_clips=3, num_frames=10)
  video, audio = (jnp.asarray(x, jnp.float32) for x in rng.normal(size=(2, 30, 8)))
  scale = jnp.float32(math.log(10.0))
  per_frame, _ = losses.info_nce(video, audio, clip_ids, frame_ids, scale, 2, same_clip_only=True)
  np.testing.assert_allclose(losses.window_info_nce(video, audio, 10, 1, scale, 2), per_frame, rtol=1e-5)
  v = np.asarray(video) / np.linalg.norm(video, axis=1, keepdims=True)
  a = np.asarray(audio) / np.linalg.norm(audio, axis=1, keepdims=True)
  total = []
  for c in range(3):
    cos = v[10 * c:10 * c + 10] @ a[10 * c:10 * c + 10].T
    logits = 10.0 * np.array([[np.mean([cos[i + k, j + k] for k in range(5)]) for j in range(6)] for i in range(6)])
    keep = (np.abs(np.arange(6)[:, None] - np.arange(6)[None, :]) > 2) | np.eye(6, dtype=bool)
    rows = [np.log(np.exp(logits[i, keep[i]]).sum()) - logits[i, i] for i in range(6)]
    columns = [np.log(np.exp(logits[keep[:, j], j]).sum()) - logits[j, j] for j in range(6)]
    total.append(0.5 * (np.mean(rows) + np.mean(columns)))
  np.testing.assert_allclose(losses.window_info_nce(video, audio, 10, 5, scale, 2), np.mean(total), rtol=1e-4)
  with pytest.raises(ValueError, match="window=11 must be in"):
    losses.window_info_nce(video, audio, 10, 11, scale, 2)


def test_reach_info_nce_adds_the_audio_around_the_window_to_the_negatives():
  """loss.clip_reach: at reach 0 it is the same-clip InfoNCE; at reach 3 a frame's candidates are every audio token
  of the window +- 3 frames (neighbours out), an audio token's the window's frames (a loop reference)."""
  rng = np.random.default_rng(7)
  clip_ids, frame_ids = _clips(num_clips=3, num_frames=10)
  video = jnp.asarray(rng.normal(size=(30, 8)), jnp.float32)
  wide = jnp.asarray(rng.normal(size=(3 * 16, 8)), jnp.float32)  # 10 frames + 3 on each side, per clip.
  scale = jnp.float32(math.log(10.0))
  centre = wide.reshape(3, 16, 8)[:, 3:13].reshape(30, 8)
  same_clip, _ = losses.info_nce(video, centre, clip_ids, frame_ids, scale, 2, same_clip_only=True)
  np.testing.assert_allclose(losses.reach_info_nce(video, centre, 10, 0, scale, 2), same_clip, rtol=1e-5)
  v = np.asarray(video) / np.linalg.norm(video, axis=1, keepdims=True)
  a = np.asarray(wide) / np.linalg.norm(wide, axis=1, keepdims=True)
  total = []
  for c in range(3):
    logits = 10.0 * v[10 * c:10 * c + 10] @ a[16 * c:16 * c + 16].T  # [10, 16]; frame i's audio is column i + 3.
    rows = [np.log(sum(np.exp(logits[i, j]) for j in range(16) if j == i + 3 or abs(j - i - 3) > 2))
            - logits[i, i + 3] for i in range(10)]
    columns = [np.log(sum(np.exp(logits[i, j + 3]) for i in range(10) if i == j or abs(i - j) > 2))
               - logits[j, j + 3] for j in range(10)]
    total.append(0.5 * (np.mean(rows) + np.mean(columns)))
  np.testing.assert_allclose(losses.reach_info_nce(video, wide, 10, 3, scale, 2), np.mean(total), rtol=1e-5)


def _speaker_nce_reference(tokens, partner, speakers, temperature):
  """Loops: row i's candidates are column i and every column of another speaker; columns likewise."""
  z = tokens / np.linalg.norm(tokens, axis=1, keepdims=True)
  logits = z @ z[partner].T / temperature
  n = len(tokens)
  rows, columns = [], []
  for i in range(n):
    keep = [j for j in range(n) if j == i or speakers[j] != speakers[i]]
    rows.append(np.log(np.exp(logits[i, keep]).sum()) - logits[i, i])
    columns.append(np.log(np.exp(logits[keep, i]).sum()) - logits[i, i])
  return 0.5 * (np.mean(rows) + np.mean(columns))


def test_speaker_info_nce_matches_reference_and_ignores_the_speakers_other_frames():
  """loss.id_con: positives are a frame and its partner (another clip of its speaker); the speaker's other frames
  are no negatives, so tokens that are one code per speaker score near zero however many frames each has."""
  rng = np.random.default_rng(3)
  speakers = np.repeat(np.arange(4), 6)  # 4 speakers, two clips of 3 frames each.
  partner = np.array([6 * (i // 6) + (i % 6 + 3) % 6 for i in range(24)])
  tokens = rng.normal(size=(24, 16))
  loss, acc = losses.speaker_info_nce(jnp.asarray(tokens, jnp.float32), jnp.asarray(partner),
                                      jnp.asarray(speakers), 0.1)
  np.testing.assert_allclose(loss, _speaker_nce_reference(tokens, partner, speakers, 0.1), rtol=1e-4)
  assert 0 <= float(acc) <= 1
  codes = rng.normal(size=(4, 64))[speakers]  # One code per speaker, copied to all its frames.
  loss, acc = losses.speaker_info_nce(jnp.asarray(codes, jnp.float32), jnp.asarray(partner), jnp.asarray(speakers),
                                      0.05)
  assert float(loss) < 1e-3 and float(acc) == 1.0
  # Labels that cut across the codes: frames with the positive's very code are negatives, so it cannot be solved.
  wrong = np.arange(24) % 4
  loss, _ = losses.speaker_info_nce(jnp.asarray(codes, jnp.float32), jnp.asarray(partner), jnp.asarray(wrong), 0.05)
  np.testing.assert_allclose(loss, _speaker_nce_reference(codes, partner, wrong, 0.05), rtol=1e-4)
  assert float(loss) > 1.0


def test_speaker_confusion_is_zero_when_no_token_tells_its_speaker():
  """loss.id_confusion: 0 for tokens that do not depend on the speaker, large for one code per speaker, and the
  cross-entropy against the uniform distribution over the candidates (by a loop) less log(#candidates)."""
  rng = np.random.default_rng(4)
  speakers = np.repeat(np.arange(4), 6)
  partner = np.array([6 * (i // 6) + (i % 6 + 3) % 6 for i in range(24)])
  as_array = lambda x: jnp.asarray(x, jnp.float32)
  constant = np.ones((24, 8))
  np.testing.assert_allclose(losses.speaker_confusion(as_array(constant), partner, speakers, 0.1), 0.0, atol=1e-5)
  codes = rng.normal(size=(4, 64))[speakers]
  assert float(losses.speaker_confusion(as_array(codes), partner, speakers, 0.1)) > 3.0
  tokens = rng.normal(size=(24, 16))
  z = tokens / np.linalg.norm(tokens, axis=1, keepdims=True)
  logits = z @ z[partner].T / 0.1
  rows, columns = [], []
  for i in range(24):
    keep = [j for j in range(24) if j == i or speakers[j] != speakers[i]]
    for values, out in ((logits[i, keep], rows), (logits[keep, i], columns)):
      out.append(np.log(np.exp(values).sum()) - values.mean() - np.log(len(keep)))
  np.testing.assert_allclose(losses.speaker_confusion(as_array(tokens), partner, speakers, 0.1),
                             0.5 * (np.mean(rows) + np.mean(columns)), rtol=1e-4)


def test_speaker_adversary_trains_the_classifier_and_confuses_the_tokens():
  """loss.id_adversary: the classifier's cross-entropy moves only the classifier, the confusion (cross-entropy to
  the uniform guess less log C, 0 when every speaker is equally likely) only the tokens (NumPy references)."""
  rng = np.random.default_rng(8)
  tokens, kernel, bias = (jnp.asarray(rng.normal(size=s), jnp.float32) for s in ((12, 6), (6, 5), (5,)))
  speakers = jnp.asarray(rng.integers(0, 5, 12), jnp.int32)
  logits = np.asarray(tokens, np.float64) @ np.asarray(kernel, np.float64) + np.asarray(bias, np.float64)
  log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
  classifier = -np.mean(log_p[np.arange(12), np.asarray(speakers)])
  confusion = -np.mean(log_p) - np.log(5)
  np.testing.assert_allclose(losses.speaker_adversary(tokens, kernel, bias, speakers), classifier + confusion,
                             rtol=1e-5)
  assert float(losses.speaker_adversary(tokens, 0 * kernel, 0 * bias, speakers)) == pytest.approx(np.log(5), abs=1e-5)
  grads = jax.grad(losses.speaker_adversary, argnums=(0, 1))(tokens, kernel, bias, speakers)
  confusion_only = lambda t: jnp.mean(jax.nn.logsumexp(t @ kernel + bias, -1) - jnp.mean(t @ kernel + bias, -1))
  np.testing.assert_allclose(grads[0], jax.grad(confusion_only)(tokens), rtol=1e-5, atol=1e-7)
  classifier_only = lambda k: jnp.mean(jax.nn.logsumexp(tokens @ k + bias, -1)
                                       - jnp.take_along_axis(tokens @ k + bias, speakers[:, None], -1)[:, 0])
  np.testing.assert_allclose(grads[1], jax.grad(classifier_only)(kernel), rtol=1e-5, atol=1e-7)


def test_alignment_pulls_only_the_video_side_onto_the_audio():
  """loss.voc_align: mean 2 - 2 cos(v_i, a_i) (NumPy reference), 0 for equal directions whatever the lengths, and
  its gradient reaches z_voc only (both sides trained by it collapse onto one vector)."""
  rng = np.random.default_rng(3)
  video, audio = (jnp.asarray(rng.normal(size=(10, 6)), jnp.float32) for _ in range(2))
  v, a = (np.asarray(x, np.float64) for x in (video, audio))
  cos = np.sum(v * a, 1) / np.linalg.norm(v, axis=1) / np.linalg.norm(a, axis=1)
  np.testing.assert_allclose(losses.alignment_loss(video, audio), np.mean(2 - 2 * cos), rtol=1e-5)
  assert float(losses.alignment_loss(3.0 * audio, audio)) == pytest.approx(0.0, abs=1e-6)
  grad_video, grad_audio = jax.grad(losses.alignment_loss, argnums=(0, 1))(video, audio)
  assert float(jnp.abs(grad_video).sum()) > 0
  assert float(jnp.abs(grad_audio).sum()) == 0.0


def test_neighbour_exclusion_mask():
  clip_ids = np.array([0, 0, 0, 0, 1, 1])
  frame_ids = np.array([0, 1, 2, 5, 1, 2])
  excluded = np.asarray(losses.neighbour_exclusion(clip_ids, frame_ids, 2))
  expected = np.zeros((6, 6), bool)
  for i, j in [(0, 1), (0, 2), (1, 2), (4, 5)]:
    expected[i, j] = expected[j, i] = True
  np.testing.assert_array_equal(excluded, expected)
  assert not np.asarray(losses.neighbour_exclusion(clip_ids, frame_ids, 0)).any()


def test_info_nce_limits():
  rng = np.random.default_rng(0)
  n, d = 64, 4096
  clip_ids, frame_ids = _clips(num_clips=8, num_frames=8)
  random_v, random_a = rng.normal(size=(2, n, d)).astype(np.float32)
  loss, _ = _info_nce(random_v, random_a, clip_ids, frame_ids, jnp.float32(0.0), 0)
  np.testing.assert_allclose(loss, math.log(n), atol=0.05)  # chance level
  # With k = 2, an interior frame has 4 neighbours removed; the loss is about log of the remaining count.
  loss, _ = _info_nce(random_v, random_a, clip_ids, frame_ids, jnp.float32(0.0), 2)
  candidates = n - np.asarray(losses.neighbour_exclusion(clip_ids, frame_ids, 2)).sum(1)
  np.testing.assert_allclose(loss, np.log(candidates).mean(), atol=0.05)
  # Perfectly aligned embeddings and a large scale: near-zero loss, perfect retrieval.
  loss, metrics = _info_nce(random_v, random_v, clip_ids, frame_ids, jnp.float32(math.log(100.0)), 2)
  assert float(loss) < 1e-3
  assert float(metrics["con_acc_v2a"]) == 1.0 and float(metrics["con_acc_a2v"]) == 1.0
  # exp(logit_scale) is clamped at 100, as in CLIP.
  _, metrics = _info_nce(random_v, random_v, clip_ids, frame_ids, jnp.float32(10.0), 2)
  np.testing.assert_allclose(metrics["temperature"], 0.01, rtol=1e-6)


def test_info_nce_gradients_finite():
  rng = np.random.default_rng(2)
  clip_ids, frame_ids = _clips(num_clips=2, num_frames=6)
  video, audio = rng.normal(size=(2, 12, 16)).astype(np.float32)

  def loss_fn(video, audio, logit_scale):
    return losses.info_nce(video, audio, clip_ids, frame_ids, logit_scale, 2)[0]

  grads = jax.jit(jax.grad(loss_fn, argnums=(0, 1, 2)))(video, audio, jnp.float32(math.log(1 / 0.07)))
  for g in grads:
    assert np.all(np.isfinite(g))
  assert float(jnp.abs(grads[0]).sum()) > 0 and float(grads[2]) != 0.0


# ----------------------------------------------------------------------------------------------- cross-covariance

def test_cross_covariance_independent_vs_correlated():
  rng = np.random.default_rng(0)
  n, d = 4096, 16
  z1, z2, z3 = rng.normal(size=(3, n, d)).astype(np.float32)
  xcov = jax.jit(losses.cross_covariance_loss)
  independent = float(xcov([z1, z2, z3]))
  assert independent < 0.02  # ~ d / n = 0.004, the finite-batch floor
  correlated = float(xcov([z1, z1 + 0.1 * z2]))
  assert correlated > 0.9  # ~ 1: token 2 copies token 1
  # Scale invariant (a correlation): shrinking a token cannot lower the loss.
  np.testing.assert_allclose(xcov([z1, 1e-2 * (z1 + 0.1 * z2)]), correlated, rtol=1e-3)
  # Mean over pairs: one correlated pair out of three.
  np.testing.assert_allclose(xcov([z1, z1 + 0.1 * z2, z3]), (correlated + 2 * independent) / 3, rtol=0.05)


def test_cross_covariance_reference_and_gradients():
  rng = np.random.default_rng(1)
  a = rng.normal(size=(32, 4))
  b = a @ rng.normal(size=(4, 6)) + rng.normal(size=(32, 6))
  xa = (a - a.mean(0)) / np.sqrt(a.var(0) + 1e-5 * a.var(0).mean())  # eps relative to the average variance
  xb = (b - b.mean(0)) / np.sqrt(b.var(0) + 1e-5 * b.var(0).mean())
  expected = np.sum((xa.T @ xb / 32) ** 2) / math.sqrt(4 * 6)
  np.testing.assert_allclose(losses.cross_covariance_loss([a.astype(np.float32), b.astype(np.float32)]), expected,
                             rtol=1e-4)
  b_const = b.astype(np.float32)
  b_const[:, 0] = 3.0  # a constant dimension, and a constant token, stay finite
  tokens = [a.astype(np.float32), b_const, np.ones((32, 6), np.float32)]
  value, grads = jax.jit(jax.value_and_grad(losses.cross_covariance_loss))(tokens)
  assert np.isfinite(value) and all(np.all(np.isfinite(g)) for g in grads)
  with pytest.raises(ValueError):
    losses.cross_covariance_loss([a])


# ---------------------------------------------------------------------------------------------------------- total

def test_total_loss():
  terms = {"rec_video": jnp.float32(1.0), "rec_audio": jnp.float32(2.0), "con": jnp.float32(4.0)}
  total = losses.total_loss(terms, {"rec_video": 1.0, "rec_audio": 1.0, "con": 0.5, "xcov": 0.05})
  np.testing.assert_allclose(total, 5.0)
  weights = {"rec_video": 1.0, "rec_audio": 1.0, "con": 0.5}
  np.testing.assert_allclose(jax.jit(lambda t: losses.total_loss(t, weights))(terms), 5.0)
  with pytest.raises(KeyError, match="con"):
    losses.total_loss(terms, {"rec_video": 1.0, "rec_audio": 1.0})
  # A disabled (weight 0) term cannot poison the sum.
  np.testing.assert_allclose(losses.total_loss({"a": jnp.float32(1.0), "b": jnp.float32(jnp.nan)},
                                               {"a": 1.0, "b": 0.0}), 1.0)


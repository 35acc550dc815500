"""The SyncNet peer: the published layer shapes, what each embedding reads, training / evaluation agreement on the
audio, the loss, and a trained peer going through the same sync evaluator as SyncLipMAE."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from synclipmae.data.corpus import Corpus
from synclipmae.eval import sync
from synclipmae.models import syncnet
from synclipmae.peers import syncnet as peer


def _kernels(model):
  return {".".join(str(p) for p in path[:-1] if p != "conv"): v.shape
          for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param)) if path[-1] == "kernel"}


def test_published_geometry_at_224_px():
  model = nnx.eval_shape(lambda: syncnet.SyncNet(image_size=224, width=1.0, rngs=nnx.Rngs(0)))
  assert _kernels(model) == syncnet.published_shapes()
  total = sum(np.prod(v.shape) for _, v in nnx.to_flat_state(nnx.state(model, nnx.Param)))
  assert total == 13_631_616  # syncnet_python's SyncNetModel.S (weights + biases + BatchNorm scales / offsets).


@pytest.fixture(scope="module")
def small_model():
  model = syncnet.SyncNet(image_size=64, width=0.125, rngs=nnx.Rngs(0))
  model.eval()
  return model


def test_each_video_embedding_reads_its_five_frames(small_model):
  rng = np.random.default_rng(0)
  frames = jnp.asarray(rng.random((1, 12, 64, 64, 3)), jnp.float32)
  base = small_model.video_embeddings(frames)
  changed = small_model.video_embeddings(frames.at[:, 8].set(0.0))
  moved = np.abs(np.asarray(changed - base)).max(-1)[0]
  assert np.all(moved[6:11] > 1e-4)  # Frames 6..10 read frame 8 ...
  np.testing.assert_allclose(moved[:6], 0, atol=1e-6)  # ... and no other frame does.
  np.testing.assert_allclose(moved[11:], 0, atol=1e-6)


def test_training_and_evaluation_read_the_same_audio_for_a_frame(small_model):
  """The trainer embeds 7-frame snippets; the evaluator a long window: the same frame must get the same embedding."""
  rng = np.random.default_rng(1)
  frames, margin = 20, 2
  audio = jnp.asarray(rng.normal(size=(1, (frames + 2 * margin) * 640)) * 0.1, jnp.float32)
  window = small_model.encode_audio(audio, frames)[0]
  for t in (1, 7, 19):
    first = t + margin - 3  # The trainer's snippet: frames t-3 .. t+3 (clip frame t is audio frame t + margin).
    single = peer._centre_embedding(small_model, audio[:, first * 640:(first + 7) * 640])[0]
    np.testing.assert_allclose(single, window[t], rtol=1e-4, atol=1e-4)
  # Audio far from a frame does not move its embedding; audio under its 0.2 s does.
  far = small_model.encode_audio(audio.at[:, :640 * 3].set(0.0), frames)[0]
  np.testing.assert_allclose(far[10], window[10], atol=1e-6)
  assert not np.allclose(far[0], window[0], atol=1e-4)


def test_contrastive_loss():
  v = jnp.array([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
  a = jnp.array([[3.0, 4.0], [3.0, 4.0], [30.0, 40.0]])  # Distances 5, 5, 50.
  y = jnp.array([1, 0, 0])
  # Synced: d^2 = 25; shifted within the margin 10: (10 - 5)^2 = 25; shifted beyond it: 0.
  np.testing.assert_allclose(syncnet.contrastive_loss(v, a, y, margin=10.0), (25 + 25 + 0) / 3, rtol=1e-6)


def test_info_nce_loss_counts_the_shifted_audio_as_negatives():
  v = jnp.eye(4)
  aligned = syncnet.info_nce_loss(v, v, -v, temperature=0.1)
  assert float(aligned) < 1e-3  # Each stack matches its own audio; every other candidate is far.
  assert float(syncnet.info_nce_loss(v, jnp.roll(v, 1, axis=0), -v, 0.1)) > 5.0  # Audio of another stack.
  # A shifted window as close as the synced one: the video side can do no better than 1 in 2.
  tied = syncnet.info_nce_loss(v, v, v, 0.1)
  np.testing.assert_allclose(tied, 0.5 * np.log(2.0), atol=1e-3)


def test_euclidean_scoring_picks_the_nearest_offset():
  video = np.zeros((7, 2))
  audio = np.full((7, 2), 5.0)
  audio[4] = [0.1, 0.0]  # Only audio frame 4 lies near the video.
  scores, dists = sync.offset_scores(video, audio, context=1, max_offset=3, metric="euclidean")
  assert int(np.argmax(scores)) - 3 == 1 and dists.min() == pytest.approx(0.1)
  with pytest.raises(ValueError, match="metric"):
    sync.offset_scores(video, audio, 1, 3, metric="dot")


def test_a_trained_peer_saves_loads_and_goes_through_the_sync_evaluator(synthetic_corpus, tmp_path):
  corpus = Corpus(synthetic_corpus)
  with pytest.raises(ValueError, match="loss='hinge'"):
    peer.train(corpus, tmp_path / "bad", peer.Settings(loss="hinge"))
  settings = peer.Settings(steps=3, batch_size=4, width=0.125, warmup_steps=1, loss="infonce")
  model = peer.train(corpus, tmp_path / "run", settings, log_every=1)
  metrics = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
  assert [m["step"] for m in metrics] == [1, 2, 3] and all(np.isfinite(m["loss"]) for m in metrics)
  loaded = peer.load(tmp_path / "run")
  frames = jnp.asarray(corpus.read("heldout", 0).decode_frames(0, 8)[None] / 255.0, jnp.float32)
  np.testing.assert_allclose(loaded.video_embeddings(frames), model.video_embeddings(frames), rtol=1e-5, atol=1e-5)
  result = sync.evaluate(loaded, corpus, "heldout", num_samples=4, contexts=(1, 5), batch_size=4, metric="euclidean")
  assert result["metric"] == "euclidean" and result["num_samples"] == 4 and 0 <= result["accuracy"] <= 1
  with pytest.raises(FileNotFoundError, match="syncnet.json"):
    peer.load(tmp_path)

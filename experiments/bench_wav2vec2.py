"""wav2vec 2.0 at real size on this machine: checkpoint load time, feature time for 10 s of audio, parity with
PyTorch, and what precomputed features save per train step.

    python experiments/bench_wav2vec2.py [--workdir /tmp/bench_wav2vec2] [--seconds 10] [--step]

1. Builds the base configuration (transformers `Wav2Vec2Config()`: 95 M parameters) with random weights through
   transformers, saves it with `save_pretrained` (once, in WORKDIR/wav2vec2-base), then times
   `load_wav2vec2(WORKDIR/wav2vec2-base)` (goal: < 20 s), the jit compile of the per-video-frame features of
   SECONDS of audio separately from their steady-state time, and compares every hidden state with PyTorch.
2. With --step: `tiny` with this wav2vec 2.0 as its frozen audio encoder, one device, float32, on a small
   synthetic corpus (WORKDIR/corpus, 12 training clips): precomputes the features (`synclipmae.data.audio_features`)
   and times the train step on the same windows with the waveform (encoder run every step) and with the stored
   features.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from synclipmae.models import audio as audio_lib  # noqa: E402
from synclipmae.pretrained import wav2vec2 as loader  # noqa: E402


def save_base_checkpoint(directory: str) -> None:
  import torch
  import transformers
  torch.manual_seed(0)
  start = time.perf_counter()
  model = transformers.Wav2Vec2Model(transformers.Wav2Vec2Config()).eval()
  model.save_pretrained(directory)
  count = sum(p.numel() for p in model.parameters())
  print(f"saved a random-weight wav2vec 2.0 base ({count / 1e6:.1f} M parameters) to {directory} in "
        f"{time.perf_counter() - start:.1f} s")


def speech_like(seconds: float, seed: int = 0) -> np.ndarray:
  rng = np.random.default_rng(seed)
  n = int(seconds * 16000)
  envelope = 0.05 + 0.3 * np.abs(np.sin(np.linspace(0, 8 * np.pi * seconds, n)))
  return (rng.normal(size=(1, n)) * envelope).astype(np.float32)


def bench_encoder(directory: str, seconds: float, repeats: int = 3) -> None:
  jnp.zeros(1).block_until_ready()  # Backend start-up is not the loader's time.
  start = time.perf_counter()
  model = loader.load_wav2vec2(directory)
  load_s = time.perf_counter() - start
  num_params = sum(int(np.prod(v.shape)) for v in jax.tree.leaves(nnx.state(model, nnx.Param)))
  size_mb = os.path.getsize(os.path.join(directory, "model.safetensors")) / 1e6
  print(f"load_wav2vec2: {load_s:.2f} s for {num_params / 1e6:.1f} M parameters ({size_mb:.0f} MB safetensors); "
        f"goal < 20 s: {'OK' if load_s < 20 else 'MISSED'}")

  audio = speech_like(seconds)
  graphdef, state = nnx.split(model)
  features = jax.jit(lambda s, a: audio_lib.pool_video_frames(nnx.merge(graphdef, s)(a)))
  start = time.perf_counter()
  compiled = features.lower(state, audio).compile()
  compile_s = time.perf_counter() - start
  out = compiled(state, audio)
  out.block_until_ready()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    compiled(state, audio).block_until_ready()
    times.append(time.perf_counter() - start)
  print(f"per-video-frame features of {seconds:g} s of audio -> {tuple(out.shape)} [1, frames, layers, channels]: "
        f"compile {compile_s:.1f} s, steady state {np.median(times):.2f} s (median of {repeats}; "
        f"{seconds / np.median(times):.1f}x real time) on {jax.devices()[0].platform}")

  import torch
  import transformers
  reference = transformers.Wav2Vec2Model.from_pretrained(directory).eval()
  normalized = (audio - audio.mean()) / np.sqrt(audio.var() + 1e-7)  # The feature extractor's do_normalize.
  start = time.perf_counter()
  with torch.no_grad():
    theirs = reference(torch.from_numpy(normalized), output_hidden_states=True).hidden_states
  torch_s = time.perf_counter() - start
  ours = jax.jit(lambda s, a: nnx.merge(graphdef, s).all_hidden_states(a))(state, audio)
  diff = max(float(np.abs(np.asarray(a) - b.numpy()).max()) for a, b in zip(ours, theirs))
  print(f"parity with PyTorch on {seconds:g} s: max |diff| over all {len(ours)} hidden states = {diff:.2e} "
        f"(PyTorch forward {torch_s:.2f} s, {torch.get_num_threads()} threads)")


def bench_step(directory: str, workdir: str, geometry: str, steps: int) -> None:
  from configs import pretrain
  from synclipmae import pretrained
  from synclipmae.commands import precompute_audio
  from synclipmae.data import audio_features, pipeline
  from synclipmae.train import loop
  from synclipmae.train import step as step_lib
  config = pretrain.get_config("tiny")
  config.model.audio.encoder = "wav2vec2"
  config.model.audio.wav2vec2.update(geometry=geometry, path=directory)
  config.data.dir = os.path.join(workdir, "corpus")
  if not os.path.exists(os.path.join(config.data.dir, "corpus.json")):  # Small: 12 training clips.
    from data_pipelines.synthetic import clips, generate
    spec = clips.SyntheticSpec(num_identities=6, num_heldout=2, num_validation=0,
                               clips_per_identity=3, min_words=6, max_words=8,
                               seed=3)
    generate.generate(spec, config.data.dir, num_workers=1, train_shards=2, heldout_shards=1, quiet=True)
  corpus = loop.ensure_corpus(config.data.dir)
  features_dir = os.path.join(workdir, f"features-{geometry}")
  start = time.perf_counter()
  info = audio_features.write_features(corpus, [config.data.train_split], features_dir,
                                       precompute_audio.frame_feature_fn(config), audio_features.describe(config))
  clips = info["splits"][config.data.train_split]["num_clips"]
  print(f"precompute: {clips} clips in {time.perf_counter() - start:.1f} s (one jit compile per distinct clip "
        f"length), {os.path.getsize(os.path.join(features_dir, 'train.features.array_record')) / 1e6:.1f} MB")

  ds = pipeline.make_dataset(corpus, "train", batch_size=config.data.batch_size, num_frames=config.data.num_frames,
                             seed=0, patch_size=config.model.patch_size, process_index=0, process_count=1,
                             audio_features=features_dir)
  batch = next(pipeline.make_iterator(ds))
  graphdef, _ = jax.eval_shape(lambda: step_lib.init_state(config))
  results = {}
  for name, keys in (("waveform", lambda k: k != "audio_features"), ("features", lambda k: k != "audio")):
    b = {k: v for k, v in batch.items() if keys(k)}
    state = jax.jit(lambda: step_lib.init_state(config)[1])()
    model = nnx.merge(graphdef, state.params, state.frozen)
    pretrained.load_pretrained(model, config)  # The checkpoint the features were computed with.
    _, params, frozen = nnx.split(model, model.trainable_filter(), ...)
    state = state.replace(params=params, frozen=frozen)
    step = jax.jit(lambda s, x: step_lib.train_step(graphdef, config, s, x), donate_argnums=0)
    start = time.perf_counter()
    compiled = step.lower(state, b).compile()
    compile_s = time.perf_counter() - start
    state, metrics = compiled(state, b)
    jax.block_until_ready(metrics)
    times = []
    for _ in range(steps):
      start = time.perf_counter()
      state, metrics = compiled(state, b)
      jax.block_until_ready(metrics)
      times.append(time.perf_counter() - start)
    results[name] = np.median(times)
    print(f"tiny + wav2vec2 {geometry}, {name:8s}: compile {compile_s:.1f} s, step {results[name]:.3f} s (median of "
          f"{steps}; batch {config.data.batch_size} clips x {config.data.num_frames} frames), loss "
          f"{float(metrics['loss']):.3f}")
  print(f"precomputed features save {results['waveform'] - results['features']:.3f} s per step "
        f"({results['waveform'] / results['features']:.2f}x faster)")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", default="/tmp/bench_wav2vec2")
  parser.add_argument("--seconds", type=float, default=10.0)
  parser.add_argument("--step", action="store_true", help="also time the tiny train step with/without features")
  parser.add_argument("--steps", type=int, default=5)
  args = parser.parse_args()
  directory = os.path.join(args.workdir, "wav2vec2-base")
  if not os.path.exists(os.path.join(directory, "model.safetensors")):
    save_base_checkpoint(directory)
  print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}, {os.cpu_count()} CPUs")
  bench_encoder(directory, args.seconds)
  if args.step:
    bench_step(directory, args.workdir, "base", args.steps)


if __name__ == "__main__":
  main()

"""The synthetic talking-face corpus: which clips exist, and how each one is made.

Three factors, drawn independently and known exactly:
  identity  face, colours, hair, background and voice; fixed per identity;
  vocal     mouth opening / width / rounding from the phoneme timings of real espeak-ng speech, so lips and audio
            are in sync by construction;
  ambient   blinks, head pose, expression; never reads the speech.

Everything is a pure function of the `SyntheticSpec` (and a clip's index), so the corpus is reproducible, clips
can be generated in any order by any number of workers, and any combination of factors (identity A speaking the
sentence of clip B with the head motion of clip C) can be rendered again for evaluation (`render_factors`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping

import numpy as np

from data_pipelines.synthetic import render, speech
from synclipmae.data import records

SOURCE = "synthetic"
AMBIENT_LABELS = ("blink", "pose", "expression", "expression_intensity")
LABEL_VOCAB = {"phoneme": list(speech.PHONEMES), "viseme": list(speech.VISEMES),
               "expression": list(render.EXPRESSIONS)}


@dataclasses.dataclass(frozen=True)
class SyntheticSpec:
  """What the corpus contains. The defaults are the project's default corpus (56 identities, 672 clips): 40
  identities to train on, 8 for validation (every recipe decision) and 8 held out (the test split, "heldout",
  reported once per configuration)."""
  num_identities: int = 56
  num_heldout: int = 8
  num_validation: int = 8
  clips_per_identity: int = 12
  image_size: int = 64
  fps: float = 25.0
  min_words: int = 5
  max_words: int = 10
  silence_s: tuple[float, float] = (0.2, 0.6)  # Silence before and after the sentence, drawn per clip and side.
  noise_db: float = -50.0  # Background noise, dB below full scale.
  seed: int = 0

  def __post_init__(self):
    problems = []
    if self.num_identities < 2:
      problems.append(f"num_identities must be >= 2, got {self.num_identities}")
    if not 1 <= self.num_heldout < self.num_identities:
      problems.append(f"num_heldout must be in [1, num_identities), got {self.num_heldout}")
    elif not 0 <= self.num_validation < self.num_identities - self.num_heldout:
      problems.append(f"num_validation must be in [0, num_identities - num_heldout), got {self.num_validation}")
    if self.clips_per_identity < 1:
      problems.append(f"clips_per_identity must be >= 1, got {self.clips_per_identity}")
    if not 32 <= self.image_size <= 256:
      problems.append(f"image_size must be in [32, 256], got {self.image_size}")
    if (speech.SAMPLE_RATE / self.fps) % 1:
      problems.append(f"fps must divide {speech.SAMPLE_RATE} Hz into whole samples per frame, got {self.fps}")
    if not 1 <= self.min_words <= self.max_words:
      problems.append(f"need 1 <= min_words <= max_words, got {self.min_words}, {self.max_words}")
    if problems:
      raise ValueError("invalid synthetic corpus spec: " + "; ".join(problems))

  @property
  def num_clips(self) -> int:
    return self.num_identities * self.clips_per_identity

  def rng(self, *stream: int) -> np.random.Generator:
    """An independent generator per purpose and index (no hidden state shared between clips)."""
    return np.random.default_rng([self.seed, *stream])


# Streams of `SyntheticSpec.rng`, one per factor, so changing how one factor is drawn never shifts another.
_IDENTITY, _VOICE, _AMBIENT, _SENTENCES, _SPLIT, _AUDIO = range(6)


def identity_of(spec: SyntheticSpec, identity: int) -> render.Identity:
  return render.sample_identity(spec.rng(_IDENTITY, identity))


def voice_of(spec: SyntheticSpec, identity: int) -> speech.Voice:
  return speech.sample_voice(spec.rng(_VOICE, identity))


def speaker_id(identity: int) -> str:
  return f"synth-{identity:04d}"


SPLITS = ("train", "validation", "heldout")  # heldout = the test identities.


def heldout_identities(spec: SyntheticSpec) -> frozenset[int]:
  """Identities kept out of training and model selection (the test split): a seeded random subset."""
  order = spec.rng(_SPLIT).permutation(spec.num_identities)
  return frozenset(int(i) for i in order[:spec.num_heldout])


def validation_identities(spec: SyntheticSpec) -> frozenset[int]:
  """Identities kept out of training for choosing recipes: the next `num_validation` of the same permutation."""
  order = spec.rng(_SPLIT).permutation(spec.num_identities)
  return frozenset(int(i) for i in order[spec.num_heldout:spec.num_heldout + spec.num_validation])


def split_of(spec: SyntheticSpec, identity: int) -> str:
  if identity in heldout_identities(spec):
    return "heldout"
  return "validation" if identity in validation_identities(spec) else "train"


def identity_of_clip(spec: SyntheticSpec, clip: int) -> int:
  return clip // spec.clips_per_identity


@functools.lru_cache(maxsize=8)
def sentences(spec: SyntheticSpec) -> tuple[str, ...]:
  """One sentence per clip, all different (drawn in clip order, redrawing repeats)."""
  rng, seen, out = spec.rng(_SENTENCES), set(), []
  for _ in range(spec.num_clips):
    sentence = speech.sample_sentence(rng, spec.min_words, spec.max_words)
    while sentence in seen:
      sentence = speech.sample_sentence(rng, spec.min_words, spec.max_words)
    seen.add(sentence)
    out.append(sentence)
  return tuple(out)


def _pad_utterance(utt: speech.Utterance, lead_s: float, total_samples: int) -> speech.Utterance:
  """The utterance placed `lead_s` into a silent track of `total_samples`, phoneme times shifted to match."""
  lead = int(round(lead_s * speech.SAMPLE_RATE))
  audio = np.zeros(total_samples, np.float32)
  audio[lead:lead + len(utt.audio)] = utt.audio[:total_samples - lead]
  shift = lead / speech.SAMPLE_RATE
  return dataclasses.replace(utt, audio=audio, phonemes=("_",) + utt.phonemes,
                             starts=np.concatenate([[0.0], utt.starts + shift]),
                             ends=np.concatenate([[shift], utt.ends + shift]))


def render_factors(spec: SyntheticSpec, identity: render.Identity | np.ndarray, mouth: np.ndarray,
                   ambient: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Renders any combination of factors; tracks are cut to the shorter of `mouth` and `ambient`.

  `identity` is a `render.Identity` or its vector (as stored in a record's metadata); `mouth` is a vocal track
  [T, 3] and `ambient` the AMBIENT_LABELS of some clip (e.g. `clip.labels`).
  """
  if not isinstance(identity, render.Identity):
    identity = render.Identity.from_vector(np.asarray(identity, np.float32))
  length = min(len(mouth), *(len(ambient[k]) for k in AMBIENT_LABELS))
  return render.render(identity, np.asarray(mouth[:length], np.float32),
                       {k: np.asarray(ambient[k][:length]) for k in AMBIENT_LABELS}, size=spec.image_size)


def make_clip(spec: SyntheticSpec, clip: int) -> records.ClipRecord:
  """Generates clip number `clip` (0 <= clip < spec.num_clips) as a validated record."""
  if not 0 <= clip < spec.num_clips:
    raise IndexError(f"clip {clip} is not in [0, {spec.num_clips})")
  identity_index = identity_of_clip(spec, clip)
  identity, voice = identity_of(spec, identity_index), voice_of(spec, identity_index)
  text = sentences(spec)[clip]
  utt = speech.synthesize(text, voice)

  rng = spec.rng(_AUDIO, clip)
  lead, tail = rng.uniform(*spec.silence_s, size=2)
  spf = int(speech.SAMPLE_RATE / spec.fps)
  num_frames = int(np.ceil((lead + utt.duration + tail) * spec.fps))
  utt = _pad_utterance(utt, lead, num_frames * spf)
  gain = 10 ** (rng.uniform(-6.0, -1.0) / 20) / max(float(np.abs(utt.audio).max()), 1e-6)
  noise = 10 ** (spec.noise_db / 20) * rng.standard_normal(len(utt.audio))
  audio = records.float_to_pcm16(utt.audio * gain + noise)

  vocal = speech.frame_labels(utt, num_frames, spec.fps)
  ambient = render.sample_ambient(spec.rng(_AMBIENT, clip), num_frames, spec.fps)
  image = render.render(identity, vocal["mouth"], ambient, size=spec.image_size)
  labels = {"identity": np.full(num_frames, identity_index, np.int32), **vocal,
            **{k: ambient[k] for k in AMBIENT_LABELS}}
  expression = render.EXPRESSIONS[int(ambient["expression"][0])]
  return records.ClipRecord(
      clip_id=f"synth-{spec.seed}-{clip:06d}", speaker_id=speaker_id(identity_index), source=SOURCE,
      fps=spec.fps, sample_rate=speech.SAMPLE_RATE, frames=records.encode_frames(image["frames"], "png"),
      frame_codec="png", audio=audio, face_masks=image["face_mask"], mouth_masks=image["mouth_mask"],
      labels=labels,
      metadata={"transcript": text, "split": split_of(spec, identity_index), "identity": identity_index,
                "voice": voice.name, "rate_wpm": voice.rate_wpm, "pitch": voice.pitch, "expression": expression,
                "speech_start_s": round(float(lead), 4),
                "identity_vector": [float(x) for x in identity.to_vector()]})

"""Tests for data_pipelines.synthetic.speech: espeak-ng synthesis, phoneme timing and the
per-frame mouth labels that the synthetic talking-face corpus relies on for sync."""

from __future__ import annotations

import concurrent.futures
import hashlib
import multiprocessing
import os
import subprocess
import sys

import numpy as np
import pytest

from data_pipelines.synthetic import speech

FPS = 25.0
VOICE = speech.Voice("en-us+m3", 160, 50, 50)
TEXT = "The quick brown fox jumps over the lazy dog."


def _num_frames(utt: speech.Utterance, fps: float = FPS) -> int:
    return int(np.ceil(len(utt.audio) / speech.SAMPLE_RATE * fps))


def _lagged_corr(mouth: np.ndarray, energy: np.ndarray, lag: int) -> float:
    """Pearson r between mouth[t + lag] and energy[t]."""
    n = len(mouth)
    a = mouth[max(0, lag) : n + min(0, lag)]
    b = energy[max(0, -lag) : n + min(0, -lag)]
    return float(np.corrcoef(a, b)[0, 1])


@pytest.fixture(scope="module")
def random_utterances() -> list[speech.Utterance]:
    rng = np.random.default_rng(2024)
    return [speech.synthesize(speech.sample_sentence(rng), speech.sample_voice(rng)) for _ in range(20)]


# ------------------------------------------------------------------ synthesis


def test_synthesize_audio_and_segments():
    utt = speech.synthesize(TEXT, VOICE)
    assert utt.text == TEXT
    assert utt.audio.dtype == np.float32 and utt.audio.ndim == 1
    duration = len(utt.audio) / speech.SAMPLE_RATE
    assert 1.5 < duration < 5.0  # a 9-word sentence at 160 wpm, at 16 kHz
    assert np.abs(utt.audio).max() <= 1.0
    assert np.sqrt(np.mean(utt.audio**2)) > 0.02  # clearly not silent

    p = len(utt.phonemes)
    assert p > 20 and utt.starts.shape == (p,) and utt.ends.shape == (p,)
    assert utt.starts.dtype == np.float64 and utt.ends.dtype == np.float64
    assert utt.starts[0] == 0.0 and utt.phonemes[0] == "_"
    assert np.all(np.diff(utt.starts) > 0)
    np.testing.assert_array_equal(utt.ends[:-1], utt.starts[1:])  # contiguous
    assert utt.ends[-1] == pytest.approx(duration)
    assert np.all(utt.starts < duration)
    # no empty or repeated-silence segments
    assert all(not (a == b == "_") for a, b in zip(utt.phonemes, utt.phonemes[1:]))
    # the words are really there: /k w I k/ in "quick", /f 0 k s/ in "fox"
    joined = " ".join(utt.phonemes)
    assert "k w I k" in joined and "f 0 k s" in joined


def test_phoneme_timing_matches_audio_energy():
    """Silence segments are silent and speech segments are not: timings are exact."""
    utt = speech.synthesize("Hello there, my friend. How are you today?", VOICE)
    sr = speech.SAMPLE_RATE
    for ph, s, e in zip(utt.phonemes, utt.starts, utt.ends):
        seg = utt.audio[int(round(s * sr)) + 80 : int(round(e * sr)) - 80]  # 5 ms guard
        if len(seg) < 160:
            continue
        rms = float(np.sqrt(np.mean(seg**2)))
        if ph == "_":
            assert rms < 0.01, (ph, s, e, rms)
        elif ph in ("aI", "E", "e@", "oU", "aU", "u:", "eI"):
            assert rms > 0.03, (ph, s, e, rms)


def test_deterministic_regardless_of_history():
    first = speech.synthesize(TEXT, VOICE)
    # synthesis with other voices in between must not leak into the next utterance
    speech.synthesize("Something else entirely, spoken loudly!", speech.Voice("en-us+f2", 130, 10, 90))
    speech.synthesize("And one more.", speech.Voice("en-us+m2", 190, 80, 20))
    again = speech.synthesize(TEXT, VOICE)
    np.testing.assert_array_equal(first.audio, again.audio)
    assert first.phonemes == again.phonemes
    np.testing.assert_array_equal(first.starts, again.starts)


def test_different_voices_give_different_audio():
    a = speech.synthesize(TEXT, VOICE).audio
    b = speech.synthesize(TEXT, speech.Voice("en-us+f4", 160, 50, 50)).audio
    c = speech.synthesize(TEXT, speech.Voice("en-us+m3", 160, 80, 50)).audio  # pitch only
    d = speech.synthesize(TEXT, speech.Voice("en-us+m3", 130, 50, 50)).audio  # rate only
    assert len(d) > len(a) * 1.1  # slower speech is longer
    for other in (b, c):
        n = min(len(a), len(other))
        assert not np.array_equal(a[:n], other[:n])


def test_missing_voice_raises():
    with pytest.raises(RuntimeError, match="variant 'nosuchvariant'"):
        speech.synthesize("hello", speech.Voice("en-us+nosuchvariant", 160, 50, 50))
    with pytest.raises(RuntimeError, match="xx-nosuchvoice"):
        speech.synthesize("hello", speech.Voice("xx-nosuchvoice", 160, 50, 50))
    # the engine is still usable afterwards
    assert len(speech.synthesize("hello", VOICE).audio) > 0


def test_empty_text():
    utt = speech.synthesize("", VOICE)
    assert utt.audio.dtype == np.float32
    assert utt.phonemes[0] == "_" and set(utt.phonemes) == {"_"}
    assert utt.ends[-1] == pytest.approx(len(utt.audio) / speech.SAMPLE_RATE)


def test_sample_voice():
    rng = np.random.default_rng(0)
    voices = [speech.sample_voice(rng) for _ in range(200)]
    variants = {v.name.split("+")[1] for v in voices}
    assert len(variants) >= 10 and variants <= set(speech.VOICE_VARIANTS)
    assert any(v.startswith("m") for v in variants) and any(v.startswith("f") for v in variants)
    for v in voices:
        assert v.name.startswith("en-us+")
        assert 130 <= v.rate_wpm <= 190 and 0 <= v.pitch <= 99 and 0 <= v.pitch_range <= 99
    data = speech._engine().data_path
    for variant in speech.VOICE_VARIANTS:
        assert os.path.isfile(os.path.join(data, "voices", "!v", variant))
    assert speech.sample_voice(np.random.default_rng(5)) == speech.sample_voice(np.random.default_rng(5))


# ------------------------------------------------------------------ processes / threads


def _audio_hash(text: str, voice: speech.Voice) -> str:
    return hashlib.sha1(speech.synthesize(text, voice).audio.tobytes()).hexdigest()


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_multiprocessing_workers_match_parent(method):
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"{method} not available")
    rng = np.random.default_rng(11)
    jobs = [(speech.sample_sentence(rng), speech.sample_voice(rng)) for _ in range(6)]
    speech.synthesize(TEXT, VOICE)  # parent engine initialised (and used) before forking
    ctx = multiprocessing.get_context(method)
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=ctx) as pool:
        remote = list(pool.map(speech.synthesize, *zip(*jobs)))
    for (text, voice), utt in zip(jobs, remote):
        local = speech.synthesize(text, voice)
        np.testing.assert_array_equal(utt.audio, local.audio)
        assert utt.phonemes == local.phonemes


def test_threads_are_serialised():
    rng = np.random.default_rng(12)
    jobs = [(speech.sample_sentence(rng), speech.sample_voice(rng)) for _ in range(8)]
    expected = [_audio_hash(t, v) for t, v in jobs]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda job: _audio_hash(*job), jobs))
    assert got == expected


def test_matches_a_fresh_library_per_utterance():
    """Ground truth for determinism: a process that reloads libespeak-ng before every
    utterance (no state can carry over) produces the same bytes as this process."""
    rng = np.random.default_rng(13)
    jobs = [(speech.sample_sentence(rng), speech.sample_voice(rng)) for _ in range(5)]
    code = (
        "import sys, hashlib\n"
        "from data_pipelines.synthetic import speech as S\n"
        "S._engine().use_reload()\n"
        "for line in sys.stdin.read().splitlines():\n"
        "    name, rate, pitch, rng_, text = line.split('|')\n"
        "    v = S.Voice(name, int(rate), int(pitch), int(rng_))\n"
        "    print(hashlib.sha1(S.synthesize(text, v).audio.tobytes()).hexdigest())\n"
    )
    stdin = "\n".join(f"{v.name}|{v.rate_wpm}|{v.pitch}|{v.pitch_range}|{t}" for t, v in reversed(jobs))
    out = subprocess.run(
        [sys.executable, "-c", code], input=stdin, capture_output=True, text=True, check=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    ).stdout.split()
    assert out == [_audio_hash(t, v) for t, v in reversed(jobs)]


# ------------------------------------------------------------------ text


def test_word_list():
    words = speech._words()
    assert 600 <= len(words) <= 1000
    assert len(set(words)) == len(words)
    assert all(w.isalpha() and w.islower() and w.isascii() for w in words)


def test_sample_sentence():
    rng = np.random.default_rng(1)
    vocab = set(speech._words())
    for _ in range(100):
        s = speech.sample_sentence(rng, 3, 7)
        assert s[0].isupper() and s.endswith(".")
        words = s[:-1].lower().split()
        assert 3 <= len(words) <= 7 and set(words) <= vocab
    a = speech.sample_sentence(np.random.default_rng(3))
    assert a == speech.sample_sentence(np.random.default_rng(3))
    assert 5 <= len(a[:-1].split()) <= 10


# ------------------------------------------------------------------ labels


def test_inventories():
    assert speech.PHONEMES[0] == "_" and speech.PHONEMES[-1] == "?"
    assert len(set(speech.PHONEMES)) == len(speech.PHONEMES)
    assert speech.VISEMES[0] == "sil" and len(set(speech.VISEMES)) == len(speech.VISEMES)
    assert set(speech.VISEME_MOUTH) == set(speech.VISEMES)
    for target in speech.VISEME_MOUTH.values():
        assert len(target) == 3 and all(0.0 <= x <= 1.0 for x in target)
    m = speech.VISEME_MOUTH
    assert m["sil"] == (0.0, 0.5, 0.0) and m["PP"][0] == 0.0
    assert max(m, key=lambda v: m[v][0]) == "aa"
    assert m["O"][2] > 0.5 and m["U"][2] > 0.5 and m["E"][1] > m["O"][1] and m["I"][1] > m["U"][1]
    assert set(speech.PHONEME_TO_VISEME) == set(speech.PHONEMES)


def test_espeak_phonemes_are_all_known():
    """Every mnemonic espeak emits for en-us maps to a PHONEMES entry (no '?' fallback)."""
    rng = np.random.default_rng(7)
    seen: dict[str, int] = {}
    for _ in range(200):
        utt = speech.synthesize(speech.sample_sentence(rng), speech.sample_voice(rng))
        for p in utt.phonemes:
            seen[p] = seen.get(p, 0) + 1
    unknown = {p: n for p, n in seen.items() if p not in speech.PHONEMES}
    assert not unknown, unknown
    assert len(seen) > 50  # the sentences do exercise the inventory


def test_frame_labels_shapes_and_silence():
    utt = speech.synthesize(TEXT, VOICE)
    t_audio = _num_frames(utt)
    t = t_audio + 30  # frames beyond the end of the audio
    lab = speech.frame_labels(utt, t)
    assert set(lab) == {"phoneme", "viseme", "mouth"}
    assert lab["phoneme"].shape == (t,) and lab["phoneme"].dtype == np.int32
    assert lab["viseme"].shape == (t,) and lab["viseme"].dtype == np.int32
    assert lab["mouth"].shape == (t, 3) and lab["mouth"].dtype == np.float32
    assert lab["mouth"].min() >= 0.0 and lab["mouth"].max() <= 1.0
    assert lab["phoneme"].max() < len(speech.PHONEMES) and lab["viseme"].max() < len(speech.VISEMES)
    assert np.all(lab["phoneme"][t_audio:] == 0) and np.all(lab["viseme"][t_audio:] == 0)
    np.testing.assert_allclose(lab["mouth"][t_audio + 5 :], [speech.VISEME_MOUTH["sil"]] * 25, atol=1e-4)
    # phoneme and viseme labels agree
    vis_of = np.array([speech.VISEMES.index(speech.PHONEME_TO_VISEME[p]) for p in speech.PHONEMES])
    np.testing.assert_array_equal(vis_of[lab["phoneme"]], lab["viseme"])
    # frame-centre lookup
    k = t_audio // 2
    centre = (k + 0.5) / FPS
    i = np.searchsorted(utt.starts, centre, side="right") - 1
    assert speech.PHONEMES[lab["phoneme"][k]] == utt.phonemes[i]
    # speech is mostly open, a 2x finer frame rate gives the same picture
    assert lab["mouth"][:t_audio, 0].mean() > 0.3
    lab50 = speech.frame_labels(utt, 2 * t, fps=50.0)
    np.testing.assert_allclose(lab50["mouth"].reshape(t, 2, 3).mean(1), lab["mouth"], atol=1e-5)


def test_mouth_closes_for_bilabials_and_opens_for_vowels():
    utt = speech.synthesize("Bob and Pam ate a big apple pie, mama.", VOICE)
    fps = 200.0
    lab = speech.frame_labels(utt, int(np.ceil(len(utt.audio) / speech.SAMPLE_RATE * fps)), fps=fps)
    vis = np.array(speech.VISEMES)[lab["viseme"]]
    opening = lab["mouth"][:, 0]
    assert opening[vis == "PP"].mean() < 0.3
    assert opening[vis == "aa"].mean() > 0.7
    # every bilabial longer than 40 ms reaches a near-closed mouth somewhere inside it
    for p, s, e in zip(utt.phonemes, utt.starts, utt.ends):
        if speech.PHONEME_TO_VISEME.get(p) == "PP" and e - s > 0.04:
            assert opening[int(s * fps) : int(np.ceil(e * fps))].min() < 0.2, (p, s, e)
    # smooth: no jumps bigger than a fast lip movement allows in 5 ms
    assert np.abs(np.diff(opening)).max() < 0.15


def test_audio_frame_energy():
    sr = speech.SAMPLE_RATE
    t = np.arange(sr) / sr
    audio = np.concatenate([0.5 * np.sin(2 * np.pi * 200 * t), np.zeros(sr // 2)]).astype(np.float32)
    e = speech.audio_frame_energy(audio, 50)
    assert e.shape == (50,) and e.dtype == np.float32
    np.testing.assert_allclose(e[:25], 0.5 / np.sqrt(2), rtol=1e-3)
    np.testing.assert_array_equal(e[25:], 0.0)  # silence and beyond the end
    e30 = speech.audio_frame_energy(audio, 30, fps=30.0, sample_rate=sr)
    np.testing.assert_allclose(e30[:29], 0.5 / np.sqrt(2), rtol=2e-2)


def test_mouth_opening_is_in_sync_with_audio_energy(random_utterances):
    """The key property: opening follows the audio envelope at zero lag, not shifted."""
    mouths, energies = [], []
    for utt in random_utterances:
        t = _num_frames(utt)
        mouths.append(speech.frame_labels(utt, t)["mouth"][:, 0])
        energies.append(speech.audio_frame_energy(utt.audio, t))
    mouth, energy = np.concatenate(mouths), np.concatenate(energies)
    r = {lag: _lagged_corr(mouth, energy, lag) for lag in range(-5, 6)}
    per_sentence = np.mean([_lagged_corr(m, e, 0) for m, e in zip(mouths, energies)])
    print("corr by lag:", {k: round(v, 3) for k, v in r.items()}, "mean per sentence:", round(per_sentence, 3))
    assert r[0] > 0.6 and per_sentence > 0.6
    assert r[-5] < 0.3 and r[5] < 0.3
    assert r[0] - max(r[-5], r[5]) > 0.3
    assert r[0] == max(r.values())  # the peak is at zero lag: in sync, not shifted

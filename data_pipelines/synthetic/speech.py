"""Real synthesised speech with exact phoneme timings, for the synthetic talking-face corpus.

The synthetic corpus renders a mouth that follows the audio; for audio-visual sync to
hold *by construction* we need speech whose phoneme boundaries are known exactly. We get
them from espeak-ng itself: the shared library shipped by the ``espeakng-loader`` wheel
is driven through ctypes in synchronous mode with phoneme events enabled, so every
phoneme arrives with the sample index at which espeak started synthesising it. No
subprocess and no system espeak are involved, so the corpus builds identically on any
machine where the wheel installs.

Pipeline: ``sample_sentence`` -> ``synthesize`` (audio 16 kHz + phoneme segments) ->
``frame_labels`` (per video frame phoneme / viseme ids and a smooth, coarticulated mouth
trajectory (open, width, round)).
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import os
import pathlib
import threading
import warnings

import numpy as np

__all__ = [
    "SAMPLE_RATE",
    "VISEMES",
    "PHONEMES",
    "VISEME_MOUTH",
    "PHONEME_TO_VISEME",
    "Voice",
    "Utterance",
    "VOICE_VARIANTS",
    "sample_voice",
    "synthesize",
    "sample_sentence",
    "frame_labels",
    "audio_frame_energy",
]

SAMPLE_RATE = 16000

# --------------------------------------------------------------------------------------
# Label inventories
# --------------------------------------------------------------------------------------

# Oculus-style viseme set: small enough to be learnable from a rendered mouth, standard
# enough that results can be compared with lip-sync literature.
VISEMES: tuple[str, ...] = (
    "sil", "PP", "FF", "TH", "DD", "kk", "CH", "SS", "nn", "RR", "aa", "E", "I", "O", "U",
)

# espeak-ng en-us phoneme mnemonics (stress marks stripped), grouped by target viseme.
# Built from the en / en-us phoneme tables in the shipped ``phontab`` plus the base
# consonants English rules can reach; index 0 is silence, the last entry "?" is the
# fallback for anything not listed. espeak's own glottal stop mnemonic is also "?" and
# lands on that entry, which is harmless (it is a short, closed-ish consonant).
_PHONEME_GROUPS: dict[str, tuple[str, ...]] = {
    "sil": ("_",),
    "PP": ("p", "b", "m", "m-"),
    "FF": ("f", "v"),
    "TH": ("T", "D"),
    "DD": ("t", "d", "t#", "t2", "d#", "t[", "d["),
    "kk": ("k", "g", "N", "N-", "h", "x", "C", "c", "J", "q"),
    "CH": ("tS", "dZ", "S", "Z", "tS;", "dZ;", "S;", "Z;"),
    "SS": ("s", "z", "z#", "z/2", "ts"),
    "nn": ("n", "n-", "l", "l-", "l/", "l/2", "l/3", "L", "@L", "l#"),
    "RR": ("r", "r/", "r-", "R", "3", "3:", "VR", "IR"),
    "aa": ("a", "a#", "aa", "a2", "a#2", "A:", "A@", "A#", "A~", "V", "0", "0#", "aI", "aI@", "aI3", "aU", "aU@"),
    "E": ("E", "E#", "E2", "e", "e:", "e#", "e@", "eI", "@", "@-", "@2", "@5", "@#"),
    "I": ("I", "I#", "I2", "I2#", "i", "i:", "i@", "i@3", "j", ";"),
    "O": ("O", "O:", "O@", "O2", "O~", "o", "o:", "o@", "oU", "oU#", "02", "OI"),
    "U": ("U", "U@", "u", "u:", "w", "w#"),
}

PHONEMES: tuple[str, ...] = tuple(p for group in _PHONEME_GROUPS.values() for p in group) + ("?",)

PHONEME_TO_VISEME: dict[str, str] = {p: v for v, group in _PHONEME_GROUPS.items() for p in group}
PHONEME_TO_VISEME["?"] = "DD"  # glottal stop / unknown: brief consonantal closure

# Viseme -> mouth target (open, width, round), each in [0, 1]; sil is the closed neutral
# mouth. Opening is ordered like the acoustic energy each class lets out, which is what
# makes the rendered mouth visibly "in sync" with the audio: espeak's vowels carry similar
# energy whatever their quality (measured: /i/, /u/ about as loud as /a/) and liquids and
# nasals are louder than obstruents, so every vowel is fairly open ("aa" widest), "O"/"U"
# differ from the rest mainly by rounding, "E"/"I" by width, and the bilabial closure "PP"
# is the one deliberate exception (closed although /m/ is voiced). With these targets the
# opening vs. frame-RMS correlation is ~0.6-0.65 at zero lag (see tests/test_speech.py).
VISEME_MOUTH: dict[str, tuple[float, float, float]] = {
    "sil": (0.00, 0.50, 0.00),
    "PP": (0.00, 0.45, 0.10),
    "FF": (0.08, 0.55, 0.00),
    "TH": (0.15, 0.55, 0.00),
    "DD": (0.15, 0.55, 0.00),
    "kk": (0.20, 0.50, 0.05),
    "CH": (0.20, 0.35, 0.65),
    "SS": (0.15, 0.65, 0.00),
    "nn": (0.30, 0.50, 0.00),
    "RR": (0.55, 0.40, 0.50),
    "aa": (1.00, 0.60, 0.00),
    "E": (0.85, 0.75, 0.00),
    "I": (0.70, 0.85, 0.00),
    "O": (0.90, 0.35, 0.80),
    "U": (0.60, 0.20, 1.00),
}
# Coarticulation dominance (Cohen & Massaro style): closures and labiodentals win over
# their neighbours so a /p/ between vowels still closes the lips, while alveolars and
# velars are dominated by the surrounding vowels (the tongue does that work, not the lips).
_DOMINANCE: dict[str, float] = {
    "sil": 1.0, "PP": 3.0, "FF": 2.0, "TH": 1.0, "DD": 0.6, "kk": 0.6, "CH": 1.5,
    "SS": 1.2, "nn": 0.6, "RR": 0.8, "aa": 1.0, "E": 1.0, "I": 1.0, "O": 1.0, "U": 1.0,
}

_PHONEME_INDEX = {p: i for i, p in enumerate(PHONEMES)}
_VISEME_INDEX = {v: i for i, v in enumerate(VISEMES)}
_UNKNOWN_PHONEME = _PHONEME_INDEX["?"]
# per phoneme id: viseme id, mouth target, dominance (lookup tables for vectorised labelling)
_PH_VIS = np.array([_VISEME_INDEX[PHONEME_TO_VISEME[p]] for p in PHONEMES], np.int32)
_VIS_MOUTH = np.array([VISEME_MOUTH[v] for v in VISEMES], np.float64)
_VIS_DOM = np.array([_DOMINANCE[v] for v in VISEMES], np.float64)

# --------------------------------------------------------------------------------------
# Voices
# --------------------------------------------------------------------------------------

# Variants from espeak-ng-data/voices/!v: the classic formant-synthesis male/female ones.
# Not the Klatt-based ones (klatt*, adam, david, ...): espeak-ng's Klatt path is not
# reproducible, and the named community variants vary wildly in quality.
VOICE_VARIANTS: tuple[str, ...] = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7",
    "f1", "f2", "f3", "f4", "f5",
)


@dataclasses.dataclass(frozen=True)
class Voice:
    """Speaker identity + prosody; frozen so it can be hashed / stored in manifests."""

    name: str  # espeak voice, e.g. "en-us" or "en-us+f3" (variant)
    rate_wpm: int  # 130..190
    pitch: int  # 0..99
    pitch_range: int  # 0..99


def sample_voice(rng: np.random.Generator) -> Voice:
    """Random speaker (variant) and prosody, so the corpus is not one monotone voice."""
    variant = VOICE_VARIANTS[int(rng.integers(len(VOICE_VARIANTS)))]
    return Voice(
        name=f"en-us+{variant}",
        rate_wpm=int(rng.integers(130, 191)),
        pitch=int(rng.integers(25, 76)),
        pitch_range=int(rng.integers(20, 81)),
    )


@dataclasses.dataclass(frozen=True)
class Utterance:
    """Audio plus its phoneme segmentation (contiguous, covering the whole audio)."""

    text: str
    audio: np.ndarray  # float32 [N], 16 kHz mono, in [-1, 1]
    phonemes: tuple[str, ...]  # espeak mnemonics in order, silences included as "_"
    starts: np.ndarray  # float64 [P] seconds
    ends: np.ndarray  # float64 [P] seconds (end of last == audio duration)

    @property
    def duration(self) -> float:
        return len(self.audio) / SAMPLE_RATE


# --------------------------------------------------------------------------------------
# espeak-ng through ctypes
# --------------------------------------------------------------------------------------

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_INITIALIZE_DONT_EXIT = 0x8000  # return an error instead of exit() when data is missing
_CHARS_AUTO = 0
_POS_CHARACTER = 1
_PARAM_RATE, _PARAM_VOLUME, _PARAM_PITCH, _PARAM_RANGE = 1, 2, 3, 4
_EVENT_LIST_TERMINATED = 0
_EVENT_PHONEME = 7
_STRESS_CHARS = "'\",%="


class _EventId(ctypes.Union):
    _fields_ = [
        ("number", ctypes.c_int),
        ("name", ctypes.c_char_p),
        ("string", ctypes.c_char * 8),  # phoneme name, NOT NUL-terminated if 8 bytes long
    ]


class _Event(ctypes.Structure):
    # espeak_EVENT from speak_lib.h. On LP64 the six 4-byte ints are followed by 8-aligned
    # user_data (offset 24) and the 8-byte union (offset 32): sizeof == 40. ctypes applies the
    # same natural alignment as the C compiler, which matters because the callback receives
    # an *array* of these and we index it.
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # ms, rounded: too coarse, we use `sample`
        ("sample", ctypes.c_int),  # output sample index where the event happens
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


# Wavegen state that espeak-ng carries from one utterance to the next and that neither a
# voice change nor the start of an utterance resets (function-local statics in wavegen.c:
# pitch-flutter phase, automatic gain control, glottal cycle counter for "roughness",
# breath-noise resonator memory, ...). Left alone, the same text comes out differently
# depending on what was synthesised before, so we put them back to their post-init values
# before every utterance. They are located through the library's ELF symbol table.
_RUNNING_STATE = ("Flutter_ix", "agc", "cycle_count", "rbreath", "modulation_type", "glottal_flag")


def _elf_objects(path: str) -> dict[str, list[tuple[int, int]]]:
    """Data symbols (name -> [(address, size)]) from an ELF64-LE .symtab; {} if unavailable."""
    import struct

    try:
        with open(path, "rb") as f:
            d = f.read()
    except OSError:
        return {}
    if d[:4] != b"\x7fELF" or d[4] != 2 or d[5] != 1:  # not ELF64 little-endian
        return {}
    (shoff,) = struct.unpack_from("<Q", d, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", d, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", d, shoff + i * shentsize) for i in range(shnum)]
    out: dict[str, list[tuple[int, int]]] = {}
    for sec in sections:
        if sec[1] != 2:  # SHT_SYMTAB (a stripped library has none -> {})
            continue
        off, size, link, entsize = sec[4], sec[5], sec[6], sec[9]
        stroff = sections[link][4]
        for i in range(size // entsize):
            st_name, st_info, _, _, st_value, st_size = struct.unpack_from("<IBBHQQ", d, off + i * entsize)
            if st_info & 0xF not in (1, 2):  # STT_OBJECT, STT_FUNC
                continue
            name = d[stroff + st_name : d.index(b"\0", stroff + st_name)].decode("ascii", "replace")
            out.setdefault(name, []).append((st_value, st_size))
    return out


def _running_state_regions(lib: ctypes.CDLL, lib_path: str) -> list[tuple[int, int]] | None:
    """Absolute (address, size) of each _RUNNING_STATE variable, or None if any is not found
    unambiguously (stripped or different build: the caller then reloads the library instead)."""
    syms = _elf_objects(lib_path)
    anchor = syms.get("espeak_Synth")
    if not anchor or len(anchor) != 1:
        return None
    base = ctypes.cast(lib.espeak_Synth, ctypes.c_void_p).value - anchor[0][0]
    regions = []
    for var in _RUNNING_STATE:
        # GCC names function-local statics "var.1234", clang "Function.var"
        hits = [
            v
            for name, vals in syms.items()
            if name == var or name.startswith(var + ".") or name.endswith("." + var)
            for v in vals
        ]
        if len(hits) != 1 or hits[0][1] == 0:
            return None
        regions.append((base + hits[0][0], hits[0][1]))
    return regions


class _Espeak:
    """Process-wide espeak-ng engine. The library keeps all its state in globals, so there is
    one per process and every call goes through ``_LOCK``.

    Determinism: before each utterance we re-select the voice (so wavegen always starts from a
    voice change, which e.g. recomputes the echo-compensated amplitude), reseed espeak's noise
    generator and restore the wavegen running state (see _RUNNING_STATE). A self-check at start
    verifies that this reproduces a fresh library's output; if it does not (or the symbols are
    missing), we fall back to unloading and reloading the library before every utterance,
    which is slower (~3 ms) and leaks ~2 KB per call inside espeak, but is always exact.
    """

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError as e:  # pragma: no cover - dependency is pinned
            raise RuntimeError("speech synthesis needs the 'espeakng-loader' package") from e
        self.lib_path = espeakng_loader.get_library_path()
        try:
            self.data_path = espeakng_loader.get_data_path()
        except RuntimeError as e:
            raise RuntimeError(f"espeak-ng data directory missing: {e}") from e
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, bytes]] = []
        # Keep a reference to the thunk for the life of the process: espeak stores the raw
        # function pointer, and a garbage-collected thunk would crash on the next synth.
        self._callback = _SynthCallback(self._on_synth)
        self._known_voices: set[str] = set()
        self.lib: ctypes.CDLL | None = None
        self._load()
        regions = _running_state_regions(self.lib, self.lib_path)
        self._snapshot = None if regions is None else [(a, ctypes.string_at(a, n)) for a, n in regions]
        self.mode = "restore" if self._snapshot is not None else "reload"
        if self.mode == "restore" and not self._self_check():
            self.use_reload()
        if self.mode == "reload" and not self._self_check():
            # e.g. someone else in the process holds the library open, so dlclose cannot
            # unload it and the reload does not give fresh statics
            warnings.warn(
                "espeak-ng output depends on what was synthesised before in this process; "
                "synthesize() is not deterministic here",
                stacklevel=4,
            )

    def use_reload(self) -> None:
        """Switch to the always-exact (slower) mode. The snapshot addresses die with the
        mapping, so they must never be used once the library may be re-mapped elsewhere."""
        self._snapshot = None
        self.mode = "reload"

    # -- library lifetime ---------------------------------------------------------------
    def _load(self) -> None:
        try:
            lib = ctypes.CDLL(self.lib_path)
        except OSError as e:
            raise RuntimeError(f"could not load espeak-ng shared library {self.lib_path!r}: {e}") from e
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
            ctypes.c_uint, ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Terminate.argtypes = []
        lib.espeak_Terminate.restype = ctypes.c_int
        try:  # espeak-ng >= 1.51: seed for the breath/Klatt noise generator
            lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
            lib.espeak_ng_SetRandSeed.restype = None
            self._set_rand_seed = lib.espeak_ng_SetRandSeed
        except AttributeError:  # pragma: no cover
            self._set_rand_seed = None
        # Synchronous mode: espeak_Synth runs on the calling thread and returns when done, no
        # background threads are started (which is also what makes the engine fork-safe).
        sr = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, os.fsencode(self.data_path),
            _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_DONT_EXIT,
        )
        if sr <= 0:
            raise RuntimeError(
                f"espeak_Initialize failed (returned {sr}) with library {self.lib_path!r} "
                f"and data {self.data_path!r}"
            )
        lib.espeak_SetSynthCallback(self._callback)
        self.lib = lib
        self.native_rate = int(sr)
        self._fresh = True

    def _reload(self) -> None:
        import _ctypes

        lib, self.lib = self.lib, None
        lib.espeak_Terminate()
        _ctypes.dlclose(lib._handle)  # last reference: the next dlopen maps fresh statics
        del lib
        self._load()

    def _self_check(self) -> bool:
        probe = Voice("en-us+f2", 160, 60, 60)  # breath + echo + roughness: most carried state
        other = Voice("en-us+m1", 140, 30, 80)
        try:
            first = self._synth_raw("Checking the voice, one two three.", probe)
            self._synth_raw("Something else in between, quite loud and long!", other)
            again = self._synth_raw("Checking the voice, one two three.", probe)
        except RuntimeError:
            return False
        return np.array_equal(first[0], again[0]) and first[1] == again[1]

    # -- synthesis ----------------------------------------------------------------------
    def _on_synth(self, wav, numsamples, events) -> int:
        if wav and numsamples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, (numsamples,)).copy())
        if events:
            i = 0
            while True:
                ev = events[i]
                if ev.type == _EVENT_LIST_TERMINATED:
                    break
                if ev.type == _EVENT_PHONEME:
                    self._events.append((ev.sample, bytes(ev.id.string)))
                i += 1
        return 0  # continue synthesis

    def _check_voice(self, name: str) -> None:
        if name in self._known_voices:
            return
        if "+" in name:  # the variant is silently ignored by espeak if missing: check it
            variant = name.split("+", 1)[1]
            path = os.path.join(self.data_path, "voices", "!v", variant)
            if not os.path.isfile(path):
                raise RuntimeError(
                    f"espeak-ng voice variant {variant!r} (in {name!r}) not found in "
                    f"{os.path.dirname(path)}"
                )
            with open(path, encoding="utf-8", errors="replace") as f:
                if any(line.split()[:1] == ["klatt"] for line in f):
                    warnings.warn(
                        f"espeak-ng voice {name!r} uses the Klatt synthesiser, whose output is "
                        "not reproducible in espeak-ng 1.52 (it varies even across fresh "
                        "processes); synthesize() is only deterministic for formant voices",
                        stacklevel=5,
                    )
        if self.lib.espeak_SetVoiceByName(name.encode("utf-8")) != 0:
            raise RuntimeError(f"espeak-ng voice {name!r} not found (data: {self.data_path})")
        self._known_voices.add(name)

    def _synth_raw(self, text: str, voice: Voice) -> tuple[np.ndarray, list[tuple[int, bytes]]]:
        if self.mode == "reload" and not self._fresh:
            self._reload()
        lib = self.lib
        self._check_voice(voice.name)
        # Re-selecting the voice every time is cheap (~0.1 ms) and queues a voice change at the
        # start of the utterance, so every utterance starts from the same wavegen set-up.
        if lib.espeak_SetVoiceByName(voice.name.encode("utf-8")) != 0:
            raise RuntimeError(f"espeak-ng voice {voice.name!r} not found (data: {self.data_path})")
        for param, value in (
            (_PARAM_RATE, voice.rate_wpm),
            (_PARAM_PITCH, voice.pitch),
            (_PARAM_RANGE, voice.pitch_range),
            (_PARAM_VOLUME, 100),
        ):
            if lib.espeak_SetParameter(param, int(value), 0) != 0:
                raise RuntimeError(f"espeak_SetParameter({param}, {value}) failed")
        if self._snapshot is not None:
            for addr, data in self._snapshot:
                ctypes.memmove(addr, data, len(data))
        if self._set_rand_seed is not None:
            self._set_rand_seed(0)
        self._chunks, self._events = [], []
        data = text.encode("utf-8")
        self._fresh = False
        err = lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_AUTO, None, None)
        chunks, events = self._chunks, self._events
        self._chunks, self._events = [], []
        if err != 0:
            raise RuntimeError(f"espeak_Synth failed with error {err} for text {text!r}")
        audio = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
        return audio, events

    def synth(self, text: str, voice: Voice) -> tuple[np.ndarray, list[tuple[int, str]]]:
        """Synthesize at the native rate; returns int16 audio and (sample, mnemonic) events."""
        audio, events = self._synth_raw(text, voice)
        return audio, [(s, _decode_mnemonic(raw)) for s, raw in events]


def _decode_mnemonic(raw: bytes) -> str:
    name = raw.split(b"\0", 1)[0].decode("utf-8", "replace").lstrip(_STRESS_CHARS)
    if not name or name.startswith("_"):
        return "_"  # all pause phonemes ("_", "_:", "_!", "_|" ...) are silence
    return name


_ENGINE: _Espeak | None = None
_LOCK = threading.Lock()


# Fork safety. The engine survives fork as is: synchronous mode starts no threads, so the
# copied library globals (and the ctypes thunk) are all a child needs, and a child of an
# initialised parent skips initialisation. What must not happen is a fork while another
# thread is inside espeak (the child would inherit half-updated globals and a held lock),
# so forks wait for the lock, and the child gets a fresh one.
def _before_fork() -> None:
    _LOCK.acquire()


def _after_fork_in_parent() -> None:
    _LOCK.release()


def _after_fork_in_child() -> None:
    global _LOCK
    _LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child
    )


def _engine() -> _Espeak:
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = _Espeak()
    return _ENGINE


@functools.lru_cache(maxsize=None)
def _resample_factors(native_rate: int) -> tuple[int, int]:
    g = np.gcd(SAMPLE_RATE, native_rate)
    return SAMPLE_RATE // g, native_rate // g


def synthesize(text: str, voice: Voice) -> Utterance:
    """Speak ``text`` with espeak-ng and return 16 kHz audio + exact phoneme segments.

    Deterministic: the same (text, voice) gives bit-identical audio in any process and
    whatever was synthesised before (see _Espeak), for the formant voices (e.g. every
    VOICE_VARIANTS entry); espeak's Klatt variants are not reproducible and warn.
    Thread-safe (calls are serialised) and usable in fork or spawn workers.
    """
    with _LOCK:
        eng = _engine()
        raw, events = eng.synth(text, voice)
        native = eng.native_rate

    import scipy.signal  # lazy: heavy import, only needed once synthesis is used

    up, down = _resample_factors(native)
    x = raw.astype(np.float32) / np.float32(32768.0)
    if len(x):
        audio = scipy.signal.resample_poly(x, up, down).astype(np.float32)
        np.clip(audio, -1.0, 1.0, out=audio)
    else:
        audio = np.zeros(0, np.float32)
    duration = len(audio) / SAMPLE_RATE

    # Segments: silence from 0 until the first phoneme, then each phoneme until the next.
    # Events are in native samples; zero-length segments (espeak emits e.g. a clause-final
    # "_" at the same sample as the next phoneme) and repeated silences are dropped.
    names = ["_"] + [n for _, n in events]
    times = np.concatenate([[0.0], np.asarray([s for s, _ in events], np.float64) / native])
    times = np.minimum(times, duration)
    order = np.argsort(times, kind="stable")
    phonemes: list[str] = []
    starts: list[float] = []
    for k in order:
        t, name = float(times[k]), names[k]
        if starts and t <= starts[-1]:
            phonemes[-1] = name  # the earlier one had zero length
            if len(phonemes) > 1 and phonemes[-2] == name == "_":
                phonemes.pop(), starts.pop()
            continue
        if phonemes and phonemes[-1] == name == "_":
            continue
        phonemes.append(name)
        starts.append(t)
    if len(starts) > 1 and starts[-1] >= duration:  # trailing zero-length entry
        phonemes.pop(), starts.pop()
    st = np.asarray(starts, np.float64)
    en = np.append(st[1:], duration)
    return Utterance(text=text, audio=audio, phonemes=tuple(phonemes), starts=st, ends=en)


# --------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _words() -> tuple[str, ...]:
    path = pathlib.Path(__file__).with_name("words.txt")
    words = tuple(w.strip() for w in path.read_text(encoding="utf-8").splitlines() if w.strip())
    if not words:
        raise RuntimeError(f"word list {path} is empty")
    return words


def sample_sentence(rng: np.random.Generator, min_words: int = 5, max_words: int = 10) -> str:
    """Random word sequence: phonetically varied content, no grammar needed for lip sync."""
    if not 1 <= min_words <= max_words:
        raise ValueError(f"need 1 <= min_words <= max_words, got {min_words}, {max_words}")
    words = _words()
    n = int(rng.integers(min_words, max_words + 1))
    picked = [words[int(i)] for i in rng.integers(len(words), size=n)]
    sentence = " ".join(picked)
    return sentence[0].upper() + sentence[1:] + "."


# --------------------------------------------------------------------------------------
# Per-frame labels
# --------------------------------------------------------------------------------------

_MOUTH_RATE = 200.0  # Hz, grid on which viseme targets are blended
_MOUTH_SIGMA_S = 0.018  # Gaussian sigma (FWHM ~42 ms): smooth lips, symmetric so no lag
# The mouth shows each target 20 ms before its phoneme starts acoustically. Real
# articulators anticipate the sound they make, and espeak's vowel energy sits early in the
# vowel segment (it decays before the next consonant), so with no lead the opening-vs-RMS
# cross-correlation peaks half a frame late; with 20 ms it peaks at zero lag (r ~0.70 vs
# ~0.47/0.50 at -+1 frame; measured on 6 x 20 random sentences). Ids are not shifted.
_MOUTH_LEAD_S = 0.020


def _phoneme_ids(utt: Utterance) -> np.ndarray:
    return np.array([_PHONEME_INDEX.get(p, _UNKNOWN_PHONEME) for p in utt.phonemes], np.int32)


def frame_labels(utt: Utterance, num_frames: int, fps: float = 25.0) -> dict[str, np.ndarray]:
    """Per video frame phoneme / viseme ids and a coarticulated mouth trajectory.

    Frame t covers [t/fps, (t+1)/fps). Ids are those of the phoneme at the frame centre; the
    mouth is the viseme target curve (20 ms anticipation, dominance-weighted, Gaussian-smoothed
    with a symmetric kernel) averaged over the frame. Past the end of the audio is silence.
    """
    import scipy.ndimage

    num_frames = int(num_frames)
    ph_ids = _phoneme_ids(utt)
    starts = np.asarray(utt.starts, np.float64)
    ends = np.asarray(utt.ends, np.float64)
    end_time = float(ends[-1]) if len(ends) else 0.0

    def lookup(t: np.ndarray) -> np.ndarray:
        out = np.zeros(t.shape, np.int32)  # "_" is index 0
        if len(starts):
            k = np.searchsorted(starts, t, side="right") - 1
            inside = (k >= 0) & (t < end_time)
            out[inside] = ph_ids[k[inside]]
        return out

    centres = (np.arange(num_frames) + 0.5) / fps
    phon = lookup(centres)
    vis = _PH_VIS[phon]

    # Fine grid that spans all frames plus a margin so the smoothing sees the context.
    # The grid is aligned to t=0 so that, at 25 fps, every frame averages exactly 8 samples.
    pad = int(np.ceil(4.0 * _MOUTH_SIGMA_S * _MOUTH_RATE))
    n_fine = int(np.ceil(num_frames / fps * _MOUTH_RATE)) + 2 * pad
    fine_t = (np.arange(n_fine) - pad + 0.5) / _MOUTH_RATE
    fine_vis = _PH_VIS[lookup(fine_t + _MOUTH_LEAD_S)]
    w = _VIS_DOM[fine_vis]
    sigma = _MOUTH_SIGMA_S * _MOUTH_RATE
    num = scipy.ndimage.gaussian_filter1d(w[:, None] * _VIS_MOUTH[fine_vis], sigma, axis=0, mode="nearest")
    den = scipy.ndimage.gaussian_filter1d(w, sigma, mode="nearest")
    fine_mouth = num / den[:, None]

    frame_of = np.floor(fine_t * fps).astype(np.int64)
    keep = (frame_of >= 0) & (frame_of < num_frames)
    counts = np.bincount(frame_of[keep], minlength=num_frames).astype(np.float64)
    mouth = np.stack(
        [np.bincount(frame_of[keep], weights=fine_mouth[keep, j], minlength=num_frames) for j in range(3)],
        axis=1,
    )
    empty = counts == 0  # only when fps > _MOUTH_RATE: fall back to the unsmoothed target
    mouth[~empty] /= counts[~empty, None]
    if empty.any():
        mouth[empty] = _VIS_MOUTH[_PH_VIS[lookup(centres[empty] + _MOUTH_LEAD_S)]]
    return {
        "phoneme": phon.astype(np.int32),
        "viseme": vis.astype(np.int32),
        "mouth": np.clip(mouth, 0.0, 1.0).astype(np.float32),
    }


def audio_frame_energy(
    audio: np.ndarray, num_frames: int, fps: float = 25.0, sample_rate: int = SAMPLE_RATE
) -> np.ndarray:
    """RMS of the audio inside each video frame window (0 past the end): the acoustic
    counterpart of mouth opening, used to check sync."""
    audio = np.asarray(audio, np.float64).reshape(-1)
    bounds = np.round(np.arange(num_frames + 1) * (sample_rate / fps)).astype(np.int64)
    bounds = np.clip(bounds, 0, len(audio))
    csum = np.concatenate([[0.0], np.cumsum(audio * audio)])
    n = np.diff(bounds)
    energy = np.diff(csum[bounds])
    rms = np.sqrt(np.maximum(energy, 0.0) / np.maximum(n, 1))
    rms[n == 0] = 0.0
    return rms.astype(np.float32)

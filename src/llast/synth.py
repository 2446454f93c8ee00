"""An offline CoVoST-2-format corpus: Debian sentence pairs spoken by espeak-ng (and SVOX Pico).

Layout (what `llast.data.read_covost` reads)::

    {out}/covost_v2.{src}_{tgt}.{split}.tsv     path, sentence, translation, client_id
    {out}/{src}/clips_16k/synth_{src}_{n:06d}.wav  16 kHz mono 16-bit
    {out}/synth.json                             the parameters, written last (= the corpus is complete)

Sentence pairs: German-English from Debian `trans-de-en` (the Ding dictionary's example sentences) and
game dialogue in de/fr/es/it with its English original from `fillets-ng-data`. Each clip gets a voice
variant (the TSV's client_id, i.e. the "speaker"), speed and pitch, short silences at both ends, and
for a `noise` fraction of clips white or pink noise at 15-30 dB SNR. A `pico` fraction of clips is spoken
by SVOX Pico (`pico2wave`, Debian non-free `libttspico-utils`) instead: an HMM voice per language that Whisper
base hears far better than espeak-ng (docs/real_speech.md), with its own speed and pitch per clip.

No sentence appears in two splits: pairs are deduplicated by their normalised text on both sides, and
the split of a pair is decided by its English side for all directions at once, so En->De test
sentences are not De->En (or En->Fr) training sentences either.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import unicodedata
import zlib
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from tqdm import tqdm

from llast import outdir
from llast.audio import SAMPLE_RATE
from llast.errors import DataError

TRANS_DE_EN = Path("/usr/share/trans/de-en")
FILLETS_SCRIPTS = Path("/usr/share/games/fillets-ng/script")
FILLETS_LANGS = ("de", "fr", "es", "it")

VOICES = {"en": "en-us", "de": "de", "fr": "fr-fr", "es": "es", "it": "it"}  # espeak-ng voice per language
PICO_VOICES = {"en": "en-US", "de": "de-DE", "fr": "fr-FR", "es": "es-ES", "it": "it-IT"}  # SVOX Pico's languages
PICO_PACKAGE = "libttspico-utils (Debian non-free)"
# espeak-ng voice variants (the "speakers"), disjoint per split: dev and test voices are never heard in
# training, so test scores measure unseen voices as well as unseen sentences. Novelty variants (robots,
# whispering, "Demonic") are left out.
VARIANTS = {
    "train": [
        "m1", "m2", "m4", "m5", "m7", "m8", "f1", "f3", "f5", "klatt", "klatt2", "klatt3", "klatt4", "adam",
        "Alex", "Alicia", "Andrea", "Andy", "Annie", "antonio", "aunty", "belinda", "benjamin", "boris", "caleb",
        "david", "ed", "edward", "Gene", "gustave", "Henrique", "Hugo", "iven", "iven2", "Jacky", "john", "Lee",
        "linda", "marcelo", "Marco", "Mario", "max", "Michael", "michel", "miguel", "Mike", "Nguyen", "pablo",
        "paul", "pedro", "quincy", "rob", "robert", "steph", "steph2", "zac", "anika", "grandpa", "grandma",
        "norbert", "sandro", "shelby", "travis", "victor",
    ],
    "dev": ["m6", "f4", "klatt6", "Gene2", "iven4", "RicishayMax"],
    "test": ["m3", "f2", "klatt5", "edward2", "steph3", "iven3", "Denis", "Diogo", "kaukovalta", "AnxiousAndy"],
}
SPLITS = ("train", "dev", "test")
MIN_WORDS, MAX_WORDS = 4, 15
FORMAT_VERSION = 2  # bump when the generated audio or text changes for the same parameters
# Apertium (Debian, GPL) language pairs that turn English sentences into source-language ones, via
# Spanish for French and Italian: synthetic sources with a real English target, for TRAINING only (dev and
# test pairs are human translations).
APERTIUM_ROUTES = {"es": ("eng-spa",), "fr": ("eng-spa", "es-fr"), "it": ("eng-spa", "spa-ita")}

_BAD_CHARS = re.compile(r"[\[\]{}()<>;/~\\\"_*#=+|@&%$…\d]")
_LUA_STRING = r'"((?:[^"\\]|\\.)*)"'
_DIALOG = re.compile(r"dialogId\(\s*" + _LUA_STRING + r"\s*,\s*" + _LUA_STRING + r"\s*,\s*" + _LUA_STRING + r"\s*\)\s*dialogStr\(\s*" + _LUA_STRING + r"\s*\)")


# ----------------------------------------------------------------------------- sentence pairs


def normalise(text: str) -> str:
    """Lower case, letters and digits only, single spaces: the key for deduplication."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(re.sub(r"[^\w\s]", " ", text).split())


def _clean(text: str, sentence_end: bool) -> str | None:
    """The text if it is a clean sentence of MIN_WORDS..MAX_WORDS words, else None."""
    text = " ".join(text.replace("\u00a0", " ").split())
    if not text or _BAD_CHARS.search(text) or "..." in text or "--" in text:
        return None
    words = text.split()
    if not MIN_WORDS <= len(words) <= MAX_WORDS:
        return None
    # Abbreviations and dictionary notation (etw., jdn., sb., Mr.) inside the sentence.
    if any(w.endswith(".") and len(w) <= 4 for w in words[:-1]):
        return None
    if sentence_end and not text.endswith((".", "?", "!")):
        return None
    if not any(c.isalpha() for c in text):
        return None
    return text


def trans_de_en_pairs(path: Path = TRANS_DE_EN) -> list[tuple[str, str]]:
    """(German, English) example sentences of the Ding dictionary: lines ``de :: en``, alternatives ``|``."""
    pairs = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("#") or "::" not in line:
                continue
            de_side, en_side = line.rstrip("\n").split("::", 1)
            de_alts, en_alts = de_side.split("|"), en_side.split("|")
            if len(de_alts) != len(en_alts):
                continue
            for de, en in zip(de_alts, en_alts):
                de, en = _clean(de, True), _clean(en, True)
                if de and en:
                    pairs.append((de, en))
    return pairs


def _lua_unescape(s: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": " ", "t": " "}.get(m.group(1), m.group(1)), s)


def fillets_pairs(lang: str, root: Path = FILLETS_SCRIPTS) -> list[tuple[str, str]]:
    """(lang, English) dialogue lines of Fish Fillets: ``dialogId(key, font, english) dialogStr(lang)``."""
    pairs = []
    for path in sorted(root.glob(f"*/dialogs_{lang}.lua")):
        for _key, _font, en, xx in _DIALOG.findall(path.read_text(encoding="utf-8", errors="replace")):
            xx, en = _clean(_lua_unescape(xx), False), _clean(_lua_unescape(en), False)
            if xx and en:
                pairs.append((xx, en))
    return pairs


def apertium_pairs(lang: str, english: list[str]) -> list[tuple[str, str]]:
    """(lang, English) pairs made by translating `english` with Apertium (APERTIUM_ROUTES); sentences with
    words Apertium does not know (marked * # @ in its output) are dropped. [] when Apertium is missing."""
    route = APERTIUM_ROUTES.get(lang)
    if route is None or shutil.which("apertium") is None or not english:
        return []
    lines = [" ".join(e.split()) for e in english]
    text = "\n".join(lines) + "\n"
    for mode in route:
        proc = subprocess.run(["apertium", "-f", "line", mode], input=text.encode("utf-8"), capture_output=True, timeout=1800)
        if proc.returncode != 0:
            return []  # the language pair is not installed: no synthetic sources
        text = proc.stdout.decode("utf-8", errors="replace")
    out = text.rstrip("\n").split("\n")
    if len(out) != len(lines):
        raise DataError(f"apertium {'/'.join(route)}: {len(out)} lines out for {len(lines)} in")
    pairs = []
    for xx, en in zip(out, english):
        xx = xx.strip()
        if re.search(r"[*#@]", xx):
            continue
        if en[-1] in ".?!" and not xx.endswith((".", "?", "!")):
            xx = xx.rstrip(" ,;:") + en[-1]  # Apertium's line mode drops some sentence ends
        xx = _clean(" ".join(xx.replace(" ,", ",").split()), True)
        if xx:
            pairs.append((xx, en))
    return pairs


def language_pairs(lang: str, synthetic: bool = False) -> list[tuple[str, str]]:
    """All (lang, English) pairs from the Debian sources, each side unique after normalisation.

    synthetic: also Apertium translations of the Ding dictionary's English sentences (after the human pairs).
    """
    pairs: list[tuple[str, str]] = []
    if lang == "de" and TRANS_DE_EN.is_file():
        pairs += trans_de_en_pairs()
    if lang in FILLETS_LANGS and FILLETS_SCRIPTS.is_dir():
        pairs += fillets_pairs(lang)
    if synthetic and lang in APERTIUM_ROUTES and TRANS_DE_EN.is_file():
        pairs += apertium_pairs(lang, [en for _, en in trans_de_en_pairs()])
    seen_xx: set[str] = set()
    seen_en: set[str] = set()
    unique = []
    for xx, en in pairs:
        kx, ke = normalise(xx), normalise(en)
        if kx in seen_xx or ke in seen_en:
            continue
        seen_xx.add(kx)
        seen_en.add(ke)
        unique.append((xx, en))
    return unique


def _parse_direction(direction: str) -> tuple[str, str, str]:
    """"de-en" -> ("de", "en", "de"): source, target and the non-English language of the pair."""
    parts = direction.split("-")
    if len(parts) != 2 or not all(parts):
        raise DataError(f"direction {direction!r}: expected src-tgt, e.g. de-en")
    src, tgt = parts
    if "en" not in (src, tgt) or src == tgt:
        raise DataError(f"direction {direction!r}: synthetic pairs exist only between English and {', '.join(FILLETS_LANGS)}")
    other = tgt if src == "en" else src
    if other not in FILLETS_LANGS:
        raise DataError(
            f"direction {direction!r}: no sentence source for {other!r} (available: "
            f"{', '.join(f'{x}-en, en-{x}' for x in FILLETS_LANGS)})"
        )
    return src, tgt, other


def split_pairs(
    langs: list[str], sizes: dict[str, int], seed: int, synthetic: bool = False,
    exclude: frozenset[str] = frozenset(),
) -> dict[str, dict[str, list[tuple[str, str]]]]:
    """Pick sizes[split] (lang, en) pairs per language, each English sentence in one split for all languages.

    Pairs are ranked by a seeded hash of their English side; a sentence already placed by another
    language keeps its split. With `synthetic`, Apertium-made pairs (see `apertium_pairs`) fill the train
    split after the human pairs; dev and test hold human translations only. `exclude`: normalised
    sentences (either side) never used, e.g. another corpus's dev and test (see `excluded_sentences`).
    """
    placed: dict[str, str] = {}  # normalised English -> split
    out = {}
    kept = lambda p: normalise(p[0]) not in exclude and normalise(p[1]) not in exclude  # noqa: E731
    for lang in sorted(langs):
        all_human = language_pairs(lang)
        human = [p for p in all_human if kept(p)]
        need = sum(sizes.values())
        made = []
        if synthetic and len(human) < need:
            seen = {normalise(en) for _, en in all_human} | {normalise(xx) for xx, _ in all_human}
            made = [p for p in language_pairs(lang, synthetic=True)[len(all_human):]
                    if normalise(p[1]) not in seen and normalise(p[0]) not in seen and kept(p)]
        if len(human) + len(made) < need or len(human) < sizes["dev"] + sizes["test"]:
            raise DataError(f"{lang}-en: only {len(human)} clean sentence pairs (+{len(made)} Apertium-made for "
                            f"training), {need} asked for (train+dev+test)")
        rank = lambda p: hashlib.sha1(f"{seed}\0{normalise(p[1])}".encode()).hexdigest()  # noqa: E731
        chosen: dict[str, list[tuple[str, str]]] = {s: [] for s in SPLITS}
        for pool, splits in ((human, ("test", "dev", "train")), (made, ("train",))):
            for pair in sorted(pool, key=rank):
                key = normalise(pair[1])
                split = placed.get(key)
                if split is None:
                    split = next((s for s in splits if len(chosen[s]) < sizes[s]), None)
                    if split is None:
                        break
                    placed[key] = split
                if split in splits and len(chosen[split]) < sizes[split]:
                    chosen[split].append(pair)
        short = [s for s in SPLITS if len(chosen[s]) < sizes[s]]
        if short:
            raise DataError(f"{lang}-en: too few sentence pairs left for split(s) {', '.join(short)} after deduplication")
        out[lang] = chosen
    return out


def excluded_sentences(tsvs: list[str | Path]) -> frozenset[str]:
    """The normalised source and target sentences of CoVoST-format TSVs (`synth --exclude`): a corpus whose
    training set must not hold another corpus's dev or test sentences. A missing or malformed file is a
    DataError naming it."""
    from llast.data import read_tsv_rows  # lazy: llast.data pulls torch and transformers (seconds); synthesis needs neither

    out: set[str] = set()
    for tsv in tsvs:
        for _, row in read_tsv_rows(Path(tsv), ("sentence", "translation")):
            out.update(normalise(row[k]) for k in ("sentence", "translation") if row[k])
    return frozenset(out)


# ----------------------------------------------------------------------------- speech


def _espeak(text: str, voice: str, speed: int, pitch: int) -> tuple[np.ndarray, int]:
    """Speak `text` with espeak-ng; returns (float32 samples, sample rate)."""
    proc = subprocess.run(
        ["espeak-ng", "--stdout", "--stdin", "-v", voice, "-s", str(speed), "-p", str(pitch)],
        input=text.encode("utf-8"),
        capture_output=True,
        timeout=120,
    )
    wav = proc.stdout
    pos = wav.find(b"data")
    if proc.returncode != 0 or not wav.startswith(b"RIFF") or pos < 0:
        raise DataError(f"espeak-ng -v {voice} failed for {text!r}: {proc.stderr.decode(errors='replace').strip()}")
    sr = int.from_bytes(wav[24:28], "little")
    # The streamed header carries no real length, so read the PCM after the data chunk header directly.
    pcm = wav[pos + 8 :]
    x = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0
    return x, sr


def _pico(text: str, lang: str, speed: int, pitch: int) -> tuple[np.ndarray, int]:
    """Speak `text` with SVOX Pico (`pico2wave`) at `speed` and `pitch` percent; returns (float32 samples, rate)."""
    ssml = f"<speed level='{speed}'><pitch level='{pitch}'>{text}</pitch></speed>"
    with tempfile.TemporaryDirectory(prefix="llast-pico-") as tmp:
        wav = Path(tmp) / "pico.wav"
        proc = subprocess.run(["pico2wave", "-l", lang, "-w", str(wav), ssml], capture_output=True, timeout=120)
        if proc.returncode != 0 or not wav.is_file():
            raise DataError(f"pico2wave -l {lang} failed for {text!r}: {proc.stderr.decode(errors='replace').strip()}")
        x, sr = sf.read(str(wav), dtype="float32")
    return x, sr


def _speak(job: dict) -> tuple[np.ndarray, int]:
    """The clip's speech from its engine, before any post-processing."""
    if job.get("engine") == "pico":
        return _pico(job["text"], job["voice"].removeprefix("pico:"), job["speed"], job["pitch"])
    return _espeak(job["text"], job["voice"], job["speed"], job["pitch"])


def _pink(n: int, rng: np.random.Generator) -> np.ndarray:
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spec), dtype=np.float64)
    f[0] = 1.0
    x = np.fft.irfft(spec / np.sqrt(f), n)
    return x / (x.std() + 1e-12)


def _reverberate(x: np.ndarray, rt60: float, wet: float, rng: np.random.Generator) -> np.ndarray:
    """`x` in a room of reverberation time `rt60` s: exponentially decaying noise as the impulse response
    (60 dB down after rt60), mixed with the dry signal at `wet`, then scaled back to the dry peak."""
    n = int(rt60 * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    ir = rng.standard_normal(n) * np.exp(-6.9078 * t / rt60)
    ir /= np.sqrt(np.sum(ir**2)) + 1e-12
    size = len(x) + n - 1
    wet_x = np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(ir, size), size)[: len(x)]
    y = (1 - wet) * x + wet * wet_x
    return y * (np.abs(x).max() / (np.abs(y).max() + 1e-12))


# What real recordings do to a voice that espeak-ng never does, for a `people` fraction of clips: speed
# perturbation (pitch, formants and rate together, as Kaldi's 0.9/1.1 recipe), a spectral tilt (other
# microphones and mouths), and the channel: a telephone band at 8 kHz with mu-law, or a lossy codec
# through sox (AMR-NB, OKI ADPCM, Ogg Vorbis at its lowest quality).
CODECS = ("amr-nb", "vox", "ogg")


def _speed(x: np.ndarray, factor: float) -> np.ndarray:
    """`x` played `factor` times faster (pitch and formants up by `factor`), still at 16 kHz."""
    return soxr.resample(x, int(round(SAMPLE_RATE * factor)), SAMPLE_RATE).astype(np.float64)


def _tilt(x: np.ndarray, db_per_octave: float) -> np.ndarray:
    """`x` with its spectrum tilted by `db_per_octave` around 1 kHz (from 100 Hz up)."""
    spec = np.fft.rfft(x)
    f = np.maximum(np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE), 100.0)
    y = np.fft.irfft(spec * 10 ** (db_per_octave * np.log2(f / 1000.0) / 20), len(x))
    return y * (np.abs(x).max() / (np.abs(y).max() + 1e-12))


def _telephone(x: np.ndarray) -> np.ndarray:
    """`x` through a telephone line: 8 kHz (band to 3.4 kHz), 300 Hz high-pass, 8-bit mu-law, back to 16 kHz."""
    y = soxr.resample(x, SAMPLE_RATE, 8000)
    spec = np.fft.rfft(y)
    f = np.fft.rfftfreq(len(y), 1 / 8000)
    spec *= 1 / (1 + (300.0 / np.maximum(f, 1.0)) ** 4) * (f < 3400)
    y = np.fft.irfft(spec, len(y))
    peak = np.abs(y).max() + 1e-12
    mu = np.sign(y / peak) * np.log1p(255 * np.abs(y / peak)) / np.log(256)  # mu-law, 8 bits
    y = np.sign(np.round(mu * 127) / 127) * np.expm1(np.abs(np.round(mu * 127) / 127) * np.log(256)) / 255 * peak
    return soxr.resample(y, 8000, SAMPLE_RATE)[: len(x)].astype(np.float64)


def _codec(x: np.ndarray, codec: str) -> np.ndarray:
    """`x` encoded with `codec` (one of CODECS, at 8 kHz) by sox and decoded back to 16 kHz."""
    with tempfile.TemporaryDirectory(prefix="llast-codec-") as tmp:
        wav, coded, back = (Path(tmp) / n for n in ("in.wav", f"c.{codec}", "out.wav"))
        sf.write(str(wav), np.clip(x, -1, 1).astype(np.float32), SAMPLE_RATE, subtype="PCM_16")
        quality = ["-C", "-1"] if codec == "ogg" else []
        for cmd in (["sox", str(wav), "-r", "8000", "-c", "1", *quality, "-t", codec, str(coded)],
                    ["sox", "-t", codec, "-r", "8000", "-c", "1", str(coded), "-r", str(SAMPLE_RATE), str(back)]):
            proc = subprocess.run(cmd, capture_output=True, timeout=60)
            if proc.returncode != 0:
                raise DataError(f"sox {codec} failed: {proc.stderr.decode(errors='replace').strip()}")
        y, _ = sf.read(str(back), dtype="float64")
    return np.pad(y, (0, max(0, len(x) - len(y))))[: len(x)]


def _like_people(x: np.ndarray, p: dict) -> np.ndarray:
    """The channel part of the people augmentation (the speed part is applied before silences and rooms)."""
    if p["tilt"]:
        x = _tilt(x, p["tilt"])
    if p["channel"] == "telephone":
        x = _telephone(x)
    elif p["channel"] in CODECS:
        x = _codec(x, p["channel"])
    return x


def _render(job: dict) -> float:
    """Speak one clip, post-process it and write it (temp name, then rename). Returns its seconds."""
    x, sr = _speak(job)
    if not np.any(np.abs(x) > 1e-4):
        raise DataError(f"{job.get('engine', 'espeak')} produced silence for {job['text']!r} ({job['voice']})")
    x = soxr.resample(x, sr, SAMPLE_RATE).astype(np.float64)
    people = job.get("people")
    if people is not None and people["speed"] != 1.0:
        x = _speed(x, people["speed"])
    rng = np.random.default_rng(job["noise_seed"])
    x = x / (np.abs(x).max() + 1e-9) * job["peak"]
    lead, trail = (int(s * SAMPLE_RATE) for s in job["silence"])
    x = np.concatenate([np.zeros(lead), x, np.zeros(trail)])
    if job["rt60"] is not None:  # a room: the clip convolved with a synthetic impulse response
        x = _reverberate(x, job["rt60"], job["wet"], rng)
    if job["snr_db"] is not None:
        noise = _pink(len(x), rng) if job["pink"] else rng.standard_normal(len(x))
        speech_rms = np.sqrt(np.mean(x[lead : len(x) - trail] ** 2))
        x = x + noise * speech_rms / (10 ** (job["snr_db"] / 20))
    if people is not None:
        x = _like_people(x, people)
    x = np.clip(x, -1.0, 1.0).astype(np.float32)
    out = Path(job["path"])
    tmp = out.with_name(out.name + ".part")
    sf.write(str(tmp), x, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    os.replace(tmp, out)
    return len(x) / SAMPLE_RATE


def _clip_job(name: str, text: str, lang: str, path: Path, seed: int, noise: float, split: str = "train",
              reverb: float = 0.0, people: float = 0.0, pico: float = 0.0) -> dict:
    """The voice and post-processing of one clip, drawn from (seed, clip name) only: deterministic.
    The voice variant comes from the split's own set (VARIANTS). The people augmentation and the choice of
    Pico are drawn from streams of their own, so a corpus without them is the same as before they existed."""
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    variants = VARIANTS[split]
    variant = variants[rng.integers(len(variants))]
    noisy = rng.random() < noise
    roomy = rng.random() < reverb
    return {
        "text": text,
        "voice": f"{VOICES[lang]}+{variant}",
        "speed": int(rng.integers(120, 201)),
        "pitch": int(rng.integers(20, 81)),
        "peak": float(rng.uniform(0.3, 0.95)),
        "silence": (float(rng.uniform(0.05, 0.4)), float(rng.uniform(0.05, 0.4))),
        "rt60": float(rng.uniform(0.2, 0.8)) if roomy else None,
        "wet": float(rng.uniform(0.2, 0.6)),
        "snr_db": float(rng.uniform(10, 30)) if noisy else None,
        "pink": bool(rng.random() < 0.5),
        "noise_seed": [seed, zlib.crc32(name.encode()), 1],
        "path": str(path),
        "people": _people_job(np.random.default_rng([seed, zlib.crc32(name.encode()), 2]), people),
        **_pico_job(np.random.default_rng([seed, zlib.crc32(name.encode()), 3]), pico, lang),
    }


def _pico_job(rng: np.random.Generator, fraction: float, lang: str) -> dict:
    """For a `fraction` of clips: SVOX Pico's voice, speed (80-125 %) and pitch (75-135 %) instead of espeak-ng's."""
    if not rng.random() < fraction:
        return {}
    return {"engine": "pico", "voice": f"pico:{PICO_VOICES[lang]}", "speed": int(rng.integers(80, 126)),
            "pitch": int(rng.integers(75, 136))}


def _people_job(rng: np.random.Generator, fraction: float) -> dict | None:
    if not rng.random() < fraction:
        return None
    channel = rng.choice(["none", "telephone", *CODECS], p=[0.4, 0.3, 0.1, 0.1, 0.1])
    return {"speed": float(rng.choice([0.9, 1.0, 1.1])) if rng.random() < 0.8 else float(rng.uniform(0.85, 1.15)),
            "tilt": float(rng.uniform(-4, 4)) if rng.random() < 0.7 else 0.0, "channel": str(channel)}


# ----------------------------------------------------------------------------- corpus


def synthesize_corpus(
    out_dir: str | Path, directions: list[str], n_train: int, n_dev: int, n_test: int, seed: int = 0,
    noise: float = 0.3, workers: int = 2, reverb: float = 0.3, synthetic: bool = True,
    splits: tuple[str, ...] = SPLITS, exclude: list[str | Path] = (), people: float = 0.0, phrasebook: bool = False,
    pico: float = 0.0,
) -> dict:
    """Build a CoVoST-2-format corpus in `out_dir` (layout in the module docstring); returns a summary.

    Deterministic for (directions, sizes, seed, noise); `workers` espeak-ng processes run in parallel.
    `splits`: render and list only these (the sentences, clip names and voices of a split do not depend
    on which splits are rendered, so e.g. a corpus's test split can be rebuilt alone, exactly).
    `exclude`: CoVoST TSVs whose sentences (either side) this corpus never uses, e.g. a training corpus
    larger than another one whose dev and test it must keep out (`excluded_sentences`).
    `people`: fraction of clips made to sound less like espeak-ng and more like recordings of people
    (speed perturbation, spectral tilt, telephone band or a lossy codec: `_like_people`).
    `pico`: fraction of clips spoken by SVOX Pico instead of espeak-ng (needs `pico2wave`).
    `phrasebook`: dev and test hold the first n_dev / n_test sentences of the train split again, each a clip
    of its own in its split's voices (never heard in training): a closed set of phrases to learn.
    If `out_dir` holds a complete corpus with the same parameters, nothing is done (summary["skipped"]).
    Raises DataError for a direction without a sentence source or with too few pairs.
    """
    out = outdir.check(out_dir, "synth")  # a folder of the user's is refused before any work
    sizes = {"train": n_train, "dev": n_dev, "test": n_test}
    directions = list(dict.fromkeys(directions))
    splits = tuple(dict.fromkeys(splits))
    _check_request(sizes, directions, splits, {"noise": noise, "reverb": reverb, "people": people, "pico": pico},
                   phrasebook)
    parsed = [_parse_direction(d) for d in directions]
    params = {"version": FORMAT_VERSION, "directions": directions, **sizes, "seed": seed, "noise": noise,
              "reverb": reverb, "synthetic": synthetic}
    if splits != SPLITS:
        params["splits"] = list(splits)
    if people:
        params["people"] = people
    if pico:
        params["pico"] = pico
    if phrasebook:
        params["phrasebook"] = True
    excluded = excluded_sentences(list(exclude))
    if exclude:  # the sentences, not the file names, decide the corpus
        params["exclude"] = hashlib.sha1("\n".join(sorted(excluded)).encode()).hexdigest()
    marker = out / "synth.json"
    done = _complete_corpus(out, parsed, splits, params)
    if done is not None:
        print(f"{out}: corpus with the same parameters already complete; skipping")
        return {**done, "skipped": True}
    if shutil.which("espeak-ng") is None:
        raise DataError("synth: espeak-ng not found (Debian: apt-get install espeak-ng)")
    if pico and shutil.which("pico2wave") is None:
        raise DataError(f"synth: --pico {pico} needs pico2wave, not found (Debian: apt-get install {PICO_PACKAGE})")

    langs = sorted({other for _, _, other in parsed})
    if phrasebook:
        chosen = split_pairs(langs, {"train": n_train, "dev": 0, "test": 0}, seed, synthetic=False, exclude=excluded)
        for lang in chosen.values():
            lang["dev"], lang["test"] = lang["train"][:n_dev], lang["train"][:n_test]
    else:
        chosen = split_pairs(langs, sizes, seed, synthetic=synthetic, exclude=excluded)
    outdir.claim(out, "synth")
    marker.unlink(missing_ok=True)

    jobs, rows = _plan_clips(out, parsed, chosen, seed, noise, reverb, splits, people, phrasebook, pico)
    start = time.time()
    seconds = _render_all(jobs, workers)
    for (src, tgt, split), table in rows.items():
        if split in splits:
            _write_tsv(out / f"covost_v2.{src}_{tgt}.{split}.tsv", table)

    summary = {
        "params": params,
        "out_dir": str(out),
        "clips": len(jobs),
        "hours": round(seconds / 3600, 4),
        "tsv": {f"{s}-{t}": {split: len(rows[(s, t, split)]) for split in splits} for s, t, _ in parsed},
        "synth_seconds": round(time.time() - start, 1),
    }
    marker.write_text(json.dumps(summary, indent=2) + "\n")  # last: its presence means the corpus is complete
    print(f"{out}: {len(jobs)} clips ({seconds / 60:.1f} min of audio) in {summary['synth_seconds']} s")
    return {**summary, "skipped": False}


def _check_request(sizes: dict[str, int], directions: list[str], splits: tuple[str, ...], fractions: dict[str, float],
                   phrasebook: bool) -> None:
    """DataError for sizes, directions, splits or fractions of clips that synthesize_corpus cannot make."""
    if any(n < 0 for n in sizes.values()) or sum(sizes.values()) == 0:
        raise DataError(f"synth: sizes must be >= 0 and not all 0 (train {sizes['train']}, dev {sizes['dev']}, "
                        f"test {sizes['test']})")
    if not directions:
        raise DataError("synth: no directions given")
    for what, frac in fractions.items():
        if not 0.0 <= frac <= 1.0:
            raise DataError(f"synth: {what} is a fraction of clips, got {frac}")
    if not splits or any(x not in SPLITS for x in splits):
        raise DataError(f"synth: splits must be some of {', '.join(SPLITS)}, got {', '.join(splits) or 'none'}")
    if phrasebook and max(sizes["dev"], sizes["test"]) > sizes["train"]:
        raise DataError(f"synth: --phrasebook repeats train sentences in dev and test; dev {sizes['dev']} and test "
                        f"{sizes['test']} must not exceed train {sizes['train']}")


def _complete_corpus(out: Path, parsed: list, splits: tuple[str, ...], params: dict) -> dict | None:
    """The summary of a complete corpus in `out` made with `params` and at least `splits` (a whole corpus
    serves a test-only request), else None."""
    tsvs = [out / f"covost_v2.{s}_{t}.{split}.tsv" for s, t, _ in parsed for split in splits]
    marker = out / "synth.json"
    if not (marker.is_file() and all(p.is_file() for p in tsvs)):
        return None
    try:
        done = json.loads(marker.read_text())
    except json.JSONDecodeError:
        return None
    had = done.get("params") if isinstance(done, dict) else None
    same = isinstance(had, dict) and {k: v for k, v in had.items() if k != "splits"} == {
        k: v for k, v in params.items() if k != "splits"}
    return done if same and set(splits) <= set(had.get("splits", SPLITS)) else None


def _plan_clips(out: Path, parsed: list, chosen: dict, seed: int, noise: float, reverb: float,
                splits: tuple[str, ...], people: float = 0.0, phrasebook: bool = False,
                pico: float = 0.0) -> tuple[list[dict], dict]:
    """(render jobs of the clips of `splits`, TSV rows per (src, tgt, split)). One clip per (source language,
    sentence), shared by directions with the same source (per split too with `phrasebook`, whose splits
    repeat sentences); names and voices do not depend on `splits`."""
    clip_of: dict[tuple, tuple[str, str]] = {}  # (src[, split], normalised text) -> (clip name, voice)
    counts: dict[str, int] = {}
    jobs = []
    rows: dict[tuple[str, str, str], list[tuple[str, str, str, str]]] = {}
    for src, tgt, other in parsed:
        (out / src / "clips_16k").mkdir(parents=True, exist_ok=True)
        for split in SPLITS:
            table = rows[(src, tgt, split)] = []
            for xx, en in chosen[other][split]:
                source, target = (en, xx) if src == "en" else (xx, en)
                key = (src, split, normalise(source)) if phrasebook else (src, normalise(source))
                if key not in clip_of:
                    name = f"synth_{src}_{counts.get(src, 0):06d}.wav"
                    counts[src] = counts.get(src, 0) + 1
                    job = _clip_job(name, source, src, out / src / "clips_16k" / name, seed, noise, split, reverb,
                                    people, pico)
                    if split in splits:
                        jobs.append(job)
                    clip_of[key] = (name, job["voice"])
                name, speaker = clip_of[key]
                table.append((name, source, target, speaker))
    return jobs, rows


def _render_all(jobs: list[dict], workers: int) -> float:
    """Render every clip (`workers` espeak-ng processes); returns the seconds of audio made."""
    seconds = 0.0
    bar = tqdm(total=len(jobs), desc="synthesizing clips", unit="clip")
    try:
        if workers <= 1:
            for job in jobs:
                seconds += _render(job)
                bar.update(1)
        else:
            with get_context("spawn").Pool(workers) as pool:
                for s in pool.imap_unordered(_render, jobs, chunksize=4):
                    seconds += s
                    bar.update(1)
    finally:
        bar.close()
    return seconds


def _write_tsv(path: Path, table: list[tuple[str, str, str, str]]) -> None:
    """A CoVoST-2 TSV, written atomically."""
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\", lineterminator="\n")
        w.writerow(["path", "sentence", "translation", "client_id"])
        w.writerows(table)
    os.replace(tmp, path)

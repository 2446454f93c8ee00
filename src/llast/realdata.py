"""A dev set of REAL recorded human speech (no TTS): `llast data real`.

Every training clip of llast-mini is espeak-ng, so the synthetic test split rewards fitting espeak.
This set judges hearing on people's voices instead. It is built from what can be had here, each
source read from where its owner ships it:

- Debian packages (installed by scripts/setup.sh; always used when present):
  ``fillets-ng-data`` (German lines of the game's voice acting + its script text, GPL-2),
  ``pocketsphinx-testdata`` (English LibriVox sentences; package BSD-2 (CMU), LibriVox recordings public domain),
  ``ktuberling-data`` (single words in es and it, GPL-2+; the English key of each word is its translation).
- Public GitHub repositories, read from local checkouts under ``--repos DIR`` (named ``owner+name``,
  as `git clone https://github.com/OWNER/NAME DIR/OWNER+NAME` makes them; missing ones are skipped):
  OHF-Voice/speech-to-phrase (Apache-2.0; recorded voice commands, fr and en),
  sebastian-software/cuttledoc (MIT repo; its FLEURS clips are CC-BY-4.0; de, fr, es, en),
  Picovoice/cheetah and Picovoice/leopard (Apache-2.0; one test sentence per language each).

Where a source has no English translation, the translations in ``OUR_TRANSLATIONS`` were written by
the llast developers for short prompts only; each manifest line says who made its translation
(``translation_by``: "source" or "llast"), and clips without one are scored by WER only.

Output (``build_real_set``)::

    OUT/clips/<id>.flac          16 kHz mono FLAC
    OUT/real.jsonl               sentences: X->en translate lines (target_text "" when no translation),
                                 en lines as transcribe
    OUT/real.translate.jsonl     the X->en sentence lines that have an English translation (BLEU, chrF)
    OUT/words.jsonl              single words (ktuberling), X->en translate lines
    OUT/SOURCES.md               every source: origin, licence, clips per language, and why one was skipped

Both manifests are what `llast evaluate --data` reads (see llast.data.read_manifest); with
``--task transcribe`` every clip is scored by WER/CER.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import soundfile as sf

from llast.audio import SAMPLE_RATE, load_audio
from llast.errors import DataError

log = logging.getLogger(__name__)

LANGS = ("de", "fr", "es", "it", "en")


@dataclass(frozen=True)
class Clip:
    """One recorded utterance and its texts."""

    id: str  # unique, [a-z0-9-]
    lang: str
    audio: Path  # the source file as shipped (any format soundfile reads)
    text: str  # transcript in `lang`
    translation: str | None  # English reference, or None
    translation_by: str | None  # "source" | "llast" | None
    source: str  # key of SOURCES
    kind: str  # "sentence" | "word"


@dataclass(frozen=True)
class Source:
    name: str
    origin: str  # Debian package or GitHub repository
    licence: str
    note: str
    where: str  # "debian" (a path on this machine) or "github" (a folder under --repos)
    path: str  # the Debian data folder, or the checkout's folder name under --repos
    read: Callable[[Path], list[Clip]]


# English translations written by the llast developers (short prompts only; marked translation_by
# "llast" in the manifest). Keys are the source transcripts exactly as the source writes them.
OUR_TRANSLATIONS: dict[str, str] = {
    # OHF-Voice/speech-to-phrase, French voice commands
    "allume la Chambre à 80 pourcent": "turn on the Bedroom at 80 percent",
    "allume la lumière": "turn on the light",
    "allume le Bureau en rouge": "turn the Office red",
    "allume le Premier Étage en vert": "turn the First Floor green",
    "allume le Rez-de-chaussée à 80 pourcent": "turn on the Ground Floor at 80 percent",
    "allume les lumières dans la Chambre": "turn on the lights in the Bedroom",
    "allume les lumières en bleu": "turn the lights blue",
    "allume toutes les lumières dans le Rez-de-chaussée": "turn on all the lights on the Ground Floor",
    "allume toutes les lumières": "turn on all the lights",
    "annuler": "cancel",
    "combien de temps reste-t-il": "how much time is left",
    "combien fait-il dans le Bureau": "what is the temperature in the Office",
    "combien fait-il dans le Salon": "what is the temperature in the Living Room",
    "combien fait-il": "what is the temperature",
    "déverrouille la Porte d'entrée": "unlock the Front Door",
    "ferme les rideaux du Bureau": "close the Office curtains",
    "ferme tous les volets": "close all the shutters",
    "fermer les rideaux": "close the curtains",
    "lecture": "play",
    "minuteur 1 heure": "timer 1 hour",
    "minuteur 10 minutes": "timer 10 minutes",
    "minuteur 20 secondes": "timer 20 seconds",
    "minuteur 3 heures et 10 minutes": "timer 3 hours and 10 minutes",
    "minuteur 30 secondes": "timer 30 seconds",
    "minuteur 5 minutes": "timer 5 minutes",
    "média suivant": "next media",
    "ouvre les rideaux du Rez-de-chaussée": "open the Ground Floor curtains",
    "ouvre les volets du Premier Étage": "open the First Floor shutters",
    "ouvre les volets": "open the shutters",
    "ouvre tous les volets": "open all the shutters",
    "pause": "pause",
    "quel jour sommes-nous": "what day is it",
    "quel temps fait-il": "what is the weather like",
    "quelle heure est-il": "what time is it",
    "reprends le minuteur": "resume the timer",
    "règle la luminosité dans le Bureau à 50 pourcent": "set the brightness in the Office to 50 percent",
    "silence": "silence",
    "suivant": "next",
    "supprime le minuteur": "delete the timer",
    "supprime tous les minuteurs": "delete all the timers",
    "verrouille la Porte d'entrée": "lock the Front Door",
    "éteins la lumière": "turn off the light",
    "éteins les lumières dans le Salon": "turn off the lights in the Living Room",
    "éteins toutes les lumières du Premier Étage": "turn off all the lights on the First Floor",
    "éteins toutes les lumières": "turn off all the lights",
    # Picovoice/cheetah and Picovoice/leopard test sentences
    "Die Werbung vermittelt einen falschen Eindruck.": "The advertising gives a false impression.",
    "Les deux autres sont situés au bord de la mer jaune.": "The other two are located on the shore of the Yellow Sea.",
    "Dal passo si sale sulla vetta lungo la cresta sud.": "From the pass one climbs to the summit along the south ridge.",
    "Der hinter diesem Portal liegenden Raum wurde als Leichenhalle genutzt.":
        "The room behind this portal was used as a mortuary.",
    "Sous le consulat il devient conservateur des eaux et forêts et conseiller général.":
        "Under the Consulate he became curator of waters and forests and general councillor.",
    "Sempre alla radio nacquero anche alcune sue canzoni o meglio ritmi.":
        "Also on the radio, some of his songs, or rather rhythms, were born.",
    "Las arenas son blanquecinas de grano medio y tiene muy poca asistencia.":
        "The sands are whitish and medium-grained, and it has very few visitors.",
}

# ktuberling's es/it file names drop spaces and accents; the words as spoken, written by the llast
# developers from the file names (the English key of each word comes from the package's .soundtheme).
OUR_WORD_TRANSCRIPTS: dict[str, dict[str, str]] = {
    "es": {"ojo": "ojo", "ceja": "ceja", "nariz": "nariz", "oreja": "oreja", "boca": "boca",
           "sombrero": "sombrero", "bigote": "bigote", "lazo": "lazo", "gafasdesol": "gafas de sol",
           "anteojos": "anteojos", "pendiente": "pendiente", "pelo": "pelo"},
    "it": {"occhio": "occhio", "sopracciglio": "sopracciglio", "naso": "naso", "orecchio": "orecchio",
           "bocca": "bocca", "cappello": "cappello", "baffi": "baffi", "cravattino": "cravattino",
           "occhialidasole": "occhiali da sole", "occhiali": "occhiali", "orecchino": "orecchino",
           "cravatta": "cravatta", "capelli": "capelli"},
}


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40]


def _ours(text: str) -> tuple[str | None, str | None]:
    t = OUR_TRANSLATIONS.get(text)
    return (t, "llast") if t is not None else (None, None)


# ----------------------------------------------------------------------------- Debian sources

_LUA_DIALOG = re.compile(r'dialogId\(\s*"([^"]+)"\s*,\s*[^,]+,\s*"((?:[^"\\]|\\.)*)"\s*\)')


# fillets-ng-data's voiced lines with text are few: most of sound/*/en/ are grunts with empty text, some
# are sound effects ("CLICK", hex strings) or transliterated Russian. The German officer of level "elk"
# (sound/elk/en/deu-p-*.ogg) speaks real German sentences, the same in every language version of the
# game; "Skål!" (Swedish) is left out. Their translations were written by the llast developers.
FILLETS_GERMAN: dict[str, str] = {
    "deu-p-jawohl": "Yes, sir!",
    "deu-p-los": "What is the matter?",
    "deu-p-ordnung": "That is all right, Lieutenant!",
    "deu-p-schnell": "Quick, quick.",
    "deu-p-stimmt": "That is right, sir!",
    "deu-p-streng": "Top secret!",
    "deu-p-trinken0": "Good morning, sir! Would you like some more tea?",
    "deu-p-trinken1": "Good afternoon, sir! Would you like something to drink?",
}


def read_fillets(root: Path) -> list[Clip]:
    """fillets-ng-data: the German lines of FILLETS_GERMAN, sound/elk/en/<dialog id>.ogg, their text from
    script/elk/dialogs_en.lua."""
    lua = root / "script" / "elk" / "dialogs_en.lua"
    if not lua.is_file():
        raise DataError(f"{lua}: not found (is fillets-ng-data complete?)")
    text_of = {m.group(1): re.sub(r"\\(.)", lambda e: " " if e.group(1) == "n" else e.group(1), m.group(2))
               for m in _LUA_DIALOG.finditer(lua.read_text(encoding="utf-8"))}
    clips = []
    for key, english in FILLETS_GERMAN.items():
        ogg = root / "sound" / "elk" / "en" / f"{key}.ogg"
        text = " ".join(text_of.get(key, "").split())
        if text and ogg.is_file():
            clips.append(Clip(f"fillets-{_slug(key)}", "de", ogg, text, english, "llast", "fillets-ng-data", "sentence"))
    return clips


_SPHINX_LINE = re.compile(r"^<s>\s*(.*?)\s*</s>\s*\(([^)]+)\)\s*$")


def read_pocketsphinx(root: Path) -> list[Clip]:
    """pocketsphinx-testdata: librivox/<id>.wav with librivox/transcription lines '<s> text </s> (id)'."""
    trans = root / "librivox" / "transcription"
    clips = []
    for n, line in enumerate(trans.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        m = _SPHINX_LINE.match(line.strip())
        if not m:
            raise DataError(f"{trans}:{n}: expected '<s> text </s> (id)'")
        wav = root / "librivox" / f"{m.group(2)}.wav"
        if wav.is_file():
            clips.append(Clip(f"librivox-{_slug(m.group(2)[-4:])}", "en", wav, m.group(1), None, None,
                              "pocketsphinx-testdata", "sentence"))
    return clips


_SOUND = re.compile(r'<sound\s+name="([^"]+)"\s+file="([^"]+)"')


def read_ktuberling(root: Path) -> list[Clip]:
    """ktuberling-data: <lang>.soundtheme maps each English key to <lang>/<word>.(ogg|wav); es and it,
    whose spoken words OUR_WORD_TRANSCRIPTS gives (one clip per file: the first key is its translation)."""
    clips = []
    for lang, words in OUR_WORD_TRANSCRIPTS.items():
        theme = root / f"{lang}.soundtheme"
        if not theme.is_file():
            continue
        seen = set()
        for key, rel in _SOUND.findall(theme.read_text(encoding="utf-8")):
            audio = root / rel
            if audio in seen or Path(rel).stem not in words or not audio.is_file():
                continue
            seen.add(audio)
            clips.append(Clip(f"ktuberling-{lang}-{_slug(Path(rel).stem)}", lang, audio, words[Path(rel).stem],
                              key, "source", "ktuberling-data", "word"))
    return clips


# ----------------------------------------------------------------------------- GitHub checkouts


def read_speech_to_phrase(root: Path) -> list[Clip]:
    """OHF-Voice/speech-to-phrase: tests/wav/<lang>/<transcript>.wav; the files under generated/ are TTS
    and oov_* have no transcript, so both are left out."""
    clips = []
    for lang in ("fr", "en", "es", "de", "it"):
        for wav in sorted((root / "tests" / "wav" / lang).glob("*.wav")):
            if wav.stem.startswith("oov_"):
                continue
            tr, by = _ours(wav.stem) if lang != "en" else (None, None)
            clips.append(Clip(f"s2p-{lang}-{_slug(wav.stem)}", lang, wav, wav.stem, tr, by, "speech-to-phrase", "sentence"))
    return clips


_FLEURS = re.compile(r"^fleurs-([a-z]{2})-(\d+)$")


def read_cuttledoc(root: Path) -> list[Clip]:
    """sebastian-software/cuttledoc: packages/cuttledoc/fixtures/fleurs-<lang>-NNN.ogg + .txt (FLEURS)."""
    clips = []
    for ogg in sorted((root / "packages" / "cuttledoc" / "fixtures").glob("fleurs-*.ogg")):
        m = _FLEURS.match(ogg.stem)
        txt = ogg.with_suffix(".txt")
        if not m or m.group(1) not in LANGS or not txt.is_file():
            continue
        text = " ".join(txt.read_text(encoding="utf-8").split())
        if text:
            clips.append(Clip(f"fleurs-{m.group(1)}-{m.group(2)}", m.group(1), ogg, text, None, None, "fleurs-cuttledoc", "sentence"))
    return clips


def _read_picovoice(root: Path, name: str) -> list[Clip]:
    data = root / "resources" / ".test" / "test_data.json"
    try:
        tests = json.loads(data.read_text(encoding="utf-8"))["tests"]["language_tests"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"{data}: not a Picovoice test_data.json ({e})") from None
    clips = []
    for t in tests:
        lang = t.get("language")
        if lang not in LANGS or t.get("normalization"):  # the *_norm clips test number formatting
            continue
        text = t.get("transcript_with_punctuation") or t.get("transcript")
        audio = root / "resources" / "audio_samples" / t["audio_file"]
        if text and audio.is_file():
            tr, by = _ours(text) if lang != "en" else (None, None)
            clips.append(Clip(f"{name}-{lang}-{_slug(Path(t['audio_file']).stem)}", lang, audio, text, tr, by,
                              f"picovoice-{name}", "sentence"))
    return clips


SOURCES: dict[str, Source] = {s.name: s for s in (
    Source("fillets-ng-data", "Debian fillets-ng-data", "GPL-2",
           "Fish Fillets NG: the German officer's voiced lines (level elk), text from the game's script; "
           "translations by llast", "debian",
           "/usr/share/games/fillets-ng", read_fillets),
    Source("pocketsphinx-testdata", "Debian pocketsphinx-testdata", "BSD-2-Clause (CMU); LibriVox audio public domain",
           "English LibriVox sentences (Sense and Sensibility)", "debian", "/usr/share/pocketsphinx/test/data",
           read_pocketsphinx),
    Source("ktuberling-data", "Debian ktuberling-data", "GPL-2+",
           "single words recorded for KTuberling; transcripts written by llast from the file names", "debian",
           "/usr/share/ktuberling/sounds", read_ktuberling),
    Source("speech-to-phrase", "github.com/OHF-Voice/speech-to-phrase", "Apache-2.0",
           "recorded Home Assistant voice commands (tests/wav, not generated/); English translations by llast",
           "github", "OHF-Voice+speech-to-phrase", read_speech_to_phrase),
    Source("fleurs-cuttledoc", "github.com/sebastian-software/cuttledoc", "FLEURS clips CC-BY-4.0 (repository MIT)",
           "FLEURS read Wikipedia sentences, 10 per language (no Italian)", "github", "sebastian-software+cuttledoc",
           read_cuttledoc),
    Source("picovoice-cheetah", "github.com/Picovoice/cheetah", "Apache-2.0",
           "resources/audio_samples test sentence per language; translations by llast", "github", "Picovoice+cheetah",
           lambda root: _read_picovoice(root, "cheetah")),
    Source("picovoice-leopard", "github.com/Picovoice/leopard", "Apache-2.0",
           "resources/audio_samples test sentence per language; translations by llast", "github", "Picovoice+leopard",
           lambda root: _read_picovoice(root, "leopard")),
)}


# ----------------------------------------------------------------------------- building


def gather(repos: str | Path | None = None, per_source: int = 50,
           debian_roots: dict[str, str | Path] | None = None) -> tuple[list[Clip], dict[str, str]]:
    """Every clip of every source found, at most `per_source` per (source, language) spread evenly over
    the source's sorted clips. Returns (clips, source name -> why it was skipped). `debian_roots`
    overrides a Debian source's folder (tests)."""
    clips: list[Clip] = []
    skipped: dict[str, str] = {}
    for s in SOURCES.values():
        if s.where == "debian":
            root = Path((debian_roots or {}).get(s.name, s.path))
            missing = f"{root} not found (apt-get install {s.origin.split()[-1]})"
        else:
            if repos is None:
                skipped[s.name] = "no --repos folder given"
                continue
            root = Path(repos) / s.path
            missing = f"{root} not found (git clone https://github.com/{s.path.replace('+', '/')} {root})"
        if not root.is_dir():
            skipped[s.name] = missing
            continue
        found = s.read(root)
        if not found:
            skipped[s.name] = f"{root}: no clips with a transcript"
        for lang in LANGS:
            mine = [c for c in found if c.lang == lang]
            if len(mine) > per_source:  # evenly spaced: every part of a game/corpus, not its first level
                mine = [mine[int(i * len(mine) / per_source)] for i in range(per_source)]
            clips.extend(mine)
    ids = [c.id for c in clips]
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        raise DataError(f"two clips share the id(s) {', '.join(sorted(dup))}")
    return clips, skipped


def _write_flac(src: Path, dst: Path) -> float:
    """`src` as 16 kHz mono 16-bit FLAC at `dst`; its duration in seconds."""


    wav = load_audio(src)
    peak = float(np.max(np.abs(wav)))
    if peak > 1.0:
        wav = wav / peak
    sf.write(str(dst), wav, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    return len(wav) / SAMPLE_RATE


def manifest_line(c: Clip, duration: float) -> dict:
    """The JSONL manifest object of a clip (llast.data.read_manifest's format; extra keys are ignored there)."""
    en = c.lang == "en"
    return {
        "id": c.id, "audio": f"clips/{c.id}.flac", "src_lang": c.lang, "tgt_lang": "en",
        "task": "transcribe" if en else "translate", "source_text": c.text,
        "target_text": c.text if en else (c.translation or ""), "duration": round(duration, 3),
        "translation_by": c.translation_by, "origin": c.source, "kind": c.kind,
    }


def build_real_set(out_dir: str | Path, repos: str | Path | None = None, per_source: int = 50,
                   debian_roots: dict[str, str | Path] | None = None) -> dict:
    """Gather the clips (see `gather`), convert them to OUT/clips/<id>.flac and write real.jsonl,
    words.jsonl and SOURCES.md. Returns {"counts": {kind: {lang: n}}, "translated": {lang: n},
    "skipped": {source: why}, "seconds": total audio}. DataError when no source gives a clip."""
    out = Path(out_dir)
    clips, skipped = gather(repos, per_source, debian_roots)
    if not clips:
        raise DataError("no real-speech source found: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    (out / "clips").mkdir(parents=True, exist_ok=True)
    lines = {"sentence": [], "word": []}
    seconds = 0.0
    for c in clips:
        dur = _write_flac(c.audio, out / "clips" / f"{c.id}.flac")
        seconds += dur
        lines[c.kind].append(manifest_line(c, dur))
    with_en = [o for o in lines["sentence"] if o["task"] == "translate" and o["target_text"]]
    for name, objs in (("real.jsonl", lines["sentence"]), ("real.translate.jsonl", with_en),
                       ("words.jsonl", lines["word"])):
        with open(out / name, "w", encoding="utf-8") as f:
            for obj in objs:
                f.write(json.dumps(obj, ensure_ascii=False) + "\n")
    counts = {k: {lang: sum(1 for o in v if o["src_lang"] == lang) for lang in LANGS} for k, v in lines.items()}
    translated = {lang: sum(1 for c in clips if c.lang == lang and c.translation) for lang in LANGS if lang != "en"}
    per = {}
    for c in clips:
        per.setdefault(c.source, {}).setdefault(c.lang, 0)
        per[c.source][c.lang] += 1
    (out / "SOURCES.md").write_text(_sources_md(per, skipped, repos), encoding="utf-8")
    return {"counts": counts, "translated": translated, "skipped": skipped, "seconds": round(seconds, 1),
            "per_source": per}


def _sources_md(per: dict, skipped: dict, repos) -> str:
    rows = ["# Real-speech dev set: sources", "",
            "Built by `llast data real` (llast.realdata). Every clip is a human recording; none is TTS.", "",
            "| source | origin | licence | clips per language | note |", "|---|---|---|---|---|"]
    for s in SOURCES.values():
        n = per.get(s.name)
        got = ", ".join(f"{k} {v}" for k, v in sorted(n.items())) if n else f"skipped: {skipped.get(s.name, '')}"
        rows.append(f"| {s.name} | {s.origin} | {s.licence} | {got} | {s.note} |")
    rows += ["", "Translations marked `translation_by: llast` in the manifests were written by the llast "
             "developers (short prompts only); `source` ones come with the data (ktuberling's English keys).", ""]
    return "\n".join(rows)


def format_report(report: dict) -> str:
    """A short table of a build_real_set report."""
    lines = [f"{'kind':<9}" + "".join(f"{lang:>6}" for lang in LANGS)]
    for kind, n in report["counts"].items():
        lines.append(f"{kind:<9}" + "".join(f"{n[lang]:>6}" for lang in LANGS))
    lines.append("translated " + ", ".join(f"{k} {v}" for k, v in report["translated"].items()))
    lines.append(f"audio {report['seconds']} s")
    for name, why in report["skipped"].items():
        lines.append(f"skipped {name}: {why}")
    return "\n".join(lines)


"""How well Whisper base hears each offline TTS engine (issue #28): the same dev sentences spoken by espeak-ng,
SVOX Pico and MBROLA (through espeak-ng's mb-* voices), transcribed by faster-whisper base int8 (beam 4);
WER/CER as llast.evaluate scores them. An engine Whisper hears well is closer to the recordings of people
Whisper was trained on, so closer to what llast-mini must learn to hear.

    python bench/tts_hearing.py --n 10 --out bench/results/tts_hearing.json

Needs espeak-ng, pico2wave (Debian non-free libttspico-utils) and the mbrola voices named below
(Debian non-free mbrola-de1 ...); a missing engine is skipped, and said so.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import faster_whisper_dir  # noqa: E402

from llast.evaluate import word_error_rates  # noqa: E402

ESPEAK = {"fr": "fr-fr+m3", "de": "de+m3", "es": "es+m3", "it": "it+m3"}  # a test voice of llast.synth
PICO = {"fr": "fr-FR", "de": "de-DE", "es": "es-ES", "it": "it-IT"}
MBROLA = {"fr": ["mb-fr1", "mb-fr2", "mb-fr3", "mb-fr4", "mb-fr6", "mb-fr7"],
          "de": ["mb-de1", "mb-de2", "mb-de3", "mb-de4", "mb-de5", "mb-de6", "mb-de7", "mb-de8"],
          "es": ["mb-es1", "mb-es2", "mb-es3", "mb-es4"], "it": ["mb-it1", "mb-it2", "mb-it3", "mb-it4"]}


def espeak(text: str, voice: str) -> tuple[np.ndarray, int]:
    wav = subprocess.run(["espeak-ng", "--stdout", "--stdin", "-v", voice], input=text.encode(),
                         capture_output=True, check=True).stdout
    pos, rate = wav.find(b"data"), int.from_bytes(wav[24:28], "little")
    pcm = wav[pos + 8:]
    return np.frombuffer(pcm[: len(pcm) // 2 * 2], "<i2").astype(np.float32) / 32768, rate


def pico(text: str, lang: str) -> tuple[np.ndarray, int]:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["pico2wave", "-l", lang, "-w", f"{tmp}/p.wav", text], check=True)
        return sf.read(f"{tmp}/p.wav", dtype="float32")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10, help="sentences per language (the first of data/synth4's dev split)")
    ap.add_argument("--data", default="data/synth4")
    ap.add_argument("--out", default=None)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    from faster_whisper import WhisperModel

    model = WhisperModel(str(faster_whisper_dir()), device="cpu", compute_type="int8", cpu_threads=args.threads)
    engines = {"espeak-ng": shutil.which("espeak-ng"), "pico": shutil.which("pico2wave"),
               "mbrola": shutil.which("mbrola")}
    result = {"command": " ".join(["python", *sys.argv]), "machine": platform.processor() or platform.machine(),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "whisper": "faster-whisper base int8, beam 4",
              "skipped": [e for e, path in engines.items() if path is None], "wer_cer_percent": {}}
    for lang in ESPEAK:
        with open(f"{args.data}/covost_v2.{lang}_en.dev.tsv", encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\"))[: args.n]
        for engine, path in engines.items():
            if path is None:
                continue
            hyps, refs = [], []
            for i, row in enumerate(rows):
                text = row["sentence"]
                if engine == "espeak-ng":
                    x, rate = espeak(text, ESPEAK[lang])
                elif engine == "pico":
                    x, rate = pico(text, PICO[lang])
                else:
                    x, rate = espeak(text, MBROLA[lang][i % len(MBROLA[lang])])
                refs.append(text)
                if len(x) < rate // 10:  # the voice said nothing
                    hyps.append("")
                    continue
                segments, _ = model.transcribe(soxr.resample(x, rate, 16000), language=lang, beam_size=4)
                hyps.append(" ".join(s.text for s in segments).strip())
            s = word_error_rates(hyps, refs)
            result["wer_cer_percent"].setdefault(engine, {})[lang] = [round(100 * s["wer"], 1), round(100 * s["cer"], 1)]
            print(lang, engine, result["wer_cer_percent"][engine][lang], flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()

"""The tables of docs/real_speech.md from the OUT folder of bench/real_speech.sh.

    python bench/real_speech_table.py runs/realeval > /tmp/tables.md

Hearing: WER / CER (clips) per source language, transcribe task (Whisper base's own, llast-mini's first
pass with its encoder S-LoRA on, and off: bench/slora_probe.py). Translation into English: BLEU / chrF
(clips) on the clips that have an English reference. A missing run shows as "-".
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

LANGS = ("de", "fr", "es", "it", "en")


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _cell(r: dict | None, a: str, b: str, scale: float = 1.0) -> str:
    if not r or r.get(a) is None:
        return "-"
    return f"{r[a] * scale:.1f} / {r[b] * scale:.1f} ({r['n']})"


def hearing(out: Path, part: str) -> list[str]:
    rows = []
    for label, run in (("Whisper base, transcribe", f"{part}-whisper-transcribe"),
                       ("llast-mini, first pass (transcribe)", f"{part}-mini-transcribe")):
        sets = _load(out / run / "score.json").get("sets", {})
        rows.append([label] + [_cell(sets.get(f"{lang}-{lang}.transcribe"), "wer", "cer", 100) for lang in LANGS])
    for probe_file in sorted(out.glob(f"slora_probe_{part}*.json")):
        rows += probe_rows(_load(probe_file))
    return _table(["WER / CER % (clips)"] + list(LANGS), rows)


def probe_rows(probe: dict) -> list[list[str]]:
    """S-LoRA off (and on, when the probe decoded it itself rather than reading an evaluate run's)."""
    keys = [("slora_off", "off")] if probe.get("slora_on_from") else [("slora_on", "on"), ("slora_off", "off")]
    rows = []
    for key, state in keys:
        row = [f"llast-mini, first pass, encoder S-LoRA {state} (probe: {probe.get('clips', 'same clips')})"]
        for lang in LANGS:
            r = next((v for k, v in probe.get("sets", {}).items() if k.endswith(f".{lang}")), None)
            row.append(_cell({**r[key], "n": r["n"]} if r else None, "wer", "cer", 100))
        rows.append(row)
    return rows


def translation(out: Path, part: str) -> list[str]:
    rows = []
    for label, run in (("Whisper base, translate", f"{part}-whisper-translate"),
                       ("cascade: Whisper base -> Qwen2.5-Coder-0.5B", f"{part}-cascade"),
                       ("llast-mini, two passes", f"{part}-mini-translate")):
        sets = _load(out / run / "score.json").get("sets", {})
        rows.append([label] + [_cell(sets.get(f"{lang}-en.translate"), "bleu", "chrf") for lang in LANGS[:4]])
        if "whisper-translate" not in run:
            what = "its Whisper transcripts" if "cascade" in run else "its first pass"
            rows.append([f"  WER / CER % of {what} on these clips"] + [
                _cell({**r, "wer": r.get("asr_wer"), "cer": r.get("asr_cer")} if (r := sets.get(f"{lang}-en.translate"))
                      else None, "wer", "cer", 100) for lang in LANGS[:4]])
    return _table(["BLEU / chrF (clips)"] + list(LANGS[:4]), rows)


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows]


def main() -> None:
    out = Path(sys.argv[1])
    for part, title in (("real", "sentences (real.jsonl / real.translate.jsonl)"), ("words", "single words (words.jsonl)")):
        print(f"### Hearing, {title}\n")
        print("\n".join(hearing(out, part)) + "\n")
        print(f"### Translation into English, {title}\n")
        print("\n".join(translation(out, part)) + "\n")


if __name__ == "__main__":
    main()

"""The tables of docs/real_speech.md from the OUT folder of bench/real_speech.sh.

    python bench/real_speech_table.py runs/realeval data/real8 > /tmp/tables.md

Hearing: WER / CER (clips) per source language, transcribe task (Whisper base's own, llast-mini's first
pass with its encoder S-LoRA on, and off: bench/slora_probe.py), on every clip of DATA's manifest that a
run decoded (llast-mini's from its transcribe runs and the probe's "on" pass), then on the probe's clips. Translation into English: BLEU / chrF
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


def _hyps(run_dirs: list[Path], heard: bool = False) -> dict[str, str]:
    """Sample id -> hypothesis from `llast evaluate --task transcribe` OUT folders, or with `heard` the first
    pass of a two-pass model's translate run (its *.translate.heard.txt)."""
    hyps = {}
    for run in run_dirs:
        for ids_file in run.glob("*.translate.ids.txt" if heard else "*.transcribe.ids.txt"):
            kind = ".heard.txt" if heard else ".hyp.txt"
            texts = ids_file.with_name(ids_file.name.replace(".ids.txt", kind)).read_text(encoding="utf-8").splitlines()
            hyps.update((i.removesuffix("-asr"), h) for i, h in zip(ids_file.read_text(encoding="utf-8").splitlines(), texts))
    return hyps


def _wer_cells(hyps: dict[str, str], refs: dict[str, tuple[str, str]]) -> list[str]:
    """Per language: WER / CER % (clips) over the clips of `refs` (id -> (lang, text)) that `hyps` has;
    "of N" when some are missing."""
    from llast.evaluate import word_error_rates

    cells = []
    for lang in LANGS:
        ids = [i for i, (lg, _) in refs.items() if lg == lang]
        have = [i for i in ids if i in hyps]
        if not have:
            cells.append("-")
            continue
        r = word_error_rates([hyps[i] for i in have], [refs[i][1] for i in have])
        n = f"{len(have)}" + ("" if len(have) == len(ids) else f" of {len(ids)}")
        cells.append(f"{r['wer'] * 100:.1f} / {r['cer'] * 100:.1f} ({n})")
    return cells


def hearing(out: Path, data: Path, part: str) -> list[str]:
    """WER/CER on every clip of DATA/{part}.jsonl, and on the probe's clips."""
    from llast.data import read_manifest

    refs = {s.id: (s.src_lang, s.source_text) for s in read_manifest(data / f"{part}.jsonl")}
    whisper = _hyps([out / f"{part}-whisper-transcribe"])
    mini = {**_hyps([out / f"{part}-mini-translate"], heard=True), **_hyps(sorted(out.glob(f"{part}-mini-transcribe*")))}
    probes = [_load(f) for f in sorted(out.glob(f"slora_probe_{part}*.json"))]
    on = {e["id"]: e["on"] for p in probes for r in p.get("sets", {}).values() for e in r["examples"]}
    off = {e["id"]: e["off"] for p in probes for r in p.get("sets", {}).values() for e in r["examples"]}
    rows = [["Whisper base, transcribe"] + _wer_cells(whisper, refs),
            ["llast-mini, first pass (S-LoRA on)"] + _wer_cells({**on, **mini}, refs),
            ["llast-mini, first pass, encoder S-LoRA off"] + _wer_cells(off, refs)]
    tables = _table(["WER / CER % (clips), all clips"] + list(LANGS), rows)
    if off:
        sub = {i: refs[i] for i in off}
        rows = [["Whisper base, transcribe"] + _wer_cells(whisper, sub),
                ["llast-mini, S-LoRA on (probe)"] + _wer_cells(on, sub),
                ["llast-mini, S-LoRA off (probe)"] + _wer_cells(off, sub)]
        tables += [""] + _table(["WER / CER % (clips), the probe's clips"] + list(LANGS), rows)
    return tables


def translation(out: Path, data: Path, part: str) -> list[str]:
    from llast.data import read_manifest

    manifest = data / (f"{part}.translate.jsonl" if (data / f"{part}.translate.jsonl").is_file() else f"{part}.jsonl")
    src = {s.id: s.source_text for s in read_manifest(manifest)}
    rows = []
    for label, run in (("Whisper base, translate", f"{part}-whisper-translate"),
                       ("cascade: Whisper base -> Qwen2.5-Coder-0.5B", f"{part}-cascade"),
                       ("llast-mini, two passes", f"{part}-mini-translate")):
        sets = _load(out / run / "score.json").get("sets", {})
        rows.append([label] + [_cell(sets.get(f"{lang}-en.translate"), "bleu", "chrf") for lang in LANGS[:4]])
        if "whisper-translate" in run:
            continue
        # WER of the transcripts each translation was made from, on exactly these clips (the cascade's own
        # asr_wer is its transcribe run's, over every clip of the language)
        heard = (_hyps([out / f"{part}-whisper-transcribe"]) if "cascade" in run
                 else _hyps([out / run], heard=True))
        refs = {}
        for lang in LANGS[:4]:
            ids_file = out / run / f"{lang}-en.translate.ids.txt"
            if ids_file.is_file():
                refs.update((i, (lang, src[i])) for i in ids_file.read_text(encoding="utf-8").splitlines() if i in src)
        what = "Whisper base's transcripts" if "cascade" in run else "its first pass"
        rows.append([f"  WER / CER % of {what} on these clips"] + _wer_cells(heard, refs)[:4])
    return _table(["BLEU / chrF (clips)"] + list(LANGS[:4]), rows)


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows]


def main() -> None:
    out, data = Path(sys.argv[1]), Path(sys.argv[2])
    for part, title in (("real", "sentences (real.jsonl / real.translate.jsonl)"), ("words", "single words (words.jsonl)")):
        print(f"### Hearing, {title}\n")
        if (data / f"{part}.jsonl").is_file():
            print("\n".join(hearing(out, data, part)) + "\n")
        print(f"### Translation into English, {title}\n")
        print("\n".join(translation(out, data, part)) + "\n")


if __name__ == "__main__":
    main()

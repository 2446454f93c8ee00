"""Long-form measurements (docs/longform.md): recordings made of a corpus's test clips with pauses between
them, the true sentence boundaries, and the scores of subtitles and long-form BLEU against them.

    python bench/longform.py build --tsv /tmp/synth/covost_v2.de_en.test.tsv --minutes 10 --out /tmp/lf/10
        -> /tmp/lf/10/{long.wav, truth.json, long.jsonl (one 10-minute sample), clips.jsonl (its clips, by offset)}
    python bench/longform.py cues /tmp/lf/10/truth.json long.srt       # boundaries found within 0.5 s
    python bench/longform.py docbleu /tmp/lf/10/truth.json A.hyp.txt B.hyp.txt ...   # one document each
    python bench/longform.py tiny-ckpt /tmp/lf/tiny                     # the tiny random checkpoint of the tests

Pauses are 0.6-1.6 s of low noise (-50 dBFS); clips are repeated in order when the corpus is shorter than asked.
"""

from __future__ import annotations

import argparse
import dataclasses
import csv
import json
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 16000


def build(tsv: str, minutes: float, out: str, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    tsv_path = Path(tsv)
    clips_dir = tsv_path.parent / tsv_path.name.split(".")[1].split("_")[0] / "clips_16k"
    with open(tsv_path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    truth, t, k = [], 0.0, 0
    with sf.SoundFile(out_dir / "long.wav", "w", SR, 1, "PCM_16") as w:  # written as it grows: bounded memory
        while t < minutes * 60:
            row = rows[k % len(rows)]
            x, sr = sf.read(clips_dir / row["path"], dtype="float32")
            assert sr == SR, (row["path"], sr)
            truth.append({"id": f"{k}:{row['path']}", "start": round(t, 4), "end": round(t + len(x) / SR, 4),
                          "source": row["sentence"], "target": row["translation"]})
            pause = (0.003 * rng.standard_normal(int(rng.uniform(0.6, 1.6) * SR))).astype(np.float32)
            w.write(x)
            w.write(pause)
            t += (len(x) + len(pause)) / SR
            k += 1
    (out_dir / "truth.json").write_text(json.dumps({"seconds": round(t, 3), "clips": truth}, indent=1, ensure_ascii=False))
    src, tgt = tsv_path.name.split(".")[1].split("_")
    wav = str((out_dir / "long.wav").resolve())
    with open(out_dir / "clips.jsonl", "w", encoding="utf-8") as f:
        for c in truth:
            f.write(json.dumps({"id": c["id"], "audio": wav, "offset": c["start"], "duration": round(c["end"] - c["start"], 4),
                                "src_lang": src, "tgt_lang": tgt, "source_text": c["source"], "target_text": c["target"]},
                               ensure_ascii=False) + "\n")
    doc = {"id": "long", "audio": wav, "src_lang": src, "tgt_lang": tgt,
           "source_text": " ".join(c["source"] for c in truth), "target_text": " ".join(c["target"] for c in truth)}
    (out_dir / "long.jsonl").write_text(json.dumps(doc, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"{out_dir / 'long.wav'}: {t / 60:.2f} min, {len(truth)} clips")


def _cue_times(path: Path) -> list[tuple[float, float]]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        return [(s["start"], s["end"]) for s in json.loads(text)["segments"]]
    import srt

    return [(c.start.total_seconds(), c.end.total_seconds()) for c in srt.parse(text)]


def cues(truth_file: str, cue_file: str, tolerance: float = 0.5) -> dict:
    """Share of true clip starts (ends) with a cue start (end) within `tolerance` seconds."""
    truth = json.loads(Path(truth_file).read_text())["clips"]
    times = _cue_times(Path(cue_file))
    starts = np.array([a for a, _ in times])
    ends = np.array([b for _, b in times])
    hit_s = [bool(len(starts)) and np.abs(starts - c["start"]).min() <= tolerance for c in truth]
    hit_e = [bool(len(ends)) and np.abs(ends - c["end"]).min() <= tolerance for c in truth]
    err_s = [np.abs(starts - c["start"]).min() for c in truth]
    err_e = [np.abs(ends - c["end"]).min() for c in truth]
    result = {"sentences": len(truth), "cues": len(times),
              "boundaries_within": round((sum(hit_s) + sum(hit_e)) / (2 * len(truth)), 4),
              "starts_within": round(sum(hit_s) / len(truth), 4), "ends_within": round(sum(hit_e) / len(truth), 4),
              "median_start_error_s": round(float(np.median(err_s)), 3), "median_end_error_s": round(float(np.median(err_e)), 3),
              "tolerance_s": tolerance}
    print(json.dumps(result))
    return result


def docbleu(truth_file: str, hyp_files: list[str]) -> None:
    """Document BLEU: every hypothesis file's lines joined into one document, against the joined references."""
    import sacrebleu

    ref = " ".join(c["target"] for c in json.loads(Path(truth_file).read_text())["clips"])
    for h in hyp_files:
        hyp = " ".join(line.strip() for line in Path(h).read_text(encoding="utf-8").splitlines() if line.strip())
        b = sacrebleu.corpus_bleu([hyp], [[ref]])
        c = sacrebleu.corpus_chrf([hyp], [[ref]])
        print(json.dumps({"hyp": h, "doc_bleu": round(b.score, 2), "doc_chrf": round(c.score, 2)}))


def tiny_ckpt(out: str) -> None:
    """The tests' tiny random checkpoint (tiny Whisper + tiny Llama): decoding costs ~nothing, so peak memory
    shows what reading, segmentation and batching cost."""
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import tiny

    from llast.checkpoint import save_checkpoint
    from llast.lora import apply_lora
    from llast.model import build_model

    root = Path(out)
    cfg = tiny.tiny_config(tiny.write_whisper(root / "whisper"), tiny.write_llm(root / "llama"))
    cfg.decode = dataclasses.replace(cfg.decode, max_new_tokens=4, num_beams=1)
    torch.manual_seed(0)
    model = build_model(cfg.model)
    apply_lora(model, cfg.model)
    print(save_checkpoint(model, cfg, root / "ckpt"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("--tsv", required=True)
    b.add_argument("--minutes", type=float, required=True)
    b.add_argument("--out", required=True)
    c = sub.add_parser("cues")
    c.add_argument("truth")
    c.add_argument("cues", help="an SRT file, or translate --format json output")
    c.add_argument("--tolerance", type=float, default=0.5)
    d = sub.add_parser("docbleu")
    d.add_argument("truth")
    d.add_argument("hyps", nargs="+")
    t = sub.add_parser("tiny-ckpt")
    t.add_argument("out")
    a = p.parse_args()
    if a.cmd == "build":
        build(a.tsv, a.minutes, a.out)
    elif a.cmd == "cues":
        cues(a.truth, a.cues, a.tolerance)
    elif a.cmd == "docbleu":
        docbleu(a.truth, a.hyps)
    else:
        tiny_ckpt(a.out)


if __name__ == "__main__":
    main()

"""Pack what a lent GPU machine needs for bench/run_device.sh into .gpu/ (git-ignored, < 64 MiB with .whl/):
config + tokenizer files of the bundled models (weights are rebuilt there at random: bench/random_models.py)
and a FLAC subset of the synthetic corpus (N train + all dev clips per direction, TSVs rewritten).

    python bench/pack_for_device.py [--train 150]
"""

from __future__ import annotations

import argparse
import csv
import shutil
from pathlib import Path

import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", type=int, default=150, help="training clips per direction")
    ap.add_argument("--out", type=Path, default=ROOT / ".gpu")
    args = ap.parse_args()
    from llast.assets import resolve

    import random_models

    for name in ("whisper-base", "smollm2-135m-instruct"):
        random_models.pack(Path(resolve(name)), args.out / "cfg" / name)
    src, dst = ROOT / "data" / "synth", args.out / "synth"
    if dst.exists():
        shutil.rmtree(dst)
    for lang in ("de", "fr"):
        (dst / lang / "clips_16k").mkdir(parents=True)
        for split, n in (("train", args.train), ("dev", None)):
            tsv = src / f"covost_v2.{lang}_en.{split}.tsv"
            with open(tsv, newline="") as f:
                rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[:n]
            for r in rows:
                audio, sr = sf.read(src / lang / "clips_16k" / r["path"], dtype="int16")
                r["path"] = r["path"].replace(".wav", ".flac")
                sf.write(dst / lang / "clips_16k" / r["path"], audio, sr, format="FLAC")
            with open(dst / tsv.name, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter="\t", quoting=csv.QUOTE_NONE, lineterminator="\n")
                w.writeheader()
                w.writerows(rows)
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"{args.out}: {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()

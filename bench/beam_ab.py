"""llast.beam against transformers' beam search on real decoding (outputs of free length), same model,
same clips, alternately in one process: what the early exit of finished clips and the lighter candidate
search give outside the fixed-length bench.

    python bench/beam_ab.py runs/demo/final --rounds 2 >> bench/results/beam_ab_cpu.txt
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--data", nargs="+", default=[str(ROOT / "data/synth/covost_v2.de_en.test.tsv"),
                                                   str(ROOT / "data/synth/covost_v2.fr_en.test.tsv")])
    ap.add_argument("--limit", type=int, default=25, help="clips per data file")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--dtype", default="auto", help="weights dtype (llast.load_model)")
    args = ap.parse_args()
    import dataclasses

    import torch

    from llast.audio import SAMPLE_RATE, load_audio
    from llast.decode import load_model
    from llast.config import DataSource
    from llast.data import read_source
    from llast.processor import Example

    tr = load_model(args.checkpoint, dtype=args.dtype)
    examples = []
    for path in args.data:
        for s in read_source(DataSource(format="covost", path=path, limit=args.limit)):
            examples.append(Example(load_audio(s.audio), s.src_lang, s.tgt_lang, s.task))
    audio_s = sum(len(e.audio) for e in examples) / SAMPLE_RATE
    dec = tr.decode_config(num_beams=5, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    tr.generate(examples[:2], dec)
    times = {"llast.beam": [], "transformers": []}  # decode.beam_search: llast | transformers
    outs = {}
    for _ in range(args.rounds):
        for name in times:
            which = dataclasses.replace(dec, beam_search="llast" if name == "llast.beam" else "transformers")
            t0 = time.perf_counter()
            outs[name] = tr.generate(examples, which)
            times[name].append(round(time.perf_counter() - t0, 2))
    lengths = [len(tr.tokenizer(t)["input_ids"]) for t in outs["llast.beam"]]
    same = sum(a == b for a, b in zip(outs["llast.beam"], outs["transformers"]))
    dtype = next(tr.model.parameters()).dtype
    print(f"{datetime.datetime.now().astimezone().isoformat(timespec='seconds')}  {args.checkpoint}, "
          f"{len(examples)} clips ({audio_s:.1f} s of audio), beam 5, batch {args.batch_size}, <= {args.max_new_tokens} "
          f"new tokens, {dtype}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"  output tokens per clip: min {min(lengths)}, mean {sum(lengths) / len(lengths):.1f}, max {max(lengths)}")
    for name, ts in times.items():
        print(f"  {name:<13} seconds per pass: {ts}  ({audio_s / min(ts):.2f} audio s/s at best)")
    print(f"  speed-up (best of each): {min(times['transformers']) / min(times['llast.beam']):.2f}x; "
          f"identical outputs: {same} of {len(examples)}")


if __name__ == "__main__":
    sys.exit(main())

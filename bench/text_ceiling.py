"""The text-only ceiling of an LLM on the corpus: zero-shot, then with an L-LoRA trained briefly on the
corpus's text pairs (no audio, so it is cheap). Issue #12, item 1: what the LLM can do with text bounds
what LLaST learns on it.

    python bench/text_ceiling.py --llm qwen2.5-coder-0.5b-instruct --corpus data/synth4 --steps 120 \
        --out bench/results/text_ceiling_qwen.json

The prompt is the one `llast evaluate --baseline text` sends (llast.llm_text.TextTranslator: LLaST's
instruction, the source sentence on the next line, the model's chat template, the "Reply with the
translation only." system message); the loss is on the translation and its end-of-turn token only.
L-LoRA as LLaST-mini's (r 16, alpha 32, every linear layer, no dropout), AdamW, constant lr after a
5-step warmup, batches of --batch pairs drawn from every direction's train split (llast.text_adapter.train_text_lora,
as `llast text-lora` trains, here in fp32 and without noise). Decoding: greedy,
64 new tokens, scored by llast.evaluate.score (cased SacreBLEU 13a, chrF).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import time
from pathlib import Path

import torch

from llast.config import DecodeConfig, PromptConfig
from llast.data import read_covost
from llast.evaluate import score
from llast.llm_text import TRANSLATION_ONLY, TextTranslator
from llast.text_adapter import train_text_lora


def pairs(corpus: Path, directions: list[str], split: str, limit: int | None) -> dict[str, list[tuple[str, str]]]:
    """{direction: [(source, target)]} from the corpus's CoVoST TSVs (texts only; clips are not read)."""
    out = {}
    for d in directions:
        rows = read_covost(corpus / f"covost_v2.{d}.{split}.tsv", limit=limit)
        out[d] = [(s.source_text, s.target_text) for s in rows]
    return out


def test_scores(tr: TextTranslator, test: dict, batch: int) -> dict:
    out = {}
    for d, rows in test.items():
        src, tgt = d.split("_")
        t0 = time.time()
        hyps = tr.translate([s for s, _ in rows], src, tgt, DecodeConfig(num_beams=1, max_new_tokens=64, batch_size=batch))
        r = score(hyps, [t for _, t in rows], tgt)
        out[d] = {"bleu": r["bleu"], "chrf": r["chrf"], "n": r["n"], "seconds": round(time.time() - t0, 1),
                  "examples": list(zip(hyps[:3], [t for _, t in rows[:3]]))}
        print(f"  {d}: BLEU {r['bleu']:.2f} chrF {r['chrf']:.2f} ({r['n']} sentences)", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llm", required=True, help="bundled name, hub id or folder")
    ap.add_argument("--corpus", default="data/synth4")
    ap.add_argument("--directions", default="de_en,fr_en,es_en,it_en")
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--test-limit", type=int, default=None, help="test sentences per direction (default: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True, help="JSON report")
    args = ap.parse_args()
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(args.seed)
    directions = args.directions.split(",")
    corpus = Path(args.corpus)
    test = pairs(corpus, directions, "test", args.test_limit)
    train = [(s, t, *d.split("_")) for d, rows in pairs(corpus, directions, "train", None).items() for s, t in rows]
    tr = TextTranslator.load(args.llm, PromptConfig(system=TRANSLATION_ONLY), dtype="float32")
    report = {"llm": args.llm, "corpus": str(corpus), "train_pairs": len(train), "steps": args.steps,
              "batch": args.batch, "lr": args.lr, "machine": f"{platform.processor() or platform.machine()}, "
              f"{torch.get_num_threads()} threads", "date": datetime.date.today().isoformat()}
    print(f"{args.llm}: zero-shot", flush=True)
    report["zero_shot"] = test_scores(tr, test, args.batch)

    model = get_peft_model(tr.model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear",
                                                task_type="CAUSAL_LM"))
    tr.model = model
    t0 = time.time()
    losses = train_text_lora(tr, train, args.steps, args.batch, args.lr, seed=args.seed, bf16=False, progress=True)
    report["train_seconds"] = round(time.time() - t0, 1)
    report["losses"] = losses
    print(f"{args.llm}: after {args.steps} L-LoRA steps on the corpus's text pairs", flush=True)
    report["l_lora"] = test_scores(tr, test, args.batch)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

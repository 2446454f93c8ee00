"""Keep Whisper's ear? A model's first-pass WER with its encoder S-LoRA on vs off, on the same clips.

    OMP_NUM_THREADS=1 python bench/slora_probe.py --model llast-mini --data data/real/real.jsonl \
        data/real/words.jsonl --out runs/realeval/slora_probe.json

Inference only. The model is loaded through the public API (llast.decode.load_model with merge_lora=False,
so the encoder stays a peft model) and every clip is transcribed twice in its own language (the
transcribe task: the first pass of two-pass decoding): once as trained (S-LoRA on), once inside peft's
`disable_adapter()` on the encoder (the frozen Whisper encoder's own states; the adaptor and the LLM's
L-LoRA are unchanged). If "off" hears better on real voices, the S-LoRA learnt espeak-ng, not speech.
Scores: WER and CER after lowercasing and removing punctuation (llast.evaluate.word_error_rates), per
manifest and language. Writes a JSON result and prints a table.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from llast.audio import load_audio
from llast.data import read_manifest
from llast.decode import load_model
from llast.errors import ConfigError
from llast.evaluate import word_error_rates
from llast.processor import Example


def transcribe(tr, samples, decode) -> list[str]:
    examples = [Example(load_audio(s.audio, offset=s.offset, duration=s.duration), s.src_lang, s.src_lang, "transcribe")
                for s in samples]
    return tr.generate(examples, decode)


def read_hyps(out_dir: str) -> dict[str, str]:
    """Sample id -> hypothesis from an `llast evaluate --task transcribe` OUT (its *.ids.txt / *.hyp.txt)."""
    hyps = {}
    for ids_file in Path(out_dir).glob("*.transcribe.ids.txt"):
        ids = ids_file.read_text(encoding="utf-8").splitlines()
        texts = ids_file.with_name(ids_file.name.replace(".ids.txt", ".hyp.txt")).read_text(encoding="utf-8").splitlines()
        hyps.update((i.removesuffix("-asr"), h) for i, h in zip(ids, texts))
    return hyps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="llast-mini")
    ap.add_argument("--data", nargs="+", required=True, help="JSONL manifests (llast data real)")
    ap.add_argument("--out", required=True, help="JSON result")
    ap.add_argument("--num-beams", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--on", default=None, metavar="DIR",
                    help="take the S-LoRA-on transcripts from this `llast evaluate --model M --task transcribe` OUT "
                         "(same model, beams and data) instead of decoding them again")
    args = ap.parse_args()
    given = read_hyps(args.on) if args.on else {}

    tr = load_model(args.model, merge_lora=False)
    encoder = tr.model.encoder
    if not hasattr(encoder, "disable_adapter"):
        raise ConfigError(f"{args.model}: its encoder has no S-LoRA (model.encoder.lora is off); nothing to switch off")
    decode = tr.decode_config(num_beams=args.num_beams, max_new_tokens=args.max_new_tokens,
                              batch_size=args.batch_size, two_pass=False)
    result = {"model": args.model, "slora_on_from": args.on, "clips": ", ".join(Path(m).name for m in args.data), "num_beams": args.num_beams, "max_new_tokens": args.max_new_tokens,
              "machine": f"{platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}",
              "normalisation": "lowercase, punctuation removed", "sets": {}}
    t0 = time.time()
    for manifest in args.data:
        samples = read_manifest(manifest)
        for lang in sorted({s.src_lang for s in samples}):
            part = [s for s in samples if s.src_lang == lang and s.source_text.strip()]
            refs = [s.source_text for s in part]
            on = [given.get(s.id) for s in part]
            if None in on:
                if args.on:
                    raise ConfigError(f"--on {args.on}: no transcript for {part[on.index(None)].id}")
                on = transcribe(tr, part, decode)
            with encoder.disable_adapter():
                off = transcribe(tr, part, decode)
            name = f"{Path(manifest).stem}.{lang}"
            result["sets"][name] = {
                "n": len(part), "slora_on": word_error_rates(on, refs), "slora_off": word_error_rates(off, refs),
                "examples": [{"id": s.id, "ref": r, "on": a, "off": b} for s, r, a, b in zip(part, refs, on, off)],
            }
            r = result["sets"][name]
            print(f"{name:<10} n={len(part):>3}  S-LoRA on WER {r['slora_on']['wer']:.3f} CER {r['slora_on']['cer']:.3f}"
                  f"   off WER {r['slora_off']['wer']:.3f} CER {r['slora_off']['cer']:.3f}", flush=True)
    result["seconds"] = round(time.time() - t0, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, ensure_ascii=False))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

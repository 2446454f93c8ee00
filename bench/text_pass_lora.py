"""Two-pass decoding's text pass with the L-LoRA on: does the LLaST-tuned LLM translate text as well as the
LLM alone? (decode.two_pass switches the L-LoRA off; docs/quality.md, session 22, item 3.)

    python bench/text_pass_lora.py --model llast-mini --transcripts runs/eval-chars330/transcribe \
        --data data/synth4/covost_v2.{de,fr,es,it}_en.test.tsv --out bench/results/text_pass_lora.json

`--transcripts`: a `llast evaluate --task transcribe` output folder of the same model on the same data. The
text pass is asked as llast.decode's two-pass asks it (the checkpoint's instruction, TRANSLATION_ONLY as
the system message), greedy; scores with llast.evaluate.score. The L-LoRA-off side of the comparison is
`llast evaluate --baseline cascade --transcripts DIR --llm <the checkpoint's LLM>`.
"""

import argparse
import json

from llast.config import DecodeConfig
from llast.decode import load_model
from llast.evaluate import group_sets, read_transcripts, score


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--transcripts", required=True)
    ap.add_argument("--data", nargs="+", required=True)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    tr = load_model(args.model, two_pass=False)  # L-LoRA merged into the LLM: the text pass runs with it
    text_llm = tr.text_translator()  # what decode.two_pass uses, with the L-LoRA on
    sets = group_sets(args.data, "translate", None)
    inputs, _, _ = read_transcripts(args.transcripts, sets)
    decode = DecodeConfig(num_beams=1, max_new_tokens=args.max_new_tokens, batch_size=16)
    results = {}
    for (src, tgt, _), samples in sets.items():
        hyps = text_llm.translate([inputs.get(s.id, "") for s in samples], src, tgt, decode)
        r = score(hyps, [s.target_text for s in samples], tgt)
        results[f"{src}-{tgt}"] = {k: r[k] for k in ("n", "bleu", "chrf", "distinct") if k in r}
        print(f"{src}-{tgt}: BLEU {r['bleu']:.2f}  chrF {r['chrf']:.2f}", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"model": args.model, "transcripts": args.transcripts, "l_lora": "on", "sets": results}, f, indent=1)


if __name__ == "__main__":
    main()

"""Two-pass decoding's text pass: how many beams? (docs/quality.md, session 25). Translates llast-mini's own
dev transcripts (`llast evaluate --task transcribe` output, SRC-SRC.transcribe.hyp.txt in ASR_DIR; the English references
as SRC-en.translate.ref.txt beside them, copied from a translate run on the same TSVs) with the
checkpoint's text adapter at each beam count, and scores them against the dev references (SacreBLEU, as
`llast evaluate`). The transcripts are fixed, so only the text pass differs between arms.

    llast evaluate --model runs/more-text360 --task transcribe --num-beams 4 --max-new-tokens 64 --batch-size 8 \
        --data data/synth4/covost_v2.{de,fr,es,it}_en.dev.tsv --out runs/eval25-dev-more-asr
    for l in de fr es it; do cp runs/eval-dev-text360/$l-en.translate.ref.txt runs/eval25-dev-more-asr/; done
    python bench/text_pass_beams.py runs/more-text360 runs/eval25-dev-more-asr 1,4,8 bench/results/text_pass_beams.json
"""
import json, sys, time
from pathlib import Path

from llast.decode import _text_pass_adapter, load_model
from llast.evaluate import score

model, asr_dir, beams, out = sys.argv[1], Path(sys.argv[2]), [int(b) for b in sys.argv[3].split(",")], Path(sys.argv[4])
tr = load_model(model, two_pass=True)
text = tr.text_translator()
res = {"model": model, "transcripts": str(asr_dir), "bleu": {}, "seconds": {}}
with _text_pass_adapter(tr.model.llm):
    for b in beams:
        d = tr.decode_config(num_beams=b, max_new_tokens=64, batch_size=8)
        t0 = time.perf_counter()
        for src in ("de", "fr", "es", "it"):
            heard = (asr_dir / f"{src}-{src}.transcribe.hyp.txt").read_text().splitlines()
            refs = asr_dir / f"{src}-en.translate.ref.txt"
            hyps = text.translate(heard, src, "en", d)
            res["bleu"].setdefault(f"b{b}", {})[src] = round(score(hyps, refs.read_text().splitlines(), "en")["bleu"], 2)
        res["seconds"][f"b{b}"] = round(time.perf_counter() - t0, 1)
        m = res["bleu"][f"b{b}"]
        m["mean"] = round(sum(m.values()) / 4, 2)
        print(f"beam {b}: {m}  ({res['seconds'][f'b{b}']} s)", flush=True)
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text(json.dumps(res, indent=1) + "\n")

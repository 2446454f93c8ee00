"""Two-pass decoding's text pass, beam search through llast.beam (the default, llast.generate.generate_text_ids)
against transformers' generate, side by side in one run on the same sentences (docs/quality.md, session 24).

    python bench/text_pass_speed.py runs/eval-test-text360-asr/de-de.transcribe.hyp.txt 32 bench/results/text_pass_speed.json
    python bench/text_pass_speed.py runs/eval-test-text360-asr/de-de.transcribe.hyp.txt 16 bench/results/text_pass_speed_greedy.json 1

It translates the first N lines of a transcribe hypotheses file (`llast evaluate --task transcribe` of
llast-mini on the test split; named SRC-SRC.transcribe.hyp.txt) with the shipped
text adapter, beam 4 (or the optional 4th argument: 1 = greedy, session 25), 64 new tokens, batches of 8, in the checkpoint's dtype; twice each, alternating, the
best time kept. Prints and writes the times, their ratio and whether the outputs are the same.
"""
import json, sys, time
from pathlib import Path

from llast.decode import _text_pass_adapter, load_model

hyp_file, n, out = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
beams = int(sys.argv[4]) if len(sys.argv) > 4 else 4
src = hyp_file.name.split("-")[0]
texts = hyp_file.read_text().splitlines()[:n]
tr = load_model("llast-mini", two_pass=True)
text = tr.text_translator()
times, outs = {"llast": [], "transformers": []}, {}
with _text_pass_adapter(tr.model.llm):
    for _ in range(2):
        for impl in times:
            d = tr.decode_config(num_beams=beams, max_new_tokens=64, batch_size=8, beam_search=impl)
            t0 = time.perf_counter()
            outs[impl] = text.translate(texts, src, "en", d)
            times[impl].append(time.perf_counter() - t0)
res = {"sentences": len(texts), "src": src, "num_beams": beams, "seconds": {k: round(min(v), 2) for k, v in times.items()},
       "transformers_over_llast": round(min(times["transformers"]) / min(times["llast"]), 2),
       "same_outputs": outs["llast"] == outs["transformers"],
       "differ": sum(a != b for a, b in zip(outs["llast"], outs["transformers"]))}
print(json.dumps(res))
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text(json.dumps(res, indent=1) + "\n")

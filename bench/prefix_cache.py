"""Prefix cache on and off (llast.llamacpp.LlamaCppLLM.reuse_prefix): seconds per segment of the 10-minute live
stream, decoded one by one (as live decoding does) and in one batch, greedy and beam 4, and how many texts
stay the same. The segments: `llast.segment.segment("/tmp/live10.wav")` written as JSON lines to
/tmp/live10_segs.jsonl (see docs/live.md). Run: python bench/prefix_cache.py
"""
import time, json, numpy as np, soundfile as sf
import llast
from llast.processor import Example
t = llast.load_model("llast-mini", dtype="auto")
wav, sr = sf.read("/tmp/live10.wav", dtype="float32")
segs = [json.loads(l) for l in open("/tmp/live10_segs.jsonl")][:24]
exs = [Example(wav[int(s["start"]*sr):int(s["end"]*sr)], "fr", "en", "translate") for s in segs]
out = {}
for beams in (1, 4):
    d = t.decode_config(num_beams=beams)
    t.generate(exs[:2], d)  # warm
    for reuse in (False, True):
        t.model.llm.reuse_prefix = reuse
        t.model.llm.prefixes.clear()
        t0 = time.time(); one = [t.generate([e], d)[0] for e in exs]; t1 = time.time()
        batch = t.generate(exs, d); t2 = time.time()
        out[(beams, reuse)] = (one, batch)
        print(f"beams {beams} prefix cache {reuse}: one by one {(t1-t0)/len(exs):.3f} s/segment, batch of {len(exs)} {t2-t1:.2f} s", flush=True)
    a, b = out[(beams, False)], out[(beams, True)]
    print(f"beams {beams}: same texts one by one {sum(x == y for x, y in zip(a[0], b[0]))}/{len(exs)}, batched {sum(x == y for x, y in zip(a[1], b[1]))}/{len(exs)}", flush=True)
    for x, y in zip(a[0], b[0]):
        if x != y: print("   ", x, "|", y)

"""Session 23's experiment behind `llast text-lora` (docs/quality.md): does a text LoRA on Qwen2.5-Coder-0.5B
(clean or ASR-noised sources, llast.text_adapter.asr_noise) improve two-pass decoding's text pass on llast-mini's
own dev transcripts? Scores BLEU of the dev references for the transcripts ("heard") and the gold sources.

    llast evaluate --model llast-mini --task transcribe --num-beams 4 --max-new-tokens 64 --batch-size 8 \
        --data data/synth4/covost_v2.{de,fr,es,it}_en.dev.tsv --out runs/s23/dev-asr-b4
    python bench/text_pass_dev.py 0 0 bench/results/text_pass/tl_zero.json             # zero-shot
    python bench/text_pass_dev.py 0 120 bench/results/text_pass/tl_clean.json 60,120   # clean pairs
    python bench/text_pass_dev.py 0.5 120 bench/results/text_pass/tl_noise.json 60,120 # noised sources

Arguments: NOISE (highest asr_noise rate), STEPS, OUT json, evaluation steps. Greedy, 64 tokens, bf16 autocast
over fp32 weights, batches of 8 pairs, lr 5e-4.
"""
import json, random, sys, time
from pathlib import Path
import torch
from peft import LoraConfig, get_peft_model
from llast.config import DecodeConfig, PromptConfig
from llast.data import read_covost
from llast.evaluate import score
from llast.llm_text import TRANSLATION_ONLY, TextTranslator
from llast.text_adapter import asr_noise, near_homophones, text_batch

noise, steps, out = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
evals = [int(x) for x in sys.argv[4].split(",")] if len(sys.argv) > 4 else [steps]
dirs = ["de_en", "fr_en", "es_en", "it_en"]
C = Path("data/synth4")
train = {d: [(s.source_text, s.target_text) for s in read_covost(C / f"covost_v2.{d}.train.tsv")] for d in dirs}
vocab = {d: near_homophones(w for s, _ in rows for w in s.split()) for d, rows in train.items()}
dev = {}
for d in dirs:
    a, b = d.split("_")
    rows = read_covost(C / f"covost_v2.{d}.dev.tsv")
    heard = Path(f"runs/s23/dev-asr-b4/{a}-{a}.transcribe.hyp.txt").read_text().splitlines()
    dev[d] = ([r.source_text for r in rows], heard, [r.target_text for r in rows])
tr = TextTranslator.load("qwen2.5-coder-0.5b-instruct", PromptConfig(system=TRANSLATION_ONLY), dtype="float32")
dc = DecodeConfig(num_beams=1, max_new_tokens=64, batch_size=16)
report = {"noise": noise, "steps": steps, "evals": {}}

def ev(tag):
    r = {}
    for d, (gold, heard, refs) in dev.items():
        a, b = d.split("_")
        with torch.autocast("cpu", dtype=torch.bfloat16):
            hh = tr.translate(heard, a, b, dc)
            hg = tr.translate(gold, a, b, dc)
        r[d] = {"heard": round(score(hh, refs, b)["bleu"], 2), "gold": round(score(hg, refs, b)["bleu"], 2)}
    print(tag, r, flush=True)
    report["evals"][tag] = r
    Path(out).write_text(json.dumps(report, indent=1))

if steps == 0:
    ev("zero"); sys.exit()
rng = random.Random(0); torch.manual_seed(0)
tr.model = get_peft_model(tr.model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"))
pool = [(s, t, *d.split("_")) for d, rows in train.items() for s, t in rows]
opt = torch.optim.AdamW([p for p in tr.model.parameters() if p.requires_grad], lr=5e-4, weight_decay=0.0)
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 5))
t0 = time.time()
for step in range(1, steps + 1):
    rows = [(asr_noise(s, rng.uniform(0, noise), rng, vocab[f"{a}_{b}"]) if noise else s, t, a, b) for s, t, a, b in rng.sample(pool, 8)]
    tr.model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = tr.model(**text_batch(tr, rows)).loss
    loss.backward(); opt.step(); sched.step(); opt.zero_grad(set_to_none=True)
    if step % 10 == 0:
        print(f"step {step} loss {loss.item():.3f} {time.time()-t0:.0f}s", flush=True)
    if step in evals:
        tr.model.eval(); ev(f"step{step}")
        tr.model.save_pretrained(f"{out}.adapter{step}")

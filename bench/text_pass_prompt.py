"""Session 23: the zero-shot text pass on llast-mini's beam-4 dev transcripts (made as bench/text_pass_dev.py
says): two system messages, greedy and beam 4. `python bench/text_pass_prompt.py` (prints BLEU per direction
and the mean; docs/quality.md has the output)."""
import json, sys
from pathlib import Path
import torch
from llast.config import DecodeConfig, PromptConfig
from llast.data import read_covost
from llast.evaluate import score
from llast.llm_text import TextTranslator
dirs = ["de_en", "fr_en", "es_en", "it_en"]
C = Path("data/synth4")
dev = {}
for d in dirs:
    a, b = d.split("_")
    rows = read_covost(C / f"covost_v2.{d}.dev.tsv")
    dev[d] = (Path(f"runs/s23/dev-asr-b4/{a}-{a}.transcribe.hyp.txt").read_text().splitlines(), [r.target_text for r in rows])
systems = {"only": "Reply with the translation only.",
           "asr": "The text is an automatic speech transcript and may contain recognition errors. Reply with the most likely English translation only.",
}
tr = TextTranslator.load("qwen2.5-coder-0.5b-instruct", PromptConfig(), dtype="float32")
for name, system in systems.items():
    for beams in (1, 4):
        tr.prompt = PromptConfig(system=system)
        r = {}
        for d, (heard, refs) in dev.items():
            a, b = d.split("_")
            with torch.autocast("cpu", dtype=torch.bfloat16):
                h = tr.translate(heard, a, b, DecodeConfig(num_beams=beams, max_new_tokens=64, batch_size=16))
            r[d] = round(score(h, refs, b)["bleu"], 2)
        print(name, beams, r, round(sum(r.values()) / 4, 2), flush=True)

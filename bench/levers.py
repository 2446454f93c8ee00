"""CPU training levers of the llast-mini recipe, as ratios measured side by side in one process.

    python bench/levers.py --config configs/mini-long.yaml --rounds 3 >> bench/results/levers_cpu.md

One fixed batch of real dev clips (16 clips, ASR and translation mixed like training) goes through
forward + backward + AdamW step of the LLaST model for each variant, in alternating rounds (variant A,
B, C, ... then again), so machine drift hits every variant alike; the median seconds per step is kept.
Variants, each one lever away from the one before it (the last is the shipped recipe):

    fp32            fp32 weights, no autocast, encoder on the fly, template's default system message,
                    LoRA dropout 0.05 (the settings before this recipe)
    +bf16 autocast  torch.autocast(bf16) over fp32 weights
    +bf16 weights   frozen base weights stored in bf16 (model.dtype=bfloat16), autocast kept
    +cache          encoder states from the feature cache (data.feature_cache) instead of the encoder
    +no system msg  prompt.system="" (Qwen's default system message is ~20 tokens per clip)
    +no dropout     LoRA dropout 0 (the recipe)

Also reported: the loss of each variant on that batch before its first step (bf16 changes numerics,
the levers must not change the maths otherwise).
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import time

import torch

from llast.config import load_config
from llast.data import build_samples
from llast.features import build_cache, cache_key, entry_path, load_entry, pad_states
from llast.lora import apply_lora, set_trainable, trainable_parameters
from llast.model import build_model
from llast.processor import Example, build_processor

VARIANTS = [
    ("fp32", dict(dtype="float32", autocast=False, cache=False, system=None, dropout=0.05)),
    ("+bf16 autocast", dict(dtype="float32", autocast=True, cache=False, system=None, dropout=0.05)),
    ("+bf16 weights", dict(dtype="bfloat16", autocast=True, cache=False, system=None, dropout=0.05)),
    ("+cache", dict(dtype="bfloat16", autocast=True, cache=True, system=None, dropout=0.05)),
    ("+no system msg", dict(dtype="bfloat16", autocast=True, cache=True, system="", dropout=0.05)),
    ("+no dropout", dict(dtype="bfloat16", autocast=True, cache=True, system="", dropout=0.0)),
]


def build(config: str, v: dict, clips, cache_dir: str):
    cfg = load_config(config, [f"model.dtype={v['dtype']}", f"model.llm.lora.dropout={v['dropout']}"])
    cfg.model.prompt.system = v["system"]
    torch.manual_seed(0)
    model = build_model(cfg.model)
    apply_lora(model, cfg.model)
    set_trainable(model)
    model.train()
    proc = build_processor(cfg.model, encoder_config=model.encoder_config)
    from llast.audio import load_audio

    if v["cache"]:
        build_cache(model, proc, clips, cache_dir, 30.0, progress=False)
        entries = [load_entry(entry_path(cache_dir, cache_key(s, cfg.model))) for s in clips]
        exs = [Example(None, s.src_lang, s.tgt_lang, s.task, s.target_text, num_samples=n) for s, (_, n) in zip(clips, entries)]
        batch = proc(exs)
        batch["encoder_states"] = pad_states([st for st, _ in entries])
    else:
        exs = [Example(load_audio(s.audio), s.src_lang, s.tgt_lang, s.task, s.target_text) for s in clips]
        batch = proc(exs)
    opt = torch.optim.AdamW(trainable_parameters(model), lr=1e-5)
    return model, batch, opt


def step(model, batch, opt, autocast: bool) -> tuple[float, float]:
    t = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = model(**batch).loss
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t, float(loss)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="configs/mini-long.yaml")
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cache-dir", default="data/cache/whisper-base")
    args = ap.parse_args()
    cfg = load_config(args.config)
    dev = build_samples(cfg.data.dev, asr_augment=True)
    clips = (dev[::2] + dev[1::2])[: args.clips]
    built = {name: build(args.config, v, clips, args.cache_dir) for name, v in VARIANTS}
    times: dict[str, list[float]] = {name: [] for name, _ in VARIANTS}
    first_loss = {}
    for name, v in VARIANTS:  # untimed warm-up step, and the loss before any update
        first_loss[name] = step(*built[name], v["autocast"])[1]
    for _ in range(args.rounds):
        for name, v in VARIANTS:
            times[name].append(step(*built[name], v["autocast"])[0])
    tokens = int(built["fp32"][1]["attention_mask"].sum())
    print(f"\n## {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}  {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.config}, {len(clips)} clips "
          f"({tokens} prompt+target tokens in the fp32 batch), median of {args.rounds} rounds\n")
    print("| variant | s/step | speed-up vs fp32 | vs previous | loss before step 1 |")
    print("|---|---|---|---|---|")
    prev = None
    for name, _ in VARIANTS:
        med = statistics.median(times[name])
        base = statistics.median(times["fp32"])
        print(f"| {name} | {med:.2f} | {base / med:.2f}x | {(prev / med if prev else 1):.2f}x | {first_loss[name]:.4f} |")
        prev = med


if __name__ == "__main__":
    main()

"""Training the text adapter of two-pass decoding (`llast text-lora`): a second LoRA on the LLM, beside its
L-LoRA, that teaches it to translate transcripts as text (llast.checkpoint.TEXT_ADAPTER; decode.two_pass's
text pass uses it). Sentence pairs only, no audio; sources may get speech-recognition-like noise (`asr_noise`)
so the adapter learns to translate imperfect transcripts.
"""

from __future__ import annotations

import random
import sys

import torch
from tqdm import tqdm

from llast.checkpoint import TEXT_ADAPTER
from llast.decode import Translator
from llast.errors import ConfigError
from llast.llm_text import TextTranslator
from llast.lora import peft_config
from llast.model import IGNORE_INDEX


# Letters an ASR system confuses (voicing pairs, vowels): asr_noise's substitutions.
_CONFUSABLE = {**{a: b for a, b in ("bp", "pb", "dt", "td", "gk", "kg", "fv", "vf", "sz", "zs", "mn", "nm", "lr", "rl",
                                     "cq", "qc", "wv", "jy", "yj", "hx", "xh")},
               **{v: "aeiouaeiou"[i + 1 : i + 5] for i, v in enumerate("aeiou")}}


def near_homophones(words) -> dict[str, list[str]]:
    """`words` indexed by their first two letters, lower-cased: asr_noise's near-homophones (built once)."""
    index: dict[str, list[str]] = {}
    for w in sorted(set(words)):
        index.setdefault(w[:2].lower(), []).append(w)
    return index


def asr_noise(text: str, rate: float, rng, near: dict[str, list[str]] | None = None) -> str:
    """`text` with speech-recognition-like errors in about `rate` of its words: a letter swapped for a
    confusable one, dropped or doubled; two words run together; a word replaced by another word that
    starts with the same two letters (a near-homophone, from `near` = near_homophones(vocabulary)); a word
    dropped. rate=0 returns `text` unchanged. Used to teach a text pass to translate imperfect transcripts."""
    words = text.split()
    out: list[str] = []
    i = 0
    while i < len(words):
        w = words[i]
        if rng.random() >= rate:
            out.append(w)
            i += 1
            continue
        kind = rng.random()
        if kind < 0.4 and len(w) > 1:
            k = rng.randrange(len(w))
            c = w[k].lower()
            edit = rng.random()
            if edit < 0.6 and c in _CONFUSABLE:
                w = w[:k] + rng.choice(_CONFUSABLE[c]) + w[k + 1 :]
            elif edit < 0.8:
                w = w[:k] + w[k + 1 :]
            else:
                w = w[:k] + w[k] + w[k:]
            out.append(w)
        elif kind < 0.55 and i + 1 < len(words):
            out.append(w + words[i + 1].lower())
            i += 1
        elif kind < 0.85 and near:
            others = [v for v in near.get(w[:2].lower(), ()) if v != w]
            out.append(rng.choice(others) if others else w)
        elif kind >= 0.85:
            pass  # dropped
        else:
            out.append(w)
        i += 1
    return " ".join(out)


def text_batch(tr: TextTranslator, rows: list[tuple[str, str, str, str]]) -> dict[str, torch.Tensor]:
    """Training tensors for (source, target, src, tgt) rows: right-padded (B, L) input ids, attention mask
    and labels (IGNORE_INDEX on the prompt and padding; the loss is on the target and its end token)."""
    eos = tr.tokenizer.eos_token or ""
    ids, labels = [], []
    for src_text, tgt_text, src, tgt in rows:
        p = tr.prompt_ids(src_text, src, tgt)
        t = tr.tokenizer(tgt_text + eos, add_special_tokens=False)["input_ids"]
        ids.append(p + t)
        labels.append([IGNORE_INDEX] * len(p) + t)
    width = max(map(len, ids))
    pad = tr.tokenizer.pad_token_id
    return {"input_ids": torch.tensor([r + [pad] * (width - len(r)) for r in ids]),
            "attention_mask": torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in ids]),
            "labels": torch.tensor([r + [IGNORE_INDEX] * (width - len(r)) for r in labels])}


def train_text_lora(tr: TextTranslator, pairs: list[tuple[str, str, str, str]], steps: int, batch: int = 8,
                    lr: float = 5e-4, noise: float = 0.0, seed: int = 0, bf16: bool = True,
                    progress: bool = False) -> list[float]:
    """Train the LoRA adapter active on `tr.model` (a peft model) to translate (source, target, src, tgt)
    `pairs`: AdamW, constant `lr` after a 5-step warmup, `batch` pairs drawn at random per step. With `noise` > 0 each source gets asr_noise at a rate drawn
    uniformly from [0, noise] (its near-homophones from the same language's sources), so the adapter
    learns to translate imperfect transcripts. `bf16`: bf16 autocast (LoRA weights stay fp32), as
    train.mixed_precision=bf16. Returns the loss of every step."""
    if len(pairs) < batch:
        raise ConfigError(f"text LoRA: {len(pairs)} sentence pairs, fewer than one batch of {batch}")
    rng = random.Random(seed)
    torch.manual_seed(seed)
    words: dict[str, list[str]] = {}
    for s, _, src, _ in pairs:
        words.setdefault(src, []).extend(s.split())
    near = {src: near_homophones(w) for src, w in words.items()}
    params = [p for p in tr.model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 5))
    losses = []
    tr.model.train()
    bar = tqdm(range(steps), desc="text LoRA", unit="step", disable=not progress, file=sys.stderr)
    for _ in bar:
        rows = [(asr_noise(s, rng.uniform(0, noise), rng, near[src]) if noise > 0 else s, t, src, tgt)
                for s, t, src, tgt in rng.sample(pairs, batch)]
        batch_t = {k: v.to(tr.device) for k, v in text_batch(tr, rows).items()}
        with torch.autocast(tr.device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = tr.model(**batch_t).loss
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(round(loss.item(), 4))
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    tr.model.eval()
    return losses


def train_text_adapter(model, cfg, pairs: list[tuple[str, str, str, str]], steps: int, batch: int = 8,
                       lr: float = 5e-4, noise: float = 0.0, seed: int = 0, progress: bool = False) -> list[float]:
    """Give LLaST `model` (built from Config `cfg`, its L-LoRA on) a fresh text adapter for two-pass decoding
    (llast.checkpoint.TEXT_ADAPTER, configured as the L-LoRA) and train it on (source, target, src, tgt)
    `pairs` with train_text_lora, in bf16 autocast when cfg.train.mixed_precision is bf16. The L-LoRA is the
    active adapter again afterwards. Returns the loss of every step (`llast text-lora`; save the result
    with llast.checkpoint.save_text_lora)."""
    llm = model.llm
    if not hasattr(llm, "peft_config"):
        raise ConfigError("text adapter: the LLM has no LoRA (model.llm.lora.enabled is false); it sits beside the L-LoRA")
    active = llm.active_adapter
    if TEXT_ADAPTER in llm.peft_config:
        llm.delete_adapter(TEXT_ADAPTER)  # retrained from scratch
    llm.add_adapter(TEXT_ADAPTER, peft_config(cfg.model.llm.lora, is_llm=True))
    llm.set_adapter(TEXT_ADAPTER)
    for p in llm.parameters():
        if p.requires_grad:
            p.data = p.data.float()  # LoRA weights train in fp32 over the bf16 frozen weights, as `llast train`
    try:
        text = Translator(model, cfg).text_translator()
        return train_text_lora(text, pairs, steps, batch, lr, noise, seed, bf16=cfg.train.mixed_precision == "bf16",
                               progress=progress)
    finally:
        llm.set_adapter(active)

"""Dual LoRA (S-LoRA on the encoder, L-LoRA on the LLM) and which parameters train.

Which parameters train is decided here and nowhere else: `apply_lora` wraps the parts whose LoRA
is enabled, and `set_trainable` freezes every base weight, trains the adaptor, and trains the
LoRA weights unless `adaptor_only` (LST's first stage).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from llast.config import LoraConfig, ModelConfig
from llast.model import _unwrap, build_named_model


def peft_config(cfg: LoraConfig, is_llm: bool):
    """The peft LoraConfig of an S-LoRA (is_llm=False) or L-LoRA (is_llm=True) configured as `cfg`."""
    import peft  # lazy: peft costs ~4 s to import; only models with a LoRA enabled need it

    target = cfg.target_modules
    if isinstance(target, str) and target != "all-linear":
        target = [target]
    return peft.LoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=target,
        task_type="CAUSAL_LM" if is_llm else None,
        bias="none",
    )


def apply_lora(model: nn.Module, cfg: ModelConfig) -> nn.Module:
    """Wrap model.encoder / model.llm in peft LoRA as `cfg` says, then set what trains.

    Fresh LoRA weights start at zero (B = 0), so the model's outputs are unchanged.
    """
    import peft  # lazy: peft costs ~4 s to import; only models with a LoRA enabled need it

    if cfg.encoder.lora.enabled and not hasattr(model.encoder, "peft_config"):
        model.encoder = peft.get_peft_model(model.encoder, peft_config(cfg.encoder.lora, is_llm=False))
    if cfg.llm.lora.enabled and not hasattr(model.llm, "peft_config"):
        model.llm = peft.get_peft_model(model.llm, peft_config(cfg.llm.lora, is_llm=True))
    set_trainable(model, adaptor_only=False)
    return model


def build_lora_model(cfg: ModelConfig, device=None) -> nn.Module:
    """The model every run, checkpoint and baseline starts from: encoder and LLM loaded by name
    (llast.model.build_named_model), a fresh adaptor, then LoRA (`apply_lora`). device "meta" (with
    model.random_init): the whole model without storage."""
    model = build_named_model(cfg, device=device)
    with torch.device(device) if device is not None else contextlib.nullcontext():
        apply_lora(model, cfg)
    return model


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Every parameter that may train in some stage (adaptor + LoRA), whatever requires_grad says now."""
    return [p for name, p in model.named_parameters() if name.startswith("adaptor.") or "lora_" in name]


def set_trainable(model: nn.Module, adaptor_only: bool = False, llm_lora: bool = True) -> None:
    """Freeze base weights; train the adaptor, and the LoRA weights unless `adaptor_only`: the encoder's
    (S-LoRA) and, with `llm_lora`, the LLM's (L-LoRA; off in the CTC stage, which never runs the LLM)."""
    encoder = _unwrap(model.encoder)
    if hasattr(encoder, "freeze_feature_encoder"):
        # wav2vec 2.0 / HuBERT otherwise mark their convolution output as requiring grad in training mode,
        # and autograd then keeps the whole frozen encoder's activations (~1.8 GB per 30 s clip, large model)
        encoder.freeze_feature_encoder()
    for name, p in model.named_parameters():
        if name.startswith("adaptor."):
            p.requires_grad_(True)
        elif "lora_" in name:
            p.requires_grad_(not adaptor_only and (llm_lora or not name.startswith("llm.")))
        else:
            p.requires_grad_(False)


def param_counts(model: nn.Module) -> dict[str, dict[str, int]]:
    """Parameter counts per part: {'encoder': {'total', 'trainable'}, 'adaptor': ..., 'llm': ...}."""
    counts: dict[str, dict[str, int]] = {}
    seen = set()
    for name, p in model.named_parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        part = name.split(".", 1)[0]
        c = counts.setdefault(part, {"total": 0, "trainable": 0})
        c["total"] += p.numel()
        if p.requires_grad:
            c["trainable"] += p.numel()
    return counts


def format_param_counts(counts: dict[str, dict[str, int]]) -> str:
    lines = [f"{'part':<10}{'trainable':>16}{'total':>16}"]
    total = trainable = 0
    for part, c in counts.items():
        lines.append(f"{part:<10}{c['trainable']:>16,}{c['total']:>16,}")
        total += c["total"]
        trainable += c["trainable"]
    lines.append(f"{'all':<10}{trainable:>16,}{total:>16,}  ({100 * trainable / max(total, 1):.2f}% trainable)")
    return "\n".join(lines)


def part_sizes(model: nn.Module) -> dict[str, int]:
    """Exact parameter counts of the paper's parts: encoder, adaptor, LLM (base weights only), S-LoRA,
    L-LoRA, and their total (tied weights counted once). Works on meta-device models."""
    sizes = {"encoder": 0, "adaptor": 0, "llm": 0, "s_lora": 0, "l_lora": 0}
    seen = set()
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            continue
        seen.add(id(p))
        part = name.split(".", 1)[0]
        if "lora_" in name:
            part = "s_lora" if part == "encoder" else "l_lora"
        sizes[part] += p.numel()
    sizes["total"] = sum(sizes.values())
    return sizes


def format_part_sizes(sizes: dict[str, int]) -> str:
    labels = {"encoder": "encoder (frozen)", "adaptor": "adaptor", "llm": "LLM (frozen)", "s_lora": "S-LoRA",
              "l_lora": "L-LoRA", "total": "total"}
    return "\n".join(f"{labels[k]:<18}{v:>16,}  ({v / 1e9:.3f} B)" for k, v in sizes.items())

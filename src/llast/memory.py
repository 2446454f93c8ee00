"""A per-GPU memory plan for training a config under DDP, FSDP or DeepSpeed ZeRO-2.

Weights, LoRA, gradients and optimizer states are counted from the model itself, built on the meta
device (no memory, any size). Activations are not guessed from a formula: one forward pass of the
real model code runs on the meta device at the batch's shapes (batch 1), and every tensor autograd
saves for the backward pass is added up (``torch.autograd.graph.saved_tensors_hooks``). Attention is
counted as a fused kernel (FlashAttention / memory-efficient SDPA, what GPUs run) would save it: q, k,
v, output and log-sum-exp, no L x L matrix. Activations grow linearly with the batch (padding to the
batch's longest clip aside), which gives the largest batch that fits.

Peak activation memory of a step, per sample:
    without gradient checkpointing: saved + gradient temporaries (half the largest block's saved bytes)
    with (per checkpointed part): saved outside the blocks + each block's input + the largest block
        recomputed in the backward pass + its gradient temporaries (half a block)
The half-block of gradient temporaries is what a measured CPU step shows (tests/test_paper_scale.py
checks the plan against measured peaks, with and without checkpointing, within -20%/+25%).

Static memory per GPU (P_f frozen, P_t trainable parameters, N GPUs; bf16 frozen weights, fp32
trainable parameters as llast trains them; AdamW: two fp32 states):
    ddp    2 P_f + 4 P_t (params) + 4 P_t (grads) + 4 P_t (DDP's gradient buckets) + 8 P_t (AdamW)
           + 2 P_t (bf16 copies autocast makes of the trainable weights)
    zero2  2 P_f + 2 P_t (DeepSpeed keeps bf16 params) + (4 + 4 + 8) P_t / N (fp32 master, grads, AdamW
           partitions) + DeepSpeed's reduce bucket (5e8 elements of bf16, at most 2 P_t)
    fsdp   (2 P_f + 4 P_t) / N + (4 + 8) P_t / N + the unsharded units in flight (2 blocks, bf16)
           + the parameters outside any block (embeddings, LM head, adaptor), unsharded in bf16
A headroom (default 10%) is kept for the CUDA context, the allocator's fragmentation and NCCL buffers.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
import transformers.masking_utils as mu
from torch import nn

from llast.audio import HOP_LENGTH, N_SAMPLES_30S, SAMPLE_RATE
from llast.config import Config, from_dict, to_dict
from llast.errors import ConfigError
from llast.lora import build_lora_model, trainable_parameters
from llast.model import _unwrap, _whisper_encode_variable, audio_embed_length, encoder_frames, encoder_output_length

ENGINES = ("ddp", "fsdp", "zero2")
_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass
class ActivationProbe:
    """Bytes autograd saves for one sample (batch 1) at the probed shapes."""

    saved: int = 0  # everything saved for backward
    blocks: list = field(default_factory=list)  # (part, saved bytes, input bytes) per transformer block
    encoder_run: int = 0  # frames the encoder computes (1500 with a 30 s pad)
    encoder_frames: int = 0  # frames handed on to the adaptor
    llm_tokens: int = 0

    def peak(self, part_checkpointed: dict[str, bool]) -> int:
        """Peak activation bytes of one sample's step; `part_checkpointed`: {'encoder': bool, 'llm': bool}."""
        biggest = max((b[1] for b in self.blocks), default=0)
        total = self.saved
        recompute = False
        for part, saved, inputs in self.blocks:
            if part_checkpointed.get(part) and saved > 0:  # a block with nothing saved is not recomputed
                total += inputs - saved
                recompute = True
        return int(total + biggest * (1.5 if recompute else 0.5))


class _FusedAttention(torch.autograd.Function):
    """Stand-in for a fused attention kernel: the output, and what such a kernel saves for backward."""

    @staticmethod
    def forward(ctx, q, k, v):
        out = q.new_empty(q.shape[:-1] + (v.shape[-1],))
        lse = q.new_empty(q.shape[:-1], dtype=torch.float32)
        ctx.save_for_backward(q, k, v, out, lse)
        return out

    @staticmethod
    def backward(ctx, grad):  # never run: the probe has no backward pass
        raise NotImplementedError


def _fused_sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    return _FusedAttention.apply(query, key, value)


@contextlib.contextmanager
def _meta_friendly():
    """Fused-kernel attention, and no data-dependent packed-sequence check (it reads values)."""
    saved = F.scaled_dot_product_attention, mu.find_packed_sequence_indices
    F.scaled_dot_product_attention = _fused_sdpa
    mu.find_packed_sequence_indices = lambda position_ids: None
    try:
        yield
    finally:
        F.scaled_dot_product_attention, mu.find_packed_sequence_indices = saved


def meta_model(cfg: Config, dtype: torch.dtype | None = None):
    """The config's LLaST with LoRA, on the meta device (random_init from the kept config.json files)."""
    mcfg = from_dict(to_dict(cfg)).model
    mcfg.random_init = True
    # checkpointed blocks hide their saved tensors from the probe: it measures without, then plans both
    mcfg.encoder.gradient_checkpointing = mcfg.llm.gradient_checkpointing = False
    model = build_lora_model(mcfg, device="meta")
    if dtype is not None:
        model.to(dtype)
    return model


def _encoder_input(model, cfg: Config, n_samples: int) -> torch.Tensor:
    ec = model.encoder_config
    if model.family == "whisper":
        frames = 3000 if cfg.model.encoder.input_length != "variable" else 2 * ((n_samples // HOP_LENGTH + 1) // 2)
        return torch.zeros(1, ec.num_mel_bins, frames, device="meta")
    total = N_SAMPLES_30S if cfg.model.encoder.input_length != "variable" else n_samples
    return torch.zeros(1, total, device="meta")


def probe_activations(cfg: Config, audio_seconds: float, text_tokens: int, target_tokens: int,
                      dtype: torch.dtype = torch.bfloat16) -> ActivationProbe:
    """Run one training forward pass of `cfg`'s model on the meta device (batch 1, a clip of
    `audio_seconds`, `text_tokens` prompt+target tokens of which `target_tokens` carry the loss) and
    add up what autograd saves. Parameters (and views of them) are not activations and are skipped."""
    model = meta_model(cfg, dtype).train()
    probe = ActivationProbe()
    seen: dict[int, torch.Tensor] = {}

    def pack(t: torch.Tensor):
        root = t._base if t._base is not None else t
        if not isinstance(root, nn.Parameter) and id(root) not in seen:
            seen[id(root)] = root
            probe.saved += root.numel() * root.element_size()
        return t

    hooks = []
    for name, module in model.named_modules():
        if type(module).__name__ in model._no_split_modules:
            hooks += _block_hooks(module, "encoder" if name.startswith("encoder.") else "llm", probe)
    n_samples = int(audio_seconds * SAMPLE_RATE)
    try:
        with _meta_friendly(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            x = _encoder_input(model, cfg, n_samples).to(dtype)
            if model.family == "whisper" and cfg.model.encoder.input_length == "variable":
                lengths = torch.tensor([n_samples], device="meta")
                states = _whisper_encode_variable(_unwrap(model.encoder), x, lengths // HOP_LENGTH,
                                                  encoder_output_length(lengths, model.encoder_config))
            else:
                states = model.encoder(x).last_hidden_state
            probe.encoder_run = states.shape[1]
            probe.encoder_frames = int(encoder_frames(n_samples, model.encoder_config, cfg.model))
            audio = model.adaptor(states[:, : probe.encoder_frames])
            n_audio = int(audio_embed_length(n_samples, model.encoder_config, cfg.model))
            text = model.llm.get_input_embeddings()(torch.zeros(1, text_tokens, dtype=torch.long, device="meta"))
            embeds = torch.cat([audio[:, :n_audio], text], dim=1)
            probe.llm_tokens = embeds.shape[1]
            hidden = model.llm.get_decoder()(inputs_embeds=embeds, use_cache=False).last_hidden_state
            logits = model.llm.get_output_embeddings()(hidden[0, -target_tokens:]).float()
            torch.nn.functional.cross_entropy(logits, torch.zeros(target_tokens, dtype=torch.long, device="meta"))
    finally:
        for h in hooks:
            h.remove()
    return probe


def _block_hooks(module: nn.Module, part: str, probe: ActivationProbe) -> list:
    start = {}

    def pre(mod, args, kwargs):
        hidden = args[0] if args else kwargs.get("hidden_states")
        start["saved"] = probe.saved
        start["inputs"] = hidden.numel() * hidden.element_size()

    def post(mod, args, kwargs, out):
        probe.blocks.append((part, probe.saved - start["saved"], start["inputs"]))

    return [module.register_forward_pre_hook(pre, with_kwargs=True), module.register_forward_hook(post, with_kwargs=True)]


def parameter_sizes(model: nn.Module) -> dict[str, int]:
    """Frozen and trainable parameter counts, the largest transformer block, and the parameters in no block."""
    trainable_ids = {id(p) for p in trainable_parameters(model)}
    frozen = trainable = 0
    for p in {id(p): p for p in model.parameters()}.values():
        if id(p) in trainable_ids:
            trainable += p.numel()
        else:
            frozen += p.numel()
    in_blocks, biggest = 0, 0
    for module in model.modules():
        if type(module).__name__ in model._no_split_modules:
            n = sum(p.numel() for p in module.parameters())
            in_blocks += n
            biggest = max(biggest, n)
    return {"frozen": frozen, "trainable": trainable, "block": biggest, "outside_blocks": frozen + trainable - in_blocks}


def static_bytes(sizes: dict[str, int], engine: str, gpus: int, weight_bytes: int = 2) -> dict[str, float]:
    """Per-GPU bytes of weights, LoRA/adaptor parameters, gradients and optimizer states (see module doc)."""
    if engine not in ENGINES:
        raise ConfigError(f"--engine: {engine!r} is not one of {', '.join(ENGINES)}")
    pf, pt, n = sizes["frozen"], sizes["trainable"], gpus
    if engine == "ddp":
        return {"weights": weight_bytes * pf, "trainable": 4 * pt + 2 * pt, "gradients": 8 * pt, "optimizer": 8 * pt}
    if engine == "zero2":
        return {"weights": weight_bytes * pf, "trainable": 2 * pt + 4 * pt / n,
                "gradients": 4 * pt / n + 2 * min(pt, 5e8), "optimizer": 8 * pt / n}
    gathered = 2 * (2 * sizes["block"] + sizes["outside_blocks"])
    return {"weights": weight_bytes * pf / n + gathered, "trainable": 4 * pt / n, "gradients": 4 * pt / n,
            "optimizer": 8 * pt / n}


def plan(cfg: Config, engines=ENGINES, gpus: int = 8, gpu_mem_gb: float = 80.0, batch: int | None = None,
         audio_seconds: float = 30.0, text_tokens: int = 96, target_tokens: int = 48, headroom: float = 0.1) -> dict:
    """Per-GPU memory of one training step of `cfg` for each engine; sizes in bytes (see module doc)."""
    if gpus < 1 or gpu_mem_gb <= 0 or not 0 <= headroom < 1:
        raise ConfigError("--gpus must be >= 1, --gpu-mem > 0 and --headroom in [0, 1)")
    if not 0 < target_tokens <= text_tokens:
        raise ConfigError("--target-tokens must be between 1 and --text-tokens")
    if not 0 < audio_seconds <= cfg.model.encoder.max_seconds:
        raise ConfigError(f"--audio-seconds must be in (0, model.encoder.max_seconds={cfg.model.encoder.max_seconds}]")
    batch = batch or cfg.data.batch_size
    fp32 = cfg.train.mixed_precision == "no" and cfg.model.dtype == "float32"
    act_dtype = torch.float32 if fp32 else torch.bfloat16
    probe = probe_activations(cfg, audio_seconds, text_tokens, target_tokens, act_dtype)
    sizes = parameter_sizes(meta_model(cfg))
    usable = gpu_mem_gb * 1e9 * (1 - headroom)
    per_sample = {"none": probe.peak({}), "config": probe.peak({"encoder": cfg.model.encoder.gradient_checkpointing,
                                                                  "llm": cfg.model.llm.gradient_checkpointing}),
                  "all": probe.peak({"encoder": True, "llm": True})}
    out = {"batch": batch, "gpus": gpus, "gpu_mem_gb": gpu_mem_gb, "usable": usable, "sizes": sizes,
           "encoder_run": probe.encoder_run, "encoder_frames": probe.encoder_frames, "llm_tokens": probe.llm_tokens, "per_sample": per_sample,
           "act_dtype": str(act_dtype).replace("torch.", ""), "engines": {}}
    for engine in engines:
        static = static_bytes(sizes, engine, gpus, _DTYPE_BYTES[cfg.model.dtype])
        s = sum(static.values())
        fits = {k: max(0, int((usable - s) // v)) for k, v in per_sample.items()}
        out["engines"][engine] = {"static": static, "static_total": s, "fits": fits,
                                  "total": {k: s + batch * v for k, v in per_sample.items()}}
    return out


def format_plan(p: dict, config_name: str) -> str:
    gb = lambda b: f"{b / 1e9:8.2f}"  # noqa: E731
    sz = p["sizes"]
    lines = [f"{config_name}: {p['gpus']} x {p['gpu_mem_gb']:g} GB, batch {p['batch']} per GPU; per clip the encoder "
             f"runs {p['encoder_run']} frames, hands on {p['encoder_frames']}, the LLM gets {p['llm_tokens']} tokens; "
             f"activations in {p['act_dtype']}",
             f"parameters: {sz['frozen']:,} frozen, {sz['trainable']:,} trainable (LoRA + adaptor)",
             f"activations per sample: {gb(p['per_sample']['none'])} GB without gradient checkpointing, "
             f"{gb(p['per_sample']['all'])} GB with it (encoder and LLM), {gb(p['per_sample']['config'])} GB as configured",
             "", f"{'GB per GPU':<38}" + "".join(f"{e:>10}" for e in p["engines"])]
    rows = [("weights (frozen)", "weights"), ("LoRA + adaptor parameters", "trainable"), ("gradients", "gradients"),
            ("optimizer states (AdamW)", "optimizer")]
    for label, key in rows:
        lines.append(f"{label:<38}" + "".join(f"{gb(e['static'][key]):>10}" for e in p["engines"].values()))
    lines.append(f"{'static total':<38}" + "".join(f"{gb(e['static_total']):>10}" for e in p["engines"].values()))
    lines.append("total with the batch's activations:")
    checkpointing = (("  no gradient checkpointing", "none"), ("  checkpointing as configured", "config"),
                     ("  checkpointing encoder + LLM", "all"))
    for label, key in checkpointing:
        lines.append(f"{label:<38}" + "".join(f"{gb(e['total'][key]):>10}" for e in p["engines"].values()))
    lines.append(f"largest batch per GPU in {p['usable'] / 1e9:.0f} GB usable:")
    for label, key in checkpointing:
        lines.append(f"{label:<38}" + "".join(f"{e['fits'][key]:>10}" for e in p["engines"].values()))
    return "\n".join(lines)

"""Int8 weights for decoding on CPU (`--dtype int8`, and what `--dtype auto` picks on CPUs without AMX).

PyTorch's own dynamic quantization (torch.ao.quantization.quantize_dynamic, fbgemm kernels): the LLM's Linear
layers (LM head included, MLP down_proj excepted: FLOAT_LAYERS) keep int8 weights, one scale per output
channel, and quantize their input per call; the encoder (DEFAULT_PARTS), adaptor, embeddings, norms and
attention stay fp32. On the 2-core AMD EPYC (AVX512-BF16, no AMX) this measured faster than bf16 weights and than torchao's
int8 configs in eager mode (bench/README.md, issue #29), at the LLM's decoding shapes.

Two-pass decoding needs the LLM with two sets of LoRA weights (the L-LoRA for the transcript, the text
adapter for the translation; llast.decode._text_pass_adapter). peft's unmerged LoRA cannot sit on top of a
quantized Linear, so each LoRA-wrapped Linear becomes an `AdapterLinear`: one int8 copy of the layer per
adapter, each with that adapter merged in fp32 before quantizing, chosen per call by a shared
`AdapterSwitch` (the LLM's `llast_adapters` attribute). Two int8 copies of the LLM's layers weigh about
half of one fp32 copy, and no LoRA runs per step.
"""

from __future__ import annotations

import contextlib
import warnings

import torch
from torch import nn
from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

from llast.checkpoint import TEXT_ADAPTER
from llast.errors import ConfigError
from llast.model import _unwrap, inference_dtype

SCHEMES = ("int8",)  # dtype settings that mean quantized weights rather than a torch dtype
BASE = "base"  # AdapterSwitch name of the LLM without any adapter
# Linear layers kept in fp32: the MLP output projection, whose inputs carry Qwen2.5's outlier activations (one
# scale per input tensor then crushes every other value). All-int8 llast-mini transcribed 20 test clips at 50.0 %
# WER (encoder fp32) against fp32's 42.3 %; with down_proj in fp32, 43.6 % (bench/README.md, issue #29).
FLOAT_LAYERS = ("down_proj",)
DEFAULT_PARTS = ("llm",)  # the encoder stays fp32: quantizing it too cost another 4.5 WER points there


class FloatLinear(nn.Linear):
    """A Linear kept in fp32 inside a quantized model (a subclass, so `_quantize` leaves it alone)."""


def wants_int8(setting: str, device) -> bool:
    """Whether dtype `setting` means int8 weights on `device`: "int8" only. "auto" does not choose int8 (yet):
    its BLEU on the test split was not shown within 0.5 of fp32's (bench/README.md, issue #29), so the default
    stays fp32 on CPUs without AMX-BF16 (llast.model.inference_dtype). Checks the setting: an unknown one, or
    int8 off the CPU, is a ConfigError."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if setting == "int8":
        if device.type != "cpu":
            raise ConfigError(f"dtype int8: dynamic int8 weights run on the CPU only, not on {device.type}")
        if not _has_int8_engine():
            raise ConfigError("dtype int8: this PyTorch build has no int8 CPU engine (fbgemm / x86)")
        return True
    inference_dtype(setting, device)  # raises for an unknown setting
    return False


def _has_int8_engine() -> bool:
    return "fbgemm" in torch.backends.quantized.supported_engines or "x86" in torch.backends.quantized.supported_engines


def int8_linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
    """A dynamically quantized Linear (per-output-channel int8 weights) computing x @ weight.T + bias.

    weight : (out, in) float; bias : (out,) or None
    """
    with torch.device("meta"):
        lin = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    lin.weight = nn.Parameter(weight.detach().float(), requires_grad=False)
    if bias is not None:
        lin.bias = nn.Parameter(bias.detach().float(), requires_grad=False)
    return _quantize_dynamic(lin)


def float_linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
    """A FloatLinear (fp32) computing x @ weight.T + bias. weight : (out, in); bias : (out,) or None"""
    with torch.device("meta"):
        lin = FloatLinear(weight.shape[1], weight.shape[0], bias=bias is not None)
    lin.weight = nn.Parameter(weight.detach().float(), requires_grad=False)
    if bias is not None:
        lin.bias = nn.Parameter(bias.detach().float(), requires_grad=False)
    return lin


def _quantize(module: nn.Module) -> nn.Module:
    """`module` with its nn.Linear layers replaced by dynamic int8 ones (FLOAT_LAYERS by fp32 ones), in place,
    one at a time."""
    if type(module) is nn.Linear:
        return _quantize_dynamic(module)
    for name, child in list(module.named_modules()):
        if type(child) is nn.Linear:
            parent, _, leaf = name.rpartition(".")
            make = float_linear if leaf in FLOAT_LAYERS else int8_linear
            setattr(module.get_submodule(parent) if parent else module, leaf, make(child.weight, child.bias))
    return module


def _quantize_dynamic(lin: nn.Linear) -> nn.Module:
    with warnings.catch_warnings():  # torch points eager quantization users to torchao, slower here in eager mode
        warnings.simplefilter("ignore")
        return quantize_dynamic(nn.Sequential(lin), {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)[0]


class AdapterSwitch:
    """Which adapter the LLM's AdapterLinear layers run: one of `names` (peft adapter names, or BASE)."""

    def __init__(self, names: tuple[str, ...], active: str):
        self.names, self.active = names, active

    @contextlib.contextmanager
    def use(self, name: str):
        """Run `name` inside the block; the previous adapter afterwards."""
        if name not in self.names:
            raise ConfigError(f"adapter {name!r}: this int8 LLM has {', '.join(self.names)}")
        before, self.active = self.active, name
        try:
            yield
        finally:
            self.active = before


class AdapterLinear(nn.Module):
    """A LoRA-adapted Linear as int8 copies, one per adapter (merged before quantizing); runs switch.active."""

    def __init__(self, variants: dict[str, nn.Module], switch: AdapterSwitch):
        super().__init__()
        self.variants = nn.ModuleDict(variants)
        self.switch = switch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.variants[self.switch.active](x)


def _switchable_llm(llm) -> nn.Module:
    """The base model of peft-wrapped `llm` with each LoRA Linear replaced by an AdapterLinear holding every
    adapter of `llm` (and BASE, the layer without adapter, when there is no text adapter: the two-pass text
    pass then runs the LLM without its L-LoRA), every other Linear quantized; its `llast_adapters` switch
    starts at the active adapter."""
    from peft.tuners.lora import Linear as LoraLinear  # lazy: peft costs ~4 s to import; only LoRA models need it


    names = tuple(llm.peft_config) + (() if TEXT_ADAPTER in llm.peft_config else (BASE,))
    active = llm.active_adapter if isinstance(llm.active_adapter, str) else llm.active_adapter[0]
    switch = AdapterSwitch(names, active)
    base = llm.get_base_model()
    for name, module in list(base.named_modules()):
        if not isinstance(module, LoraLinear):
            continue
        layer = module.get_base_layer()
        weight = layer.weight.detach().float()
        variants = {}
        make = float_linear if name.rpartition(".")[2] in FLOAT_LAYERS else int8_linear
        for adapter in names:
            if adapter == BASE or adapter not in module.lora_A:
                variants[adapter] = make(weight, layer.bias)
            else:
                variants[adapter] = make(weight + module.get_delta_weight(adapter).float(), layer.bias)
        parent, _, child = name.rpartition(".")
        setattr(base.get_submodule(parent) if parent else base, child, AdapterLinear(variants, switch))
    _quantize(base)  # the Linear layers without LoRA: the LM head (peft's all-linear leaves it out)
    base.__dict__.pop("peft_config", None)  # peft's note on the base model: no peft layer is left in it
    base.llast_adapters = switch
    return base


def quantize_int8(model, parts: tuple[str, ...] = DEFAULT_PARTS) -> None:
    """LLaST `model` (on the CPU, S-LoRA merged; any float dtype: each layer is merged and quantized from fp32)
    with int8 Linear weights in its encoder and LLM, in place; its other weights keep their dtype. A peft-wrapped LLM (two-pass decoding keeps its LoRA unmerged) becomes its base model with one
    int8 copy per adapter (`_switchable_llm`); a merged one is quantized as it is."""
    if "encoder" in parts:
        if hasattr(model.encoder, "peft_config"):
            raise ConfigError("dtype int8: merge the encoder's S-LoRA first (llast.checkpoint.merge_lora_weights)")
        _quantize(_unwrap(model.encoder))
    if "llm" in parts:
        model.llm = _switchable_llm(model.llm) if hasattr(model.llm, "peft_config") else _quantize(model.llm)


def describe(model) -> str:
    """'weights KIND, N threads': what `llast translate --verbose` says of a loaded model's speed settings."""
    return f"weights {weights_kind(model)}, {torch.get_num_threads()} threads"


def weights_kind(model) -> str:
    """'int8' for a model quantized here, 'gguf' for one whose LLM llama.cpp runs (llast.llamacpp), else the
    dtype of its first parameter (run metadata)."""
    if type(getattr(model, "llm", None)).__name__ == "LlamaCppLLM":
        return f"gguf ({model.llm.gguf_path.name} in llama.cpp; encoder and adaptor {next(model.parameters()).dtype})"
    if any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in model.modules()):
        return "int8"
    return str(next(model.parameters()).dtype)

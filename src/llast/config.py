"""Configuration schema.

The dataclasses here are the schema; YAML files in ``configs/`` are instances. Unknown keys are
errors that name the dotted key, and ``key=value`` overrides from the command line use the same
dotted names (``train.lr=1e-4``, ``model.llm.lora.r=64``). The resolved config is saved inside
every checkpoint, so loading a model needs no YAML.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from llast.errors import ConfigError


# ----------------------------------------------------------------------------- model


@dataclass
class LoraConfig:
    enabled: bool = True
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    # Module names (suffixes) to adapt, or the single string "all-linear": every nn.Linear except lm_head.
    target_modules: Any = "all-linear"


@dataclass
class EncoderConfig:
    # Bundled name (`llast models list`), hub id (openai/whisper-large-v2) or local directory.
    # Whisper, wav2vec 2.0 and HuBERT checkpoints are recognised from their config's model_type.
    name: str = "whisper-base"
    # "pad30": pad every clip to 30 s (3000 mel frames -> 1500 encoder frames), as LLaST's code does.
    # "pad30_full": pad to 30 s and hand the LLM all 1500 encoder frames of the pad, whatever the clip's
    #   length (what models trained with the released code's 30 s pad expect; see `llast import xtuner`).
    # "variable": encode only the real audio (batch padded to its longest clip, padding masked).
    input_length: str = "variable"
    max_seconds: float = 30.0  # longer clips are an error at load time (use `translate --chunk` for long audio)
    # S-LoRA. Paper: r=128, alpha=64 on every linear layer of the encoder.
    lora: LoraConfig = field(
        default_factory=lambda: LoraConfig(enabled=True, r=128, alpha=64, dropout=0.05, target_modules="all-linear")
    )
    gradient_checkpointing: bool = False


@dataclass
class AdaptorConfig:
    # "mlp": the paper's Linear-GELU-Linear-GELU-Linear, after stacking `stack` consecutive frames.
    # "lst": LST's 1-D convolution length adaptor followed by a linear modality adaptor.
    type: str = "mlp"
    stack: int = 1  # frame-stacking factor k for "mlp" (1 = paper: every 20 ms encoder frame)
    hidden_size: int | None = None  # MLP width; None = the LLM's hidden size (paper)
    conv_layers: int = 2  # "lst": number of stride-`conv_stride` convolutions
    conv_kernel: int = 3
    conv_stride: int = 2


@dataclass
class LLMConfig:
    # Bundled name, hub id (TinyLlama/TinyLlama-1.1B-Chat-v1.0) or local directory of any causal LM.
    name: str = "smollm2-135m-instruct"
    # L-LoRA. Paper: r=512, alpha=256 on every linear layer except lm_head.
    lora: LoraConfig = field(
        default_factory=lambda: LoraConfig(enabled=True, r=512, alpha=256, dropout=0.05, target_modules="all-linear")
    )
    gradient_checkpointing: bool = False
    # Tokenizer name or directory; None: the LLM's own (`name`). For random_init builds of LLMs whose
    # tokenizer is not kept offline; its vocabulary must fit in the LLM's vocab_size.
    tokenizer: str | None = None


@dataclass
class PromptConfig:
    translate: str = "Translate the {src} sentence into {tgt}."
    transcribe: str = "Transcribe the {src} sentence into {src}."
    # Render the instruction through the tokenizer's own chat template (False: plain "<audio>\n{instruction}\n").
    use_chat_template: bool = True
    # System message for the chat template. None: whatever the template does without one (SmolLM2's and
    # Qwen2's insert their own default, ~17-20 tokens per clip); "": an explicit empty system message.
    system: str | None = None
    # "default": the settings above. "released": the released LLaST code's prompt, which overrides them
    # (TinyLlama: "<s><|user|>\n<audio>\nPlease translate the {src} sentence into {tgt}.</s>\n<|assistant|></s>\n",
    # Llama-2: "<s>[INST] <audio>\nPlease translate ... [/INST]"); for checkpoints from `llast import xtuner`.
    preset: str = "default"


@dataclass
class ModelConfig:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    adaptor: AdaptorConfig = field(default_factory=AdaptorConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    dtype: str = "float32"  # float32 | bfloat16 | float16: dtype of the frozen base weights
    # Train the adaptor only until this step, then adaptor + LoRA (LST's two stages in one run; 0 = off).
    adaptor_only_steps: int = 0
    # Build the encoder and LLM with random weights from their config.json alone (no weights read, no
    # download); hub ids map to the configs kept in configs/hf/<repo name>/. For parameter counts, memory
    # plans and shape-true runs. Seeded (0), so a checkpoint of a random_init model reloads the same base.
    random_init: bool = False


# ----------------------------------------------------------------------------- data


@dataclass
class DataSource:
    # "covost": covost_v2.{src}_{tgt}.{split}.tsv over a Common Voice clips folder;
    # "mustc": a MuST-C split folder (wav/ + txt/{split}.yaml + txt/{split}.{lang});
    # "jsonl": a manifest, one JSON object per line (see llast.data).
    format: str = "covost"
    path: str = ""  # the TSV / the manifest / the MuST-C split folder
    audio_dir: str | None = None  # covost: folder of clips (default: {tsv folder}/{src}/clips_16k, then .../clips)
    src: str | None = None  # language codes as the corpus writes them (fr, de, zh-CN, ...)
    tgt: str | None = None
    weight: float = 1.0  # sampling weight of this source in the mix
    limit: int | None = None  # use only the first N samples


@dataclass
class DataConfig:
    train: list[DataSource] = field(default_factory=list)
    dev: list[DataSource] = field(default_factory=list)
    # Every X->En sample also yields a transcription sample of its source text (paper 3.3).
    asr_augment: bool = True
    asr_weight: float = 1.0  # weight of the ASR samples relative to the translation ones
    # Batching: "duration" = batches of at most max_batch_seconds of audio, bucketed by length;
    # "count" = batch_size samples in corpus order (the released code's way).
    batching: str = "duration"
    max_batch_seconds: float = 120.0
    batch_size: int = 16  # "count" batching; also an upper bound for "duration"
    num_buckets: int = 10
    skip_bad: bool = False  # skip unreadable/too-long samples and count them, instead of stopping
    # Folder of the frozen encoder's outputs (llast.features): each clip is encoded once, not every epoch.
    # Needs S-LoRA off. None = encode on the fly.
    feature_cache: str | None = None
    num_workers: int = 0


# ----------------------------------------------------------------------------- training / decoding


@dataclass
class TrainConfig:
    out_dir: str = "runs/llast"
    seed: int = 0
    epochs: int = 1
    max_steps: int | None = None  # optimizer steps; None = `epochs` full passes
    max_minutes: float | None = None  # stop (and checkpoint) after this wall time
    lr: float = 2e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    weight_decay: float = 0.0
    warmup_ratio: float = 0.03
    schedule: str = "linear"  # linear | cosine (decay after warmup)
    grad_accum: int = 1
    grad_clip: float = 1.0
    mixed_precision: str = "auto"  # auto (the launcher's setting, else bf16 where the GPU supports it) | no | bf16 | fp16
    log_every: int = 10
    save_every: int = 500
    keep_last: int = 2
    eval_every: int | None = None  # dev loss (and BLEU if eval_bleu) every N steps
    eval_bleu: bool = False
    eval_max_samples: int = 200
    # "lm": the LLaST loss (next-token cross-entropy on the target). "ctc": adaptor pre-training on the
    # transcription samples only, CTC in the LLM's input-embedding space (LLaST.ctc_loss; no LLM forward).
    objective: str = "lm"
    # Start from the adaptor weights of this checkpoint (e.g. a "ctc" run's final/); LoRA starts fresh.
    init_from: str | None = None


@dataclass
class DecodeConfig:
    num_beams: int = 5  # paper: beam 5; 1 = greedy
    max_new_tokens: int = 256
    length_penalty: float = 1.0
    repetition_penalty: float = 1.0
    batch_size: int = 16
    max_batch_seconds: float = 240.0
    # Beam search: run each prompt's prefill once and share its KV cache among the beams (same outputs;
    # transformers alone prefills every beam). False = plain transformers beam search.
    share_prefill: bool = True


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)


# ----------------------------------------------------------------------------- (de)serialisation

_CHOICES = {
    "model.encoder.input_length": ("pad30", "pad30_full", "variable"),
    "model.prompt.preset": ("default", "released"),
    "model.adaptor.type": ("mlp", "lst"),
    "model.dtype": ("float32", "bfloat16", "float16"),
    "data.batching": ("duration", "count"),
    "train.schedule": ("linear", "cosine"),
    "train.mixed_precision": ("auto", "no", "bf16", "fp16"),
    "train.objective": ("lm", "ctc"),
}
_SOURCE_FORMATS = ("covost", "mustc", "jsonl")


def _build(cls: type, data: Any, where: str) -> Any:
    """Build dataclass `cls` from a plain dict, rejecting unknown keys with their dotted name."""
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        keys = ", ".join(f"{where}.{k}" if where else k for k in unknown)
        raise ConfigError(f"unknown config key(s): {keys} (allowed here: {', '.join(sorted(names))})")
    kwargs = {}
    for key, value in data.items():
        kwargs[key] = _coerce(hints[key], value, f"{where}.{key}" if where else key)
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, where)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "2e-4" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def validate(cfg: Config) -> Config:
    """Check values that the types alone do not capture; raises ConfigError naming the key."""
    for key, allowed in _CHOICES.items():
        value = get_dotted(cfg, key)
        if value not in allowed:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(allowed)}")
    for part in ("train", "dev"):
        for i, src in enumerate(getattr(cfg.data, part)):
            if src.format not in _SOURCE_FORMATS:
                raise ConfigError(f"data.{part}[{i}].format: {src.format!r} is not one of {', '.join(_SOURCE_FORMATS)}")
    if cfg.model.adaptor.stack < 1:
        raise ConfigError("model.adaptor.stack: must be >= 1")
    if cfg.decode.num_beams < 1:
        raise ConfigError("decode.num_beams: must be >= 1")
    if cfg.train.grad_accum < 1:
        raise ConfigError("train.grad_accum: must be >= 1")
    if len(cfg.train.betas) != 2:
        raise ConfigError("train.betas: expected two numbers")
    return cfg


def from_dict(data: dict | None) -> Config:
    return validate(_build(Config, data or {}, ""))


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def get_dotted(obj: Any, key: str) -> Any:
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``a.b.c=value`` strings to a plain config dict; values are parsed as YAML scalars/lists."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value (e.g. train.lr=1e-4)")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw != "" else ""
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part} is not a section")
            node = child
        node[parts[-1]] = value
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (or the defaults when `path` is None) and apply dotted overrides."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from e
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
    data = apply_overrides(data, overrides or [])
    try:
        return from_dict(data)
    except ConfigError as e:
        raise ConfigError(f"{path or 'config'}: {e}") from None


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))

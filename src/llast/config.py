"""Configuration schema.

The dataclasses here are the schema; YAML files in ``configs/`` are instances. Unknown keys are
errors that name the dotted key, and ``key=value`` overrides from the command line use the same
dotted names (``train.lr=1e-4``, ``model.llm.lora.r=64``). The resolved config is saved inside
every checkpoint, so loading a model needs no YAML.
"""

from __future__ import annotations

import dataclasses
import math
import re
import string
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
    # Stop (and checkpoint) at this step while the learning-rate schedule still spans max_steps: runs
    # compared at equal budgets (the Table 5 arms) see the same learning rates; resume to go on.
    stop_at: int | None = None
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
    # What the "ctc" objective spells: "tokens" (the LLM's own tokens of the transcript) or "chars" (its
    # letters, lower case, and the space, each as the LLM's single-character token; blank = "_"). Letters
    # are few and each is heard thousands of times: they read unseen sentences better than word pieces
    # (docs/lab/quality.md, session 21); the frame rate must then exceed the letter rate (stack <= 2).
    ctc_units: str = "tokens"
    # Start from the adaptor weights of this checkpoint (e.g. a "ctc" run's final/), and its encoder LoRA
    # when it has one; the LLM LoRA starts fresh unless init_llm_lora.
    init_from: str | None = None
    # Also start the L-LoRA from init_from's llm_lora/ (continue a finished LLaST run on new data with a new
    # schedule, e.g. llast-mini's stage 2b on more sentences); the optimizer and schedule start fresh.
    init_llm_lora: bool = False
    # Start from init_from's encoder LoRA (S-LoRA) when it has one. false: leave it out and read the frozen
    # Whisper encoder (model.encoder.lora.enabled must then be false): the S-LoRA learnt on espeak-ng costs
    # hearing on people (docs/real_speech.md), so the adaptor and L-LoRA go on over the encoder as released.
    init_encoder_lora: bool = True


@dataclass(frozen=True)
class DecodeConfig:
    """How to decode: one frozen value, made and checked once (`check_decode`, which every way in uses: the
    CLI, the Python API, config files, the server) and passed unchanged down to the search (llast.generate);
    change it with dataclasses.replace."""

    num_beams: int = 5  # paper: beam 5; 1 = greedy
    max_new_tokens: int = 256
    min_new_tokens: int = 0  # EOS is forbidden before this many tokens (benchmarks: outputs of a fixed length)
    length_penalty: float = 1.0
    repetition_penalty: float = 1.0
    batch_size: int = 16
    max_batch_seconds: float = 240.0
    # Beam search: run each prompt's prefill once and share its KV cache among the beams (same outputs;
    # transformers alone prefills every beam); greedy decoding runs as that search with one beam.
    # False = plain transformers generate.
    share_prefill: bool = True
    # Beam search after the shared prefill: "llast" (llast.beam: same outputs, less work) or "transformers".
    beam_search: str = "llast"
    # Translate in two passes: the model transcribes the speech (its ASR task, learnt from ASR-augmented
    # training), then its LLM translates that transcript as text (llast.llm_text), with the checkpoint's text
    # adapter (text_lora/, `llast text-lora`) if it has one, else without L-LoRA. Slower (two decodes);
    # better where the LLM translates text better than the speech model translates speech (llast-mini:
    # docs/lab/quality.md). task=transcribe is one pass either way. It only says which passes run: the model
    # must be loaded with its L-LoRA unmerged (a load argument: llast.decode.load_model(two_pass=...)).
    two_pass: bool = False


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
    "train.ctc_units": ("tokens", "chars"),
}
SOURCE_FORMATS = ("covost", "mustc", "jsonl")  # data.*[].format: llast.data.read_source reads each


def _build(cls: type, data: Any, where: str) -> Any:
    """Build dataclass `cls` from a plain dict, rejecting unknown keys with their dotted name."""
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = _known_keys(cls, data, where)
    kwargs = {}
    for key, value in data.items():
        kwargs[key] = _coerce(hints[key], value, f"{where}.{key}" if where else key)
    return cls(**kwargs)


def _known_keys(cls: type, data: dict, where: str) -> dict:
    """The type hints of dataclass `cls`, once every key of `data` is known to be one of its fields."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(str(k) for k in set(data) - names)
    if unknown:
        keys = ", ".join(f"{where}.{k}" if where else k for k in unknown)
        raise ConfigError(f"unknown config key(s): {keys} (allowed here: {', '.join(sorted(names))})")
    return hints


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
        if value is False and "no" in _CHOICES.get(where, ()):  # YAML 1.1 reads a bare `no` as false
            return "no"
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


# Upper bounds of decoding work one request or command may ask for (the CLI, the Python API and the
# server check the same numbers through `check_decode`).
MAX_NUM_BEAMS = 32  # --num-beams 1000 on a 3.5 s clip grew to 5.5 GB
MAX_NEW_TOKENS = 4096
MAX_DECODE_BATCH = 1024
MIN_CHUNK_SECONDS = 1.0  # shortest chunk `translate --chunk-seconds` may cut long audio into
MAX_UPLOAD_BYTES = 100 * 2**20  # largest audio file one server request may send (100 MiB)
LANG_CODE = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})?$")  # fr, zh-CN, sv-SE: safe in file names
_TEMPLATE_FIELDS = {"model.prompt.translate": ("src", "tgt"), "model.prompt.transcribe": ("src",)}


# dotted key -> (test, what the value must be). None passes where the schema allows None.
_RULES: dict[str, tuple[Any, str]] = {
    "model.encoder.max_seconds": (lambda v: 0 < v <= 3600, "a number of seconds in (0, 3600]"),
    "model.adaptor.stack": (lambda v: 1 <= v <= 64, "an integer in [1, 64]"),
    "model.adaptor.hidden_size": (lambda v: v is None or v >= 1, "null or an integer >= 1"),
    "model.adaptor.conv_layers": (lambda v: 0 <= v <= 8, "an integer in [0, 8]"),
    "model.adaptor.conv_kernel": (lambda v: v >= 1, "an integer >= 1"),
    "model.adaptor.conv_stride": (lambda v: v >= 1, "an integer >= 1"),
    "model.adaptor_only_steps": (lambda v: v >= 0, "an integer >= 0"),
    "data.asr_weight": (lambda v: v >= 0, "a number >= 0"),
    "data.max_batch_seconds": (lambda v: v > 0, "a number of seconds > 0"),
    "data.batch_size": (lambda v: v >= 1, "an integer >= 1"),
    "data.num_buckets": (lambda v: v >= 1, "an integer >= 1"),
    "data.num_workers": (lambda v: v >= 0, "an integer >= 0"),
    "train.seed": (lambda v: v >= 0, "an integer >= 0"),
    "train.epochs": (lambda v: v >= 1, "an integer >= 1"),
    "train.max_steps": (lambda v: v is None or v >= 1, "null or an integer >= 1"),
    "train.max_minutes": (lambda v: v is None or v > 0, "null or a number of minutes > 0"),
    "train.stop_at": (lambda v: v is None or v >= 1, "null or a step >= 1"),
    "train.lr": (lambda v: 0 < v <= 10, "a learning rate in (0, 10]"),
    "train.betas": (lambda v: len(v) == 2 and all(0 <= b < 1 for b in v), "two numbers in [0, 1)"),
    "train.weight_decay": (lambda v: v >= 0, "a number >= 0"),
    "train.warmup_ratio": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "train.grad_accum": (lambda v: v >= 1, "an integer >= 1"),
    "train.grad_clip": (lambda v: v >= 0, "a number >= 0 (0 = no clipping)"),
    "train.log_every": (lambda v: v >= 1, "an integer >= 1"),
    "train.save_every": (lambda v: v >= 1, "an integer >= 1"),
    "train.eval_every": (lambda v: v is None or v >= 1, "null or an integer >= 1"),
    "train.eval_max_samples": (lambda v: v >= 1, "an integer >= 1"),
}
_DECODE_RULES: dict[str, tuple[Any, str]] = {
    "num_beams": (lambda v: 1 <= v <= MAX_NUM_BEAMS, f"an integer in [1, {MAX_NUM_BEAMS}]"),
    "max_new_tokens": (lambda v: 1 <= v <= MAX_NEW_TOKENS, f"an integer in [1, {MAX_NEW_TOKENS}]"),
    "min_new_tokens": (lambda v: 0 <= v <= MAX_NEW_TOKENS, f"an integer in [0, {MAX_NEW_TOKENS}]"),
    "length_penalty": (lambda v: -10 <= v <= 10, "a number in [-10, 10]"),
    "repetition_penalty": (lambda v: 0 < v <= 10, "a number in (0, 10]"),
    "batch_size": (lambda v: 1 <= v <= MAX_DECODE_BATCH, f"an integer in [1, {MAX_DECODE_BATCH}]"),
    "max_batch_seconds": (lambda v: 0 < v <= 36000, "a number of seconds in (0, 36000]"),
    "beam_search": (lambda v: v in ("llast", "transformers"), "llast or transformers"),
}
_LORA_RULES: dict[str, tuple[Any, str]] = {
    "r": (lambda v: 1 <= v <= 4096, "an integer in [1, 4096]"),
    "alpha": (lambda v: v > 0, "an integer > 0"),
    "dropout": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
}


def _apply_rules(obj: Any, rules: dict[str, tuple[Any, str]], prefix: str) -> None:
    for key, (ok, what) in rules.items():
        value = get_dotted(obj, key)
        if not ok(value):
            raise ConfigError(f"{prefix}{key}: {value!r} is not allowed; expected {what}")


def _check_finite(obj: Any, where: str) -> None:
    """Every float field of dataclass `obj` (and its children) is finite: no nan, no inf."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = f"{where}.{f.name}" if where else f.name
        if dataclasses.is_dataclass(value):
            _check_finite(value, key)
        elif isinstance(value, list):
            for i, v in enumerate(value):
                if dataclasses.is_dataclass(v):
                    _check_finite(v, f"{key}[{i}]")
                elif isinstance(v, float) and not math.isfinite(v):
                    raise ConfigError(f"{key}[{i}]: {v!r} is not a finite number")
        elif isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key}: {value!r} is not a finite number")


def check_template(template: Any, key: str, fields: tuple[str, ...]) -> None:
    """A prompt template may only use the named fields ({src}, {tgt}); ConfigError naming `key` otherwise."""
    if not isinstance(template, str):
        raise ConfigError(f"{key}: expected a string, got {template!r}")
    try:
        used = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as e:
        raise ConfigError(f"{key}: {template!r} is not a valid template ({e}; write {{{{ and }}}} for literal braces)") from None
    bad = [name for name in used if name not in fields]
    if bad:
        allowed = ", ".join("{" + f + "}" for f in fields)
        raise ConfigError(f"{key}: unknown field {{{bad[0]}}} in {template!r} (allowed: {allowed})")


def check_language(code: Any, where: str) -> str:
    """A language code as corpora write them (fr, zh-CN): letters and one dash; ConfigError otherwise.
    Codes end up in output file names, so nothing else gets through."""
    if not isinstance(code, str) or not LANG_CODE.match(code):
        raise ConfigError(f"{where}: {code!r} is not a language code (like fr, de, zh-CN)")
    return code


def check_decode(decode: Any, base: DecodeConfig | None = None, options: bool = False) -> DecodeConfig:
    """THE check of decoding options, where a DecodeConfig is made from what a user gave (the CLI, the Python
    API, the server, a config file): `decode`, a dict of some fields, over `base` (default: DecodeConfig()),
    or a whole DecodeConfig read from a config; types and bounds. The result travels unchanged to the search:
    nothing downstream checks or parses it again. ConfigError names the field (as `decode.num_beams`, or as
    the command-line option `--num-beams` with `options`)."""
    if isinstance(decode, DecodeConfig):
        values, base = dataclasses.asdict(decode), None
    elif isinstance(decode, dict):
        values = decode
    else:
        raise ConfigError(f"decode: expected decoding options, got {type(decode).__name__}")
    hints = _known_keys(DecodeConfig, values, "decode")
    name = (lambda k: "--" + k.replace("_", "-")) if options else (lambda k: f"decode.{k}")
    checked = {k: _coerce(hints[k], v, name(k)) for k, v in values.items()}
    for key, value in checked.items():  # every float rule is a bounded range, so nan and inf fail it too
        ok, what = _DECODE_RULES.get(key, (None, ""))
        if ok is not None and not ok(value):
            raise ConfigError(f"{name(key)}: {value!r} is not allowed; expected {what}")
    return dataclasses.replace(base or DecodeConfig(), **checked)


def check_upload_size(n_bytes: Any, where: str = "request body") -> int:
    """A request body's declared size (Content-Length): a whole number of bytes in [1, MAX_UPLOAD_BYTES]."""
    if isinstance(n_bytes, str) and n_bytes.strip().isdigit():
        n_bytes = int(n_bytes)
    if isinstance(n_bytes, bool) or not isinstance(n_bytes, int):
        raise ConfigError(f"{where}: size {n_bytes!r} is not a number of bytes")
    if not 1 <= n_bytes <= MAX_UPLOAD_BYTES:
        raise ConfigError(f"{where}: {n_bytes} bytes is not allowed; expected 1 to {MAX_UPLOAD_BYTES} bytes (100 MiB)")
    return n_bytes


def check_chunk_seconds(chunk_seconds: Any, max_seconds: float, where: str = "chunk_seconds") -> float | None:
    """`translate --chunk-seconds`: None (the model's maximum) or seconds in [MIN_CHUNK_SECONDS, max_seconds]."""
    if chunk_seconds is None:
        return None
    if isinstance(chunk_seconds, bool) or not isinstance(chunk_seconds, (int, float)) or not math.isfinite(chunk_seconds):
        raise ConfigError(f"{where}: expected a number of seconds, got {chunk_seconds!r}")
    if not MIN_CHUNK_SECONDS <= chunk_seconds <= max_seconds:
        bound = (f"at least {MIN_CHUNK_SECONDS:g} s" if math.isinf(max_seconds) else
                 f"{MIN_CHUNK_SECONDS:g} to {max_seconds:g} s (the model's model.encoder.max_seconds)")
        raise ConfigError(f"{where}: {chunk_seconds:g} s is not allowed; expected {bound}")
    return float(chunk_seconds)


def validate(cfg: Config) -> Config:
    """Check values that the types alone do not capture (choices, ranges, finite numbers, templates,
    language codes); raises ConfigError naming the dotted key. Every way of making a Config
    (YAML, overrides, checkpoints, `train()` from Python) goes through here."""
    if not isinstance(cfg, Config):
        raise ConfigError(f"expected a llast Config, got {type(cfg).__name__}")
    _check_finite(cfg, "")
    for key, allowed in _CHOICES.items():
        value = get_dotted(cfg, key)
        if value not in allowed:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(allowed)}")
    _apply_rules(cfg, _RULES, "")
    for part in ("encoder", "llm"):
        _apply_rules(getattr(cfg.model, part).lora, _LORA_RULES, f"model.{part}.lora.")
        if not isinstance(getattr(cfg.model, part).name, str) or not getattr(cfg.model, part).name.strip():
            raise ConfigError(f"model.{part}.name: must name a model (bundled name, hub id or folder)")
    for key, fields in _TEMPLATE_FIELDS.items():
        check_template(get_dotted(cfg, key), key, fields)
    for part in ("train", "dev"):
        for i, src in enumerate(getattr(cfg.data, part)):
            where = f"data.{part}[{i}]"
            if src.format not in SOURCE_FORMATS:
                raise ConfigError(f"{where}.format: {src.format!r} is not one of {', '.join(SOURCE_FORMATS)}")
            if not src.path:
                raise ConfigError(f"{where}.path: empty (the TSV, manifest or MuST-C split folder)")
            if src.weight < 0:
                raise ConfigError(f"{where}.weight: {src.weight!r} is not allowed; expected a number >= 0")
            if src.limit is not None and src.limit < 1:
                raise ConfigError(f"{where}.limit: {src.limit!r} is not allowed; expected null or an integer >= 1")
            for lang in ("src", "tgt"):
                if getattr(src, lang) is not None:
                    check_language(getattr(src, lang), f"{where}.{lang}")
    check_decode(cfg.decode)
    if not cfg.train.init_encoder_lora and not cfg.train.init_from:
        raise ConfigError("train.init_encoder_lora: false only means something with train.init_from set")
    if cfg.train.init_llm_lora and not cfg.train.init_from:
        raise ConfigError("train.init_llm_lora: set train.init_from to the checkpoint whose llm_lora/ to start from")
    if cfg.train.init_llm_lora and not cfg.model.llm.lora.enabled:
        raise ConfigError("train.init_llm_lora: the LLM's LoRA is off (model.llm.lora.enabled: false)")
    if cfg.model.encoder.input_length == "pad30" and cfg.model.encoder.max_seconds > 30:
        raise ConfigError("model.encoder.max_seconds: at most 30 with model.encoder.input_length: pad30")
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
    """Apply ``a.b.c=value`` strings to a plain config dict; values are parsed as YAML scalars/lists.
    A value that is not valid YAML, or a key that does not name a config section, is a ConfigError."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value (e.g. train.lr=1e-4)")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(p.strip() for p in parts):
            raise ConfigError(f"override {item!r}: {key!r} is not a dotted config key (e.g. train.lr)")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as e:
            first = str(e).strip().splitlines()[0]
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({first}); quote it to pass a string") from None
        node = data
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
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None
        except UnicodeDecodeError as e:
            raise ConfigError(f"{path}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
    data = apply_overrides(data, overrides or [])
    try:
        return from_dict(data)
    except ConfigError as e:
        raise ConfigError(f"{path or 'config'}: {e}") from None


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))

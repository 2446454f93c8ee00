"""Converters from the formats bundled weights ship in to plain Hugging Face checkpoints.

- ``ctranslate2_whisper_to_hf``: a CTranslate2 Whisper ``model.bin`` (faster-whisper's format) to
  ``WhisperForConditionalGeneration`` + ``WhisperProcessor`` files.
- ``gguf_to_hf``: a (quantized) GGUF causal LM to a plain, trainable float32 checkpoint + tokenizer.

Both write with ``save_pretrained`` so the result loads with ``from_pretrained(out_dir)`` offline;
``verify_whisper`` / ``verify_causal_lm`` load a converted folder and run one forward pass on it.
Every failure a user can meet (truncated or corrupt file, unexpected layout) raises ``AssetError``
naming the file and the problem.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import (
    AddedToken,
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperProcessor,
    WhisperTokenizer,
)

from llast.audio import SAMPLE_RATE
from llast.errors import AssetError

CT2_BINARY_VERSION = 6
# CTranslate2 dtype codes -> (numpy dtype to read the raw bytes, torch dtype of the result).
# bfloat16 has no numpy dtype: read as uint16 and reinterpret in torch.
_CT2_DTYPES = {
    0: (np.float32, torch.float32),
    1: (np.int8, torch.int8),
    2: (np.int16, torch.int16),
    3: (np.int32, torch.int32),
    4: (np.float16, torch.float16),
    5: (np.uint16, torch.bfloat16),
}
CT2_DTYPE_CODES = {torch_dtype: code for code, (_, torch_dtype) in _CT2_DTYPES.items()}

# Gemma's turn format, for base checkpoints whose GGUF carries no template (Gemma 3 270M base).
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{% if role == 'system' %}{% set role = 'user' %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)


# --------------------------------------------------------------------------------------------------
# CTranslate2 model.bin
# --------------------------------------------------------------------------------------------------


@dataclass
class Ct2Model:
    """The contents of a CTranslate2 model.bin: spec name/revision, variables and aliases."""

    spec: str
    revision: int
    variables: dict[str, torch.Tensor]
    aliases: dict[str, str]  # alias name -> variable name

    def get(self, name: str) -> torch.Tensor:
        return self.variables[self.aliases.get(name, name)]


class _Reader:
    """Little-endian cursor over a bytes buffer that reports truncation as AssetError."""

    def __init__(self, buf: bytes, path: Path):
        self.buf, self.path, self.pos = buf, path, 0

    def take(self, n: int, what: str) -> memoryview:
        if self.pos + n > len(self.buf):
            raise AssetError(
                f"{self.path}: truncated: {what} needs {n} bytes at offset {self.pos}, "
                f"but the file has {len(self.buf)} bytes"
            )
        out = memoryview(self.buf)[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u16(self, what: str) -> int:
        return struct.unpack("<H", self.take(2, what))[0]

    def u32(self, what: str) -> int:
        return struct.unpack("<I", self.take(4, what))[0]

    def string(self, what: str) -> str:
        # u16 length (including the trailing NUL), then the bytes.
        n = self.u16(what)
        raw = bytes(self.take(n, what))
        return raw.rstrip(b"\0").decode("utf-8", errors="replace")


def read_ctranslate2(path: str | Path) -> Ct2Model:
    """Parse a CTranslate2 ``model.bin`` (binary version 6) into tensors.

    Layout (little-endian): u32 version; spec name; u32 revision; u32 variable count; per variable:
    name, u8 rank, rank x u32 dims, u8 dtype, u32 byte count, raw bytes; u32 alias count; per alias:
    alias name, variable name. Strings are u16 length + bytes + NUL.
    """
    path = Path(path)
    try:
        buf = path.read_bytes()
    except OSError as e:
        raise AssetError(f"{path}: cannot read CTranslate2 model: {e}") from e
    r = _Reader(buf, path)
    version = r.u32("binary version")
    if version != CT2_BINARY_VERSION:
        raise AssetError(
            f"{path}: not a CTranslate2 model of binary version {CT2_BINARY_VERSION} "
            f"(found {version}; wrong file or corrupt header)"
        )
    spec = r.string("spec name")
    revision = r.u32("spec revision")
    n_vars = r.u32("variable count")
    variables: dict[str, torch.Tensor] = {}
    for i in range(n_vars):
        name = r.string(f"name of variable {i}")
        rank = r.u8(f"rank of {name}")
        dims = [r.u32(f"dims of {name}") for _ in range(rank)]
        code = r.u8(f"dtype of {name}")
        if code not in _CT2_DTYPES:
            raise AssetError(f"{path}: variable {name!r} has unknown dtype code {code} (corrupt file?)")
        np_dtype, torch_dtype = _CT2_DTYPES[code]
        n_bytes = r.u32(f"byte count of {name}")
        expected = int(np.prod(dims, dtype=np.int64)) * np.dtype(np_dtype).itemsize
        if n_bytes != expected:
            raise AssetError(
                f"{path}: variable {name!r} of shape {dims} and dtype code {code} should have "
                f"{expected} bytes, the file says {n_bytes} (size mismatch; corrupt file?)"
            )
        raw = r.take(n_bytes, f"data of {name}")
        array = np.frombuffer(raw, dtype=np_dtype).reshape(dims).copy()
        tensor = torch.from_numpy(array)
        if torch_dtype == torch.bfloat16:
            tensor = tensor.view(torch.bfloat16)
        variables[name] = tensor
    aliases: dict[str, str] = {}
    if r.pos < len(buf):
        n_aliases = r.u32("alias count")
        for _ in range(n_aliases):
            alias = r.string("alias name")
            aliases[alias] = r.string(f"target of alias {alias!r}")
    if r.pos != len(buf):
        raise AssetError(f"{path}: {len(buf) - r.pos} unexpected bytes after the last alias (corrupt file?)")
    for alias, target in aliases.items():
        if target not in variables:
            raise AssetError(f"{path}: alias {alias!r} points to missing variable {target!r}")
    return Ct2Model(spec=spec, revision=revision, variables=variables, aliases=aliases)


def _count_layers(names, side: str) -> int:
    pattern = re.compile(rf"{side}/layer_(\d+)/")
    idx = {int(m.group(1)) for n in names if (m := pattern.match(n))}
    if idx != set(range(len(idx))):
        raise ValueError(f"{side} layer indices are not contiguous: {sorted(idx)}")
    return len(idx)


def ct2_whisper_state_dict(ct2: Ct2Model) -> tuple[dict[str, torch.Tensor], dict]:
    """Map CTranslate2 WhisperSpec variables to HF ``WhisperForConditionalGeneration`` names (float32).

    Returns the state dict (without the tied ``proj_out.weight``) and the shape facts for the config.
    """
    v = ct2.get
    names = ct2.variables.keys()
    n_enc = _count_layers(names, "encoder")
    n_dec = _count_layers(names, "decoder")
    sd: dict[str, torch.Tensor] = {}

    def linear(dst: str, src: str, bias: bool = True) -> None:
        sd[f"{dst}.weight"] = v(f"{src}/weight")
        if bias:
            sd[f"{dst}.bias"] = v(f"{src}/bias")

    def norm(dst: str, src: str) -> None:
        sd[f"{dst}.weight"] = v(f"{src}/gamma")
        sd[f"{dst}.bias"] = v(f"{src}/beta")

    def fused_qkv(dst: str, src: str) -> None:
        # Fused [q; k; v]. HF's k_proj has no bias: a key bias adds q.b_k to every score of a query,
        # a constant shift that softmax cancels, so dropping it is exact.
        w, b = v(f"{src}/weight"), v(f"{src}/bias")
        (wq, wk, wv), (bq, _, bv) = w.chunk(3, dim=0), b.chunk(3, dim=0)
        sd[f"{dst}.q_proj.weight"], sd[f"{dst}.q_proj.bias"] = wq, bq
        sd[f"{dst}.k_proj.weight"] = wk
        sd[f"{dst}.v_proj.weight"], sd[f"{dst}.v_proj.bias"] = wv, bv

    def self_attention(dst: str, src: str) -> None:
        fused_qkv(f"{dst}.self_attn", f"{src}/self_attention/linear_0")
        linear(f"{dst}.self_attn.out_proj", f"{src}/self_attention/linear_1")
        norm(f"{dst}.self_attn_layer_norm", f"{src}/self_attention/layer_norm")

    def feed_forward(dst: str, src: str) -> None:
        linear(f"{dst}.fc1", f"{src}/ffn/linear_0")
        linear(f"{dst}.fc2", f"{src}/ffn/linear_1")
        norm(f"{dst}.final_layer_norm", f"{src}/ffn/layer_norm")

    for conv in ("conv1", "conv2"):
        linear(f"model.encoder.{conv}", f"encoder/{conv}")
    sd["model.encoder.embed_positions.weight"] = v("encoder/position_encodings/encodings")
    for i in range(n_enc):
        src, dst = f"encoder/layer_{i}", f"model.encoder.layers.{i}"
        self_attention(dst, src)
        feed_forward(dst, src)
    norm("model.encoder.layer_norm", "encoder/layer_norm")

    sd["model.decoder.embed_tokens.weight"] = v("decoder/embeddings/weight")
    sd["model.decoder.embed_positions.weight"] = v("decoder/position_encodings/encodings")
    for i in range(n_dec):
        src, dst = f"decoder/layer_{i}", f"model.decoder.layers.{i}"
        self_attention(dst, src)
        linear(f"{dst}.encoder_attn.q_proj", f"{src}/attention/linear_0")
        wk, wv = v(f"{src}/attention/linear_1/weight").chunk(2, dim=0)
        _, bv = v(f"{src}/attention/linear_1/bias").chunk(2, dim=0)
        sd[f"{dst}.encoder_attn.k_proj.weight"] = wk
        sd[f"{dst}.encoder_attn.v_proj.weight"], sd[f"{dst}.encoder_attn.v_proj.bias"] = wv, bv
        linear(f"{dst}.encoder_attn.out_proj", f"{src}/attention/linear_2")
        norm(f"{dst}.encoder_attn_layer_norm", f"{src}/attention/layer_norm")
        feed_forward(dst, src)
    norm("model.decoder.layer_norm", "decoder/layer_norm")

    sd = {k: t.float().contiguous() for k, t in sd.items()}
    return sd, _whisper_shapes(ct2, sd, n_enc, n_dec)


def _whisper_shapes(ct2: Ct2Model, sd: dict[str, torch.Tensor], n_enc: int, n_dec: int) -> dict:
    """The WhisperConfig shape facts of a converted state dict."""
    d_model = sd["model.decoder.embed_tokens.weight"].shape[1]

    def heads(side: str) -> int:
        name = f"{side}/num_heads"
        if name in ct2.variables:
            return int(ct2.variables[name].item())
        return d_model // 64  # every Whisper size uses 64-dim heads

    shapes = dict(
        vocab_size=sd["model.decoder.embed_tokens.weight"].shape[0],
        d_model=d_model,
        num_mel_bins=sd["model.encoder.conv1.weight"].shape[1],
        encoder_layers=n_enc,
        decoder_layers=n_dec,
        encoder_attention_heads=heads("encoder"),
        decoder_attention_heads=heads("decoder"),
        encoder_ffn_dim=sd["model.encoder.layers.0.fc1.weight"].shape[0] if n_enc else 4 * d_model,
        decoder_ffn_dim=sd["model.decoder.layers.0.fc1.weight"].shape[0] if n_dec else 4 * d_model,
        max_source_positions=sd["model.encoder.embed_positions.weight"].shape[0],
        max_target_positions=sd["model.decoder.embed_positions.weight"].shape[0],
    )
    return shapes


def _whisper_special_ids(tokenizer_json: dict, path: Path) -> dict[str, int]:
    ids = {t["content"]: t["id"] for t in tokenizer_json.get("added_tokens", [])}
    needed = ["<|endoftext|>", "<|startoftranscript|>", "<|translate|>", "<|transcribe|>",
              "<|startoflm|>", "<|startofprev|>", "<|notimestamps|>"]
    missing = [t for t in needed if t not in ids]
    if missing:
        raise AssetError(f"{path}: not a Whisper tokenizer: missing special tokens {missing}")
    return ids


def _whisper_generation_config(config, ids: dict[str, int], ct2_config: dict, multilingual: bool):
    eot, sot = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    # Suppression lists live in the generation config only (transformers warns when the model config
    # carries generation parameters too).
    gen = GenerationConfig(
        decoder_start_token_id=sot,
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        max_length=config.max_target_positions,
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin") or [220, eot]),
        suppress_tokens=list(ct2_config.get("suppress_ids") or []),
    )
    # Whisper-specific fields read by WhisperForConditionalGeneration.generate.
    gen.is_multilingual = multilingual
    gen.no_timestamps_token_id = ids["<|notimestamps|>"]
    gen.prev_sot_token_id = ids["<|startofprev|>"]
    gen.max_initial_timestamp_index = 50
    gen.return_timestamps = False
    if ct2_config.get("alignment_heads"):
        gen.alignment_heads = [list(h) for h in ct2_config["alignment_heads"]]
    if multilingual:
        lang_ids = set(ct2_config.get("lang_ids") or range(sot + 1, ids["<|translate|>"]))
        gen.lang_to_id = {tok: i for tok, i in ids.items() if i in lang_ids}
        gen.task_to_id = {"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]}
        # Without a task the prompt would lack a task token (the hub configs use the deprecated
        # forced_decoder_ids for this); language stays unset so that it is detected.
        gen.task = "transcribe"
    return gen


def _whisper_processor(tokenizer_path: Path, n_mels: int, vocab_size: int, ids: dict[str, int]):
    specials = [tok for tok, i in sorted(ids.items(), key=lambda kv: kv[1]) if tok != "<|endoftext|>"]
    tokenizer = WhisperTokenizer(tokenizer_file=str(tokenizer_path), extra_special_tokens=specials)
    # Timestamp tokens <|0.00|> .. <|30.00|> fill the ids after <|notimestamps|> up to the model's vocab.
    first = ids["<|notimestamps|>"] + 1
    n_timestamps = vocab_size - first
    if n_timestamps > 0 and len(tokenizer) == first:
        tokenizer.add_tokens(
            [AddedToken(f"<|{i * 0.02:.2f}|>", lstrip=False, rstrip=False, normalized=False, special=False)
             for i in range(n_timestamps)]
        )
    feature_extractor = WhisperFeatureExtractor(feature_size=n_mels)
    return WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer)


def ctranslate2_whisper_to_hf(model_bin: Path, data_dir: Path, out_dir: Path) -> Path:
    """Convert a CTranslate2 Whisper model to a Hugging Face checkpoint directory.

    model_bin : the (concatenated) CTranslate2 ``model.bin``.
    data_dir  : folder with the CTranslate2 ``config.json`` and ``tokenizer.json``.
    out_dir   : written with ``model.safetensors`` (float32), ``config.json``,
                ``generation_config.json``, ``preprocessor_config.json`` and tokenizer files, so that
                ``WhisperForConditionalGeneration.from_pretrained(out_dir)`` and
                ``WhisperProcessor.from_pretrained(out_dir)`` work offline.
    """
    model_bin, data_dir, out_dir = Path(model_bin), Path(data_dir), Path(out_dir)
    tok_path, cfg_path = data_dir / "tokenizer.json", data_dir / "config.json"
    for p in (tok_path, cfg_path):
        if not p.is_file():
            raise AssetError(f"{p}: missing (needed to convert {model_bin})")
    try:
        tokenizer_json = json.loads(tok_path.read_text(encoding="utf-8"))
        ct2_config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise AssetError(f"{data_dir}: cannot read config.json/tokenizer.json: {e}") from e

    ct2 = read_ctranslate2(model_bin)
    if ct2.spec != "WhisperSpec":
        raise AssetError(f"{model_bin}: spec is {ct2.spec!r}, expected 'WhisperSpec'")
    try:
        sd, shapes = ct2_whisper_state_dict(ct2)
    except (KeyError, ValueError) as e:
        raise AssetError(f"{model_bin}: unexpected Whisper layout: {e}") from e

    ids = _whisper_special_ids(tokenizer_json, tok_path)
    eot, sot = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    # Multilingual models have language tokens; .en models have <|en|> only, and fewer vocab ids.
    multilingual = shapes["vocab_size"] >= 51865
    config = WhisperConfig(
        **shapes,
        activation_function="gelu",
        pad_token_id=eot,
        bos_token_id=eot,
        eos_token_id=eot,
        decoder_start_token_id=sot,
        tie_word_embeddings=True,
    )
    model = WhisperForConditionalGeneration(config)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if k != "proj_out.weight"]  # tied to embed_tokens
    if missing or unexpected:
        raise AssetError(f"{model_bin}: weights do not fit Whisper: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.tie_weights()
    model.generation_config = _whisper_generation_config(config, ids, ct2_config, multilingual)
    model.eval()

    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor = _whisper_processor(tok_path, config.num_mel_bins, config.vocab_size, ids)
    processor.save_pretrained(out_dir)
    processor.feature_extractor.save_pretrained(out_dir)  # preprocessor_config.json, for older loaders
    return out_dir


# --------------------------------------------------------------------------------------------------
# GGUF
# --------------------------------------------------------------------------------------------------


def _check_gguf_header(path: Path) -> None:
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise AssetError(f"{path}: cannot read GGUF file: {e}") from e
    if len(head) < 8 or head[:4] != b"GGUF":
        raise AssetError(f"{path}: not a GGUF file (bad magic {head[:4]!r})")
    version = struct.unpack("<I", head[4:8])[0]
    if version not in (2, 3):
        raise AssetError(f"{path}: unsupported GGUF version {version}")


def plain_model_from_state_dict(config, state_dict: dict[str, torch.Tensor], source: str = "model"):
    """Build a plain (unquantized, trainable) causal LM from ``config`` and load ``state_dict`` strictly.

    Drops any ``quantization_config``. Only a tied ``lm_head.weight`` may be absent.
    """
    config = config.__class__.from_dict(config.to_dict())
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.float32
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    state_dict = {k: t.detach().to(torch.float32) for k, t in state_dict.items()}
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    tied = getattr(config, "tie_word_embeddings", False) or getattr(config.get_text_config(), "tie_word_embeddings", False)
    allowed_missing = {"lm_head.weight"} if tied else set()
    missing = [k for k in missing if k not in allowed_missing]
    if missing or unexpected:
        raise AssetError(f"{source}: dequantized weights do not fit {type(model).__name__}: "
                         f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    if tied:
        model.tie_weights()
    model.eval()
    return model


def gguf_to_hf(gguf_path: Path, out_dir: Path) -> Path:
    """Convert a GGUF causal LM into a plain float32 HF checkpoint (safetensors) + tokenizer.

    The model is read with transformers' GGUF support (which dequantizes), rebuilt without any
    ``quantization_config`` so that it is trainable (peft) and saveable, and written with the tokenizer
    (chat template kept; Gemma gets its standard turn template when the GGUF has none).
    """
    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    _check_gguf_header(gguf_path)
    try:
        loaded = AutoModelForCausalLM.from_pretrained(
            str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
        )
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    except (ValueError, OSError, EOFError, RuntimeError, struct.error, IndexError, KeyError) as e:
        raise AssetError(f"{gguf_path}: cannot load GGUF (truncated or corrupt?): {e}") from e
    model = plain_model_from_state_dict(loaded.config, loaded.state_dict(), source=str(gguf_path))
    del loaded

    if not tokenizer.chat_template and model.config.model_type.startswith("gemma"):
        tokenizer.chat_template = GEMMA_CHAT_TEMPLATE
    gen = model.generation_config
    gen.bos_token_id = tokenizer.bos_token_id
    gen.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos = [tokenizer.eos_token_id]
    # Chat replies end with the template's end-of-turn token: Gemma's <end_of_turn>, ChatML's <|im_end|> (Qwen).
    turn_end = {"gemma": "<end_of_turn>", "qwen": "<|im_end|>"}
    name = next((t for prefix, t in turn_end.items() if model.config.model_type.startswith(prefix)), None)
    end_of_turn = tokenizer.convert_tokens_to_ids(name) if name else None
    if isinstance(end_of_turn, int) and end_of_turn != tokenizer.unk_token_id and end_of_turn not in eos:
        eos.append(end_of_turn)
    gen.eos_token_id = eos[0] if len(eos) == 1 else eos

    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def verify_whisper(path: Path) -> None:
    """A converted Whisper folder loads, and one forward pass on 1 s of silence gives finite outputs of the
    shapes its config names; else an AssetError naming `path`."""
    model = WhisperForConditionalGeneration.from_pretrained(path)
    processor = WhisperProcessor.from_pretrained(path)
    cfg = model.config
    features = processor.feature_extractor(
        [0.0] * SAMPLE_RATE, sampling_rate=SAMPLE_RATE, return_tensors="pt"
    ).input_features  # (1, n_mels, 3000)
    if features.shape[1] != cfg.num_mel_bins:
        raise AssetError(f"{path}: feature extractor gives {features.shape[1]} mels, model wants {cfg.num_mel_bins}")
    start = torch.tensor([[model.generation_config.decoder_start_token_id]])
    with torch.no_grad():
        out = model(input_features=features, decoder_input_ids=start)
    enc = out.encoder_last_hidden_state  # (1, 1500, d_model)
    if tuple(enc.shape) != (1, cfg.max_source_positions, cfg.d_model) or not torch.isfinite(out.logits).all():
        raise AssetError(f"{path}: verification forward failed (encoder output {tuple(enc.shape)})")
    if processor.tokenizer.convert_ids_to_tokens(int(start)) != "<|startoftranscript|>":
        raise AssetError(f"{path}: tokenizer and model disagree on <|startoftranscript|>")


def verify_causal_lm(path: Path) -> None:
    """A converted causal LM folder loads with a chat template, unquantized, and one forward pass gives
    finite logits over its vocabulary; else an AssetError naming `path`."""
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if getattr(model.config, "quantization_config", None) is not None:
        raise AssetError(f"{path}: converted model still carries a quantization_config")
    if not tokenizer.chat_template:
        raise AssetError(f"{path}: tokenizer has no chat template")
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Hello"}], tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids
    with torch.no_grad():
        logits = model(input_ids=ids).logits  # (1, T, vocab)
    if logits.shape[-1] != model.config.vocab_size or not torch.isfinite(logits).all():
        raise AssetError(f"{path}: verification forward failed (logits {tuple(logits.shape)})")

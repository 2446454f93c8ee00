"""Decoding: batched beam search (or greedy) with left padding and the KV cache; loading a model for it.

`Translator` is the Python API: ``llast.load_model(ckpt).translate("clip.wav", src="fr", tgt="en")``.
Clips are sorted by length and decoded in batches (LLaST's released code decodes one clip at a
time); results come back in input order. Audio longer than the model's maximum is cut into speech
segments by llast.segment (Silero VAD); their translations are joined, or returned with their times.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from llast.audio import SAMPLE_RATE, check_length
from llast.assets import resolve_checkpoint
from llast.checkpoint import TEXT_ADAPTER, load_checkpoint, merge_lora_weights, read_checkpoint_config
from llast.config import Config, DecodeConfig, check_chunk_seconds, check_decode, load_config
from llast.errors import AudioError, ConfigError
from llast.generate import generate_ids
from llast import llamacpp
from llast.llamacpp import GGUF
from llast.live import translate_stream
from llast.llm_text import TRANSLATION_ONLY, TextTranslator
from llast.lora import build_lora_model
from llast.model import _cpu_has_amx_bf16, inference_dtype
from llast.processor import Example, build_processor, language_name
from llast.quantize import BASE, quantize_int8, wants_int8
from llast.samplers import pack_by_duration
from llast.segment import Segment, SegmentOptions, plan_segments, segment_audio

WINDOW_SECONDS = 300.0  # translate_segments loads this much segment audio at a time (~19 MB at 16 kHz)


def _check_array(audio, index: int) -> np.ndarray:
    """A waveform given as an array must already be 16 kHz mono: (S,) finite samples, >= MIN_SECONDS."""
    try:
        wav = np.asarray(audio, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise AudioError(f"audio #{index}: not a waveform ({e})") from None
    if wav.ndim != 1:
        raise AudioError(f"audio #{index}: expected a mono 16 kHz waveform of shape (samples,), got shape {wav.shape}")
    if wav.size == 0:
        raise AudioError(f"audio #{index}: empty waveform")
    if not np.isfinite(wav).all():
        raise AudioError(f"audio #{index}: waveform holds NaN or infinite samples")
    check_length(wav.size, f"audio #{index}")
    return wav


class Translator:
    """A loaded model ready to translate or transcribe."""

    def __init__(self, model, cfg: Config, processor=None, device: str | None = None, dtype: str | None = None):
        """dtype: None keeps the model's dtype; "auto", "float32", ... casts it (llast.model.inference_dtype)."""
        self.cfg = cfg
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if dtype is not None:
            model = model.to(inference_dtype(dtype, self.device))
        self.model = model.to(self.device).eval()
        self.processor = processor or build_processor(cfg.model, encoder_config=model.encoder_config)

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    def decode_config(self, decode: DecodeConfig | None = None, **overrides) -> DecodeConfig:
        """`decode` (default: the checkpoint's decoding options, cfg.decode) with `overrides`, checked once
        (llast.config.check_decode); without overrides, `decode` itself, already checked where it was made."""
        decode = decode or self.cfg.decode
        return check_decode(overrides, base=decode) if overrides else decode

    @torch.no_grad()
    def generate(self, examples: list[Example], decode: DecodeConfig, progress: bool = False, on_batch=None,
                 heard: list | None = None) -> list[str]:
        """Translations of `examples` (audio already loaded), in input order, batched by length, decoded as
        `decode` says (a DecodeConfig, checked where it was made: `decode_config`, llast.config.check_decode).
        `on_batch(n)` is called after each batch of n clips (progress reporting). With decode.two_pass the
        translate examples are transcribed first and their transcripts translated as text (_two_pass);
        `heard`, a list, then receives the first pass's transcript of each example, in input order."""
        if decode.two_pass and any(ex.task == "translate" for ex in examples):
            return self._two_pass(examples, decode, progress, on_batch, heard)
        return self._one_pass(examples, decode, progress, on_batch)

    def _one_pass(self, examples: list[Example], decode: DecodeConfig, progress: bool, on_batch) -> list[str]:
        """`generate` in one pass: each example's task as it is (decode.two_pass is not read)."""
        order = sorted(range(len(examples)), key=lambda i: len(examples[i].audio), reverse=True)
        seconds = [len(examples[i].audio) / SAMPLE_RATE for i in order]
        batches = pack_by_duration(order, seconds, decode.max_batch_seconds, decode.batch_size)
        out: list[str | None] = [None] * len(examples)
        bar = tqdm(total=len(examples), desc="decoding", unit="clip", disable=not progress, file=sys.stderr)
        for idx in batches:
            batch = self.processor([examples[i] for i in idx], padding_side="left")
            batch = {k: v.to(self.device) for k, v in batch.items()}
            ids = generate_ids(self.model, batch, decode, self.tokenizer)
            texts = self.tokenizer.batch_decode(ids, skip_special_tokens=True)
            for i, t in zip(idx, texts):
                out[i] = t.strip()
            bar.update(len(idx))
            if on_batch is not None:
                on_batch(len(idx))
        bar.close()
        return out  # type: ignore[return-value]

    def _two_pass(self, examples: list[Example], decode: DecodeConfig, progress: bool, on_batch,
                  heard_out: list | None = None) -> list[str]:
        """decode.two_pass: every example is transcribed (task=transcribe, one batched decode), then each
        translate example's transcript is translated as text by the LLM, asked as the cascade baseline asks
        it (llast.llm_text): with the checkpoint's text adapter (text_lora/, `llast text-lora`) if it has
        one, else with its L-LoRA switched off (the LLM's own text translation)."""
        llm = self.model.llm
        if self.cfg.model.llm.lora.enabled and not hasattr(llm, "disable_adapter") and not hasattr(llm, "llast_adapters"):
            raise ConfigError("decode.two_pass: this model's L-LoRA is merged into the LLM; load it with "
                              "llast.load_model(path, two_pass=True) (the CLI does this for --two-pass)")
        heard = [dataclasses.replace(ex, tgt_lang=ex.src_lang, task="transcribe") for ex in examples]
        texts = self._one_pass(heard, decode, progress, on_batch)
        if heard_out is not None:
            heard_out.extend(texts)
        text_llm = self.text_translator()
        out = list(texts)
        groups: dict[tuple[str, str], list[int]] = {}
        for i, ex in enumerate(examples):
            if ex.task == "translate":
                groups.setdefault((ex.src_lang, ex.tgt_lang), []).append(i)
        with _text_pass_adapter(llm):
            for (src, tgt), idx in groups.items():
                for i, t in zip(idx, text_llm.translate([texts[i] for i in idx], src, tgt, decode)):
                    out[i] = t
        return out

    def text_translator(self):
        """This model's LLM as a text translator (llast.llm_text), asked as the cascade baseline asks: the
        checkpoint's instruction, TRANSLATION_ONLY as the system message. Its LoRA is as loaded."""
        prompt = dataclasses.replace(self.cfg.model.prompt, system=TRANSLATION_ONLY)
        return TextTranslator(self.model.llm, self.tokenizer, prompt, self.device)

    def segment_options(self, chunk_seconds: float | None = None, **changes) -> SegmentOptions:
        """Segmentation for this model: segments of at most model.encoder.max_seconds (or `chunk_seconds`,
        if smaller); `changes` set min_silence, pad, min_speech, threshold."""
        limit = self.cfg.model.encoder.max_seconds
        return SegmentOptions(max_seconds=check_chunk_seconds(chunk_seconds, limit) or limit, **changes)

    def translate_segments(self, sources: list, plans: list[list[Segment]], src: str, tgt: str, task: str,
                           decode: DecodeConfig, progress: bool = False) -> list[list[Segment]]:
        """Decode planned segments of `sources` (paths or (S,) arrays): the same segments with their text.

        Segment audio is read WINDOW_SECONDS at a time, so memory is bounded by that, not by the files."""
        jobs = [(k, i) for k, plan in enumerate(plans) for i in range(len(plan))]
        texts: dict[tuple[int, int], str] = {}
        bar = tqdm(total=len(jobs), desc="decoding", unit="segment", disable=not progress, file=sys.stderr)
        window, seconds = [], 0.0
        for n, (k, i) in enumerate(jobs):
            window.append((k, i))
            seconds += plans[k][i].seconds
            if seconds >= WINDOW_SECONDS or n == len(jobs) - 1:
                examples = [Example(segment_audio(sources[a], plans[a][b]), src, tgt, task) for a, b in window]
                for key, text in zip(window, self.generate(examples, decode, on_batch=bar.update)):
                    texts[key] = text
                del examples  # before the next window is read: one window of audio in memory, not two
                window, seconds = [], 0.0
        bar.close()
        return [[dataclasses.replace(seg, text=texts[(k, i)]) for i, seg in enumerate(plan)] for k, plan in enumerate(plans)]

    def translate(
        self, audio, src: str, tgt: str = "en", task: str = "translate", progress: bool = False,
        chunk_seconds: float | None = None, segments: bool = False, segment_options: SegmentOptions | None = None,
        decode: DecodeConfig | None = None, **decode_overrides,
    ):
        """Translate (or transcribe, task="transcribe") one clip or a list of clips.

        audio : a path, a (S,) float32 array at 16 kHz, or a list of those.
        Returns a string for one clip, a list of strings for a list. Audio longer than
        model.encoder.max_seconds (or `chunk_seconds`) is cut into speech segments (llast.segment, Silero
        VAD) whose outputs are joined. segments=True returns the segments instead: a list of
        llast.segment.Segment(start, end, text) per clip (seconds from the clip's start).
        decode : decoding options (default: the checkpoint's, cfg.decode); `decode_overrides` (num_beams=3,
                 ...) change some of them, as `decode_config` does.
        """
        if task not in ("translate", "transcribe"):
            raise ConfigError(f"task: {task!r} is not one of translate, transcribe")
        language_name(src), language_name(tgt)  # unknown codes fail here, before any audio is read
        decode = self.decode_config(decode, **decode_overrides)
        single = isinstance(audio, (str, Path, np.ndarray))
        items = [audio] if single else list(audio)
        opts = segment_options or self.segment_options(chunk_seconds)
        sources = [item if isinstance(item, (str, Path)) else _check_array(item, k) for k, item in enumerate(items)]
        plans = [plan_segments(x, opts) for x in sources]
        tgt = src if task == "transcribe" else tgt
        done = self.translate_segments(sources, plans, src, tgt, task, decode,
                                       progress=progress and sum(map(len, plans)) > 1)
        if segments:
            return done[0] if single else done
        joined = [" ".join(s.text for s in segs if s.text) for segs in done]
        return joined[0] if single else joined

    def translate_stream(
        self, blocks, src: str, tgt: str = "en", task: str = "translate", chunk_seconds: float | None = None,
        segment_options: SegmentOptions | None = None, decode: DecodeConfig | None = None, speculate: bool = True,
        **decode_overrides,
    ):
        """Translate a live stream: an iterable of (S,) float32 blocks at 16 kHz, as they come.

        Yields llast.segment.Segment(start, end, text) for each speech segment as soon as it ends (Silero
        VAD run incrementally, llast.live), times in seconds from the start of the stream; a segment is
        cut at `chunk_seconds` (default: the model's max) if the speaker does not pause. The segments are
        those `translate(..., segments=True)` finds in the same audio as a long file. With `speculate` a
        segment is decoded as soon as its speech has paused for the padding (0.2 s), not when the pause
        reaches min_silence (0.5 s): the same text, sooner (llast.live.translate_stream).
        """
        if task not in ("translate", "transcribe"):
            raise ConfigError(f"task: {task!r} is not one of translate, transcribe")
        language_name(src), language_name(tgt)
        decode = self.decode_config(decode, **decode_overrides)
        opts = segment_options or self.segment_options(chunk_seconds)
        return translate_stream(self, blocks, src, src if task == "transcribe" else tgt, task, opts, decode, speculate)


@contextlib.contextmanager
def _text_pass_adapter(llm):
    """The LLM as two-pass decoding's text pass uses it: its text adapter active when it has one
    (llast.checkpoint.TEXT_ADAPTER), else no adapter at all; the L-LoRA is active again afterwards."""
    switch = getattr(llm, "llast_adapters", None)  # an int8 LLM with one copy per adapter (llast.quantize)
    if switch is not None:
        with switch.use(TEXT_ADAPTER if TEXT_ADAPTER in switch.names else BASE):
            yield
    elif TEXT_ADAPTER in getattr(llm, "peft_config", {}):
        active = llm.active_adapter
        llm.set_adapter(TEXT_ADAPTER)
        try:
            yield
        finally:
            llm.set_adapter(active)
    elif hasattr(llm, "disable_adapter"):
        with llm.disable_adapter():
            yield
    else:
        yield


def load_model(path: str | Path, dtype: str = "auto", device: str | None = None, merge_lora: bool = True,
               two_pass: bool | None = None) -> Translator:
    """A ready-to-use Translator for checkpoint `path`.

    With `merge_lora` (default) the LoRA weights are folded into the base weights after the strict
    load: the same model, with no LoRA detour per layer at inference (~15% faster decoding on CPU).
    two_pass : load for two-pass translation (decode.two_pass): the L-LoRA is left unmerged (the S-LoRA is
               still merged), as the text pass needs the LLM without it, and two passes become the
               translator's default (cfg.decode.two_pass); False merges it and makes one pass the default;
               None: as the checkpoint's decode.two_pass says.
    dtype : "auto" (`auto_dtype`: gguf where it runs, else bf16 on CUDA and on CPUs with AMX-BF16, else fp32),
            "float32", "bfloat16", "float16", "int8" (dynamic int8 Linear weights on CPU, llast.quantize) or
            "gguf" (the LLM run by llama.cpp from its bundled GGUF, on CPU; llast.llamacpp).
            The model is loaded and merged in its training dtype, then cast.
    """
    _check_dtype(dtype, device)  # an unknown dtype fails before the model is loaded
    if dtype == "auto":
        dtype = auto_dtype(read_checkpoint_config(resolve_checkpoint(path)), device)
    if dtype == GGUF:  # the LLM is never loaded in PyTorch; llama.cpp takes its LoRA adapters unmerged
        model, cfg = llamacpp.load_checkpoint(path)
        _set_two_pass(cfg, two_pass)
        return Translator(model, cfg, device="cpu")
    model, cfg = load_checkpoint(path)
    _set_two_pass(cfg, two_pass)
    if merge_lora:
        merge_lora_weights(model, ("encoder",) if cfg.decode.two_pass else ("encoder", "llm"))
    return _translator(model, cfg, dtype, device)


def auto_dtype(cfg: Config, device: str | None = None) -> str:
    """What --dtype auto loads `cfg`'s model as: "gguf" (llama.cpp) on a CPU without AMX-BF16 when
    llama-cpp-python is installed, the LLM is a bundled GGUF and the config asks no repetition penalty
    (llama.cpp's decoding here has none): there it decodes llast-mini faster than fp32 at the same BLEU
    (bench/README.md, issue #29); else "auto" as llast.model.inference_dtype reads it (bf16 on CUDA and with
    AMX-BF16, else fp32)."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    plain = cfg.decode.repetition_penalty == 1.0
    if dev.type == "cpu" and plain and not _cpu_has_amx_bf16() and llamacpp.runs(cfg.model.llm.name):
        return GGUF
    return "auto"


def _check_dtype(dtype: str, device: str | None) -> None:
    """ConfigError for a dtype setting this device cannot load (gguf and int8 are for the CPU)."""
    if dtype == GGUF:
        if torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu")).type != "cpu":
            raise ConfigError("dtype gguf: llama.cpp runs the LLM on the CPU here; use another --dtype on a GPU")
        return
    wants_int8(dtype, device)


def _translator(model, cfg: Config, dtype: str, device: str | None = None) -> Translator:
    """Translator(model, cfg) with weights as `dtype` says: a torch dtype, int8 (llast.quantize.quantize_int8,
    S-LoRA merged first, from the weights as loaded; what stays float is then cast to fp32), or gguf (the
    encoder and adaptor in fp32, the LLM in llama.cpp from the bundled GGUF of its name, llast.llamacpp)."""
    _check_dtype(dtype, device)
    if dtype == GGUF:
        merge_lora_weights(model, ("encoder",))
        model.encoder.float()
        model.adaptor.float()
        llamacpp.attach(model, cfg.model.llm.name)  # the HF LLM's place taken: its memory is freed
        return Translator(model, cfg, device="cpu")
    if not wants_int8(dtype, device):
        return Translator(model, cfg, device=device, dtype=dtype)
    merge_lora_weights(model, ("encoder",))
    translator = Translator(model, cfg, device="cpu")
    quantize_int8(translator.model)  # layer by layer: no whole fp32 copy of the LLM on the way (peak RSS)
    translator.model.float()
    return translator


def load_translator(spec: str, dtype: str = "auto", two_pass: bool | None = None) -> Translator:
    """A checkpoint directory, or a YAML config: the UNTRAINED model it describes (a baseline).
    `two_pass`: as `load_model`'s (None keeps the checkpoint's or config's)."""
    if spec.endswith((".yaml", ".yml")):
        cfg = load_config(spec)
        _set_two_pass(cfg, two_pass)
        torch.manual_seed(cfg.train.seed)  # the untrained adaptor's initialisation
        if dtype == "auto":
            dtype = auto_dtype(cfg)
        return _translator(build_lora_model(cfg.model), cfg, dtype)
    return load_model(spec, dtype=dtype, two_pass=two_pass)


def _set_two_pass(cfg: Config, two_pass: bool | None) -> None:
    """The load argument `two_pass` made the translator's default (None: the config's stays)."""
    if two_pass is not None:
        cfg.decode = dataclasses.replace(cfg.decode, two_pass=two_pass)

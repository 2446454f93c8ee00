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

from llast import beam
from llast.audio import SAMPLE_RATE
from llast.config import Config, DecodeConfig, check_chunk_seconds, check_decode
from llast.processor import Example, build_processor
from llast.samplers import pack_by_duration
from llast.segment import Segment, SegmentOptions, plan_segments, segment_audio

WINDOW_SECONDS = 300.0  # translate_segments loads this much segment audio at a time (~19 MB at 16 kHz)


def generate_kwargs(decode: DecodeConfig, tokenizer) -> dict:
    """Deterministic generation settings (no sampling; the released 2B config samples at T=0.1)."""
    return dict(
        num_beams=decode.num_beams,
        max_new_tokens=decode.max_new_tokens,
        length_penalty=decode.length_penalty,
        repetition_penalty=decode.repetition_penalty,
        do_sample=False,
        temperature=None,
        top_p=None,
        top_k=None,
        early_stopping=True if decode.num_beams > 1 else False,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def generate_ids(model, batch: dict, kwargs: dict, share_prefill: bool = True, beam_search: str = "llast") -> torch.Tensor:
    """Token ids of the continuation only, (B, new_tokens), of a left-padded batch: THE choice of decoding path.

    kwargs        : transformers generate kwargs (`generate_kwargs`, or more: min_new_tokens, ...)
    share_prefill : with beam search, run each prompt (all but its last token) once per clip
                    (LLaST.prefill) and share its KV cache among the beams; transformers alone copies
                    every prompt num_beams times BEFORE the prefill. Same outputs, less work.
    beam_search   : who continues from the shared prefill: "llast" (llast.beam: same search, fewer passes
                    over the vocabulary, finished clips leave the batch; transformers' when the settings ask
                    for something llast.beam does not implement) or "transformers". Greedy decoding
                    (num_beams 1) runs as llast.beam's search with one beam when it can, else transformers'.
    """
    prefill, own = _search_plan(model.llm, kwargs, share_prefill, beam_search)
    if not prefill or batch["input_ids"].shape[1] < 2:
        return model.generate(**batch, **kwargs)
    embeds, cache = model.prefill(**batch)
    return _beams_from_prefill(model.llm, embeds, batch["attention_mask"], cache, kwargs, own)


def _as_beam_search(kwargs: dict) -> dict:
    """Greedy decoding is beam search with one beam (the same tokens: the best candidate either ends the
    sentence or continues it); as such llast.beam can run it, finished rows leaving the batch."""
    return {**kwargs, "early_stopping": True} if kwargs.get("num_beams", 1) == 1 else kwargs


def _search_plan(llm, kwargs: dict, share_prefill: bool, beam_search: str) -> tuple[bool, dict | None]:
    """(whether generation goes through a shared prefill, llast.beam's settings or None). A shared prefill:
    beam search with share_prefill, and greedy decoding when llast.beam runs it (transformers' greedy generate
    keeps finished rows in the batch until the longest ends: 3.9x the time of beam 4 on llast-mini's text
    pass, bench/results/text_pass_beams.json). The settings are None when beam_search says "transformers" or
    kwargs ask for what llast.beam lacks: transformers' beam search continues the prefill."""
    own = beam.own_settings(llm, _as_beam_search(kwargs)) if share_prefill and beam_search == "llast" else None
    return share_prefill and (kwargs.get("num_beams", 1) > 1 or own is not None), own


def _beams_from_prefill(llm, embeds, attention_mask, cache, kwargs: dict, own: dict | None) -> torch.Tensor:
    """Beam search continuing a shared prefill (llast.beam.prefill): llast.beam's with its settings `own`
    (`_search_plan`), or transformers' when None. (B, new_tokens)"""
    if own is not None:
        return beam.beam_search(llm, embeds[:, -1:], attention_mask, cache, num_beams=kwargs["num_beams"], **own)
    cache.batch_repeat_interleave(kwargs["num_beams"])  # (B, ...) -> (B * num_beams, ...), beams of a clip adjacent
    return llm.generate(inputs_embeds=embeds, attention_mask=attention_mask, past_key_values=cache, **kwargs)


def generate_text_ids(llm, input_ids: torch.Tensor, attention_mask: torch.Tensor, kwargs: dict,
                      share_prefill: bool = True, beam_search: str = "llast") -> torch.Tensor:
    """`generate_ids` for a text prompt to a causal LM alone (the two-pass text pass, llast.llm_text): token ids
    of the continuation only, (B, new_tokens). With beam search the prompt is prefilled once per row and
    continued as speech prompts are (`_beams_from_prefill`), greedy as one beam; share_prefill off: transformers' generate.

    input_ids, attention_mask : (B, L) left-padded prompt
    """
    prefill, own = _search_plan(llm, kwargs, share_prefill, beam_search)
    if not prefill or input_ids.shape[1] < 2:
        return llm.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)[:, input_ids.shape[1]:]
    embeds = llm.get_input_embeddings()(input_ids)  # (B, L, H)
    return _beams_from_prefill(llm, embeds, attention_mask, beam.prefill(llm, embeds, attention_mask), kwargs, own)


def _check_array(audio, index: int) -> np.ndarray:
    """A waveform given as an array must already be 16 kHz mono: (S,) finite samples, >= MIN_SECONDS."""
    from llast.audio import check_length
    from llast.errors import AudioError

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
        from llast.model import inference_dtype

        self.cfg = cfg
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if dtype is not None:
            model = model.to(inference_dtype(dtype, self.device))
        self.model = model.to(self.device).eval()
        self.processor = processor or build_processor(cfg.model, encoder_config=model.encoder_config)

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    def decode_config(self, **overrides) -> DecodeConfig:
        """The checkpoint's decoding options with `overrides`, checked (llast.config.check_decode)."""
        return check_decode({**dataclasses.asdict(self.cfg.decode), **overrides})

    @torch.no_grad()
    def generate(self, examples: list[Example], decode: DecodeConfig, progress: bool = False, on_batch=None,
                 heard: list | None = None) -> list[str]:
        """Translations of `examples` (audio already loaded), in input order, batched by length.
        `on_batch(n)` is called after each batch of n clips (progress reporting). With decode.two_pass the
        translate examples are transcribed first and their transcripts translated as text (_two_pass);
        `heard`, a list, then receives the first pass's transcript of each example, in input order."""
        decode = check_decode(decode)
        if decode.two_pass and any(ex.task == "translate" for ex in examples):
            return self._two_pass(examples, decode, progress, on_batch, heard)
        order = sorted(range(len(examples)), key=lambda i: len(examples[i].audio), reverse=True)
        seconds = [len(examples[i].audio) / SAMPLE_RATE for i in order]
        batches = pack_by_duration(order, seconds, decode.max_batch_seconds, decode.batch_size)
        out: list[str | None] = [None] * len(examples)
        kwargs = generate_kwargs(decode, self.tokenizer)
        bar = tqdm(total=len(examples), desc="decoding", unit="clip", disable=not progress, file=sys.stderr)
        for idx in batches:
            batch = self.processor([examples[i] for i in idx], padding_side="left")
            batch = {k: v.to(self.device) for k, v in batch.items()}
            ids = generate_ids(self.model, batch, kwargs, decode.share_prefill, decode.beam_search)
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
            from llast.errors import ConfigError

            raise ConfigError("decode.two_pass: this model's L-LoRA is merged into the LLM; load it with "
                              "llast.load_model(path, two_pass=True) (the CLI does this for --two-pass)")
        heard = [dataclasses.replace(ex, tgt_lang=ex.src_lang, task="transcribe") for ex in examples]
        texts = self.generate(heard, dataclasses.replace(decode, two_pass=False), progress, on_batch)
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
        from llast.llm_text import TRANSLATION_ONLY, TextTranslator

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
        **decode_overrides,
    ):
        """Translate (or transcribe, task="transcribe") one clip or a list of clips.

        audio : a path, a (S,) float32 array at 16 kHz, or a list of those.
        Returns a string for one clip, a list of strings for a list. Audio longer than
        model.encoder.max_seconds (or `chunk_seconds`) is cut into speech segments (llast.segment, Silero
        VAD) whose outputs are joined. segments=True returns the segments instead: a list of
        llast.segment.Segment(start, end, text) per clip (seconds from the clip's start).
        """
        from llast.errors import ConfigError
        from llast.processor import language_name

        if task not in ("translate", "transcribe"):
            raise ConfigError(f"task: {task!r} is not one of translate, transcribe")
        language_name(src), language_name(tgt)  # unknown codes fail here, before any audio is read
        decode = self.decode_config(**decode_overrides)
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


@contextlib.contextmanager
def _text_pass_adapter(llm):
    """The LLM as two-pass decoding's text pass uses it: its text adapter active when it has one
    (llast.checkpoint.TEXT_ADAPTER), else no adapter at all; the L-LoRA is active again afterwards."""
    from llast.checkpoint import TEXT_ADAPTER

    switch = getattr(llm, "llast_adapters", None)  # an int8 LLM with one copy per adapter (llast.quantize)
    if switch is not None:
        from llast.quantize import BASE

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
    Two-pass translation (decode.two_pass; `two_pass`: None = the checkpoint's setting) needs the LLM
    without its L-LoRA: the L-LoRA is then left unmerged (the S-LoRA is still merged).
    dtype : "auto" (bf16 on CUDA and on CPUs with AMX-BF16, int8 on other CPUs; see llast.model.inference_dtype
            and llast.quantize.wants_int8), "float32", "bfloat16", "float16" or "int8" (dynamic int8 Linear
            weights on CPU, llast.quantize). The model is loaded and merged in its training dtype, then cast.
    """
    from llast.checkpoint import load_checkpoint, merge_lora_weights
    from llast.quantize import wants_int8

    wants_int8(dtype, device)  # an unknown dtype fails before the model is loaded
    model, cfg = load_checkpoint(path)
    if two_pass is not None:
        cfg.decode.two_pass = two_pass
    if merge_lora:
        merge_lora_weights(model, ("encoder",) if cfg.decode.two_pass else ("encoder", "llm"))
    return _translator(model, cfg, dtype, device)


def _translator(model, cfg: Config, dtype: str, device: str | None = None) -> Translator:
    """Translator(model, cfg) with weights as `dtype` says: a torch dtype, or int8 (llast.quantize.quantize_int8,
    S-LoRA merged first, from the weights as loaded; what stays float is then cast to fp32)."""
    from llast.quantize import quantize_int8, wants_int8

    if not wants_int8(dtype, device):
        return Translator(model, cfg, device=device, dtype=dtype)
    from llast.checkpoint import merge_lora_weights

    merge_lora_weights(model, ("encoder",))
    translator = Translator(model, cfg, device="cpu")
    quantize_int8(translator.model)  # layer by layer: no whole fp32 copy of the LLM on the way (peak RSS)
    translator.model.float()
    return translator


def load_translator(spec: str, dtype: str = "auto", two_pass: bool | None = None) -> Translator:
    """A checkpoint directory, or a YAML config: the UNTRAINED model it describes (a baseline).
    `two_pass`: None keeps the checkpoint's (or config's) decode.two_pass; True or False sets it."""
    if spec.endswith((".yaml", ".yml")):
        from llast.lora import build_lora_model
        from llast.config import load_config

        cfg = load_config(spec)
        if two_pass is not None:
            cfg.decode.two_pass = two_pass
        torch.manual_seed(cfg.train.seed)  # the untrained adaptor's initialisation
        return _translator(build_lora_model(cfg.model), cfg, dtype)
    return load_model(spec, dtype=dtype, two_pass=two_pass)

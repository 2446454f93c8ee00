"""Decoding: batched beam search (or greedy) with left padding and the KV cache.

`Translator` is the Python API: ``llast.load_model(ckpt).translate("clip.wav", src="fr", tgt="en")``.
Clips are sorted by length and decoded in batches (LLaST's released code decodes one clip at a
time); results come back in input order. Audio longer than the model's maximum is split at quiet
points into chunks whose translations are joined.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from llast.config import Config, DecodeConfig, check_chunk_seconds, check_decode
from llast.processor import Example, build_processor


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
        share_prefill=decode.share_prefill,  # consumed by LLaST.generate
    )


def split_long(audio: np.ndarray, max_seconds: float, sample_rate: int = 16000) -> list[np.ndarray]:
    """Split `audio` (S,) into chunks of at most `max_seconds`, cutting at the quietest 20 ms frame
    in the last third of each window (so words are rarely cut)."""
    limit = int(max_seconds * sample_rate)
    if len(audio) <= limit:
        return [audio]
    frame = sample_rate // 50
    chunks, start = [], 0
    while len(audio) - start > limit:
        lo, hi = start + (2 * limit) // 3, start + limit
        window = audio[lo:hi]
        n = len(window) // frame
        energy = (window[: n * frame].reshape(n, frame) ** 2).mean(axis=1)
        cut = lo + int(np.argmin(energy)) * frame + frame // 2
        chunks.append(audio[start:cut])
        start = cut
    chunks.append(audio[start:])
    from llast.audio import MIN_SAMPLES

    return [c for c in chunks if len(c) >= MIN_SAMPLES]  # a tail under 0.1 s is too short for the encoders


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
    def generate(self, examples: list[Example], decode: DecodeConfig, progress: bool = False, on_batch=None) -> list[str]:
        """Translations of `examples` (audio already loaded), in input order, batched by length.
        `on_batch(n)` is called after each batch of n clips (progress reporting)."""
        decode = check_decode(decode)
        order = sorted(range(len(examples)), key=lambda i: len(examples[i].audio), reverse=True)
        out: list[str | None] = [None] * len(examples)
        kwargs = generate_kwargs(decode, self.tokenizer)
        batches, cur, cur_max = [], [], 0
        for i in order:
            n = len(examples[i].audio)
            longest = max(cur_max, n)
            if cur and (len(cur) + 1 > decode.batch_size or longest * (len(cur) + 1) / 16000 > decode.max_batch_seconds):
                batches.append(cur)
                cur, longest = [], n
            cur.append(i)
            cur_max = longest
        if cur:
            batches.append(cur)
        bar = tqdm(total=len(examples), desc="decoding", unit="clip", disable=not progress, file=sys.stderr)
        for idx in batches:
            batch = self.processor([examples[i] for i in idx], padding_side="left")
            batch = {k: v.to(self.device) for k, v in batch.items()}
            ids = self.model.generate(**batch, **kwargs)
            texts = self.tokenizer.batch_decode(ids, skip_special_tokens=True)
            for i, t in zip(idx, texts):
                out[i] = t.strip()
            bar.update(len(idx))
            if on_batch is not None:
                on_batch(len(idx))
        bar.close()
        return out  # type: ignore[return-value]

    def translate(
        self, audio, src: str, tgt: str = "en", task: str = "translate", progress: bool = False,
        chunk_seconds: float | None = None, **decode_overrides,
    ):
        """Translate (or transcribe, task="transcribe") one clip or a list of clips.

        audio : a path, a (S,) float32 array at 16 kHz, or a list of those.
        Returns a string for one clip, a list of strings for a list. Clips longer than
        model.encoder.max_seconds are split into chunks whose outputs are joined.
        """
        from llast.audio import load_audio
        from llast.errors import ConfigError
        from llast.processor import language_name

        if task not in ("translate", "transcribe"):
            raise ConfigError(f"task: {task!r} is not one of translate, transcribe")
        language_name(src), language_name(tgt)  # unknown codes fail here, before any audio is read
        decode = self.decode_config(**decode_overrides)
        max_s = check_chunk_seconds(chunk_seconds, self.cfg.model.encoder.max_seconds) or self.cfg.model.encoder.max_seconds
        single = isinstance(audio, (str, Path, np.ndarray))
        items = [audio] if single else list(audio)
        examples, owner = [], []
        for k, item in enumerate(items):
            # Whole files are read (any length); long ones are split below, so no max_seconds here.
            wav = load_audio(item) if isinstance(item, (str, Path)) else _check_array(item, k)
            for chunk in split_long(wav, max_s):
                examples.append(Example(chunk, src, src if task == "transcribe" else tgt, task))
                owner.append(k)
        texts = self.generate(examples, decode, progress=progress)
        joined = [" ".join(t for t, o in zip(texts, owner) if o == k and t) for k in range(len(items))]
        return joined[0] if single else joined


def translate_cli(args, overrides: dict) -> int:
    from llast.audio import audio_duration
    from llast.checkpoint import load_model

    from llast.processor import language_name

    language_name(args.src), language_name(args.tgt)  # an unknown code, a missing or unreadable file:
    for path in args.files:  # errors before the model is loaded
        audio_duration(path)
    translator = load_model(args.model, dtype=args.dtype)
    tgt = args.src if args.task == "transcribe" else args.tgt
    texts = translator.translate(
        list(args.files), args.src, tgt, task=args.task, progress=len(args.files) > 1,
        chunk_seconds=args.chunk_seconds, **overrides,
    )
    for path, text in zip(args.files, texts):
        if args.json:
            print(json.dumps({"file": path, "src": args.src, "tgt": tgt, "task": args.task, "text": text}, ensure_ascii=False))
        else:
            print(f"{path}\t{text}")
    return 0

"""The text and feature side of LLaST: prompts, chat templates, labels, log-mel features.

The processor turns clips and their language pair into one batch dict whose keys are the model's
forward arguments (``model(**batch)``). Dimension legend used below:

    B  clips in the batch          S  audio samples (16 kHz)       F  feature frames (mel: 100 Hz)
    L  prompt+target tokens        N  audio embeddings of a clip (``audio_embed_length``)

Batch dict:
    input_features   (B, n_mels, F) float   Whisper log-mel; wav2vec2/HuBERT: (B, S) normalised waveform
    audio_lengths    (B,) long              real samples per clip (the rest is padding)
    input_ids        (B, L) long            prompt tokens; audio slots hold AUDIO_TOKEN_ID
    attention_mask   (B, L) long            1 on real tokens (incl. audio slots), 0 on padding
    labels           (B, L) long            -100 except on the target tokens and EOS (training only)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from transformers import AutoConfig, AutoTokenizer, WhisperFeatureExtractor

from llast.audio import HOP_LENGTH, N_SAMPLES_30S
from llast.config import ModelConfig, PromptConfig
from llast.errors import ConfigError
from llast.model import (
    AUDIO_TOKEN_ID,
    IGNORE_INDEX,
    audio_embed_length,
    encoder_family,
    kept_config_dir,
    load_encoder_config,
    resolve_name,
)

# CoVoST-2's languages (codes as CoVoST writes them) and a few more.
LANGUAGES = {
    "en": "English", "fr": "French", "de": "German", "es": "Spanish", "it": "Italian", "ja": "Japanese",
    "zh-CN": "Chinese", "zh": "Chinese", "ca": "Catalan", "fa": "Persian", "ru": "Russian", "pt": "Portuguese",
    "nl": "Dutch", "tr": "Turkish", "et": "Estonian", "mn": "Mongolian", "ar": "Arabic", "lv": "Latvian",
    "sl": "Slovenian", "sv-SE": "Swedish", "sv": "Swedish", "cy": "Welsh", "ta": "Tamil", "id": "Indonesian",
    "ko": "Korean",
}

_SLOT = "\x00AUDIO\x00"  # marks where the audio goes in the rendered template; never tokenized


def language_name(code: str) -> str:
    try:
        return LANGUAGES[code]
    except KeyError:
        raise ConfigError(f"unknown language code {code!r}; known: {', '.join(sorted(LANGUAGES))}") from None


# The released LLaST code's instructions and the XTuner templates it wraps them in ({input} = "<audio>\n" +
# instruction). Its TinyLlama template ends with a literal "</s>" after <|assistant|>: kept, because
# checkpoints trained with it expect it.
RELEASED_INSTRUCTIONS = {"translate": "Please translate the {src} sentence into {tgt}.",
                         "transcribe": "Please transcribe the {src} sentence into {src}."}
RELEASED_TEMPLATES = {"tinyllama": "<|user|>\n{input}</s>\n<|assistant|></s>\n", "llama2": "[INST] {input} [/INST]"}


def instruction(prompt: PromptConfig, src: str, tgt: str, task: str) -> str:
    """The paper's instruction, e.g. 'Translate the French sentence into English.'"""
    if task not in ("translate", "transcribe"):
        raise ConfigError(f"unknown task {task!r} (translate or transcribe)")
    if prompt.preset == "released":
        return RELEASED_INSTRUCTIONS[task].format(src=language_name(src), tgt=language_name(tgt))
    if task == "translate":
        return prompt.translate.format(src=language_name(src), tgt=language_name(tgt))
    if task == "transcribe":
        return prompt.transcribe.format(src=language_name(src))
    raise ConfigError(f"unknown task {task!r} (translate or transcribe)")


def whisper_log_mel(audio: torch.Tensor, mel_filters: torch.Tensor) -> torch.Tensor:
    """Whisper's log-mel spectrogram (same maths as openai/whisper and HF's feature extractor).

    audio : (S,) float32 at 16 kHz;  mel_filters : (n_mels, 201)
    returns (n_mels, S // 160)
    """
    window = torch.hann_window(400)
    stft = torch.stft(audio, 400, HOP_LENGTH, window=window, return_complex=True)
    magnitudes = (stft[..., :-1].abs() ** 2).contiguous()
    mel = mel_filters @ magnitudes
    log_spec = torch.clamp(mel, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


@dataclass
class Example:
    """One clip with its task; `target` is None at inference."""

    audio: np.ndarray  # (S,) float32, 16 kHz
    src_lang: str
    tgt_lang: str
    task: str = "translate"
    target: str | None = None
    num_samples: int | None = None  # the clip's length when `audio` is None (encoder states come from a cache)


class Processor:
    """Builds model batches: features from audio, prompt ids with audio slots, labels."""

    def __init__(self, tokenizer, encoder_config, cfg: ModelConfig):
        self.tokenizer = tokenizer
        self.encoder_config = encoder_config
        self.cfg = cfg
        self.family = encoder_family(encoder_config)
        if self.family == "whisper":
            fe = WhisperFeatureExtractor(feature_size=encoder_config.num_mel_bins)
            self.mel_filters = torch.from_numpy(np.asarray(fe.mel_filters, dtype=np.float32)).T.contiguous()
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.use_template = cfg.prompt.use_chat_template and getattr(tokenizer, "chat_template", None)
        self._prefix_cache: dict[tuple, tuple[list[int], list[int]]] = {}

    # ------------------------------------------------------------------ text side
    def prompt_parts(self, src: str, tgt: str, task: str) -> tuple[list[int], list[int]]:
        """Token ids before and after the audio slot, rendered with the tokenizer's own chat template."""
        key = (src, tgt, task)
        if key not in self._prefix_cache:
            text = instruction(self.cfg.prompt, src, tgt, task)
            if self.cfg.prompt.preset == "released":
                template = RELEASED_TEMPLATES[released_family(self.tokenizer, self.cfg.llm.name)]
                rendered = (self.tokenizer.bos_token or "") + template.format(input=f"{_SLOT}\n{text}")
            elif self.use_template:
                messages = [{"role": "user", "content": f"{_SLOT}\n{text}"}]
                if self.cfg.prompt.system is not None:
                    messages.insert(0, {"role": "system", "content": self.cfg.prompt.system})
                rendered = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            else:
                rendered = (self.tokenizer.bos_token or "") + f"{_SLOT}\n{text}\n"
            before, after = rendered.split(_SLOT)
            ids_before = self.tokenizer(before, add_special_tokens=False)["input_ids"]
            ids_after = self.tokenizer(after, add_special_tokens=False)["input_ids"]
            self._prefix_cache[key] = (ids_before, ids_after)
        return self._prefix_cache[key]

    def target_ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id]

    def num_audio_embeddings(self, num_samples: int) -> int:
        return int(audio_embed_length(num_samples, self.encoder_config, self.cfg))

    # ------------------------------------------------------------------ audio side
    def features(self, audios: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """input_features and audio_lengths for a list of (S_i,) waveforms."""
        lengths = torch.tensor([len(a) for a in audios], dtype=torch.long)
        pad30 = self.cfg.encoder.input_length in ("pad30", "pad30_full")
        if self.family == "whisper":
            if pad30:
                mels = [whisper_log_mel(_pad_to(torch.from_numpy(a), N_SAMPLES_30S), self.mel_filters) for a in audios]
            else:
                mels = [whisper_log_mel(torch.from_numpy(a), self.mel_filters) for a in audios]
            frames = max(m.shape[-1] for m in mels)
            frames += frames % 2  # even, so the stride-2 conv sees whole pairs
            feats = torch.zeros(len(mels), mels[0].shape[0], frames)
            for i, m in enumerate(mels):
                feats[i, :, : m.shape[-1]] = m
            return feats, lengths
        # wav2vec 2.0 / HuBERT: zero-mean unit-variance raw waveform, zero padded.
        total = N_SAMPLES_30S if pad30 else int(lengths.max())
        feats = torch.zeros(len(audios), total)
        for i, a in enumerate(audios):
            x = torch.from_numpy(a)
            feats[i, : len(a)] = (x - x.mean()) / torch.sqrt(x.var(unbiased=False) + 1e-7)
        return feats, lengths

    # ------------------------------------------------------------------ batches
    def __call__(self, examples: list[Example], padding_side: str | None = None) -> dict[str, torch.Tensor]:
        """Batch for training (targets given: right padding, labels) or generation (left padding)."""
        training = all(e.target is not None for e in examples)
        if padding_side is None:
            padding_side = "right" if training else "left"
        if all(e.audio is not None for e in examples):
            feats, lengths = self.features([e.audio for e in examples])
        elif all(e.audio is None and e.num_samples for e in examples):  # the caller adds encoder_states
            feats, lengths = None, torch.tensor([e.num_samples for e in examples], dtype=torch.long)
        else:
            raise ValueError("Processor: give every example its audio, or none of them (then num_samples)")
        rows, label_rows = [], []
        for e, n_samples in zip(examples, lengths.tolist()):
            before, after = self.prompt_parts(e.src_lang, e.tgt_lang, e.task)
            n_audio = self.num_audio_embeddings(n_samples)
            ids = before + [AUDIO_TOKEN_ID] * n_audio + after
            labels = [IGNORE_INDEX] * len(ids)
            if training:
                tgt = self.target_ids(e.target)
                ids = ids + tgt
                labels = labels + tgt
            rows.append(ids)
            label_rows.append(labels)
        width = max(len(r) for r in rows)
        pad_id = self.tokenizer.pad_token_id
        input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        for i, (ids, lab) in enumerate(zip(rows, label_rows)):
            sl = slice(0, len(ids)) if padding_side == "right" else slice(width - len(ids), width)
            input_ids[i, sl] = torch.tensor(ids)
            attention_mask[i, sl] = 1
            labels[i, sl] = torch.tensor(lab)
        batch = {"audio_lengths": lengths, "input_ids": input_ids, "attention_mask": attention_mask}
        if feats is not None:
            batch["input_features"] = feats
        if training:
            batch["labels"] = labels
        return batch


def released_family(tokenizer, llm_name: str) -> str:
    """Which released template fits this LLM: 'tinyllama' (Zephyr-style <|user|>/<|assistant|>) or 'llama2'
    ([INST] ... [/INST]), from the tokenizer's chat template, else from the model name."""
    template = getattr(tokenizer, "chat_template", None) or ""
    name = llm_name.lower()
    if "<|assistant|>" in template or "tinyllama" in name:
        return "tinyllama"
    if "[INST]" in template or "llama-2" in name or "llama2" in name:
        return "llama2"
    raise ConfigError(f"model.prompt.preset: 'released' has templates for TinyLlama and Llama-2 only; "
                      f"{llm_name!r} is neither (by its tokenizer's chat template or its name)")


def _pad_to(x: torch.Tensor, n: int) -> torch.Tensor:
    return torch.nn.functional.pad(x, (0, n - x.shape[-1])) if x.shape[-1] < n else x[..., :n]


def build_processor(cfg: ModelConfig, encoder_config=None, tokenizer=None) -> Processor:
    """Processor for `cfg`, loading the LLM tokenizer and encoder config by name when not given."""
    if tokenizer is None:
        tokenizer = load_tokenizer(cfg)
    if encoder_config is None:
        encoder_config = load_encoder_config(cfg.encoder.name, random_init=cfg.random_init)
    return Processor(tokenizer, encoder_config, cfg)


def load_tokenizer(cfg: ModelConfig):
    """The LLM's tokenizer: model.llm.tokenizer if set, else the LLM's own. With random_init, one whose
    vocabulary does not fit the LLM's vocab_size is an error (its ids would index past the embeddings)."""
    name = cfg.llm.tokenizer or cfg.llm.name
    source = kept_config_dir(name) if cfg.random_init and not cfg.llm.tokenizer else resolve_name(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError, TypeError) as e:
        if cfg.random_init and not cfg.llm.tokenizer:
            raise ConfigError(f"{source}: no tokenizer kept for {cfg.llm.name} (only its config.json); set "
                              "model.llm.tokenizer=NAME_OR_DIR to a tokenizer whose vocabulary fits") from None
        raise ConfigError(f"{name}: cannot load its tokenizer: {e}") from None
    if cfg.random_init:
        vocab = AutoConfig.from_pretrained(kept_config_dir(cfg.llm.name)).get_text_config().vocab_size
        if len(tokenizer) > vocab:
            raise ConfigError(f"model.llm.tokenizer: {name} has {len(tokenizer)} tokens, more than the LLM's "
                              f"vocab_size {vocab}")
    return tokenizer

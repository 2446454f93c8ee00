"""Tiny random models of the REAL architectures, written as ordinary HF model directories, so the
tests go through the same by-path loading that users' hub ids and local paths take."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from llast.config import Config, from_dict

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS = [
    "Translate the French sentence into English.",
    "Transcribe the German sentence into German.",
    "Translate the Spanish sentence into English. Italian Japanese Chinese",
    "hello world this is a small test of the tiny tokenizer",
    "bonjour le monde guten tag hola mundo",
    "user assistant system",
]


def make_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<pad>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_CORPUS * 3, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<pad>")
    fast.chat_template = CHATML
    return fast


def write_llm(path: Path, arch: str = "llama", seed: int = 0) -> Path:
    """A tiny causal LM (llama | qwen2 | gemma3) with the tiny tokenizer."""
    from transformers import AutoModelForCausalLM, Gemma3TextConfig, LlamaConfig, Qwen2Config

    tok = make_tokenizer()
    common = dict(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=2048, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
        bos_token_id=None, tie_word_embeddings=False,
    )
    if arch == "llama":
        config = LlamaConfig(**common)
    elif arch == "qwen2":
        config = Qwen2Config(**common)
    elif arch == "gemma3":
        config = Gemma3TextConfig(**common, head_dim=8, sliding_window=64)
    else:
        raise ValueError(arch)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def write_whisper(path: Path, seed: int = 0) -> Path:
    """A tiny Whisper (encoder AND decoder saved, like a real checkpoint)."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    config = WhisperConfig(
        vocab_size=100, num_mel_bins=80, d_model=16, encoder_layers=2, encoder_attention_heads=4,
        decoder_layers=1, decoder_attention_heads=4, encoder_ffn_dim=32, decoder_ffn_dim=32,
        max_source_positions=1500, max_target_positions=64, decoder_start_token_id=1, pad_token_id=0,
        bos_token_id=1, eos_token_id=2,
    )
    torch.manual_seed(seed)
    WhisperForConditionalGeneration(config).save_pretrained(path)
    return path


def write_wav2vec2(path: Path, seed: int = 0, hubert: bool = False) -> Path:
    from transformers import HubertConfig, HubertModel, Wav2Vec2Config, Wav2Vec2Model

    kw = dict(
        hidden_size=16, num_hidden_layers=2, num_attention_heads=4, intermediate_size=32,
        conv_dim=(16, 16, 16), conv_stride=(5, 4, 4), conv_kernel=(10, 4, 4), num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2, feat_extract_norm="layer", do_stable_layer_norm=True,
    )
    torch.manual_seed(seed)
    model = HubertModel(HubertConfig(**kw)) if hubert else Wav2Vec2Model(Wav2Vec2Config(**kw))
    model.save_pretrained(path)
    return path


def tiny_config(encoder_dir: Path, llm_dir: Path, **overrides) -> Config:
    data = {
        "model": {
            "encoder": {"name": str(encoder_dir), "lora": {"r": 4, "alpha": 8, "dropout": 0.0}},
            "llm": {"name": str(llm_dir), "lora": {"r": 4, "alpha": 8, "dropout": 0.0}},
        },
    }
    cfg = from_dict(data)
    for key, value in overrides.items():
        obj = cfg
        parts = key.split("__")
        for p in parts[:-1]:
            obj = getattr(obj, p)
        setattr(obj, parts[-1], value)
    return cfg


def clip(seconds: float, seed: int = 0, freq: float = 220.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.3 * np.sin(2 * np.pi * freq * t) + 0.05 * rng.standard_normal(t.shape)).astype(np.float32)


_WORDS = ["hello", "world", "this", "is", "a", "small", "test", "bonjour", "le", "monde", "guten", "tag", "hola", "mundo"]


def write_corpus(root: Path, directions=("fr_en", "de_en"), n_train: int = 12, n_dev: int = 4, seed: int = 0) -> Path:
    """A tiny CoVoST-2-format corpus of tone clips (0.4-1.6 s) with short texts from the tiny vocabulary."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    for d in directions:
        src = d.split("_")[0]
        clips = root / src / "clips_16k"
        clips.mkdir(parents=True, exist_ok=True)
        for split, n in (("train", n_train), ("dev", n_dev)):
            lines = ["path\tsentence\ttranslation\tclient_id"]
            for i in range(n):
                name = f"{src}_{split}_{i}.wav"
                seconds = float(rng.uniform(0.4, 1.6))
                sf.write(clips / name, clip(seconds, seed=i, freq=float(rng.uniform(150, 600))), 16000)
                words = " ".join(rng.choice(_WORDS, size=int(rng.integers(1, 4))))
                lines.append(f"{name}\t{words} {src}\t{words}\tspk{i % 3}")
            (root / f"covost_v2.{d}.{split}.tsv").write_text("\n".join(lines) + "\n")
    return root


def write_train_yaml(path: Path, encoder_dir: Path, llm_dir: Path, corpus: Path, out_dir: Path, **train) -> Path:
    import yaml

    cfg = {
        "model": {
            "encoder": {"name": str(encoder_dir), "lora": {"r": 4, "alpha": 8, "dropout": 0.05}},
            "adaptor": {"stack": 2},
            "llm": {"name": str(llm_dir), "lora": {"r": 4, "alpha": 8, "dropout": 0.05}},
        },
        "data": {
            "train": [{"format": "covost", "path": str(corpus / "covost_v2.fr_en.train.tsv")},
                      {"format": "covost", "path": str(corpus / "covost_v2.de_en.train.tsv")}],
            "dev": [{"format": "covost", "path": str(corpus / "covost_v2.fr_en.dev.tsv")}],
            "batching": "count",
            "batch_size": 4,
        },
        "train": {"out_dir": str(out_dir), "lr": 3e-3, "log_every": 1, "save_every": 100, "seed": 0, **train},
        "decode": {"num_beams": 2, "max_new_tokens": 8},
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def lora_checkpoint(tiny_dirs: dict, path: Path, num_beams: int = 2, max_new_tokens: int = 5) -> Path:
    """A saved tiny Whisper + Llama checkpoint whose LoRA weights are random (not the identity), decoding with
    `num_beams` beams and at most `max_new_tokens` new tokens (by default 2 and 5: the cheapest model a server
    can serve in tests)."""
    from llast.checkpoint import save_checkpoint
    from llast.lora import apply_lora
    from llast.model import build_model

    import dataclasses

    cfg = tiny_config(tiny_dirs["whisper"], tiny_dirs["llama"])
    cfg.decode = dataclasses.replace(cfg.decode, max_new_tokens=max_new_tokens, num_beams=num_beams)
    torch.manual_seed(0)
    model = build_model(cfg.model)
    apply_lora(model, cfg.model)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return save_checkpoint(model, cfg, path)


# Two German sentences outside llast-mini's training, and a word of each that its first pass hears.
HEARD_DE = {"Ich habe heute keine Zeit.": "zeit", "Das Wetter ist heute sehr schön.": "wetter"}


def german_test_clips(folder: Path) -> list[str]:
    """HEARD_DE's sentences spoken by an espeak-ng test voice (llast.synth, seed 123, no noise): WAV paths."""
    from llast.synth import _clip_job, _render

    paths = []
    for i, text in enumerate(HEARD_DE):
        job = _clip_job(f"t{i}.wav", text, "de", folder / f"t{i}.wav", seed=123, noise=0.0, split="test")
        _render(job)
        paths.append(str(job["path"]))
    return paths

"""The bundled models, prepared for real (``assets.prepare`` is idempotent: a no-op once done).

First run converts them (~1-2 min); later runs load the prepared folders under ``$LLAST_HOME``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from llast import assets

pytestmark = pytest.mark.real

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
NAMES = ["whisper-base", "whisper-tiny.en", "smollm2-135m-instruct", "gemma3-270m", "qwen2.5-coder-0.5b-instruct"]


@pytest.fixture(scope="module")
def prepared() -> dict[str, Path]:
    return assets.prepare(NAMES)


@pytest.fixture(scope="module")
def whisper_base(prepared):
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    path = prepared["whisper-base"]
    return WhisperForConditionalGeneration.from_pretrained(path).eval(), WhisperProcessor.from_pretrained(path)


def _normalise(text: str) -> str:
    text = text.lower().replace("-", " ")
    text = re.sub(r"[^a-z0-9' ]+", " ", text)
    return " ".join(text.split())


def _read_transcriptions(path: Path) -> dict[str, str]:
    """Sphinx format, one per line: ``<s> words </s> (utterance-id)``."""
    out = {}
    for line in path.read_text().splitlines():
        m = re.match(r"\s*(?:<s>)?\s*(.*?)\s*(?:</s>)?\s*\(([^)]+)\)\s*$", line)
        if m:
            out[m.group(2)] = m.group(1)
    return out


def _transcribe(model, processor, audio: np.ndarray, **kw) -> str:
    feats = processor.feature_extractor(audio, sampling_rate=16000, return_tensors="pt").input_features
    with torch.no_grad():
        ids = model.generate(feats, **kw)
    return processor.batch_decode(ids, skip_special_tokens=True)[0].strip()


@pytest.mark.skipif(not LIBRIVOX.is_dir(), reason="Debian pocketsphinx-testdata not installed")
def test_whisper_base_transcribes_librivox(whisper_base):
    import jiwer
    import soundfile as sf

    model, processor = whisper_base
    refs = _read_transcriptions(LIBRIVOX / "transcription")
    wavs = sorted(LIBRIVOX.glob("*.wav"))
    assert wavs and all(w.stem in refs for w in wavs)
    hyps, truths = [], []
    for wav in wavs:
        audio, sr = sf.read(wav, dtype="float32")
        assert sr == 16000
        hyps.append(_normalise(_transcribe(model, processor, audio, language="en", task="transcribe")))
        truths.append(_normalise(refs[wav.stem]))
    wer = jiwer.wer(truths, hyps)
    assert wer <= 0.25, f"WER {wer:.3f}: {list(zip(truths, hyps))}"


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_whisper_base_translates_german_speech(whisper_base, tmp_path):
    import soundfile as sf
    import soxr

    model, processor = whisper_base
    wav = tmp_path / "de.wav"
    subprocess.run(["espeak-ng", "-v", "de", "-w", str(wav), "Guten Morgen, wie geht es dir?"], check=True)
    audio, sr = sf.read(wav, dtype="float32")
    audio = soxr.resample(audio, sr, 16000)
    german = _transcribe(model, processor, audio, language="de", task="transcribe")
    english = _transcribe(model, processor, audio, language="de", task="translate")
    assert "guten morgen" in german.lower(), german
    words = set(_normalise(english).split())
    assert {"good", "morning"} <= words, english


@pytest.mark.skipif(not LIBRIVOX.is_dir(), reason="Debian pocketsphinx-testdata not installed")
def test_whisper_tiny_en_transcribes_without_language(prepared):
    import soundfile as sf
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    path = prepared["whisper-tiny.en"]
    model, processor = WhisperForConditionalGeneration.from_pretrained(path).eval(), WhisperProcessor.from_pretrained(path)
    assert not model.generation_config.is_multilingual
    wav = LIBRIVOX / "sense_and_sensibility_01_austen_64kb-0870.wav"  # "and mister john dashwood had then leisure..."
    audio, _ = sf.read(wav, dtype="float32")
    text = _transcribe(model, processor, audio)  # no language/task: .en models take neither
    assert {"john", "dashwood", "leisure", "prudently", "power"} <= set(_normalise(text).split()), text


def test_smollm2_completes_paris(prepared):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = prepared["smollm2-135m-instruct"]
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    assert getattr(model.config, "quantization_config", None) is None
    inputs = tok("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    text = tok.decode(out[0, inputs.input_ids.shape[1]:], skip_special_tokens=True)
    assert "Paris" in text, text
    assert "<|im_start|>assistant" in tok.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)


def test_gemma3_loads_with_chat_template(prepared):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = prepared["gemma3-270m"]
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    assert getattr(model.config, "quantization_config", None) is None
    prompt = tok.apply_chat_template([{"role": "user", "content": "Übersetze: Guten Tag"}], tokenize=False,
                                     add_generation_prompt=True)
    assert "<start_of_turn>user\n" in prompt and prompt.endswith("<start_of_turn>model\n")
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False).input_ids
    with torch.no_grad():
        logits = model(input_ids=ids).logits  # (1, T, vocab)
    assert logits.shape == (1, ids.shape[1], model.config.vocab_size)
    assert torch.isfinite(logits).all()


def test_prepare_again_is_a_no_op(prepared, capsys):
    capsys.readouterr()
    again = assets.prepare(NAMES)
    assert again == prepared
    err = capsys.readouterr().err
    assert err.count("already prepared") == len(NAMES)


def test_smollm2_prompt_without_its_default_system_message(prepared):
    """model.prompt.system='' replaces the system message SmolLM2's template inserts by itself."""
    from llast.config import load_config
    from llast.model import load_encoder_config
    from llast.processor import build_processor

    names = [f"model.llm.name={prepared['smollm2-135m-instruct']}", f"model.encoder.name={prepared['whisper-base']}"]
    config = Path(__file__).resolve().parents[1] / "configs" / "mini.yaml"

    def before(*extra):
        cfg = load_config(config, names + list(extra))
        proc = build_processor(cfg.model, encoder_config=load_encoder_config(cfg.model.encoder.name))
        return proc.tokenizer.decode(proc.prompt_parts("de", "en", "translate")[0]), len(proc.prompt_parts("de", "en", "translate")[0])

    default_text, default_len = before()
    empty_text, empty_len = before("model.prompt.system=''")
    assert "SmolLM" in default_text and "SmolLM" not in empty_text
    assert empty_len <= default_len - 10, (default_len, empty_len)


def test_qwen_translates_german_and_french(prepared):
    """The bundled Qwen2.5-Coder translates through its chat template, with LLaST's instruction, greedy, batched."""
    from llast.config import DecodeConfig, PromptConfig
    from llast.llm_text import TRANSLATION_ONLY, TextTranslator

    tr = TextTranslator.load(str(prepared["qwen2.5-coder-0.5b-instruct"]), PromptConfig(system=TRANSLATION_ONLY),
                             dtype="float32")
    assert tr.tokenizer.convert_tokens_to_ids("<|im_end|>") == tr.tokenizer.eos_token_id  # a reply ends there
    decode = DecodeConfig(num_beams=1, max_new_tokens=32)
    german = ["Der Hund schläft im Garten.", "Ich trinke jeden Morgen einen Kaffee."]
    french = ["Le chat mange du poisson.", "Ma sœur aime lire des livres."]
    en_de = [set(_normalise(t).split()) for t in tr.translate(german, "de", "en", decode)]
    en_fr = [set(_normalise(t).split()) for t in tr.translate(french, "fr", "en", decode)]
    assert {"dog", "garden"} <= en_de[0] and {"coffee", "morning"} <= en_de[1], en_de
    assert {"cat", "fish"} <= en_fr[0] and {"sister", "books"} <= en_fr[1], en_fr

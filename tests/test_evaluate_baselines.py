"""`llast evaluate --baseline cascade|text` and llast.llm_text on tiny random models, through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import tiny
from llast.cli import main
from llast.config import DecodeConfig, PromptConfig
from llast.llm_text import TRANSLATION_ONLY, TextTranslator

DECODE = ["--num-beams", "1", "--max-new-tokens", "5", "--dtype", "float32"]


@pytest.fixture(scope="module")
def whisper_dir(tmp_path_factory):
    """A tiny multilingual Whisper with its tokenizer and processor files (what --asr needs), made the
    way bundled ones are: written as CTranslate2 and converted."""
    from test_convert import hf_whisper_to_ct2_vars, tiny_whisper, write_ct2, write_whisper_side_files

    from llast.convert import ctranslate2_whisper_to_hf

    root = tmp_path_factory.mktemp("asr")
    write_whisper_side_files(root / "data", multilingual=True)
    write_ct2(root / "model.bin", hf_whisper_to_ct2_vars(tiny_whisper(multilingual=True)),
              aliases={"decoder/projection/weight": "decoder/embeddings/weight"})
    return ctranslate2_whisper_to_hf(root / "model.bin", root / "data", root / "hf")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return tiny.write_corpus(tmp_path_factory.mktemp("corpus"), directions=("fr_en", "de_en"), n_train=0, n_dev=5)


def _lines(path) -> list[str]:
    return Path(path).read_text(encoding="utf-8").splitlines()


def _tsv_rows(tsv) -> list[list[str]]:
    return [line.split("\t") for line in _lines(tsv)[1:]]


def test_prompt_is_llast_instruction_then_source_in_chat_template(tiny_dirs):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tiny_dirs["qwen2"]
    model, tok = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    text = TextTranslator(model, tok, PromptConfig(system=TRANSLATION_ONLY)).render("bonjour le monde", "fr", "en")
    assert text == ("<|im_start|>system\nReply with the translation only.<|im_end|>\n"
                    "<|im_start|>user\nTranslate the French sentence into English.\nbonjour le monde<|im_end|>\n"
                    "<|im_start|>assistant\n")
    custom = PromptConfig(translate="Render this {src} into {tgt}:", system=None)
    assert TextTranslator(model, tok, custom).render("hola", "es", "en") == (
        "<|im_start|>user\nRender this Spanish into English:\nhola<|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.parametrize("num_beams", [1, 2])
def test_batched_translation_equals_one_at_a_time(tiny_dirs, num_beams):
    """Left padding changes nothing: a batch of prompts of different lengths decodes as each alone."""
    tr = TextTranslator.load(str(tiny_dirs["llama"]), dtype="float32")
    texts = ["hello", "bonjour le monde guten tag hola mundo this is a small test", "", "guten tag"]
    decode = DecodeConfig(num_beams=num_beams, max_new_tokens=6, batch_size=4)
    batched = tr.translate(texts, "de", "en", decode)
    alone = [tr.translate([t], "de", "en", decode)[0] for t in texts]
    assert batched == alone
    assert batched[2] == ""  # nothing heard, nothing to translate: the LLM is not asked
    assert any(batched)


def test_text_baseline_through_the_cli(tiny_dirs, corpus, tmp_path, capsys):
    llm = str(tiny_dirs["qwen2"])
    data = [str(corpus / "covost_v2.fr_en.dev.tsv"), str(corpus / "covost_v2.de_en.dev.tsv")]
    out = tmp_path / "text"
    assert main(["evaluate", "--baseline", "text", "--llm", llm, "--data", *data, "--out", str(out), *DECODE]) == 0
    scores = json.loads((out / "score.json").read_text())
    assert scores["meta"]["llm"] == llm and scores["meta"]["llm_system_message"] == TRANSLATION_ONLY
    assert scores["meta"]["instruction"] == PromptConfig().translate
    assert set(scores["sets"]) == {"fr-en.translate", "de-en.translate"}
    tr = TextTranslator.load(llm, PromptConfig(system=TRANSLATION_ONLY), dtype="float32")
    for src, tsv in (("fr", data[0]), ("de", data[1])):
        r = scores["sets"][f"{src}-en.translate"]
        assert r["n"] == 5 and r["skipped"] == 0
        assert {"bleu", "chrf", "bleu_signature", "chrf_signature", "decode_seconds"} <= set(r)
        assert "asr_wer" not in r
        rows = _tsv_rows(tsv)
        assert _lines(out / f"{src}-en.translate.src.txt") == [row[1] for row in rows]  # the gold sentences
        assert _lines(out / f"{src}-en.translate.ref.txt") == [row[2] for row in rows]
        expected = tr.translate([row[1] for row in rows], src, "en", DecodeConfig(num_beams=1, max_new_tokens=5))
        assert _lines(out / f"{src}-en.translate.hyp.txt") == expected and any(expected)
    assert "fr-en.translate: n=5  BLEU" in capsys.readouterr().out


def test_cascade_baseline_through_the_cli(tiny_dirs, whisper_dir, corpus, tmp_path, capsys):
    llm = str(tiny_dirs["llama"])
    tsv = corpus / "covost_v2.de_en.dev.tsv"
    out = tmp_path / "cascade"
    argv = ["evaluate", "--baseline", "cascade", "--asr", str(whisper_dir), "--llm", llm, "--llm-system", "template",
            "--data", str(tsv), "--out", str(out), *DECODE]
    assert main(argv) == 0
    scores = json.loads((out / "score.json").read_text())
    r = scores["sets"]["de-en.translate"]
    assert r["n"] == 5 and r["skipped"] == 0
    assert {"bleu", "chrf", "asr_wer", "asr_cer", "asr_decode_seconds", "audio_seconds", "real_time_factor"} <= set(r)
    assert scores["meta"]["asr"] == str(whisper_dir) and scores["meta"]["llm_system_message"] is None
    # The ASR half, scored like `--baseline whisper --task transcribe`: WER against the German sentences.
    asr = json.loads((out / "asr" / "score.json").read_text())["sets"]["de-de.transcribe"]
    assert r["asr_wer"] == asr["wer"] and r["asr_cer"] == asr["cer"] and r["asr_wer"] > 0
    rows = _tsv_rows(tsv)
    assert _lines(out / "asr" / "de-de.transcribe.ref.txt") == [row[1] for row in rows]
    transcripts = _lines(out / "asr" / "de-de.transcribe.hyp.txt")
    assert any(transcripts)
    # The translations are the LLM's, of those transcripts, with the template's own system message.
    assert _lines(out / "de-en.translate.src.txt") == transcripts
    tr = TextTranslator.load(llm, PromptConfig(system=None), dtype="float32")
    expected = tr.translate(transcripts, "de", "en", DecodeConfig(num_beams=1, max_new_tokens=5))
    assert _lines(out / "de-en.translate.hyp.txt") == expected
    assert _lines(out / "de-en.translate.ref.txt") == [row[2] for row in rows]
    assert f"de-en.translate: ASR WER {r['asr_wer']:.3f}" in capsys.readouterr().out

    # Another LLM on the same transcripts: --transcripts reads them instead of running Whisper again.
    other = str(tiny_dirs["qwen2"])
    argv = ["evaluate", "--baseline", "cascade", "--transcripts", str(out / "asr"), "--llm", other,
            "--data", str(tsv), "--out", str(tmp_path / "again"), *DECODE]
    assert main(argv) == 0
    again = json.loads((tmp_path / "again" / "score.json").read_text())["sets"]["de-en.translate"]
    assert again["asr_wer"] == r["asr_wer"] and not (tmp_path / "again" / "asr").exists()
    assert _lines(tmp_path / "again" / "de-en.translate.src.txt") == transcripts
    expected = TextTranslator.load(other, PromptConfig(system=TRANSLATION_ONLY), dtype="float32").translate(
        transcripts, "de", "en", DecodeConfig(num_beams=1, max_new_tokens=5))
    assert _lines(tmp_path / "again" / "de-en.translate.hyp.txt") == expected


def test_transcripts_must_cover_every_clip(tiny_dirs, corpus, tmp_path, capsys):
    """--transcripts from a `--baseline whisper --task transcribe` run of another set: the missing clip is named."""
    asr = tmp_path / "asr"
    asr.mkdir()
    (asr / "score.json").write_text(json.dumps({"meta": {}, "sets": {"fr-fr.transcribe": {"n": 1, "skipped_samples": []}}}))
    (asr / "fr-fr.transcribe.ids.txt").write_text("fr_dev_0-asr\n")
    (asr / "fr-fr.transcribe.hyp.txt").write_text("bonjour\n")
    argv = ["evaluate", "--baseline", "cascade", "--transcripts", str(asr), "--llm", str(tiny_dirs["llama"]),
            "--data", str(corpus / "covost_v2.fr_en.dev.tsv"), "--out", str(tmp_path / "o"), *DECODE]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "no fr transcript of sample fr_dev_1" in err and len(err.strip().splitlines()) == 1
    assert main(argv[:4] + [str(tmp_path / "nothing")] + argv[5:]) == 1
    assert "not an evaluation folder of the transcribe task" in capsys.readouterr().err


def test_cascade_counts_unreadable_clips_with_skip_bad(tiny_dirs, whisper_dir, corpus, tmp_path):
    tsv = corpus / "covost_v2.fr_en.test.tsv"  # beside the corpus: its clips are found in fr/clips_16k
    rows = _lines(corpus / "covost_v2.fr_en.dev.tsv")
    import numpy as np
    import soundfile as sf

    sf.write(corpus / "fr" / "clips_16k" / "silent.wav", np.zeros(8000, dtype=np.float32), 16000)  # loads, then refused
    tsv.write_text("\n".join(rows + ["silent.wav\tbonjour\thello\tspk0"]) + "\n")
    argv = ["evaluate", "--baseline", "cascade", "--asr", str(whisper_dir), "--llm", str(tiny_dirs["llama"]),
            "--data", str(tsv), "--out", str(tmp_path / "o"), *DECODE]
    assert main(argv + ["--skip-bad"] + ["--llm-system", ""]) == 0
    r = json.loads((tmp_path / "o" / "score.json").read_text())["sets"]["fr-en.translate"]
    assert r["n"] == 5 and r["skipped"] == 1 and r["skipped_samples"][0]["id"] == "silent"
    assert "silent.wav" in r["skipped_samples"][0]["reason"]
    assert len(_lines(tmp_path / "o" / "fr-en.translate.hyp.txt")) == 5


def test_text_baseline_needs_source_sentences(tiny_dirs, tmp_path, capsys):
    import soundfile as sf

    (tmp_path / "a.wav").parent.mkdir(exist_ok=True)
    sf.write(tmp_path / "a.wav", tiny.clip(0.5), 16000)
    manifest = tmp_path / "m.jsonl"
    lines = [{"audio": "a.wav", "src_lang": "fr", "tgt_lang": "en", "source_text": "bonjour", "target_text": "hello"},
             {"audio": "a.wav", "src_lang": "fr", "tgt_lang": "en", "target_text": "hello"}]
    manifest.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    argv = ["evaluate", "--baseline", "text", "--llm", str(tiny_dirs["llama"]), "--data", str(manifest),
            "--out", str(tmp_path / "o"), *DECODE]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "no source text" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert main(argv + ["--skip-bad"]) == 0
    r = json.loads((tmp_path / "o" / "score.json").read_text())["sets"]["fr-en.translate"]
    assert r["n"] == 1 and r["skipped"] == 1 and r["skipped_samples"][0]["reason"] == "no source text"


@pytest.mark.parametrize("extra, message", [
    (["--baseline", "cascade", "--task", "transcribe"], "--task transcribe is not supported"),
    (["--baseline", "cascade", "--asr", "LLAMA"], "not a Whisper model"),
    ([], "--model is required"),
])
def test_bad_baseline_options_are_one_line_errors(tiny_dirs, corpus, tmp_path, capsys, extra, message):
    extra = [str(tiny_dirs["llama"]) if x == "LLAMA" else x for x in extra]
    argv = ["evaluate", "--data", str(corpus / "covost_v2.fr_en.dev.tsv"), "--out", str(tmp_path / "o"), *extra]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_checkpoint_gives_the_cascade_its_parts_and_instruction(tiny_dirs, tmp_path):
    """--model CHECKPOINT: the cascade of the checkpoint's own Whisper and LLM, with its instruction wording."""
    import argparse

    from llast.checkpoint import save_checkpoint
    from llast.evaluate import llm_baseline_parts

    cfg = tiny.tiny_config(tiny_dirs["whisper"], tiny_dirs["llama"])
    cfg.model.prompt.translate = "Put this {src} into {tgt}."
    torch.manual_seed(0)
    from llast.lora import apply_lora
    from llast.model import build_model

    model = build_model(cfg.model)
    apply_lora(model, cfg.model)
    save_checkpoint(model, cfg, tmp_path / "ckpt")
    args = argparse.Namespace(model=str(tmp_path / "ckpt"), asr=None, llm=None)
    asr, llm, prompt = llm_baseline_parts(args.model, args.asr, args.llm)
    assert (asr, llm) == (str(tiny_dirs["whisper"]), str(tiny_dirs["llama"]))
    assert prompt.translate == "Put this {src} into {tgt}."
    args.asr, args.llm = "whisper-base", "qwen2.5-coder-0.5b-instruct"
    assert llm_baseline_parts(args.model, args.asr, args.llm)[:2] == ("whisper-base", "qwen2.5-coder-0.5b-instruct")


def test_untrained_model_of_a_yaml_config_is_scored(tiny_dirs, corpus, tmp_path):
    """`llast evaluate --model CONFIG.yaml`: the untrained model the config describes (make demo's
    "untrained" row), seeded by train.seed, so two runs give the same hypotheses."""
    train_yaml = tiny.write_train_yaml(tmp_path / "t.yaml", tiny_dirs["whisper"], tiny_dirs["llama"], corpus,
                                       tmp_path / "run")
    data = [str(corpus / "covost_v2.fr_en.dev.tsv"), str(corpus / "covost_v2.de_en.dev.tsv")]
    hyps = []
    for out in (tmp_path / "a", tmp_path / "b"):
        assert main(["evaluate", "--model", str(train_yaml), "--data", *data, "--out", str(out), *DECODE]) == 0
        sets = json.loads((out / "score.json").read_text())["sets"]
        assert set(sets) == {"fr-en.translate", "de-en.translate"} and sets["fr-en.translate"]["n"] == 5
        hyps.append(_lines(out / "fr-en.translate.hyp.txt"))
    assert len(hyps[0]) == 5 and hyps[0] == hyps[1]

"""Decoding (batched beam search, greedy) and evaluation (SacreBLEU as the paper and peers report it)."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch

import tiny
from llast import outdir
from llast.cli import main
from llast.decode import load_model
from llast.errors import AudioError, ConfigError
from llast.evaluate import bleu_tokenizer, evaluate, group_sets, score
from llast.processor import Example
from llast.segment import Segment, segment_audio


@pytest.fixture(scope="module")
def ckpt(tiny_dirs, tmp_path_factory):
    """A tiny dual-LoRA checkpoint with non-zero LoRA weights (beam 5, at most 6 new tokens)."""
    return tiny.lora_checkpoint(tiny_dirs, tmp_path_factory.mktemp("ckpt") / "ckpt", num_beams=5, max_new_tokens=6)


@pytest.fixture(scope="module")
def translator(ckpt):
    return load_model(ckpt, dtype="float32")  # exact comparisons below; bf16 is tested on its own


def _clips():
    return [tiny.clip(s, i, f) for i, (s, f) in enumerate([(1.1, 200.0), (0.5, 440.0), (2.3, 300.0), (0.8, 520.0)])]


def test_greedy_equals_beam_1_and_manual_argmax(translator):
    clips = _clips()
    examples = [Example(a, "fr", "en") for a in clips]
    beam1 = translator.generate(examples, translator.decode_config(num_beams=1))
    # Manual greedy decoding without the KV cache, one clip at a time.
    model, proc = translator.model, translator.processor
    for ex, text in zip(examples, beam1):
        batch = proc([ex])
        embeds = model.inputs_embeds(batch["input_features"], batch["audio_lengths"], batch["input_ids"])
        ids = []
        for _ in range(translator.cfg.decode.max_new_tokens):
            with torch.no_grad():
                logits = model.llm(inputs_embeds=embeds).logits[:, -1]
            nxt = int(logits.argmax(-1))
            if nxt == proc.tokenizer.eos_token_id:
                break
            ids.append(nxt)
            embeds = torch.cat([embeds, model.llm.get_input_embeddings()(torch.tensor([[nxt]]))], dim=1)
        assert proc.tokenizer.decode(ids, skip_special_tokens=True).strip() == text


@pytest.mark.parametrize("beams", [1, 3])
def test_batched_equals_one_by_one(translator, beams):
    clips = _clips()
    batched = translator.translate(clips, src="fr", tgt="en", num_beams=beams, batch_size=4)
    single = [translator.translate(c, src="fr", tgt="en", num_beams=beams, batch_size=1) for c in clips]
    assert isinstance(single[0], str) and isinstance(batched, list)
    assert batched == single
    assert translator.translate(clips, src="fr", tgt="en", num_beams=beams) == batched  # deterministic


def test_translate_accepts_paths_and_any_rate(translator, tmp_path):
    audio = tiny.clip(1.0)
    sf.write(tmp_path / "a16.wav", audio, 16000)
    import soxr

    sf.write(tmp_path / "a44.flac", np.stack([soxr.resample(audio, 16000, 44100)] * 2, axis=1), 44100)
    out = translator.translate([str(tmp_path / "a16.wav"), tmp_path / "a44.flac"], src="fr", tgt="en", num_beams=1)
    assert len(out) == 2 and all(isinstance(t, str) for t in out)
    with pytest.raises(AudioError, match="missing.wav"):
        translator.translate(str(tmp_path / "missing.wav"), src="fr")
    with pytest.raises(AudioError, match="shape"):
        translator.translate(np.zeros((2, 16000), np.float32), src="fr")
    with pytest.raises(AudioError, match="NaN"):
        translator.translate(np.full(16000, np.nan, np.float32), src="fr")


def _speech(tmp_path):
    """29.7 s of read speech: five sentences with pauses (tests/test_segment.py), as a 16 kHz WAV."""
    from test_segment import concatenated

    wav, truth = concatenated()
    sf.write(tmp_path / "talk.wav", wav, 16000)
    return tmp_path / "talk.wav", wav, truth


@pytest.fixture
def short_limit(translator):
    """The model's segment limit lowered to 10 s, so 30 s of speech is 'long' audio."""
    translator.cfg.model.encoder.max_seconds = 10.0
    yield translator
    translator.cfg.model.encoder.max_seconds = 30.0


def test_long_audio_is_segmented_and_each_segment_translated_alone(short_limit, tmp_path):
    translator = short_limit
    path, wav, truth = _speech(tmp_path)
    segs = translator.translate(path, src="fr", num_beams=1, segments=True)
    assert len(segs) == 5
    for seg, (start, end) in zip(segs, truth):
        assert abs(seg.start - start) < 0.5 and abs(seg.end - end) < 0.5
        alone = translator.translate(segment_audio(path, seg), src="fr", num_beams=1)
        assert seg.text == alone
    assert translator.translate(path, src="fr", num_beams=1) == " ".join(s.text for s in segs if s.text)
    # The same recording as an array, and in a list with a short clip: the same segments and texts.
    both = translator.translate([wav, tiny.clip(1.0)], src="fr", num_beams=1, segments=True)
    assert [(s.start, s.end) for s in both[0]] == [(s.start, s.end) for s in segs]
    assert both[1] == [Segment(0.0, 1.0, translator.translate(tiny.clip(1.0), src="fr", num_beams=1))]
    # chunk_seconds lowers the limit further; it cannot raise it above the model's.
    assert all(s.seconds <= 4.0 for s in translator.translate(path, src="fr", num_beams=1, chunk_seconds=4, segments=True))
    with pytest.raises(ConfigError, match="chunk_seconds"):  # above the model's limit: an error, not a silent clamp
        translator.segment_options(chunk_seconds=100)


def test_cli_translate_formats(ckpt, tmp_path, capsys, monkeypatch):
    import srt
    import webvtt

    path, _, truth = _speech(tmp_path)
    base = ["translate", "--model", str(ckpt), "--src", "fr", "--num-beams", "1", "--chunk-seconds", "10"]
    assert main([*base, "--format", "srt", str(path)]) == 0
    cues = list(srt.parse(capsys.readouterr().out))
    assert 1 <= len(cues) <= 5 and all(c.end.total_seconds() <= truth[-1][1] + 0.5 for c in cues)
    assert main([*base, "--format", "vtt", str(path)]) == 0
    assert len(list(webvtt.from_string(capsys.readouterr().out))) == len(cues)
    assert main([*base, "--format", "json", str(path)]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["file"] == str(path) and len(record["segments"]) == 5
    assert record["text"] == " ".join(s["text"] for s in record["segments"] if s["text"])
    # Several files: subtitles need --out-dir, which gets one file per input.
    clip = tmp_path / "clip.wav"
    sf.write(clip, tiny.clip(1.0), 16000)
    assert main([*base, "--format", "srt", str(path), str(clip)]) == 1
    assert "--out-dir" in capsys.readouterr().err
    assert main([*base, "--format", "vtt", "--out-dir", str(tmp_path / "subs"), str(path), str(clip)]) == 0
    made = sorted(p.name for p in (tmp_path / "subs").iterdir() if p.name != outdir.MARKER)  # and llast's marker
    assert made == ["clip.vtt", "talk.vtt"]
    assert main([*base, "--min-silence", "-1", str(clip)]) == 1
    assert "min_silence" in capsys.readouterr().err
    for bad in ("0.01", "-5"):
        assert main([*base[:-2], "--chunk-seconds", bad, str(clip)]) == 1
        assert "--chunk-seconds" in capsys.readouterr().err


def test_evaluate_scores_a_long_clip_by_its_segments(short_limit, tmp_path):
    translator = short_limit
    corpus = tiny.write_corpus(tmp_path / "corpus", directions=("fr_en",), n_train=1, n_dev=2)
    path, _, _ = _speech(tmp_path)
    (corpus / "fr" / "clips_16k" / "talk.wav").write_bytes(path.read_bytes())
    tsv = corpus / "covost_v2.fr_en.dev.tsv"
    tsv.write_text(tsv.read_text() + "talk.wav\tune longue phrase\tone long sentence\tspk0\n")
    sets = group_sets([str(tsv)], "translate", None)

    def gen(examples, on_batch=None):
        return translator.generate(examples, translator.decode_config(num_beams=1), on_batch=on_batch)

    scores = evaluate(gen, sets, tmp_path / "out", max_seconds=10.0, progress=False)
    assert scores["sets"]["fr-en.translate"]["n"] == 3 and scores["sets"]["fr-en.translate"]["skipped"] == 0
    hyps = (tmp_path / "out" / "fr-en.translate.hyp.txt").read_text().splitlines()
    assert len(hyps) == 3  # one hypothesis per clip, the long one included
    assert hyps[2] == translator.translate(path, src="fr", num_beams=1)
    assert scores["sets"]["fr-en.translate"]["audio_seconds"] > 25


def test_bleu_equals_sacrebleu_and_language_tokenizers():
    import sacrebleu

    hyps = ["The cat sat on the mat.", "Hello world"]
    refs = ["The cat sat on a mat.", "hello world!"]
    s = score(hyps, refs, "en")
    assert s["bleu"] == round(sacrebleu.corpus_bleu(hyps, [refs]).score, 2)
    assert "tok:13a" in s["bleu_signature"] and "case:mixed" in s["bleu_signature"]
    low = score(hyps, refs, "en", lowercase=True)
    assert low["bleu"] > s["bleu"] and "case:lc" in low["bleu_signature"]
    assert bleu_tokenizer("zh-CN") == "zh" and bleu_tokenizer("ja") == "ja-mecab" and bleu_tokenizer("de") == "13a"
    zh = score(["我喜欢猫。"], ["我喜欢狗。"], "zh-CN")
    assert "tok:zh" in zh["bleu_signature"]
    assert zh["bleu"] == round(sacrebleu.corpus_bleu(["我喜欢猫。"], [["我喜欢狗。"]], tokenize="zh").score, 2)
    ja = score(["猫が好きです。"], ["犬が好きです。"], "ja")
    assert "tok:ja-mecab" in ja["bleu_signature"]
    asr = score(["hello there world"], ["Hello, world!"], "en", task="transcribe")
    assert asr["wer"] == 0.5 and "cer" in asr
    assert s["distinct"] == 1.0
    assert score(["I don't know.", "i don't know.", "Hello"], ["a b", "c d", "e f"], "en")["distinct"] == round(2 / 3, 4)


def test_evaluate_writes_scores_and_survives_corrupt_clip(translator, tmp_path):
    corpus = tiny.write_corpus(tmp_path / "corpus", n_train=2, n_dev=5)
    sets = group_sets([str(corpus / "covost_v2.fr_en.dev.tsv"), str(corpus / "covost_v2.de_en.dev.tsv")], "translate", None)
    def gen(examples, on_batch=None):
        return translator.generate(examples, translator.decode_config(num_beams=2), on_batch=on_batch)

    scores = evaluate(gen, sets, tmp_path / "out", progress=False)
    fr = scores["sets"]["fr-en.translate"]
    hyps = (tmp_path / "out" / "fr-en.translate.hyp.txt").read_text().splitlines()
    refs = (tmp_path / "out" / "fr-en.translate.ref.txt").read_text().splitlines()
    assert fr["n"] == 5 == len(hyps) == len(refs)
    assert fr["bleu"] == score(hyps, refs, "en")["bleu"]
    assert json.loads((tmp_path / "out" / "score.json").read_text())["sets"].keys() == {"fr-en.translate", "de-en.translate"}
    # Corrupt one de clip: a clear error naming it; the fr results stay on disk.
    bad = corpus / "de" / "clips_16k" / "de_dev_2.wav"
    bad.write_bytes(b"RIFF garbage")
    with pytest.raises(AudioError, match="de_dev_2.wav"):
        evaluate(gen, sets, tmp_path / "out2", progress=False)
    saved = json.loads((tmp_path / "out2" / "score.json").read_text())
    assert saved["sets"]["fr-en.translate"]["n"] == 5
    assert len((tmp_path / "out2" / "de-en.translate.hyp.txt").read_text().splitlines()) == 2
    # With skip_bad it is skipped and counted.
    scores = evaluate(gen, sets, tmp_path / "out3", skip_bad=True, progress=False)
    assert scores["sets"]["de-en.translate"]["n"] == 4 and scores["sets"]["de-en.translate"]["skipped"] == 1


def test_cli_translate_and_evaluate(ckpt, tmp_path, capsys):
    corpus = tiny.write_corpus(tmp_path / "corpus", directions=("fr_en",), n_train=2, n_dev=3)
    clips = sorted((corpus / "fr" / "clips_16k").glob("fr_dev_*.wav"))
    assert main(["translate", "--model", str(ckpt), "--src", "fr", "--tgt", "en", "--json", "--num-beams", "2", *map(str, clips)]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert [x["file"] for x in lines] == list(map(str, clips)) and all("text" in x for x in lines)
    out = tmp_path / "eval"
    assert main(["evaluate", "--model", str(ckpt), "--data", str(corpus / "covost_v2.fr_en.dev.tsv"), "--out", str(out), "--num-beams", "2"]) == 0
    printed = capsys.readouterr().out
    assert "fr-en.translate: n=3" in printed and "BLEU" in printed and "tok:13a" in printed
    assert (out / "score.json").is_file()
    # A missing file is one clear line on stderr, exit status 1.
    assert main(["translate", "--model", str(ckpt), "--src", "fr", str(tmp_path / "nope.wav")]) == 1
    assert "nope.wav" in capsys.readouterr().err


def test_num_beams_reaches_the_search_checked_once_and_unchanged(ckpt, translator, tmp_path, monkeypatch, capsys):
    """`llast translate --num-beams 3` (and the Python API's num_beams=3): the value is checked once, where the
    DecodeConfig is made (llast.config.check_decode), and that DecodeConfig reaches llast.beam.beam_search as
    it is: no second check on the way, no transformers kwargs made and parsed back."""
    import llast.beam
    import llast.config
    import llast.generate
    from llast.config import DecodeConfig

    checked = []  # every value the num_beams rule is applied to
    rule, what = llast.config._DECODE_RULES["num_beams"]
    monkeypatch.setitem(llast.config._DECODE_RULES, "num_beams", (lambda v: checked.append(v) or rule(v), what))
    searched = []  # the decoding options each call of the search got
    search = llast.beam.beam_search
    monkeypatch.setattr(llast.beam, "beam_search", lambda *a, **kw: searched.append(a[4]) or search(*a, **kw))

    def no_kwargs(*a, **kw):
        raise AssertionError("transformers generate kwargs made on llast.beam's path")

    monkeypatch.setattr(llast.generate, "_generate_kwargs", no_kwargs)
    assert translator.cfg.decode.num_beams != 3  # the checkpoint's own value is not the one given
    clip = tmp_path / "a.wav"
    sf.write(clip, tiny.clip(1.1, 0, 200.0), 16000)
    assert main(["translate", "--model", str(ckpt), "--src", "fr", "--num-beams", "3", str(clip)]) == 0
    assert checked.count(3) == 1
    assert searched and all(d is searched[0] for d in searched)  # one DecodeConfig, passed down unchanged
    assert isinstance(searched[0], DecodeConfig) and searched[0].num_beams == 3
    assert searched[0].max_new_tokens == translator.cfg.decode.max_new_tokens  # the checkpoint's other options
    cli_text = capsys.readouterr().out.strip().split("\t", 1)[1]
    checked.clear(), searched.clear()
    assert translator.translate(str(clip), src="fr", num_beams=3) == cli_text
    assert checked.count(3) == 1 and searched and all(d is searched[0] for d in searched)


# ----------------------------------------------------------------------------- two-pass translation


def test_two_pass_translates_the_models_own_transcript_with_the_llm_alone(ckpt, tiny_dirs):
    """decode.two_pass: the model transcribes, then its LLM with the L-LoRA switched off translates the
    transcript as text (llast.llm_text, as the cascade baseline asks it); the L-LoRA is back on after."""
    import dataclasses

    from transformers import AutoModelForCausalLM

    from llast.llm_text import TRANSLATION_ONLY, TextTranslator

    tr = load_model(ckpt, dtype="float32", two_pass=True)
    assert tr.cfg.decode.two_pass and hasattr(tr.model.llm, "disable_adapter")  # L-LoRA left unmerged
    clips = _clips()
    got = tr.translate(clips, src="fr", tgt="en", num_beams=1)
    heard = tr.translate(clips, src="fr", tgt="en", task="transcribe", num_beams=1)
    decode = tr.decode_config(num_beams=1)
    prompt = dataclasses.replace(tr.cfg.model.prompt, system=TRANSLATION_ONLY)
    base = AutoModelForCausalLM.from_pretrained(tiny_dirs["llama"], dtype=torch.float32)  # the LLM without LoRA
    assert got == TextTranslator(base, tr.tokenizer, prompt).translate(heard, "fr", "en", decode)
    with_lora = TextTranslator(tr.model.llm, tr.tokenizer, prompt).translate(heard, "fr", "en", decode)
    assert with_lora != got  # the text pass really ran without the (large, random) L-LoRA ...
    # ... and one pass afterwards is the merged model's, adapters on again.
    merged = load_model(ckpt, dtype="float32")
    assert tr.translate(clips, src="fr", tgt="en", num_beams=1, two_pass=False) == merged.translate(clips, src="fr", tgt="en", num_beams=1)
    # A merged L-LoRA cannot be switched off: a clear error, not a silently different translation.
    with pytest.raises(ConfigError, match="merged"):
        merged.translate(clips, src="fr", tgt="en", two_pass=True)
    assert tr.translate(clips[0], src="fr", task="transcribe", num_beams=1) == heard[0]


def test_text_pass_beam_search_is_transformers_search_with_a_shared_prefill(ckpt):
    """The text pass's beam search (llast.generate.generate_text_ids): prefilled once per sentence and continued
    by llast.beam, through a peft-wrapped LLM; the same tokens as transformers' generate, batched or not."""
    import dataclasses

    from llast.llm_text import TRANSLATION_ONLY, TextTranslator

    tr = load_model(ckpt, dtype="float32", two_pass=True)
    prompt = dataclasses.replace(tr.cfg.model.prompt, system=TRANSLATION_ONLY)
    text = TextTranslator(tr.model.llm, tr.tokenizer, prompt)
    sentences = ["bonjour le monde", "un deux trois quatre cinq six", "oui", "", "le chat dort sur le lit"]
    for beams, batch in ((3, 4), (2, 1), (1, 4)):  # 1: greedy, run by llast.beam as one beam
        ours = text.translate(sentences, "fr", "en", tr.decode_config(num_beams=beams, batch_size=batch, max_new_tokens=9))
        theirs = text.translate(sentences, "fr", "en", tr.decode_config(num_beams=beams, batch_size=batch, max_new_tokens=9,
                                                                       beam_search="transformers"))
        assert ours == theirs and ours[3] == "" and len(set(ours)) > 1
        plain = text.translate(sentences, "fr", "en", tr.decode_config(num_beams=beams, batch_size=batch, max_new_tokens=9,
                                                                      share_prefill=False))
        assert plain == ours  # transformers' generate on the token ids, no shared prefill


def test_cli_two_pass(ckpt, tmp_path, capsys):
    clip = tmp_path / "a.wav"
    sf.write(clip, tiny.clip(1.1, 0, 200.0), 16000)
    assert main(["translate", "--model", str(ckpt), "--src", "fr", "--num-beams", "1", "--two-pass", str(clip)]) == 0
    two = capsys.readouterr().out.strip().split("\t", 1)[1]
    tr = load_model(ckpt, two_pass=True)
    assert two == tr.translate(str(clip), src="fr", tgt="en", num_beams=1)
    # The baselines have passes of their own: the option is refused, not ignored.
    assert main(["evaluate", "--baseline", "text", "--data", "x.tsv", "--out", str(tmp_path / "e"), "--two-pass"]) == 1
    assert "--two-pass" in capsys.readouterr().err


def test_evaluate_two_pass_writes_and_scores_what_it_heard(ckpt, tmp_path, capsys):
    """`llast evaluate` of a two-pass model writes its first pass's transcripts (heard.txt) and their WER
    beside the translations: the same transcripts, and the same WER, as the transcribe task's own run."""
    corpus = tiny.write_corpus(tmp_path / "corpus", directions=("fr_en",))
    tsv = str(corpus / "covost_v2.fr_en.dev.tsv")
    common = ["--model", str(ckpt), "--data", tsv, "--num-beams", "1", "--max-new-tokens", "6"]
    assert main(["evaluate", *common, "--two-pass", "--out", str(tmp_path / "tr")]) == 0
    assert "first pass: WER" in capsys.readouterr().out
    assert main(["evaluate", *common, "--task", "transcribe", "--out", str(tmp_path / "asr")]) == 0
    heard = (tmp_path / "tr" / "fr-en.translate.heard.txt").read_text().splitlines()
    assert heard == (tmp_path / "asr" / "fr-fr.transcribe.hyp.txt").read_text().splitlines() and heard
    tr = json.loads((tmp_path / "tr" / "score.json").read_text())["sets"]["fr-en.translate"]
    asr = json.loads((tmp_path / "asr" / "score.json").read_text())["sets"]["fr-fr.transcribe"]
    assert tr["n"] == len(heard)
    assert (tr["asr_wer"], tr["asr_cer"]) == (asr["wer"], asr["cer"])  # the cascade's keys for its ASR half
    # One pass hears nothing separately: no heard.txt, no first_pass score.
    assert main(["evaluate", *common, "--no-two-pass", "--out", str(tmp_path / "one")]) == 0
    assert not (tmp_path / "one" / "fr-en.translate.heard.txt").exists()
    assert "asr_wer" not in json.loads((tmp_path / "one" / "score.json").read_text())["sets"]["fr-en.translate"]


def test_text_lora_is_a_second_adapter_for_the_text_pass_only(ckpt, tmp_path, capsys):
    """`llast text-lora` trains a text adapter beside the L-LoRA on a corpus's sentence pairs; the new
    checkpoint's two-pass text pass translates with it, its one pass is the original's, shipping keeps it."""
    from llast.checkpoint import TEXT_ADAPTER

    corpus = tiny.write_corpus(tmp_path / "corpus", directions=("fr_en",))
    out = tmp_path / "with_text"
    assert main(["text-lora", "--model", str(ckpt), "--out", str(out), "--data", str(corpus / "covost_v2.fr_en.train.tsv"),
                 "--steps", "3", "--batch", "4", "--lr", "0.05", "--set", "decode.batch_size=3"]) == 0
    assert "wrote" in capsys.readouterr().out
    meta = json.loads((out / "text_lora" / "training.json").read_text())
    assert meta["pairs"] == 12 and meta["steps"] == 3 and len(meta["losses"]) == 3
    assert not (out / "trainer_state.pt").exists()
    tr = load_model(out, dtype="float32")
    assert tr.cfg.decode.two_pass and tr.cfg.decode.batch_size == 3 and tr.model.llm.active_adapter == "default"
    text_b = [p for n, p in tr.model.llm.named_parameters() if f"lora_B.{TEXT_ADAPTER}." in n]
    assert text_b and any(p.abs().sum() > 0 for p in text_b)  # trained (peft starts lora_B at zero)
    clips = _clips()
    got = tr.translate(clips, src="fr", tgt="en", num_beams=1)
    heard = tr.translate(clips, src="fr", tgt="en", task="transcribe", num_beams=1)
    tr.model.llm.set_adapter(TEXT_ADAPTER)
    by_hand = tr.text_translator().translate(heard, "fr", "en", tr.decode_config(num_beams=1))
    tr.model.llm.set_adapter("default")
    assert got == by_hand
    without = load_model(ckpt, dtype="float32", two_pass=True).translate(clips, src="fr", tgt="en", num_beams=1)
    assert got != without  # the text pass no longer runs the bare LLM
    one_pass = load_model(ckpt, dtype="float32").translate(clips, src="fr", tgt="en", num_beams=1)
    assert tr.translate(clips, src="fr", tgt="en", num_beams=1, two_pass=False) == one_pass
    assert tr.model.llm.active_adapter == "default"
    assert main(["export", "--ship", "--model", str(out), "--out", str(tmp_path / "shipped")]) == 0
    assert (tmp_path / "shipped" / "text_lora" / "adapter_model.safetensors").is_file()
    shipped = load_model(tmp_path / "shipped", dtype="float32")
    assert TEXT_ADAPTER in shipped.model.llm.peft_config and shipped.cfg.decode.two_pass
    # A merged export cannot switch its L-LoRA off: it decodes in one pass, and says so.
    assert main(["export", "--model", str(out), "--out", str(tmp_path / "merged")]) == 0
    assert "one pass" in capsys.readouterr().out
    assert load_model(tmp_path / "merged", dtype="float32").translate(clips, src="fr", tgt="en", num_beams=1) == one_pass
    # Bad requests are one clear line each, and the checkpoint itself is never overwritten.
    capsys.readouterr()
    assert main(["text-lora", "--model", str(out), "--out", str(out), "--steps", "1"]) == 1
    assert "is the checkpoint itself" in capsys.readouterr().err
    assert main(["text-lora", "--model", str(ckpt), "--out", str(tmp_path / "x"), "--noise", "2"]) == 1
    assert "--noise" in capsys.readouterr().err
    assert main(["text-lora", "--model", str(ckpt), "--out", str(tmp_path / "x"), "--set", "model.llm.lora.r=4"]) == 1
    assert "only decode.* options" in capsys.readouterr().err
    assert main(["text-lora", "--model", str(ckpt), "--out", str(tmp_path / "x"), "--set", "decode.num_beams=0"]) == 1
    assert "num_beams" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_train_text_adapter_from_python_leaves_the_l_lora_active(ckpt):
    from llast.checkpoint import TEXT_ADAPTER, load_checkpoint
    from llast.text_adapter import train_text_adapter

    model, cfg = load_checkpoint(ckpt)
    words = " ".join(tiny._WORDS[:3])
    losses = train_text_adapter(model, cfg, [(words, words, "fr", "en")] * 8, steps=2, batch=4, lr=0.05)
    assert len(losses) == 2 and all(np.isfinite(losses))
    assert TEXT_ADAPTER in model.llm.peft_config and model.llm.active_adapter == "default"


def test_asr_noise_is_seeded_and_scaled_by_its_rate():
    import random

    from llast.text_adapter import asr_noise, near_homophones

    text = "Ich habe vollstes Vertrauen dass du die richtige Entscheidung triffst"
    vocab = ["Ichor", "habt", "volle", "Vertrag", "dasselbe", "dir", "richtig", "Entschluss", "trifft"]
    near = near_homophones(vocab)
    assert asr_noise(text, 0.0, random.Random(0), near) == text
    noisy = [asr_noise(text, 1.0, random.Random(s), near) for s in range(20)]
    assert noisy == [asr_noise(text, 1.0, random.Random(s), near) for s in range(20)]  # seeded
    assert all(n != text for n in noisy)
    assert any(set(n.split()) & set(vocab) for n in noisy)  # near-homophones come from the vocabulary
    changed = lambda rate: sum(a != b for s in range(50) for a, b in zip(text.split(), asr_noise(text, rate, random.Random(s), near).split()))
    assert changed(0.1) < changed(0.6)


# ----------------------------------------------------------------------------- inference dtype


def test_inference_dtype_auto_follows_the_hardware(monkeypatch):
    import llast.model as M
    from llast.errors import ConfigError

    monkeypatch.setattr(M, "_cpu_has_amx_bf16", lambda: True)
    assert M.inference_dtype("auto", "cpu") == torch.bfloat16
    monkeypatch.setattr(M, "_cpu_has_amx_bf16", lambda: False)
    assert M.inference_dtype("auto", "cpu") == torch.float32
    assert M.inference_dtype("float32", "cpu") == torch.float32
    assert M.inference_dtype("bfloat16", "cpu") == torch.bfloat16
    with pytest.raises(ConfigError, match="float64"):
        M.inference_dtype("float64", "cpu")


def test_bf16_load_casts_every_weight_and_keeps_the_loss(ckpt, translator):
    bf16 = load_model(ckpt, dtype="bfloat16")
    assert {p.dtype for p in bf16.model.parameters()} == {torch.bfloat16}
    assert not any("lora_" in n for n, _ in bf16.model.named_parameters())  # merged at load
    examples = [Example(a, "fr", "en", "translate", "hello world") for a in _clips()]
    batch = translator.processor(examples)
    with torch.no_grad():
        ref = float(translator.model(**batch).loss)
        low = float(bf16.model(**batch).loss)
    assert low == pytest.approx(ref, rel=0.02)
    out = bf16.translate(_clips(), src="fr", tgt="en", num_beams=2)
    assert len(out) == 4 and all(isinstance(t, str) for t in out)


def test_cli_dtype_option_reaches_the_model(ckpt, tmp_path, capsys):
    corpus = tiny.write_corpus(tmp_path / "corpus", directions=("fr_en",), n_train=2, n_dev=2)
    out = tmp_path / "eval"
    data = str(corpus / "covost_v2.fr_en.dev.tsv")
    assert main(["evaluate", "--model", str(ckpt), "--data", data, "--out", str(out), "--dtype", "bfloat16"]) == 0
    assert json.loads((out / "score.json").read_text())["meta"]["dtype"] == "torch.bfloat16"
    assert main(["evaluate", "--model", str(ckpt), "--data", data, "--out", str(out), "--dtype", "float32"]) == 0
    assert json.loads((out / "score.json").read_text())["meta"]["dtype"] == "torch.float32"


def test_evaluate_progress_counts_clips_with_a_fixed_total():
    """Long clips cut into segments: the bar's total stays the number of clips (it was raised mid-run)."""
    from types import SimpleNamespace

    from llast.evaluate import _clip_progress

    bar = SimpleNamespace(n=0, total=2)
    bar.update = lambda k: setattr(bar, "n", bar.n + k)
    on_batch, finish = _clip_progress(bar, n_clips=2, n_segments=5)
    seen = []
    for n in (2, 2, 1):
        on_batch(n)
        seen.append(bar.n)
    finish()
    assert seen == [0, 1, 2] and bar.n == 2 and bar.total == 2

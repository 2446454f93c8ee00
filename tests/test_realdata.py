"""`llast data real` (llast.realdata) on small fake sources laid out as the real packages and checkouts are.

The audio here is generated noise: these tests check the builder (which files count, which texts and
translations go with them, the manifests, the FLAC clips), not speech."""

import json

import numpy as np
import pytest
import soundfile as sf

from llast.cli import main
from llast.data import read_manifest
from llast.errors import DataError
from llast.realdata import build_real_set, gather


def _clip(path, seconds=0.6, sr=22050, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(str(path)))
    sf.write(str(path), (0.1 * rng.standard_normal(int(seconds * sr))).astype(np.float32), sr, format=fmt)


def _debian(tmp_path):
    """Fake fillets-ng-data, pocketsphinx-testdata and ktuberling-data folders."""
    fil = tmp_path / "fillets"
    (fil / "script" / "elk").mkdir(parents=True)
    (fil / "script" / "elk" / "dialogs_en.lua").write_text(
        '\ndialogId("deu-p-jawohl", "font_yellow", "Jawohl, mein Herr!")\n'
        'dialogId("deu-p-los", "font_yellow", "Was ist \\"denn\\" los?")\n'
        'dialogId("deu-l-ja", "font_yellow", "Ya los...")\n', encoding="utf-8")
    for name in ("deu-p-jawohl", "deu-p-los", "deu-l-ja"):
        _clip(fil / "sound" / "elk" / "en" / f"{name}.ogg", fmt="OGG")
    ps = tmp_path / "sphinx"
    (ps / "librivox").mkdir(parents=True)
    (ps / "librivox" / "transcription").write_text(
        "<s> he was not an ill disposed young man </s> (book-0880)\n<s> missing clip </s> (book-0999)\n")
    _clip(ps / "librivox" / "book-0880.wav", sr=16000)
    kt = tmp_path / "ktuberling"
    kt.mkdir()
    (kt / "es.soundtheme").write_text('<language code="es">\n<sound name="eye" file="es/ojo.wav" />\n'
                                      '<sound name="bow" file="es/lazo.wav" />\n<sound name="tie" file="es/lazo.wav" />\n'
                                      '<sound name="sunglasses" file="es/gafasdesol.wav" />\n</language>\n')
    for w in ("ojo", "lazo", "gafasdesol"):
        _clip(kt / "es" / f"{w}.wav", sr=44100)
    return {"fillets-ng-data": fil, "pocketsphinx-testdata": ps, "ktuberling-data": kt}


def _repos(tmp_path):
    """Fake checkouts of speech-to-phrase, cuttledoc and Picovoice cheetah under one --repos folder."""
    repos = tmp_path / "repos"
    s2p = repos / "OHF-Voice+speech-to-phrase" / "tests" / "wav"
    _clip(s2p / "fr" / "allume la lumière.wav", sr=16000)
    _clip(s2p / "fr" / "une phrase sans traduction.wav", sr=16000)
    _clip(s2p / "fr" / "oov_1.wav", sr=16000)  # out of vocabulary: no transcript
    _clip(s2p / "fr" / "generated" / "éteins la lumière.wav", sr=16000)  # TTS
    _clip(s2p / "en" / "what time is it.wav", sr=16000)
    fx = repos / "sebastian-software+cuttledoc" / "packages" / "cuttledoc" / "fixtures"
    for lang in ("de", "pt"):
        _clip(fx / f"fleurs-{lang}-000.ogg", fmt="OGG")
        (fx / f"fleurs-{lang}-000.txt").write_text("für die besten aussichten\n" if lang == "de" else "olá\n")
    ch = repos / "Picovoice+cheetah" / "resources"
    _clip(ch / "audio_samples" / "test_it.wav", sr=16000)
    _clip(ch / "audio_samples" / "test_it_norm.wav", sr=16000)
    (ch / ".test").mkdir(parents=True)
    (ch / ".test" / "test_data.json").write_text(json.dumps({"tests": {"language_tests": [
        {"language": "it", "audio_file": "test_it.wav", "transcript": "Dal passo si sale sulla vetta lungo la cresta sud.",
         "normalization": False},
        {"language": "it", "audio_file": "test_it_norm.wav", "transcript": "Il mio numero preferito è 26.",
         "normalization": True},
        {"language": "ja", "audio_file": "test_ja.wav", "transcript": "x", "normalization": False}]}}))
    return repos


def test_build_real_set_reads_every_source_and_writes_manifests(tmp_path):
    out = tmp_path / "out"
    report = build_real_set(out, repos=_repos(tmp_path), debian_roots=_debian(tmp_path))
    sentences = {s.id: s for s in read_manifest(out / "real.jsonl")}
    words = {s.id: s for s in read_manifest(out / "words.jsonl")}
    # fillets: the officer's German lines only (deu-l-* is transliterated Russian), escapes undone
    assert sentences["fillets-deu-p-los"].source_text == 'Was ist "denn" los?'
    assert sentences["fillets-deu-p-los"].target_text == "What is the matter?"
    assert not any("deu-l" in i for i in sentences)
    # pocketsphinx: a transcription line whose clip is missing is left out; English is a transcribe line
    en = [s for s in sentences.values() if s.src_lang == "en"]
    assert {s.source_text for s in en} == {"he was not an ill disposed young man", "what time is it"}
    assert all(s.task == "transcribe" and s.target_text == s.source_text for s in en)
    # speech-to-phrase: generated/ (TTS) and oov_* are left out; our translation where we wrote one
    fr = {s.source_text: s for s in sentences.values() if s.src_lang == "fr"}
    assert set(fr) == {"allume la lumière", "une phrase sans traduction"}
    assert fr["allume la lumière"].target_text == "turn on the light"
    assert fr["une phrase sans traduction"].target_text == ""
    # cuttledoc: languages outside de/fr/es/it/en skipped; Picovoice: *_norm and other languages skipped
    assert [s.source_text for s in sentences.values() if s.src_lang == "de" and s.id.startswith("fleurs")] == [
        "für die besten aussichten"]
    it = [s for s in sentences.values() if s.src_lang == "it"]
    assert len(it) == 1 and it[0].target_text.startswith("From the pass")
    # ktuberling: one clip per file (lazo.wav is both "bow" and "tie"), spoken words and English keys
    assert {(s.source_text, s.target_text) for s in words.values()} == {
        ("ojo", "eye"), ("lazo", "bow"), ("gafas de sol", "sunglasses")}
    assert report["counts"]["sentence"] == {"de": 3, "fr": 2, "es": 0, "it": 1, "en": 2}
    assert report["counts"]["word"]["es"] == 3
    assert report["translated"]["fr"] == 1
    assert report["skipped"] == {"picovoice-leopard": f"{tmp_path}/repos/Picovoice+leopard not found "
                                 f"(git clone https://github.com/Picovoice/leopard {tmp_path}/repos/Picovoice+leopard)"}
    # clips: 16 kHz mono FLAC, durations in the manifest; every line names its origin and translator
    info = sf.info(str(out / "clips" / "ktuberling-es-ojo.flac"))
    assert (info.samplerate, info.channels, info.format) == (16000, 1, "FLAC")
    lines = [json.loads(x) for x in (out / "real.jsonl").read_text(encoding="utf-8").splitlines()]
    assert all(x["origin"] and x["duration"] > 0.5 for x in lines)
    assert {x["translation_by"] for x in lines if x["src_lang"] != "en"} == {"llast", None}
    # real.translate.jsonl: the sentence lines that have an English translation, nothing else
    assert {s.source_text for s in read_manifest(out / "real.translate.jsonl")} == {
        "Jawohl, mein Herr!", 'Was ist "denn" los?', "allume la lumière", "Dal passo si sale sulla vetta lungo la cresta sud."}
    md = (out / "SOURCES.md").read_text(encoding="utf-8")
    assert "Apache-2.0" in md and "GPL-2+" in md and "skipped" in md


def test_per_source_cap_spreads_over_the_source(tmp_path):
    repos = tmp_path / "repos"
    for i in range(6):
        _clip(repos / "OHF-Voice+speech-to-phrase" / "tests" / "wav" / "fr" / f"phrase {i}.wav", sr=16000)
    clips, _ = gather(repos, per_source=3, debian_roots={k: tmp_path / "none" for k in
                                                         ("fillets-ng-data", "pocketsphinx-testdata", "ktuberling-data")})
    assert [c.text for c in clips] == ["phrase 0", "phrase 2", "phrase 4"]


def test_no_source_is_a_clear_error(tmp_path):
    none = {k: tmp_path / "none" for k in ("fillets-ng-data", "pocketsphinx-testdata", "ktuberling-data")}
    with pytest.raises(DataError, match="no real-speech source found.*apt-get install fillets-ng-data.*no --repos"):
        build_real_set(tmp_path / "out", repos=None, debian_roots=none)


def test_bad_transcription_line_names_file_and_line(tmp_path):
    roots = _debian(tmp_path)
    (roots["pocketsphinx-testdata"] / "librivox" / "transcription").write_text("<s> fine </s> (a)\nno parentheses here\n")
    with pytest.raises(DataError, match=r"transcription:2: expected"):
        gather(None, debian_roots=roots)


def test_cli_data_real(tmp_path, capsys):
    assert main(["data", "real", "--out", str(tmp_path / "o"), "--per-source", "0"]) == 1
    assert "--per-source must be at least 1" in capsys.readouterr().err
    assert main(["data", "real", "--out", str(tmp_path / "o"), "--repos", str(_repos(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert "sentence" in out and "skipped picovoice-leopard" in out
    assert (tmp_path / "o" / "real.jsonl").is_file()

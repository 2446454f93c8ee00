"""Bad input through the REAL command line, on tiny models.

Every case ends in exactly one line `llast CMD: error: ...` that names the file or field and the
problem (exit 1, no traceback), or in a counted skip. The cases are those of issue #14 and more;
docs/reliability.md counts them. The Python API (Translator, load_model) is checked against the same
rules at the end.

Cases that fail before torch is imported run as `python -m llast.cli ...`, one process each. Cases
that need torch (a model, a corpus) would pay its import (~5-10 s here) each time, so they run
`llast.cli` as __main__ (runpy, as `python -m` does) one after another in ONE subprocess, each with
its own argv, stdout, stderr and exit status (`cli_batch`); an exception escaping the CLI is printed
there as the interpreter would print it. Two of them run again as processes of their own, to show
the two ways agree.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch

import tiny
from llast.checkpoint import save_checkpoint
from llast.lora import apply_lora
from llast.model import build_model

HEADER = "path\tsentence\ttranslation\tclient_id\n"


def _env() -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1] / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return env


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llast.cli", *map(str, args)], env=_env(), capture_output=True,
                          text=True, timeout=300)


_RUNNER = r"""
import contextlib, io, json, runpy, sys, traceback, warnings
warnings.filterwarnings("ignore", category=RuntimeWarning, module="runpy")
results = []
for argv in json.load(sys.stdin):
    out, err, code = io.StringIO(), io.StringIO(), 0
    sys.argv = ["llast", *argv]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_module("llast.cli", run_name="__main__", alter_sys=False)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:
            traceback.print_exc()
            code = 1
    results.append({"returncode": code, "stdout": out.getvalue(), "stderr": err.getvalue()})
sys.__stdout__.write(json.dumps(results))
"""


def cli_batch(cases: dict[str, list]) -> dict[str, subprocess.CompletedProcess]:
    """Run each case's argv through `llast.cli` as __main__, one after another in one subprocess."""
    ids = list(cases)
    r = subprocess.run([sys.executable, "-c", _RUNNER], input=json.dumps([[str(a) for a in cases[i]] for i in ids]),
                       env=_env(), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    results = json.loads(r.stdout)
    return {i: subprocess.CompletedProcess(cases[i], x["returncode"], x["stdout"], x["stderr"]) for i, x in zip(ids, results)}


def assert_one_line_error(r: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 1, no traceback, exactly one `llast CMD: error: ...` line, holding every needle."""
    err = r.stderr
    assert "Traceback" not in err, err[-3000:]
    assert r.returncode == 1, (r.returncode, err[-3000:])
    lines = [line for line in err.splitlines() if line.startswith("llast ") and ": error: " in line]
    assert len(lines) == 1, err[-3000:]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def _tsv(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    path.write_text(HEADER + "".join(f"{a}\t{b}\t{c}\tspk\n" for a, b, c in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def w(tiny_dirs, tmp_path_factory) -> SimpleNamespace:
    """Everything the cases need: a tiny checkpoint, a train config, good and bad clips and corpora."""
    root = tmp_path_factory.mktemp("bad_inputs")
    cfg = tiny.tiny_config(tiny_dirs["whisper"], tiny_dirs["llama"])
    cfg.decode = dataclasses.replace(cfg.decode, num_beams=1, max_new_tokens=3)
    torch.manual_seed(0)
    model = build_model(cfg.model)
    apply_lora(model, cfg.model)
    ckpt = save_checkpoint(model, cfg, root / "ckpt")

    clips = root / "de" / "clips_16k"
    clips.mkdir(parents=True)
    sf.write(clips / "good1.wav", tiny.clip(1.0, seed=1), 16000)
    sf.write(clips / "good2.wav", tiny.clip(0.7, seed=2, freq=330.0), 16000)
    sf.write(clips / "short5.wav", np.random.default_rng(0).uniform(-0.5, 0.5, 5).astype(np.float32), 16000)
    sf.write(clips / "noise10ms.wav", np.random.default_rng(1).uniform(-0.5, 0.5, 160).astype(np.float32), 16000)
    sf.write(clips / "empty.wav", np.zeros(0, np.float32), 16000)
    (clips / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really")
    outside = root / "outside.wav"  # a clip outside every clips folder, for paths that try to reach it
    sf.write(outside, tiny.clip(1.0, seed=3), 16000)
    # 360 s x 8 channels x 96 kHz = 276 M samples to decode: over the limit, yet a 285 KB FLAC of zeros.
    big = root / "big.flac"
    with sf.SoundFile(big, "w", 96000, 8, format="FLAC") as f:
        block = np.zeros((96000 * 20, 8), np.float32)
        for _ in range(18):
            f.write(block)

    corpus = tiny.write_corpus(root / "corpus", n_train=4, n_dev=2)
    train_yaml = tiny.write_train_yaml(root / "train.yaml", tiny_dirs["whisper"], tiny_dirs["llama"], corpus,
                                       root / "run", max_steps=1)
    return SimpleNamespace(root=root, ckpt=ckpt, clips=clips, good=clips / "good1.wav", outside=outside, big=big,
                           corpus=corpus, train_yaml=train_yaml)


# ----------------------------------------------------------------------------- options and configs
# Every case here fails before torch is imported: one `python -m llast.cli` process each.

def _translate(w, *extra):
    return ["translate", "--model", w.ckpt, "--src", "de", w.good, *extra]


def _train(w, *overrides):
    return ["train", w.train_yaml, *overrides]


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


OPTION_CASES = {
    # issue #14: decoding options
    "num_beams_0": (lambda w: _translate(w, "--num-beams", "0"), ["--num-beams", "0", "[1, 32]"]),
    "num_beams_-1": (lambda w: _translate(w, "--num-beams", "-1"), ["--num-beams", "-1"]),
    "num_beams_1000": (lambda w: _translate(w, "--num-beams", "1000"), ["--num-beams", "1000"]),
    "max_new_tokens_0": (lambda w: _translate(w, "--max-new-tokens", "0"), ["--max-new-tokens", "0"]),
    "max_new_tokens_-1": (lambda w: _translate(w, "--max-new-tokens", "-1"), ["--max-new-tokens", "-1"]),
    "chunk_seconds_0.01": (lambda w: _translate(w, "--chunk-seconds", "0.01"), ["--chunk-seconds", "0.01"]),
    "chunk_seconds_-5": (lambda w: _translate(w, "--chunk-seconds", "-5"), ["--chunk-seconds", "-5"]),
    # more
    "length_penalty_nan": (lambda w: _translate(w, "--length-penalty", "nan"), ["--length-penalty", "nan"]),
    "batch_size_0": (lambda w: _translate(w, "--batch-size", "0"), ["--batch-size", "0"]),
    "evaluate_num_beams_0": (
        lambda w: ["evaluate", "--model", w.ckpt, "--data", w.corpus / "covost_v2.de_en.dev.tsv", "--out",
                   w.root / "ev", "--num-beams", "0"], ["--num-beams"]),
    "evaluate_limit_0": (
        lambda w: ["evaluate", "--model", w.ckpt, "--data", w.corpus / "covost_v2.de_en.dev.tsv", "--out",
                   w.root / "ev", "--limit", "0"], ["--limit", "0"]),
    # issue #14: training options after overrides
    "save_every_0": (lambda w: _train(w, "train.save_every=0"), ["train.save_every", "0"]),
    "log_every_0": (lambda w: _train(w, "train.log_every=0"), ["train.log_every", "0"]),
    "max_steps_-1": (lambda w: _train(w, "train.max_steps=-1"), ["train.max_steps", "-1"]),
    "lr_-1": (lambda w: _train(w, "train.lr=-1"), ["train.lr", "-1"]),
    "max_batch_seconds_0": (lambda w: _train(w, "data.max_batch_seconds=0"), ["data.max_batch_seconds"]),
    "override_not_yaml": (lambda w: _train(w, "train.lr=[1"), ["train.lr=[1", "not valid YAML"]),
    "template_unknown_field": (lambda w: _train(w, "model.prompt.translate=Say {foo} in {tgt}"),
                               ["model.prompt.translate", "{foo}"]),
    # more
    "template_unbalanced": (lambda w: _train(w, "model.prompt.translate=Say {src"), ["model.prompt.translate"]),
    "transcribe_template_tgt": (lambda w: _train(w, "model.prompt.transcribe=Write {tgt}"),
                                ["model.prompt.transcribe", "{tgt}"]),
    "lr_nan": (lambda w: _train(w, "train.lr=.nan"), ["train.lr", "finite"]),
    "betas_one": (lambda w: _train(w, "train.betas=[0.9]"), ["train.betas"]),
    "grad_accum_0": (lambda w: _train(w, "train.grad_accum=0"), ["train.grad_accum"]),
    "epochs_0": (lambda w: _train(w, "train.epochs=0"), ["train.epochs"]),
    "warmup_ratio_2": (lambda w: _train(w, "train.warmup_ratio=2"), ["train.warmup_ratio"]),
    "lora_dropout_1.5": (lambda w: _train(w, "model.llm.lora.dropout=1.5"), ["model.llm.lora.dropout"]),
    "lora_r_0": (lambda w: _train(w, "model.encoder.lora.r=0"), ["model.encoder.lora.r"]),
    "adaptor_stack_0": (lambda w: _train(w, "model.adaptor.stack=0"), ["model.adaptor.stack"]),
    "data_batch_size_0": (lambda w: _train(w, "data.batch_size=0"), ["data.batch_size"]),
    "batching_unknown": (lambda w: _train(w, "data.batching=random"), ["data.batching", "random"]),
    "decode_num_beams_in_config": (lambda w: _train(w, "decode.num_beams=1000"), ["decode.num_beams"]),
    "source_language_path": (lambda w: _train(w, "data.dev=[{format: covost, path: x.tsv, src: ../../etc}]"),
                             ["data.dev[0].src", "../../etc"]),
    "override_without_value": (lambda w: _train(w, "train.lr"), ["train.lr", "key=value"]),
    "override_into_a_value": (lambda w: _train(w, "train.lr.x=1"), ["train.lr.x=1"]),
    "unknown_key": (lambda w: _train(w, "train.learning_rate=0.1"), ["train.learning_rate"]),
    "int_given_text": (lambda w: _train(w, "train.save_every=often"), ["train.save_every", "often"]),
    "config_not_found": (lambda w: ["train", w.root / "nope.yaml"], ["nope.yaml", "not found"]),
    "config_bad_yaml": (lambda w: ["train", _write(w.root / "bad.yaml", b"train: [1\n")], ["bad.yaml", "YAML"]),
    "config_not_utf8": (lambda w: ["train", _write(w.root / "latin1.yaml", b"train:\n  out_dir: caf\xe9\n")],
                        ["latin1.yaml", "UTF-8"]),
    "config_not_a_mapping": (lambda w: ["train", _write(w.root / "list.yaml", b"- 1\n- 2\n")], ["list.yaml", "mapping"]),
}


@pytest.mark.parametrize("case", sorted(OPTION_CASES))
def test_bad_option_or_config(w, case):
    argv, needles = OPTION_CASES[case]
    assert_one_line_error(cli(*argv(w)), *needles)


# ----------------------------------------------------------------------------- cases that need torch
# Built here, run in one batch (see the module docstring); each test below reads its case's result.

def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _set_config(path: Path, old: str, new: str) -> None:
    text = (path / "config.yaml").read_text()
    assert old in text
    (path / "config.yaml").write_text(text.replace(old, new, 1))


CHECKPOINT_CASES = {
    "truncated_adaptor": (lambda p: _truncate(p / "adaptor.safetensors"), ["adaptor.safetensors", "truncated"]),
    "truncated_llm_lora": (lambda p: _truncate(p / "llm_lora" / "adapter_model.safetensors"),
                           ["llm_lora/adapter_model.safetensors"]),
    "truncated_encoder_lora": (lambda p: _truncate(p / "encoder_lora" / "adapter_model.safetensors"),
                               ["encoder_lora/adapter_model.safetensors"]),
    "config_bad_yaml": (lambda p: (p / "config.yaml").write_text("model: [\n"), ["config.yaml", "not valid YAML"]),
    "config_not_utf8": (lambda p: (p / "config.yaml").write_bytes(b"model:\n  dtype: \xff\xfe\n"),
                        ["config.yaml", "UTF-8"]),
    "config_unknown_model": (lambda p: _set_config(p, "name: /", "name: nonexistent-org/x-"),
                             ["config.yaml", "model.encoder.name", "nonexistent-org/x-"]),
    "config_bad_value": (lambda p: _set_config(p, "num_beams: 1", "num_beams: 0"), ["config.yaml", "decode.num_beams"]),
    "no_marker": (lambda p: (p / "llast.json").unlink(), ["not a llast checkpoint"]),
    "adaptor_missing": (lambda p: (p / "adaptor.safetensors").unlink(), ["adaptor.safetensors missing"]),
}

AUDIO_CASES = {
    "5_samples": ("short5.wav", ["short5.wav", "shorter than the minimum of 0.1 s"]),
    "10ms_noise": ("noise10ms.wav", ["noise10ms.wav", "shorter than the minimum of 0.1 s"]),
    "empty": ("empty.wav", ["empty.wav", "empty audio"]),
    "corrupt": ("corrupt.wav", ["corrupt.wav", "cannot read"]),
    "missing": ("missing.wav", ["missing.wav", "not found"]),
}


def _jsonl(w, name: str, **fields) -> Path:
    obj = {"audio": str(w.good), "src_lang": "de", "tgt_lang": "en", "target_text": "hello", **fields}
    path = w.root / f"{name}.jsonl"
    path.write_text(json.dumps(obj) + "\n")
    return path


def _covost(w, name: str, clip: str, text: str = "hello") -> Path:
    folder = w.root / f"cv_{name}"
    folder.mkdir(exist_ok=True)
    return _tsv(folder / "covost_v2.de_en.test.tsv", [(clip, "hallo", text)])


def _mustc(w, wav_name: str) -> Path:
    split = w.root / "mustc_bad" / "tst"
    (split / "wav").mkdir(parents=True, exist_ok=True)
    (split / "txt").mkdir(exist_ok=True)
    (split / "txt" / "tst.yaml").write_text(f"- {{duration: 0.5, offset: 0.0, speaker_id: s, wav: '{wav_name}'}}\n")
    (split / "txt" / "tst.en").write_text("hello\n")
    (split / "txt" / "tst.de").write_text("hallo\n")
    return split


DATA_CASES = {
    "covost_parent_path": (lambda w: _covost(w, "up", "../../outside.wav"), ["covost_v2.de_en.test.tsv:2", "outside"]),
    "covost_absolute_path": (lambda w: _covost(w, "abs", str(w.outside)), ["covost_v2.de_en.test.tsv:2", "outside"]),
    "covost_missing_clip": (lambda w: _covost(w, "missing", "nope.wav"), ["nope.wav", "not found"]),
    "covost_not_utf8": (lambda w: _write(w.root / "covost_v2.de_en.latin.tsv", HEADER.encode() + b"a.wav\tcaf\xe9\tx\ty\n"),
                        ["covost_v2.de_en.latin.tsv:2", "UTF-8"]),
    "mustc_parent_path": (lambda w: _mustc(w, "../../../outside.wav"), ["tst.yaml", "segment 1", "outside"]),
    "jsonl_language_path": (lambda w: _jsonl(w, "lang", src_lang="../../etc"), ["lang.jsonl:1", "src_lang", "../../etc"]),
    "jsonl_unknown_language": (lambda w: _jsonl(w, "lang2", tgt_lang="xx"), ["lang2.jsonl:1", "tgt_lang", "'xx'"]),
    "jsonl_offset_text": (lambda w: _jsonl(w, "off", offset="abc"), ["off.jsonl:1", "offset", "'abc'"]),
    "jsonl_duration_list": (lambda w: _jsonl(w, "dur", duration=[1]), ["dur.jsonl:1", "duration", "[1]"]),
    "jsonl_negative_duration": (lambda w: _jsonl(w, "neg", duration=-1), ["neg.jsonl:1", "duration", "negative"]),
    "jsonl_zero_duration": (lambda w: _jsonl(w, "zero", duration=0), ["zero.jsonl:1", "duration", "not positive"]),
    "jsonl_negative_offset": (lambda w: _jsonl(w, "negoff", offset=-2), ["negoff.jsonl:1", "offset", "negative"]),
    "jsonl_offset_past_end": (lambda w: _jsonl(w, "past", offset=5.0), ["good1.wav", "past the end"]),
    "jsonl_text_not_string": (lambda w: _jsonl(w, "txt", target_text={"a": 1}), ["txt.jsonl:1", "target_text"]),
    "jsonl_audio_not_string": (lambda w: _jsonl(w, "aud", audio=5), ["aud.jsonl:1", "audio"]),
}

# Cases of several kinds that need torch: (argv maker, needles of the one error line).
OTHER_CASES = {
    "chunk_seconds_over_model_max": (lambda w: _translate(w, "--chunk-seconds", "45"), ["chunk_seconds", "45", "1 to 30 s"]),
    "translate_unknown_language": (lambda w: ["translate", "--model", w.ckpt, "--src", "xx", w.good], ["'xx'"]),
    "out_dir_is_a_file": (lambda w: _train(w, f"train.out_dir={_write(w.root / 'a_file', b'x')}"),
                          ["train.out_dir", "a_file", "not a folder"]),
    "resume_missing_checkpoint": (lambda w: ["train", w.train_yaml, "--resume", w.root / "no-such-ckpt"],
                                  ["no-such-ckpt", "not found"]),
    "model_not_found_offline": (lambda w: _train(w, "model.llm.name=nonexistent-org/nonexistent-llm"),
                                ["model.llm.name", "nonexistent-org/nonexistent-llm"]),
    "params_model_not_found": (lambda w: ["params", w.train_yaml, "model.encoder.name=/no/such/folder"],
                               ["model.encoder.name", "/no/such/folder"]),
    "train_data_outside_folder": (lambda w: _train(w, f"data.train=[{{format: covost, path: {_covost(w, 'tr', '../../outside.wav')}}}]"),
                                  ["covost_v2.de_en.test.tsv:2", "outside"]),
    "evaluate_out_is_a_file": (lambda w: ["evaluate", "--model", w.ckpt, "--data", w.corpus / "covost_v2.de_en.dev.tsv",
                                          "--out", _write(w.root / "score_file", b"x")], ["score_file", "not a folder"]),
    "evaluate_truncated_adaptor": (lambda w: ["evaluate", "--model", w.root / "ckpt_truncated_adaptor", "--data",
                                              w.corpus / "covost_v2.de_en.dev.tsv", "--out", w.root / "ev_broken"],
                                   ["adaptor.safetensors", "truncated"]),
    "export_truncated_adaptor": (lambda w: ["export", "--model", w.root / "ckpt_truncated_adaptor", "--out",
                                            w.root / "exp_broken"], ["adaptor.safetensors"]),
    "export_over_a_file": (lambda w: ["export", "--model", w.ckpt, "--out", _write(w.root / "export_target", b"keep me")],
                           ["export_target", "not overwriting"]),
}


def _mixed_tsv(w) -> Path:
    """Two good clips and every kind of bad one: missing, unreadable header, outside the clips folder
    (relative and absolute), too short (fails when decoded, not when its header is read), empty reference."""
    return _tsv(w.root / "covost_v2.de_en.test.tsv", [
        ("good1.wav", "hallo", "hello"), ("missing.wav", "x", "y"), ("corrupt.wav", "x", "y"),
        ("../../outside.wav", "x", "y"), (str(w.outside), "x", "y"), ("short5.wav", "x", "y"),
        ("good2.wav", "welt", ""), ("good2.wav", "welt", "world"),
    ])


def _skip_train(w) -> list:
    folder = w.root / "cv_train_mixed"
    folder.mkdir(exist_ok=True)
    tsv = _tsv(folder / "covost_v2.de_en.train.tsv", [
        ("../../corpus/de/clips_16k/de_train_0.wav", "x", "y"), (str(w.good), "x", "y"), ("missing.wav", "x", "y"),
        ("good2.wav", "welt", ""),
    ])
    return _train(w, f"data.train=[{{format: covost, path: {tsv}, audio_dir: {w.clips}}}, "
                     f"{{format: covost, path: {w.corpus / 'covost_v2.de_en.train.tsv'}}}]",
                  "data.skip_bad=true", "data.dev=[]", f"train.out_dir={w.root / 'run_skip'}")


def _prepare_cases(w) -> dict[str, list]:
    clips = w.root / "cv_prep" / "clips"
    for rel in ("a/same.mp3", "b/same.mp3", "same.flac", "dup/same.mp3", "dup/same.flac"):
        (clips / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(clips / rel, tiny.clip(0.5, seed=len(rel)), 16000, format="MP3" if rel.endswith("mp3") else "FLAC")
    tsv = _tsv(w.root / "cv_prep" / "covost_v2.de_en.train.tsv",
               [("a/same.mp3", "x", "y"), ("b/same.mp3", "x", "y"), ("same.flac", "x", "y"), ("../../outside.wav", "x", "y")])
    tsv2 = _tsv(w.root / "cv_prep" / "covost_v2.de_en.dev.tsv", [("dup/same.flac", "x", "y"), ("dup/same.mp3", "x", "y")])
    prep = ["data", "prepare", "covost", "--tsv"]
    out = w.root / "cv_prep" / "clips_16k"
    return {
        "prepare_mixed": [*prep, tsv, "--clips", clips, "--out", out, "--workers", "2"],
        "prepare_collision": [*prep, tsv2, "--clips", clips, "--out", w.root / "cv_prep" / "o2"],
        "prepare_out_is_a_file": [*prep, tsv, "--clips", clips, "--out", _write(w.root / "cv_prep" / "not_a_dir", b"x")],
        "prepare_clips_missing": [*prep, tsv, "--clips", w.root / "nowhere", "--out", out],
    }


@pytest.fixture(scope="module")
def heavy(w) -> dict[str, subprocess.CompletedProcess]:
    cases: dict[str, list] = {}
    for name, (mutate, _) in CHECKPOINT_CASES.items():
        path = w.root / f"ckpt_{name}"
        shutil.copytree(w.ckpt, path)
        mutate(path)
        cases[f"ckpt:{name}"] = ["translate", "--model", path, "--src", "de", w.good]
    for name, (clip, _) in AUDIO_CASES.items():
        cases[f"audio:{name}"] = ["translate", "--model", w.ckpt, "--src", "de", w.clips / clip]
    for name, (make, _) in DATA_CASES.items():
        cases[f"data:{name}"] = ["evaluate", "--model", w.ckpt, "--data", make(w), "--out", w.root / f"ev_{name}"]
    for name, (argv, _) in OTHER_CASES.items():
        cases[f"other:{name}"] = argv(w)
    cases["stream:big"] = ["translate", "--model", w.ckpt, "--src", "de", w.big]
    mixed = _mixed_tsv(w)
    cases["skip:evaluate"] = ["evaluate", "--model", w.ckpt, "--data", mixed, "--out", w.root / "ev_mixed", "--skip-bad"]
    cases["skip:evaluate_without_skip_bad"] = ["evaluate", "--model", w.ckpt, "--data", mixed, "--out", w.root / "ev_mixed2"]
    cases["skip:train"] = _skip_train(w)
    cases.update(_prepare_cases(w))
    return cli_batch(cases)


@pytest.mark.parametrize("case", sorted(CHECKPOINT_CASES))
def test_broken_checkpoint(w, heavy, case):
    assert_one_line_error(heavy[f"ckpt:{case}"], f"ckpt_{case}", *CHECKPOINT_CASES[case][1])


@pytest.mark.parametrize("case", sorted(AUDIO_CASES))
def test_bad_audio_in_translate(heavy, case):
    assert_one_line_error(heavy[f"audio:{case}"], *AUDIO_CASES[case][1])


def test_costly_file_is_refused_whole_and_streamed_in_blocks(w, heavy):
    """360 s x 8 channels x 96 kHz (276 M samples, a 285 KB FLAC of zeros): reading it whole is refused
    from its header (1 GiB as float32); translate streams it in 20 s blocks (bounded memory) and finds no
    speech in it: an empty translation, no error."""
    from llast.audio import load_audio
    from llast.errors import AudioError

    with pytest.raises(AudioError, match="8 channels x 96000 Hz.*limit"):
        load_audio(w.big)
    r = heavy["stream:big"]
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert r.stdout.strip().split("\t")[0].endswith("big.flac")


@pytest.mark.parametrize("case", sorted(DATA_CASES))
def test_bad_data_in_evaluate(heavy, case):
    assert_one_line_error(heavy[f"data:{case}"], *DATA_CASES[case][1])


@pytest.mark.parametrize("case", sorted(OTHER_CASES))
def test_other_bad_inputs(w, heavy, case):
    assert_one_line_error(heavy[f"other:{case}"], *OTHER_CASES[case][1])
    if case == "export_over_a_file":
        assert (w.root / "export_target").read_bytes() == b"keep me"


def test_batched_and_separate_processes_agree(w, heavy):
    """The batch runner gives what `python -m llast.cli` gives in a process of its own."""
    for key, argv in [("audio:5_samples", ["translate", "--model", w.ckpt, "--src", "de", w.clips / "short5.wav"]),
                      ("ckpt:truncated_adaptor", ["translate", "--model", w.root / "ckpt_truncated_adaptor", "--src", "de", w.good])]:
        alone = cli(*argv)
        assert alone.returncode == heavy[key].returncode == 1
        assert assert_one_line_error(alone) == assert_one_line_error(heavy[key])


def test_skip_bad_counts_every_bad_clip_in_evaluate(w, heavy):
    """Read-time (missing, unreadable header, outside the folder) and decode-time (too short) failures
    are skipped and counted with --skip-bad; an empty reference is always left out and counted."""
    r = heavy["skip:evaluate"]
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    score = json.loads((w.root / "ev_mixed" / "score.json").read_text())
    result = score["sets"]["de-en.translate"]
    assert result["n"] == 2 and result["skipped"] == 1 and result["skipped_empty"] == 1
    assert "short5.wav" in result["skipped_samples"][0]["reason"]
    assert score["meta"]["skipped_while_reading"] == 4
    assert "left out 1 sample(s) with an empty target text" in r.stderr
    assert "skipped 4 clips" in r.stdout and "skipped 1 unreadable" in r.stdout
    assert len((w.root / "ev_mixed" / "de-en.translate.hyp.txt").read_text().splitlines()) == 2
    # Without --skip-bad the first bad clip stops the run with one clear line.
    assert_one_line_error(heavy["skip:evaluate_without_skip_bad"], "missing.wav", "not found")


def test_skip_bad_in_train_counts_and_trains(w, heavy):
    r = heavy["skip:train"]
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert "left out 3 clips" in r.stderr and "with an empty target text" in r.stderr
    assert (w.root / "run_skip" / "final" / "llast.json").is_file()


def test_prepare_keeps_folders_refuses_escapes_and_collisions(w, heavy):
    r = heavy["prepare_mixed"]
    assert "Traceback" not in r.stderr and r.returncode == 1, r.stderr[-3000:]  # 1: a clip was refused
    assert "converted 3, already done 0, failed 1" in r.stdout and "outside" in r.stdout
    out = w.root / "cv_prep" / "clips_16k"
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == [
        ".llast-output.json", "a/same.wav", "b/same.wav", "same.wav"]  # the marker: llast.outdir
    assert not list(w.root.glob("*.part"))
    # Two names that would make one output file: refused before anything is converted.
    assert_one_line_error(heavy["prepare_collision"], "covost_v2.de_en.dev.tsv:3", "dup/same.flac", "dup/same.mp3",
                          "rename one")
    assert not (w.root / "cv_prep" / "o2").exists()
    assert_one_line_error(heavy["prepare_out_is_a_file"], "--out", "not_a_dir", "not a folder")
    assert_one_line_error(heavy["prepare_clips_missing"], "--clips", "nowhere")


# ----------------------------------------------------------------------------- the Python API, same rules

@pytest.fixture(scope="module")
def translator(w):
    from llast.decode import load_model

    return load_model(w.ckpt, dtype="float32")


@pytest.mark.parametrize("kwargs,needle", [
    ({"num_beams": 0}, "decode.num_beams"),
    ({"num_beams": 1000}, "decode.num_beams"),
    ({"max_new_tokens": -1}, "decode.max_new_tokens"),
    ({"num_beams": "5"}, "decode.num_beams"),
    ({"beams": 2}, "decode.beams"),
    ({"chunk_seconds": 0.01}, "chunk_seconds"),
    ({"chunk_seconds": -5}, "chunk_seconds"),
    ({"task": "summarise"}, "task"),
    ({"src": "../x"}, "'../x'"),
])
def test_python_api_applies_the_same_rules(translator, kwargs, needle):
    from llast.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        translator.translate(tiny.clip(1.0), **{"src": "de", **kwargs})
    assert needle in str(e.value)


def test_python_api_tiny_arrays_and_bad_dtype(w, translator):
    from llast.decode import load_model
    from llast.errors import AudioError, ConfigError

    for n in (5, 160):
        with pytest.raises(AudioError, match="shorter than the minimum"):
            translator.translate(np.random.default_rng(0).uniform(-0.5, 0.5, n).astype(np.float32), src="de")
    with pytest.raises(AudioError, match="not a waveform"):
        translator.translate([object()], src="de")
    with pytest.raises(ConfigError, match="int4"):
        load_model(w.ckpt, dtype="int4")


def test_server_limits_live_with_the_other_rules():
    """What `llast serve` checks per request: the same check_decode, and the upload size."""
    from llast.config import MAX_UPLOAD_BYTES, check_decode, check_upload_size
    from llast.errors import ConfigError

    assert check_decode({"num_beams": 3}).num_beams == 3
    with pytest.raises(ConfigError, match="decode.num_beams: 0"):
        check_decode({"num_beams": 0})
    assert check_upload_size("1024") == 1024
    for bad in (0, -1, MAX_UPLOAD_BYTES + 1, "12x", None):
        with pytest.raises(ConfigError, match="request body"):
            check_upload_size(bad)


# ----------------------------------------------------------------------------- output folders (issue #32)
# One rule (llast.outdir): a command writes into a new or empty folder, or one of its own kind; a folder
# of the user's is refused before any work and left as it was; a `<out>.tmp` of the user's beside it is
# never touched; two inputs with one stem get two output files.

def _users_folder(path: Path) -> Path:
    (path / "sub").mkdir(parents=True)
    (path / "thesis.txt").write_text("three years of work")
    (path / "sub" / "notes.txt").write_text("more")
    return path


def _intact(path: Path) -> bool:
    return ((path / "thesis.txt").read_text() == "three years of work" and (path / "sub" / "notes.txt").read_text() == "more"
            and sorted(p.name for p in path.iterdir()) == ["sub", "thesis.txt"])


FOREIGN = ("export", "ship", "text-lora", "evaluate", "synth", "prepare", "train", "translate")


@pytest.fixture(scope="module")
def outputs(w) -> SimpleNamespace:
    root = w.root / "outputs"
    root.mkdir()
    foreign = {name: _users_folder(root / f"mine_{name}") for name in FOREIGN}
    siblings = {name: _users_folder(root / f"new_{name}.tmp") for name in FOREIGN}
    (root / "a").mkdir(), (root / "b").mkdir()
    shutil.copy(w.good, root / "a" / "clip.wav")
    shutil.copy(w.clips / "good2.wav", root / "b" / "clip.wav")
    train_yaml = root / "train.yaml"
    train_yaml.write_text(w.train_yaml.read_text().replace(str(w.root / "run"), str(root / "new_train")))
    tsv = w.corpus / "covost_v2.fr_en.dev.tsv"
    (root / "pclips").mkdir()
    sf.write(root / "pclips" / "x.flac", tiny.clip(0.6, seed=9), 16000, format="FLAC")
    prepare_tsv = _tsv(root / "covost_v2.de_en.dev.tsv", [("x.flac", "x", "y")])
    cases = {
        "export": ["export", "--model", w.ckpt, "--out", foreign["export"]],
        "ship": ["export", "--ship", "--model", w.ckpt, "--out", foreign["ship"]],
        "text-lora": ["text-lora", "--model", w.ckpt, "--out", foreign["text-lora"], "--steps", "1", "--data", tsv],
        "evaluate": ["evaluate", "--model", w.ckpt, "--data", tsv, "--out", foreign["evaluate"]],
        "synth": ["data", "synth", "--out", foreign["synth"], "--directions", "de-en", "--train", "1", "--dev", "0",
                  "--test", "0", "--splits", "train"],
        "prepare": ["data", "prepare", "covost", "--tsv", tsv, "--clips", w.corpus, "--out", foreign["prepare"]],
        "train": ["train", w.train_yaml, f"train.out_dir={foreign['train']}"],
        "translate": ["translate", "--model", w.ckpt, "--src", "de", w.good, "--out-dir", foreign["translate"]],
        # the same commands into new folders, each beside a user's folder named like a temporary one
        "ok:export": ["export", "--model", w.ckpt, "--out", root / "new_export"],
        "ok:ship": ["export", "--ship", "--model", w.ckpt, "--out", root / "new_ship"],
        "ok:ship_again": ["export", "--ship", "--model", w.ckpt, "--out", root / "new_ship"],  # its own kind: replaced
        "ok:train": ["train", train_yaml],
        "ok:text-lora": ["text-lora", "--model", w.ckpt, "--out", root / "new_text-lora", "--steps", "1", "--batch", "2",
                        "--data", tsv],
        "ok:evaluate": ["evaluate", "--model", w.ckpt, "--data", tsv, "--out", root / "new_evaluate"],
        "ok:evaluate_again": ["evaluate", "--model", w.ckpt, "--data", tsv, "--out", root / "new_evaluate"],
        "ok:synth": ["data", "synth", "--out", root / "new_synth", "--directions", "de-en", "--train", "1", "--dev", "0",
                     "--test", "0", "--splits", "train"],
        "ok:prepare": ["data", "prepare", "covost", "--tsv", prepare_tsv, "--clips", root / "pclips", "--out", root / "new_prepare"],
        "ok:translate": ["translate", "--model", w.ckpt, "--src", "de", w.good, "--out-dir", root / "new_translate"],
        "ok:vtt": ["translate", "--model", w.ckpt, "--src", "de", "--format", "vtt", "--out-dir", root / "subs",
                   root / "a" / "clip.wav", root / "b" / "clip.wav"],
    }
    return SimpleNamespace(root=root, foreign=foreign, siblings=siblings, r=cli_batch(cases))


@pytest.mark.parametrize("command", FOREIGN)
def test_a_users_folder_is_refused_and_left_as_it_was(outputs, command):
    option = {"train": "train.out_dir", "translate": "--out-dir"}.get(command, "--out")
    assert_one_line_error(outputs.r[command], option, f"mine_{command}", "not empty", "holds no llast output")
    assert _intact(outputs.foreign[command])


def test_new_output_folders_leave_a_users_tmp_sibling_alone(outputs):
    for name in FOREIGN:
        r = outputs.r[f"ok:{name}"]
        assert r.returncode == 0, r.stderr[-3000:]
        assert _intact(outputs.siblings[name]), name  # `new_X.tmp` is the user's, not ours
    assert (outputs.root / "new_export" / "llast.json").is_file() and (outputs.root / "new_ship" / "llast.json").is_file()
    assert (outputs.root / "new_train" / "final" / "llast.json").is_file()
    assert (outputs.root / "new_text-lora" / "text_lora").is_dir() and (outputs.root / "new_prepare" / "x.wav").is_file()
    assert (outputs.root / "new_synth" / "synth.json").is_file() and (outputs.root / "new_translate" / "good1.txt").is_file()
    assert outputs.r["ok:ship_again"].returncode == 0  # into its own earlier output: allowed, replaced whole
    assert outputs.r["ok:evaluate"].returncode == 0 and outputs.r["ok:evaluate_again"].returncode == 0
    leftovers = [p.name for p in outputs.root.rglob("*") if p.name.endswith((".llast-partial", ".llast-old"))]
    assert leftovers == []


def test_two_inputs_with_one_stem_get_two_subtitle_files(outputs):
    r = outputs.r["ok:vtt"]
    assert r.returncode == 0, r.stderr[-3000:]
    subs = outputs.root / "subs"
    assert sorted(p.name for p in subs.glob("*.vtt")) == ["a_clip.vtt", "b_clip.vtt"]
    assert all(p.read_text().startswith("WEBVTT") for p in subs.glob("*.vtt"))
    assert f"{outputs.root / 'a' / 'clip.wav'}\t{subs / 'a_clip.vtt'}" in r.stderr


def test_outdir_rule_units(tmp_path):
    """llast.outdir itself: kinds recognised by marker or legacy file, staging cleaned on error, a killed
    swap finished or undone, unique names."""
    from llast import outdir
    from llast.errors import OutputError

    assert outdir.check(tmp_path / "new", "evaluate") == tmp_path / "new"
    (tmp_path / "empty").mkdir()
    outdir.check(tmp_path / "empty", "synth")
    old_eval = tmp_path / "old_eval"
    old_eval.mkdir()
    (old_eval / "score.json").write_text("{}")  # made before the marker existed
    assert outdir.kind_of(old_eval) == "evaluate"
    with pytest.raises(OutputError, match="holds a llast evaluate output"):
        outdir.check(old_eval, "translate")
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="not a folder"):
        outdir.check(tmp_path / "file", "evaluate")
    with pytest.raises(RuntimeError, match="boom"):
        with outdir.staged(tmp_path / "built", "translate") as t:
            (t / "x.txt").write_text("half")
            raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "file", "old_eval"]  # the half-built one is gone
    with outdir.staged(tmp_path / "built", "translate") as t:
        (t / "x.txt").write_text("whole")
    assert outdir.kind_of(tmp_path / "built") == "translate" and (tmp_path / "built" / "x.txt").read_text() == "whole"
    # a swap killed between its two renames: the previous version is put back; a finished one is cleaned
    run = tmp_path / "run"
    (run / ".final.abc123.llast-old" / "final").mkdir(parents=True)
    (run / ".checkpoint-1.x.llast-partial").mkdir()
    (run / "mine.tmp").mkdir()
    done = outdir.clean_staging(run)
    assert (run / "final").is_dir() and any("restored final" in d for d in done)
    assert sorted(p.name for p in run.iterdir()) == ["final", "mine.tmp"]
    assert outdir.unique_names(["a/clip.wav", "b/clip.wav", "c/other.mp3"], ".srt") == ["a_clip.srt", "b_clip.srt", "other.srt"]
    assert outdir.unique_names(["x/clip.wav", "x/clip.wav"], ".txt") == ["x_clip.txt", "x_clip-2.txt"]

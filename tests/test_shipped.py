"""Shipped checkpoints (llast-mini): bf16 copies of the trainable weights that load by name."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import tiny
from llast import assets
from llast.checkpoint import load_checkpoint, save_checkpoint, ship_checkpoint
from llast.errors import AssetError
from llast.lora import apply_lora
from llast.model import build_model
from llast.processor import Example, build_processor


def _trained_tiny(tiny_dirs, tmp_path):
    cfg = tiny.tiny_config(tiny_dirs["whisper"], tiny_dirs["qwen2"])
    torch.manual_seed(0)
    model = build_model(cfg.model)
    apply_lora(model, cfg.model)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    return save_checkpoint(model.eval(), cfg, tmp_path / "ckpt"), model, cfg


def test_ship_casts_trainable_weights_to_bf16_and_loads_back(tiny_dirs, tmp_path):
    ckpt, model, cfg = _trained_tiny(tiny_dirs, tmp_path)
    (ckpt / "trainer_state.pt").write_bytes(b"not shipped")
    shipped = ship_checkpoint(ckpt, tmp_path / "shipped")
    assert not (shipped / "trainer_state.pt").exists()
    files = list(shipped.rglob("*.safetensors"))
    assert len(files) == 3  # adaptor, encoder LoRA, LLM LoRA
    assert all(v.dtype == torch.bfloat16 for f in files for v in load_file(str(f)).values())
    loaded, _ = load_checkpoint(shipped)
    proc = build_processor(cfg.model, encoder_config=loaded.encoder_config)
    batch = proc([Example(tiny.clip(0.8), "fr", "en")])
    with torch.no_grad():
        a, b = model(**batch).logits, loaded(**batch).logits
    assert not torch.equal(a, b)  # rounded to bf16 ...
    torch.testing.assert_close(a, b, rtol=0.05, atol=0.05)  # ... and otherwise the same model


def test_shipped_name_resolves_and_names_missing_models(tiny_dirs, tmp_path, monkeypatch):
    ckpt, _, _ = _trained_tiny(tiny_dirs, tmp_path)
    shipped = ship_checkpoint(ckpt, tmp_path / "mini")
    monkeypatch.setitem(assets.SHIPPED, "llast-test", (shipped, (), "test"))
    assert assets.resolve_checkpoint("llast-test") == shipped
    load_checkpoint("llast-test")
    monkeypatch.setitem(assets.SHIPPED, "llast-test", (shipped, ("no-such-bundled-model",), "test"))
    with pytest.raises(AssetError, match="llast models prepare llast-test"):
        load_checkpoint("llast-test")
    assert assets.resolve_checkpoint(str(ckpt)) == ckpt  # paths pass through


def test_export_ship_of_the_bundled_name(tiny_dirs, tmp_path, monkeypatch):
    """`llast export --ship --model NAME` takes a shipped model's name as every other command does, and a
    user's `OUT.tmp/` beside the output is left alone (issue #32)."""
    from llast.cli import main

    ckpt, _, _ = _trained_tiny(tiny_dirs, tmp_path)
    shipped = ship_checkpoint(ckpt, tmp_path / "mini")
    monkeypatch.setitem(assets.SHIPPED, "llast-test", (shipped, (), "test"))
    (tmp_path / "keep.tmp").mkdir()
    (tmp_path / "keep.tmp" / "mine.txt").write_text("mine")
    assert main(["export", "--ship", "--model", "llast-test", "--out", str(tmp_path / "keep")]) == 0
    assert (tmp_path / "keep" / "llast.json").is_file()
    assert (tmp_path / "keep.tmp" / "mine.txt").read_text() == "mine"
    load_checkpoint(tmp_path / "keep")


@pytest.mark.real
@pytest.mark.skipif(not (assets.SHIPPED["llast-mini"][0] / "llast.json").is_file(), reason="llast-mini not shipped yet")
def test_llast_mini_hears_and_translates_through_the_cli(tmp_path):
    """The shipped model, by name, on two German clips of a test voice and sentences outside its training.
    Its transcribe task hears them (session 22's model, word for word: "Ich habe heute keine Zeit." and
    "Das Wetter ist heute sehr schön."); its translations are two different English sentences, not the
    German echoed. Their content is not asserted: llast-mini translates German at 10.4 BLEU on the test
    split (docs/lab/quality.md, session 26)."""
    import soundfile as sf

    heard = tiny.HEARD_DE
    paths = tiny.german_test_clips(tmp_path)
    assert sf.info(paths[0]).samplerate == 16000

    def run(*task: str) -> list[str]:
        r = subprocess.run([sys.executable, "-m", "llast.cli", "translate", "--model", "llast-mini", "--src", "de",
                            *task, *paths], capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
        lines = [line.split("\t", 1)[1].strip() for line in r.stdout.splitlines() if "\t" in line]
        assert len(lines) == 2, r.stdout
        return lines

    transcripts = run("--task", "transcribe")
    assert sum(word in t.lower() for word, t in zip(heard.values(), transcripts)) >= 1, transcripts
    translations = run("--tgt", "en")
    assert all(translations) and translations[0] != translations[1], translations
    assert not any(w in t.lower().split() for t in translations for w in ("ich", "heute", "das", "ist")), translations

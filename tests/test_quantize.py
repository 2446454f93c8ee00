"""Int8 decoding weights (llast.quantize, `--dtype int8`)."""

import json

import numpy as np
import dataclasses

import pytest
import soundfile as sf
import torch

import tiny
from llast import quantize
from llast.checkpoint import TEXT_ADAPTER, save_checkpoint
from llast.cli import main
from llast.decode import load_model
from llast.errors import ConfigError
from llast.lora import apply_lora, peft_config
from llast.model import build_model


@pytest.fixture(scope="module")
def ckpt(tiny_dirs, tmp_path_factory):
    """A tiny dual-LoRA checkpoint (qwen2 LLM, as llast-mini's) with non-zero LoRA weights, decoded in two passes."""
    cfg = tiny.tiny_config(tiny_dirs["whisper"], tiny_dirs["qwen2"])
    cfg.decode = dataclasses.replace(cfg.decode, max_new_tokens=12, two_pass=True)
    torch.manual_seed(0)
    model = build_model(cfg.model)
    apply_lora(model, cfg.model)
    _randomise_lora(model)
    return save_checkpoint(model, cfg, tmp_path_factory.mktemp("q8") / "ckpt")


def _randomise_lora(model, seed: int = 3) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def _clips():
    return [tiny.clip(s, i, f) for i, (s, f) in enumerate([(1.1, 200.0), (0.5, 440.0), (2.3, 300.0)])]


def test_int8_linear_computes_the_layer_within_quantization_error():
    torch.manual_seed(0)
    w, b, x = torch.randn(48, 64), torch.randn(48), torch.randn(5, 64)
    q = quantize.int8_linear(w, b)
    exact = x @ w.T + b
    err = (q(x) - exact).abs().max() / exact.abs().max()
    assert 0 < err < 0.03  # really quantized (not exact), and close


def test_two_pass_int8_keeps_each_adapter_and_switches_for_the_text_pass(ckpt):
    """Both LoRA adapters survive quantization (one int8 copy of each adapted layer per adapter), the text pass
    runs the text adapter, and int8 logits stay close to the fp32 model's with the same adapter."""
    fp32 = load_model(ckpt, dtype="float32")  # two passes: the L-LoRA unmerged
    q8 = load_model(ckpt, dtype="float32")
    for tr in (fp32, q8):  # the same random text adapter on both
        torch.manual_seed(5)
        tr.model.llm.add_adapter(TEXT_ADAPTER, peft_config(tr.cfg.model.llm.lora, is_llm=True))
        with torch.no_grad():
            for n, p in tr.model.llm.named_parameters():
                if f"lora_B.{TEXT_ADAPTER}." in n:
                    p.copy_(torch.randn(p.shape) * 0.2)
    quantize.quantize_int8(q8.model)
    llm = q8.model.llm
    assert not hasattr(llm, "peft_config") and llm.llast_adapters.names == ("default", TEXT_ADAPTER)
    assert quantize.weights_kind(q8.model) == "int8" and quantize.weights_kind(fp32.model) == "torch.float32"
    ids = torch.tensor([[3, 17, 9, 40, 22, 5]])
    for adapter in ("default", TEXT_ADAPTER):
        fp32.model.llm.set_adapter(adapter)
        with torch.no_grad(), llm.llast_adapters.use(adapter):
            want, got = fp32.model.llm(input_ids=ids).logits, llm(input_ids=ids).logits
        assert torch.nn.functional.cosine_similarity(want.flatten(), got.flatten(), dim=0) > 0.99
    fp32.model.llm.set_adapter("default")
    assert llm.llast_adapters.active == "default"

    clips = _clips()
    got = q8.translate(clips, src="fr", tgt="en", num_beams=2)
    assert len(got) == 3 and all(isinstance(t, str) for t in got) and any(got)
    assert q8.translate(clips, src="fr", tgt="en", num_beams=2) == got  # deterministic
    heard = q8.translate(clips, src="fr", tgt="en", task="transcribe", num_beams=2)
    with llm.llast_adapters.use(TEXT_ADAPTER):
        by_hand = q8.text_translator().translate(heard, "fr", "en", q8.decode_config(num_beams=2))
    assert got == by_hand and llm.llast_adapters.active == "default"
    with llm.llast_adapters.use("default"):
        with_l_lora = q8.text_translator().translate(heard, "fr", "en", q8.decode_config(num_beams=2))
    assert with_l_lora != got  # the switch really changes the weights


def test_without_a_text_adapter_the_text_pass_runs_the_bare_llm(ckpt):
    q8 = load_model(ckpt, dtype="int8")
    switch = q8.model.llm.llast_adapters
    assert switch.names == ("default", quantize.BASE)
    clips = _clips()
    got = q8.translate(clips, src="fr", tgt="en", num_beams=1)
    heard = q8.translate(clips, src="fr", tgt="en", task="transcribe", num_beams=1)
    with switch.use(quantize.BASE):
        assert q8.text_translator().translate(heard, "fr", "en", q8.decode_config(num_beams=1)) == got


def test_float32_is_untouched_and_one_pass_int8_is_a_quantized_merged_model(ckpt):
    fp32 = load_model(ckpt, dtype="float32", two_pass=False)
    assert quantize.weights_kind(fp32.model) == "torch.float32"
    assert not any(isinstance(m, quantize.AdapterLinear) for m in fp32.model.modules())
    q8 = load_model(ckpt, dtype="int8", two_pass=False)
    assert not hasattr(q8.model.llm, "llast_adapters")  # L-LoRA merged, then quantized as it is
    assert isinstance(q8.model.llm.lm_head, torch.ao.nn.quantized.dynamic.Linear)
    assert isinstance(q8.model.llm.model.layers[0].mlp.down_proj, quantize.FloatLinear)  # outlier inputs: fp32
    assert not any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in q8.model.encoder.modules())
    quantize.quantize_int8(load_model(ckpt, dtype="float32", two_pass=False).model, parts=("encoder",))
    clips = _clips()
    assert len(q8.translate(clips, src="fr", tgt="en", num_beams=2)) == 3


def test_auto_stays_float_int8_only_when_asked(monkeypatch):
    """`--dtype auto` keeps fp32 (bf16 with AMX): int8's BLEU on the test split is not shown within 0.5 of fp32's."""
    import llast.model as M

    for amx in (False, True):
        monkeypatch.setattr(M, "_cpu_has_amx_bf16", lambda amx=amx: amx)
        assert not quantize.wants_int8("auto", "cpu") and quantize.wants_int8("int8", "cpu")
    assert not quantize.wants_int8("float32", "cpu") and not quantize.wants_int8("bfloat16", "cpu")
    with pytest.raises(ConfigError, match="CPU only"):
        quantize.wants_int8("int8", "cuda")
    with pytest.raises(ConfigError, match="int4"):
        quantize.wants_int8("int4", "cpu")


def test_cli_dtype_int8_reaches_the_model(ckpt, tmp_path, capsys):
    corpus = tiny.write_corpus(tmp_path / "corpus", directions=("fr_en",))
    data = str(corpus / "covost_v2.fr_en.dev.tsv")
    out = tmp_path / "e"
    assert main(["evaluate", "--model", str(ckpt), "--data", data, "--out", str(out), "--dtype", "int8",
                 "--num-beams", "1"]) == 0
    assert json.loads((out / "score.json").read_text())["meta"]["dtype"] == "int8"
    clip = tmp_path / "a.wav"
    sf.write(clip, tiny.clip(1.1, 0, 200.0), 16000)
    capsys.readouterr()
    assert main(["translate", "--model", str(ckpt), "--src", "fr", "--dtype", "int8", "--num-beams", "1", "--verbose",
                 str(clip)]) == 0
    got = capsys.readouterr()
    assert got.out.startswith(str(clip))
    assert "1.1 s of audio" in got.err and "RTF" in got.err and "weights int8" in got.err
    assert main(["evaluate", "--baseline", "whisper", "--model", "x", "--data", data, "--out", str(out),
                 "--dtype", "int8"]) == 1  # the baselines have no int8 path: one clear line
    assert "int8" in capsys.readouterr().err

"""`--dtype gguf` (llast.llamacpp): the LLM run by llama.cpp from its bundled GGUF, with the LoRA adapters
converted to GGUF LoRA. The conversion is tested on a tiny model's adapters; decoding on the real bundled
weights (llast-mini), against the PyTorch path."""

import subprocess
import sys

import numpy as np
import pytest
import torch

import tiny
from llast import assets
from llast.errors import ConfigError
from llast.llamacpp import lora_to_gguf

gguf = pytest.importorskip("gguf")


def test_lora_to_gguf_names_shapes_and_alpha(tiny_dirs, tmp_path):
    """Every LoRA tensor of a Llama's adapter, under llama.cpp's name with the shapes it checks (lora_a
    (r, in), lora_b (out, r) as numpy shapes), values unchanged; alpha kept for llama.cpp's alpha / r."""
    from peft import get_peft_model_state_dict

    from llast.lora import apply_lora
    from llast.model import build_model

    cfg = tiny.tiny_config(tiny_dirs["whisper"], tiny_dirs["llama"])
    torch.manual_seed(0)
    model = build_model(cfg.model)
    apply_lora(model, cfg.model)
    state = get_peft_model_state_dict(model.llm)
    config = model.llm.get_base_model().config
    out = lora_to_gguf(state, 32.0, tmp_path / "a.gguf", config.model_type, config.num_hidden_layers)
    reader = gguf.GGUFReader(str(out))
    fields = {name: f for name, f in reader.fields.items()}
    assert bytes(fields["general.type"].parts[-1]).decode() == "adapter"
    assert bytes(fields["adapter.type"].parts[-1]).decode() == "lora"
    assert float(fields["adapter.lora.alpha"].parts[-1][0]) == 32.0
    tensors = {t.name: t for t in reader.tensors}
    assert len(tensors) == len(state)
    key = next(k for k in state if "layers.0.self_attn.q_proj.lora_A" in k)
    a = tensors["blk.0.attn_q.weight.lora_a"]
    assert np.array_equal(np.asarray(a.data).reshape(state[key].shape), state[key].float().numpy())
    b_key = key.replace("lora_A", "lora_B")
    assert tuple(reversed(tensors["blk.0.attn_q.weight.lora_b"].shape.tolist())) == tuple(state[b_key].shape)
    with pytest.raises(ConfigError, match="no llama.cpp counterpart"):
        lora_to_gguf({"base_model.model.encoder.conv1.lora_A.weight": torch.zeros(2, 3)}, 1.0, tmp_path / "b.gguf",
                     "llama", 2)


def test_gguf_file_is_refused_for_a_model_that_is_not_a_bundled_gguf():
    with pytest.raises(assets.AssetError, match="not a bundled GGUF model"):
        assets.gguf_file("whisper-base")


def test_gguf_dtype_names_the_llm_that_has_no_bundled_gguf(tiny_dirs, tmp_path, capsys):
    """--dtype gguf on a model whose LLM is not a bundled GGUF: one line naming it and the bundled ones."""
    from llast.cli import main

    ckpt = tiny.lora_checkpoint(tiny_dirs, tmp_path / "ckpt")
    import soundfile as sf

    sf.write(tmp_path / "a.wav", tiny.clip(1.0), 16000)
    code = main(["translate", "--model", str(ckpt), "--src", "de", "--dtype", "gguf", str(tmp_path / "a.wav")])
    err = capsys.readouterr().err
    assert code != 0 and "not a bundled GGUF model" in err and "qwen2.5-coder-0.5b-instruct" in err, err
    assert "Traceback" not in err


try:
    import llama_cpp  # noqa: F401

    LLAMA_CPP = True
except ImportError:
    LLAMA_CPP = False


@pytest.mark.real
@pytest.mark.skipif(not LLAMA_CPP, reason="llama-cpp-python not installed (scripts/setup.sh builds it)")
@pytest.mark.skipif(not (assets.SHIPPED["llast-mini"][0] / "llast.json").is_file(), reason="llast-mini not shipped")
def test_llast_mini_in_llama_cpp_hears_and_translates_as_pytorch_does(tmp_path):
    """llast-mini with --dtype gguf (the Q4_K_M GGUF its LLM was converted from, run by llama.cpp, with its
    L-LoRA and text adapter as GGUF LoRA) against --dtype float32 (the same weights dequantized, PyTorch),
    greedy, two passes: the same keyword heard, English out, mostly the same words."""
    heard = tiny.HEARD_DE
    paths = tiny.german_test_clips(tmp_path)

    def run(dtype: str, *task: str) -> list[str]:
        r = subprocess.run([sys.executable, "-m", "llast.cli", "translate", "--model", "llast-mini", "--src", "de",
                            "--num-beams", "1", "--dtype", dtype, *task, *paths], capture_output=True, text=True,
                           timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
        return [line.split("\t", 1)[1].strip() for line in r.stdout.splitlines() if "\t" in line]

    heard_gguf, heard_fp32 = run("gguf", "--task", "transcribe"), run("float32", "--task", "transcribe")
    assert len(heard_gguf) == 2
    for word, g, f in zip(heard.values(), heard_gguf, heard_fp32):
        assert (word in g.lower()) == (word in f.lower()), (heard_gguf, heard_fp32)
    said = run("gguf", "--tgt", "en")
    assert all(said) and not any(w in t.lower().split() for t in said for w in ("ich", "heute", "das", "ist")), said
    r = subprocess.run([sys.executable, "-m", "llast.cli", "translate", "--model", "llast-mini", "--src", "de",
                        "--num-beams", "4", "--dtype", "gguf", paths[0]], capture_output=True, text=True, timeout=600)
    assert r.returncode != 0 and "--num-beams 4: --dtype gguf decodes greedily" in r.stderr, r.stderr[-500:]
    assert "Traceback" not in r.stderr


def test_auto_dtype_picks_gguf_only_where_it_runs_greedy_on_a_cpu_without_amx(tiny_dirs, monkeypatch):
    """--dtype auto: gguf on a CPU without AMX-BF16 for greedy decoding when llama.cpp can run the LLM;
    beam search, AMX or an LLM llama.cpp cannot run here keep PyTorch's choice ("auto")."""
    import dataclasses

    from llast import decode, llamacpp

    cfg = tiny.tiny_config(tiny_dirs["whisper"], tiny_dirs["llama"])
    cfg.decode = dataclasses.replace(cfg.decode, num_beams=1)
    assert decode.auto_dtype(cfg, device="cpu") == "auto"  # the tiny LLM is no bundled GGUF
    monkeypatch.setattr(llamacpp, "runs", lambda name: True)
    monkeypatch.setattr(decode, "_cpu_has_amx_bf16", lambda: False)
    assert decode.auto_dtype(cfg, device="cpu") == "gguf"
    assert decode.auto_dtype(cfg, num_beams=4, device="cpu") == "auto"
    assert decode.auto_dtype(dataclasses.replace(cfg, decode=dataclasses.replace(cfg.decode, num_beams=5))) == "auto"
    monkeypatch.setattr(decode, "_cpu_has_amx_bf16", lambda: True)
    assert decode.auto_dtype(cfg, device="cpu") == "auto"

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
    two passes, greedy and with beam 4 (llast.beam's search over llama.cpp sequences): the same keyword
    heard, English out."""
    heard = tiny.HEARD_DE
    paths = tiny.german_test_clips(tmp_path)

    def run(dtype: str, beams: int, *task: str) -> list[str]:
        r = subprocess.run([sys.executable, "-m", "llast.cli", "translate", "--model", "llast-mini", "--src", "de",
                            "--num-beams", str(beams), "--dtype", dtype, *task, *paths], capture_output=True,
                           text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
        return [line.split("\t", 1)[1].strip() for line in r.stdout.splitlines() if "\t" in line]

    for beams in (1, 4):
        heard_gguf, heard_fp32 = run("gguf", beams, "--task", "transcribe"), run("float32", beams, "--task", "transcribe")
        assert len(heard_gguf) == 2
        for word, g, f in zip(heard.values(), heard_gguf, heard_fp32):
            assert (word in g.lower()) == (word in f.lower()), (beams, heard_gguf, heard_fp32)
    said = run("gguf", 4, "--tgt", "en")
    assert all(said) and not any(w in t.lower().split() for t in said for w in ("ich", "heute", "das", "ist")), said


@pytest.mark.real
def test_llast_mini_gives_the_same_texts_with_and_without_the_prefix_cache(tmp_path):
    """The prefix cache (the chat template's start prefilled once per adapter) on the real weights: llast-mini
    hears the same keywords and translates into English as when every prompt is prefilled whole, clip by clip
    and batched (the shared cells sit elsewhere in the KV cache, so sums may round differently, as with
    another batch), and each adapter keeps its template's start."""
    import dataclasses

    import soundfile as sf

    from llast.decode import load_model
    from llast.processor import Example

    t = load_model("llast-mini", dtype="gguf")
    clips = [Example(sf.read(p, dtype="float32")[0], "de", "en", "translate") for p in tiny.german_test_clips(tmp_path)]
    decode = t.decode_config(num_beams=1)
    heard, said = {}, {}
    for reuse in (False, True):
        t.model.llm.reuse_prefix = reuse
        heard[reuse] = [t.generate([ex], decode)[0] for ex in [dataclasses.replace(c, task="transcribe", tgt_lang="de")
                                                               for c in clips]]
        said[reuse] = [t.generate([ex], decode)[0] for ex in clips] + t.generate(clips, decode)
    for word, cached, whole in zip(tiny.HEARD_DE.values(), heard[True], heard[False]):
        assert (word in cached.lower()) == (word in whole.lower()), (heard, said)
    assert all(said[True]) and not any(w in x.lower().split() for x in said[True] for w in ("ich", "heute", "das", "ist"))
    assert sorted(t.model.llm.prefixes) == ["default", "text"]
    assert all(len(tokens) >= 8 for _, tokens in t.model.llm.prefixes.values())


class _FakeMemory:
    """llama.cpp's sequence calls on a dict (sequence id -> its positions' contents), for _Seqs."""

    def __init__(self, seqs: dict[int, list[str]]):
        self.seqs = seqs

    def llama_get_memory(self, ctx):
        return "mem"

    def llama_memory_seq_cp(self, mem, src, dst, p0, p1):
        assert dst not in self.seqs, f"sequence {dst} overwritten"
        self.seqs[dst] = list(self.seqs[src])

    def llama_memory_seq_rm(self, mem, seq, p0, p1):
        del self.seqs[seq]


@pytest.mark.parametrize("rows", [[0, 0, 0, 0, 1, 1, 1, 1], [1, 1, 0, 3, 3, 3, 2, 0], [2, 2, 2, 2], [3, 2, 1, 0]])
def test_beam_reordering_gives_each_row_its_parents_sequence(rows):
    """_Seqs.reorder_cache (llast.beam's cache reordering over llama.cpp sequences): new row i holds what old
    row rows[i] held, no sequence is overwritten, sequences no row continues are removed, and at most two
    ids per row are ever in use (the context's sequence ids are bounded), one copy per row beyond the first
    that continues a parent."""
    from llast import llamacpp

    old = [7, 3, 0, 5]
    mem = _FakeMemory({s: [f"row{r}"] for r, s in enumerate(old)})
    llm = type("LLM", (), {"lib": mem, "ctx": None})()
    cache = llamacpp._Seqs(llm, list(old))
    cache.reorder_cache(torch.tensor(rows))
    assert [mem.seqs[s] for s in cache.seqs] == [[f"row{r}"] for r in rows]
    assert sorted(mem.seqs) == sorted(set(cache.seqs)) and len(set(cache.seqs)) == len(rows)
    assert max(cache.seqs) < llamacpp._SEARCH_SEQS and set(old) & set(cache.seqs) == {old[r] for r in set(rows)}
    assert len(set(cache.seqs) - set(old)) == len(rows) - len(set(rows))


class _FakePositions(_FakeMemory):
    """llama.cpp's sequence calls with position ranges: sequence id -> the tokens at its positions."""

    def llama_memory_seq_cp(self, mem, src, dst, p0, p1):
        assert p0 == 0 and dst not in self.seqs
        self.seqs[dst] = list(self.seqs[src][:p1])

    def llama_memory_seq_rm(self, mem, seq, p0, p1):
        if seq in self.seqs:
            self.seqs[seq] = self.seqs[seq][:p0] if p0 > 0 else []


def test_the_chat_templates_start_is_computed_once_per_adapter(monkeypatch):
    """LlamaCppLLM._reuse_prefix: the first tokens shared by a search's prompts are prefilled once into a
    sequence of the adapter's own, then shared (copied cells) by later searches while their prompts start
    the same way; a prefix that is only partly shared is cut back, another template replaces it, and each
    adapter has its own (the cells depend on the adapter)."""
    from llast import llamacpp

    mem = _FakePositions({})
    llm = llamacpp.LlamaCppLLM.__new__(llamacpp.LlamaCppLLM)
    torch.nn.Module.__init__(llm)
    llm.lib, llm.ctx, llm.prefixes, llm.active = mem, None, {}, "default"
    prefilled = []

    def prefill(row, start, tokens=None, embeds=None):
        prefilled.append((row, start, list(tokens)))
        mem.seqs[row] = mem.seqs.get(row, [])[:start] + list(tokens)
        return start + len(tokens)

    monkeypatch.setattr(llm, "_prefill", prefill)
    top = llamacpp._MAX_SEQ - 1
    assert llm._reuse_prefix([[1, 2, 3, 4, 5], [1, 2, 3, 9]]) == (top, 3)
    assert prefilled == [(top, 0, [1, 2, 3])] and mem.seqs[top] == [1, 2, 3]
    assert llm._reuse_prefix([[1, 2, 3, 4, 7]]) == (top, 3) and len(prefilled) == 1  # reused: nothing computed
    assert llm._reuse_prefix([[1, 2, 8, 8]]) == (top, 2) and mem.seqs[top] == [1, 2]  # cut back to what is shared
    llm.active = "text"
    assert llm._reuse_prefix([[1, 2, 3]]) == (top - 1, 3) and prefilled[-1] == (top - 1, 0, [1, 2, 3])
    llm.active = "default"
    assert llm._reuse_prefix([[6, 7, 8]]) == (top, 3) and mem.seqs[top] == [6, 7, 8]  # another template
    assert llm._reuse_prefix([[5], [5, 6]]) == (None, 0)  # a single shared token is not worth a sequence
    assert llm._prefix_cells() == 6 and top - 1 >= llamacpp._SEARCH_SEQS


def test_auto_dtype_picks_gguf_where_it_runs_on_a_cpu_without_amx(tiny_dirs, monkeypatch):
    """--dtype auto: gguf on a CPU without AMX-BF16 when llama.cpp can run the LLM, for any beam count; AMX,
    a repetition penalty (llama.cpp's decoding here has none), a GPU or an LLM llama.cpp cannot run here keep
    PyTorch's choice ("auto")."""
    import dataclasses

    from llast import decode, llamacpp

    cfg = tiny.tiny_config(tiny_dirs["whisper"], tiny_dirs["llama"])
    assert decode.auto_dtype(cfg, device="cpu") == "auto"  # the tiny LLM is no bundled GGUF
    monkeypatch.setattr(llamacpp, "runs", lambda name: True)
    monkeypatch.setattr(decode, "_cpu_has_amx_bf16", lambda: False)
    for beams in (1, 4):
        assert decode.auto_dtype(dataclasses.replace(cfg, decode=dataclasses.replace(cfg.decode, num_beams=beams)),
                                 device="cpu") == "gguf"
    assert decode.auto_dtype(cfg, device="cuda") == "auto"
    penalised = dataclasses.replace(cfg, decode=dataclasses.replace(cfg.decode, repetition_penalty=1.2))
    assert decode.auto_dtype(penalised, device="cpu") == "auto"
    monkeypatch.setattr(decode, "_cpu_has_amx_bf16", lambda: True)
    assert decode.auto_dtype(cfg, device="cpu") == "auto"

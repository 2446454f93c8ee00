"""The CPU training levers of the llast-mini recipe on tiny models: the frozen encoder's feature cache
(same batches, same losses), the CTC adaptor pre-training stage (train.objective=ctc) and starting an
LM run from its adaptor (train.init_from)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import tiny
from llast.config import load_config
from llast.errors import CheckpointError, ConfigError, DataError
from llast.features import build_cache, cache_key, entry_path, load_entry
from llast.lora import apply_lora
from llast.model import IGNORE_INDEX, build_model, encoder_output_length
from llast.processor import Example, build_processor
from llast.train import ctc_vocabulary, train

NO_SLORA = ["model.encoder.lora.enabled=false", "model.encoder.lora.dropout=0.0", "model.llm.lora.dropout=0.0"]


@pytest.fixture(scope="module")
def setup(tiny_dirs, tmp_path_factory):
    root = tmp_path_factory.mktemp("curriculum")
    corpus = tiny.write_corpus(root / "corpus")

    def make(name: str, **train_overrides):
        out = root / name
        return tiny.write_train_yaml(root / f"{name}.yaml", tiny_dirs["whisper"], tiny_dirs["llama"], corpus, out,
                                     **train_overrides), out

    return make, root


def _losses(out):
    return [json.loads(line)["loss"] for line in (out / "log.jsonl").read_text().splitlines() if '"loss"' in line]


def test_cache_entries_hold_the_encoder_output(setup, tiny_dirs):
    make, root = setup
    y, _ = make("cache_entries", max_steps=1)
    cfg = load_config(y, NO_SLORA)
    model = build_model(cfg.model)
    processor = build_processor(cfg.model, encoder_config=model.encoder_config)
    from llast.data import build_samples

    samples = build_samples(cfg.data.train, asr_augment=True)
    stats = build_cache(model, processor, samples, root / "cache1", 30.0, batch_size=5, progress=False)
    assert stats["clips"] == len({s.audio for s in samples}) == stats["encoded"]  # ASR twins share their clip
    again = build_cache(model, processor, samples, root / "cache1", 30.0, progress=False)
    assert again["encoded"] == 0
    s = samples[3]
    states, n = load_entry(entry_path(root / "cache1", cache_key(s, cfg.model)))
    from llast.audio import load_audio

    audio = load_audio(s.audio)
    feats, lengths = processor.features([audio])
    with torch.no_grad():
        ref, _ = model.encode(feats, lengths)  # (1, T, D)
    assert n == len(audio) and states.shape == (int(encoder_output_length(len(audio), model.encoder_config)), 16)
    assert np.allclose(states.astype(np.float32), ref[0].numpy(), atol=2e-2)  # stored in float16
    # Another encoder setting is another entry.
    cfg.model.encoder.input_length = "pad30"
    assert cache_key(s, cfg.model) != cache_key(s, load_config(y, NO_SLORA).model)


def test_training_from_the_cache_matches_training_from_audio(setup):
    make, root = setup
    y, out_a = make("from_audio", max_steps=4)
    train(load_config(y, NO_SLORA), progress=False)
    y, out_c = make("from_cache", max_steps=4)
    train(load_config(y, NO_SLORA + [f"data.feature_cache={root / 'cache2'}"]), progress=False)
    a, c = _losses(out_a), _losses(out_c)
    assert len(a) == len(c) == 4
    assert np.allclose(a, c, atol=2e-3), (a, c)  # float16 states: equal to rounding
    assert any((root / "cache2").rglob("*.npz"))


def test_cache_refused_when_the_encoder_trains(setup):
    make, root = setup
    y, _ = make("cache_slora", max_steps=1)
    with pytest.raises(ConfigError, match="data.feature_cache"):
        train(load_config(y, [f"data.feature_cache={root / 'cache3'}"]), progress=False)


def test_ctc_loss_scores_targets_in_the_embedding_space(tiny_dirs):
    cfg = tiny.tiny_config(tiny_dirs["whisper"], tiny_dirs["llama"])
    model = build_model(cfg.model)
    processor = build_processor(cfg.model, encoder_config=model.encoder_config)
    batch = processor([Example(tiny.clip(1.0), "fr", "fr", "transcribe", "hello world"),
                       Example(tiny.clip(0.6, seed=1), "fr", "fr", "transcribe", "bonjour")])
    vocab = ctc_vocabulary([type("S", (), {"target_text": t}) for t in ("hello world", "bonjour")], processor.tokenizer)
    out = model(**batch, ctc_vocab=vocab)
    n_embeds = batch["audio_lengths"].shape[0]
    assert out.logits.shape[0] == n_embeds and out.logits.shape[-1] == len(vocab)
    assert torch.isfinite(out.loss) and out.loss > 0
    out.loss.backward()
    assert model.adaptor.mlp[0].weight.grad.abs().sum() > 0
    assert model.llm.get_input_embeddings().weight.grad is None  # the LLM's table is a fixed target
    with pytest.raises(ValueError, match="not in `vocab`"):
        model(**batch, ctc_vocab=vocab[:2])
    assert (batch["labels"] != IGNORE_INDEX).any()


def test_ctc_stage_then_lm_stage_from_its_adaptor(setup):
    make, root = setup
    y, out_ctc = make("ctc", max_steps=12, save_every=6)
    final = train(load_config(y, NO_SLORA + ["train.objective=ctc", "train.lr=1e-2"]), progress=False)
    losses = _losses(out_ctc)
    assert len(losses) == 12 and np.mean(losses[-3:]) < np.mean(losses[:3])  # the adaptor learns
    w = load_file(str(final / "adaptor.safetensors"))
    # Only the adaptor trained: the LLM LoRA saved with it is still the fresh one (B = 0).
    lora = load_file(str(final / "llm_lora" / "adapter_model.safetensors"))
    assert all(float(v.abs().sum()) == 0 for k, v in lora.items() if "lora_B" in k)

    y, out_lm = make("after_ctc", max_steps=2)
    lm_final = train(load_config(y, NO_SLORA + [f"train.init_from={final}", "train.lr=1e-12"]), progress=False)
    w2 = load_file(str(lm_final / "adaptor.safetensors"))
    assert all(torch.allclose(w[k], w2[k], atol=1e-9) for k in w)  # lr ~0: the adaptor is the CTC stage's
    y, out_fresh = make("without_ctc", max_steps=2)
    fresh = load_file(str(train(load_config(y, NO_SLORA + ["train.lr=1e-12"]), progress=False) / "adaptor.safetensors"))
    assert not all(torch.allclose(w[k], fresh[k], atol=1e-3) for k in w)  # ... and not a fresh initialisation

    with pytest.raises(CheckpointError, match="adaptor.safetensors"):
        train(load_config(y, NO_SLORA + [f"train.init_from={root}"]), progress=False)
    with pytest.raises(DataError, match="transcription"):
        train(load_config(y, NO_SLORA + ["train.objective=ctc", "data.asr_augment=false"]), progress=False)


def test_spelling_of_the_letter_ctc_stage(tiny_dirs):
    from llast.train import CharSpeller, spell

    assert spell("Der Mohr hat's  getan! 3x") == "der mohr hat's getan x"
    assert spell("Élan, STRASSE.") == "élan strasse"
    cfg = tiny.tiny_config(tiny_dirs["whisper"], tiny_dirs["llama"])
    tok = build_processor(cfg.model).tokenizer
    speller = CharSpeller(tok)
    ids = speller.ids("Hello, World")
    assert len(ids) == len("hello world") and tok.decode(ids) == "hello world"
    vocab = ctc_vocabulary([type("S", (), {"target_text": t}) for t in ("hello world", "bonjour")], tok, speller)
    assert tok.decode(vocab[:1].tolist()) == "_"  # the blank
    assert sorted(tok.decode([i]) for i in vocab[1:].tolist()) == sorted(set("hello world bonjour"))
    with pytest.raises(DataError, match="'é' is 2 tokens"):  # a byte-level tokenizer splits it in two
        speller.ids("élan")


def test_letter_ctc_stage_learns_and_hands_its_adaptor_on(setup):
    make, root = setup
    y, out = make("ctc_chars", max_steps=12, eval_every=6)
    final = train(load_config(y, NO_SLORA + ["train.objective=ctc", "train.ctc_units=chars", "train.lr=1e-2"]),
                  progress=False)
    losses = _losses(out)
    assert len(losses) == 12 and np.mean(losses[-3:]) < np.mean(losses[:3])
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "dev_loss" in r] == [6, 12]
    y, _ = make("after_ctc_chars", max_steps=1)
    assert train(load_config(y, NO_SLORA + [f"train.init_from={final}"]), progress=False).is_dir()
    with pytest.raises(ConfigError, match="ctc_units"):
        load_config(y, ["train.ctc_units=phones"])


def test_ctc_stage_adapts_the_encoder_with_slora_and_hands_both_on(setup):
    make, root = setup
    y, out = make("ctc_slora", max_steps=4)
    final = train(load_config(y, ["train.objective=ctc", "train.ctc_units=chars", "train.lr=1e-2",
                                  "model.encoder.lora.dropout=0.0", "model.llm.lora.dropout=0.0"]), progress=False)
    enc = load_file(str(final / "encoder_lora" / "adapter_model.safetensors"))
    llm = load_file(str(final / "llm_lora" / "adapter_model.safetensors"))
    assert any(float(v.abs().sum()) > 0 for k, v in enc.items() if "lora_B" in k)  # S-LoRA learned
    assert all(float(v.abs().sum()) == 0 for k, v in llm.items() if "lora_B" in k)  # L-LoRA untouched
    # Stage 2 starts from the adaptor and the adapted encoder ...
    from llast.checkpoint import load_adaptor
    from llast.lora import build_lora_model

    cfg = load_config(y, ["model.encoder.lora.dropout=0.0"])
    model = build_lora_model(cfg.model)
    load_adaptor(model, final)
    got = {k: v for k, v in model.encoder.state_dict().items() if "lora_B" in k}
    assert got and any(float(v.abs().sum()) > 0 for v in got.values())
    # ... and refuses to drop the adapted encoder silently ...
    with pytest.raises(CheckpointError, match="init_encoder_lora=false"):
        train(load_config(y, NO_SLORA + [f"train.init_from={final}"]), progress=False)
    # ... but drops it when asked (train.init_encoder_lora: false, issue #28): the adaptor goes on over the
    # frozen encoder, whose weights stay those of the base model.
    y2, _ = make("after_slora_frozen", max_steps=1)
    frozen = load_config(y2, NO_SLORA + [f"train.init_from={final}", "train.init_encoder_lora=false"])
    out2 = train(frozen, progress=False)
    assert not (out2 / "encoder_lora").exists()
    plain = build_lora_model(frozen.model)
    load_adaptor(plain, final, encoder_lora=False)
    assert not hasattr(plain.encoder, "peft_config")
    assert all(torch.equal(plain.adaptor.state_dict()[k], v)
               for k, v in load_file(str(final / "adaptor.safetensors")).items())
    with pytest.raises(ConfigError, match="init_encoder_lora"):
        load_config(y2, NO_SLORA + ["train.init_encoder_lora=false"])


def test_init_llm_lora_continues_a_finished_run_on_new_data(setup):
    """train.init_llm_lora (llast-mini's stage 2b): a new run starts from a finished LM run's adaptor AND its
    L-LoRA; without it the L-LoRA starts fresh; it is refused without init_from or without an L-LoRA."""
    make, root = setup
    y, _ = make("lm_first", max_steps=3)
    first = train(load_config(y, NO_SLORA + ["train.lr=1e-2"]), progress=False)
    trained = load_file(str(first / "llm_lora" / "adapter_model.safetensors"))
    assert any(float(v.abs().sum()) > 0 for k, v in trained.items() if "lora_B" in k)
    y, _ = make("lm_more", max_steps=1)
    more = train(load_config(y, NO_SLORA + [f"train.init_from={first}", "train.init_llm_lora=true", "train.lr=1e-12"]),
                 progress=False)
    got = load_file(str(more / "llm_lora" / "adapter_model.safetensors"))
    assert set(got) == set(trained) and all(torch.allclose(got[k], trained[k], atol=1e-6) for k in got)
    y, _ = make("lm_fresh", max_steps=1)
    fresh = load_file(str(train(load_config(y, NO_SLORA + [f"train.init_from={first}", "train.lr=1e-12"]),
                                progress=False) / "llm_lora" / "adapter_model.safetensors"))
    assert all(float(v.abs().max()) < 1e-6 for k, v in fresh.items() if "lora_B" in k)  # fresh B = 0
    with pytest.raises(ConfigError, match="init_from"):
        load_config(y, NO_SLORA + ["train.init_llm_lora=true"])
    with pytest.raises(ConfigError, match="LoRA is off"):
        load_config(y, NO_SLORA + [f"train.init_from={first}", "train.init_llm_lora=true", "model.llm.lora.enabled=false"])
    # A checkpoint without llm_lora/ (e.g. an adaptor-only folder) is named.
    import shutil

    bare = root / "bare"
    shutil.copytree(first, bare)
    shutil.rmtree(bare / "llm_lora")
    with pytest.raises(CheckpointError, match="no llm_lora"):
        train(load_config(y, NO_SLORA + [f"train.init_from={bare}", "train.init_llm_lora=true"]), progress=False)

"""Paper-scale configs without the paper's hardware (issue #16): random-init builds from the kept
config.json files, exact parameter counts, the memory plan against a measured peak, the released
prompt preset and full-pad input mode, and `llast import xtuner`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import tiny
from llast.cli import main as cli_main
from llast.config import load_config
from llast.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def _run_cli(argv, capsys):
    rc = cli_main(argv)
    return rc, capsys.readouterr()


# ----------------------------------------------------------------------------- random init and counts


def test_params_llast_2b_exact_counts(capsys):
    rc, out = _run_cli(["params", str(ROOT / "configs/llast-2b.yaml"), "model.random_init=true"], capsys)
    assert rc == 0, out.err
    counts = {" ".join(line.split()[:-3]): int(line.split()[-3].replace(",", "")) for line in out.out.splitlines()
              if line.endswith(" B)")}
    # Whisper large-v2's encoder, TinyLlama-1.1B, the 3-layer MLP 1280->2048->2048->2048, LoRA r=128 / r=512
    assert counts == {"encoder (frozen)": 636_784_640, "adaptor": 11_016_192, "LLM (frozen)": 1_100_048_384,
                      "S-LoRA": 94_371_840, "L-LoRA": 403_701_760, "total": 2_245_922_816}


def test_random_init_unknown_hub_id_is_a_clear_error(capsys):
    rc, out = _run_cli(["params", str(ROOT / "configs/llast-2b.yaml"), "model.random_init=true",
                        "model.llm.name=someone/unknown-llm"], capsys)
    assert rc == 1
    assert "unknown-llm" in out.err and "config.json" in out.err and "Traceback" not in out.err


def test_random_init_without_kept_tokenizer_is_a_clear_error():
    from llast.processor import load_tokenizer

    cfg = load_config(ROOT / "configs/llast-2b.yaml", ["model.random_init=true"])
    with pytest.raises(ConfigError, match="no tokenizer kept.*model.llm.tokenizer"):
        load_tokenizer(cfg.model)


def test_random_init_is_seeded(tiny_dirs):
    from llast.model import build_model

    cfg = tiny.tiny_config(tiny_dirs["whisper"], tiny_dirs["llama"])
    cfg.model.random_init = True
    a, b = build_model(cfg.model), build_model(cfg.model)
    for (name, p), (_, q) in zip(a.llm.named_parameters(), b.llm.named_parameters()):
        assert torch.equal(p, q), name
    real = build_model(tiny.tiny_config(tiny_dirs["whisper"], tiny_dirs["llama"]).model)
    assert not torch.equal(a.llm.lm_head.weight, real.llm.lm_head.weight)  # random, not the saved weights


# ----------------------------------------------------------------------------- memory plan vs a measured peak

_MEASURE = textwrap.dedent('''
    import gc, json, sys
    import torch
    sys.path.insert(0, sys.argv[1])
    import tiny
    from llast import memory
    from llast.config import from_dict
    from llast.lora import apply_lora, trainable_parameters
    from llast.model import build_model
    from llast.processor import Example, build_processor

    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024

    enc, llm, ckpt, seconds, B = sys.argv[2], sys.argv[3], sys.argv[4] == "1", 20.0, 2
    lora = {"r": 16, "alpha": 32, "dropout": 0.05}
    cfg = from_dict({"model": {"random_init": True, "dtype": "float32",
                               "encoder": {"name": enc, "input_length": "pad30_full", "lora": lora, "gradient_checkpointing": ckpt},
                               "llm": {"name": llm, "lora": lora, "gradient_checkpointing": ckpt}},
                     "train": {"mixed_precision": "no"}})
    torch.manual_seed(0)
    model = build_model(cfg.model)
    apply_lora(model, cfg.model)
    model.train()
    proc = build_processor(cfg.model, encoder_config=model.encoder_config)
    batch = proc([Example(tiny.clip(seconds, seed=i), "fr", "en", target="hello world this is a small test")
                  for i in range(B)])
    n_audio = proc.num_audio_embeddings(int(seconds * 16000))
    L = batch["input_ids"].shape[1]
    targets = int((batch["labels"] != -100).sum(1).max())
    probe = memory.probe_activations(cfg, seconds, L - n_audio, targets, torch.float32)
    grads = 4 * sum(p.numel() for p in trainable_parameters(model))
    gc.collect()
    base = status("VmRSS")
    open("/proc/self/clear_refs", "w").write("5")
    model(**batch).loss.backward()
    peak = status("VmHWM")
    print(json.dumps({"measured": peak - base, "planned": B * probe.peak({"encoder": ckpt, "llm": ckpt}) + grads,
                      "llm_tokens": L, "probe_tokens": probe.llm_tokens}))
''')


def _config_only_models(root: Path) -> tuple[Path, Path]:
    """A small Whisper and a small Llama as config.json only (+ the tiny tokenizer): random_init builds them."""
    from transformers import LlamaConfig, WhisperConfig

    enc, llm = root / "whisper-small-shape", root / "llama-small-shape"
    WhisperConfig(vocab_size=100, num_mel_bins=80, d_model=384, encoder_layers=2, encoder_attention_heads=6,
                  decoder_layers=1, decoder_attention_heads=6, encoder_ffn_dim=1536, decoder_ffn_dim=64,
                  max_source_positions=1500).save_pretrained(enc)
    tok = tiny.make_tokenizer()
    LlamaConfig(vocab_size=len(tok), hidden_size=384, intermediate_size=1024, num_hidden_layers=2, num_attention_heads=6,
                num_key_value_heads=2, max_position_embeddings=2048, pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id, bos_token_id=None).save_pretrained(llm)
    tok.save_pretrained(llm)
    return enc, llm


@pytest.mark.parametrize("checkpointing", [False, True])
def test_memory_plan_matches_measured_peak(tmp_path, checkpointing):
    """The plan's activations + gradients for one forward/backward against the peak resident memory a
    real CPU step adds (fresh process; large allocations mmapped so that freed memory leaves RSS)."""
    enc, llm = _config_only_models(tmp_path)
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    run = subprocess.run([sys.executable, "-c", _MEASURE, str(Path(__file__).parent), str(enc), str(llm),
                          "1" if checkpointing else "0"], capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    r = json.loads(run.stdout.strip().splitlines()[-1])
    assert r["probe_tokens"] == r["llm_tokens"]
    assert r["planned"] > 50e6  # big enough for resident-memory noise not to matter
    assert 0.8 < r["measured"] / r["planned"] < 1.25, r

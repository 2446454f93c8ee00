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
    print(f"measured / planned = {r['measured'] / r['planned']:.3f} ({r['measured'] / 1e6:.0f} / {r['planned'] / 1e6:.0f} MB)")
    assert 0.8 < r["measured"] / r["planned"] < 1.25, r


# ----------------------------------------------------------------------------- released prompts, full pad

ZEPHYR = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n{% endfor %}"
          "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")


def _released_llm(path: Path, seed: int = 0) -> Path:
    """A tiny Llama with a TinyLlama-style tokenizer (<s>, </s>, <|user|>, <|assistant|>, Zephyr template)."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    tok = tiny.make_tokenizer()
    tok.add_special_tokens({"bos_token": "<s>", "eos_token": "</s>", "additional_special_tokens": ["<|user|>", "<|assistant|>"]})
    tok.chat_template = ZEPHYR
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_released_preset_renders_the_released_prompts(tmp_path, tiny_dirs):
    from llast.processor import Processor, build_processor

    llm = _released_llm(tmp_path / "llm")
    cfg = tiny.tiny_config(tiny_dirs["whisper"], llm)
    cfg.model.prompt.preset = "released"
    proc = build_processor(cfg.model)
    before, after = proc.prompt_parts("fr", "en", "translate")
    assert proc.tokenizer.decode(before) == "<s><|user|>\n"
    assert proc.tokenizer.decode(after) == "\nPlease translate the French sentence into English.</s>\n<|assistant|></s>\n"
    proc.tokenizer.chat_template = "[INST] {{ messages[0]['content'] }} [/INST]"  # a Llama-2 tokenizer
    before, after = Processor(proc.tokenizer, proc.encoder_config, cfg.model).prompt_parts("de", "en", "transcribe")
    assert proc.tokenizer.decode(before + after) == "<s>[INST] \nPlease transcribe the German sentence into German. [/INST]"


def test_pad30_full_hands_the_llm_every_frame_of_the_pad(tiny_dirs):
    from llast.lora import apply_lora
    from llast.model import build_model
    from llast.processor import Example, build_processor

    cfg = tiny.tiny_config(tiny_dirs["whisper"], tiny_dirs["llama"])
    cfg.model.encoder.input_length = "pad30_full"
    model = apply_lora(build_model(cfg.model), cfg.model).eval()
    proc = build_processor(cfg.model, encoder_config=model.encoder_config)
    batch = proc([Example(tiny.clip(1.0), "fr", "en"), Example(tiny.clip(2.5, seed=1), "de", "en")])
    assert ((batch["input_ids"] == -200).sum(1) == 1500).all()
    embeds, mask = model.embed_audio(batch["input_features"], batch["audio_lengths"])
    assert embeds.shape[1] == 1500 and mask.all()
    with torch.no_grad():
        assert torch.isfinite(model(**batch).logits).all()


# ----------------------------------------------------------------------------- llast import xtuner


class _Meta:  # stands for DeepSpeed / mmengine metadata objects in the file
    def __init__(self, note):
        self.note = note


class _Evil:  # a pickle that would run a command if the file were loaded unsafely
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def _released_modules(whisper_dir: Path, llm_dir: Path, seed: int = 1):
    """The released LLaST's trained parts from tiny models: peft LoRA on every linear layer of the WHOLE
    WhisperModel (decoder too) and of the LLM but lm_head, and the 3-layer MLP projector."""
    import peft
    from transformers import AutoModelForCausalLM, WhisperModel

    torch.manual_seed(seed)
    whisper = WhisperModel.from_pretrained(whisper_dir)
    llm = AutoModelForCausalLM.from_pretrained(llm_dir)
    whisper_targets = sorted({n.split(".")[-1] for n, m in whisper.named_modules() if isinstance(m, torch.nn.Linear)})
    speech_encoder = peft.get_peft_model(whisper, peft.LoraConfig(r=4, lora_alpha=8, target_modules=whisper_targets))
    llm = peft.get_peft_model(llm, peft.LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"))
    projector = torch.nn.Module()
    d, h = whisper.config.d_model, llm.config.hidden_size
    projector.model = torch.nn.Sequential(torch.nn.Linear(d, h), torch.nn.GELU(), torch.nn.Linear(h, h),
                                          torch.nn.GELU(), torch.nn.Linear(h, h))
    with torch.no_grad():  # trained LoRA: B is no longer zero; fp16-exact values, as the file stores fp16
        for module in (speech_encoder, llm, projector):
            for name, p in module.named_parameters():
                if "lora_" in name or module is projector:
                    p.copy_((torch.randn_like(p) * 0.1).half().float())
    return speech_encoder.eval(), llm.eval(), projector.eval()


def _write_released_checkpoint(path: Path, speech_encoder, llm, projector) -> dict:
    from collections import OrderedDict

    module = OrderedDict()
    for prefix, part in (("speech_encoder.", speech_encoder), ("llm.", llm)):
        module.update({prefix + k: v.half() for k, v in part.state_dict().items() if "lora_" in k})
    module.update({"projector." + k: v.half() for k, v in projector.state_dict().items()})
    torch.save({"module": module, "buffer_names": [], "param_shapes": [OrderedDict((k, v.shape) for k, v in module.items())],
                "ds_config": {"zero_optimization": {"stage": 2}}, "ds_version": "0.12.3", "global_steps": 7,
                "meta": _Meta("mmengine")}, path)
    return module


def _released_logits(speech_encoder, llm, projector, tokenizer, audio) -> torch.Tensor:
    """The released forward pass: the whole WhisperModel with a dummy decoder token, every frame of the
    30 s pad through the projector, the prompt split at <audio> and each piece tokenized alone."""
    from llast.processor import Processor

    pad30 = load_config(None, ["model.encoder.input_length=pad30"]).model
    mel = Processor(tokenizer, speech_encoder.config, pad30).features([audio])[0]  # (1, 80, 3000): whisper.pad_or_trim
    dec = torch.full((1, 1), speech_encoder.config.decoder_start_token_id)
    states = speech_encoder(mel, decoder_input_ids=dec).encoder_last_hidden_state
    audio_tokens = projector.model(states)  # (1, 1500, H)
    text = "<|user|>\n<audio>\nPlease translate the French sentence into English.</s>\n<|assistant|></s>\n"
    before, after = text.split("<audio>")
    ids_before = [tokenizer.bos_token_id] + tokenizer.encode(before, add_special_tokens=False)
    ids_after = tokenizer.encode(after, add_special_tokens=False)
    embed = llm.get_input_embeddings()
    embeds = torch.cat([embed(torch.tensor(ids_before)), audio_tokens[0], embed(torch.tensor(ids_after))])[None]
    return llm(inputs_embeds=embeds).logits


def test_import_xtuner_round_trip_gives_the_released_logits(tmp_path, tiny_dirs, capsys):
    from llast.checkpoint import load_checkpoint
    from llast.processor import Example, build_processor

    llm_dir = _released_llm(tmp_path / "llm")
    speech_encoder, llm, projector = _released_modules(tiny_dirs["whisper"], llm_dir)
    module = _write_released_checkpoint(tmp_path / "mp_rank_00_model_states.pt", speech_encoder, llm, projector)
    n_decoder = sum(".decoder." in k for k in module)
    assert n_decoder > 0
    yaml_path = tmp_path / "cfg.yaml"
    yaml_path.write_text(json.dumps({"model": {"encoder": {"name": str(tiny_dirs["whisper"]), "lora": {"r": 4, "alpha": 8}},
                                               "llm": {"name": str(llm_dir), "lora": {"r": 4, "alpha": 8}}}}))
    out = tmp_path / "imported"
    rc, printed = _run_cli(["import", "xtuner", str(tmp_path / "mp_rank_00_model_states.pt"), "--config", str(yaml_path),
                            "--out", str(out)], capsys)
    assert rc == 0, printed.err
    assert f"dropped {n_decoder} Whisper-decoder LoRA tensors" in printed.out
    assert "test_paper_scale._Meta" in printed.out  # metadata read as an inert placeholder, and named

    model, cfg = load_checkpoint(out)
    assert cfg.model.prompt.preset == "released" and cfg.model.encoder.input_length == "pad30_full"
    audio = tiny.clip(2.0, seed=3)
    proc = build_processor(cfg.model, encoder_config=model.encoder_config)
    batch = proc([Example(audio, "fr", "en")])
    with torch.no_grad():
        ours = model(**batch).logits
        theirs = _released_logits(speech_encoder, llm, projector, proc.tokenizer, audio)
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


def test_import_xtuner_is_strict(tmp_path, tiny_dirs, capsys):
    llm_dir = _released_llm(tmp_path / "llm")
    speech_encoder, llm, projector = _released_modules(tiny_dirs["whisper"], llm_dir)
    ckpt = tmp_path / "states.pt"
    module = _write_released_checkpoint(ckpt, speech_encoder, llm, projector)
    cfg = {"model": {"encoder": {"name": str(tiny_dirs["whisper"]), "lora": {"r": 4, "alpha": 8}},
                     "llm": {"name": str(llm_dir), "lora": {"r": 8, "alpha": 16}}}}
    (tmp_path / "r8.yaml").write_text(json.dumps(cfg))
    rc, printed = _run_cli(["import", "xtuner", str(ckpt), "--config", str(tmp_path / "r8.yaml"), "--out", str(tmp_path / "o")], capsys)
    assert rc == 1 and "other shapes" in printed.err and "Traceback" not in printed.err  # r=8 config, r=4 file
    module["llm.base_model.model.lm_head.weight"] = torch.zeros(2, 2)
    torch.save({"module": module}, ckpt)
    cfg["model"]["llm"]["lora"] = {"r": 4, "alpha": 8}
    (tmp_path / "r4.yaml").write_text(json.dumps(cfg))
    rc, printed = _run_cli(["import", "xtuner", str(ckpt), "--config", str(tmp_path / "r4.yaml"), "--out", str(tmp_path / "o")], capsys)
    assert rc == 1 and "lm_head.weight" in printed.err
    assert not (tmp_path / "o").exists()
    evil = tmp_path / "pwned"
    torch.save({"module": {}, "message_hub": _Evil(evil)}, ckpt)
    rc, printed = _run_cli(["import", "xtuner", str(ckpt), "--config", str(tmp_path / "r4.yaml"), "--out", str(tmp_path / "o")], capsys)
    assert rc == 1 and "refused" in printed.err and "system" in printed.err
    assert not evil.exists()  # the file's code never ran


def test_frozen_wav2vec2_keeps_no_autograd_graph(tiny_dirs):
    """LST's frozen encoder (no S-LoRA) must not keep activations for a backward pass it never needs."""
    from llast.lora import apply_lora
    from llast.model import build_model

    cfg = tiny.tiny_config(tiny_dirs["wav2vec2"], tiny_dirs["llama"])
    cfg.model.encoder.lora.enabled = False
    model = apply_lora(build_model(cfg.model), cfg.model).train()
    states, _ = model.encode(torch.randn(1, 16000), torch.tensor([16000]))
    assert not states.requires_grad


def test_plan_cli_engines_and_largest_batch(tmp_path, tiny_dirs, capsys):
    from llast import memory

    cfg = tiny.tiny_config(tiny_dirs["whisper"], tiny_dirs["llama"])
    cfg.model.encoder.input_length = "pad30_full"
    p = memory.plan(cfg, gpus=4, gpu_mem_gb=1.0, batch=8, audio_seconds=10.0)
    ddp, fsdp, zero2 = (p["engines"][e] for e in ("ddp", "fsdp", "zero2"))
    sizes = p["sizes"]
    assert ddp["static"]["weights"] == 4 * sizes["frozen"]  # tiny models are float32
    assert ddp["static"]["optimizer"] == 8 * sizes["trainable"] == 4 * zero2["static"]["optimizer"]
    assert p["encoder_frames"] == 1500 and p["llm_tokens"] == 1500 + 96
    assert p["per_sample"]["all"] < p["per_sample"]["none"]
    for e in (ddp, fsdp, zero2):  # the largest batch fits, one more does not
        for k, b in e["fits"].items():
            assert e["static_total"] + b * p["per_sample"][k] <= p["usable"] < e["static_total"] + (b + 1) * p["per_sample"][k]
    yaml_path = tmp_path / "c.yaml"
    yaml_path.write_text(json.dumps({"model": {"encoder": {"name": str(tiny_dirs["whisper"])}, "llm": {"name": str(tiny_dirs["llama"])}}}))
    rc, out = _run_cli(["plan", str(yaml_path), "--engine", "zero2", "--gpus", "8", "--gpu-mem", "80"], capsys)
    assert rc == 0 and "zero2" in out.out and "largest batch" in out.out and "ddp" not in out.out
    rc, out = _run_cli(["plan", str(yaml_path), "--audio-seconds", "45"], capsys)
    assert rc == 1 and "--audio-seconds" in out.err


def test_import_xtuner_takes_overrides_after_options_and_keeps_a_users_folder(tmp_path, tiny_dirs, capsys):
    llm_dir = _released_llm(tmp_path / "llm")
    speech_encoder, llm, projector = _released_modules(tiny_dirs["whisper"], llm_dir)
    ckpt = tmp_path / "states.pt"
    _write_released_checkpoint(ckpt, speech_encoder, llm, projector)
    (tmp_path / "cfg.yaml").write_text(json.dumps({"model": {"encoder": {"name": str(tiny_dirs["whisper"]), "lora": {"r": 4, "alpha": 8}},
                                                             "llm": {"name": str(llm_dir), "lora": {"r": 4, "alpha": 8}}}}))
    precious = tmp_path / "precious"
    (precious / "sub").mkdir(parents=True)
    (precious / "thesis.txt").write_text("mine")
    argv = ["import", "xtuner", str(ckpt), "--config", str(tmp_path / "cfg.yaml"), "--out"]
    rc, printed = _run_cli(argv + [str(precious), "train.mixed_precision=no"], capsys)
    assert rc == 1 and "--out" in printed.err and "not empty" in printed.err
    assert sorted(p.name for p in precious.iterdir()) == ["sub", "thesis.txt"] and (precious / "thesis.txt").read_text() == "mine"
    (tmp_path / "o.tmp").mkdir()
    (tmp_path / "o.tmp" / "mine.txt").write_text("mine")  # a user's folder named like a temporary one
    rc, printed = _run_cli(argv + [str(tmp_path / "o"), "train.mixed_precision=no", "train.lr=1e-4"], capsys)
    assert rc == 0, printed.err
    assert (tmp_path / "o.tmp" / "mine.txt").read_text() == "mine"
    from llast.checkpoint import read_checkpoint_config

    cfg = read_checkpoint_config(tmp_path / "o")
    assert cfg.train.mixed_precision == "no" and cfg.train.lr == 1e-4


def test_mixed_precision_no_in_yaml_and_as_override(tmp_path):
    """YAML 1.1 reads a bare `no` as false; for train.mixed_precision it means the documented "no"."""
    (tmp_path / "c.yaml").write_text("train:\n  mixed_precision: no\n")
    assert load_config(tmp_path / "c.yaml").train.mixed_precision == "no"
    assert load_config(None, ["train.mixed_precision=no"]).train.mixed_precision == "no"
    with pytest.raises(ConfigError, match="train.objective"):
        load_config(None, ["train.objective=no"])  # elsewhere `no` stays what it was: not a valid choice


def test_every_config_loads():
    """Every YAML instance of the schema in configs/ (recipes, experiments, paper scale) loads and validates;
    configs/accelerate/ (Accelerate's own files) and configs/hf/ (model configs) are not llast configs."""
    from llast.config import validate

    found = [p for p in sorted((ROOT / "configs").rglob("*.yaml")) if p.relative_to(ROOT / "configs").parts[0] not in ("accelerate", "hf")]
    assert len(found) >= 12
    for path in found:
        validate(load_config(path))
    recipe = sorted(p.name for p in (ROOT / "configs" / "recipes" / "llast-mini").glob("*.yaml"))
    assert recipe == ["1-chars.yaml", "2-chars-slora.yaml", "3-dual.yaml", "4-more.yaml", "5-fresh.yaml", "6-mix.yaml"]
    makefile = (ROOT / "Makefile").read_text()
    assert all(f"configs/recipes/llast-mini/{name}" in makefile for name in recipe)  # `make model` runs them in order
    assert [makefile.index(f"configs/recipes/llast-mini/{n}") for n in recipe] == sorted(
        makefile.index(f"configs/recipes/llast-mini/{n}") for n in recipe)

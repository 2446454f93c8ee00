"""LLaST-mini benchmark (issue #8): this project's defaults against the released LLaST code's settings,
measured in one run, on the same clips and the same machine, back to back.

    python bench/bench.py --device cpu --out bench/results/cpu.json      (what `make bench` runs)
    python bench/bench.py --device cuda --out bench/results/gpu.json     (bench/run_gpu.sh)

Systems (both are configs/mini.yaml: whisper-base + smollm2-135m-instruct, dual LoRA, same ranks):
    faithful  pad30 (every clip padded to 30 s, 1500 encoder frames to the LLM), adaptor stack 1,
              count batching (batch_size 8); decoding one clip at a time
    defaults  variable-length encoder, adaptor stack 4, duration batching (<= 60 s, <= 16 clips);
              batched decoding
    whisper   Whisper base's own translate task through transformers (inference peer only)

Parts (each heavy part runs in a fresh subprocess of this script, so peak memory is its own):
    1. training throughput: `llast.train.train` itself (Accelerate loop, the config's sampler,
       AdamW, grad clipping) with train.max_steps = warm-up + N and log_every=1; the timed window is
       the N steps after the warm-up step (wall clock from the log's elapsed_s, data loading
       included); audio seconds and samples come from the batches the Collator actually built.
    2. inference: beam-5 translation of the same M dev clips through `llast.decode.Translator.generate`
       (Whisper: WhisperForConditionalGeneration.generate as `llast.evaluate.WhisperBaseline` calls it),
       with a FIXED output length (min_new_tokens = max_new_tokens), so untrained models compare fairly.
       RTF = decode seconds / audio seconds (features, prompt building and detokenising included).
    3. throughput against batch size (defaults, and Whisper) -> PNG.
    4. dev BLEU after the same wall-clock training budget: `llast train` then `llast evaluate` (CLI
       subprocesses), same decoder settings for both.
    5. --device cuda: bf16 (autocast for training, bf16 weights for inference), plus model FLOP
       utilisation against the measured bf16 matmul peak. On CPU the same MFU figures are given
       against the measured fp32 matmul peak.

FLOP count (the conventional 6·N·tokens for training, 2·N·tokens for inference; attention score
FLOPs and the convolution front end's extra stride are ignored), counted on the tensors as the
configuration processes them (padding included: pad30 pays for its 1500 frames):
    train step = 6·(N_enc·B·T_enc + N_adaptor·B·T_adaptor + N_llm·B·L) + 6·V·H·n_target_tokens
    N_enc = encoder parameters (incl. S-LoRA), T_enc = encoder frames per clip (1500 with pad30),
    T_adaptor = adaptor output rows per clip, N_llm = LLM parameters except embeddings/LM head (incl.
    L-LoRA), L = padded prompt+target width; the LM head runs on target positions only (see model.py).
    Every base weight is on the gradient path (LoRA everywhere), hence 6N; frozen weights need no
    weight gradients, so the work actually done is nearer 4N: the 6N MFU is an upper estimate.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "mini.yaml"
DATA = ROOT / "data" / "synth"
FAITHFUL = ["model.encoder.input_length=pad30", "model.adaptor.stack=1", "data.batching=count", "data.batch_size=8"]
SYSTEMS = {"faithful": FAITHFUL, "defaults": []}
DEV = [DATA / "covost_v2.de_en.dev.tsv", DATA / "covost_v2.fr_en.dev.tsv"]
LLAST = [sys.executable, "-m", "llast.cli"]


# ============================================================================ small helpers


def _status_kb(key: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def reset_peak_rss() -> None:
    """Reset this process's peak RSS (VmHWM) to its current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_rss_mb() -> float:
    return _status_kb("VmHWM") / 1024


def rss_mb() -> float:
    return _status_kb("VmRSS") / 1024


def machine_info(device: str) -> dict:
    info = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "hostname_platform": platform.platform(),
        "python": platform.python_version(),
    }
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in lscpu.splitlines():
            k, _, v = line.partition(":")
            if k.strip() in ("Model name", "CPU(s)", "Thread(s) per core", "Flags"):
                info["cpu_" + k.strip().lower().replace("(s)", "s").replace(" ", "_")] = v.strip()
        flags = info.pop("cpu_flags", "")
        info["cpu_avx512"] = "avx512f" in flags
        info["cpu_amx"] = "amx_tile" in flags
    except OSError:
        pass
    info["cpu_cores_usable"] = len(os.sched_getaffinity(0))
    info["ram_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    import torch

    info["torch"] = torch.__version__
    info["torch_threads"] = torch.get_num_threads()
    import transformers

    info["transformers"] = transformers.__version__
    if device == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_memory_gb"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    try:
        info["git_commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        info["git_dirty"] = bool(
            subprocess.run(["git", "status", "--porcelain", "src", "configs"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        )
    except OSError:
        pass
    try:
        info["loadavg_at_start"] = os.getloadavg()
    except OSError:
        pass
    return info


def matmul_peak(device: str, seconds: float = 3.0, dtype_name: str | None = None) -> dict:
    """Measured dense matmul peak (FLOP/s): bf16 on CUDA, fp32 on CPU unless `dtype_name` says."""
    import torch

    dtype = getattr(torch, dtype_name) if dtype_name else (torch.bfloat16 if device == "cuda" else torch.float32)
    n = 8192 if device == "cuda" else 2048
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(5):
            a @ b
        reps += 5
        sync()
    dt = time.perf_counter() - t0
    return {"dtype": str(dtype).replace("torch.", ""), "n": n, "flops_per_s": 2 * n**3 * reps / dt, "reps": reps}


def _busy_cpu_s() -> float:
    """CPU seconds all processes of the machine have used since boot (user+nice+system+irq+softirq+steal)."""
    f = open("/proc/stat").readline().split()[1:]
    user, nice, system, idle, iowait, irq, softirq, steal = (int(x) for x in f[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class OtherLoad:
    """CPU seconds used by processes OTHER than our children while a measurement ran: (machine-wide
    busy CPU time) - (CPU time of the children that finished meanwhile). Reported next to every figure,
    because the cores are shared."""

    def __enter__(self):
        import resource

        self.r = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.busy, self.t = _busy_cpu_s(), time.time()
        return self

    def __exit__(self, *exc):
        import resource

        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        ours = (r.ru_utime - self.r.ru_utime) + (r.ru_stime - self.r.ru_stime)
        wall = time.time() - self.t
        other = max(0.0, _busy_cpu_s() - self.busy - ours)
        self.result = {"wall_s": round(wall, 1), "our_cpu_s": round(ours, 1), "other_cpu_s": round(other, 1),
                       "other_share_of_capacity": round(other / max(wall * len(os.sched_getaffinity(0)), 1e-9), 3)}
        return False


def run_worker(kind: str, spec: dict, log) -> dict:
    """Run `bench.py _worker KIND` in a fresh process; returns its JSON result."""
    out = Path(spec["tmp"]) / f"{kind}-{spec['system']}.json"
    spec = dict(spec, result=str(out))
    cmd = [sys.executable, str(Path(__file__).resolve()), "_worker", kind, json.dumps(spec)]
    log(f"  $ bench.py _worker {kind} {spec['system']}")
    with OtherLoad() as load:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {kind} {spec['system']} failed (rc {proc.returncode}):\n{proc.stdout[-6000:]}")
    res = json.loads(out.read_text())
    res["cpu_load"] = load.result
    log(f"    (other processes used {100 * load.result['other_share_of_capacity']:.1f}% of the CPU capacity meanwhile)")
    return res


def dev_clips(m: int) -> list[dict]:
    """The first m dev clips, alternating the two directions (de-en, fr-en)."""
    from llast.config import DataSource
    from llast.data import read_source

    per = [list(read_source(DataSource(format="covost", path=str(p)))) for p in DEV]
    out = []
    i = 0
    while len(out) < m:
        for lst in per:
            if i < len(lst) and len(out) < m:
                s = lst[i]
                out.append({"audio": s.audio, "src": s.src_lang, "tgt": s.tgt_lang, "offset": s.offset, "duration": s.duration})
        i += 1
    return out


# ============================================================================ workers (subprocesses)


def _param_groups(model) -> dict:
    """Parameter counts for the FLOP formula (LoRA included in its part)."""
    enc = sum(p.numel() for p in model.encoder.parameters())
    ada = sum(p.numel() for p in model.adaptor.parameters())
    llm = model.llm
    emb = llm.get_input_embeddings().weight
    head = llm.get_output_embeddings().weight
    seen = {id(emb), id(head)}
    body = sum(p.numel() for p in llm.parameters() if id(p) not in seen)
    return {"encoder": enc, "adaptor": ada, "llm_body": body, "lm_head": head.numel(),
            "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad)}


def worker_train(spec: dict) -> dict:
    import torch

    import llast.train as T
    from llast.config import load_config
    from llast.model import AUDIO_TOKEN_ID, IGNORE_INDEX

    cuda = spec["device"] == "cuda"
    info: dict = {}
    orig_build = T.build_lora_model

    def build_and_mark(cfg):  # called once by train() to build the model
        model = orig_build(cfg)
        info["params"] = _param_groups(model)
        info["rss_after_build_mb"] = round(rss_mb(), 1)
        reset_peak_rss()  # the peak from here on is training's own (optimizer state, activations)
        return model

    T.build_lora_model = build_and_mark
    batches: list[dict] = []

    class RecordingCollator(T.Collator):
        def __call__(self, items):
            batch, meta = super().__call__(items)
            rec = {"samples": meta["n_samples"], "audio_s": meta["audio_seconds"]}
            if batch is not None:
                B, L = batch["input_ids"].shape
                rec.update(
                    B=B, L=L, real_tokens=int(batch["attention_mask"].sum()),
                    audio_embeds=int((batch["input_ids"] == AUDIO_TOKEN_ID).sum()),
                    targets=int((batch["labels"][:, 1:] != IGNORE_INDEX).sum()), feat_frames=int(batch["input_features"].shape[-1]),
                )
            batches.append(rec)
            return batch, meta

    T.Collator = RecordingCollator
    out_dir = Path(spec["tmp"]) / f"train-{spec['system']}"
    shutil.rmtree(out_dir, ignore_errors=True)
    warm, n = spec["warmup_steps"], spec["steps"]
    overrides = list(spec["overrides"]) + [
        f"train.out_dir={out_dir}", f"train.max_steps={warm + n}", "train.log_every=1", "train.save_every=1000000",
        "train.max_minutes=null", "train.eval_every=null", "train.mixed_precision=" + ("bf16" if cuda else "'no'"),
    ]
    cfg = load_config(CONFIG, overrides)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    T.train(cfg, resume="no", progress=False)
    total = time.time() - t0
    peak = peak_rss_mb()
    log = [json.loads(x) for x in open(out_dir / "log.jsonl") if '"loss"' in x]
    assert [r["step"] for r in log] == list(range(1, warm + n + 1)), [r["step"] for r in log]
    assert len(batches) >= warm + n, len(batches)
    timed = batches[warm : warm + n]
    dt = log[warm + n - 1]["elapsed_s"] - log[warm - 1]["elapsed_s"]
    audio = sum(b["audio_s"] for b in timed)
    samples = sum(b["samples"] for b in timed)
    p = info["params"]
    pad30 = cfg.model.encoder.input_length in ("pad30", "pad30_full")
    enc_frames = [b["B"] * (1500 if pad30 else (b["feat_frames"] + 1) // 2) for b in timed]
    stack = cfg.model.adaptor.stack
    flops = sum(
        6 * (p["encoder"] * ef + p["adaptor"] * (ef // stack) + p["llm_body"] * b["B"] * b["L"] + p["lm_head"] * b["targets"])
        for b, ef in zip(timed, enc_frames)
    )
    res = {
        "system": spec["system"], "overrides": spec["overrides"], "warmup_steps": warm, "timed_steps": n,
        "timed_seconds": round(dt, 2), "s_per_step": round(dt / n, 3),
        "audio_sec_per_sec": round(audio / dt, 3), "samples_per_sec": round(samples / dt, 3),
        "audio_s_timed": round(audio, 2), "samples_timed": samples,
        "mean_batch_size": round(samples / n, 2), "mean_batch_audio_s": round(audio / n, 2),
        "mean_llm_tokens_per_batch": round(sum(b["B"] * b["L"] for b in timed) / n, 1),
        "mean_real_llm_tokens_per_batch": round(sum(b["real_tokens"] for b in timed) / n, 1),
        "mean_audio_embeds_per_clip": round(sum(b["audio_embeds"] for b in timed) / samples, 1),
        "losses": [r["loss"] for r in log],
        "model_flops_timed": flops, "model_flops_per_s": flops / dt,
        "params": p, "train_call_s": round(total, 1), "batches": timed,
    }
    if cuda:
        res["peak_gpu_mem_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    res["rss_after_build_mb"] = info["rss_after_build_mb"]
    res["peak_rss_mb"] = round(peak, 1)
    res["peak_rss_delta_mb"] = round(peak - info["rss_after_build_mb"], 1)
    shutil.rmtree(out_dir, ignore_errors=True)
    return res


def worker_infer(spec: dict) -> dict:
    import torch

    from llast.audio import SAMPLE_RATE, load_audio
    from llast.config import DecodeConfig
    from llast.processor import Example

    cuda = spec["device"] == "cuda"
    device = "cuda" if cuda else "cpu"
    k = spec["new_tokens"]
    torch.manual_seed(0)
    examples = [
        Example(load_audio(c["audio"], offset=c["offset"], duration=c["duration"], max_seconds=30.0), c["src"], c["tgt"], "translate")
        for c in spec["clips"]
    ]
    audio_s = sum(len(e.audio) for e in examples) / SAMPLE_RATE
    new_token_counts: list[int] = []
    flops = {"n": 0.0}

    if spec["system"] == "whisper":
        from llast.evaluate import WhisperBaseline

        base = WhisperBaseline(spec["whisper_model"], DecodeConfig(num_beams=spec["num_beams"], max_new_tokens=k),
                               device=device, dtype=spec["dtype"])
        wmodel, wproc = base.model, base.processor

        def generate(exs, batch_size):  # = WhisperBaseline.generate, plus min_new_tokens (fixed length)
            out = []
            for i in range(0, len(exs), batch_size):
                chunk = exs[i : i + batch_size]
                feats = wproc.feature_extractor([e.audio for e in chunk], sampling_rate=SAMPLE_RATE, return_tensors="pt")
                ids = wmodel.generate(
                    feats.input_features.to(device, wmodel.dtype), num_beams=spec["num_beams"], max_new_tokens=k,
                    min_new_tokens=k, language=chunk[0].src_lang, task="translate",
                )
                new_token_counts.append(int(ids.shape[1]))
                out.extend(wproc.batch_decode(ids, skip_special_tokens=True))
            return out

        params = {"total": sum(p.numel() for p in wmodel.parameters())}
    else:
        from llast import decode as D
        from llast.config import load_config
        from llast.decode import Translator
        from llast.lora import build_lora_model

        # Released-code emulation: pad30 pads the ENCODER input to 30 s but hands the LLM only the clip's
        # real frames; the released code's models get all 1500 (input_length pad30_full).
        full = ["model.encoder.input_length=pad30_full"] if spec.get("all_1500_frames") else []
        cfg = load_config(CONFIG, list(spec["overrides"]) + full)
        model = build_lora_model(cfg.model)
        if spec.get("merge_lora", True):
            # what `llast.load_model` / `llast translate` / `llast evaluate` do at load time
            from llast.checkpoint import merge_lora_weights

            merge_lora_weights(model)
        # built and merged in fp32, then cast: what `llast.load_model(dtype=...)` does
        tr = Translator(model, cfg, device=device, dtype=spec["dtype"])
        params = _param_groups(model)
        orig = D.generate_ids

        def counted_generate(model, batch, decode, tokenizer):
            ids = orig(model, batch, decode, tokenizer)
            new_token_counts.append(int(ids.shape[1]))
            B, L = batch["input_ids"].shape
            beams, share_prefill = decode.num_beams, decode.share_prefill
            T = 1500 if cfg.model.encoder.input_length in ("pad30", "pad30_full") else (batch["input_features"].shape[-1] + 1) // 2
            # encoder + adaptor once per clip; LLM prefill on B*beams prompts, then k steps of B*beams tokens
            flops["n"] += 2 * (params["encoder"] * B * T + params["adaptor"] * B * T // cfg.model.adaptor.stack)
            # prefill: once per clip with the shared prefill, once per beam without; the LM head runs on
            # the last prompt position only, then once per new token
            prefill_rows = B if (share_prefill and beams > 1) else B * beams
            flops["n"] += 2 * params["llm_body"] * (prefill_rows * L + B * beams * k) + 2 * params["lm_head"] * B * beams * k
            return ids

        D.generate_ids = counted_generate  # what llast.decode.Translator calls

        def generate(exs, batch_size):
            decode = tr.decode_config(num_beams=spec["num_beams"], max_new_tokens=k, min_new_tokens=k, batch_size=batch_size)
            return tr.generate(exs, decode)

    # warm-up: one small batch (first-call allocations, kernel selection), not timed
    generate(examples[: min(2, len(examples))], 2)
    new_token_counts.clear()
    flops["n"] = 0.0
    points = []
    for b in spec["batch_sizes"]:
        reset_peak_rss()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
            torch.cuda.synchronize()
        rss0 = rss_mb()
        new_token_counts.clear()
        flops["n"] = 0.0
        t0 = time.perf_counter()
        texts = generate(examples, b)
        if cuda:
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        assert len(texts) == len(examples)
        point = {
            "batch_size": b, "seconds": round(dt, 3), "clips": len(examples), "audio_s": round(audio_s, 2),
            "rtf": round(dt / audio_s, 4), "audio_sec_per_sec": round(audio_s / dt, 3), "clips_per_sec": round(len(examples) / dt, 3),
            "output_lengths": sorted(set(new_token_counts)), "peak_rss_delta_mb": round(peak_rss_mb() - rss0, 1),
        }
        if flops["n"]:
            point["model_flops_per_s"] = flops["n"] / dt
        if cuda:
            point["peak_gpu_mem_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        points.append(point)
        print(f"[infer {spec['system']}] batch {b}: {dt:.1f} s, RTF {dt / audio_s:.3f}", file=sys.stderr, flush=True)
    dtype = str(next((wmodel if spec["system"] == "whisper" else tr.model).parameters()).dtype).replace("torch.", "")
    return {"system": spec["system"], "overrides": spec.get("overrides", []), "merge_lora": spec.get("merge_lora", True),
            "dtype": dtype,
            "num_beams": spec["num_beams"],
            "new_tokens": k, "params": params, "points": points,
            "sample_output": texts[0] if texts else ""}


def worker_devloss(spec: dict) -> dict:
    """Target-token dev loss of a checkpoint (llast.train.dev_loss over the config's dev loader)."""
    import torch

    from llast.checkpoint import load_checkpoint
    from llast.data import SpeechDataset, build_samples
    from llast.processor import build_processor
    from llast.samplers import make_sampler
    from llast.train import Collator, dev_loss

    model, cfg = load_checkpoint(spec["checkpoint"])
    device = torch.device(spec["device"])
    model.to(device)
    processor = build_processor(cfg.model, encoder_config=model.encoder_config)
    samples = build_samples(cfg.data.dev, asr_augment=False)
    loader = torch.utils.data.DataLoader(
        SpeechDataset(samples, cfg.model.encoder.max_seconds, skip_bad=True),
        batch_sampler=make_sampler(cfg, samples, shuffle=False), collate_fn=Collator(processor),
    )
    return {"system": spec["system"], "dev_loss": round(dev_loss(model, loader, device, 10**9), 4), "n": len(samples)}


# ============================================================================ orchestration


def part_bleu(args, systems: dict, s_per_step: dict, log, res: dict, base: dict) -> dict:
    """Train each system for the same wall-clock budget, then dev BLEU with the same decoder settings."""
    from llast.evaluate import score

    res.update(budget_minutes=args.bleu_minutes)
    res.setdefault("systems", {})
    env = dict(os.environ, PYTHONWARNINGS="ignore", TRANSFORMERS_VERBOSITY="error")
    for name, ov in systems.items():
        out_dir = ROOT / "runs" / "bench" / f"{args.name}-{name}"
        shutil.rmtree(out_dir, ignore_errors=True)
        # The LR schedule is fitted to the steps each system can do in the budget (from part 1's
        # s/step); train.max_minutes is the hard cap for both.
        steps = max(2, int(args.bleu_minutes * 60 / s_per_step[name]))
        train_cmd = LLAST + ["train", "--resume", "no", str(CONFIG), *ov, f"train.out_dir={out_dir}", f"train.max_minutes={args.bleu_minutes}",
                             f"train.max_steps={steps}", "train.log_every=1", "train.save_every=1000000"]
        if args.device != "cuda":
            train_cmd.append("train.mixed_precision='no'")
        log(f"  $ llast train ... {' '.join(ov)} max_minutes={args.bleu_minutes} max_steps={steps}")
        with OtherLoad() as train_load:
            p = subprocess.run(train_cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"llast train ({name}) failed:\n{p.stdout[-4000:]}")
        train_wall = train_load.result["wall_s"]
        records = [json.loads(x) for x in open(out_dir / "log.jsonl") if '"loss"' in x]
        eval_dir = out_dir / "eval-dev"
        ev_cmd = LLAST + ["evaluate", "--model", str(out_dir / "final"), "--data", *map(str, DEV), "--out", str(eval_dir),
                          "--limit", str(args.bleu_clips // 2), "--num-beams", "5", "--batch-size", str(args.bleu_batch),
                          "--max-new-tokens", str(args.bleu_max_new_tokens)]
        log(f"  $ llast evaluate --model {out_dir / 'final'} --limit {args.bleu_clips // 2} --num-beams 5 --batch-size {args.bleu_batch}")
        with OtherLoad() as eval_load:
            p = subprocess.run(ev_cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"llast evaluate ({name}) failed:\n{p.stdout[-4000:]}")
        eval_wall = eval_load.result["wall_s"]
        dl = run_worker("devloss", dict(base, system=name, checkpoint=str(out_dir / "final")), log)
        sets = json.loads((eval_dir / "score.json").read_text())["sets"]
        hyps, refs = [], []
        for set_name in sets:
            hyps += (eval_dir / f"{set_name}.hyp.txt").read_text(encoding="utf-8").splitlines()
            refs += (eval_dir / f"{set_name}.ref.txt").read_text(encoding="utf-8").splitlines()
        both = score(hyps, refs, "en")
        res["eval_clips"] = len(hyps)
        res["systems"][name] = {
            "steps_planned": steps, "steps_done": records[-1]["step"] if records else 0,
            "train_loop_s": records[-1]["elapsed_s"] if records else None, "train_wall_s": round(train_wall, 1),
            "final_loss": records[-1]["loss"] if records else None,
            "bleu_all": both["bleu"], "chrf_all": both["chrf"], "bleu_signature": both["bleu_signature"],
            "per_set": {k: {"bleu": v["bleu"], "chrf": v["chrf"], "n": v["n"], "rtf": v["real_time_factor"]} for k, v in sets.items()},
            "dev_loss": dl["dev_loss"], "dev_loss_samples": dl["n"],
            "train_loss_last5_mean": round(sum(r["loss"] for r in records[-5:]) / len(records[-5:]), 4) if records else None,
            "eval_wall_s": round(eval_wall, 1), "checkpoint": str(out_dir.relative_to(ROOT) / "final"),
            "cpu_load_train": train_load.result, "cpu_load_eval": eval_load.result,
            "example_hyp": hyps[0] if hyps else "", "example_ref": refs[0] if refs else "",
        }
        log(f"  {name}: {res['systems'][name]['steps_done']} steps, BLEU {both['bleu']:.2f} chrF {both['chrf']:.1f}, "
            f"dev loss {dl['dev_loss']:.3f}; other processes used {100 * train_load.result['other_share_of_capacity']:.1f}% "
            "of the CPU capacity during training")
    return res


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    inf = results["inference"]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    styles = {"defaults": ("o-", "LLaST-mini, this project's defaults"), "whisper": ("s--", "Whisper base, own translate task"),
              "faithful": ("D", "LLaST-mini, paper-faithful (pad30, stack 1)"),
              "faithful-float32": ("^", "paper-faithful, fp32 weights"),
              "faithful-bfloat16": ("v", "paper-faithful, bf16 weights"),
              "faithful-released-decoding": ("d", "paper-faithful, released-style decoding"),
              "defaults-released-decoding": ("*", "defaults, released-style decoding"),
              "released": ("X", "released-code emulation (1500 frames to the LLM,\nreleased-style decoding)")}
    for name, (style, label) in styles.items():
        if name not in inf:
            continue
        pts = inf[name]["points"]
        if name in ("defaults", "faithful", "whisper") and "dtype" in inf[name]:
            label += f", {inf[name]['dtype']}"
        ax.plot([p["batch_size"] for p in pts], [p["audio_sec_per_sec"] for p in pts], style, label=label, ms=7)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    from matplotlib.ticker import FormatStrFormatter, NullFormatter

    ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    lo = min(p["audio_sec_per_sec"] for v in inf.values() for p in v["points"])
    hi = max(p["audio_sec_per_sec"] for v in inf.values() for p in v["points"])
    ax.set_yticks([t for t in (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500) if lo / 2 <= t <= hi * 2])
    bs = sorted({p["batch_size"] for v in inf.values() for p in v["points"]})
    ax.set_xticks(bs)
    ax.set_xticklabels([str(b) for b in bs])
    ax.set_xlabel("decoding batch size (clips)")
    ax.set_ylabel("audio seconds translated per second")
    m = results["machine"]
    k = next(iter(inf.values()))["new_tokens"]
    dev = m.get("gpu") or f"{m.get('cpu_model_name', 'CPU')}, {m.get('cpu_cores_usable')} cores"
    ax.set_title(f"Beam-5 translation throughput, {k} output tokens per clip\n{dev}, {m['date'][:10]}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def ratio(a, b):
    return round(a / b, 2) if a and b else None


def summary_table(r: dict) -> str:
    """Markdown table of the headline figures and ratios (defaults / faithful)."""
    lines = ["| measurement | paper-faithful | this project's defaults | ratio (defaults / faithful) |", "|---|---|---|---|"]
    t = r.get("training")
    if t and {"faithful", "defaults"} <= set(t):
        f, d = t["faithful"], t["defaults"]
        lines.append(f"| training: audio s / s | {f['audio_sec_per_sec']:.2f} | {d['audio_sec_per_sec']:.2f} | **{ratio(d['audio_sec_per_sec'], f['audio_sec_per_sec'])}x** |")
        lines.append(f"| training: samples / s | {f['samples_per_sec']:.3f} | {d['samples_per_sec']:.3f} | {ratio(d['samples_per_sec'], f['samples_per_sec'])}x |")
        lines.append(f"| training: s / optimizer step (mean batch: clips, audio s) | {f['s_per_step']:.2f} ({f['mean_batch_size']:.1f}, {f['mean_batch_audio_s']:.1f} s) | {d['s_per_step']:.2f} ({d['mean_batch_size']:.1f}, {d['mean_batch_audio_s']:.1f} s) | |")
        lines.append(f"| training: LLM tokens per clip (audio embeddings per clip) | {f['mean_llm_tokens_per_batch'] / f['mean_batch_size']:.0f} ({f['mean_audio_embeds_per_clip']:.0f}) | {d['mean_llm_tokens_per_batch'] / d['mean_batch_size']:.0f} ({d['mean_audio_embeds_per_clip']:.0f}) | {ratio(d['mean_llm_tokens_per_batch'] / d['mean_batch_size'], f['mean_llm_tokens_per_batch'] / f['mean_batch_size'])}x |")
        if "peak_gpu_mem_gb" in f:
            lines.append(f"| training: peak GPU memory (GB) | {f['peak_gpu_mem_gb']} | {d['peak_gpu_mem_gb']} | {ratio(d['peak_gpu_mem_gb'], f['peak_gpu_mem_gb'])}x |")
        lines.append(f"| training: peak RSS above the loaded model (MB) | {f['peak_rss_delta_mb']:.0f} | {d['peak_rss_delta_mb']:.0f} | {ratio(d['peak_rss_delta_mb'], f['peak_rss_delta_mb'])}x |")
        lines.append(f"| training: peak RSS of the process (MB) | {f['peak_rss_mb']:.0f} | {d['peak_rss_mb']:.0f} | |")
        if "mfu" in f:
            lines.append(f"| training: model FLOP utilisation ({r['peak']['dtype']} peak) | {100 * f['mfu']:.1f}% | {100 * d['mfu']:.1f}% | |")
    inf = r.get("inference")
    if inf and {"faithful", "defaults"} <= set(inf):
        # The baseline is the faster of the faithful batch-1 runs (one per weights dtype).
        runs = {k: v for k, v in inf.items() if k == "faithful" or k in ("faithful-float32", "faithful-bfloat16")}
        fdt = {k: v.get("dtype", "?") for k, v in runs.items()}
        fkey = max(runs, key=lambda k: runs[k]["points"][0]["audio_sec_per_sec"])
        f = runs[fkey]["points"][0]
        best = inf["defaults"]["points"]
        d = next((p for p in best if p["batch_size"] == r["args"]["infer_batch"]), best[-1])
        d1 = next((p for p in best if p["batch_size"] == 1), None)
        for k in sorted(runs, key=lambda k: k != fkey):
            p = runs[k]["points"][0]
            lines.append(f"| inference: faithful batch 1, {fdt[k]} weights: audio s / s{' (the baseline: faster)' if k == fkey and len(runs) > 1 else ''} | {p['audio_sec_per_sec']:.2f} | | |")
        lines.append(f"| inference, beam 5: audio s / s (faithful batch {f['batch_size']} {fdt[fkey]}, defaults batch {d['batch_size']} {inf['defaults'].get('dtype', '?')}) | {f['audio_sec_per_sec']:.2f} | {d['audio_sec_per_sec']:.2f} | **{ratio(d['audio_sec_per_sec'], f['audio_sec_per_sec'])}x** |")
        lines.append(f"| inference, beam 5: real-time factor (lower is better) | {f['rtf']:.3f} | {d['rtf']:.4f} | {ratio(f['rtf'], d['rtf'])}x faster |")
        pr = r.get("inference_paired")
        if pr:
            lines.append(f"| inference, beam 5, **paired** (faithful batch 1 {pr['faithful']['dtype']} and defaults batch {pr['defaults']['batch_size']} timed alternately, {len(pr['rounds'])} rounds, fresh process each; per-round ratios {', '.join(str(round(x['ratio'], 2)) for x in pr['rounds'])}) | {pr['median_faithful_audio_sec_per_sec']:.2f} | {pr['median_defaults_audio_sec_per_sec']:.2f} | **{pr['median_ratio']:.2f}x** (median) |")
        if d1 is not None:
            lines.append(f"| inference, beam 5, both at batch 1: audio s / s | {f['audio_sec_per_sec']:.2f} | {d1['audio_sec_per_sec']:.2f} | {ratio(d1['audio_sec_per_sec'], f['audio_sec_per_sec'])}x |")
        if "whisper" in inf:
            w = inf["whisper"]["points"]
            wb = next((p for p in w if p["batch_size"] == d["batch_size"]), w[-1])
            lines.append(f"| peer: Whisper base translate, batch {wb['batch_size']}: audio s / s (RTF) | | {wb['audio_sec_per_sec']:.2f} ({wb['rtf']:.4f}) | defaults / Whisper: {ratio(d['audio_sec_per_sec'], wb['audio_sec_per_sec'])}x |")
        if "faithful-released-decoding" in inf and "defaults-released-decoding" in inf:
            fr = inf["faithful-released-decoding"]["points"][0]
            dr = inf["defaults-released-decoding"]["points"][0]
            lines.append(f"| inference, both decoded the released way (LoRA unmerged, every beam prefilled), faithful batch {fr['batch_size']}, defaults batch {dr['batch_size']}: audio s / s (RTF) | {fr['audio_sec_per_sec']:.2f} ({fr['rtf']:.3f}) | {dr['audio_sec_per_sec']:.2f} ({dr['rtf']:.4f}) | {ratio(dr['audio_sec_per_sec'], fr['audio_sec_per_sec'])}x |")
            lines.append(f"| inference, faithful decoded the released way vs defaults as shipped: audio s / s | {fr['audio_sec_per_sec']:.2f} | {d['audio_sec_per_sec']:.2f} | {ratio(d['audio_sec_per_sec'], fr['audio_sec_per_sec'])}x |")
        if "released" in inf:
            rl = inf["released"]["points"][0]
            lines.append(f"| inference, released-code emulation (all 1500 frames to the LLM, released-style decoding), batch 1, first {rl['clips']} clips, vs defaults as shipped: audio s / s (RTF) | {rl['audio_sec_per_sec']:.2f} ({rl['rtf']:.3f}) | {d['audio_sec_per_sec']:.2f} ({d['rtf']:.4f}) | {ratio(d['audio_sec_per_sec'], rl['audio_sec_per_sec'])}x |")
        if "mfu" in f:
            lines.append(f"| inference: model FLOP utilisation (against the measured matmul peak of each run's dtype) | {100 * f['mfu']:.1f}% | {100 * d['mfu']:.1f}% | |")
    b = r.get("bleu")
    if b and {"faithful", "defaults"} <= set(b["systems"]):
        f, d = b["systems"]["faithful"], b["systems"]["defaults"]
        lines.append(f"| dev BLEU after {b['budget_minutes']:g} min of training ({b['eval_clips']} clips, beam 5) | {f['bleu_all']:.2f} ({f['steps_done']} steps) | {d['bleu_all']:.2f} ({d['steps_done']} steps) | {round(d['bleu_all'] - f['bleu_all'], 2):+} BLEU |")
        lines.append(f"| dev chrF after {b['budget_minutes']:g} min | {f['chrf_all']:.1f} | {d['chrf_all']:.1f} | {round(d['chrf_all'] - f['chrf_all'], 1):+} |")
        lines.append(f"| dev loss (target tokens, all {f['dev_loss_samples']} dev clips) after {b['budget_minutes']:g} min | {f['dev_loss']:.3f} | {d['dev_loss']:.3f} | {round(d['dev_loss'] - f['dev_loss'], 3):+} (lower is better) |")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--out", default="bench/results/cpu.json", help="results JSON (the table goes next to it as .md)")
    ap.add_argument("--parts", default="train,infer,paired,bleu", help="comma-separated subset of train,infer,paired,bleu")
    ap.add_argument("--replot", action="store_true", help="only redraw the PNG from the --out JSON")
    ap.add_argument("--systems", default="faithful,defaults", help="(for debugging) which of faithful,defaults to run")
    ap.add_argument("--warmup-steps", type=int, default=1, help="untimed training steps before the timed ones")
    ap.add_argument("--faithful-steps", type=int, default=3, help="timed optimizer steps, faithful")
    ap.add_argument("--defaults-steps", type=int, default=12, help="timed optimizer steps, defaults")
    ap.add_argument("--clips", type=int, default=16, help="dev clips for the inference measurement (both directions)")
    ap.add_argument("--new-tokens", type=int, default=24, help="fixed output length (min = max new tokens)")
    ap.add_argument("--num-beams", type=int, default=5)
    ap.add_argument("--infer-batch", type=int, default=16, help="decoding batch size of the defaults' headline figure")
    ap.add_argument("--faithful-batches", default="1", help="faithful decoding batch sizes (released code: 1)")
    ap.add_argument("--sweep", default="1,2,4,8,16", help="defaults' decoding batch sizes for the plot")
    ap.add_argument("--whisper-batches", default="1,16", help="Whisper baseline batch sizes")
    ap.add_argument("--released-clips", type=int, default=2,
                    help="inference only: also time the released code's way of feeding all 1500 encoder frames to the "
                         "LLM (pad30 here passes only the real frames), batch 1, released-style decoding, on the first N "
                         "of the clips (0 = skip)")
    ap.add_argument("--released-decoding", action=argparse.BooleanOptionalAction, default=True,
                    help="inference only: also time faithful (batch 1) and defaults (--infer-batch) decoded as the released "
                         "code decodes: LoRA modules not merged, every beam prefilled (decode.share_prefill=false)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="config overrides for every LLaST system, e.g. model.llm.name=DIR (bench/random_models.py)")
    ap.add_argument("--whisper-model", default="whisper-base", help="the Whisper peer (a bundled name or a directory)")
    ap.add_argument("--infer-dtype", choices=["auto", "float32", "bfloat16"], default="auto",
                    help="weights dtype for inference; auto = what `llast translate` picks on this machine "
                         "(bf16 on CUDA and on CPUs with AMX, else fp32). The faithful batch-1 baseline is also "
                         "timed in the other dtype, and the faster of the two is the baseline")
    ap.add_argument("--paired-rounds", type=int, default=3,
                    help="part paired: time faithful (batch 1) and defaults (--infer-batch) alternately, each in a fresh "
                         "process, for N rounds and report the median ratio (0 = skip)")
    ap.add_argument("--bleu-minutes", type=float, default=6.0, help="training budget (wall clock) per system")
    ap.add_argument("--bleu-clips", type=int, default=40, help="dev clips for BLEU (half per direction)")
    ap.add_argument("--bleu-batch", type=int, default=8, help="decoding batch size for BLEU (both systems)")
    ap.add_argument("--bleu-max-new-tokens", type=int, default=64)
    return ap


def _part_infer(args, results: dict, systems: dict, base: dict, peaks: dict, dtype: str, other_dtype: str, log,
                save) -> None:
    """Parts 2-3: inference throughput of every row of the plan, into results["inference"]."""
    log(f"part 2-3: inference, beam {args.num_beams}, {args.new_tokens} tokens per clip, {args.clips} dev clips")
    clips = dev_clips(args.clips)
    results["inference_clips"] = {"n": len(clips), "audio_s": round(sum(c["duration"] or 0 for c in clips), 2)}
    results["inference"] = {}
    # LLaST systems are decoded as `llast translate/evaluate` decode a checkpoint (LoRA merged at load,
    # one shared prefill per clip for the beams), so the headline ratio is the configs' doing. The
    # "-released-decoding" rows decode as the released code does: peft LoRA modules left in, and
    # transformers' beam search prefilling every beam (decode.share_prefill=false).
    released_decoding = ["decode.share_prefill=false"]
    extra = list(args.set)
    # (row, overrides, batch sizes, merge LoRA at load, dtype). The faithful batch-1 baseline is timed in
    # both dtypes: bf16 pays off only at larger batches, and the ratio is taken against the faster one.
    plan = [
        ("faithful", FAITHFUL, [int(x) for x in args.faithful_batches.split(",")], True, dtype),
        (f"faithful-{other_dtype}", FAITHFUL, [1], True, other_dtype),
        ("defaults", [], [int(x) for x in args.sweep.split(",")], True, dtype),
        ("whisper", [], [int(x) for x in args.whisper_batches.split(",") if x], True, dtype),
        ("faithful-released-decoding", FAITHFUL + released_decoding, [1] if args.released_decoding else [], False, dtype),
        ("defaults-released-decoding", released_decoding, [args.infer_batch] if args.released_decoding else [], False, dtype),
        ("released", FAITHFUL + released_decoding, [1] if args.released_clips > 0 else [], False, dtype),
    ]
    for name, ov, batches, merge, dt in plan:
        if not batches or (name in SYSTEMS and name not in systems):
            continue
        if name.startswith("faithful-") and "faithful" not in systems:
            continue
        spec = dict(base, system=name, overrides=list(ov) + (extra if name != "whisper" else []),
                    clips=clips[: args.released_clips] if name == "released" else clips,
                    batch_sizes=batches, num_beams=args.num_beams, new_tokens=args.new_tokens,
                    all_1500_frames=name == "released", merge_lora=merge, dtype=dt)
        r = run_worker("infer", spec, log)
        for p in r["points"]:
            if "model_flops_per_s" in p:
                p["mfu"] = p["model_flops_per_s"] / peaks[r["dtype"]]["flops_per_s"]
                p["mfu_peak_dtype"] = r["dtype"]
        results["inference"][name] = r
        for p in r["points"]:
            log(f"  {name} batch {p['batch_size']}: RTF {p['rtf']:.4f}, {p['audio_sec_per_sec']:.2f} audio s/s, "
                f"output lengths {p['output_lengths']}")
        save()


def _part_paired(args, results: dict, systems: dict, base: dict, dtype: str, other_dtype: str, log) -> None:
    """Part 3b: the headline inference ratio, faithful and defaults timed alternately, into results["inference_paired"]."""
    # The headline inference ratio measured in pairs: faithful (batch 1) and defaults (--infer-batch) run
    # alternately, each in a fresh process as in part 2, so that each round compares two runs made
    # within a minute of each other (this shared VM's speed drifts by tens of percent over minutes).
    inf = results.get("inference", {})
    cands = [k for k in ("faithful", f"faithful-{other_dtype}") if k in inf]
    fdt = inf[max(cands, key=lambda k: inf[k]["points"][0]["audio_sec_per_sec"])]["dtype"] if cands else dtype
    log(f"part 3b: paired inference headline, faithful batch 1 ({fdt}) and defaults batch {args.infer_batch} "
        f"({dtype}) alternately, {args.paired_rounds} rounds")
    clips = dev_clips(args.clips)
    rounds = []
    for i in range(args.paired_rounds):
        r = {}
        for name, dt, b in (("faithful", fdt, 1), ("defaults", dtype, args.infer_batch)):
            spec = dict(base, system=name, overrides=systems[name], clips=clips, batch_sizes=[b],
                        num_beams=args.num_beams, new_tokens=args.new_tokens, all_1500_frames=False,
                        merge_lora=True, dtype=dt)
            r[name] = run_worker("infer", spec, log)["points"][0]["audio_sec_per_sec"]
        r["ratio"] = round(r["defaults"] / r["faithful"], 3)
        rounds.append(r)
        log(f"  round {i + 1}: faithful {r['faithful']:.2f}, defaults {r['defaults']:.2f} audio s/s: {r['ratio']:.2f}x")
    import statistics

    results["inference_paired"] = {
        "faithful": {"batch_size": 1, "dtype": fdt}, "defaults": {"batch_size": args.infer_batch, "dtype": dtype},
        "clips": len(clips), "new_tokens": args.new_tokens, "rounds": rounds,
        "median_ratio": statistics.median(x["ratio"] for x in rounds),
        "median_faithful_audio_sec_per_sec": statistics.median(x["faithful"] for x in rounds),
        "median_defaults_audio_sec_per_sec": statistics.median(x["defaults"] for x in rounds),
    }


def main(argv=None) -> int:
    ap = _parser()
    args = ap.parse_args(argv)
    if args.warmup_steps < 1:
        ap.error("--warmup-steps must be >= 1 (the first step pays one-time costs)")

    out = (ROOT / args.out) if not Path(args.out).is_absolute() else Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    args.name = out.stem
    parts = set(args.parts.split(","))
    png = out.parent / ("throughput_vs_batch.png" if args.name == "cpu" else f"{args.name}_throughput_vs_batch.png")
    if args.replot:
        plot(json.loads(out.read_text()), png)
        print(f"wrote {png}")
        return 0
    tmp = ROOT / "runs" / "bench" / f"{args.name}-tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    systems = {k: v for k, v in SYSTEMS.items() if k in args.systems.split(",")}
    t_start = time.time()

    def log(msg):
        print(f"[bench {time.time() - t_start:6.0f}s] {msg}", flush=True)

    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("bench: --device cuda but no CUDA device is visible", file=sys.stderr)
            return 2
    for p in DEV:
        if not p.is_file():
            print(f"bench: {p} missing; build it with `llast data synth --out data/synth --directions de-en,fr-en "
                  "--train 300 --dev 40 --test 40`", file=sys.stderr)
            return 2

    results: dict = {}
    if parts != {"train", "infer", "paired", "bleu"} and out.is_file():  # a partial run updates an earlier one
        results = json.loads(out.read_text())
    results.update({"args": vars(args), "machine": machine_info(args.device), "faithful_overrides": FAITHFUL,
                    "config": str(CONFIG.relative_to(ROOT))})
    log(f"machine: {results['machine'].get('cpu_model_name')} x{results['machine']['cpu_cores_usable']}, "
        f"{results['machine']['ram_gb']} GB, {results['machine'].get('gpu', 'no GPU')}")
    results["peak"] = matmul_peak(args.device)
    log(f"measured {results['peak']['dtype']} matmul peak: {results['peak']['flops_per_s'] / 1e9:.1f} GFLOP/s")
    base = {"device": args.device, "tmp": str(tmp), "whisper_model": args.whisper_model}
    if args.set:
        systems = {k: list(v) + list(args.set) for k, v in systems.items()}
        results["set"] = list(args.set)
    from llast.model import inference_dtype

    dtype = str(inference_dtype(args.infer_dtype, args.device)).replace("torch.", "")
    other_dtype = "float32" if dtype == "bfloat16" else "bfloat16"
    results["infer_dtype"] = dtype
    peaks = {results["peak"]["dtype"]: results["peak"]}
    if "infer" in parts:  # MFU of each inference run against the peak of its own weights dtype
        for dt in (dtype, other_dtype):
            if dt not in peaks:
                peaks[dt] = matmul_peak(args.device, dtype_name=dt)
                log(f"measured {dt} matmul peak: {peaks[dt]['flops_per_s'] / 1e9:.1f} GFLOP/s")
        results["peaks"] = peaks

    def stamp(part):
        m = results["machine"]
        results.setdefault("part_runs", {})[part] = {
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "git_commit": m.get("git_commit"), "git_dirty": m.get("git_dirty"), "peak": results["peak"],
        }

    def save():
        out.write_text(json.dumps(results, indent=2))
        out.with_suffix(".md").write_text(summary_table(results) + "\n")

    if "train" in parts:
        log("part 1: training throughput")
        results.setdefault("training", {})
        for name, ov in systems.items():
            steps = args.faithful_steps if name == "faithful" else args.defaults_steps
            r = run_worker("train", dict(base, system=name, overrides=ov, warmup_steps=args.warmup_steps, steps=steps), log)
            r["mfu"] = r["model_flops_per_s"] / results["peak"]["flops_per_s"]
            results["training"][name] = r
            log(f"  {name}: {r['s_per_step']:.2f} s/step, {r['audio_sec_per_sec']:.2f} audio s/s, "
                f"{r['samples_per_sec']:.3f} samples/s, peak RSS +{r['peak_rss_delta_mb']:.0f} MB")
            save()
        stamp("train")
    if "infer" in parts:
        _part_infer(args, results, systems, base, peaks, dtype, other_dtype, log, save)
        plot(results, png)
        stamp("infer")
    if "paired" in parts and args.paired_rounds > 0 and {"faithful", "defaults"} <= set(systems):
        _part_paired(args, results, systems, base, dtype, other_dtype, log)
        stamp("paired")
        save()
    if "bleu" in parts:
        log(f"part 4: dev BLEU after {args.bleu_minutes} min of training each")
        s_per_step = {k: v["s_per_step"] for k, v in results.get("training", {}).items()}
        if not set(systems) <= set(s_per_step):
            print("bench: part bleu needs part train's s/step (run it in the same call or before)", file=sys.stderr)
            return 2
        results["bleu"] = part_bleu(args, systems, s_per_step, log, results.get("bleu", {}), base)
        stamp("bleu")
        save()
    results["total_wall_s"] = round(time.time() - t_start, 1)
    save()
    shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(summary_table(results))
    print(f"\nwrote {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "_worker":
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        import warnings

        warnings.filterwarnings("ignore")
        spec = json.loads(sys.argv[3])
        fn = {"train": worker_train, "infer": worker_infer, "devloss": worker_devloss}[sys.argv[2]]
        result = fn(spec)
        Path(spec["result"]).write_text(json.dumps(result, indent=2))
        sys.exit(0)
    sys.exit(main())

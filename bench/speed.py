"""llast-mini's CPU speed/quality frontier and its peers, side by side on the same clips (issue #29).

Each system runs in a fresh process (`_worker`), one after another on the same clips, rounds interleaved
(A B C ... A B C ...), so its peak RSS is its own and the machine's drift spreads over all systems alike:

    llast:DTYPE:BEAMS[:THREADS[:BATCH]]   llast-mini (two passes, as shipped) with --dtype DTYPE, BEAMS per pass
    fw:COMPUTE:BEAMS[:THREADS]           faster-whisper, Whisper base (the bundled CT2 files), translate task
    cascade:DTYPE:BEAMS[:THREADS]        llast's cascade baseline: Whisper base transcribes, Qwen translates

RTF = decode seconds / audio seconds (clips already loaded; model loading reported apart). Quality: corpus
BLEU per direction (SacreBLEU 13a) and their mean, the pooled BLEU over all clips, and the first pass's WER
(llast: its transcript; cascade: Whisper's). Results: OUT/speed.json and OUT/speed.md.

    python bench/speed.py --data data/synth4/covost_v2.{de,fr,es,it}_en.test.tsv --limit 10 \
        --systems llast:float32:4,llast:int8:4,fw:int8:5 --rounds 1 --out bench/results/speed
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM), MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def faster_whisper_dir() -> Path:
    """The bundled Whisper base CT2 files as faster-whisper reads them: the two package parts joined into
    model.bin beside config.json, tokenizer.json and vocabulary.txt, under llast_home()/ct2/whisper-base
    (written once; nothing is downloaded)."""
    import shutil

    from llast import assets

    out = assets.llast_home() / "ct2" / "whisper-base"
    if (out / "model.bin").is_file():
        return out
    asset = assets.ASSETS["whisper-base"]
    assets._ensure_packages(asset)
    tmp = out.with_name("whisper-base.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    assets._join_parts(asset, assets._part_paths(asset), tmp)  # checks size and sha256
    data = assets._package_dir(asset.data_dir[0]) / asset.data_dir[1]
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copy(data / name, tmp / name)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out


def _clips(data: list[str], limit: int):
    """[(direction, src, tgt, audio (S,), source sentence, reference)] of the first `limit` clips per TSV."""
    from llast.audio import load_audio
    from llast.evaluate import group_sets

    out = []
    for (src, tgt, _), samples in group_sets(data, "translate", limit).items():
        for s in samples:
            out.append((f"{src}-{tgt}", src, tgt, load_audio(s.audio, s.offset, s.duration), s.source_text, s.target_text))
    return out


def worker(spec: str, data: list[str], limit: int, out: str) -> None:
    """Run one system over the clips; write its outputs, times and peak RSS as JSON to `out`."""
    import torch

    kind, setting, beams, *rest = spec.split(":")
    threads = int(rest[0]) if rest else 2
    batch = int(rest[1]) if len(rest) > 1 else None
    beams = int(beams)
    torch.set_num_threads(threads)
    clips = _clips(data, limit)
    t0, c0 = time.perf_counter(), time.process_time()
    heard = None
    if kind == "llast":
        from llast.decode import load_model
        from llast.processor import Example
        from llast.quantize import weights_kind

        tr = load_model("llast-mini", dtype=setting)
        decode = tr.decode_config(num_beams=beams, max_new_tokens=64, **({"batch_size": batch} if batch else {}))
        load_s = time.perf_counter() - t0
        examples = [Example(a, s, t, "translate") for _, s, t, a, _, _ in clips]
        t1, c1 = time.perf_counter(), time.process_time()
        heard = []
        hyps = tr.generate(examples, decode, heard=heard)
        weights = weights_kind(tr.model)
    elif kind == "fw":
        from faster_whisper import WhisperModel

        model = WhisperModel(str(faster_whisper_dir()), device="cpu", compute_type=setting, cpu_threads=threads)
        load_s = time.perf_counter() - t0
        t1, c1 = time.perf_counter(), time.process_time()
        hyps = []
        for _, s, _, a, _, _ in clips:
            segments, _ = model.transcribe(a, language=s, task="translate", beam_size=beams, vad_filter=False)
            hyps.append(" ".join(seg.text.strip() for seg in segments).strip())
        weights = setting
    elif kind == "cascade":
        import dataclasses

        from llast.config import DecodeConfig, PromptConfig
        from llast.evaluate import WhisperBaseline
        from llast.llm_text import TRANSLATION_ONLY, TextTranslator
        from llast.processor import Example

        decode = dataclasses.replace(DecodeConfig(), num_beams=beams, max_new_tokens=64, batch_size=batch or 16)
        asr = WhisperBaseline("whisper-base", decode, dtype=setting)
        llm = TextTranslator.load("qwen2.5-coder-0.5b-instruct", prompt=PromptConfig(system=TRANSLATION_ONLY), dtype=setting)
        load_s = time.perf_counter() - t0
        t1, c1 = time.perf_counter(), time.process_time()
        heard = asr.generate([Example(a, s, s, "transcribe") for _, s, _, a, _, _ in clips])
        hyps = [""] * len(clips)
        for d in dict.fromkeys(c[0] for c in clips):
            idx = [i for i, c in enumerate(clips) if c[0] == d]
            src, tgt = clips[idx[0]][1], clips[idx[0]][2]
            for i, h in zip(idx, llm.translate([heard[i] for i in idx], src, tgt, decode)):
                hyps[i] = h
        weights = setting
    else:
        raise SystemExit(f"unknown system kind {kind!r} in {spec!r}")
    decode_s, cpu_s = time.perf_counter() - t1, time.process_time() - c1
    audio_s = sum(len(c[3]) for c in clips) / 16000
    Path(out).write_text(json.dumps({
        "system": spec, "weights": weights, "threads": threads, "beams": beams, "load_s": round(load_s, 2),
        "decode_s": round(decode_s, 2), "audio_s": round(audio_s, 2), "rtf": round(decode_s / audio_s, 4),
        "cpu_s": round(cpu_s, 2), "cpu_rtf": round(cpu_s / audio_s, 4), "load_cpu_s": round(c1 - c0, 2),
        "peak_rss_mb": round(peak_rss_mb()), "hyps": hyps, "heard": heard,
        "directions": [c[0] for c in clips], "refs": [c[5] for c in clips], "sources": [c[4] for c in clips],
    }, ensure_ascii=False))


def quality(run: dict) -> dict:
    """BLEU per direction and their mean, pooled BLEU, and the first pass's WER % (when it has one)."""
    from llast.evaluate import score, word_error_rates

    per = {}
    for d in dict.fromkeys(run["directions"]):
        idx = [i for i, x in enumerate(run["directions"]) if x == d]
        per[d] = score([run["hyps"][i] for i in idx], [run["refs"][i] for i in idx], "en")["bleu"]
    out = {"bleu": per, "bleu_mean": round(sum(per.values()) / len(per), 2),
           "bleu_pooled": score(run["hyps"], run["refs"], "en")["bleu"]}
    if run.get("heard"):
        out["wer"] = round(100 * word_error_rates(run["heard"], run["sources"])["wer"], 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", nargs="+", required=True)
    ap.add_argument("--limit", type=int, default=10, help="first N clips of each TSV")
    ap.add_argument("--systems", required=True, help="comma-separated system specs (see above)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--out", default="bench/results/speed")
    ap.add_argument("--from-runs", action="store_true", help="run nothing: rebuild the report from OUT/runs/*.json")
    args = ap.parse_args()
    out = Path(args.out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    specs = args.systems.split(",")
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                if l.startswith("model name")), "?")
    flags = next((l.split(":", 1)[1].split() for l in Path("/proc/cpuinfo").read_text().splitlines()
                  if l.startswith("flags")), [])
    kind = "AMX" if "amx_bf16" in flags else "AVX512-BF16" if "avx512_bf16" in flags else "AVX2" if "avx2" in flags else "other"
    meta = {"command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]), "cpu": cpu, "cpu_kind": kind,
            "cores": os.cpu_count(), "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    results: dict[str, list[dict]] = {s: [] for s in specs}
    for r in range(0 if args.from_runs else args.rounds):
        for spec in specs:
            load = Path("/proc/loadavg").read_text().split()[:3]
            path = out / "runs" / f"{spec.replace(':', '_')}.r{r}.json"
            env = {**os.environ, "PYTHONWARNINGS": "ignore", "TRANSFORMERS_VERBOSITY": "error"}
            cmd = [sys.executable, __file__, "_worker", spec, str(args.limit), str(path), *args.data]
            t = time.perf_counter()
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"{spec}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
                continue
            run = json.loads(path.read_text())
            run.update(quality(run), load_before=load, wall_s=round(time.perf_counter() - t, 1), round=r)
            path.write_text(json.dumps(run, ensure_ascii=False))
            results[spec].append(run)
            print(f"round {r} {spec:<24} RTF {run['rtf']:.3f}  load {run['load_s']:5.1f} s  peak RSS {run['peak_rss_mb']:5d} MB  "
                  f"BLEU {run['bleu_mean']:5.2f} (pooled {run['bleu_pooled']:5.2f})  WER {run.get('wer', '-')}  "
                  f"load avg {' '.join(load)}", flush=True)
    if args.from_runs:
        for spec in specs:
            for path in sorted((out / "runs").glob(f"{spec.replace(':', '_')}.r*.json")):
                results[spec].append(json.loads(path.read_text()))
        old = json.loads((out / "speed.json").read_text())["meta"] if (out / "speed.json").is_file() else {}
        meta.update({k: old[k] for k in ("command", "started") if k in old})
    meta["finished"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    summary = []
    for spec, runs in results.items():
        if not runs:
            continue
        rtfs = sorted(x["rtf"] for x in runs)
        last = runs[-1]
        summary.append({"system": spec, "weights": last["weights"], "threads": last["threads"], "beams": last["beams"],
                        "rtf_median": rtfs[len(rtfs) // 2], "rtfs": [x["rtf"] for x in runs],
                        "cpu_rtf": last.get("cpu_rtf"), "load_avg": last.get("load_before"),
                        "load_s": last["load_s"], "peak_rss_mb": max(x["peak_rss_mb"] for x in runs),
                        "bleu": last["bleu"], "bleu_mean": last["bleu_mean"], "bleu_pooled": last["bleu_pooled"],
                        "wer": last.get("wer"), "audio_s": last["audio_s"], "clips": len(last["hyps"])})
    (out / "speed.json").write_text(json.dumps({"meta": meta, "systems": summary}, indent=1, ensure_ascii=False))
    lines = [f"{meta['cpu']} ({meta['cpu_kind']}, {meta['cores']} cores), {meta['started']} to {meta['finished']}",
             f"`{meta['command']}`", "",
             "| system | weights | beams | threads | RTF (median; each round) | CPU s per audio s | load avg before | "
             "load s | peak RSS MB | BLEU " + " / ".join(summary[0]["bleu"]) + " | mean | pooled | first-pass WER % |"
             if summary else "",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in summary:
        cpu_rtf = f"{s['cpu_rtf']:.3f}" if s.get("cpu_rtf") is not None else "-"
        lines.append(f"| {s['system']} | {s['weights']} | {s['beams']} | {s['threads']} | {s['rtf_median']:.3f} "
                     f"({', '.join(f'{x:.3f}' for x in s['rtfs'])}) | {cpu_rtf} | {' '.join(s['load_avg'] or [])} | "
                     f"{s['load_s']} | {s['peak_rss_mb']} | "
                     f"{' / '.join(str(v) for v in s['bleu'].values())} | {s['bleu_mean']} | {s['bleu_pooled']} | "
                     f"{s['wer'] if s['wer'] is not None else '-'} |")
    (out / "speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if summary:
        plot(summary, out / "frontier.png", f"{meta['cpu']} ({meta['cpu_kind']}), {meta['started'][:10]}")


def plot(summary: list[dict], path: Path, title: str) -> None:
    """RTF against mean BLEU, each system a labelled point (lower right is better)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cpu = all(s.get("cpu_rtf") is not None for s in summary)  # on shared cores: CPU time, not wall time
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for s in summary:
        color = {"llast": "tab:blue", "fw": "tab:orange", "cascade": "tab:green"}[s["system"].split(":")[0]]
        x = s["cpu_rtf"] if cpu else s["rtf_median"]
        ax.scatter(x, s["bleu_mean"], color=color)
        ax.annotate(s["system"], (x, s["bleu_mean"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("CPU seconds per audio second (all threads; lower is faster)" if cpu
                  else "real-time factor (decode s / audio s; lower is faster)")
    ax.set_ylabel("BLEU (mean over directions)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_worker":
        worker(sys.argv[2], sys.argv[5:], int(sys.argv[3]), sys.argv[4])
    else:
        main()

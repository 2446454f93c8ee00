"""Training through each Accelerate engine on a CUDA machine: DDP, FSDP (v2) and DeepSpeed ZeRO-2.

For each engine (one process per GPU found) and precision, on the tiny random models of the test suite:
  A  `llast train` for 10 optimizer steps (batches of 5, accumulation 3: windows cut at epoch ends),
     a checkpoint every 3 steps;
  B  `llast train --resume A/checkpoint-0000006` into a new folder (mid-epoch of the second epoch):
     it must log A's losses for steps 7-10 and end with A's weights;
  then `llast.load_model(A/final)` must load strictly and translate a clip.
The fp32 runs of the three engines must also agree with each other (same data, same initialisation).

    python bench/dist_check.py --out DIR      # writes DIR/dist_check.json and DIR/dist_check.log
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
sys.path.insert(0, str(ROOT / "tests"))

ENGINES = {
    "ddp": ["--config_file", str(ROOT / "configs/accelerate/ddp.yaml")],
    "fsdp": ["--config_file", str(ROOT / "configs/accelerate/fsdp.yaml")],
    "deepspeed": ["--config_file", str(ROOT / "configs/accelerate/deepspeed_zero2.yaml")],
}
RUN = ["data.batch_size=5", "train.grad_accum=3", "train.max_steps=10", "train.save_every=3", "train.keep_last=0"]


def losses(out: Path) -> dict[int, float]:
    recs = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines() if x.strip()]
    return {r["step"]: r["loss"] for r in recs if "loss" in r}


def weights(ckpt: Path) -> dict:
    from safetensors.torch import load_file

    out = {f"adaptor.{k}": v.float() for k, v in load_file(str(ckpt / "adaptor.safetensors")).items()}
    for part in ("encoder_lora", "llm_lora"):
        f = ckpt / part / "adapter_model.safetensors"
        if f.is_file():
            out.update({f"{part}.{k}": v.float() for k, v in load_file(str(f)).items()})
    return out


def max_diff(a: dict, b: dict) -> float:
    if a.keys() != b.keys():
        return float("inf")
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--engines", default="ddp,fsdp,deepspeed")
    ap.add_argument("--precisions", default="no,bf16")
    args = ap.parse_args()
    import torch

    import tiny

    args.out.mkdir(parents=True, exist_ok=True)
    work = Path("/tmp/llast-dist-check")
    work.mkdir(parents=True, exist_ok=True)
    w, l = tiny.write_whisper(work / "whisper"), tiny.write_llm(work / "llama", "llama")
    corpus = tiny.write_corpus(work / "corpus")
    nproc = max(1, torch.cuda.device_count())
    env = dict(os.environ, PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
    log = open(args.out / "dist_check.log", "a")
    report = {"gpus": nproc, "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
              "torch": torch.__version__, "runs": {}}

    def launch(engine: str, precision: str, yaml_path: Path, *extra: str) -> tuple[int, float]:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", *ENGINES[engine], "--num_processes", str(nproc),
               "--mixed_precision", precision, "-m", "llast.cli", "train", str(yaml_path), *RUN, *extra]
        t0 = time.time()
        log.write(f"\n$ {' '.join(cmd)}\n")
        log.flush()
        r = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=300)
        return r.returncode, time.time() - t0

    for precision in args.precisions.split(","):
        for engine in args.engines.split(","):
            key = f"{engine}-{precision}"
            res: dict = {}
            report["runs"][key] = res
            try:
                a, b = work / f"{key}-A", work / f"{key}-B"
                ya = tiny.write_train_yaml(work / f"{key}-A.yaml", w, l, corpus, a)
                yb = tiny.write_train_yaml(work / f"{key}-B.yaml", w, l, corpus, b)
                rc, dt = launch(engine, precision, ya, "--resume", "no")
                res.update(rc_A=rc, seconds_A=round(dt, 1))
                if rc != 0:
                    continue
                la = losses(a)
                res["losses_A"] = la
                rc, dt = launch(engine, precision, yb, "--resume", str(a / "checkpoint-0000006"))
                res.update(rc_B=rc, seconds_B=round(dt, 1))
                if rc != 0:
                    continue
                lb = losses(b)
                res["losses_B"] = lb
                res["resume_max_loss_diff"] = max(abs(lb[s] - la[s]) for s in range(7, 11))
                res["resume_max_weight_diff"] = max_diff(weights(a / "final"), weights(b / "final"))
                res["engine_dir_in_checkpoint"] = (a / "checkpoint-0000006" / "engine").is_dir()
                from llast.decode import load_model

                tr = load_model(a / "final", dtype="float32")
                res["translation"] = tr.translate(tiny.clip(1.0), src="fr", tgt="en", num_beams=2)
                res["load_model"] = "ok"
            except Exception as e:  # noqa: BLE001 - one engine's failure must not hide the others' results
                res["error"] = f"{type(e).__name__}: {e}"
            finally:
                print(key, {k: v for k, v in res.items() if not k.startswith("losses")}, flush=True)
                (args.out / "dist_check.json").write_text(json.dumps(report, indent=2))
    ref = report["runs"].get("ddp-no", {}).get("losses_A")
    if ref:
        for key, res in report["runs"].items():
            if key.endswith("-no") and res.get("losses_A"):
                res["max_loss_diff_vs_ddp"] = max(abs(res["losses_A"][s] - ref[s]) for s in ref)
    (args.out / "dist_check.json").write_text(json.dumps(report, indent=2))
    print(json.dumps({k: {x: v.get(x) for x in ("rc_A", "rc_B", "resume_max_loss_diff", "resume_max_weight_diff",
                                                 "max_loss_diff_vs_ddp", "error")} for k, v in report["runs"].items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

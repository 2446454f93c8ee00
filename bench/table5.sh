#!/usr/bin/env bash
# The paper's Table 5 at llast-mini scale: which parts to train, at equal budgets.
#   adaptor  the adaptor only (frozen Whisper base, frozen Qwen)
#   slora    adaptor + S-LoRA (LoRA on the Whisper encoder)
#   llora    adaptor + L-LoRA (LoRA on the LLM)
#   dual     adaptor + S-LoRA + L-LoRA (LLaST's default)
# Every arm is configs/recipes/table5/chars-lm.yaml (stage 2 from the letter CTC stage runs/mini-chars/final, built by
# `llast train configs/recipes/llast-mini/1-chars.yaml`), the same data order, the same 330-step cosine schedule, stopped at
# step STEPS (train.stop_at) where it logs its dev loss and dev BLEU (48 dev clips, unseen voices and
# sentences). An arm whose log already has that record is not run again (resume: run this script again).
# About 12-16 s per step on a 2-core CPU: STEPS=75 is about 20 min per arm.
#   bash bench/table5.sh [STEPS] [ARMS...]     e.g. bash bench/table5.sh 75 adaptor slora
set -euo pipefail
cd "$(dirname "$0")/.."
LLAST=.venv/bin/llast
PY=.venv/bin/python
STEPS=${1:-75}
shift || true
ARMS=${*:-adaptor slora llora dual}
OUT=${TABLE5_DIR:-runs/table5}
SLORA="model.encoder.lora.enabled=true model.encoder.lora.r=32 model.encoder.lora.alpha=64 model.encoder.lora.dropout=0.0 data.feature_cache=null"
declare -A OPTS=(
  [adaptor]="model.llm.lora.enabled=false"
  [slora]="model.llm.lora.enabled=false $SLORA"
  [llora]=""
  [dual]="$SLORA"
)
export PYTHONWARNINGS=ignore TRANSFORMERS_VERBOSITY=error
for arm in $ARMS; do
  [ -n "${OPTS[$arm]+x}" ] || { echo "unknown arm '$arm' (adaptor, slora, llora, dual)" >&2; exit 2; }
  if [ -f "$OUT/$arm/log.jsonl" ] && grep -q "\"step\": $STEPS, \"dev_loss\"" "$OUT/$arm/log.jsonl"; then
    echo "$arm: step $STEPS already logged in $OUT/$arm"; continue
  fi
  echo "=== $arm ($(date +%H:%M:%S))"
  # shellcheck disable=SC2086
  $LLAST train configs/recipes/table5/chars-lm.yaml train.out_dir="$OUT/$arm" train.stop_at="$STEPS" train.eval_every="$STEPS" \
    train.save_every="$STEPS" ${OPTS[$arm]}
done
$PY - "$OUT" "$STEPS" <<'PY'
import json, sys
from pathlib import Path
out, steps = Path(sys.argv[1]), int(sys.argv[2])
print(f"\nTable 5 at llast-mini scale: step {steps} of the same schedule, 48 dev clips\n")
print("| trained | dev loss | dev BLEU | train loss, last 25 steps | s/step |\n|---|---|---|---|---|")
for arm in ("adaptor", "slora", "llora", "dual"):
    log = out / arm / "log.jsonl"
    if not log.is_file():
        continue
    recs = [json.loads(l) for l in log.read_text().splitlines() if l.strip()]
    dev = [r for r in recs if r.get("step") == steps and "dev_loss" in r]
    train = {r["step"]: r for r in recs if "loss" in r and r["step"] <= steps}
    if not dev or not train:
        continue
    last = [train[s]["loss"] for s in sorted(train) if s > steps - 25]
    rate = train[max(train)]["elapsed_s"] / max(train)  # wall time per step of the run as it went
    print(f"| {arm} | {dev[-1]['dev_loss']:.3f} | {dev[-1].get('dev_bleu_en', float('nan')):.2f} | "
          f"{sum(last) / len(last):.3f} | {rate:.1f} |")
PY

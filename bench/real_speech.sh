#!/usr/bin/env bash
# Every number of docs/real_speech.md: Whisper base (transcribe, translate), the cascade (Whisper base
# transcripts -> Qwen2.5-Coder-0.5B-Instruct) and llast-mini as shipped (transcribe = first pass,
# translate = two passes) on the real-speech dev set, then the S-LoRA on/off probe.
# Usage: bash bench/real_speech.sh DATA_DIR OUT_DIR   (DATA_DIR from `llast data real --out DATA_DIR ...`)
set -euo pipefail
DATA=${1:?DATA_DIR}; OUT=${2:?OUT_DIR}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
PY=${PYTHON:-python}
D="--num-beams 4 --max-new-tokens 64 --batch-size 8"
mkdir -p "$OUT"
for set in real words; do
  M="$DATA/$set.jsonl"
  [ -s "$M" ] || continue
  $PY -m llast.cli evaluate --baseline whisper --model whisper-base --task transcribe $D --data "$M" --out "$OUT/$set-whisper-transcribe"
  $PY -m llast.cli evaluate --baseline whisper --model whisper-base --task translate $D --data "$M" --out "$OUT/$set-whisper-translate"
  $PY -m llast.cli evaluate --baseline cascade --transcripts "$OUT/$set-whisper-transcribe" --llm qwen2.5-coder-0.5b-instruct $D --data "$M" --out "$OUT/$set-cascade"
  $PY -m llast.cli evaluate --model llast-mini --task transcribe $D --data "$M" --out "$OUT/$set-mini-transcribe"
  $PY -m llast.cli evaluate --model llast-mini $D --data "$M" --out "$OUT/$set-mini-translate"
done
$PY bench/slora_probe.py --model llast-mini --data "$DATA/real.jsonl" "$DATA/words.jsonl" --out "$OUT/slora_probe.json"

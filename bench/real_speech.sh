#!/usr/bin/env bash
# Every number of docs/real_speech.md: Whisper base (transcribe, translate), the cascade (Whisper base's
# transcripts -> Qwen2.5-Coder-0.5B-Instruct) and llast-mini as shipped (transcribe = its first pass,
# translate = two passes) on the real-speech dev set, then the S-LoRA on/off probe (bench/slora_probe.py).
# WER/CER on every clip (real.jsonl, words.jsonl); BLEU/chrF on the clips with an English translation
# (real.translate.jsonl, words.jsonl).
# Usage: bash bench/real_speech.sh DATA_DIR OUT_DIR   (DATA_DIR from `llast data real --out DATA_DIR ...`);
# then python bench/real_speech_table.py OUT_DIR DATA_DIR prints the tables.
# The Whisper/cascade commands and the llast-mini commands are independent: they may run side by side.
set -euo pipefail
DATA=${1:?DATA_DIR}; O=${2:?OUT_DIR}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
PY=${PYTHON:-python}
E="$PY -m llast.cli evaluate"
D="--num-beams 4 --max-new-tokens 64 --batch-size 8"
mkdir -p "$O"
# Whisper base and the cascade
$E --baseline whisper --model whisper-base --task transcribe $D --data "$DATA/real.jsonl" --out "$O/real-whisper-transcribe"
$E --baseline whisper --model whisper-base --task translate $D --data "$DATA/real.translate.jsonl" --out "$O/real-whisper-translate"
$E --baseline cascade --transcripts "$O/real-whisper-transcribe" --llm qwen2.5-coder-0.5b-instruct $D \
   --data "$DATA/real.translate.jsonl" --out "$O/real-cascade"
$E --baseline whisper --model whisper-base --task transcribe $D --data "$DATA/words.jsonl" --out "$O/words-whisper-transcribe"
$E --baseline whisper --model whisper-base --task translate $D --data "$DATA/words.jsonl" --out "$O/words-whisper-translate"
$E --baseline cascade --transcripts "$O/words-whisper-transcribe" --llm qwen2.5-coder-0.5b-instruct $D \
   --data "$DATA/words.jsonl" --out "$O/words-cascade"
# llast-mini as shipped, and its first pass with the encoder's S-LoRA switched off
$E --model llast-mini --task transcribe $D --data "$DATA/real.jsonl" --out "$O/real-mini-transcribe"
$E --model llast-mini $D --data "$DATA/real.translate.jsonl" --out "$O/real-mini-translate"
$PY bench/slora_probe.py --model llast-mini --data "$DATA/real.jsonl" --on "$O/real-mini-transcribe" --out "$O/slora_probe_real.json"
$E --model llast-mini --task transcribe $D --data "$DATA/words.jsonl" --out "$O/words-mini-transcribe"
$E --model llast-mini $D --data "$DATA/words.jsonl" --out "$O/words-mini-translate"
$PY bench/slora_probe.py --model llast-mini --data "$DATA/words.jsonl" --on "$O/words-mini-transcribe" --out "$O/slora_probe_words.json"

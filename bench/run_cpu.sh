#!/usr/bin/env bash
# make bench: LLaST-mini, this project's defaults vs the paper-faithful settings, on this machine's CPU.
# Sized for a 2-core CPU: about 25 min, plus the issue #29 side-by-side part (not yet timed on a quiet machine). Extra arguments go to bench/bench.py (e.g. --bleu-minutes 3).
# Writes bench/results/cpu.json, bench/results/cpu.md (the table) and bench/results/throughput_vs_batch.png.
set -euo pipefail
cd "$(dirname "$0")/.."
LLAST=.venv/bin/llast
PY=.venv/bin/python
export PYTHONWARNINGS=ignore TRANSFORMERS_VERBOSITY=error
$LLAST models prepare whisper-base smollm2-135m-instruct >/dev/null
if [ ! -f data/synth/covost_v2.fr_en.dev.tsv ]; then
  $LLAST data synth --out data/synth --directions de-en,fr-en --train 300 --dev 40 --test 40
fi
echo "load average before the run: $(cut -d' ' -f1-3 /proc/loadavg) (other jobs on these cores skew every figure)"
$PY bench/bench.py --device cpu --out bench/results/cpu.json \
  --warmup-steps 1 --faithful-steps 3 --defaults-steps 12 \
  --clips 16 --new-tokens 24 --num-beams 5 --faithful-batches 1 --sweep 1,2,4,8,16 --infer-batch 16 \
  --whisper-batches 1,16 --released-clips 2 \
  --bleu-minutes 6 --bleu-clips 40 --bleu-batch 8 --bleu-max-new-tokens 64 "$@"
# Issue #29: llast-mini at its defaults beside faster-whisper base int8 and the cascade baseline, the same
# 40 synthetic test clips, one process each, interleaved; writes bench/results/speed/{speed.json,speed.md,frontier.png}.
$LLAST models prepare llast-mini >/dev/null
if [ ! -f data/synth4/covost_v2.it_en.test.tsv ]; then
  $LLAST data synth --out data/synth4 --directions de-en,fr-en,es-en,it-en --train 2000 --dev 40 --test 100 --splits test
fi
$PY bench/speed.py --data data/synth4/covost_v2.{de,fr,es,it}_en.test.tsv --limit 10 --rounds 2 \
  --systems llast:auto:4,fw:int8:5,cascade:float32:1 --out bench/results/speed

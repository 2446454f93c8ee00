#!/usr/bin/env bash
# The GPU variant of `make bench` (one CUDA GPU): the same measurements in bf16 (autocast for training,
# bf16 weights for inference), plus model FLOP utilisation against the GPU's measured bf16 matmul peak.
# Sized to take about 10 min on one H100. Extra arguments go to bench/bench.py.
# Writes bench/results/gpu.json, bench/results/gpu.md and bench/results/gpu_throughput_vs_batch.png.
set -euo pipefail
cd "$(dirname "$0")/.."
LLAST=.venv/bin/llast
PY=.venv/bin/python
export PYTHONWARNINGS=ignore TRANSFORMERS_VERBOSITY=error
$PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'run_gpu.sh: no CUDA GPU visible')"
$LLAST models prepare whisper-base smollm2-135m-instruct >/dev/null
if [ ! -f data/synth/covost_v2.fr_en.dev.tsv ]; then
  $LLAST data synth --out data/synth --directions de-en,fr-en --train 300 --dev 40 --test 40
fi
exec $PY bench/bench.py --device cuda --out bench/results/gpu.json \
  --warmup-steps 3 --faithful-steps 20 --defaults-steps 40 \
  --clips 80 --new-tokens 24 --num-beams 5 --faithful-batches 1 --sweep 1,2,4,8,16,32,64 --infer-batch 16 \
  --whisper-batches 1,16,64 --released-clips 16 \
  --bleu-minutes 2 --bleu-clips 80 --bleu-batch 16 --bleu-max-new-tokens 64 "$@"

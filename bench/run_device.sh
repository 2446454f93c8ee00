#!/usr/bin/env bash
# The GPU checks of issues #5 and #8 as run on a lent GPU machine (the `device` tool), which has its own
# python3 with CUDA PyTorch but no internet and none of the real weights:
#   1. bench/dist_check.py: `llast train` through DDP, FSDP and DeepSpeed ZeRO-2, resumed mid-run;
#   2. bench/bench.py --device cuda: training and beam-5 inference, faithful vs defaults, with MFU,
#      on randomly initialised copies of whisper-base + smollm2-135m-instruct (bench/random_models.py;
#      speed does not depend on the weight values: the bench fixes the output length).
# Needs, in the repository root: .whl/ (wheels of the pinned pure-Python deps + deepspeed) and .gpu/
# (python bench/pack_for_device.py). Results go to $OUT (default bench/results/device).
#   GIT_COMMIT=$(git rev-parse --short HEAD) bash bench/run_device.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results/device}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore TRANSFORMERS_VERBOSITY=error \
  HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
{ date -u; echo "commit ${GIT_COMMIT:-?}"; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv;
  python3 -c "import torch, transformers, peft, accelerate, deepspeed; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'accelerate', accelerate.__version__, 'deepspeed', deepspeed.__version__)"; } 2>&1 | tee "$OUT/machine.txt"
mkdir -p data && ln -sfn ../.gpu/synth data/synth
python3 bench/random_models.py .gpu/cfg/whisper-base /tmp/rand/whisper-base >/dev/null 2>&1
python3 bench/random_models.py .gpu/cfg/smollm2-135m-instruct /tmp/rand/smollm2-135m-instruct >/dev/null 2>&1
echo "== 1. engines ($(date -u +%T))"
timeout "${DIST_TIMEOUT:-210}" python3 bench/dist_check.py --out "$OUT" > "$OUT/dist_check.stdout" 2>&1
echo "rc $?"; tail -45 "$OUT/dist_check.stdout"
echo "== 2. bench ($(date -u +%T))"
timeout "${BENCH_TIMEOUT:-300}" python3 bench/bench.py --device cuda --out "$OUT/gpu.json" --parts train,infer \
  --set model.encoder.name=/tmp/rand/whisper-base model.llm.name=/tmp/rand/smollm2-135m-instruct \
  --whisper-model /tmp/rand/whisper-base \
  --warmup-steps 3 --faithful-steps 15 --defaults-steps 30 \
  --clips 40 --new-tokens 24 --num-beams 5 --faithful-batches 1 --sweep 1,4,16,40 --infer-batch 40 \
  --whisper-batches 1,40 --released-clips 8 > "$OUT/bench.log" 2>&1
echo "rc $?"; tail -40 "$OUT/bench.log"
echo "== done ($(date -u +%T))"

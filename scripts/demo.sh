#!/usr/bin/env bash
# make demo: the whole job end to end on the bundled real weights and the offline corpus (CPU, <= 20 min).
# Every step reuses what an earlier run already prepared.
#   - the shipped llast-mini (Whisper base + Qwen2.5-Coder-0.5B, trained with configs/recipes/llast-mini/1-chars.yaml,
#     2-chars-slora.yaml ... 6-mix.yaml in configs/recipes/llast-mini/; docs/lab/quality.md) on held-out test clips: sentences
#     AND voices never trained on; it translates in two passes (decode.two_pass: it transcribes, then Qwen
#     with its text adapter, `llast text-lora`, translates the transcript), its default (greedy here);
#   - a short LLaST-mini training run of its own (configs/mini.yaml, SmolLM2-135M, a few minutes);
#   - beside them: the untrained model, Whisper base's own translate task, the cascade (Whisper base
#     transcribes, Qwen translates the transcript) and Qwen's text ceiling (it translates the gold source);
#   - then a few translations with their references.
set -euo pipefail
cd "$(dirname "$0")/.."
LLAST=.venv/bin/llast
PY=.venv/bin/python
RUN=${DEMO_RUN:-runs/demo}
DATA=data/synth  # the corpus configs/mini.yaml names
TEST_DATA=data/synth4  # the corpus llast-mini was trained on (configs/recipes/llast-mini/3-dual.yaml); only its test split here
TRAIN_MINUTES=${DEMO_TRAIN_MINUTES:-5}
TEST_LIMIT=${DEMO_TEST_LIMIT:-20}
# The trained llast-mini: the shipped one (`make model` rebuilds it), or a checkpoint folder of your own.
MINI=${DEMO_MINI:-llast-mini}
DIRS="de_en fr_en es_en it_en"
export PYTHONWARNINGS=ignore TRANSFORMERS_VERBOSITY=error
T0=$(date +%s)
step() { echo; echo "=== [$(( $(date +%s) - T0 ))s] $*"; }

step "1/5 bundled models: Whisper base, SmolLM2-135M-Instruct, Qwen2.5-Coder-0.5B-Instruct (llast-mini's LLM)"
$LLAST models prepare whisper-base smollm2-135m-instruct llast-mini

step "2/5 offline corpus: espeak-ng speech in CoVoST-2 format (test voices and sentences never in training)"
# The short run's corpus (configs/mini.yaml) ...
$LLAST data synth --out "$DATA" --directions de-en,fr-en --train 300 --dev 40 --test 40
# ... and llast-mini's held-out test split, rebuilt alone and exactly (`make model` builds the whole corpus).
$LLAST data synth --out "$TEST_DATA" --directions de-en,fr-en,es-en,it-en --train 2000 --dev 40 --test 100 --splits test

step "3/5 a short LLaST-mini run of its own (SmolLM2, dual LoRA, ASR-augmented) for ${TRAIN_MINUTES} min"
if [ -f "$RUN/final/llast.json" ]; then
  echo "$RUN/final exists: training already done (rm -r $RUN to train again)"
else
  $LLAST train configs/mini.yaml train.out_dir="$RUN" train.max_minutes="$TRAIN_MINUTES" train.epochs=3
fi
$PY scripts/plot_log.py "$RUN/log.jsonl" "$RUN/loss.png" "LLaST-mini (SmolLM2) training loss, make demo"

step "4/5 evaluate on the held-out test split (${TEST_LIMIT} clips per direction)"
TEST=""; for d in $DIRS; do TEST="$TEST $TEST_DATA/covost_v2.$d.test.tsv"; done
# Same decoder settings for every system: greedy (beam 5 did not fit the 20-minute budget on a 2-core CPU;
# DEMO_NUM_BEAMS=5 to use it), at most 64 new tokens (the references are <= 25 words). docs/lab/quality.md has
# the same systems on the whole test split.
BEAMS=${DEMO_NUM_BEAMS:-1}
EVAL_OPTS="--data $TEST --limit $TEST_LIMIT --num-beams $BEAMS --max-new-tokens 64 --batch-size 16"
SYSTEMS="llast-mini demo-run untrained whisper cascade text"
if [ "$MINI" = llast-mini ] && [ ! -f src/llast/shipped/llast-mini/llast.json ]; then
  echo "llast-mini is not shipped in this checkout (make model builds it; DEMO_MINI=DIR uses a checkpoint): skipping its rows"
  SYSTEMS="demo-run untrained whisper cascade text"
fi
declare -A CMD=(
  [llast-mini]="--model $MINI"
  [demo-run]="--model $RUN/final"
  [untrained]="--model configs/recipes/llast-mini/3-dual.yaml --max-new-tokens 24 --no-two-pass"
  [whisper]="--baseline whisper --model whisper-base"
  [cascade]="--baseline cascade --asr whisper-base --llm qwen2.5-coder-0.5b-instruct"
  [text]="--baseline text --llm qwen2.5-coder-0.5b-instruct"
)
for sys in $SYSTEMS; do
  out="$RUN/eval-$sys"
  if [ -f "$out/score.json" ]; then echo "$out/score.json exists"; continue; fi
  echo "--- $sys"
  # shellcheck disable=SC2086
  $LLAST evaluate $EVAL_OPTS ${CMD[$sys]} --out "$out" >/dev/null
done
$PY - "$RUN" "$MINI" <<'PY'
import json, os, sys
run, mini = sys.argv[1], sys.argv[2]
names = {
    "untrained": "llast-mini recipe, untrained (one pass)",
    "demo-run": "LLaST-mini (SmolLM2), this demo's short run",
    "llast-mini": "llast-mini (shipped; two passes)" if mini == "llast-mini" else f"llast-mini candidate {mini}",
    "whisper": "Whisper base, own translate task",
    "cascade": "cascade: Whisper base -> Qwen2.5-Coder-0.5B",
    "text": "text ceiling: Qwen2.5-Coder-0.5B on gold source",
}
rows = {k: json.load(open(f"{run}/eval-{k}/score.json"))["sets"] for k in names if os.path.isfile(f"{run}/eval-{k}/score.json")}
names = {k: v for k, v in names.items() if k in rows}
sets = list(rows["whisper"])
short = [s.split(".")[1] if "." in s else s for s in sets]
print(f"\nBLEU (chrF) [share of distinct outputs] on the held-out test sets\n{'system':<50}" + "".join(f"{s:>20}" for s in sets))
for k, label in names.items():
    cells = [f"{r['bleu']:.1f} ({r['chrf']:.0f}) [{100 * r.get('distinct', 0):.0f}%]" for r in (rows[k][s] for s in sets)]
    print(f"{label:<50}" + "".join(f"{c:>20}" for c in cells))
print("\n" + rows["whisper"][sets[0]]["bleu_signature"])
PY

# The examples come from llast-mini, or from this demo's own run when llast-mini is not shipped here.
case " $SYSTEMS " in *" llast-mini "*) EX_MODEL=$MINI ;; *) EX_MODEL=$RUN/final ;; esac
step "5/5 $EX_MODEL translates a few test clips it never heard (new sentences, new voices)"
for d in de_en fr_en; do
  src=${d%_en}
  CLIPS=$(awk -F'\t' -v dir="$TEST_DATA/$src/clips_16k" 'NR>1 && NR<=3 {print dir "/" $1}' "$TEST_DATA/covost_v2.$d.test.tsv")
  # shellcheck disable=SC2086
  $LLAST translate --model "$EX_MODEL" --src "$src" --tgt en --num-beams "$BEAMS" $CLIPS
  awk -F'\t' 'NR>1 && NR<=3 {print "  reference: " $3}' "$TEST_DATA/covost_v2.$d.test.tsv"
done

step "done in $(( $(date +%s) - T0 ))s. Loss curve: $RUN/loss.png; scores: $RUN/eval-*/score.json"

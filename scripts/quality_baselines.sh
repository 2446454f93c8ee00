#!/usr/bin/env bash
# The baseline rows of docs/quality_baselines.md: for every direction of the synthetic corpus, Whisper's own
# translate task, the cascade (Whisper transcribes, an instruct LLM translates) and the LLM's text ceiling.
# Usage: scripts/quality_baselines.sh [CORPUS_DIR] [OUT_DIR]
# Settings by environment: LLAST (the command), EVAL_OPTS, ASR, LLMS, DIRECTIONS (defaults below).
# A system whose OUT_DIR/<direction>/<system>/score.json exists is not run again (delete it to redo).
set -euo pipefail
CORPUS=${1:-data/synth}
OUT=${2:-runs/baselines}
LLAST=${LLAST:-llast}
EVAL_OPTS=${EVAL_OPTS:---num-beams 1 --max-new-tokens 64}
ASR=${ASR:-whisper-base}
LLMS=${LLMS:-qwen2.5-coder-0.5b-instruct smollm2-135m-instruct}
DIRECTIONS=${DIRECTIONS:-de_en fr_en es_en it_en}

run() {  # run OUT_SUBDIR evaluate-options...
  local out=$OUT/$1; shift
  [ -f "$out/score.json" ] || $LLAST evaluate --out "$out" $EVAL_OPTS "$@"
}
for d in $DIRECTIONS; do
  tsv=$CORPUS/covost_v2.$d.test.tsv
  run "$d/whisper" --baseline whisper --model "$ASR" --data "$tsv"
  first=""
  for llm in $LLMS; do
    if [ -z "$first" ]; then  # the first cascade runs Whisper; the others translate its transcripts
      run "$d/cascade-$llm" --baseline cascade --asr "$ASR" --llm "$llm" --data "$tsv"
      first=$OUT/$d/cascade-$llm/asr
    else
      run "$d/cascade-$llm" --baseline cascade --transcripts "$first" --llm "$llm" --data "$tsv"
    fi
    run "$d/text-$llm" --baseline text --llm "$llm" --data "$tsv"
  done
done
python3 - "$OUT" <<'PY'
import json, pathlib, sys
rows = {}
for f in sorted(pathlib.Path(sys.argv[1]).glob("*/*/score.json")):
    (name, r), = json.loads(f.read_text())["sets"].items()
    cell = f"{r['bleu']:.1f} / {r['chrf']:.1f}" + (f" (ASR WER {100 * r['asr_wer']:.1f})" if r.get("asr_wer") is not None else "")
    rows.setdefault(f.parent.name, {})[name.split(".")[0]] = cell
dirs = sorted({d for r in rows.values() for d in r})
print("| system | " + " | ".join(f"{d} BLEU / chrF" for d in dirs) + " |")
print("|---|" + "---|" * len(dirs))
for system, r in rows.items():
    print(f"| {system} | " + " | ".join(r.get(d, "-") for d in dirs) + " |")
PY

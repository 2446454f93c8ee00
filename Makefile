# The two commands: `make demo` and `make test`. Both do all set-up first.
SHELL := /bin/bash
VENV := .venv
LLAST := $(VENV)/bin/llast
PY := $(VENV)/bin/python
# Models the real-weight tests and the demo use (prepared once into $$LLAST_HOME, default ~/.cache/llast).
TEST_MODELS := whisper-base whisper-tiny.en smollm2-135m-instruct gemma3-270m qwen2.5-coder-0.5b-instruct
DEMO_MODELS := whisper-base qwen2.5-coder-0.5b-instruct llast-mini

.PHONY: setup models test test-fast demo bench model clean

$(VENV)/.setup-stamp: pyproject.toml constraints.txt scripts/setup.sh
	bash scripts/setup.sh
	touch $@

setup: $(VENV)/.setup-stamp

test: setup
	$(LLAST) models prepare $(TEST_MODELS)
	$(PY) -m pytest -q -ra

test-fast: setup
	$(PY) -m pytest -q -m "not real"

demo: setup
	bash scripts/demo.sh

bench: setup
	bash bench/run_cpu.sh

# Rebuild the shipped llast-mini from scratch (about 6 h on a 2-core CPU; resumable: run it again after a stop).
# Stage 1: the adaptor learns to spell letters (CTC, configs/recipes/llast-mini/1-chars.yaml); 1b: the same with S-LoRA on
# the encoder (configs/recipes/llast-mini/2-chars-slora.yaml); 2: the LLaST loss with dual LoRA (configs/recipes/llast-mini/3-dual.yaml);
# 2b: stage 2 goes on over twice the sentences (data/synth8, none of data/synth4's dev or test sentences;
# configs/recipes/llast-mini/4-more.yaml); 2c: on 2,700 new pairs per direction (data/synth12; configs/recipes/llast-mini/5-fresh.yaml);
# 2d: on 4,000 new German pairs (data/synth16) with data/synth12 and data/synth8 again (configs/recipes/llast-mini/6-mix.yaml);
# 3: a text adapter for its two-pass decoding's text pass, on data/synth8's sentence pairs (llast text-lora).
# data/synth16dev: 200 German dev clips (dev voices, sentences used nowhere else) that chose stage 2d.
SYNTH4_HELD_OUT := $(foreach l,de fr es it,$(foreach s,dev test,data/synth4/covost_v2.$(l)_en.$(s).tsv))
SYNTH8_TRAIN := $(foreach l,de fr es it,data/synth8/covost_v2.$(l)_en.train.tsv)
DE_USED := $(foreach s,train dev test,data/synth4/covost_v2.de_en.$(s).tsv) data/synth8/covost_v2.de_en.train.tsv \
  data/synth12/covost_v2.de_en.train.tsv
model: setup
	$(LLAST) models prepare whisper-base qwen2.5-coder-0.5b-instruct
	$(LLAST) data synth --out data/synth4 --directions de-en,fr-en,es-en,it-en --train 2000 --dev 40 --test 100
	$(LLAST) data synth --out data/synth8 --directions de-en,fr-en,es-en,it-en --train 4000 --dev 0 --test 0 --splits train \
	  --exclude $(SYNTH4_HELD_OUT)
	$(LLAST) train configs/recipes/llast-mini/1-chars.yaml
	$(LLAST) train configs/recipes/llast-mini/2-chars-slora.yaml
	$(LLAST) train configs/recipes/llast-mini/3-dual.yaml
	$(LLAST) data synth --out data/synth12 --directions de-en,fr-en,es-en,it-en --train 2700 --dev 0 --test 0 --splits train \
	  --seed 12 --exclude $(SYNTH4_HELD_OUT) $(SYNTH8_TRAIN)
	$(LLAST) data synth --out data/synth16dev --directions de-en --train 0 --dev 200 --test 0 --splits dev --seed 16 \
	  --exclude $(DE_USED)
	$(LLAST) data synth --out data/synth16 --directions de-en --train 4000 --dev 0 --test 0 --splits train --seed 16 \
	  --exclude $(DE_USED) data/synth16dev/covost_v2.de_en.dev.tsv
	$(LLAST) train configs/recipes/llast-mini/4-more.yaml
	$(LLAST) train configs/recipes/llast-mini/5-fresh.yaml
	$(LLAST) train configs/recipes/llast-mini/6-mix.yaml
	$(LLAST) text-lora --model runs/mini-chars-mix/final --out runs/mini-chars-text --steps 360 --set decode.num_beams=4 --set decode.max_new_tokens=64 \
	  --data $(SYNTH8_TRAIN)
	$(LLAST) export --ship --model runs/mini-chars-text --out src/llast/shipped/llast-mini

clean:
	rm -rf $(VENV) runs

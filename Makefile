# The two commands: `make demo` and `make test`. Both do all set-up first.
SHELL := /bin/bash
VENV := .venv
LLAST := $(VENV)/bin/llast
PY := $(VENV)/bin/python
# Models the real-weight tests and the demo use (prepared once into $$LLAST_HOME, default ~/.cache/llast).
TEST_MODELS := whisper-base whisper-tiny.en smollm2-135m-instruct gemma3-270m qwen2.5-coder-0.5b-instruct
DEMO_MODELS := whisper-base smollm2-135m-instruct

.PHONY: setup models test test-fast demo bench clean

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

clean:
	rm -rf $(VENV) runs

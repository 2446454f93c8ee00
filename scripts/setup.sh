#!/usr/bin/env bash
# One-shot set-up for a fresh machine: Debian packages, .venv, pinned Python deps.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PKGS="espeak-ng sox trans-de-en fillets-ng-data pocketsphinx-testdata ktuberling-data apertium apertium-eng-spa apertium-fr-es apertium-spa-ita chromium chromium-driver libportaudio2 cmake g++"
missing=""
for p in $APT_PKGS; do
  dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "[setup] installing Debian packages:$missing"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi
# Optional: SVOX Pico (`llast data synth --pico`), in Debian's non-free component. Installed when the apt
# sources have it; otherwise said once (enable non-free, then: apt-get install libttspico-utils).
if ! command -v pico2wave >/dev/null 2>&1; then
  if apt-cache policy libttspico-utils 2>/dev/null | grep -q "Candidate: [0-9]"; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libttspico-utils >/dev/null || true
  else
    echo "[setup] optional: SVOX Pico (llast data synth --pico) is in Debian non-free; enable that component and run: apt-get install libttspico-utils"
  fi
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  "$PYTHON" -m venv .venv
fi
echo "[setup] installing pinned Python dependencies (constraints.txt)"
.venv/bin/python -m pip install -q --upgrade "pip>=24" 2>&1 | grep -v "is ignored" || true
# torch first and alone: the pinned CPU wheel; a range would pull a multi-GB CUDA build.
# llama-cpp-python (--dtype gguf) has no wheel on PyPI: pip builds it from source with cmake and g++ (~6 min on
# 2 cores, once; pip keeps the wheel in its cache), for this machine's CPU (llama.cpp's GGML_NATIVE).
.venv/bin/python -m pip install -q torch==2.13.0 2>&1 | grep -v "is ignored" || true
.venv/bin/python -m pip install -q -c constraints.txt -e ".[test]" 2>&1 | grep -v "is ignored" || true
.venv/bin/python -c "import llast, torch, transformers, peft" || { echo "[setup] install failed" >&2; exit 1; }
# Optional: llama.cpp for --dtype gguf (built from source here; without it llast runs the LLM in PyTorch).
if ! .venv/bin/python -c "import llama_cpp" 2>/dev/null; then
  echo "[setup] building llama-cpp-python (--dtype gguf; a few minutes, once)"
  .venv/bin/python -m pip install -q -c constraints.txt "llama-cpp-python==0.3.36" 2>&1 | grep -v "is ignored" || true
  .venv/bin/python -c "import llama_cpp" 2>/dev/null || echo "[setup] llama-cpp-python could not be built: --dtype gguf is unavailable (llast runs the LLM in PyTorch)" >&2
fi
echo "[setup] done"

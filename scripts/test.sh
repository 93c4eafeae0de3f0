#!/usr/bin/env bash
# Set up .venv with the test extras (and the embedded LLM), then run the whole test suite.
# This is what CI runs (.ci/run) and what the README's second command runs.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh "dev,llm-local"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# Tests start their own local Ray instances; never let them join a cluster from the environment.
unset RAY_ADDRESS
exec .venv/bin/python -m pytest "$@"

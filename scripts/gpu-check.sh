#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: run the packed-training device path and the grid benchmark on it.
# Nothing here has run yet (the project's machines have no GPU): no GPU number is claimed until it has.
#   scripts/gpu-check.sh [extra benchmark args, e.g. --seeds 0 1 2 3 4]
# Prints the test results and the benchmark's docs/measurements.md block (its machine line names the GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "gpu-check: no NVIDIA GPU on this machine (nvidia-smi finds none)" >&2
    exit 1
fi
nvidia-smi -L
scripts/setup.sh dev   # with nvidia-smi present, setup keeps pip's CUDA build of torch
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
py=.venv/bin/python
"$py" -c 'import torch, sys; ok = torch.cuda.is_available(); print("torch", torch.__version__, "CUDA", ok); sys.exit(0 if ok else 1)'
# The device path: packs on CUDA reach the CPU pack's weights (skipped on a CPU-only machine, run here);
# the rest of tests/test_packing.py checks packed against solo training.
"$py" -m pytest -q tests/test_packing.py -rs
# The benchmark with packs (and the matmul peak) on the GPU; the per-cell path stays on the CPU
# until train.fit places models on the device (issue 15's device item). One worker drives the GPU.
"$py" benchmarks/grid.py --device cuda --workers 1 "$@"

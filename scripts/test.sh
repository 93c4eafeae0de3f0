#!/usr/bin/env bash
# Set up .venv with the test extras (and the embedded LLM), then run the whole test suite.
# This is what CI runs (.ci/run) and what the README's second command runs.
set -euo pipefail
cd "$(dirname "$0")/.."
# The `ray up` test brings a cluster-local.yaml cluster up over ssh to a sandboxed sshd on
# 127.0.0.1 (tests/cluster/sshd-sandbox.sh starts and stops it; installing does not start one).
# Without root or apt the test is skipped, and says why.
if ! command -v sshd >/dev/null 2>&1 && [ ! -x /usr/sbin/sshd ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssh-server rsync netcat-openbsd
fi
scripts/setup.sh "dev,llm-local"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# Tests start their own local Ray instances; never let them join a cluster from the environment.
unset RAY_ADDRESS
# The fast suite (`-m "not slow"`: no Ray, nothing on a fixed port) runs on two pytest-xdist
# workers when the machine has two cores: 46.9 s instead of 60.9-76 s here, for ~45% more CPU
# (each worker collects and builds the session fixtures); see docs/measurements.md. Anything with
# slow tests stays in one process: they start Ray clusters sized to the whole machine.
workers=()
fast=0 prev=""
for arg in "$@"; do
    case "$arg" in
        -n|-n*|--numprocesses|--numprocesses=*|-pno:xdist|no:xdist) workers=(); fast=-1; break ;;
    esac
    if { [ "$prev" = "-m" ] && [ "$arg" = "not slow" ]; } || [ "$arg" = "-mnot slow" ]; then fast=1; fi
    prev="$arg"
done
if [ "$fast" = 1 ] && [ "$(nproc)" -ge 2 ]; then
    workers=(-n 2)
fi
exec .venv/bin/python -m pytest "${workers[@]}" "$@"

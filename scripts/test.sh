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
# Two pytest-xdist workers when the machine has two cores (`--dist loadgroup`): the slow tests
# all run on one of them, in order (tests/conftest.py puts them in one group: they start Ray
# clusters sized to the whole machine and share module-scoped ones), while the other takes the
# fast tests; the fast suite alone splits over both. The whole suite: 541 s serially, ~400 s
# this way (docs/measurements.md). `-n 0` or `-p no:xdist` runs everything in this process.
workers=()
if [ "$(nproc)" -ge 2 ]; then workers=(-n 2 --dist loadgroup); fi
for arg in "$@"; do
    case "$arg" in
        -n|-n*|--numprocesses|--numprocesses=*|-pno:xdist|no:xdist) workers=(); break ;;
    esac
done
exec .venv/bin/python -m pytest "${workers[@]}" "$@"

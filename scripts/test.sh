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
# Label Studio for tests/test_labelstudio_live.py, in a venv of its own: its Django pins clash
# with the Ray/torch venv. sentry-sdk 3 makes 1.23.2 crash at start, hence the pin beside it.
scripts/setup-label-studio.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# Tests start their own local Ray instances; never let them join a cluster from the environment.
unset RAY_ADDRESS
# Two pytest-xdist workers when the machine has two cores, each taking whole test files
# (`--dist loadfile`): the slow tests of a file share module-scoped clusters (the per-node
# cluster, the token-authenticated head), which a file split over both workers would start
# twice; different files, slow or fast, run side by side. (`--dist loadgroup` would do nothing
# here: pytest-xdist 3.8 marks a group by rewriting a test's `_nodeid`, which pytest 9.2 no longer
# reads.) The whole suite: 541 s in one process, 382 s this way (docs/measurements.md).
# `-n 0` or `-p no:xdist` runs everything in this process.
workers=()
if [ "$(nproc)" -ge 2 ]; then workers=(-n 2 --dist loadfile); fi
for arg in "$@"; do
    case "$arg" in
        -n|-n*|--numprocesses|--numprocesses=*|-pno:xdist|no:xdist) workers=(); break ;;
    esac
done
exec .venv/bin/python -m pytest "${workers[@]}" "$@"

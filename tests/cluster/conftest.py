"""A real Ray head node with token authentication, started and stopped by these tests alone.

Never `ray stop`: it would stop every Ray process on the machine, other people's included.
The head runs as `ray start --head --block` in its own temp dir, HOME and free ports, so it
neither reads nor writes ~/.ray/auth_token; SIGTERM to that one process stops its children,
and any child still alive after that is killed by its PID.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from headnode import RAY, Head, free_port, stop_by_pid, wait_for_dashboard


@pytest.fixture(scope="module")
def ray_head():
    """One token-authenticated head node (2 CPUs, dashboard on 127.0.0.1) for a test module."""
    root = Path(tempfile.mkdtemp(prefix="rs-head-", dir="/tmp"))
    token = secrets.token_hex(16)
    home = root / "home"
    home.mkdir()
    dashboard = free_port()
    # The venv first on PATH, as when a user starts Ray from an activated venv: a job's
    # entrypoint runs the `python` that PATH finds on the head, not necessarily Ray's own.
    path = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token, HOME=str(home), PATH=path)
    env.pop("RAY_AUTH_TOKEN_PATH", None)
    env.pop("RAY_ADDRESS", None)
    cmd = [str(RAY), "start", "--head", "--block", "--disable-usage-stats",
           "--port", str(free_port()), "--dashboard-port", str(dashboard), "--dashboard-host", "127.0.0.1",
           "--dashboard-agent-listen-port", str(free_port()), "--ray-client-server-port", str(free_port()),
           "--temp-dir", str(root / "ray"),
           "--num-cpus", "2", "--memory", str(4 * 1024**3), "--object-store-memory", str(300 * 1024**2)]
    log = open(root / "head.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{dashboard}"
    try:
        try:
            wait_for_dashboard(url, token, proc, timeout=120)
        except RuntimeError as exc:
            log.flush()
            raise RuntimeError(f"{exc}; head.log ends:\n{(root / 'head.log').read_text()[-2000:]}") from None
        yield Head(address=url, token=token, temp_dir=root / "ray", pid=proc.pid)
    finally:
        stop_by_pid(proc)
        log.close()
        shutil.rmtree(root, ignore_errors=True)

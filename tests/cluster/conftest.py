"""A real Ray head node with token authentication, started and stopped by these tests alone.

Never `ray stop`: it would stop every Ray process on the machine, other people's included.
The head runs as `ray start --head --block` in its own temp dir, HOME and free ports, so it
neither reads nor writes ~/.ray/auth_token; SIGTERM to that one process stops its children,
and any child still alive after that is killed by its PID.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

RAY = Path(sys.executable).with_name("ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Head:
    address: str  # the dashboard / Jobs API, http://127.0.0.1:PORT
    token: str
    temp_dir: Path
    pid: int


def wait_for_dashboard(url: str, token: str, proc: subprocess.Popen | None, timeout: float) -> None:
    """Wait until GET /api/version answers 200 with the token, or fail with the reason."""
    request = urllib.request.Request(f"{url}/api/version", headers={"Authorization": f"Bearer {token}"})
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the head exited with code {proc.returncode} before its dashboard answered")
        try:
            with urllib.request.urlopen(request, timeout=2) as r:
                if r.status == 200:
                    return
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.3)
    raise RuntimeError(f"the dashboard at {url} did not answer in {timeout:.0f} s ({last})")


def stop_by_pid(proc: subprocess.Popen, grace: float = 30.0) -> None:
    """SIGTERM the `ray start --block` process (it stops its children), then kill survivors by PID."""
    import psutil

    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    _, alive = psutil.wait_procs(children, timeout=10)
    for child in alive:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass


@pytest.fixture(scope="module")
def ray_head():
    """One token-authenticated head node (1 CPU, dashboard on 127.0.0.1) for a test module."""
    root = Path(tempfile.mkdtemp(prefix="rs-head-", dir="/tmp"))
    token = secrets.token_hex(16)
    home = root / "home"
    home.mkdir()
    dashboard = free_port()
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token, HOME=str(home))
    env.pop("RAY_AUTH_TOKEN_PATH", None)
    env.pop("RAY_ADDRESS", None)
    cmd = [str(RAY), "start", "--head", "--block", "--disable-usage-stats",
           "--port", str(free_port()), "--dashboard-port", str(dashboard), "--dashboard-host", "127.0.0.1",
           "--dashboard-agent-listen-port", str(free_port()), "--temp-dir", str(root / "ray"),
           "--num-cpus", "1", "--memory", str(2 * 1024**3), "--object-store-memory", str(256 * 1024**2)]
    log = open(root / "head.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{dashboard}"
    try:
        wait_for_dashboard(url, token, proc, timeout=120)
        yield Head(address=url, token=token, temp_dir=root / "ray", pid=proc.pid)
    finally:
        stop_by_pid(proc)
        log.close()

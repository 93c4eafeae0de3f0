"""Helpers for tests that start real Ray nodes: free ports, waiting for a dashboard, and
stopping only the processes a test started (never `ray stop`, which stops every Ray on the machine)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

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


def stop_by_pid(*procs: subprocess.Popen, grace: float = 1.0) -> None:
    """SIGTERM each `ray start --block` process and its children, then kill survivors by PID.

    `ray start --block` alone took over 30 s to stop its node on SIGTERM here (and its children
    10 s more): a test's node holds nothing worth a graceful stop, so everyone gets `grace`,
    all nodes at once (one after the other, a 3-node cluster's teardown took ~15 s). The grace
    is a wait every teardown pays in full (`ray start --block` outlives any grace), so it is
    short: what is still alive after it is killed by PID, as the node-loss test kills a node."""
    import ray  # noqa: F401 - Ray bundles psutil (ray/thirdparty_files) and puts it on sys.path
    import psutil

    children = []
    for proc in procs:
        try:
            children += psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            pass
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for child in children:
        try:
            child.terminate()
        except psutil.NoSuchProcess:
            pass
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    _, alive = psutil.wait_procs(children, timeout=max(0.0, deadline - time.monotonic()))
    for child in alive:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=grace)


def wait_job(address: str, job_id: str, timeout: float = 120):
    """The job's final JobState (raysweep.jobs.status) once it has finished."""
    from raysweep import jobs

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = jobs.status(address, job_id)
        if state.finished:
            return state
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} still {state.status} after {timeout} s")


def six_cells(path: Path, name: str, data: Path, encoder: str, epochs: int) -> Path:
    """A sweep of 6 cells (random, fractions 0-2, seeds 0 and 1, last-linear) on the tiny encoder,
    each a few seconds with enough epochs: time to kill a node or a driver mid-sweep."""
    path.write_text(f"""
name: {name}
compare: {{strategy: [random], fraction: [0, 1, 2], freeze: [last-linear]}}
replicate: {{seed: [0, 1]}}
data: {{path: {data}}}
encoder: {{name: {encoder}, max_length: 32}}
recipe: {{epochs: {epochs}}}
resources: {{cpus_per_trial: 1}}
""")
    return path

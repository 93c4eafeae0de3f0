"""A Ray cluster on one machine whose nodes share nothing but storage, as on EC2.

The head starts as cluster.yaml's does (`--num-cpus=0`: no trial, task or actor ever runs on
it); each worker starts inside its own Linux mount namespace (`unshare -m --propagation
private`) with a fresh tmpfs over every node-local directory (the raysweep cache home above
all). A path the driver writes there does not exist on a worker, and what a worker writes
there never reaches the driver: the faults of a real cluster, on one machine. What every node
does share is the rest of the filesystem, which plays the part of the storage (a `file://`
output) and of what the cluster image installs (the encoder).

Only the processes started here are stopped, by their PIDs (never `ray stop`). Where `unshare`
or `mount` is not permitted (not root, no CAP_SYS_ADMIN), `skip_reason()` says why.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from headnode import RAY, free_port, stop_by_pid

MiB = 1024**2


def skip_reason() -> str | None:
    """Why per-node disks cannot be made here, or None when they can."""
    if shutil.which("unshare") is None:
        return "per-node disks need util-linux's `unshare`, which is not installed"
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", "mount -t tmpfs none /mnt"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return f"per-node disks need a private mount namespace and tmpfs (root or CAP_SYS_ADMIN): {probe.stderr.strip()}"
    return None


@dataclass
class Node:
    name: str
    proc: subprocess.Popen
    log: Path


@dataclass
class PerNodeCluster:
    """`root`: this cluster's scratch directory; `node_local`: the directories each worker gets
    its own empty copy of (they must exist); `env`: the environment of every node and driver."""

    root: Path
    node_local: list[Path]
    env: dict
    head: Node | None = None
    workers: list[Node] = field(default_factory=list)
    gcs: str = ""  # the head's GCS address, host:port
    dashboard: str = ""  # http://127.0.0.1:PORT

    def _start(self, name: str, args: list[str], namespace: bool) -> Node:
        log = self.root / f"{name}.log"
        cmd = [str(RAY), "start", "--block", "--disable-usage-stats", "--temp-dir", str(self.root / name),
               "--dashboard-agent-listen-port", str(free_port()), *args]
        if namespace:
            mounts = " && ".join(f"mount -t tmpfs none {d}" for d in self.node_local)
            cmd = ["unshare", "-m", "--propagation", "private", "bash", "-c",
                   f"{mounts} && exec {' '.join(cmd)}"]
        with open(log, "w") as f:
            proc = subprocess.Popen(cmd, env=self.env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        return Node(name, proc, log)

    def start_head(self, memory: int = 1024 * MiB, object_store: int = 150 * MiB) -> None:
        port, dash = free_port(), free_port()
        self.head = self._start("head", ["--head", "--num-cpus", "0", "--port", str(port),
                                         "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash),
                                         "--ray-client-server-port", str(free_port()),
                                         "--memory", str(memory), "--object-store-memory", str(object_store)],
                                namespace=False)
        self.dashboard = f"http://127.0.0.1:{dash}"
        # Ray binds the head to this machine's primary address, not 127.0.0.1 (PITFALLS.md).
        self.gcs = self._wait_for_address(port)

    def _wait_for_address(self, port: int, timeout: float = 90) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.head.proc.poll() is not None:
                raise RuntimeError(f"the head exited: {self.head.log.read_text()[-2000:]}")
            text = self.head.log.read_text()
            for line in text.splitlines():
                if f":{port}'" in line and "ray start --address=" in line:
                    return line.split("--address='", 1)[1].split("'", 1)[0]
            time.sleep(0.3)
        raise RuntimeError(f"the head printed no address in {timeout:.0f} s: {self.head.log.read_text()[-2000:]}")

    def add_worker(self, cpus: int = 1, memory: int = 1536 * MiB, object_store: int = 150 * MiB) -> Node:
        name = f"worker{len(self.workers) + 1}"
        node = self._start(name, ["--address", self.gcs, "--num-cpus", str(cpus), "--memory", str(memory),
                                  "--object-store-memory", str(object_store)], namespace=True)
        self.workers.append(node)
        return node

    def wait_for_nodes(self, count: int, timeout: float = 90) -> None:
        """Until `count` nodes are alive, as the head's state API (`/api/v0/nodes`, read from the
        GCS) says: an HTTP call per poll instead of a Ray driver started per poll (~2 s of CPU each)."""
        deadline = time.monotonic() + timeout
        alive: object = "?"
        while time.monotonic() < deadline:
            for node in [self.head, *self.workers]:
                if node.proc.poll() is not None:
                    raise RuntimeError(f"{node.name} exited: {node.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.dashboard}/api/v0/nodes?limit=1000", timeout=10) as reply:
                    rows = json.load(reply)["data"]["result"]["result"]
                alive = sum(1 for row in rows if row.get("state") == "ALIVE")
            except (OSError, ValueError, KeyError, TypeError) as exc:  # the dashboard is still starting
                alive = f"{type(exc).__name__}: {exc}"
            if alive == count:
                return
            time.sleep(0.5)
        raise RuntimeError(f"{count} nodes were not alive within {timeout:.0f} s (last: {alive})")

    def remove_worker(self, node: Node) -> None:
        """The worker dies at once, with every process of its node: SIGKILL, no graceful stop.
        Its tmpfs goes with its mount namespace, as a lost instance's disk does."""
        import ray  # noqa: F401 - Ray bundles psutil
        import psutil

        try:
            procs = [psutil.Process(node.proc.pid), *psutil.Process(node.proc.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            procs = []
        for p in procs:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        node.proc.wait()
        psutil.wait_procs(procs, timeout=10)

    def shutdown(self) -> None:
        stop_by_pid(*(node.proc for node in [*self.workers, self.head] if node is not None and node.proc.poll() is None))


@contextmanager
def per_node_cluster(workers: int):
    """A head and `workers` one-CPU workers with per-node raysweep homes, stopped (by PID) after.

    Every node and driver gets the same environment: no token auth between the processes of a
    test, RAYSWEEP_HOME (each worker's own tmpfs, the driver's real directory), and a training log
    every process appends to ($RAYSWEEP_TRAINING_LOG, at `cluster.root / "trainings.jsonl"`)."""
    root = Path(tempfile.mkdtemp(prefix="rs-pernode-", dir="/tmp"))
    home = root / "home"  # RAYSWEEP_HOME: ~/.cache/raysweep on a real node
    home.mkdir()
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAYSWEEP_HOME=str(home),
               RAYSWEEP_TRAINING_LOG=str(root / "trainings.jsonl"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", PYTHONPATH=os.pathsep.join(p for p in sys.path if p),
               # A job's entrypoint runs the `python` first on the head's PATH: this venv's.
               PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    env.pop("RAY_ADDRESS", None)
    cluster = PerNodeCluster(root=root, node_local=[home], env=env)
    try:
        cluster.start_head()
        for _ in range(workers):
            cluster.add_worker()
        cluster.wait_for_nodes(1 + workers)
        yield cluster
    finally:
        cluster.shutdown()
        shutil.rmtree(root, ignore_errors=True)

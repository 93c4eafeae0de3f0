"""A worker node dies mid-sweep: the sweep still finishes every cell, once.

A real two-node Ray cluster on this machine (`ray.cluster_utils.Cluster`: a head without CPUs,
so every trial runs on a worker node, and one worker with 1 CPU). The sweep's driver runs in a
subprocess, as `raysweep run --address` would. Once a cell is finished and another is running
on the worker, the worker node is killed (every one of its processes, no graceful shutdown) and a
second worker joins, as an autoscaler would bring one. Only the nodes this test started are
stopped: the cluster object kills its own processes by PID.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
from headnode import six_cells

from raysweep.config import load_sweep
from raysweep.sweep import cell_id, cell_progress, expand, fixed_digest

pytestmark = pytest.mark.slow

DRIVER = """
import sys
from raysweep.config import load_sweep
from raysweep.sweep import run_sweep
# Every node of this test sees the same disk: the local output is shared, as the flag says.
run_sweep(load_sweep(sys.argv[1]), sys.argv[2], address=sys.argv[3], use_ray_data=False, shared_output=True)
"""

NODE = dict(memory=1024**3, object_store_memory=80 * 1024**2)  # each node would count all the machine's RAM


def finished(cells: Path) -> dict[str, tuple[int, str]]:
    return {p.stem: (p.stat().st_mtime_ns, p.read_text()) for p in cells.glob("*.json")}


def markers(cells: Path) -> set[str]:
    return {p.name[: -len(".running")] for p in cells.glob("*.running")}


def tune_trials(tune_dir: Path) -> list[dict]:
    """Each trial of Tune's latest experiment state: its cell id, status and failure count."""
    state = json.loads(max(tune_dir.glob("*/experiment_state-*.json")).read_text())
    out = []
    for trial_json, runtime_json in state["trial_data"]:
        trial, runtime = json.loads(trial_json), json.loads(runtime_json)
        out.append({"cell_id": trial["config"]["cell_id"], "status": trial["status"],
                    "num_failures": runtime["num_failures"]})
    return out


def test_killing_a_worker_mid_sweep_loses_no_cell_and_reruns_none(tmp_path, tiny_bert, sst5_subset, monkeypatch):
    from ray.cluster_utils import Cluster

    # The nodes and the driver inherit this: no token auth between processes of one test.
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    sweep = six_cells(tmp_path / "loss.yaml", "loss", sst5_subset, tiny_bert, epochs=600)
    cfg = load_sweep(sweep)
    fixed = fixed_digest(cfg)
    ids = {cell_id(c, fixed) for c in expand(cfg)}
    out = tmp_path / "out"
    cells = out / "cells"

    root = Path(tempfile.mkdtemp(prefix="rs-loss-", dir="/tmp"))
    cluster = driver = log = None
    try:
        cluster = Cluster(initialize_head=True, shutdown_at_exit=True,
                          head_node_args=dict(num_cpus=0, temp_dir=str(root / "head"), include_dashboard=False, **NODE))
        first = cluster.add_node(num_cpus=1, temp_dir=str(root / "w1"), **NODE)
        log = open(tmp_path / "driver.log", "w")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        driver = subprocess.Popen([sys.executable, "-c", DRIVER, str(sweep), str(out), cluster.address],
                                  stdout=log, stderr=subprocess.STDOUT, env=env)

        # Wait for: one cell finished, and another that has only just started on the (only) worker.
        # Killing a trial that just started, not one that may be about to write its record, keeps
        # the kill from racing the trial's end (a race the sweep survives, but then nothing was killed).
        deadline = time.monotonic() + 240
        seen: set[str] = set()
        while True:
            assert driver.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no cell started after another finished within 240 s"
            done = finished(cells) if cells.exists() else {}
            started = markers(cells) - set(done) if cells.exists() else set()
            if done and started - seen:
                break
            seen |= started
            time.sleep(0.1)

        cluster.remove_node(first, allow_graceful=False)
        # The node's raylet is gone at once; its worker processes notice and exit a moment later.
        # Only once they are gone can nothing on the dead node write any more: the marker's pid tells.
        deadline = time.monotonic() + 30
        while cell_progress(cfg, out)["running"] and time.monotonic() < deadline:
            time.sleep(0.2)
        before = finished(cells)
        killed = markers(cells) - set(before)
        assert before and killed, (sorted(before), sorted(markers(cells)))
        progress = cell_progress(cfg, out)
        assert progress == {"cells": 6, "done": len(before), "running": 0, "failed": 0, "pending": 6 - len(before)}

        cluster.add_node(num_cpus=1, temp_dir=str(root / "w2"), **NODE)
        driver.wait(timeout=300)
        assert driver.returncode == 0, (tmp_path / "driver.log").read_text()[-3000:]
    finally:
        if driver is not None and driver.poll() is None:
            driver.kill()
            driver.wait()
        if log is not None:
            log.close()
        if cluster is not None:
            cluster.shutdown()
        shutil.rmtree(root, ignore_errors=True)

    table = pd.read_csv(out / "trials.csv")
    assert sorted(table["cell_id"]) == sorted(ids) and set(table["status"]) == {"ok"}
    after = finished(cells)
    assert set(after) == ids and not markers(cells)
    # No cell finished before the kill ran again: same file, same time, same content.
    assert {cid: after[cid] for cid in before} == before
    # Tune's own record: one trial per cell, all terminated; the killed trials failed once and were
    # retried; no trial that had finished before the kill was ever retried.
    trials = tune_trials(out / "tune")
    assert sorted(t["cell_id"] for t in trials) == sorted(ids)
    assert {t["status"] for t in trials} == {"TERMINATED"}
    failures = {t["cell_id"]: t["num_failures"] for t in trials}
    assert all(failures[cid] == 1 for cid in killed), failures
    assert all(failures[cid] == 0 for cid in before), failures
    assert cell_progress(cfg, out) == {"cells": 6, "done": 6, "running": 0, "failed": 0, "pending": 0}

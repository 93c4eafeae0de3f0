"""A worker node dies mid-sweep: the sweep still finishes every cell, once.

A real Ray cluster on this machine whose nodes share nothing but storage (tests/cluster/pernode.py):
a head without CPUs, as cluster.yaml's, so every trial runs on a worker, and one worker with
1 CPU in its own mount namespace with an empty cache home. The output is a `file://` URI (the
storage). The sweep's driver runs in a subprocess, as `raysweep run --address` would. Once a
cell is finished and another is running on the worker, the worker node is killed (every one of
its processes, SIGKILL, its disk gone with it) and a second, empty worker joins, as an autoscaler
would bring one. Only the processes this test started are stopped, by their PIDs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from headnode import six_cells
from pernode import per_node_cluster, skip_reason

from raysweep.config import load_sweep
from raysweep.sweep import expand
from raysweep.grid import cell_id, fixed_digest
from raysweep.status import cell_progress

pytestmark = pytest.mark.slow

DRIVER = """
import sys
from raysweep.config import load_sweep
from raysweep.sweep import run_sweep
run_sweep(load_sweep(sys.argv[1]), sys.argv[2], address=sys.argv[3], use_ray_data=False)
"""

WHY_NOT = skip_reason()


def finished(cells: Path) -> dict[str, tuple[int, str]]:
    return {p.stem: (p.stat().st_mtime_ns, p.read_text()) for p in cells.glob("*.json")}


def markers(cells: Path) -> set[str]:
    return {p.name[: -len(".running")] for p in cells.glob("*.running")}


def tune_trials(tune_dir: Path) -> list[dict]:
    """Each trial of Tune's latest experiment state: its pack, status and failure count."""
    state = json.loads(max(tune_dir.glob("*/experiment_state-*.json")).read_text())
    out = []
    for trial_json, runtime_json in state["trial_data"]:
        trial, runtime = json.loads(trial_json), json.loads(runtime_json)
        out.append({"pack": trial["config"]["pack"], "status": trial["status"],
                    "num_failures": runtime["num_failures"]})
    return out


@pytest.mark.skipif(WHY_NOT is not None, reason=WHY_NOT or "")
def test_killing_a_worker_mid_sweep_loses_no_cell_and_reruns_none(tmp_path, tiny_bert, sst5_subset):
    sweep = six_cells(tmp_path / "loss.yaml", "loss", sst5_subset, tiny_bert, epochs=600)
    cfg = load_sweep(sweep)
    fixed = fixed_digest(cfg)
    ids = {cell_id(c, fixed) for c in expand(cfg)}
    out = tmp_path / "out"
    cells = out / "cells"

    driver = log = None
    with per_node_cluster(workers=1) as cluster:
        try:
            log = open(tmp_path / "driver.log", "w")
            driver = subprocess.Popen([sys.executable, "-c", DRIVER, str(sweep), f"file://{out}", cluster.gcs],
                                      stdout=log, stderr=subprocess.STDOUT, env=cluster.env)

            # Wait for: one cell finished, and another that has only just started on the (only) worker.
            # Killing a trial that just started, not one that may be about to write its record, keeps
            # the kill from racing the trial's end (a race the sweep survives, but then nothing was killed).
            deadline = time.monotonic() + 400
            seen: set[str] = set()
            while True:
                assert driver.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "no cell started after another finished within 400 s"
                done = finished(cells)
                started = markers(cells) - set(done)
                if done and started - seen:
                    break
                seen |= started
                time.sleep(0.1)

            cluster.remove_worker(cluster.workers[0])
            # Every process of the node is gone: nothing on it can write any more.
            before = finished(cells)
            killed = markers(cells) - set(before)
            assert before and killed, (sorted(before), sorted(markers(cells)))
            progress = cell_progress(cfg, out)
            assert progress == {"cells": 6, "done": len(before), "running": 0, "failed": 0,
                                "pending": 6 - len(before)}

            cluster.add_worker()  # empty disk: it fetches what its trials read from the storage
            driver.wait(timeout=600)
            assert driver.returncode == 0, (tmp_path / "driver.log").read_text()[-3000:]
        finally:
            if driver is not None and driver.poll() is None:
                driver.kill()
                driver.wait()
            if log is not None:
                log.close()
        trained = [t for t in (json.loads(line) for line in (cluster.root / "trainings.jsonl").read_text().splitlines())
                   if t["kind"] == "trial"]

    # Each cell's model was trained to the end once: the killed trial never finished its training.
    assert len(trained) == 6 and len({t["key"] for t in trained}) == 6, trained
    table = pd.read_csv(out / "trials.csv")
    assert sorted(table["cell_id"]) == sorted(ids) and set(table["status"]) == {"ok"}
    after = finished(cells)
    assert set(after) == ids and not markers(cells)
    # No cell finished before the kill ran again: same file, same time, same content.
    assert {cid: after[cid] for cid in before} == before
    # Tune's own record: one trial per cell, all terminated; the killed trials failed once and were
    # retried; no trial that had finished before the kill was ever retried.
    # A Tune trial runs a pack of cells; each record names the pack that wrote it.
    pack_of = {cid: json.loads(after[cid][1])["pack"] for cid in ids}
    trials = tune_trials(out / "tune")
    assert sorted(t["pack"] for t in trials) == sorted(set(pack_of.values()))
    assert {t["status"] for t in trials} == {"TERMINATED"}
    failures = {t["pack"]: t["num_failures"] for t in trials}
    assert all(failures[pack_of[cid]] == 1 for cid in killed), failures
    assert all(failures[pack_of[cid]] == 0 for cid in before if pack_of[cid] not in {pack_of[k] for k in killed}), \
        failures
    assert cell_progress(cfg, out) == {"cells": 6, "done": 6, "running": 0, "failed": 0, "pending": 0}

"""Sweeps on a cluster whose nodes share nothing but storage (tests/cluster/pernode.py).

A head started as cluster.yaml's (`--num-cpus=0`) and two one-CPU workers, each in its own mount
namespace with an empty tmpfs over the raysweep cache home: every task, actor and trial runs on a
worker that never saw the driver's cache, and whatever a worker writes there never reaches the
driver. The output is a `file://` URI that every node reaches (the storage). The driver runs in
a process of its own on the head's side, as `raysweep run --address` would.

Each test counts trainings through $RAYSWEEP_TRAINING_LOG: every scoring model (or teacher)
is trained exactly once, on a worker, and every cell once.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pandas as pd
import pytest
from headnode import six_cells, wait_job
from pernode import PerNodeCluster, per_node_cluster, skip_reason

from raysweep.config import load_sweep
from raysweep import annotation as annotate
from raysweep import steps
from raysweep.layout import Layout
from raysweep.storage import Output
from raysweep.sweep import cell_ids, expand
from raysweep.status import cell_progress

pytestmark = pytest.mark.slow

WHY_NOT = skip_reason()
needs_namespaces = pytest.mark.skipif(WHY_NOT is not None, reason=WHY_NOT or "")

# The driver: `raysweep run`'s library call, with the object store's share of cache entries
# set from the command line (0: every entry travels through the output's storage).
DRIVER = """
import sys
from raysweep import storage
from raysweep.config import load_sweep
from raysweep.sweep import run_sweep
storage.OBJECT_STORE_MAX_BYTES = int(sys.argv[4])
run_sweep(load_sweep(sys.argv[1]), sys.argv[2], address=sys.argv[3])
"""


@pytest.fixture(scope="module")
def sst5_1100(tmp_path_factory):
    """900 train and 200 dev rows of the bundled SST-5: over embed.RAY_MIN_ENCODE_ROWS (1,000)
    together, so the encoder pass goes through Ray Data actors on the workers."""
    from raysweep.data import bundled_path

    df = pd.read_csv(bundled_path(), keep_default_na=False)
    rows = pd.concat([df[df.split == "train"].head(900), df[df.split == "dev"].head(200)])
    path = tmp_path_factory.mktemp("data") / "sst5-1100.csv"
    rows.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def cluster():
    """The head and two workers, shared by this module's tests (each reads only the trainings
    logged since it started); stopped (by PID) after the last one."""
    if WHY_NOT is not None:
        pytest.skip(WHY_NOT)
    with per_node_cluster(workers=2) as c:
        yield c


def run_driver(c: PerNodeCluster, sweep: Path, output: str, tmp_path: Path, object_store_max: int) -> tuple[str, int]:
    """The driver's output and its PID (a model it trained would carry that PID)."""
    log = tmp_path / "driver.log"
    with open(log, "w") as f:
        driver = subprocess.Popen([sys.executable, "-c", DRIVER, str(sweep), output, c.gcs, str(object_store_max)],
                                  env=c.env, stdout=f, stderr=subprocess.STDOUT)
        try:
            driver.wait(timeout=900)
        finally:
            if driver.poll() is None:
                driver.kill()
                driver.wait()
    text = log.read_text()
    assert driver.returncode == 0, text[-4000:]
    return text, driver.pid


def trainings(c: PerNodeCluster, since: int = 0) -> list[dict]:
    """The models trained on the cluster (every node's and driver's log lines), from line `since` on."""
    path = c.root / "trainings.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()][since:] if path.exists() else []


def check_cells(cfg, out: Path, generated: str | None = None, labels: list[str | None] | None = None) -> pd.DataFrame:
    table = pd.read_csv(out / "trials.csv")
    ids = cell_ids(cfg, expand(cfg), generated, labels)
    assert sorted(table["cell_id"]) == sorted(ids), "every cell once in trials.csv"
    assert set(table["status"]) == {"ok"}, table[table["status"] != "ok"][["cell_id", "error"]].to_string()
    return table


@needs_namespaces
def test_selection_strategies_over_every_freeze_mode_on_per_node_disks(cluster, sst5_1100, tiny_bert, tmp_path):
    sweep = tmp_path / "selection.yaml"
    sweep.write_text(f"""
name: pernode-selection
compare: {{strategy: [random, entropy, sqbc], fraction: [1], freeze: [last-linear, pooler, last-attention]}}
replicate: {{seed: [0]}}
data: {{path: {sst5_1100}}}
encoder: {{name: {tiny_bert}, max_length: 32}}
recipe: {{epochs: 1}}
selection: {{k: 3}}
resources: {{cpus_per_trial: 1}}
""")
    cfg = load_sweep(sweep)
    out = tmp_path / "shared" / "out"
    mark = len(trainings(cluster))
    log, driver_pid = run_driver(cluster, sweep, f"file://{out}", tmp_path, object_store_max=0)

    table = check_cells(cfg, out)
    assert len(table) == 9
    # The encoder pass and the token-level scoring ran as Ray Data actors, on the workers.
    assert "encoded 1,100 rows and" in log and "(Ray Data)" in log.split("encoded 1,100 rows and")[1].splitlines()[0], log[-3000:]
    scored = [line for line in log.splitlines() if line.startswith("scored ")]
    assert len(scored) == 1 and "Ray Data for 1 token-level" in scored[0], scored
    # One scoring model per freeze mode, trained once, on a worker (the head has no CPU); the
    # driver got each back and published it, so no trial trained one again. Each cell trained once.
    done = trainings(cluster, mark)
    models = [t for t in done if t["kind"] == "model"]
    assert len(models) == 3 and len({t["key"] for t in models}) == 3, models
    trials = [t for t in done if t["kind"] == "trial"]
    assert len(trials) == 9 and len({t["key"] for t in trials}) == 9, trials
    assert all(t["pid"] != driver_pid and t["node"] for t in done), \
        ("a model was trained on the driver", [t for t in done if t["pid"] == driver_pid or not t["node"]])
    driver_models = {p.stem for p in (cluster.root / "home" / "cache" / "selection" / "models").glob("*.pt")}
    assert {t["key"] for t in models} <= driver_models  # each came back to the driver's cache
    assert (out / "diagnostics" / "correlation.csv").exists()


@needs_namespaces
def test_llm_pools_generate_relabel_and_annotate_on_workers_of_per_node_disks(cluster, sst5_subset, tiny_bert, tmp_path,
                                                                             monkeypatch):
    from raysweep.llm.fake_server import FakeOpenAI

    server = FakeOpenAI(rows_per_reply=5).start()
    try:
        sweep = tmp_path / "llm.yaml"
        sweep.write_text(f"""
name: pernode-llm
compare: {{pool: [llm, llm_teacher, llm_annotated], strategy: [random, entropy], fraction: [1], freeze: [last-linear]}}
replicate: {{seed: [0]}}
data: {{path: {sst5_subset}}}
encoder: {{name: {tiny_bert}, max_length: 32}}
recipe: {{epochs: 1}}
resources: {{cpus_per_trial: 1}}
llm: {{base_url: {server.base_url}, api_key_env: none, model: fake-model, n_rows: 20, samples_per_call: 5, concurrency: 2,
      retry_backoff: 0.01, timeout: 10, annotate: {{rows_per_call: 20}}}}
teacher: {{freeze: pooler, epochs: 1}}
""")
        cfg = load_sweep(sweep)
        out = tmp_path / "shared" / "out"
        mark = len(trainings(cluster))
        # The default split: the teacher's and the scoring model's activations are small, so they
        # reach the workers through the object store; the trials' through the output's storage.
        log, driver_pid = run_driver(cluster, sweep, f"file://{out}", tmp_path, object_store_max=64 * 1024**2)
        paid = len(server.calls_served())
        # A driver on a new head (an empty cache): the labels it paid for are in the storage only.
        # It takes them from there instead of labeling every row again (in this process: the
        # sweep's annotation step, which must not even need the trials' inputs).
        new_head = tmp_path / "new-head" / "cache"
        said = []
        lay = Layout(f"file://{out}", cfg.name, str(new_head))
        again = steps.annotation_labels(cfg, expand(cfg), lay, lambda: pytest.fail("the annotation step labeled again"),
                                        lambda *_: None, said.append)
        assert len(server.calls_served()) == paid and any("annotation: reusing" in s for s in said), said
        # Nor does it generate again: the replies it paid for are in the storage, complete.
        monkeypatch.setattr(steps, "start_ray", lambda *a: pytest.fail("the generation step generated again"))
        rows = steps.generation(cfg, lay, None, False, said.append).rows
        assert len(server.calls_served()) == paid and any("generation: reusing" in s for s in said), said
        assert len(rows) == 20
    finally:
        server.stop()

    summary = json.loads((out / "generation" / "generation.json").read_text())
    assert summary["complete"] and summary["rows_kept"] == 20
    # llm_annotated: the driver labeled the rows its `real` counterparts choose and uploaded the
    # annotation to the storage; a cell's id carries the digest of its labels.
    annotation = json.loads((out / "annotation" / "annotation.json").read_text())
    cells = expand(cfg)
    keys = cell_ids(cfg, [annotate.counterpart(c) for c in cells])
    digests = [annotation["cells"][k] if c.pool == "llm_annotated" else None for c, k in zip(cells, keys)]
    table = check_cells(cfg, out, summary["rows_digest"], digests)
    assert len(table) == 6 and again == digests
    generated = table[table["pool"] != "llm_annotated"]
    assert len(generated) == 4 and set(generated["n_added"]) == {20}
    # Each annotated cell trained on a worker on exactly the rows the driver had labeled for it:
    # a row the worker chose that the driver did not label has label -1 (annotate.trial_labels)
    # and fails the trial, so every cell "ok" above means the two choices agreed.
    n_added = table.set_index("cell_id")["n_added"]
    ids = cell_ids(cfg, cells, summary["rows_digest"], digests)
    rows = {k: n_added[i] for c, k, i in zip(cells, keys, ids) if c.pool == "llm_annotated"}
    assert rows == annotation["cell_rows"] and len(rows) == 2 and set(rows.values()) == {n_added.max()}
    labels = pd.read_csv(out / "annotation" / "labels.csv", keep_default_na=False)
    n = n_added.max()  # |labeled| at fraction 1; random and entropy choose different rows
    assert len(labels) == annotation["rows_labeled"] and n < len(labels) <= 2 * n
    assert list(labels["llm_label"]) == [zlib.crc32(t.encode()) % 5 for t in labels["text"]]  # the fake LLM's
    assert annotation["requests"] == len(server.calls_served()) - summary["requests"]
    # The teacher, the LLM pools' scoring model and the one entropy chooses real rows with for
    # llm_annotated (on the real rows' activations): each trained once, on a worker.
    done = trainings(cluster, mark)
    models = [t for t in done if t["kind"] == "model"]
    assert len(models) == 3 and len({t["key"] for t in models}) == 3, models
    # Fraction 1 adds all 20 generated rows: random and entropy train on the same rows, so each
    # LLM pool trains once and its other cell records the training it shares; the annotated
    # cells add different real rows, so each trains.
    assert len([t for t in done if t["kind"] == "trial"]) == 4
    assert table.groupby("pool")["training"].nunique().to_dict() == {"llm": 1, "llm_teacher": 1, "llm_annotated": 2}
    assert all(t["pid"] != driver_pid and t["node"] for t in done), \
        ("a model was trained on the driver", [t for t in done if t["pid"] == driver_pid or not t["node"]])
    assert "teacher (pooler" in log


def _driver_processes(output: str) -> list:
    """The job's driver: the `python -m raysweep.jobs run ... --output OUTPUT` process(es)."""
    import ray  # noqa: F401 - Ray bundles psutil
    import psutil

    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = proc.info["cmdline"] or []
        if "raysweep.jobs" in cmd and output in cmd and Path(cmd[0]).name.startswith("python"):
            found.append(proc)
    return found


@needs_namespaces
def test_a_submitted_sweep_whose_driver_is_killed_resumes_when_submitted_again(cluster, sst5_subset, tiny_bert,
                                                                                 tmp_path, monkeypatch):
    import signal

    from click.testing import CliRunner

    from raysweep import jobs
    from raysweep.cli import main

    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ray/auth_token: this cluster runs without auth
    project = tmp_path / "proj"
    (project / "sweeps").mkdir(parents=True)
    (project / "pyproject.toml").write_text("[project]\nname = 'demo'\n")
    sweep = six_cells(project / "sweeps" / "killed.yaml", "killed", sst5_subset, tiny_bert, epochs=5)
    # Long enough to kill mid-sweep; a cell per pack, so that the two trials still running when
    # the driver dies cannot be all that is left (with automatic packs, three packs of two cells
    # on two slots, the third could start before the kill: nothing left for the resubmit).
    # `status` must be told these to find the cells.
    overrides = ["recipe.epochs=120", "resources.pack_size=1"]
    out = tmp_path / "shared" / "out"
    output = f"file://{out}"
    cfg = load_sweep(sweep, overrides)
    ids = set(cell_ids(cfg, expand(cfg)))

    mark = len(trainings(cluster))
    first = jobs.submit(sweep, cluster.dashboard, output, overrides)
    deadline = time.monotonic() + 600
    while not list((out / "cells").glob("*.json")):  # (glob of a missing directory: nothing)
        assert time.monotonic() < deadline, "no cell finished within 600 s"
        assert not jobs.status(cluster.dashboard, first).finished, "".join(jobs.logs(cluster.dashboard, first))
        time.sleep(0.5)
    drivers = _driver_processes(output)
    assert drivers, "the job's driver process was not found"
    for proc in drivers:
        os.kill(proc.pid, signal.SIGKILL)
    state = wait_job(cluster.dashboard, first, timeout=600)
    assert state.status == "FAILED", state
    # Trials already running may still finish after their driver died (PITFALLS.md): wait for
    # them to end, so that what counts as "finished before the resubmit" no longer moves. A
    # trial killed with its driver leaves its .running marker behind, so wait for what `status`
    # counts as running (a marker whose trial process is alive), not for the markers to go.
    deadline = time.monotonic() + 120
    while cell_progress(cfg, out)["running"]:
        assert time.monotonic() < deadline, "trials still running 120 s after their driver was killed"
        time.sleep(0.5)
    before = {p.stem: (p.stat().st_mtime_ns, p.read_text()) for p in (out / "cells").glob("*.json")}
    assert 0 < len(before) < len(ids), sorted(before)

    second = jobs.submit(sweep, cluster.dashboard, output, overrides)
    state = wait_job(cluster.dashboard, second, timeout=600)
    assert state.status == "SUCCEEDED", "".join(jobs.logs(cluster.dashboard, second))[-3000:]
    logs = "".join(jobs.logs(cluster.dashboard, second))
    assert f"{len(ids)} cells, {len(before)} already done, {len(ids) - len(before)} to run" in logs, logs[-3000:]

    table = check_cells(cfg, out)
    after = {p.stem: (p.stat().st_mtime_ns, p.read_text()) for p in (out / "cells").glob("*.json")}
    assert {cid: after[cid] for cid in before} == before  # no finished cell ran again
    trained = [json.loads(t["key"]) for t in trainings(cluster, mark) if t["kind"] == "trial"]
    done_before = [c for c in expand(cfg) if cell_ids(cfg, [c])[0] in before]
    for cell in done_before:
        assert sum(t == dataclasses.asdict(cell) for t in trained) == 1, cell
    assert len(table) == len(ids)
    result = CliRunner().invoke(main, ["status", "--sweep", str(sweep), "--output", output,
                                       *[w for o in overrides for w in ("--set", o)]])
    assert result.exit_code == 0 and result.output.strip() == (
        f"{len(ids)} cells, {len(ids)} done, 0 running, 0 failed, 0 pending"), result.output

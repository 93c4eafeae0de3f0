"""`raysweep status --sweep --output`: cells done / running / failed / pending on hand-made results."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from click.testing import CliRunner

from raysweep import driver, grid, inputs, records, status, sweep
from raysweep.grid import CellRecord
from raysweep.cli import main
from raysweep.config import RecipeConfig, load_sweep
from raysweep.storage import Output
from raysweep.train import Cell, Chosen

REPO = Path(__file__).resolve().parents[1]

SWEEP = """
name: status
compare: {strategy: [random], fraction: [0, 1, 2], freeze: [last-linear]}
replicate: {seed: [0, 1]}
"""


@pytest.fixture
def sweep_file(tmp_path):
    path = tmp_path / "status.yaml"
    path.write_text(SWEEP)
    return path


def ids_of(cfg):
    fixed = grid.fixed_digest(cfg)
    return [grid.cell_id(c, fixed) for c in sweep.expand(cfg)]


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def write(path, obj, age_s=0.0):
    path.write_text(json.dumps(obj))
    t = time.time() - age_s
    os.utime(path, (t, t))


def test_counts_on_a_hand_made_directory(tmp_path, sweep_file):
    cfg = load_sweep(sweep_file)
    ids = ids_of(cfg)
    assert len(ids) == 6
    cells = tmp_path / "out" / "cells"
    cells.mkdir(parents=True)
    here = socket.gethostname()
    write(cells / f"{ids[0]}.json", {"status": "ok"})
    write(cells / f"{ids[1]}.json", {"status": "ok"})
    write(cells / f"{ids[2]}.json", {"status": "failed"})
    # finished, and its marker not yet removed: done, not running
    write(cells / f"{ids[1]}.running", {"host": "node-b", "pid": 1})
    # a live trial on another node, beating: running
    write(cells / f"{ids[3]}.running", {"host": "node-b", "pid": 1}, age_s=grid.HEARTBEAT_S)
    # a trial whose node died a while ago: its marker stopped beating, so the cell is pending again
    write(cells / f"{ids[4]}.running", {"host": "node-b", "pid": 1}, age_s=grid.STALE_S + 1)
    # a trial killed on this machine a moment ago: fresh marker, dead process, pending
    write(cells / f"{ids[5]}.running", {"host": here, "pid": dead_pid()})
    (cells / "0123456789abcdef.json").write_text("{}")  # another sweep's cell: not counted

    assert status.cell_progress(cfg, tmp_path / "out") == {"cells": 6, "done": 2, "running": 1, "failed": 1,
                                                          "pending": 2}
    # The same directory a minute later: the live trial's marker has gone stale too.
    later = time.time() + grid.STALE_S
    assert status.cell_progress(cfg, tmp_path / "out", now=later)["running"] == 0

    result = CliRunner().invoke(main, ["status", "--sweep", str(sweep_file), "--output", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert result.output == "6 cells, 2 done, 1 running, 1 failed, 2 pending\n"


def test_a_torn_cell_record_counts_as_not_run(tmp_path, sweep_file):
    cfg = load_sweep(sweep_file)
    cells = tmp_path / "cells"
    cells.mkdir()
    (cells / f"{ids_of(cfg)[0]}.json").write_text('{"status": "o')
    assert status.cell_progress(cfg, tmp_path) == {"cells": 6, "done": 0, "running": 0, "failed": 0, "pending": 6}


def test_a_trial_marks_its_cell_running_until_its_record_is_written(tmp_path, monkeypatch):
    out = Output(tmp_path)
    out.mkdir("cells")
    seen = {}

    def fake_trials(cells, inputs, recipe, selection, device, bf16):
        seen["marker"] = json.loads((tmp_path / "cells" / "c1.running").read_text())
        seen["running"] = grid.running_cells(out)
        return [({"val_accuracy": 0.5}, Chosen.empty())]

    monkeypatch.setattr(records, "run_trials", fake_trials)
    monkeypatch.setattr(records.chosen, "write_cell", lambda *a: None)
    monkeypatch.setattr(records, "trial_inputs", lambda context, variant, pool="real": SimpleNamespace(train_labels=None))
    record = records.run_cell(Cell("real", "random", 1.0, "last-linear", 0), "c1", context(), out)
    assert seen["running"] == {"c1"}
    assert seen["marker"]["host"] == socket.gethostname() and seen["marker"]["pid"] == os.getpid()
    assert record.ok and record.metrics["val_accuracy"] == 0.5
    assert sorted(p.name for p in (tmp_path / "cells").iterdir()) == ["c1.json"]


def context():
    return inputs.TrialContext(train_labels=None, val_labels=None, labeled=None, pool_rows=None, num_classes=5,
                              artifacts={}, recipe=RecipeConfig())


def test_a_retried_pack_reports_the_records_its_lost_node_wrote_and_runs_only_the_rest(tmp_path, monkeypatch):
    import ray.tune

    from raysweep.grid import Pack, Training

    done, rest = Cell("real", "random", 1.0, "last-linear", 0), Cell("real", "random", 1.0, "last-linear", 1)
    (tmp_path / "cells").mkdir()
    record = {"cell_id": "c1", "cell": asdict(done), "status": "ok",
              "metrics": {"val_accuracy": 0.25, "confusion": [[1]]}}
    (tmp_path / "cells" / "c1.json").write_text(json.dumps(record))
    ran, reports = [], []

    def fake_trials(cells, inputs, recipe, selection, device, bf16):
        ran.extend(cells)
        return [({"val_accuracy": 0.5}, Chosen.empty()) for _ in cells]

    monkeypatch.setattr(records, "run_trials", fake_trials)
    monkeypatch.setattr(records.chosen, "write_cell", lambda *a: None)
    monkeypatch.setattr(records, "trial_inputs", lambda context, variant, pool="real": SimpleNamespace(train_labels=None))
    monkeypatch.setattr(ray.tune, "report", reports.append)
    pack = Pack("p", done.variant, "real", 10, (Training("c1"), Training("c2")))
    driver._tune_trainable({"pack": "p"}, context=context(), packs={"p": pack},
                           cells={"c1": asdict(done), "c2": asdict(rest)}, output=str(tmp_path))
    assert ran == [rest] and reports == [{"cells": 1, "ok": 1, "failed": 0, "trained": 1}]  # c1 was not trained again
    assert json.loads((tmp_path / "cells" / "c1.json").read_text()) == record  # not run, not rewritten


def test_status_counts_the_grid_that_was_run_with_the_same_set_overrides(tmp_path, sweep_file):
    # A sweep run with --set recipe.epochs=1 has other cell ids (recipe is a fixed setting):
    # status must apply the same overrides to find its cells.
    overrides = ["recipe.epochs=1", "compare.fraction=[1]"]
    cfg = load_sweep(sweep_file, overrides)
    cells = tmp_path / "out" / "cells"
    cells.mkdir(parents=True)
    for cid in ids_of(cfg):
        write(cells / f"{cid}.json", {"status": "ok"})
    runner = CliRunner()
    args = ["status", "--sweep", str(sweep_file), "--output", str(tmp_path / "out")]
    without = runner.invoke(main, args)
    assert without.exit_code == 0 and "6 cells, 0 done" in without.output, without.output
    sets = [w for o in overrides for w in ("--set", o)]
    result = runner.invoke(main, [*args, *sets])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "2 cells, 2 done, 0 running, 0 failed, 0 pending"


def test_trials_csv_has_test_columns_only_when_a_cell_has_test_metrics():
    cfg = load_sweep(REPO / "sweeps" / "smoke.yaml")
    cells = sweep.expand(cfg)[:2]
    ids = sweep.cell_ids(cfg, cells)
    val = {"val_accuracy": 0.4, "val_macro_f1": 0.3, "confusion": [[1]]}
    plain = sweep.results_table(cells, ids, {i: CellRecord(i, {}, metrics=val) for i in ids}, cfg)
    assert "test_accuracy" not in plain.columns
    done = {ids[0]: CellRecord(ids[0], {}, metrics={**val, "test_accuracy": 0.35, "test_macro_f1": 0.25}),
            ids[1]: CellRecord(ids[1], {}, metrics=val)}
    table = sweep.results_table(cells, ids, done, cfg)
    assert list(table.columns[table.columns.get_loc("val_macro_f1") + 1:][:2]) == ["test_accuracy", "test_macro_f1"]
    assert table["test_accuracy"].iloc[0] == 0.35 and pd.isna(table["test_accuracy"].iloc[1])


def test_cell_ids_of_the_bundled_data_are_unchanged_by_the_test_split():
    """Frozen ids of sweeps/selection-small.yaml cells: finished cells must keep their ids."""
    cfg = load_sweep(REPO / "sweeps" / "selection-small.yaml")
    cells = sweep.expand(cfg)
    ids = dict(zip(cells, sweep.cell_ids(cfg, cells)))
    assert ids[Cell("real", "random", 0.0, "last-linear", 0)] == "e495cf66983034f0"
    assert ids[Cell("real", "random", 0.0, "last-linear", 1)] == "d5afff175a79011a"
    assert ids[Cell("real", "entropy", 4.0, "last-linear", 0)] == "68722a0b4354c74e"

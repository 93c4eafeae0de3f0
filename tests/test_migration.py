"""qbc-seeds cells finished before their committee was in their id (issue 33) are moved to their
new ids when the committee they were made with is known, and left unused, with one line, when not.

tests/fixtures/qbc-before/ is a cut copy of a real output made with main's code before the change
(/work/runs/selection-batch-e5-pooler, 2026-12-07): its random and qbc-seeds cells (fractions 0
and 1, pooler, 10 seeds: 40 records), the chosen rows of the qbc-seeds cells of seeds 0 and 1,
its trials.csv cut to those cells, the first line of its run log, and its sweep.yaml snapshot with
the strategy list cut to the two kept. Ray-free: every cell is done, so a run starts nothing.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from raysweep import migration
from raysweep.config import load_sweep
from raysweep.grid import cell_ids, expand, read_cells
from raysweep.storage import Output
from raysweep.sweep import run_sweep

FIXTURE = Path(__file__).parent / "fixtures" / "qbc-before"
SEEDS = list(range(10))


@pytest.fixture
def out(tmp_path):
    shutil.copytree(FIXTURE, tmp_path / "out")
    return tmp_path / "out"


def _records(d: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (d / "cells").glob("*.json")}


def _migrate(out: Path, seeds=SEEDS, snapshot: str | None = "keep") -> tuple[int, list[str]]:
    cfg = load_sweep(FIXTURE / "sweep.yaml")
    cfg.replicate.seed = list(seeds)
    cells = expand(cfg)
    said = []
    text = (out / "sweep.yaml").read_text() if snapshot == "keep" else snapshot
    n = migration.committees(cells, cell_ids(cfg, cells), cell_ids(cfg, cells, committees=False), cfg.replicate.seed,
                             Output(out), text, said.append)
    return n, said


def test_the_fixture_holds_qbc_seeds_cells_under_the_ids_main_gave_them():
    cfg = load_sweep(FIXTURE / "sweep.yaml")
    cells = expand(cfg)
    on_disk = set(_records(FIXTURE))
    assert set(cell_ids(cfg, cells, committees=False)) == on_disk
    new = cell_ids(cfg, cells)
    moved = {i for c, i in zip(cells, new) if c.strategy == "qbc-seeds"}
    assert len(moved) == 20 and not moved & on_disk  # every qbc-seeds id changed ...
    assert {i for c, i in zip(cells, new) if c.strategy == "random"} <= on_disk  # ... and no other


def test_a_run_moves_them_to_their_new_ids_and_runs_no_cell_again(out):
    before = _records(FIXTURE)
    cfg = load_sweep(out / "sweep.yaml")
    said = []
    run_sweep(cfg, out, log=said.append, use_ray_data=False)
    assert any(s.startswith("migration: 20 qbc-seeds cell(s) moved") for s in said), said
    assert "sweep selection-batch-small: 40 cells, 40 already done, 0 to run" in said
    after = _records(out)
    assert set(after) == set(cell_ids(cfg, expand(cfg)))  # the old ids are gone, nothing else is there
    for cid, rec in after.items():
        if rec["cell"]["strategy"] != "qbc-seeds":
            assert rec == before[cid]
            continue
        old = before[rec["migrated_from"]]
        assert rec["committee"] == [s for s in SEEDS if s != rec["cell"]["seed"]]
        assert rec["cell_id"] == cid and rec["metrics"] == old["metrics"] and rec["cell"] == old["cell"]
        assert rec.get("shared_training") == old.get("shared_training")
    # the chosen rows moved with their cells, their metadata naming the new id
    moved = {rec["migrated_from"]: cid for cid, rec in after.items() if "migrated_from" in rec}
    for path in (FIXTURE / "chosen").glob("*.parquet"):
        assert not (out / "chosen" / path.name).exists()
        table = pq.read_table(out / "chosen" / f"{moved[path.stem]}.parquet")
        assert json.loads(table.schema.metadata[b"raysweep"])["cell_id"] == moved[path.stem]
        assert table.equals(pq.read_table(path))
    # trials.csv: the same results, qbc-seeds rows under their new ids (a cell that trained its own
    # model names itself as its training)
    old_table = pd.read_csv(FIXTURE / "trials.csv").replace({"cell_id": moved, "training": moved})
    # (trials.csv has gained the label counts and cost_usd since the fixture was cut: compare the rest)
    pd.testing.assert_frame_equal(pd.read_csv(out / "trials.csv")[old_table.columns], old_table)

    # and again: nothing left to move, nothing to run
    said.clear()
    run_sweep(load_sweep(out / "sweep.yaml"), out, log=said.append, use_ray_data=False)
    assert not [s for s in said if s.startswith("migration")]
    assert "sweep selection-batch-small: 40 cells, 40 already done, 0 to run" in said


def test_records_naming_a_moved_cell_as_their_training_follow_it(out):
    cells = _records(out)
    qbc = next(c for c, r in cells.items() if r["cell"]["strategy"] == "qbc-seeds")
    rider = next(c for c, r in cells.items() if r["cell"]["strategy"] == "random")
    data = json.loads((out / "cells" / f"{rider}.json").read_text())
    (out / "cells" / f"{rider}.json").write_text(json.dumps({**data, "shared_training": qbc}))
    assert _migrate(out)[0] == 20
    new = next(c for c, r in _records(out).items() if r.get("migrated_from") == qbc)
    assert read_cells(Output(out))[rider].shared_training == new


def test_a_sweep_with_other_seeds_leaves_them_unused_with_one_line(out):
    n, said = _migrate(out, seeds=range(5))  # made with seeds 0..9: not the committee of a 0..4 sweep
    assert n == 0
    assert len(said) == 1 and "committee of seeds [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], not this sweep's" in said[0]
    assert _records(out) == _records(FIXTURE)  # nothing moved, nothing deleted


@pytest.mark.parametrize("case, why", [
    ("no snapshot", "no readable sweep.yaml snapshot"),
    ("snapshot of fewer seeds", "that the sweep.yaml snapshot (seeds [0, 1, 2, 3, 4]) lacks"),
    ("logs of two grids", "run logs count different grids (40, 120 cells)"),
])
def test_an_unknown_committee_leaves_them_unused_with_one_line(out, case, why):
    snapshot = (out / "sweep.yaml").read_text()
    if case == "no snapshot":
        snapshot = None
    elif case == "snapshot of fewer seeds":
        snapshot = snapshot.replace("  - 5\n  - 6\n  - 7\n  - 8\n  - 9\n", "")
    else:
        (out / "logs" / "run-selection-batch-small-20261207T070000Z.log").write_text(
            "07:00:00 raysweep: sweep selection-batch-small: 40 cells, 20 already done, 20 to run\n")
    n, said = _migrate(out, snapshot=snapshot)
    assert n == 0 and len(said) == 1, said
    assert said[0].startswith("migration: 20 qbc-seeds cell(s) made before committees were in cell ids are left unused")
    assert why in said[0]
    assert _records(out) == _records(FIXTURE)
    assert sorted(p.name for p in (out / "chosen").iterdir()) == sorted(p.name for p in (FIXTURE / "chosen").iterdir())


def test_a_shrunk_seed_list_is_seen_from_the_records(out):
    """The snapshot says 0..4 but records of seeds 5..9 are there: the run that made them had more."""
    snapshot = (out / "sweep.yaml").read_text().replace("  - 5\n  - 6\n  - 7\n  - 8\n  - 9\n", "")
    n, said = _migrate(out, seeds=range(5), snapshot=snapshot)
    assert n == 0 and "seed(s) [5, 6, 7, 8, 9] beyond the sweep.yaml snapshot's [0, 1, 2, 3, 4]" in said[0]


def test_an_interrupted_move_is_finished_by_the_next_run(out, monkeypatch):
    calls = []
    real_delete = Output.delete

    def dies_on_first_delete(self, rel):
        calls.append(rel)
        raise KeyboardInterrupt

    monkeypatch.setattr(Output, "delete", dies_on_first_delete)
    with pytest.raises(KeyboardInterrupt):
        _migrate(out)
    monkeypatch.setattr(Output, "delete", real_delete)
    assert len(_records(out)) == 60  # the new records are written, the old ones still there
    assert _migrate(out)[0] == 20
    assert len(_records(out)) == 40 and sum("migrated_from" in r for r in _records(out).values()) == 20


def test_the_committee_is_the_other_seeds_sorted_and_only_for_qbc_seeds():
    from raysweep.grid import Cell, CellRecord, committee

    assert committee(Cell("real", "qbc-seeds", 1.0, "pooler", 3), [5, 3, 1, 0]) == [0, 1, 5]
    assert committee(Cell("real", "entropy", 1.0, "pooler", 3), [5, 3, 1, 0]) is None
    rec = CellRecord("abc", {"seed": 3}, metrics={"val_accuracy": 0.5}, committee=[0, 1, 5])
    assert json.loads(rec.to_json())["committee"] == [0, 1, 5]
    assert CellRecord.parse(rec.to_json()) == rec
    assert "committee" not in json.loads(CellRecord("abc", {"seed": 3}).to_json())  # other records: byte for byte


def test_a_trial_puts_its_committee_on_record(tmp_path):
    """records._write_cell: a qbc-seeds record names the seeds whose models picked its rows."""
    from types import SimpleNamespace

    from raysweep import records
    from raysweep.grid import Cell

    out = Output(tmp_path)
    out.mkdir("cells")
    beat = SimpleNamespace(finished=lambda cid: None)
    context = SimpleNamespace(seeds=(4, 0, 2, 1), fixed=None, prices=None)
    for strategy, expected in (("qbc-seeds", [0, 1, 4]), ("entropy", None)):
        rec = records._write_cell(out, strategy, Cell("real", strategy, 1.0, "pooler", 2), RuntimeError("x"), None,
                                  context, beat, None, None)
        assert rec.committee == expected
        assert json.loads((tmp_path / "cells" / f"{strategy}.json").read_text()).get("committee") == expected

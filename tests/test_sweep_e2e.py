"""End to end on local Ray: real SST-5 rows, the bundled MiniLM, a tiny grid."""

import json
import signal

import pandas as pd
import pytest

from raysweep.chosen import read_chosen
from raysweep.predictions import read_rows
from raysweep.config import load_sweep
from raysweep.sweep import expand, run_sweep
from raysweep.grid import cell_id, fixed_digest, selection_settings
from raysweep.status import cell_progress

pytestmark = pytest.mark.slow


def sweep_file(tmp_path, data_path, fractions, strategies="[random]"):
    path = tmp_path / "tiny.yaml"
    path.write_text(f"""
name: tiny
compare:
  strategy: {strategies}
  fraction: {fractions}
  freeze: [last-linear, pooler]
replicate:
  seed: [0]
data:
  path: {data_path}
recipe:
  epochs: 3
""")
    return path


def test_tiny_sweep_runs_resumes_and_grows(tmp_path, sst5_subset, ray_local):
    out = tmp_path / "out"
    cfg = load_sweep(sweep_file(tmp_path, sst5_subset, "[0, 1]"))
    handler = signal.getsignal(signal.SIGINT)
    table = run_sweep(cfg, out, log=lambda *_: None)

    assert len(table) == 4 and set(table["status"]) == {"ok"}
    assert signal.getsignal(signal.SIGINT) is handler  # not Tune's, left behind by its fit
    assert sorted(zip(table["freeze"], table["fraction"])) == [("last-linear", 0.0), ("last-linear", 1.0),
                                                               ("pooler", 0.0), ("pooler", 1.0)]
    # stratified 1/5 of 300 rows: round(0.2 x count) per class of the subset
    train = pd.read_csv(sst5_subset).query("split == 'train'")
    n_labeled = sum(round(0.2 * n) for n in train["label"].value_counts())
    assert set(table["n_labeled"]) == {n_labeled}
    assert table.set_index(["freeze", "fraction"])["n_added"].to_dict() == {
        ("last-linear", 0.0): 0, ("last-linear", 1.0): n_labeled, ("pooler", 0.0): 0, ("pooler", 1.0): n_labeled}
    assert table["val_accuracy"].between(0, 1).all() and table["val_macro_f1"].between(0, 1).all()
    csv = pd.read_csv(out / "trials.csv")
    for col in ("pool", "strategy", "fraction", "freeze", "seed", "val_accuracy", "val_macro_f1",
                "train_accuracy", "wall_s"):
        assert col in csv.columns
    assert sum(sum(r) for r in json.loads(csv["confusion"][0])) == 100
    assert (out / "sweep.yaml").exists()
    # Every cell's chosen rows are on record: none for fraction 0, |labeled| pool rows for fraction 1.
    chosen_rows, rows_table = read_chosen(out)
    assert set(chosen_rows["cell_id"]) == set(table.loc[table["fraction"] > 0, "cell_id"])
    assert len(chosen_rows) == 2 * n_labeled and chosen_rows["score"].isna().all()  # random: no scores
    assert len(rows_table) == len(train) and not rows_table.loc[chosen_rows["row"], "labeled"].any()
    assert sorted(p.name for p in (out / "chosen").iterdir() if not p.name.startswith("rows-")) == sorted(
        f"{i}.parquet" for i in table["cell_id"])

    # Running again runs nothing: every cell is done.
    before = {p.name: p.stat().st_mtime_ns for p in (out / "cells").iterdir()}
    again = run_sweep(cfg, out, log=lambda *_: None)
    assert {p.name: p.stat().st_mtime_ns for p in (out / "cells").iterdir()} == before
    pd.testing.assert_frame_equal(again, table)

    # Adding a strategy and a fraction that takes the whole pool (5 x 59 labeled > the 241 pool
    # rows) runs only the new cells, and trains each set of rows once (issue 15): entropy at
    # fraction 0 trains on `labeled` like random did, and both add the whole pool at fraction 5.
    pool = len(train) - n_labeled
    grown_cfg = load_sweep(sweep_file(tmp_path, sst5_subset, "[0, 1, 5]", "[random, entropy]"))
    assert cell_progress(grown_cfg, out) == {"cells": 12, "done": 4, "running": 0, "failed": 0, "pending": 8}
    grown = run_sweep(grown_cfg, out, log=lambda *_: None)
    after = {p.name: p.stat().st_mtime_ns for p in (out / "cells").iterdir()}
    new = set(after) - set(before)
    assert len(grown) == 12 and len(new) == 8 and set(grown["status"]) == {"ok"}
    assert all(after[name] == before[name] for name in before)
    fixed = fixed_digest(grown_cfg)
    expected_new = {f"{cell_id(c, fixed, selection_settings(c.strategy, grown_cfg.selection))}.json"
                    for c in expand(grown_cfg) if c.fraction == 5.0 or c.strategy == "entropy"}
    assert new == expected_new
    records = {p.stem: json.loads(p.read_text()) for p in (out / "cells").glob("*.json")}
    by_cell = grown.set_index(["freeze", "strategy", "fraction"])
    for freeze in ("last-linear", "pooler"):
        random0, entropy0 = by_cell.loc[(freeze, "random", 0.0)], by_cell.loc[(freeze, "entropy", 0.0)]
        assert records[entropy0["cell_id"]]["shared_training"] == random0["cell_id"]  # finished before: copied
        random4, entropy4 = by_cell.loc[(freeze, "random", 5.0)], by_cell.loc[(freeze, "entropy", 5.0)]
        assert records[entropy4["cell_id"]]["shared_training"] == random4["cell_id"]
        assert "shared_training" not in records[random4["cell_id"]] and random4["n_added"] == pool
        for a, b in ((random0, entropy0), (random4, entropy4)):
            assert a["val_accuracy"] == b["val_accuracy"] and a["final_loss"] == b["final_loss"]
            assert a["training"] == b["training"] == a["cell_id"]  # trials.csv names the shared training
        entropy1 = by_cell.loc[(freeze, "entropy", 1.0)]
        assert "shared_training" not in records[entropy1["cell_id"]] and entropy1["training"] == entropy1["cell_id"]
    # 8 new cells, 4 trainings: entropy x1 and the whole pool, per freeze mode.
    assert sum("shared_training" not in records[i[:-5]] for i in new) == 4
    chosen_rows, _ = read_chosen(out)
    assert (chosen_rows.groupby("cell_id").size()[list(grown.loc[grown["fraction"] == 5.0, "cell_id"])] == pool).all()
    # Every cell's per-row val predictions are on record (a rider's are its training's), and give its metrics.
    val = read_rows(out, "val")
    assert sorted(val.cell_ids) == sorted(grown["cell_id"]) and read_rows(out, "test") is None
    accuracy = (val.predicted == val.labels).mean(1)
    assert dict(zip(val.cell_ids, accuracy)) == pytest.approx(dict(zip(grown["cell_id"], grown["val_accuracy"])))


def test_a_data_file_with_a_test_split_reports_test_metrics(tmp_path, sst5_subset, ray_local):
    data = pd.read_csv(sst5_subset, keep_default_na=False)
    dev = data.index[data.split == "dev"]
    data.loc[dev[:40], "split"] = "test"  # 40 held-out rows, 60 left as dev
    path = tmp_path / "with-test.csv"
    data.to_csv(path, index=False)
    cfg = load_sweep(sweep_file(tmp_path, path, "[1]"))
    table = run_sweep(cfg, tmp_path / "out", log=lambda *_: None)
    assert set(table["status"]) == {"ok"}
    assert table["test_accuracy"].between(0, 1).all() and table["test_macro_f1"].between(0, 1).all()
    confusion = json.loads(table["confusion"].iloc[0])
    assert sum(map(sum, confusion)) == 60  # val is the 60 dev rows; the test rows are not in it
    csv = pd.read_csv(tmp_path / "out" / "trials.csv")
    assert list(csv.columns[csv.columns.get_loc("val_macro_f1") + 1:][:2]) == ["test_accuracy", "test_macro_f1"]
    test = read_rows(tmp_path / "out", "test")  # the test split's per-row predictions too, with its labels
    assert test.predicted.shape == (len(table), 40)
    assert dict(zip(test.cell_ids, (test.predicted == test.labels).mean(1))) == pytest.approx(
        dict(zip(table["cell_id"], table["test_accuracy"])))

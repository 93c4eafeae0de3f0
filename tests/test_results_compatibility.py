"""A results directory made before the restructure is still whole: every finished cell is found
under the id it was written with, and a run over it runs no cell again.

tests/fixtures/smoke-before/ is `raysweep run sweeps/smoke.yaml` as main made it before pools/,
the split sweep and the typed records (its sweep.yaml, cells/ and trials.csv; the cache, chosen
rows and logs left out to keep it small). Ray-free: with every cell done, a run starts nothing.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from raysweep.config import load_sweep
from raysweep.grid import CellRecord, cell_ids, expand, read_cells
from raysweep.status import cell_statuses
from raysweep.storage import Output
from raysweep.sweep import run_sweep

FIXTURE = Path(__file__).parent / "fixtures" / "smoke-before"


def test_every_cell_of_a_directory_made_before_is_found_under_its_id():
    cfg = load_sweep(FIXTURE / "sweep.yaml")
    cells = expand(cfg)
    on_disk = {p.stem for p in (FIXTURE / "cells").glob("*.json")}
    assert len(cells) == len(on_disk) > 0
    assert set(cell_ids(cfg, cells)) == on_disk
    assert cell_statuses(cfg, FIXTURE) == ["ok"] * len(cells)


def test_a_run_over_it_runs_no_cell_again_and_writes_the_same_table(tmp_path):
    out = tmp_path / "out"
    shutil.copytree(FIXTURE, out)
    cfg = load_sweep(out / "sweep.yaml")
    said = []
    table = run_sweep(cfg, out, log=said.append, use_ray_data=False)
    n = len(expand(cfg))
    assert f"sweep {cfg.name}: {n} cells, {n} already done, 0 to run" in said
    before = pd.read_csv(FIXTURE / "trials.csv")
    after = pd.read_csv(out / "trials.csv")
    pd.testing.assert_frame_equal(after[before.columns], before)
    # The cost columns are new: derived for records made before them from the same inputs (the
    # pool's labeled_by and n_added), priced at the sweep's costs (the default human price here).
    assert list(after.columns[len(before.columns):]) == ["human_labels", "llm_labels", "cost_usd"]
    assert (after["human_labels"] == before["n_added"]).all() and (after["llm_labels"] == 0).all()
    assert after["cost_usd"].tolist() == pytest.approx((before["n_added"] * cfg.costs.human_label_usd).tolist())
    assert len(table) == n
    # The records were read, not rewritten: byte for byte what the old code wrote.
    for p in (FIXTURE / "cells").glob("*.json"):
        assert (out / "cells" / p.name).read_text() == p.read_text()


def test_its_records_round_trip_through_cell_record():
    for cid, record in read_cells(Output(FIXTURE)).items():
        assert record.ok and record.cell_id == cid and record.metrics["val_accuracy"] > 0
        again = CellRecord.parse(record.to_json())
        assert again == record
        assert json.loads(record.to_json()) == json.loads((FIXTURE / "cells" / f"{cid}.json").read_text())


def test_the_new_code_looks_up_the_activation_entries_the_old_run_cached():
    """cache-meta/ holds each activation entry's meta.json, named by its key: the boundaries the
    new code cuts the encoder at for the sweep's freeze modes, and the keys it computes for the
    sweep's train and val texts, are the old run's (no model is loaded: the fingerprint is read)."""
    from raysweep.backbone import Boundary, boundary_for
    from raysweep.data import load_splits
    from raysweep.embed import activation_key

    cfg = load_sweep(FIXTURE / "sweep.yaml")
    metas = {p.stem: json.loads(p.read_text()) for p in (FIXTURE / "cache-meta").glob("*.json")}
    one = next(iter(metas.values()))
    wanted = {boundary_for(f, one["num_layers"], p, cfg.max_length, one["hidden_size"])
              for f in cfg.compare.freeze for p in cfg.poolings}
    assert wanted == {Boundary(**m["boundary"]) for m in metas.values()}
    splits = load_splits(cfg.data, cfg.split)
    texts = {len(splits.train): splits.train["text"].tolist(), len(splits.val): splits.val["text"].tolist()}
    for key, meta in metas.items():
        assert activation_key(meta["fingerprint"], Boundary(**meta["boundary"]), texts[meta["rows"]]) == key

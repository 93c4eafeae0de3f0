"""End to end on local Ray: a selection sweep on real SST-5 rows with the bundled MiniLM."""

import pandas as pd
import pytest

from raysweep import embed, scoring
from raysweep.config import load_sweep
from raysweep.sweep import expand, run_sweep
from raysweep.grid import cell_id, fixed_digest

pytestmark = pytest.mark.slow


def test_selection_sweep_scores_once_and_writes_diagnostics(tmp_path, sst5_subset, ray_local, monkeypatch):
    # 400 rows would be encoded and 600 pooled rows scored in-process; the cluster path (Ray Data)
    # is the one to test.
    monkeypatch.setattr(scoring, "RAY_MIN_POOLED_ROWS", 0)
    monkeypatch.setattr(embed, "RAY_MIN_ENCODE_ROWS", 0)
    path = tmp_path / "sel.yaml"
    path.write_text(f"""
name: sel
compare:
  strategy: [random, entropy, sqbc]
  fraction: [0, 1, 5]  # 5 x |labeled| is more than the pool: the whole pool
  freeze: [pooler]
replicate:
  seed: [0, 1]
data:
  path: {sst5_subset}
recipe:
  epochs: 3
selection:
  k: 5
""")
    cfg = load_sweep(path)
    logs = []
    out = tmp_path / "out"
    table = run_sweep(cfg, out, log=logs.append)

    assert len(table) == 18 and set(table["status"]) == {"ok"}, table["error"].tolist()
    assert set(table["rounds"]) == {1}
    train = pd.read_csv(sst5_subset).query("split == 'train'")
    n_labeled = sum(round(0.2 * n) for n in train["label"].value_counts())  # stratified 1/5 of 300 rows
    pool = 300 - n_labeled
    assert set(table["n_labeled"]) == {n_labeled}
    assert table.set_index(["strategy", "seed", "fraction"])["n_added"].groupby("fraction").unique().to_dict() == {
        0.0: [0], 1.0: [n_labeled], 5.0: [pool]}
    # Fraction 0 and the whole pool do not depend on the strategy: one training per seed, shared
    # by the three strategies' cells (trials.csv's `training`), so the same results.
    for fraction in (0.0, 5.0):
        rows = table[table.fraction == fraction]
        assert set(rows.groupby("seed")["training"].nunique()) == {1}
        assert set(rows.groupby("seed")["val_accuracy"].nunique()) == {1}
    # One encoder pass and one scoring pass in the driver, both through Ray Data; none in trials.
    encoded = [line for line in logs if line.startswith("encoded ")]
    assert len(encoded) == 1 and encoded[0].endswith("(Ray Data)")
    scored = [line for line in logs if line.startswith("scored ")]
    assert len(scored) == 1 and "rows (the pool and labeled) under each of 2 scoring models" in scored[0] and "Ray Data" in scored[0]
    # Trials found the driver's entries: a trial that missed would have added entries of its own.
    cache = out / "cache" / "selection"
    assert len(list((cache / "models").glob("*.pt"))) == 2 and len(list((cache / "scores").glob("*.npz"))) == 2

    for seed in (0, 1):
        diag = pd.read_csv(out / "diagnostics" / f"pooler-seed{seed}.csv")
        assert list(diag.columns) == ["freeze", "seed", "entropy", "sqbc"] and len(diag) == pool
        assert diag["entropy"].between(0, 1.61).all() and diag["sqbc"].between(0, 2).all()
    corr = pd.read_csv(out / "diagnostics" / "correlation.csv")
    assert list(corr.columns) == ["freeze", "seed", "pearson", "spearman"] and len(corr) == 2
    assert corr["pearson"].between(-1, 1).all()

    # Random cells keep their ids from before the selection section; the others carry it.
    fixed = fixed_digest(cfg)
    ids = dict(zip(zip(table.strategy, table.fraction, table.seed), table.cell_id))
    for cell in expand(cfg):
        if cell.strategy == "random":
            assert ids[(cell.strategy, cell.fraction, cell.seed)] == cell_id(cell, fixed)
        else:
            assert ids[(cell.strategy, cell.fraction, cell.seed)] != cell_id(cell, fixed)

    # Multi-round is another cell for model-based strategies only, recorded in `rounds`.
    before = {p.name for p in (out / "cells").iterdir()}
    grown = run_sweep(load_sweep(path, ["selection.rounds=2", "compare.fraction=[1]", "compare.strategy=[random, entropy]"]),
                      out, log=logs.append)
    new = {p.name for p in (out / "cells").iterdir()} - before
    assert len(new) == 2 and set(grown["rounds"]) == {2}
    assert len(list((cache / "models").glob("*.pt"))) == 4  # round two trained on labeled + round one, per seed
    assert set(grown.loc[grown.cell_id.isin({n[:-5] for n in new}), "strategy"]) == {"entropy"}

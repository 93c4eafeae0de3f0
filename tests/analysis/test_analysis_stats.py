"""The statistics on the hand-made table of conftest.py, checked against numbers worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import yaml
import pytest

from raysweep.analysis import stats
from raysweep.analysis.results import combined_trials, load_many
from handmade import write_trials

T_975_2 = 4.302652729911275  # Student-t 97.5% quantile with 2 degrees of freedom (any t table)
HALF = T_975_2 * 0.01 / math.sqrt(3)  # three seeds at offsets -0.01, 0, +0.01: sd = 0.01


@pytest.fixture
def ok(trials_dir):
    trials = combined_trials(load_many([trials_dir]))
    return trials[trials["status"] == "ok"]


def test_mean_ci_by_hand():
    mean, low, high = stats.mean_ci([0.44, 0.45, 0.46])
    assert mean == pytest.approx(0.45, abs=1e-12)
    assert (low, high) == (pytest.approx(0.45 - HALF, abs=1e-12), pytest.approx(0.45 + HALF, abs=1e-12))
    assert stats.mean_ci([0.3])[0] == 0.3 and math.isnan(stats.mean_ci([0.3])[1])
    assert all(math.isnan(v) for v in stats.mean_ci([]))
    assert stats.mean_ci([0.5, np.nan, 0.7])[0] == pytest.approx(0.6)  # NaN is dropped, not averaged


def test_failed_trials_are_excluded_and_parameters_detected(ok):
    assert len(ok) == 36  # the failed 37th row is not among them
    assert 3 not in set(ok["seed"])
    assert stats.varying_parameters(ok) == ["strategy", "fraction", "freeze", "seed"]
    assert stats.seed_counts(ok) == (3, 3)
    assert stats.seed_note(ok) == "3 seeds per point"


def test_summarize_per_cell(ok):
    s = stats.summarize(ok, "val_accuracy")
    assert len(s) == 12 and (s["n_seeds"] == 3).all()
    row = s[(s.strategy == "entropy") & (s.freeze == "pooler") & (s.fraction == 1.0)].iloc[0]
    assert row["mean"] == pytest.approx(0.44 + 0.05 + 0.02, abs=1e-12)
    assert row["sd"] == pytest.approx(0.01, abs=1e-12)
    assert row["ci_low"] == pytest.approx(0.51 - HALF, abs=1e-12)
    assert row["ci_high"] == pytest.approx(0.51 + HALF, abs=1e-12)


def test_aulc_definition():
    # Points (0, .40), (1, .47), (2, .52): area (.40+.47)/2 + (.47+.52)/2 = .93, over a range of 2.
    assert stats.aulc([0, 1, 2], [0.40, 0.47, 0.52]) == pytest.approx(0.465, abs=1e-12)
    assert stats.aulc([2, 0, 1], [0.52, 0.40, 0.47]) == pytest.approx(0.465, abs=1e-12)  # order-free
    # Uneven spacing weighs by width: (0, 0) (1, 1) (3, 1): (0.5 + 2) / 3.
    assert stats.aulc([0, 1, 3], [0.0, 1.0, 1.0]) == pytest.approx(2.5 / 3, abs=1e-12)
    assert math.isnan(stats.aulc([1.0], [0.5]))


def test_aulc_table(ok):
    a = stats.aulc_table(ok).set_index(["strategy", "freeze"])
    expected = {("random", "last-linear"): 0.45, ("entropy", "last-linear"): 0.465,
                ("random", "pooler"): 0.49, ("entropy", "pooler"): 0.505}
    for key, value in expected.items():
        row = a.loc[key]
        assert row["aulc"] == pytest.approx(value, abs=1e-12)
        # Per-seed AULC is value + offset[seed], so the interval is the same as a cell's.
        assert row["ci_low"] == pytest.approx(value - HALF, abs=1e-12)
        assert row["ci_high"] == pytest.approx(value + HALF, abs=1e-12)
        assert (row["n_seeds"], row["n_seeds_dropped"], row["n_fractions"]) == (3, 0, 3)


def test_aulc_drops_a_seed_missing_a_fraction(ok):
    holed = ok.drop(ok[(ok.strategy == "random") & (ok.freeze == "pooler") & (ok.seed == 2)
                       & (ok.fraction == 1.0)].index)
    row = stats.aulc_table(holed).set_index(["strategy", "freeze"]).loc[("random", "pooler")]
    assert (row["n_seeds"], row["n_seeds_dropped"]) == (2, 1)
    assert row["aulc"] == pytest.approx(0.49 - 0.005, abs=1e-12)  # seeds 0 and 1: offsets -0.01 and 0


def test_pearson_matches_numpy():
    rng = np.random.default_rng(3)
    x = rng.random(200)
    y = 0.3 * x + rng.random(200)
    r = stats.pearson(x, y)
    assert r["n"] == 200 and r["r"] == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-12)
    assert r["ci_low"] < r["r"] < r["ci_high"]
    assert math.isnan(stats.pearson([1, 1, 1, 1], [1, 2, 3, 4])["r"])  # constant input: no correlation


def test_varying_parameters_across_two_sweeps(tmp_path):
    a, b = write_trials(tmp_path / "a"), write_trials(tmp_path / "b")
    trials = combined_trials(load_many([a, b]))
    # Same sweep name twice: the directory tells them apart, and `sweep` becomes a varying parameter.
    assert set(trials["sweep"]) == {"handmade (a)", "handmade (b)"}
    assert stats.varying_parameters(trials[trials.status == "ok"])[0] == "sweep"


def test_two_sweeps_of_one_grid_are_one_sweep(tmp_path):
    a, b = write_trials(tmp_path / "a"), write_trials(tmp_path / "b")
    both = pd.read_csv(a / "trials.csv")
    extra = both[both["strategy"] == "random"].assign(strategy="margin")
    extra.to_csv(b / "trials.csv", index=False)
    both[both["strategy"] != "margin"].to_csv(a / "trials.csv", index=False)
    trials = combined_trials(load_many([a, b]))
    # Same fixed settings, disjoint cells: one grid, so `sweep` does not vary and margin meets random.
    assert trials["sweep"].nunique() == 1 and "sweep" not in stats.varying_parameters(trials)
    assert len(trials) == len(both[both["strategy"] != "margin"]) + len(extra)
    # Another recipe in one of them: two sweeps again.
    cfg = yaml.safe_load((b / "sweep.yaml").read_text())
    cfg["recipe"] = {**cfg.get("recipe", {}), "epochs": 7}
    (b / "sweep.yaml").write_text(yaml.safe_dump(cfg))
    assert combined_trials(load_many([a, b]))["sweep"].nunique() == 2


def test_the_best_row_names_the_baseline_on_a_tie():
    cells = pd.DataFrame({"strategy": ["entropy", "random", "sqbc"], "mean": [0.4, 0.4, 0.3]})
    assert stats.best_row(cells, "mean")["strategy"] == "random"
    assert stats.best_row(cells.assign(mean=[0.41, 0.4, 0.3]), "mean")["strategy"] == "entropy"
    pools = pd.DataFrame({"pool": ["llm", "real"], "strategy": ["random", "random"], "mean": [0.3, 0.3]})
    assert stats.best_row(pools, "mean")["pool"] == "real"

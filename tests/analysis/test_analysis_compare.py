"""Comparisons on hand-made results with known answers: fair pairs, the seed as the unit, Holm,
the t-test against scipy, seeds needed against simulation, labels needed by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from handmade import trial_rows
from scipy import stats as sps

from raysweep.analysis import compare


@pytest.fixture
def ok() -> pd.DataFrame:
    df = pd.DataFrame(trial_rows())
    return df[df["status"] == "ok"].reset_index(drop=True)


def whole_pool_at_2(df: pd.DataFrame) -> pd.DataFrame:
    """Fraction 2 asks for 200 rows of a 199-row pool: every strategy adds all of it, so both
    strategies train the same model there and their accuracies are equal (as in a real sweep)."""
    df = df.copy()
    at2 = df["fraction"] == 2
    df.loc[at2, "n_added"] = 199
    df.loc[at2, "n_train"] = 299
    random_at2 = df[at2 & (df.strategy == "random")].set_index(["freeze", "seed"])["val_accuracy"]
    df.loc[at2, "val_accuracy"] = [random_at2[(f, s)] for f, s in zip(df.loc[at2, "freeze"], df.loc[at2, "seed"])]
    return df


def test_pool_size_and_training_keys_are_derived_from_the_rows_added(ok):
    df = whole_pool_at_2(ok)
    assert set(compare.pool_sizes(df)) == {199}
    keys = compare.training_keys(df)
    at = lambda s, f, freeze="pooler", seed=0: keys[(df.strategy == s) & (df.fraction == f)  # noqa: E731
                                                     & (df.freeze == freeze) & (df.seed == seed)].item()
    assert at("random", 0) == at("entropy", 0)  # no rows added: one training
    assert at("random", 2) == at("entropy", 2)  # the whole pool: one training
    assert at("random", 1) != at("entropy", 1)
    assert at("random", 2) != at("random", 2, seed=1) and at("random", 2) != at("random", 2, "last-linear")
    # No trial was capped: nothing says how big the pool is, so only fraction 0 is shared.
    assert compare.pool_sizes(ok).isna().all()


def test_whole_pool_pairs_are_excluded(ok):
    table = compare.compare(whole_pool_at_2(ok))
    assert len(table) == 2
    for _, row in table.iterrows():
        assert row["fractions"] == "1"
        assert row["excluded"] == "0: no rows added; 2: whole pool"
        # Only fraction 1 is used: +0.02 on every seed, not (0.02 + 0) / 2 diluted by the zero pair.
        assert row["mean_diff"] == pytest.approx(0.02, abs=1e-12)
        assert row["n_seeds"] == 3


def test_a_recorded_training_field_replaces_the_derivation(ok):
    # The field says fraction 0 is one training per (freeze, seed) and fraction 2 is not: it is believed.
    df = whole_pool_at_2(ok)
    own = df["cell_id"] + "-" + df["seed"].astype(str)
    df["training"] = own.where(df["fraction"] > 0, "labeled-" + df["freeze"] + "-" + df["seed"].astype(str))
    table = compare.compare(df)
    assert (table["fractions"] == "1, 2").all() and (table["excluded"] == "0: one training").all()


def test_pools_at_the_whole_pool_are_not_one_training(ok):
    real = whole_pool_at_2(ok)
    real = real[real.strategy == "random"]
    llm = real.assign(pool="llm", val_accuracy=real["val_accuracy"] - 0.01 * (real["fraction"] > 0))
    table = compare.compare(pd.concat([real, llm]), "pool", "real")
    # Whole pools of different pools are different rows: only fraction 0 (no rows) is left out.
    assert (table["fractions"] == "1, 2").all() and (table["excluded"] == "0: no rows added").all()
    assert table["mean_diff"].to_numpy() == pytest.approx([-0.01, -0.01], abs=1e-12)


def test_holm_on_a_known_set():
    # Sorted: .005 x 4 = .02, .01 x 3 = .03, .03 x 2 = .06, .04 x 1 = .04 -> monotone .06.
    assert compare.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02], abs=1e-12)
    out = compare.holm([0.5, np.nan, 0.01])  # NaN neither counts nor changes
    assert out[0] == pytest.approx(0.5) and math.isnan(out[1]) and out[2] == pytest.approx(0.02)
    assert compare.holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert len(compare.holm([])) == 0


def test_the_seed_is_the_unit_and_the_t_test_matches_scipy():
    rng = np.random.default_rng(5)
    rows = []
    for seed in range(6):
        shift = rng.normal(0, 0.02)  # one seed's split and init move all its fractions together
        for fraction in (0.0, 1.0, 2.0, 3.0):
            base = 0.4 + 0.03 * fraction + shift
            for strategy, gain in (("random", 0.0), ("entropy", 0.006 + rng.normal(0, 0.01))):
                rows.append({"pool": "real", "strategy": strategy, "fraction": fraction, "freeze": "pooler",
                             "seed": seed, "val_accuracy": base + gain * (fraction > 0) + rng.normal(0, 0.004)})
    df = pd.DataFrame(rows)
    row = compare.compare(df).iloc[0]
    used = df[df.fraction > 0]
    a = used[used.strategy == "entropy"].groupby("seed")["val_accuracy"].mean()
    b = used[used.strategy == "random"].groupby("seed")["val_accuracy"].mean()
    expected = sps.ttest_rel(a, b)
    assert row["n_seeds"] == 6  # six seeds, not 18 (fraction, seed) pairs
    assert row["p"] == pytest.approx(expected.pvalue, rel=1e-10)
    ci = expected.confidence_interval(0.95)
    assert (row["ci_low"], row["ci_high"]) == (pytest.approx(ci.low, abs=1e-12), pytest.approx(ci.high, abs=1e-12))
    assert row["mean_diff"] == pytest.approx((a - b).mean(), abs=1e-12)
    # The secondary table tests each fraction on its own, also over seeds.
    by = compare.compare(df, by_fraction=True)
    assert list(by["fraction"]) == [1.0, 2.0, 3.0] and (by["n_seeds"] == 6).all()
    at1 = used[used.fraction == 1]
    assert by.iloc[0]["p"] == pytest.approx(sps.ttest_rel(at1[at1.strategy == "entropy"]["val_accuracy"].to_numpy(),
                                                          at1[at1.strategy == "random"]["val_accuracy"].to_numpy()
                                                          ).pvalue, rel=1e-10)
    assert by["p_holm"].to_numpy() == pytest.approx(compare.holm(by["p"]), abs=1e-12)


def test_holm_runs_within_a_table_and_marks_what_survives():
    rng = np.random.default_rng(1)
    rows = []
    for seed in range(5):
        for strategy, gain in (("random", 0), ("big", 0.05), ("small", 0.004), ("none", 0.0)):
            rows.append({"strategy": strategy, "fraction": 1.0, "freeze": "pooler", "seed": seed,
                         "val_accuracy": 0.4 + gain + rng.normal(0, 0.005)})
    table = compare.compare(pd.DataFrame(rows)).set_index("strategy")
    assert table["p_holm"].to_numpy() == pytest.approx(compare.holm(table["p"]), abs=1e-12)
    assert table.loc["big", "significant"] and not table.loc["none", "significant"]
    assert (table["p_holm"] >= table["p"]).all()


def test_seeds_needed_matches_the_textbook_and_simulation():
    # G*Power / Cohen: a two-sided one-sample (paired) t-test at alpha .05 needs 34 for d = 0.5, 15 for d = 0.8.
    assert compare.seeds_needed(0.5, 1.0) == 34
    assert compare.seeds_needed(0.8, 1.0) == 15
    assert compare.seeds_needed(-0.5, 1.0) == 34  # the sign does not matter
    assert math.isnan(compare.seeds_needed(0.0, 1.0)) and compare.seeds_needed(0.01, 0.0) == 2
    assert math.isinf(compare.seeds_needed(0.001, 1.0, max_seeds=50))
    # Simulated experiments with an effect of known size: at n seeds about 80% reject, at n - 1 fewer.
    effect, sd, alpha = 0.01, 0.012, 0.05 / 4
    n = int(compare.seeds_needed(effect, sd, alpha))
    rng = np.random.default_rng(0)

    def rejected(k: int) -> float:
        d = rng.normal(effect, sd, size=(20_000, k))
        return float((sps.ttest_1samp(d, 0.0, axis=1).pvalue < alpha).mean())

    assert 0.79 <= rejected(n) <= 0.84
    assert rejected(n - 1) < 0.80


def test_labels_needed_by_hand(ok):
    # random: 0.44 + 0.05 f (pooler), entropy: +0.02 at f > 0; rows added = 100 f. Best end: entropy at f = 2,
    # 0.56; target 0.98 x 0.56 = 0.5488. entropy crosses between f = 1 (0.51) and 2 (0.56): 100 + 100 x
    # 0.0388 / 0.05 = 177.6 rows; random ends at 0.54 < target: not reached.
    table = compare.labels_needed(ok, n_boot=300).set_index(["freeze", "strategy"])
    assert table.loc[("pooler", "entropy"), "target"] == pytest.approx(0.5488, abs=1e-12)
    assert table.loc[("pooler", "entropy"), "rows_needed"] == pytest.approx(177.6, abs=1e-9)
    assert math.isnan(table.loc[("pooler", "random"), "rows_needed"])
    assert table.loc[("pooler", "random"), "reached_share"] == 0 and math.isinf(table.loc[("pooler", "random"),
                                                                                           "ci_high"])
    low, high = table.loc[("pooler", "entropy"), ["ci_low", "ci_high"]]
    assert low <= 177.6 <= high and high - low < 5  # seeds move both curves together
    assert compare.first_crossing([0, 1, 2], [0.5, 0.6, 0.7], 0.45) == 0  # reached at the first point
    assert compare.first_crossing([0, 1], [0.5, 0.4], 0.6) != compare.first_crossing([0, 1], [0.5, 0.4], 0.6)  # NaN


def test_test_split_check_flags_disagreement():
    val = pd.DataFrame({"strategy": ["a", "b", "c"], "baseline": "random", "metric": "val_accuracy",
                        "mean_diff": [0.02, 0.01, -0.01], "significant": [True, False, False]})
    test = val.assign(mean_diff=[0.001, 0.005, 0.01], ci_low=[-0.01, -0.01, 0.0], ci_high=[0.012, 0.02, 0.02],
                      p=[0.5, 0.4, 0.06])
    out = compare.with_test_check(val, test).set_index("strategy")["test_agrees"]
    # a: survives on val, test interval includes 0; b: same sign, not significant; c: the other sign.
    assert out.to_dict() == {"a": False, "b": True, "c": False}


def test_labels_needed_skips_a_panel_with_one_fraction(ok):
    one = ok[(ok.freeze == "last-linear") | (ok.fraction == 1)]  # pooler has only fraction 1 left
    assert set(compare.labels_needed(one, n_boot=50)["freeze"]) == {"last-linear"}



def test_the_sqbc_claim_is_an_equivalence_at_one_point():
    from raysweep.analysis import findings

    def verdict(low, high, significant=False):
        t = pd.DataFrame({"strategy": ["sqbc"], "freeze": ["pooler"], "metric": ["val_accuracy"], "baseline": "random",
                          "mean_diff": [(low + high) / 2], "ci_low": [low], "ci_high": [high],
                          "significant": [significant]})
        return findings.claims({"strategy": t}, None, "5 seeds")[0]

    assert "supported" in verdict(-0.004, 0.006) and "differs" not in verdict(-0.004, 0.006)
    assert "supported" in verdict(0.003, 0.009, True) and "differs from random" in verdict(0.003, 0.009, True)
    assert "not shown" in verdict(-0.004, 0.016)
    assert "contradicted" in verdict(0.012, 0.03, True)


def test_the_headroom_finding_reads_shares_of_the_oracle_gap_only_where_there_is_a_gap():
    from raysweep.analysis import findings

    def claims(oracle_low):
        t = pd.DataFrame({"strategy": ["oracle", "cal", "qbc-seeds"], "freeze": "pooler", "metric": "val_accuracy",
                          "baseline": "random", "mean_diff": [0.04, 0.01, -0.02], "ci_low": [oracle_low, -0.01, -0.03],
                          "ci_high": [0.05, 0.02, -0.01], "significant": [True, False, True],
                          "test_mean_diff": [0.02, 0.005, 0.0], "test_ci_low": [0.01, -0.01, -0.01],
                          "test_ci_high": [0.03, 0.02, 0.01]})
        return [c for c in findings.claims({"strategy": t}, None, "10 seeds") if c.startswith("*Headroom")]

    [found] = claims(0.03)
    assert "oracle +4.0 [+3.0, +5.0] over random (test +2.0 [+1.0, +3.0])" in found
    assert "cal 25% (test 25%)" in found and "qbc-seeds -50% (test 0%)" in found
    [none] = claims(-0.001)
    assert "no headroom shown" in none and "cal" not in none


def test_qbc_seeds_comparisons_say_its_seeds_share_a_committee():
    from raysweep.analysis import findings

    row = pd.Series({"strategy": "qbc-seeds", "baseline": "random", "metric": "val_accuracy", "fractions": "1",
                     "n_seeds": 10, "mean_diff": 0.01, "ci_low": 0.0, "ci_high": 0.02, "p": 0.04, "significant": True,
                     "p_holm": 0.04})
    assert "not independent replicates" in findings.sentence(row, "strategy", [], 1)
    assert "not independent" not in findings.sentence(row.replace("qbc-seeds", "cal"), "strategy", [], 1)

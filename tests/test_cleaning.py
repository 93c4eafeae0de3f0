"""cleaning.py: confident learning over LLM labels (llm_cleaned) and routing the least-trusted to a
person (llm_routed), on hand-made probabilities with planted label errors; then one real trial of
each pool on a tiny encoder (no Ray)."""

from __future__ import annotations

import numpy as np
import pytest

from raysweep import cleaning
from raysweep.config import ConfigError, RecipeConfig, SweepConfig, from_dict
from raysweep.grid import Cell
from raysweep.train import TrialInputs, select_rows


def noisy(n: int = 1000, k: int = 5, error_rate: float = 0.2, seed: int = 0):
    """(gold, given labels with `error_rate` of them planted wrong, out-of-sample probabilities of a
    model that is right ~70% of the time and unsure where it is wrong, as a real one is)."""
    rng = np.random.default_rng(seed)
    gold = rng.integers(0, k, n)
    given = gold.copy()
    planted = rng.random(n) < error_rate
    given[planted] = (gold[planted] + rng.integers(1, k, planted.sum())) % k  # always another class
    alpha = np.ones((n, k))
    alpha[np.arange(n), gold] = 6.0
    probs = np.array([rng.dirichlet(a) for a in alpha])
    return gold, given, probs, planted


def test_confident_learning_finds_most_planted_label_errors_and_little_else():
    gold, given, probs, planted = noisy()
    flagged = cleaning.flag_issues(given, probs)
    recall = (flagged & planted).sum() / planted.sum()
    precision = (flagged & planted).sum() / flagged.sum()
    assert recall >= 0.85 and precision >= 0.85, (recall, precision)  # 0.93 and 0.96 on this seed
    # Against chance: flagging as many rows at random would be right 20% of the time.
    assert precision > 2 * planted.mean()


def test_confident_learning_forks_no_process_pool(monkeypatch):
    """A trial runs in a threaded Ray worker, where a forked pool can deadlock on a lock copied
    mid-hold (a suite run hung there): cleanlab must work in the trial's own process."""
    import multiprocessing

    def no_pool(*args, **kwargs):
        raise AssertionError("cleanlab started a multiprocessing.Pool inside a trial")

    monkeypatch.setattr(multiprocessing, "Pool", no_pool)
    gold, given, probs, planted = noisy(seed=3)
    assert cleaning.flag_issues(given, probs).any()


def test_a_cell_whose_llm_gave_one_class_flags_nothing():
    """cleanlab refuses fewer than two classes: no noise matrix to estimate, nothing flagged."""
    probs = np.full((4, 5), 0.2)
    assert not cleaning.flag_issues(np.array([2, 2, 2, 2]), probs).any()


@pytest.mark.parametrize("n", [0, 1, 7, 10, 333])
@pytest.mark.parametrize("percent", [0, 5, 20, 50, 100])
def test_routing_sends_exactly_k_percent_the_least_trusted_first(n, percent):
    gold, given, probs, _ = noisy(n=max(n, 1), seed=n)
    given, probs = given[:n], probs[:n]
    sent = cleaning.route(given, probs, percent)
    assert sent.sum() == int(round(n * percent / 100))
    if 0 < sent.sum() < n:
        quality = probs[np.arange(n), given]  # self_confidence: the model's probability of the given label
        assert quality[sent].max() <= quality[~sent].min()


def test_routing_is_deterministic_on_ties():
    probs = np.full((10, 5), 0.2)
    labels = np.arange(10) % 5
    np.testing.assert_array_equal(cleaning.route(labels, probs, 30), np.arange(10) < 3)


def inputs_for(n_labeled: int = 10, n_pool: int = 200, seed: int = 1):
    """TrialInputs as an annotated trial sees them: LLM labels in train_labels, gold in select_labels."""
    gold, llm, _, _ = noisy(n_labeled + n_pool, seed=seed)
    llm[:n_labeled] = gold[:n_labeled]
    return TrialInputs(train_labels=llm, val_labels=gold[:3], labeled=np.arange(n_labeled),
                       pool_rows=np.arange(n_labeled, n_labeled + n_pool), train_acts=None, val_acts=None,
                       num_classes=5, select_labels=gold)


@pytest.fixture
def probs_of(monkeypatch):
    """The labeled-set model stood in by noisy()'s probabilities (the same rows: the same seed)."""
    _, _, probs, _ = noisy(210, seed=1)
    monkeypatch.setattr(cleaning, "outside_probs", lambda cell, inputs, rows, recipe: probs[rows])
    return probs


CELL = Cell("llm_cleaned", "random", 1.0, "pooler", 0)


def test_cleaned_drops_the_flagged_rows_and_says_how_accurate_their_llm_labels_were(probs_of):
    inp = inputs_for()
    added = np.arange(10, 210)[::-1]  # in pick order: what the cell trains on is sorted
    gold, llm = inp.select_labels, inp.train_labels
    out = cleaning.cleaned(CELL, inp, added, RecipeConfig(), "drop")
    flagged = cleaning.flag_issues(llm[10:], probs_of[10:])
    f = out.fields
    assert f["labels_flagged"] == f["labels_removed"] == flagged.sum() > 0 and f["labels_replaced"] == 0
    np.testing.assert_array_equal(out.rows, np.concatenate([np.arange(10), np.arange(10, 210)[~flagged]]))
    np.testing.assert_array_equal(out.labels, np.concatenate([gold[:10], llm[10:][~flagged]]))
    assert f["flagged_llm_accuracy"] == pytest.approx(np.mean(llm[10:][flagged] == gold[10:][flagged]))
    assert f["llm_label_accuracy"] == pytest.approx(np.mean(llm[10:] == gold[10:]))
    assert f["trained_label_accuracy"] > f["llm_label_accuracy"] > f["flagged_llm_accuracy"]
    assert f["replacement_accuracy"] is None
    assert (f["llm_labels"], f["human_labels"]) == (200, 0)  # the dropped rows' LLM labels were paid for too


def test_cleaned_can_replace_the_flagged_labels_with_the_models_instead(probs_of):
    inp = inputs_for()
    out = cleaning.cleaned(CELL, inp, np.arange(10, 210), RecipeConfig(), "replace")
    flagged = cleaning.flag_issues(inp.train_labels[10:], probs_of[10:])
    np.testing.assert_array_equal(out.rows, np.arange(210))
    expected = np.where(flagged, probs_of[10:].argmax(axis=1), inp.train_labels[10:])
    np.testing.assert_array_equal(out.labels[10:], expected)
    f = out.fields
    assert f["labels_replaced"] == flagged.sum() and f["labels_removed"] == 0
    assert f["replacement_accuracy"] == pytest.approx(np.mean(expected[flagged] == inp.select_labels[10:][flagged]))


def test_routed_buys_gold_for_exactly_k_percent_and_records_who_paid(probs_of):
    inp = inputs_for()
    out = cleaning.routed(CELL, inp, np.arange(10, 210), RecipeConfig(), 15)
    sent = cleaning.route(inp.train_labels[10:], probs_of[10:], 15)
    np.testing.assert_array_equal(out.labels[10:], np.where(sent, inp.select_labels[10:], inp.train_labels[10:]))
    f = out.fields
    assert (f["human_labels"], f["llm_labels"], f["labels_replaced"], f["labels_removed"]) == (30, 200, 30, 0)
    assert f["replacement_accuracy"] == 1.0  # gold
    assert f["flagged_llm_accuracy"] < f["llm_label_accuracy"]  # the least-trusted labels are the worse ones


def test_a_cell_that_adds_no_rows_trains_on_labeled_and_records_zeros():
    inp = inputs_for()
    for fn, arg in ((cleaning.cleaned, "drop"), (cleaning.routed, 20)):
        out = fn(CELL, inp, np.empty(0, dtype=np.int64), RecipeConfig(), arg)
        np.testing.assert_array_equal(out.rows, np.arange(10))
        assert out.fields["labels_flagged"] == 0 and out.fields["human_labels"] == 0
        assert out.fields["llm_label_accuracy"] is None


def test_the_cleaning_settings_are_checked_by_name():
    with pytest.raises(ConfigError, match=r"cleaning\.flagged: 'fix' is not one of drop, replace"):
        from_dict(SweepConfig, {"cleaning": {"flagged": "fix"}})
    with pytest.raises(ConfigError, match=r"cleaning\.route_percent: 120(\.0)? is not between 0 and 100"):
        from_dict(SweepConfig, {"cleaning": {"route_percent": 120}})
    with pytest.raises(ConfigError, match=r"cleaning\.k"):
        from_dict(SweepConfig, {"cleaning": {"k": 3}})


@pytest.mark.parametrize("pool", ["llm_cleaned", "llm_routed"])
def test_a_real_trial_of_the_pool_trains_on_its_cleaned_labels(pool, tiny_bert, tmp_path):
    """The tiny encoder, no Ray: the labeled-set model is really trained (and cached), its
    probabilities choose the labels, and the trial's record carries the pool's fields."""
    from raysweep.backbone import Backbone, boundary_for
    from raysweep.embed import ensure_activations, load_activations
    from tiny import TINY_TEXTS, run_trial

    b = boundary_for("pooler", Backbone(tiny_bert).num_layers, "pooler", 32)
    [train] = ensure_activations(tiny_bert, TINY_TEXTS * 5, [b], tmp_path, use_ray=False, log=lambda *_: None)
    [val] = ensure_activations(tiny_bert, TINY_TEXTS, [b], tmp_path, use_ray=False, log=lambda *_: None)
    gold = np.arange(40) % 5
    llm = gold.copy()
    llm[10:] = (gold[10:] + (np.arange(30) % 3 == 0)) % 5  # every third LLM label wrong
    inp = TrialInputs(train_labels=llm, val_labels=gold[:8], labeled=np.arange(10), pool_rows=np.arange(10, 40),
                      train_acts=load_activations(train), val_acts=load_activations(val), num_classes=5,
                      cache_dir=str(tmp_path), select_labels=gold)
    recipe = RecipeConfig(epochs=3, batch_size=8)
    cell = Cell(pool, "random", 2.0, "pooler", 0)
    metrics = run_trial(cell, inp, recipe)
    added = select_rows(cell, inp)
    assert metrics["n_added"] == 20 and metrics["llm_labels"] == 20
    assert metrics["n_train"] == 10 + 20 - metrics["labels_removed"]
    assert metrics["llm_label_accuracy"] == pytest.approx(np.mean(llm[added] == gold[added]))
    if pool == "llm_routed":
        assert metrics["human_labels"] == 4  # 20% of 20


def test_the_cleaning_settings_do_not_touch_the_annotation_so_no_label_is_bought_again():
    from raysweep import annotation

    base = {"compare": {"pool": ["llm_annotated", "llm_cleaned", "llm_routed"]},
            "llm": {"base_url": "http://127.0.0.1:9/v1", "api_key_env": "none", "model": "m"}}
    other = {**base, "cleaning": {"flagged": "replace", "route_percent": 50}}
    assert annotation.config_key(from_dict(SweepConfig, base)) == annotation.config_key(from_dict(SweepConfig, other))


def test_trials_csv_has_the_cleaning_columns_only_when_a_record_has_them():
    """And the label counts always: a record without them gets them derived from its pool's
    labeled_by and the rows it added (costs.py), as the cost answer prices them."""
    from dataclasses import asdict

    from raysweep.grid import CellRecord, results_table

    cfg = from_dict(SweepConfig, {"compare": {"pool": ["real", "llm_routed"], "fraction": [1], "freeze": ["pooler"]},
                                  "replicate": {"seed": [0]}})
    cells = [Cell("real", "random", 1.0, "pooler", 0), Cell("llm_routed", "random", 1.0, "pooler", 0)]
    metrics = {"val_accuracy": 0.5, "n_added": 10}
    done = {"a": CellRecord("a", asdict(cells[0]), metrics=metrics),
            "b": CellRecord("b", asdict(cells[1]), metrics={**metrics, "human_labels": 2, "llm_labels": 10})}
    table = results_table(cells, ["a", "b"], done, cfg)
    assert table["human_labels"].tolist() == [10, 2] and table["llm_labels"].tolist() == [0, 10]
    assert "labels_removed" not in table.columns
    alone = results_table(cells[:1], ["a"], {"a": done["a"]}, cfg)
    assert "labels_flagged" not in alone.columns and alone["human_labels"].tolist() == [10]

"""The stopping criterion (stopping.py) on hand-made rounds: kappa, its average, the budget, the price."""

from __future__ import annotations

import numpy as np

from raysweep import stopping


def _round(labeled, acc, std=0.02, folds=5, kappa=None, preds=None):
    rec = {"labeled": labeled, "cv_accuracy": acc, "cv_std": std, "cv_folds": folds, "stopping": {"kappa": kappa}}
    if preds is not None:
        rec["_stop_set"] = preds
    return rec


def test_kappa_is_one_for_identical_and_zero_for_chance_level_agreement():
    a = np.array(["x", "y"] * 50)
    assert stopping.kappa(a, a) == 1.0
    assert stopping.kappa(np.array(["x"] * 10), np.array(["x"] * 10)) == 1.0  # sklearn says nan here
    assert abs(stopping.kappa(a, np.roll(a, 1))) == 1.0  # every label flipped: -1
    assert stopping.kappa(a, np.array(["x"] * 100)) == 0.0


def test_first_model_keeps_labeling_and_says_why():
    out = stopping.assess([], {"a": "x", "b": "y"}, labeled=50, batch=20, acc=0.4, std=0.05, folds=5, budget=None)
    assert out["decision"] == "keep labeling"
    assert out["kappa"] is None and "first model" in out["line"]
    assert "not known yet" in out["line"]


def test_settled_predictions_over_the_window_say_stop_with_the_price():
    preds = {str(i): "xy"[i % 2] for i in range(200)}
    history = [_round(50, 0.40), _round(70, 0.45, kappa=0.995), _round(90, 0.46, kappa=0.992, preds=preds)]
    out = stopping.assess(history, dict(preds), labeled=110, batch=20, acc=0.47, std=0.02, folds=5, budget=None)
    assert out["kappa"] == 1.0
    assert out["kappa_average"] == round(np.mean([0.995, 0.992, 1.0]), 4)
    assert out["decision"] == "stop" and out["line"].startswith("stop: predictions have settled")
    # +1 point for 20 rows at the last round's rate, with an interval around it
    assert out["cv_gain_points"] == 1.0
    low, high = out["cv_gain_interval"]
    assert low < 1.0 < high
    assert "+1.0 points per 20 rows" in out["line"]


def test_moving_predictions_keep_labeling_and_the_cost_scales_to_one_batch():
    old = {str(i): "xy"[i % 2] for i in range(200)}
    new = {k: ("x" if int(k) < 60 else v) for k, v in old.items()}  # 30 of 200 changed
    history = [_round(50, 0.40, kappa=0.5), _round(90, 0.44, kappa=0.7, preds=old)]
    out = stopping.assess(history, new, labeled=130, batch=20, acc=0.48, std=0.02, folds=5, budget=None)
    assert out["decision"] == "keep labeling"
    assert 0 < out["kappa"] < 0.99 and out["kappa_average"] < 0.99
    assert out["cost_points_per_batch"][0] == 2.0  # +4 points over 40 rows: +2 per batch of 20


def test_a_spent_budget_says_stop_even_when_predictions_move():
    out = stopping.assess([_round(50, 0.40, kappa=0.3, preds={"a": "x"})], {"a": "y"}, labeled=200, batch=20,
                          acc=0.41, std=0.02, folds=5, budget=200)
    assert out["budget_left"] == 0 and out["decision"] == "stop"
    assert "budget is spent" in out["line"]
    left = stopping.assess([], {"a": "x"}, labeled=150, batch=20, acc=0.41, std=0.02, folds=5, budget=200)
    assert left["budget_left"] == 50 and "50 rows left" in left["line"]


def test_the_stop_set_is_the_same_rows_whatever_the_file_order():
    ids = np.array([f"r{i}" for i in range(5000)])
    a = set(ids[stopping.stop_set(ids, 0)])
    b = set(ids[::-1][stopping.stop_set(ids[::-1], 0)])
    assert a == b and len(a) == stopping.STOP_SET_ROWS
    assert set(ids[stopping.stop_set(ids, 1)]) != a

"""What the figures and findings claim matches what was measured: an interval only over the seeds
of one cell, labels-needed only from two seeds or more, "survives" only where a test ran."""

from __future__ import annotations

import pandas as pd
import pytest
from handmade import trial_rows

from raysweep.analysis import compare, figures, findings


@pytest.fixture
def drawn(monkeypatch):
    """Each figure drawn, kept instead of written: {name: matplotlib Figure}."""
    kept = {}

    def keep(fig, out_dir, name):
        kept[name] = fig
        return out_dir / f"{name}.png"

    monkeypatch.setattr(figures, "_save", keep)
    return kept


def bands(fig) -> int:
    """Interval bands (seaborn's fill_between) and error bars drawn on a figure."""
    from matplotlib.collections import PolyCollection

    polys = sum(isinstance(c, PolyCollection) for ax in fig.axes for c in ax.collections)
    bars = sum(len(line.get_xdata()) == 2 and line.get_xdata()[0] == line.get_xdata()[1]
               for ax in fig.axes for line in ax.lines)  # a vertical error bar: one x, two y
    return polys + bars


def one_seed() -> pd.DataFrame:
    return pd.DataFrame([r for r in trial_rows() if r["seed"] == 0])


def test_single_seed_figures_draw_no_interval_and_say_so(drawn, tmp_path):
    trials = one_seed()
    figures.learning_curves(trials, tmp_path)
    figures.train_vs_val(trials, tmp_path)
    figures.differences(trials, tmp_path)
    for name in ("learning_curves", "train_vs_val", "learning_curves_vs_random"):
        assert bands(drawn[name]) == 0, name
    assert "1 seed per point, so no interval" in drawn["learning_curves"]._suptitle.get_text()
    assert "so no band" in drawn["learning_curves_vs_random"]._suptitle.get_text()


def test_seeds_of_one_cell_get_their_band(drawn, tmp_path):
    figures.learning_curves(pd.DataFrame(trial_rows()), tmp_path)
    assert bands(drawn["learning_curves"]) > 0
    assert "band: 95% t-interval" in drawn["learning_curves"]._suptitle.get_text()


def test_a_figure_pooling_cells_draws_no_interval_and_counts_a_shared_training_once(drawn, tmp_path):
    trials = pd.DataFrame(trial_rows())
    # Fraction 0: entropy's cells ride on random's training; a second pool rides on the same one.
    trials["training"] = trials["cell_id"] + "-" + trials["seed"].astype(str)
    copy = trials[trials["fraction"] == 0].assign(pool="llm")
    both = pd.concat([trials, copy], ignore_index=True)
    figures.parameter_plot(both, "strategy", tmp_path)
    fig = drawn["by_strategy"]
    assert bands(fig) == 0
    title = fig.axes[0].get_title()
    assert "no interval: the trials of a value are not seeds of one cell" in title
    assert f"{trials['val_accuracy'].notna().sum()} trials" in title  # the llm copies share their training: not counted again


def test_labels_needed_needs_two_seeds():
    assert compare.labels_needed(one_seed(), n_boot=50).empty
    table = compare.labels_needed(pd.DataFrame(trial_rows()), n_boot=50)
    assert len(table) and (table["n_seeds"] == 3).all()


def test_no_survives_or_does_not_survive_where_no_test_ran():
    rows = pd.DataFrame({"strategy": ["entropy", "margin"], "freeze": ["pooler"] * 2, "metric": "val_accuracy",
                         "baseline": "random", "mean_diff": [0.02, -0.01], "ci_low": float("nan"),
                         "ci_high": float("nan"), "p": float("nan"), "p_holm": float("nan"),
                         "significant": False})
    [claim] = findings.claims({"strategy": rows}, None, "1 seed")
    assert "not tested: too few seeds for a test" in claim and "surviv" not in claim
    tested = rows.assign(p=[0.2, 0.4], p_holm=[0.4, 0.4])
    [claim] = findings.claims({"strategy": tested}, None, "3 seeds")
    assert "not shown: none of 2 comparisons survives the correction" in claim

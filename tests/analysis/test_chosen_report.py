"""The report's "Chosen rows" section on hand-made chosen/ records."""

from __future__ import annotations

import numpy as np
import pandas as pd
from handmade import write_trials

from raysweep import chosen
from raysweep.analysis import analyze
from raysweep.storage import Output
from raysweep.train import Chosen

N_ROWS = 100  # rows 0..19 labeled, 20..99 the pool; gold label = row % 5


def _record(results, with_old_cell: bool = True):
    """Entropy always picks rows of classes 1 and 3 (the neighbours), random the pool's own mix."""
    out = Output(results)
    labels = np.arange(N_ROWS) % 5
    chosen.write_rows_table(out, "fx", [f"sentence {i}" for i in range(N_ROWS)], labels, np.arange(20))
    trials = pd.read_csv(results / "trials.csv")
    ok = trials[(trials["status"] == "ok") & (trials["fraction"] > 0)].drop_duplicates("cell_id")
    for i, cell in enumerate(ok.itertuples()):
        if with_old_cell and i == 0:
            continue  # a cell finished before rows were recorded
        n = int(10 * cell.fraction)
        if cell.strategy == "entropy":
            rows = np.array([r for r in range(20, N_ROWS) if r % 5 in (1, 3)][:n])
            scores = np.linspace(1.5, 1.0, n)
        else:
            rows = np.random.default_rng(i).permutation(np.arange(20, N_ROWS))[:n]
            scores = np.full(n, np.nan)
        chosen.write_cell(out, cell.cell_id, Chosen(rows, scores, np.zeros(n, dtype=np.int64)), labels, "fx")


def test_the_report_shows_what_each_strategy_chose(tmp_path, quick_figures):
    quick_figures.add("chosen_label_distribution")  # its file is checked below
    results = write_trials(tmp_path / "results")
    _record(results)
    report = analyze([results], tmp_path / "report", n_boot=200).read_text()
    assert "## Chosen rows" in report
    assert (tmp_path / "report" / "figures" / "chosen_label_distribution.png").stat().st_size > 5000
    assert "1 of 8 finished cells have no chosen rows on record" in report
    top = pd.read_csv(tmp_path / "report" / "tables" / "top_chosen_rows.csv")
    ent = top[top["strategy"] == "entropy"]
    assert list(ent["row"]) == [21, 23, 26, 28, 31]  # always picked first, in this order
    assert set(ent["gold"]) <= {"negative", "positive"} and ent["text"].iloc[0] == "sentence 21"
    assert ent["mean_score"].iloc[0] == 1.5
    assert top[top["strategy"] == "random"]["mean_score"].isna().all()


def test_a_sweep_without_chosen_rows_says_so(trials_only_report):
    # The hand-made trials alone (conftest.py: write_trials, then `raysweep analyze`): no chosen/.
    assert not (trials_only_report.parent.parent / "results" / "chosen").exists()
    report = trials_only_report.read_text()
    assert "8 of 8 finished cells have no chosen rows on record" in report
    assert "no cell of the real pool has chosen rows on record" in report
    assert not (trials_only_report.parent / "figures" / "chosen_label_distribution.png").exists()

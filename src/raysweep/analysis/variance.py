"""Which axis matters: the variance of a sweep's metric split over its axes, the seed and the
evaluation rows (the report's "Which axis matters" section).

The experimental-design counterpart of a tuner's parameter importance. Over the successful
trials of one metric:

- each compared axis (strategy, fraction, freeze, pool, encoder, ...): the variance of its level
  means around the grand mean, weighted by trials (its main effect);
- interactions of the compared axes: what the cell means vary beyond the main effects;
- seed: the variance of trials around their cell's mean (every seed-to-seed difference);
- evaluation rows: how much a trial's metric would move on a new evaluation set of the same size,
  the mean over trials of var(per-row values) / rows (analysis/rows.py's per-row values; only
  trials with predictions on record count).

The first three add up to the variance of the trials' metric exactly (population variances);
the rows' term is beside them, on the same scale. In a balanced grid the main effects are
orthogonal; in an unbalanced one (failed cells) they are approximate, and the interactions term
takes up the difference (clipped at zero).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from raysweep.analysis import figures
from raysweep.analysis.rows import ROW_METRICS, Predictions
from raysweep.analysis.stats import cell_columns

COLUMNS = ["metric", "component", "kind", "variance_pp2", "sd_pp", "share", "trials"]


def decompose(ok: pd.DataFrame, metric: str, preds: Predictions | None = None,
              num_classes: int | None = None) -> pd.DataFrame:
    """One row per component: its variance in squared percentage points, sd, share of the sum."""
    data = ok.dropna(subset=[metric])
    if len(data) < 2:
        return pd.DataFrame(columns=COLUMNS)
    y = data[metric].to_numpy(dtype=float) * 100
    grand = y.mean()
    axes = [c for c in cell_columns(data) if data[c].nunique(dropna=False) > 1]
    rows = []

    def between(by: list[str]) -> float:
        means = data.assign(_y=y).groupby(by, dropna=False)["_y"].transform("mean").to_numpy()
        return float(np.mean((means - grand) ** 2))

    main = 0.0
    for axis in axes:
        v = between([axis])
        main += v
        rows.append((axis, "compared", v))
    cells = between(cell_columns(data)) if cell_columns(data) else 0.0
    if len(axes) > 1:
        rows.append(("interactions", "compared", max(cells - main, 0.0)))
    rows.append(("seed", "seed", float(np.mean((y - grand) ** 2)) - cells))
    rows_var = _rows_variance(data, metric, preds, num_classes)
    if rows_var is not None:
        rows.append(("evaluation rows", "evaluation rows", rows_var))
    table = pd.DataFrame(rows, columns=["component", "kind", "variance_pp2"])
    table["variance_pp2"] = table["variance_pp2"].clip(lower=0)
    table["sd_pp"] = np.sqrt(table["variance_pp2"])
    total = table["variance_pp2"].sum()
    table["share"] = table["variance_pp2"] / total if total > 0 else np.nan
    table["trials"] = len(data)
    return table.assign(metric=metric)[COLUMNS]


def _rows_variance(data: pd.DataFrame, metric: str, preds: Predictions | None, num_classes: int | None):
    """Mean over trials with predictions of var(per-row values) / rows, in pp^2; None when none has any."""
    name = metric.removeprefix("val_").removeprefix("test_")
    split = "test" if metric.startswith("test_") else "val"
    if preds is None or name not in ROW_METRICS:
        return None
    ids = [c for c in data["cell_id"] if preds.has(split, c)]
    if not ids:
        return None
    out = []
    for cid in ids:  # one at a time: the cells of several sweeps may sit on different evaluation sets
        v = preds.values(split, [cid], metric, num_classes)[0] * 100
        out.append(v.var(ddof=1) / len(v))
    return float(np.mean(out))


def section(run) -> None:
    """The report's "Which axis matters" section: the table and one figure (`run` is report.Run)."""
    doc = run.doc
    if not len(run.ok):
        return
    doc.heading("Which axis matters")
    table = decompose(run.ok, run.metric, run.predictions, run.num_classes)
    if not len(table):
        doc.para("Fewer than two successful trials: nothing to decompose.")
        return
    no_rows = "evaluation rows" not in set(table["component"])
    doc.para(f"The variance of {figures.label(run.metric)} over the sweep's {int(table['trials'].iloc[0])} successful "
             "trials, split over the compared axes (each axis' main effect, then their interactions), the seed "
             "(trials around their cell's mean) and the evaluation rows (how far a trial's value would move on a new "
             "evaluation set of the same size). Seed and row noise are what the findings' intervals must cover; "
             "a compared axis with a small share is one the sweep barely distinguishes."
             + (" No trial has per-row predictions on record, so the rows' term is missing." if no_rows else ""))
    png = figures.variance_components(table, run.fig_dir, run.metric)
    doc.figure(png, f"Share of the variance of {figures.label(run.metric)} by source.")
    shown = table.assign(variance_pp2=table["variance_pp2"].map(lambda v: f"{v:.3f}"),
                         sd_pp=table["sd_pp"].map(lambda v: f"{v:.2f}"),
                         share=table["share"].map(lambda v: f"{100 * v:.1f}%"))
    run.table(table, shown.drop(columns=["metric", "trials"]).rename(
        columns={"variance_pp2": "variance (pp²)", "sd_pp": "sd (pp)"}), "variance_components")

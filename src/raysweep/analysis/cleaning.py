"""The report's "Cleaner LLM labels" section: what `llm_cleaned` and `llm_routed` did to the LLM's labels.

Both pools add the rows `llm_annotated` adds, from the same LLM labels (cleaning.py). Per pool,
freeze mode and fraction, over the seeds: how many LLM labels each acted on (flagged by confident
learning, or routed to a person), how many rows it removed and labels it replaced or bought,
and each group's accuracy against gold, pooled over the cells (correct labels / labels); then each
pool's validation accuracy against `llm_annotated`'s, paired by seed (compare.compare).
"""

from __future__ import annotations

import math

import pandas as pd

from raysweep.analysis import compare
from raysweep.analysis.findings import interval, points
from raysweep.analysis.stats import cell_columns

POOLS, BASE = ("llm_cleaned", "llm_routed"), "llm_annotated"
# Each accuracy column, and the count of labels it is measured on (pooled over the cells).
ACCURACIES = {"llm_label_accuracy": "n_added", "flagged_llm_accuracy": "labels_flagged",
              "replacement_accuracy": "labels_replaced", "trained_label_accuracy": "labels_trained"}


def label_table(ok: pd.DataFrame) -> pd.DataFrame:
    """One row per cleaning pool, context and fraction > 0: mean counts per cell and pooled accuracies."""
    if "labels_flagged" not in ok.columns:
        return pd.DataFrame()
    data = ok[ok["pool"].isin(POOLS) & (ok["fraction"] > 0)].copy()
    if not len(data):
        return pd.DataFrame()
    data["labels_trained"] = data["n_added"] - data["labels_removed"]
    by = [c for c in cell_columns(data) if c != "seed"]
    rows = []
    for key, group in data.groupby(by, sort=True, dropna=False):
        row = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        row["n_seeds"] = int(group["seed"].nunique())
        for c in ("n_added", "labels_flagged", "labels_removed", "labels_replaced", "human_labels"):
            row[c] = float(group[c].mean())
        for acc, n in ACCURACIES.items():
            weight = group[n].where(group[acc].notna(), 0)
            row[acc] = float((group[acc].fillna(0) * weight).sum() / weight.sum()) if weight.sum() else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def against_annotated(ok: pd.DataFrame) -> pd.DataFrame:
    """Each cleaning pool minus `llm_annotated` in validation accuracy, per fraction (seed as the unit)."""
    data = ok[ok["pool"].isin((*POOLS, BASE))]
    if BASE not in set(data["pool"]) or not set(POOLS) & set(data["pool"]):
        return pd.DataFrame()
    return compare.compare(data, "pool", BASE, "val_accuracy", by_fraction=True, levels=POOLS)


def sentences(diff: pd.DataFrame) -> list[str]:
    out = []
    for _, r in diff.iterrows():
        context = ", ".join(f"{c} {r[c]}" for c in ("freeze", "strategy") if c in r)
        verdict = ("survives Holm" if r["significant"] else "within noise") if not math.isnan(r["p_holm"]) else "untested"
        out.append(f"**{r['pool']}** vs `{BASE}`, fraction {r['fraction']:g} ({context}; {int(r['n_seeds'])} seeds): "
                   f"{points(r['mean_diff'])} points {interval(r['ci_low'], r['ci_high'])}, {verdict}.")
    return out


def section(run) -> None:
    """Written when the sweep has a cleaning pool with records that say what it did (`run`: report.Run)."""
    table = label_table(run.ok) if len(run.ok) else pd.DataFrame()
    if not len(table):
        return
    doc = run.doc
    doc.heading("Cleaner LLM labels")
    doc.para(f"`llm_cleaned` and `llm_routed` add the rows `{BASE}` adds, from the same LLM labels. The model that "
             "judges a label is trained on `labeled` alone, so it has never seen the rows it judges. `llm_cleaned` "
             "drops (or replaces) the labels confident learning (cleanlab's `find_label_issues`) flags; `llm_routed` "
             "buys gold labels for the least-trusted share (`cleaning.route_percent`). Per cell, mean over seeds: "
             "LLM labels acted on (`labels_flagged`), rows removed, labels replaced, labels bought from a person "
             "(`human_labels`); accuracies against gold, pooled over the cells: all added rows' LLM labels, the "
             "flagged ones', their replacements', and the added labels the cells trained on.")
    columns = [c for c in ("freeze", "strategy", "encoder", "pooling") if c in table.columns
               and (c in run.varying or c in ("freeze",))]
    shown = table.assign(**{c: table[c].map(lambda v: "" if math.isnan(v) else f"{v:.1%}") for c in ACCURACIES},
                         **{c: table[c].map(lambda v: f"{v:.1f}") for c in
                            ("n_added", "labels_flagged", "labels_removed", "labels_replaced", "human_labels")})
    run.table(table, shown[["pool", *columns, "fraction", "n_seeds", "n_added", "labels_flagged", "labels_removed",
                            "labels_replaced", "human_labels", *ACCURACIES]], "label_cleaning")
    diff = against_annotated(run.ok)
    if len(diff):
        doc.para(f"Validation accuracy against `{BASE}` (the same rows with the LLM's raw labels): mean of the per-seed "
                 "differences with its 95% t-interval, Holm within the table.")
        doc.bullets(sentences(diff))

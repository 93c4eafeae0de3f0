"""The report's "LLM as annotator" section and finding: are the LLM's labels of chosen rows worth their price?

A cell of pool `llm_annotated` adds exactly the rows its `real` counterpart adds, labeled by
the LLM instead of gold (llm/annotate.py), so the two differ in the labels alone. Per fraction
this says what the LLM's labels cost against gold (the paired difference over seeds, from
`compare.compare`), what each kind of label bought over adding no row at all (the gain over
fraction 0), and what the LLM's labels of that many rows cost in dollars (annotation.json's cost
per labeled row). Gold labels have no price in the data, so the verdict is stated as "the LLM's
labels keep X% of gold's gain for $Y", or that they buy nothing.
"""

from __future__ import annotations

import math

import pandas as pd

from raysweep.analysis import compare, figures
from raysweep.analysis.findings import interval, points
from raysweep.analysis.stats import cell_columns

POOL, GOLD = "llm_annotated", "real"


def worth_table(ok: pd.DataFrame, cost_per_row: float | None) -> pd.DataFrame:
    """One row per context and fraction > 0: LLM labels vs gold (val accuracy, seed as the unit),
    each pool's mean gain over fraction 0, rows added and the LLM's labeling cost for them."""
    data = ok[ok["pool"].isin([POOL, GOLD])]
    if POOL not in set(data["pool"]) or GOLD not in set(data["pool"]):
        return pd.DataFrame()
    diff = compare.compare(data, "pool", GOLD, "val_accuracy", by_fraction=True, levels=(POOL,))
    if not len(diff):
        return diff
    by = [c for c in cell_columns(data) if c not in ("pool", "fraction")]
    context = [*by, "seed"]
    zero = data[data["fraction"] == 0].set_index(["pool", *context])["val_accuracy"]
    rows = []
    for _, r in diff.iterrows():
        out = r.to_dict()
        for pool, name in ((POOL, "gain_llm"), (GOLD, "gain_gold")):
            part = data[(data["pool"] == pool) & (data["fraction"] == r["fraction"])]
            for c in by:
                part = part[part[c] == r[c]]
            base = [zero.get((pool, *tuple(p[c] for c in context)), math.nan) for _, p in part.iterrows()]
            gains = part["val_accuracy"].to_numpy() - pd.Series(base, dtype=float).to_numpy()
            out[name] = float(pd.Series(gains).mean()) if len(gains) else math.nan
            if pool == POOL:
                out["n_added"] = int(part["n_added"].mean()) if "n_added" in part and len(part) else 0
        out["cost_usd"] = cost_per_row * out["n_added"] if cost_per_row is not None else math.nan
        rows.append(out)
    return pd.DataFrame(rows)


def verdict(r: pd.Series) -> str:
    """Whether the LLM's labels of these rows are worth their price against gold, in words."""
    gain, gold = r["gain_llm"], r["gain_gold"]
    if r["significant"] and r["mean_diff"] > 0:
        return "the LLM's labels beat gold here, which calls for a closer look at the gold labels"
    if math.isnan(gain) or gain <= 0:
        if not gold > 0:
            text = "nothing to buy here: neither the LLM-labeled nor the gold-labeled rows beat adding no row"
        else:
            text = "not worth any price: the LLM-labeled rows do no better than adding no row at all, while gold rows do"
        # The gains are untested means; only the paired difference to gold has a test. A few
        # seeds of SmolLM2-like labels must not read as a verdict the statistics do not give.
        if r["significant"]:
            return text
        return f"{text}, in the means only: the difference to gold does not survive Holm at {int(r['n_seeds'])} seeds"
    cost = "" if math.isnan(r["cost_usd"]) else f" for ${r['cost_usd']:.4g}"
    kept = f"{gain / gold:.0%} of gold's gain" if gold > 0 else f"{points(gain)} points while gold rows gain none"
    if r["significant"]:
        return f"gold is worth more: the LLM's labels keep {kept}{cost}"
    return f"within noise of gold: the LLM's labels keep {kept}{cost}"


def sentences(table: pd.DataFrame) -> list[str]:
    context = [c for c in ("strategy", "freeze", "encoder", "pooling") if c in table.columns
               and table[c].nunique() > 1 or c in ("strategy", "freeze")]
    out = []
    for _, r in table.iterrows():
        where = ", ".join(f"{c} {r[c]}" for c in context if c in r)
        out.append(f"**fraction {r['fraction']:g}** ({where}; {int(r['n_added'])} rows, {int(r['n_seeds'])} seeds): "
                   f"LLM labels vs gold {points(r['mean_diff'])} points {interval(r['ci_low'], r['ci_high'])}; "
                   f"mean gain over no added rows {points(r['gain_llm'])} (LLM) vs {points(r['gain_gold'])} (gold): "
                   f"{verdict(r)}.")
    return out


def _cost_per_row(run) -> float | None:
    costs = [(res.annotation or {}).get("cost_usd_per_labeled_row") for res in run.results]
    costs = [c for c in costs if c is not None]
    return costs[0] if costs else None


def findings(run) -> None:
    """The finding under the report's Findings (`run` is report.Run): one sentence per fraction."""
    if not len(run.ok) or POOL not in set(run.ok["pool"]):
        return
    table = worth_table(run.ok, _cost_per_row(run))
    run.doc.heading("Are the LLM's labels of chosen rows worth their price?", level=3)
    if not len(table):
        run.doc.para(f"No answer: the sweep needs `{POOL}` and `{GOLD}` cells with the same strategy, freeze mode, "
                     "fraction > 0 and seeds.")
        return
    run.doc.para("Per fraction: the LLM's labels minus gold labels of the very same rows in validation accuracy "
                 "(mean over seeds with its 95% t-interval, Holm within the table), what each gained over adding no "
                 "row, and the LLM's labeling cost for those rows.")
    run.doc.bullets(sentences(table))


def section(run) -> None:
    """The report's "LLM as annotator" section: labeling accuracy, cost, confusion, the per-fraction table."""
    parts = [res for res in run.results if res.annotated is not None]
    if not parts:
        return
    doc = run.doc
    doc.heading("The LLM as annotator")
    doc.para(f"`{POOL}` cells add the rows their `{GOLD}` counterparts add, labeled by the LLM; the rows are "
             "labeled once, before the trials.")
    for res in parts:
        tag = f"{res.name}-" if run.several else ""
        where = f" ({res.name})" if run.several else ""
        s = res.annotation or {}
        png, _ = figures.label_confusion(res.annotated, run.fig_dir, res.class_names, name=f"{tag}llm_vs_gold",
                                         against="gold", against_name="gold", rows_name="chosen real rows")
        doc.figure(png, f"The LLM's labels of the chosen rows against their gold labels{where}.")
        keys = ("endpoint", "model", "rows_labeled", "requests", "prompt_tokens", "completion_tokens", "cost_usd",
                "cost_usd_per_labeled_row", "accuracy", "replies_unreadable", "resumed_from", "elapsed_s")
        rows = [{"key": k, "value": _value(s.get(k))} for k in keys if k in s]
        rows += [{"key": f"accuracy on gold {name}", "value": _value(v)}
                 for name, v in (s.get("per_class_accuracy") or {}).items()]
        table = pd.DataFrame(rows)
        run.table(table, table, f"{tag}annotation")
    worth = worth_table(run.ok, _cost_per_row(run)) if len(run.ok) else pd.DataFrame()
    if len(worth):
        doc.heading("LLM labels vs gold, per fraction", level=3)
        shown = worth.assign(**{c: worth[c].map(lambda v: points(v)) for c in ("mean_diff", "gain_llm", "gain_gold")},
                             ci=[interval(a, b) for a, b in zip(worth["ci_low"], worth["ci_high"])],
                             cost_usd=worth["cost_usd"].map(lambda v: "" if math.isnan(v) else f"{v:.4g}"),
                             p_holm=worth["p_holm"].map(lambda v: "" if math.isnan(v) else f"{v:.3f}"))
        columns = [c for c in ("strategy", "freeze", "encoder", "pooling") if c in worth.columns
                   and (c in run.varying or c in ("strategy", "freeze"))]
        shown = shown[[*columns, "fraction", "n_added", "n_seeds", "mean_diff", "ci", "p_holm", "gain_llm",
                       "gain_gold", "cost_usd"]]
        run.table(worth, shown, "annotation_worth")


def _value(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)

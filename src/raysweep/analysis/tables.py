"""The report's tables: built from the statistics (raw numbers, written as CSV) and shown as
strings (percentages with their intervals, written as Markdown and printed in the report).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from raysweep.analysis import stats
from raysweep.analysis.document import markdown_table

if TYPE_CHECKING:  # for annotations only: results.py reads files, tables.py only formats
    from raysweep.analysis.results import Results


def pct_ci(mean: float, low: float, high: float) -> str:
    if math.isnan(mean):
        return ""
    if math.isnan(low):
        return f"{100 * mean:.1f}"
    return f"{100 * mean:.1f} [{100 * low:.1f}, {100 * high:.1f}]"


def mse_ci(mean: float, low: float, high: float) -> str:
    if math.isnan(mean):
        return ""
    return f"{mean:.3f}" if math.isnan(low) else f"{mean:.3f} [{low:.3f}, {high:.3f}]"


def pp_ci(mean: float, low: float, high: float, significant: bool) -> str:
    if mean is None or math.isnan(mean):
        return ""
    if math.isnan(low):
        return f"{100 * mean:+.1f}"
    return f"{100 * mean:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}]" + (" *" if significant else "")


def _true(value) -> bool:
    """A flag that may be missing (NaN after a merge): only a real True counts."""
    return bool(pd.notna(value) and value)


def value_str(v) -> str:
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() else f"{v:g}"
    return str(v)


def _shown_params(df: pd.DataFrame, varying: list[str], always: tuple[str, ...] = ("strategy", "freeze")) -> list[str]:
    """Parameter columns worth a column in a printed table: the varying ones, plus `always`."""
    return [c for c in stats.parameter_columns(df) if c in df.columns and (c in varying or c in always)]


def _baseline_rank(values: pd.Series) -> pd.Series:
    """Sort rank of values with the baselines (random, real) first."""
    order = {v: i for i, v in enumerate(stats.baseline_first(values))}
    return values.map(order)


def _freeze_rank(df: pd.DataFrame) -> pd.Series:
    order = {f: i for i, f in enumerate(stats.freeze_order(df))} if "freeze" in df else {}
    return df["freeze"].map(order) if "freeze" in df else pd.Series(0, index=df.index)


# What the cell table shows besides the task's metrics: MSE (a regression's), and the train split's.
CELL_EXTRAS = ("val_mse", "train_accuracy", "train_mse")


def cell_table(ok: pd.DataFrame, metrics: tuple[str, ...] = ("val_accuracy", "val_macro_f1")) -> pd.DataFrame:
    """Per cell: seeds, and mean with 95% interval of each of the task's `metrics`, validation MSE
    (a regression) and the train split's accuracy or MSE."""
    cells = stats.cell_columns(ok)
    out = None
    for metric in (*metrics, *CELL_EXTRAS):
        if metric not in ok.columns or ok[metric].isna().all():
            continue
        s = stats.summarize(ok, metric, by=cells).drop(columns=["sd"])
        s = s.rename(columns={"mean": metric, "ci_low": f"{metric}_ci_low", "ci_high": f"{metric}_ci_high",
                              "n_seeds": f"{metric}_n"})
        out = s if out is None else out.merge(s, on=cells, how="outer")
    out = out.rename(columns={f"{metrics[0]}_n": "n_seeds"})
    return out.drop(columns=[c for c in out.columns if c.endswith("_n")])


def headline_table(aulc: pd.DataFrame, diff: pd.DataFrame, cells: pd.DataFrame,
                   metric: str = "val_accuracy") -> pd.DataFrame:
    """AULC, the difference to the baseline (a `compare.compare` table of `metric`) and `metric` at
    the largest fraction, one row per curve (its columns keep the name `acc_at_max` for any metric)."""
    keys = [c for c in aulc.columns if c in stats.parameter_columns(aulc)]
    head = aulc.copy()
    if len(diff):
        diff = diff[[*keys, "fractions", "n_seeds", "mean_diff", "ci_low", "ci_high", "p", "p_holm",
                     "significant"]].rename(columns={"ci_low": "diff_ci_low", "ci_high": "diff_ci_high",
                                                     "n_seeds": "diff_n_seeds", "fractions": "diff_fractions"})
        head = head.merge(diff, on=keys, how="left")
    last = cells.merge(cells.groupby(keys, dropna=False)["fraction"].max().rename("fraction_max").reset_index(),
                       on=keys)
    last = last[last["fraction"] == last["fraction_max"]][[*keys, metric, f"{metric}_ci_low", f"{metric}_ci_high"]]
    head = head.merge(last.rename(columns={metric: "acc_at_max", f"{metric}_ci_low": "acc_at_max_ci_low",
                                           f"{metric}_ci_high": "acc_at_max_ci_high"}), on=keys, how="left")
    return head


def short(metric: str) -> str:
    """A metric's column header: `acc %` for accuracy (the study's), `pearson x100` and so on."""
    name = metric.removeprefix("val_").removeprefix("train_")
    if name == "accuracy":
        return "acc %"
    if name == "mse":
        return "MSE"
    shown = {"macro_f1": "macro-F1", "positive_f1": "positive-F1"}.get(name, name)
    return f"{shown} " + ("x100" if name in ("pearson", "spearman") else "%")


def show_headline(head: pd.DataFrame, varying: list[str], has_diff: bool, factor: str = "strategy",
                  baseline: str = "random", metric: str = "val_accuracy") -> pd.DataFrame:
    cols = _shown_params(head, varying)
    cols = [c for c in cols if c != "fraction"]
    groups = [c for c in cols if c not in ("strategy", "freeze")]  # e.g. pool: its strategies stay together
    ranked = head.assign(_f=_freeze_rank(head), **{f"_{c}": _baseline_rank(head[c]) for c in groups})
    order = ranked.sort_values(["_f", *[f"_{c}" for c in groups], "aulc"],
                               ascending=[True] * (1 + len(groups)) + [False]).index
    # Curves over different fraction ranges have areas that do not compare: say each one's range.
    ranges = head[["fraction_min", "fraction_max"]].drop_duplicates() if "fraction_min" in head else []
    rows = []
    for _, r in head.loc[order].iterrows():
        row = {c: value_str(r[c]) for c in cols}
        row["seeds"] = int(r["n_seeds"])
        if has_diff:
            row["compared at fractions"] = "" if r.get(factor) == baseline else (r.get("diff_fractions") or "")
        if len(ranges) > 1:
            row["fractions"] = f"{value_str(r['fraction_min'])}-{value_str(r['fraction_max'])}"
        row[f"AULC {'%' if short(metric).endswith('%') else 'x100'} [95% CI]"] = pct_ci(r["aulc"], r["ci_low"],
                                                                                       r["ci_high"])
        if has_diff:
            row[f"vs {baseline}, pp [95% CI]"] = ("baseline" if r.get(factor) == baseline else
                                             pp_ci(r.get("mean_diff", math.nan), r.get("diff_ci_low", math.nan),
                                                    r.get("diff_ci_high", math.nan), _true(r.get("significant"))))
            row["Holm p"] = "" if r.get(factor) == baseline else p_str(r.get("p_holm", math.nan))
        row[f"{short(metric)} at largest fraction [95% CI]"] = pct_ci(r["acc_at_max"], r["acc_at_max_ci_low"],
                                                                        r["acc_at_max_ci_high"])
        rows.append(row)
    return pd.DataFrame(rows)


def p_str(p) -> str:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return ""
    return f"{p:.3f}" if p >= 0.001 else "<0.001"


def seeds_str(n) -> str:
    if n is None or math.isnan(n):
        return ""
    return ">1000" if math.isinf(n) else str(int(n))


def show_compare(table: pd.DataFrame, factor: str, varying: list[str]) -> pd.DataFrame:
    """A `compare.compare` table as printed: one row per comparison and metric."""
    cols = [c for c in _shown_params(table, varying) if c not in (factor, "fraction")]
    order = table.assign(_f=_freeze_rank(table), _m=table["metric"].map({"val_accuracy": 0}).fillna(1)).sort_values(
        ["_m", "_f", *[c for c in cols if c != "freeze"], factor, *(["fraction"] if "fraction" in table else [])]).index
    rows = []
    for _, r in table.loc[order].iterrows():
        row = {c: value_str(r[c]) for c in cols}
        row[factor] = r[factor]
        row["metric"] = str(r["metric"]).replace("val_", "")
        row["fractions"] = r["fractions"]
        row["left out"] = r["excluded"]
        row["seeds"] = int(r["n_seeds"])
        rows_too = r.get("inference") == "seeds and rows"
        if "inference" in table.columns:  # analysis/rows.py: the finding is stated on new rows
            row["rows"] = f"{int(r['n_rows']):,}" if rows_too else f"seeds only: {r['why_seeds_only']}"
            row[f"minus {r['baseline']}, pp: on new rows [95% CI]"] = pp_ci(
                r["mean_diff"], r["ci_low"], r["ci_high"], _true(r["significant"])) if rows_too else "(seeds only)"
            row["on this evaluation set [95% CI]"] = pp_ci(r["mean_diff"], r["seed_ci_low"], r["seed_ci_high"],
                                                           _true(r["seed_significant"]))
        else:
            row[f"minus {r['baseline']}, pp [95% CI]"] = pp_ci(r["mean_diff"], r["ci_low"], r["ci_high"],
                                                                 _true(r["significant"]))
        row["p"] = p_str(r["p"])
        row["Holm p"] = p_str(r["p_holm"])
        row["seeds for 80% power (observed / 1 pt)"] = (f"{seeds_str(r['seeds_observed'])} / "
                                                         f"{seeds_str(r['seeds_min_effect'])}")
        if rows_too:
            row["eval rows for 80% power (observed / 1 pt)"] = (f"{rows_needed_str(r['rows_observed'])} / "
                                                                 f"{rows_needed_str(r['rows_min_effect'])}")
            row["row share of variance"] = f"{100 * r['row_share']:.0f}%" if not pd.isna(r["row_share"]) else ""
        if "test_mean_diff" in table.columns:
            row["on test, pp [95% CI]"] = pp_ci(r["test_mean_diff"], r["test_ci_low"], r["test_ci_high"], False)
            row["test agrees"] = "" if pd.isna(r["test_agrees"]) else ("yes" if r["test_agrees"] else "NO")
        rows.append(row)
    return pd.DataFrame(rows)


def rows_needed_str(value: float) -> str:
    """Evaluation rows needed: a count, "more than 10 million" (inf), or "" (no effect to detect)."""
    if pd.isna(value):
        return ""
    return "more than 10 million" if math.isinf(value) else f"{value:,.0f}"


def rows_str(value: float) -> str:
    if math.isnan(value) or math.isinf(value):
        return "not reached"
    return f"{value:,.0f}"


def show_labels_needed(table: pd.DataFrame, factor: str, varying: list[str]) -> pd.DataFrame:
    cols = [c for c in _shown_params(table, varying) if c != factor]
    order = table.assign(_f=_freeze_rank(table), _m=table["metric"].map({"val_accuracy": 0}).fillna(1)).sort_values(
        ["_m", "_f", *[c for c in cols if c != "freeze"], factor]).index
    rows = []
    for _, r in table.loc[order].iterrows():
        row = {c: value_str(r[c]) for c in cols}
        row[factor] = r[factor]
        row["metric"] = str(r["metric"]).replace("val_", "")
        row["target %"] = f"{100 * r['target']:.1f}"
        unit = "rows added" if r["x"] == "n_added" else "fraction"
        interval = ("" if math.isnan(r["ci_low"]) or (math.isnan(r["rows_needed"]) and math.isinf(r["ci_low"]))
                    else f" [{rows_str(r['ci_low'])}, {rows_str(r['ci_high'])}]")
        row[f"{unit} needed [95% CI]"] = rows_str(r["rows_needed"]) + interval
        row["reached in % of resamples"] = "" if math.isnan(r["reached_share"]) else f"{100 * r['reached_share']:.0f}"
        if "resampled" in table.columns:
            row["resampled"] = r["resampled"]
        rows.append(row)
    return pd.DataFrame(rows)


def show_cells(cells: pd.DataFrame, varying: list[str]) -> pd.DataFrame:
    cols = _shown_params(cells, varying, always=("strategy", "freeze", "fraction"))
    order = cells.assign(_f=_freeze_rank(cells)).sort_values(["_f", *[c for c in cols if c != "freeze"]]).index
    rows = []
    for _, r in cells.loc[order].iterrows():
        row = {c: value_str(r[c]) for c in cols}
        row["seeds"] = int(r["n_seeds"])
        for metric in [c for c in cells.columns if c.startswith(("val_", "train_")) and f"{c}_ci_low" in cells.columns]:
            split = "val" if metric.startswith("val_") else "train"
            if metric.endswith("mse"):  # a squared error is no share: printed as it is
                row[f"{split} MSE [95% CI]"] = mse_ci(r[metric], r[f"{metric}_ci_low"], r[f"{metric}_ci_high"])
            else:
                row[f"{split} {short(metric)} [95% CI]"] = pct_ci(r[metric], r[f"{metric}_ci_low"],
                                                                  r[f"{metric}_ci_high"])
        rows.append(row)
    return pd.DataFrame(rows)


def write_table(raw: pd.DataFrame, shown: pd.DataFrame, tables_dir: Path, name: str) -> tuple[Path, Path]:
    tables_dir.mkdir(parents=True, exist_ok=True)
    csv, md = tables_dir / f"{name}.csv", tables_dir / f"{name}.md"
    raw.to_csv(csv, index=False)
    md.write_text(markdown_table(shown) + "\n")
    return csv, md


def common_fractions(ok: pd.DataFrame) -> list[float]:
    """The fractions every learning curve has: one range for every AULC of a table."""
    by = [c for c in stats.cell_columns(ok) if c != "fraction"]
    sets = [set(g["fraction"]) for _, g in ok.groupby(by, dropna=False)] if by else [set(ok["fraction"])]
    return sorted(set.intersection(*sets)) if sets else []


def correlation_table(results: list[Results]) -> pd.DataFrame | None:
    """Entropy vs SQBC per sweep and freeze mode, over all seeds (`seed` "all") and per seed."""
    rows = []
    for res in results:
        if res.diagnostics is None:
            continue
        for freeze, part in res.diagnostics.groupby("freeze", sort=False):
            for s, sub in [("all", part), *part.groupby("seed", sort=True)]:
                rows.append({"sweep": res.name, "freeze": freeze, "seed": s, **stats.pearson(sub["entropy"], sub["sqbc"]),
                             "spearman": stats.spearman(sub["entropy"], sub["sqbc"])})
    return pd.DataFrame(rows) if rows else None

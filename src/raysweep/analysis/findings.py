"""The report's findings: sentences generated from the comparison tables, and the study's claims
checked against them.

Nothing here computes a statistic: every number comes from a `compare.compare` table (with
`compare.with_test_check` columns when the trials have a test split) or from the entropy / SQBC
correlation rows, so a sentence and its table row always agree.
"""

from __future__ import annotations

import math

import pandas as pd

from raysweep.analysis.compare import ALPHA, MIN_EFFECT, TEST_NAME

METRIC_NAMES = {"val_accuracy": "accuracy", "val_macro_f1": "macro-F1", "val_positive_f1": "positive-class F1",
                "val_pearson": "Pearson r (x 100)", "val_spearman": "Spearman rho (x 100)"}
UNCERTAINTY = ("entropy", "margin", "least-confidence")  # the study's "uncertainty sampling" strategies
WEAK_R = 0.3  # |Pearson r| below this is called weak


def points(value: float, signed: bool = True) -> str:
    return f"{100 * value:+.1f}" if signed else f"{100 * value:.1f}"


def interval(low: float, high: float) -> str:
    return f"[{points(low)}, {points(high)}]" if not math.isnan(low) else "[no interval]"


def seeds_str(n: float) -> str:
    if n is None or math.isnan(n):
        return "no seed count (no effect to detect)"
    return "more than 1,000 seeds" if math.isinf(n) else f"{int(n)} seeds"


def comparisons_str(m: int) -> str:
    return f"{m} comparison{'s' if m != 1 else ''}"


def _p(p: float) -> str:
    """'= 0.012' or '< 0.001', to follow a 'p'."""
    return "= n/a" if math.isnan(p) else (f"= {p:.3f}" if p >= 0.001 else "< 0.001")


def context_str(row: pd.Series, context: list[str]) -> str:
    parts = [f"{c} {row[c]:g}" if isinstance(row[c], float) else f"{c} {row[c]}" for c in context]
    return ", ".join(parts)


def sentence(row: pd.Series, factor: str, context: list[str], m: int) -> str:
    """One comparison as a sentence: effect, interval, p, Holm, seeds needed, the test split's check."""
    metric = METRIC_NAMES.get(row["metric"], row["metric"])
    where = "; ".join(x for x in (context_str(row, context), f"fraction{'s' if ',' in str(row['fractions']) else ''} {row['fractions']}",
                                    f"{int(row['n_seeds'])} seeds") if x)
    rows_too = row.get("inference") == "seeds and rows"  # analysis/rows.py's columns, when present
    if rows_too:
        where += f", {int(row['n_rows']):,} evaluation rows"
        text = (f"**{row[factor]} vs {row['baseline']}** ({where}): {metric} {points(row['mean_diff'])} points; "
                f"on new rows 95% CI {interval(row['ci_low'], row['ci_high'])}, p {_p(row['p'])}; on this "
                f"evaluation set {interval(row['seed_ci_low'], row['seed_ci_high'])}, p {_p(row['seed_p'])}")
    else:
        text = (f"**{row[factor]} vs {row['baseline']}** ({where}): {metric} {points(row['mean_diff'])} points, "
                f"95% CI {interval(row['ci_low'], row['ci_high'])}, p {_p(row['p'])}")
        if row.get("inference") == "seeds only":
            text += (f" (seeds only, {row['why_seeds_only']}: the interval is for this evaluation set and "
                     "may not hold on new rows)")
    if math.isnan(row["p"]):
        text += "; too few seeds for a test."
    elif row["significant"]:
        text += f"; survives Holm over {comparisons_str(m)} (Holm p {_p(row['p_holm'])})."
    else:
        text += (f"; does not survive Holm over {comparisons_str(m)} (Holm p {_p(row['p_holm'])}). For 80% power: "
                 + (more_data(row) if rows_too else
                    f"{seeds_str(row['seeds_observed'])} at the observed size, "
                    f"{seeds_str(row['seeds_min_effect'])} at {100 * MIN_EFFECT:g} point."))
    if factor == "strategy" and _shares_seeds(row[factor]):
        text += (" Its seeds share one committee (the other seeds' models), so they are not independent "
                 "replicates: the interval counts training noise more than selection noise.")
    if "test_mean_diff" in row and not pd.isna(row.get("test_mean_diff")):
        verdict = "agrees" if bool(row["test_agrees"]) else "**disagrees**"
        text += (f" On test: {points(row['test_mean_diff'])} {interval(row['test_ci_low'], row['test_ci_high'])}, "
                 f"{verdict}.")
    return text


def _rows(n: float, seeds: int) -> str:
    if math.isinf(n):  # the seeds' own variance is too wide at this seed count, whatever the rows
        return f"nor would any number of evaluation rows at {seeds} seeds: it needs more of both"
    return f"about {int(n):,} evaluation rows would be, at {seeds} seeds"


def more_data(row: pd.Series) -> str:
    """Seeds needed at this evaluation-set size, and where no number of seeds is enough, the
    evaluation rows that would be (at this seed count), for the observed effect and for 1 point."""
    parts = []
    for label, seeds, rows in (("at the observed size", row["seeds_observed"], row["rows_observed"]),
                               (f"at {100 * MIN_EFFECT:g} point", row["seeds_min_effect"], row["rows_min_effect"])):
        if seeds is None or math.isnan(seeds):
            parts.append(f"no seed count {label} (no effect to detect)")
        elif math.isinf(seeds):
            parts.append(f"{label}, no number of seeds is enough at {int(row['n_rows']):,} evaluation rows "
                         f"(the rows' share of the variance is {100 * row['row_share']:.0f}%); "
                         f"{_rows(rows, int(row['n_seeds']))}")
        else:
            parts.append(f"{seeds_str(seeds)} {label} at {int(row['n_rows']):,} evaluation rows")
    return "; ".join(parts) + "."


def table_sentences(table: pd.DataFrame, factor: str, context: list[str]) -> list[str]:
    """One sentence per row, per metric (Holm's m is the number of rows of that metric's table)."""
    out = []
    for _, part in table.groupby("metric", sort=False):
        m = int(part["p"].notna().sum())
        out += [sentence(r, factor, context, m) for _, r in part.iterrows()]
    return out


def _shares_seeds(name: str) -> bool:
    from raysweep import strategies

    return name in strategies.REGISTRY and strategies.get(name).shares_seeds


def headroom(strat: pd.DataFrame, metric: str, name: str) -> list[str]:
    """Per freeze mode: the oracle's gain over random (the headroom) and the share of it each
    strategy closes, on val and, when the table has it, on test (new rows). A share is a ratio of
    two seed means; it is only read where the oracle's own interval lies above zero."""
    rows = strat[strat["metric"] == metric]
    out = []
    for freeze, part in rows.groupby("freeze", sort=False):
        oracle = part[part["strategy"] == "oracle"]
        if not len(oracle):
            continue
        o = oracle.iloc[0]
        gap = f"oracle {points(o['mean_diff'])} {interval(o['ci_low'], o['ci_high'])} over random"
        has_test = "test_mean_diff" in o and not pd.isna(o.get("test_mean_diff"))
        if has_test:
            gap += f" (test {points(o['test_mean_diff'])} {interval(o['test_ci_low'], o['test_ci_high'])})"
        if not o["ci_low"] > 0:
            out.append(f"*Headroom over random* ({name}, freeze {freeze}): {gap}; no headroom shown, so no share "
                       "of it is read.")
            continue
        shares = []
        for _, r in part[part["strategy"] != "oracle"].iterrows():
            share = f"{r['strategy']} {100 * r['mean_diff'] / o['mean_diff']:.0f}%"
            if has_test and not pd.isna(r.get("test_mean_diff")) and o["test_mean_diff"] > 0:
                share += f" (test {100 * r['test_mean_diff'] / o['test_mean_diff']:.0f}%)"
            shares.append(share)
        out.append(f"*Headroom over random* ({name}, freeze {freeze}): {gap}; share of the gap closed: "
                   + ("; ".join(shares) if shares else "no other strategy compared") + ".")
    return out


# --------------------------------------------------------------------------- the study's claims


def _none_survive(rows: pd.DataFrame) -> str:
    """The verdict when no row is significant: "none survives" only over the rows a test ran on
    (one seed per cell gives no test, and no row to survive or not)."""
    tested = int(rows["p"].notna().sum())
    if not tested:
        return "not tested: too few seeds for a test"
    return f"not shown: none of {comparisons_str(tested)} survives the correction"


def _verdict_better(rows: pd.DataFrame) -> str:
    up = rows[rows["significant"] & (rows["mean_diff"] > 0)]
    down = rows[rows["significant"] & (rows["mean_diff"] < 0)]
    names = lambda rs: ", ".join(f"{r.iloc[0]} ({r.iloc[1]})" for _, r in rs.iterrows())  # noqa: E731
    if len(up) and not len(down):
        rest = len(rows) - len(up)
        return f"supported for {names(up.iloc[:, :2])}" + (f"; not shown in {rest} of {len(rows)}" if rest else "")
    if len(down) and not len(up):
        return f"contradicted: significantly worse for {names(down.iloc[:, :2])}"
    if len(up):
        return f"mixed: better for {names(up.iloc[:, :2])}, worse for {names(down.iloc[:, :2])}"
    return _none_survive(rows)


def claims(tables: dict[str, pd.DataFrame], correlations: pd.DataFrame | None, n_seeds: str) -> list[str]:
    """The study's claims, each with what this sweep says about it, per metric."""
    out = []
    strat = tables.get("strategy")
    pool = tables.get("pool")
    teacher = tables.get("teacher")
    for metric, name in METRIC_NAMES.items():
        if strat is not None and len(strat):
            rows = strat[(strat["metric"] == metric) & strat["strategy"].isin(UNCERTAINTY)]
            if len(rows):
                ctx = rows[["strategy", "freeze"]].join(rows.drop(columns=["strategy", "freeze"]))
                out.append(f"*Uncertainty sampling beats random* ({name}, {n_seeds}): {_verdict_better(ctx)}.")
            sq = strat[(strat["metric"] == metric) & (strat["strategy"] == "sqbc")]
            if len(sq):
                # "Close" is an equivalence question: within 1 point, significant or not.
                within = ((sq["ci_low"] > -MIN_EFFECT) & (sq["ci_high"] < MIN_EFFECT)).all()
                beyond = ((sq["ci_low"] > MIN_EFFECT) | (sq["ci_high"] < -MIN_EFFECT)).any()
                spans = "; ".join(f"{r['freeze']} {points(r['mean_diff'])} {interval(r['ci_low'], r['ci_high'])}"
                                  for _, r in sq.iterrows())
                verdict = ("not tested: too few seeds for an interval" if sq["ci_low"].isna().all() else
                           f"supported: every interval lies within \u00b1{100 * MIN_EFFECT:g} point" if within else
                           f"contradicted: an interval lies wholly beyond \u00b1{100 * MIN_EFFECT:g} point" if beyond
                           else f"not shown: an interval reaches beyond \u00b1{100 * MIN_EFFECT:g} point")
                if sq["significant"].any():
                    verdict += " (and SQBC differs from random after the correction somewhere)"
                out.append(f"*SQBC is close to random* ({name}, {n_seeds}; {spans}): {verdict}.")
            out += headroom(strat, metric, name)
        if pool is not None and len(pool):
            rows = pool[(pool["metric"] == metric) & (pool["pool"] == "llm")]
            if len(rows):
                worse = rows["significant"] & (rows["mean_diff"] < 0)
                better = rows["significant"] & (rows["mean_diff"] > 0)
                verdict = ("supported in all comparisons" if worse.all() else
                           "contradicted: LLM rows do significantly better somewhere" if better.any() else
                           f"supported in {int(worse.sum())} of {len(rows)} comparisons" if worse.any() else
                           _none_survive(rows))
                out.append(f"*LLM rows help less than real rows* ({name}, {n_seeds}): {verdict}.")
        if teacher is not None and len(teacher):
            rows = teacher[teacher["metric"] == metric]
            if len(rows):
                verdict = (f"supported in {int(rows['significant'].sum())} of {len(rows)} comparisons"
                           if rows["significant"].any() else _none_survive(rows))
                out.append(f"*Teacher relabeling changes the result* ({name}, {n_seeds}): {verdict}.")
    if correlations is not None and len(correlations):
        overall = correlations[correlations["seed"].astype(str) == "all"]
        if len(overall):
            parts = "; ".join(f"{r['freeze']}: r = {r['r']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
                              for _, r in overall.iterrows())
            weak = (overall["r"].abs() < WEAK_R).all()
            out.append(f"*Entropy and SQBC disagreement correlate weakly (the study: 0.161)* ({parts}): "
                       + ("supported" if weak else f"not everywhere: some |r| \u2265 {WEAK_R}")
                       + f" (weak: |r| < {WEAK_R}).")
    return out


def method_note() -> str:
    return ("Findings are stated **on new rows**: the interval and p count two sources of variance, the seeds and "
            "the evaluation rows, because every seed is scored on the same rows and a difference that lives in which "
            "rows two strategies' models get right never averages out over seeds. Each comparison's per-seed, "
            "per-row differences D[seed, row] (averaged over its usable fractions; macro-F1 linearised per row) get a "
            "two-way crossed variance-components estimate: the variance of their mean is "
            "(MS_seed + MS_row - MS_residual) / (seeds x rows), never less than the seed-only term, with "
            "Satterthwaite's degrees of freedom and a two-sided t-test. Chosen over a two-way bootstrap because it is "
            "exact and smooth where Holm needs small p-values (a bootstrap's p resolves only to 1/B) and cheap enough "
            "to calibrate by simulation (no true effect, 2,000 simulated 10-seed sweeps: 5.1% false detections at "
            "alpha 0.05, against 26.6% for the seed-only test; docs/measurements.md). The seed-only interval "
            "(\"on this evaluation set\") is shown "
            "beside it. Comparisons whose cells have no per-row predictions on record fall back to it, and say so. "
            "Both are Holm-corrected within each table (one table per compared factor and metric) at alpha "
            f"{ALPHA}. Seeds needed: the seeds at which the test reaches 80% power at the table's Holm threshold "
            "(alpha / m) at this evaluation-set size (normal approximation from the variance components); where the "
            "rows' variance alone is too wide, no number of seeds is enough, and the evaluation rows that would be "
            "(at the sweep's seed count) are given instead. " + seed_only_note())


def seed_only_note() -> str:
    return (f"The seed-only test (drawn on `val` with the seed as the unit): each seed's mean difference over the "
            f"comparison's usable fractions, a two-sided {TEST_NAME} with its 95% t-interval (not a permutation "
            f"test: over n seeds the exact sign-flip test's smallest p is 2/2^n, 0.0625 at 5 seeds); where it is the "
            f"only test, seeds needed are those at which it reaches 80% power at the table's Holm threshold "
            f"(alpha / m), given the observed between-seed sd.")

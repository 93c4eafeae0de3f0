"""Statistics over a sweep's trials: means with 95% intervals, AULC, correlations.

Everything here is a pure function of a trials table (one row per successful trial, columns as
in `trials.csv`), so the numbers in the report can be checked by hand on a small table.

Definitions used throughout (the report repeats them):
- A **cell** is one combination of the sweep's parameters other than `seed`; its trials are
  replicates. A cell's value is the mean over its seeds with a two-sided 95% Student-t interval
  `mean ± t(0.975, n-1) · sd / sqrt(n)` (sd with n-1 in the denominator; no interval for n = 1).
- **AULC** (area under the learning curve) of one seed's curve is the trapezoidal area under
  metric-vs-`fraction` divided by `max(fraction) - min(fraction)`: the curve's average height,
  in the metric's own units. A curve needs at least two fractions. Per group it is computed per
  seed (seeds lacking any of the group's fractions are left out) and then averaged over seeds,
  with the same t interval.
- Comparisons between levels of a factor (fair pairs, the seed as the unit, Holm) are in
  `compare`.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats as sps

# Columns that describe a trial's parameters. `seed` is the nuisance parameter (replicates);
# the others identify a cell. `sweep` is added by the loader when several results are read.
PARAMETERS = ("pool", "strategy", "fraction", "freeze", "seed", "encoder", "pooling", "rounds")
BASELINES = ("random", "real")  # what the other strategies and pools are compared with; listed first
FREEZE_ORDER = ("last-linear", "pooler", "last-attention")  # the study's order: least to most trained
CONFIDENCE = 0.95


def parameter_columns(df: pd.DataFrame) -> list[str]:
    """The parameter columns present in `df` (with `sweep` first when present)."""
    cols = [c for c in ("sweep", *PARAMETERS) if c in df.columns]
    return cols


def varying_parameters(df: pd.DataFrame) -> list[str]:
    """Parameter columns (and `sweep`) that take more than one value in `df`."""
    return [c for c in parameter_columns(df) if df[c].nunique(dropna=False) > 1]


def cell_columns(df: pd.DataFrame) -> list[str]:
    """Columns that identify a cell: every parameter but `seed`."""
    return [c for c in parameter_columns(df) if c != "seed"]


def baseline_first(values) -> list:
    """The distinct values sorted by name, the baselines (random, real) first."""
    return sorted(set(values), key=lambda v: (v not in BASELINES, str(v)))


def best_row(df: pd.DataFrame, metric: str) -> pd.Series:
    """The row with the highest `metric`; on a tie, a baseline strategy or pool.

    Ties are common (at the largest fraction every strategy may add the whole pool): the
    baseline is then the honest name for the best cell, not whichever strategy sorts first.
    """
    tie_break = [c for c in ("strategy", "pool") if c in df.columns]
    ranked = df.assign(**{f"_{c}": [v not in BASELINES for v in df[c]] for c in tie_break})
    return ranked.sort_values([metric, *[f"_{c}" for c in tie_break]],
                              ascending=[False] + [True] * len(tie_break)).iloc[0]


def freeze_order(df: pd.DataFrame) -> list[str]:
    """The freeze modes in `df`, in the study's order (least to most trained), others after by name."""
    values = set(df["freeze"])
    return [v for v in FREEZE_ORDER if v in values] + sorted(v for v in values if v not in FREEZE_ORDER)


def mean_ci(values, confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(mean, low, high) of `values` with a two-sided Student-t interval; NaNs are dropped.

    An empty input gives three NaNs; a single value gives its value and a NaN interval.
    """
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    n = len(x)
    if n == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if n == 1:
        return mean, math.nan, math.nan
    half = float(sps.t.ppf(0.5 + confidence / 2, n - 1) * x.std(ddof=1) / math.sqrt(n))
    return mean, mean - half, mean + half


def summarize(df: pd.DataFrame, metric: str = "val_accuracy", by: list[str] | None = None) -> pd.DataFrame:
    """Per group (default: per cell) the number of seeds, mean, sd and 95% interval of `metric`."""
    by = cell_columns(df) if by is None else list(by)
    rows = []
    for key, group in df.groupby(by, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        mean, low, high = mean_ci(group[metric])
        values = group[metric].dropna()
        rows.append({**dict(zip(by, key)), "n_seeds": int(len(values)), "mean": mean,
                     "sd": float(values.std(ddof=1)) if len(values) > 1 else math.nan,
                     "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows, columns=[*by, "n_seeds", "mean", "sd", "ci_low", "ci_high"])


def aulc(fraction, value) -> float:
    """Trapezoidal area under `value` vs `fraction`, divided by the fraction range.

    Points are sorted by fraction first. Fewer than two distinct fractions: NaN.
    """
    f = np.asarray(fraction, dtype=float)
    v = np.asarray(value, dtype=float)
    order = np.argsort(f, kind="stable")
    f, v = f[order], v[order]
    if len(f) < 2 or f[-1] == f[0]:
        return math.nan
    area = float(np.sum((f[1:] - f[:-1]) * (v[1:] + v[:-1]) / 2.0))
    return area / float(f[-1] - f[0])


def aulc_table(df: pd.DataFrame, metric: str = "val_accuracy") -> pd.DataFrame:
    """AULC per group of cells that differ only in `fraction`: mean over seeds with a 95% interval.

    A seed counts only if it has a trial at every fraction the group has, so that every seed's
    area spans the same range (`n_seeds_dropped` says how many did not).
    """
    by = [c for c in cell_columns(df) if c != "fraction"]
    rows = []
    for key, group in df.groupby(by, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        fractions = np.sort(group["fraction"].unique())
        per_seed = []
        dropped = 0
        for _, curve in group.groupby("seed", sort=True):
            curve = curve.dropna(subset=[metric])
            if len(fractions) < 2 or set(curve["fraction"]) != set(fractions) or curve["fraction"].duplicated().any():
                dropped += 1
                continue
            per_seed.append(aulc(curve["fraction"], curve[metric]))
        mean, low, high = mean_ci(per_seed)
        rows.append({**dict(zip(by, key)), "n_fractions": int(len(fractions)),
                     "fraction_min": float(fractions.min()), "fraction_max": float(fractions.max()),
                     "n_seeds": len(per_seed), "n_seeds_dropped": dropped,
                     "aulc": mean, "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows, columns=[*by, "n_fractions", "fraction_min", "fraction_max", "n_seeds",
                                       "n_seeds_dropped", "aulc", "ci_low", "ci_high"])


def pearson(x, y) -> dict:
    """Pearson r of two columns with its 95% interval (Fisher z) and two-sided p-value."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"n": int(len(x)), "r": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p": math.nan}
    res = sps.pearsonr(x, y)
    ci = res.confidence_interval(CONFIDENCE) if len(x) > 3 else None
    return {"n": int(len(x)), "r": float(res.statistic),
            "ci_low": float(ci.low) if ci else math.nan, "ci_high": float(ci.high) if ci else math.nan,
            "p": float(res.pvalue)}


def spearman(x, y) -> float:
    """Spearman rank correlation of two columns (NaN when either is constant or too short)."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(sps.spearmanr(x, y).statistic)


def seed_counts(df: pd.DataFrame) -> tuple[int, int]:
    """(fewest, most) seeds behind any cell of `df`."""
    if len(df) == 0:
        return 0, 0
    counts = df.groupby(cell_columns(df), dropna=False)["seed"].nunique()
    return int(counts.min()), int(counts.max())


def seed_note(df: pd.DataFrame) -> str:
    """'3 seeds per point' (or '2-3 seeds per point' when cells differ)."""
    low, high = seed_counts(df)
    span = f"{low}" if low == high else f"{low}\u2013{high}"
    return f"{span} seed{'s' if high != 1 else ''} per point"

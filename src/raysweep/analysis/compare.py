"""Comparisons a reviewer accepts: fair pairs, the seed as the unit, Holm within a table, the
seeds a finding would need, and the labels a learning curve needs.

Everything here is a pure function of a trials table (one row per successful trial), like
`stats`. The definitions, which the report repeats:

- **Fair pairs.** A level of a factor (a strategy, a pool, a pooling, an encoder) is compared
  with a baseline level in the same context (every other parameter equal), trial against trial
  with the same `fraction` and `seed`. A pair whose two trials are one training (the same rows,
  the same seed: see `training_keys`) differs by zero by construction and is left out, with its
  whole fraction: fraction 0 (no rows added) and, between strategies, a fraction that takes the
  whole pool.
- **The seed is the unit.** All fractions of a seed share its split, initialisation and dropout
  stream, so they are not independent replicates. Each seed contributes one number: its mean
  difference over the comparison's usable fractions (a seed lacking one of them is left out).
- **The test** is a two-sided paired t-test over those per-seed numbers (`scipy.stats.ttest_1samp`
  of the differences, the same as `ttest_rel` of the two sides), with its 95% t-interval. Not a
  permutation test: with n seeds the exact sign-flip test's smallest two-sided p is 2 / 2^n, so
  with 5 seeds (1/16) it can never reach 0.05.
- **Holm** within each table at alpha 0.05: a finding survives when its Holm-adjusted p is
  below 0.05; the uncorrected p stands beside it.
- **Seeds needed**: the smallest seed count at which that t-test, at the Holm threshold of the
  table's most significant row (alpha / m, so a finding of that size survives the correction),
  has 80% power against an effect of the observed size, or of a stated minimum (1 point), given
  the observed between-seed sd of the per-seed differences (noncentral t).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
from scipy import stats as sps

from raysweep.analysis.stats import CONFIDENCE, cell_columns

ALPHA = 0.05
POWER = 0.80
MIN_EFFECT = 0.01  # the stated minimum effect worth detecting: 1 point of accuracy or macro-F1
MAX_SEEDS = 1000  # seeds-needed estimates beyond this are reported as "more than 1000"
TEST_NAME = "paired t-test over seeds"
LABELS_SHARE = 0.98  # labels needed: rows added until a curve reaches this share of the best end point
LABELS_BOOT = 2000  # seed-bootstrap resamples for the labels-needed interval

# A record field naming the training a cell shares (the trial-engine issue adds it). Where the
# trials carry it, it replaces the derivation in `training_keys`.
TRAINING_COLUMN = "training"

# Why a fraction's pairs are left out, keyed by the first element of a derived training key.
EXCLUDED_WHY = {"labeled-only": "no rows added", "whole-pool": "whole pool", "shared": "one training"}

COMPARE_COLUMNS = ["metric", "fractions", "excluded", "n_seeds", "mean_diff", "sd", "ci_low", "ci_high", "p",
                   "p_holm", "significant", "seeds_observed", "seeds_min_effect"]


# --------------------------------------------------------------------------- which trials share a training


def pool_sizes(df: pd.DataFrame) -> pd.Series:
    """The pool size of each trial's pool, derived from the trials (NaN where nothing shows it).

    A trial asks for round(fraction x n_labeled) rows and adds at most the pool
    (`train.rows_to_add`): a trial that added fewer rows than it asked for took the whole pool,
    so its `n_added` is the pool's size. Pools are told apart by `sweep` and `pool`.
    """
    if "pool_size" in df.columns:  # a record field, should the sweep ever write it
        return pd.to_numeric(df["pool_size"], errors="coerce")
    if not {"n_added", "n_labeled"} <= set(df.columns):
        return pd.Series(math.nan, index=df.index)
    asked = (df["fraction"] * df["n_labeled"]).round()
    capped = df[df["n_added"] < asked]
    keys = [c for c in ("sweep", "pool") if c in df.columns]
    if not keys:
        size = capped["n_added"].max() if len(capped) else math.nan
        return pd.Series(size, index=df.index)
    sizes = capped.groupby(keys, dropna=False)["n_added"].max()
    if not len(df):
        return pd.Series(math.nan, index=df.index)
    return df[keys].apply(lambda r: sizes.get(tuple(r) if len(keys) > 1 else r.iloc[0], math.nan), axis=1)


def training_keys(df: pd.DataFrame) -> pd.Series:
    """One string per trial; two trials with the same key trained one model on the same rows.

    From the record field `training` where the trials carry it. Otherwise derived: a trial that
    added no rows trained on `labeled` alone, whatever its pool and strategy; a trial that added
    its whole pool trained on the same rows whatever its strategy (and its fraction). Any other
    trial is its own training. The parameters that still matter (seed, freeze, encoder, ...) are
    part of every key.
    """
    if TRAINING_COLUMN in df.columns and df[TRAINING_COLUMN].notna().all():
        return df[TRAINING_COLUMN].astype(str)
    params = [c for c in cell_columns(df) if c not in ("pool", "strategy", "fraction")] + ["seed"]
    rest = df[params].astype(str).agg("|".join, axis=1) if params else pd.Series("", index=df.index)
    added = df["n_added"] if "n_added" in df.columns else pd.Series(math.nan, index=df.index)
    none_added = (df["fraction"] == 0) | (added == 0)
    whole = (added >= pool_sizes(df)).fillna(False)
    own = df[[c for c in cell_columns(df) if c not in params]].astype(str).agg("|".join, axis=1)
    pool = df["pool"].astype(str) if "pool" in df.columns else pd.Series("", index=df.index)
    keys = np.where(none_added, "labeled-only|" + rest,
                    np.where(whole, "whole-pool|" + pool + "|" + rest, "own|" + own + "|" + rest))
    return pd.Series(keys, index=df.index)


# --------------------------------------------------------------------------- the statistics


def holm(pvalues) -> np.ndarray:
    """Holm-adjusted p-values (step-down, monotone, capped at 1); NaNs stay NaN and do not count."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, math.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = len(valid)
    if m == 0:
        return out
    order = valid[np.argsort(p[valid], kind="stable")]
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out[order] = adjusted
    return out


def seed_test(diffs, confidence: float = CONFIDENCE) -> dict:
    """Mean, sd, t-interval and two-sided p of per-seed differences (a paired t-test over seeds)."""
    d = np.asarray(diffs, dtype=float)
    d = d[~np.isnan(d)]
    n = len(d)
    out = {"n_seeds": n, "mean_diff": float(d.mean()) if n else math.nan,
           "sd": float(d.std(ddof=1)) if n > 1 else math.nan, "ci_low": math.nan, "ci_high": math.nan, "p": math.nan}
    if n < 2:
        return out
    if np.ptp(d) <= 1e-12 * max(1.0, abs(out["mean_diff"])):  # every seed moved alike: no spread to test against
        out.update(ci_low=out["mean_diff"], ci_high=out["mean_diff"], p=0.0 if d[0] != 0 else 1.0)
        return out
    res = sps.ttest_1samp(d, 0.0)
    ci = res.confidence_interval(confidence)
    out.update(ci_low=float(ci.low), ci_high=float(ci.high), p=float(res.pvalue))
    return out


def power(n, effect: float, sd: float, alpha: float = ALPHA) -> np.ndarray:
    """Power of the two-sided one-sample t-test with `n` seeds against a true mean `effect`."""
    n = np.asarray(n, dtype=float)
    df = n - 1
    crit = sps.t.ppf(1 - alpha / 2, df)
    nc = abs(effect) / sd * np.sqrt(n)
    with np.errstate(all="ignore"):
        p = sps.nct.sf(crit, df, nc) + sps.nct.cdf(-crit, df, nc)
    return np.where(nc > 50, 1.0, p)  # scipy's nct gives NaN far in the tail, where the power is 1


def seeds_needed(effect: float, sd: float, alpha: float = ALPHA, target: float = POWER,
                 max_seeds: int = MAX_SEEDS) -> float:
    """Fewest seeds (>= 2) giving the paired t-test `target` power against `effect` at between-seed
    sd `sd`; NaN when the effect is 0 or unknown, inf when more than `max_seeds` would be needed."""
    if any(v is None or math.isnan(v) for v in (effect, sd)) or effect == 0:
        return math.nan
    if sd <= 1e-12 * max(1.0, abs(effect)):  # no spread between seeds (up to rounding)
        return 2.0
    n = np.arange(2, max_seeds + 1)
    reached = np.flatnonzero(power(n, effect, sd, alpha) >= target)
    return float(n[reached[0]]) if len(reached) else math.inf


def _fractions_str(values) -> str:
    return ", ".join(f"{v:g}" for v in sorted(values))


def _pairs(group: pd.DataFrame, factor: str, baseline: str, level, metric: str) -> pd.DataFrame:
    cols = ["fraction", "seed", metric, "_training"]
    base = group[group[factor] == baseline][cols]
    other = group[group[factor] == level][cols]
    pairs = other.merge(base, on=["fraction", "seed"], suffixes=("", "_base"))
    pairs = pairs.dropna(subset=[metric, f"{metric}_base"])
    pairs["diff"] = pairs[metric] - pairs[f"{metric}_base"]
    pairs["shared"] = pairs["_training"] == pairs["_training_base"]
    return pairs


def compare(df: pd.DataFrame, factor: str = "strategy", baseline: str = "random", metric: str = "val_accuracy",
            by_fraction: bool = False, levels=None, min_effect: float = MIN_EFFECT) -> pd.DataFrame:
    """Each level of `factor` minus `baseline` per context, the seed as the unit; one table.

    One row per (context, level): the fractions used and those left out (and why), the seeds,
    the mean of the per-seed mean differences with its t-interval, the paired t-test's p, its
    Holm-adjusted p within this table, and the seeds needed for 80% power (see the module doc).
    With `by_fraction`, one row per usable fraction instead (a secondary table, Holm of its own).
    `levels` limits the compared levels (default: all but the baseline).
    """
    context = [c for c in cell_columns(df) if c not in (factor, "fraction")]
    out_cols = [*context, *(["fraction"] if by_fraction else []), factor, "baseline", *COMPARE_COLUMNS]
    if factor not in df.columns or metric not in df.columns or baseline not in set(df[factor]):
        return pd.DataFrame(columns=out_cols)
    data = df.assign(_training=training_keys(df))
    rows = []
    groups = data.groupby(context, sort=True, dropna=False) if context else [((), data)]
    for key, group in groups:
        key = key if isinstance(key, tuple) else (key,)
        wanted = sorted(set(group[factor]) - {baseline}, key=str)
        for level in wanted if levels is None else [v for v in wanted if v in set(levels)]:
            pairs = _pairs(group, factor, baseline, level, metric)
            if not len(pairs):
                continue
            # A fraction with any shared training is left out whole, so every seed averages the same fractions.
            shared = pairs[pairs["shared"]]
            why = {f: EXCLUDED_WHY.get(str(k).split("|", 1)[0], "one training")
                   for f, k in zip(shared["fraction"], shared["_training"])}
            usable = pairs[~pairs["fraction"].isin(why)]
            fractions = sorted(usable["fraction"].unique())
            excluded = "; ".join(f"{f:g}: {w}" for f, w in sorted(why.items()))
            row0 = {**dict(zip(context, key)), factor: level, "baseline": baseline, "metric": metric,
                    "excluded": excluded}
            if by_fraction:
                for fraction, part in usable.groupby("fraction", sort=True):
                    rows.append({**row0, "fraction": fraction, "fractions": f"{fraction:g}",
                                 **seed_test(part["diff"])})
                continue
            counts = usable.groupby("seed")["fraction"].nunique()
            complete = counts[counts == len(fractions)].index
            per_seed = usable[usable["seed"].isin(complete)].groupby("seed")["diff"].mean()
            rows.append({**row0, "fractions": _fractions_str(fractions), **seed_test(per_seed)})
    table = pd.DataFrame(rows, columns=[c for c in out_cols if c not in ("p_holm", "significant", "seeds_observed",
                                                                          "seeds_min_effect")])
    return finish_table(table, min_effect)[out_cols] if len(table) else pd.DataFrame(columns=out_cols)


def finish_table(table: pd.DataFrame, min_effect: float = MIN_EFFECT) -> pd.DataFrame:
    """Holm within the table, the surviving mark and the seeds-needed estimates at alpha / m."""
    table = table.copy()
    table["p_holm"] = holm(table["p"])
    table["significant"] = table["p_holm"] < ALPHA
    m = max(int(table["p"].notna().sum()), 1)
    table["seeds_observed"] = [seeds_needed(e, s, ALPHA / m) for e, s in zip(table["mean_diff"], table["sd"])]
    table["seeds_min_effect"] = [seeds_needed(min_effect, s, ALPHA / m) for s in table["sd"]]
    return table


def with_test_check(val: pd.DataFrame, test: pd.DataFrame) -> pd.DataFrame:
    """`val` findings with the same comparison on the test split beside them, and whether they agree.

    They disagree when the test mean has the other sign, or when a finding that survives the
    correction on val has a test interval that includes 0.
    """
    keys = [c for c in val.columns if c not in COMPARE_COLUMNS and c != "baseline"]
    if not len(test):
        return val.assign(test_mean_diff=math.nan, test_ci_low=math.nan, test_ci_high=math.nan, test_p=math.nan,
                          test_agrees=pd.NA)
    t = test[[*keys, "mean_diff", "ci_low", "ci_high", "p"]].rename(
        columns={"mean_diff": "test_mean_diff", "ci_low": "test_ci_low", "ci_high": "test_ci_high", "p": "test_p"})
    out = val.merge(t, on=keys, how="left")
    same_sign = np.sign(out["mean_diff"]) == np.sign(out["test_mean_diff"])
    test_excludes_0 = (out["test_ci_low"] > 0) | (out["test_ci_high"] < 0)
    agrees = same_sign & (~out["significant"].astype(bool) | test_excludes_0)
    out["test_agrees"] = agrees.where(out["test_mean_diff"].notna(), pd.NA)
    return out


# --------------------------------------------------------------------------- labels needed


def first_crossing(x, y, target: float) -> float:
    """The smallest x at which the piecewise-linear curve through (x, y) reaches `target`; NaN if never."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    keep = ~np.isnan(y)
    x, y = x[keep], y[keep]
    if not len(x):
        return math.nan
    if y[0] >= target:
        return float(x[0])
    for i in range(len(x) - 1):
        if y[i] < target <= y[i + 1]:
            return float(x[i] + (target - y[i]) / (y[i + 1] - y[i]) * (x[i + 1] - x[i]))
    return math.nan


def labels_needed(df: pd.DataFrame, metric: str = "val_accuracy", factor: str = "strategy",
                  share: float = LABELS_SHARE, n_boot: int = LABELS_BOOT, seed: int = 0) -> pd.DataFrame:
    """Rows added until each curve reaches `share` of the best curve's end point, per context.

    A curve is a level of `factor` (the mean over seeds at each fraction, against the rows that
    fraction added); the best curve is the one with the highest mean at its largest fraction. The
    answer interpolates linearly between fractions; NaN means not reached. The interval is a seed
    bootstrap: seeds drawn with replacement, the same draw for every curve of the context, the
    target and each crossing computed again; a bound beyond every curve's end is "not reached"
    (inf). `reached_share` is the share of resamples in which the curve reached its target.
    A context with fewer than two seeds gets no row.
    """
    x_col = "n_added" if "n_added" in df.columns and df["n_added"].notna().all() else "fraction"
    context = [c for c in cell_columns(df) if c not in (factor, "fraction")]
    cols = [*context, factor, "x", "share", "target", "rows_needed", "ci_low", "ci_high", "reached_share", "n_seeds"]
    rows = []
    rng = np.random.default_rng(seed)
    groups = df.groupby(context, sort=True, dropna=False) if context else [((), df)]
    for key, group in groups:
        key = key if isinstance(key, tuple) else (key,)
        levels = sorted(set(group[factor]), key=str)
        fractions = np.sort(group["fraction"].unique())
        if len(fractions) < 2:  # one point is no curve: nothing to interpolate
            continue
        seeds = np.sort(group["seed"].unique())
        if len(seeds) < 2:  # one seed's curve is one draw of the noise: no answer, and no interval for it
            continue
        # values[level, fraction, seed]; x per (level, fraction) is the mean rows added there
        values = np.full((len(levels), len(fractions), len(seeds)), math.nan)
        xs = np.full((len(levels), len(fractions)), math.nan)
        li = {v: i for i, v in enumerate(levels)}
        fi = {v: i for i, v in enumerate(fractions)}
        si = {v: i for i, v in enumerate(seeds)}
        for r in group[[factor, "fraction", "seed", metric]].itertuples(index=False):
            values[li[r[0]], fi[r[1]], si[r[2]]] = r[3]
        for (lv, fr), part in group.groupby([factor, "fraction"]):
            xs[li[lv], fi[fr]] = part[x_col].mean()

        def answer(curves: np.ndarray) -> tuple[float, np.ndarray]:
            ends = [c[~np.isnan(c)][-1] if (~np.isnan(c)).any() else math.nan for c in curves]
            target = share * np.nanmax(ends)
            return target, np.array([first_crossing(xs[i], curves[i], target) for i in range(len(levels))])

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # the mean of a curve point no drawn seed has
            target, needed = answer(np.nanmean(values, axis=2))
            draws = rng.integers(0, len(seeds), size=(n_boot, len(seeds)))
            # every resample's mean curves at once: values[:, :, draws] is (level, fraction, resample, seed)
            curves = np.nanmean(values[:, :, draws], axis=3) if len(seeds) > 1 else np.empty((len(levels), 0, 0))
            boot = np.array([answer(curves[:, :, b])[1] for b in range(curves.shape[2])]).reshape(-1, len(levels))
        for i, level in enumerate(levels):
            b = np.where(np.isnan(boot[:, i]), math.inf, boot[:, i]) if len(boot) else np.array([])
            # inverted_cdf: an order statistic, so a bound among the "not reached" draws is inf, not NaN
            low, high = (np.quantile(b, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2], method="inverted_cdf")
                         if len(b) else (math.nan, math.nan))
            rows.append({**dict(zip(context, key)), factor: level, "x": x_col, "share": share, "target": target,
                         "rows_needed": needed[i], "ci_low": float(low), "ci_high": float(high),
                         "reached_share": float(np.isfinite(b).mean()) if len(b) else math.nan,
                         "n_seeds": int((~np.isnan(values[i])).any(axis=0).sum())})
    return pd.DataFrame(rows, columns=cols)

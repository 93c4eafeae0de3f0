"""Inference over seeds *and* evaluation rows: findings that hold on new data.

Every seed of a sweep is scored on the same evaluation rows. A paired t over seeds (compare.py)
is an interval for *this* evaluation set: a difference that lives in which rows two strategies'
models get right is shared by every seed and never averages out. Here the rows count too.

The method (the report's method paragraph repeats it):

- **Per-row values.** Each cell's metric is written as a mean over evaluation rows of per-row
  values (`row_values`): accuracy is the mean of 0/1 correctness and an MSE of squared errors;
  macro-F1 and a positive-class F1 are ratios, linearised (delta method: each row's value is the
  metric plus its influence, whose mean over rows is exactly the metric). Correlations have no
  per-row form here: they fall back to the seed-only test, said so.
- **A two-way crossed variance-components estimate.** For one comparison, D[s, r] is seed s's
  difference (level minus baseline) at row r, averaged over the comparison's usable fractions.
  With D = theta + a_s + b_r + e_sr (seed, row and seed-by-row effects, all random), the mean of
  D estimates theta with variance var_a / S + var_b / n + var_e / (S n), and the ANOVA mean
  squares give it without bias: (MS_seed + MS_row - MS_resid) / (S n). MS_seed / (S n) alone is
  exactly the paired t-test's variance over seeds, so the row term is what a new evaluation set
  adds; it is never taken below zero (the interval is never narrower than the seed-only one).
  Degrees of freedom by Satterthwaite; a two-sided t-test and t-interval on them. (Capping them at
  the seed-only test's S - 1 would keep every interval at least as wide as the seed-only one, but
  the simulation found it conservative: 0.9% false detections at 5 seeds instead of 5%.)
- **Why not the two-way bootstrap.** It answers the same question, but a bootstrap p-value
  resolves no better than 1 / B, and Holm over a table of 16 comparisons asks for p near 0.003:
  tens of thousands of resamples per comparison, and a simulation of 500 sweeps that no test
  could afford. The mean squares are exact, smooth and take one pass over D; the calibration
  test (tests/analysis/test_rows.py) checks their false-detection rate by simulation.

`compare_rows` is the API: a trials table + the cells' predictions -> the comparison table of
`compare.compare` with both inferences. Its `ci_low`, `ci_high`, `p`, `p_holm` and `significant`
are the "new rows" inference (findings are stated on it); the `seed_*` columns are the seed-only
one ("on this evaluation set").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as sps

from raysweep.analysis import compare
from raysweep.analysis.compare import ALPHA, MIN_EFFECT, POWER
from raysweep.analysis.stats import CONFIDENCE, cell_columns
from raysweep.predictions import RowTable, read_rows

ROW_METRICS = ("accuracy", "macro_f1", "positive_f1", "mse")  # metrics with per-row values
INFERENCE_ROWS = "seeds and rows"
INFERENCE_SEEDS = "seeds only"
MAX_ROWS = 10_000_000  # rows-needed estimates beyond this are reported as "more than 10 million"

# The columns compare_rows adds to compare.compare's table.
ROW_COLUMNS = ["inference", "why_seeds_only", "n_rows", "seed_ci_low", "seed_ci_high", "seed_p", "seed_p_holm",
               "seed_significant", "var_seed", "var_row", "var_resid", "row_share", "rows_observed",
               "rows_min_effect"]


# --------------------------------------------------------------------------- per-row values


def row_values(metric: str, labels: np.ndarray, predicted: np.ndarray, num_classes: int | None = None) -> np.ndarray:
    """[cells, rows] values whose mean over rows is each cell's `metric` (without its `val_`/`test_`).

    `predicted` is [cells, rows] (or [rows]); labels [rows]. Raises ValueError for a metric with
    no per-row form (a correlation).
    """
    name = metric.removeprefix("val_").removeprefix("test_")
    pred = np.atleast_2d(np.asarray(predicted))
    gold = np.asarray(labels)
    if name == "accuracy":
        return (pred == gold).astype(np.float64)
    if name == "mse":
        return (pred.astype(np.float64) - gold.astype(np.float64)) ** 2
    if name == "macro_f1":
        k = int(num_classes or max(int(gold.max()), int(pred.max())) + 1)
        return np.mean([_f1_values(pred == c, gold == c) for c in range(k)], axis=0)
    if name == "positive_f1":
        return _f1_values(pred == 1, gold == 1)
    raise ValueError(f"{metric}: no per-row values (only {', '.join(ROW_METRICS)} have them)")


def _f1_values(predicted: np.ndarray, true: np.ndarray) -> np.ndarray:
    """One class's F1 = 2 TP / (P + G) per cell, linearised per row: F1 + its influence.

    With t, p, g the per-row means of TP, predicted and gold indicators, F1 = 2t / (p + g) and a
    row's influence is 2 (t_r - t) / (p + g) - 2 t ((p_r - p) + (g_r - g)) / (p + g)^2; it averages
    to zero, so the values average to F1. A class neither true nor predicted: F1 0, no influence.
    """
    tp = (predicted & true).astype(np.float64)
    pr = predicted.astype(np.float64)
    gt = np.broadcast_to(true, predicted.shape).astype(np.float64)
    t, p, g = tp.mean(1, keepdims=True), pr.mean(1, keepdims=True), gt.mean(1, keepdims=True)
    s = p + g
    safe = np.where(s > 0, s, 1.0)
    f1 = np.where(s > 0, 2 * t / safe, 0.0)
    influence = 2 * (tp - t) / safe - 2 * t * ((pr - p) + (gt - g)) / safe**2
    return f1 + np.where(s > 0, influence, 0.0)


# --------------------------------------------------------------------------- the two-way estimate


@dataclass
class TwoWay:
    """The variance components of one comparison's D[seeds, rows] and the test built on them."""

    mean: float
    n_seeds: int
    n_rows: int
    ms_seed: float
    ms_row: float
    ms_resid: float

    @property
    def var_seed_only(self) -> float:
        """The paired t-test's variance of the mean over seeds (each seed's mean over the rows)."""
        return self.ms_seed / (self.n_seeds * self.n_rows)

    @property
    def var(self) -> float:
        """Variance of the mean over new seeds and new rows; never below the seed-only one (the
        interval can still be a little narrower: its t has more degrees of freedom)."""
        return max(self.ms_seed, self.ms_seed + self.ms_row - self.ms_resid) / (self.n_seeds * self.n_rows)

    @property
    def df(self) -> float:
        """Satterthwaite's degrees of freedom of `var`."""
        return float(_satterthwaite(self.ms_seed, self.ms_row, self.ms_resid, self.n_seeds, self.n_rows))

    def components(self) -> tuple[float, float, float]:
        """(seed, row, residual) variance components of one D[s, r], each clipped at zero."""
        s, n = self.n_seeds, self.n_rows
        return (max(self.ms_seed - self.ms_resid, 0.0) / n, max(self.ms_row - self.ms_resid, 0.0) / s,
                self.ms_resid)

    def test(self, confidence: float = CONFIDENCE) -> dict:
        """Mean, t-interval and two-sided p on seeds and rows."""
        se = math.sqrt(self.var)
        if se <= 1e-12 * max(1.0, abs(self.mean)):
            return {"ci_low": self.mean, "ci_high": self.mean, "p": 0.0 if self.mean != 0 else 1.0}
        half = float(sps.t.ppf(0.5 + confidence / 2, self.df)) * se
        p = float(2 * sps.t.sf(abs(self.mean) / se, self.df))
        return {"ci_low": self.mean - half, "ci_high": self.mean + half, "p": p}


def _mean_squares(d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(grand mean, MS_seed, MS_row, MS_resid) of each D[batch, seeds, rows]."""
    _, s, n = d.shape
    grand = d.mean((1, 2))
    seed_means, row_means = d.mean(2), d.mean(1)
    with np.errstate(divide="ignore", invalid="ignore"):  # one seed or one row: no spread to measure
        ms_seed = n * ((seed_means - grand[:, None]) ** 2).sum(1) / (s - 1) if s > 1 else np.full(len(d), np.nan)
        ms_row = s * ((row_means - grand[:, None]) ** 2).sum(1) / (n - 1) if n > 1 else np.zeros(len(d))
        resid = d - seed_means[:, :, None] - row_means[:, None, :] + grand[:, None, None]
        ms_resid = (resid**2).sum((1, 2)) / ((s - 1) * (n - 1)) if s > 1 and n > 1 else np.zeros(len(d))
    return grand, ms_seed, ms_row, ms_resid


def _satterthwaite(ms_seed, ms_row, ms_resid, s: int, n: int):
    """Degrees of freedom of MS_seed + MS_row - MS_resid; the seed-only test's S - 1 where the row term is clipped."""
    with np.errstate(divide="ignore", invalid="ignore"):
        df = (ms_seed + ms_row - ms_resid) ** 2 / (
            ms_seed**2 / (s - 1) + ms_row**2 / max(n - 1, 1) + ms_resid**2 / ((s - 1) * max(n - 1, 1)))
    return np.where((ms_row <= ms_resid) | ~np.isfinite(df), s - 1.0, df)


def two_way(d: np.ndarray) -> TwoWay:
    """The mean squares of D[seeds, rows] (a complete two-way table, one value per cell)."""
    d = np.asarray(d, dtype=np.float64)
    grand, ms_seed, ms_row, ms_resid = (float(x[0]) for x in _mean_squares(d[None]))
    return TwoWay(grand, d.shape[0], d.shape[1], ms_seed, ms_row, ms_resid)


def two_way_batch(d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`two_way` + the test over many comparisons at once, D[batch, seeds, rows] -> (mean, p, p_seed_only, se):
    what the calibration simulation runs on hundreds of simulated sweeps."""
    _, s, n = d.shape
    grand, ms_seed, ms_row, ms_resid = _mean_squares(d)
    total = np.maximum(ms_seed, ms_seed + ms_row - ms_resid)
    df = _satterthwaite(ms_seed, ms_row, ms_resid, s, n)
    with np.errstate(divide="ignore", invalid="ignore"):
        se = np.sqrt(total / (s * n))
        p = 2 * sps.t.sf(np.abs(grand) / se, df)
        p_seed = 2 * sps.t.sf(np.abs(grand) / np.sqrt(ms_seed / (s * n)), s - 1)
    return grand, p, p_seed, se


# --------------------------------------------------------------------------- what more data would settle it


def _needed_z(m: int) -> float:
    """z(1 - alpha / (2 m)) + z(power): how many standard errors an effect must span for 80% power
    at the table's Holm threshold (normal approximation; the seed-only count is compare's t-based one)."""
    return float(sps.norm.ppf(1 - ALPHA / (2 * m)) + sps.norm.ppf(POWER))


def _count_needed(effect: float, m: int, fixed: float, per_unit: float, least: int, most: float) -> float:
    """Smallest k >= `least` with fixed + per_unit / k <= (effect / z)^2: the variance of the mean
    when one axis (seeds or rows) grows to k and the other stays; inf when `fixed` alone is too much."""
    if effect is None or math.isnan(effect) or effect == 0:
        return math.nan
    room = (effect / _needed_z(m)) ** 2 - fixed
    if room <= 0:
        return math.inf
    need = per_unit / room
    return float(max(math.ceil(need), least)) if need <= most else math.inf


def rows_needed(tw: TwoWay, effect: float, m: int) -> float:
    """Evaluation rows at which the test reaches 80% power against `effect` with this many seeds:
    var_a / S + (var_b + var_e / S) / n' <= (effect / z)^2. inf when seeds alone leave too much."""
    va, vb, ve = tw.components()
    return _count_needed(effect, m, va / tw.n_seeds, vb + ve / tw.n_seeds, 1, MAX_ROWS)


def seeds_needed(tw: TwoWay, effect: float, m: int) -> float:
    """Seeds at which the test reaches 80% power against `effect` at this evaluation-set size:
    (var_a + var_e / n) / S' + var_b / n <= (effect / z)^2. inf when the rows' floor var_b / n
    alone is too wide: then no number of seeds is enough (see `rows_needed`)."""
    va, vb, ve = tw.components()
    return _count_needed(effect, m, vb / tw.n_rows, va + ve / tw.n_rows, 2, compare.MAX_SEEDS)


# --------------------------------------------------------------------------- predictions of a sweep


class Predictions:
    """The per-row predictions of the cells of one or more results directories, by split."""

    def __init__(self, tables: list[RowTable]):
        self.where: dict[tuple[str, str], tuple[RowTable, int]] = {}
        for table in tables:
            for i, cid in enumerate(table.cell_ids):
                self.where[(table.split, cid)] = (table, i)

    @classmethod
    def read(cls, dirs: list[Path], splits: tuple[str, ...] = ("val", "test")) -> Predictions:
        return cls([t for d in dirs for s in splits if (t := read_rows(d, s)) is not None])

    def __len__(self) -> int:
        return len(self.where)

    def has(self, split: str, cid: str) -> bool:
        return (split, cid) in self.where

    def values(self, split: str, cell_ids: list[str], metric: str, num_classes: int | None = None) -> np.ndarray:
        """[cells, rows] per-row values of `metric` for `cell_ids` (all on one evaluation set)."""
        found = [self.where[(split, c)] for c in cell_ids]
        table = found[0][0]
        if any(t is not table for t, _ in found):
            raise ValueError("cells scored on different evaluation sets cannot be paired row by row")
        idx = np.array([i for _, i in found])
        return row_values(metric, table.labels, table.predicted[idx], num_classes)


# --------------------------------------------------------------------------- the comparison table


def _parse_fractions(text: str) -> list[float]:
    return [float(x) for x in str(text).split(",") if x.strip()]


def pair_cells(ok: pd.DataFrame, row: pd.Series, factor: str, context: list[str]) -> pd.DataFrame:
    """The (seed, fraction) pairs of cell ids behind one compare table row: level vs baseline in
    the row's context, at its usable fractions, seeds that have all of them."""
    mask = pd.Series(True, index=ok.index)
    for c in context:
        mask &= ok[c].astype(str) == str(row[c])
    group = ok[mask]
    fractions = _parse_fractions(row["fractions"])
    cols = ["fraction", "seed", "cell_id"]
    other = group[(group[factor].astype(str) == str(row[factor])) & group["fraction"].isin(fractions)][cols]
    base = group[(group[factor].astype(str) == str(row["baseline"])) & group["fraction"].isin(fractions)][cols]
    pairs = other.merge(base, on=["fraction", "seed"], suffixes=("", "_base"))
    counts = pairs.groupby("seed")["fraction"].nunique()
    complete = counts[counts == len(fractions)].index
    return pairs[pairs["seed"].isin(complete)].sort_values(["seed", "fraction"])


def differences(pairs: pd.DataFrame, preds: Predictions, split: str, metric: str,
                num_classes: int | None = None) -> np.ndarray:
    """D[seeds, rows]: per seed, the level minus the baseline at each row, averaged over fractions."""
    a = preds.values(split, pairs["cell_id"].tolist(), metric, num_classes)
    b = preds.values(split, pairs["cell_id_base"].tolist(), metric, num_classes)
    seeds = pairs["seed"].to_numpy()
    order = np.unique(seeds)
    return np.stack([(a[seeds == s] - b[seeds == s]).mean(0) for s in order])


def compare_rows(ok: pd.DataFrame, preds: Predictions, factor: str = "strategy", baseline: str = "random",
                 metric: str = "val_accuracy", levels=None, by_fraction: bool = False,
                 min_effect: float = MIN_EFFECT, num_classes: int | None = None) -> pd.DataFrame:
    """`compare.compare` with the inference over seeds and evaluation rows beside the seed-only one.

    Per row: `ci_low`/`ci_high`/`p`/`p_holm`/`significant` on seeds and rows ("on new rows") where
    every cell of the comparison has predictions and the metric has per-row values; else the
    seed-only test's, with `inference` "seeds only" and `why_seeds_only` saying why. The seed-only
    test stays in `seed_ci_low`/`seed_ci_high`/`seed_p`/`seed_p_holm`/`seed_significant`.
    Seeds needed (`seeds_observed`, `seeds_min_effect`) count the rows' floor: inf where no number
    of seeds is enough, and then `rows_observed` / `rows_min_effect` say how many evaluation rows
    (at this seed count) would be.
    """
    table = compare.compare(ok, factor, baseline, metric, by_fraction=by_fraction, levels=levels, min_effect=min_effect)
    if not len(table):
        return table.reindex(columns=[*table.columns, *ROW_COLUMNS])
    split = "test" if metric.startswith("test_") else "val"
    context = [c for c in cell_columns(ok) if c not in (factor, "fraction")]
    table = table.assign(seed_ci_low=table["ci_low"], seed_ci_high=table["ci_high"], seed_p=table["p"],
                         seed_p_holm=table["p_holm"], seed_significant=table["significant"],
                         inference=INFERENCE_SEEDS, why_seeds_only="", n_rows=np.nan, var_seed=np.nan,
                         var_row=np.nan, var_resid=np.nan, row_share=np.nan, rows_observed=np.nan,
                         rows_min_effect=np.nan)
    fits = {}
    name = metric.removeprefix("val_").removeprefix("test_")
    for i, row in table.iterrows():
        if name not in ROW_METRICS:
            table.at[i, "why_seeds_only"] = f"{name} has no per-row values"
            continue
        pairs = pair_cells(ok, row, factor, context)
        ids = pairs["cell_id"].tolist() + pairs["cell_id_base"].tolist()
        missing = [c for c in dict.fromkeys(ids) if not preds.has(split, c)]
        if missing or pairs["seed"].nunique() < 2:
            table.at[i, "why_seeds_only"] = (f"{len(missing)} of {len(set(ids))} cells have no predictions on record"
                                             if missing else "fewer than 2 seeds")
            continue
        try:
            tw = two_way(differences(pairs, preds, split, metric, num_classes))
        except ValueError as exc:
            table.at[i, "why_seeds_only"] = str(exc)
            continue
        fits[i] = tw
        va, vb, ve = tw.components()
        table.loc[i, ["inference", "n_rows", "var_seed", "var_row", "var_resid", "row_share"]] = [
            INFERENCE_ROWS, tw.n_rows, va, vb, ve,
            (vb / tw.n_rows) / (vb / tw.n_rows + (va + ve / tw.n_rows) / tw.n_seeds) if tw.var > 0 else np.nan]
        table.loc[i, ["mean_diff", "ci_low", "ci_high", "p"]] = [tw.mean, *tw.test().values()]
    table["p_holm"] = compare.holm(table["p"])
    table["significant"] = table["p_holm"] < ALPHA
    m = max(int(table["p"].notna().sum()), 1)
    for i, tw in fits.items():
        effect = table.at[i, "mean_diff"]
        table.loc[i, ["seeds_observed", "seeds_min_effect", "rows_observed", "rows_min_effect"]] = [
            seeds_needed(tw, effect, m), seeds_needed(tw, min_effect, m),
            rows_needed(tw, effect, m), rows_needed(tw, min_effect, m)]
    return table


def row_values_of(preds: Predictions | None, metric: str, num_classes: int | None = None):
    """A `compare.labels_needed` callback: cell ids -> their per-row values of `metric`, or None
    when one has no predictions, the metric has no per-row form, or they sit on different rows."""
    split = "test" if metric.startswith("test_") else "val"

    def values(cell_ids: list[str]) -> np.ndarray | None:
        if preds is None or not all(preds.has(split, c) for c in cell_ids):
            return None
        try:
            return preds.values(split, cell_ids, metric, num_classes)
        except ValueError:
            return None

    return values


def missing_predictions(ok: pd.DataFrame, preds: Predictions | None) -> pd.DataFrame:
    """The finished cells with no `val` predictions on record (they finished before predictions.py)."""
    cols = [c for c in ("sweep", "cell_id", *cell_columns(ok), "seed") if c in ok.columns]
    have = preds if preds is not None else Predictions([])
    gone = ok[[not have.has("val", c) for c in ok["cell_id"]]]
    return gone[list(dict.fromkeys(cols))].drop_duplicates("cell_id").reset_index(drop=True)


def with_seed_test_check(val: pd.DataFrame, test: pd.DataFrame) -> pd.DataFrame:
    """`compare.with_test_check` for the new inference (`test_agrees`) and, beside it, the same check of
    the seed-only inference's findings (`seed_test_agrees`): the before/after of the split-half run."""
    out = compare.with_test_check(val, test)
    if "seed_significant" not in out.columns or not len(test):
        return out.assign(seed_test_agrees=pd.NA)
    old = compare.with_test_check(val.assign(significant=val["seed_significant"]), test)
    out["seed_test_agrees"] = old["test_agrees"].to_numpy()
    return out

"""How often a finding that survives on one evaluation set agrees on a second one, when the
inference is calibrated and the effect is real (docs/measurements.md, "Findings that hold on new
data": the split-half check).

    python benchmarks/replication.py [--sweeps 2000] [--seeds 10] [--rows 550]

Issue 27's check splits the dev set in two halves, keeps as findings the comparisons that survive
Holm on the first and asks that none of them disagree on the second. This script measures that
check on simulated sweeps where the truth is known (tests/analysis/test_rows.py's `simulate`:
every seed scored on one evaluation set, two strategies' models differing row by row), so that a
failure on real data can be read: is it the inference, or the check?

Each simulated sweep has `--comparisons` comparisons (the report's Holm family; 4 in
selection-small): the first with a true effect, the others with none. Every comparison is scored
on two independent sets of `--rows` rows by the same seeds' models: "half 1" (where findings are
made) and "half 2" (the check). Printed per true effect, for the inference over seeds and rows
(analysis/rows.py, issue 27) and for the seed-only paired t-test (before it):
- survive: how often the comparison with the effect survives Holm on half 1 (the power);
- false: how often one of the no-effect comparisons survives (the family-wise error);
- disagree | survive, by sign: the survivor's mean on half 2 has the other sign;
- disagree | survive, the report's rule (analysis/compare.with_test_check): other sign, or half
  2's seed-only 95% interval includes 0;
- check passes: the share of sweeps in which no survivor disagrees by the report's rule (what
  the issue's "Done means" asks of one real split).
Nothing is timed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.stats as sps

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "analysis"))

from test_rows import simulate  # noqa: E402

from raysweep.analysis import rows  # noqa: E402
from raysweep.analysis.compare import holm  # noqa: E402

ALPHA = 0.05
EFFECTS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3)  # logit shift of the first comparison's row gaps


def seed_only_interval(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per batch, the seed-only 95% t-interval of the mean of D[batch, seeds, rows] (the report's test column)."""
    per_seed = d.mean(axis=2)
    s = per_seed.shape[1]
    half = sps.t.ppf(1 - ALPHA / 2, s - 1) * per_seed.std(axis=1, ddof=1) / np.sqrt(s)
    mean = per_seed.mean(axis=1)
    return mean - half, mean + half


def run(effect: float, sweeps: int, seeds: int, n: int, m: int, seed: int) -> dict:
    # [comparison][sweep, seed, row]: both sets drawn from one population, scored by the same seeds
    d = [simulate(sweeps, seeds, 2 * n, effect if c == 0 else 0.0, seed=seed + 7919 * c) for c in range(m)]
    first = [rows.two_way_batch(x[:, :, :n]) for x in d]
    second_mean = np.stack([x[:, :, n:].mean(axis=(1, 2)) for x in d])  # [m, sweeps]
    lo, hi = zip(*(seed_only_interval(x[:, :, n:]) for x in d))
    second_excludes_0 = (np.stack(lo) > 0) | (np.stack(hi) < 0)
    effect_pp = 100 * float(np.mean([x[:, :, n:].mean() for x in d[:1]]))
    out = {"true effect, pp": round(effect_pp, 2)}
    for name, col in (("seeds and rows", 1), ("seeds only", 2)):
        p = np.stack([f[col] for f in first])  # [m, sweeps]
        mean1 = np.stack([f[0] for f in first])
        survive = np.stack([holm(p[:, k]) < ALPHA for k in range(sweeps)], axis=1)
        other_sign = np.sign(mean1) != np.sign(second_mean)
        disagree = survive & (other_sign | ~second_excludes_0)
        first_survives = survive[0]
        out[f"{name}: survive"] = first_survives.mean()
        out[f"{name}: false"] = survive[1:].any(axis=0).mean()
        n_alive = max(int(first_survives.sum()), 1)
        out[f"{name}: disagree | survive, sign"] = (first_survives & other_sign[0]).sum() / n_alive
        out[f"{name}: disagree | survive, rule"] = (first_survives & disagree[0]).sum() / n_alive
        out[f"{name}: check passes"] = 1 - disagree.any(axis=0).mean()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sweeps", type=int, default=2000)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--rows", type=int, default=550, help="rows of each half")
    ap.add_argument("--comparisons", type=int, default=4)
    args = ap.parse_args()
    table = pd.DataFrame([run(e, args.sweeps, args.seeds, args.rows, args.comparisons, seed=101 * i)
                          for i, e in enumerate(EFFECTS)])
    for name in ("seeds and rows", "seeds only"):
        cols = ["true effect, pp"] + [c for c in table.columns if c.startswith(name)]
        print(f"\n{name} ({args.sweeps} sweeps per row, {args.seeds} seeds, {args.rows} rows a half, "
              f"{args.comparisons} comparisons, Holm at {ALPHA})")
        print(table[cols].rename(columns=lambda c: c.split(": ")[-1]).to_markdown(index=False, floatfmt=".3f"))


if __name__ == "__main__":
    main()

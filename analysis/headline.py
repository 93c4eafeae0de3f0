"""Print the headline table (AULC and the paired difference to `random`) of results directories.

    .venv/bin/python analysis/headline.py RESULTS_DIR [RESULTS_DIR ...] [--metric val_macro_f1]

A quick look at a sweep from the terminal, without drawing figures.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from raysweep.analysis import stats
from raysweep.analysis.results import combined_trials, load_many


def headline(results_dirs: list[Path], metric: str = "val_accuracy", n_boot: int = stats.N_BOOT,
             seed: int = 0) -> pd.DataFrame:
    trials = combined_trials(load_many(results_dirs))
    ok = trials[trials["status"] == "ok"]
    aulc = stats.aulc_table(ok, metric)
    paired = stats.paired_differences(ok, "strategy", "random", metric=metric, n_boot=n_boot, seed=seed)
    keys = [c for c in aulc.columns if c in stats.parameter_columns(aulc)]
    if len(paired):
        paired = paired[[*keys, "mean_diff", "ci_low", "ci_high", "significant"]].rename(
            columns={"ci_low": "diff_ci_low", "ci_high": "diff_ci_high"})
        aulc = aulc.merge(paired, on=keys, how="left")
    return aulc


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results_dirs", nargs="+", type=Path)
    parser.add_argument("--metric", default="val_accuracy", help="a numeric trials.csv column")
    args = parser.parse_args(argv)
    table = headline(args.results_dirs, args.metric)
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.precision", 4):
        print(table.to_string(index=False))


if __name__ == "__main__":
    main()

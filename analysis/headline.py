"""Print the headline table (AULC and the paired difference to `random`) as Markdown.

    .venv/bin/python analysis/headline.py RESULTS_DIR [RESULTS_DIR ...]

A quick look at sweeps from the terminal, without drawing figures; the same table as the report's.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from raysweep.analysis import stats, tables
from raysweep.analysis.document import markdown_table
from raysweep.analysis.results import combined_trials, load_many


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results_dirs", nargs="+", type=Path)
    parser.add_argument("--seed", type=int, default=0, help="seeds the bootstrap")
    args = parser.parse_args(argv)
    trials = combined_trials(load_many(args.results_dirs))
    ok = trials[trials["status"] == "ok"]
    if not len(ok):
        raise SystemExit("no successful trials")
    paired = stats.paired_differences(ok, "strategy", "random", seed=args.seed)
    head = tables.headline_table(stats.aulc_table(ok), paired, tables.cell_table(ok))
    print(markdown_table(tables.show_headline(head, stats.varying_parameters(ok), has_diff=len(paired) > 0)))


if __name__ == "__main__":
    main()

"""Print the headline table (AULC and the seed-unit difference to `random`) as Markdown.

    .venv/bin/python analysis/headline.py RESULTS_DIR [RESULTS_DIR ...]

A quick look at sweeps from the terminal, without drawing figures; the same table as the report's.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from raysweep.analysis import stats, tables
from raysweep.analysis.document import markdown_table
from raysweep.analysis.report import headline_table
from raysweep.analysis.results import successful_trials


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results_dirs", nargs="+", type=Path)
    args = parser.parse_args(argv)
    ok = successful_trials(args.results_dirs)
    head, factor, baseline, _ = headline_table(ok)
    print(markdown_table(tables.show_headline(head, stats.varying_parameters(ok), has_diff="mean_diff" in head.columns,
                                              factor=factor, baseline=baseline)))


if __name__ == "__main__":
    main()

"""Build the report (report.md, report.html, figures/, tables/) from one or more results directories.

    .venv/bin/python analysis/make_report.py RESULTS_DIR [RESULTS_DIR ...] --output DIR

The same as `raysweep analyze`; the work is in `raysweep.analysis`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from raysweep.analysis import analyze
from raysweep.analysis.compare import LABELS_BOOT


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results_dirs", nargs="+", type=Path, help="directories holding trials.csv and sweep.yaml")
    parser.add_argument("--output", "-o", type=Path, required=True, help="where the report is written")
    parser.add_argument("--n-boot", type=int, default=LABELS_BOOT,
                        help="seed-bootstrap resamples for the labels-needed intervals")
    parser.add_argument("--seed", type=int, default=0, help="seeds the bootstrap and the scatter subsampling")
    args = parser.parse_args(argv)
    print(analyze(args.results_dirs, args.output, n_boot=args.n_boot, seed=args.seed))


if __name__ == "__main__":
    main()

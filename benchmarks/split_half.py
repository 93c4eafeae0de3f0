"""The split-half data file of docs/measurements.md ("Findings that hold on new data"): bundled
SST-5 with its dev split cut in two seeded, label-stratified halves, the first kept as `dev` (the
sweep's val) and the second relabeled `test` (held out; never seen by selection or training).

    python benchmarks/split_half.py make OUT.csv [--seed 0]
    raysweep run sweeps/selection-small.yaml -o RUN --set data.path=OUT.csv
    raysweep analyze RUN -o REPORT
    python benchmarks/split_half.py count REPORT

A finding that survives on the first half should agree on the second. `count` prints, for the
seed-only inference (before issue 27) and the inference over seeds and rows (after), how many
comparisons survive Holm on the first half and how many of those agree / disagree on the second
(the report's `test agrees` check), from the report's tables/compare_*.csv.
"""

from __future__ import annotations

import argparse
from importlib import resources

import numpy as np
import pandas as pd


def split_half(df: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """`df` with every other dev row of each label (in a seeded order) relabeled `test`."""
    out = df.copy()
    rng = np.random.default_rng(seed)
    dev = out.index[out["split"] == "dev"]
    for _, rows in out.loc[dev].groupby("label"):
        order = rng.permutation(rows.index.to_numpy())
        out.loc[order[1::2], "split"] = "test"
    return out


def count(report_dir: str) -> pd.DataFrame:
    """Per inference: comparisons, survivors on the first half, and how many agree on the second."""
    from pathlib import Path

    tables = [pd.read_csv(p) for p in sorted(Path(report_dir, "tables").glob("compare_*.csv"))
              if "by_fraction" not in p.name]
    table = pd.concat(tables, ignore_index=True)
    rows = []
    for name, survives, agrees in (("seed-only (before)", "seed_significant", "seed_test_agrees"),
                                   ("seeds and rows (after)", "significant", "test_agrees")):
        alive = table[table[survives].astype(bool)]
        verdict = alive[agrees].map(lambda v: None if pd.isna(v) else bool(v) if not isinstance(v, str)
                                    else v.strip().lower() == "true")
        rows.append({"inference": name, "comparisons": len(table), "survive on half 1": len(alive),
                     "agree on half 2": int((verdict == True).sum()),  # noqa: E712 - NA stays out
                     "disagree on half 2": int((verdict == False).sum())})  # noqa: E712
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    make = sub.add_parser("make", help="write the split-half data file")
    make.add_argument("out")
    make.add_argument("--seed", type=int, default=0)
    tally = sub.add_parser("count", help="survivors on half 1 that agree on half 2, before and after")
    tally.add_argument("report")
    args = ap.parse_args()
    if args.command == "count":
        print(count(args.report).to_markdown(index=False))
        return
    with resources.as_file(resources.files("raysweep") / "bundled" / "sst5-train-dev.csv.gz") as path:
        df = pd.read_csv(path)
    out = split_half(df, args.seed)
    out.to_csv(args.out, index=False)
    print(out["split"].value_counts().to_string())


if __name__ == "__main__":
    main()

"""The split-half data file of docs/measurements.md ("Findings that hold on new data"): bundled
SST-5 with its dev split cut in two seeded, label-stratified halves, the first kept as `dev` (the
sweep's val) and the second relabeled `test` (held out; never seen by selection or training).

    python benchmarks/split_half.py OUT.csv [--seed 0]

A finding that survives on the first half should agree on the second: a sweep on this file reports
both (analysis: "on new rows" vs the test column).
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    with resources.as_file(resources.files("raysweep") / "bundled" / "sst5-train-dev.csv.gz") as path:
        df = pd.read_csv(path)
    out = split_half(df, args.seed)
    out.to_csv(args.out, index=False)
    print(out["split"].value_counts().to_string())


if __name__ == "__main__":
    main()

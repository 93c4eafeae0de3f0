"""The split-half data file of docs/measurements.md ("Findings that hold on new data"): bundled
SST-5 with its dev split cut in two seeded, label-stratified halves, the first kept as `dev` (the
sweep's val) and the second relabeled `test` (held out; never seen by selection or training).

    python benchmarks/split_half.py make OUT.csv [--seed 0]
    raysweep run sweeps/selection-small.yaml -o RUN --set data.path=OUT.csv
    raysweep analyze RUN -o REPORT
    python benchmarks/split_half.py count REPORT

or, from a finished run on the bundled data (the same models: a trial never reads dev rows),
    python benchmarks/split_half.py derive BUNDLED_RUN RUN [--seed 0]

and, to see whether one split's verdict is luck, how far apart the two halves put each strategy
comparison over many split seeds against what the variance components predict:
    python benchmarks/split_half.py spread BUNDLED_RUN [--splits 200]

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


def derive(run_dir: str, out_dir: str, seed: int = 0) -> pd.DataFrame:
    """The split-half results of a finished run on bundled SST-5, from its per-row predictions.

    A trial never sees the dev rows (selection and training read train only), so a run on the
    split-half file trains exactly the models of the run on the bundled file, cell for cell; only
    what they are scored on differs. Each cell's full-dev predictions are cut into the two halves
    (the same seeded split as `make`): val = half 1, test = half 2, with the metrics recomputed on
    each. Written as a results directory `raysweep analyze` reads (trials.csv, sweep.yaml,
    predictions/); cell ids are the bundled run's.
    """
    from pathlib import Path

    import yaml

    from raysweep.metrics import confusion, macro_f1
    from raysweep.predictions import SplitPredictions, read_rows, write_cell
    from raysweep.storage import Output

    with resources.as_file(resources.files("raysweep") / "bundled" / "sst5-train-dev.csv.gz") as path:
        df = pd.read_csv(path)
    dev = split_half(df, seed)
    dev = dev[df["split"] == "dev"]["split"].to_numpy()  # per dev row, in file order: dev (half 1) or test
    halves = {"val": dev == "dev", "test": dev == "test"}
    rows = read_rows(run_dir, "val")
    if rows is None or len(rows.labels) != len(dev):
        raise SystemExit(f"{run_dir}: no per-row val predictions of the {len(dev)} bundled dev rows")
    trials = pd.read_csv(Path(run_dir) / "trials.csv")
    trials = trials[trials["cell_id"].isin(rows.cell_ids)].copy()
    at = rows.index()
    out = Output(out_dir)
    k = int(max(rows.labels.max(), rows.predicted.max()) + 1)
    for i, r in trials.iterrows():
        pred = rows.predicted[at[r["cell_id"]]]
        parts = {name: SplitPredictions(rows.labels[m], pred[m]) for name, m in halves.items()}
        write_cell(out, r["cell_id"], parts)
        for name, p in parts.items():
            trials.loc[i, f"{name}_accuracy"] = float((p.predicted == p.labels).mean())
            trials.loc[i, f"{name}_macro_f1"] = macro_f1(p.labels, p.predicted, k)
        trials.loc[i, "confusion"] = str(confusion(parts["val"].labels, parts["val"].predicted, k).tolist())
    cols = list(trials.columns)
    at_f1 = cols.index("val_macro_f1") + 1  # test metrics beside val, as a sweep with a test split writes them
    cols = cols[:at_f1] + ["test_accuracy", "test_macro_f1"] + [c for c in cols[at_f1:]
                                                               if c not in ("test_accuracy", "test_macro_f1")]
    trials[cols].to_csv(Path(out_dir) / "trials.csv", index=False)
    cfg = yaml.safe_load((Path(run_dir) / "sweep.yaml").read_text())
    cfg["name"] = f"{cfg['name']}-split-half"
    cfg["description"] = (f"derived from {run_dir}: its models' predictions on SST-5 dev cut in two seeded, "
                          f"label-stratified halves (seed {seed}): val = half 1, test = half 2")
    (Path(out_dir) / "sweep.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return trials


def spread(run_dir: str, splits: int = 200) -> pd.DataFrame:
    """Per strategy-vs-random comparison of a bundled run (at the fractions between the smallest
    and the largest) and metric: the gap between the two halves' mean differences (half 1 - half
    2) at split seed 0 and its sd over `splits` split seeds, each half's metric computed as the
    report does, beside the sd the variance components of the full dev set predict (per-row values,
    macro-F1 linearised: analysis/rows.py). The seeds are the same on both halves, so only the row
    and residual components separate them: sd = sqrt(2 (var_row + var_resid / seeds) / (rows / 2))."""
    from pathlib import Path

    from raysweep.analysis.rows import row_values, two_way
    from raysweep.metrics import macro_f1
    from raysweep.predictions import read_rows

    with resources.as_file(resources.files("raysweep") / "bundled" / "sst5-train-dev.csv.gz") as path:
        df = pd.read_csv(path)
    dev = df["split"] == "dev"
    firsts = [split_half(df, seed)[dev]["split"].to_numpy() == "dev" for seed in range(splits)]
    rows = read_rows(run_dir, "val")
    at = rows.index()
    gold = rows.labels
    k = int(max(gold.max(), rows.predicted.max()) + 1)
    score = {"accuracy": lambda m, pred: float((pred[m] == gold[m]).mean()),
             "macro_f1": lambda m, pred: macro_f1(gold[m], pred[m], k)}
    trials = pd.read_csv(Path(run_dir) / "trials.csv")
    trials = trials[trials["status"].eq("ok") & trials["cell_id"].isin(at)]
    cell = trials.set_index(["freeze", "strategy", "fraction", "seed"])["cell_id"]
    seeds = sorted(trials["seed"].unique())
    # at the smallest and largest fraction every strategy trains on the same rows (the report leaves them out)
    middle = sorted(trials["fraction"].unique())[1:-1]
    out = []
    for metric, of_half in score.items():
        for (freeze, strategy), _ in trials[trials["strategy"] != "random"].groupby(["freeze", "strategy"]):
            pairs = [(rows.predicted[at[cell[freeze, strategy, f, s]]], rows.predicted[at[cell[freeze, "random", f, s]]])
                     for s in seeds for f in middle]
            d = np.array([row_values(metric, gold, a, k)[0] - row_values(metric, gold, b, k)[0] for a, b in pairs])
            d = d.reshape(len(seeds), len(middle), -1).mean(1)
            _, var_row, var_resid = two_way(d).components()

            def diff(m):
                return np.mean([of_half(m, a) - of_half(m, b) for a, b in pairs])

            gaps = np.array([diff(m) - diff(~m) for m in firsts])
            out.append({"freeze": freeze, "strategy": strategy, "metric": metric, "full dev, pp": 100 * d.mean(),
                        "gap at split seed 0, pp": 100 * gaps[0],
                        "sd of the gap over splits, pp": 100 * gaps.std(ddof=1),
                        "predicted sd, pp": 100 * np.sqrt(2 * (var_row + var_resid / len(seeds)) / (d.shape[1] / 2)),
                        "split seed 0 in sd": gaps[0] / gaps.std(ddof=1)})
    return pd.DataFrame(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    make = sub.add_parser("make", help="write the split-half data file")
    make.add_argument("out")
    make.add_argument("--seed", type=int, default=0)
    tally = sub.add_parser("count", help="survivors on half 1 that agree on half 2, before and after")
    tally.add_argument("report")
    cut = sub.add_parser("derive", help="a bundled run's results cut into the two halves (val / test)")
    cut.add_argument("run")
    cut.add_argument("out")
    cut.add_argument("--seed", type=int, default=0)
    wide = sub.add_parser("spread", help="the halves' gap per comparison over many split seeds, against the prediction")
    wide.add_argument("run")
    wide.add_argument("--splits", type=int, default=200)
    args = ap.parse_args()
    if args.command == "spread":
        print(spread(args.run, args.splits).to_markdown(index=False, floatfmt=".2f"))
        return
    if args.command == "count":
        print(count(args.report).to_markdown(index=False))
        return
    if args.command == "derive":
        print(f"{len(derive(args.run, args.out, args.seed))} cells written to {args.out}")
        return
    with resources.as_file(resources.files("raysweep") / "bundled" / "sst5-train-dev.csv.gz") as path:
        df = pd.read_csv(path)
    out = split_half(df, args.seed)
    out.to_csv(args.out, index=False)
    print(out["split"].value_counts().to_string())


if __name__ == "__main__":
    main()

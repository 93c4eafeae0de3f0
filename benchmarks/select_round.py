"""Benchmark: where a `raysweep select` round's time goes, on 2,000 SST-5 rows (issue 29's case).

Builds the README example's project at 2,000 unlabeled rows (50 labeled, 10 per class; MiniLM,
pooler head, 50 epochs, batch 50) and times, each in a fresh process from a fresh project:

- round 1 with Ray started for the encoder pass (what `select` did before: Ray Data actors for
  1,000 rows or more), and
- round 1 in-process (what `select` does now on one machine), then round 2 after a simulated
  annotator labels the batch (the activations cached: training, scoring and the stopping line).

Each row: the wall time of the process (imports included, what a user waits for), and the
stage times from round.json: encoder pass, cross-validated estimate, stopping criterion, the rest
of selecting. Run alone if you can: the load at start and end is printed (measurement.py).

    python benchmarks/select_round.py [--rows 2000] [--paths ray,in-process]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from measurement import measurement  # benchmarks/measurement.py: the docs/measurements.md block

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE.parent / "examples" / "label-your-own-data"


def make_project(d: Path, rows: int) -> dict[str, str]:
    """The example project at `rows` unlabeled rows; returns SST-5's label of every row (the annotator)."""
    from raysweep.config import DataConfig
    from raysweep.data import load_dataset

    train, _, _ = load_dataset(DataConfig())
    names = DataConfig().class_names
    order = np.random.default_rng(1).permutation(len(train))
    labeled = np.concatenate([[i for i in order if train["label"][i] == c][:10] for c in range(len(names))])
    taken = set(labeled)
    unlabeled = [i for i in order if i not in taken][:rows]
    d.mkdir(parents=True)
    pd.DataFrame({"id": [f"sst-{i}" for i in labeled], "text": train["text"][labeled].to_numpy(),
                  "label": [names[c] for c in train["label"][labeled]]}).to_csv(d / "labeled.csv", index=False)
    pd.DataFrame({"id": [f"sst-{i}" for i in unlabeled], "text": train["text"][unlabeled].to_numpy()}).to_csv(
        d / "unlabeled.csv", index=False)
    (d / "project.yaml").write_text((EXAMPLE / "project.yaml").read_text().replace("batch: 20", "batch: 50"))
    return {f"sst-{i}": names[train["label"][i]] for i in (*labeled, *unlabeled)}


def child(project: str, ray: bool, labels: str | None) -> None:
    """One round in this process (Ray started first when `ray`)."""
    from raysweep import labeling

    if ray:
        from raysweep.runtime import start_ray

        start_ray()
    d = labeling.select(project, labels=labels, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(json.dumps(json.loads((d / "round.json").read_text())))


def run(project: Path, ray: bool, labels: Path | None = None) -> dict:
    cmd = [sys.executable, __file__, "--child", str(project)] + (["--ray"] if ray else []) + (
        ["--labels", str(labels)] if labels else [])
    start = time.perf_counter()
    out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True, env=os.environ).stdout
    summary = json.loads(out.strip().splitlines()[-1])
    summary["wall_s"] = time.perf_counter() - start
    return summary


def annotate(project: Path, gold: dict[str, str]) -> Path:
    batch = sorted(project.glob("rounds/round-*"))[-1]
    rows = pd.read_csv(batch / "to_label.csv", dtype=str)
    out = project / f"labels-{batch.name}.csv"
    pd.DataFrame({"id": rows["id"], "label": [gold[i] for i in rows["id"]]}).to_csv(out, index=False)
    return out


def row(what: str, s: dict) -> str:
    rest = s["select_s"] - s.get("cv_s", 0) - s.get("stopping_s", 0)
    acc = f"{s['cv_accuracy']:.3f}" if s.get("cv_accuracy") is not None else "-"
    return (f"| {what} | {s['wall_s']:.1f} | {s['encode_s']:.1f} | {s.get('cv_s', 0):.1f} | "
            f"{s.get('stopping_s', 0):.1f} | {rest:.1f} | {s['labeled']} | {acc} | {os.getloadavg()[0]:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--paths", default="ray,in-process")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--ray", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--labels", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.ray, args.labels)
    print(f"{args.rows:,} unlabeled + 50 labeled SST-5 rows; MiniLM, pooler head, 50 epochs, 5 folds, batch 50")
    print("| round | wall s | encode s | cv estimate s | stopping s | rest of select s | labeled | cv accuracy "
          "| load at end |")
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="select-round-") as tmp:
        for path in args.paths.split(","):
            d = Path(tmp) / path
            gold = make_project(d, args.rows)
            ray = path == "ray"
            print(row(f"1, {'Ray started for the encoder pass (before)' if ray else 'in-process (now)'}", run(d, ray)),
                  flush=True)
            if not ray:
                print(row("2, in-process, activations cached", run(d, False, annotate(d, gold))), flush=True)


if __name__ == "__main__":
    if "--child" in sys.argv:
        main()
    else:
        with measurement("raysweep select: round 1 and 2 on 2,000 SST-5 rows (issue 29)"):
            main()

"""Benchmark: what Ray Tune orchestration costs per trial, on top of the trial's own work.

Runs a sweep of many tiny trials (last-linear, 1 epoch, on 300 + 100 real SST-5 rows embedded
by the bundled encoder) through `run_sweep` on a fresh local Ray, and prints:

    trials          cells run
    wall s          `run_sweep` end to end, `ray.init` excluded (it is timed on its own)
    prepare s       data, activation cache and scoring before the first trial (paid once per sweep)
    fit s           Tune's `tuner.fit()`: every trial, from the first scheduled to the last reported
    sum trial s     the trials' own select + train + evaluate time (trials.csv `trial_s`)
    = start         of fit s: from building the Tuner to Tune starting its first trial (actor start-up)
    + span          of fit s: from the first trial's start to the last trial's result
    + end           of fit s: from the last result to `fit()` returning
    concurrency     trials that can run at once: CPUs / cpus_per_trial
    overhead/trial  (concurrency x fit s - sum trial s) / trials
    in span         (concurrency x span - sum trial s) / trials: the same without Tune's start and end,
                    i.e. what one more trial costs once the sweep is running

The overhead is the trial-slot time that went to anything but a trial's own work, per trial:
Tune scheduling and reporting, actor start-up (or reuse), loading the cached activations,
writing cells/<id>.json and its running marker, and slots idling while Tune waits. It assumes
every slot could be busy for all of `fit s`, so it charges idle slots to orchestration too; it
is an upper bound when there are fewer trials than slots. The target is < 0.5 s per trial.

    python benchmarks/orchestration.py [--trials 120] [--cpus 2] [--epochs 1] [--repeat 1] [--keep DIR]

The machine's load average is printed too: on a shared machine other processes inflate it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from raysweep.config import load_sweep
from raysweep.data import bundled_path
from raysweep.sweep import run_sweep

from measurement import measurement  # benchmarks/measurement.py: the docs/measurements.md block

FRACTIONS = (0, 1, 2)


def sweep_yaml(data: Path, seeds: int, epochs: int) -> str:
    return (f"name: orchestration\n"
            f"compare: {{strategy: [random], fraction: {list(FRACTIONS)}, freeze: [last-linear]}}\n"
            f"replicate: {{seed: {list(range(seeds))}}}\n"
            f"data: {{path: {data}}}\n"
            f"recipe: {{epochs: {epochs}}}\n"
            f"resources: {{cpus_per_trial: 1}}\n")


def run_once(root: Path, data: Path, trials: int, epochs: int) -> dict:
    seeds = math.ceil(trials / len(FRACTIONS))
    sweep = root / "orchestration.yaml"
    sweep.write_text(sweep_yaml(data, seeds, epochs))
    cfg = load_sweep(sweep)
    stamps = {}

    def log(msg: str) -> None:
        for key, pattern in (("prepare", r"prepared the trials' inputs in ([\d.]+) s"),
                             ("fit", r"ran \d+ trials in ([\d.]+) s")):
            m = re.search(pattern, msg)
            if m:
                stamps[key] = float(m.group(1))
                stamps[f"{key}_at"] = time.time()  # the prepare message comes just before the Tuner is built

    out = root / f"out-{time.monotonic_ns()}"
    t = time.perf_counter()
    table = run_sweep(cfg, out, log=log)
    wall = time.perf_counter() - t
    csv = pd.read_csv(out / "trials.csv")
    assert len(csv) == len(table) == seeds * len(FRACTIONS) and set(csv["status"]) == {"ok"}
    first, last = trial_span(out / "tune")
    return {"trials": len(csv), "wall": wall, "prepare": stamps["prepare"], "fit": stamps["fit"],
            "start": first - stamps["prepare_at"], "span": last - first, "end": stamps["fit_at"] - last,
            "trial_s": float(csv["trial_s"].sum())}


def trial_span(tune_dir: Path) -> tuple[float, float]:
    """When Tune started its first trial and received its last result (its experiment state's clock)."""
    state = json.loads(max(tune_dir.glob("*/experiment_state-*.json")).read_text())
    runtime = [json.loads(r) for _, r in state["trial_data"]]
    return min(r["start_time"] for r in runtime), max(r["last_result_time"] for r in runtime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=120, help="at least this many cells (fractions x seeds)")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray instance, one per trial")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=1, help="sweeps run, each into a fresh output")
    parser.add_argument("--keep", default=None, help="write the sweeps' outputs here instead of a temporary directory")
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import ray

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep or tmp)
        root.mkdir(parents=True, exist_ok=True)
        df = pd.read_csv(bundled_path(), keep_default_na=False)
        data = root / "sst5-small.csv"
        pd.concat([df[df.split == "train"].head(300), df[df.split == "dev"].head(100)]).to_csv(data, index=False)

        t = time.perf_counter()
        ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
        init_s = time.perf_counter() - t
        print(f"ray.init {init_s:.1f} s; {args.cpus} CPUs, 1 per trial; last-linear, {args.epochs} epoch(s), "
              f"300 train + 100 dev rows; load average {os.getloadavg()[0]:.1f} at start")
        header = (f"{'trials':>7}{'wall s':>8}{'prepare s':>10}{'fit s':>7}{'= start':>8}{'+ span':>8}{'+ end':>7}"
                  f"{'sum trial s':>12}{'concurrency':>12}{'overhead/trial s':>17}{'in span':>9}")
        print(header)
        print("-" * len(header))
        for _ in range(args.repeat):
            r = run_once(root, data, args.trials, args.epochs)
            overhead = (args.cpus * r["fit"] - r["trial_s"]) / r["trials"]
            in_span = (args.cpus * r["span"] - r["trial_s"]) / r["trials"]
            print(f"{r['trials']:>7}{r['wall']:>8.1f}{r['prepare']:>10.1f}{r['fit']:>7.1f}{r['start']:>8.1f}"
                  f"{r['span']:>8.1f}{r['end']:>7.1f}{r['trial_s']:>12.2f}{args.cpus:>12}{overhead:>17.3f}"
                  f"{in_span:>9.3f}")
        print(f"load average {os.getloadavg()[0]:.1f} at the end")
        ray.shutdown()


if __name__ == "__main__":
    with measurement("Tune's cost per trial (benchmarks/orchestration.py)"):
        main()

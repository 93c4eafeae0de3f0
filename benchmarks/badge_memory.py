"""Benchmark: what `select`'s badge adds to memory on a large pool, beside the gradient matrix.

`raysweep select` with badge writes the pool's [probabilities | sentence vectors] to a spill file
and seeds k-means++ on BADGE's gradient embeddings from them (poolscan.kmeans_pp). This measures
that step alone, on `--rows` pool rows of random float32 outputs (5 classes, 384-d vectors, the
pooled freeze modes' shapes), each size in a fresh process: the peak resident memory (VmHWM)
over the process's resident memory just before the step, and its time. `--dense` also prints the
size of the N x C*H float32 gradient matrix the step never builds.

    python benchmarks/badge_memory.py [--rows 100000] [--batch 100] [--classes 5] [--hidden 384]

The rest of a `select` round (torch, the encoder, the pool's texts) takes the ~0.5-1 GB that
docs/select.md states whatever the pool; this is what badge adds on top.
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

from measurement import measurement  # benchmarks/measurement.py: the docs/measurements.md block


def _mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(rows: int, batch: int, classes: int, hidden: int) -> None:
    from raysweep import poolscan

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as work:
        spill = poolscan.Spill(Path(work) / "pool.f32", rows, classes + hidden)
        for start in range(0, rows, poolscan.RUN_ROWS):  # written a run at a time, as select does
            m = min(poolscan.RUN_ROWS, rows - start)
            probs = rng.dirichlet(np.ones(classes), size=m).astype(np.float32)
            spill.write(np.hstack([probs, rng.normal(size=(m, hidden)).astype(np.float32)]))
        spill.fh.flush()
        # VmHWM cannot be reset from inside; the step's peak is read against the RSS before it,
        # which already holds the imports and the writer's largest run.
        before_hwm, before = _mb("VmHWM"), _mb("VmRSS")
        t = time.perf_counter()
        picked = poolscan.kmeans_pp(spill, classes, batch, np.random.default_rng(0))
        seconds = time.perf_counter() - t
        after_hwm = _mb("VmHWM")
        spill.close()
    print(json.dumps({"rows": rows, "picks": len(picked), "seconds": round(seconds, 2), "rss_before_mb": round(before),
                      "peak_mb": round(after_hwm), "added_mb": round(max(after_hwm, before_hwm) - before),
                      "peak_rose": after_hwm > before_hwm}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="100000", help="pool sizes, comma-separated")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        return child(args.child, args.batch, args.classes, args.hidden)
    with measurement("badge's selection step in select: peak memory over the process's own"):
        print(f"{'pool rows':>10}{'picks':>7}{'select s':>10}{'RSS before MB':>15}{'peak MB':>9}{'added MB':>10}"
              f"{'N x C*H float32 MB':>20}  load {os.getloadavg()[0]:.1f}")
        for rows in (int(r) for r in args.rows.split(",")):
            cmd = [sys.executable, __file__, "--child", str(rows), "--batch", str(args.batch),
                   "--classes", str(args.classes), "--hidden", str(args.hidden)]
            r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
            dense = rows * args.classes * args.hidden * 4 / 2 ** 20
            print(f"{rows:>10,}{r['picks']:>7}{r['seconds']:>10.1f}{r['rss_before_mb']:>15}{r['peak_mb']:>9}"
                  f"{r['added_mb']:>10}{dense:>20,.0f}")


if __name__ == "__main__":
    main()

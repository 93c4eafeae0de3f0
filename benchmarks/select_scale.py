"""Benchmark: one `raysweep select` round per pool size and encoder path: time and peak memory.

For each pool size (`--sizes`) and path (`--paths`: `in-process`, `ray` = Ray Data with
`--actors` actors) it builds a fresh project of `--labeled` labeled rows and that many unlabeled
ones (sentences of 6-30 words drawn from SST-5's vocabulary, seeded), runs one round
(`labeling.select`: encoder pass, 5-fold estimate, training, scoring the pool run by run,
ranking, the round's files) in a fresh process, and prints one table row: wall time, the stage
times from round.json, encoder rows/s, the peak resident memory (VmHWM) of the round's process
(the driver) and, on the Ray path, of the largest Ray worker process (the encoder actors) and of
the raylet, sampled every second from /proc.

Memory should be flat in pool size beyond the pool's O(n) per-row arrays (texts, ids, a score):
the encoder pass writes each batch to the cache as it comes (cache_writer.py) and the batch is
chosen run by run from the memory-mapped cache (poolscan.py).

`--layers K` cuts the encoder to its first K layers (the same tokenizer, width and vector size):
what a pool costs in memory depends on the vector size, not the depth, and a full MiniLM pass
over 100,000 rows takes ~5 minutes on 2 idle cores.

    python benchmarks/select_scale.py [--sizes 10000,30000,100000] [--paths in-process,ray]
                                      [--actors 2] [--layers 1] [--labeled 200] [--batch 100]
                                      [--freeze pooler] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from measurement import measurement  # benchmarks/measurement.py: the docs/measurements.md block

CLASSES = ["very negative", "negative", "neutral", "positive", "very positive"]


def encoder_with_layers(layers: int, where: Path) -> str:
    """MiniLM's first `layers` layers, saved as a local encoder (its own weights, not random)."""
    if layers >= 6:
        return "minilm"
    from transformers import AutoModel, AutoTokenizer

    from raysweep.encoders import resolve_encoder

    path = resolve_encoder("minilm")
    model = AutoModel.from_pretrained(path, num_hidden_layers=layers)
    model.save_pretrained(where)
    AutoTokenizer.from_pretrained(path).save_pretrained(where)
    return str(where)


def make_project(d: Path, rows: int, labeled: int, batch: int, freeze: str, encoder: str, actors: int) -> None:
    from raysweep.config import DataConfig
    from raysweep.data import load_dataset

    train, _, _ = load_dataset(DataConfig())
    vocab = np.array(sorted({w for t in train["text"] for w in t.split()}))
    rng = np.random.default_rng(0)
    texts = [" ".join(vocab[rng.integers(len(vocab), size=rng.integers(6, 31))]) + f" #{i}"
             for i in range(rows + labeled)]
    pd.DataFrame({"id": [f"l{i}" for i in range(labeled)], "text": texts[:labeled],
                  "label": [CLASSES[i % 5] for i in range(labeled)]}).to_csv(d / "labeled.csv", index=False)
    pd.DataFrame({"id": [f"u{i}" for i in range(rows)], "text": texts[labeled:]}).to_parquet(d / "unlabeled.parquet")
    (d / "project.yaml").write_text(json.dumps({
        "classes": CLASSES, "unlabeled": "unlabeled.parquet", "batch": batch, "freeze": freeze,
        "encoder": {"name": encoder, "batch_size": 64, "actors": actors}}))  # JSON is YAML


def peak_rss_mb() -> float:
    return _status_mb(Path("/proc/self/status"), "VmHWM")


def _status_mb(path: Path, key: str) -> float:
    try:
        for line in path.read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:  # the process ended between listing and reading
        pass
    return float("nan")


def child(project: str, no_ray: bool, threads: int) -> None:
    """One round in this process; prints a JSON line with the measurements."""
    import torch

    from raysweep import labeling

    if threads:
        torch.set_num_threads(threads)
    if not no_ray:  # `select` uses a Ray that is up (labeling.cluster_given); it starts none itself
        from raysweep.runtime import start_ray

        start_ray()

    start = time.perf_counter()
    d = labeling.select(project, use_ray=not no_ray, log=lambda m: print(m, file=sys.stderr, flush=True))
    summary = json.loads((d / "round.json").read_text())
    print(json.dumps({"wall_s": round(time.perf_counter() - start, 1), "peak_rss_mb": round(peak_rss_mb()),
                      **{k: summary[k] for k in ("encode_s", "select_s", "labeled", "pool", "cv_accuracy")}}))


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (Ray's raylet, GCS and workers are the round's descendants)."""
    parent = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parent[int(stat.parent.name)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    found, frontier = [], [pid]
    while frontier:
        kids = [p for p, pp in parent.items() if pp in frontier]
        found += kids
        frontier = kids
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def run_one(d: Path, no_ray: bool, threads: int) -> dict:
    """Run the round in a child process, sampling its descendants' peak memory every second."""
    cmd = [sys.executable, __file__, "--child", str(d), "--threads", str(threads)] + (["--no-ray"] if no_ray else [])
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=os.environ)
    workers: dict[int, float] = {}  # Ray worker processes ("ray::..."): their VmHWM
    raylet = 0.0
    start, last_note = time.perf_counter(), 0.0
    while proc.poll() is None:
        for pid in descendants(proc.pid):
            line = _cmdline(pid)
            hwm = _status_mb(Path(f"/proc/{pid}/status"), "VmHWM")
            if line.startswith("ray::") and hwm == hwm:
                workers[pid] = max(workers.get(pid, 0.0), hwm)
            elif "raylet" in line.split(" ")[0] and hwm == hwm:
                raylet = max(raylet, hwm)
        if time.perf_counter() - last_note >= 60:  # the round's memory as it goes
            last_note = time.perf_counter()
            rss = _status_mb(Path(f"/proc/{proc.pid}/status"), "VmRSS")
            print(f"[{last_note - start:6.0f} s] driver RSS {rss:.0f} MB, "
                  f"largest Ray worker so far {max(workers.values(), default=0):.0f} MB", file=sys.stderr, flush=True)
        time.sleep(1)
    out = proc.stdout.read()
    if proc.returncode:
        raise SystemExit(f"the round failed (exit {proc.returncode})")
    result = json.loads(out.strip().splitlines()[-1])
    result.update(worker_mb=max(workers.values(), default=float("nan")), raylet_mb=raylet or float("nan"),
                  workers=len(workers))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,30000,100000", help="pool sizes, comma-separated")
    parser.add_argument("--paths", default="in-process,ray", help="in-process and/or ray, comma-separated")
    parser.add_argument("--actors", type=int, default=2, help="Ray Data encoder actors on the ray path")
    parser.add_argument("--labeled", type=int, default=200)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--freeze", default="pooler")
    parser.add_argument("--layers", type=int, default=1, help="encoder layers kept (MiniLM has 6)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of the in-process encoder pass (0: torch's default)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--no-ray", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.no_ray, args.threads)
    sizes = [int(x) for x in args.sizes.split(",")]
    paths = args.paths.split(",")
    print(f"encoder: MiniLM's first {args.layers} layer(s); freeze {args.freeze}; {args.labeled} labeled rows; "
          f"batch {args.batch}; in-process: {args.threads or 'default'} torch thread(s); ray: {args.actors} actors")
    print("| pool rows | path | wall s | encode s | select s | encoder rows/s | driver peak RSS MB "
          "| largest Ray worker peak RSS MB | raylet peak RSS MB | load at end |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="select-scale-") as tmp:
        encoder = encoder_with_layers(args.layers, Path(tmp) / "encoder")
        for size in sizes:
            for path in paths:
                d = Path(tmp) / f"project-{size}-{path}"
                d.mkdir()
                make_project(d, size, args.labeled, args.batch, args.freeze, encoder, args.actors)
                r = run_one(d, path != "ray", args.threads)
                shutil.rmtree(d)  # its cache: the next run encodes afresh
                rows = size + args.labeled
                where = "in-process" if path != "ray" else f"Ray Data, {args.actors} actors"
                ray_cols = (f"{r['worker_mb']:,.0f} | {r['raylet_mb']:,.0f}" if path == "ray" else "- | -")
                print(f"| {size:,} | {where} | {r['wall_s']:.0f} | {r['encode_s']:.0f} | {r['select_s']:.1f} | "
                      f"{rows / r['encode_s']:.0f} | {r['peak_rss_mb']:,} | {ray_cols} | {os.getloadavg()[0]:.1f} |",
                      flush=True)


if __name__ == "__main__":
    if "--child" in sys.argv:  # one round; its last line is the parent's JSON
        main()
    else:
        with measurement("Label your own data (issue 17): scale"):
            main()

"""Benchmark: one `raysweep select` round on a large synthetic pool: time per stage and peak memory.

Builds a project of `--labeled` labeled rows and `--rows` unlabeled ones (sentences of 6-30 words
drawn from SST-5's vocabulary, seeded), runs one round (`labeling.select`: encoder pass,
5-fold estimate, training, scoring, ranking, the round's files) in a fresh process, and prints
the stage times from round.json and the process's peak resident memory (VmHWM). With `--no-ray`
everything runs in this one process, so its peak is the whole round's; with Ray, the encoder
pass runs in Ray Data actors whose memory is not counted.

`--layers K` cuts the encoder to its first K layers (the same tokenizer, width and vector size,
1/6 of MiniLM's compute per layer kept): what a pool costs in memory depends on the vector size,
not the depth, and a full MiniLM pass over 100,000 rows takes ~5 minutes on 2 idle cores.

    python benchmarks/select_scale.py [--rows 100000] [--labeled 200] [--batch 100]
                                      [--freeze pooler] [--layers 6] [--no-ray] [--threads 0]
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


def make_project(d: Path, rows: int, labeled: int, batch: int, freeze: str, encoder: str) -> None:
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
        "encoder": {"name": encoder, "batch_size": 64}}))  # JSON is YAML


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(project: str, no_ray: bool, threads: int) -> None:
    """One round in this process; prints a JSON line with the measurements."""
    import torch

    from raysweep import labeling

    if threads:
        torch.set_num_threads(threads)

    start = time.perf_counter()
    d = labeling.select(project, use_ray=not no_ray, log=lambda m: print(m, file=sys.stderr, flush=True))
    summary = json.loads((d / "round.json").read_text())
    print(json.dumps({"wall_s": round(time.perf_counter() - start, 1), "peak_rss_mb": round(peak_rss_mb()),
                      **{k: summary[k] for k in ("encode_s", "select_s", "labeled", "pool", "cv_accuracy")}}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--labeled", type=int, default=200)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--freeze", default="pooler")
    parser.add_argument("--layers", type=int, default=6, help="encoder layers kept (MiniLM has 6)")
    parser.add_argument("--no-ray", action="store_true", help="everything in one process (peak memory is all of it)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads of the in-process encoder pass (0: torch's default)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.no_ray, args.threads)
    with tempfile.TemporaryDirectory(prefix="select-scale-") as tmp:
        d = Path(tmp) / "project"
        d.mkdir()
        encoder = encoder_with_layers(args.layers, Path(tmp) / "encoder")
        make_project(d, args.rows, args.labeled, args.batch, args.freeze, encoder)
        cmd = [sys.executable, __file__, "--child", str(d), "--threads", str(args.threads)] + (
            ["--no-ray"] if args.no_ray else [])
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=os.environ)
        start = time.perf_counter()
        while proc.poll() is None:  # the round's memory as it goes: a run cut short still shows its growth
            time.sleep(30)
            status = Path(f"/proc/{proc.pid}/status")
            rss = next((ln.split()[1] for ln in status.read_text().splitlines() if ln.startswith("VmRSS:")), "?") \
                if status.exists() else "?"
            print(f"[{time.perf_counter() - start:6.0f} s] RSS {int(rss) // 1024 if rss != '?' else '?'} MB",
                  file=sys.stderr, flush=True)
        out = proc.stdout.read()
        if proc.returncode:
            raise SystemExit(f"the round failed (exit {proc.returncode})")
        result = json.loads(out.strip().splitlines()[-1])
    load = os.getloadavg()[0]
    where = f"in-process, {args.threads or 'default'} thread(s)" if args.no_ray else "Ray Data"
    print(f"| {args.rows:,} | {args.freeze} | {args.layers} | {where} | "
          f"{result['encode_s']:.0f} | {result['select_s']:.1f} | {result['wall_s']:.0f} | "
          f"{result['peak_rss_mb']:,} | {load:.0f} |")


if __name__ == "__main__":
    main()

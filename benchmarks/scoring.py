"""Benchmark: pool rows scored per second through Ray Data against a plain in-process loop.

Scores the same real SST-5 pool rows under the same models (trained briefly on labeled rows
with the bundled encoder, one per seed) both ways, per freeze mode, and checks that both give
the same probabilities, embeddings and MC-dropout samples. In-process is a plain loop over the
models; Ray Data scores all of them in one pass, as a sweep's driver does. The Ray Data time
is end to end: building the dataset, starting the actor pool (each actor rebuilds the models)
and collecting results; `ray.init` itself is not counted (a sweep pays it once).

    python benchmarks/scoring.py [--rows 4096] [--models 1] [--freeze pooler last-attention]
                                 [--mc-samples 0] [--actors 2] [--cpus 2]

Activations are computed in-process first for just these rows (their cost is printed too).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

from raysweep import scoring
from raysweep.backbone import boundary_for, load_backbone
from raysweep.config import DataConfig, RecipeConfig, SplitConfig
from raysweep.freeze import parse as parse_mode
from raysweep.data import load_splits
from raysweep.embed import ensure_activations, load_activations
from raysweep.model import build_model, fit

from measurement import measurement  # benchmarks/measurement.py: the docs/measurements.md block


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4096, help="pool rows scored")
    parser.add_argument("--models", type=int, default=1, help="models scored per freeze mode (seeds 0..)")
    parser.add_argument("--freeze", nargs="+", default=["last-linear", "pooler", "last-attention"])
    parser.add_argument("--mc-samples", type=int, default=0, help="also draw this many MC-dropout samples")
    parser.add_argument("--actors", type=int, default=2, help="Ray Data actors (one CPU each)")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray instance")
    parser.add_argument("--block-rows", type=int, default=1024, help="rows per Ray Data block")
    parser.add_argument("--encoder", default="minilm")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the in-process loop gets one thread, like each actor

    import ray

    splits = load_splits(DataConfig(), SplitConfig())
    train_rows = np.concatenate([splits.labeled[:256], splits.unlabeled[: args.rows]])
    texts = splits.train["text"].to_numpy()[train_rows].tolist()
    labels = splits.train["label"].to_numpy()[train_rows[:256]]
    labeled, pool = np.arange(256), np.arange(256, len(train_rows))
    backbone = load_backbone(args.encoder)
    boundaries = [boundary_for(f, backbone.num_layers, "pooler", 64) for f in args.freeze]

    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    print(f"encoder {args.encoder}, {len(pool)} pool rows x {args.models} model(s), MC samples {args.mc_samples}, "
          f"Ray Data {args.actors} actors on {args.cpus} CPUs, blocks of {args.block_rows} rows")
    with tempfile.TemporaryDirectory() as cache:
        t = time.perf_counter()
        paths = ensure_activations(args.encoder, texts, boundaries, cache, use_ray=False, log=lambda *_: None)
        print(f"activations for {len(texts)} rows x {len(boundaries)} boundaries: {time.perf_counter() - t:.1f} s")
        header = (f"{'freeze':<16}{'in-process s':>13}{'rows/s':>10}{'Ray Data s':>12}{'rows/s':>10}"
                  f"{'ratio':>8}{'same':>6}")
        print(header)
        print("-" * len(header))
        for freeze, path in zip(args.freeze, paths):
            acts = load_activations(path)
            recipe = RecipeConfig(epochs=1)
            jobs = []
            for seed in range(args.models):
                model = build_model(acts, 5, recipe, seed=seed, freeze=parse_mode(freeze))
                fit(model, acts, labeled, labels, recipe, seed=seed)
                jobs.append(scoring.ScoringJob(model, acts, pool, mc_samples=args.mc_samples, seed=seed))

            t = time.perf_counter()
            local = [scoring.score_rows(j.model, acts, pool, mc_samples=j.mc_samples, seed=j.seed) for j in jobs]
            local_s = time.perf_counter() - t
            t = time.perf_counter()
            # Force Ray Data for pooled rows too: the sweep itself scores small pooled jobs
            # in-process (scoring.RAY_MIN_POOLED_ROWS), and this measures why.
            scoring.RAY_MIN_POOLED_ROWS = 0
            remote = scoring.score_many(jobs, use_ray=True, actors=args.actors, block_rows=args.block_rows)
            ray_s = time.perf_counter() - t
            same = all(np.allclose(a.probs, b.probs, atol=1e-6) and np.allclose(a.embeddings, b.embeddings, atol=1e-5)
                       and (not args.mc_samples or np.allclose(a.mc_probs, b.mc_probs, atol=1e-6))
                       for a, b in zip(local, remote))
            n = len(pool) * args.models
            print(f"{freeze:<16}{local_s:>13.2f}{n / local_s:>10.0f}{ray_s:>12.2f}{n / ray_s:>10.0f}"
                  f"{local_s / ray_s:>7.2f}x{'yes' if same else 'NO':>6}")
    ray.shutdown()


if __name__ == "__main__":
    with measurement("Pool scoring in-process vs Ray Data (benchmarks/scoring.py)"):
        main()

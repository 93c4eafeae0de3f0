"""Benchmark: what each strategy costs to pick a batch from SST-5's 6,835-row pool, beside entropy.

The sweep's case: the bundled SST-5 split (1,709 labeled, 6,835 pool rows), MiniLM, one pooled
freeze mode, a scoring model trained on `labeled` with `--epochs` (the pool's scores do not
depend on how well it is trained, only its shape does), and a batch of `--batch` rows (1,709:
fraction 1). For every strategy it prints the seconds of the pool's scoring pass under the
model (probabilities and vectors, shared by every model-based strategy), the extra scoring the
strategy needs (qbc-seeds: the committee's `--committee` other models; bald: MC samples), the
strategy's own selection (best of `--repeat`), and the total against entropy's.

    python benchmarks/strategy_speed.py [--freeze pooler] [--batch 1709] [--committee 9] [--epochs 5]
                                        [--repeat 3] [--strategies a,b,...]

Activations come from (or go to) the cache `--cache` (default ~/.cache/raysweep: a sweep's
encoder pass over the same train split is found there).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from raysweep import scoring, strategies
from raysweep.backbone import boundary_for, load_backbone
from raysweep.config import DataConfig, RecipeConfig, SelectionConfig, SplitConfig
from raysweep.data import load_splits
from raysweep.embed import ensure_activations, load_activations
from raysweep.model import build_model, fit

from measurement import measurement  # benchmarks/measurement.py: the docs/measurements.md block

NEW = ["cluster-margin", "qbc-seeds", "cal", "typiclust", "badge", "oracle"]


def trained(acts, labeled, labels, epochs: int, seed: int):
    recipe = RecipeConfig(epochs=epochs)
    model = build_model(acts, 5, recipe, seed=seed)
    fit(model, acts, labeled, labels, recipe, seed=seed)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--freeze", default="pooler")
    parser.add_argument("--batch", type=int, default=1709)
    parser.add_argument("--committee", type=int, default=9, help="qbc-seeds' other models (10 seeds: 9)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--strategies", default=",".join(["entropy", "margin", *NEW]))
    parser.add_argument("--cache", default=str(Path.home() / ".cache" / "raysweep"))
    args = parser.parse_args()
    torch.set_num_threads(1)  # one trial holds one CPU
    # ... and numpy's BLAS as well: Ray starts a 1-CPU trial with OMP_NUM_THREADS=1, which OpenBLAS
    # follows. Left at a thread per core, its threads fought the machine's other work: at load
    # ~20 cluster-margin took 5.2 s with two BLAS threads and 0.7 s with one (same code).
    threadpool_limits(1)

    with measurement("strategy selection time on the SST-5 pool, beside entropy"):
        splits = load_splits(DataConfig(), SplitConfig())
        train_labels = splits.train["label"].to_numpy()
        backbone = load_backbone("minilm")
        boundary = boundary_for(args.freeze, backbone.num_layers, "pooler", 64)
        [path] = ensure_activations("minilm", splits.train["text"].tolist(), [boundary], args.cache, use_ray=False,
                                    log=lambda *_: None)
        acts = load_activations(path)
        labeled, pool = splits.labeled, splits.unlabeled
        selection = SelectionConfig()
        model = trained(acts, labeled, train_labels[labeled], args.epochs, 0)
        t = time.perf_counter()
        base = scoring.pool_view(frozenset({"probs", "embeddings", "labeled_embeddings", "labeled_probs"}), model,
                                 acts, pool, labeled, train_labels[labeled], selection, 0)
        base_s = time.perf_counter() - t
        print(f"SST-5 {args.freeze}: pool {len(pool)}, labeled {len(labeled)}, batch {args.batch}; "
              f"scoring the pool under one model: {base_s:.2f} s (load: {os.getloadavg()[0]:.1f})")
        header = f"{'strategy':<16}{'scoring s':>10}{'extra s':>9}{'select s':>10}{'total s':>9}{'x entropy':>10}"
        print(header)
        print("-" * len(header))
        totals = {}
        for name in args.strategies.split(","):
            strategy = strategies.get(name)
            view = strategies.PoolView(size=len(pool), probs=base.probs, embeddings=base.embeddings,
                                       labeled_embeddings=base.labeled_embeddings, labeled_probs=base.labeled_probs,
                                       labeled_labels=train_labels[labeled], pool_labels=train_labels[pool])
            t = time.perf_counter()
            if "committee_probs" in strategy.needs:  # in a sweep these are the other seeds' own scoring passes
                members = [trained(acts, labeled, train_labels[labeled], args.epochs, s)
                           for s in range(1, args.committee + 1)]
                t = time.perf_counter()  # training is the seeds' own, paid once per sweep; scoring is counted
                view.committee_probs = scoring.committee_probs(members, list(range(1, args.committee + 1)), acts,
                                                               pool, labeled, train_labels[labeled], selection)
            if "mc_probs" in strategy.needs:
                view.mc_probs = scoring.score_rows(model, acts, pool, base=False, mc_samples=selection.mc_samples).mc_probs
            extra = time.perf_counter() - t
            times = []
            for _ in range(args.repeat):
                t = time.perf_counter()
                strategy(view, args.batch, np.random.default_rng(0))
                times.append(time.perf_counter() - t)
            totals[name] = base_s + extra + min(times)
            ratio = totals[name] / totals["entropy"] if "entropy" in totals else float("nan")
            print(f"{name:<16}{base_s:>10.2f}{extra:>9.2f}{min(times):>10.3f}{totals[name]:>9.2f}{ratio:>10.2f}")


if __name__ == "__main__":
    main()

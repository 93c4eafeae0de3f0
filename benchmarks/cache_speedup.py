"""Benchmark: one trial per freeze mode, with and without the activation cache.

Prints a table of seconds per training epoch on real SST-5 rows with the bundled encoder,
for the cached path (train the top on stored boundary features) and the no-cache path
(run the frozen encoder on every step), and the speed-up. Both paths run the same recipe,
rows and seed, and the script checks that they reach the same final loss.

    python benchmarks/cache_speedup.py [--rows 512] [--epochs 2] [--encoder minilm] [--threads 1] [--freeze lora ...]

The cache is built in-process here (its one-off cost is printed too): this measures the
per-trial training cost that the cache removes, which every trial of a grid pays.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

from raysweep.backbone import Classifier, FullEncoderClassifier, boundary_for, load_backbone
from raysweep.config import DataConfig, RecipeConfig, SplitConfig
from raysweep.freeze import parse as parse_mode
from raysweep.data import load_splits
from raysweep.embed import ensure_activations, load_activations
from raysweep.model import build_model, fit, fit_uncached

from measurement import measurement  # benchmarks/measurement.py: the docs/measurements.md block


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=512, help="labeled rows trained on")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--encoder", default="minilm")
    parser.add_argument("--pooling", default="pooler")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a trial gets cpus_per_trial)")
    parser.add_argument("--freeze", nargs="+", default=["last-linear", "pooler", "last-attention"],
                        help="freeze modes to time (e.g. lora-r8-k1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    splits = load_splits(DataConfig(), SplitConfig())
    rows = splits.labeled[: args.rows]
    texts = splits.train["text"].to_numpy()[rows].tolist()
    labels = splits.train["label"].to_numpy()[rows]
    recipe = RecipeConfig(epochs=args.epochs)
    backbone = load_backbone(args.encoder)

    print(f"encoder {args.encoder}, {len(rows)} rows, {args.epochs} epochs, batch {recipe.batch_size}, "
          f"{args.threads} thread(s)")
    header = f"{'freeze':<16}{'cache build s':>14}{'cached s/epoch':>16}{'no-cache s/epoch':>18}{'speed-up':>10}{'same loss':>11}"
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory() as cache:
        for freeze in args.freeze:
            boundary = boundary_for(freeze, backbone.num_layers, args.pooling, 64)
            t = time.perf_counter()
            [path] = ensure_activations(args.encoder, texts, [boundary], cache, use_ray=False, log=lambda *_: None)
            build_s = time.perf_counter() - t
            acts = load_activations(path)

            model = build_model(acts, 5, recipe, seed=0, freeze=parse_mode(freeze))
            t = time.perf_counter()
            cached_loss = fit(model, acts, np.arange(len(rows)), labels, recipe, seed=0)
            cached_s = (time.perf_counter() - t) / args.epochs

            torch.manual_seed(0)
            init = acts.init_modules()
            full = FullEncoderClassifier(backbone, Classifier(boundary, acts.hidden_size, 5, recipe.dropout,
                                                              top=init["top"], dense=init["dense"],
                                                              freeze=parse_mode(freeze)))
            t = time.perf_counter()
            full_loss = fit_uncached(full, texts, labels, recipe, seed=0)
            full_s = (time.perf_counter() - t) / args.epochs
            same = "yes" if abs(cached_loss - full_loss) < 1e-4 else "NO"
            print(f"{freeze:<16}{build_s:>14.2f}{cached_s:>16.3f}{full_s:>18.3f}{full_s / cached_s:>9.1f}x{same:>11}")


if __name__ == "__main__":
    with measurement("Activation cache speed-up per freeze mode (benchmarks/cache_speedup.py)"):
        main()

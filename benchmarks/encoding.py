"""Benchmark: an encoder pass over real SST-5 rows, in-process against Ray Data.

This is the measurement behind `embed.RAY_MIN_ENCODE_ROWS`: for each row count, the same rows and
boundaries are cached twice into fresh directories, once in-process (torch's own threads) and
once through Ray Data's actor pool (one CPU each; starting the actors loads the encoder in each).
Both times are end to end and include loading the encoder; `ray.init` is not counted (a sweep
pays it once). The two caches are checked to hold the same features.

    python benchmarks/encoding.py [--rows 400 2000 4000] [--encoder minilm]
                                  [--freeze last-linear pooler] [--cpus 2]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time

import numpy as np
import pandas as pd
import torch

from raysweep.backbone import boundary_for, load_backbone
from raysweep.data import bundled_path
from raysweep.embed import RAY_MIN_ENCODE_ROWS, ensure_activations, load_activations
from raysweep.encoders import resolve_encoder

from measurement import measurement  # benchmarks/measurement.py: the docs/measurements.md block


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[400, 2000, 4000])
    parser.add_argument("--encoder", default="minilm")
    parser.add_argument("--freeze", nargs="+", default=["last-linear", "pooler"])
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray instance")
    args = parser.parse_args()

    import ray

    encoder = resolve_encoder(args.encoder)
    layers = load_backbone(encoder, "cpu").num_layers
    boundaries = [boundary_for(f, layers, "pooler", args.max_length) for f in args.freeze]
    texts = list(pd.read_csv(bundled_path(), keep_default_na=False)["text"])
    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # one table, not Ray Data's progress log

    print(f"encoder {args.encoder}, {len(boundaries)} boundaries ({', '.join(args.freeze)}), "
          f"torch threads {torch.get_num_threads()}, Ray CPUs {args.cpus}; "
          f"RAY_MIN_ENCODE_ROWS = {RAY_MIN_ENCODE_ROWS}")
    print(f"{'rows':>6} {'in-process s':>13} {'Ray Data s':>11} {'rows/s in-proc':>15} {'rows/s Ray':>11}")
    for n in args.rows:
        seconds, paths = {}, {}
        for use_ray in (False, True):
            with tempfile.TemporaryDirectory() as cache:
                start = time.perf_counter()
                found = ensure_activations(encoder, texts[:n], boundaries, cache, use_ray=use_ray,
                                           log=lambda *_: None, min_ray_rows=0)
                seconds[use_ray] = time.perf_counter() - start
                paths[use_ray] = [load_activations(p).features.copy() for p in found]
        for a, b in zip(paths[False], paths[True]):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
        print(f"{n:>6} {seconds[False]:>13.1f} {seconds[True]:>11.1f} {n / seconds[False]:>15.0f} "
              f"{n / seconds[True]:>11.0f}")
    ray.shutdown()


if __name__ == "__main__":
    with measurement("Encoder pass in-process vs Ray Data (benchmarks/encoding.py)"):
        main()

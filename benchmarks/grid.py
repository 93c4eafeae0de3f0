"""Benchmark: a selection grid trained cell by cell, against packed + dedup training, and the floor.

The grid is `sweeps/selection-small.yaml` (real pool; random, entropy, SQBC; fractions 0-4;
last-linear and pooler; the study's 50-epoch recipe) with the seeds given (default 0-4: the
half-grid of issue 15). Its trainings are every cell plus the scoring model of every (freeze,
seed), which the model-based strategies rank the pool by. Everything below runs in one process
tree: this driver and `--workers` worker processes with one torch thread each (what Tune's
`cpus_per_trial: 1` gives a trial on this machine).

1. Untimed: the data, the activation cache (warm after the first run: `--cache-dir`), and the
   rows every cell trains on, chosen by the real strategies (`train.select_rows`, scoring models
   cached in a temporary directory).
2. per-cell path: every training alone, `build_model` + `fit`, as a trial runs it today.
3. packed + dedup path: the trainings identical by construction run once (`same_training`,
   the sweep's rule in grid.training_key: fraction 0 trains on `labeled` in every strategy and
   is the scoring model too; a fraction that takes the whole pool trains on it in every
   strategy); the rest train in packs (`model.fit_packed`, at most `max_pack_size` members):
   per row count, last-linear in one pack, pooler in one pack per worker.
   The two paths alternate row count by row count (per-cell, then packed), so that both see about
   the same load on a shared machine; each path's wall is the sum of its groups' walls. The
   workers' CPU seconds are reported too (robust to load where walls are not).
4. floor: the FLOPs of the packed path's trainings (forward + backward of each trained layer,
   every step: see `flops_per_row`) divided by the batched-matmul throughput measured on all
   workers at once, in this run (the larger of two shapes, before and after the paths).

Both paths' final weights are compared (every training of the packed path against the same
training of the per-cell path): the largest difference is printed.

A second table estimates `sweeps/paper.yaml` (BERT-base, 405 cells) on one GPU from its FLOPs and
pack sizes under stated assumptions: an ESTIMATE, nothing here ran on a GPU.

    python benchmarks/grid.py [--seeds 0 1 2 3 4] [--workers 2] [--epochs 50] [--cache-dir DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import multiprocessing as mp
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from measurement import measurement  # benchmarks/measurement.py: the docs/measurements.md block


@dataclass
class Training:
    """One training the grid needs: what it is and the rows it trains on."""

    freeze: str
    seed: int
    rows: np.ndarray
    key: tuple  # same_training's: equal keys train identical models
    what: str  # "cell" or "scoring"


def same_training(freeze: str, seed: int, pool: str, strategy: str, n_added: int, pool_size: int) -> tuple:
    """Trainings identical by construction share this key: `grid.training_key`'s rule (what a sweep
    dedups), plus the (freeze, seed)'s scoring model, which a fraction-0 trial loads from the cache.

    Fraction 0 adds nothing: every pool and strategy trains on `labeled`, as the (freeze, seed)'s
    scoring model does. A fraction that adds the whole pool adds the same rows in every strategy.
    """
    if n_added == 0:
        what = ("labeled",)
    elif n_added == pool_size:
        what = ("whole pool", pool)
    else:
        what = (pool, strategy, n_added)
    return (freeze, seed, *what)


def flops_per_row(kind: str, hidden: int, num_classes: int, tokens: float = 0.0) -> float:
    """Multiply-adds x 2 per training row per epoch: forward + backward of each trained layer.

    The frozen features need no gradient, so the first trained layer's backward is its weight
    gradient alone (1 x forward); a layer with a trained layer below it also passes a gradient
    down (2 x forward). `sentence` (last-linear): the head. `pooled` (pooler): dense + head.
    `hidden` (last-attention): one transformer layer over `tokens` tokens, then dense + head
    (used by the GPU estimate only).
    """
    head = 2 * hidden * num_classes
    if kind == "sentence":
        return head * 2
    dense = 2 * hidden * hidden
    if kind == "pooled":
        return dense * 2 + head * 3
    layer = tokens * (24 * hidden * hidden) + 4 * tokens * tokens * hidden  # QKV/O, FFN (4H), attention
    return layer * 3 + dense * 3 + head * 3


# --------------------------------------------------------------------------- worker processes


def _init_worker() -> None:
    import torch

    import raysweep.packing  # noqa: F401 - imported before any timing (seconds on a loaded machine)
    import raysweep.train  # noqa: F401

    torch.set_num_threads(1)  # one core per worker, as a Tune trial with cpus_per_trial: 1


def _train_alone(job) -> tuple[float, float, dict, float]:
    from raysweep.embed import load_activations
    from raysweep.model import build_model, fit

    acts_path, rows, labels, seed, num_classes, recipe = job
    acts = load_activations(acts_path)
    start, cpu = time.perf_counter(), time.process_time()
    model = build_model(acts, num_classes, recipe, seed)
    loss = fit(model, acts, rows, labels, recipe, seed)
    took, cpu = time.perf_counter() - start, time.process_time() - cpu
    return took, cpu, {k: v.numpy() for k, v in model.state_dict().items()}, loss


def _train_pack(job) -> tuple[float, float, list[dict], list[float], list[str | None]]:
    from raysweep.embed import load_activations
    from raysweep.model import fit_packed
    from raysweep.packing import Member

    acts_path, members, num_classes, recipe, device = job
    acts = load_activations(acts_path)
    start, cpu = time.perf_counter(), time.process_time()
    results = fit_packed(acts, [Member(rows, labels, seed) for rows, labels, seed in members], recipe, device,
                         num_classes=num_classes)
    took, cpu = time.perf_counter() - start, time.process_time() - cpu
    return (took, cpu, [{k: v.cpu().numpy() for k, v in r.model.state_dict().items()} for r in results],
            [r.final_loss for r in results], [r.error for r in results])


def _matmul_rate(job) -> tuple[float, float, float]:
    """FLOPs done, wall and CPU seconds taken by repeated batched matmuls of one shape, on one thread."""
    import torch

    (batch, rows, inner, cols), seconds, device = job
    a, b = torch.randn(batch, rows, inner, device=device), torch.randn(batch, inner, cols, device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for _ in range(3):
        torch.bmm(a, b)
    sync()
    done, start, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        for _ in range(10):
            torch.bmm(a, b)
        sync()
        done += 10
    return done * 2.0 * batch * rows * inner * cols, time.perf_counter() - start, time.process_time() - cpu


def measure_peak(pool, workers: int, hidden: int, device: str, seconds: float = 3.0) -> tuple[float, float, str]:
    """Batched-matmul FLOP/s of all workers at once (per wall second), and of one worker per CPU
    second: the larger of a pack-shaped and a large shape."""
    best, best_cpu, where = 0.0, 0.0, ""
    for shape in ((16, 32, hidden, hidden), (8, 512, hidden, hidden)):
        out = pool.map(_matmul_rate, [(shape, seconds, device)] * workers, chunksize=1)
        rate = sum(f for f, _, _ in out) / max(s for _, s, _ in out)
        best_cpu = max(best_cpu, max(f / c for f, _, c in out))
        if rate > best:
            best, where = rate, "x".join(map(str, shape))
    return best, best_cpu, where


def run_all(pool, fn, jobs, costs) -> tuple[float, list]:
    """Run `jobs` on the pool, most costly first; returns (wall s, results in job order)."""
    order = sorted(range(len(jobs)), key=lambda i: -costs[i])
    start = time.perf_counter()
    out = list(pool.imap(fn, [jobs[i] for i in order], chunksize=1))
    wall = time.perf_counter() - start
    results = [None] * len(jobs)
    for i, r in zip(order, out):
        results[i] = r
    return wall, results


# --------------------------------------------------------------------------- the grid


def grid_trainings(cfg, context, seeds) -> list[Training]:
    """Every training the grid needs, with the rows the real strategies choose (untimed)."""
    from raysweep.sweep import expand, trial_inputs
    from raysweep.train import rows_to_add, select_rows

    recipe = context.recipe
    encoder, pooling = cfg.encoders[0], cfg.poolings[0]
    inputs = {f: trial_inputs(context, f"{encoder}|{pooling}|{f}") for f in cfg.compare.freeze}
    out = []
    for freeze in cfg.compare.freeze:
        for seed in seeds:  # the scoring model of every (freeze, seed): trained on labeled
            out.append(Training(freeze, seed, np.asarray(context.labeled),
                                same_training(freeze, seed, "real", "", 0, 1), "scoring"))
    for cell in expand(cfg):
        inp = inputs[cell.freeze]
        added = select_rows(cell, inp, recipe, cfg.selection)
        n_added = rows_to_add(cell.fraction, len(inp.labeled), len(inp.pool_rows))
        key = same_training(cell.freeze, cell.seed, cell.pool, cell.strategy, n_added, len(inp.pool_rows))
        out.append(Training(cell.freeze, cell.seed, np.concatenate([inp.labeled, added]), key, "cell"))
    for t in out:  # the construction must hold: equal keys, equal rows
        first = next(u for u in out if u.key == t.key)
        assert np.array_equal(first.rows, t.rows), f"same_training says {t.key} repeats but the rows differ"
    return out


def chosen(cfg, context, seeds, cache: Path) -> list[Training]:
    """`grid_trainings`, kept in the cache: choosing the rows trains the scoring models and
    scores the pool, minutes on a loaded machine, and nothing timed depends on how long it took."""
    import pickle

    from raysweep.config import to_dict
    from raysweep.hashing import json_digest

    path = cache / f"grid-rows-{json_digest({'sweep': to_dict(cfg), 'seeds': list(seeds)}, 20)}.pkl"
    if path.exists():
        return pickle.loads(path.read_bytes())
    with tempfile.TemporaryDirectory() as scoring_cache:
        trainings = grid_trainings(cfg, dataclasses.replace(context, cache_dir=scoring_cache), seeds)
    path.write_bytes(pickle.dumps(trainings))
    return trainings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", default="sweeps/selection-small.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--workers", type=int, default=2, help="worker processes, one torch thread each")
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs (a cut)")
    parser.add_argument("--select-epochs", type=int, default=None,
                        help="epochs of the scoring models that choose the rows (default: --epochs); which rows "
                             "are chosen does not change what a training costs")
    parser.add_argument("--device", default="cpu",
                        help="where packs train and the peak is measured (cuda: scripts/gpu-check.sh); the "
                             "per-cell path trains on the CPU (this branch's train.fit has no device code)")
    parser.add_argument("--cache-dir", default=None,
                        help="activation cache (default $RAYSWEEP_HOME/benchmarks/grid-cache: warm after one run)")
    parser.add_argument("--gpu-tflops", type=float, default=15.0,
                        help="GPU estimate: sustained fp32 TFLOP/s assumed (half an A10G's or L4's ~30 peak)")
    parser.add_argument("--gpu-memory-gib", type=float, default=24.0, help="GPU estimate: device memory")
    args = parser.parse_args()

    import torch

    from raysweep.config import load_sweep
    from raysweep.encoders import cache_home
    from raysweep.packing import max_pack_size
    from raysweep.sweep import prepare, trial_inputs

    torch.set_num_threads(1)
    overrides = [f"replicate.seed=[{', '.join(map(str, args.seeds))}]"]
    if args.epochs:
        overrides.append(f"recipe.epochs={args.epochs}")
    cfg = load_sweep(args.sweep, overrides)
    recipe = cfg.recipe
    cache = Path(args.cache_dir) if args.cache_dir else cache_home() / "benchmarks" / "grid-cache"
    t = time.perf_counter()
    context = prepare(cfg, cache, use_ray=False, log=lambda *_: None)
    print(f"data + activation cache: {time.perf_counter() - t:.1f} s ({cache})")
    t = time.perf_counter()
    select_cfg = cfg
    if args.select_epochs:
        select_cfg = load_sweep(args.sweep, [*overrides[:1], f"recipe.epochs={args.select_epochs}"])
    trainings = chosen(select_cfg, dataclasses.replace(context, recipe=select_cfg.recipe), args.seeds, cache)
    print(f"rows chosen by the strategies (untimed; cached after one run): {time.perf_counter() - t:.1f} s")
    acts = {f: trial_inputs(context, f"{cfg.encoders[0]}|{cfg.poolings[0]}|{f}").train_acts
            for f in cfg.compare.freeze}
    num_classes = context.num_classes
    labels = context.train_labels
    hidden = next(iter(acts.values())).hidden_size
    cost = {f: flops_per_row(a.boundary.kind, hidden, num_classes) for f, a in acts.items()}
    distinct = list({t.key: t for t in trainings}.values())
    epochs = recipe.epochs

    # Groups of one row count (one fraction), run one after the other, each first cell by cell and
    # then packed: a shared machine's load drifts, and the two paths of a group see about the same
    # load. Packs: a last-linear group is one pack (its steps are overhead: the more members share
    # one, the better); a pooler group, compute-bound, one pack per worker; both within
    # max_pack_size. CPU seconds (each worker's own) are reported beside the walls: on a machine
    # loaded many times over, they say what the work cost where the walls say mostly how shared it was.
    def packs_of(freeze, members):
        whole = len(members) if acts[freeze].boundary.kind == "sentence" else math.ceil(len(members) / args.workers)
        size = min(max_pack_size(acts[freeze], num_classes, len(members[0].rows), recipe, args.device), whole)
        return [members[i: i + size] for i in range(0, len(members), size)]

    print(f"grid: {len(trainings) - len(cfg.compare.freeze) * len(args.seeds)} cells + "
          f"{len(cfg.compare.freeze) * len(args.seeds)} scoring models = {len(trainings)} trainings, "
          f"{len(distinct)} after dedup; {epochs} epochs, batch {recipe.batch_size}; {args.workers} workers x 1 thread; "
          f"packs on {args.device}; load {os.getloadavg()[0]:.1f}")
    solo_wall = pack_wall = 0.0
    solo_done, pack_done = [], []  # (training, result) / (pack, result)
    ctx = mp.get_context("spawn")  # fresh interpreters: no torch thread pool inherited through fork
    with ctx.Pool(args.workers, initializer=_init_worker) as pool:
        pool.map(_matmul_rate, [((1, 8, 8, 8), 0.1, "cpu")] * args.workers)  # start the workers, import torch
        peak1, cpu_peak1, shape1 = measure_peak(pool, args.workers, hidden, args.device)
        for n in sorted({len(t.rows) for t in trainings}):
            alone = [t for t in trainings if len(t.rows) == n]
            jobs = [(str(acts[t.freeze].path), t.rows, labels[t.rows], t.seed, num_classes, recipe) for t in alone]
            wall, out = run_all(pool, _train_alone, jobs, [cost[t.freeze] for t in alone])
            solo_wall += wall
            solo_done += list(zip(alone, out))
            packs = [p for f in cfg.compare.freeze
                     for p in packs_of(f, [t for t in distinct if t.freeze == f and len(t.rows) == n])]
            jobs = [(str(acts[p[0].freeze].path), [(t.rows, labels[t.rows], t.seed) for t in p], num_classes, recipe,
                     args.device) for p in packs]
            pwall, pout = run_all(pool, _train_pack, jobs, [cost[p[0].freeze] * len(p) for p in packs])
            pack_wall += pwall
            pack_done += list(zip(packs, pout))
            print(f"  {n} rows: {len(alone)} alone {wall:.1f} s, {sum(map(len, packs))} in packs of "
                  f"{[len(p) for p in packs]} {pwall:.1f} s (load {os.getloadavg()[0]:.1f})")
        peak2, cpu_peak2, shape2 = measure_peak(pool, args.workers, hidden, args.device)
    peak, cpu_peak = max(peak1, peak2), max(cpu_peak1, cpu_peak2)

    # Same results: every packed member against the per-cell training with its key.
    by_key = {t.key: r for t, r in solo_done}
    worst, errors = 0.0, 0
    for p, (_, _, states, _, errs) in pack_done:
        for t, state, err in zip(p, states, errs):
            errors += err is not None
            worst = max(worst, max(float(np.abs(state[k] - by_key[t.key][2][k]).max()) for k in state))

    def flops(freeze=None):
        return sum(cost[t.freeze] * len(t.rows) * epochs for t in distinct if freeze in (None, t.freeze))

    print(f"\nbatched-matmul peak: {peak / 1e9:.1f} GFLOP/s on all {args.workers} workers per wall second "
          f"(before {peak1 / 1e9:.1f}, after {peak2 / 1e9:.1f}, best at {shape1}/{shape2}); "
          f"{cpu_peak / 1e9:.1f} GFLOP/s per CPU second of one worker; packs of "
          f"{sorted(len(p) for p, _ in pack_done)}")
    header = (f"{'path':<16}{'trainings':>10}{'wall s':>9}{'per-cell/':>11}{'/floor':>8}"
              f"{'CPU s':>9}{'per-cell/':>11}{'/floor':>8}")
    print(header)
    print("-" * len(header))
    solo_cpu, pack_cpu = sum(r[1] for _, r in solo_done), sum(r[1] for _, r in pack_done)
    floor, floor_cpu = flops() / peak, flops() / cpu_peak
    for name, count, wall, cpu in (("per-cell", len(trainings), solo_wall, solo_cpu),
                                   ("packed + dedup", len(distinct), pack_wall, pack_cpu),
                                   ("floor", len(distinct), floor, floor_cpu)):
        print(f"{name:<16}{count:>10}{wall:>9.1f}{solo_wall / wall:>10.2f}x{wall / floor:>7.2f}x"
              f"{cpu:>9.1f}{solo_cpu / cpu:>10.2f}x{cpu / floor_cpu:>7.2f}x")
    print(f"\n{'CPU s by freeze':<16}{'per-cell':>10}{'n':>5}{'packed':>10}{'n':>5}{'per-cell/packed':>17}"
          f"{'per training':>14}{'floor':>8}{'packed/floor':>14}")
    for freeze in cfg.compare.freeze:
        s_cpu = sum(r[1] for t, r in solo_done if t.freeze == freeze)
        s_n = sum(t.freeze == freeze for t, _ in solo_done)
        p_cpu = sum(r[1] for p, r in pack_done if p[0].freeze == freeze)
        p_n = sum(len(p) for p, _ in pack_done if p[0].freeze == freeze)
        print(f"{freeze:<16}{s_cpu:>10.1f}{s_n:>5}{p_cpu:>10.1f}{p_n:>5}{s_cpu / p_cpu:>16.2f}x"
              f"{(s_cpu / s_n) / (p_cpu / p_n):>13.2f}x{flops(freeze) / cpu_peak:>8.1f}"
              f"{p_cpu / (flops(freeze) / cpu_peak):>13.2f}x")
    print(f"floor: {flops() / 1e12:.3f} TFLOP trained after dedup / peak; per training: CPU s per training alone "
          f"over CPU s per packed member (dedup left out); packed vs per-cell final weights: largest difference "
          f"{worst:.2e}; members failed: {errors}")
    gpu_estimate(args)


# --------------------------------------------------------------------------- the GPU estimate


def gpu_estimate(args) -> None:
    """ESTIMATE of `sweeps/paper.yaml` on one GPU: FLOPs / assumed throughput, per freeze mode.

    Assumptions (printed): BERT-base (H 768); SST-5 token counts from the bundled tokenizer
    (WordPiece, the uncased BERT vocabulary); sustained throughput `--gpu-tflops` for a pack or
    a transformer layer, a launch-bound step of 1 ms for anything smaller; packs as large as the
    grid allows within half the device's memory. Not measured: no GPU here.
    """
    from raysweep.backbone import load_backbone
    from raysweep.config import load_sweep
    from raysweep.data import load_splits
    from raysweep.packing import stacked_member_bytes
    from raysweep.sweep import expand
    from raysweep.train import rows_to_add

    cfg = load_sweep("sweeps/paper.yaml")
    splits = load_splits(cfg.data, cfg.split)
    n_labeled, real_pool = len(splits.labeled), len(splits.unlabeled)
    tokenizer = load_backbone("minilm").tokenizer  # the bert-base-uncased WordPiece vocabulary
    tokens = float(np.mean([len(ids) for ids in tokenizer(splits.train["text"].tolist(), truncation=True,
                                                          max_length=cfg.encoder.max_length)["input_ids"]]))
    hidden, classes, recipe = 768, cfg.data.num_classes, cfg.recipe
    kinds = {"last-linear": "sentence", "pooler": "pooled", "last-attention": "hidden"}
    step_s = 1e-3  # an eager PyTorch step of a small model on a GPU: ~30-50 kernel launches
    # A pack draws each member's dropout mask on the CPU (packing.py): that part is measured here.
    import torch

    from raysweep.packing import dropout_masks

    streams = [torch.Generator().manual_seed(0)]
    t = time.process_time()
    for _ in range(300):
        dropout_masks(streams, recipe.batch_size, hidden, 1 - recipe.dropout)
    draw_s = (time.process_time() - t) / 300  # CPU time: what the draw costs, not how shared the CPU is
    rate = args.gpu_tflops * 1e12
    budget = args.gpu_memory_gib * 2**30 / 2
    print(f"\nESTIMATE (not measured; no GPU here): {cfg.name} ({len(expand(cfg))} cells) on one GPU at "
          f"{args.gpu_tflops:g} TFLOP/s sustained, {step_s * 1e3:g} ms per launch-bound step; BERT-base, "
          f"{tokens:.1f} tokens per SST-5 sentence; + {draw_s * 1e6:.0f} us per member and packed step for its "
          f"dropout mask (CPU time measured here)")
    header = (f"{'freeze':<16}{'trainings':>10}{'dedup':>7}{'pack':>6}{'steps':>10}{'TFLOPs':>9}"
              f"{'h solo':>9}{'h packed':>10}")
    print(header)
    print("-" * len(header))
    total_solo = total_packed = 0.0
    for freeze in cfg.compare.freeze:
        cells = [c for c in expand(cfg) if c.freeze == freeze]
        every = [n_labeled] * len(cfg.replicate.seed)  # the scoring models: trained on labeled
        keys = {same_training(freeze, s, "real", "", 0, 1): n_labeled for s in cfg.replicate.seed}
        for c in cells:
            pool_size = real_pool if c.pool == "real" else cfg.llm.n_rows
            n_added = rows_to_add(c.fraction, n_labeled, pool_size)
            keys[same_training(freeze, c.seed, c.pool, c.strategy, n_added, pool_size)] = n_labeled + n_added
            every.append(n_labeled + n_added)
        per_row = flops_per_row(kinds[freeze], hidden, classes, tokens)
        rows = list(keys.values())  # after dedup
        flops = sum(r * per_row for r in rows) * recipe.epochs
        steps = [math.ceil(r / recipe.batch_size) * recipe.epochs for r in rows]
        solo_h = sum(max(math.ceil(r / recipe.batch_size) * recipe.epochs * step_s, r * per_row * recipe.epochs / rate)
                     for r in every) / 3600  # every training alone, no dedup: today's path
        if kinds[freeze] == "hidden":  # token-level: not packed (docs/packing.md), but deduplicated
            pack = 1
            packed_h = sum(max(s * step_s, r * per_row * recipe.epochs / rate) for s, r in zip(steps, rows)) / 3600
        else:
            by_n: dict[int, int] = {}
            for r in rows:
                by_n[r] = by_n.get(r, 0) + 1
            per_member = stacked_member_bytes(hidden, classes, max(rows), recipe.batch_size, kinds[freeze] == "pooled")
            pack = max(1, min(max(by_n.values()), int(budget // per_member)))
            packed_h = sum(max(math.ceil(count / pack) * math.ceil(n / recipe.batch_size) * recipe.epochs
                               * (step_s + min(count, pack) * draw_s),
                               count * n * per_row * recipe.epochs / rate) for n, count in by_n.items()) / 3600
        total_solo += solo_h
        total_packed += packed_h
        print(f"{freeze:<16}{len(every):>10}{len(rows):>7}{pack:>6}{sum(steps):>10}{flops / 1e12:>9.1f}"
              f"{solo_h:>9.2f}{packed_h:>10.2f}")
    teacher_flops = len(splits.train) * flops_per_row("hidden", hidden, classes, tokens) * recipe.epochs
    teacher_h = max(math.ceil(len(splits.train) / recipe.batch_size) * recipe.epochs * step_s,
                    teacher_flops / rate) / 3600
    print(f"{'teacher (l-a)':<16}{1:>10}{1:>7}{1:>6}{math.ceil(len(splits.train) / recipe.batch_size) * recipe.epochs:>10}"
          f"{teacher_flops / 1e12:>9.1f}{teacher_h:>9.2f}{teacher_h:>10.2f}")
    print(f"{'total':<16}{'':>42}{total_solo + teacher_h:>9.2f}{total_packed + teacher_h:>10.2f}   "
          f"(hours: every training alone, vs packed + dedup; no encoder pass, no LLM calls)")


if __name__ == "__main__":
    with measurement("Trial engine (issue 15): packed training"):
        main()

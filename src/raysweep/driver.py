"""The Tune driver: the packs still to run as one Tune experiment, a trial per pack.

    run_packs(cfg, plan, context, cells, ids, out)

Each trial holds its freeze mode's resources and runs one pack (records.run_pack) on the device
and threads Ray assigned it. Only `raysweep run` imports this module: `check` and `status` do not.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict

from raysweep import console, dashboard, grid, model, packing
from raysweep.config import SweepConfig
from raysweep.freeze import parse as parse_mode
from raysweep.grid import Cell, Pack, Variant
from raysweep.inputs import TrialContext, _activations
from raysweep.model import use_assigned
from raysweep.records import fetch_cache, run_pack
from raysweep.storage import Output, StorageError


def _tune_trainable(config: dict, context: TrialContext, packs: dict[str, Pack], cells: dict[str, dict],
                    output: str) -> None:
    """One Tune trial: one pack, on the device and threads Ray assigned it (model.use_assigned).

    Tune retries a trial whose node died: cells whose records were written before the node went
    are not run again (see `run_pack`), so a lost node costs only its packs' unfinished cells.
    The driver removed every record it meant to re-run before starting, so a record is this run's.
    """
    from ray import tune

    device = use_assigned()
    pack = packs[config["pack"]]
    out = Output(output)
    members = {cid: Cell(**cells[cid]) for cid in pack.cells}
    if out.is_uri:
        fetch_cache(out, context, list(members.values()))
    records = run_pack(pack, members, context, out, device)
    ok = sum(r.ok for r in records.values())
    # trained: the models this trial trained (a rider copies another cell's training)
    trained = sum(r.ok and r.shared_training is None for r in records.values())
    tune.report({"cells": len(records), "ok": ok, "failed": len(records) - ok, "trained": trained})



class PackSizes:
    """Per freeze mode: the resources its trials and scoring models hold, and how many members a
    pack of them trains (grid.pack_size: the device memory a pack may use over one member's
    bound, model.member_bytes, and a balance bound from the trial slots the cluster has)."""

    def __init__(self, cfg: SweepConfig, context: TrialContext, address: str | None):
        from raysweep.cluster import capacity

        self.cfg, self.context = cfg, context
        self.cap = capacity(address)

    def _bound(self, freeze: str, variant: Variant | None, rows: int, n: int) -> int:
        res = self.cfg.resources.of(freeze)
        slots = self.cap.actors(res.cpus_per_trial, res.gpus_per_trial)
        if res.max_concurrent:
            slots = min(slots, res.max_concurrent)
        variant = variant or Variant(self.cfg.encoders[0], self.cfg.poolings[0], freeze)
        acts = _activations(self.context.artifacts[variant][0])
        mode = parse_mode(freeze)
        member = model.member_bytes(acts, self.context.num_classes, self.context.recipe, rows, mode)
        # Stacked packs: one per slot and shelf; packs whose members train one by one: four.
        per_slot = 1 if packing.packable(acts, mode, self.context.task) else 4
        return grid.pack_size(n, slots, member, res.pack_memory_gb * 1024**3, res.pack_size, per_slot)

    def trials(self, variant: Variant, rows: int, n: int) -> int:
        return self._bound(variant.freeze, variant, rows, n)

    def scoring(self, freeze: str, n: int) -> tuple[float, float, int]:
        res = self.cfg.resources.of(freeze)
        return res.cpus_per_trial, res.gpus_per_trial, self._bound(freeze, None, len(self.context.labeled), n)


def run_packs(cfg: SweepConfig, plan: grid.Plan, context: TrialContext, cells: list[Cell], ids: list[str],
              out: Output, log=print) -> None:
    """The Tune driver: one trial per pack, with its freeze mode's resources, on a progress bar of cells."""
    from ray import tune

    by_id = dict(zip(ids, cells))
    packs = {p.name: p for p in plan.packs}
    res = cfg.resources

    def resources(config: dict):
        own = res.of(packs[config["pack"]].variant.freeze)
        bundle = {"CPU": own.cpus_per_trial, "GPU": own.gpus_per_trial}
        return tune.PlacementGroupFactory([{k: v for k, v in bundle.items() if v}])

    bar = console.progress(sum(len(p.cells) for p in plan.packs), "trials", "cells")
    trainable = _pack_trial(tune.with_resources(
        tune.with_parameters(_tune_trainable, context=context, packs=packs,
                             cells={c: asdict(by_id[c]) for p in plan.packs for c in p.cells}, output=out.spec),
        resources if res.freeze else {"cpu": res.cpus_per_trial, "gpu": res.gpus_per_trial},
    ))
    tuner = tune.Tuner(
        trainable,
        # The grid is the list of packs still to run, largest first (grid.plan); the progress
        # table shows each trial's pack name: pool, variant, training rows and part.
        param_space={"pack": tune.grid_search(list(packs))},
        tune_config=tune.TuneConfig(
            max_concurrent_trials=res.max_concurrent or None,
            reuse_actors=True,  # a worker keeps its loaded activations between trials
            trial_name_creator=lambda t: trial_name(packs[t.config["pack"]]),
            trial_dirname_creator=lambda t: trial_name(packs[t.config["pack"]]),
        ),
        run_config=tune.RunConfig(
            name=cfg.name,
            # A URI: Tune writes through the same pyarrow filesystem (query options such as
            # endpoint_override included), so its path is given without the scheme.
            storage_path=out.path("tune") if out.is_uri else str(out.local_dir / "tune"),
            storage_filesystem=out.fs if out.is_uri else None,
            failure_config=tune.FailureConfig(max_failures=3),  # a lost node retries its packs
            verbose=1,  # Tune's trial tables: in the log file when the CLI keeps one (console.py)
            callbacks=[_trial_progress(bar, {name: len(p.cells) for name, p in packs.items()})],
        ),
    )
    t0 = time.perf_counter()
    # Without Tune's loggers (below) its result grid warns, per trial, that it found no
    # result.json or progress.csv: true and expected here, and alarming in a user's terminal.
    analysis_log = logging.getLogger("ray.tune.analysis.experiment_analysis")
    level = analysis_log.level
    analysis_log.setLevel(logging.ERROR)
    # Tune installs a SIGINT handler of its own for the fit (in the main thread) and leaves it
    # there: in a process that goes on (a notebook, a library caller, the next sweep) the next
    # Ctrl-C would only end an experiment that is over. The caller's handler goes back after.
    sigint = signal.getsignal(signal.SIGINT) if threading.current_thread() is threading.main_thread() else None
    try:
        # Tune's default CSV, JSON and TensorBoard loggers write three files per trial from the
        # driver, which shares the CPUs with the trials; cells/ and trials.csv already hold every
        # result, so they are off for this fit. And the AWS keys Tune would copy into each
        # trial's logged runtime_env are out of its sight (a URI output refused them above;
        # a local Ray's workers have them from the environment they started with).
        # Nor Tune's SIGINT handler: it ends the fit quietly and returns, so a Ctrl-C'd run went on
        # to write trials.csv and exit 0. Without it Ctrl-C is a KeyboardInterrupt: the CLI exits
        # 130 naming what is saved (every finished cell's record is written when it finishes).
        with _environ(TUNE_DISABLE_AUTO_CALLBACK_LOGGERS="1", TUNE_DISABLE_SIGINT_HANDLER="1",
                      **dict.fromkeys(TUNE_COPIES)):
            tuner.fit()
    finally:
        bar.close()
        analysis_log.setLevel(level)
        if sigint is not None:
            signal.signal(signal.SIGINT, sigint)
    log(f"ran {len(plan.packs)} packs ({sum(len(p.cells) for p in plan.packs)} cells) in "
        f"{time.perf_counter() - t0:.2f} s")


# Ray Tune copies these from the driver's environment into every trial actor's runtime_env
# (ray/tune/execution/class_cache.py in Ray 2.60), which Ray writes in clear to every node's
# runtime_env_agent.log.
TUNE_COPIES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SECURITY_TOKEN", "AWS_SESSION_TOKEN")


def check_local_output(out: Output, address: str) -> None:
    """Refuse a local output path on a cluster that has, or can scale to, more than one node:
    each node's trials would write cells/ and read cache/ on their own disk, losing results."""
    from raysweep.cluster import capacity

    cap = capacity(address)
    if cap.multi_node:
        raise StorageError(f"--output {out}: a local path, but the cluster has or can scale to {cap.max_nodes} nodes "
                           f"({cap.describe()}), and each would write and read its own disk: give a storage URI every node "
                           f"reaches (s3://..., gs://...) or, if every node mounts {out}, --shared-output")


@contextmanager
def _environ(**values: str | None):
    """os.environ with each variable set (a string) or removed (None), restored afterwards:
    the caller's process may run other Ray or Tune code after a sweep."""
    before = {name: os.environ.get(name) for name in values}

    def put(items):
        for name, value in items:
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    put(values.items())
    try:
        yield
    finally:
        put(before.items())


def trial_name(pack: Pack) -> str:
    """A Tune trial's name (and directory): its pack's (pool, encoder, pooling, freeze mode,
    training rows, part) and how many cells it holds, which Tune's tables and the dashboard show."""
    return f"{pack.name}-{len(pack.cells)}cells"


def _pack_trial(trainable):
    """Tune's trial actor for the function `trainable`, as the dashboard lists it: the class
    `PackTrial`, shown as the trial (pack) it was started for, where Tune's own would say
    `ImplicitFunc` / `_tune_trainable`. An actor Tune reuses (reuse_actors) for later packs keeps
    the first one's name there: Ray takes an actor's repr once, when it is created."""
    from ray.tune.trainable.function_trainable import wrap_function

    class PackTrial(wrap_function(trainable)):  # the function's resources (with_resources) come along
        def __repr__(self) -> str:
            return f"PackTrial({self.trial_name})"

    PackTrial.__qualname__ = "PackTrial"  # Ray may name an actor class by its qualified name
    return PackTrial


def _trial_progress(bar, cells: dict[str, int]):
    """A Tune callback that moves the cells' progress bar by a pack's cells as its trial ends, and
    keeps the dashboard's cell metrics (one class per call: Tune is imported only when a sweep runs)."""
    from ray.tune import Callback

    running: dict[str, int] = {}  # trial id -> its cells, while it runs (a retried trial starts again)

    class TrialProgress(Callback):
        def on_trial_start(self, iteration, trials, trial, **info):
            running[trial.trial_id] = cells.get(trial.config.get("pack"), 1)
            dashboard.cells_running(sum(running.values()))

        def on_trial_complete(self, iteration, trials, trial, **info):
            n = cells.get(trial.config.get("pack"), 1)
            bar.update(n)
            result = trial.last_result or {}
            self._ended(trial, result.get("ok", 0), result.get("failed", n - result.get("ok", 0)))
            dashboard.trained("trial", result.get("trained", 0))

        def on_trial_error(self, iteration, trials, trial, **info):
            n = cells.get(trial.config.get("pack"), 1)
            bar.update(n)
            self._ended(trial, 0, n)  # its cells have no record: trials.csv counts them missing

        def _ended(self, trial, ok: int, failed: int) -> None:
            running.pop(trial.trial_id, None)
            dashboard.cells_running(sum(running.values()))
            dashboard.cells_finished(ok, failed)

    return TrialProgress()

"""The sweep: a sweep config -> its pools' steps -> the grid of cells -> Ray Tune -> trials.csv.

    run_sweep(cfg, output) -> the trials table

The stages, each in its own module: the pools' preparation steps (generation, annotation), the
shared inputs (inputs.py), packs and their records (records.py), the Tune driver (driver.py),
and status (status.py); `layout.Layout` owns every path under the output.

Each cell has a deterministic id from its parameters and the sweep's fixed settings, so a
finished cell is never run twice: running the sweep again skips it, and adding fractions,
strategies or seeds runs only the new cells (and, for new seeds, the qbc-seeds cells: their
committee, the other seeds, is in their id; migration.py moves those made before it was).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pandas as pd
import yaml

from raysweep import annotation, chosen, costs, dashboard, grid, layout, migration, pools, steps
from raysweep.config import SweepConfig, to_dict
from raysweep.driver import TUNE_COPIES, PackSizes, check_local_output, run_packs
from raysweep.grid import cell_ids, expand, read_cells, results_table
from raysweep.inputs import TrialContext, prepare, prepare_selection, trial_inputs
from raysweep.layout import Layout
from raysweep.records import publish_entries, publish_selection
from raysweep.runtime import start_ray
from raysweep.storage import (SWEEP_MARKER, Output, StorageError, check_output_dir, is_uri, probe_store,
                              refuse_credentials, refuse_foreign_files)


def check_output(output: str | Path, probe: bool = False, inputs: dict | None = None) -> None:
    """Refuse an output whose credentials a run would leak, that cannot be written, that holds the
    run's own `inputs` ({what: path}) or files raysweep did not write (a StorageError, one line),
    before any work: the CLI calls it before it opens the run's log file, run_sweep again."""
    if not is_uri(str(output)):
        check_output_dir(str(output), inputs)
    # Tune pickles its storage filesystem, keys and all, into tuner.pkl and its state files.
    refuse_credentials(str(output), "output", "Tune would write into its experiment state (tuner.pkl)")
    copied = [name for name in TUNE_COPIES if os.environ.get(name)]
    if str(output).startswith("s3://") and copied:
        raise StorageError(f"output {output}: Ray Tune would copy {', '.join(copied)} from this environment into "
                           "every trial's runtime environment, which Ray logs in clear; put the keys in "
                           "~/.aws/credentials (AWS_PROFILE picks a profile) or use an instance profile "
                           "(docs/cluster.md#secrets)")
    out = Output(output)
    if probe and out.is_uri:  # an unreachable or denied store is one line before the log file's line
        probe_store(out)
    refuse_foreign_files(out)


def run_sweep(cfg: SweepConfig, output: str | Path, address: str | None = None, retry_failed: bool = False,
              use_ray_data: bool = True, log=print, shared_output: bool = False) -> pd.DataFrame:
    """Run every cell of `cfg` not yet finished in `output`; write and return trials.csv.

    `shared_output`: `output` is a local path that every node of the cluster mounts (NFS, EFS);
    without it, a local path is refused on a cluster that has or can scale to several nodes."""
    check_output(output, inputs={"data file": cfg.data.path} if cfg.data.path else None)
    dashboard.follow(cfg.name)  # datasets, LLM actors and metrics carry the sweep's name
    lay = Layout.of(cfg, output)
    out = lay.out
    if not out.is_uri and not shared_output and address not in (None, "local"):
        check_local_output(out, address)
    out.mkdir(layout.CELLS)
    snapshot = out.read_text(layout.SWEEP_FILE)  # the run before this one: migration.committees reads its seeds
    out.write_text(layout.SWEEP_FILE, f"{SWEEP_MARKER}\n" + yaml.safe_dump(to_dict(cfg), sort_keys=False))
    # Before the cell ids: an LLM pool's cells are keyed by the rows generated for them.
    generated = steps.generation(cfg, lay, address, use_ray_data, log) if cfg.needs_generation else None

    cells = expand(cfg)
    context = sizes = None  # the trials' inputs, prepared once: here when the annotator needs them, else below

    def prepared() -> TrialContext:
        nonlocal context, sizes
        if context is None:
            start_ray(address)
            t0 = time.perf_counter()
            context, sizes = _prepare_trials(cfg, out, lay.cache_dir, generated, address, use_ray_data, log)
            log(f"prepared the trials' inputs in {time.perf_counter() - t0:.2f} s")
        return context

    labels = None
    if cfg.needs_annotation:
        # Before the cell ids: an llm_annotated cell is keyed by the LLM's labels of its rows.
        labels = steps.annotation_labels(cfg, cells, lay, prepared, lambda ctx, c: trial_inputs(ctx, c.variant), log)
    ids = cell_ids(cfg, cells, generated.digest if generated else None, labels)
    if any(grid.committee(c, cfg.replicate.seed) is not None for c in cells):
        # Only a grid with qbc-seeds cells has ids that changed: no other run reads its cells for this.
        old_ids = cell_ids(cfg, cells, generated.digest if generated else None, labels, committees=False)
        migration.committees(cells, ids, old_ids, cfg.replicate.seed, out, snapshot, log)
    # After the steps: an LLM row's price is what its step spent per row (costs.py).
    prices = costs.prices_of(cfg.costs, generated.summary.as_dict() if generated else None,
                             annotation.read_summary(lay.annotation_dir) if cfg.needs_annotation else None)
    done = read_cells(out)
    skip = {"ok"} if retry_failed else {"ok", "failed"}
    todo = {i for i in ids if i not in done or done[i].status not in skip}
    log(f"sweep {cfg.name}: {len(cells)} cells, {len(cells) - len(todo)} already done, {len(todo)} to run")

    if todo:
        context = prepared()
        context.prices = prices
        if cfg.needs_annotation:
            context.annotated_labels = annotation.trial_labels(lay.annotation_dir, context.train_labels,
                                                               context.pool_rows)
        for i in todo:  # failed records about to be re-run (--retry-failed): see _tune_trainable
            if i in done:
                out.delete(layout.cell_record(i))
        plan = grid.plan(cells, ids, todo, done, len(context.labeled),
                         {p: pools.get(p).size(context) for p in cfg.compare.pool}, sizes.trials)
        log(plan.describe(len(todo)))
        dashboard.cells_planned(len(todo))
        run_packs(cfg, plan, context, cells, ids, out, log)

    done = read_cells(out)
    table = results_table(cells, ids, done, cfg, prices)
    out.write_text(layout.TRIALS, table.to_csv(index=False))
    missing = len(cells) - len(table)
    failed = int((table["status"] == "failed").sum())
    log(f"wrote {out.show(layout.TRIALS)}: {len(table)} cells ({failed} failed, {missing} missing)")
    return table


def _prepare_trials(cfg: SweepConfig, out: Output, cache_dir: Path, generated, address: str | None,
                    use_ray_data: bool, log) -> tuple[TrialContext, PackSizes]:
    """The trials' context (`prepare`), the rows table of chosen/, and every scoring model and pool
    score the strategies need (`prepare_selection`), published for the trials of a URI output."""
    context = prepare(cfg, cache_dir, use_ray=use_ray_data, log=log, generated=generated.rows if generated else None)
    chosen.write_rows_table(out, context.fixed, context.train_texts, context.train_labels, context.labeled)
    context.train_texts = None  # not pickled into every trial
    sizes = PackSizes(cfg, context, address)
    # Publish before the first remote work that reads the entries, collect after the work
    # that makes scoring models and scores (their states come back to this driver's cache).
    if out.is_uri:
        publish_entries(out, context, log=log)
    prepare_selection(cfg, context, out, use_ray=use_ray_data, log=log, resources=sizes.scoring)
    if out.is_uri:
        publish_selection(out, context, log=log)
    return context, sizes

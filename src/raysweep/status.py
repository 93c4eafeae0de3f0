"""Status: how far a sweep has come in an output, read from its records and step summaries.

    cell_statuses(cfg, output) -> per cell 'ok' | 'failed' | 'running' | None
    cell_progress(cfg, output) -> counts of each
    pool_status(cfg, output)   -> per pool, whether its preparation step is done there

Reads files only: no Ray, no model, no paid call (`raysweep check --output` and `status` use it).
"""

from __future__ import annotations

from pathlib import Path

from raysweep import pools, steps
from raysweep.config import SweepConfig
from raysweep.grid import cell_ids, expand, read_cells, running_cells
from raysweep.layout import Layout


def cell_statuses(cfg: SweepConfig, output: str | Path, now: float | None = None) -> list[str | None]:
    """Per cell of `expand(cfg)`: 'ok', 'failed', 'running' or None (still to run) in `output`.

    A cell of a pool with a preparation step counts as still to run until that step is complete.
    """
    lay = Layout.of(cfg, output)
    digest = steps.recorded_generation(cfg, lay) if cfg.needs_generation else None
    cells = expand(cfg)
    done = read_cells(lay.out)
    running = running_cells(lay.out, now)
    ids = cell_ids(cfg, cells, digest, steps.recorded_labels(cfg, cells, lay))
    return [done[i].status if i in done else "running" if i in running else None for i in ids]


def cell_progress(cfg: SweepConfig, output: str | Path, now: float | None = None) -> dict[str, int]:
    """How many of the sweep's cells in `output` are done, running now, failed and still to run."""
    status = cell_statuses(cfg, output, now)
    return {"cells": len(status), "done": status.count("ok"), "running": status.count("running"),
            "failed": status.count("failed"), "pending": sum(s is None for s in status)}


def pool_status(cfg: SweepConfig, output: str | Path) -> dict[str, str]:
    """Per pool of the grid: 'ready' (no step, or its step is complete in `output`) or the step
    still to run ('generate', 'annotate')."""
    lay = Layout.of(cfg, output)
    cells = expand(cfg)
    done_steps = set()
    if cfg.needs_generation and steps.recorded_generation(cfg, lay) is not None:
        done_steps.add("generate")
    labels = steps.recorded_labels(cfg, cells, lay)
    if labels is not None and all(d is not None for c, d in zip(cells, labels) if pools.get(c.pool).step == "annotate"):
        done_steps.add("annotate")
    return {p: "ready" if pools.get(p).step in (None, *done_steps) else pools.get(p).step for p in cfg.compare.pool}

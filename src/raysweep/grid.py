"""The grid: cells, their ids, their records on disk, and how they are trained.

    expand(cfg) -> cells        every combination of the compared parameters, times every seed
    cell_ids(cfg, cells)        a deterministic id per cell (frozen: tests/test_hashing.py)
    read_cells / running_cells  what cells/<id>.json and cells/<id>.running say
    plan(...)                   the trainings the cells still to run need (duplicates trained
                                once) and the packs Tune schedules them in

A cell is one point of the grid; a *training* is one model trained on one set of rows, which
several cells may share when their rows are identical by construction (`training_key`); a
*pack* is the trainings one Tune trial runs together on one device.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import time
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from raysweep import strategies
from raysweep.config import SelectionConfig, SweepConfig, to_dict
from raysweep.hashing import json_digest
from raysweep.storage import Output

# A trial rewrites its cells/<id>.running every HEARTBEAT_S; a marker older than STALE_S is a trial
# that died with its node (nothing else removes the marker then), so it no longer counts as running.
HEARTBEAT_S = 15.0
STALE_S = 4 * HEARTBEAT_S

PARAMS = ("pool", "strategy", "fraction", "freeze", "seed", "encoder", "pooling")
METRICS = ("val_accuracy", "val_macro_f1", "train_accuracy", "final_loss", "n_labeled", "n_added", "n_train",
           "trainable_params", "select_s", "train_s", "eval_s", "trial_s", "wall_s")
TEST_METRICS = ("test_accuracy", "test_macro_f1")  # columns only when the data has a test split


@dataclass(frozen=True)
class Cell:
    """One point of the grid: the scientific parameters and the replicate seed."""

    pool: str
    strategy: str
    fraction: float
    freeze: str
    seed: int
    encoder: str = "minilm"  # compared only in sweeps that list several (sweeps/encoders.yaml)
    pooling: str = "pooler"

    @property
    def variant(self) -> str:
        """What the cached activations depend on: encoder, pooling and freeze mode."""
        return f"{self.encoder}|{self.pooling}|{self.freeze}"


def rows_to_add(fraction: float, n_labeled: int, pool_size: int) -> int:
    """`fraction * |labeled|` rows, capped at the pool.

    With the study's 1 : 4 split, fraction 4 asks for slightly more rows than the pool has
    after rounding (4 x 1,709 = 6,836 > 6,835): it means "the whole pool", so it is capped
    and the trial records how many rows it really added.
    """
    # Capped before rounding: the same numbers, and a fraction of 1e308 (x |labeled| = inf) is the pool.
    return int(round(min(fraction * n_labeled, pool_size)))


def fixed_digest(cfg: SweepConfig) -> str:
    """Hash of everything a cell's result depends on besides its own parameters."""
    fixed = {"data": to_dict(cfg.data), "split": to_dict(cfg.split), "recipe": to_dict(cfg.recipe),
             "encoder": {"max_length": cfg.encoder.max_length}}  # name and pooling are in each cell
    return json_digest(fixed, 12)


def selection_settings(strategy: str, selection: SelectionConfig) -> dict:
    """The `selection:` settings a cell's result depends on: none for a strategy without a model
    (random), else the rounds, the strategy's own options (sqbc's k) and bald's MC samples."""
    s = strategies.get(strategy)
    if not s.needs:
        return {}
    out = {"rounds": selection.rounds, **{o: getattr(selection, o) for o in s.options}}
    if "mc_probs" in s.needs:
        out["mc_samples"] = selection.mc_samples
    return out


def cell_id(cell: Cell, fixed: str, settings: dict | None = None, generated: str | None = None) -> str:
    key = {**asdict(cell), "fraction": float(cell.fraction), "fixed": fixed}
    if settings:  # left out when empty, so random cells keep the ids they had before `selection:`
        key["selection"] = settings
    if cell.pool != "real":  # an LLM pool's cell depends on the generated rows and their labels
        key["generated"] = generated
    return json_digest(key, 16)


def cell_ids(cfg: SweepConfig, cells: list[Cell], generated: str | None = None) -> list[str]:
    """The ids of `cells`; `generated` is the digest of the generated rows (LLM pools only)."""
    fixed = fixed_digest(cfg)
    return [cell_id(c, fixed, selection_settings(c.strategy, cfg.selection), generated) for c in cells]


def expand(cfg: SweepConfig) -> list[Cell]:
    """Every combination of the compared parameters, times every seed."""
    c = cfg.compare
    return [Cell(pool, strategy, float(fraction), freeze, int(seed), encoder, pooling)
            for encoder, pooling, pool, strategy, freeze, fraction, seed in itertools.product(
                cfg.encoders, cfg.poolings, c.pool, c.strategy, c.freeze, c.fraction, cfg.replicate.seed)]


# --------------------------------------------------------------------------- cell results on disk


def read_cells(out: Output) -> dict[str, dict]:
    out_cells = {}
    for entry in out.list("cells", ".json"):
        try:
            out_cells[entry.name[: -len(".json")]] = json.loads(out.read_text(f"cells/{entry.name}") or "")
        except json.JSONDecodeError:
            continue  # a torn write from a killed process: the cell simply counts as not run
    return out_cells


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def running_cells(out: Output, now: float | None = None) -> set[str]:
    """Ids of the cells a live trial is running: a cells/<id>.running marker without a
    cells/<id>.json, rewritten less than STALE_S ago, and (when it was written on this machine)
    whose process is still alive: a trial killed with its node leaves its marker behind."""
    now = time.time() if now is None else now
    finished = {e.name[: -len(".json")] for e in out.list("cells", ".json")}
    host = socket.gethostname()
    live = set()
    for entry in out.list("cells", ".running"):
        cid = entry.name[: -len(".running")]
        if cid in finished or entry.mtime is None or now - entry.mtime > STALE_S:
            continue
        try:
            marker = json.loads(out.read_text(f"cells/{entry.name}") or "")
        except json.JSONDecodeError:
            marker = {}  # being rewritten as we read it: a heartbeat, so alive
        if marker.get("host") == host and isinstance(marker.get("pid"), int) and not _pid_alive(marker["pid"]):
            continue
        live.add(cid)
    return live


def results_table(cells: list[Cell], ids: list[str], done: dict[str, dict], cfg: SweepConfig) -> pd.DataFrame:
    rows = []
    records = [done[cid] for cid in ids if cid in done]
    has_test = any(m in (rec.get("metrics") or {}) for rec in records for m in TEST_METRICS)
    metrics = (*METRICS[:2], *TEST_METRICS, *METRICS[2:]) if has_test else METRICS
    for cell, cid in zip(cells, ids):
        rec = done.get(cid)
        if rec is None:
            continue
        row = {"cell_id": cid, **asdict(cell), "rounds": cfg.selection.rounds,
               "status": rec.get("status", "ok"), "error": rec.get("error", "")}
        for m in metrics:
            row[m] = rec.get("metrics", {}).get(m, np.nan)
        row["confusion"] = json.dumps(rec.get("metrics", {}).get("confusion")) if rec.get("metrics") else ""
        rows.append(row)
    return pd.DataFrame(rows, columns=["cell_id", *PARAMS, "rounds", "status", "error", *metrics, "confusion"])

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
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import pandas as pd

from raysweep import costs, pools, strategies
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
# Columns only when a record has them: who was paid for the added rows' labels, and what a
# cleaning pool (llm_cleaned, llm_routed: cleaning.py) did to the LLM's labels, against gold.
LABEL_COLUMNS = ("human_labels", "llm_labels", "labels_flagged", "labels_removed", "labels_replaced",
                 "llm_label_accuracy", "flagged_llm_accuracy", "replacement_accuracy", "trained_label_accuracy")
PAID = ("human_labels", "llm_labels")  # always columns (costs.py derives them for older records), then cost_usd


def metric_columns(task) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(trials.csv's metric columns, its test columns) for a `tasks.Task`: METRICS / TEST_METRICS
    for SST-5's task, the task's own metrics (tasks.Task.metrics) in their place for the others."""
    val = tuple(f"val_{m}" for m in task.metrics)
    return (*val, f"train_{task.train_metric}", *METRICS[3:]), tuple(f"test_{m}" for m in task.metrics)


@dataclass(frozen=True)
class Variant:
    """What a trial's cached activations depend on: the encoder, its pooling and the freeze mode;
    `generated`: the real train rows followed by the generated ones (the LLM pools' trials)."""

    encoder: str
    pooling: str
    freeze: str
    generated: bool = False

    def with_generated(self) -> Variant:
        return replace(self, generated=True)

    @property
    def slug(self) -> str:
        """A name for paths and Tune trials: `encoder-pooling-freeze`, no separators."""
        return f"{self.encoder}-{self.pooling}-{self.freeze}".replace("/", "_")

    def __str__(self) -> str:
        return f"{self.encoder} {self.pooling} {self.freeze}" + (" +generated" if self.generated else "")


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
    def variant(self) -> Variant:
        return Variant(self.encoder, self.pooling, self.freeze)


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
    # data.keyed() and cfg.max_length are to_dict(cfg.data) and encoder.max_length for a single-sentence
    # classification sweep: its ids are the ones it had before pair and regression tasks.
    fixed = {"data": cfg.data.keyed(), "split": to_dict(cfg.split), "recipe": to_dict(cfg.recipe),
             "encoder": {"max_length": cfg.max_length}}  # name and pooling are in each cell
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


def committee(cell: Cell, seeds) -> list[int] | None:
    """The seeds whose scoring models pick a cell's rows besides its own (qbc-seeds: every other
    seed of the sweep, sorted), or None for a strategy whose picks read only its own seed's model."""
    if not strategies.get(cell.strategy).shares_seeds:
        return None
    return sorted(int(s) for s in seeds if int(s) != cell.seed)


def cell_id(cell: Cell, fixed: str, settings: dict | None = None, generated: str | None = None,
            labels: str | None = None, pool_settings: dict | None = None,
            members: list[int] | None = None) -> str:
    key = {**asdict(cell), "fraction": float(cell.fraction), "fixed": fixed}
    if settings:  # left out when empty, so random cells keep the ids they had before `selection:`
        key["selection"] = settings
    if members is not None:
        # qbc-seeds' picks depend on the other seeds' models: a cell finished with seeds 0..9 is not
        # the cell of a sweep with seeds 0..4. Only such cells carry the key (migration.py moves
        # the records made before it); every other id is unchanged.
        key["committee"] = members
    key.update(pools.get(cell.pool).id_part(generated, labels))  # what the pool's rows depend on
    if pool_settings:  # left out when empty: the pools without settings keep their ids
        key["pool_settings"] = pool_settings
    return json_digest(key, 16)


def cell_ids(cfg: SweepConfig, cells: list[Cell], generated: str | None = None,
             labels: list[str | None] | None = None, committees: bool = True) -> list[str]:
    """The ids of `cells`; `generated` is the digest of the generated rows (LLM pools only),
    `labels[i]` the digest of the LLM's labels of cells[i]'s rows (the llm_annotated pool only).
    `committees=False`: the ids qbc-seeds cells had before their committee was in them (migration.py)."""
    fixed = fixed_digest(cfg)
    labels = labels or [None] * len(cells)
    return [cell_id(c, fixed, selection_settings(c.strategy, cfg.selection), generated, d,
                    pools.get(c.pool).settings(cfg), committee(c, cfg.replicate.seed) if committees else None)
            for c, d in zip(cells, labels)]


def expand(cfg: SweepConfig) -> list[Cell]:
    """Every combination of the compared parameters, times every seed."""
    c = cfg.compare
    return [Cell(pool, strategy, float(fraction), freeze, int(seed), encoder, pooling)
            for encoder, pooling, pool, strategy, freeze, fraction, seed in itertools.product(
                cfg.encoders, cfg.poolings, c.pool, c.strategy, c.freeze, c.fraction, cfg.replicate.seed)]


# --------------------------------------------------------------------------- cell results on disk


COST_FIELDS = ("cost_usd", "cost")  # CellRecord's, written only when known


@dataclass
class CellRecord:
    """A finished cell, as cells/<id>.json holds it: read (`parse`) and written (`to_json`) here only."""

    cell_id: str
    cell: dict  # the Cell's fields
    status: str = "ok"  # "ok", or "failed" with `error`
    metrics: dict = field(default_factory=dict)  # empty when failed
    error: str = ""  # `Type: first line` of what failed it
    shared_training: str | None = None  # a rider: the cell whose training it shares
    pack: str | None = None  # the Tune trial (its pack) that wrote it
    committee: list[int] | None = None  # qbc-seeds: the other seeds whose models picked its rows (`committee`)
    # What its added rows' labels cost (costs.py; the label counts it prices are in `metrics`:
    # human_labels, llm_labels), at the prices of the run that wrote it (None: not priced, or an
    # LLM without a price). Record fields, never part of the cell id.
    cost_usd: float | None = None
    cost: dict | None = None  # cost_usd's parts: human_usd, llm_usd, trial_compute_usd
    extra: dict = field(default_factory=dict)  # keys this version does not know, kept as they are

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def training(self) -> str:
        """The cell whose training this record's model is: its own, or the one it shares."""
        return self.shared_training or self.cell_id

    @classmethod
    def from_dict(cls, data: dict) -> CellRecord:
        known = {f: data[f] for f in ("cell_id", "cell", "status", "metrics", "error", "shared_training", "pack",
                                      "committee", *COST_FIELDS) if f in data}
        known["metrics"] = known.get("metrics") or {}
        known["error"] = known.get("error") or ""
        return cls(**{"cell_id": "", "cell": {}, **known},
                   extra={k: v for k, v in data.items() if k not in cls.__dataclass_fields__})

    @classmethod
    def parse(cls, text: str | None) -> CellRecord | None:
        """The record in `text`, or None for none at all or a torn write (a killed process: the cell
        simply counts as not run)."""
        try:
            data = json.loads(text) if text else None
        except json.JSONDecodeError:
            return None
        return cls.from_dict(data) if isinstance(data, dict) else None

    def to_json(self) -> str:
        data = {"cell_id": self.cell_id, "cell": self.cell, "status": self.status}
        if self.status != "ok":
            data["error"] = self.error
        data["metrics"] = self.metrics
        if self.shared_training is not None:
            data["shared_training"] = self.shared_training
        data["pack"] = self.pack
        if self.committee is not None:  # left out for other strategies: their records stay byte for byte
            data["committee"] = self.committee
        data.update({f: getattr(self, f) for f in COST_FIELDS if getattr(self, f) is not None})
        return json.dumps({**data, **self.extra}, indent=1)


def read_cells(out: Output) -> dict[str, CellRecord]:
    """Every readable record under cells/, by cell id."""
    out_cells = {}
    for entry in out.list("cells", ".json"):
        record = CellRecord.parse(out.read_text(f"cells/{entry.name}"))
        if record is not None:
            out_cells[entry.name[: -len(".json")]] = record
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


def results_table(cells: list[Cell], ids: list[str], done: dict[str, CellRecord], cfg: SweepConfig,
                  prices: costs.Prices | None = None) -> pd.DataFrame:
    """trials.csv: one row per cell with a record. Its `training` column names the cell whose
    training each cell shares, or its own id (`trainings_of`). `human_labels`, `llm_labels` and
    `cost_usd` price each cell's added labels at `prices` (this run's `costs:`, so a changed price
    re-prices every cell, also those an earlier run recorded); without prices, the records' own."""
    rows = []
    records = [done[cid] for cid in ids if cid in done]
    columns, test_columns = metric_columns(cfg.task)
    n_val = len(cfg.task.metrics)
    has_test = any(m in rec.metrics for rec in records for m in test_columns)
    metrics = (*columns[:n_val], *test_columns, *columns[n_val:]) if has_test else columns
    metrics += tuple(m for m in LABEL_COLUMNS if any(m in rec.metrics for rec in records))
    paid = tuple(c for c in PAID if c not in metrics)  # not on any record (made before them): derived, last
    training = trainings_of(cells, ids, done)
    for cell, cid in zip(cells, ids):
        rec = done.get(cid)
        if rec is None:
            continue
        row = {"cell_id": cid, **asdict(cell), "rounds": cfg.selection.rounds,
               "status": rec.status, "error": rec.error, "training": training.get(cid)}
        for m in metrics:
            row[m] = rec.metrics.get(m, np.nan)
        row["confusion"] = json.dumps(rec.metrics.get("confusion")) if rec.metrics else ""
        if rec.ok:  # the record's label counts, derived when it has none, priced at this run's prices
            priced = costs.price_cell(prices, cell.pool, rec.metrics)
            row.update(human_labels=priced["human_labels"], llm_labels=priced["llm_labels"],
                       cost_usd=priced.get("cost_usd", rec.cost_usd) if prices is not None else rec.cost_usd)
        rows.append(row)
    return pd.DataFrame(rows, columns=["cell_id", *PARAMS, "rounds", "status", "error", *metrics, "confusion",
                                       "training", *paid, "cost_usd"])


def trainings_of(cells: list[Cell], ids: list[str], done: dict[str, CellRecord]) -> dict[str, str]:
    """Per finished cell, the cell whose training it shares (`training_key`), or its own id.

    From the records: the rows count and pool size each records, and the `shared_training`
    riders name. All cells of one group name the same cell, those finished before shared
    trainings existed too (they trained the same rows, apart). A record without a pool size
    (older, or failed) names only what it says itself (nothing: the analysis derives it)."""
    sizes = {}
    for cell, cid in zip(cells, ids):
        m = done[cid].metrics if cid in done else {}
        if "pool_size" in m and "n_labeled" in m:
            sizes.setdefault(cell.pool, (m["n_labeled"], m["pool_size"]))
    out, groups = {}, {}
    for cell, cid in zip(cells, ids):
        rec = done.get(cid)
        if rec is None:
            continue
        own = rec.shared_training
        if cell.pool not in sizes:
            if own:
                out[cid] = own
            continue
        key = training_key(cell, *sizes[cell.pool])
        if key is None:
            out[cid] = cid
        else:
            groups.setdefault(key, []).append(cid)
    for members in groups.values():
        named = [done[c].shared_training for c in members if done[c].shared_training]
        out.update(dict.fromkeys(members, named[0] if named else members[0]))
    return out


# --------------------------------------------------------------------------- trainings and packs


def training_key(cell: Cell, n_labeled: int, pool_size: int) -> tuple | None:
    """What a cell's training rows are, when they are the same as other cells' by construction:
    a cell that adds no rows trains on `labeled` alone, whatever its pool and strategy; a cell
    that adds its whole pool trains on the same rows whatever its strategy. None: its own rows.

    The key holds everything else the training depends on (encoder, pooling, freeze, seed), so
    the cells of one key train the very same model: it is trained once."""
    same = (cell.encoder, cell.pooling, cell.freeze, cell.seed)
    n = rows_to_add(cell.fraction, n_labeled, pool_size)
    if n == 0:
        return ("labeled", *same)
    if n == pool_size:
        return ("whole-pool", cell.pool, *same)
    return None


@dataclass(frozen=True)
class Training:
    """One model to train, for the cell `cell` and the cells riding on it (`riders`: the same
    rows by construction), which get their own records naming `cell` as `shared_training`.
    When `cell` is finished already, nothing is trained: the riders copy its record."""

    cell: str
    riders: tuple[str, ...] = ()


@dataclass(frozen=True)
class Pack:
    """Trainings one Tune trial runs together on one device: the same activations (variant and
    pool) and the same number of training rows."""

    name: str
    variant: Variant
    pool: str
    n_train: int
    trainings: tuple[Training, ...]

    @property
    def cells(self) -> list[str]:
        return [c for t in self.trainings for c in (t.cell, *t.riders)]


@dataclass
class Plan:
    """The packs Tune runs, and per cell the id of the cell whose training it shares (or its own)."""

    packs: list[Pack]
    training_of: dict[str, str]
    trainings: int  # models the packs train (a finished `Training.cell` trains none)

    def describe(self, cells: int) -> str:
        return (f"{cells} cells to run need {self.trainings} trainings "
                f"({cells - self.trainings} share another's), in {len(self.packs)} packs")


def pack_size(trainings: int, slots: int, member_bytes: int, memory_bytes: float, limit: int = 0,
              per_slot: int = 4) -> int:
    """Members per pack of a shelf of `trainings`: as many as the device's memory holds
    (`memory_bytes` / `member_bytes`), but few enough that every trial slot of the cluster
    (`slots`) gets about `per_slot` of the shelf's packs, so the last packs to finish do not leave
    the other slots idle; at most `limit` when it is set. Stacked (pooled) packs take
    `per_slot=1`: a stacked member costs a fraction of a solo one, so splitting a shelf finer
    would give back what stacking gains; members of other packs train one after another."""
    by_memory = max(1, int(memory_bytes // max(1, member_bytes)))
    by_balance = max(1, -(-trainings // (per_slot * max(1, slots))))
    size = min(by_memory, by_balance)
    return min(size, limit) if limit else size


# What one training row costs per freeze mode, relative to a last-linear head: a pooler head
# costs about 5x (by mean train_s of the half-grid runs in docs/measurements.md); a token-level
# mode (an encoder layer or more, LoRA) costs tens of times a pooler head, and only its order
# among the packs matters here.
FREEZE_COST = {"last-linear": 1.0, "pooler": 5.0}
TOKEN_LEVEL_COST = 40.0


def pack_cost(pack: Pack) -> float:
    """A pack's estimated training time, in last-linear row-trainings: what orders the packs, so
    that Tune starts the longest first (longest-processing-time scheduling keeps the last
    minutes of a sweep from running one pack on one slot while the others idle)."""
    return pack.n_train * len(pack.trainings) * FREEZE_COST.get(pack.variant.freeze, TOKEN_LEVEL_COST)


def plan(cells: list[Cell], ids: list[str], todo: set[str], done: dict[str, CellRecord], n_labeled: int,
         pool_sizes: dict[str, int], size_of) -> Plan:
    """The trainings the cells in `todo` need, with duplicates trained once, grouped into packs.

    A group of cells with one `training_key` trains once: if one of them finished already
    (status ok), the others copy it; else the first to run in grid order trains and the rest
    ride on it. Trainings are packed by (variant, pool, rows); `size_of(variant, trainings)`
    gives the pack size. Packs come costliest first (`pack_cost`), so the long ones start early
    and the cheap ones fill the slots at the end.
    """
    by_id = dict(zip(ids, cells))
    training_of = {cid: cid for cid in ids}
    groups: dict[tuple, list[str]] = {}
    for cell, cid in zip(cells, ids):
        key = training_key(cell, n_labeled, pool_sizes[cell.pool])
        if key is not None:
            groups.setdefault(key, []).append(cid)
    trainings, grouped = [], set()
    for members in groups.values():
        finished = [c for c in members if c in done and done[c].ok]
        waiting = [c for c in members if c in todo]
        grouped.update(members)
        source = finished[0] if finished else (waiting or members)[0]
        # The training's name: the cell that trained it (a finished rider's record names it).
        shared = (done[source].shared_training if source in done else None) or source
        training_of.update(dict.fromkeys(members, shared))
        if waiting:
            trainings.append(Training(source, tuple(c for c in waiting if c != source)))
    trainings += [Training(cid) for cid in ids if cid in todo and cid not in grouped]

    def n_train(t: Training) -> int:
        c = by_id[t.cell]
        return n_labeled + rows_to_add(c.fraction, n_labeled, pool_sizes[c.pool])

    shelves: dict[tuple, list[Training]] = {}
    for t in trainings:
        c = by_id[t.cell]
        shelves.setdefault((c.variant, c.pool, n_train(t)), []).append(t)
    packs = []
    for (variant, pool, rows), shelf in shelves.items():
        size = max(1, size_of(variant, rows, len(shelf)))
        count = -(-len(shelf) // size)
        for k in range(count):  # near-equal parts, not `size, size, ..., remainder`
            part = shelf[k * len(shelf) // count: (k + 1) * len(shelf) // count]
            name = f"{pool}-{variant.slug}-n{rows}-{k}"
            packs.append(Pack(name, variant, pool, rows, tuple(part)))
    packs.sort(key=lambda p: -pack_cost(p))
    # Trains: every training whose cell is still to run (a finished source trains nothing).
    n = sum(t.cell in todo for t in trainings)
    return Plan(packs, training_of, n)

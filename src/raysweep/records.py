"""Packs and records: a pack's trainings run, each cell's record written under cells/.

    run_pack(pack, cells, context, out)   the trainings of one pack; a record per cell
    fetch_cache / publish_*               a URI output's cache entries, to and from every node

A cell's record is what makes it finished: a run skips every cell with one. While a trial runs
a cell, cells/<id>.running says so (host, pid, start), rewritten every HEARTBEAT_S.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import asdict
from pathlib import Path

from raysweep import chosen, costs, grid, layout, pools, predictions
from raysweep.grid import HEARTBEAT_S, Cell, CellRecord, Pack, Training
from raysweep.inputs import TrialContext, trial_inputs
from raysweep.model import error_line
from raysweep.storage import Output, StorageError, fetch_entry, node_lock
from raysweep.train import choose_rows, run_trials


class _Heartbeat:
    """Writes cells/<id>.running for each cell of a pack when it starts, and again every
    HEARTBEAT_S until the cell's record is written (`finished`): `raysweep status` counts a cell
    as running while its marker is fresh."""

    def __init__(self, out: Output, cids: list[str]):
        self.out = out
        self.texts = {cid: json.dumps({"cell_id": cid, "host": socket.gethostname(), "pid": os.getpid(),
                                       "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
                      for cid in cids}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _write(self) -> None:
        with self.lock:
            for cid, text in self.texts.items():
                self.out.write_text(layout.cell_marker(cid), text)

    def _beat(self) -> None:
        while not self.stop.wait(HEARTBEAT_S):
            try:
                self._write()
            except StorageError:
                pass  # a missed beat on a flaky store: the next one, or the result, follows

    def finished(self, cid: str) -> None:
        """The cell's record is written: its marker has served its purpose."""
        with self.lock:
            if self.texts.pop(cid, None) is not None:
                self.out.delete(layout.cell_marker(cid))

    def __enter__(self):
        self._write()
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


def _record(cid: str, cell: Cell, result, start: float, shared: str | None, pack: str | None,
            prices: costs.Prices | None = None) -> CellRecord:
    """A cell's record: its metrics, or the error that failed it (in one line). `wall_s` is the
    cell's own share of its pack's time: its trial (select, train, evaluate) and its writes.
    With the sweep's `prices`, what its added rows' labels cost (costs.py)."""
    if isinstance(result, BaseException):
        return CellRecord(cid, asdict(cell), "failed", {}, error_line(result), shared, pack)
    metrics = {**result[0]}
    metrics["wall_s"] = round(metrics.get("trial_s", 0.0) + time.perf_counter() - start, 4)
    priced = costs.price_cell(prices, cell.pool, metrics)
    metrics.update(human_labels=priced.pop("human_labels"), llm_labels=priced.pop("llm_labels"))
    return CellRecord(cid, asdict(cell), "ok", metrics, "", shared, pack, **priced)


def run_pack(pack: Pack, cells: dict[str, Cell], context: TrialContext, out: Output, device: str = "cpu") -> dict:
    """Run the trainings of one pack and record each cell under cells/; returns the records.

    A training whose cell has a record already (finished before this run, or written before a
    lost node took the rest of the pack) is not trained again; its riders copy that record. A
    failing cell is recorded, not raised: an exception in a trial is deterministic, so Tune
    retrying it would only repeat it; the other cells of the pack are unaffected.
    """
    records: dict[str, CellRecord] = {}
    earlier = {t.cell: _read_record(out, t.cell) for t in pack.trainings}
    with _Heartbeat(out, [c for c in pack.cells if earlier.get(c) is None]) as beat:
        todo = [t for t in pack.trainings if earlier[t.cell] is None]
        inputs = None
        try:
            inputs = trial_inputs(context, pack.variant, pack.pool)
            bf16 = context.resources.of(pack.variant.freeze).bf16
            results = run_trials([cells[t.cell] for t in todo], inputs, context.recipe, context.selection, device,
                                 bf16)
        except Exception as exc:  # noqa: BLE001 - the pack's inputs failed: so does each of its cells
            results = [exc] * len(todo)
        for t, result in zip(todo, results):
            # `pack`: the Tune trial (its config's "pack") that wrote the record, for status and Tune's logs
            records[t.cell] = _write_cell(out, t.cell, cells[t.cell], result, inputs, context, beat, None, pack.name)
        for t in pack.trainings:
            source = records.get(t.cell) or earlier[t.cell]
            for rider in t.riders:
                records[rider] = _write_rider(out, rider, cells[rider], source, context, beat, pack.name)
    return records


def _read_record(out: Output, cid: str) -> CellRecord | None:
    return CellRecord.parse(out.read_text(layout.cell_record(cid)))  # torn by a node's death: None, run it again


def _write_cell(out: Output, cid: str, cell: Cell, result, inputs, context: TrialContext, beat: _Heartbeat,
                shared: str | None, pack: str | None) -> CellRecord:
    start = time.perf_counter()
    if not isinstance(result, BaseException):
        try:  # before the cell's record: a cell that counts as finished has its chosen rows on record
            chosen.write_cell(out, cid, result[1], inputs.train_labels, context.fixed)
            _write_predictions(out, cid, result, shared)
        except Exception as exc:  # noqa: BLE001
            result = exc
    record = _record(cid, cell, result, start, shared, pack, context.prices)
    record.committee = grid.committee(cell, context.seeds)  # on record: a later reader need not guess it
    out.write_text(layout.cell_record(cid), record.to_json())
    beat.finished(cid)
    return record


def _write_predictions(out: Output, cid: str, result: tuple, shared: str | None) -> None:
    """The cell's per-row predictions (predictions.py): its trial's, or, for a rider, a copy of
    the cell whose training it shares (none if that cell finished before predictions existed)."""
    if len(result) > 2 and result[2]:
        predictions.write_cell(out, cid, result[2])
    elif shared:
        predictions.copy_cell(out, shared, cid)


def _write_rider(out: Output, cid: str, cell: Cell, source: CellRecord, context: TrialContext, beat: _Heartbeat,
                 pack: str | None = None) -> CellRecord:
    """A cell whose rows are the same as `source`'s by construction: its own record (and chosen
    rows), with `source`'s results and `shared_training` naming the cell that trained. It trained
    nothing itself: its train_s and eval_s are 0 (the compute is on the cell that trained)."""
    start = time.perf_counter()
    shared = source.training
    try:
        inputs = trial_inputs(context, cell.variant, cell.pool)
        picked = choose_rows(cell, inputs, context.recipe, context.selection)  # no model: none or all of the pool
        if not source.ok:
            raise RuntimeError(f"the training it shares with cell {shared} failed: {source.error}")
        select_s = round(time.perf_counter() - start, 4)
        metrics = {**source.metrics, "select_s": select_s, "train_s": 0.0, "eval_s": 0.0, "trial_s": select_s,
                   "pool_size": len(inputs.pool_rows)}
        metrics.pop("cached_model", None)
        result = (metrics, picked)
    except Exception as exc:  # noqa: BLE001
        result, inputs = exc, None
    return _write_cell(out, cid, cell, result, inputs, context, beat, shared, pack)


def run_cell(cell: Cell, cid: str, context: TrialContext, out: Output) -> CellRecord:
    """Run one cell alone (a pack of one) and record it under cells/."""
    pack = Pack(cid, cell.variant, cell.pool, 0, (Training(cid),))
    return run_pack(pack, {cid: cell}, context, out)[cid]


_fetched: set[str] = set()  # outputs whose scoring files this process has fetched (see fetch_cache)


def publish_entries(out: Output, context: TrialContext, log=print) -> None:
    """A URI output: copy the activation entries the trials read from the driver's cache to
    <output>/cache/, where every node finds them. Before any remote work: the scoring tasks and
    actors of `prepare_selection` read them too."""
    entries = sorted({Path(p) for pair in context.artifacts.values() for p in pair})
    copied = sum(out.upload_tree(p, f"cache/{p.name}") > 0 for p in entries)
    log(f"cache: {copied} of {len(entries)} activation entries uploaded to {out.show('cache')}")


def publish_selection(out: Output, context: TrialContext, log=print) -> None:
    """A URI output: copy the scoring models and pool scores (all in the driver's cache: remote
    training returns its states to the driver) to <output>/cache/selection/ for the trials."""
    selection = Path(context.cache_dir) / "selection"
    if selection.is_dir():
        log(f"cache: {out.upload_tree(selection, 'cache/selection')} scoring files uploaded to "
            f"{out.show('cache/selection')}")


def fetch_cache(out: Output, context: TrialContext, cells: list[Cell]) -> None:
    """Before a node's first trial of `cells`' inputs: download the activation entries it lacks from
    <output>/cache/ into the node's cache (the same path as the driver's), and the scoring files
    once; each under a per-node lock, so the trials of one node download nothing twice."""
    for key in dict.fromkeys(pools.get(c.pool).reads(c.variant) for c in cells):
        for path in context.artifacts[key]:
            fetch_entry(out, Path(path))
    if out.spec not in _fetched:  # a listing of the store: once per process and output
        selection = Path(context.cache_dir) / "selection"
        with node_lock(selection):
            out.fetch_tree("cache/selection", selection, marker=None)
        _fetched.add(out.spec)


"""Migrations: finished cells whose id recipe changed are moved to their new ids, never re-run.

`committees` (issue 33). A qbc-seeds cell picks its rows with the scoring models of the sweep's
other seeds, so its id carries that committee (grid.committee). Records written before hold the
id without it, and their committee is not in them: it was the other seeds of the run that made
them. That run's seeds are those of the output's sweep.yaml snapshot, read before this run
rewrites it, when nothing says the output was run with other seeds:

- a record of a seed the snapshot lacks, or the records' seeds beyond the snapshot's (the seed
  list shrank: the snapshot is not the run that made them);
- run logs under logs/ that count different grids ("sweep NAME: N cells"): the grid changed
  between runs, and a grown seed list cannot be told apart from a grown strategy list. A URI
  output keeps its logs on the driver's disk, so there only the first check applies.

Such a record is left where it is, unused (its cell runs again under the new id), with one line
saying why; nothing is deleted. A recovered one is rewritten under its new id with `committee`
and `migrated_from`, its chosen rows and predictions with it, and the records naming its old id
as their training name the new one.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import replace

import pyarrow.parquet as pq
import yaml

from raysweep import chosen, layout, predictions
from raysweep.grid import Cell, CellRecord, committee, read_cells
from raysweep.storage import Output

_GRID_LINE = re.compile(r"raysweep: sweep .+?: (\d+) cells, ")


def snapshot_seeds(text: str | None) -> list[int] | None:
    """replicate.seed of a sweep.yaml snapshot's text, or None when there is none to read."""
    try:
        data = yaml.safe_load(text) if text else None
        seeds = data["replicate"]["seed"]
    except (yaml.YAMLError, KeyError, TypeError):
        return None
    if not isinstance(seeds, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        return None
    return seeds


def logged_grids(out: Output) -> set[int]:
    """The grid sizes the output's run logs report (a local output's logs/ only)."""
    d = out.local_dir
    sizes = set()
    for path in sorted((d / layout.LOGS).glob("run-*.log")) if d is not None else []:
        sizes.update(int(m.group(1)) for m in _GRID_LINE.finditer(path.read_text(errors="replace")))
    return sizes


def _why_unknown(seeds: list[int] | None, found: list[CellRecord], all_seeds: set[int], grids: set[int]) -> str | None:
    if seeds is None:
        return "the output has no readable sweep.yaml snapshot to say which seeds made them"
    outside = sorted({r.cell["seed"] for r in found} - set(seeds))
    if outside:
        return f"they include seed(s) {outside} that the sweep.yaml snapshot (seeds {seeds}) lacks"
    beyond = sorted(all_seeds - set(seeds))
    if beyond:
        return (f"the output holds cells of seed(s) {beyond} beyond the sweep.yaml snapshot's {seeds}: "
                "its seed list changed between runs")
    if len(grids) > 1:
        return (f"the output's run logs count different grids ({', '.join(map(str, sorted(grids)))} cells): "
                "the seeds of an earlier run are unknown")
    return None


def committees(cells: list[Cell], ids: list[str], old_ids: list[str], seeds_now: list[int], out: Output,
               snapshot: str | None, log=print) -> int:
    """Move the records of `cells` found under their old id (`old_ids`, without the committee) to
    their id (`ids`) when the committee they were made with is this grid's (`seeds_now`: this
    sweep's seeds); returns how many moved. `snapshot`: the output's sweep.yaml before this run."""
    done = read_cells(out)
    moves = {old: (cell, new) for cell, new, old in zip(cells, ids, old_ids)
             if new != old and old in done and done[old].committee is None}
    if not moves:
        return 0
    seeds = snapshot_seeds(snapshot)
    found = [done[old] for old in moves]
    why = _why_unknown(seeds, found, {r.cell.get("seed") for r in done.values()} - {None}, logged_grids(out))
    if why is not None:
        log(f"migration: {len(found)} qbc-seeds cell(s) made before committees were in cell ids are left unused "
            f"under their old ids (they run again): {why}")
        return 0
    # The committee the old run used must be the one this grid's id names, or the cell is not this one.
    mismatched = [old for old, (cell, _) in moves.items() if committee(cell, seeds) != committee(cell, seeds_now)]
    if mismatched:
        log(f"migration: {len(mismatched)} qbc-seeds cell(s) were made with the committee of seeds {seeds}, "
            f"not this sweep's: left unused under their old ids (cells/{mismatched[0]}.json, ...)")
    for old in mismatched:
        moves.pop(old)
    if not moves:
        return 0
    renamed = {old: new for old, (_, new) in moves.items()}
    for old, (cell, new) in moves.items():
        rec = done[old]
        _copy_rows(out, chosen.FOLDER, old, new)
        _copy_rows(out, predictions.FOLDER, old, new)
        moved = replace(rec, cell_id=new, committee=committee(cell, seeds),
                        shared_training=renamed.get(rec.shared_training, rec.shared_training),
                        extra={**rec.extra, "migrated_from": old})
        out.write_text(layout.cell_record(new), moved.to_json())
    for cid, rec in done.items():  # riders that name a moved cell as the one that trained
        if cid not in moves and rec.shared_training in renamed:
            out.write_text(layout.cell_record(cid), replace(rec, shared_training=renamed[rec.shared_training]).to_json())
    for old in moves:  # last: a run killed before this point finds both, and the next one finishes the move
        out.delete(f"{chosen.FOLDER}/{old}.parquet")
        out.delete(f"{predictions.FOLDER}/{old}.parquet")
        out.delete(layout.cell_record(old))
    log(f"migration: {len(moves)} qbc-seeds cell(s) moved to ids that name their committee (seeds {seeds} "
        "of the output's sweep.yaml snapshot)")
    return len(moves)


def _copy_rows(out: Output, folder: str, old: str, new: str) -> None:
    """folder/<old>.parquet as folder/<new>.parquet, its `cell_id` metadata renamed (none: nothing)."""
    data = out.read_bytes(f"{folder}/{old}.parquet")
    if data is None:
        return
    table = pq.read_table(io.BytesIO(data))
    meta = dict(table.schema.metadata or {})
    if b"raysweep" in meta:
        info = json.loads(meta[b"raysweep"])
        meta[b"raysweep"] = json.dumps({**info, "cell_id": new}).encode()
    buf = io.BytesIO()
    pq.write_table(table.replace_schema_metadata(meta), buf, compression="zstd")
    out.write_bytes(f"{folder}/{new}.parquet", buf.getvalue())

"""The rows each sweep cell chose, on record (Parquet under <output>/chosen/).

trials.csv says how well a strategy did; this says *what it picked*, so a report can show that
uncertainty sampling over-picks SST-5's neighbouring classes, and which sentences it found hard.

    chosen/<cell id>.parquet      one finished cell's added rows, in the order its strategy picked
                                  them: row (position into the sweep's train rows), rank (0 = picked
                                  first), score (the strategy's score of the row when it ranked the
                                  pool; null for random and the greedy diversity strategies), step
                                  (the acquisition round, 0 .. rounds-1) and label (the label the
                                  trial trained on). Its schema metadata names the cell and the
                                  rows table.
    chosen/rows-<fixed>.parquet   the train rows of the sweep's data and split (`fixed` is the
                                  sweep's fixed digest): row, text, gold label and whether the row
                                  was in `labeled` from the start (else it was in the pool).

One file per cell (not a shared table) because trials on many nodes finish at once and an object
store has no append. Parquet rather than trials.csv: a cell adds up to thousands of rows. Cells
finished before this record existed simply have no file; the report says how many.
Everything goes through `storage.Output`, so a URI output works the same as a local directory.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from raysweep.layout import CHOSEN
from raysweep.storage import Output

if TYPE_CHECKING:  # the report reads these files without importing torch
    from raysweep.train import Chosen

FOLDER = CHOSEN  # layout.py owns the output's paths
ROWS_PREFIX = "rows-"


def _parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def _label_type(labels: np.ndarray) -> pa.DataType:
    # A class is an int64 as it always was; a regression's score (STS) keeps its fraction.
    return pa.float64() if np.asarray(labels).dtype.kind == "f" else pa.int64()


def write_cell(out: Output, cid: str, chosen: Chosen, labels: np.ndarray, fixed: str | None) -> None:
    """Record one cell's chosen rows; `labels` are the labels of all the trial's train rows."""
    n = len(chosen.rows)
    table = pa.table({
        "row": pa.array(chosen.rows, type=pa.int64()),
        "rank": pa.array(np.arange(n), type=pa.int32()),
        # NaN -> null: "this strategy gives no score" is missing data, not a number.
        "score": pa.array(chosen.scores, type=pa.float64(), from_pandas=True),
        "step": pa.array(chosen.steps, type=pa.int16()),
        "label": pa.array(np.asarray(labels)[chosen.rows] if n else np.empty(0), type=_label_type(labels)),
    })
    meta = {"cell_id": cid, "rows_table": f"{ROWS_PREFIX}{fixed}.parquet" if fixed else ""}
    table = table.replace_schema_metadata({"raysweep": json.dumps(meta)})
    out.mkdir(FOLDER)
    out.write_bytes(f"{FOLDER}/{cid}.parquet", _parquet_bytes(table))


def write_rows_table(out: Output, fixed: str, texts: list[str], labels: np.ndarray, labeled: np.ndarray) -> None:
    """The text and gold label of every train row, once per data + split (skipped when present)."""
    rel = f"{FOLDER}/{ROWS_PREFIX}{fixed}.parquet"
    if out.exists(rel):
        return
    start = np.zeros(len(texts), dtype=bool)
    start[np.asarray(labeled, dtype=np.int64)] = True
    table = pa.table({"row": pa.array(np.arange(len(texts)), type=pa.int64()), "text": pa.array(texts, type=pa.string()),
                      "label": pa.array(np.asarray(labels), type=_label_type(labels)), "labeled": pa.array(start)})
    out.mkdir(FOLDER)
    out.write_bytes(rel, _parquet_bytes(table))


# --------------------------------------------------------------------------- reading (the report)


def read_chosen(results_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(chosen, rows) of a results directory.

    `chosen`: every recorded cell's rows with a `cell_id` column; `rows`: the rows tables
    (with a `rows_table` column naming which). Both empty when nothing is recorded.
    """
    d = Path(results_dir) / FOLDER
    cells, tables = [], []
    for path in sorted(d.glob("*.parquet")) if d.is_dir() else []:
        try:
            table = pq.read_table(path)
        except (OSError, pa.ArrowInvalid):
            continue  # a torn upload: the cell counts as unrecorded
        df = table.to_pandas()
        if path.name.startswith(ROWS_PREFIX):
            tables.append(df.assign(rows_table=path.name))
            continue
        meta = json.loads((table.schema.metadata or {}).get(b"raysweep", b"{}"))
        cells.append(df.assign(cell_id=meta.get("cell_id", path.stem), rows_table=meta.get("rows_table", "")))
    chosen = pd.concat(cells, ignore_index=True) if cells else pd.DataFrame(
        columns=["row", "rank", "score", "step", "label", "cell_id", "rows_table"])
    rows = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(
        columns=["row", "text", "label", "labeled", "rows_table"])
    return chosen, rows

"""Each cell's per-row predictions on its evaluation splits, on record (Parquet under <output>/predictions/).

trials.csv keeps one number per cell and split. The analysis needs what is under that number:
every seed is scored on the same val rows, so a difference between two strategies that lives in
*which* rows their models get right is shared by all seeds and never averages out over them. To
put an interval on "new rows" the analysis resamples the rows, which needs each row's prediction
(analysis/rows.py).

    predictions/<cell id>.parquet   one finished cell: per evaluation row, its split ('val', and
                                    'test' when the data has one), its position in that split, the
                                    gold label, the predicted class (or score, for a regression) and
                                    the class probabilities p0..p{C-1} as float16 (a classifier's;
                                    a regression keeps none). Schema metadata names the cell.

One file per cell, as chosen/ (trials on many nodes finish at once; an object store has no
append), written through `storage.Output` before the cell's record, so it travels with a URI output
and survives resume and node loss. SST-5's 1,101 val rows with five probabilities are about 13 KB.
Cells finished before this record existed have no file: the report names them and falls back to
the seed-only test for any comparison they are in.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from raysweep.layout import PREDICTIONS
from raysweep.storage import Output

FOLDER = PREDICTIONS  # layout.py owns the output's paths


@dataclass
class SplitPredictions:
    """One evaluation split's predictions by one model."""

    labels: np.ndarray  # gold, per row of the split
    predicted: np.ndarray  # the predicted class (int) or score (float), per row
    probabilities: np.ndarray | None = None  # [rows, classes] for a classifier; None for a regression


def _column(values: np.ndarray) -> pa.Array:
    values = np.asarray(values)
    # A class is a small int; a regression's score keeps float32 (its metrics are correlations).
    return pa.array(values.astype(np.float32) if values.dtype.kind == "f" else values.astype(np.int16))


def to_table(cid: str, splits: dict[str, SplitPredictions]) -> pa.Table:
    parts = []
    for name, p in splits.items():
        n = len(p.labels)
        if len(p.predicted) != n:
            raise ValueError(f"predictions of split {name!r}: {len(p.predicted)} predictions for {n} labels")
        cols = {"split": pa.array([name] * n, type=pa.string()).dictionary_encode(),
                "row": pa.array(np.arange(n, dtype=np.int32)),
                "label": _column(p.labels), "predicted": _column(p.predicted)}
        if p.probabilities is not None:
            probs = np.asarray(p.probabilities, dtype=np.float16)
            cols.update({f"p{c}": pa.array(probs[:, c]) for c in range(probs.shape[1])})
        parts.append(pa.table(cols))
    table = pa.concat_tables(parts, promote_options="default") if parts else pa.table({})
    return table.replace_schema_metadata({"raysweep": json.dumps({"cell_id": cid})})


def write_cell(out: Output, cid: str, splits: dict[str, SplitPredictions]) -> None:
    """Record one cell's predictions (before its record, so a finished cell has them)."""
    buf = io.BytesIO()
    pq.write_table(to_table(cid, splits), buf, compression="zstd")
    out.mkdir(FOLDER)
    out.write_bytes(f"{FOLDER}/{cid}.parquet", buf.getvalue())


def copy_cell(out: Output, source: str, cid: str) -> bool:
    """A rider shares its source cell's training, so it has the same predictions: copy them.
    False when the source has none (it finished before this record existed)."""
    data = out.read_bytes(f"{FOLDER}/{source}.parquet")
    if data is None:
        return False
    out.mkdir(FOLDER)
    out.write_bytes(f"{FOLDER}/{cid}.parquet", data)
    return True


# --------------------------------------------------------------------------- reading (the analysis)


@dataclass
class RowTable:
    """One evaluation split's predictions of many cells, aligned by row.

    `predicted[i, r]` is cell `cell_ids[i]`'s prediction of row r; `labels[r]` the gold label,
    the same for every cell (a cell whose labels differ was scored on other rows and is left out).
    """

    split: str
    cell_ids: list[str]
    labels: np.ndarray  # [rows]
    predicted: np.ndarray  # [cells, rows]

    def index(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.cell_ids)}


def read_cell(path: str | Path) -> pd.DataFrame | None:
    """One cell's predictions file as a frame, or None when it is unreadable (a torn upload)."""
    try:
        return pq.read_table(path).to_pandas()
    except (OSError, pa.ArrowInvalid):
        return None


def read_rows(results_dir: str | Path, split: str = "val", cell_ids: list[str] | None = None) -> RowTable | None:
    """The predictions of `split` of every recorded cell (or of `cell_ids` only), or None when no
    cell has any. Cells whose rows disagree with the majority's labels are dropped: they were
    scored on another evaluation set and cannot be paired row by row."""
    d = Path(results_dir) / FOLDER
    wanted = None if cell_ids is None else set(cell_ids)
    ids, labels, preds = [], [], []
    for path in sorted(d.glob("*.parquet")) if d.is_dir() else []:
        if wanted is not None and path.stem not in wanted:
            continue
        df = read_cell(path)
        if df is None or "split" not in df:
            continue
        part = df[df["split"].astype(str) == split].sort_values("row")
        if part.empty:
            continue
        ids.append(path.stem)
        labels.append(part["label"].to_numpy())
        preds.append(part["predicted"].to_numpy())
    if not ids:
        return None
    # The evaluation set most cells were scored on (by its labels, row by row).
    keys = [lab.tobytes() + str(lab.dtype).encode() for lab in labels]
    common = max(set(keys), key=keys.count)
    keep = [i for i, k in enumerate(keys) if k == common]
    return RowTable(split, [ids[i] for i in keep], labels[keep[0]], np.stack([preds[i] for i in keep]))

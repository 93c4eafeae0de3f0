"""Writing an activation cache entry while the encoder pass produces it, never holding it whole.

An encoder pass over 100,000 rows yields 150 MB of pooled vectors (MiniLM's 384 floats a row),
or gigabytes of token states, in batches that arrive in length order, from this process or from
Ray Data actors. Stacking them in the driver before writing held the pass's whole output in
memory, twice while it was stacked. Here each batch goes to disk as it arrives:

- one vector per row (`pooled`, `sentence` boundaries): written at the row's place in
  features.npy, whose .npy header is written first, so the file is byte for byte what
  `np.save` of the stacked array wrote before (the entry's format and key do not change);
- token states (`hidden` boundaries, ragged): appended in arrival order to a spill file beside
  it; when the pass ends they are copied into features.npy in row order, a bounded run of rows
  at a time, and offsets.npy is written.

Writes go through the file descriptor (`os.pwrite`), not a memory map: a map's written pages
count in the process's resident memory until it is unmapped, which is the growth this avoids.
What stays in memory grows with the pool only as one flag per row (and, for token states, two
int64 per row: where each row landed in the spill file and how long it is).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from raysweep.backbone import Boundary

FLOAT = np.dtype(np.float32)
COPY_BYTES = 64 << 20  # token states copied from the spill file in runs of at most this many bytes


def create_npy(path: Path, shape: tuple[int, ...]) -> int:
    """An uninitialised float32 .npy file of `shape` with the header `np.save` writes (format 1.0,
    C order); returns the header's length, where row 0 starts."""
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(
            fh, {"descr": np.lib.format.dtype_to_descr(FLOAT), "fortran_order": False, "shape": shape})
        header = fh.tell()
        fh.truncate(header + int(np.prod(shape)) * FLOAT.itemsize)
    return header


class EntryWriter:
    """features.npy (and offsets.npy) of one cache entry in the directory `tmp`, row by row."""

    def __init__(self, tmp: Path, rows: int, boundary: Boundary, hidden: int):
        self.tmp, self.rows, self.hidden = Path(tmp), rows, hidden
        self.ragged = boundary.ragged
        self.filled = np.zeros(rows, dtype=bool)
        self.row_bytes = hidden * FLOAT.itemsize
        if self.ragged:
            self.spill_path = self.tmp / "features.spill"
            self.fd = os.open(self.spill_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            self.spill_at = np.zeros(rows, dtype=np.int64)  # byte offset of each row's states in the spill file
            self.lengths = np.zeros(rows, dtype=np.int64)  # tokens of each row
            self.spilled = 0
        else:
            self.header = create_npy(self.tmp / "features.npy", (rows, hidden))
            self.fd = os.open(self.tmp / "features.npy", os.O_WRONLY)

    def put(self, rows, feats) -> None:
        """Features of `rows` (positions in the entry): a [B, H] array, or a list of [len_i, H]."""
        for row, f in zip(np.asarray(rows, dtype=np.int64), feats):
            data = np.ascontiguousarray(f, dtype=FLOAT).tobytes()
            if self.ragged:
                os.write(self.fd, data)
                self.spill_at[row], self.lengths[row] = self.spilled, len(data) // self.row_bytes
                self.spilled += len(data)
            else:
                os.pwrite(self.fd, data, self.header + int(row) * self.row_bytes)
            self.filled[row] = True

    def close(self) -> None:
        """Finish the files; raises if a row never came (a lost Ray Data block)."""
        self.abort()
        missing = int((~self.filled).sum())
        if missing:
            raise RuntimeError(f"activation cache: {missing} of {self.rows} rows came back without features")
        if self.ragged:
            self._reorder()

    def abort(self) -> None:
        """Close the file (once: a closed descriptor's number may already belong to another file)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def _reorder(self) -> None:
        """Token states from the spill file (arrival order) into features.npy (row order)."""
        offsets = np.concatenate([[0], np.cumsum(self.lengths)]).astype(np.int64)
        np.save(self.tmp / "offsets.npy", offsets)
        header = create_npy(self.tmp / "features.npy", (int(offsets[-1]), self.hidden))
        with open(self.spill_path, "rb") as src, open(self.tmp / "features.npy", "r+b") as dst:
            dst.seek(header)
            buf = bytearray()
            for row in range(self.rows):
                src.seek(int(self.spill_at[row]))
                buf += src.read(int(self.lengths[row]) * self.row_bytes)
                if len(buf) >= COPY_BYTES:
                    dst.write(buf)
                    buf = bytearray()
            dst.write(buf)
        self.spill_path.unlink()

"""Input files checked before they are read: a regular file, of a size its kind can have.

A FIFO, a device (/dev/zero) or a socket given as a data, sweep or label file would block a
read forever or stream without end, and a file of gigabytes (a sparse one is a few bytes on
disk) would be read whole into memory before any parser says no. `os.stat` answers all of it
without opening the file, so every reader asks `regular_file` first and fails in one line.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from raysweep.errors import RaysweepError

# The largest file of each kind read here. A data file is read whole into pandas (a CSV of N
# bytes takes several N of memory): SST-5 is 1 MB, a million sentences ~150 MB. Raise it with
# RAYSWEEP_MAX_DATA_MB for a larger machine.
MAX_BYTES = {"data": 512 << 20, "labels": 512 << 20, "sweep": 256 << 10, "project": 256 << 10, "key": 64 << 10}
_KINDS = {stat.S_ISFIFO: "a FIFO (named pipe)", stat.S_ISCHR: "a character device", stat.S_ISBLK: "a block device",
          stat.S_ISSOCK: "a socket", stat.S_ISDIR: "a directory"}


class InputFileError(RaysweepError, ValueError):
    """An input path that is not a readable regular file of a sane size; the message names it."""


def max_bytes(kind: str) -> int:
    if kind == "data" and os.environ.get("RAYSWEEP_MAX_DATA_MB", "").isascii() \
            and os.environ.get("RAYSWEEP_MAX_DATA_MB", "").isdigit():
        return int(os.environ["RAYSWEEP_MAX_DATA_MB"]) << 20
    return MAX_BYTES[kind]


def regular_file(path: str | Path, kind: str, error=InputFileError) -> Path:
    """`path` if it is a regular file (after symlinks) no larger than its `kind` allows, else
    `error` (an exception class) with one line naming the path and the problem."""
    path = Path(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except ValueError:  # a NUL byte in the path
        raise error(f"{str(path)!r}: the path holds a NUL byte") from None
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror or type(exc).__name__})") from None
    if not stat.S_ISREG(info.st_mode):
        what = next((name for test, name in _KINDS.items() if test(info.st_mode)), "a special file")
        raise error(f"{path}: {what}, not a regular file; give the {kind} file itself")
    limit = max_bytes(kind)
    if info.st_size > limit:
        hint = " (RAYSWEEP_MAX_DATA_MB raises the limit)" if kind == "data" else ""
        raise error(f"{path}: {_size(info.st_size)}, larger than {_size(limit)}, the most a {kind} file may be{hint}")
    return path


def _size(n: int) -> str:
    return f"{n / (1 << 20):,.0f} MiB" if n >= 1 << 20 else f"{n / 1024:,.0f} KiB"

"""Data: SST-5, STS or Quora question pairs (shipped with the package, `data.name`) or any labeled
CSV / Parquet / JSONL file (`data.path`), of one sentence or a pair per row, and
the study's seeded split of train into `labeled` (D_labeled) and `unlabeled` (D_unlabeled),
with dev as `val` (D_val) and, when the file has one, a held-out `test` split.

Every problem with a file is a one-line `DataError` naming the file, the row and the problem,
because a sweep that dies an hour in on row 5,000 of a bad file is worse than one that refuses
to start.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from raysweep.config import BUNDLED_DATA, DataConfig, SplitConfig
from raysweep.errors import RaysweepError
from raysweep.tasks import PAIR_SEP, Task, join_pair

BUNDLED_SST5 = BUNDLED_DATA["sst5"]["file"]


class DataError(RaysweepError, ValueError):
    """A data file that cannot be used as it is; the message names file, row and problem."""


@dataclass
class Splits:
    """The study's three sets (and a fourth when the file has it). `train` is labeled + unlabeled,
    in file order.

    `labeled` and `unlabeled` are row positions into `train`, so every trial and every cached
    activation refers to the same rows whatever the strategy picks. `test` is rows a user picks
    nothing on: trials report their metrics there too, so a finding drawn on `val` (where the
    winner is chosen) can be checked on rows that played no part in choosing it.
    """

    train: pd.DataFrame  # columns text, label (a pair: its texts joined by tasks.PAIR_SEP; a score: float)
    val: pd.DataFrame  # columns text, label
    labeled: np.ndarray  # positions into train
    unlabeled: np.ndarray  # positions into train
    source: str  # where the data came from, for the results' provenance
    test: pd.DataFrame | None = None  # columns text, label; None: the file has no 'test' rows (bundled SST-5)
    warnings: list[str] = field(default_factory=list)  # what is legal but likely wrong (data_warnings)

    def describe(self) -> str:
        test = f", test {len(self.test)}" if self.test is not None else ""
        return (f"{self.source}: train {len(self.train)} (labeled {len(self.labeled)}, "
                f"unlabeled {len(self.unlabeled)}), val {len(self.val)}{test}")


def bundled_path(name: str = "sst5") -> Path:
    """A data set shipped inside the package (train + dev, gzip CSV; provenance in bundled/README.md)."""
    return Path(str(resources.files("raysweep") / "bundled" / BUNDLED_DATA[name]["file"]))


# --------------------------------------------------------------------------- reading files


def _sniff_error(path: Path, kind: str, exc: Exception) -> DataError:
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return DataError(f"{path}: not a readable {kind} file ({reason})")


def read_table(path: str | Path) -> pd.DataFrame:
    """Read CSV (optionally .gz), Parquet or JSONL by suffix, with one-line errors."""
    from raysweep.files import regular_file

    # Before any read: a FIFO or a device would block or stream forever, a huge file fill memory.
    path = regular_file(path, "data", DataError)
    kind, compressed = _kind(path)
    if compressed:
        _check_gzip_size(path)
    try:
        if kind in (".csv", ".tsv"):
            sep = "\t" if kind == ".tsv" else ","
            _check_header(path, sep, compressed)
            # keep_default_na=False: "NA" and "null" are real words in a sentence data set.
            return pd.read_csv(path, sep=sep, keep_default_na=False, dtype=str, quoting=csv.QUOTE_MINIMAL,
                               encoding="utf-8")
        if kind == ".parquet":
            df = pd.read_parquet(path)
            _check_unique(f"{path}: schema", [str(c) for c in df.columns])
            return df
        if kind in (".jsonl", ".ndjson"):
            return _read_jsonl(path, compressed)
    except DataError:
        raise
    except (ValueError, OSError, UnicodeDecodeError, csv.Error, pd.errors.ParserError, ImportError) as exc:
        name = {".parquet": "Parquet", ".jsonl": "JSONL", ".ndjson": "JSONL"}.get(kind, "CSV")
        raise _sniff_error(path, name, exc) from None
    raise DataError(f"{path}: unknown file type {kind or '(no suffix)'!r} (use .csv, .tsv, .parquet or .jsonl)")


def _check_gzip_size(path: Path) -> None:
    """Refuse a .gz whose content is larger than a data file may be: a few MB of gzip can
    inflate to gigabytes. Its last 4 bytes hold the content's size (mod 4 GiB, so a size
    just past a multiple of 4 GiB slips through: the reader's own limits stay)."""
    from raysweep.files import max_bytes

    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        if fh.tell() < 18:  # no room for gzip's header and trailer: the reader says what it is
            return
        fh.seek(-4, os.SEEK_END)
        size = int.from_bytes(fh.read(4), "little")
    if size > max_bytes("data"):
        raise DataError(f"{path}: inflates to {size / (1 << 20):,.0f} MiB, larger than a data file may be "
                        "(RAYSWEEP_MAX_DATA_MB raises the limit)")


def _kind(path: Path) -> tuple[str, bool]:
    """(the format suffix, gzip-compressed) of a data file's name."""
    suffixes = [s.lower() for s in path.suffixes]
    compressed = suffixes[-1:] == [".gz"]
    kind = (suffixes[-2] if compressed and len(suffixes) >= 2 else suffixes[-1]) if suffixes else ""
    return kind, compressed


def first_row(path: Path) -> int:
    """The number a user sees for the file's first data row: 2 below a CSV header, else 1
    (a JSONL line, a Parquet row)."""
    return 2 if _kind(path)[0] in (".csv", ".tsv") else 1


def _check_header(path: Path, sep: str, compressed: bool) -> None:
    """A CSV's header, read before pandas: pandas renames a repeated column to `name.1` and
    would then read the first of two `label` columns without a word."""
    opener = gzip.open if compressed else open
    with opener(path, "rt", encoding="utf-8", newline="") as fh:  # a plain file named .gz fails here
        header = next(csv.reader(fh, delimiter=sep), [])
    _check_unique(f"{path}: row 1", [h.strip() for h in header])


def _check_unique(where: str, columns: list[str]) -> None:
    seen = set()
    for name in columns:
        if name in seen:
            raise DataError(f"{where}: column {name!r} appears twice")
        seen.add(name)


def _read_jsonl(path: Path, compressed: bool) -> pd.DataFrame:
    opener = gzip.open if compressed else open
    rows = []
    with opener(path, "rt", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}: line {lineno}: not valid JSON ({exc.msg})") from None
            except (ValueError, RecursionError) as exc:  # a number of 5,000 digits; nesting beyond the stack
                raise DataError(f"{path}: line {lineno}: not usable JSON ({type(exc).__name__})") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}: line {lineno}: expected a JSON object, got {type(obj).__name__}")
            rows.append(obj)
    return pd.DataFrame(rows)


def clean_labeled(df: pd.DataFrame, path: str | Path, text_column: str, label_column: str,
                  num_classes: int, row_offset: int = 2) -> pd.DataFrame:
    """Check and normalise a labeled table to columns (text, label:int64).

    `row_offset` turns a 0-based position into the row number a user sees in the file
    (2 for a CSV with a header row, 1 for JSONL lines and Parquet rows).
    """
    for col in (text_column, label_column):
        if col not in df.columns:
            raise DataError(f"{path}: missing column {col!r} (columns: {', '.join(map(str, df.columns))})")
    texts = df[text_column]
    labels = df[label_column]
    out_labels = np.empty(len(df), dtype=np.int64)
    for i, (text, label) in enumerate(zip(texts, labels)):
        row = i + row_offset
        _check_text(text, path, row, text_column)
        value = _label_number(label, path, row)
        if not value.is_integer():
            raise DataError(f"{path}: row {row}: label {_short(label)} is not a whole number (labels are 0..{num_classes - 1})")
        if not 0 <= value < num_classes:
            raise DataError(f"{path}: row {row}: label {_short(label)} is outside 0..{num_classes - 1}")
        out_labels[i] = int(value)
    return pd.DataFrame({"text": texts.astype(str).str.strip().to_numpy(), "label": out_labels})


# A label as written: ASCII digits only (float() also reads "٣" and "1_0"), "3" or "3.0".
_LABEL = re.compile(r"\s*[-+]?[0-9]+(?:\.[0-9]*)?\s*", re.ASCII)
_BOOLEANS = {"true", "false", "yes", "no"}


def _label_number(label, path, row: int) -> float:
    """A class label as a number, or a DataError naming the row."""
    if isinstance(label, (bool, np.bool_)) or (isinstance(label, str) and label.strip().lower() in _BOOLEANS):
        # float(True) is 1.0: a boolean column would pass as classes 0/1 without a word, though
        # what it says is rarely "class 1" (a flag, a filter column named by mistake).
        raise DataError(f"{path}: row {row}: label {_short(label)} is a boolean, not a class number; "
                        "write the classes as 0 and 1")
    if isinstance(label, str) and not _LABEL.fullmatch(label):
        raise DataError(f"{path}: row {row}: label {_short(label)} is not a number (ASCII digits only)")
    try:
        return float(label)
    except (TypeError, ValueError, OverflowError):
        raise DataError(f"{path}: row {row}: label {_short(label)} is not a number") from None


def _check_text(text, path, row: int, column: str) -> None:
    if not isinstance(text, str):  # JSONL and Parquet keep their types: 5 or null is no sentence
        what = "no text" if text is None or text != text else f"{type(text).__name__} {_short(text)}, not text,"
        raise DataError(f"{path}: row {row}: {what} in column {column!r}")
    if not text.strip():
        raise DataError(f"{path}: row {row}: empty text in column {column!r}")
    if PAIR_SEP in text:  # the character that joins a pair's two texts (tasks.py)
        raise DataError(f"{path}: row {row}: column {column!r} holds the control character U+001F")


def clean_rows(df: pd.DataFrame, path: str | Path, cfg: DataConfig, task: Task, row_offset: int = 2) -> pd.DataFrame:
    """Check and normalise a table of any task to columns (text, label): a pair's texts joined into
    one (tasks.join_pair), a regression's score as float64."""
    if not task.pairs and not task.regression:
        return clean_labeled(df, path, cfg.text_column, cfg.label_column, cfg.num_classes, row_offset)
    columns = [cfg.text_a_column, cfg.text_b_column] if task.pairs else [cfg.text_column]
    for col in (*columns, cfg.label_column):
        if col not in df.columns:
            raise DataError(f"{path}: missing column {col!r} (columns: {', '.join(map(str, df.columns))})")
    for col in columns:
        for i, text in enumerate(df[col]):
            _check_text(text, path, i + row_offset, col)
    stripped = [df[col].astype(str).str.strip().to_numpy() for col in columns]
    texts = [join_pair(a, b) for a, b in zip(*stripped)] if task.pairs else stripped[0]
    if task.regression:
        labels = np.empty(len(df), dtype=np.float64)
        for i, label in enumerate(df[cfg.label_column]):
            try:
                labels[i] = float(label)
            except (TypeError, ValueError, OverflowError):
                raise DataError(f"{path}: row {i + row_offset}: score {_short(label)} is not a number") from None
            if not np.isfinite(labels[i]):
                raise DataError(f"{path}: row {i + row_offset}: score {_short(label)} is not a finite number")
        return pd.DataFrame({"text": texts, "label": labels})
    classes = clean_labeled(df.assign(_text="x"), path, "_text", cfg.label_column, cfg.num_classes, row_offset)
    return pd.DataFrame({"text": texts, "label": classes["label"].to_numpy()})


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def load_dataset(cfg: DataConfig) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """(train, val, source) from the configured file, or the bundled SST-5."""
    train, val, _, source = load_tables(cfg)
    return train, val, source


def load_tables(cfg: DataConfig) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None, str]:
    """(train, val, test, source): `test` is None when the file has no 'test' rows."""
    path = Path(cfg.path) if cfg.path else bundled_path(cfg.name or "sst5")
    df = read_table(path)
    row_offset = first_row(path)
    if cfg.split_column not in df.columns:
        raise DataError(f"{path}: missing column {cfg.split_column!r} (it says which rows are train and which dev)")
    split = df[cfg.split_column].astype(str).str.strip().str.lower()
    bad = ~split.isin(["train", "dev", "test"])
    if bad.any():
        pos = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"{path}: row {pos + row_offset}: split {_short(df[cfg.split_column].iloc[pos])} is not "
                        "'train', 'dev' or 'test'")
    task = cfg.as_task()
    table = clean_rows(df, path, cfg, task, row_offset)
    train = table[(split == "train").to_numpy()].reset_index(drop=True)
    val = table[(split == "dev").to_numpy()].reset_index(drop=True)
    test = table[(split == "test").to_numpy()].reset_index(drop=True)
    if len(train) == 0 or len(val) == 0:
        raise DataError(f"{path}: needs both 'train' and 'dev' rows (found {len(train)} train, {len(val)} dev)")
    classes = np.unique(train["label"])
    if len(classes) < 2:  # a classifier of one class learns nothing, and every score is constant
        what = "score" if task.regression else "label"
        raise DataError(f"{path}: the train rows hold only {what} {classes[0]}: at least 2 "
                        f"{'different scores' if task.regression else 'classes'} are needed")
    names = {"sst5": "SST-5", "sts": "STS", "quora": "Quora question pairs"}
    source = f"bundled {names[cfg.name or 'sst5']}" if not cfg.path else str(path)
    return train, val, (test if len(test) else None), source


# --------------------------------------------------------------------------- the split


def split_labeled(labels: np.ndarray, cfg: SplitConfig, task: Task | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of train positions into (labeled, unlabeled), both sorted.

    Stratified: each class (a score: each of its quintiles, `Task.strata`) contributes
    round(fraction * its count) rows to `labeled`, so the label distribution of D_labeled
    matches train's (the study's 1/5 of train).
    """
    labels = np.asarray(labels)
    task = task or Task("classify", max(2, len(np.unique(labels))))
    strata = task.strata(labels)
    rng = np.random.default_rng(cfg.seed)
    n = len(labels)
    if cfg.stratify:
        chosen = []
        for cls in np.unique(strata):
            members = np.flatnonzero(strata == cls)
            take = int(round(cfg.labeled_fraction * len(members)))
            chosen.append(rng.permutation(members)[:take])
        labeled = np.sort(np.concatenate(chosen))
    else:
        take = int(round(cfg.labeled_fraction * n))
        labeled = np.sort(rng.permutation(n)[:take])
    if len(labeled) == 0 or len(labeled) == n:
        raise DataError(f"split: labeled_fraction {cfg.labeled_fraction} leaves {len(labeled)} of {n} rows labeled")
    if len(np.unique(labels[labeled])) < 2:  # one class, or one score: nothing to learn from
        raise DataError(f"split: labeled_fraction {cfg.labeled_fraction} leaves one class in the {len(labeled)} "
                        "labeled rows: at least 2 are needed")
    unlabeled = np.setdiff1d(np.arange(n), labeled)
    return labeled.astype(np.int64), unlabeled.astype(np.int64)


def load_splits(data: DataConfig, split: SplitConfig) -> Splits:
    train, val, test, source = load_tables(data)
    labeled, unlabeled = split_labeled(train["label"].to_numpy(), split, data.as_task())
    return Splits(train=train, val=val, labeled=labeled, unlabeled=unlabeled, source=source, test=test,
                  warnings=data_warnings(train, val, test, data, source))


def data_warnings(train: pd.DataFrame, val: pd.DataFrame, test: pd.DataFrame | None, cfg: DataConfig,
                  source: str) -> list[str]:
    """What a data file may legally hold but a study should hear about, one line each:

    - classes with no row (labels with gaps, {0, 2, 4} of five): the metrics average over the
      classes present (metrics.macro_f1), and the head still has an output for each missing one;
    - val or test rows whose text is also a train row's: a leak that inflates every score.
    """
    out = []
    task = cfg.as_task()
    if not task.regression:
        present = set(np.unique(np.concatenate([train["label"].to_numpy(), val["label"].to_numpy()])).tolist())
        missing = [c for c in range(cfg.num_classes) if c not in present]
        if missing:
            out.append(f"{source}: labels with gaps: classes {', '.join(map(str, missing))} of 0..{cfg.num_classes - 1} "
                       "have no row; macro-F1 averages over the classes present (set data.num_classes to the "
                       "classes you have if the gap is a mistake)")
    if cfg.path is None:
        # The shipped sets are the study's as published (SST-5's dev repeats 2 of its train
        # texts): said once in docs/measurements.md, not on every run.
        return out
    seen = set(train["text"].str.lower())
    for name, table in (("dev", val), ("test", test)):
        if table is None:
            continue
        leaked = int(table["text"].str.lower().isin(seen).sum())
        if leaked:
            out.append(f"{source}: leak: {leaked} of {len(table)} {name} rows repeat a train row's text "
                       "(their scores measure memory, not generalisation); drop them from one side")
    return out

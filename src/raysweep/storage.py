"""Where a sweep's results live: a local directory or a storage URI, through `pyarrow.fs`.

`--output` may be a local path (as before), or `s3://bucket/prefix`, `gs://bucket/prefix` or
`file:///abs/path`: pyarrow's `FileSystem.from_uri` picks the filesystem, and everything the
sweep writes under the output (sweep.yaml, cells/, trials.csv, Tune's tune/) goes through it.
Object stores have no rename, but one PUT is atomic: a reader sees the old object or the new one,
never half of it. On a local filesystem a write goes to a temporary name and is renamed.

What stays on a node's own disk is the activation cache: trials memory-map it. For a URI output
the driver uploads each entry it computed under `<output>/cache/<key>/`, and a node downloads an
entry it lacks once, into a temporary directory renamed into place (see `fetch_dir`).
"""

from __future__ import annotations

import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow.fs as pafs

from raysweep.errors import RaysweepError

SCHEMES = ("s3://", "gs://", "gcs://", "file://", "hdfs://", "abfs://", "abfss://")


class StorageError(RaysweepError, ValueError):
    """An output location that cannot be used; the message names it."""


def is_uri(where: str | Path) -> bool:
    return isinstance(where, str) and "://" in where


@dataclass(frozen=True)
class FileEntry:
    name: str  # the base name, e.g. "3f2a....json"
    mtime: float | None  # seconds since the epoch as the filesystem reports it (S3: LastModified)


class Output:
    """A sweep's output location: relative paths (`cells/x.json`) are read and written under it."""

    def __init__(self, where: str | Path):
        text = str(where)
        if is_uri(text):
            if not text.startswith(SCHEMES):
                raise StorageError(f"output {text}: unsupported scheme (use a local path or "
                                   f"{', '.join(s for s in SCHEMES if s != 'gcs://')})")
            try:
                self.fs, path = pafs.FileSystem.from_uri(text)
            except Exception as exc:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError, ...
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise StorageError(f"output {text}: {first}") from None
            self.root = path.rstrip("/")
            if not self.root:
                raise StorageError(f"output {text}: names no bucket or directory after the scheme")
            self.spec = text  # what recreates this Output elsewhere (a Ray worker), query options included
            # Printed as given minus any keys (s3://KEY:SECRET@bucket) and query options (?endpoint_override=...)
            parts = urlsplit(text)
            self.uri = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}".rstrip("/")
        else:
            self.fs = pafs.LocalFileSystem()
            self.root = str(Path(text).resolve())
            self.uri = self.spec = self.root
        self.is_local = isinstance(self.fs, pafs.LocalFileSystem)
        # A URI (file:// included): results go through pyarrow.fs, and the activation cache stays on
        # each node's own disk, shared through <output>/cache/ (see sweep.run_sweep).
        self.is_uri = is_uri(text)

    def __str__(self) -> str:
        return self.uri

    @property
    def local_dir(self) -> Path | None:
        """The directory itself when it is on this machine's filesystem (a local path or file://)."""
        return Path(self.root) if self.is_local else None

    def path(self, rel: str = "") -> str:
        """The filesystem path (no scheme) of `rel` under the output."""
        return f"{self.root}/{rel}" if rel else self.root

    def show(self, rel: str = "") -> str:
        """`rel` as a user should read it: a local path, or the URI."""
        return f"{self.uri}/{rel}" if rel else self.uri

    # ------------------------------------------------------------------ files

    def mkdir(self, rel: str = "") -> None:
        self.fs.create_dir(self.path(rel), recursive=True)

    def write_bytes(self, rel: str, data: bytes) -> None:
        final = self.path(rel)
        if not self.is_local:
            with self.fs.open_output_stream(final) as f:  # one PUT: atomic for readers
                f.write(data)
            return
        # Local: write beside the final name, then rename, so a killed process never leaves half a file.
        tmp = f"{final}.tmp-{os.getpid()}"
        with self.fs.open_output_stream(tmp) as f:
            f.write(data)
        self.fs.move(tmp, final)

    def write_text(self, rel: str, text: str) -> None:
        self.write_bytes(rel, text.encode("utf-8"))

    def read_text(self, rel: str) -> str | None:
        """The file's text, or None if there is no such file."""
        try:
            with self.fs.open_input_stream(self.path(rel)) as f:
                return f.read().decode("utf-8")
        except FileNotFoundError:
            return None

    def exists(self, rel: str) -> bool:
        return self.fs.get_file_info(self.path(rel)).type != pafs.FileType.NotFound

    def delete(self, rel: str) -> None:
        try:
            self.fs.delete_file(self.path(rel))
        except FileNotFoundError:
            pass

    def list(self, rel_dir: str, suffix: str = "") -> list[FileEntry]:
        """The files directly in `rel_dir` whose names end with `suffix`, sorted by name."""
        selector = pafs.FileSelector(self.path(rel_dir), allow_not_found=True)
        out = []
        for info in self.fs.get_file_info(selector):
            if info.type == pafs.FileType.File and info.base_name.endswith(suffix):
                mtime = info.mtime.timestamp() if info.mtime is not None else None
                out.append(FileEntry(info.base_name, mtime))
        return sorted(out, key=lambda e: e.name)

    def fetch_results(self, local: Path) -> Path:
        """Copy what `raysweep analyze` reads (analysis/results.py) into the local directory `local`:
        trials.csv, sweep.yaml, generation/, diagnostics/ and chosen/; not cells/, tune/ or the cache."""
        local.mkdir(parents=True, exist_ok=True)
        for name in ("trials.csv", "sweep.yaml"):
            text = self.read_text(name)
            if text is not None:
                (local / name).write_text(text)
        for folder in ("generation", "diagnostics", "chosen"):
            self.fetch_tree(folder, local / folder, marker=None)
        return local

    # ------------------------------------------------------------------ directories (the cache)

    def _remote_files(self, rel_dir: str) -> set[str]:
        """Paths (relative to `rel_dir`) of every file under `rel_dir`, recursively."""
        base = self.path(rel_dir)
        infos = self.fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        return {i.path[len(base) + 1:] for i in infos if i.type == pafs.FileType.File}

    def upload_tree(self, local: Path, rel: str, skip_existing: bool = True) -> int:
        """Copy the files under the local directory `local` to `rel`; returns how many were copied.

        With `skip_existing`, files already there are left alone (cache entries are content-addressed,
        so a file of the same name has the same bytes). A `meta.json` goes after the other files of
        its directory, so a reader who finds it finds the rest."""
        have = self._remote_files(rel) if skip_existing else set()
        files = [p for p in local.rglob("*") if p.is_file() and not p.name.startswith(".")]
        files.sort(key=lambda p: (p.name == "meta.json", str(p)))
        copied = 0
        for p in files:
            name = p.relative_to(local).as_posix()
            if name in have:
                continue
            target = self.path(f"{rel}/{name}")
            self.fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
            with open(p, "rb") as src, self.fs.open_output_stream(target) as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            copied += 1
        return copied

    def fetch_tree(self, rel: str, local: Path, marker: str | None = "meta.json") -> bool:
        """Download `rel` into the local directory `local` unless `local/marker` exists; True if downloaded.

        Into a temporary sibling first, renamed into place: several trials of one node may ask at
        once, and whichever renames first wins (the entries are content-addressed, so identical).
        `marker=None` merges: every file missing locally is fetched, each renamed into place."""
        if marker is not None and (local / marker).exists():
            return False
        names = self._remote_files(rel)
        if marker is not None and marker not in names:
            raise StorageError(f"{self.show(rel)}: no such cache entry (was the driver's upload interrupted?)")
        if marker is None:
            names = {n for n in names if not (local / n).exists()}
            if not names:
                return False
        tmp = local.parent / f".{local.name}.fetch-{os.getpid()}-{threading.get_ident()}"
        shutil.rmtree(tmp, ignore_errors=True)
        for name in sorted(names):
            dest = tmp / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            with self.fs.open_input_stream(self.path(f"{rel}/{name}")) as src, open(dest, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        if marker is None:  # merge file by file into an existing directory
            for name in sorted(names):
                (local / name).parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp / name, local / name)
            shutil.rmtree(tmp, ignore_errors=True)
            return True
        try:
            os.rename(tmp, local)
        except OSError:  # another trial on this node was first
            shutil.rmtree(tmp, ignore_errors=True)
        return True

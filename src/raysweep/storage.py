"""Where a sweep's results live: a local directory or a storage URI, through `pyarrow.fs`.

`--output` may be a local path (as before), or `s3://bucket/prefix`, `gs://bucket/prefix` or
`file:///abs/path`: pyarrow's `FileSystem.from_uri` picks the filesystem, and everything the
sweep writes under the output (sweep.yaml, cells/, trials.csv, Tune's tune/) goes through it.
Object stores have no rename, but one PUT is atomic: a reader sees the old object or the new one,
never half of it. On a local filesystem a write goes to a temporary name and is renamed.

What stays on a node's own disk is the activation cache: trials memory-map it. For a URI output
the driver uploads each entry it computed under `<output>/cache/<key>/`, and a node downloads an
entry it lacks once, into a temporary directory renamed into place (see `fetch_tree`), under a
per-node lock so that two trials of one node do not download it twice (`fetch_entry`).

Remote tasks and actors (scoring models, the teacher, the pool scorer) get their entries the same
way or, when an entry is small, through Ray's object store (`ship` on the driver, `receive` on
the node): see docs/cluster.md.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

import pyarrow.fs as pafs
from filelock import FileLock

from raysweep.deadline import within
from raysweep.errors import RaysweepError, first_line

# Seconds a store may take to resolve credentials and region, or to answer the first request.
STORE_DEADLINE_S = 30.0
SCHEMES = ("s3://", "gs://", "gcs://", "file://", "hdfs://", "abfs://", "abfss://")


class StorageError(RaysweepError, ValueError):
    """An output location that cannot be used; the message names it."""


def atomic_write(path: Path, write) -> None:
    """Call `write(tmp)` on a temporary name beside `path`, then rename it to `path`.

    A crash or a concurrent writer never leaves a half entry under a cache key (two writers
    produce identical files, so either may win)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    write(tmp)
    os.replace(tmp, path)


def is_uri(where: str | Path) -> bool:
    return isinstance(where, str) and "://" in where


# ------------------------------------------------------------------ secrets in a URI

# A URI may carry credentials: user-info (s3://KEY:SECRET@bucket) or a query option such as
# ?session_token=... . The user-info is everything between the scheme and the last "@" before
# the query: an AWS secret may hold "/" or "+", and a too-wide match only hides a path's "@".
_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^?#]*)@")
_SECRET_OPTION = re.compile(r"key|secret|token|pass|credential|sas|signature|auth", re.IGNORECASE)


def uri_secrets(uri: str) -> list[str]:
    """The credential strings in `uri`, longest first, each as written and percent-decoded."""
    found = []
    m = _USERINFO.match(uri)
    if m:
        userinfo = m["userinfo"]
        found += [userinfo, *userinfo.split(":", 1)]
    try:
        query = urlsplit(uri).query
    except ValueError:  # e.g. an unbalanced "[" in the host: no query options to look at
        query = ""
    found += [v for k, v in parse_qsl(query, keep_blank_values=True) if _SECRET_OPTION.search(k)]
    words = {w for s in found if s for w in (s, unquote(s))}
    return sorted(words, key=len, reverse=True)


# Not AWS_SECRET_ACCESS_KEY in the environment: Ray Tune copies it into the runtime_envs it logs.
CREDENTIAL_CHAIN = ("use the provider's own credentials instead: ~/.aws/credentials (AWS_PROFILE picks a "
                    "profile), an instance profile, or GOOGLE_APPLICATION_CREDENTIALS (docs/cluster.md#secrets)")


def refuse_credentials(value: str, label: str, why: str) -> None:
    """A StorageError when `value` is a URI holding credentials, which `why` would record in clear."""
    if "://" in value and uri_secrets(value):
        raise StorageError(f"{label} {redact(value)}: holds credentials, which {why}; {CREDENTIAL_CHAIN}")


def redact(uri: str) -> str:
    """`uri` as it may be printed: user-info and secret-looking query values replaced by ***."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}***@", uri)
    return scrub(text, uri)


def scrub(message: str, uri: str) -> str:
    """`message` (an error text, say) with every credential of `uri` replaced by *** where it
    stands as a value: a user `name` in gs://name@bucket must not turn "filename" into "file***"."""
    from raysweep.errors import mask_values

    return mask_values(message, uri_secrets(uri))



def _one_line_errors(verb: str):
    """Method decorator: an OSError from the filesystem (a region that cannot be resolved, an
    endpoint that does not answer, access denied, a full disk) becomes one StorageError line naming
    the output without its credentials, instead of a traceback."""
    def wrap(method):
        @functools.wraps(method)
        def call(self, *args, **kwargs):
            try:
                return method(self, *args, **kwargs)
            except OSError as exc:
                what = f" {args[0]}" if args and isinstance(args[0], str) and args[0] else ""
                raise StorageError(f"output {self.uri}: cannot {verb}{what} "
                                   f"({scrub(first_line(exc), self.spec)})") from None
        return call
    return wrap


@dataclass(frozen=True)
class FileEntry:
    name: str  # the base name, e.g. "3f2a....json"
    mtime: float | None  # seconds since the epoch as the filesystem reports it (S3: LastModified)


class Output:
    """A sweep's output location: relative paths (`cells/x.json`) are read and written under it."""

    def __init__(self, where: str | Path):
        text = str(where)
        if is_uri(text):
            shown = redact(text)  # never the raw text in a message: it may hold KEY:SECRET@
            if not text.startswith(SCHEMES):
                raise StorageError(f"output {shown}: unsupported scheme (use a local path or "
                                   f"{', '.join(s for s in SCHEMES if s != 'gcs://')})")
            try:
                # Without ?region=, pyarrow asks AWS for the bucket's region here: no network, a
                # typo in the bucket or a denied HeadBucket fail now, as OSError.
                # Bounded: without network, resolving gs:// credentials waited minutes in silence.
                self.fs, path = within(STORE_DEADLINE_S, f"output {shown}: the store's credentials and region",
                                       lambda: pafs.FileSystem.from_uri(text), error=StorageError)
            except StorageError:
                raise
            except Exception as exc:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError, ...
                raise StorageError(f"output {shown}: {scrub(first_line(exc), text)}") from None
            self.root = path.rstrip("/")
            if not self.root:
                raise StorageError(f"output {shown}: names no bucket or directory after the scheme")
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

    @_one_line_errors("create directory")
    def mkdir(self, rel: str = "") -> None:
        self.fs.create_dir(self.path(rel), recursive=True)

    @_one_line_errors("write")
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

    @_one_line_errors("read")
    def read_text(self, rel: str) -> str | None:
        """The file's text, or None if there is no such file."""
        try:
            with self.fs.open_input_stream(self.path(rel)) as f:
                return f.read().decode("utf-8")
        except FileNotFoundError:
            return None

    @_one_line_errors("read")
    def read_bytes(self, rel: str) -> bytes | None:
        """The file's bytes, or None if there is no such file."""
        try:
            with self.fs.open_input_stream(self.path(rel)) as f:
                return f.read()
        except FileNotFoundError:
            return None

    @_one_line_errors("look up")
    def exists(self, rel: str) -> bool:
        return self.fs.get_file_info(self.path(rel)).type != pafs.FileType.NotFound

    @_one_line_errors("delete")
    def delete(self, rel: str) -> None:
        try:
            self.fs.delete_file(self.path(rel))
        except FileNotFoundError:
            pass

    @_one_line_errors("list")
    def list(self, rel_dir: str, suffix: str = "") -> list[FileEntry]:
        """The files directly in `rel_dir` whose names end with `suffix`, sorted by name."""
        selector = pafs.FileSelector(self.path(rel_dir), allow_not_found=True)
        out = []
        for info in self.fs.get_file_info(selector):
            if info.type == pafs.FileType.File and info.base_name.endswith(suffix):
                mtime = info.mtime.timestamp() if info.mtime is not None else None
                out.append(FileEntry(info.base_name, mtime))
        return sorted(out, key=lambda e: e.name)

    @_one_line_errors("copy results from")
    def fetch_results(self, local: Path) -> Path:
        """Copy what `raysweep analyze` reads (analysis/results.py) into the local directory `local`:
        trials.csv, sweep.yaml, generation/, diagnostics/, chosen/ and the annotator's labels and
        summary (not its reply store), predictions/; not cells/, tune/ or the cache."""
        local.mkdir(parents=True, exist_ok=True)
        for name in ("trials.csv", "sweep.yaml", "annotation/labels.csv", "annotation/annotation.json"):
            text = self.read_text(name)
            if text is not None:
                (local / name).parent.mkdir(exist_ok=True)
                (local / name).write_text(text)
        for folder in ("generation", "diagnostics", "chosen", "predictions"):
            self.fetch_tree(folder, local / folder, marker=None)
        return local

    # ------------------------------------------------------------------ directories (the cache)

    def _remote_files(self, rel_dir: str) -> set[str]:
        """Paths (relative to `rel_dir`) of every file under `rel_dir`, recursively."""
        base = self.path(rel_dir)
        infos = self.fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        return {i.path[len(base) + 1:] for i in infos if i.type == pafs.FileType.File}

    @_one_line_errors("upload to")
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

    @_one_line_errors("download")
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


# --------------------------------------------------------------------------- cache entries on other nodes

# An entry up to this size travels to a remote task through Ray's object store, a larger one
# through the output's storage. Token states of a whole split are hundreds of MB (SST-5 train,
# MiniLM: ~330 MB), more than the object store of a small node holds, while a pooled entry
# (SST-5 train, MiniLM: 13 MB) is cheaper to put once than to upload, list and download.
OBJECT_STORE_MAX_BYTES = 64 * 1024**2


def node_lock(path: Path) -> FileLock:
    """A lock beside `path` on this node's disk: one process of the node fetches it, the others
    wait and then find it there (dot-named, so never uploaded with a cache entry)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path.parent / f".{path.name}.lock"))


def fetch_entry(out: Output, path: Path) -> bool:
    """Download the cache entry `<output>/cache/<name>/` into `path` once per node; True if
    this call downloaded it."""
    if (path / "meta.json").exists():  # a local stat once the entry is here
        return False
    with node_lock(path):
        return out.fetch_tree(f"cache/{path.name}", path)


@dataclass(frozen=True)
class Shipped:
    """How one cache entry reaches a remote task: `path` is where the driver has it and where a
    node puts it; the bytes come from `files` (an object store ref) or `uri`'s cache/, else the
    node must see `path` itself (one node, or a filesystem every node mounts)."""

    path: str
    uri: str | None = None
    files: object = None  # ray.ObjectRef of {relative name: bytes}


def ship(entry: Path, out: Output | None = None) -> Shipped:
    """On the driver: make the complete cache entry `entry` reachable from any node."""
    files = [p for p in entry.rglob("*") if p.is_file() and not p.name.startswith(".")]
    if sum(p.stat().st_size for p in files) <= OBJECT_STORE_MAX_BYTES:
        import ray

        return Shipped(str(entry), files=ray.put({p.relative_to(entry).as_posix(): p.read_bytes() for p in files}))
    if out is not None and out.is_uri:
        out.upload_tree(entry, f"cache/{entry.name}")  # content-addressed: a no-op when published already
        return Shipped(str(entry), uri=out.spec)
    return Shipped(str(entry))


def receive(shipped: Shipped) -> Path:
    """On the node a task runs on: the shipped entry on this node's disk, put there once per node."""
    path = Path(shipped.path)
    if (path / "meta.json").exists():
        return path
    if shipped.files is None and shipped.uri is None:
        raise StorageError(f"{path}: no such cache entry on node {socket.gethostname()}: the nodes do not share "
                           "this disk, so give --output a storage URI (s3://..., gs://...) that every node reaches")
    if shipped.uri is not None:
        fetch_entry(Output(shipped.uri), path)
        return path
    import ray

    with node_lock(path):
        if not (path / "meta.json").exists():
            tmp = path.parent / f".{path.name}.recv-{os.getpid()}-{threading.get_ident()}"
            shutil.rmtree(tmp, ignore_errors=True)
            for name, data in sorted(ray.get(shipped.files).items(), key=lambda kv: kv[0] == "meta.json"):
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                (tmp / name).write_bytes(data)
            os.rename(tmp, path)
    return path


# --------------------------------------------------------------------------- an output safe to write

# The first line of every sweep.yaml a run writes: a sweep.yaml without it (and not in the plain
# form earlier versions wrote) is someone's own file, which a run must not replace.
SWEEP_MARKER = "# raysweep: the resolved sweep of this output, every default filled in; written by `raysweep run`"
# A trials.csv raysweep wrote starts with this column; a data file named trials.csv does not.
TRIALS_MARKER = "cell_id,"
# Kernel file systems: writable-looking for root, and nothing written there is a file.
_KERNEL_DIRS = ("/proc", "/sys", "/dev")
NAME_MAX = 255  # bytes in one path component on every file system a run writes to


def check_output_dir(output: str, inputs: dict[str, str | Path] | None = None) -> Path:
    """The local output directory `output` when a run can write it, or one StorageError line:
    empty, a NUL byte, a component too long, under a file, on a kernel file system, not writable,
    or holding one of the run's own `inputs` ({what: path}: the sweep file, the data file), which
    the run would overwrite or read back as results."""
    if not str(output).strip():
        raise StorageError("output '': empty; give a directory (or a storage URI)")
    if "\0" in str(output):
        raise StorageError(f"output {str(output)!r}: holds a NUL byte")
    for part in Path(output).parts:
        if len(part.encode("utf-8", "surrogateescape")) > NAME_MAX:
            raise StorageError(f"output {_short(str(output))}: the name {_short(part)} is "
                               f"{len(part.encode('utf-8', 'surrogateescape'))} bytes, more than a file system's "
                               f"{NAME_MAX}")
    path = Path(output).expanduser().resolve()
    if any(path == Path(k) or Path(k) in path.parents for k in _KERNEL_DIRS):
        raise StorageError(f"output {path}: under {next(k for k in _KERNEL_DIRS if path.as_posix().startswith(k))}, "
                           "a kernel file system, not a place for results")
    for what, given in (inputs or {}).items():
        where = Path(given).expanduser().resolve()
        if where == path or path in where.parents:
            raise StorageError(f"output {path}: holds the run's own {what} ({given}), which a run would overwrite "
                               "or mix with its results; give an --output directory of its own")
    existing = next(p for p in (path, *path.parents) if os.path.lexists(p))
    if not existing.is_dir():
        raise StorageError(f"output {path}: {existing} is {'a file' if existing.is_file() else 'not a directory'}, "
                           "so no directory can be made under it")
    # Asked, not tried: nothing is created before the preflight has passed (access() also says
    # EROFS for a read-only mount; root passes any mode, as it would write there).
    if not os.access(existing, os.W_OK | os.X_OK):
        raise StorageError(f"output {path}: not writable ({existing} does not let this user create files)")
    return path


def probe_store(output: str | Output) -> Output:
    """The output, asked for its sweep.yaml within STORE_DEADLINE_S: a store that cannot be
    reached, or denies access, is one StorageError line instead of a silent wait."""
    out = output if isinstance(output, Output) else Output(output)
    within(STORE_DEADLINE_S, f"output {out.uri}", lambda: out.exists("sweep.yaml"), error=StorageError)
    return out


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def refuse_foreign_files(out: Output) -> None:
    """One StorageError line if the output holds a sweep.yaml or trials.csv that raysweep did not
    write: a run replaces both, and must never replace a file it cannot prove is its own."""
    sweep = out.read_text("sweep.yaml")
    if sweep is not None and not sweep_yaml_is_ours(sweep):
        raise StorageError(f"output {out.show('sweep.yaml')}: not written by raysweep (no marker line), and a run "
                           "would replace it; move it away or give another --output")
    trials = out.read_text("trials.csv")
    if trials is not None and trials.strip() and not trials.startswith(TRIALS_MARKER):
        raise StorageError(f"output {out.show('trials.csv')}: not a raysweep results table (its first column is not "
                           "cell_id), and a run would replace it; move it away or give another --output")


def sweep_yaml_is_ours(text: str) -> bool:
    """Whether a sweep.yaml is one a run wrote: the marker line, or (outputs of earlier versions)
    exactly the plain dump of its own value, which no hand-written file with a comment is."""
    if text.startswith(SWEEP_MARKER):
        return True
    import yaml

    try:
        value = yaml.safe_load(text)
        return isinstance(value, dict) and yaml.safe_dump(value, sort_keys=False) == text
    except yaml.YAMLError:
        return False


class OutputLock:
    """One run at a time per local output: a lock file in it, held while the run writes.

    A second run into the same output refuses at once, naming who holds it, rather than train
    every cell a second time beside the first. The lock is the OS's (filelock): a run that dies
    holds it no more. A storage URI has no lock a filesystem could give (`held` says so)."""

    NAME = ".raysweep.lock"

    def __init__(self, out: Output):
        self.out = out
        self.lock = None
        self.held = out.local_dir is not None

    def __enter__(self) -> OutputLock:
        if not self.held:
            return self
        from filelock import Timeout

        base = self.out.local_dir
        base.mkdir(parents=True, exist_ok=True)
        self.lock = FileLock(str(base / self.NAME))
        try:
            self.lock.acquire(timeout=0)
        except Timeout:
            who = (base / f"{self.NAME}.who").read_text().strip() if (base / f"{self.NAME}.who").is_file() else "?"
            raise StorageError(f"output {base}: another run is writing it ({who}); refusing rather than run its "
                               "cells twice: wait for it, or give another --output") from None
        (base / f"{self.NAME}.who").write_text(f"pid {os.getpid()} on {socket.gethostname()} since "
                                               f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        return self

    def __exit__(self, *exc) -> None:
        if self.lock is not None:
            self.lock.release()

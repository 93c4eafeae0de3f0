"""What a person sees while raysweep runs: one line per stage, a progress bar for long stages,
and a log file that holds everything else.

A sweep's driver prints a great deal that is not meant for a person: Ray Data's periodic
progress log, a "Loading weights" bar from every encoder actor, Tune's trial tables, Ray's own
C++ log lines. While a `Session` is open, the process's stdout and stderr (the file descriptors,
so that C++ code, subprocesses and Ray's forwarded worker output are caught too) go to a pipe;
a thread copies every line of it to the log file and shows on the terminal only:

- default: the stage lines (`Session.line`), progress bars, and unexpected warnings and errors
  (expected, harmless ones are in `HARMLESS`);
- `verbose`: the full stream as well;
- `quiet`: nothing; the command prints its errors and final summary after the session.

Off a terminal (a Ray job's log, CI) a bar is a plain line now and then (PLAIN_EVERY_S,
PLAIN_STEP) instead of a redrawn one. Values of secret-looking environment variables are replaced by *** before a
line reaches the file or the terminal. Library code asks for a bar with `progress(...)`; without
an open session (tests, a notebook) it gets one that does nothing.
"""

from __future__ import annotations

import logging
import os
import re
import select
import sys
import threading
import time
from pathlib import Path

QUIET, DEFAULT, VERBOSE = 0, 1, 2
# Off a terminal a bar is a plain line at most every PLAIN_EVERY_S and only after PLAIN_STEP more
# of the stage is done: at most ~10 lines per stage however slow the machine (a Ray job's log
# from a loaded cluster stays short).
PLAIN_EVERY_S = 30.0
PLAIN_STEP = 0.1

# A line on the captured stream is shown on the terminal (at default verbosity) if it looks like
# a warning or an error: Python's and Ray's log levels, a Python warning or traceback, or one of
# Ray's C++ log lines at level W, E or F ("[2026-11-27 12:00:00,123 E 123 456] file.cc:1: ...").
_ALARMING = re.compile(r"\b(WARNING|WARN|ERROR|CRITICAL|FATAL)\b|\w+(Warning|Error):|^Traceback|"
                       r"^\[[\d\- :,]+ [WEF] \d+ \d+\]")
# ... unless it is one of these, seen in every healthy run and harmless.
HARMLESS = (
    # Ray's core worker, each time an actor is created with large constructor arguments (the
    # encoder's config, a scoring model's weights): Ray puts them in the object store, as it should.
    "constructor arguments in the object store",
    # A local ray.init() in 2.60 turns token authentication on and says so; a purely local run
    # serves nobody else (on a cluster the line is shown: _CLUSTER_NOTES).
    "Token authentication is enabled",
    # Tune without its per-trial CSV/JSON loggers (sweep.py turns them off: cells/ holds results).
    "No trial data", "Could not find result.json",
)
# Shown when the run joins a cluster (--address): which auth the cluster uses matters there.
_CLUSTER_NOTES = ("Token authentication is enabled",)
_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL", re.I)

_session: Session | None = None


def _secrets() -> list[str]:
    """Values of the environment's secret-looking variables (API keys, cloud credentials)."""
    return sorted({v for k, v in os.environ.items() if _SECRET_NAME.search(k) and len(v) >= 8}, key=len, reverse=True)


def redact(text: str, secrets: list[str]) -> str:
    for s in secrets:
        text = text.replace(s, "***")
    return text


def alarming(line: str, local: bool = True) -> bool:
    """Whether a captured line is a warning or error a person should see."""
    if not local and any(note in line for note in _CLUSTER_NOTES):
        return True
    return bool(_ALARMING.search(line)) and not any(h in line for h in HARMLESS)


class Session:
    """Capture this process's output into `log_path` and keep the terminal for people (see above).

    `local`: the run uses a local Ray (no --address), so local-only harmless lines are hidden.
    """

    def __init__(self, log_path: str | Path, verbosity: int = DEFAULT, local: bool = True):
        self.log_path = Path(log_path)
        self.verbosity, self.local = verbosity, local
        self.lock = threading.RLock()
        self.bars: list[_Bar] = []
        self.secrets = _secrets()

    # ------------------------------------------------------------------ open and close

    def __enter__(self) -> Session:
        global _session
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)  # may hold paths, not secrets
        self.log = os.fdopen(fd, "w", encoding="utf-8", buffering=1)
        # The terminal: the real stdout when it is file descriptor 1 (a dup, kept past the
        # redirect), else whatever object stands in for it (click's test runner).
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            real = sys.stdout.fileno() == 1
        except (AttributeError, OSError, ValueError):
            real = False
        self.term = os.fdopen(os.dup(1), "w", buffering=1) if real else sys.stdout
        self.tty = bool(getattr(self.term, "isatty", lambda: False)())
        self.saved = (os.dup(1), os.dup(2), sys.stdout, sys.stderr)
        self.read_fd, write_fd = os.pipe()
        os.dup2(write_fd, 1)
        os.dup2(write_fd, 2)
        os.close(write_fd)
        sys.stdout = os.fdopen(os.dup(1), "w", buffering=1)
        sys.stderr = os.fdopen(os.dup(2), "w", buffering=1)
        self.stop = threading.Event()
        self.pump = threading.Thread(target=self._pump, name="raysweep-log", daemon=True)
        self.pump.start()
        self.handler = logging.StreamHandler(sys.stderr)
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger("raysweep").addHandler(self.handler)
        logging.getLogger("raysweep").setLevel(logging.INFO)
        _session = self
        return self

    def __exit__(self, *exc) -> None:
        global _session
        for bar in list(self.bars):
            bar.close()
        logging.getLogger("raysweep").removeHandler(self.handler)
        sys.stdout.flush()
        sys.stderr.flush()
        out_fd, err_fd, sys.stdout, sys.stderr = self.saved
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        os.close(out_fd)
        os.close(err_fd)
        # Processes started during the session (Ray's, a llama.cpp server) may still hold the
        # pipe open, so its end never comes: drain what is there, then stop.
        self.stop.set()
        self.pump.join(timeout=5)
        os.close(self.read_fd)
        if self.term is not self.saved[2]:
            self.term.close()
        self.log.close()
        _session = None

    # ------------------------------------------------------------------ lines

    def line(self, message: str) -> None:
        """A stage line: in the log file always, on the terminal unless quiet."""
        message = redact(str(message), self.secrets)
        with self.lock:
            self.log.write(f"{time.strftime('%H:%M:%S')} raysweep: {message}\n")
            if self.verbosity >= DEFAULT:
                self._show(message)

    def to_log(self, text: str) -> None:
        """Text for the log file only (a bug's traceback: the terminal gets a pointer to it)."""
        with self.lock:
            self.log.write(redact(text, self.secrets).rstrip("\n") + "\n")

    def _show(self, text: str) -> None:
        # Above any live bar: clear it, write, redraw (tqdm does this for bars on this file).
        if self.tty and any(b.tqdm is not None for b in self.bars):
            from tqdm import tqdm

            tqdm.write(text, file=self.term)
        else:
            self.term.write(text + "\n")
            self.term.flush()

    def _pump(self) -> None:
        pending = b""
        while True:
            ready, _, _ = select.select([self.read_fd], [], [], 0.1)
            if not ready:
                if self.stop.is_set():
                    break
                continue
            chunk = os.read(self.read_fd, 65536)
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                self._captured(raw.decode("utf-8", "replace"))
        if pending:
            self._captured(pending.decode("utf-8", "replace"))

    def _captured(self, text: str) -> None:
        # A redrawn bar is one line of \r-separated states: its last state is what it says.
        text = redact(text.rstrip("\r").rsplit("\r", 1)[-1], self.secrets)
        with self.lock:
            self.log.write(text + "\n")
            if self.verbosity >= VERBOSE or (self.verbosity == DEFAULT and alarming(text, self.local)):
                self._show(text)


# ---------------------------------------------------------------------- progress


class _Bar:
    def __init__(self, session: Session | None, total: int, what: str, unit: str):
        self.session, self.total, self.what, self.unit = session, total, what, unit
        self.done, self.start, self.last, self.shown = 0, time.monotonic(), time.monotonic(), 0.0
        self.detail = ""  # what else the stage has done so far (set_detail), shown after the count
        self.tqdm = None
        if session is None or session.verbosity == QUIET:
            self.session = None
            return
        with session.lock:
            session.bars.append(self)
            if session.tty:
                from tqdm import tqdm

                self.tqdm = tqdm(total=total, desc=what, unit=unit, file=session.term, leave=False,
                                 dynamic_ncols=True, mininterval=0.5)

    def update(self, n: int = 1) -> None:
        if self.session is None:
            return
        with self.session.lock:
            self.done += n
            if self.tqdm is not None:
                self.tqdm.update(n)
            elif (time.monotonic() - self.last >= PLAIN_EVERY_S and self.done < self.total
                  and self.done / self.total - self.shown >= PLAIN_STEP):
                self.last, self.shown = time.monotonic(), self.done / self.total
                self.session.line(f"{self.what}: {self.done:,} of {self.total:,} {self.unit} "
                                  f"({self.done / max(self.total, 1):.0%}, {self.last - self.start:.0f} s)"
                                  + (f"; {self.detail}" if self.detail else ""))

    def set_detail(self, text: str) -> None:
        """More than the count (an LLM run: rows kept, tokens, dollars): after the bar, or in its plain line."""
        if self.session is None:
            return
        with self.session.lock:
            self.detail = text
            if self.tqdm is not None:
                self.tqdm.set_postfix_str(text, refresh=False)

    def close(self) -> None:
        if self.session is None:
            return
        with self.session.lock:
            if self.tqdm is not None:
                self.tqdm.close()
            if self in self.session.bars:
                self.session.bars.remove(self)
        self.session = None

    def __getstate__(self) -> dict:
        # Tune pickles its callbacks (the trials' bar among them) into the experiment's snapshot:
        # the copy draws nothing; the driver keeps using this object.
        return {**self.__dict__, "session": None, "tqdm": None}

    def __enter__(self) -> _Bar:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress(total: int, what: str, unit: str = "rows") -> _Bar:
    """A progress bar for a long stage (use as a context manager); does nothing without a session."""
    return _Bar(_session, total, what, unit)


def line(message: str) -> None:
    """A stage line through the open session, else printed (the library's default `log`)."""
    if _session is not None:
        _session.line(message)
    else:
        print(message)


# ---------------------------------------------------------------------- the closing summary

# Plain words for trials.csv's columns in the closing summary.
_HEADERS = {"encoder": "encoder", "pooling": "pooling", "pool": "pool", "strategy": "strategy", "freeze": "freeze mode"}


def summary_table(ok, keys: list[str], metric: str, metric_words: str) -> list[str]:
    """The lines a run ends with: per compared setting that varies (`keys`) and fraction, the mean
    of `metric` over seeds, its spread (the standard deviation over seeds; "one seed" where there
    is one, never NaN) and the seeds; as an aligned table of plain words, numbers to the right.

    `ok`: trials.csv's finished cells (a DataFrame with `keys`, fraction, n_added, seed, `metric`)."""
    rows = [[*(_HEADERS.get(k, k) for k in keys), "rows added", metric_words, "spread over seeds", "seeds"]]
    for group, cells in ok.groupby([*keys, "fraction"], sort=True):
        *names, fraction = group if isinstance(group, tuple) else (group,)
        values = cells[metric].dropna()
        seeds = cells["seed"].nunique()
        added = int(round(cells["n_added"].mean())) if "n_added" in cells and cells["n_added"].notna().any() else None
        rows.append([*map(str, names),
                     "none" if fraction == 0 else (f"{added:,} " if added is not None else "")
                     + f"({fraction:g} x labeled)",
                     f"{values.mean():.4f}" if len(values) else "no value",
                     "one seed" if seeds == 1 else f"{values.std():.4f}" if len(values) > 1 else "no value",
                     str(seeds)])
    numeric = {len(keys) + 1, len(keys) + 2, len(keys) + 3}  # right-aligned: mean, spread, seeds
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.rjust(w) if i in numeric else cell.ljust(w)
                      for i, (cell, w) in enumerate(zip(r, widths))).rstrip() for r in rows]

"""The hostile shapes of issue 32, as a table: each builds its inputs in a scratch directory and
names the command that must refuse them.

Shared by tests/test_hostile_cli.py (each shape: one line, a non-zero exit, no traceback, no input
changed) and benchmarks/hostile_shapes.py (each shape's time to fail, for docs/measurements.md).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

HEADER = "split,text,label\n"
SWEEP = """name: h
compare: {pool: [real], strategy: [random], fraction: [0], freeze: [last-linear]}
replicate: {seed: [0]}
encoder: {name: minilm, pooling: pooler, max_length: 16}
recipe: {epochs: 1}
"""


def small_csv(labels=(0, 1, 2, 3, 4), rows=50) -> str:
    lines = [HEADER]
    for i in range(rows):
        lines.append(f"train,sentence number {i} is here,{labels[i % len(labels)]}\n")
    for i in range(4):
        lines.append(f"dev,another dev line {i},{labels[i % len(labels)]}\n")
    return "".join(lines)


@dataclass
class Shape:
    name: str
    build: Callable[[Path], list[str]]  # scratch dir -> the CLI's arguments (after `raysweep`)
    expect: str  # a word the one error line must hold
    deadline: float = 10.0  # seconds: 10 for local inputs, a network shape's own deadline
    local: bool = True  # False: fails by a network deadline (not run in the fast tests)
    warns: bool = False  # legal data that is likely wrong: a warning line, exit 0
    as_root: bool = True  # False: the shape cannot be made as root (permission bits do not bind root)


def _sweep(d: Path, extra: str = "", data: str | None = "data.csv", body: str = SWEEP) -> Path:
    text = body + (f"data: {{path: {data}}}\n" if data else "") + extra
    (d / "sweep.yaml").write_text(text)
    return d / "sweep.yaml"


def _data(d: Path, text: str | None = None, name: str = "data.csv") -> Path:
    (d / name).write_text(text if text is not None else small_csv())
    return d / name


def _fifo(d: Path, name: str) -> Path:
    path = d / name
    os.mkfifo(path)
    return path


def _sparse(d: Path, name: str, header: bool) -> Path:
    path = d / name
    with open(path, "wb") as fh:
        if header:
            fh.write(HEADER.encode())
        fh.truncate(1 << 30)
    return path


def _in_output(d: Path) -> list[str]:
    out = d / "out"
    out.mkdir()
    _data(out, name="trials.csv")
    _sweep(out, data=str(out / "trials.csv"))
    return ["run", str(out / "sweep.yaml"), "-o", str(out)]


def _fifo_sweep(d: Path) -> list[str]:
    _fifo(d, "sweep.yaml")
    return ["check", str(d / "sweep.yaml")]


def _project_fifo(d: Path) -> list[str]:
    proj = d / "proj"
    proj.mkdir()
    _fifo(proj, "unlabeled.csv")
    return ["select", "--project", str(proj)]


def _long_name(d: Path) -> list[str]:
    _data(d)
    _sweep(d, body=SWEEP.replace("name: h", "name: " + "a" * 240))
    return ["run", str(d / "sweep.yaml"), "-o", str(d / "out")]


def _run(d: Path, out: str, *sets: str) -> list[str]:
    _data(d)
    _sweep(d)
    return ["run", str(d / "sweep.yaml"), "-o", out, *[w for s in sets for w in ("--set", s)]]


def _check(d: Path, *sets: str, data_text: str | None = None, extra: str = "", body: str = SWEEP) -> list[str]:
    _data(d, data_text)
    _sweep(d, extra=extra, body=body)
    return ["check", str(d / "sweep.yaml"), *[w for s in sets for w in ("--set", s)]]


def _under_file(d: Path) -> list[str]:
    (d / "afile").write_text("x")
    return _run(d, str(d / "afile" / "out"))


def _unwritable(d: Path) -> list[str]:
    ro = d / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    return _run(d, str(ro / "out"))


def _bool_labels(d: Path) -> list[str]:
    text = HEADER + "".join(f"train,row {i} text,{'true' if i % 2 else 'false'}\n" for i in range(50)) \
        + "dev,a dev row,true\ndev,another dev row,false\n"
    return _check(d, data_text=text)


def _dev_dups(d: Path) -> list[str]:
    text = small_csv() + "".join(f"dev,sentence number {i} is here,{i % 5}\n" for i in range(3))
    return _check(d, data_text=text)


SHAPES = [
    Shape("inputs inside the output", _in_output, "holds"),
    Shape("FIFO as the data file", lambda d: (_fifo(d, "data.csv"), _sweep(d), ["check", str(d / "sweep.yaml")])[-1],
          "not a regular file"),
    Shape("FIFO as the sweep file", _fifo_sweep, "not a regular file"),
    Shape("FIFO as unlabeled.csv", _project_fifo, "not a regular file"),
    Shape("/dev/zero as data.path", lambda d: _check(d, "data.path=/dev/zero"), "not a regular file"),
    Shape("1 GiB sparse file, valid header", lambda d: (_sparse(d, "big.csv", True), _check(d, f"data.path={d}/big.csv"))[-1],
          "larger than"),
    Shape("1 GiB sparse file", lambda d: (_sparse(d, "big.csv", False), _check(d, f"data.path={d}/big.csv"))[-1],
          "larger than"),
    Shape("--output under a file", _under_file, "output"),
    Shape("--output under /proc", lambda d: _run(d, "/proc/raysweep-out"), "output"),
    Shape("--output unwritable", _unwritable, "not writable", as_root=False),
    Shape("--output component over 255 bytes", lambda d: _run(d, str(d / ("x" * 300))), "output"),
    Shape("-o ''", lambda d: _run(d, ""), "output"),
    Shape("name: of 240 letters", _long_name, "name"),
    Shape("compare.freeze=[top-²]", lambda d: _check(d, "compare.freeze=[top-²]"), "freeze"),
    Shape("resources.freeze top-²", lambda d: _check(d, "resources.freeze={top-²: {cpus_per_trial: 1}}"), "freeze"),
    Shape("teacher.freeze=top-²", lambda d: _check(d, "teacher.freeze=top-²"), "freeze"),
    Shape("recipe.epochs=²", lambda d: _check(d, "recipe.epochs=²"), "epochs"),
    Shape("llm.base_url=http://[::1", lambda d: _check(d, "compare.pool=[llm]", "llm.base_url=http://[::1"),
          "base_url"),
    Shape("NUL in llm.api_key_file", lambda d: _check(d, "compare.pool=[llm]", "llm.api_key_file=\"a\\0b\""),
          "api_key_file"),
    Shape("labels with gaps {0,2,4}", lambda d: _check(d, "data.num_classes=5", data_text=small_csv(labels=(0, 2, 4))),
          "gaps", warns=True),
    Shape("boolean labels", _bool_labels, "boolean"),
    Shape("dev rows copy train rows", _dev_dups, "leak", warns=True),
    Shape("duplicate YAML keys", lambda d: _check(d, body=SWEEP + "recipe: {epochs: 2}\n"), "twice"),
    Shape("seed: [010]", lambda d: _check(d, "replicate.seed=[010]"), "leading zero"),
    Shape("--set data.path=", lambda d: _check(d, "data.path="), "empty"),
    Shape("check --address 127.0.0.1:1", lambda d: _check(d) + ["--address", "127.0.0.1:1"], "127.0.0.1:1",
          deadline=15.0),
    Shape("gs:// output without network", lambda d: _run(d, "gs://raysweep-no-such-bucket/x"), "gs://",
          deadline=35.0, local=False),
]


def digest_tree(d: Path) -> dict[str, str]:
    """Every regular file under `d` and its SHA-256 (FIFOs and sparse giants by stat only)."""
    out = {}
    for p in sorted(d.rglob("*")):
        try:
            if p.is_fifo() or (p.is_file() and p.stat().st_size > 1 << 20):
                out[str(p)] = f"stat:{p.stat().st_size}:{p.stat().st_mtime_ns}"
            elif p.is_file():
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
        except OSError:
            continue
    return out


def run_shape(shape: Shape, d: Path, timeout: float | None = None) -> tuple[int | None, float, str, dict, dict]:
    """(exit code or None on timeout, seconds, stderr, input digests before, after); the child's
    CPU seconds are in `run_shape.cpu` (on a loaded machine the wall time is mostly waiting)."""
    import resource

    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    args = shape.build(d)
    before = digest_tree(d)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1] / "src"),
                                                          os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "RAY_ADDRESS": ""}
    env.pop("RAY_ADDRESS")
    t0 = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, "-m", "raysweep.cli", *args], cwd=d, env=env, capture_output=True,
                              text=True, timeout=timeout or shape.deadline + 110)
        rc, err = proc.returncode, proc.stderr
    except subprocess.TimeoutExpired as exc:
        rc, err = None, (exc.stderr or b"").decode("utf-8", "replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    run_shape.cpu = after.ru_utime + after.ru_stime - used.ru_utime - used.ru_stime
    return rc, time.monotonic() - t0, err, before, digest_tree(d)

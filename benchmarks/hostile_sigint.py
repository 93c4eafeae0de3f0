"""Ctrl-C during a real sweep: SIGINT to `raysweep run` once its first trial runs; prints the exit
code, the time from the signal to the exit, the last stderr line and how many cells were kept.

    PYTHONPATH=src python benchmarks/hostile_sigint.py
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from hostile import small_csv  # noqa: E402

SWEEP = """name: sigint
compare: {pool: [real], strategy: [random], fraction: [0, 1], freeze: [last-linear]}
replicate: {seed: [0, 1, 2, 3]}
encoder: {name: minilm, pooling: pooler, max_length: 16}
recipe: {epochs: 30}
data: {path: data.csv}
"""


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "data.csv").write_text(small_csv(rows=200))
        (d / "sweep.yaml").write_text(SWEEP)
        env = {**os.environ, "RAYSWEEP_HOME": str(d / "home")}
        proc = subprocess.Popen([sys.executable, "-m", "raysweep.cli", "run", "sweep.yaml", "-o", "out"], cwd=d, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        start = time.monotonic()
        for line in proc.stdout:  # stage lines: wait for the trials to start
            if "packs" in line or "trials" in line.lower():
                break
        time.sleep(3)
        proc.send_signal(signal.SIGINT)
        sent = time.monotonic()
        _, err = proc.communicate(timeout=300)
        cells = len(list((d / "out" / "cells").glob("*.json")))
        lines = [line for line in err.splitlines() if line.strip()]
        print(f"exit {proc.returncode}, {time.monotonic() - sent:.1f} s from SIGINT to exit "
              f"({sent - start:.0f} s after start), {cells} cells kept, trials.csv "
              f"{'written' if (d / 'out' / 'trials.csv').exists() else 'not written'}; last line: {lines[-1] if lines else ''}")


if __name__ == "__main__":
    main()

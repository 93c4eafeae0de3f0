"""Each hostile shape of issue 32 (tests/hostile.py) run through the CLI: exit code, time to
fail, the error line, and whether any input file changed. Prints a Markdown table.

    PYTHONPATH=src python benchmarks/hostile_shapes.py [--all]

Without --all the network shapes (a storage URI without network) are left out.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from hostile import SHAPES, run_shape  # noqa: E402


def main(argv: list[str]) -> None:
    only = [a for a in argv if not a.startswith("--")]
    print("| shape | exit | s to fail (wall) | CPU s | lines | input changed | the line |")
    print("|---|---|---|---|---|---|---|")
    for shape in SHAPES:
        if (not shape.local and "--all" not in argv) or (only and not any(o in shape.name for o in only)):
            continue
        if not shape.as_root and os.geteuid() == 0:
            print(f"| {shape.name} | - | - | - | - | - | not measured: as root the shape cannot be made |")
            continue
        with tempfile.TemporaryDirectory() as tmp:
            rc, seconds, err, before, after = run_shape(shape, Path(tmp))
            Path(tmp).joinpath("ro").exists() and Path(tmp).joinpath("ro").chmod(0o700)
        lines = [l for l in err.splitlines() if l.strip()]
        changed = "yes" if before != {k: v for k, v in after.items() if k in before} else "no"
        last = (lines[-1] if lines else "").replace("|", "\\|")[:150]
        print(f"| {shape.name} | {'timeout' if rc is None else rc} | {seconds:.1f} | {run_shape.cpu:.1f} | {len(lines)} "
              f"| {changed} | {last} |",
              flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])

"""trials.csv of a sweep stopped (or still running) part way: the finished cells of RUN_DIR.

    python benchmarks/assemble_partial.py RUN_DIR

`raysweep run` writes trials.csv when the sweep ends; this writes the same table from cells/
for the cells finished so far, so `raysweep analyze RUN_DIR` reads them (a report then says how
many seeds each cell has). Nothing else in RUN_DIR changes.
"""

from __future__ import annotations

import sys
from pathlib import Path

from raysweep.config import load_sweep
from raysweep.grid import cell_ids, expand, read_cells, results_table
from raysweep.storage import Output


def main() -> None:
    run = Path(sys.argv[1])
    cfg = load_sweep(run / "sweep.yaml")
    cells = expand(cfg)
    table = results_table(cells, cell_ids(cfg, cells), read_cells(Output(run)), cfg)
    (run / "trials.csv").write_text(table.to_csv(index=False))
    print(f"{run / 'trials.csv'}: {len(table)} of {len(cells)} cells")


if __name__ == "__main__":
    main()

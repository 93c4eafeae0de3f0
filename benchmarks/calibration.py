"""False detections of the findings' inference on simulated sweeps with no true effect
(docs/measurements.md, "Findings that hold on new data").

    python benchmarks/calibration.py [--sweeps 2000]

Each simulated sweep draws its own evaluation set from one population of rows on which two
strategies' models differ row by row but not on average (tests/analysis/test_rows.py's
`simulate`), and scores every seed on that one set. Printed per setting: how often the inference
over seeds and rows (analysis/rows.py) and the seed-only paired t-test call the difference
significant at alpha 0.05. Nothing is timed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "analysis"))

from test_rows import simulate  # noqa: E402

from raysweep.analysis import rows  # noqa: E402

SETTINGS = [  # (seeds, rows, row_sd, seed_sd): the test's default first
    (10, 1000, 2.0, 0.05), (5, 1000, 2.0, 0.05), (3, 1000, 2.0, 0.05), (10, 500, 2.0, 0.05),
    (10, 1000, 1.0, 0.05), (10, 1000, 2.0, 0.15), (10, 1000, 0.3, 0.05),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sweeps", type=int, default=2000)
    args = ap.parse_args()
    out = []
    for i, (seeds, n, row_sd, seed_sd) in enumerate(SETTINGS):
        got = []
        for part in range(0, args.sweeps, 500):  # 500 sweeps at a time: bounded memory
            d = simulate(min(500, args.sweeps - part), seeds, n, 0.0, row_sd, seed_sd, seed=1000 * i + part)
            _, p, p_seed, _ = rows.two_way_batch(d)
            got.append(pd.DataFrame({"p": p, "p_seed": p_seed}))
        g = pd.concat(got)
        out.append({"seeds": seeds, "rows": n, "row sd (logit)": row_sd, "seed sd (logit)": seed_sd,
                    "sweeps": len(g), "seeds and rows": f"{(g['p'] < 0.05).mean():.3f}",
                    "seeds only": f"{(g['p_seed'] < 0.05).mean():.3f}"})
    print(pd.DataFrame(out).to_markdown(index=False))


if __name__ == "__main__":
    main()

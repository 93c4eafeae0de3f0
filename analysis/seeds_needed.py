"""Print, as a block for docs/measurements.md, how many seeds each comparison of a sweep needs.

    .venv/bin/python analysis/seeds_needed.py RESULTS_DIR [RESULTS_DIR ...]

For each comparison of the report's tables (the seed as the unit, Holm within each table): the
observed effect, the between-seed sd of the per-seed differences, and the seeds at which the
paired t-test reaches 80% power at the table's Holm threshold, for the observed effect and for
the stated minimum (`compare.MIN_EFFECT`, one point). Then the compute one seed of the grid costs (the sum of its trials' wall
time), so a seed count can be weighed against what a machine runs in reasonable time.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from raysweep.analysis import compare, stats
from raysweep.analysis.document import markdown_table
from raysweep.analysis.report import COMPARISONS, comparisons
from raysweep.analysis.results import successful_trials
from raysweep.analysis.tables import seeds_str


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results_dirs", nargs="+", type=Path)
    args = parser.parse_args(argv)
    ok = successful_trials(args.results_dirs)
    rows = []
    for key, table in comparisons(ok).items():
        factor = COMPARISONS[key].factor
        context = [c for c in stats.varying_parameters(ok) if c in table.columns and c not in (factor, "seed")]
        for _, r in table.iterrows():
            rows.append({"comparison": f"{r[factor]} vs {r['baseline']}",
                         "context": ", ".join(f"{c} {r[c]}" for c in context),
                         "metric": r["metric"].replace("val_", ""), "fractions": r["fractions"],
                         "seeds": int(r["n_seeds"]), "effect, pp": f"{100 * r['mean_diff']:+.2f}",
                         "sd, pp": f"{100 * r['sd']:.2f}", "Holm p": f"{r['p_holm']:.3f}",
                         "seeds for 80%: observed": seeds_str(r["seeds_observed"]),
                         f"seeds for 80%: {100 * compare.MIN_EFFECT:g} pt": seeds_str(r["seeds_min_effect"])})
    print(markdown_table(pd.DataFrame(rows)))
    if "wall_s" in ok.columns and ok["wall_s"].notna().any():
        per_seed = ok.groupby("seed")["wall_s"].sum() / 60
        print(f"\ncompute per seed of this grid: {per_seed.mean():.1f} trial-minutes (range {per_seed.min():.1f}-"
              f"{per_seed.max():.1f} over {len(per_seed)} seeds, {len(ok) // max(len(per_seed), 1)} trials each)")


if __name__ == "__main__":
    main()

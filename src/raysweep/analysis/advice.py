"""The strategy a labeling project should use, from a report's findings (`raysweep select
--from-report DIR`, or `strategy: from-report` with `report: DIR` in project.yaml).

The rule: among the strategies whose difference to `random` *survives* (Holm, on new rows:
analysis/rows.py) in the project's freeze mode on the report's headline metric, the one with the
largest gain; `random` when none survives with a gain. A mean that is higher but does not survive
is not a reason to leave `random`; a strategy that survives *below* random is named as one to avoid.
The answer always comes with its reason, to be printed beside it.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from raysweep.data import DataError

TABLE = "tables/compare_strategy.csv"  # what `raysweep analyze` writes (report.detail_tables)
BASELINE = "random"


def _pp(v: float) -> str:
    return f"{100 * v:+.1f}"


def strategy_from_report(report_dir: str | Path, freeze: str) -> tuple[str, str]:
    """(strategy, why) for a project in `freeze` mode from the report in `report_dir`."""
    path = Path(report_dir) / TABLE
    if not path.exists():
        raise DataError(f"{path}: no such file (name the output directory of `raysweep analyze` on a sweep that "
                        "compares strategies with random)")
    try:
        table = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: cannot be read as a comparison table ({str(exc).splitlines()[0]})") from None
    need = {"strategy", "baseline", "metric", "mean_diff", "ci_low", "ci_high", "p_holm", "significant", "n_seeds"}
    if not need <= set(table.columns):
        raise DataError(f"{path}: missing column(s) {', '.join(sorted(need - set(table.columns)))}")
    table = table[table["baseline"].astype(str) == BASELINE]
    if "pool" in table.columns:
        table = table[table["pool"].astype(str) == "real"]
    if "freeze" in table.columns:
        modes = sorted(set(table["freeze"].astype(str)))
        if freeze not in modes:
            return BASELINE, (f"{BASELINE}: the report {report_dir} compares strategies in freeze mode(s) "
                              f"{', '.join(modes) or 'none'}, not {freeze}; it says nothing about this project's mode")
        table = table[table["freeze"].astype(str) == freeze]
    if not len(table):
        return BASELINE, f"{BASELINE}: the report {report_dir} has no strategy compared with {BASELINE}"
    metric = "val_accuracy" if "val_accuracy" in set(table["metric"]) else str(table["metric"].iloc[0])
    rows = table[table["metric"] == metric]
    won = rows[rows["significant"].astype(bool) & (rows["mean_diff"] > 0)
               & rows["strategy"].map(_selectable)].sort_values("mean_diff", ascending=False)
    lost = rows[rows["significant"].astype(bool) & (rows["mean_diff"] < 0)]
    where = f"freeze {freeze}, {metric.removeprefix('val_')}, report {report_dir}"
    if "inference" not in rows.columns:
        on = "the seed-only test (a report from before the inference on new rows: its intervals are for its val set)"
    elif (rows["inference"] == "seeds and rows").all():
        on = "on new rows (seeds and evaluation rows)"
    else:
        on = "with some comparisons on seeds only (cells without predictions; see the report)"
    avoid = (f"; avoid {', '.join(f'{r.strategy} ({_pp(r.mean_diff)} points)' for r in lost.itertuples())}, "
             f"which survives below {BASELINE}" if len(lost) else "")
    if len(won):
        best = won.iloc[0]
        return str(best["strategy"]), (
            f"{best['strategy']}: {_pp(best['mean_diff'])} points over {BASELINE} [{_pp(best['ci_low'])}, "
            f"{_pp(best['ci_high'])}], Holm p {best['p_holm']:.3g}, {int(best['n_seeds'])} seeds, surviving {on} "
            f"({where}){avoid}. A finding on the sweep's data need not carry over to yours.")
    tried = ", ".join(f"{r.strategy} {_pp(r.mean_diff)} [{_pp(r.ci_low)}, {_pp(r.ci_high)}]"
                      for r in rows.itertuples() if not (isinstance(r.mean_diff, float) and math.isnan(r.mean_diff)))
    return BASELINE, (f"{BASELINE}: no strategy's gain over {BASELINE} survives {on} ({where}: {tried}){avoid}.")


def _selectable(name) -> bool:
    """Whether `select` can run this strategy: a hindsight reference (the oracle reads the pool's gold
    labels) or a strategy this raysweep does not know is never advised, however well it scored."""
    from raysweep import strategies

    strategy = strategies.REGISTRY.get(str(name))
    return strategy is not None and not strategy.sweep_only

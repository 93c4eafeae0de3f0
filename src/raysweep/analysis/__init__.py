"""Analysis of sweep results: the study's figures, statistics it lacked, and one report.

    from raysweep.analysis import analyze
    analyze([Path("results/smoke")], Path("results/smoke-report"))  # -> results/smoke-report/report.md

`results` reads a results directory, `stats` computes (pure functions of the trials table),
`figures` draws, `report` ties them together.
"""

from raysweep.analysis.report import analyze

__all__ = ["analyze"]

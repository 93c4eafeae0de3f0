"""Fixtures: the hand-made results directories of handmade.py, written to a temporary directory."""

from __future__ import annotations

from pathlib import Path

import pytest
from handmade import write_extras, write_trials


@pytest.fixture
def trials_dir(tmp_path) -> Path:
    return write_trials(tmp_path / "handmade")


@pytest.fixture
def full_dir(tmp_path) -> Path:
    return write_extras(write_trials(tmp_path / "full"))


@pytest.fixture(scope="session")
def trials_only_report(tmp_path_factory) -> Path:
    """A results directory with trials.csv and sweep.yaml only, reported through `raysweep analyze`;
    shared by the tests that read such a report (drawing one takes ~5 s of CPU)."""
    from click.testing import CliRunner

    from raysweep.cli import main

    root = tmp_path_factory.mktemp("trials-only")
    results = write_trials(root / "results")
    result = CliRunner().invoke(main, ["analyze", str(results), "--output", str(root / "out")])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"wrote {root / 'out' / 'report.md'} and {root / 'out' / 'report.html'}"
    return root / "out" / "report.md"


@pytest.fixture
def quick_figures(monkeypatch):
    """Every figure still drawn on the test's data (a plotting error still fails the test), but
    written as one small PNG: no SVG, no tight bounding box (each of which draws the figure again).
    For tests that check a report's text and tables; the figure files themselves are checked by
    test_every_figure_is_written_and_in_both_reports and the byte-identical test, with the real
    `_save`. Add a figure's name to the returned set to write that one for real."""
    import matplotlib.pyplot as plt

    from raysweep.analysis import figures

    real, keep = figures._save, set()

    def save(fig, out_dir: Path, name: str) -> Path:
        if name in keep:
            return real(fig, out_dir, name)
        out_dir.mkdir(parents=True, exist_ok=True)
        png = out_dir / f"{name}.png"
        fig.savefig(png, dpi=10)
        plt.close(fig)
        return png

    monkeypatch.setattr(figures, "_save", save)
    return keep

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

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

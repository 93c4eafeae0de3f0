"""The shipped selection sweeps validate and hold the grids they say they hold."""

from pathlib import Path

from raysweep.config import load_sweep
from raysweep.strategies import REGISTRY
from raysweep.sweep import expand

SWEEPS = Path(__file__).resolve().parents[2] / "sweeps"


def test_selection_is_the_studys_figure_3():
    cfg = load_sweep(SWEEPS / "selection.yaml")
    assert cfg.compare.strategy == ["random", "entropy", "sqbc"]
    assert cfg.compare.fraction == [0, 1, 2, 3, 4]
    assert cfg.compare.freeze == ["last-linear", "pooler", "last-attention"]
    assert cfg.replicate.seed == list(range(20)) and cfg.recipe.epochs == 50  # docs/measurements.md: seeds
    assert (cfg.selection.k, cfg.selection.rounds) == (5, 1)
    assert len(expand(cfg)) == 900


def test_extra_grid_holds_every_added_strategy_and_the_baseline():
    cfg = load_sweep(SWEEPS / "selection-extra.yaml")
    # SST-5 is classification: every strategy that ranks a class (mc-variance ranks a score: sweeps/sts.yaml)
    classification = {name for name, s in REGISTRY.items() if "class" in s.targets}
    big_batch = set(load_sweep(SWEEPS / "selection-batch-small.yaml").compare.strategy) - {"random", "badge"}
    assert set(cfg.compare.strategy) == classification - {"entropy", "sqbc"} - big_batch
    assert len(expand(cfg)) == 1800


def test_batch_grid_holds_the_big_batch_strategies_the_oracle_and_the_seeds_it_needs():
    cfg, small = load_sweep(SWEEPS / "selection-batch-small.yaml"), load_sweep(SWEEPS / "selection-small.yaml")
    assert set(cfg.compare.strategy) == {"random", "oracle", "cluster-margin", "qbc-seeds", "cal", "typiclust", "badge"}
    assert cfg.compare.freeze == small.compare.freeze and cfg.replicate.seed == small.replicate.seed
    assert cfg.recipe == small.recipe and cfg.encoder == small.encoder and cfg.split == small.split


def test_small_grid_is_the_same_question_on_fewer_freeze_modes():
    small, full = load_sweep(SWEEPS / "selection-small.yaml"), load_sweep(SWEEPS / "selection.yaml")
    assert small.compare.strategy == full.compare.strategy and small.compare.fraction == full.compare.fraction
    assert set(small.compare.freeze) < set(full.compare.freeze)
    assert small.recipe == full.recipe and small.selection == full.selection
    assert small.replicate.seed == list(range(10)) and len(expand(small)) == 300

"""The contract every registered strategy keeps, checked the same way for each (as small-text's
test_strategies.py does): n distinct pool indices, deterministic for a seed, n = 0 and n = |pool|,
a one-line error past the pool, and a clear error when an input it needs is missing."""

import numpy as np
import pytest
from click.testing import CliRunner

from raysweep import strategies
from raysweep.strategies import PoolExhaustedError, PoolView

NAMES = sorted(strategies.REGISTRY)
SIZE = 30


def full_view(size: int = SIZE, duplicates: bool = False, seed: int = 0) -> PoolView:
    """Every input any strategy reads, for a pool of `size` rows, 4 classes, 6-dim embeddings.

    With `duplicates` the second half of the pool repeats the first, and every labeled row
    repeats a pool row: exact ties everywhere, and zero distances for the diversity strategies.
    """
    rng = np.random.default_rng(seed)
    half = size // 2 if duplicates else size
    probs = rng.dirichlet(np.ones(4), size=half)
    emb = rng.normal(size=(half, 6))
    mc = rng.dirichlet(np.ones(4), size=(5, half))
    if duplicates:
        probs, emb, mc = np.concatenate([probs, probs]), np.concatenate([emb, emb]), np.concatenate([mc, mc], axis=1)
    labeled_emb = emb[:7].copy() if duplicates else rng.normal(size=(7, 6))
    labeled_probs = probs[:7].copy() if duplicates else rng.dirichlet(np.ones(4), size=7)
    gold = rng.integers(0, 4, size=half)
    gold = np.concatenate([gold, gold]) if duplicates else gold
    return PoolView(size=size, probs=probs, embeddings=emb, labeled_embeddings=labeled_emb,
                    labeled_labels=rng.integers(0, 4, size=7), mc_probs=mc,
                    labeled_probs=labeled_probs,
                    committee_probs=mc[:3], pool_labels=gold)


def test_the_study_and_the_field_are_registered():
    assert set(NAMES) == {"random", "entropy", "sqbc", "margin", "least-confidence", "bald", "coreset", "badge",
                          "mc-variance", "cluster-margin", "qbc-seeds", "cal", "typiclust", "oracle"}


@pytest.mark.parametrize("duplicates", [False, True], ids=["distinct", "duplicates"])
@pytest.mark.parametrize("n", [0, 1, 7, SIZE - 1, SIZE])
@pytest.mark.parametrize("name", NAMES)
def test_returns_n_distinct_pool_indices(name, n, duplicates):
    picked = strategies.get(name)(full_view(duplicates=duplicates), n, np.random.default_rng(0))
    assert picked.dtype == np.int64 and picked.shape == (n,)
    assert len(set(picked.tolist())) == n
    assert all(0 <= i < SIZE for i in picked)
    if n == SIZE:
        assert sorted(picked.tolist()) == list(range(SIZE))


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_for_a_seed(name):
    view = full_view(duplicates=True)  # ties: the seeded tie-break must be the only randomness
    first = strategies.get(name)(view, 9, np.random.default_rng(5))
    again = strategies.get(name)(view, 9, np.random.default_rng(5))
    np.testing.assert_array_equal(first, again)


@pytest.mark.parametrize("name", NAMES)
def test_seed_changes_how_ties_fall(name):
    """With every row duplicated, the order among equal rows comes from the seed."""
    view = full_view(duplicates=True)
    picks = {tuple(strategies.get(name)(view, 9, np.random.default_rng(s)).tolist()) for s in range(8)}
    assert len(picks) > 1


@pytest.mark.parametrize("name", NAMES)
def test_past_the_pool_is_a_one_line_error(name):
    with pytest.raises(PoolExhaustedError) as info:
        strategies.get(name)(full_view(), SIZE + 1, np.random.default_rng(0))
    assert str(info.value) == f"{name}: asked for {SIZE + 1} rows but the pool has {SIZE}"
    with pytest.raises(ValueError, match=f"{name}: cannot select -1 rows"):
        strategies.get(name)(full_view(), -1, np.random.default_rng(0))


@pytest.mark.parametrize("name", [n for n in NAMES if strategies.get(n).needs])
def test_a_missing_input_is_named(name):
    strategy = strategies.get(name)
    with pytest.raises(ValueError) as info:
        strategy(PoolView(size=SIZE), 3, np.random.default_rng(0))
    assert str(info.value).startswith(f"{name}: the pool view lacks ")
    assert all(need in str(info.value) for need in strategy.needs)


def test_configure_sets_only_a_strategys_own_options():
    from raysweep.config import SelectionConfig

    sqbc = strategies.get("sqbc").configure(SelectionConfig(k=3))
    assert sqbc.k == 3 and str(sqbc) == "sqbc(k=3)"
    assert strategies.get("sqbc").k == 5  # the registered default is untouched
    assert strategies.get("entropy").configure(SelectionConfig(k=3)) is strategies.get("entropy")


def test_cli_lists_every_strategy_on_one_line():
    from raysweep.cli import main

    result = CliRunner().invoke(main, ["strategies"])
    assert result.exit_code == 0
    lines = result.output.strip().splitlines()
    assert [line.split()[0] for line in lines] == NAMES
    assert all(strategies.get(line.split()[0]).summary in line for line in lines)
    assert "not implemented" not in result.output

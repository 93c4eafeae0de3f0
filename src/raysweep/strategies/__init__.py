"""Data-selection strategies behind one registry.

A strategy turns what a model says about the pool (a `PoolView`) into a ranking of the pool,
and the trial adds the top `n` rows. Adding one is a small class plus `register(...)`.

`needs` tells the trial what to compute before calling `select`: nothing (random), class
probabilities, fine-tuned embeddings of pool and labeled rows, MC-dropout samples, or
gradient embeddings. Computing them is the trial's job (see `raysweep.scoring`), so a
strategy is pure numpy and testable on hand-made arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np


class PoolExhaustedError(ValueError):
    """More rows were asked for than the pool holds."""


@dataclass
class PoolView:
    """What is known about the pool when a strategy ranks it (rows in pool order)."""

    size: int  # number of pool rows
    probs: np.ndarray | None = None  # [size, C] predicted class probabilities
    embeddings: np.ndarray | None = None  # [size, H] sentence vectors from the model fine-tuned on labeled
    labeled_embeddings: np.ndarray | None = None  # [n_labeled, H], same space
    labeled_labels: np.ndarray | None = None  # [n_labeled]
    mc_probs: np.ndarray | None = None  # [S, size, C] MC-dropout samples
    grad_embeddings: np.ndarray | None = None  # [size, D] gradient embeddings (BADGE)


class Strategy:
    """Ranks a pool. Subclasses set `name`, `needs`, `summary` and implement `select`."""

    name: ClassVar[str] = ""
    needs: ClassVar[frozenset[str]] = frozenset()
    summary: ClassVar[str] = ""

    def select(self, view: PoolView, n: int, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def __str__(self) -> str:
        return self.name

    def __call__(self, view: PoolView, n: int, rng: np.random.Generator) -> np.ndarray:
        """Check `n` against the pool, then select: `n` distinct pool indices, best first."""
        if n < 0:
            raise ValueError(f"{self.name}: cannot select {n} rows")
        if n > view.size:
            raise PoolExhaustedError(f"{self.name}: asked for {n} rows but the pool has {view.size}")
        if n == 0:
            return np.empty(0, dtype=np.int64)
        missing = [need for need in sorted(self.needs) if getattr(view, need, None) is None]
        if missing:
            raise ValueError(f"{self.name}: the pool view lacks {', '.join(missing)}")
        return np.asarray(self.select(view, n, rng), dtype=np.int64)


class NotImplementedStrategy(Strategy):
    """A name the study uses that a later issue implements; the config rejects it clearly."""

    def __init__(self, name: str, summary: str):
        self.name = name  # type: ignore[misc]
        self.summary = summary  # type: ignore[misc]

    def select(self, view, n, rng):
        raise NotImplementedError(f"strategy {self.name!r} is not implemented yet")


REGISTRY: dict[str, Strategy] = {}


def register(strategy: Strategy) -> Strategy:
    if strategy.name in REGISTRY and not isinstance(REGISTRY[strategy.name], NotImplementedStrategy):
        raise ValueError(f"strategy {strategy.name!r} is registered twice")
    REGISTRY[strategy.name] = strategy
    return strategy


def get(name: str) -> Strategy:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown strategy {name!r} (known: {', '.join(sorted(REGISTRY))})") from None


class RandomSampling(Strategy):
    name = "random"
    summary = "uniformly random rows of the pool (the study's baseline)"

    def select(self, view, n, rng):
        return rng.permutation(view.size)[:n]


register(RandomSampling())
register(NotImplementedStrategy("entropy", "highest predictive entropy first (the study's uncertainty)"))
register(NotImplementedStrategy("sqbc", "highest std of the K nearest labeled neighbours' labels (the study's SQBC)"))

"""Data-selection strategies behind one registry.

A strategy turns what a model says about the pool (a `PoolView`) into a ranking of the pool,
and the trial adds the top `n` rows. Adding one is a small class plus `register(...)`.

`needs` tells the trial what to compute before calling `select`: nothing (random), class
probabilities, fine-tuned embeddings of pool and labeled rows, MC-dropout samples, the other
seeds' probabilities (qbc-seeds) or the pool's gold labels (the sweep-only oracle). Computing them is the trial's job (see `raysweep.scoring`), so a
strategy is pure numpy and testable on hand-made arrays.

Most strategies score each pool row and take the highest (`RankingStrategy`, as small-text's
`ConfidenceBasedQueryStrategy`); the diversity ones (coreset, badge) build their batch greedily.
The families live in their own modules: `uncertainty` (entropy, margin, least-confidence, bald),
`neighbours` (sqbc), `diversity` (coreset, badge), `clusters` (cluster-margin, typiclust),
`committee` (qbc-seeds, cal) and `oracle` (the sweep-only hindsight reference).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from raysweep.errors import RaysweepError


class PoolExhaustedError(RaysweepError, ValueError):
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
    labeled_probs: np.ndarray | None = None  # [n_labeled, C] the same model's probabilities of the labeled rows (cal)
    # [M, size, C]: the pool under the scoring models of the other seeds of the freeze mode (qbc-seeds)
    committee_probs: np.ndarray | None = None
    pool_labels: np.ndarray | None = None  # [size] gold labels of the pool: the sweep-only oracle alone reads them


class Strategy:
    """Ranks a pool. Subclasses set `name`, `needs`, `summary` and implement `select`.

    `options` names the fields of the sweep's `selection:` section the strategy itself reads
    (sqbc reads `k`); `configure` builds the strategy with the sweep's values for them.
    """

    name: ClassVar[str] = ""
    needs: ClassVar[frozenset[str]] = frozenset()
    # The targets (tasks.Task.target) it can rank for, and what it ranks by (the config error says it):
    # class-probability strategies mean nothing for a score.
    targets: ClassVar[frozenset[str]] = frozenset({"class"})
    ranks_by: ClassVar[str] = "class probabilities"
    options: ClassVar[tuple[str, ...]] = ()
    summary: ClassVar[str] = ""
    # A hindsight reference that reads the pool's gold labels: a sweep may draw it, `select` refuses it.
    sweep_only: ClassVar[bool] = False
    # Its picks for one seed read the scoring models of the sweep's other seeds: the seeds of its
    # cells are not independent replicates, and the analysis says so beside its comparisons.
    shares_seeds: ClassVar[bool] = False

    def select(self, view: PoolView, n: int, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def configure(self, selection: Any) -> Strategy:
        """This strategy with `selection`'s values for its options (itself when it has none)."""
        if not self.options:
            return self
        return type(self)(**{o: getattr(selection, o) for o in self.options})

    def __str__(self) -> str:
        settings = ", ".join(f"{o}={getattr(self, o)}" for o in self.options)
        return f"{self.name}({settings})" if settings else self.name

    def __call__(self, view: PoolView, n: int, rng: np.random.Generator) -> np.ndarray:
        """Check `n` against the pool, then select: `n` distinct pool indices, best first."""
        return self.ranked(view, n, rng)[0]

    def ranked(self, view: PoolView, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
        """What `__call__` selects, with each pick's score (higher is picked first), or None for a
        strategy that builds its batch without one (random, the greedy diversity strategies).

        The scores go on record beside the chosen rows (sweep.py's chosen/); the same random
        stream is drawn as by `__call__`, so the picks are identical."""
        if n < 0:
            raise ValueError(f"{self.name}: cannot select {n} rows")
        if n > view.size:
            raise PoolExhaustedError(f"{self.name}: asked for {n} rows but the pool has {view.size}")
        if n == 0:
            return np.empty(0, dtype=np.int64), None
        missing = [need for need in sorted(self.needs) if getattr(view, need, None) is None]
        if missing:
            raise ValueError(f"{self.name}: the pool view lacks {', '.join(missing)}")
        picked, scores = self.select_scored(view, n, rng)
        return np.asarray(picked, dtype=np.int64), scores

    def select_scored(self, view: PoolView, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
        """`select` and the picks' scores; strategies without a per-row score keep this default."""
        return self.select(view, n, rng), None


class RankingStrategy(Strategy):
    """Scores every pool row (higher is picked first) and takes the top `n`.

    Exact ties are broken by a seeded random order, not by position: SQBC's scores are a few
    discrete values shared by thousands of rows, and "first in file order" would pick by the
    order the data set happens to be stored in.
    """

    def scores(self, view: PoolView) -> np.ndarray:
        raise NotImplementedError

    def select(self, view, n, rng):
        return self.select_scored(view, n, rng)[0]

    def select_scored(self, view, n, rng):
        scores = np.asarray(self.scores(view), dtype=np.float64)
        if scores.shape != (view.size,):
            raise ValueError(f"{self.name}: {scores.shape} scores for a pool of {view.size}")
        tie = rng.permutation(view.size)
        # lexsort sorts by the last key first: descending score, then the seeded order.
        picked = np.lexsort((tie, -scores))[:n]
        return picked, scores[picked]


REGISTRY: dict[str, Strategy] = {}


def register(strategy: Strategy) -> Strategy:
    if strategy.name in REGISTRY:
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
    targets = frozenset({"class", "score"})
    ranks_by = "nothing"
    summary = "uniformly random rows of the pool (the study's baseline)"

    def select(self, view, n, rng):
        return rng.permutation(view.size)[:n]


register(RandomSampling())

# The families register themselves on import; they import the names above, so they come last.
from raysweep.strategies import clusters, committee, diversity, neighbours, oracle, uncertainty  # noqa: E402,F401

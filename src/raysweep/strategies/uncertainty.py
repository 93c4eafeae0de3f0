"""Uncertainty sampling: rank the pool by how unsure the model trained on `labeled` is.

The first four read class probabilities of the pool (`bald` reads MC-dropout samples of them);
`mc-variance` reads MC-dropout samples of a regression head's score. Each scores every row
independently; `RankingStrategy` takes the top `n`.
"""

from __future__ import annotations

import numpy as np

from raysweep.strategies import RankingStrategy, register


def entropy(probs: np.ndarray) -> np.ndarray:
    """Predictive entropy in nats along the last axis; a zero probability contributes 0."""
    p = np.asarray(probs, dtype=np.float64)
    logs = np.log(np.where(p > 0, p, 1.0))  # log(1) = 0 where p = 0, so 0 * log 0 counts as 0
    return -(p * logs).sum(axis=-1)


class Entropy(RankingStrategy):
    name = "entropy"
    needs = frozenset({"probs"})
    summary = "highest predictive entropy first (the study's uncertainty sampling)"

    def scores(self, view):
        return entropy(view.probs)


class Margin(RankingStrategy):
    """Breaking ties (Luo et al. 2005): the smallest gap between the two most likely classes."""

    name = "margin"
    needs = frozenset({"probs"})
    summary = "smallest gap between the two most likely classes first (breaking ties)"

    def scores(self, view):
        top2 = np.sort(np.asarray(view.probs, dtype=np.float64), axis=1)[:, -2:]
        return -(top2[:, 1] - top2[:, 0])


class LeastConfidence(RankingStrategy):
    name = "least-confidence"
    needs = frozenset({"probs"})
    summary = "lowest probability of the predicted class first"

    def scores(self, view):
        return 1.0 - np.asarray(view.probs, dtype=np.float64).max(axis=1)


class BALD(RankingStrategy):
    """Mutual information between the label and the weights (Houlsby et al. 2011; Gal et al. 2017),
    estimated from MC-dropout samples: H(mean_s p_s) - mean_s H(p_s)."""

    name = "bald"
    needs = frozenset({"mc_probs"})
    summary = "highest mutual information over MC-dropout samples first (selection.mc_samples)"

    def scores(self, view):
        samples = np.asarray(view.mc_probs, dtype=np.float64)  # [S, N, C]
        return entropy(samples.mean(axis=0)) - entropy(samples).mean(axis=0)


class MCVariance(RankingStrategy):
    """A regression head's BALD analogue: the variance of its predicted score over MC-dropout
    samples, the spread of the weights' disagreement about the row (Gal & Ghahramani 2016)."""

    name = "mc-variance"
    needs = frozenset({"mc_probs"})  # for a regression head these are the sampled scores [S, N, 1]
    targets = frozenset({"score"})
    ranks_by = "the spread of a predicted score"
    summary = "highest variance of the predicted score over MC-dropout samples first (regression; selection.mc_samples)"

    def scores(self, view):
        samples = np.asarray(view.mc_probs, dtype=np.float64)  # [S, N, 1]
        return samples.var(axis=0).sum(axis=-1)


for _strategy in (Entropy(), Margin(), LeastConfidence(), BALD(), MCVariance()):
    register(_strategy)

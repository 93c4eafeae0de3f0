"""The headroom: a hindsight reference that may read the pool's gold labels (never val or test).

`oracle` takes the rows the model trained on `labeled` gets wrong, the ones it was closest to
getting right first, spread over the gold classes in proportion to the pool's class counts;
when a class runs out of wrong rows it goes on with that class's right rows, least confident
first.

Why this one, and what it bounds. Every real strategy ranks by the same labeled-set model
without the labels; the oracle ranks with the one thing they lack. A row the model already
classifies right mostly confirms what it knows; a wrong one moves its boundary. Among wrong
rows, the nearly-right ones are the boundary's own neighbourhood, while the most confidently
wrong of SST-5 are often label noise (its five fine-grained labels disagree between annotators),
which a loss-greedy oracle would buy first. Taking each class in its share of the pool keeps the
label distribution the val and test splits have, so the oracle changes *which* rows, not the
class prior (a class-balanced batch would shift the prior on this skewed pool and measure that).

It is a reference, not a proven upper bound: no polynomial rule is the best batch, and a
strategy may beat it. The report draws it beside `random`; the gap between them is the headroom
this labeled-set model leaves, and the findings say how much of it each strategy closes.
Sweeps only: `select` has no gold labels of the pool and refuses it.
"""

from __future__ import annotations

import numpy as np

from raysweep.strategies import RankingStrategy, register


class Oracle(RankingStrategy):
    name = "oracle"
    needs = frozenset({"probs", "pool_labels"})
    sweep_only = True
    summary = ("sweeps only: rows the labeled-set model gets wrong, nearly-right first, in each gold class's share "
               "of the pool (hindsight headroom; reads the pool's gold labels)")

    def scores(self, view):
        probs = np.asarray(view.probs, dtype=np.float64)
        gold = np.asarray(view.pool_labels, dtype=np.int64)
        p_gold = probs[np.arange(len(gold)), gold]
        wrong = probs.argmax(axis=1) != gold
        # Within a class: wrong rows by gold probability descending, then right rows ascending.
        within = np.where(wrong, 1.0 + p_gold, -p_gold)  # wrong in [1, 2), right in [-1, 0]: wrong first
        score = np.empty(len(gold))
        for c in np.unique(gold):
            at = np.flatnonzero(gold == c)
            order = at[np.argsort(-within[at], kind="stable")]
            # the r-th row of a class of n_c rows at (r + 0.5) / n_c: classes interleave in
            # proportion to their counts, and higher is picked first
            score[order] = -(np.arange(len(order)) + 0.5) / len(order)
        return score


register(Oracle())

"""Committees: rows the models disagree about.

`qbc-seeds` is query-by-committee (Seung et al. 1992; McCallum & Nigam 1998) whose committee is
the sweep's own scoring models: every (freeze, seed) already trains one on `labeled`, so the
other seeds of the cell's freeze mode are a committee at no extra training cost. A row's
disagreement is the mean KL divergence of each member's class probabilities from the
committee's mean ("KL to the consensus"), which unlike vote entropy ranks rows on which every
member votes the same class but with different confidence.

What it does to the seeds: a `qbc-seeds` cell of seed s picks with the models of all the other
seeds, so its seed replicates share most of their committee (9 of 10 members with 10 seeds) and
pick nearly the same rows. Their spread over seeds is training noise plus a little selection
noise, not the selection noise a `random` or `entropy` cell's seeds carry; a paired interval over
seeds is then narrower than an independent replication would give. The analysis marks its
comparisons (`Strategy.shares_seeds`).

`cal` (Margatina et al. 2021, "Active Learning by Acquiring Contrastive Examples") is SQBC's
nearest relative and its honest ablation: SQBC's committee is a row's K nearest labeled
neighbours voting with their gold labels; CAL's is the same neighbours voting with the model's
predicted probabilities, scored by the mean KL(p(neighbour) || p(row)). A high score is a row
whose prediction differs from those of the labeled rows that look most like it.
"""

from __future__ import annotations

import numpy as np

from raysweep.strategies import RankingStrategy, register
from raysweep.strategies.neighbours import nearest_labeled

_EPS = 1e-12  # keeps log(0) out of a KL divergence when a softmax underflows to 0


def _kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """KL(p || q) in nats along the last axis (probabilities clipped away from 0)."""
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1.0)
    q = np.clip(np.asarray(q, dtype=np.float64), _EPS, 1.0)
    return (p * (np.log(p) - np.log(q))).sum(axis=-1)


class QBCSeeds(RankingStrategy):
    name = "qbc-seeds"
    needs = frozenset({"committee_probs"})
    shares_seeds = True
    summary = ("highest mean KL to the consensus of the other seeds' scoring models first "
               "(query-by-committee at no extra training; a cell's seeds share the committee)")

    def scores(self, view):
        members = np.asarray(view.committee_probs, dtype=np.float64)  # [M, N, C]
        if members.ndim != 3 or len(members) < 2:
            raise ValueError(f"qbc-seeds: needs a committee of at least 2 models, got {len(members)} "
                             "(a sweep needs 3 seeds or more: the cell's own seed is not in its committee)")
        consensus = members.mean(axis=0)
        return _kl(members, consensus[None]).mean(axis=0)


class CAL(RankingStrategy):
    name = "cal"
    needs = frozenset({"probs", "embeddings", "labeled_embeddings", "labeled_probs"})
    summary = "highest mean KL from the 10 nearest labeled rows' predictions first (contrastive AL, Margatina 2021)"
    K = 10  # the paper's neighbours (its default); capped at the labeled rows there are

    def scores(self, view):
        k = min(self.K, len(view.labeled_embeddings))
        idx = nearest_labeled(view.embeddings, view.labeled_embeddings, k)  # [N, k]
        neighbours = np.asarray(view.labeled_probs, dtype=np.float64)[idx]  # [N, k, C]
        return _kl(neighbours, np.asarray(view.probs)[:, None, :]).mean(axis=1)


register(QBCSeeds())
register(CAL())

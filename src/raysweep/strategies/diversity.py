"""Diversity sampling: build the batch greedily so that it covers the pool.

`coreset` (Sener & Savarese 2018) is greedy k-center on the fine-tuned embeddings: each pick is
the pool row farthest from everything labeled or picked so far. `badge` (Ash et al. 2020) runs
k-means++ seeding on gradient embeddings, which are large for rows the model is unsure about
and point in different directions for rows it is unsure about in different ways, so the batch
is both uncertain and diverse.
"""

from __future__ import annotations

import numpy as np

from raysweep.strategies import Strategy, register


def _sq_dist_to(points: np.ndarray, sq_norms: np.ndarray, center: np.ndarray) -> np.ndarray:
    # Rounding can make |a|^2 + |b|^2 - 2ab slightly negative for a point equal to the center.
    return np.maximum(sq_norms + center @ center - 2.0 * points @ center, 0.0)


def _min_sq_dist(points: np.ndarray, centers: np.ndarray, chunk: int = 1024) -> np.ndarray:
    sq_centers = (centers ** 2).sum(axis=1)
    out = np.empty(len(points))
    for start in range(0, len(points), chunk):
        block = points[start: start + chunk]
        d = (block ** 2).sum(axis=1)[:, None] + sq_centers[None, :] - 2.0 * block @ centers.T
        out[start: start + len(block)] = np.maximum(d, 0.0).min(axis=1)
    return out


def k_center_greedy(points: np.ndarray, centers: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` rows of `points`, each the one farthest from `centers` and the rows picked before it.

    With no centers the first pick is a seeded random row; equally far rows are picked in a
    seeded order.
    """
    points = np.asarray(points, dtype=np.float64)
    sq_norms = (points ** 2).sum(axis=1)
    rank = rng.permutation(len(points))  # tie-break order: lower rank wins
    if len(centers):
        min_d = _min_sq_dist(points, np.asarray(centers, dtype=np.float64))
    else:
        min_d = np.full(len(points), np.inf)  # nothing covered yet: every row ties, rank decides
    picked = np.empty(n, dtype=np.int64)
    for i in range(n):
        best = np.flatnonzero(min_d == min_d.max())
        pick = best[np.argmin(rank[best])]
        picked[i] = pick
        min_d = np.minimum(min_d, _sq_dist_to(points, sq_norms, points[pick]))
        min_d[pick] = -np.inf  # never again, even when every remaining row duplicates a center
    return picked


class Coreset(Strategy):
    name = "coreset"
    needs = frozenset({"embeddings", "labeled_embeddings"})
    targets = frozenset({"class", "score"})  # distances between sentence vectors: any head
    ranks_by = "sentence-vector distances"
    summary = "greedy k-center on fine-tuned embeddings, labeled rows as the first centers"

    def select(self, view, n, rng):
        return k_center_greedy(view.embeddings, view.labeled_embeddings, n, rng)


def gradient_embeddings(probs: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
    """BADGE's [N, C * H] embeddings: the gradient of the cross-entropy loss with respect to the
    head's weight matrix, taking the predicted class as the label: (p - onehot(argmax p)) outer h.

    Row-major like `linear.weight.grad` ([C, H] flattened).
    """
    probs = np.asarray(probs, dtype=np.float32)
    scale = probs.copy()
    scale[np.arange(len(probs)), probs.argmax(axis=1)] -= 1.0
    return (scale[:, :, None] * np.asarray(embeddings, dtype=np.float32)[:, None, :]).reshape(len(probs), -1)


def kmeans_pp(points: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding as BADGE runs it: the first pick has the largest norm, each next one is
    drawn with probability proportional to its squared distance to the nearest pick so far."""
    points = np.asarray(points, dtype=np.float64)
    sq_norms = (points ** 2).sum(axis=1)
    return _kmeans_pp_seeding(sq_norms, lambda i: _sq_dist_to(points, sq_norms, points[i]), n, rng)


def gradient_scale(probs: np.ndarray) -> np.ndarray:
    """s = p - onehot(argmax p), BADGE's class factor, computed in float32 as `gradient_embeddings`
    does, returned as float64."""
    probs = np.asarray(probs, dtype=np.float32)
    scale = probs.copy()
    scale[np.arange(len(probs)), probs.argmax(axis=1)] -= 1.0
    return scale.astype(np.float64)


def gradient_factors(probs: np.ndarray, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two factors of BADGE's gradient embedding g_i = s_i (x) h_i, as float64: s
    (`gradient_scale`) and h, the sentence vector."""
    return gradient_scale(probs), np.asarray(embeddings, dtype=np.float32).astype(np.float64)


def kmeans_pp_factored(scale: np.ndarray, embeddings: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """`kmeans_pp(gradient_embeddings(...))` without the [N, C * H] matrix.

    For outer products <s_i (x) h_i, s_j (x) h_j> = (s_i . s_j)(h_i . h_j), so every squared norm
    and distance BADGE's seeding reads comes from the [N, C] and [N, H] factors (the factorised
    distance of scikit-activeml#589): memory O(N (C + H)), and each pick costs O(N (C + H)) instead
    of O(N C H). The same random draws in the same order give the same picks, up to float
    rounding in the last bits of a distance (tests/strategies compare both on fixed inputs).
    """
    sq_norms = (scale ** 2).sum(axis=1) * (embeddings ** 2).sum(axis=1)
    # The pass over the [N, H] vectors is each pick's cost (1,709 picks of SST-5's 6,835 x 384:
    # 21 MB a pass in float64). In float32, as the head produced them, it is half the memory and
    # stays in cache; the products and sums stay float64, and the picks with them (tested).
    vectors = np.ascontiguousarray(embeddings, dtype=np.float32)

    def d2_to(i: int) -> np.ndarray:
        # Rounding can make |a|^2 + |b|^2 - 2ab slightly negative for a point equal to the center.
        dots = (vectors @ vectors[i]).astype(np.float64)
        return np.maximum(sq_norms + sq_norms[i] - 2.0 * (scale @ scale[i]) * dots, 0.0)

    return _kmeans_pp_seeding(sq_norms, d2_to, n, rng)


def _kmeans_pp_seeding(sq_norms: np.ndarray, d2_to, n: int, rng: np.random.Generator) -> np.ndarray:
    """BADGE's seeding over points known by their squared norms and `d2_to(i)` (every point's
    squared distance to point i)."""
    size = len(sq_norms)
    rank = rng.permutation(size)

    top = np.flatnonzero(sq_norms == sq_norms.max())
    picked = [int(top[np.argmin(rank[top])])]
    d2 = d2_to(picked[0])
    d2[picked[0]] = 0.0
    chosen = np.zeros(size, dtype=bool)
    chosen[picked[0]] = True
    while len(picked) < n:
        total = d2.sum()
        if total > 0:
            cum = np.cumsum(d2)
            # side="right" never lands on a zero-weight (already chosen) row.
            pick = int(min(np.searchsorted(cum, rng.random() * total, side="right"), size - 1))
            if chosen[pick]:  # only when rounding put the draw at the very end
                pick = int(np.flatnonzero(~chosen & (d2 > 0))[-1])
        else:  # the rest duplicate a pick: nothing to prefer, take them in a seeded order
            rest = np.flatnonzero(~chosen)
            pick = int(rest[np.argmin(rank[rest])])
        picked.append(pick)
        chosen[pick] = True
        d2 = np.minimum(d2, d2_to(pick))
        d2[chosen] = 0.0
    return np.asarray(picked, dtype=np.int64)


class Badge(Strategy):
    name = "badge"
    needs = frozenset({"probs", "embeddings"})
    ranks_by = "gradients of the cross-entropy of the predicted class"
    summary = "k-means++ seeding on gradient embeddings of the head (BADGE), factorised: no N x C*H matrix"

    def select(self, view, n, rng):
        return kmeans_pp_factored(*gradient_factors(view.probs, view.embeddings), n, rng)


register(Coreset())
register(Badge())

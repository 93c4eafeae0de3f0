"""Cluster-based strategies for big batches: spread the batch over the clusters of the pool.

At 1,709 rows a step, top-k uncertainty takes many near-copies of one hard region. Both
strategies here cluster the model's sentence vectors (the head's input) with a seeded k-means
and spread the picks over the clusters:

- `cluster-margin` (Citovsky et al. 2021, "Batch Active Learning at Scale"): the `CANDIDATES`
  x n rows of smallest margin are the candidates; their clusters are visited smallest first,
  round-robin, taking a random candidate of each, until the batch is full.
- `typiclust` (Hacohen et al. 2022, "Active Learning on a Budget"): cluster labeled and pool
  rows together into min(|labeled| + n, 500) clusters; each pick comes from the cluster with the
  fewest labeled (or already picked) rows, the largest first, and is that cluster's most
  *typical* row: the inverse mean distance to its 20 nearest neighbours in the cluster. It needs
  no model probabilities, so it also starts `select` cold (on the encoder's vectors).

k-means here, not the paper's average-linkage HAC for cluster-margin: HAC over the pool needs
the N x N distance matrix (1.4 GB at 100,000 rows in float32, and O(N^2) time), where Lloyd's
k-means over the candidates costs O(iterations x candidates x clusters x H).
"""

from __future__ import annotations

import numpy as np

from raysweep.strategies import Strategy, register


def _sq_dists(points: np.ndarray, centers: np.ndarray, sq_points: np.ndarray | None = None) -> np.ndarray:
    """[len(points), len(centers)] squared distances; `sq_points`: the rows' squared norms, when
    the caller has them (k-means calls this hundreds of times on the same rows)."""
    sq_points = (points ** 2).sum(axis=1) if sq_points is None else sq_points
    d = sq_points[:, None] + (centers ** 2).sum(axis=1)[None, :] - 2.0 * points @ centers.T
    return np.maximum(d, 0.0)


def kmeans(points: np.ndarray, k: int, rng: np.random.Generator, iterations: int = 20,
           chunk: int = 4096, tol: float = 1e-3) -> np.ndarray:
    """Cluster of each row: Lloyd's k-means from a k-means++ start, seeded by `rng`.

    Stops when at most `tol` of the rows change cluster in a step, or after `iterations`. On
    SST-5's vectors (typiclust: 8,544 rows, 500 clusters) Lloyd's steps moved 8,544, 2,465, 885,
    ... rows and still moved 1-11 rows at the 20th: the last 7 steps (a third of the time) moved
    23 rows, 0.3%. So the default stops at 0.1% (8 rows there), as scikit-learn's mini-batch
    k-means (which TypiClust's authors run beyond 50 clusters) stops early too; `tol=0` runs to
    convergence or `iterations`. A cluster that loses every row keeps
    its centre (it may win rows back); ties go to the lower cluster index (argmin), so the result
    is a function of the rows and the seed.

    In float32, as the sentence vectors come: k-means++ makes one pass over the rows per centre
    (500 for typiclust), and a float32 copy of SST-5's 8,544 x 384 rows (13 MB) stays in cache
    where float64 did not. That, the distances as 1-d passes, and the centre sums by one sorted
    reduction instead of np.add.at took typiclust's selection from 10.5 s to ~1 s on SST-5's
    shape (benchmarks/strategy_speed.py). Distances differ from float64 in the last bits, so a
    row equidistant to two centres up to rounding may join the other one: the clustering is
    as valid, not bit for bit the float64 one (tests/strategies pin what the picks must be).
    """
    points = np.ascontiguousarray(points, dtype=np.float32)
    n = len(points)
    k = max(1, min(k, n))
    sq = np.einsum("ij,ij->i", points, points)
    # k-means++: the first centre uniformly, each next one with probability ~ squared distance.
    chosen = [int(rng.integers(n))]
    d2 = np.maximum(sq + sq[chosen[0]] - 2.0 * (points @ points[chosen[0]]), 0.0).astype(np.float64)
    for _ in range(1, k):
        total = d2.sum()
        i = int(rng.choice(n, p=d2 / total)) if total > 0 else int(rng.integers(n))
        chosen.append(i)
        np.minimum(d2, np.maximum(sq + sq[i] - 2.0 * (points @ points[i]), 0.0), out=d2)
    centers = points[chosen].copy()
    assign = np.full(n, -1, dtype=np.int64)
    for _ in range(iterations):
        # argmin_c |p - c|^2 = argmin_c |c|^2 - 2 p.c: a row's own |p|^2 changes no argmin
        sq_centers = np.einsum("ij,ij->i", centers, centers)
        new = np.concatenate([(sq_centers[None, :] - 2.0 * (points[s: s + chunk] @ centers.T)).argmin(axis=1)
                              for s in range(0, n, chunk)])
        moved = int((new != assign).sum())
        assign = new
        if moved <= tol * n:
            break
        counts = np.bincount(assign, minlength=k)
        filled = counts > 0
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])[filled]
        sums = np.add.reduceat(points[np.argsort(assign, kind="stable")], starts, axis=0, dtype=np.float64)
        centers[filled] = sums / counts[filled, None]
    return assign


def margins(probs: np.ndarray) -> np.ndarray:
    """Gap between the two most likely classes of each row (small: unsure)."""
    top2 = np.sort(np.asarray(probs, dtype=np.float64), axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


class ClusterMargin(Strategy):
    name = "cluster-margin"
    needs = frozenset({"probs", "embeddings"})
    ranks_by = "class probabilities and sentence-vector clusters"
    summary = "smallest-margin candidates, round-robin over their k-means clusters, smallest first (Citovsky 2021)"
    # Candidates per pick. The paper's 10 would be the whole pool at this study's steps (1,709 of
    # 6,835 rows per step): the strategy would then forget margins and only stratify by cluster.
    CANDIDATES = 2
    CLUSTERS = 100  # k-means clusters of the candidates: cost grows linearly with it

    def select(self, view, n, rng):
        tie = rng.permutation(view.size)
        candidates = np.lexsort((tie, margins(view.probs)))[: self.candidates(view.size, n)]  # smallest first
        return candidates[self.spread(view.embeddings[candidates], n, rng)]

    def candidates(self, size: int, n: int) -> int:
        return min(size, self.CANDIDATES * n)

    def spread(self, vectors: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
        """`n` positions into the candidates (`vectors`, smallest margin first): round-robin over
        their clusters, smallest cluster first, a random member at each visit (as the paper)."""
        m = len(vectors)
        assign = kmeans(vectors, min(self.CLUSTERS, m), rng)
        order = rng.permutation(m)
        members = [order[assign[order] == c] for c in range(assign.max() + 1)]
        members = [m_ for m_ in sorted(members, key=len) if len(m_)]  # smallest first; sort is stable
        picked = []
        for depth in range(max(len(m_) for m_ in members)):
            picked.extend(m_[depth] for m_ in members if depth < len(m_))
            if len(picked) >= n:
                break
        return np.asarray(picked[:n], dtype=np.int64)


def typicality(points: np.ndarray, k: int = 20) -> np.ndarray:
    """TypiClust's typicality of each row among `points`: 1 / mean distance to its k nearest
    others (k capped at the rows there are); a lone row is typical by definition (1 / 1e-5)."""
    k = min(k, len(points) - 1)
    if k < 1:
        return np.full(len(points), 1e5)
    d = np.sqrt(_sq_dists(points, points))
    np.fill_diagonal(d, np.inf)
    nearest = np.sort(d, axis=1)[:, :k]
    return 1.0 / (nearest.mean(axis=1) + 1e-5)


def typiclust_picks(pool: np.ndarray, labeled: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """TypiClust over pool vectors `pool` with `labeled` vectors already covered (may be empty)."""
    pool = np.asarray(pool, dtype=np.float64)
    labeled = np.asarray(labeled, dtype=np.float64).reshape(-1, pool.shape[1])
    points = np.concatenate([pool, labeled])
    # The authors' bounds (MAX_NUM_CLUSTERS 500, MIN_CLUSTER_SIZE 5): beyond 500 clusters k-means
    # cost grows with no gain in typicality, and a tiny cluster's "most typical" row is noise.
    assign = kmeans(points, min(len(labeled) + n, 500), rng)
    k = int(assign.max()) + 1
    size = np.bincount(assign, minlength=k)
    covered = np.bincount(assign[len(pool):], minlength=k)
    tie = rng.permutation(k)
    queues = []
    for c in range(k):
        rows = np.flatnonzero(assign[: len(pool)] == c)
        typ = typicality(points[assign == c])[: len(rows)]  # pool rows come first within the cluster
        queues.append(list(rows[np.lexsort((rows, -typ))]))  # most typical first; ties by position
    picked = []
    while len(picked) < n:
        open_ = np.array([len(q) > 0 for q in queues])
        big = open_ & (size > 5)
        eligible = big if big.any() else open_
        c = np.flatnonzero(eligible)
        # fewest covered, then largest, then the seeded order
        c = c[np.lexsort((tie[c], -size[c], covered[c]))[0]]
        picked.append(queues[c].pop(0))
        covered[c] += 1
    return np.asarray(picked, dtype=np.int64)


class TypiClust(Strategy):
    name = "typiclust"
    needs = frozenset({"embeddings", "labeled_embeddings"})
    targets = frozenset({"class", "score"})  # sentence vectors only: any head
    ranks_by = "sentence-vector clusters"
    summary = "most typical row of the least-covered k-means cluster, one pick at a time (TypiClust, Hacohen 2022)"

    def select(self, view, n, rng):
        return typiclust_picks(view.embeddings, view.labeled_embeddings, n, rng)


register(ClusterMargin())
register(TypiClust())

"""The big-batch strategies (issue 33) against hand computations on hand-made arrays."""

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy.stats import entropy as kl

from raysweep import strategies
from raysweep.strategies import PoolView
from raysweep.strategies.clusters import kmeans, typicality
from raysweep.strategies.diversity import gradient_embeddings, gradient_factors, kmeans_pp, kmeans_pp_factored


def select(name, view, n, seed=0):
    return strategies.get(name)(view, n, np.random.default_rng(seed))


def blobs(centres, per, spread=0.01, seed=0):
    rng = np.random.default_rng(seed)
    return np.concatenate([np.asarray(c, dtype=float) + spread * rng.normal(size=(per, len(c))) for c in centres])


def test_kmeans_finds_separated_blobs_whatever_the_seed():
    points = blobs([(0, 0), (10, 0), (0, 10)], per=20)
    truth = np.repeat(np.arange(3), 20)
    for seed in range(5):
        assign = kmeans(points, 3, np.random.default_rng(seed))
        # the same partition: every blob is one cluster and the clusters differ
        assert all(len(set(assign[truth == b])) == 1 for b in range(3)) and len(set(assign)) == 3


def test_cluster_margin_takes_smallest_margins_round_robin_over_clusters_smallest_first(monkeypatch):
    from raysweep.strategies import clusters

    monkeypatch.setattr(clusters.ClusterMargin, "CLUSTERS", 2)
    # Rows 0-5 unsure (margin 0), rows 6-11 sure. Of the unsure ones, 0-3 sit in one region and 4-5
    # in another: the candidates (2 x 3 = 6) are exactly the unsure rows, and the 3 picks visit the
    # 2-row cluster first, then the 4-row one, then the 2-row one again.
    emb = np.concatenate([blobs([(0, 0)], 4), blobs([(9, 9)], 2, seed=1), blobs([(0, 0), (9, 9)], 3, seed=2)])
    probs = np.array([[0.5, 0.5]] * 6 + [[0.99, 0.01]] * 6)
    picked = select("cluster-margin", PoolView(size=12, probs=probs, embeddings=emb), 3)
    assert set(picked.tolist()) <= set(range(6))
    assert picked[0] in (4, 5) and picked[1] in (0, 1, 2, 3) and picked[2] in (4, 5)
    # 2 picks: 4 candidates, the 4 unsure rows of the first blob... ranked by margin, all tied at 0:
    # the seeded order decides which 4; still no sure row
    assert set(select("cluster-margin", PoolView(size=12, probs=probs, embeddings=emb), 2).tolist()) <= set(range(6))


def test_typicality_is_inverse_mean_distance_to_the_nearest():
    points = np.array([[0.0], [1.0], [3.0]])
    # k=1: nearest distances 1, 1, 2
    assert_allclose(typicality(points, k=1), 1 / (np.array([1.0, 1.0, 2.0]) + 1e-5))
    assert_allclose(typicality(points, k=2), 1 / (np.array([2.0, 1.5, 2.5]) + 1e-5))


def test_typiclust_picks_the_centre_of_each_uncovered_cluster_first():
    # Three blobs of 7 rows: a centre (each blob's row 0) and a hexagon of radius 1 around it, so
    # the centre is the most typical row (mean distance 1 to the other 6; a corner's is larger).
    # Blob A already holds a labeled row. With |labeled| + n = 3 clusters, the two picks are the
    # centres of B and C, in either order, never a row of A.
    centres = [(0, 0), (10, 0), (0, 10)]
    ring = np.stack([np.cos(np.arange(6) * np.pi / 3), np.sin(np.arange(6) * np.pi / 3)], axis=1)
    pool = np.concatenate([np.vstack([c, np.asarray(c) + ring]) for c in centres])
    view = PoolView(size=21, embeddings=pool, labeled_embeddings=np.array([[0.1, 0.0]]))
    picked = select("typiclust", view, 2)
    assert sorted(picked.tolist()) == [7, 14]
    # Nothing labeled (select's cold start): the first three picks are the three centres.
    cold = PoolView(size=21, embeddings=pool, labeled_embeddings=np.empty((0, 2)))
    assert sorted(select("typiclust", cold, 3).tolist()) == [0, 7, 14]


def test_qbc_seeds_is_mean_kl_to_the_consensus():
    committee = np.array([
        [[0.5, 0.5], [0.9, 0.1], [1.0, 0.0]],
        [[0.5, 0.5], [0.1, 0.9], [0.9, 0.1]],
        [[0.5, 0.5], [0.5, 0.5], [0.8, 0.2]],
    ])  # [M=3, N=3, C=2]: row 0 agreed, row 1 split, row 2 mild
    mean = committee.mean(axis=0)
    reference = [np.mean([kl(committee[m, i], mean[i]) for m in range(3)]) for i in range(3)]
    scores = strategies.get("qbc-seeds").scores(PoolView(size=3, committee_probs=committee))
    assert_allclose(scores, reference, atol=1e-9)
    assert_array_equal(select("qbc-seeds", PoolView(size=3, committee_probs=committee), 3), [1, 2, 0])
    with pytest.raises(ValueError, match="at least 2 models"):
        select("qbc-seeds", PoolView(size=3, committee_probs=committee[:1]), 1)


def test_cal_scores_the_kl_from_the_nearest_labeled_predictions():
    # Labeled rows at x=0 (predicted [0.9, 0.1]) and x=10 ([0.1, 0.9]). Pool row 0 sits at 0 and
    # agrees with its neighbour; row 1 sits at 0 but predicts the other class (contrastive);
    # row 2 sits at 10 and agrees. K = 10 is capped at the 2 labeled rows: both vote.
    labeled_emb, labeled_probs = np.array([[0.0], [10.0]]), np.array([[0.9, 0.1], [0.1, 0.9]])
    probs, emb = np.array([[0.9, 0.1], [0.1, 0.9], [0.1, 0.9]]), np.array([[0.0], [0.0], [10.0]])
    view = PoolView(size=3, probs=probs, embeddings=emb, labeled_embeddings=labeled_emb, labeled_probs=labeled_probs)
    reference = [np.mean([kl(labeled_probs[j], probs[i]) for j in range(2)]) for i in range(3)]
    assert_allclose(strategies.get("cal").scores(view), reference, atol=1e-9)
    # with one neighbour each (the labeled row nearest), only row 1 disagrees with it
    import raysweep.strategies.committee as committee

    one = committee.CAL()
    one.K = 1
    assert_allclose(one.scores(view), [0, kl([0.9, 0.1], [0.1, 0.9]), 0], atol=1e-9)


def test_oracle_takes_wrong_rows_nearly_right_first_in_each_class_share():
    # Class 0 has 4 rows, class 1 has 2: picks interleave 2:1.
    probs = np.array([
        [0.9, 0.1],  # gold 0, right
        [0.4, 0.6],  # gold 0, wrong, nearly right (p_gold 0.4)
        [0.1, 0.9],  # gold 0, wrong, far (p_gold 0.1)
        [0.6, 0.4],  # gold 0, right, unsure
        [0.8, 0.2],  # gold 1, wrong (p_gold 0.2)
        [0.3, 0.7],  # gold 1, right
    ])
    gold = np.array([0, 0, 0, 0, 1, 1])
    view = PoolView(size=6, probs=probs, pool_labels=gold)
    # class 0 order: 1, 2, 3, 0 at positions 1/8, 3/8, 5/8, 7/8; class 1: 4, 5 at 1/4, 3/4
    assert_array_equal(select("oracle", view, 6), [1, 4, 2, 3, 5, 0])


def test_the_oracle_is_for_sweeps_only_and_qbc_seeds_says_its_seeds_are_shared():
    assert strategies.get("oracle").sweep_only and not strategies.get("random").sweep_only
    assert strategies.get("qbc-seeds").shares_seeds
    assert [n for n, s in strategies.REGISTRY.items() if s.sweep_only] == ["oracle"]


@pytest.mark.parametrize("seed", range(20))
def test_factorised_badge_picks_what_the_gradient_matrix_picks(seed):
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(5), size=300).astype(np.float32)
    emb = rng.normal(size=(300, 24)).astype(np.float32)
    dense = kmeans_pp(gradient_embeddings(probs, emb), 40, np.random.default_rng(seed))
    factored = kmeans_pp_factored(*gradient_factors(probs, emb), 40, np.random.default_rng(seed))
    assert_array_equal(factored, dense)
    assert_array_equal(select("badge", PoolView(size=300, probs=probs, embeddings=emb), 40, seed), dense)


def _kmeans_float64(points, k, rng, iterations=20, tol=0.0):
    """The float64 k-means these strategies ran before (issue 33's speed change), as the reference;
    `tol`: stop once at most that share of the rows changes cluster (0: the old rule, no change)."""
    points = np.asarray(points, dtype=np.float64)
    n = len(points)
    sq = (points ** 2).sum(axis=1)

    def dists(centers):
        return np.maximum(sq[:, None] + (centers ** 2).sum(axis=1)[None, :] - 2.0 * points @ centers.T, 0.0)

    centers = np.empty((k, points.shape[1]))
    centers[0] = points[rng.integers(n)]
    d2 = dists(centers[:1])[:, 0]
    for j in range(1, k):
        centers[j] = points[int(rng.choice(n, p=d2 / d2.sum()))]
        d2 = np.minimum(d2, dists(centers[j: j + 1])[:, 0])
    assign = np.full(n, -1)
    for _ in range(iterations):
        new = dists(centers).argmin(axis=1)
        moved = (new != assign).sum()
        assign = new
        if moved <= tol * n:
            break
        counts = np.bincount(assign, minlength=k)
        sums = np.zeros_like(centers)
        np.add.at(sums, assign, points)
        centers[counts > 0] = sums[counts > 0] / counts[counts > 0, None]
    return assign


@pytest.mark.parametrize("seed, tol", [(0, 0.0), (1, 0.0), (2, 1e-3), (3, 0.05)])
def test_float32_kmeans_is_the_float64_clustering_away_from_rounding_ties(seed, tol):
    """The speed change (float32, one sorted reduction) draws the same centres from the same
    random stream and moves them the same way: on sentence-vector-like data (20 topics, 384-d)
    every row lands in the same cluster as under the float64 code, run to convergence (tol 0)
    or stopped by the same rule (at most `tol` of the rows moved in the last step)."""
    rng = np.random.default_rng(seed)
    topics = rng.normal(size=(20, 384))
    points = (topics[rng.integers(20, size=600)] + 0.8 * rng.normal(size=(600, 384))).astype(np.float32)
    assert_array_equal(kmeans(points, 30, np.random.default_rng(seed), tol=tol),
                       _kmeans_float64(points, 30, np.random.default_rng(seed), tol=tol))

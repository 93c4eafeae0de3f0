"""Each strategy against a reference computation on hand-made inputs."""

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.testing import assert_allclose, assert_array_equal
from scipy.stats import entropy as scipy_entropy

from raysweep import strategies
from raysweep.strategies import PoolView
from raysweep.strategies.diversity import gradient_embeddings, k_center_greedy, kmeans_pp
from raysweep.strategies.neighbours import SQBC, _first_k, nearest_labeled
from raysweep.strategies.uncertainty import entropy

PROBS = np.array([
    [0.90, 0.05, 0.05, 0.00],  # confident
    [0.25, 0.25, 0.25, 0.25],  # uniform: the most uncertain by every measure
    [0.50, 0.50, 0.00, 0.00],  # a coin flip between two classes: margin 0
    [0.40, 0.30, 0.20, 0.10],
    [0.70, 0.10, 0.10, 0.10],
    [0.45, 0.40, 0.10, 0.05],
])


def select(name, view, n, seed=0):
    return strategies.get(name)(view, n, np.random.default_rng(seed))


def test_entropy_matches_scipy_and_ranks_highest_first():
    assert_allclose(entropy(PROBS), [scipy_entropy(p) for p in PROBS], rtol=1e-12)
    reference = np.argsort([-scipy_entropy(p) for p in PROBS], kind="stable")
    assert_array_equal(select("entropy", PoolView(size=6, probs=PROBS), 6), reference)
    assert_array_equal(reference[:3], [1, 3, 5])


def test_margin_is_breaking_ties_smallest_gap_first():
    gaps = [sorted(p)[-1] - sorted(p)[-2] for p in PROBS]  # 0.85, 0, 0, 0.1, 0.6, 0.05
    picked = select("margin", PoolView(size=6, probs=PROBS), 6)
    assert sorted(picked[:2].tolist()) == [1, 2]  # the two zero gaps, in a seeded order
    assert_array_equal(picked[2:], [5, 3, 4, 0])
    assert_allclose(sorted(gaps), [gaps[i] for i in picked], atol=1e-12)


def test_least_confidence_lowest_top_probability_first():
    picked = select("least-confidence", PoolView(size=6, probs=PROBS), 6)
    assert_array_equal(picked, [1, 3, 5, 2, 4, 0])


def test_bald_is_mutual_information_of_the_mc_samples():
    agree = np.array([[0.5, 0.5], [0.5, 0.5]])  # unsure, but every sample agrees: no information
    flip = np.array([[1.0, 0.0], [0.0, 1.0]])  # each sample sure, of a different class: ln 2
    mild = np.array([[0.8, 0.2], [0.6, 0.4]])
    mc = np.stack([agree, flip, mild], axis=1)  # [S=2, N=3, C=2]
    reference = [scipy_entropy(mc[:, i].mean(0)) - np.mean([scipy_entropy(s) for s in mc[:, i]]) for i in range(3)]
    scores = strategies.get("bald").scores(PoolView(size=3, mc_probs=mc))
    assert_allclose(scores, reference, atol=1e-12)
    assert_allclose(scores[:2], [0.0, np.log(2)], atol=1e-12)
    assert_array_equal(select("bald", PoolView(size=3, mc_probs=mc), 3), [1, 2, 0])


# --------------------------------------------------------------------------- sqbc


def brute_force_sqbc(pool, labeled, labels, k):
    out = []
    for p in pool:
        dist = [np.sqrt(((p - q) ** 2).sum()) for q in labeled]
        nearest = sorted(range(len(labeled)), key=lambda j: (dist[j], j))[:k]  # ties: first labeled row
        votes = [labels[j] for j in nearest]
        out.append(np.sqrt(np.mean((np.array(votes) - np.mean(votes)) ** 2)))
    return np.array(out)


def test_sqbc_by_hand():
    # Pool row 0 sits between a "very negative" and a "very positive" neighbour: std 2.
    # Pool row 1 sits among three "neutral" ones: std 0.
    labeled = np.array([[-1.0, 0.0], [1.0, 0.0], [10.0, 10.0], [10.0, 11.0], [11.0, 10.0]])
    labels = np.array([0, 4, 2, 2, 2])
    pool = np.array([[0.0, 0.0], [10.2, 10.2]])
    view = PoolView(size=2, embeddings=pool, labeled_embeddings=labeled, labeled_labels=labels)
    assert_allclose(SQBC(k=2).scores(view), [2.0, 0.0])
    assert_allclose(SQBC(k=3).scores(view), [np.std([0, 4, 2]), 0.0])


def test_sqbc_matches_brute_force_with_equidistant_neighbours():
    rng = np.random.default_rng(3)
    labeled = rng.integers(-3, 4, size=(15, 2)).astype(float)  # a small integer grid: many exact ties
    labels = rng.integers(0, 5, size=15)
    pool = rng.integers(-3, 4, size=(40, 2)).astype(float)
    view = PoolView(size=40, embeddings=pool, labeled_embeddings=labeled, labeled_labels=labels)
    for k in (1, 3, 5):
        assert_allclose(SQBC(k=k).scores(view), brute_force_sqbc(pool, labeled, labels, k), atol=1e-12)
    idx = nearest_labeled(pool, labeled, 4, chunk=7)  # chunking changes nothing
    assert_array_equal(idx, nearest_labeled(pool, labeled, 4))


@settings(max_examples=200, deadline=None)
@given(dist=hnp.arrays(np.float64, st.tuples(st.integers(1, 12), st.integers(1, 15)),
                       elements=st.sampled_from([-1.0, 0.0, 0.5, 2.0, 3.25, np.inf, np.nan])
                       | st.floats(-5, 5, allow_nan=False)),
       k=st.integers(1, 16))
def test_the_partial_sort_is_the_full_stable_sorts_first_k(dist, k):
    # Few distinct values: ties at the k-th place, infinities and NaN are common, and each must
    # give the committee the full stable argsort gives (the SQBC scores of earlier runs).
    k = min(k, dist.shape[1])
    assert_array_equal(_first_k(dist, k), np.argsort(dist, axis=1, kind="stable")[:, :k])


def test_sqbc_ties_fall_in_a_seeded_order_below_every_higher_score():
    labeled = np.array([[0.0], [1.0], [10.0], [11.0]])
    labels = np.array([0, 4, 2, 2])
    pool = np.array([[0.5]] * 3 + [[10.5]] * 6)  # 3 rows disagree (std 2), 6 agree (std 0)
    view = PoolView(size=9, embeddings=pool, labeled_embeddings=labeled, labeled_labels=labels)
    firsts = set()
    for seed in range(10):
        picked = SQBC(k=2)(view, 4, np.random.default_rng(seed))
        assert sorted(picked[:3].tolist()) == [0, 1, 2]
        firsts.add(int(picked[3]))
    assert len(firsts) > 1 and firsts <= set(range(3, 9))


def test_sqbc_k_beyond_labeled_is_a_clear_error():
    view = PoolView(size=2, embeddings=np.zeros((2, 2)), labeled_embeddings=np.zeros((3, 2)),
                    labeled_labels=np.zeros(3))
    with pytest.raises(ValueError, match=r"^sqbc: k=5 neighbours but labeled has 3 rows$"):
        SQBC(k=5)(view, 1, np.random.default_rng(0))


# --------------------------------------------------------------------------- coreset


def naive_k_center(points, centers, n):
    """Greedy k-center recomputed from scratch every step with an explicit distance matrix."""
    chosen = []
    for _ in range(n):
        cover = list(centers) + [points[i] for i in chosen]
        best, best_d = None, -1.0
        for i, p in enumerate(points):
            if i in chosen:
                continue
            d = min(np.linalg.norm(p - c) for c in cover)
            if d > best_d:
                best, best_d = i, d
        chosen.append(best)
    return chosen


def test_coreset_matches_naive_greedy_k_center():
    rng = np.random.default_rng(1)
    points, labeled = rng.normal(size=(20, 3)), rng.normal(size=(4, 3))
    view = PoolView(size=20, embeddings=points, labeled_embeddings=labeled)
    assert_array_equal(select("coreset", view, 8), naive_k_center(points, labeled, 8))


def test_coreset_is_within_twice_the_optimal_k_center_radius():
    """Brute force over all C(20, 3) centre sets on 20 points: greedy is a 2-approximation."""
    rng = np.random.default_rng(2)
    points = np.concatenate([rng.normal(c, 0.3, size=(7, 2)) for c in ((0, 0), (5, 0), (0, 5))])[:20]
    dist = np.linalg.norm(points[:, None] - points[None], axis=-1)

    def radius(centers):
        return dist[:, list(centers)].min(axis=1).max()

    optimal = min(radius(c) for c in itertools.combinations(range(20), 3))
    for seed in range(5):
        picked = k_center_greedy(points, np.empty((0, 2)), 3, np.random.default_rng(seed))
        assert radius(picked) <= 2 * optimal + 1e-12
        assert len({int(p) // 7 for p in picked}) == 3  # one centre in each of the three clusters


# --------------------------------------------------------------------------- badge


def test_gradient_embeddings_are_the_head_gradient_for_the_predicted_label():
    torch.manual_seed(0)
    head = torch.nn.Linear(6, 4)
    h = torch.randn(5, 6)
    logits = head(h)
    probs = torch.softmax(logits, -1).detach().numpy()
    ours = gradient_embeddings(probs, h.numpy())
    for i in range(5):
        head.zero_grad()
        torch.nn.functional.cross_entropy(head(h[i: i + 1]), logits[i: i + 1].argmax(-1)).backward()
        assert_allclose(ours[i], head.weight.grad.flatten().numpy(), rtol=1e-5, atol=1e-6)


def test_kmeans_pp_starts_at_the_largest_norm_and_covers_separated_clusters():
    rng = np.random.default_rng(0)
    clusters = [rng.normal(c, 0.01, size=(5, 2)) for c in ((0, 30), (30, 0), (-30, 0), (0, -31))]
    points = np.concatenate(clusters)
    for seed in range(5):
        picked = kmeans_pp(points, 4, np.random.default_rng(seed))
        assert picked[0] == np.argmax(np.linalg.norm(points, axis=1))
        assert sorted(int(p) // 5 for p in picked) == [0, 1, 2, 3]


def test_kmeans_pp_draws_proportional_to_squared_distance():
    points = np.array([[3.0, 0.0], [2.0, 0.0], [1.0, 0.0], [0.0, 0.0]])  # the first pick is row 0
    d2 = ((points - points[0]) ** 2).sum(1)[1:]  # 1, 4, 9 for rows 1, 2, 3
    draws = 4000
    counts = np.bincount([kmeans_pp(points, 2, np.random.default_rng(s))[1] for s in range(draws)], minlength=4)
    expected = draws * d2 / d2.sum()
    assert counts[0] == 0
    # Within 4 binomial standard deviations of D^2 sampling's expectation.
    sd = np.sqrt(expected * (1 - d2 / d2.sum()))
    assert np.all(np.abs(counts[1:] - expected) < 4 * sd), (counts, expected)

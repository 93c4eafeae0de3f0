"""Choosing a batch from a large pool a run of rows at a time: memory bounded by a run, not the pool.

`raysweep select` on 100,000+ rows in a pooled freeze mode cannot hold the pool's vectors, its
scores under the head, or the strategies' copies of them (a float64 copy of 100,000 x 384 is
300 MB). So every strategy `select` offers reads the pool in runs of RUN_ROWS rows:

- the ranking strategies (entropy, margin, least-confidence, bald, sqbc, cal) score each run
  (`scoring.score_in_chunks` over the memory-mapped cache) and keep a running selection of the
  best `n` rows by (score, seeded tie order): the top `n` of the best `n` so far and a run is the
  top `n` of everything seen, so the batch is the one ranking the whole pool picks;
- cluster-margin keeps the smallest-margin candidates the same way, then clusters only them;
- random needs nothing scored but the picks' own probabilities;
- qbc-seeds (a committee of other models) and typiclust (k-means over the whole pool) run in
  memory (`scoring.pool_view`); the oracle reads gold labels `select` never has and is refused;
- coreset, badge and the k-center cold start are greedy over the whole pool: each pick is the
  row farthest from what is covered. The head's vectors (or BADGE's probabilities and vectors,
  the two factors of its gradient embedding: never the C x H product) are written once to a spill file, and each pick reads it back run by run, keeping only each
  row's distance to the nearest pick and its squared norm.

What stays in memory grows with the pool only as these per-row arrays: the pool's row positions
(int64), the seeded tie-break order (int64), and for the greedy strategies each row's distance
and squared norm (float64 each), and BADGE's cumulative sum of the distances. The batch's
candidates (`n` rows, 5n with `diverse`) keep their vectors and probabilities.

Every number is the in-memory path's (`scoring.pool_view` then the strategy): the same CHUNK-row
scoring steps and MC-dropout seeds, the same float64 arithmetic row by row, the same random
draws in the same order (tests/test_select_scale.py compares the batches).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from raysweep import scoring
from raysweep.console import progress
from raysweep.strategies import RankingStrategy, Strategy
from raysweep.strategies.clusters import margins
from raysweep.strategies.diversity import _min_sq_dist, _sq_dist_to, gradient_factors, gradient_scale

# Rows per run: a whole number of scoring chunks (scoring.CHUNK) and of the 1,024-row blocks
# the diversity and SQBC distance code works in, so runs cut the pool where they do. 8,192
# rows of 384-d float64 are 25 MB.
RUN_ROWS = 8192
GREEDY = ("coreset", "badge")


def handles(strategy: Strategy) -> bool:
    """Whether the strategy has a chunked path here (the rest use the in-memory `pool_view`):
    a committee's other models (qbc-seeds) are scored in memory, and typiclust clusters the whole
    pool's vectors at once."""
    if strategy.needs & {"committee_probs", "pool_labels"}:
        return False
    return isinstance(strategy, RankingStrategy) or strategy.name in ("random", "cluster-margin", *GREEDY)


@dataclass
class Picks:
    """The batch: positions into the pool (best first), their scores (None for a strategy without
    one), the head's class probabilities and sentence vectors of each."""

    positions: np.ndarray
    scores: np.ndarray | None
    probs: np.ndarray
    embeddings: np.ndarray


class RunningTop:
    """The best `n` rows seen so far, by descending score, then ascending tie order."""

    def __init__(self, n: int, hidden: int, classes: int):
        self.n = n
        self.pos = np.empty(0, dtype=np.int64)
        self.score = np.empty(0, dtype=np.float64)
        self.tie = np.empty(0, dtype=np.int64)
        self.probs = np.empty((0, classes), dtype=np.float32)
        self.embeddings = np.empty((0, hidden), dtype=np.float32)

    def add(self, pos, score, tie, probs, embeddings) -> None:
        pos, score, tie = (np.concatenate([self.pos, pos]), np.concatenate([self.score, score]),
                           np.concatenate([self.tie, tie]))
        # lexsort sorts by the last key first: as RankingStrategy.select_scored over the whole pool.
        keep = np.lexsort((tie, -score))[: self.n]
        self.pos, self.score, self.tie = pos[keep], score[keep], tie[keep]
        self.probs = np.concatenate([self.probs, probs])[keep]
        self.embeddings = np.concatenate([self.embeddings, embeddings])[keep]


def _labeled_outputs(model, acts, rows: np.ndarray, pool_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The head's vectors and probabilities of the labeled rows (after the pool in `rows`), scored
    in the chunks the in-memory path scores them in (the first may also hold the pool's last rows)."""
    lo = pool_size // scoring.CHUNK * scoring.CHUNK
    runs = [(max(0, pool_size - start), out)
            for start, out in scoring.score_in_chunks(model, acts, rows, lo=lo, run_rows=scoring.CHUNK * 16)]
    if not runs:
        return (np.empty((0, model.linear.in_features), dtype=np.float32),
                np.empty((0, model.linear.out_features), dtype=np.float32))
    return tuple(np.concatenate([out[key][skip:] for skip, out in runs]) for key in ("embeddings", "probs"))


def _pool_runs(model, acts, rows: np.ndarray, pool_size: int, mc_samples: int, seed: int, what: str):
    """(first pool position, that run's scores) over the pool's rows, with a progress bar."""
    with progress(pool_size, what) as bar:
        for start, out in scoring.score_in_chunks(model, acts, rows, mc_samples=mc_samples, seed=seed,
                                                  run_rows=RUN_ROWS):
            if start >= pool_size:
                break
            m = min(len(out["probs"]), pool_size - start)  # the last run may reach into the labeled rows
            out = {k: v[:m] for k, v in out.items()}
            yield start, out
            bar.update(m)


def ranked(strategy: Strategy, model, acts, pool: np.ndarray, labeled: np.ndarray, labeled_labels: np.ndarray,
           n: int, rng: np.random.Generator, mc_samples: int, seed: int, work_dir: str | Path) -> Picks:
    """What `strategy.ranked(pool_view(...), n, rng)` picks, reading the pool in runs."""
    rows = np.concatenate([np.asarray(pool, dtype=np.int64), np.asarray(labeled, dtype=np.int64)])
    size = len(pool)
    mc = mc_samples if "mc_probs" in strategy.needs else 0
    if not 1 <= n <= size:
        raise ValueError(f"{strategy.name}: cannot select {n} rows from a pool of {size}")
    if strategy.name in GREEDY:
        return _greedy(strategy, model, acts, rows, size, labeled, n, rng, work_dir)
    if isinstance(strategy, RankingStrategy) or strategy.name == "cluster-margin":
        labeled_emb, labeled_probs = (_labeled_outputs(model, acts, rows, size)
                                      if strategy.needs & {"labeled_embeddings", "labeled_probs"} else (None, None))
        tie = rng.permutation(size)  # the draw RankingStrategy.select_scored (and cluster-margin) makes
        margin = strategy.name == "cluster-margin"  # its candidates: the smallest margins, as a ranking
        top = RunningTop(strategy.candidates(size, n) if margin else n, model.linear.in_features,
                         model.linear.out_features)
        for start, out in _pool_runs(model, acts, rows, size, mc, seed, f"scoring the pool ({strategy.name})"):
            at = np.arange(start, start + len(out["probs"]))
            view = _run_view(out, labeled_emb, labeled_labels, labeled_probs)
            score = -margins(out["probs"]) if margin else np.asarray(strategy.scores(view), dtype=np.float64)
            top.add(at, score, tie[at], out["probs"], out["embeddings"])
        if margin:
            keep = strategy.spread(top.embeddings.astype(np.float64), n, rng)
            return Picks(top.pos[keep], None, top.probs[keep], top.embeddings[keep])
        return Picks(top.pos, top.score, top.probs, top.embeddings)
    # random: the picks need no score, only their own probabilities.
    positions = rng.permutation(size)[:n]
    return _with_outputs(model, acts, rows, size, positions, None)


def _run_view(out: dict, labeled_emb, labeled_labels, labeled_probs=None):
    from raysweep.strategies import PoolView

    mc = np.ascontiguousarray(out["mc"].transpose(1, 0, 2)) if "mc" in out else None
    return PoolView(size=len(out["probs"]), probs=out["probs"], embeddings=out["embeddings"],
                    labeled_embeddings=labeled_emb, labeled_labels=np.asarray(labeled_labels), mc_probs=mc,
                    labeled_probs=labeled_probs)


def _with_outputs(model, acts, rows, size: int, positions: np.ndarray, scores) -> Picks:
    """The picks' probabilities and vectors (one more pass; only the picks' are kept)."""
    positions = np.asarray(positions, dtype=np.int64)
    where = {int(p): i for i, p in enumerate(positions)}
    probs = np.empty((len(positions), model.linear.out_features), dtype=np.float32)
    emb = np.empty((len(positions), model.linear.in_features), dtype=np.float32)
    for start, out in _pool_runs(model, acts, rows, size, 0, 0, "scoring the batch"):
        for p in positions[(positions >= start) & (positions < start + len(out["probs"]))]:
            probs[where[int(p)]], emb[where[int(p)]] = out["probs"][p - start], out["embeddings"][p - start]
    return Picks(positions, scores, probs, emb)


# --------------------------------------------------------------------------- greedy over the whole pool


class Spill:
    """A float32 [rows, width] file written once, read back run by run as float64 (the dtype the
    greedy strategies compute in), through a `transform` of each run if given."""

    def __init__(self, path: Path, rows: int, width: int, transform=None):
        self.path, self.rows, self.width, self.transform = path, rows, width, transform
        self.fh = open(path, "wb")

    def write(self, block: np.ndarray) -> None:
        self.fh.write(np.ascontiguousarray(block, dtype=np.float32).tobytes())

    def runs(self):
        """(start, [m, D] float64) for each run; plain reads, so nothing stays mapped."""
        self.fh.flush()
        with open(self.path, "rb") as fh:
            for start in range(0, self.rows, RUN_ROWS):
                m = min(RUN_ROWS, self.rows - start)
                block = np.fromfile(fh, dtype=np.float32, count=m * self.width).reshape(m, self.width)
                yield start, self._points(block)

    def row(self, i: int) -> np.ndarray:
        with open(self.path, "rb") as fh:
            fh.seek(int(i) * self.width * 4)
            return self._points(np.fromfile(fh, dtype=np.float32, count=self.width).reshape(1, -1))[0]

    def _points(self, block: np.ndarray) -> np.ndarray:
        return np.asarray(self.transform(block) if self.transform else block, dtype=np.float64)

    def close(self) -> None:
        self.fh.close()
        self.path.unlink(missing_ok=True)


def spill_vectors(model, acts, rows: np.ndarray, size: int, work_dir: str | Path, with_probs: bool,
                  what: str) -> Spill:
    """The head's vectors of the pool (with its probabilities first if `with_probs`) in a spill file."""
    classes, hidden = model.linear.out_features, model.linear.in_features
    fd, name = tempfile.mkstemp(prefix="pool-vectors-", suffix=".f32", dir=work_dir)
    os.close(fd)
    spill = Spill(Path(name), size, hidden + (classes if with_probs else 0))
    try:
        for _, out in _pool_runs(model, acts, rows, size, 0, 0, what):
            spill.write(np.hstack([out["probs"], out["embeddings"]]) if with_probs else out["embeddings"])
    except BaseException:
        spill.close()
        raise
    return spill


def _sq_norms(spill: Spill) -> np.ndarray:
    return np.concatenate([(points ** 2).sum(axis=1) for _, points in spill.runs()])


def k_center(spill: Spill, centers: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """`strategies.diversity.k_center_greedy` over the spilled points: O(rows) floats of state."""
    sq_norms = _sq_norms(spill)
    rank = rng.permutation(spill.rows)
    if len(centers):
        centers = np.asarray(centers, dtype=np.float64)
        min_d = np.concatenate([_min_sq_dist(points, centers) for _, points in spill.runs()])
    else:
        min_d = np.full(spill.rows, np.inf)
    picked = np.empty(n, dtype=np.int64)
    with progress(n, "k-center picks", unit="picks") as bar:
        for i in range(n):
            best = np.flatnonzero(min_d == min_d.max())
            pick = best[np.argmin(rank[best])]
            picked[i] = pick
            center = spill.row(pick)
            for start, points in spill.runs():
                at = slice(start, start + len(points))
                min_d[at] = np.minimum(min_d[at], _sq_dist_to(points, sq_norms[at], center))
            min_d[pick] = -np.inf
            bar.update()
    return picked


def kmeans_pp(spill: Spill, classes: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """`strategies.diversity.kmeans_pp_factored` (BADGE's seeding) over spilled [probs | vectors]:
    the gradient embeddings' norms and distances from their two factors, run by run."""

    def factors(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return gradient_factors(points[:, :classes], points[:, classes:])

    sq_norms = np.concatenate([(s ** 2).sum(axis=1) * (h ** 2).sum(axis=1)
                               for s, h in (factors(points) for _, points in spill.runs())])
    rank = rng.permutation(spill.rows)
    top = np.flatnonzero(sq_norms == sq_norms.max())
    picked = [int(top[np.argmin(rank[top])])]

    def distances_to(pick: int, d2: np.ndarray | None) -> np.ndarray:
        center = spill.row(pick)[None]
        s_c = gradient_scale(center[:, :classes])
        h_c = np.asarray(center[0, classes:], dtype=np.float32)
        parts = []
        for start, points in spill.runs():
            s = gradient_scale(points[:, :classes])
            # the vectors' dot in float32, as kmeans_pp_factored takes it: the same picks
            dots = (np.asarray(points[:, classes:], dtype=np.float32) @ h_c).astype(np.float64)
            sq = sq_norms[start: start + len(points)]
            parts.append(np.maximum(sq + sq_norms[pick] - 2.0 * (s @ s_c[0]) * dots, 0.0))
        d = np.concatenate(parts)
        return d if d2 is None else np.minimum(d2, d)

    d2 = distances_to(picked[0], None)
    d2[picked[0]] = 0.0
    chosen = np.zeros(spill.rows, dtype=bool)
    chosen[picked[0]] = True
    with progress(n, "badge picks", unit="picks") as bar:
        bar.update()
        while len(picked) < n:
            total = d2.sum()
            if total > 0:
                cum = np.cumsum(d2)
                pick = int(min(np.searchsorted(cum, rng.random() * total, side="right"), spill.rows - 1))
                del cum
                if chosen[pick]:
                    pick = int(np.flatnonzero(~chosen & (d2 > 0))[-1])
            else:
                rest = np.flatnonzero(~chosen)
                pick = int(rest[np.argmin(rank[rest])])
            picked.append(pick)
            chosen[pick] = True
            d2 = distances_to(pick, d2)
            d2[chosen] = 0.0
            bar.update()
    return np.asarray(picked, dtype=np.int64)


def _greedy(strategy: Strategy, model, acts, rows: np.ndarray, size: int, labeled: np.ndarray, n: int,
            rng: np.random.Generator, work_dir: str | Path) -> Picks:
    badge = strategy.name == "badge"
    spill = spill_vectors(model, acts, rows, size, work_dir, with_probs=badge,
                          what=f"scoring the pool ({strategy.name})")
    try:
        if badge:
            positions = kmeans_pp(spill, model.linear.out_features, n, rng)
        else:
            positions = k_center(spill, _labeled_outputs(model, acts, rows, size)[0], n, rng)
    finally:
        spill.close()
    return _with_outputs(model, acts, rows, size, positions, None)


def cold_start_k_center(blank, acts, pool: np.ndarray, n: int, rng: np.random.Generator,
                        work_dir: str | Path) -> np.ndarray:
    """k-center on an untrained head's vectors of the pool (nothing labeled yet)."""
    rows = np.asarray(pool, dtype=np.int64)
    spill = spill_vectors(blank, acts, rows, len(rows), work_dir, with_probs=False, what="encoder vectors (cold start)")
    try:
        return k_center(spill, np.empty((0, spill.width)), n, rng)
    finally:
        spill.close()

"""Scoring the pool for the model-based strategies, computed once and shared.

A model-based strategy ranks the pool by what a model trained on `labeled` says about it:
class probabilities, sentence vectors (the input of the head), MC-dropout samples. That model
is the same for every fraction of a (strategy, freeze, seed) and for every strategy of a
(freeze, seed): the study's recipe, the trial's freeze mode and seed, the rows of `labeled`.
So it is trained once, and the pool is scored once under it:

    <cache>/selection/models/<key>.pt    the trained state; key: activations, rows, labels, recipe, seed
    <cache>/selection/scores/<key>.npz   probs + embeddings ("base") or MC samples ("mc") of some rows
                                         under one model state; key: the state's hash, activations, rows

Scoring runs on the cached frozen activations (`embed.py`): only the trainable part runs. The
sweep's driver scores every (freeze, seed) in one Ray Data pass over shards of the rows, on one
pool of actors that rebuild each model from its state (one GPU per actor on GPU nodes); trials
and tests score in-process. Both paths score the same fixed chunks of rows and seed MC dropout
per chunk, so their results are identical and never depend on how the rows were sharded.
"""

from __future__ import annotations

import dataclasses
import io
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from raysweep import strategies
from raysweep.backbone import Classifier
from raysweep.cluster import actor_pool
from raysweep.config import RecipeConfig, SelectionConfig
from raysweep.console import progress
from raysweep.dashboard import dataset_name, trained
from raysweep.embed import Activations, load_activations
from raysweep.hashing import array_digest, json_digest, state_digest
from raysweep.model import Member, TrainingSpec, assigned_device, model_path, rebuild, train_remote, trained_model
from raysweep.storage import Output, atomic_write, receive, ship
from raysweep.tasks import Task

FORMAT_VERSION = 1  # bump when what is stored changes: old entries are then simply not found
CHUNK = 64  # rows per scoring step; the unit of MC-dropout seeding, so results ignore sharding
BASE_NEEDS = frozenset({"probs", "embeddings", "labeled_embeddings", "labeled_probs"})
# Pooled rows only go through the head (a dense layer or two): in-process scores ~2,000-3,000
# rows/s with 10 MC samples, while a Ray Data pass pays 15-50 s to start its actors and ship the
# models (benchmarks/scoring.py, 4,096 rows on 2 cores: 1.3 s in-process vs 52 s Ray Data for
# last-linear; 298 s vs 145 s for last-attention, whose token-level rows run a transformer
# layer). So `use_ray` sends token-level jobs to Ray Data always, pooled jobs only when they
# are this many rows or more in all.
RAY_MIN_POOLED_ROWS = 500_000


def _digest(obj) -> str:
    return json_digest(obj, 24)


# --------------------------------------------------------------------------- scoring rows under one model


@dataclass
class Scores:
    """What one model says about some rows (in the order the rows were given)."""

    probs: np.ndarray | None = None  # [N, C] softmax of the head, dropout off (a regression: [N, 1] scores)
    embeddings: np.ndarray | None = None  # [N, H] sentence vectors: the head's input
    mc_probs: np.ndarray | None = None  # [S, N, C] softmax with dropout on, S seeded samples


def chunk_plan(acts: Activations, rows: np.ndarray) -> np.ndarray:
    """The chunk (0, 1, ...) each position of `rows` is scored in.

    Token-level rows are chunked by length so a chunk pads little, which makes scoring
    last-attention about twice as fast; pooled rows are chunked in order.
    """
    order = np.argsort(acts.lengths(rows), kind="stable") if acts.boundary.ragged else np.arange(len(rows))
    plan = np.empty(len(rows), dtype=np.int64)
    plan[order] = np.arange(len(rows)) // CHUNK
    return plan


def _mc_seed(seed: int, chunk: int) -> int:
    return int(np.random.SeedSequence([seed, chunk, 7]).generate_state(1)[0])


@torch.no_grad()
def score_chunks(model: Classifier, acts: Activations, rows: np.ndarray, chunks: np.ndarray, base: bool,
                 mc_samples: int, seed: int, device: str = "cpu") -> dict[str, np.ndarray]:
    """Score `rows` chunk by chunk: {"probs", "embeddings"} if `base`, {"mc"} [N, S, C] if `mc_samples`."""
    rows, chunks = np.asarray(rows), np.asarray(chunks)
    n = len(rows)
    num_classes, hidden = model.linear.out_features, model.linear.in_features
    task = model.task  # softmax over classes, or a regression's score
    out = {}
    if base:
        out["probs"] = np.empty((n, num_classes), dtype=np.float32)
        out["embeddings"] = np.empty((n, hidden), dtype=np.float32)
    if mc_samples:
        out["mc"] = np.empty((n, mc_samples, num_classes), dtype=np.float32)
    for chunk in np.unique(chunks):
        at = np.flatnonzero(chunks == chunk)
        x, mask = acts.batch(rows[at])
        x = x.to(device)
        mask = mask.to(device) if mask is not None else None
        if base:
            model.eval()
            h = model.sentence_vector(x, mask)
            out["embeddings"][at] = h.float().cpu().numpy()
            out["probs"][at] = task.predict(model.linear(h)).float().cpu().numpy()
        if mc_samples:
            devices = [torch.cuda.current_device()] if device.startswith("cuda") else []
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(_mc_seed(seed, int(chunk)))
                model.train()  # dropout on: the head's, and the top layers' own
                samples = [task.predict(model(x, mask)) for _ in range(mc_samples)]
            model.eval()
            out["mc"][at] = torch.stack(samples, dim=1).float().cpu().numpy()
    return out


def score_in_chunks(model: Classifier, acts: Activations, rows: np.ndarray, lo: int = 0, base: bool = True,
                    mc_samples: int = 0, seed: int = 0, run_rows: int = 8192):
    """Score positions `lo`.. of `rows` (pooled activations) a run of `run_rows` at a time: yields
    (start, what `score_chunks` returns for rows[start:start + run_rows]).

    The runs are whole CHUNK-row steps of the plan `score_chunks` follows over all of `rows`, so
    every number (MC-dropout masks included) equals the in-memory path's, while memory holds one
    run. Each run reads a fresh map of the cache entry: a map's pages count in the process's
    resident memory while it lives, and one map over a whole pass ends up holding the file."""
    if acts.boundary.ragged or run_rows % CHUNK or lo % CHUNK:
        raise ValueError("score_in_chunks: pooled activations and runs of whole chunks only")
    rows = np.asarray(rows, dtype=np.int64)
    device = assigned_device()
    model.to(device)
    try:
        for start in range(lo, len(rows), run_rows):
            at = np.arange(start, min(start + run_rows, len(rows)))
            yield start, score_chunks(model, load_activations(acts.path), rows[at], at // CHUNK, base, mc_samples,
                                      seed, device)
    finally:
        model.cpu()


@dataclass
class ScoringJob:
    """Rows of one activation set to score under one model."""

    model: Classifier
    acts: Activations
    rows: np.ndarray
    base: bool = True  # probs and embeddings
    mc_samples: int = 0  # MC-dropout samples per row (0: none)
    seed: int = 0  # seeds the MC-dropout masks


class PoolScorer:
    """Ray Data callable class: scores a block per call with the model of the block's job.

    One pass serves several jobs (the models of every (freeze, seed) of a sweep), so the actor
    pool starts once; an actor rebuilds a job's model from its state the first time it meets
    one of its blocks. A block holds whole chunks of one job, so the actor scores exactly the
    chunks the in-process path scores.
    """

    def __init__(self, jobs: list[dict], threads: int = 1):
        torch.set_num_threads(max(1, threads))
        self.device = assigned_device()
        self.jobs = jobs
        self.loaded: dict[int, tuple[Classifier, Activations]] = {}

    def _model(self, j: int) -> tuple[Classifier, Activations]:
        if j not in self.loaded:
            spec = self.jobs[j]
            acts = load_activations(receive(spec["acts"]))  # fetched once per node (storage.receive)
            state = torch.load(io.BytesIO(spec["state"]), weights_only=True)
            task = Task(**spec["task"]) if spec.get("task") else None
            self.loaded[j] = (rebuild(acts, state, spec["dropout"], spec["freeze"], task).to(self.device), acts)
        return self.loaded[j]

    def __call__(self, batch: dict) -> dict:
        j = int(batch["job"][0])
        model, acts = self._model(j)
        spec = self.jobs[j]
        out = score_chunks(model, acts, batch["row"], batch["chunk"], spec["base"], spec["mc_samples"],
                           spec["seed"], self.device)
        return {"job": np.asarray(batch["job"]), "pos": np.asarray(batch["pos"]), **out}


def _score_ray(jobs: list[ScoringJob], actors: int, block_rows: int, bar=None, out: Output | None = None
               ) -> list[dict[str, np.ndarray]]:
    """Score every job in one Ray Data pass (all jobs compute the same kinds of score).

    The actors find each job's activations through `storage.ship` (the object store for a small
    entry, `out`'s storage for token states), so they may run on nodes that never saw the
    driver's cache."""
    import pandas as pd
    import ray

    pool = actor_pool(actors)
    frames, specs = [], []
    for j, job in enumerate(jobs):
        chunks = chunk_plan(job.acts, job.rows)
        n_chunks = int(chunks.max()) + 1
        # Blocks of whole chunks of one job; a small job still gets two blocks per actor.
        per_block = max(1, min(block_rows // CHUNK, -(-n_chunks // (pool.max_size * 2))))
        positions = np.arange(len(job.rows))
        for first in range(0, n_chunks, per_block):
            at = positions[(chunks >= first) & (chunks < first + per_block)]
            frames.append(pd.DataFrame({"job": j, "pos": at, "row": job.rows[at], "chunk": chunks[at]}))
        buf = io.BytesIO()
        torch.save({k: v.cpu() for k, v in job.model.state_dict().items()}, buf)
        specs.append({"state": buf.getvalue(), "acts": ship(job.acts.path, out), "dropout": job.model.dropout.p,
                      "freeze": job.model.freeze, "task": dataclasses.asdict(job.model.task),
                      "base": job.base, "mc_samples": job.mc_samples, "seed": job.seed})
    ds = ray.data.from_pandas(frames).map_batches(
        PoolScorer,
        fn_constructor_kwargs={"jobs": specs},
        batch_size=None,  # one call per block: blocks are whole chunks of one job, and must stay so
        batch_format="numpy",
        compute=pool.strategy(limit=len(frames)),
        num_cpus=1,
        num_gpus=pool.gpus,
    )
    ds.set_name(dataset_name("score"))  # the dashboard's Ray Data view: raysweep:<sweep>:score_<id>
    outs: list[dict[str, np.ndarray]] = [{} for _ in jobs]
    seen = [np.zeros(len(job.rows), dtype=bool) for job in jobs]
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        j, pos = int(batch["job"][0]), batch["pos"]
        for key in ("probs", "embeddings", "mc"):
            if key in batch:
                if key not in outs[j]:
                    outs[j][key] = np.empty((len(jobs[j].rows), *batch[key].shape[1:]), dtype=np.float32)
                outs[j][key][pos] = batch[key]
        seen[j][pos] = True
        if bar is not None:
            bar.update(len(pos))
    lost = sum(int((~s).sum()) for s in seen)
    if lost:
        raise RuntimeError(f"pool scoring: {lost} rows came back from Ray Data without scores")
    return outs


def _cache_paths(job: ScoringJob, cache_dir: str | Path | None) -> tuple[Path | None, Path | None]:
    """(base entry, MC entry) of a job: keyed by the model's state, the activations and the rows."""
    if cache_dir is None:
        return None, None
    common = {"v": FORMAT_VERSION, "state": state_digest(job.model), "acts": job.acts.path.name,
              "rows": array_digest(job.rows), "chunk": CHUNK}
    mc = {**common, "kind": "mc", "samples": job.mc_samples, "seed": job.seed}
    root = Path(cache_dir) / "selection" / "scores"
    return root / f"{_digest({**common, 'kind': 'base'})}.npz", root / f"{_digest(mc)}.npz"


def score_many(jobs: list[ScoringJob], cache_dir: str | Path | None = None, use_ray: bool = False,
               actors: int = 0, block_rows: int = 1024, log=None, out: Output | None = None,
               rows_are: str = "rows") -> list[Scores]:
    """Scores of each job, from the cache where present, the rest computed now.

    `use_ray` scores through Ray Data (Ray must be initialised), every job in one pass so the
    actor pool starts once; otherwise the jobs are scored one after another in this process.
    Pooled jobs too small to pay for Ray Data's start-up are scored in-process even with
    `use_ray` (see RAY_MIN_POOLED_ROWS). `rows_are`: what the rows are, for the stage line.
    """
    results, todo = [], []  # todo: (index into results, what is missing, base entry, MC entry)
    for job in jobs:
        job.rows = np.asarray(job.rows, dtype=np.int64)
        base_path, mc_path = _cache_paths(job, cache_dir)
        scores = Scores()
        if job.base and base_path is not None and base_path.exists():
            with np.load(base_path) as npz:
                scores.probs, scores.embeddings = npz["probs"], npz["embeddings"]
        if job.mc_samples and mc_path is not None and mc_path.exists():
            with np.load(mc_path) as npz:
                scores.mc_probs = npz["mc_probs"]
        missing = ScoringJob(job.model, job.acts, job.rows, base=job.base and scores.probs is None,
                             mc_samples=job.mc_samples if scores.mc_probs is None else 0, seed=job.seed)
        if missing.base or missing.mc_samples:
            todo.append((len(results), missing, base_path, mc_path))
        results.append(scores)
    if not todo:
        return results

    start = time.perf_counter()
    outs: dict[int, dict[str, np.ndarray]] = {}
    remote = []
    with progress(sum(len(m.rows) for _, m, _, _ in todo), "scoring the pool") as bar:
        if use_ray:
            pooled = sum(len(m.rows) for _, m, _, _ in todo if not m.acts.boundary.ragged)
            remote = [(i, m) for i, m, _, _ in todo if m.acts.boundary.ragged or pooled >= RAY_MIN_POOLED_ROWS]
            # One pass per kind of score; in a sweep every job asks for the same kinds: one pass.
            for kind in sorted({(m.base, m.mc_samples) for _, m in remote}):
                group = [(i, m) for i, m in remote if (m.base, m.mc_samples) == kind]
                outs.update(zip([i for i, _ in group], _score_ray([m for _, m in group], actors, block_rows, bar, out)))
        device = assigned_device()
        for i, m, _, _ in todo:
            if i not in outs:
                outs[i] = score_chunks(m.model.to(device), m.acts, m.rows, chunk_plan(m.acts, m.rows), m.base,
                                       m.mc_samples, m.seed, device)
                m.model.cpu()
                bar.update(len(m.rows))
    for i, m, base_path, mc_path in todo:
        out, scores = outs[i], results[i]
        if m.base:
            scores.probs, scores.embeddings = out["probs"], out["embeddings"]
            if base_path is not None:
                atomic_write(base_path, lambda tmp: np.savez(tmp, probs=scores.probs, embeddings=scores.embeddings))
        if m.mc_samples:
            scores.mc_probs = np.ascontiguousarray(out["mc"].transpose(1, 0, 2))
            if mc_path is not None:
                atomic_write(mc_path, lambda tmp: np.savez(tmp, mc_probs=scores.mc_probs))
    if log is not None:
        base, mc = any(m.base for _, m, _, _ in todo), max(m.mc_samples for _, m, _, _ in todo)
        what = " + ".join(k for k, on in (("probs/embeddings", base), (f"{mc} MC samples", mc)) if on)
        where = ("Ray Data" if len(remote) == len(todo) else "in-process" if not remote
                 else f"Ray Data for {len(remote)} token-level, in-process for {len(todo) - len(remote)} pooled")
        log(f"scored {scored_what([len(m.rows) for _, m, _, _ in todo], rows_are)} ({what}) "
            f"in {time.perf_counter() - start:.2f} s ({where})")
    return results


def scored_what(rows: list[int], rows_are: str = "rows") -> str:
    """How many rows were scored, in words: the rows each model scored, not their sum over
    models (a pool of 6,835 rows under 3 models is not "20,505 rows")."""
    if len(rows) == 1:
        return f"{rows[0]:,} {rows_are} under 1 scoring model"
    if len(set(rows)) == 1:
        return f"{rows[0]:,} {rows_are} under each of {len(rows)} scoring models"
    return f"{min(rows):,} to {max(rows):,} {rows_are} under each of {len(rows)} scoring models"


def score_rows(model: Classifier, acts: Activations, rows: np.ndarray, base: bool = True, mc_samples: int = 0,
               seed: int = 0, cache_dir: str | Path | None = None, use_ray: bool = False, actors: int = 0,
               block_rows: int = 1024, log=None) -> Scores:
    """Scores of `rows` of `acts` under `model`: one job of `score_many`."""
    return score_many([ScoringJob(model, acts, rows, base, mc_samples, seed)], cache_dir, use_ray, actors,
                      block_rows, log)[0]


# --------------------------------------------------------------------------- what a strategy sees


def _job_for(needs: frozenset[str], model: Classifier, acts: Activations, pool_rows: np.ndarray, labeled: np.ndarray,
             selection: SelectionConfig, seed: int) -> ScoringJob:
    # Pool and labeled rows in one job: SQBC and coreset need the labeled rows' embeddings, and
    # every strategy of a (freeze, seed) then reads the same cached entry.
    rows = np.concatenate([np.asarray(pool_rows, dtype=np.int64), np.asarray(labeled, dtype=np.int64)])
    return ScoringJob(model, acts, rows, base=bool(needs & BASE_NEEDS),
                      mc_samples=selection.mc_samples if "mc_probs" in needs else 0, seed=seed)


def _view(needs: frozenset[str], scores: Scores, n: int, labeled_labels: np.ndarray) -> strategies.PoolView:
    view = strategies.PoolView(size=n, labeled_labels=np.asarray(labeled_labels))
    if scores.probs is not None:
        view.probs, view.embeddings = scores.probs[:n], scores.embeddings[:n]
        view.labeled_embeddings, view.labeled_probs = scores.embeddings[n:], scores.probs[n:]
    if scores.mc_probs is not None:
        view.mc_probs = scores.mc_probs[:, :n]
    return view


def pool_view(needs: frozenset[str], model: Classifier, acts: Activations, pool_rows: np.ndarray, labeled: np.ndarray,
              labeled_labels: np.ndarray, selection: SelectionConfig, seed: int,
              cache_dir: str | Path | None = None, use_ray: bool = False, log=None) -> strategies.PoolView:
    """The `PoolView` a strategy with `needs` ranks `pool_rows` (positions into acts) by."""
    job = _job_for(needs, model, acts, pool_rows, labeled, selection, seed)
    [scores] = score_many([job], cache_dir, use_ray, selection.actors, selection.batch_size, log)
    return _view(needs, scores, len(pool_rows), labeled_labels)


def committee_probs(models: list[Classifier], seeds: list[int], acts: Activations, pool_rows: np.ndarray,
                    labeled: np.ndarray, labeled_labels: np.ndarray, selection: SelectionConfig,
                    cache_dir: str | Path | None = None, log=None) -> np.ndarray:
    """[M, pool, C]: the pool under each model of a committee (qbc-seeds), from the same cached
    entries the models' own seeds score the pool into."""
    return np.stack([pool_view(frozenset({"probs"}), m, acts, pool_rows, labeled, labeled_labels, selection, s,
                               cache_dir, log=log).probs for m, s in zip(models, seeds)])


# --------------------------------------------------------------------------- the sweep's shared pass


def prepare_scores(jobs: list[tuple[str, int]], inputs: dict, recipe: RecipeConfig, selection: SelectionConfig,
                   mc: bool = False, use_ray: bool = False, log=print, out: Output | None = None,
                   resources=None) -> dict[tuple[str, int], strategies.PoolView]:
    """For each (freeze, seed): the model trained on `labeled` and its scores of pool and labeled
    rows, in the cache where trials look for them. Returns each job's view (probs, embeddings).

    `inputs` maps a freeze mode to its `train.TrialInputs` (whose `cache_dir` is used). With
    `use_ray`, the missing models train as parallel Ray tasks, in packs of one freeze mode with
    its resources (`resources(freeze, n) -> (cpus, gpus, pack size)`; default one CPU, one model
    a task), and every model's rows are scored in one Ray Data pass; otherwise in-process.
    """
    start = time.perf_counter()
    missing = []
    for freeze, seed in jobs:
        inp = inputs[freeze]
        if inp.cache_dir is None or not model_path(inp.cache_dir, inp.train_acts, inp.labeled,
                                                   inp.train_labels[inp.labeled], inp.num_classes, recipe, seed,
                                                   inp.freeze, inp.task).exists():
            missing.append((freeze, seed))
    for freeze in dict.fromkeys(f for f, _ in missing) if use_ray else ():
        inp = inputs[freeze]
        seeds = [s for f, s in missing if f == freeze]
        cpus, gpus, size = resources(freeze, len(seeds)) if resources else (1, 0, 1)
        if inp.cache_dir is not None:
            specs = [TrainingSpec(inp.train_acts, Member(inp.labeled, inp.train_labels[inp.labeled], s, inp.freeze,
                                                         inp.task), inp.num_classes, recipe) for s in seeds]
            train_remote(specs, inp.cache_dir, out, cpus=cpus, gpus=gpus, pack_size=size)
    trained("scoring", len(missing))  # trained remotely above, or in-process by trained_model below
    if missing and log is not None:
        log(f"trained {len(missing)} scoring models on labeled in {time.perf_counter() - start:.1f} s")
    needs = frozenset({"probs", "embeddings", "labeled_embeddings"} | ({"mc_probs"} if mc else set()))
    scoring_jobs = []
    for freeze, seed in jobs:
        inp = inputs[freeze]
        model = trained_model(inp.train_acts, inp.labeled, inp.train_labels[inp.labeled], inp.num_classes, recipe,
                              seed, inp.cache_dir, inp.freeze, task=inp.task)
        scoring_jobs.append(_job_for(needs, model, inp.train_acts, inp.pool_rows, inp.labeled, selection, seed))
    cache_dir = inputs[jobs[0][0]].cache_dir if jobs else None
    scores = score_many(scoring_jobs, cache_dir, use_ray, selection.actors, selection.batch_size, log, out,
                        rows_are="rows (the pool and labeled)")
    return {(f, s): _view(needs, sc, len(inputs[f].pool_rows), inputs[f].train_labels[inputs[f].labeled])
            for (f, s), sc in zip(jobs, scores)}


def write_diagnostics(views: dict[tuple[str, int], strategies.PoolView], k: int, out_dir: str | Path,
                      log=None):
    """The study's diagnostic: per pool row, its entropy and its SQBC disagreement, and how the
    two correlate (the study reports Pearson 0.161).

    Writes <freeze>-seed<seed>.csv (freeze, seed, entropy, sqbc; pool order) per job, and
    correlation.csv (freeze, seed, pearson, spearman). Returns the correlation table.
    """
    import pandas as pd
    from scipy import stats

    from raysweep.strategies.neighbours import SQBC
    from raysweep.strategies.uncertainty import entropy

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for (freeze, seed), view in sorted(views.items()):
        ent, dis = entropy(view.probs), SQBC(k).scores(view)
        pd.DataFrame({"freeze": freeze, "seed": seed, "entropy": ent, "sqbc": dis}).to_csv(
            out_dir / f"{freeze}-seed{seed}.csv", index=False)
        # A constant column (every neighbourhood agrees) has no correlation: NaN, not a warning.
        varies = ent.std() > 0 and dis.std() > 0
        rows.append({"freeze": freeze, "seed": seed,
                     "pearson": float(stats.pearsonr(ent, dis)[0]) if varies else float("nan"),
                     "spearman": float(stats.spearmanr(ent, dis)[0]) if varies else float("nan")})
    table = pd.DataFrame(rows, columns=["freeze", "seed", "pearson", "spearman"])
    table.to_csv(out_dir / "correlation.csv", index=False)
    if log is not None and len(table):
        log(diagnostic_line(table, out_dir))
    return table


def diagnostic_line(table, where) -> str:
    """The diagnostic in one line: per freeze mode one Pearson r, the mean over its seeds (every
    (freeze, seed) is in correlation.csv); "no r" where a constant column leaves none."""
    parts = []
    for freeze, group in table.groupby("freeze", sort=False):
        r = group["pearson"].dropna()
        seeds = "one seed" if len(group) == 1 else f"mean of {len(r)} seeds"
        parts.append(f"{freeze} r = {r.mean():.2f} ({seeds})" if len(r) else f"{freeze}: no r (a score is constant)")
    return f"entropy vs SQBC disagreement, Pearson: {'; '.join(parts)} ({str(where).rstrip('/')}/correlation.csv)"

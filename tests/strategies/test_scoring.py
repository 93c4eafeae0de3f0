"""Pool scoring and the trial's selection path, on a tiny random BERT (no download)."""

import numpy as np
import pandas as pd
import pytest
import torch
from numpy.testing import assert_allclose, assert_array_equal
from scipy import stats

from raysweep import model as modeling
from raysweep import scoring, strategies, train
from raysweep.config import RecipeConfig, SelectionConfig
from raysweep.hashing import state_digest
from raysweep.train import Cell, TrialInputs, select_rows

RECIPE = RecipeConfig(epochs=3, batch_size=4, step_size=2)
SELECTION = SelectionConfig(k=3, mc_samples=4)
FREEZES = ("last-linear", "pooler", "last-attention")  # the activations of conftest.acts


def inputs_for(acts, freeze, cache_dir=None):
    return TrialInputs(train_labels=np.arange(36) % 5, val_labels=np.arange(12) % 5,
                       labeled=np.arange(0, 36, 4), pool_rows=np.setdiff1d(np.arange(36), np.arange(0, 36, 4)),
                       train_acts=acts[freeze], val_acts=acts[freeze], num_classes=5,
                       cache_dir=None if cache_dir is None else str(cache_dir), seeds=(0, 1, 2, 3))


def model_for(acts, freeze, seed=0):
    inp = inputs_for(acts, freeze)
    return modeling.trained_model(inp.train_acts, inp.labeled, inp.train_labels[inp.labeled], 5, RECIPE, seed)


@pytest.mark.parametrize("freeze", FREEZES)
def test_scores_are_the_models_own_outputs(acts, freeze):
    model = model_for(acts, freeze)
    rows = np.array([3, 17, 5, 30, 8, 1])
    got = scoring.score_rows(model, acts[freeze], rows, mc_samples=3, seed=1)
    assert_allclose(got.probs, modeling.predict_proba(model, acts[freeze], rows), rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        x, mask = acts[freeze].batch(rows)
        assert_allclose(got.embeddings, model.eval().sentence_vector(x, mask).numpy(), rtol=1e-5, atol=1e-6)
    assert got.mc_probs.shape == (3, 6, 5)
    assert_allclose(got.mc_probs.sum(-1), 1.0, rtol=1e-5)
    assert not np.allclose(got.mc_probs[0], got.mc_probs[1])  # dropout was on
    again = scoring.score_rows(model, acts[freeze], rows, mc_samples=3, seed=1)
    assert_array_equal(again.mc_probs, got.mc_probs)  # seeded
    other = scoring.score_rows(model, acts[freeze], rows, base=False, mc_samples=3, seed=2)
    assert not np.allclose(other.mc_probs, got.mc_probs)


def test_base_scores_do_not_depend_on_row_order_or_chunking(acts, monkeypatch):
    model = model_for(acts, "last-attention")
    rows = np.arange(36)
    whole = scoring.score_rows(model, acts["last-attention"], rows)
    monkeypatch.setattr(scoring, "CHUNK", 5)
    perm = np.random.default_rng(0).permutation(36)
    shuffled = scoring.score_rows(model, acts["last-attention"], rows[perm])
    assert_allclose(shuffled.probs, whole.probs[perm], rtol=1e-5, atol=1e-6)
    assert_allclose(shuffled.embeddings, whole.embeddings[perm], rtol=1e-5, atol=1e-5)


def test_chunk_plan_groups_token_rows_by_length(acts):
    rows = np.arange(36)
    plan = scoring.chunk_plan(acts["last-attention"], rows)
    lengths = acts["last-attention"].lengths(rows)
    for c in range(plan.max()):  # every row of a chunk is no longer than every row of the next
        assert lengths[plan == c].max() <= lengths[plan == c + 1].min()
    assert_array_equal(scoring.chunk_plan(acts["pooler"], rows), rows // scoring.CHUNK)


def test_models_and_scores_are_cached_per_state_and_rows(acts, tmp_path, monkeypatch):
    inp = inputs_for(acts, "pooler", tmp_path)
    labels = inp.train_labels[inp.labeled]
    first = modeling.trained_model(inp.train_acts, inp.labeled, labels, 5, RECIPE, 0, tmp_path)
    rows = np.arange(36)
    scored = scoring.score_rows(first, inp.train_acts, rows, mc_samples=3, cache_dir=tmp_path)

    def boom(*args, **kwargs):
        raise AssertionError("recomputed what the cache holds")

    monkeypatch.setattr(modeling, "fit", boom)
    monkeypatch.setattr(scoring, "score_chunks", boom)
    cached = modeling.trained_model(inp.train_acts, inp.labeled, labels, 5, RECIPE, 0, tmp_path)
    assert state_digest(cached) == state_digest(first)
    again = scoring.score_rows(cached, inp.train_acts, rows, mc_samples=3, cache_dir=tmp_path)
    assert_array_equal(again.probs, scored.probs)
    assert_array_equal(again.mc_probs, scored.mc_probs)
    # Other rows, another seed or other MC settings are other entries.
    with pytest.raises(AssertionError, match="recomputed"):
        scoring.score_rows(cached, inp.train_acts, rows[:-1], cache_dir=tmp_path)
    with pytest.raises(AssertionError, match="recomputed"):
        modeling.trained_model(inp.train_acts, inp.labeled, labels, 5, RECIPE, 1, tmp_path)
    with pytest.raises(AssertionError, match="recomputed"):
        scoring.score_rows(cached, inp.train_acts, rows, base=False, mc_samples=5, cache_dir=tmp_path)


@pytest.mark.parametrize("name", sorted(strategies.REGISTRY))
def test_a_trial_never_adds_a_labeled_row(acts, name, tmp_path):
    inp = inputs_for(acts, "pooler", tmp_path)
    pool = set(inp.pool_rows.tolist())
    for fraction, n in ((0, 0), (1, 9), (2, 18), (3, 27), (4, 27)):
        added = select_rows(Cell("real", name, fraction, "pooler", 0), inp, RECIPE, SELECTION)
        assert len(added) == n and len(set(added.tolist())) == n
        assert set(added.tolist()) <= pool and not set(added.tolist()) & set(inp.labeled.tolist())
        assert_array_equal(added, np.sort(added))
    once = select_rows(Cell("real", name, 1, "pooler", 3), inp, RECIPE, SELECTION)
    again = select_rows(Cell("real", name, 1, "pooler", 3), inputs_for(acts, "pooler"), RECIPE, SELECTION)
    assert_array_equal(once, again)  # the cache changes nothing


def test_fractions_and_strategies_of_a_freeze_and_seed_share_one_model(acts, tmp_path, monkeypatch):
    inp = inputs_for(acts, "pooler", tmp_path)
    fits, passes = [], []
    real_fit, real_chunks = modeling.fit, scoring.score_chunks
    monkeypatch.setattr(modeling, "fit", lambda *a, **k: fits.append(1) or real_fit(*a, **k))
    monkeypatch.setattr(scoring, "score_chunks", lambda *a, **k: passes.append(1) or real_chunks(*a, **k))
    for name in ("entropy", "sqbc", "margin", "coreset", "badge", "least-confidence"):
        for fraction in (0, 1, 2, 4):
            select_rows(Cell("real", name, fraction, "pooler", 0), inp, RECIPE, SELECTION)
    assert len(fits) == 1 and len(passes) == 1  # fractions 0 and 4 score nothing
    select_rows(Cell("real", "entropy", 1, "pooler", 1), inp, RECIPE, SELECTION)
    assert len(fits) == 2  # another seed is another model


def test_entropy_adds_the_rows_its_model_is_least_sure_of(acts):
    inp = inputs_for(acts, "last-linear")
    model = model_for(acts, "last-linear")
    probs = modeling.predict_proba(model, inp.train_acts, inp.pool_rows)
    ent = np.array([stats.entropy(p) for p in probs])
    added = select_rows(Cell("real", "entropy", 1, "last-linear", 0), inp, RECIPE, SELECTION)
    assert set(added.tolist()) == set(inp.pool_rows[np.argsort(-ent)[:9]].tolist())


def test_multi_round_retrains_on_what_it_acquired(acts, tmp_path, monkeypatch):
    inp = inputs_for(acts, "pooler", tmp_path)
    trained = []
    real = train.trained_model
    monkeypatch.setattr(train, "trained_model",
                        lambda a, rows, *r, **k: trained.append(len(rows)) or real(a, rows, *r, **k))
    three = select_rows(Cell("real", "entropy", 2, "pooler", 0), inp, RECIPE, SelectionConfig(rounds=3))
    assert trained == [9, 15, 21]  # 18 rows in steps of 6, each round trained on everything so far
    assert len(set(three.tolist())) == 18 and not set(three.tolist()) & set(inp.labeled.tolist())
    trained.clear()
    select_rows(Cell("real", "entropy", 2, "pooler", 0), inp, RECIPE, SelectionConfig(rounds=1))
    assert trained == [9]
    trained.clear()
    select_rows(Cell("real", "entropy", 0.25, "pooler", 0), inp, RECIPE, SelectionConfig(rounds=5))
    assert trained == [9, 10]  # 2 rows and 5 rounds: one row per round, two rounds


def test_each_round_takes_the_top_of_a_model_trained_on_everything_so_far(acts):
    """Two rounds of 9, checked against models trained here from scratch (equal scores allowed)."""
    inp = inputs_for(acts, "pooler")
    added = select_rows(Cell("real", "entropy", 2, "pooler", 0), inp, RECIPE, SelectionConfig(rounds=2))
    # Round one is single-shot selection of 9 rows: same model, same selection stream.
    first = select_rows(Cell("real", "entropy", 1, "pooler", 0), inp, RECIPE, SelectionConfig(rounds=1))
    second = np.setdiff1d(added, first)
    assert len(second) == 9
    remaining, rows = inp.pool_rows, inp.labeled
    for picks in (first, second):
        model = modeling.build_model(inp.train_acts, 5, RECIPE, 0)
        modeling.fit(model, inp.train_acts, rows, inp.train_labels[rows], RECIPE, 0)
        ent = np.array([stats.entropy(p) for p in modeling.predict_proba(model, inp.train_acts, remaining)])
        taken = np.isin(remaining, picks)
        assert taken.sum() == 9 and ent[taken].min() >= ent[~taken].max() - 1e-6
        rows = np.concatenate([rows, np.sort(picks)])
        remaining = remaining[~taken]


def test_model_based_selection_without_a_recipe_is_a_clear_error(acts):
    with pytest.raises(ValueError, match="strategy 'entropy' trains a model to score the pool"):
        select_rows(Cell("real", "entropy", 1, "pooler", 0), inputs_for(acts, "pooler"))


def test_diagnostics_files_and_correlation(acts, tmp_path):
    inputs = {f: inputs_for(acts, f, tmp_path / "cache") for f in ("last-linear", "pooler")}
    jobs = [("last-linear", 0), ("pooler", 0), ("pooler", 1)]
    views = scoring.prepare_scores(jobs, inputs, RECIPE, SELECTION, log=None)
    table = scoring.write_diagnostics(views, SELECTION.k, tmp_path / "diagnostics")
    for freeze, seed in jobs:
        diag = pd.read_csv(tmp_path / "diagnostics" / f"{freeze}-seed{seed}.csv")
        assert list(diag.columns) == ["freeze", "seed", "entropy", "sqbc"] and len(diag) == 27
        assert set(diag["freeze"]) == {freeze} and set(diag["seed"]) == {seed}
        view = views[(freeze, seed)]
        assert_allclose(diag["entropy"], [stats.entropy(p) for p in view.probs], rtol=1e-6)
        assert_allclose(diag["sqbc"], strategies.get("sqbc").configure(SELECTION).scores(view), rtol=1e-9)
        row = table[(table.freeze == freeze) & (table.seed == seed)].iloc[0]
        if diag["sqbc"].std() > 0:
            assert row.pearson == pytest.approx(stats.pearsonr(diag["entropy"], diag["sqbc"])[0])
            assert row.spearman == pytest.approx(stats.spearmanr(diag["entropy"], diag["sqbc"])[0])
    written = pd.read_csv(tmp_path / "diagnostics" / "correlation.csv")
    assert list(written.columns) == ["freeze", "seed", "pearson", "spearman"] and len(written) == 3


@pytest.mark.slow
def test_ray_data_scores_equal_in_process_scores(acts, ray_local, monkeypatch):
    """Two models (token-level and pooled) in one Ray Data pass: the in-process results exactly."""
    monkeypatch.setattr(scoring, "CHUNK", 4)  # 36 rows: 9 chunks per job over several blocks and two actors
    monkeypatch.setattr(scoring, "RAY_MIN_POOLED_ROWS", 0)  # the pooled job through Ray Data too
    rows = np.arange(36)[::-1].copy()
    jobs = [scoring.ScoringJob(model_for(acts, f), acts[f], rows, mc_samples=3, seed=4)
            for f in ("last-attention", "pooler")]
    local = scoring.score_many(jobs)
    logs = []
    remote = scoring.score_many(jobs, use_ray=True, actors=2, block_rows=8, log=logs.append)
    assert len(logs) == 1 and "36 rows under each of 2 scoring models" in logs[0] and "Ray Data" in logs[0]
    for here, there in zip(local, remote):
        assert_allclose(there.probs, here.probs, rtol=1e-6, atol=1e-7)
        assert_allclose(there.embeddings, here.embeddings, rtol=1e-6, atol=1e-6)
        assert_allclose(there.mc_probs, here.mc_probs, rtol=1e-6, atol=1e-7)  # same chunks, same seeds


def test_small_pooled_jobs_stay_in_process_even_with_ray(acts):
    # No Ray is running here: a pooled job that went to Ray Data would start one and be slow.
    rows = np.arange(12)
    jobs = [scoring.ScoringJob(model_for(acts, "pooler"), acts["pooler"], rows, mc_samples=2, seed=1)]
    logs = []
    [scores] = scoring.score_many(jobs, use_ray=True, log=logs.append)
    assert "(in-process)" in logs[0]
    [local] = scoring.score_many(jobs)
    assert_allclose(scores.probs, local.probs)
    assert_allclose(scores.mc_probs, local.mc_probs)


def test_score_many_mixes_cached_and_new_jobs_in_order(acts, tmp_path):
    a, b = model_for(acts, "pooler", seed=0), model_for(acts, "last-attention", seed=1)
    rows = np.arange(20)
    cached = scoring.score_rows(b, acts["last-attention"], rows, mc_samples=2, cache_dir=tmp_path)
    logs = []
    jobs = [scoring.ScoringJob(a, acts["pooler"], rows, mc_samples=2),
            scoring.ScoringJob(b, acts["last-attention"], rows, mc_samples=2)]
    first, second = scoring.score_many(jobs, cache_dir=tmp_path, log=logs.append)
    assert logs == [logs[0]] and "20 rows under 1 scoring model" in logs[0]  # only the new job was scored
    assert_array_equal(second.mc_probs, cached.mc_probs)
    assert_allclose(first.probs, modeling.predict_proba(a, acts["pooler"], rows), rtol=1e-5, atol=1e-6)


def test_the_diagnostic_is_one_r_per_freeze_mode_and_stage_lines_count_rows_once():
    import pandas as pd

    table = pd.DataFrame({"freeze": ["last-linear", "last-linear", "pooler", "top-2"], "seed": [0, 1, 0, 0],
                          "pearson": [0.1, 0.3, 0.25, float("nan")], "spearman": [0.0] * 4})
    assert scoring.diagnostic_line(table, "runs/x/diagnostics") == (
        "entropy vs SQBC disagreement, Pearson: last-linear r = 0.20 (mean of 2 seeds); pooler r = 0.25 (one seed); "
        "top-2: no r (a score is constant) (runs/x/diagnostics/correlation.csv)")
    assert scoring.scored_what([8543] * 3, "rows (the pool and labeled)") == \
        "8,543 rows (the pool and labeled) under each of 3 scoring models"
    assert scoring.scored_what([20]) == "20 rows under 1 scoring model"

"""Sentence pairs and regression (issue 20): pair tokenisation, the regression head, the regression
strategies on hand-made inputs, the bundled STS / Quora data and the config errors; tiny models only."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from raysweep import grid
from raysweep.backbone import Backbone, Classifier, FullEncoderClassifier, boundary_for
from raysweep.config import ConfigError, RecipeConfig, SplitConfig, load_sweep
from raysweep.data import DataError, load_splits, load_tables, split_labeled
from raysweep.embed import ensure_activations, load_activations
from raysweep.strategies import PoolView, get
from raysweep.tasks import PAIR_SEP, Task, join_pair, split_texts
from raysweep.model import build_model, fit, fit_uncached, predict_proba
from raysweep.train import Cell, TrialInputs, choose_rows

from tiny import TINY_TEXTS, run_trial

RECIPE = RecipeConfig(epochs=3, batch_size=4, step_size=2)
REGRESS = Task("pair-regress")
# Eight pairs of the tiny vocabulary's sentences, and a score for each that the head can learn.
PAIRS = [join_pair(TINY_TEXTS[i], TINY_TEXTS[(i + 3) % 8]) for i in range(8)]
SCORES = np.array([0.0, 1.2, 2.5, 4.0, 5.0, 3.3, 0.7, 2.0])


# --------------------------------------------------------------------------- the task


def test_regression_metrics_on_hand_made_predictions():
    truth = np.array([0.0, 1.0, 2.0, 3.0])
    got = REGRESS.score(truth, np.array([0.5, 1.0, 2.5, 2.0]))
    assert got["mse"] == pytest.approx((0.25 + 0 + 0.25 + 1) / 4)
    assert got["pearson"] == pytest.approx(np.corrcoef(truth, [0.5, 1.0, 2.5, 2.0])[0, 1])
    assert got["spearman"] == pytest.approx(0.8)  # ranks 1 2 4 3 against 1 2 3 4
    assert np.isnan(REGRESS.score(truth, np.full(4, 2.0))["pearson"])  # a constant head: no correlation


def test_paraphrase_reports_accuracy_and_the_positive_classs_f1():
    task = Task("pair-classify", 2)
    got = task.score(np.array([1, 1, 0, 0]), np.array([1, 0, 0, 0]))
    assert got == {"accuracy": 0.75, "macro_f1": pytest.approx((2 / 3 + 0.8) / 2), "positive_f1": pytest.approx(2 / 3)}


def test_a_score_is_stratified_by_its_quintiles():
    scores = np.linspace(0, 5, 100)
    strata = REGRESS.strata(scores)
    assert np.bincount(strata).tolist() == [20] * 5
    labeled, _ = split_labeled(scores, SplitConfig(labeled_fraction=0.2), REGRESS)
    assert np.bincount(strata[labeled]).tolist() == [4] * 5  # 4 rows from each fifth of the range


def test_pairs_are_split_again_for_the_tokenizer_and_never_mixed():
    assert split_texts(["a", "b"]) == (["a", "b"], None)
    assert split_texts([join_pair("a", "b"), join_pair("c", "d")]) == (["a", "c"], ["b", "d"])
    with pytest.raises(ValueError, match="mixes"):
        split_texts([join_pair("a", "b"), "c"])


# --------------------------------------------------------------------------- pair tokenisation


def test_a_pair_is_one_sequence_with_segment_ids(tiny_bert):
    backbone = Backbone(tiny_bert)
    a, b = [p.split(PAIR_SEP)[0] for p in PAIRS], [p.split(PAIR_SEP)[1] for p in PAIRS]
    enc = backbone.tokenize(PAIRS, 32)
    own = backbone.tokenizer(a, b, padding=True, truncation=True, max_length=32, return_tensors="pt")
    assert enc["input_ids"].tolist() == own["input_ids"].tolist()  # [CLS] a [SEP] b [SEP], the tokenizer's own
    first = enc["input_ids"][0].tolist()
    sep = backbone.tokenizer.sep_token_id
    assert first[0] == backbone.tokenizer.cls_token_id and first.count(sep) == 2
    segment = enc["token_type_ids"][0].tolist()
    second_start = first.index(sep) + 1
    assert set(segment[:second_start]) == {0} and segment[second_start] == 1  # b is segment 1
    # A pair is truncated to its own max_length, trimming the longer text first.
    assert backbone.tokenize(PAIRS, 8)["input_ids"].shape[1] == 8


@pytest.mark.parametrize("freeze", ["pooler", "last-attention"])
def test_cached_and_uncached_pair_regression_reach_the_same_loss(tiny_bert, tmp_path, freeze):
    """The pair goes through the activation cache (one string, one key) and through the encoder on
    every step; whole regression trainings on both paths end at the same loss."""
    import torch

    backbone = Backbone(tiny_bert)
    boundary = boundary_for(freeze, backbone.num_layers, "pooler", 32)
    [path] = ensure_activations(tiny_bert, PAIRS, [boundary], tmp_path, use_ray=False, log=lambda *_: None)
    [single] = ensure_activations(tiny_bert, [p.replace(PAIR_SEP, " ") for p in PAIRS], [boundary], tmp_path,
                                  use_ray=False, log=lambda *_: None)
    assert path != single  # a pair's entry is not the entry of its texts run together
    acts = load_activations(path)
    cached = fit(build_model(acts, 1, RECIPE, seed=0, task=REGRESS), acts, np.arange(8), SCORES, RECIPE, seed=0)
    torch.manual_seed(0)
    init = acts.init_modules()
    head = Classifier(acts.boundary, acts.hidden_size, REGRESS.outputs, RECIPE.dropout, top=init["top"],
                      dense=init["dense"], task=REGRESS)
    uncached = fit_uncached(FullEncoderClassifier(backbone, head), PAIRS, SCORES, RECIPE, seed=0)
    assert uncached == pytest.approx(cached, rel=1e-5)


# --------------------------------------------------------------------------- the regression head


@pytest.fixture(scope="module")
def regression(tiny_bert, tmp_path_factory):
    """32 train pairs (8 labeled, 24 in the pool) with scores, and the 8 pairs as val."""
    backbone = Backbone(tiny_bert)
    b = boundary_for("pooler", backbone.num_layers, "pooler", 32)
    cache = tmp_path_factory.mktemp("cache")
    [train] = ensure_activations(tiny_bert, PAIRS * 4, [b], cache, use_ray=False, log=lambda *_: None)
    [val] = ensure_activations(tiny_bert, PAIRS, [b], cache, use_ray=False, log=lambda *_: None)
    return TrialInputs(train_labels=np.tile(SCORES, 4), val_labels=SCORES, labeled=np.arange(8),
                       pool_rows=np.arange(8, 32), train_acts=load_activations(train), val_acts=load_activations(val),
                       num_classes=1, task=REGRESS, cache_dir=str(cache))


def test_the_regression_head_has_one_output_and_learns_the_scores(tmp_path):
    """On hand-made sentence vectors whose score is linear in them, the MSE head recovers it."""
    import torch

    from raysweep.backbone import Boundary
    from raysweep.embed import Activations

    torch.save({"top": None, "dense": None}, tmp_path / "init.pt")  # a last-linear entry's start: the head alone
    x = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)
    scores = x @ np.array([1.0, -0.5, 0.25, 0.0]) + 2.5
    acts = Activations(tmp_path, Boundary("sentence", 3, "pooler", 32), x, None, 4)
    recipe = RecipeConfig(epochs=200, batch_size=8, step_size=100, lr=0.01, dropout=0.0)
    model = build_model(acts, 1, recipe, seed=0, task=REGRESS)
    assert model.linear.out_features == 1
    before = predict_proba(model, acts)
    assert before.shape == (40, 1)  # the score itself, no softmax
    fit(model, acts, np.arange(40), scores, recipe, seed=0)
    after = predict_proba(model, acts)[:, 0]
    assert np.mean((after - scores) ** 2) < 0.01 < np.mean((before[:, 0] - scores) ** 2)
    assert REGRESS.score(scores, after)["pearson"] > 0.99


def test_a_regression_trial_reports_correlations_and_mse(regression):
    metrics = run_trial(Cell("real", "random", 1, "pooler", 0), regression, RECIPE)
    assert {"val_pearson", "val_spearman", "val_mse", "train_mse"} <= metrics.keys()
    assert "val_accuracy" not in metrics and metrics["confusion"] is None
    assert metrics["n_added"] == 8 and metrics["val_mse"] > 0


@pytest.mark.parametrize("strategy", ["mc-variance", "sqbc", "coreset"])
def test_the_regression_strategies_choose_from_the_pool(regression, strategy):
    chosen = choose_rows(Cell("real", strategy, 1, "pooler", 0), regression, RECIPE)
    assert len(chosen.rows) == 8 and set(chosen.rows) <= set(range(8, 32))
    if strategy != "coreset":  # a greedy batch has no per-row score
        assert np.all(np.isfinite(chosen.scores)) and np.all(np.diff(chosen.scores) <= 0)


# --------------------------------------------------------------------------- regression strategies, by hand


def test_mc_variance_ranks_by_the_spread_of_the_sampled_score():
    samples = np.array([[[1.0], [2.0], [3.0]],
                        [[1.0], [4.0], [3.5]],
                        [[1.0], [0.0], [2.5]]])  # [S=3, N=3, 1]: row 0 agrees, row 1 spreads most
    view = PoolView(size=3, mc_probs=samples)
    scores = get("mc-variance").scores(view)
    np.testing.assert_allclose(scores, [0.0, np.var([2, 4, 0]), np.var([3, 3.5, 2.5])])
    assert get("mc-variance")(view, 2, np.random.default_rng(0)).tolist() == [1, 2]


def test_sqbc_is_the_std_of_the_nearest_labeled_neighbours_scores():
    labeled = np.array([[0.0], [1.0], [10.0], [11.0]])
    scores = np.array([1.0, 1.2, 0.0, 5.0])  # neighbours 0,1 agree (1.0, 1.2); 2,3 disagree (0.0, 5.0)
    view = PoolView(size=2, embeddings=np.array([[0.4], [10.6]]), labeled_embeddings=labeled,
                    labeled_labels=scores)
    sqbc = get("sqbc").configure(SimpleNamespace(k=2))
    np.testing.assert_allclose(sqbc.scores(view), [np.std([1.0, 1.2]), np.std([0.0, 5.0])])
    assert sqbc(view, 1, np.random.default_rng(0)).tolist() == [1]


# --------------------------------------------------------------------------- data


def test_the_bundled_pair_data_sets_load_by_name():
    from raysweep.config import DataConfig

    train, val, test, source = load_tables(DataConfig(name="sts"))
    assert (len(train), len(val), test, source) == (6040, 863, None, "bundled STS")
    assert train["label"].dtype == np.float64 and train["label"].between(0, 5).all()
    assert all(t.count(PAIR_SEP) == 1 for t in train["text"])
    train, val, _, _ = load_tables(DataConfig(name="quora"))
    assert (len(train), len(val)) == (16220, 3992) and set(train["label"]) == {0, 1}


def test_a_users_pair_file_with_its_own_column_names(tmp_path):
    from raysweep.config import DataConfig

    rows = [("train", f"first {i}", f"second {i}", i * 0.5) for i in range(10)] + [("dev", "x", "y", 1.5)]
    pd.DataFrame(rows, columns=["split", "q1", "q2", "sim"]).to_csv(tmp_path / "p.csv", index=False)
    cfg = DataConfig(path=str(tmp_path / "p.csv"), task="pair-regress", text_a_column="q1", text_b_column="q2",
                     label_column="sim")
    splits = load_splits(cfg, SplitConfig(labeled_fraction=0.5))
    assert splits.train["text"][3] == join_pair("first 3", "second 3") and splits.train["label"][3] == 1.5
    with pytest.raises(DataError, match=r"p.csv: missing column 'text_b'"):
        load_tables(DataConfig(path=str(tmp_path / "p.csv"), task="pair-regress", text_a_column="q1",
                               label_column="sim"))
    pd.DataFrame([("train", "a\x1fb", "c", 1.0)], columns=["split", "q1", "q2", "sim"]).to_csv(tmp_path / "bad.csv",
                                                                                            index=False)
    with pytest.raises(DataError, match=r"bad.csv: row 2: column 'q1' holds the control character U\+001F"):
        load_tables(DataConfig(path=str(tmp_path / "bad.csv"), task="pair-regress", text_a_column="q1",
                               text_b_column="q2", label_column="sim"))


# --------------------------------------------------------------------------- config errors and ids


def _sweep(tmp_path: Path, text: str):
    (tmp_path / "s.yaml").write_text(text)
    return load_sweep(tmp_path / "s.yaml")


@pytest.mark.parametrize("text, message", [
    ("data: {name: sts}\ncompare: {strategy: [random, bald]}",
     r"compare.strategy\[1\]: 'bald' ranks by class probabilities and does not apply to the pair-regress task of "
     r"data 'sts' \(use coreset, mc-variance, random, sqbc, typiclust\)"),
    ("compare: {strategy: [mc-variance]}",
     r"compare.strategy\[0\]: 'mc-variance' ranks by the spread of a predicted score and does not apply to the "
     r"classify task"),
    ("data: {name: quora}\ncompare: {pool: [real, llm_teacher]}",
     r"compare.pool\[1\]: the LLM pool 'llm_teacher' generates single-sentence classification rows; the "
     r"pair-classify task of data 'quora' takes only the 'real' pool"),
    ("data: {name: sts, num_classes: 5}", r"data.num_classes: a pair-regress task has no classes"),
    ("data: {name: sts, path: x.csv}", r"data.name: 'sts' is a shipped data set and path a file of your own"),
    ("data: {name: imdb}", r"data.name: 'imdb' is not a shipped data set \(sst5, sts, quora\)"),
    ("data: {task: ranking}", r"data.task: 'ranking' is not one of classify, pair-classify, regress, pair-regress"),
])
def test_what_a_task_cannot_take_is_a_config_error_naming_both(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        _sweep(tmp_path, text)


def test_pair_sweeps_get_their_own_ids_and_sst5_keeps_its(tmp_path):
    sst5 = _sweep(tmp_path, "name: a\ndata: {name: sst5}")
    assert grid.fixed_digest(sst5) == grid.fixed_digest(_sweep(tmp_path, "name: a"))  # naming sst5 changes nothing
    sts = _sweep(tmp_path, "name: a\ndata: {name: sts}")
    assert sts.max_length == 128 and grid.fixed_digest(sts) != grid.fixed_digest(sst5)
    assert grid.metric_columns(sts.task)[0][:4] == ("val_pearson", "val_spearman", "val_mse", "train_mse")
    assert grid.metric_columns(sst5.task) == (grid.METRICS, grid.TEST_METRICS)


def test_a_regressions_model_key_tells_scores_apart():
    from raysweep.model import model_key

    acts = SimpleNamespace(path=Path("/x/abc123"))
    rows = np.array([0, 1])
    key = lambda labels, task=None: model_key(acts, rows, np.array(labels), 1, RECIPE, 0, task=task)  # noqa: E731
    assert key([2.4, 1.0], REGRESS) != key([2.6, 1.0], REGRESS)  # as int64 both would be [2, 1]
    assert key([2, 1], Task("classify", 5)) == key([2, 1])  # a classification key is the one it always was


def test_a_regression_head_starts_at_the_mean_score_and_a_classifier_as_built():
    import torch

    head = torch.nn.Linear(4, 1)
    REGRESS.start(head, np.array([1.0, 2.0, 4.5]))
    assert head.bias.item() == pytest.approx(2.5)
    classifier = torch.nn.Linear(4, 3)
    before = classifier.bias.detach().clone()
    Task("classify", 3).start(classifier, np.array([0, 2, 2]))
    assert torch.equal(classifier.bias, before)

"""One trial: selection counts, training, reproducibility; on a tiny random BERT."""

import numpy as np
import pytest

from raysweep.backbone import Backbone, boundary_for
from raysweep.config import RecipeConfig
from raysweep.embed import ensure_activations, load_activations
from raysweep.strategies import PoolExhaustedError
from raysweep.train import Cell, TrialInputs, rows_to_add, select_rows

from tiny import TINY_TEXTS, run_trial

RECIPE = RecipeConfig(epochs=3, batch_size=4, step_size=2)


def test_rows_to_add():
    assert rows_to_add(0, 1709, 6835) == 0
    assert rows_to_add(1, 1709, 6835) == 1709
    assert rows_to_add(0.5, 1709, 6835) == 854  # round half to even: 854.5 -> 854
    assert rows_to_add(4, 1709, 6835) == 6835  # "the whole pool" in the study's 1 : 4 split


@pytest.fixture(scope="module")
def inputs(tiny_bert, tmp_path_factory):
    texts = TINY_TEXTS * 4  # 32 rows: 8 labeled, 24 in the pool
    backbone = Backbone(tiny_bert)
    cache = tmp_path_factory.mktemp("cache")
    out = {}
    for freeze in ("last-linear", "pooler", "last-attention"):
        b = boundary_for(freeze, backbone.num_layers, "pooler", 32)
        [train] = ensure_activations(tiny_bert, texts, [b], cache, use_ray=False, log=lambda *_: None)
        [val] = ensure_activations(tiny_bert, TINY_TEXTS, [b], cache, use_ray=False, log=lambda *_: None)
        out[freeze] = TrialInputs(train_labels=np.arange(32) % 5, val_labels=np.arange(8) % 5,
                                  labeled=np.arange(8), pool_rows=np.arange(8, 32), train_acts=load_activations(train),
                                  val_acts=load_activations(val), num_classes=5)
    return out


def test_selection_adds_fraction_times_labeled_from_the_pool(inputs):
    inp = inputs["pooler"]
    for fraction, n in ((0, 0), (0.5, 4), (1, 8), (3, 24)):
        added = select_rows(Cell("real", "random", fraction, "pooler", 0), inp)
        assert len(added) == n and len(set(added.tolist())) == n
        assert set(added.tolist()) <= set(range(8, 32))
    a = select_rows(Cell("real", "random", 1, "pooler", 0), inp)
    b = select_rows(Cell("real", "random", 1, "pooler", 0), inp)
    c = select_rows(Cell("real", "random", 1, "pooler", 1), inp)
    assert a.tolist() == b.tolist() and a.tolist() != c.tolist()


def test_random_strategy_refuses_more_than_the_pool():
    from raysweep import strategies

    with pytest.raises(PoolExhaustedError, match="asked for 5 rows but the pool has 4"):
        strategies.get("random")(strategies.PoolView(size=4), 5, np.random.default_rng(0))


@pytest.mark.parametrize("freeze", ["last-linear", "pooler", "last-attention"])
def test_trial_is_reproducible_bit_for_bit(inputs, freeze):
    cell = Cell("real", "random", 1, freeze, 3)
    first = run_trial(cell, inputs[freeze], RECIPE)
    second = run_trial(cell, inputs[freeze], RECIPE)
    for key in ("val_accuracy", "val_macro_f1", "train_accuracy", "final_loss", "confusion"):
        assert first[key] == second[key], key
    assert first["n_labeled"] == 8 and first["n_added"] == 8 and first["n_train"] == 16
    assert np.sum(first["confusion"]) == 8
    other = run_trial(Cell("real", "random", 1, freeze, 4), inputs[freeze], RECIPE)
    assert other["final_loss"] != first["final_loss"]


def test_training_fits_the_training_set(inputs):
    """The top layer can fit 8 sentences: the loss falls far below chance level (ln 5 = 1.61)."""
    short = RecipeConfig(epochs=1, batch_size=8, lr=1e-2, step_size=100, dropout=0.0)
    long = RecipeConfig(epochs=150, batch_size=8, lr=1e-2, step_size=100, dropout=0.0)
    cell = Cell("real", "random", 0, "last-attention", 0)
    before = run_trial(cell, inputs["last-attention"], short)
    after = run_trial(cell, inputs["last-attention"], long)
    assert before["final_loss"] > 1.5
    assert after["final_loss"] < 0.6 and after["train_accuracy"] >= 0.75


@pytest.mark.parametrize("freeze", ["pooler", "last-attention"])
def test_cached_and_uncached_training_reach_the_same_loss(tiny_bert, inputs, freeze):
    """Whole training runs, not just one step: the cache changes the cost, not the result."""
    import torch

    from raysweep.backbone import Backbone, Classifier, FullEncoderClassifier
    from raysweep.model import build_model, fit, fit_uncached

    acts = inputs[freeze].train_acts
    rows = np.arange(8)
    labels = np.arange(8) % 5
    cached = fit(build_model(acts, 5, RECIPE, seed=0), acts, rows, labels, RECIPE, seed=0)
    torch.manual_seed(0)
    init = acts.init_modules()
    full = FullEncoderClassifier(Backbone(tiny_bert), Classifier(acts.boundary, acts.hidden_size, 5, RECIPE.dropout,
                                                                 top=init["top"], dense=init["dense"]))
    uncached = fit_uncached(full, TINY_TEXTS, labels, RECIPE, seed=0)
    assert uncached == pytest.approx(cached, rel=1e-5)


def test_a_test_split_is_evaluated_with_the_same_model(inputs):
    """With the val rows given again as `test`, the test metrics equal the val metrics exactly;
    without a test split a trial reports no test metrics at all."""
    from dataclasses import replace

    inp = inputs["pooler"]
    with_test = replace(inp, test_labels=inp.val_labels, test_acts=inp.val_acts)
    cell = Cell("real", "random", 1, "pooler", 2)
    out = run_trial(cell, with_test, RECIPE)
    assert out["test_accuracy"] == out["val_accuracy"] and out["test_macro_f1"] == out["val_macro_f1"]
    plain = run_trial(cell, inp, RECIPE)
    assert "test_accuracy" not in plain and plain["val_accuracy"] == out["val_accuracy"]


"""The rows each cell chose, on record: pick order, scores, steps, and the Parquet files."""

import dataclasses

import numpy as np
import pytest
from numpy.testing import assert_array_equal
from scipy import stats
from test_scoring import RECIPE, SELECTION, inputs_for, model_for

from raysweep import chosen, inputs, records, strategies, train
from raysweep import model as modeling
from raysweep.config import SelectionConfig
from raysweep.storage import Output
from raysweep.train import Cell, choose_rows, select_rows


def test_ranked_draws_the_same_picks_as_call():
    view = strategies.PoolView(size=6, probs=np.array([[.5, .5], [.9, .1], [.6, .4], [.5, .5], [1, 0], [.7, .3]]))
    for name in ("entropy", "margin", "least-confidence", "random"):
        s = strategies.get(name)
        picked, scores = s.ranked(view, 4, np.random.default_rng(3))
        assert_array_equal(picked, s(view, 4, np.random.default_rng(3)))
        if name == "random":
            assert scores is None
        else:
            assert_array_equal(scores, np.asarray(s.scores(view))[picked])
            assert (np.diff(scores) <= 0).all()  # best first


@pytest.mark.parametrize("name", ["random", "entropy", "sqbc", "coreset"])
def test_choose_rows_is_select_rows_in_pick_order(acts, name):
    inp = inputs_for(acts, "pooler")
    cell = Cell("real", name, 1, "pooler", 2)
    got = choose_rows(cell, inp, RECIPE, SELECTION)
    assert_array_equal(np.sort(got.rows), select_rows(cell, inp, RECIPE, SELECTION))
    assert len(got.scores) == len(got.steps) == len(got.rows) == 9
    assert np.isnan(got.scores).all() == (name in ("random", "coreset"))


def test_entropy_scores_on_record_are_the_rows_entropies(acts):
    inp = inputs_for(acts, "last-linear")
    got = choose_rows(Cell("real", "entropy", 1, "last-linear", 0), inp, RECIPE, SELECTION)
    probs = modeling.predict_proba(model_for(acts, "last-linear"), inp.train_acts, got.rows)
    assert np.allclose(got.scores, [stats.entropy(p) for p in probs], atol=1e-5)
    two = choose_rows(Cell("real", "entropy", 2, "pooler", 0), inp, RECIPE, SelectionConfig(rounds=2))
    assert_array_equal(two.steps, [0] * 9 + [1] * 9)


@pytest.mark.parametrize("uri", [False, True])
def test_a_finished_cell_writes_its_chosen_rows(acts, tmp_path, uri):
    inp = dataclasses.replace(inputs_for(acts, "pooler"), val_labels=np.arange(36) % 5)  # val = train here
    out = Output(f"file://{tmp_path}" if uri else tmp_path)
    out.mkdir("cells")
    context = inputs.TrialContext(train_labels=inp.train_labels, val_labels=inp.val_labels, labeled=inp.labeled,
                                 pool_rows=inp.pool_rows, num_classes=5, artifacts={}, recipe=RECIPE,
                                 selection=SELECTION, fixed="f00")
    original = records.trial_inputs
    try:
        records.trial_inputs = lambda context, variant, pool="real": inp
        record = records.run_cell(Cell("real", "entropy", 1, "pooler", 0), "c1", context, out)
    finally:
        records.trial_inputs = original
    assert record.ok, record
    chosen.write_rows_table(out, "f00", [f"text {i}" for i in range(36)], inp.train_labels, inp.labeled)
    rows, table = chosen.read_chosen(tmp_path)
    expected = choose_rows(Cell("real", "entropy", 1, "pooler", 0), inp, RECIPE, SELECTION)
    assert_array_equal(rows["row"], expected.rows)
    assert_array_equal(rows["rank"], np.arange(9))
    assert_array_equal(rows["label"], inp.train_labels[expected.rows])
    assert set(rows["cell_id"]) == {"c1"} and set(rows["rows_table"]) == {"rows-f00.parquet"}
    assert len(table) == 36 and table["labeled"].sum() == 9 and table.loc[5, "text"] == "text 5"


def test_no_chosen_folder_reads_as_nothing_recorded(tmp_path):
    rows, table = chosen.read_chosen(tmp_path)
    assert rows.empty and table.empty and "cell_id" in rows.columns

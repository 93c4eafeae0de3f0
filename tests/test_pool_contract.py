"""The contract every registered pool keeps, checked the same way for each (as the strategies'
contract test does): a name and a summary, a known preparation step, cell ids that depend on
exactly what it says, rows a trial can use, a size that matches them, and a config that
accepts it (or refuses it for a task it cannot serve, naming the key)."""

from __future__ import annotations

import numpy as np
import pytest

from raysweep import pools, status
from raysweep.config import ConfigError, RecipeConfig, SweepConfig, from_dict, load_sweep
from raysweep.grid import Cell, Variant, cell_id, expand, fixed_digest
from raysweep.inputs import TrialContext, trial_inputs
from raysweep.pools import Pool, PoolRows

NAMES = list(pools.REGISTRY)
VARIANT = Variant("m", "pooler", "pooler")


def context() -> TrialContext:
    """Every input any pool reads: 8 train rows (labeled 0-2, pool 3-7), 3 generated rows, the
    LLM's labels of pool rows 3 and 5 (the others -1, as annotation.trial_labels leaves them)."""
    gold = np.array([0, 1, 2, 3, 4, 0, 1, 2])
    annotated = gold.copy()
    annotated[[3, 4, 5, 6, 7]] = [1, -1, 4, -1, -1]
    return TrialContext(train_labels=gold, val_labels=np.array([1, 2]), labeled=np.array([0, 1, 2]),
                        pool_rows=np.array([3, 4, 5, 6, 7]), num_classes=5, recipe=RecipeConfig(),
                        artifacts={VARIANT: ("train", "val"), VARIANT.with_generated(): ("train+gen", "val")},
                        generated_labels={"llm": np.array([4, 4, 3]), "llm_teacher": np.array([0, 4, 2])},
                        annotated_labels=annotated)


def test_the_study_and_its_extension_are_registered_in_order():
    assert NAMES == ["real", "llm", "llm_teacher", "llm_annotated", "llm_cleaned", "llm_routed"]


@pytest.mark.parametrize("name", NAMES)
def test_says_what_it_is_and_which_step_it_waits_for(name):
    pool = pools.get(name)
    assert pool.name == name and pool.summary and str(pool).startswith(f"{name}: ")
    assert pool.step in (None, *pools.STEPS)
    assert pool.labeled_by in ("human", "llm_generate", "llm_annotate")  # what its labels cost (analysis/)
    assert pool.id_key in (None, "generated", "labels")
    assert pool.scoring_source in pools.REGISTRY  # a pool whose scoring pass ranks its rows
    assert (pool.step is None) == (pool.id_key is None)  # a step is what makes the id part known
    if pool.classification_only:
        assert pool.llm_does  # the config error says what the LLM does for it


@pytest.mark.parametrize("name", NAMES)
def test_says_who_labeled_its_rows_so_they_can_be_priced(name):
    from raysweep import costs

    pool = pools.get(name)
    assert pool.labeled_by in costs.LABELED_BY
    # An LLM's rows are priced by what its step spent per row: an LLM pool must have that step.
    if pool.labeled_by != costs.HUMAN:
        assert pool.step in costs.SUMMARY_OF_STEP


@pytest.mark.parametrize("name", NAMES)
def test_its_cell_ids_depend_on_exactly_its_id_part(name):
    pool, cell, fixed = pools.get(name), Cell(name, "random", 1.0, "pooler", 0), "f" * 12
    base = cell_id(cell, fixed, generated="g1", labels="l1")
    for key, changed in (("generated", dict(generated="g2", labels="l1")), ("labels", dict(generated="g1", labels="l2"))):
        assert (cell_id(cell, fixed, **changed) != base) == (pool.id_key == key), key


@pytest.mark.parametrize("name", NAMES)
def test_its_cell_ids_depend_on_its_settings_and_the_others_on_none(name):
    """A pool with settings (llm_cleaned's mode, llm_routed's percent) has new cells when one
    changes; every other pool's ids stay what they were (tests/test_results_compatibility.py)."""
    from raysweep.grid import cell_ids

    cell = Cell(name, "random", 1.0, "pooler", 0)
    base = from_dict(SweepConfig, {"compare": {"pool": [name]}})
    ids = {cell_ids(from_dict(SweepConfig, {"compare": {"pool": [name]}, "cleaning": c}), [cell], "g", ["l"])[0]
           for c in ({}, {"flagged": "replace"}, {"route_percent": 35})}
    settings = pools.get(name).settings(base)
    assert len(ids) == (2 if settings else 1)
    if not settings:
        assert ids == {cell_id(cell, fixed_digest(base), generated="g", labels="l")}


@pytest.mark.parametrize("name", NAMES)
def test_what_a_cell_trains_on_is_labeled_and_rows_it_added(name, monkeypatch):
    """`train_rows`: `labeled` with gold labels first, then only rows the cell added, each once;
    its record fields (if any) count the added rows' labels by who paid for them."""
    import raysweep.cleaning
    from raysweep.inputs import TrialInputs

    pool, ctx = pools.get(name), context()
    found = pool.rows(ctx, VARIANT)
    inputs = TrialInputs(found.train_labels, ctx.val_labels, ctx.labeled, found.pool_rows, None, None, 5,
                         select_labels=found.select_labels)
    added = found.pool_rows[:2]
    if pool.step == "annotate":
        added = np.array([5, 3])  # the rows the LLM labeled (context())
    # Out-of-sample probabilities, stood in: the model trusts the LLM's label of row 3, not of row 5.
    monkeypatch.setattr(raysweep.cleaning, "outside_probs", lambda cell, inputs, rows, recipe: np.array(
        [[0.05, 0.8, 0.05, 0.05, 0.05] if r == 3 else [0.05, 0.05, 0.8, 0.05, 0.05] for r in rows]))
    train = pool.train_rows(Cell(name, "random", 1.0, "pooler", 0), inputs, added, RecipeConfig())
    n = len(ctx.labeled)
    np.testing.assert_array_equal(train.rows[:n], ctx.labeled)
    np.testing.assert_array_equal(train.labels[:n], ctx.train_labels[ctx.labeled])
    assert set(train.rows[n:].tolist()) <= set(added.tolist()) and len(set(train.rows[n:].tolist())) == len(train.rows) - n
    assert len(train.labels) == len(train.rows) and (train.labels >= 0).all()
    if "human_labels" in train.fields:
        assert train.fields["human_labels"] + train.fields["llm_labels"] >= len(added)
        assert train.fields["labels_flagged"] == train.fields["labels_removed"] + train.fields["labels_replaced"]


@pytest.mark.parametrize("name", NAMES)
def test_its_rows_are_usable_by_a_trial(name, monkeypatch):
    import raysweep.inputs

    pool, ctx = pools.get(name), context()
    found = pool.rows(ctx, VARIANT)
    assert isinstance(found, PoolRows)
    assert found.artifacts == ctx.artifacts[pool.reads(VARIANT)]
    rows = found.pool_rows
    assert len(rows) == pool.size(ctx) > 0 and len(set(rows.tolist())) == len(rows)
    assert rows.min() >= 0 and rows.max() < len(found.train_labels)
    assert not set(rows.tolist()) & set(ctx.labeled.tolist())  # never a labeled row
    np.testing.assert_array_equal(found.train_labels[ctx.labeled], ctx.train_labels[ctx.labeled])  # gold there
    if found.select_labels is not None:  # selection sees other labels than training: the same rows' gold
        assert len(found.select_labels) == len(found.train_labels)
    monkeypatch.setattr(raysweep.inputs, "_activations", lambda path: path)  # the paths stand in for features
    inputs = trial_inputs(ctx, VARIANT, name)
    assert inputs.train_acts == found.artifacts[0] and inputs.pool_rows.tolist() == rows.tolist()


@pytest.mark.parametrize("name", NAMES)
def test_the_config_accepts_it_and_refuses_it_for_a_task_it_cannot_serve(name):
    cfg = from_dict(SweepConfig, {"compare": {"pool": [name]}})
    assert {c.pool for c in expand(cfg)} == {name}
    assert cfg.steps == ([pools.get(name).step] if pools.get(name).step else [])
    if pools.get(name).classification_only:
        with pytest.raises(ConfigError, match=rf"compare\.pool\[0\]: the LLM pool '{name}' {pools.get(name).llm_does}"):
            from_dict(SweepConfig, {"compare": {"pool": [name]}, "data": {"name": "sts"}})
    else:
        from_dict(SweepConfig, {"compare": {"pool": [name]}, "data": {"name": "sts"}})


@pytest.mark.parametrize("name", NAMES)
def test_its_planned_size_comes_from_the_config_and_the_real_pool(name):
    cfg = from_dict(SweepConfig, {"compare": {"pool": [name]}, "llm": {"n_rows": 17}})
    assert pools.get(name).planned_size(100, cfg) in (100, 17)


def test_an_unknown_pool_is_one_line_naming_the_key_and_the_known_ones(tmp_path):
    (tmp_path / "s.yaml").write_text("compare: {pool: [real, invented]}\n")
    with pytest.raises(ConfigError, match=r"compare\.pool\[1\]: 'invented' is not one of real, llm, llm_teacher, "
                                          r"llm_annotated"):
        load_sweep(tmp_path / "s.yaml")
    with pytest.raises(pools.UnknownPoolError, match="unknown pool 'invented'"):
        pools.get("invented")


def test_a_new_pool_is_one_module_and_one_registry_line(monkeypatch, tmp_path):
    """What another pool (a second data source, say) needs: a Pool subclass and `register`; the
    config, the grid, the trials' inputs and status then take it with no other change."""

    class Half(Pool):
        name = "half"
        summary = "the first half of the real pool"

        def rows(self, context, variant):
            half = context.pool_rows[: len(context.pool_rows) // 2]
            return PoolRows(context.artifacts[self.reads(variant)], context.train_labels, half)

        def size(self, context):
            return len(context.pool_rows) // 2

    monkeypatch.setattr(pools, "REGISTRY", dict(pools.REGISTRY))
    pools.register(Half())
    with pytest.raises(ValueError, match="registered twice"):
        pools.register(Half())
    cfg = from_dict(SweepConfig, {"compare": {"pool": ["real", "half"], "fraction": [1], "freeze": ["pooler"]},
                                  "replicate": {"seed": [0]}})
    assert [c.pool for c in expand(cfg)] == ["real", "half"]
    assert pools.get("half").rows(context(), VARIANT).pool_rows.tolist() == [3, 4]
    assert status.cell_progress(cfg, tmp_path)["pending"] == 2 and status.pool_status(cfg, tmp_path) == {
        "real": "ready", "half": "ready"}
    assert fixed_digest(cfg)  # the fixed settings do not name pools


def test_each_pool_says_whether_its_step_is_done_in_an_output(tmp_path):
    cfg = from_dict(SweepConfig, {"compare": {"pool": NAMES, "fraction": [1], "freeze": ["pooler"]},
                                  "replicate": {"seed": [0]}})
    assert status.pool_status(cfg, tmp_path) == {"real": "ready", "llm": "generate", "llm_teacher": "generate",
                                                 "llm_annotated": "annotate", "llm_cleaned": "annotate",
                                                 "llm_routed": "annotate"}
    # Until its step has run, none of a stepped pool's cells counts as done.
    assert status.cell_progress(cfg, tmp_path)["pending"] == len(NAMES)

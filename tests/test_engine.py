"""The trial engine (issue 15): duplicate trainings, packs, the device a trial trains on, and
several members trained at once with each member failing alone. No Ray: Ray's answers are faked."""

import dataclasses
import math
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from numpy.testing import assert_array_equal

from raysweep import grid, model
from raysweep.backbone import Backbone, boundary_for, count_trainable
from raysweep.config import ConfigError, RecipeConfig, load_sweep
from raysweep.embed import ensure_activations, load_activations
from raysweep.grid import Cell, CellRecord, Training, pack_cost, pack_size, plan, training_key
from raysweep.model import Member, train_members

from tiny import TINY_TEXTS

RECIPE = RecipeConfig(epochs=3, batch_size=4, step_size=2)


# --------------------------------------------------------------------------- which cells share a training


def test_training_key_is_the_rows_by_construction():
    # 1,709 labeled, 6,835 in the pool: fraction 4 asks for 6,836 rows and takes the whole pool.
    key = lambda pool, strategy, fraction, seed=0, freeze="pooler": training_key(  # noqa: E731
        Cell(pool, strategy, fraction, freeze, seed), 1709, 6835)
    assert key("real", "random", 0) == key("real", "entropy", 0) == key("llm", "sqbc", 0)  # labeled alone
    assert key("real", "random", 4) == key("real", "entropy", 4) != key("llm", "random", 4)  # whole pool: per pool
    assert key("real", "random", 1) is None and key("real", "random", 3.99) is None  # its own rows
    assert key("real", "random", 0, seed=1) != key("real", "random", 0)
    assert key("real", "random", 0, freeze="last-linear") != key("real", "random", 0)


def grid_of(strategies=("random", "entropy", "sqbc"), fractions=(0, 1, 4), seeds=(0, 1), freezes=("pooler",)):
    cells = [Cell("real", s, float(f), fr, seed) for fr in freezes for s in strategies for f in fractions
             for seed in seeds]
    return cells, [f"c{i:02d}" for i in range(len(cells))]


def size(limit):
    return lambda variant, rows, n: limit


def test_duplicates_train_once_and_every_cell_is_in_one_pack():
    cells, ids = grid_of()
    p = plan(cells, ids, set(ids), {}, n_labeled=10, pool_sizes={"real": 40}, size_of=size(100))
    # Per seed: fraction 0 and 4 once each (3 strategies share), fraction 1 per strategy: 5 of 9.
    assert p.trainings == 2 * 5
    assert sorted(c for pack in p.packs for c in pack.cells) == sorted(ids)
    by_id = dict(zip(ids, cells))
    for pack in p.packs:  # one pack: one variant, one pool, one row count
        assert {(by_id[c].variant, by_id[c].pool) for c in pack.cells} == {(pack.variant, pack.pool)}
        for t in pack.trainings:
            assert {by_id[c].fraction for c in (t.cell, *t.riders)} == {by_id[t.cell].fraction}
            assert all(p.training_of[r] == t.cell for r in t.riders)
    cost = [pk.n_train * len(pk.trainings) for pk in p.packs]
    assert cost == sorted(cost, reverse=True)  # the long ones first (one freeze mode: rows x trainings)
    assert {pk.n_train for pk in p.packs} == {10, 20, 50}
    # The first cell of a group in grid order trains; the others ride on it.
    first = next(t for pk in p.packs for t in pk.trainings if t.riders and by_id[t.cell].fraction == 0)
    assert by_id[first.cell].strategy == "random" and {by_id[r].strategy for r in first.riders} == {"entropy", "sqbc"}


def test_packs_run_costliest_first_across_freeze_modes():
    # A pooler training costs about 5 last-linear ones of the same rows: a pooler pack of 20 rows
    # goes before a last-linear pack of 50, so the cheap heads fill the slots at the end.
    cells, ids = grid_of(strategies=("random", "entropy"), fractions=(1, 4), seeds=(0,),
                         freezes=("last-linear", "pooler"))
    p = plan(cells, ids, set(ids), {}, n_labeled=10, pool_sizes={"real": 40}, size_of=size(100))
    order = [(pk.variant.freeze, pk.n_train, len(pk.trainings)) for pk in p.packs]
    assert order == [("pooler", 50, 1), ("pooler", 20, 2), ("last-linear", 50, 1), ("last-linear", 20, 2)]
    assert [pack_cost(pk) for pk in p.packs] == [250.0, 200.0, 50.0, 40.0]


def test_a_finished_cell_is_copied_not_trained_again():
    cells, ids = grid_of(seeds=(0,))
    done = {ids[0]: CellRecord(ids[0], {})}  # random at fraction 0, from an earlier run
    todo = set(ids) - {ids[0]}
    p = plan(cells, ids, todo, done, 10, {"real": 40}, size(100))
    [t] = [t for pk in p.packs for t in pk.trainings if t.cell == ids[0]]
    assert set(t.riders) == {ids[3], ids[6]}  # entropy and sqbc at fraction 0
    assert p.trainings == 4  # fraction 1 x 3 strategies, fraction 4 once; fraction 0 is done
    # A finished rider names the training it shared: the rest of its group keep naming it.
    done = {ids[3]: CellRecord(ids[3], {}, shared_training=ids[0])}
    p = plan(cells, ids, set(ids) - {ids[3]}, done, 10, {"real": 40}, size(100))
    assert {p.training_of[i] for i in (ids[0], ids[3], ids[6])} == {ids[0]}


def test_packs_split_evenly_by_size():
    cells, ids = grid_of(strategies=("random",), fractions=(1,), seeds=range(7))
    p = plan(cells, ids, set(ids), {}, 10, {"real": 40}, size(3))
    assert sorted(len(pk.trainings) for pk in p.packs) == [2, 2, 3]
    assert len({pk.name for pk in p.packs}) == 3


def test_pack_size_follows_memory_balance_and_the_limit():
    gib = 1024**3
    assert pack_size(trainings=100, slots=1, member_bytes=gib // 4, memory_bytes=gib) == 4  # memory
    assert pack_size(trainings=16, slots=2, member_bytes=1, memory_bytes=gib) == 2  # four packs a slot
    assert pack_size(trainings=100, slots=1, member_bytes=1, memory_bytes=gib, limit=5) == 5
    assert pack_size(trainings=1, slots=8, member_bytes=2 * gib, memory_bytes=gib) == 1  # never 0


# --------------------------------------------------------------------------- the device Ray assigned


def fake_ray(monkeypatch, cpus, gpu_ids, driver=False):
    context = SimpleNamespace(worker=SimpleNamespace(mode=0 if driver else 1),
                              get_assigned_resources=lambda: {"CPU": cpus, **({"GPU": len(gpu_ids)} if gpu_ids else {})})
    ray = SimpleNamespace(is_initialized=lambda: True, get_runtime_context=lambda: context, WORKER_MODE=1,
                          get_gpu_ids=lambda: gpu_ids)
    monkeypatch.setitem(sys.modules, "ray", ray)


def test_a_trial_holding_a_gpu_trains_on_cuda_with_its_cpus_as_threads(monkeypatch):
    threads = []
    monkeypatch.setattr(torch, "set_num_threads", threads.append)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU on the node...
    fake_ray(monkeypatch, 2.0, [0])
    assert model.use_assigned() == "cuda" and threads == [2]
    fake_ray(monkeypatch, 1.0, [])  # ...that Ray gave another worker
    assert model.use_assigned() == "cpu" and threads == [2, 1]
    fake_ray(monkeypatch, 0.5, [])  # half a CPU is still one thread
    assert model.use_assigned() == "cpu" and threads[-1] == 1
    fake_ray(monkeypatch, 4.0, [], driver=True)  # the driver holds nothing: any visible GPU, torch's threads
    assert model.use_assigned() == "cuda" and threads[-1] == 1
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    fake_ray(monkeypatch, 1.0, [0])  # Ray says GPU, torch has no CUDA (a CPU build): CPU
    assert model.assigned_device() == "cpu"


# --------------------------------------------------------------------------- several members at once


@pytest.fixture(scope="module")
def acts(tiny_bert, tmp_path_factory):
    backbone = Backbone(tiny_bert)
    out = {}
    for freeze in ("last-linear", "pooler"):
        b = boundary_for(freeze, backbone.num_layers, "pooler", 32)
        [entry] = ensure_activations(tiny_bert, TINY_TEXTS * 4, [b], tmp_path_factory.mktemp(freeze), use_ray=False,
                                     log=lambda *_: None)
        out[freeze] = load_activations(entry)
    return out


@pytest.mark.parametrize("freeze", ["last-linear", "pooler"])
def test_members_train_as_they_would_alone_and_fail_alone(acts, freeze):
    a = acts[freeze]
    labels = np.arange(32) % 5
    rows = [np.arange(8), np.arange(16), np.arange(8)]
    members = [Member(rows[0], labels[rows[0]], 0), Member(rows[1], labels[rows[1]], 1),
               Member(np.array([0, 99]), np.array([0, 1]), 2),  # a row past the activations: raises
               Member(rows[2], labels[rows[2]], 3)]
    results = train_members(a, members, 5, RECIPE)
    assert [r.error is None for r in results] == [True, True, False, True]
    assert results[2].model is None and "IndexError" in results[2].error
    for m, r in zip(members, results):
        if r.error is None:
            solo = model.build_model(a, 5, RECIPE, m.seed)
            loss = model.fit(solo, a, m.rows, m.labels, RECIPE, m.seed)
            assert r.final_loss == loss
            for (name, x), y in zip(solo.state_dict().items(), r.model.state_dict().values()):
                assert torch.equal(x, y), name


def test_a_member_that_diverges_fails_alone(acts):
    a = acts["pooler"]
    features = np.array(a.features)
    features[31] = np.nan  # one row whose features went bad: the member that trains on it diverges
    bad = dataclasses.replace(a, features=features)
    labels = np.arange(32) % 5
    results = train_members(bad, [Member(np.arange(16), labels[:16], 0), Member(np.arange(32), labels, 0)], 5, RECIPE)
    assert results[0].error is None and math.isfinite(results[0].final_loss)
    assert results[1].model is None and results[1].error.startswith("TrainingDiverged: the loss became nan")
    assert isinstance(results[1].failure(), model.TrainingError)


def test_the_model_cache_serves_members_and_a_trial_on_labeled_alone(acts, tmp_path):
    a = acts["pooler"]
    labels = np.arange(32) % 5
    members = [Member(np.arange(8), labels[:8], 0), Member(np.arange(12), labels[:12], 0)]
    first = model.trained_models(a, members[:1], 5, RECIPE, tmp_path)  # the scoring model, stored
    both = model.trained_models(a, members, 5, RECIPE, tmp_path, store=False)
    assert [r.cached for r in both] == [True, False]
    assert_array_equal(both[0].model.linear.weight.detach(), first[0].model.linear.weight.detach())
    assert len(list((tmp_path / "selection" / "models").glob("*.pt"))) == 1  # store=False stored nothing


# --------------------------------------------------------------------------- resources per freeze mode


def test_resources_differ_per_freeze_mode(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: x\nresources: {gpus_per_trial: 0.25, freeze: {last-attention: {gpus_per_trial: 1, "
                    "bf16: true}}}\n")
    res = load_sweep(path).resources
    assert (res.of("last-attention").gpus_per_trial, res.of("last-attention").bf16) == (1, True)
    assert (res.of("pooler").gpus_per_trial, res.of("pooler").bf16) == (0.25, False)
    assert res.of("last-attention").cpus_per_trial == 1  # what the mode does not set is the sweep's
    for body, says in [("{freeze: {lastx: {gpus_per_trial: 1}}}", "resources.freeze.lastx: 'lastx' is not a freeze"),
                       ("{freeze: {pooler: {gpus_per_trial: -1}}}", "resources.freeze.pooler.gpus_per_trial: must be"),
                       ("{freeze: {pooler: {gpu: 1}}}", "resources.freeze.pooler.gpu: unknown key"),
                       ("{pack_memory_gb: 0}", "resources.pack_memory_gb: must be positive")]:
        path.write_text(f"name: x\nresources: {body}\n")
        with pytest.raises(ConfigError, match=says):
            load_sweep(path)


def test_member_bytes_bounds_pooled_features_and_the_trained_part(acts):
    a = acts["pooler"]
    small, large = (model.member_bytes(a, 5, RECIPE, n) for n in (10, 1010))
    assert large - small == 4 * 1000 * a.hidden_size  # the rows' features, held whole
    trainable = count_trainable(model.build_model(a, 5, RECIPE, 0))
    assert small >= 16 * trainable
    assert grid.pack_size(100, 1, small, 100 * small) == 25  # balance: 100 trainings, 1 slot, 4 packs


def test_trials_csv_names_the_training_each_cell_shares():
    cells, ids = grid_of(seeds=(0,))  # 3 strategies x fractions 0, 1, 4 (the whole pool of 40)
    rec = lambda cid, **kw: CellRecord(cid, {}, metrics={"n_labeled": 10, "pool_size": 40}, **kw)  # noqa: E731
    done = {cid: rec(cid) for cid in ids}
    done[ids[5]] = rec(ids[5], shared_training=ids[2])  # entropy x4 rode on random x4
    got = grid.trainings_of(cells, ids, done)
    assert [got[i] for i in ids] == [ids[0], ids[1], ids[2], ids[0], ids[4], ids[2], ids[0], ids[7], ids[2]]
    old = {cid: CellRecord(cid, {}) for cid in ids}  # records from before pool_size
    assert grid.trainings_of(cells, ids, old) == {}  # nothing said: the analysis derives it

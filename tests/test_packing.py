"""Packed training gives each member what it would get alone; on a tiny random BERT."""

import shutil

import numpy as np
import pytest
import torch

from raysweep.backbone import Backbone, boundary_for
from raysweep.config import RecipeConfig
from raysweep.freeze import Lora
from raysweep.embed import ensure_activations, load_activations
from raysweep.model import build_model, fit, fit_packed, predict_proba
from raysweep import packing
from raysweep.packing import Member, dropout_masks, max_pack_size, stacked_member_bytes, packable
from raysweep.tasks import Task

from tiny import TINY_TEXTS

# 10 rows in batches of 4: the last batch of every epoch is short (4, 4, 2), as real grids' are.
RECIPE = RecipeConfig(epochs=5, batch_size=4, step_size=2, lr=1e-2)


@pytest.fixture(scope="module")
def acts(tiny_bert, tmp_path_factory):
    backbone = Backbone(tiny_bert)
    cache = tmp_path_factory.mktemp("cache")
    out = {}
    for freeze in ("last-linear", "pooler", "last-attention"):
        b = boundary_for(freeze, backbone.num_layers, "pooler", 32)
        [path] = ensure_activations(tiny_bert, TINY_TEXTS * 4, [b], cache, use_ray=False, log=lambda *_: None)
        out[freeze] = load_activations(path)
    return out


def _members() -> list[Member]:
    """Different rows, labels and seeds, one seed twice (two strategies of one seed), same count."""
    rng = np.random.default_rng(0)
    members = []
    for seed in (0, 1, 1, 7):
        rows = np.sort(rng.choice(32, size=10, replace=False))
        members.append(Member(rows, rng.integers(0, 5, size=10), seed))
    return members


def _solo(acts, member, recipe=RECIPE):
    model = build_model(acts, 5, recipe, member.seed)
    loss = fit(model, acts, member.rows, member.labels, recipe, member.seed)
    return model, loss


@pytest.mark.parametrize("freeze,steps_at_once", [("last-linear", 8), ("pooler", 8), ("pooler", 2)])
def test_packed_members_reach_the_weights_and_metrics_of_solo_training(acts, freeze, steps_at_once, monkeypatch):
    """At 2 steps prepared at once, an epoch's 3 steps span two groups, the short last batch alone."""
    monkeypatch.setattr(packing, "STEPS_AT_ONCE", steps_at_once)
    a = acts[freeze]
    members = _members()
    packed = fit_packed(a, members, RECIPE, num_classes=5)
    for member, result in zip(members, packed):
        solo, solo_loss = _solo(a, member)
        assert result.error is None
        solo_state, packed_state = solo.state_dict(), result.model.state_dict()
        assert solo_state.keys() == packed_state.keys()
        for name in solo_state:  # float32 reduction order is the only allowed difference
            torch.testing.assert_close(packed_state[name], solo_state[name], rtol=1e-5, atol=1e-6, msg=name)
        assert result.final_loss == pytest.approx(solo_loss, rel=1e-5)
        # The metrics a trial reports come from predictions: identical, not close.
        assert (predict_proba(result.model, a).argmax(1) == predict_proba(solo, a).argmax(1)).all()
    # Training moved the weights, differently per member: the comparison above is not vacuous.
    untrained = build_model(a, 5, RECIPE, 0).linear.weight
    assert not torch.allclose(packed[0].model.linear.weight, untrained)
    assert not torch.allclose(packed[1].model.linear.weight, packed[2].model.linear.weight)


def test_dropout_streams_matter(acts):
    """With the masks drawn from one shared stream instead of each member's own, the weights differ:
    the equivalence test above would catch a pack that got the streams wrong."""
    a = acts["pooler"]
    member = _members()[0]
    solo, _ = _solo(a, member)
    no_dropout, _ = _solo(a, member, RecipeConfig(**{**RECIPE.__dict__, "dropout": 0.0}))
    assert not torch.allclose(solo.linear.weight, no_dropout.linear.weight, rtol=1e-3, atol=1e-4)
    [alone] = fit_packed(a, [member], RecipeConfig(**{**RECIPE.__dict__, "dropout": 0.0}), num_classes=5)
    torch.testing.assert_close(alone.model.linear.weight, no_dropout.linear.weight, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.1])
def test_the_packed_mask_draw_is_the_solo_dropout_draw(keep):
    """packing draws masks with rand64 < p, the solo path (F.dropout on a CPU) with bernoulli_(p) and
    div_: the same values and the same generator states after, over consecutive draws of several
    shapes (a short last batch too) into one reused buffer."""
    solo = [torch.Generator().manual_seed(s) for s in (3, 4, 3)]
    packed = [torch.Generator().manual_seed(s) for s in (3, 4, 3)]
    buffer = torch.empty(3, 32, 384, dtype=torch.float64)
    for rows, cols in ((32, 384), (7, 384), (32, 384), (1, 384)):
        expected = torch.stack([torch.empty(rows, cols).bernoulli_(keep, generator=g).div_(keep) for g in solo])
        assert torch.equal(dropout_masks(packed, rows, cols, keep, buffer), expected)
    assert all(torch.equal(a.get_state(), b.get_state()) for a, b in zip(solo, packed))


@pytest.mark.parametrize("freeze", ["last-linear", "pooler"])
def test_the_hand_written_step_is_autograds(acts, freeze):
    """`losses_and_grads` against `forward` + cross-entropy + `backward()` on one step of a stack:
    the same losses and gradients (float32 rounding), dropout and a diverging member included."""
    models = [build_model(acts[freeze], 5, RECIPE, seed) for seed in (0, 1, 2)]
    by_hand, by_autograd = packing._Stack(models, torch.device("cpu")), packing._Stack(models, torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 6, acts[freeze].hidden_size, generator=gen)
    x[2, 1] = float("nan")
    masks = dropout_masks([torch.Generator().manual_seed(s) for s in range(3)], 6, x.shape[2], 0.5)
    labels = torch.randint(0, 5, (3, 6), generator=gen)
    losses = by_hand.losses_and_grads(x, masks, labels)
    expected = torch.nn.functional.cross_entropy(by_autograd.forward(x, masks).reshape(18, 5), labels.reshape(-1),
                                                 reduction="none").view(3, 6).mean(1)
    expected.sum().backward()
    torch.testing.assert_close(losses, expected.detach(), rtol=1e-6, atol=1e-7, equal_nan=True)
    assert losses[:2].isfinite().all() and losses[2].isnan()
    for mine, theirs in zip(by_hand.parameters(), by_autograd.parameters()):
        assert mine.grad is not None and mine.grad.shape == mine.shape
        torch.testing.assert_close(mine.grad, theirs.grad, rtol=1e-5, atol=1e-7, equal_nan=True)
        assert mine.grad[:2].isfinite().all()  # the diverging member's NaNs stay in its own slice


def test_one_draw_of_several_steps_is_their_draws_back_to_back():
    """The pack draws the masks of several steps in one call per member (packing.STEPS_AT_ONCE):
    the same values, and the generators left in the same state, as one draw per step."""
    per_step = [torch.Generator().manual_seed(s) for s in (5, 6)]
    at_once = [torch.Generator().manual_seed(s) for s in (5, 6)]
    sizes = (32, 32, 32, 20)  # an epoch's last batch is short
    expected = torch.cat([dropout_masks(per_step, rows, 384, 0.5) for rows in sizes], dim=1)
    assert torch.equal(dropout_masks(at_once, sum(sizes), 384, 0.5), expected)
    assert all(torch.equal(a.get_state(), b.get_state()) for a, b in zip(per_step, at_once))


def test_packing_leaves_the_callers_rng_alone(acts):
    torch.manual_seed(123)
    before = torch.get_rng_state()
    fit_packed(acts["last-linear"], _members()[:2], RECIPE, num_classes=5)
    assert torch.equal(torch.get_rng_state(), before)


def test_a_diverging_member_fails_alone(acts, tmp_path):
    """One member trains on a row whose features are NaN: its result carries the error, and the
    others still reach exactly their solo weights."""
    src = acts["pooler"].path
    broken = tmp_path / src.name
    shutil.copytree(src, broken)
    features = np.load(broken / "features.npy")
    features[3] = np.nan
    np.save(broken / "features.npy", features)
    a = load_activations(broken)
    members = _members()
    members[2] = Member(np.sort(np.r_[3, members[2].rows[members[2].rows != 3][:9]]), members[2].labels, 1)
    assert all(3 not in m.rows for i, m in enumerate(members) if i != 2)
    results = fit_packed(a, members, RECIPE, num_classes=5)
    assert results[2].error is not None and "diverged" in results[2].error and "epoch 1 of 5" in results[2].error
    assert np.isnan(results[2].final_loss)
    for i in (0, 1, 3):
        solo, solo_loss = _solo(a, members[i])
        assert results[i].error is None and results[i].final_loss == pytest.approx(solo_loss, rel=1e-5)
        torch.testing.assert_close(results[i].model.linear.weight, solo.linear.weight, rtol=1e-5, atol=1e-6)


def test_members_must_share_their_row_count_and_a_pooled_mode(acts):
    members = _members()
    members[1] = Member(members[1].rows[:9], members[1].labels[:9], 1)
    with pytest.raises(ValueError, match=r"same number of rows, got \[9, 10\]"):
        fit_packed(acts["pooler"], members, RECIPE, num_classes=5)
    with pytest.raises(ValueError, match="cannot be packed"):
        fit_packed(acts["last-attention"], _members(), RECIPE, num_classes=5)
    assert packable(acts["pooler"]) and packable(acts["last-linear"])
    assert not packable(acts["last-attention"]) and not packable(acts["pooler"], Lora(rank=4, layers=1))
    # The stacked loss is cross-entropy: a regression's members train alone, a pair classifier's stack.
    assert not packable(acts["pooler"], task=Task("regress", 1)) and packable(acts["pooler"], task=Task("pair-classify", 2))


def test_pack_size_follows_the_memory_budget(acts):
    a = acts["pooler"]
    per_member = stacked_member_bytes(a.hidden_size, 5, 10, RECIPE.batch_size, dense=True)
    shared = len(a) * a.hidden_size * 4
    assert max_pack_size(a, 5, 10, RECIPE, budget_bytes=shared + 7 * per_member) == 7
    assert max_pack_size(a, 5, 10, RECIPE, budget_bytes=shared + 7 * per_member - 1) == 6
    assert max_pack_size(a, 5, 10, RECIPE, budget_bytes=0) == 1  # never below a solo training
    assert max_pack_size(acts["last-attention"], 5, 10, RECIPE, budget_bytes=10**12) == 1
    # A pooler member carries a [H, H] dense, its gradient and Adam state; a last-linear member does not.
    dense_part = stacked_member_bytes(384, 5, 8544, 32, dense=True) - stacked_member_bytes(384, 5, 8544, 32, dense=False)
    assert dense_part > 16 * 384 * 384
    assert max_pack_size(a, 5, 10, RECIPE) >= 1  # from this machine's free memory


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU here (scripts/gpu-check.sh runs it on one)")
def test_a_pack_on_the_gpu_reaches_the_weights_of_the_cpu_pack(acts):
    """The masks and batch orders come from CPU generators on every device: only the arithmetic moves."""
    a = acts["pooler"]
    cpu = fit_packed(a, _members(), RECIPE, num_classes=5)
    gpu = fit_packed(a, _members(), RECIPE, "cuda", num_classes=5)
    for c, g in zip(cpu, gpu):
        assert g.model.linear.weight.device.type == "cuda" and g.error is None
        for name, value in c.model.state_dict().items():
            torch.testing.assert_close(g.model.state_dict()[name].cpu(), value, rtol=1e-4, atol=1e-5, msg=name)
        assert (predict_proba(g.model.cpu(), a).argmax(1) == predict_proba(c.model, a).argmax(1)).all()

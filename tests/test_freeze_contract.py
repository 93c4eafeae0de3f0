"""The contract every freeze mode keeps, checked the same way for each (FREEZE_MODES, and one
member of each named family: top-K and LoRA): it builds on an encoder, caches the frozen part's
output at its own boundary (and reuses it), and one training step changes exactly the parameters
it says are trainable, as many as `raysweep check` reports."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from raysweep.backbone import Backbone, boundary_for, count_trainable, describe_trainable, trainable_parameters
from raysweep.config import FREEZE_MODES, RecipeConfig, parse_freeze, parse_lora
from raysweep.embed import ensure_activations, load_activations
from raysweep.model import build_model, fit

from tiny import TINY_TEXTS

MODES = [*FREEZE_MODES, "top-2", "lora", "lora-r2-k2-ffn"]
ONE_STEP = RecipeConfig(epochs=1, batch_size=len(TINY_TEXTS), step_size=1, dropout=0.0)


def test_the_study_modes_are_registered():
    assert list(FREEZE_MODES) == ["last-linear", "pooler", "last-attention"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("freeze-cache")


@pytest.mark.parametrize("freeze", MODES)
def test_caches_at_its_boundary_and_reuses_it(freeze, tiny_bert, cache):
    backbone = Backbone(tiny_bert)
    top_layers, _ = parse_freeze(freeze)
    b = boundary_for(freeze, backbone.num_layers, "pooler", 32, backbone.hidden_size)
    assert b.layer == backbone.num_layers - top_layers  # the frozen part ends where the trained part starts
    logs = []
    [first] = ensure_activations(tiny_bert, TINY_TEXTS, [b], cache, use_ray=False, log=logs.append)
    computed = len(logs)
    [again] = ensure_activations(tiny_bert, TINY_TEXTS, [b], cache, use_ray=False, log=logs.append)
    assert again == first and len(logs) == computed  # the second call computed nothing
    acts = load_activations(first)
    assert acts.boundary == b and acts.hidden_size == backbone.hidden_size
    assert acts.boundary.ragged == (top_layers > 0)  # token states only when encoder layers train


@pytest.mark.parametrize("freeze", MODES)
def test_builds_and_one_step_trains_exactly_its_trainable_part(freeze, tiny_bert, cache):
    backbone = Backbone(tiny_bert)
    b = boundary_for(freeze, backbone.num_layers, "pooler", 32, backbone.hidden_size)
    [path] = ensure_activations(tiny_bert, TINY_TEXTS, [b], cache, use_ray=False, log=lambda *_: None)
    acts = load_activations(path)
    model = build_model(acts, 5, ONE_STEP, seed=0, lora=parse_lora(freeze))
    assert count_trainable(model) == trainable_parameters(backbone, freeze, 5, "pooler", 32) > 0
    trained = set(describe_trainable(model))
    if parse_lora(freeze):
        assert any("lora" in n for n in trained)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    rows = np.arange(len(TINY_TEXTS))
    loss = fit(model, acts, rows, rows % 5, ONE_STEP, seed=0)
    assert np.isfinite(loss)
    for name, p in model.named_parameters():
        moved = not torch.equal(p.detach(), before[name])
        if name not in trained:
            assert not moved, f"{freeze}: frozen {name} changed"
    # The head always trains; with a trained top, so does something below it.
    assert any(not torch.equal(p.detach(), before[n]) for n, p in model.named_parameters() if n in trained)

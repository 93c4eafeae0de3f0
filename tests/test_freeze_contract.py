"""The contract every freeze mechanism keeps (raysweep.freeze.REGISTRY), checked the same way for
each registered mechanism's example modes: its names parse and read back, it caches the frozen
part's output at its own boundary (and reuses it), one training step changes exactly the
parameters it says are trainable (as many as `raysweep check` reports), a copy rebuilt from its
state (the scoring actors') predicts the same, and its models' cache keys differ from the layer
modes' only where it says. A toy mechanism (BitFit) registered here proves that a new one is one
module plus one registry line."""

from __future__ import annotations

import pickle
import re
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from raysweep import freeze
from raysweep.backbone import Backbone, boundary_for, count_trainable, describe_trainable, trainable_parameters
from raysweep.config import FREEZE_MODES, ConfigError, RecipeConfig, SweepConfig, from_dict
from raysweep.embed import ensure_activations, load_activations
from raysweep.model import build_model, fit, model_key, predict_proba, rebuild
from raysweep.packing import packable

from test_import_graph import imports
from tiny import TINY_TEXTS

MODES = [name for mechanism in freeze.REGISTRY.values() for name in mechanism.examples]
ONE_STEP = RecipeConfig(epochs=1, batch_size=len(TINY_TEXTS), step_size=1, dropout=0.0)


def test_the_study_modes_and_the_mechanisms_are_registered():
    assert list(FREEZE_MODES) == ["last-linear", "pooler", "last-attention"]
    assert list(freeze.REGISTRY) == ["layers", "lora"]
    assert set(FREEZE_MODES) <= set(MODES)


@pytest.mark.parametrize("key", list(freeze.REGISTRY))
def test_each_mechanism_parses_its_names_and_reads_its_canonical_name_back(key):
    mechanism = freeze.REGISTRY[key]
    assert mechanism.examples and mechanism.spelling
    for name in mechanism.examples:
        mode = freeze.parse(name)
        assert type(mode) is mechanism
        assert freeze.parse(mode.name) == mode and hash(freeze.parse(mode.name)) == hash(mode)
        assert pickle.loads(pickle.dumps(mode)) == mode  # Ray ships it to the scoring actors
        assert mode.top_layers >= 0 and isinstance(mode.train_pooler, bool)
    with pytest.raises(ConfigError, match=re.escape(mechanism.spelling)):  # the error lists every mechanism
        freeze.parse("frozen")


def test_only_the_registry_knows_its_mechanisms():
    """The pipeline holds modes through the FreezeMode interface: no module outside freeze/
    imports a mechanism's own module (which is what makes a new one a module and a line)."""
    own = {f"raysweep.freeze.{key}" for key in ("layers", "lora")}
    users = {m for m, deps in imports().items() if deps & own and not m.startswith("raysweep.freeze")}
    assert users == set()


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("freeze-cache")


def caches_at_its_boundary(name: str, encoder: str, cache) -> None:
    backbone = Backbone(encoder)
    mode = freeze.parse(name)
    b = boundary_for(name, backbone.num_layers, "pooler", 32, backbone.hidden_size)
    assert b.layer == backbone.num_layers - mode.top_layers  # the frozen part ends where the trained part starts
    logs = []
    [first] = ensure_activations(encoder, TINY_TEXTS, [b], cache, use_ray=False, log=logs.append)
    computed = len(logs)
    [again] = ensure_activations(encoder, TINY_TEXTS, [b], cache, use_ray=False, log=logs.append)
    assert again == first and len(logs) == computed  # the second call computed nothing
    acts = load_activations(first)
    assert acts.boundary == b and acts.hidden_size == backbone.hidden_size
    assert acts.boundary.ragged == (mode.top_layers > 0)  # token states only when encoder layers train


def trains_exactly_its_part(name: str, encoder: str, cache) -> list[str]:
    """One step over the mode's cached activations; the names of its trainable parameters."""
    backbone, mode = Backbone(encoder), freeze.parse(name)
    b = boundary_for(name, backbone.num_layers, "pooler", 32, backbone.hidden_size)
    [path] = ensure_activations(encoder, TINY_TEXTS, [b], cache, use_ray=False, log=lambda *_: None)
    acts = load_activations(path)
    model = build_model(acts, 5, ONE_STEP, seed=0, freeze=mode)
    assert count_trainable(model) == trainable_parameters(backbone, name, 5, "pooler", 32) > 0
    trained = set(describe_trainable(model))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    rows = np.arange(len(TINY_TEXTS))
    assert np.isfinite(fit(model, acts, rows, rows % 5, ONE_STEP, seed=0))
    for n, p in model.named_parameters():
        assert n in trained or torch.equal(p.detach(), before[n]), f"{name}: frozen {n} changed"
    # The head always trains; with a trained top, so does something below it.
    assert any(not torch.equal(p.detach(), before[n]) for n, p in model.named_parameters() if n in trained)
    # The scoring actors' copy: rebuilt from the state and the mode it carries, it predicts the same.
    copy = rebuild(acts, model.state_dict(), ONE_STEP.dropout, model.freeze)
    np.testing.assert_array_equal(predict_proba(copy, acts), predict_proba(model, acts))
    # Its key adds exactly what the mode says to the layer modes' key over the same activations,
    # and a mode the packer cannot stack is never packed.
    plain, own = (model_key(acts, rows, rows % 5, 5, ONE_STEP, 0, m) for m in (None, mode))
    assert (own == plain) == (mode.key_part() == {})
    assert packable(acts, mode) == (not b.ragged and mode.packable)
    return sorted(trained)


@pytest.mark.parametrize("name", MODES)
def test_caches_at_its_boundary_and_reuses_it(name, tiny_bert, cache):
    caches_at_its_boundary(name, tiny_bert, cache)


@pytest.mark.parametrize("name", MODES)
def test_builds_and_one_step_trains_exactly_its_trainable_part(name, tiny_bert, cache):
    trained = trains_exactly_its_part(name, tiny_bert, cache)
    if isinstance(freeze.parse(name), freeze.Lora):
        assert any("lora" in n for n in trained)


# --------------------------------------------------------------------------- a new mechanism


@dataclass(frozen=True)
class BitFit(freeze.FreezeMode):
    """BitFit (Ben Zaken et al., 2022): only the biases of the top k layers train, plus the pooler
    dense and the head. All it takes: this class and one `register` line."""

    layers: int

    spelling = "bitfit-kK"
    examples = ("bitfit-k2",)
    packable = False

    @classmethod
    def parse(cls, name: str) -> BitFit | None:
        if not name.startswith("bitfit"):
            return None
        m = re.fullmatch(r"bitfit-k(\d+)", name)
        if m is None or int(m[1]) < 1:
            raise ConfigError(f"{name!r} is not a BitFit freeze mode (bitfit-kK, K >= 1)")
        return cls(int(m[1]))

    @property
    def name(self) -> str:
        return f"bitfit-k{self.layers}"

    @property
    def top_layers(self) -> int:
        return self.layers

    @property
    def train_pooler(self) -> bool:
        return True

    def adapt(self, top):
        for n, p in top.named_parameters():
            p.requires_grad_(n.endswith("bias"))
        return top

    def key_part(self) -> dict:
        return {"bitfit": self.layers}  # it shares top-K's activations


def test_a_new_mechanism_is_one_module_and_one_registry_line(monkeypatch, tiny_bert, cache, tmp_path):
    from click.testing import CliRunner

    from raysweep.cli import main
    from raysweep.train import Cell, TrialInputs

    from tiny import run_trial

    monkeypatch.setattr(freeze, "REGISTRY", dict(freeze.REGISTRY))
    freeze.register(BitFit, "bitfit")
    with pytest.raises(ValueError, match="registered twice"):
        freeze.register(BitFit, "bitfit")
    # The sweep file takes it, with the same checks as any mode.
    assert from_dict(SweepConfig, {"compare": {"freeze": ["pooler", "bitfit-k2"]}}).compare.freeze[1] == "bitfit-k2"
    with pytest.raises(ConfigError, match=r"compare.freeze\[1\]: 'bitfit-k0' is not a BitFit freeze mode"):
        from_dict(SweepConfig, {"compare": {"freeze": ["pooler", "bitfit-k0"]}})
    with pytest.raises(ConfigError, match="bitfit-kK"):
        freeze.parse("frozen")
    # The contract, unchanged: it caches at top-2's boundary and trains only its biases up there.
    caches_at_its_boundary("bitfit-k2", tiny_bert, cache)
    trained = trains_exactly_its_part("bitfit-k2", tiny_bert, cache)
    assert [n for n in trained if n.startswith("top.")] and all(n.endswith("bias") for n in trained if n.startswith("top."))
    # A trial and `raysweep check` see it with no other change.
    backbone = Backbone(tiny_bert)
    acts = load_activations(ensure_activations(tiny_bert, TINY_TEXTS * 4, [boundary_for("bitfit-k2", 3, "pooler", 32)],
                                               cache, use_ray=False, log=lambda *_: None)[0])
    inputs = TrialInputs(train_labels=np.arange(32) % 5, val_labels=np.arange(32) % 5, labeled=np.arange(8),
                         pool_rows=np.arange(8, 32), train_acts=acts, val_acts=acts, num_classes=5,
                         cache_dir=str(tmp_path / "scoring"), freeze=freeze.parse("bitfit-k2"))
    record = run_trial(Cell("real", "entropy", 1, "bitfit-k2", 0), inputs, ONE_STEP)
    assert record["trainable_params"] == trainable_parameters(backbone, "bitfit-k2", 5) < \
        trainable_parameters(backbone, "top-2", 5)
    sweep = tmp_path / "s.yaml"
    sweep.write_text(f"encoder: {{name: {tiny_bert}}}\ncompare: {{freeze: [pooler, bitfit-k2]}}\nreplicate: {{seed: [0]}}\n")
    result = CliRunner().invoke(main, ["check", str(sweep)])
    assert result.exit_code == 0, result.output
    assert f"bitfit-k2 {trainable_parameters(backbone, 'bitfit-k2', 5):,}" in result.output

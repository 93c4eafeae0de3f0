"""Cell ids and cache keys are frozen: a finished cell or cache entry made before a change to the
code must still be found after it. The expected values below were computed on main before the
hashing helper (raysweep.hashing) replaced the dozen hand-written sha256 calls; do not update them
to make a failure pass: a different value means every earlier result under that key is orphaned
(write a migration instead)."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from raysweep import augment, embed, freeze, grid, hashing, model, scoring, sweep
from raysweep.backbone import Boundary
from raysweep.config import RecipeConfig, load_sweep
from raysweep.hashing import Digest, json_digest, text_digest
from raysweep.llm.prompt import examples_digest, template_digest

SWEEP = """name: frozen
compare:
  pool: [real, llm]
  strategy: [random, entropy]
  fraction: [0, 1.5]
  freeze: [last-linear]
replicate:
  seed: [0]
encoder:
  name: minilm
recipe:
  epochs: 3
llm:
  n_rows: 40
"""


@pytest.fixture
def cfg(tmp_path):
    (tmp_path / "s.yaml").write_text(SWEEP)
    return load_sweep(tmp_path / "s.yaml")


def test_cell_ids_are_frozen(cfg):
    assert grid.fixed_digest(cfg) == "2a8204817fb7"
    # real/llm x random/entropy x fraction 0/1.5; the llm cells carry the generated rows' digest
    assert sweep.cell_ids(cfg, sweep.expand(cfg), "0123456789abcdef") == [
        "836f822a89c645e7", "1310a8f2349b6ebe", "ffa4856f44ddb218", "538b3ef17ec42209",
        "d37f0d7ad8608cb9", "6d44d71859c053f2", "77ef5a9850541e35", "57b97c2636054eed"]


def test_qbc_seeds_ids_name_their_committee_and_no_other_id_moves(tmp_path):
    """Issue 33: a qbc-seeds cell's id carries its committee (the other seeds); a random cell's
    does not. The `committees=False` ids are the ones main computed before (the migration's old ids)."""
    (tmp_path / "q.yaml").write_text("name: frozen\ncompare:\n  pool: [real]\n  strategy: [random, qbc-seeds]\n"
                                     "  fraction: [1]\n  freeze: [pooler]\nreplicate:\n  seed: [0, 1, 2]\n"
                                     "encoder:\n  name: minilm\nrecipe:\n  epochs: 3\n")
    q = load_sweep(tmp_path / "q.yaml")
    cells = grid.expand(q)
    random_ids = ["f94516f83bbf289f", "d3f6cf607c5461f4", "3331fb4b41d01313"]
    assert grid.cell_ids(q, cells) == [*random_ids, "1ca318c534355851", "97a4c25a1d9c56a1", "580b196138bdb26d"]
    assert grid.cell_ids(q, cells, committees=False) == [
        *random_ids, "b30ea649564486c3", "c7ae8e01809b549f", "d36881f64215f063"]
    # the same committee in another order is the same cell
    q.replicate.seed = [2, 0, 1]
    assert sorted(grid.cell_ids(q, grid.expand(q))[3:]) == sorted(["1ca318c534355851", "97a4c25a1d9c56a1",
                                                                  "580b196138bdb26d"])


def test_generation_keys_are_frozen(cfg):
    assert augment.config_key(cfg) == "cc75e11c0435dfc5"
    rows = pd.DataFrame({"text": ["a good film", "très mauvais — 😀"], "llm_label": [3, 0], "teacher_label": [4, 0]})
    assert augment.rows_digest(rows) == "a1feefcf58d13111"
    assert template_digest("Write $n sentences: $examples ($labels) é") == "0027327c1e8ec14b"
    assert examples_digest(pd.DataFrame({"text": ["zébra", "a"], "label": [1, 0]})) == "8136acee7f8c3844"


def test_scoring_keys_are_frozen():
    assert scoring._digest({"v": 1, "b": [1, 2], "a": "x"}) == "9a1f93456894dc3b84919963"
    assert model._digest({"v": 1, "b": [1, 2], "a": "x"}) == "9a1f93456894dc3b84919963"
    assert hashing.array_digest(np.arange(12, dtype=np.float32).reshape(3, 4)) == "fa90ee4a0d738b9353e7"
    lin = torch.nn.Linear(3, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.arange(6, dtype=torch.float32).reshape(2, 3))
        lin.bias.copy_(torch.tensor([0.5, -1.0]))
    assert hashing.state_digest(lin) == "08dae3382bc1bb9b23f3"
    acts = SimpleNamespace(path=Path("/x/abc123"))  # the key uses only the entry's name
    key = model.model_key(acts, np.array([3, 1, 2]), np.array([0, 4, 4]), 5, RecipeConfig(epochs=3), 7)
    assert key == "c8ce2c299c544ceb8512d1ee"
    # A freeze mode adds to the key only what the activations do not say: nothing for the layer
    # modes, the adapters' settings for LoRA (values computed before freeze/ existed).
    keyed = {f: model.model_key(acts, np.array([3, 1, 2]), np.array([0, 4, 4]), 5, RecipeConfig(epochs=3), 7,
                                freeze.parse(f)) for f in ("pooler", "top-2", "lora", "lora-r2-k2-ffn")}
    assert keyed == {"pooler": key, "top-2": key, "lora": "ef5149800a11c217609dacd8",
                     "lora-r2-k2-ffn": "fe5da1e47317a1c7bbb5a282"}


def test_activation_keys_are_frozen():
    assert embed.texts_digest(["a good movie .", "", "é😀"]) == "123478a3aae3645d8388"
    key = embed.activation_key("f" * 20, Boundary("hidden", 5, "pooler", 64), ["a", "b"])
    assert key == "e1d33034309f2f6450307622"


def test_encoder_fingerprint_is_frozen(tmp_path, monkeypatch):
    import sys
    from types import SimpleNamespace

    from tiny import make_tiny_encoder

    from raysweep.backbone import Backbone

    backbone = Backbone(make_tiny_encoder("bert", tmp_path))
    with torch.no_grad():  # weights fixed by hand: a random init may differ between torch versions
        for t in backbone.model.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.linspace(-1, 1, t.numel()).reshape(t.shape))
    # The library versions are part of the fingerprint (an upgrade may change the features), so
    # they are fixed here. transformers is a lazy module whose __version__ a setattr does not
    # always reach: the fingerprint's own `import transformers` gets this stand-in instead.
    monkeypatch.setitem(sys.modules, "transformers", SimpleNamespace(__version__="5.0.0"))
    monkeypatch.setattr(torch, "__version__", "2.0.0")
    assert backbone.fingerprint == "15e1d75b9bdf01ecf031"


def test_json_digest_ignores_key_order_and_keeps_unicode_choice():
    assert json_digest({"a": 1, "b": 2}, 16) == json_digest({"b": 2, "a": 1}, 16)
    assert json_digest(["é"], 16) != json_digest(["é"], 16, ascii_only=False)
    assert len(json_digest({}, 12)) == 12


def test_digest_pieces_are_delimited():
    assert Digest().add_sized_texts(["ab", "c"]).hex(20) != Digest().add_sized_texts(["a", "bc"]).hex(20)
    assert Digest("x").add("y").hex(16) == text_digest("xy", 16)

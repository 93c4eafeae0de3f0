"""`generate` reuses what the machine's caches hold (issue 30 item 7): no encoder pass over every
real row, no teacher trained again, to relabel a handful of generated rows."""

from __future__ import annotations

import os

import numpy as np
import pytest

from raysweep import augment, embed, model
from raysweep.backbone import Backbone, boundary_for
from raysweep.config import load_sweep
from raysweep.data import load_splits
from raysweep.embed import ensure_activation_sets, load_activations
from raysweep.encoders import shared_cache

from tiny import TINY_TEXTS


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYSWEEP_HOME", str(tmp_path / "home"))
    return shared_cache()


def test_an_entry_in_the_shared_cache_is_linked_not_encoded_again(tiny_bert, tmp_path, home):
    backbone = Backbone(tiny_bert)
    bs = [boundary_for(f, backbone.num_layers, "pooler", 32) for f in ("pooler", "last-attention")]
    logs = []
    first = ensure_activation_sets(tiny_bert, {"train": TINY_TEXTS}, bs, home, use_ray=False, log=logs.append)
    assert len(logs) == 1  # the one encoder pass
    again = ensure_activation_sets(tiny_bert, {"train": TINY_TEXTS, "new": TINY_TEXTS[:2]}, bs, tmp_path / "run-cache",
                                   use_ray=False, log=logs.append)
    assert len(logs) == 2 and logs[1].startswith("encoded 2 rows")  # only the texts the shared cache lacks
    for shared, own in zip(first["train"], again["train"]):
        assert own.parent == tmp_path / "run-cache" and own.name == shared.name
        assert os.stat(own / "features.npy").st_ino == os.stat(shared / "features.npy").st_ino  # linked, not copied
        np.testing.assert_array_equal(load_activations(own).features, load_activations(shared).features)


def test_the_teacher_in_the_shared_cache_is_linked_and_one_in_the_own_cache_kept(tmp_path, home):
    shared = home / "selection" / "models" / "abc.pt"
    shared.parent.mkdir(parents=True)
    shared.write_bytes(b"teacher")
    own = tmp_path / "cache" / "selection" / "models" / "abc.pt"
    augment._adopt_shared_model(own, tmp_path / "cache")
    assert own.read_bytes() == b"teacher" and os.stat(own).st_ino == os.stat(shared).st_ino
    kept = tmp_path / "other" / "selection" / "models" / "abc.pt"
    kept.parent.mkdir(parents=True)
    kept.write_bytes(b"mine")
    augment._adopt_shared_model(kept, tmp_path / "other")
    assert kept.read_bytes() == b"mine"
    augment._adopt_shared_model(tmp_path / "x" / "selection" / "models" / "none.pt", tmp_path / "x")  # nothing shared
    assert not (tmp_path / "x" / "selection" / "models" / "none.pt").exists()


def test_relabeling_in_another_cache_encodes_only_the_new_rows_and_trains_no_teacher(
        tiny_bert, sst5_subset, tmp_path, home, monkeypatch):
    """A `generate` in a directory of its own (the shared cache), then a run's own cache (DIR/cache)."""
    from test_llm_augment import write_sweep

    cfg = load_sweep(write_sweep(tmp_path, sst5_subset, tiny_bert, "http://127.0.0.1:9/v1"))
    splits = load_splits(cfg.data, cfg.split)
    first = augment.relabel(cfg, splits, ["a fine film .", "a dull film ."], home, use_ray=False, log=lambda *_: None)
    encoded, trained = [], []
    real_compute = embed._compute_local
    monkeypatch.setattr(embed, "_compute_local", lambda b, flat, *a: (encoded.append(len(flat)),
                                                                       real_compute(b, flat, *a))[1])
    real_train = model.train_members
    monkeypatch.setattr(model, "train_members", lambda acts, members, *a, **k: (trained.extend(members),
                                                                             real_train(acts, members, *a, **k))[1])
    again = augment.relabel(cfg, splits, ["a fine film .", "a dull film .", "a new one ."], tmp_path / "run" / "cache",
                            use_ray=False, log=lambda *_: None)
    assert encoded == [3] and trained == []  # the generated rows only; the teacher is the shared one
    assert again["labels"][:2].tolist() == first["labels"].tolist()
    assert again["val_accuracy"] == first["val_accuracy"]

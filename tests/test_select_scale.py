"""A large pool in bounded memory: the activation cache written as the encoder pass goes, and the
batch chosen from the pool run by run (poolscan.py). Each must equal the in-memory path exactly:
the same cache files byte for byte, the same batch row for row."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from raysweep import cache_writer, embed, labeling, poolscan, scoring
from raysweep.backbone import Boundary, load_backbone
from raysweep.config import ConfigError

WORDS = ["good", "great", "fun", "bad", "boring", "awful", "the", "movie", "plot", "film", "is", "very", "not"]


def test_an_entry_written_row_by_row_is_what_np_save_of_the_stack_wrote(tmp_path):
    rng = np.random.default_rng(0)
    pooled = rng.normal(size=(37, 8)).astype(np.float32)
    w = cache_writer.EntryWriter(tmp_path, 37, Boundary("pooled", 3, "pooler", 16), 8)
    for rows in np.array_split(rng.permutation(37), 5):  # out of order, as length-sorted batches come
        w.put(rows, pooled[rows])
    w.close()
    np.save(tmp_path / "expected.npy", pooled)
    assert (tmp_path / "features.npy").read_bytes() == (tmp_path / "expected.npy").read_bytes()

    ragged = [rng.normal(size=(int(k), 8)).astype(np.float32) for k in rng.integers(1, 9, size=23)]
    d = tmp_path / "ragged"
    d.mkdir()
    w = cache_writer.EntryWriter(d, 23, Boundary("hidden", 2, "mean", 16), 8)
    for rows in np.array_split(rng.permutation(23), 4):
        w.put(rows, [ragged[r] for r in rows])
    w.close()
    np.save(d / "expected.npy", np.concatenate(ragged))
    assert (d / "features.npy").read_bytes() == (d / "expected.npy").read_bytes()
    assert np.load(d / "offsets.npy").tolist() == [0, *np.cumsum([len(r) for r in ragged]).tolist()]
    assert not (d / "features.spill").exists()

    lost = tmp_path / "lost"
    lost.mkdir()
    w = cache_writer.EntryWriter(lost, 4, Boundary("pooled", 3, "pooler", 16), 8)
    w.put([0, 2], pooled[:2])
    with pytest.raises(RuntimeError, match="2 of 4 rows came back without features"):
        w.close()


@pytest.mark.parametrize("freeze", ["pooler", "last-attention"])
def test_the_encoder_pass_writes_what_the_encoder_computes(tmp_path, tiny_bert, freeze):
    from raysweep.backbone import boundary_for

    texts = [" ".join(np.random.default_rng(i).choice(WORDS, size=1 + i % 9)) for i in range(150)]
    backbone = load_backbone(tiny_bert)
    boundary = boundary_for(freeze, backbone.num_layers, "pooler", 16)
    [path] = embed.ensure_activations(tiny_bert, texts, [boundary], tmp_path, use_ray=False, batch_size=16,
                                      log=lambda m: None)
    acts = embed.load_activations(path)
    direct = backbone.features(texts, boundary)
    for i in (0, 7, 149):
        got = acts.features[acts.offsets[i]: acts.offsets[i + 1]] if boundary.ragged else acts.features[i]
        np.testing.assert_allclose(got, direct[i], atol=1e-5)


@pytest.fixture
def big_project(tmp_path, tiny_bert, monkeypatch):
    """A project whose pool spans several runs (RUN_ROWS made small) and ends mid-chunk."""
    monkeypatch.setattr(poolscan, "RUN_ROWS", 128)
    rng = np.random.default_rng(3)
    texts = [" ".join(rng.choice(WORDS, size=rng.integers(2, 8))) + f" {i}" for i in range(430)]
    d = tmp_path / "proj"
    d.mkdir()
    pd.DataFrame({"id": [f"l{i}" for i in range(30)], "text": texts[:30],
                  "label": ["negative", "positive"] * 15}).to_csv(d / "labeled.csv", index=False)
    pd.DataFrame({"id": [f"u{i}" for i in range(400)], "text": texts[30:]}).to_csv(d / "unlabeled.csv", index=False)
    (d / "project.yaml").write_text(f"""
classes: [negative, positive]
batch: 7
cv_folds: 2
encoder: {{name: {tiny_bert}, max_length: 16}}
recipe: {{epochs: 2, batch_size: 16}}
selection: {{mc_samples: 3}}
""")
    return d


def _batch(d, overrides, in_memory: bool) -> pd.DataFrame:
    cfg = labeling.load_project_config(d, overrides)
    project = labeling.load_project(d, cfg)
    acts = labeling.activations(project, use_ray=False, log=lambda m: None)
    round_dir = labeling._choose(project, acts, 0.0, False, lambda m: None, in_memory=in_memory)
    table = pd.read_csv(round_dir / "to_label.csv", dtype={"id": str})
    shutil.rmtree(round_dir)
    shutil.rmtree(d / "cache" / "selection" / "scores", ignore_errors=True)  # the in-memory path's score cache
    return table


@pytest.mark.parametrize("overrides", [
    ["strategy=entropy"], ["strategy=margin", "diverse=true", "similarity=0.9"], ["strategy=bald"],
    ["strategy=sqbc"], ["strategy=coreset"], ["strategy=badge"], ["strategy=random"],
    ["labeled=none.csv", "cold_start=kcenter"],
    ["strategy=cal"], ["strategy=cluster-margin"], ["strategy=qbc-seeds"], ["strategy=typiclust"],
    ["labeled=none.csv", "cold_start=typiclust"],
], ids=lambda o: "-".join(x.split("=")[1] for x in o))
def test_the_chunked_pool_gives_the_in_memory_batch(big_project, overrides):
    chunked = _batch(big_project, overrides, in_memory=False)
    reference = _batch(big_project, overrides, in_memory=True)
    # The tiny random encoder's vectors are all alike, so `diverse` keeps only the first row.
    assert len(chunked) == (1 if "diverse=true" in overrides else 7)
    pd.testing.assert_frame_equal(chunked, reference)


def test_select_refuses_the_oracle(big_project):
    with pytest.raises(ConfigError, match="'oracle' reads the pool's gold labels"):
        labeling.load_project_config(big_project, ["strategy=oracle"])


@pytest.mark.parametrize("name", ["entropy", "sqbc", "coreset", "cal", "cluster-margin"])
def test_the_candidates_carry_the_in_memory_scores_probabilities_and_vectors(big_project, name):
    """What `diverse` walks (5 x the batch) and the round's files show, number for number."""
    from raysweep import strategies

    cfg = labeling.load_project_config(big_project, [])
    project = labeling.load_project(big_project, cfg)
    acts = labeling.activations(project, use_ray=False, log=lambda m: None)
    labeled, pool = np.flatnonzero(project.labels >= 0), np.flatnonzero(project.labels < 0)
    y = project.labels[labeled]
    model = scoring.trained_model(acts, labeled, y, 2, cfg.recipe, 0)
    strategy = strategies.get(name)
    picks = poolscan.ranked(strategy, model, acts, pool, labeled, y, 35, np.random.default_rng(5), 0, 0, big_project)
    view = scoring.pool_view(strategy.needs | {"probs"}, model, acts, pool, labeled, y, cfg.selection, 0)
    picked, scores = strategy.ranked(view, 35, np.random.default_rng(5))
    np.testing.assert_array_equal(picks.positions, picked)
    np.testing.assert_array_equal(picks.probs, view.probs[picked])
    np.testing.assert_array_equal(picks.embeddings, view.embeddings[picked])
    if scores is None:
        assert picks.scores is None
    else:
        np.testing.assert_array_equal(picks.scores, scores)


def test_a_run_reads_a_fresh_map_of_the_cache(big_project, monkeypatch):
    """No map of the whole entry lives across runs: its pages would pile up in resident memory."""
    opened = []
    real = scoring.load_activations
    monkeypatch.setattr(scoring, "load_activations", lambda p: opened.append(p) or real(p))
    _batch(big_project, ["strategy=entropy"], in_memory=False)
    assert len(opened) == -(-430 // 128)  # one per run of the pool and labeled rows

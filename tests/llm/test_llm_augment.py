"""LLM pools end to end: generate against the fake server, relabel with a teacher, run them in the grid."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from raysweep import augment, runtime, sweep
from raysweep.config import ConfigError, RecipeConfig, load_sweep
from raysweep.embed import load_activations
from raysweep.model import build_model, fit, predict_proba


def write_sweep(tmp_path, data, encoder, base_url, extra: str = "", name: str = "gen.yaml"):
    path = tmp_path / name
    path.write_text(f"""
name: gen
compare:
  pool: [real, llm, llm_teacher]
  strategy: [random]
  fraction: [0, 0.25, 1]
  freeze: [last-linear]
replicate:
  seed: [0]
data:
  path: {data}
encoder:
  name: {encoder}
recipe:
  epochs: 2
llm:
  base_url: {base_url}
  api_key_env: none
  model: fake-model
  n_rows: 20
  samples_per_call: 5
  concurrency: 2
  retry_backoff: 0.01
  timeout: 10
teacher:
  freeze: last-linear
  epochs: 3
{extra}
""")
    return path


# --------------------------------------------------------------------------- config, no Ray


def test_the_llm_and_teacher_sections_are_validated(tmp_path):
    base = "name: x\ncompare: {pool: [real, llm_teacher]}\n"
    (tmp_path / "ok.yaml").write_text(base + "llm: {n_rows: 300}\n")
    cfg = load_sweep(tmp_path / "ok.yaml")
    assert cfg.llm.n_rows == 300 and cfg.needs_generation and cfg.teacher.freeze == "pooler"
    assert not load_sweep(tmp_path / "ok.yaml", ["compare.pool=[real]"]).needs_generation
    for body, message in [
        ("llm: {limits: {rpm: 5}}", "llm.limits.rpm: unknown key"),
        ("llm: {n_rows: 0}", "llm.n_rows: must be at least 1"),
        ("teacher: {freeze: top-0}", "teacher.freeze: 'top-0' is not a freeze mode"),
        ("teacher: {epochs: 0}", "teacher.epochs: must be at least 1"),
    ]:
        (tmp_path / "bad.yaml").write_text(base + body + "\n")
        with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
            load_sweep(tmp_path / "bad.yaml")


def test_an_llm_pool_trains_on_real_rows_then_generated_rows_with_the_pools_labels(monkeypatch):
    monkeypatch.setattr(sweep, "_activations", lambda path: path)  # the artifact paths stand in for features
    context = sweep.TrialContext(
        train_labels=np.array([0, 1, 2, 3, 4, 0]), val_labels=np.array([1]), labeled=np.array([0, 2]),
        pool_rows=np.array([1, 3, 4, 5]), num_classes=5, recipe=RecipeConfig(),
        artifacts={"m|pooler|last-linear": ("train", "val"), "m|pooler|last-linear|generated": ("train+gen", "val")},
        generated_labels={"llm": np.array([4, 4, 3]), "llm_teacher": np.array([0, 4, 2])})
    real = sweep.trial_inputs(context, "m|pooler|last-linear")
    assert real.train_acts == "train" and real.pool_rows.tolist() == [1, 3, 4, 5]
    assert real.train_labels.tolist() == [0, 1, 2, 3, 4, 0]
    for pool, tail in [("llm", [4, 4, 3]), ("llm_teacher", [0, 4, 2])]:
        inp = sweep.trial_inputs(context, "m|pooler|last-linear", pool)
        assert inp.train_acts == "train+gen" and inp.val_acts == "val"
        assert inp.pool_rows.tolist() == [6, 7, 8] and inp.labeled.tolist() == [0, 2]
        assert inp.train_labels.tolist() == [0, 1, 2, 3, 4, 0, *tail]


def test_llm_cells_are_keyed_by_the_generated_rows_and_real_cells_are_not(tmp_path):
    (tmp_path / "s.yaml").write_text("name: x\ncompare: {pool: [real, llm], fraction: [1], freeze: [pooler]}\n"
                                     "replicate: {seed: [0]}\n")
    cfg = load_sweep(tmp_path / "s.yaml")
    cells = sweep.expand(cfg)
    a, b = sweep.cell_ids(cfg, cells, "digest-a"), sweep.cell_ids(cfg, cells, "digest-b")
    real = [i for i, c in enumerate(cells) if c.pool == "real"]
    llm = [i for i, c in enumerate(cells) if c.pool == "llm"]
    assert [a[i] for i in real] == [b[i] for i in real] == [sweep.cell_id(cells[i], sweep.fixed_digest(cfg))
                                                            for i in real]
    assert all(a[i] != b[i] for i in llm)
    # Without a complete generation directory nothing of the LLM pool counts as done.
    assert sweep.cell_progress(cfg, tmp_path / "out") == {"cells": 2, "done": 0, "running": 0, "failed": 0, "pending": 2}


# --------------------------------------------------------------------------- generation + teacher


@pytest.mark.slow
def test_generate_relabels_with_the_teacher_and_reuses_a_complete_directory(
        ray_local, fake_openai, tiny_bert, sst5_subset, tmp_path, monkeypatch):
    server = fake_openai(rows_per_reply=5)
    cfg = load_sweep(write_sweep(tmp_path, sst5_subset, tiny_bert, server.base_url))
    gen_dir, cache = tmp_path / "gen", tmp_path / "cache"
    result = augment.run_generation(cfg, gen_dir, cache, log=lambda *_: None)

    rows = pd.read_csv(gen_dir / "generated.csv", keep_default_na=False)
    assert list(rows.columns) == ["text", "llm_label", "teacher_label"] and len(rows) == 20
    pd.testing.assert_frame_equal(rows, result.rows.reset_index(drop=True), check_dtype=False)
    s = json.loads((gen_dir / "generation.json").read_text())
    llm, teacher = rows["llm_label"].to_numpy(), rows["teacher_label"].to_numpy()
    assert s["agreement"] == pytest.approx((llm == teacher).mean())
    confusion = np.array(s["confusion_llm_by_teacher"])
    assert confusion.shape == (5, 5) and confusion.sum() == 20
    assert confusion.sum(axis=1).tolist() == np.bincount(llm, minlength=5).tolist()
    assert confusion.sum(axis=0).tolist() == np.bincount(teacher, minlength=5).tolist()
    assert s["rows_kept"] == 20 and s["requests"] == len(server.served()) and s["teacher"]["epochs"] == 3

    # The teacher is the recipe's model trained on every real train row: train it here again.
    train_dir, gen_acts_dir, val_dir = _artifacts(cache, n_train=300, n_gen=20, n_val=100)
    train_acts = load_activations(train_dir)
    data = pd.read_csv(sst5_subset, keep_default_na=False)
    labels = data.query("split == 'train'")["label"].to_numpy()
    from dataclasses import replace
    recipe = replace(cfg.recipe, epochs=3)
    model = build_model(train_acts, 5, recipe, seed=0)
    fit(model, train_acts, np.arange(300), labels, recipe, seed=0)
    assert predict_proba(model, load_activations(gen_acts_dir)).argmax(1).tolist() == teacher.tolist()
    val_pred = predict_proba(model, load_activations(val_dir)).argmax(1)
    assert s["teacher_val_accuracy"] == pytest.approx((val_pred == data.query("split == 'dev'")["label"]).mean())

    with np.load(gen_dir / "embeddings.npz") as npz:
        assert npz["real"].shape == (300, train_acts.hidden_size) and npz["generated"].shape[0] == 20
    assert len(pd.read_csv(gen_dir / "real_labels.csv")) == 300

    # Complete and made by this config: reused without a call or a teacher.
    calls = len(server.arrivals)
    again = augment.run_generation(cfg, gen_dir, cache, log=lambda *_: None)
    assert len(server.arrivals) == calls
    pd.testing.assert_frame_equal(again.rows, rows, check_dtype=False)
    # The command prints the summary of the same directory, reused.
    from click.testing import CliRunner

    from raysweep.cli import main
    started = []
    monkeypatch.setattr(runtime, "start_ray", started.append)
    out = CliRunner().invoke(main, ["generate", str(tmp_path / "gen.yaml"), "--output", str(gen_dir)])
    assert out.exit_code == 0, out.output
    assert started == []  # nothing to generate or relabel: no Ray started for it
    assert f"{'agreement':22s} {s['agreement']}" in out.output and f"{'rows_kept':22s} 20" in out.output
    assert len(server.arrivals) == calls
    bad = CliRunner().invoke(main, ["generate", str(tmp_path / "gen.yaml"), "--output", str(gen_dir),
                                    "--set", "llm.limits.rpm=5"])
    assert bad.exit_code == 2 and "llm.limits.rpm: unknown key" in bad.output
    assert len(bad.output.strip().splitlines()) == 1

    # Another teacher: the paid replies are reused, only the relabeling runs again.
    other = load_sweep(write_sweep(tmp_path, sst5_subset, tiny_bert, server.base_url), ["teacher.epochs=1"])
    relabeled = augment.run_generation(other, gen_dir, cache, log=lambda *_: None)
    assert len(server.arrivals) == calls and relabeled.summary["teacher"]["epochs"] == 1
    assert relabeled.rows["text"].tolist() == rows["text"].tolist()


def _artifacts(cache, n_train, n_gen, n_val):
    """The cache entries (train, generated, val) of the last-linear boundary, found by row count."""
    found = {}
    for meta_path in cache.glob("*/meta.json"):
        meta = json.loads(meta_path.read_text())
        if meta["boundary"]["kind"] == "sentence":
            found[meta["rows"]] = meta_path.parent
    return found[n_train], found[n_gen], found[n_val]


def test_a_broken_generated_csv_is_a_one_line_error(tmp_path):
    (tmp_path / "generated.csv").write_text("text,llm_label\nfine,1\n")
    with pytest.raises(augment.GenerationDirError, match=r"generated\.csv: missing column\(s\) teacher_label"):
        augment.read_generated(tmp_path / "generated.csv")
    (tmp_path / "generated.csv").write_text("text,llm_label,teacher_label\nfine,1,positive\n")
    with pytest.raises(augment.GenerationDirError, match="teacher_label holds non-integer labels"):
        augment.read_generated(tmp_path / "generated.csv")


# --------------------------------------------------------------------------- into the grid


@pytest.mark.slow
def test_a_sweep_with_llm_pools_generates_first_then_adds_generated_rows(
        ray_local, fake_openai, tiny_bert, sst5_subset, tmp_path):
    server = fake_openai(rows_per_reply=5)
    path = write_sweep(tmp_path, sst5_subset, tiny_bert, server.base_url,
                       extra="selection: {k: 3}", name="grid.yaml")
    cfg = load_sweep(path, ["compare.strategy=[random, entropy]"])
    out = tmp_path / "out"
    logs = []
    table = sweep.run_sweep(cfg, out, log=logs.append)

    assert len(table) == 3 * 2 * 3 and set(table["status"]) == {"ok"}
    # One encoder pass, the generation's (real train, val and generated rows for its teacher);
    # the LLM pools' train set (real rows, then generated) is assembled from it, not encoded again.
    encoded = [line for line in logs if line.startswith("cached activations")]
    assert len(encoded) == 1 and " x 420 rows " in encoded[0], encoded
    n_labeled = int(table["n_labeled"].iloc[0])
    added = table.set_index(["pool", "strategy", "fraction"])["n_added"]
    for strategy in ("random", "entropy"):
        assert added[("real", strategy, 0.25)] == round(0.25 * n_labeled)
        assert added[("llm", strategy, 0.25)] == added[("llm_teacher", strategy, 0.25)] == round(0.25 * n_labeled)
        assert added[("real", strategy, 1.0)] == n_labeled
        # the generated pool has 20 rows: a fraction asking for more adds all of them
        assert added[("llm", strategy, 1.0)] == added[("llm_teacher", strategy, 1.0)] == 20
    assert (out / "generation" / "generated.csv").exists()
    assert (out / "diagnostics" / "correlation.csv").exists()
    assert len(pd.read_csv(out / "diagnostics-generated" / "correlation.csv")) == 1

    # Fraction 0 adds nothing, whatever the pool: the same model, the same accuracy.
    zero = table[table["fraction"] == 0]
    assert zero["val_accuracy"].nunique() == 1
    # Done means done: a second run makes no call and runs no cell.
    calls = len(server.arrivals)
    before = {p.name: p.stat().st_mtime_ns for p in (out / "cells").iterdir()}
    sweep.run_sweep(cfg, out, log=lambda *_: None)
    assert len(server.arrivals) == calls
    assert {p.name: p.stat().st_mtime_ns for p in (out / "cells").iterdir()} == before
    assert sweep.cell_progress(cfg, out) == {"cells": 18, "done": 18, "running": 0, "failed": 0, "pending": 0}


def test_the_shipped_llm_sweep_is_the_studys_figure_2():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "sweeps"
    full, small = load_sweep(root / "llm.yaml"), load_sweep(root / "llm-small.yaml")
    assert full.compare.pool == small.compare.pool == ["real", "llm", "llm_teacher"]
    assert full.compare.fraction == [0, 1, 2, 3, 4] and len(full.replicate.seed) == 3
    assert full.compare.freeze == ["last-linear", "pooler", "last-attention"]
    assert full.llm.samples_per_call == 100 and full.llm.examples_per_class == 3
    assert full.llm.n_rows >= 4 * 1709  # enough generated rows for the largest fraction

"""LLM pools end to end: generate against the fake server, relabel with a teacher, run them in the grid."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from raysweep import augment, grid, inputs, runtime, status, sweep
from raysweep.grid import Variant
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
    monkeypatch.setattr(inputs, "_activations", lambda path: path)  # the artifact paths stand in for features
    variant = Variant("m", "pooler", "last-linear")
    context = inputs.TrialContext(
        train_labels=np.array([0, 1, 2, 3, 4, 0]), val_labels=np.array([1]), labeled=np.array([0, 2]),
        pool_rows=np.array([1, 3, 4, 5]), num_classes=5, recipe=RecipeConfig(),
        artifacts={variant: ("train", "val"), variant.with_generated(): ("train+gen", "val")},
        generated_labels={"llm": np.array([4, 4, 3]), "llm_teacher": np.array([0, 4, 2])})
    real = inputs.trial_inputs(context, variant)
    assert real.train_acts == "train" and real.pool_rows.tolist() == [1, 3, 4, 5]
    assert real.train_labels.tolist() == [0, 1, 2, 3, 4, 0]
    for pool, tail in [("llm", [4, 4, 3]), ("llm_teacher", [0, 4, 2])]:
        inp = inputs.trial_inputs(context, variant, pool)
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
    assert [a[i] for i in real] == [b[i] for i in real] == [grid.cell_id(cells[i], grid.fixed_digest(cfg))
                                                            for i in real]
    assert all(a[i] != b[i] for i in llm)
    # Without a complete generation directory nothing of the LLM pool counts as done.
    assert status.cell_progress(cfg, tmp_path / "out") == {"cells": 2, "done": 0, "running": 0, "failed": 0, "pending": 2}


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


def test_a_directory_stopped_by_the_budget_is_reused_under_the_same_cap_only(tmp_path):
    path = write_sweep(tmp_path, "data.csv", "minilm", "http://127.0.0.1:1/v1")
    path.write_text(path.read_text().replace(
        "  timeout: 10\n", "  timeout: 10\n  max_cost_usd: 0.5\n  prices: {fake-model: {prompt: 1, completion: 1}}\n"))
    cfg = load_sweep(tmp_path / "gen.yaml")
    gen = tmp_path / "generation"
    gen.mkdir()
    rows = pd.DataFrame({"text": ["a", "b"], "llm_label": [0, 1], "teacher_label": [0, 0]})
    rows.to_csv(gen / augment.GENERATED, index=False)
    summary = {"config_key": augment.config_key(cfg), "rows_digest": augment.rows_digest(rows), "complete": False,
               "stopped": "budget", "max_cost_usd": 0.5, "agreement": 0.5}
    (gen / augment.SUMMARY).write_text(json.dumps(summary))
    assert len(augment.reuse(cfg, gen).rows) == 2
    higher = load_sweep(tmp_path / "gen.yaml", ["llm.max_cost_usd=1.0"])
    assert augment.reuse(higher, gen) is None  # a higher cap: generation goes on
    (gen / augment.SUMMARY).write_text(json.dumps({**summary, "stopped": "no_progress"}))
    assert augment.reuse(cfg, gen) is None


# --------------------------------------------------------------------------- into the grid


@pytest.mark.slow
def test_a_sweep_with_llm_pools_generates_first_then_adds_generated_rows(
        ray_local, fake_openai, tiny_bert, sst5_subset, tmp_path):
    server = fake_openai(rows_per_reply=5)
    path = write_sweep(tmp_path, sst5_subset, tiny_bert, server.base_url,
                       extra="selection: {k: 3}", name="grid.yaml")
    cfg = load_sweep(path, ["compare.strategy=[random, entropy]",
                            "compare.pool=[real, llm, llm_teacher, llm_annotated]"])
    out = tmp_path / "out"
    logs = []
    table = sweep.run_sweep(cfg, out, log=logs.append)

    assert len(table) == 4 * 2 * 3 and set(table["status"]) == {"ok"}
    # One encoder pass, the generation's (real train, val and generated rows for its teacher);
    # the LLM pools' train set (real rows, then generated) is assembled from it, not encoded again.
    encoded = [line for line in logs if line.startswith("encoded ")]
    assert len(encoded) == 1 and encoded[0].startswith("encoded 420 rows "), encoded
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
    assert status.cell_progress(cfg, out) == {"cells": 24, "done": 24, "running": 0, "failed": 0, "pending": 0}

    _every_cell_records_what_its_labels_cost(out, table, cfg)

    # llm_annotated: the rows its `real` counterpart adds, in the same order, with the LLM's labels.
    _the_annotated_pool_adds_the_real_rows_with_the_llms_labels(path, out, table, fake_openai)


def _every_cell_records_what_its_labels_cost(out, table, cfg):
    """Gold rows at the human price; the fake model has no price in `llm.prices`, so its rows'
    dollars are unknown (null), never $0; the counts are recorded either way."""
    records = {p.stem: json.loads(p.read_text()) for p in (out / "cells").glob("*.json")}
    for _, row in table.iterrows():
        rec, n = records[row["cell_id"]], int(row["n_added"])
        counts = (rec["metrics"]["human_labels"], rec["metrics"]["llm_labels"])
        if row["pool"] == "real":
            assert counts == (n, 0)
            assert rec["cost_usd"] == pytest.approx(n * cfg.costs.human_label_usd) == row["cost_usd"]
        else:
            assert counts == (0, n)
            assert (rec.get("cost_usd") is None) == (n > 0) and pd.isna(row["cost_usd"]) == (n > 0)


def _the_annotated_pool_adds_the_real_rows_with_the_llms_labels(path, out, table, fake_openai):
    import shutil
    import zlib

    from raysweep.chosen import read_chosen

    chosen, rows_table = read_chosen(out)
    text = rows_table.set_index("row")["text"]
    by_cell = {cid: df.sort_values("rank") for cid, df in chosen.groupby("cell_id")}
    cells = table.set_index(["pool", "strategy", "fraction", "freeze", "seed"])["cell_id"]
    for (pool, strategy, fraction, freeze, seed), cid in cells.items():
        if pool != "llm_annotated" or fraction == 0:
            continue
        mine, real = by_cell[cid], by_cell[cells[("real", strategy, fraction, freeze, seed)]]
        assert mine["row"].tolist() == real["row"].tolist() and len(mine) > 0
        assert mine["label"].tolist() == [zlib.crc32(text[r].encode()) % 5 for r in mine["row"]]  # the fake LLM's
    labels = pd.read_csv(out / "annotation" / "labels.csv", keep_default_na=False)
    summary = json.loads((out / "annotation" / "annotation.json").read_text())
    assert sorted(labels["row"]) == sorted(set(chosen[chosen["cell_id"].isin(
        cells[cells.index.get_level_values("pool") == "llm_annotated"])]["row"]))  # the union, once
    assert summary["rows_labeled"] == len(labels) and summary["accuracy"] == pytest.approx(
        (labels["gold"] == labels["llm_label"]).mean())

    # Other labels (another LLM) make other annotated cells; every other cell stays done.
    shutil.rmtree(out / "annotation")
    other = fake_openai(labeler=lambda t: len(t) % 5)
    cfg = load_sweep(path, ["compare.strategy=[random, entropy]", f"llm.base_url={other.base_url}",
                            "compare.pool=[real, llm, llm_teacher, llm_annotated]"])
    relabeled = sweep.run_sweep(cfg, out, log=lambda *_: None)
    before, after = table.set_index("cell_id"), relabeled.set_index("cell_id")
    annotated = table["pool"] == "llm_annotated"
    changed = set(table.loc[annotated & (table["fraction"] > 0), "cell_id"]) - set(relabeled["cell_id"])
    assert len(changed) == 4  # 2 strategies x 2 fractions; fraction 0 adds no row, so no label
    assert set(table.loc[~annotated, "cell_id"]) <= set(relabeled["cell_id"])
    assert len(other.served()) > 0 and all(c["request"]["messages"][0]["content"].count("Sentences to label")
                                           for c in other.served())  # labeling calls only: generation reused
    assert before.loc[table.loc[~annotated, "cell_id"], "val_accuracy"].tolist() == after.loc[
        table.loc[~annotated, "cell_id"], "val_accuracy"].tolist()



def test_the_shipped_llm_sweep_is_the_studys_figure_2():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "sweeps"
    full, small = load_sweep(root / "llm.yaml"), load_sweep(root / "llm-small.yaml")
    assert full.compare.pool == small.compare.pool == ["real", "llm", "llm_teacher", "llm_annotated", "llm_cleaned",
                                                      "llm_routed"]
    assert full.compare.fraction == [0, 1, 2, 3, 4] and len(full.replicate.seed) == 3
    assert full.compare.freeze == ["last-linear", "pooler", "last-attention"]
    assert full.llm.samples_per_call == 100 and full.llm.examples_per_class == 3
    assert full.llm.n_rows >= 4 * 1709  # enough generated rows for the largest fraction


def test_dedup_by_meaning_compares_the_sweeps_own_sentence_vectors(tiny_bert, tmp_path):
    from raysweep.backbone import boundary_for, load_backbone

    (tmp_path / "s.yaml").write_text(f"name: x\ncompare: {{pool: [llm]}}\nencoder: {{name: {tiny_bert}}}\n"
                                     "llm: {cosine_duplicate: 0.97}\n")
    cfg = load_sweep(tmp_path / "s.yaml")
    vectors = augment.SentenceVectors(cfg)
    texts = ["a dull film .", "a boring movie .", "a dull film ."]
    got = vectors(texts)
    backbone = load_backbone(tiny_bert)
    expected = backbone.features(texts[:2], boundary_for("last-linear", backbone.num_layers, "pooler", 64))
    np.testing.assert_allclose(got[:2], expected, rtol=1e-5, atol=1e-6)
    assert (got[0] == got[2]).all() and len(vectors.memo) == 2  # each text encoded once
    # On, it is part of the generation's key; off, the key is what it was before the option existed.
    off = load_sweep(tmp_path / "s.yaml", ["llm.cosine_duplicate=null"])
    assert augment.config_key(cfg) != augment.config_key(off)

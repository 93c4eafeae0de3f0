"""`raysweep select` on a user's own rows: two rounds through the CLI with a simulated annotator,
one returning a CSV and one a Label Studio export; and the checks on what comes back."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from raysweep import labeling, labelstudio
from raysweep.cli import main

GOOD = ["good", "great", "fun"]
BAD = ["bad", "boring", "awful"]
CLASSES = ["negative", "positive"]


def _sentences(n: int, seed: int) -> pd.DataFrame:
    """Sentences of the tiny vocabulary whose label follows from their words."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = int(rng.integers(2))
        words = list(rng.choice(GOOD if label else BAD, size=2)) + list(rng.choice(["the", "movie", "plot", "film", "is", "very"], size=3))
        rng.shuffle(words)
        rows.append({"id": f"u{seed}-{i}", "text": " ".join(words), "gold": CLASSES[label]})
    return pd.DataFrame(rows)


@pytest.fixture
def project(tmp_path, tiny_bert):
    d = tmp_path / "proj"
    d.mkdir()
    seed = _sentences(8, 1)
    seed.rename(columns={"gold": "label"}).drop(columns="id").to_csv(d / "labeled.csv", index=False)
    pool = _sentences(60, 2)
    pool[["id", "text"]].to_json(d / "unlabeled.jsonl", orient="records", lines=True)
    (d / "project.yaml").write_text(f"""
classes: [negative, positive]
unlabeled: unlabeled.jsonl
strategy: entropy
batch: 6
freeze: pooler
cv_folds: 3
encoder: {{name: {tiny_bert}, max_length: 16}}
recipe: {{epochs: 5, batch_size: 8}}
""")
    return d, dict(zip(pool["id"], pool["gold"]))


def _run(*args):
    result = CliRunner().invoke(main, ["select", *map(str, args), "--no-ray"])
    return result


def test_two_rounds_with_a_simulated_annotator(project):
    d, gold = project
    first = _run("--project", d)
    assert first.exit_code == 0, first.output
    r1 = d / "rounds" / "round-001"
    batch = pd.read_csv(r1 / "to_label.csv", dtype={"id": str})
    assert list(batch.columns) == ["id", "text", "rank", "score", "predicted", "p_negative", "p_positive"]
    assert len(batch) == 6 and list(batch["rank"]) == list(range(1, 7))
    assert (np.diff(batch["score"]) <= 1e-9).all()  # entropy, highest first
    assert np.allclose(batch[["p_negative", "p_positive"]].sum(axis=1), 1, atol=1e-5)
    assert len((r1 / "to_label.jsonl").read_text().splitlines()) == 6
    tasks = json.loads((r1 / "labelstudio" / "tasks.json").read_text())
    config = (r1 / "labelstudio" / "config.xml").read_text()
    pre = tasks[0]["predictions"][0]["result"][0]
    assert f'name="{pre["from_name"]}"' in config and f'name="{pre["to_name"]}"' in config  # pre-annotations attach
    assert pre["value"]["choices"][0] == batch["predicted"][0]
    summary = json.loads((r1 / "round.json").read_text())
    assert summary["labeled"] == 8 and summary["cv_folds"] == 3 and 0 <= summary["cv_accuracy"] <= 1
    head = torch.load(r1 / "head.pt", weights_only=False)
    assert head["classes"] == CLASSES and "linear.weight" in head["state"]

    # Running again before the labels come back is refused: the batch is still out.
    again = _run("--project", d)
    assert again.exit_code == 2 and "labels have not come back" in again.output

    # Round one comes back as a CSV: five labeled, one left empty (skipped).
    back = batch[["id"]].assign(label=[gold[i] for i in batch["id"]])
    back.loc[5, "label"] = ""
    back.to_csv(d / "labels-1.csv", index=False)
    second = _run("--project", d, "--labels", d / "labels-1.csv")
    assert second.exit_code == 0, second.output
    assert "5 of 6 rows labeled, 1 skipped" in second.output
    r2 = d / "rounds" / "round-002"
    batch2 = pd.read_csv(r2 / "to_label.csv", dtype={"id": str})
    assert not set(batch2["id"]) & set(batch["id"])  # nothing offered twice, the skipped row included
    assert json.loads((r2 / "round.json").read_text())["labeled"] == 13

    # Round two comes back as a Label Studio export with one task skipped.
    tasks2 = json.loads((r2 / "labelstudio" / "tasks.json").read_text())
    skipped = tasks2[0]["data"]["row_id"]
    export = labelstudio.simulated_export(tasks2, gold, skip={skipped})
    (d / "export.json").write_text(json.dumps(export))
    third = _run("--project", d, "--labels", d / "export.json")
    assert third.exit_code == 0, third.output
    labels2 = pd.read_csv(r2 / "labels.csv", dtype=str)
    assert len(labels2) == 5 and skipped not in set(labels2["id"])
    assert all(gold[i] == lab for i, lab in zip(labels2["id"], labels2["label"]))
    assert json.loads((d / "rounds" / "round-003" / "round.json").read_text())["labeled"] == 18
    # Each round's files are kept; undo takes the open batch back, then round two's labels.
    assert (r1 / "labels.csv").exists() and (r1 / "to_label.csv").exists()
    assert _run("--project", d, "--undo").exit_code == 0
    assert not (d / "rounds" / "round-003").exists()
    assert _run("--project", d, "--undo").exit_code == 0
    assert not (r2 / "labels.csv").exists() and any((d / "rounds" / "undone").iterdir())


@pytest.mark.parametrize("rows, message", [
    ([("nope", "positive")], "row 2: unknown id 'nope'"),
    ([("FIRST", "meh")], "row 2: label 'meh' is not one of the classes (negative, positive)"),
    ([("FIRST", "positive"), ("FIRST", "negative")], "row 3: id 'FIRST' is labeled twice (row 2 too)"),
    ([("OTHER", "positive")], "was not in round-001's batch"),
])
def test_returned_labels_are_checked_row_by_row_before_anything_is_written(project, rows, message):
    d, _ = project
    assert _run("--project", d).exit_code == 0
    batch = pd.read_csv(d / "rounds" / "round-001" / "to_label.csv", dtype={"id": str})
    pool = pd.read_json(d / "unlabeled.jsonl", lines=True, dtype={"id": str})
    other = next(i for i in pool["id"] if i not in set(batch["id"]))
    names = {"FIRST": batch["id"][0], "OTHER": other}
    pd.DataFrame([(names.get(i, i), lab) for i, lab in rows], columns=["id", "label"]).to_csv(d / "back.csv", index=False)
    result = _run("--project", d, "--labels", d / "back.csv")
    message = message.replace("FIRST", names["FIRST"])
    assert result.exit_code == 2 and message in result.output and len(result.output.strip().splitlines()) == 1
    assert not (d / "rounds" / "round-001" / "labels.csv").exists()
    assert not (d / "rounds" / "round-002").exists()


def test_a_cold_start_says_so_and_covers_the_pool(project):
    d, _ = project
    (d / "labeled.csv").unlink()
    result = _run("--project", d, "--set", "cold_start=kcenter")
    assert result.exit_code == 0, result.output
    assert "cold start: nothing is labeled yet" in result.output
    batch = pd.read_csv(d / "rounds" / "round-001" / "to_label.csv", dtype={"id": str})
    assert len(batch) == 6 and batch["predicted"].isna().all()
    assert json.loads((d / "rounds" / "round-001" / "round.json").read_text())["strategy"] == "cold start: kcenter"


def test_no_classes_and_nothing_labeled_is_one_line(project):
    d, _ = project
    (d / "labeled.csv").unlink()
    (d / "project.yaml").write_text((d / "project.yaml").read_text().replace("classes: [negative, positive]\n", ""))
    result = _run("--project", d)
    assert result.exit_code == 2 and "`classes:` must name the labels" in result.output


def test_diverse_batch_has_no_near_duplicates():
    vectors = np.array([[1, 0], [1, 0.001], [0, 1], [0.7, 0.7], [1, 0.002]], dtype=float)
    assert list(labeling._diverse(np.arange(5), vectors, 3, 0.95)) == [0, 2, 3]


def test_label_studio_export_formats_are_read(tmp_path):
    tasks = [labelstudio.task("a", "x", "pos", 0.9), labelstudio.task("b", "y", "neg", 0.8),
             labelstudio.task("c", "z", None, None)]
    full = labelstudio.simulated_export(tasks, {"a": "neg", "c": "pos"}, skip={"c"})
    (tmp_path / "full.json").write_text(json.dumps(full))
    assert labelstudio.read_export(tmp_path / "full.json") == ([(1, "a", "neg")], ["b", "c"])
    minimal = [{"id": 1, "row_id": 7, "text": "x", "label": "pos"}, {"id": 2, "row_id": "b", "text": "y"}]
    (tmp_path / "min.json").write_text(json.dumps(minimal))
    assert labelstudio.read_export(tmp_path / "min.json") == ([(1, "7", "pos")], ["b"])


def test_the_strategy_can_come_from_a_finished_sweep_with_its_caveat(project, tmp_path):
    d, _ = project
    results = tmp_path / "results"
    results.mkdir()
    rows = [{"cell_id": f"{s}{f}{seed}", "pool": "real", "strategy": s, "fraction": f, "freeze": "pooler",
             "seed": seed, "status": "ok", "val_accuracy": acc + 0.01 * seed}
            for s, acc in (("random", 0.40), ("margin", 0.43), ("entropy", 0.41)) for f in (0, 1, 2) for seed in (0, 1)]
    pd.DataFrame(rows).to_csv(results / "trials.csv", index=False)
    best, caveat = labeling.strategy_from_results(results, "pooler")
    assert best == "margin" and "+3.0 points over random" in caveat and "2 seed(s)" in caveat
    result = _run("--project", d, "--results", results)
    assert result.exit_code == 0, result.output
    assert "strategy margin from" in result.output and "need not win on yours" in result.output
    assert json.loads((d / "rounds" / "round-001" / "round.json").read_text())["strategy"] == "margin"


def test_a_sweeps_oracle_is_never_the_strategy_select_takes(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    rows = [{"cell_id": f"{s}{seed}", "pool": "real", "strategy": s, "fraction": 1, "freeze": "pooler",
             "seed": seed, "status": "ok", "val_accuracy": acc}
            for s, acc in (("random", 0.40), ("oracle", 0.50), ("cal", 0.42)) for seed in (0, 1)]
    pd.DataFrame(rows).to_csv(results / "trials.csv", index=False)
    assert labeling.strategy_from_results(results, "pooler")[0] == "cal"


def test_settings_come_from_a_sweep_file_then_set(tmp_path):
    sweep = tmp_path / "s.yaml"
    sweep.write_text("compare: {strategy: [margin], freeze: [last-linear, pooler]}\nrecipe: {epochs: 7}\n"
                     "encoder: {max_length: 32}\n")
    cfg = labeling.load_project_config(tmp_path, ["batch=9"], str(sweep))
    assert (cfg.strategy, cfg.freeze, cfg.batch) == ("margin", "pooler", 9)  # two freeze modes: the project's own
    assert cfg.recipe.epochs == 7 and cfg.encoder.max_length == 32
    with pytest.raises(labeling.ConfigError, match="batch: must be at least 1"):
        labeling.load_project_config(tmp_path, ["batch=0"])
    (tmp_path / "project.yaml").write_text("batchsize: 3\n")
    with pytest.raises(labeling.ConfigError, match="project.yaml: batchsize: unknown key"):
        labeling.load_project_config(tmp_path)


# --------------------------------------------------------------------------- --from-report (analysis/advice.py)


def _report(tmp_path, rows):
    from raysweep.analysis.advice import TABLE

    path = tmp_path / "report" / TABLE
    path.parent.mkdir(parents=True)
    base = {"pool": "real", "baseline": "random", "metric": "val_accuracy", "n_seeds": 10, "inference": "seeds and rows"}
    pd.DataFrame([{**base, **r} for r in rows]).to_csv(path, index=False)
    return tmp_path / "report"


def test_from_report_takes_the_best_strategy_that_survives_in_the_projects_freeze_mode(tmp_path):
    from raysweep.analysis.advice import strategy_from_report

    report = _report(tmp_path, [
        {"freeze": "pooler", "strategy": "entropy", "mean_diff": -0.011, "ci_low": -0.016, "ci_high": -0.006,
         "p_holm": 0.003, "significant": True},
        {"freeze": "pooler", "strategy": "margin", "mean_diff": 0.004, "ci_low": 0.001, "ci_high": 0.007,
         "p_holm": 0.04, "significant": True},
        {"freeze": "pooler", "strategy": "sqbc", "mean_diff": 0.009, "ci_low": -0.001, "ci_high": 0.019,
         "p_holm": 0.2, "significant": False},  # a higher mean that does not survive: not chosen
        {"freeze": "last-linear", "strategy": "sqbc", "mean_diff": 0.02, "ci_low": 0.01, "ci_high": 0.03,
         "p_holm": 0.001, "significant": True}])
    best, why = strategy_from_report(report, "pooler")
    assert best == "margin"
    assert "+0.4 points over random" in why and "avoid entropy (-1.1 points)" in why and "on new rows" in why
    assert strategy_from_report(report, "last-linear")[0] == "sqbc"


def test_from_report_never_advises_a_strategy_select_cannot_run(tmp_path):
    from raysweep.analysis.advice import strategy_from_report

    won = {"freeze": "pooler", "ci_low": 0.01, "ci_high": 0.05, "p_holm": 0.001, "significant": True}
    report = _report(tmp_path, [{**won, "strategy": "oracle", "mean_diff": 0.03},  # reads the pool's gold labels
                                {**won, "strategy": "from-a-newer-raysweep", "mean_diff": 0.02},
                                {**won, "strategy": "margin", "mean_diff": 0.01}])
    assert strategy_from_report(report, "pooler")[0] == "margin"


def test_from_report_falls_back_to_random_and_says_why(tmp_path):
    from raysweep.analysis.advice import strategy_from_report

    report = _report(tmp_path, [{"freeze": "pooler", "strategy": "entropy", "mean_diff": 0.007, "ci_low": -0.002,
                                 "ci_high": 0.016, "p_holm": 0.3, "significant": False}])
    best, why = strategy_from_report(report, "pooler")
    assert best == "random" and "no strategy's gain over random survives" in why and "entropy +0.7" in why
    best, why = strategy_from_report(report, "last-attention")
    assert best == "random" and "not last-attention" in why
    with pytest.raises(labeling.DataError, match="compare_strategy.csv: no such file"):
        strategy_from_report(tmp_path, "pooler")


def test_the_shipped_example_does_not_default_to_a_strategy_the_shipped_findings_show_worse_than_random():
    """Issue 27: examples/label-your-own-data must not select with a strategy that
    docs/example-selection (the tool's own findings) shows surviving below `random` in the
    example's freeze mode; regenerating that report with other numbers re-checks it."""
    from pathlib import Path

    from raysweep.analysis.advice import TABLE

    root = Path(__file__).resolve().parents[1]
    cfg = labeling.load_project_config(root / "examples" / "label-your-own-data")
    table = pd.read_csv(root / "docs" / "example-selection" / TABLE)
    table = table[(table["baseline"] == "random") & (table["freeze"] == cfg.freeze)]
    assert len(table), f"docs/example-selection compares no strategy with random in freeze {cfg.freeze}"
    worse = table[table["significant"].astype(bool) & (table["mean_diff"] < 0)]
    assert cfg.strategy not in set(worse["strategy"]), worse[["strategy", "metric", "mean_diff", "p_holm"]]


def test_strategy_from_report_in_project_yaml_needs_a_report(tmp_path):
    (tmp_path / "project.yaml").write_text("strategy: from-report\n")
    with pytest.raises(labeling.ConfigError, match="from-report needs `report:`"):
        labeling.load_project_config(tmp_path)


def test_a_round_says_what_it_did(project):
    """Strategy, accuracy beside the majority class and chance, what `diverse` skipped, the stopping line."""
    d, gold = project
    lines: list[str] = []
    r1 = labeling.select(d, ["diverse=true"], use_ray=False, log=lines.append)
    text = "\n".join(lines)
    summary = json.loads((r1 / "round.json").read_text())
    assert "strategy: entropy" in text
    assert f"majority class ({summary['majority_class']}) alone: {summary['majority_baseline']:.3f}" in text
    assert "chance: 0.500" in text and summary["chance"] == 0.5
    assert f"diverse: skipped {summary['diverse_skipped']} of the ranked rows" in text
    assert summary["stopping"]["decision"] == "keep labeling" and summary["stopping"]["line"] in text
    assert len(json.loads((r1 / labeling.STOP_SET_FILE).read_text())) == 8 + 60  # every row: fewer than 2,000
    # the next round compares its predictions with this one's
    batch = pd.read_csv(r1 / "to_label.csv", dtype=str)
    batch[["id"]].assign(label=[gold[i] for i in batch["id"]]).to_csv(d / "back.csv", index=False)
    r2 = labeling.select(d, labels=d / "back.csv", use_ray=False, log=lines.append)
    stop = json.loads((r2 / "round.json").read_text())["stopping"]
    assert stop["kappa"] is not None and stop["cv_gain_points"] is not None and stop["line"] in "\n".join(lines)


def test_classes_follow_first_appearance_never_the_alphabet(project):
    d, _ = project
    (d / "project.yaml").write_text((d / "project.yaml").read_text().replace("classes: [negative, positive]\n", ""))
    seed = pd.read_csv(d / "labeled.csv")
    first = seed["label"].iloc[0]
    project = labeling.load_project(d, labeling.load_project_config(d))
    assert project.classes == list(dict.fromkeys(seed["label"])) and project.classes[0] == first
    seed.iloc[::-1].to_csv(d / "labeled.csv", index=False)
    project = labeling.load_project(d, labeling.load_project_config(d))
    assert project.classes == list(dict.fromkeys(seed["label"].iloc[::-1]))

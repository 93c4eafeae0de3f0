"""The report's LLM-as-annotator section and finding, on a hand-made results directory.

Gold rows (`real`) gain 0.05 per unit of fraction over fraction 0; the LLM-labeled rows
(`llm_annotated`) gain 0.02, so per seed the LLM's labels lose exactly 0.03 against gold at
every fraction > 0, keep 40% of gold's gain, and their cost is rows x the cost per labeled row.
"""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402

from raysweep.analysis import annotation  # noqa: E402
from raysweep.analysis.report import analyze  # noqa: E402

OFFSET = {0: -0.01, 1: 0.0, 2: 0.015}
GAIN = {"real": 0.05, "llm_annotated": 0.02}
COST_PER_ROW = 0.0002


def trials() -> pd.DataFrame:
    rows = []
    for pool, gain in GAIN.items():
        for fraction in (0.0, 1.0, 2.0):
            for seed, offset in OFFSET.items():
                acc = 0.40 + gain * fraction + offset
                rows.append({"cell_id": f"{pool}-{fraction:g}-{seed}", "pool": pool, "strategy": "random",
                             "fraction": fraction, "freeze": "pooler", "seed": seed, "encoder": "minilm",
                             "pooling": "pooler", "status": "ok", "error": "", "val_accuracy": acc,
                             "val_macro_f1": acc - 0.05, "n_labeled": 100, "n_added": int(100 * fraction)})
    return pd.DataFrame(rows)


def test_the_worth_table_pairs_the_same_rows_with_gold_and_prices_them():
    table = annotation.worth_table(trials(), COST_PER_ROW).set_index("fraction")
    assert list(table.index) == [1.0, 2.0]
    for fraction in (1.0, 2.0):
        row = table.loc[fraction]
        assert row["mean_diff"] == pytest.approx(-0.03 * fraction)
        assert row["gain_llm"] == pytest.approx(0.02 * fraction) and row["gain_gold"] == pytest.approx(0.05 * fraction)
        assert row["n_added"] == 100 * fraction and row["cost_usd"] == pytest.approx(COST_PER_ROW * 100 * fraction)
        assert bool(row["significant"])  # the same -0.03 for every seed: no spread at all
    text = annotation.sentences(table.reset_index())
    assert "gold is worth more: the LLM's labels keep 40% of gold's gain for $0.02" in text[0]
    assert text[0].startswith("**fraction 1** (strategy random, freeze pooler; 100 rows, 3 seeds)")


def test_labels_that_buy_nothing_are_worth_no_price():
    data = trials()
    llm = data["pool"] == "llm_annotated"
    data.loc[llm, "val_accuracy"] = 0.40 + data.loc[llm, "seed"].map(OFFSET)  # no gain over fraction 0
    text = annotation.sentences(annotation.worth_table(data, COST_PER_ROW))
    assert all("not worth any price" in t and "in the means only" not in t for t in text)  # the same loss every seed


def test_a_loss_to_gold_within_noise_is_said_to_be_in_the_means_only():
    data = trials()
    llm, real = data["pool"] == "llm_annotated", data["pool"] == "real"
    added = data["fraction"] > 0
    # Gold gains 0.005; the LLM's labels gain +0.02, -0.03 and 0 by seed: a mean loss of 0.008
    # against gold whose spread over three seeds is far wider than that.
    data.loc[real & added, "val_accuracy"] = 0.405 + data.loc[real & added, "seed"].map(OFFSET)
    data.loc[llm & added, "val_accuracy"] = (0.40 + data.loc[llm & added, "seed"].map(OFFSET)
                                             + data.loc[llm & added, "seed"].map({0: 0.02, 1: -0.03, 2: 0.0}))
    table = annotation.worth_table(data, COST_PER_ROW)
    assert not table["significant"].any()
    text = annotation.sentences(table)
    assert all(t.endswith("while gold rows do, in the means only: the difference to gold does not survive Holm at 3 seeds.")
               for t in text), text


def test_the_report_has_the_annotator_section_and_finding(tmp_path, quick_figures):
    d = tmp_path / "results"
    (d / "annotation").mkdir(parents=True)
    trials().to_csv(d / "trials.csv", index=False)
    (d / "sweep.yaml").write_text(yaml.safe_dump({"name": "annotated", "compare": {"pool": list(GAIN)}}))
    pd.DataFrame({"row": [1, 2, 3, 4], "text": list("abcd"), "gold": [0, 1, 2, 3], "llm_label": [0, 1, 4, 3],
                  "request_id": 0}).to_csv(d / "annotation" / "labels.csv", index=False)
    (d / "annotation" / "annotation.json").write_text(json.dumps(
        {"rows_labeled": 4, "accuracy": 0.75, "cost_usd_per_labeled_row": COST_PER_ROW,
         "per_class_accuracy": {"0": 1.0, "2": 0.0}}))
    report = analyze([d], tmp_path / "report", n_boot=20).read_text()
    assert "## The LLM as annotator" in report and "llm_vs_gold.png" in report
    assert "Are the LLM's labels of chosen rows worth their price?" in report
    assert "keep 40% of gold's gain" in report
    assert (tmp_path / "report" / "tables" / "annotation_worth.csv").exists()
    shown = pd.read_csv(tmp_path / "report" / "tables" / "annotation.csv")
    assert dict(zip(shown["key"], shown["value"].astype(str)))["accuracy"] == "0.75"

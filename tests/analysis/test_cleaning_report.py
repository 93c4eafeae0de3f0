"""The report's "Cleaner LLM labels" section, on a hand-made results directory.

Per cell of 100 added rows (fraction 1): the LLM labeled 30 right; llm_cleaned flagged 40 and
dropped them (5 of their LLM labels right); llm_routed bought gold for 20 (2 LLM labels right).
llm_cleaned gains 0.01 over llm_annotated on every seed, llm_routed 0.02.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402

from raysweep.analysis import cleaning  # noqa: E402
from raysweep.analysis.report import analyze  # noqa: E402

OFFSET = {0: -0.01, 1: 0.0, 2: 0.015}
GAIN = {"llm_annotated": 0.0, "llm_cleaned": 0.01, "llm_routed": 0.02}
FIELDS = {"llm_cleaned": dict(labels_flagged=40, labels_removed=40, labels_replaced=0, human_labels=0, llm_labels=100,
                              llm_label_accuracy=0.30, flagged_llm_accuracy=5 / 40, replacement_accuracy=None,
                              trained_label_accuracy=25 / 60),
          "llm_routed": dict(labels_flagged=20, labels_removed=0, labels_replaced=20, human_labels=20, llm_labels=100,
                             llm_label_accuracy=0.30, flagged_llm_accuracy=2 / 20, replacement_accuracy=1.0,
                             trained_label_accuracy=48 / 100)}


def trials() -> pd.DataFrame:
    rows = []
    for pool, gain in GAIN.items():
        for fraction in (0.0, 1.0):
            for seed, offset in OFFSET.items():
                acc = 0.40 + gain * fraction + offset
                fields = FIELDS.get(pool, {}) if fraction else {}
                rows.append({"cell_id": f"{pool}-{fraction:g}-{seed}", "pool": pool, "strategy": "random",
                             "fraction": fraction, "freeze": "pooler", "seed": seed, "encoder": "minilm",
                             "pooling": "pooler", "status": "ok", "error": "", "val_accuracy": acc,
                             "val_macro_f1": acc - 0.05, "n_labeled": 100, "n_added": int(100 * fraction), **fields})
    return pd.DataFrame(rows)


def test_the_label_table_counts_per_cell_and_pools_the_accuracies():
    table = cleaning.label_table(trials()).set_index("pool")
    assert list(table.index) == ["llm_cleaned", "llm_routed"] and set(table["fraction"]) == {1.0}
    c, r = table.loc["llm_cleaned"], table.loc["llm_routed"]
    assert (c["labels_removed"], c["labels_replaced"], c["human_labels"]) == (40, 0, 0)
    assert (r["labels_removed"], r["labels_replaced"], r["human_labels"]) == (0, 20, 20)
    assert c["flagged_llm_accuracy"] == pytest.approx(0.125) and c["trained_label_accuracy"] == pytest.approx(25 / 60)
    assert pd.isna(c["replacement_accuracy"]) and r["replacement_accuracy"] == 1.0
    assert int(c["n_seeds"]) == 3


def test_each_cleaning_pool_is_compared_with_the_raw_llm_labels_of_the_same_rows():
    diff = cleaning.against_annotated(trials()).set_index("pool")
    assert diff.loc["llm_cleaned", "mean_diff"] == pytest.approx(0.01)
    assert diff.loc["llm_routed", "mean_diff"] == pytest.approx(0.02)
    text = cleaning.sentences(diff.reset_index())
    assert text[0].startswith("**llm_cleaned** vs `llm_annotated`, fraction 1 (freeze pooler, strategy random; 3 seeds): +1.0 points")


def test_the_report_has_the_section_only_when_a_cleaning_pool_ran(tmp_path, quick_figures):
    d = tmp_path / "results"
    d.mkdir()
    trials().to_csv(d / "trials.csv", index=False)
    (d / "sweep.yaml").write_text(yaml.safe_dump({"name": "cleaning", "compare": {"pool": list(GAIN)}}))
    report = analyze([d], tmp_path / "report", n_boot=20).read_text()
    assert "## Cleaner LLM labels" in report and "12.5%" in report
    assert (tmp_path / "report" / "tables" / "label_cleaning.csv").exists()
    plain = trials()[lambda t: t["pool"] == "llm_annotated"].drop(columns=list(FIELDS["llm_cleaned"]))
    plain.to_csv(d / "trials.csv", index=False)
    assert "Cleaner LLM labels" not in analyze([d], tmp_path / "report2", n_boot=20).read_text()

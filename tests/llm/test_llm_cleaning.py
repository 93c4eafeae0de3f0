"""llm_cleaned and llm_routed end to end against the fake server: they add llm_annotated's rows
with its labels (labeled once, no call more), and record what they removed or bought."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from raysweep import sweep
from raysweep.config import load_sweep

from test_llm_augment import write_sweep


@pytest.mark.slow
def test_the_cleaning_pools_reuse_the_annotated_labels_and_record_what_they_changed(
        ray_local, fake_openai, tiny_bert, sst5_subset, tmp_path):
    server = fake_openai()  # labels by a hash of the text: right on ~1 in 5 rows, as SmolLM2 is
    path = write_sweep(tmp_path, sst5_subset, tiny_bert, server.base_url, name="clean.yaml")
    cfg = load_sweep(path, ["compare.fraction=[0, 1]", "compare.freeze=[pooler]",
                            "compare.pool=[real, llm_annotated, llm_cleaned, llm_routed]"])
    out = tmp_path / "out"
    table = sweep.run_sweep(cfg, out, log=lambda *_: None).set_index(["pool", "fraction"])
    assert set(table["status"]) == {"ok"}
    n_labeled, n = int(table["n_labeled"].iloc[0]), int(table.loc[("real", 1.0), "n_added"])
    # The three pools' cells share one labeling of the n rows their `real` counterpart adds.
    summary = json.loads((out / "annotation" / "annotation.json").read_text())
    assert summary["rows_labeled"] == n and len(server.arrivals) == math.ceil(n / cfg.llm.annotate.rows_per_call)
    labels = pd.read_csv(out / "annotation" / "labels.csv")
    assert summary["accuracy"] == pytest.approx((labels["gold"] == labels["llm_label"]).mean())
    cleaned, routed = table.loc[("llm_cleaned", 1.0)], table.loc[("llm_routed", 1.0)]
    for row in (cleaned, routed):  # the same rows and LLM labels as llm_annotated's cell
        assert row["n_added"] == n and row["llm_labels"] == n
        assert row["llm_label_accuracy"] == pytest.approx(summary["accuracy"])
    assert cleaned["labels_removed"] == cleaned["labels_flagged"] > 0 and cleaned["human_labels"] == 0
    assert cleaned["n_train"] == n_labeled + n - cleaned["labels_removed"]
    assert routed["human_labels"] == routed["labels_replaced"] == round(0.2 * n) and routed["n_train"] == n_labeled + n
    assert routed["replacement_accuracy"] == 1 and routed["trained_label_accuracy"] > summary["accuracy"]
    for pool in ("llm_cleaned", "llm_routed"):  # adding no row leaves nothing to clean: labeled alone
        assert table.loc[(pool, 0.0), "val_accuracy"] == table.loc[("real", 0.0), "val_accuracy"]

"""The report's cost answer (analysis/costs.py) on hand-made results whose numbers are worked out by hand.

Accuracy is 0.40 + gain[pool] * fraction + offset[seed], fraction 1 adds 100 rows. Prices: a
human label $0.10; `llm` / `llm_teacher` rows $0.0025 each (generation: $0.50 for 200 rows);
`llm_annotated` rows $0.001 each (annotation: $0.20 for 200 rows). So:
- target 45% (real +100 rows, $10): llm reaches it at fraction 1 ($0.25), llm_annotated at
  fraction 2 ($0.20, 46%): llm_annotated is the cheapest; llm_teacher never reaches it;
- target 50% (real +200 rows, $20): only llm reaches it (fraction 2, 52%, $0.50);
- llm_annotated at fraction 1 (43%) matches 60 human rows: break-even $0.10 / 60 a label.
"""

from __future__ import annotations

import json
import math

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402

from raysweep.analysis import cost_report, costs  # noqa: E402
from raysweep.analysis.report import analyze  # noqa: E402
from raysweep.analysis.results import load_many  # noqa: E402

OFFSET = {0: -0.01, 1: 0.0, 2: 0.015}
GAIN = {"real": 0.05, "llm_annotated": 0.03, "llm": 0.06, "llm_teacher": -0.01}
GENERATION = {"endpoint": "api", "model": "gpt-4o-mini", "cost_usd": 0.5, "unpriced_requests": 0, "rows_kept": 200,
              "prompt_tokens": 40000, "completion_tokens": 8000, "elapsed_s": 60.0, "total_s": 90.0}
ANNOTATION = {"endpoint": "api", "model": "gpt-4o-mini", "cost_usd": 0.2, "unpriced_requests": 0, "rows_labeled": 200,
              "prompt_tokens": 200000, "completion_tokens": 2000, "elapsed_s": 400.0}


def trials(gain=GAIN) -> pd.DataFrame:
    rows = []
    for pool, g in gain.items():
        for fraction in (0.0, 1.0, 2.0):
            for seed, offset in OFFSET.items():
                # llm's seeds move a little apart with the rows: a difference with a spread to test
                acc = 0.40 + g * fraction + offset + (0.002 * seed * fraction if pool == "llm" else 0)
                rows.append({"cell_id": f"{pool}-{fraction:g}-{seed}", "pool": pool, "strategy": "random",
                             "fraction": fraction, "freeze": "pooler", "seed": seed, "encoder": "minilm",
                             "pooling": "pooler", "status": "ok", "error": "", "val_accuracy": acc,
                             "val_macro_f1": acc - 0.05, "n_labeled": 100, "n_added": int(100 * fraction),
                             "trial_s": 3.0})
    return pd.DataFrame(rows)


def write(d, table=None, generation=GENERATION, annotation=ANNOTATION, costs_=None, pools=None):
    (d / "generation").mkdir(parents=True, exist_ok=True)
    (d / "annotation").mkdir(exist_ok=True)
    table = trials() if table is None else table
    table.to_csv(d / "trials.csv", index=False)
    sweep = {"name": d.name, "compare": {"pool": pools or sorted(set(table["pool"])), "fraction": [0, 1, 2]},
             "replicate": {"seed": list(OFFSET)}, "costs": costs_ or {"human_label_usd": 0.1},
             "llm": {"prices": {"gpt-4o-mini": {"prompt": 0.15, "completion": 0.6}}}}
    (d / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    (d / "generation" / "generation.json").write_text(json.dumps(generation))
    (d / "annotation" / "annotation.json").write_text(json.dumps(annotation))
    pd.DataFrame({"row": [0, 1], "text": ["a", "b"], "gold": [0, 1], "llm_label": [0, 2]}).to_csv(
        d / "annotation" / "labels.csv", index=False)
    return d


def answer_of(d):
    data = costs.priced(load_many([d]))
    table = costs.sources(data)
    return data, table, costs.cheapest(data, table=table, expected=["real", "llm", "llm_teacher", "llm_annotated"]), \
        costs.break_even(table)


def test_old_outputs_are_priced_from_the_same_inputs_and_recorded_costs_are_kept(tmp_path):
    table = trials()
    table["cost_usd"] = math.nan
    table.loc[table["cell_id"] == "real-1-0", "cost_usd"] = 7.0  # recorded by the run: kept as it is
    data, _, _, _ = answer_of(write(tmp_path / "r", table))
    row = data.set_index("cell_id")
    assert row.at["real-1-0", "cost_usd"] == 7.0 and row.at["real-1-0", "cost_from"] == "recorded"
    assert row.at["real-2-1", "cost_usd"] == pytest.approx(20.0) and row.at["real-2-1", "cost_from"] == "derived"
    assert row.at["llm-1-0", "cost_usd"] == pytest.approx(0.25) and row.at["llm-1-0", "llm_labels"] == 100
    assert row.at["llm_annotated-2-0", "cost_usd"] == pytest.approx(0.2)
    assert row.at["llm-0-0", "cost_usd"] == 0.0  # no rows added, nothing bought


def test_the_cheapest_source_to_reach_each_target(tmp_path):
    _, _, cheap, _ = answer_of(write(tmp_path / "r"))
    first = cheap[cheap["target"] == "real +100 rows"].set_index("source")
    assert first.at["llm_annotated", "cheapest"] and first.at["llm_annotated", "fraction"] == 2.0
    assert first.at["llm_annotated", "cost_usd"] == pytest.approx(0.2)
    assert first.at["llm", "status"] == "reached" and not first.at["llm", "cheapest"]
    assert first.at["llm_teacher", "status"] == "not reached"  # unreachable: its best mean is said
    assert first.at["llm_teacher", "mean"] == pytest.approx(0.40 - 0.01 + 0.005 / 3 * 1, abs=0.01)
    assert first.at["no rows added", "status"] == "not reached"
    second = cheap[cheap["target"] == "real +200 rows"].set_index("source")
    assert second.index[second["cheapest"]].tolist() == ["llm"]
    # each reaching cell is tested against the target's cells, Holm over the table
    assert second.at["llm", "mean_diff"] == pytest.approx(0.52 + 0.002 * 2 - 0.50, abs=1e-9)
    assert second.at["llm", "p_holm"] >= second.at["llm", "p"] and second.at["llm", "inference"] == "seeds only"
    assert math.isnan(second.at["real", "p"])  # the target's own cells: nothing to test


def test_equal_prices_are_a_tie_and_both_are_named(tmp_path):
    gen = {**GENERATION, "cost_usd": 0.4}  # llm rows at $0.002: 100 of them cost what 200 labeled rows do
    _, _, cheap, _ = answer_of(write(tmp_path / "r", generation=gen, annotation={**ANNOTATION, "cost_usd": 0.2}))
    first = cheap[cheap["target"] == "real +100 rows"]
    assert sorted(first.loc[first["cheapest"], "source"]) == ["llm", "llm_annotated"]
    text = cost_report.cheapest_sentences(cheap, [])
    assert "cheapest is `llm` +100 rows = `llm_annotated` +200 rows at $0.2 (a tie)" in text[0]


def test_a_pool_with_no_cells_an_unpriced_llm_and_nan_accuracies(tmp_path):
    table = trials()
    table = table[table["pool"] != "llm_teacher"]  # asked for, never finished
    table.loc[(table["pool"] == "real") & (table["seed"] == 2), "val_accuracy"] = math.nan  # a lost metric
    unpriced = {**GENERATION, "cost_usd": 0.0, "unpriced_requests": 4}
    d = write(tmp_path / "r", table, generation=unpriced, pools=["real", "llm", "llm_teacher", "llm_annotated"])
    data, sources_, cheap, even = answer_of(d)
    llm = data[data["pool"] == "llm"]
    assert llm.loc[llm["fraction"] > 0, "cost_usd"].isna().all()  # unknown, never $0
    assert (llm.loc[llm["fraction"] == 0, "cost_usd"] == 0).all()  # no row bought: nothing unknown
    real1 = sources_[(sources_["source"] == "real") & (sources_["fraction"] == 1)].iloc[0]
    assert real1["n_seeds"] == 2 and real1["mean"] == pytest.approx(0.40 + 0.05 - 0.005)
    first = cheap[cheap["target"] == "real +100 rows"].set_index("source")
    assert first.at["llm_teacher", "status"] == "no cells"
    assert first.at["llm", "status"] == "cost unknown" and not first.at["llm", "cheapest"]
    assert even.loc[even["source"] == "llm", "break_even_usd"].isna().all()


def test_the_break_even_human_price(tmp_path):
    _, _, _, even = answer_of(write(tmp_path / "r"))
    ann = even[(even["source"] == "llm_annotated") & (even["fraction"] == 1)].iloc[0]
    # 43.17% on the real curve (40.17% at 0 rows, 45.17% at 100): 60 rows; $0.10 of LLM labels
    assert ann["human_rows"] == pytest.approx(60) and ann["break_even_usd"] == pytest.approx(0.1 / 60)
    assert ann["break_even_low"] <= ann["break_even_usd"] <= ann["break_even_high"]
    beyond = even[(even["source"] == "llm") & (even["fraction"] == 2)].iloc[0]
    assert beyond["beyond"] and beyond["break_even_usd"] == pytest.approx(0.5 / 200)  # at most this
    worse = even[even["source"] == "llm_teacher"]
    assert worse["break_even_usd"].map(math.isinf).all()  # buys nothing: no price is low enough
    text = cost_report.break_even_sentences(even, [], 0.1)
    assert any("no human price makes its labels worth buying" in t for t in text)
    assert any("break-even at $0.001667 a human label" in t and "the cheaper way" in t for t in text)


def test_an_llm_that_bills_nothing_is_not_called_free(tmp_path):
    embedded = {**ANNOTATION, "endpoint": "embedded", "model": "SmolLM2-135M-Instruct", "cost_usd": 0.0}
    d = write(tmp_path / "r", annotation=embedded)
    _, _, _, even = answer_of(d)
    ann = even[(even["source"] == "llm_annotated") & (even["fraction"] == 1)].iloc[0]
    assert ann["llm_usd"] == 0 and ann["break_even_usd"] == 0
    # 1,000 prompt + 10 completion tokens a row at $0.15 / $0.60 per million
    assert ann["break_even_list_usd"] == pytest.approx(100 * (1000 * 0.15 + 10 * 0.6) / 1e6 / 60)
    notes = cost_report.price_notes(load_many([d])[0])
    assert any("bills nothing because it ran on this machine" in n and "unpriced here" in n
               and "gpt-4o-mini's list price" in n for n in notes)
    priced = write(tmp_path / "c", annotation=embedded, costs_={"human_label_usd": 0.1, "compute_usd_per_hour": 3.6})
    data, _, _, _ = answer_of(priced)
    row = data.set_index("cell_id").loc["llm_annotated-1-0"]
    # 2 s a row of this machine at $3.6 an hour, and 3 s of trial
    assert row["cost_usd"] == pytest.approx(100 * 2 * 0.001 + 3 * 0.001)


def test_the_report_answers_in_dollars(tmp_path, quick_figures):
    d = write(tmp_path / "costly")
    report = analyze([d], tmp_path / "out").read_text()
    assert "### Is LLM data worth it, in dollars?" in report and "## Accuracy against dollars" in report
    assert "A human label costs **$0.1**" in report
    assert "**To reach 45.2%** (what real +100 rows reach" in report
    assert "Holm p" in report and "3 seeds only" in report
    for name in ("cost_sources", "cost_cheapest", "cost_break_even"):
        assert (tmp_path / "out" / "tables" / f"{name}.csv").is_file()
    assert (tmp_path / "out" / "figures" / "accuracy_vs_dollars.png").is_file()


def test_with_predictions_on_record_the_reach_is_tested_on_new_rows_too(tmp_path):
    """Per-row predictions whose accuracies are each cell's: the test of a reaching cell against the
    target's cells counts the evaluation rows (analysis/rows.py), and its interval is wider."""
    import numpy as np

    from raysweep.analysis.rows import Predictions
    from raysweep.predictions import RowTable

    data, table, seed_only, _ = answer_of(write(tmp_path / "r"))
    rng = np.random.default_rng(0)
    n = 1000
    gold = rng.integers(0, 5, n)
    predicted = []
    for _, cell in data.iterrows():  # each cell right on round(accuracy * n) rows drawn at random
        right = rng.permutation(n) < round(cell["val_accuracy"] * n)
        predicted.append(np.where(right, gold, (gold + 1) % 5))
    preds = Predictions([RowTable("val", data["cell_id"].tolist(), gold, np.stack(predicted))])
    rows_too = costs.cheapest(data, preds=preds, table=table)
    pick = (rows_too["target"] == "real +200 rows") & (rows_too["source"] == "llm")
    assert rows_too.loc[pick, "inference"].item() == "seeds and rows" and rows_too.loc[pick, "n_rows"].item() == n
    assert rows_too.loc[pick, "mean_diff"].item() == pytest.approx(seed_only.loc[pick, "mean_diff"].item(), abs=2e-3)
    width = (rows_too["diff_high"] - rows_too["diff_low"])[pick].item()
    assert width > (seed_only["diff_high"] - seed_only["diff_low"])[pick].item()


def test_a_results_directory_with_a_bad_price_or_summary_is_told_not_guessed(tmp_path):
    from raysweep.analysis.results import ResultsError

    d = write(tmp_path / "r", costs_={"human_label_usd": -1})
    with pytest.raises(ResultsError, match=r"sweep\.yaml: costs\.human_label_usd: must be a finite price"):
        answer_of(d)
    hostile = {**GENERATION, "cost_usd": -5, "rows_kept": "many", "prompt_tokens": "x"}
    data, *_ = answer_of(write(tmp_path / "h", generation=hostile))
    assert data.loc[(data["pool"] == "llm") & (data["fraction"] > 0), "cost_usd"].isna().all()


def test_a_sweep_without_an_llm_pool_has_no_cost_answer(tmp_path, quick_figures):
    table = trials()
    report = analyze([write(tmp_path / "real-only", table[table["pool"] == "real"])], tmp_path / "out").read_text()
    assert "in dollars" not in report and not (tmp_path / "out" / "figures" / "accuracy_vs_dollars.png").exists()


def test_two_outputs_of_one_grid_are_priced_as_one_sweep(tmp_path):
    """`real` run as one sweep and the LLM pools as another, with the same fixed settings: the
    LLM pools are compared with `real` (as results.combined_trials joins them), not apart."""
    table = trials()
    real = write(tmp_path / "human", table[table["pool"] == "real"])
    llm = write(tmp_path / "machine", table[(table["pool"] != "real") & (table["fraction"] > 0)])
    data = costs.priced(load_many([real, llm]))
    assert data["sweep"].nunique() == 1
    cheap = costs.cheapest(data)
    assert cheap.loc[cheap["cheapest"] & (cheap["target"] == "real +200 rows"), "source"].tolist() == ["llm"]


def test_a_pool_that_buys_some_human_labels_pays_for_both_kinds(tmp_path):
    """llm_routed's cells record their own counts: all 100 added rows' LLM labels were paid for,
    and 20 of them were relabeled by a person. Its break-even counts those 20 as labels it did not save."""
    table = trials({"real": 0.05, "llm_routed": 0.04})
    routed = (table["pool"] == "llm_routed") & (table["fraction"] > 0)
    table["human_labels"], table["llm_labels"] = math.nan, math.nan
    table.loc[routed, "human_labels"] = 0.2 * table.loc[routed, "n_added"]
    table.loc[routed, "llm_labels"] = table.loc[routed, "n_added"]
    data, sources_, _, even = answer_of(write(tmp_path / "r", table))
    cell = data.set_index("cell_id").loc["llm_routed-1-0"]
    assert (cell["human_labels"], cell["llm_labels"]) == (20, 100)
    assert cell["cost_usd"] == pytest.approx(20 * 0.1 + 100 * 0.001)
    one = even[(even["source"] == "llm_routed") & (even["fraction"] == 1)].iloc[0]
    # 44.17% on the real curve: 80 human rows; it bought 20 of them itself and paid $0.10 for LLM labels
    assert one["human_rows"] == pytest.approx(80) and one["break_even_usd"] == pytest.approx(0.1 / 60)

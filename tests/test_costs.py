"""What a cell's added labels cost (costs.py), the `costs:` config, and that prices never reach a
cell id or cache key. Fast and Ray-free: hand-made summaries and records."""

from __future__ import annotations

import json
import math

import pytest

from raysweep import annotation, augment, costs
from raysweep.config import ConfigError, CostsConfig, SweepConfig, from_dict, to_dict
from raysweep.grid import CellRecord, cell_ids, expand, fixed_digest, results_table

GENERATION = {"endpoint": "api", "model": "gpt-4o-mini", "cost_usd": 0.30, "unpriced_requests": 0, "rows_kept": 100,
              "prompt_tokens": 20000, "completion_tokens": 5000, "elapsed_s": 50.0, "total_s": 80.0}
ANNOTATION = {"endpoint": "embedded", "model": "SmolLM2-135M-Instruct", "cost_usd": 0.0, "unpriced_requests": 0,
              "rows_labeled": 40, "prompt_tokens": 8000, "completion_tokens": 400, "elapsed_s": 720.0}


# --------------------------------------------------------------------------- config


def test_the_default_human_price_is_the_documented_one_and_compute_is_unpriced():
    c = SweepConfig().costs
    assert c.human_label_usd == pytest.approx(3 * 0.012) and c.compute_usd_per_hour is None


@pytest.mark.parametrize("costs_, message", [
    ({"human_label": 1}, "costs.human_label: unknown key"),
    ({"human_label_usd": -0.01}, "costs.human_label_usd: must be a finite price of 0 or more"),
    ({"human_label_usd": "cheap"}, "costs.human_label_usd: expected a number"),
    ({"human_label_usd": float("nan")}, "costs.human_label_usd: expected a finite number"),
    ({"compute_usd_per_hour": -1}, "costs.compute_usd_per_hour: must be null or a finite price"),
    ({"compute_usd_per_hour": float("inf")}, "costs.compute_usd_per_hour: expected a finite number"),
])
def test_a_bad_price_is_one_line_naming_its_key(costs_, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.", 1)):
        from_dict(SweepConfig, {"costs": costs_})


def test_prices_reach_no_cell_id_and_no_cache_key():
    grid = {"compare": {"pool": ["real", "llm", "llm_teacher", "llm_annotated"], "strategy": ["random", "entropy"],
                        "fraction": [0, 1]}}
    a = from_dict(SweepConfig, grid)
    b = from_dict(SweepConfig, {**grid, "costs": {"human_label_usd": 1.5, "compute_usd_per_hour": 3.0}})
    cells = expand(a)
    assert cell_ids(a, cells, "gen", ["lab"] * len(cells)) == cell_ids(b, cells, "gen", ["lab"] * len(cells))
    assert fixed_digest(a) == fixed_digest(b)
    assert augment.config_key(a) == augment.config_key(b)  # the generated rows' identity
    endpoint = {"llm": {"base_url": "http://127.0.0.1:9/v1", "api_key_env": "none"}}
    assert annotation.config_key(from_dict(SweepConfig, endpoint)) == annotation.config_key(
        from_dict(SweepConfig, {**endpoint, "costs": {"human_label_usd": 2.0}}))  # the LLM labels' identity
    assert to_dict(a)["costs"] != to_dict(b)["costs"]  # and yet the sweep.yaml says which prices


# --------------------------------------------------------------------------- prices per row


def test_an_llm_row_costs_what_its_step_spent_per_usable_row():
    p = costs.prices_of(CostsConfig(), GENERATION, ANNOTATION)
    assert p.llm_usd_per_row("generate") == pytest.approx(0.30 / 100)
    assert p.steps["generate"].prompt_tokens_per_row == 200 and p.steps["generate"].completion_tokens_per_row == 50
    assert p.llm_usd_per_row("annotate") == 0.0  # the embedded LLM bills no API dollar
    assert math.isnan(p.llm_usd_per_row(None))  # a step with no summary: unknown, never 0


def test_the_embedded_llm_costs_its_compute_when_compute_is_priced():
    p = costs.prices_of({"compute_usd_per_hour": 0.36}, GENERATION, ANNOTATION)
    assert p.llm_usd_per_row("annotate") == pytest.approx(720 / 40 * 0.36 / 3600)  # 18 s a row at $0.36/h
    # An API's wall time is waiting on someone else's machine: its bill already prices it.
    assert p.llm_usd_per_row("generate") == pytest.approx(0.30 / 100)


def test_an_unpriced_model_has_unknown_dollars_not_zero():
    p = costs.prices_of(None, {**GENERATION, "cost_usd": 0.0, "unpriced_requests": 3})
    assert math.isnan(p.llm_usd_per_row("generate"))
    priced = costs.price_cell(p, "llm", {"n_added": 10})
    assert priced["cost_usd"] is None and priced["llm_labels"] == 10  # JSON null, not NaN


@pytest.mark.parametrize("summary", [None, {}, {"rows_kept": 0, "cost_usd": 1.0}, {"rows_kept": "x"}, []])
def test_a_summary_without_rows_prices_nothing(summary):
    assert costs.step_price(summary, "rows_kept") is None


# --------------------------------------------------------------------------- a cell's cost


@pytest.mark.parametrize("pool, n_added, human, llm", [
    ("real", 7, 7, 0), ("llm", 7, 0, 7), ("llm_teacher", 7, 0, 7), ("llm_annotated", 7, 0, 7), ("real", 0, 0, 0)])
def test_label_counts_follow_who_labeled_the_pool(pool, n_added, human, llm):
    assert costs.price_cell(None, pool, {"n_added": n_added}) == {"human_labels": human, "llm_labels": llm}


def test_a_pool_that_bought_some_human_labels_says_how_many_in_its_metrics():
    p = costs.prices_of({"human_label_usd": 0.1}, None, {**ANNOTATION, "cost_usd": 0.0})
    metrics = {"n_added": 10, "human_labels": 3, "llm_labels": 10, "trial_s": 2.0}  # llm_routed: 3 of 10 to a person
    priced = costs.price_cell(p, "llm_annotated", metrics)
    assert priced["human_labels"] == 3 and priced["llm_labels"] == 10
    assert priced["cost_usd"] == pytest.approx(0.3) and metrics["human_labels"] == 3


def test_cost_usd_adds_human_labels_llm_rows_and_priced_trial_compute():
    p = costs.prices_of({"human_label_usd": 0.05, "compute_usd_per_hour": 3.6}, GENERATION, None)
    parts = costs.cell_cost(p, "generate", human=2, llm=10, trial_s=100.0)
    assert parts["human_usd"] == pytest.approx(0.10)
    assert parts["llm_usd"] == pytest.approx(10 * 0.003)
    assert parts["trial_compute_usd"] == pytest.approx(0.1)  # 100 s at $3.6/h
    assert parts["cost_usd"] == pytest.approx(0.10 + 0.03 + 0.1)
    assert costs.cell_cost(p, "generate", 0, 0, trial_s=None)["cost_usd"] == 0.0


def test_a_record_carries_its_cost_and_round_trips():
    from raysweep.records import _record
    from raysweep.grid import Cell

    p = costs.prices_of({"human_label_usd": 0.05}, GENERATION, None)
    rec = _record("c1", Cell("llm", "random", 1.0, "pooler", 0), ({"val_accuracy": 0.4, "n_added": 4, "trial_s": 1.0},),
                  0.0, None, None, p)
    data = json.loads(rec.to_json())
    assert data["cost_usd"] == pytest.approx(0.012) and data["cost"]["llm_usd"] == pytest.approx(0.012)
    assert (data["metrics"]["llm_labels"], data["metrics"]["human_labels"]) == (4, 0)
    assert CellRecord.parse(rec.to_json()) == rec
    old = CellRecord("c2", {}, metrics={"n_added": 1})  # made before costs: no cost keys written
    assert not {"cost_usd", "cost"} & json.loads(old.to_json()).keys()


def test_trials_csv_prices_old_records_at_this_runs_prices():
    cfg = from_dict(SweepConfig, {"compare": {"pool": ["real"], "fraction": [0, 1]}, "costs": {"human_label_usd": 0.5}})
    cells = expand(cfg)
    ids = cell_ids(cfg, cells)
    done = {ids[0]: CellRecord(ids[0], {}, metrics={"val_accuracy": 0.3, "n_added": 0}),
            ids[1]: CellRecord(ids[1], {}, metrics={"val_accuracy": 0.4, "n_added": 6, "human_labels": 6, "llm_labels": 0},
                               cost_usd=0.216)}  # recorded at the default price
    table = results_table(cells, ids, done, cfg, costs.prices_of(cfg.costs))
    assert table["cost_usd"].tolist() == [0.0, 3.0] and table["human_labels"].tolist() == [0, 6]
    unpriced = results_table(cells, ids, done, cfg)  # no prices given: the records' own
    assert unpriced["cost_usd"].tolist()[1] == 0.216


def test_an_llm_that_bills_nothing_is_priced_at_the_stated_list_prices_of_its_measured_tokens():
    step = costs.prices_of(None, None, ANNOTATION).steps["annotate"]  # 200 prompt + 10 completion tokens a row
    table = {"gpt-4o-mini": {"prompt": 0.15, "completion": 0.6}, "SmolLM2-135M-Instruct": {"prompt": 0.0,
                                                                                          "completion": 0.0}}
    assert costs.list_prices(step, table) == {"gpt-4o-mini": pytest.approx((200 * 0.15 + 10 * 0.6) / 1e6)}
    assert costs.list_prices(None, table) == {} and costs.list_prices(step, None) == {}

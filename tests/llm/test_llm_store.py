"""The response store: durable appends, a torn last line, a damaged one, a changed config, cost."""

from __future__ import annotations

import json

import pytest

from raysweep.llm.config import PriceConfig
from raysweep.llm.store import ResponseStore, StoreError, check_setup, cost_usd, totals


def record(i, **extra):
    return {"request_id": i, "usage": {"prompt_tokens": 100 * i, "completion_tokens": 10 * i}, "cost_usd": 0.5 * i, **extra}


def test_appends_are_fsynced_and_read_back(tmp_path, monkeypatch):
    synced = []
    monkeypatch.setattr("raysweep.llm.store.os.fsync", lambda fd: synced.append(fd))
    store = ResponseStore(tmp_path / "responses.jsonl")
    assert store.load() == []
    for i in range(3):
        store.append(record(i, text="ünïcode"))
    assert len(synced) == 3  # one per paid reply, before anyone parses it
    assert [r["request_id"] for r in ResponseStore(store.path).load()] == [0, 1, 2]
    assert store.load()[0]["text"] == "ünïcode"


def test_a_torn_last_line_is_cut_off_and_appends_continue_cleanly(tmp_path):
    store = ResponseStore(tmp_path / "responses.jsonl")
    store.append(record(0))
    store.append(record(1))
    with open(store.path, "a") as f:
        f.write('{"request_id": 2, "usage": {"prompt_')  # killed mid-write
    assert [r["request_id"] for r in store.load()] == [0, 1]
    assert store.torn_lines == 1
    store.append(record(3))
    assert [r["request_id"] for r in ResponseStore(store.path).load()] == [0, 1, 3]


def test_a_whole_last_record_without_its_newline_is_kept(tmp_path):
    path = tmp_path / "responses.jsonl"
    path.write_text(json.dumps(record(0)) + "\n" + json.dumps(record(1)))
    store = ResponseStore(path)
    assert [r["request_id"] for r in store.load()] == [0, 1]
    store.append(record(2))
    assert [r["request_id"] for r in store.load()] == [0, 1, 2]


def test_a_damaged_line_before_the_end_is_an_error_naming_the_line(tmp_path):
    path = tmp_path / "responses.jsonl"
    path.write_text(json.dumps(record(0)) + "\n{oops\n" + json.dumps(record(2)) + "\n")
    with pytest.raises(StoreError, match=r"responses.jsonl:2: not a JSON record; the store is damaged$"):
        ResponseStore(path).load()


def test_stored_replies_made_for_another_config_are_refused(tmp_path):
    setup = {"model": "m", "samples_per_call": 100}
    check_setup([{"setup": setup}], setup, tmp_path)
    with pytest.raises(StoreError, match=r"made with samples_per_call=20 \(the config says 100\); use another output"):
        check_setup([{"setup": {"model": "m", "samples_per_call": 20}}], setup, tmp_path)


def test_cost_from_the_price_table():
    prices = {"gpt-4o-mini": PriceConfig(prompt=0.15, completion=0.60)}
    usage = {"prompt_tokens": 1000, "completion_tokens": 2000}
    assert cost_usd(usage, "gpt-4o-mini", prices) == pytest.approx(0.00135)
    assert cost_usd(usage, "gpt-4o-mini-2024-07-18", prices, answered_by="gpt-4o-mini") == pytest.approx(0.00135)
    assert cost_usd(usage, "unknown-model", prices) is None
    assert cost_usd(None, "gpt-4o-mini", prices) is None


def test_totals():
    records = [record(1), record(2), {"request_id": 3, "usage": None, "cost_usd": None}]
    assert totals(records) == {"requests": 3, "prompt_tokens": 300, "cached_prompt_tokens": 0, "completion_tokens": 30,
                               "total_tokens": 330,
                               "cost_usd": 1.5, "unpriced_requests": 1}

"""Batch mode against the fake server's Batch API: a whole run, partial failures, expiry, kills at
every stage and resume, --no-wait, cancel, the budget. No Ray: batch mode runs in the driver."""

from __future__ import annotations

import json
import re
import time

import pytest

from raysweep.llm import batch as batch_module
from raysweep.llm.batch import BatchPending, open_batches
from raysweep.llm.budget import worst_case_usd
from raysweep.llm.client import estimate_tokens
from raysweep.llm.config import PriceConfig
from raysweep.llm.prompt import DEFAULT_TEMPLATE, SST5_CLASS_NAMES, build_messages
from raysweep.llm.fake_server import BatchScript
from raysweep.llm.generate import GenerationError, generate


class Killed(BaseException):
    """A kill -9 at a chosen point: no except clause catches it, nothing after it runs."""


def stored(out_dir) -> list[dict]:
    return [json.loads(line) for line in open(out_dir / "responses.jsonl")]


def events(out_dir) -> list[dict]:
    return [json.loads(line) for line in open(out_dir / "batches.jsonl")]


def ops(server, kind: str) -> list[str]:
    return [i for op, i in server.batch_ops if op == kind]


@pytest.fixture
def batch_cfg(llm_cfg):
    def make(url, **overrides):
        return llm_cfg(url, **{"mode": "batch", "batch": {"poll_interval": 0.05}, **overrides})

    return make


def test_a_batch_run_stores_every_reply_with_its_batch_id_at_the_batch_price(
        fake_openai, batch_cfg, examples, val_texts, tmp_path):
    server = fake_openai(rows_per_reply=5, batch_default=BatchScript(validating=0.05, running=0.1))
    prices = {"fake-model": {"prompt": 1.0, "completion": 2.0, "batch_discount": 0.5}}
    said: list[str] = []
    result = generate(batch_cfg(server.base_url, n_rows=20, prices=prices), examples, val_texts, tmp_path, say=said.append)
    s = result.summary
    assert s["complete"] and s["mode"] == "batch" and len(result.rows) == 20
    assert ops(server, "create") == ["batch_0"] and ops(server, "upload") == ["file-0"]
    records = stored(tmp_path)
    assert sorted(r["request_id"] for r in records) == [0, 1, 2, 3] and {r["batch_id"] for r in records} == {"batch_0"}
    assert all(r["request"]["model"] == "fake-model" and r["request"]["max_tokens"] == 4096 for r in records)
    prompt = sum(r["usage"]["prompt_tokens"] for r in records)
    completion = sum(r["usage"]["completion_tokens"] for r in records)
    assert s["cost_usd"] == pytest.approx((prompt * 0.5 + completion * 1.0) / 1e6)  # half the online price
    assert said[0] == f"llm: calls go to {server.base_url[7:-3]} (llm.base_url is given; no key sent); batch mode"
    assert said[-1].startswith("llm: 4 calls this run (4 stored)") and "20 of 20 rows kept" in said[-1]
    assert [e["event"] for e in events(tmp_path)] == ["uploaded", "created", "collected"]
    # Again: nothing open, nothing missing, nothing asked.
    generate(batch_cfg(server.base_url, n_rows=20, prices=prices), examples, val_texts, tmp_path)
    assert ops(server, "create") == ["batch_0"]


def test_failed_and_expired_requests_go_in_a_new_batch(fake_openai, batch_cfg, examples, val_texts, tmp_path):
    server = fake_openai(rows_per_reply=5, batch_script=[BatchScript(fail=(1,), expire_after=3)])
    result = generate(batch_cfg(server.base_url, n_rows=20), examples, val_texts, tmp_path)
    assert result.summary["complete"]
    collected = [e for e in events(tmp_path) if e["event"] == "collected"]
    assert collected[0]["status"] == "expired" and collected[0]["failed"] == [1, 3]
    assert collected[1]["status"] == "completed" and collected[1]["failed"] == []
    assert sorted(r["request_id"] for r in stored(tmp_path)) == [0, 1, 2, 3]
    assert [r["batch_id"] for r in sorted(stored(tmp_path), key=lambda r: r["request_id"])] == [
        "batch_0", "batch_1", "batch_0", "batch_1"]
    assert (result.summary["batches_created"], result.summary["requests_resubmitted"]) == (2, 2)


def test_requests_that_keep_failing_end_the_run_in_one_line(fake_openai, batch_cfg, examples, val_texts, tmp_path):
    server = fake_openai(batch_default=BatchScript(error="the input file is not valid JSONL"))
    with pytest.raises(GenerationError, match=r"^4 of 4 call\(s\) failed, e.g. call 0: batch batch_\d failed: the input "
                                              r"file is not valid JSONL; rerun to ask for them again \(0 replies kept"):
        generate(batch_cfg(server.base_url, n_rows=20, batch={"poll_interval": 0.05, "resubmits": 1}),
                 examples, val_texts, tmp_path)
    assert len(ops(server, "create")) == 2  # the first and one resubmit


@pytest.mark.parametrize("stage", ["uploaded", "logged_upload", "created", "polling", "collecting"])
def test_a_run_killed_at_any_stage_resumes_without_paying_twice(
        stage, fake_openai, batch_cfg, examples, val_texts, tmp_path, monkeypatch):
    server = fake_openai(rows_per_reply=5, batch_default=BatchScript(running=0.2))
    cfg = batch_cfg(server.base_url, n_rows=20)

    def kill(name):
        if name == stage:
            raise Killed(name)

    monkeypatch.setattr(batch_module, "_stage", kill)
    with pytest.raises(Killed):
        generate(cfg, examples, val_texts, tmp_path)
    monkeypatch.setattr(batch_module, "_stage", lambda name: None)
    result = generate(cfg, examples, val_texts, tmp_path)

    assert result.summary["complete"] and sorted(r["request_id"] for r in stored(tmp_path)) == [0, 1, 2, 3]
    # One paid batch whatever the stage: a file uploaded and never made a batch costs nothing.
    assert len(ops(server, "create")) == 1
    assert len(server.served()) == 4  # each request answered (and billed) once
    assert len(ops(server, "upload")) == (2 if stage == "uploaded" else 1)
    assert open_batches(events(tmp_path)) == []


def test_no_wait_submits_and_a_later_run_collects(fake_openai, batch_cfg, examples, val_texts, tmp_path):
    server = fake_openai(rows_per_reply=5, batch_default=BatchScript(running=0.5))
    cfg = batch_cfg(server.base_url, n_rows=20)
    with pytest.raises(BatchPending, match=r"^llm: batch batch_0 is (validating|in_progress) \(\d/4 requests done\); "
                                           r"run the same `raysweep generate` again to collect it"):
        generate(cfg, examples, val_texts, tmp_path, wait=False)
    assert not (tmp_path / "responses.jsonl").exists() or stored(tmp_path) == []
    result = generate(cfg, examples, val_texts, tmp_path)  # waits for the same batch
    assert result.summary["complete"] and ops(server, "create") == ["batch_0"]


def test_cancel_keeps_what_the_batch_finished_and_submits_nothing(fake_openai, batch_cfg, examples, val_texts, tmp_path):
    server = fake_openai(rows_per_reply=5, batch_default=BatchScript(running=3.0))
    cfg = batch_cfg(server.base_url, n_rows=40)
    with pytest.raises(BatchPending):
        generate(cfg, examples, val_texts, tmp_path, wait=False)
    time.sleep(0.8)  # a few of its 8 requests run
    said: list[str] = []
    result = generate(cfg, examples, val_texts, tmp_path, say=said.append, cancel=True)
    assert ops(server, "cancel") == ["batch_0"] and ops(server, "create") == ["batch_0"]
    assert result.summary["stopped"] == "cancelled" and not result.summary["complete"]
    kept = sorted(r["request_id"] for r in stored(tmp_path))
    assert 0 < len(kept) < 8 and kept == list(range(len(kept)))
    assert "llm: cancelling batch batch_0" in said[1]
    assert said[-1].endswith("the batches were cancelled; what they finished is kept")


def test_a_batch_reserves_every_request_and_stops_at_the_budget(fake_openai, batch_cfg, examples, val_texts, tmp_path):
    server = fake_openai(rows_per_reply=5)
    prices = {"fake-model": {"prompt": 100.0, "completion": 100.0}}
    worst = max(worst_case_usd(PriceConfig(100.0, 100.0), estimate_tokens(
        build_messages(DEFAULT_TEMPLATE, 5, examples, 3, 0, i, SST5_CLASS_NAMES), 0), 100) for i in range(4))
    cap = round(2.5 * worst, 4)  # pays for two calls' worst case, not three
    cfg = batch_cfg(server.base_url, n_rows=20, prices=prices, max_tokens=100, max_cost_usd=cap)
    said: list[str] = []
    result = generate(cfg, examples, val_texts, tmp_path, say=said.append)
    s = result.summary
    assert s["stopped"] == "budget" and s["rows_kept"] == 10 and s["requests"] == 2
    assert s["cost_usd"] <= cap and len(server.served()) == 2
    # The first batch sizes every request at its whole max_tokens (no reply known yet); what is
    # left after it pays for no more, as the line says with its numbers.
    assert re.search(rf"10 of 20 rows kept, 0 s waited on the limiter; stopped at llm.max_cost_usd \(\${cap:g}\): "
                     rf"\${s['cost_usd']:.4f} spent, at most \$0\.\d+ reserved at once by the calls in flight; the next "
                     r"call needs \$0\.\d+ \(its prompt and a 100-token reply: 1.25 x the longest reply so far, \d+ "
                     rf"tokens\) and \${cap - s['cost_usd']:.4f} is left; the LLM pools run with these rows$", said[-1])
    assert s["budget"]["stop"]["need_usd"] > cap - s["cost_usd"]
    # Rerun under the same cap: nothing more fits, nothing is sent.
    generate(cfg, examples, val_texts, tmp_path)
    assert len(ops(server, "create")) == 1


def test_batch_mode_with_the_embedded_server_is_refused(llm_cfg, examples, val_texts, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    cfg = llm_cfg("http://127.0.0.1:1/v1", mode="batch")
    cfg.base_url, cfg.api_key_env = None, None
    with pytest.raises(GenerationError, match="^llm.mode: batch needs a provider's Batch API; the embedded server"):
        generate(cfg, examples, val_texts, tmp_path)

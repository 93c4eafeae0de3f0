"""The cost estimate of `raysweep check` and `generate --dry-run`: a range, calling nothing."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from raysweep.llm.client import estimate_tokens
from raysweep.llm.estimate import TOKENS_PER_SAMPLE, estimate
from raysweep.llm.prompt import DEFAULT_TEMPLATE, SST5_CLASS_NAMES, build_messages


def test_the_range_runs_from_every_sample_kept_to_the_call_cap_at_full_max_tokens(fake_openai, llm_cfg, examples):
    server = fake_openai()
    cfg = llm_cfg(server.base_url, n_rows=20, samples_per_call=5, max_tokens=300, max_cost_usd=0.01)
    e = estimate(cfg, examples)
    assert e.calls == (4, 8)  # 20 rows / 5 a call; the cap is twice that (llm.max_requests: 0)
    prompts = [build_messages(DEFAULT_TEMPLATE, 5, examples, 3, 0, i, SST5_CLASS_NAMES) for i in range(8)]
    high = max(estimate_tokens(p, 0) for p in prompts)
    low = min(sum(len(m["content"]) for m in p) for p in prompts) // 4
    assert e.prompt_tokens_per_call == (low, high) and e.completion_tokens_per_call == (5 * TOKENS_PER_SAMPLE, 300)
    assert e.tokens == (4 * (low + 5 * TOKENS_PER_SAMPLE), 8 * (high + 300))
    # llm_cfg's prices: 1 $ per 1M prompt tokens, 2 $ per 1M completion tokens.
    assert e.cost_usd == (pytest.approx(4 * (low + 2 * 5 * TOKENS_PER_SAMPLE) / 1e6, abs=1e-6),
                          pytest.approx(8 * (high + 2 * 300) / 1e6, abs=1e-6))
    assert e.calls_within_budget == min(8, int(0.01 // ((high + 2 * 300) / 1e6)))
    assert server.arrivals == []
    lines = e.lines()
    assert lines[1] == (f"llm: expect 4-8 calls, {e.tokens[0]:,}-{e.tokens[1]:,} tokens "
                        f"(prompt {low:,}-{high:,}, reply {5 * TOKENS_PER_SAMPLE}-300 a call)")
    assert lines[2].startswith(f"llm: expect ${e.cost_usd[0]:.4f} to ${e.cost_usd[1]:.4f} at fake-model's online price; "
                               "llm.max_cost_usd $0.01 pays for")


def test_stored_calls_are_taken_off_and_their_cost_shown_as_spent(fake_openai, llm_cfg, examples):
    cfg = llm_cfg(fake_openai().base_url, n_rows=20, samples_per_call=5)
    stored = [{"request_id": i, "usage": {"prompt_tokens": 10, "completion_tokens": 10}, "cost_usd": 0.5} for i in range(3)]
    e = estimate(cfg, examples, stored=stored)
    assert e.calls == (1, 5) and e.stored_calls == 3 and e.spent_usd == 1.5
    assert e.lines()[0].endswith("; 3 calls already stored ($1.5000)")


def test_with_stored_replies_the_cap_is_counted_in_reservations_sized_from_them(fake_openai, llm_cfg, examples):
    cfg = llm_cfg(fake_openai().base_url, n_rows=20, samples_per_call=5, max_tokens=300, max_cost_usd=0.002)
    fresh = estimate(cfg, examples)
    assert fresh.reserve_reply_tokens == 300 and "at $" in fresh.lines()[2] and "its whole max_tokens)" in fresh.lines()[2]
    stored = [{"request_id": i, "usage": {"prompt_tokens": 10, "completion_tokens": 40}, "cost_usd": 0.0001}
              for i in range(2)]
    e = estimate(cfg, examples, stored=stored)
    assert e.reserve_reply_tokens == 50  # 1.25 x the longest stored reply: what calls near the cap reserve
    assert e.reserve_usd < fresh.reserve_usd and e.calls_within_budget > fresh.calls_within_budget
    assert e.lines()[2].endswith(f"pays for {e.calls_within_budget} more calls at ${e.reserve_usd:.4f} reserved each "
                                 "(its prompt and a 50-token reply, 1.25 x the longest stored)")


def test_the_batch_price_and_an_unpriced_model(fake_openai, llm_cfg, examples):
    url = fake_openai().base_url
    online = estimate(llm_cfg(url, prices={"fake-model": {"prompt": 2.0, "completion": 4.0, "batch_discount": 0.5}}),
                      examples)
    batch = estimate(llm_cfg(url, mode="batch", prices={"fake-model": {"prompt": 2.0, "completion": 4.0,
                                                                       "batch_discount": 0.5}}), examples)
    assert batch.cost_usd == (pytest.approx(online.cost_usd[0] / 2), pytest.approx(online.cost_usd[1] / 2))
    unpriced = estimate(llm_cfg(url, prices={}), examples)
    assert unpriced.cost_usd is None and unpriced.lines()[2] == "llm: cost unknown: fake-model has no price in llm.prices"


@pytest.mark.slow  # no Ray, but the preflight loads SST-5 and transformers: seconds on a busy machine
def test_generate_dry_run_prints_the_estimate_and_writes_nothing(fake_openai, tmp_path):
    from raysweep.cli import main

    server = fake_openai()
    sweep = tmp_path / "s.yaml"
    sweep.write_text(json.dumps({
        "name": "dry", "compare": {"pool": ["llm"], "strategy": ["random"], "fraction": [0], "freeze": ["last-linear"]},
        "llm": {"base_url": server.base_url, "api_key_env": "none", "model": "fake-model", "n_rows": 40,
                "samples_per_call": 10, "max_cost_usd": 5, "prices": {"fake-model": {"prompt": 1, "completion": 2}}}}))
    out = tmp_path / "gen"
    result = CliRunner().invoke(main, ["generate", str(sweep), "--output", str(out), "--dry-run"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(f"llm: fake-model at {server.base_url[7:-3]} (base_url, online mode), 10 samples a call")
    assert lines[1].startswith("llm: expect 4-8 calls, ") and "llm.max_cost_usd $5 pays for 8 more calls" in lines[2]
    assert not out.exists() and server.arrivals == []

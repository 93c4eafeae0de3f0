"""llm.max_cost_usd: reservations of the worst case, settling, concurrent callers, a clean stop."""

from __future__ import annotations

import json
import threading

import pytest

from raysweep.llm.budget import Budget, cost_usd, worst_case_usd
from raysweep.llm.client import Generator
from raysweep.llm.config import PriceConfig, load_llm_config
from raysweep.llm.fake_server import Reply
from raysweep.llm.generate import GenerationError, generate
from raysweep.llm.limiter import RateLimiter

PRICE = PriceConfig(prompt=1000.0, completion=2000.0)  # dollars per 1M tokens: a call costs cents
MESSAGES = [{"role": "user", "content": "Generate 5 samples as a JSON list of [sentence, label] pairs."}]


def test_a_reservation_fits_under_the_cap_or_is_refused_and_settling_keeps_what_was_billed():
    budget = Budget(cap_usd=1.0, spent_usd=0.25)
    a = budget.reserve(0.5)
    assert a is not None and budget.room_usd() == pytest.approx(0.25)
    assert budget.reserve(0.3) is None and budget.refused == 1  # would pass the cap: refused, nothing taken
    b = budget.reserve(0.25)
    assert b is not None and budget.room_usd() == 0
    budget.settle(a, 0.1)  # billed less than the worst case: the rest is free again
    assert budget.room_usd() == pytest.approx(0.4)
    budget.settle(b, 0.0)  # refused by the provider: not billed
    assert budget.stats() == {"cap_usd": 1.0, "spent_usd": 0.35, "reserved_usd": 0.0, "refused": 1, "settled": 2}
    free = Budget()  # no cap: everything is reserved, spending still counted
    free.settle(free.reserve(1e9), 3.0)
    assert free.room_usd() is None and free.spent_usd == 3.0


def test_worst_case_and_cost_use_the_price_per_million_tokens():
    assert worst_case_usd(PRICE, 100, 50) == pytest.approx((100 * 1000 + 50 * 2000) / 1e6)
    assert cost_usd(PRICE, {"prompt_tokens": 10, "completion_tokens": 5}) == pytest.approx(0.02)
    assert PriceConfig(2.0, 4.0, batch_discount=0.5).for_mode("batch") == PriceConfig(1.0, 2.0, 0.0)
    assert PriceConfig(2.0, 4.0).for_mode("batch") == PriceConfig(2.0, 4.0)  # no discount unless the table says so


def make(server, budget, retries=2, max_tokens=100):
    return Generator(server.base_url, "fake-model", {"temperature": 1.0, "max_tokens": max_tokens}, None,
                     RateLimiter(0, 0), timeout=5.0, retries=retries, retry_backoff=0.01, budget=budget, price=PRICE)


def test_each_attempt_reserves_and_a_refused_attempt_is_not_billed(fake_openai):
    server = fake_openai(script=[Reply(status=500), Reply(status=500)], rows_per_reply=2)
    budget = Budget(cap_usd=10.0)
    record = make(server, budget).call(0, MESSAGES, seed=0)
    assert record["attempts"] == 3 and budget.settled == 3
    assert budget.spent_usd == pytest.approx(cost_usd(PRICE, record["usage"]))  # the two 500s cost nothing
    assert budget.reserved == {}


def test_a_call_whose_worst_case_does_not_fit_is_never_sent(fake_openai):
    server = fake_openai()
    generator = make(server, Budget(cap_usd=0.01))  # the worst case is ~0.2 $: 100 tokens of reply alone
    record = generator.call(0, MESSAGES, seed=0)
    assert record["budget"] is True and record["fatal"] is False and server.arrivals == []


def test_concurrent_callers_never_pass_the_cap(fake_openai):
    server = fake_openai(default=Reply(delay=0.02), rows_per_reply=2)
    worst = worst_case_usd(PRICE, make(server, None).estimate(MESSAGES) - 100, 100)
    budget = Budget(cap_usd=worst * 7.5)  # room for 7 worst cases; real calls cost less, so more fit
    results: list[dict] = []

    def caller(k):
        generator = make(server, budget)
        for i in range(10):
            results.append(generator.call(10 * k + i, MESSAGES, seed=i))

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    paid = [r for r in results if "response" in r]
    billed = sum(cost_usd(PRICE, r["usage"]) for r in paid)
    assert len(paid) == len(server.served()) >= 7
    assert billed == pytest.approx(budget.spent_usd) and billed <= budget.cap_usd
    assert any(r.get("budget") for r in results)  # the cap, not the calls, ended it


def test_a_budget_on_a_model_with_no_price_is_refused_before_any_call(fake_openai, examples, val_texts, tmp_path):
    server = fake_openai()
    cfg = load_llm_config({"base_url": server.base_url, "api_key_env": "none", "model": "unpriced-model",
                           "max_cost_usd": 1.0})
    with pytest.raises(GenerationError, match=r"^llm.max_cost_usd: unpriced-model has no price in llm.prices, so "
                                              r"the budget cannot be kept; add llm.prices.unpriced-model"):
        generate(cfg, examples, val_texts, tmp_path)
    assert server.arrivals == [] and list(tmp_path.iterdir()) == []

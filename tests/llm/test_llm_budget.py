"""llm.max_cost_usd: reservations of the worst case, settling, concurrent callers, a clean stop."""

from __future__ import annotations

import json
import threading

import pytest

from raysweep.llm.budget import Budget, cost_usd, longest_reply, smallest_reply, stop_line, worst_case_usd
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
    assert budget.stats() == {"cap_usd": 1.0, "spent_usd": 0.35, "reserved_usd": 0.0, "peak_reserved_usd": 0.75,
                              "refused": 1, "settled": 2, "sized_down": 0, "waits": 0, "longest_reply": 0, "stop": None}
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


def run_callers(caller, n: int, results: list[dict], price) -> tuple[list[dict], float]:
    """`caller(k)` in n threads at once; (the paid replies among `results`, what they cost)."""
    threads = [threading.Thread(target=caller, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    paid = [r for r in results if "response" in r]
    return paid, sum(cost_usd(price, r["usage"]) for r in paid)


def test_concurrent_callers_never_pass_the_cap(fake_openai):
    server = fake_openai(default=Reply(delay=0.02), rows_per_reply=2)
    worst = worst_case_usd(PRICE, make(server, None).estimate(MESSAGES) - 100, 100)
    budget = Budget(cap_usd=worst * 7.5)  # room for 7 worst cases; real calls cost less, so more fit
    results: list[dict] = []

    def caller(k):
        generator = make(server, budget)
        for i in range(10):
            results.append(generator.call(10 * k + i, MESSAGES, seed=i))

    paid, billed = run_callers(caller, 4, results, PRICE)
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


# --------------------------------------------------------------------------- sizing: go, sized down, wait, stop

RATE = 1e-3  # dollars per reply token in the sizing tests: a 100-token reply costs $0.1


def test_the_first_call_needs_its_whole_max_tokens_then_calls_are_sized_down_to_fit():
    budget = Budget(cap_usd=1.0)
    first = budget.size(0.05, RATE, 500)  # no reply seen: the worst case is all that is known
    assert first["max_tokens"] == 500 and budget.reserved_usd == pytest.approx(0.55)
    assert budget.size(0.05, RATE, 500) == {"wait": True}  # 0.45 left < 0.55: wait for the first to settle
    budget.settle(first["ticket"], 0.05 + 80 * RATE, 80)  # an 80-token reply: a useful one is 100 tokens
    whole = budget.size(0.05, RATE, 500)
    assert whole["max_tokens"] == 500  # 0.87 left: the whole worst case still fits
    down = budget.size(0.05, RATE, 500)
    assert down["max_tokens"] == 100 and budget.sized_down == 1  # 0.32 left: a useful reply, not all of it
    assert budget.size(0.05, RATE, 500)["max_tokens"] == 100  # so that the next caller gets one too
    assert budget.size(0.05, RATE, 500) == {"wait": True}  # 0.02 left now, 0.87 once they settle
    assert budget.reserved_usd + budget.spent_usd <= 1.0 + 1e-9


def test_a_call_stops_only_when_it_would_not_fit_with_nothing_in_flight():
    budget = Budget(cap_usd=1.0, spent_usd=0.8, longest_reply=100)  # resumed: the store's longest reply
    held = budget.size(0.02, RATE, 500)
    assert held["max_tokens"] == 125  # 0.2 left: sized down to a useful reply, 1.25 x 100
    assert budget.size(0.02, RATE, 500) == {"wait": True}  # 0.055 left: would fit once `held` settles
    budget.settle(held["ticket"], 0.12, 100)
    assert budget.size(0.02, RATE, 500) == {"stop": True}  # 0.08 left < 0.02 + 0.125, nothing in flight
    assert budget.stats()["stop"] == {"need_usd": 0.145, "reply_tokens": 125, "max_tokens": 500,
                                      "longest_reply": 100, "left_usd": 0.08}
    assert stop_line(budget.stats()) == (
        "stopped at llm.max_cost_usd ($1): $0.9200 spent, at most $0.1450 reserved at once by the calls in flight; "
        "the next call needs $0.1450 (its prompt and a 125-token reply: 1.25 x the longest reply so far, 100 tokens) "
        "and $0.0800 is left")


def test_a_cap_below_one_whole_call_stops_the_first_call_and_says_so():
    budget = Budget(cap_usd=0.3)
    assert budget.size(0.05, RATE, 500) == {"stop": True} and budget.reserved == {}
    assert stop_line(budget.stats()).endswith("the next call needs $0.5500 (its prompt and a 500-token reply: its "
                                              "whole max_tokens: no reply seen yet) and $0.3000 is left")
    assert smallest_reply(0, 500) == 500 and smallest_reply(100, 500) == 125 and smallest_reply(450, 500) == 500


def test_the_longest_reply_reads_only_usable_usage():
    records = [{"usage": {"completion_tokens": 40}}, {"usage": {"completion_tokens": "90"}}, {"usage": None},
               {"usage": [1]}, {}, {"usage": {"completion_tokens": 70.0}}]
    assert longest_reply(records) == 70 and longest_reply([]) == 0
    budget = Budget(cap_usd=1.0)
    budget.settle(budget.reserve(0.1), 0.01, "lots")  # a provider's odd usage is not a length
    assert budget.longest_reply == 0


def test_a_dead_callers_reservation_is_released_as_spent_so_that_waiting_calls_do_not_wait_forever():
    budget = Budget(cap_usd=1.0)
    held = budget.size(0.05, RATE, 500, owner="actor-a")  # then actor-a dies in its call
    assert budget.size(0.05, RATE, 500, owner="actor-b") == {"wait": True}
    assert budget.release("actor-a") == 1 and budget.reserved == {} and budget.spent_usd == pytest.approx(0.55)
    assert budget.size(0.05, RATE, 500, owner="actor-b") == {"stop": True}  # nothing in flight: final
    assert budget.release("actor-a") == 0 and held["ticket"] not in budget.owners


def test_no_cap_sends_every_call_whole():
    budget = Budget()
    assert budget.size(1e6, 1.0, 500)["max_tokens"] == 500 and budget.stop is None


class CountingBudget(Budget):
    """A plain Budget that remembers how many calls held a reservation at once."""

    most_at_once = 0

    def size(self, *args):
        grant = super().size(*args)
        self.most_at_once = max(self.most_at_once, len(self.reserved))
        return grant


def test_at_concurrency_8_the_cap_is_spent_to_90_percent_and_never_passed(fake_openai):
    # The case: $1.20 cap, max_tokens 4096, a worst case of ~$0.62 (half the cap) and
    # replies of ~$0.02. Reserving worst cases bought one call at concurrency 2.
    server = fake_openai(default=Reply(delay=0.02), rows_per_reply=5)
    price = PriceConfig(prompt=100.0, completion=150.0)
    budget = CountingBudget(cap_usd=1.2)
    ids = iter(range(1000))
    lock = threading.Lock()
    results: list[dict] = []

    def caller():
        generator = Generator(server.base_url, "fake-model", {"temperature": 1.0, "max_tokens": 4096}, None,
                              RateLimiter(0, 0), timeout=5.0, retries=0, retry_backoff=0.01, budget=budget,
                              price=price)
        while True:
            with lock:
                i = next(ids)
            result = generator.call(i, MESSAGES, seed=i)
            results.append(result)
            if result.get("budget"):
                return

    paid, billed = run_callers(lambda k: caller(), 8, results, price)
    assert len(paid) == len(server.served()) and budget.reserved == {}
    assert billed == pytest.approx(budget.spent_usd)
    assert 0.9 * 1.2 <= billed <= 1.2  # the cap is used, and never passed
    assert budget.most_at_once == 8 and budget.sized_down > 0  # every caller worked, near the cap sized down
    assert sum(r["usage"]["completion_tokens"] >= r["request"]["max_tokens"] for r in paid) == 0  # none cut short
    stop = budget.stats()["stop"]
    assert stop["need_usd"] > 1.2 - budget.spent_usd  # it stopped because the next call could not fit

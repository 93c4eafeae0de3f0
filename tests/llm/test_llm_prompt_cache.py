"""Prompt caching (issue 30 item 5): a fixed few-shot prefix per run, cached tokens priced and counted."""

from __future__ import annotations

import json

import pytest

from raysweep.llm.budget import Budget, cached_tokens, cost_usd, worst_case_usd
from raysweep.llm.calls import choose_endpoint
from raysweep.llm.client import Generator
from raysweep.llm.config import ConfigError, PriceConfig, load_llm_config
from raysweep.llm.estimate import estimate
from raysweep.llm.generate import GenerationError, generate, setup_for
from raysweep.llm.limiter import RateLimiter
from raysweep.llm.prompt import DEFAULT_TEMPLATE, SST5_CLASS_NAMES, build_label_messages, build_messages
from raysweep.llm.store import cost_usd as record_cost, totals

PRICE = PriceConfig(prompt=1000.0, completion=2000.0, cached_prompt=250.0, cache_min_tokens=0)


def prompt(cfg, examples, request_id, n=5):
    return build_messages(DEFAULT_TEMPLATE, n, examples, 3, cfg.seed, cfg.examples_call(request_id), SST5_CLASS_NAMES)


def test_a_fixed_run_shows_one_seeded_example_set_in_every_call(llm_cfg, examples):
    fixed, per_call = llm_cfg("http://x/v1"), llm_cfg("http://x/v1", few_shot="per_call")
    assert fixed.few_shot == "fixed"  # the default: every call shares its prefix
    assert all(prompt(fixed, examples, i) == prompt(fixed, examples, 0) for i in range(1, 10))
    reseeded = llm_cfg("http://x/v1", seed=1)
    assert prompt(reseeded, examples, 0) != prompt(fixed, examples, 0)  # the set is the seed's
    # per_call: the study's prompts, exactly those of stores made before few_shot existed
    assert len({json.dumps(prompt(per_call, examples, i)) for i in range(10)}) > 5
    assert prompt(per_call, examples, 7) == build_messages(DEFAULT_TEMPLATE, 5, examples, 3, 0, 7, SST5_CLASS_NAMES)
    # a labeling call: the same prefix for every call, its sentences last
    a = build_label_messages(["one ."], examples, 3, 0, fixed.examples_call(3), SST5_CLASS_NAMES)[0]["content"]
    b = build_label_messages(["two .", "three ."], examples, 3, 0, fixed.examples_call(4), SST5_CLASS_NAMES)[0]["content"]
    shared = a[: len(a) - len(a.partition('["one ."]')[2]) - len('["one ."]')]
    assert b.startswith(shared) and shared.rstrip().endswith("Sentences to label, as a JSON list:")


@pytest.mark.parametrize("data,message", [
    ({"few_shot": "sometimes"}, "llm.few_shot: 'sometimes' is not one of fixed, per_call"),
    ({"prices": {"m": {"prompt": 1.0, "cached_prompt": 2.0}}}, "llm.prices.m.cached_prompt: must be 0 or more and at most"),
    ({"prices": {"m": {"prompt": 1.0, "cached_prompt": -0.1}}}, "llm.prices.m.cached_prompt: must be 0 or more"),
    ({"prices": {"m": {"prompt": 1.0, "cache_min_tokens": -1}}}, "llm.prices.m.cache_min_tokens: must be 0 or more"),
])
def test_bad_settings_are_refused_naming_the_key(data, message):
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(").replace(".", r"\.")):
        load_llm_config(data)


def test_cached_tokens_are_billed_at_the_cached_price_and_never_under_counted():
    usage = {"prompt_tokens": 100, "completion_tokens": 10, "prompt_tokens_details": {"cached_tokens": 60}}
    assert cached_tokens(usage) == 60
    assert cost_usd(PRICE, usage) == pytest.approx((40 * 1000 + 60 * 250 + 10 * 2000) / 1e6)
    # No cached price in the table: the full prompt price (no discount the provider may not give).
    assert cost_usd(PriceConfig(1000.0, 2000.0), usage) == pytest.approx((100 * 1000 + 10 * 2000) / 1e6)
    # The worst case a budget reserves never counts on a cache hit.
    assert worst_case_usd(PRICE, 100, 10) == pytest.approx((100 * 1000 + 10 * 2000) / 1e6)
    # A batch's discount applies to the cached price too.
    assert PRICE.for_mode("batch").cached == 250.0 and PriceConfig(4.0, 8.0, 0.5, 2.0).for_mode("batch").cached == 1.0
    # A reply that says nothing or something odd: every prompt token at the full price.
    for odd in (None, {}, {"prompt_tokens": 5}, {"prompt_tokens": 5, "prompt_tokens_details": None},
                {"prompt_tokens": 5, "prompt_tokens_details": {"cached_tokens": "5"}},
                {"prompt_tokens": 5, "prompt_tokens_details": {"cached_tokens": True}},
                {"prompt_tokens": 5, "prompt_tokens_details": {"cached_tokens": -3}}):
        assert cached_tokens(odd) == 0
    assert cached_tokens({"prompt_tokens": 5, "prompt_tokens_details": {"cached_tokens": 50}}) == 5  # at most the prompt


def test_the_fake_server_reports_a_prefix_shared_with_an_earlier_call(fake_openai):
    server = fake_openai(cache_min_tokens=10)
    generator = Generator(server.base_url, "fake-model", {"temperature": 1.0, "max_tokens": 100}, None,
                          RateLimiter(0, 0), timeout=5.0, retries=0, retry_backoff=0.01)
    prefix = "x" * 200  # 50 fake tokens
    first = generator.call(0, [{"role": "user", "content": prefix + "first"}], seed=0)
    second = generator.call(1, [{"role": "user", "content": prefix + "second"}], seed=1)
    short = generator.call(2, [{"role": "user", "content": "x" * 20 + "y"}], seed=2)  # 5 tokens: below the minimum
    assert cached_tokens(first["usage"]) == 0 and cached_tokens(second["usage"]) == 50
    assert cached_tokens(short["usage"]) == 0


def test_a_fixed_runs_calls_settle_and_store_at_the_cached_price(fake_openai, llm_cfg, examples):
    """The accounting end to end without Ray: the calls a fixed run makes, against the fake server."""
    server = fake_openai()
    cfg = llm_cfg(server.base_url, prices={"fake-model": {"prompt": 1000.0, "completion": 2000.0,
                                                          "cached_prompt": 100.0}})
    budget = Budget(cap_usd=100.0)
    generator = Generator(server.base_url, "fake-model", {"temperature": 1.0, "max_tokens": 100}, None,
                          RateLimiter(0, 0), timeout=5.0, retries=0, retry_backoff=0.01, budget=budget,
                          price=cfg.price_for("fake-model"))
    records = [generator.call(i, prompt(cfg, examples, i), seed=i) for i in range(3)]
    prompt_tokens = records[0]["usage"]["prompt_tokens"]
    assert [cached_tokens(r["usage"]) for r in records] == [0, prompt_tokens, prompt_tokens]  # the whole prompt
    for r in records:
        r["cost_usd"] = record_cost(r["usage"], "fake-model", cfg.prices)
    assert records[1]["cost_usd"] == pytest.approx(
        (prompt_tokens * 100.0 + records[1]["usage"]["completion_tokens"] * 2000.0) / 1e6)
    assert budget.spent_usd == pytest.approx(sum(r["cost_usd"] for r in records))  # settled at what was billed
    assert totals(records)["cached_prompt_tokens"] == 2 * prompt_tokens


def test_the_estimate_counts_the_shared_prefix_at_the_cached_price_at_its_low_end_only(llm_cfg, examples):
    prices = {"fake-model": {"prompt": 1000.0, "completion": 2000.0, "cached_prompt": 100.0, "cache_min_tokens": 0}}
    full = {"fake-model": {"prompt": 1000.0, "completion": 2000.0}}
    cached = estimate(llm_cfg("http://127.0.0.1:9/v1", prices=prices), examples)
    plain = estimate(llm_cfg("http://127.0.0.1:9/v1", prices=full), examples)
    assert cached.cached_tokens_per_call == cached.shared_prefix_tokens == cached.prompt_tokens_per_call[0]
    first, *later = range(cached.calls[0])
    assert cached.cost_usd[0] == pytest.approx(plain.cost_usd[0] - len(later) * cached.cached_tokens_per_call * 900 / 1e6)
    assert cached.cost_usd[1] == plain.cost_usd[1] and cached.calls_within_budget == plain.calls_within_budget
    assert "prefix: the low end bills it at the cached price" in cached.lines()[-1]
    # A prefix below the provider's minimum is not cached; per-call examples share only the instructions.
    short = estimate(llm_cfg("http://127.0.0.1:9/v1", prices={"fake-model": {**prices["fake-model"],
                                                                               "cache_min_tokens": 1024}}), examples)
    assert short.cached_tokens_per_call == 0 and short.cost_usd == plain.cost_usd
    assert "below the 1,024 tokens fake-model's provider caches" in short.lines()[-1]
    study = estimate(llm_cfg("http://127.0.0.1:9/v1", prices=prices, few_shot="per_call"), examples)
    assert 0 < study.shared_prefix_tokens < cached.shared_prefix_tokens


def test_a_store_of_other_prompts_is_refused_saying_how_to_keep_it(fake_openai, llm_cfg, examples, val_texts, tmp_path):
    """A directory made before few_shot existed (per-call prompts) under the new default."""
    server = fake_openai()
    old = llm_cfg(server.base_url, few_shot="per_call")
    # the setup a run of the old prompts writes: only few_shot differs from the new default's
    setup = setup_for(old, choose_endpoint(old), DEFAULT_TEMPLATE, examples, SST5_CLASS_NAMES)
    (tmp_path / "responses.jsonl").write_text(json.dumps({"request_id": 0, "setup": setup}) + "\n")
    with pytest.raises(GenerationError, match=r"responses.jsonl: holds replies to prompts with few_shot=per_call, the "
                                              r"config says few_shot=fixed \(other prompts\); set llm.few_shot: per_call "
                                              r"to reuse them, or use another output directory \(its calls are paid again\)$"):
        generate(llm_cfg(server.base_url), examples, val_texts, tmp_path)
    assert server.arrivals == []


def test_the_embedded_servers_estimate_says_the_prefix_saves_time_not_dollars(llm_cfg, examples, monkeypatch):
    """llama.cpp reuses any shared prefix and bills nothing: no provider minimum applies to it."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    embedded = estimate(llm_cfg(None, api_key_env="OPENAI_API_KEY"), examples)
    assert embedded.endpoint == "embedded" and embedded.shared_prefix_tokens > 0
    assert "the embedded llama.cpp server evaluates it once and reuses it" in embedded.lines()[-1]
    assert not any("provider caches" in line for line in embedded.lines())

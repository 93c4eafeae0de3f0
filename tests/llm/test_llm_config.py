"""The llm: section: defaults, one-line errors with key paths, templates, the call budget."""

from __future__ import annotations

import pytest

from raysweep.config import ConfigError
from raysweep.llm.config import LLMConfig, PriceConfig, load_llm_config, load_template


def test_defaults_follow_the_study():
    cfg = load_llm_config(None)
    assert (cfg.samples_per_call, cfg.examples_per_class, cfg.base_url, cfg.api_key_env) == (100, 3, None, None)
    assert cfg == LLMConfig()
    assert cfg.request_budget() == 20  # twice the 10 calls that 1000 rows need at 100 per call


@pytest.mark.parametrize("data,message", [
    ({"limits": {"rpm": 5}}, "llm.limits.rpm: unknown key (known keys here: burst_seconds, headroom, jitter_seconds, requests_per_minute, tokens_per_minute)"),
    ({"n_rows": "many"}, "llm.n_rows: expected an integer, got 'many'"),
    ({"concurrency": 0}, "llm.concurrency: must be at least 1"),
    ({"limits": {"headroom": 1.5}}, "llm.limits.headroom: must be in (0, 1]"),
    ({"limits": {"burst_seconds": 0.5}}, "llm.limits.jitter_seconds: must be 0 or more and below burst_seconds"),
    ({"base_url": "localhost:8000"}, "llm.base_url: 'localhost:8000' is not an http(s) URL"),
    ({"api_key_env": "sk-proj-abc123"}, "llm.api_key_env: is not an environment variable name"),
    ({"prices": {"m": {"prompt": -1}}}, "llm.prices.m.prompt: must be 0 or more"),
    ({"embedded": {"max_tokens": 4096}}, "llm.embedded.max_tokens: must be at least 1 and below n_ctx"),
    ({"template": "Write some sentences."}, "llm.template: 'Write some sentences.' has no $n, so it names a template file"),
    ({"template": "Write $n sentences."}, "llm.template: the template has no $examples placeholder"),
    ({"mode": "offline"}, "llm.mode: 'offline' is not one of online, batch"),
    ({"max_cost_usd": 0}, "llm.max_cost_usd: must be positive (or null: no cap)"),
    ({"max_cost_usd": "ten dollars"}, "llm.max_cost_usd: expected a number"),
    ({"prices": {"m": {"batch_discount": 1}}}, "llm.prices.m.batch_discount: must be in [0, 1)"),
    ({"batch": {"poll_interval": 0}}, "llm.batch.poll_interval: must be positive"),
])
def test_errors_are_one_line_and_name_the_key(data, message):
    with pytest.raises(ConfigError) as info:
        load_llm_config(data)
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_a_template_inline_or_from_a_file(tmp_path):
    inline = "Examples: $examples\nLabels: $labels\nNow write $n more as JSON."
    assert load_llm_config({"template": inline}).template == inline
    path = tmp_path / "prompt.txt"
    path.write_text(inline)
    assert load_template(str(path)) == inline
    load_llm_config({"template": str(path)})


def test_a_price_table_replaces_the_default_one():
    cfg = load_llm_config({"model": "my-model", "prices": {"my-model": {"prompt": 1, "completion": 3}}})
    assert cfg.prices == {"my-model": PriceConfig(prompt=1.0, completion=3.0)}


def test_the_call_budget():
    assert load_llm_config({"n_rows": 250, "samples_per_call": 100}).request_budget() == 6
    assert load_llm_config({"n_rows": 250, "max_requests": 4}).request_budget() == 4
    assert load_llm_config({"n_rows": 250}).request_budget(samples_per_call=20) == 26


def test_the_embedded_server_gets_its_own_call_timeout(monkeypatch):
    # llama.cpp finishes a call its client abandoned, so the hosted timeout would only queue retries.
    from raysweep.llm.generate import choose_endpoint

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    cfg = load_llm_config({"timeout": 30, "embedded": {"timeout": 900}})
    assert choose_endpoint(cfg).kind == "embedded" and choose_endpoint(cfg).timeout == 900
    hosted = load_llm_config({"timeout": 30, "base_url": "http://127.0.0.1:9/v1", "api_key_env": "none"})
    assert choose_endpoint(hosted).timeout == 30
    with pytest.raises(ConfigError, match=r"llm\.embedded\.timeout: must be positive"):
        load_llm_config({"embedded": {"timeout": 0}})

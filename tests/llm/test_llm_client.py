"""One call through the real `openai` client against the fake server: retries, pauses, errors."""

from __future__ import annotations

import time

import pytest

from raysweep.llm.client import Generator
from raysweep.llm.fake_server import Reply
from raysweep.llm.limiter import RateLimiter
from raysweep.llm.parse import parse_reply
from raysweep.llm.prompt import SST5_CLASS_NAMES

MESSAGES = [{"role": "user", "content": "Generate 5 samples as a JSON list of [sentence, label] pairs."}]


def make(server_or_url, limiter=None, retries=2, timeout=5.0, **params):
    url = server_or_url if isinstance(server_or_url, str) else server_or_url.base_url
    limiter = limiter or RateLimiter(0, 0)
    return Generator(url, "fake-model", {"temperature": 1.0, "max_tokens": 200, **params}, None,
                     limiter, timeout=timeout, retries=retries, retry_backoff=0.01)


def test_a_call_returns_the_raw_reply_with_usage_and_settles_the_limiter(fake_openai):
    server = fake_openai(rows_per_reply=5)
    limiter = RateLimiter(0, 60_000)
    record = make(server, limiter).call(3, MESSAGES, seed=42)
    assert record["request_id"] == 3 and record["attempts"] == 1 and record["retried"] == {}
    assert record["request"] == {"model": "fake-model", "messages": MESSAGES, "seed": 42, "temperature": 1.0, "max_tokens": 200}
    assert record["usage"]["total_tokens"] == server.served()[0]["tokens"] > 0
    assert len(parse_reply(record["response"]["choices"][0]["message"]["content"], SST5_CLASS_NAMES).rows) == 5
    assert limiter.tokens_used == record["usage"]["total_tokens"]
    assert server.calls_served() == ["3"]


def test_the_estimate_is_an_upper_bound_of_what_the_provider_counts(fake_openai):
    server = fake_openai(rows_per_reply=5)
    generator = make(server, max_tokens=100)
    estimate = generator.estimate(MESSAGES)
    record = generator.call(0, MESSAGES, seed=0)
    assert record["usage"]["prompt_tokens"] + 100 <= estimate


def test_a_429_with_retry_after_pauses_the_whole_pool_then_retries(fake_openai):
    server = fake_openai(script=[Reply(status=429, headers={"retry-after": "0.4"})])
    limiter = RateLimiter(0, 0)
    record = make(server, limiter).call(0, MESSAGES, seed=0)
    assert record["attempts"] == 2 and record["retried"] == {"429": 1}
    assert limiter.pauses == 1
    first, second = server.arrivals
    assert second["t"] - first["t"] >= 0.4


def test_retry_after_ms_is_honoured_first(fake_openai):
    server = fake_openai(script=[Reply(status=429, headers={"retry-after-ms": "300", "retry-after": "30"})])
    start = time.monotonic()
    record = make(server).call(0, MESSAGES, seed=0)
    assert record["attempts"] == 2 and 0.3 <= time.monotonic() - start < 5


def test_a_500_is_retried(fake_openai):
    server = fake_openai(script=[Reply(status=500), Reply(status=503)])
    record = make(server).call(0, MESSAGES, seed=0)
    assert record["attempts"] == 3 and record["retried"] == {"500": 1, "503": 1}


def test_a_500_that_never_ends_gives_up_after_the_retries(fake_openai):
    server = fake_openai(default=Reply(status=500))
    result = make(server, retries=2).call(5, MESSAGES, seed=0)
    assert result == {"request_id": 5, "fatal": False, "retried": {"500": 3},
                      "error": f"gave up after 3 attempts; last: HTTP 500 from {server.base_url}: scripted HTTP 500"}
    assert len(server.arrivals) == 3


@pytest.mark.parametrize("reply,message", [
    (Reply(status=401, body='{"error": {"message": "Incorrect API key provided", "code": "invalid_api_key"}}'),
     "HTTP 401 from {url}: Incorrect API key provided"),
    (Reply(status=404, body='{"error": {"message": "The model x does not exist"}}'),
     "HTTP 404 from {url}: The model x does not exist"),
    (Reply(status=429, body='{"error": {"message": "You exceeded your current quota", "code": "insufficient_quota"}}'),
     "HTTP 429 from {url}: out of quota (You exceeded your current quota)"),
])
def test_errors_that_retrying_cannot_fix_are_fatal_after_one_attempt(fake_openai, reply, message):
    server = fake_openai(default=reply)
    result = make(server).call(0, MESSAGES, seed=0)
    assert result == {"request_id": 0, "fatal": True, "error": message.format(url=server.base_url)}
    assert len(server.arrivals) == 1


def test_a_reply_slower_than_the_timeout_is_retried_and_counted_as_charged(fake_openai):
    server = fake_openai(script=[Reply(delay=2.0)])
    limiter = RateLimiter(0, 60_000)
    generator = make(server, limiter, timeout=0.5)
    record = generator.call(0, MESSAGES, seed=0)
    assert record["attempts"] == 2 and record["retried"] == {"timeout": 1}
    # The provider may have counted the timed-out call: its whole estimate stays charged.
    assert limiter.tokens_used == generator.estimate(MESSAGES) + record["usage"]["total_tokens"]


def test_a_server_that_is_not_there(fake_openai):
    server = fake_openai()
    url = server.base_url
    server.stop()
    result = make(url, retries=1).call(0, MESSAGES, seed=0)
    assert result["fatal"] is False and result["retried"] == {"connection": 2}
    assert result["error"].startswith(f"gave up after 2 attempts; last: connection talking to {url}: Connection error")


def test_a_reply_that_is_not_json_is_kept_raw(fake_openai):
    server = fake_openai(script=[Reply(body="<html>502 Bad Gateway</html>")])
    record = make(server).call(0, MESSAGES, seed=0)
    assert record["response"] == {"raw_text": "<html>502 Bad Gateway</html>"}
    assert record["usage"] is None


def test_a_truncated_reply_is_returned_for_parsing(fake_openai):
    server = fake_openai(script=[Reply(truncate_at=0.7)], rows_per_reply=10)
    record = make(server).call(0, MESSAGES, seed=0)
    choice = record["response"]["choices"][0]
    assert choice["finish_reason"] == "length"
    reply = parse_reply(choice["message"]["content"], SST5_CLASS_NAMES)
    assert 5 <= len(reply.rows) < 10 and reply.repairs["truncated"] == 1


def test_calls_share_the_request_limit(fake_openai):
    server = fake_openai(requests_per_minute=120, burst_seconds=1)
    # Headroom 0.8, not 0.97: at 0.97 the grants are 0.515 s apart against the server's 2 per
    # second, 30 ms of slack, and a first call slowed by its new connection on a loaded machine
    # arrived late enough to put three calls in one second.
    limiter = RateLimiter(120, 0, burst_seconds=1, headroom=0.8)
    generator = make(server, limiter)
    for i in range(5):
        generator.call(i, MESSAGES, seed=i)
    times = [a["t"] for a in server.arrivals]
    assert server.violations == {"requests": 0, "tokens": 0}
    assert times[-1] - times[0] >= 3 * 60 / (120 * 0.8) - 0.01  # 1 at once, then 1.6 per second


# ---------------------------------------------------------------- hostile servers (issue 32)


def test_a_trickled_reply_ends_at_the_timeout_not_when_the_last_byte_comes(fake_openai):
    """A byte every 0.2 s keeps httpx's per-read timeout happy for ever; the whole reply is bounded."""
    server = fake_openai(script=[Reply(trickle=0.2)] * 2)
    start = time.monotonic()
    record = make(server, retries=0, timeout=1.0).call(0, MESSAGES, seed=0)
    assert time.monotonic() - start < 4
    assert record["retried"] == {"timeout": 1}
    assert "still arriving after 1 s (llm.timeout): the server sends it too slowly" in record["error"]


@pytest.mark.parametrize("status", [429, 503])
def test_a_retry_after_beyond_the_cap_stops_at_once_naming_it(fake_openai, status):
    server = fake_openai(script=[Reply(status=status, headers={"retry-after": "100000"})])
    limiter = RateLimiter(0, 0)
    start = time.monotonic()
    record = make(server, limiter).call(0, MESSAGES, seed=0)
    assert time.monotonic() - start < 3 and record["fatal"] and limiter.pauses == 0
    assert f"HTTP {status}" in record["error"] and "asks to wait 100,000 s" in record["error"]


def test_no_reply_for_the_no_progress_deadline_stops_the_generator(fake_openai, monkeypatch):
    from raysweep.llm import client

    monkeypatch.setattr(client, "NO_PROGRESS_MIN_S", 0.5)
    server = fake_openai(script=[Reply(delay=2.0)] * 5)
    generator = make(server, retries=5, timeout=0.3)
    start = time.monotonic()
    record = generator.call(0, MESSAGES, seed=0)
    assert record["fatal"] and "has returned a reply for" in record["error"] and time.monotonic() - start < 4

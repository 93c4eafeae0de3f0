"""One call to the LLM, with its retries, under the shared rate limiter: the generator actor.

Kept apart from generate.py so that a generator actor imports only what a call needs
(openai, ray, the limiter), not pandas and scikit-learn: on a busy 2-core machine every
import is seconds of actor start-up.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections import Counter
from datetime import datetime, timezone

import httpx2
import openai
import ray

from raysweep.llm.budget import call as budget_call, cost_usd, worst_case_usd
from raysweep.llm.config import CALL_HEADER, ApiKeyError, KeyRoute
from raysweep.llm.limiter import call as limiter_call, wait_for_slot

MAX_BACKOFF = 60.0  # seconds: the longest wait between retries when the server gives no Retry-After
# The longest Retry-After honoured. A server asking for more (a 429 or 503 with `Retry-After:
# 100000`) stops the run with a line saying so, paid replies kept, rather than wait for a day.
MAX_RETRY_AFTER = 120.0
# No call of this generator has finished for this many `llm.timeout`s (at least NO_PROGRESS_MIN_S):
# the server takes calls and never answers them; stop rather than retry for ever.
NO_PROGRESS_TIMEOUTS = 3
NO_PROGRESS_MIN_S = 60.0
# A call the budget holds (the calls in flight reserve what it needs) asks again after this
# long, doubling up to the max: a reply takes a second or more, a budget call microseconds.
BUDGET_POLL_S = 0.01
BUDGET_POLL_MAX_S = 0.5


class _WholeReplyDeadline(httpx2.HTTPTransport):
    """httpx's read timeout is per read: a server that trickles a reply a byte every 5 s never
    trips a 20 s one, and the call ran until killed. This bounds the whole reply to `seconds`
    (llm.timeout) from the request; past it the next byte ends the call as a timeout."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds

    def handle_request(self, request):
        deadline = time.monotonic() + self.seconds
        response = super().handle_request(request)
        response.stream = _Until(response.stream, deadline, request, self.seconds)
        return response


class _Until(httpx2.SyncByteStream):
    def __init__(self, inner, deadline: float, request, seconds: float):
        self.inner, self.deadline, self.request, self.seconds = inner, deadline, request, seconds

    def __iter__(self):
        for chunk in self.inner:
            if time.monotonic() > self.deadline:
                raise httpx2.ReadTimeout(f"the reply was still arriving after {self.seconds:g} s (llm.timeout): "
                                         "the server sends it too slowly", request=self.request)
            yield chunk

    def close(self) -> None:
        self.inner.close()


def retry_after_seconds(headers) -> float | None:
    """The server's Retry-After (retry-after-ms first, as OpenAI sends it), in seconds."""
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name) if headers is not None else None
        if value is None:
            continue
        try:
            seconds = float(value) / scale
        except ValueError:
            continue  # an HTTP date: rare for 429s; fall back to our own backoff
        if math.isfinite(seconds) and seconds >= 0:
            return seconds
    return None


def error_message(exc: openai.APIStatusError) -> str:
    """The provider's own words: `error.message` of the body, without the client's "Error code" prefix."""
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error") if isinstance(body.get("error"), dict) else body
        if isinstance(inner.get("message"), str):
            return one_line(inner["message"])
    return one_line(exc.message)


def one_line(text: object, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def estimate_tokens(messages: list[dict], max_tokens: int, tokens_per_char: float = 1 / 3) -> int:
    """An upper bound of a call's tokens: the prompt at `tokens_per_char` (1/3 over-counts
    English, ~4 characters a token), 8 per message for the chat format, and all of `max_tokens`."""
    chars = sum(len(m["content"]) for m in messages)
    return math.ceil(chars * tokens_per_char) + 8 * len(messages) + max_tokens


class Generator:
    """Makes one call at a time, each attempt admitted by the shared limiter.

    The openai client's own retries are off: a retry it made by itself would skip the limiter,
    and a Retry-After it honoured would hold back only this actor, not the pool.

    With a `budget` (llm/budget.py; a plain Budget or a BudgetActor shared by the pool) and the
    model's `price`, each attempt first reserves its worst-case cost; a refusal ends the call
    with {"request_id", "error", "budget": True} before anything is sent.
    """

    def __init__(self, base_url: str, model: str, params: dict, key: KeyRoute | None, limiter,
                 timeout: float, retries: int, retry_backoff: float, budget=None, price=None):
        # The key is read here, where the calls are made, and never passed in: Ray writes actor
        # arguments and runtime environments to its records. A key that cannot be read makes
        # every call fail at once with one line (a constructor error would read as actor deaths).
        self.key_error: str | None = None
        api_key = None
        if key is not None:
            try:
                api_key = key.read()
            except ApiKeyError as exc:
                self.key_error = str(exc)
            if api_key is None and self.key_error is None:
                self.key_error = (f"no key in {key} on {os.uname().nodename}, where a generator actor runs; on a "
                                  "cluster, give every node a key file (llm.api_key_file, docs/cluster.md)")
        # A server without keys (the embedded one, most local ones) ignores it, but the client needs
        # one; given nothing, it would read $OPENAI_API_KEY itself and send it to any base_url.
        self.client = openai.OpenAI(base_url=base_url, api_key=api_key or "no-key", timeout=timeout, max_retries=0,
                                    http_client=openai.DefaultHttpxClient(transport=_WholeReplyDeadline(timeout)))
        self.no_progress_s = max(NO_PROGRESS_MIN_S, NO_PROGRESS_TIMEOUTS * timeout)
        self.last_progress = time.monotonic()  # the start, then each call that returned a reply
        self.base_url = base_url
        self.model = model
        self.params = params  # temperature, max_tokens, optionally response_format
        self.limiter = limiter
        self.budget, self.price = budget, price
        # This actor's id (None in a plain process): a pool whose actor dies releases its reservations.
        self.owner = ray.get_runtime_context().get_actor_id() if ray.is_initialized() else None
        self.retries = retries
        self.retry_backoff = retry_backoff
        # Prompt tokens per character: 1/3 over-counts English (~4 chars a token) on purpose,
        # and grows if a reply's usage shows this text needs more, so an estimate stays an upper bound.
        self.tokens_per_char = 1 / 3

    def estimate(self, messages: list[dict]) -> int:
        return estimate_tokens(messages, self.params["max_tokens"], self.tokens_per_char)

    def _backoff(self, attempt: int) -> float:
        return min(self.retry_backoff * 2 ** (attempt - 1), MAX_BACKOFF) * random.uniform(0.75, 1.0)

    def _reserve(self, messages: list[dict], max_tokens: int) -> tuple | None:
        """(ticket, worst case, max_tokens to send) for one attempt; (None, 0, max_tokens) without a
        budget; None when the budget says stop. While the budget says wait (the calls in flight
        hold what this one needs, llm/budget.py), it asks again as they settle."""
        if self.budget is None:
            return None, 0.0, max_tokens
        prompt_usd = worst_case_usd(self.price, estimate_tokens(messages, 0, self.tokens_per_char), 0)
        per_token = self.price.completion / 1e6
        pause = BUDGET_POLL_S
        while True:
            grant = budget_call(self.budget, "size", prompt_usd, per_token, max_tokens, self.owner)
            if "ticket" in grant:
                return grant["ticket"], prompt_usd + grant["max_tokens"] * per_token, grant["max_tokens"]
            if grant.get("stop"):
                return None
            time.sleep(pause)  # a call in flight settles in about a reply's time: poll, backing off
            pause = min(2 * pause, BUDGET_POLL_MAX_S)

    def _settle(self, money: tuple, usage) -> None:
        """Settle a reservation: `usage` as reported, 0.0 for a refused call, None for 'maybe billed'."""
        ticket, worst, _ = money
        if ticket is None:
            return
        used = worst if usage is None else usage if isinstance(usage, float) else cost_usd(self.price, usage)
        reply = usage.get("completion_tokens") if isinstance(usage, dict) else None
        budget_call(self.budget, "settle", ticket, used, reply)

    def call(self, request_id: int, messages: list[dict], seed: int, params: dict | None = None) -> dict:
        """A store record, or {"request_id", "error", "fatal"} after a fatal error or the last retry.

        `params` override the actor's for this call only: a labeling call's response_format
        asks for exactly as many labels as that call has sentences (llm/annotate.py)."""
        if self.key_error:
            return {"request_id": request_id, "fatal": True, "error": self.key_error}
        request = {"model": self.model, "messages": messages, "seed": seed, **self.params, **(params or {})}
        retried: Counter = Counter()
        waited = 0.0
        asked = request["max_tokens"]
        for attempt in range(1, self.retries + 2):
            money = self._reserve(messages, asked)
            if money is None:
                return {"request_id": request_id, "fatal": False, "budget": True, "retried": dict(retried),
                        "error": "llm.max_cost_usd: not even a useful reply fits with nothing in flight"}
            request["max_tokens"] = money[2]  # sized down when only that fits under the cap
            estimate = estimate_tokens(messages, money[2], self.tokens_per_char)
            slept, ticket = wait_for_slot(self.limiter, estimate)
            waited += slept
            start = time.monotonic()
            try:
                raw = self.client.chat.completions.with_raw_response.create(
                    **request, extra_headers={CALL_HEADER: str(request_id)})
            except openai.APIStatusError as exc:
                limiter_call(self.limiter, "settle", ticket, estimate, 0)  # refused calls use no tokens
                self._settle(money, 0.0)  # nor are they billed
                status, where = exc.status_code, f"HTTP {exc.status_code} from {self.base_url}"
                message = error_message(exc)
                if status == 429 and exc.code == "insufficient_quota":
                    return {"request_id": request_id, "fatal": True, "error": f"{where}: out of quota ({message})"}
                if not (status in (408, 409, 429) or status >= 500):
                    return {"request_id": request_id, "fatal": True, "error": f"{where}: {message}"}
                retried[str(status)] += 1
                last_error = f"{where}: {message}"
                pause = retry_after_seconds(exc.response.headers)
                if pause is not None and pause > MAX_RETRY_AFTER:
                    return {"request_id": request_id, "fatal": True, "retried": dict(retried),
                            "error": f"{where}: the server asks to wait {pause:,.0f} s before retrying (Retry-After), "
                                     f"more than the {MAX_RETRY_AFTER:.0f} s raysweep waits; stopped ({message})"}
                if status == 429:
                    # The provider's bucket is empty for everyone: hold the whole pool.
                    limiter_call(self.limiter, "pause", pause if pause is not None else self._backoff(attempt))
                elif attempt <= self.retries:
                    time.sleep(pause if pause is not None else self._backoff(attempt))
                continue
            except (openai.APITimeoutError, openai.APIConnectionError) as exc:
                # The provider may have counted (and billed) it: keep the whole estimate charged.
                limiter_call(self.limiter, "settle", ticket, estimate, estimate)
                self._settle(money, None)  # billed or not, we cannot know: keep the worst case
                kind = "timeout" if isinstance(exc, openai.APITimeoutError) else "connection"
                retried[kind] += 1
                cause = exc.__cause__ if isinstance(exc.__cause__, httpx2.ReadTimeout) else exc
                last_error = f"{kind} talking to {self.base_url}: {one_line(cause)}"
                idle = time.monotonic() - self.last_progress
                if idle > self.no_progress_s:
                    return {"request_id": request_id, "fatal": True, "retried": dict(retried),
                            "error": f"no call to {self.base_url} has returned a reply for {idle:.0f} s "
                                     f"(more than {self.no_progress_s:.0f} s: {NO_PROGRESS_TIMEOUTS} x llm.timeout); "
                                     f"stopped; last: {last_error}"}
                if attempt <= self.retries:
                    time.sleep(self._backoff(attempt))
                continue
            return self._paid(request_id, request, raw, messages, estimate, ticket, money,
                              time.monotonic() - start, attempt, retried, waited)
        return {"request_id": request_id, "fatal": False, "retried": dict(retried),
                "error": f"gave up after {self.retries + 1} attempts; last: {last_error}"}

    def _paid(self, request_id: int, request: dict, raw, messages: list[dict], estimate: int, ticket, money,
              latency: float, attempt: int, retried: Counter, waited: float) -> dict:
        """The store record of a call that got a reply: settle what it used (tokens, dollars) and
        keep the reply as it came, parsed or not: it is paid for either way."""
        self.last_progress = time.monotonic()
        try:
            body = json.loads(raw.text)
        except json.JSONDecodeError:
            body = {"raw_text": raw.text}  # paid for all the same: keep it as it came
        usage = body.get("usage") if isinstance(body, dict) else None
        used = (usage or {}).get("total_tokens", estimate)
        limiter_call(self.limiter, "settle", ticket, estimate, used)
        self._settle(money, usage)
        prompt_tokens = (usage or {}).get("prompt_tokens")
        chars = sum(len(m["content"]) for m in messages)
        if prompt_tokens and chars:
            self.tokens_per_char = max(self.tokens_per_char, 1.1 * prompt_tokens / chars)
        return {
            "request_id": request_id,
            "request": request,
            "response": body,
            "usage": usage,
            "ratelimit_headers": {k: v for k, v in raw.headers.items() if k.lower().startswith("x-ratelimit")},
            "latency_s": round(latency, 3),
            "attempts": attempt,
            "retried": dict(retried),
            "waited_s": round(waited, 3),
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }


class LLMGenerator(Generator):
    """Generator as an actor: the dashboard lists an actor by its class's name, and `Generator`
    alone does not say it calls an LLM."""


# IO-bound: an actor waiting on HTTP must not hold a core that a trial could use.
GeneratorActor = ray.remote(num_cpus=0)(LLMGenerator)

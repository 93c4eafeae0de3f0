"""What a generation will cost, worked out before anything is called: `raysweep check` and
`raysweep generate --dry-run` print it.

    estimate(cfg, examples, class_names, stored=[]) -> Estimate

Everything comes from the config and the prompts themselves: the prompts of the calls are
built exactly as a run builds them, so their size is measured, not guessed. What cannot be
known before the replies is a range:

- calls: at least the calls n_rows needs if every sample is kept (n_rows / samples_per_call),
  at most the call cap (llm.max_requests, by default twice that);
- prompt tokens: between 1 token per 4 characters (English text) and the client's own upper
  bound (1 per 3, plus the chat format; client.estimate_tokens);
- completion tokens: between `samples_per_call` sentences at TOKENS_PER_SAMPLE each and the
  whole `max_tokens` of every call (the worst case: what the first call reserves);
- cached prompt tokens: the prefix the prompts share (all of a `few_shot: fixed` generation
  prompt; the instructions alone with `per_call`), when at least the price's `cache_min_tokens`;
  the low end counts it at the cached price on every call after the first, the high end never
  (a cache hit is likely, not sure: the budget reserves the full price too);
- dollars: those tokens at the model's price in the config's mode (a batch's discount applied).

Calls already in the directory's response store are not asked again, so they are taken off,
and their cost is shown as spent.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass

import pandas as pd

from raysweep.llm.budget import longest_reply, smallest_reply
from raysweep.llm.client import estimate_tokens
from raysweep.llm.config import LLMConfig, endpoint_host
from raysweep.llm.prompt import DEFAULT_TEMPLATE, SST5_CLASS_NAMES, build_messages
from raysweep.llm.config import load_template

# A short SST-like sentence and its label as a JSON pair: ~33 tokens ("100 SST-like sentences as
# JSON pairs take ~3,300 tokens", llm/config.py's max_tokens). The low end of a reply.
TOKENS_PER_SAMPLE = 33
# Prompts measured per run: they differ only in their examples, so a sample gives their size.
PROMPTS_MEASURED = 50


@dataclass
class Estimate:
    endpoint: str  # api, base_url or embedded
    host: str  # where the calls would go
    model: str
    mode: str
    samples_per_call: int
    max_tokens: int
    stored_calls: int
    spent_usd: float
    calls: tuple[int, int]  # (fewest, most) calls still to make
    prompt_tokens_per_call: tuple[int, int]
    shared_prefix_tokens: int  # the prompts' common prefix, which a provider may serve from its cache
    cached_tokens_per_call: int  # of it, what the low end bills at the cached price (0: below the cache minimum)
    completion_tokens_per_call: tuple[int, int]
    tokens: tuple[int, int]  # prompt + completion over the calls still to make
    cost_usd: tuple[float, float] | None  # None: the model has no price
    max_cost_usd: float | None
    calls_within_budget: int | None  # calls the cap still pays for at their reservation
    # What one call reserves (budget.py): its prompt and its whole max_tokens before any reply is
    # stored, else a reply of 1.25 x the longest stored one, which is what calls near the cap get.
    reserve_usd: float | None = None
    reserve_reply_tokens: int | None = None
    cache_min_tokens: int = 0  # the price's: the shortest prefix the provider caches

    def to_json(self) -> dict:
        return asdict(self)

    def lines(self) -> list[str]:
        e = self
        out = [f"llm: {e.model} at {e.host} ({e.endpoint}, {e.mode} mode), {e.samples_per_call} samples a call, "
               f"max_tokens {e.max_tokens}" + (f"; {e.stored_calls} calls already stored (${e.spent_usd:.4f})"
                                                if e.stored_calls else "")]
        out.append(f"llm: expect {_range(e.calls)} calls, {_range(e.tokens)} tokens "
                   f"(prompt {_range(e.prompt_tokens_per_call)}, reply {_range(e.completion_tokens_per_call)} a call)")
        if e.cost_usd is None:
            out.append(f"llm: cost unknown: {e.model} has no price in llm.prices")
        else:
            line = f"llm: expect ${e.cost_usd[0]:.4f} to ${e.cost_usd[1]:.4f} at {e.model}'s {e.mode} price"
            if e.max_cost_usd is not None:
                what = ("its whole max_tokens" if e.reserve_reply_tokens == e.max_tokens
                        else f"a {e.reserve_reply_tokens:,}-token reply, 1.25 x the longest stored")
                line += (f"; llm.max_cost_usd ${e.max_cost_usd:g} pays for {e.calls_within_budget} more calls "
                         f"at ${e.reserve_usd:.4f} reserved each (its prompt and {what})")
            out.append(line)
        if e.endpoint == "embedded" and e.shared_prefix_tokens:
            # llama.cpp keeps the last prompt's KV cache and reuses any shared prefix: no minimum
            # and no bill, so what the prefix saves here is time (docs/measurements.md, prompt caching).
            out.append(f"llm: the prompts share a ~{e.shared_prefix_tokens:,}-token prefix: the embedded llama.cpp "
                       "server evaluates it once and reuses it (faster calls; it bills nothing)")
        elif e.cached_tokens_per_call:
            out.append(f"llm: the prompts share a ~{e.shared_prefix_tokens:,}-token prefix: the low end bills it at the "
                       "cached price after the first call, the high end (and the budget) at the full price")
        elif e.shared_prefix_tokens and e.cost_usd is not None:
            out.append(f"llm: the prompts share a ~{e.shared_prefix_tokens:,}-token prefix, below the "
                       f"{e.cache_min_tokens:,} tokens {e.model}'s provider caches: no cached price counted")
        return out


def _range(pair) -> str:
    low, high = pair
    return f"{low:,}" if low == high else f"{low:,}-{high:,}"


def estimate(cfg: LLMConfig, examples: pd.DataFrame, class_names=SST5_CLASS_NAMES,
             stored: list[dict] | None = None) -> Estimate:
    """The calls, tokens and dollars generation would still spend, calling nothing.

    `stored`: the records of the directory's response store (calls a run would not make again)."""
    from raysweep.llm.generate import choose_endpoint  # the same decision a run makes
    from raysweep.llm.store import totals

    endpoint = choose_endpoint(cfg)
    stored = stored or []
    spent = totals(stored)["cost_usd"]
    per_call, max_tokens = endpoint.samples_per_call, endpoint.max_tokens
    done = {r["request_id"] for r in stored}
    most = max(0, cfg.request_budget(per_call) - len(done))
    fewest = min(most, max(0, math.ceil(cfg.n_rows / per_call) - len(done)))
    template = load_template(cfg.template) if cfg.template else DEFAULT_TEMPLATE
    ids = [i for i in range(most + len(done)) if i not in done][:PROMPTS_MEASURED]

    def prompt_of(i: int) -> list[dict]:
        return build_messages(template, per_call, examples, cfg.examples_per_class, cfg.seed, cfg.examples_call(i),
                              class_names)

    prompts = [prompt_of(i) for i in ids] or [prompt_of(0)]
    chars = [sum(len(m["content"]) for m in p) for p in prompts]
    prompt_low = math.floor(min(chars) / 4)
    prompt_high = max(estimate_tokens(p, 0) for p in prompts)
    # Two calls' prompts show what every call shares (a fixed run: all of it), at ~4 chars a token.
    shared = math.floor(len(os.path.commonprefix([prompt_of(0)[0]["content"], prompt_of(1)[0]["content"]])) / 4)
    reply_low, reply_high = min(max_tokens, TOKENS_PER_SAMPLE * per_call), max_tokens
    tokens = (fewest * (prompt_low + reply_low), most * (prompt_high + reply_high))
    price = cfg.price_for(endpoint.model)
    cost = within = reserve = reply = None
    cached = 0
    if price is not None:
        cached = min(shared, prompt_low) if shared >= max(1, price.cache_min_tokens) else 0

        def usd(calls, prompt, reply, hits=0):
            return (calls * (prompt * price.prompt + reply * price.completion)
                    - hits * cached * (price.prompt - price.cached)) / 1e6

        # The low end: the first call of a run fills the cache, every later one hits it.
        cost = (round(usd(fewest, prompt_low, reply_low, max(0, fewest - 1)), 6),
                round(usd(most, prompt_high, reply_high), 6))
        if cfg.max_cost_usd is not None:
            reply = smallest_reply(longest_reply(stored), max_tokens)
            reserve = round(usd(1, prompt_high, reply), 6)
            room = max(0.0, cfg.max_cost_usd - spent)
            within = most if reserve == 0 else min(most, int(room // reserve))
    return Estimate(endpoint.kind, endpoint_host(endpoint.base_url) if endpoint.base_url else "127.0.0.1 (started then)",
                    endpoint.model, cfg.mode, per_call, max_tokens, len(done), spent, (fewest, most),
                    (prompt_low, prompt_high), shared, cached, (reply_low, reply_high), tokens, cost, cfg.max_cost_usd,
                    within, reserve, reply, price.cache_min_tokens if price is not None else 0)

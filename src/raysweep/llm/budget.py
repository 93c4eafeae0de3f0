"""A hard dollar cap on LLM calls, shared by every caller: `llm.max_cost_usd`.

The budget works like the rate limiter's token bucket (limiter.py), in dollars and without
refill. Before a call (each attempt of it, so retries are covered) the caller reserves the
call's *worst case*: the prompt at its estimated token count plus the whole `max_tokens` of
completion, at the model's price. The reservation succeeds only while

    spent + reserved + this call's worst case <= cap,

so however many actors call at once, what they can be billed never passes the cap. When the
reply arrives the caller settles the reservation with the cost of the usage the provider
reported (never more than the worst case, as the estimate is an upper bound); a call the
provider refused (429, 5xx) settles at 0, and a call that timed out keeps its whole worst case
charged, because the provider may have billed it.

API, for any caller of llm/client.py (generation, LLM labeling, a batch):

    budget = Budget(cap_usd, spent_usd)         # plain object, or BudgetActor.remote(...) shared by a pool
    ticket = call(budget, "reserve", usd)       # int ticket, or None: the call would pass the cap, do not make it
    call(budget, "settle", ticket, used_usd)    # the reservation becomes what was really billed
    call(budget, "stats")                       # {"cap_usd", "spent_usd", "reserved_usd", "refused", "settled"}

    worst_case_usd(price, prompt_tokens, max_tokens)   # what to reserve
    cost_usd(price, usage)                              # what to settle with

`cap_usd=None` is no cap (reservations always succeed, and spending is still counted). `spent_usd`
is what the directory's earlier runs already paid (its response store): the cap is for the
whole generation directory, not per run, so a resumed run cannot spend the cap again.

A reservation the budget refuses is final for this run: the caller stops cleanly (it keeps
every reply already paid for) and says how far it got.
"""

from __future__ import annotations

import threading

import ray

from raysweep.errors import RaysweepError
from raysweep.llm.limiter import shared_call

_EPS = 1e-12  # float slack in dollars: summing the same costs in another order must not refuse a call


class BudgetError(RaysweepError, ValueError):
    """A budget that cannot be kept (the model has no price), or the shared budget actor is gone."""


def worst_case_usd(price, prompt_tokens: float, max_tokens: float) -> float:
    """The most a call can cost: `prompt_tokens` (an upper-bound estimate) plus a full `max_tokens` reply.

    `price` has `prompt` and `completion`, dollars per 1M tokens (llm.config.PriceConfig). Every
    prompt token at the full price: a provider's cache hit is likely for a shared prefix, never sure."""
    return (prompt_tokens * price.prompt + max_tokens * price.completion) / 1e6


def cached_tokens(usage: dict | None) -> int:
    """The prompt tokens a reply says were served from the provider's prompt cache
    (`usage.prompt_tokens_details.cached_tokens`), within 0..prompt_tokens; 0 when it says
    nothing or something malformed (billed at the full price: never under-counted)."""
    usage = usage if isinstance(usage, dict) else {}
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    if not isinstance(cached, int) or isinstance(cached, bool) or cached <= 0:
        return 0
    prompt = usage.get("prompt_tokens", 0)
    return min(cached, prompt) if isinstance(prompt, int) else 0


def cost_usd(price, usage: dict | None) -> float:
    """Dollars for the tokens the provider reported (`usage` as in a chat completion): cached
    prompt tokens at the model's cached price (`price.cached`), the rest at the prompt price."""
    usage = usage or {}
    cached = cached_tokens(usage)
    prompt = usage.get("prompt_tokens", 0) - cached
    return (prompt * price.prompt + cached * price.cached
            + usage.get("completion_tokens", 0) * price.completion) / 1e6


class Budget:
    def __init__(self, cap_usd: float | None = None, spent_usd: float = 0.0):
        self.cap_usd = cap_usd
        self.spent_usd = float(spent_usd)  # settled: what the provider billed (or may have)
        self.reserved: dict[int, float] = {}  # ticket -> worst case still outstanding
        self.refused = 0  # reservations turned down because of the cap
        self.settled = 0
        self._next = 0
        # A plain Budget may be shared by threads (one process, several callers); as an actor,
        # Ray runs one method at a time anyway.
        self._lock = threading.Lock()

    @property
    def reserved_usd(self) -> float:
        return sum(self.reserved.values())

    def room_usd(self) -> float | None:
        """Dollars a new reservation may still take; None without a cap."""
        if self.cap_usd is None:
            return None
        return max(0.0, self.cap_usd - self.spent_usd - self.reserved_usd)

    def reserve(self, usd: float) -> int | None:
        """A ticket for a call that may cost up to `usd`, or None when it could pass the cap."""
        with self._lock:
            room = self.room_usd()
            if room is not None and usd > room + _EPS:
                self.refused += 1
                return None
            ticket, self._next = self._next, self._next + 1
            self.reserved[ticket] = float(usd)
            return ticket

    def settle(self, ticket: int, used_usd: float) -> None:
        """The call of `ticket` was billed `used_usd` (0: refused by the provider, not billed)."""
        with self._lock:
            self.reserved.pop(ticket, None)
            self.spent_usd += float(used_usd)
            self.settled += 1

    def stats(self) -> dict:
        return {"cap_usd": self.cap_usd, "spent_usd": round(self.spent_usd, 6),
                "reserved_usd": round(self.reserved_usd, 6), "refused": self.refused, "settled": self.settled}


class LLMBudget(Budget):
    """Budget as an actor, named for the dashboard (which lists actors by class name)."""


# Zero CPUs, as the limiter: microseconds per call, and it must never queue behind a trial.
BudgetActor = ray.remote(num_cpus=0)(LLMBudget)


def call(budget, method: str, *args):
    """Call `method` on a plain Budget or a BudgetActor handle alike."""
    return shared_call(budget, method, args, BudgetError("the shared budget actor died; rerun to resume from the store"))

"""A hard dollar cap on LLM calls, shared by every caller: `llm.max_cost_usd`.

The budget works like the rate limiter's token bucket (limiter.py), in dollars and without
refill. It keeps one invariant, however many actors call at once:

    spent + the worst case of every call in flight <= cap

where a call's worst case is its prompt (an upper-bound token estimate) plus the whole
`max_tokens` *it is sent with*, at the model's price. The provider cannot bill more than that,
so what the calls can be billed never passes the cap.

What keeps concurrency from starving is that `max_tokens` is per call. A call asks for the
configured `max_tokens` and gets, in this order (`Budget.size`):

- **go, whole**: its full worst case fits in what is left: sent as configured.
- **go, sized down**: it does not, but a *useful* reply does: sent with `max_tokens` lowered
  to the useful size, the realistic estimate of a reply: `MARGIN` (1.25) x the longest reply
  seen so far in this directory (earlier runs' replies included), so a sized-down call is
  almost never cut short. Not lowered to all that is left: one call would take the room the
  other callers need, and concurrency would starve again. Before any reply has been seen
  nothing is known about reply lengths, so the first call needs its whole `max_tokens`.
- **wait**: not even a useful reply fits now, but it would once the calls in flight settle
  (each settles at what it was billed, which frees the rest of its reservation). The caller
  waits and asks again.
- **stop**: it would not fit even with nothing in flight. Spending only grows, so this is final:
  the caller stops cleanly (every reply already paid for is kept) and `stats()["stop"]` says
  what the next call needed and what was left.

When the reply arrives the caller settles the reservation with the cost of the usage the
provider reported (never more than the worst case) and the reply's length; a call the provider
refused (429, 5xx) settles at 0, and a call that timed out keeps its whole worst case charged,
because the provider may have billed it.

API, for any caller of llm/client.py (generation, LLM labeling, a batch):

    budget = Budget(cap_usd, spent_usd, longest_reply)  # plain object, or BudgetActor.remote(...) shared by a pool
    grant = call(budget, "size", prompt_usd, usd_per_reply_token, max_tokens)
        # {"ticket", "max_tokens"}, {"wait": True} or {"stop": True}
    call(budget, "settle", ticket, used_usd, reply_tokens)   # the reservation becomes what was billed
    call(budget, "stats")       # {"cap_usd", "spent_usd", "reserved_usd", "peak_reserved_usd", ..., "stop"}
    call(budget, "release", owner)   # an actor died holding reservations: they count as spent
    budget.reserve(usd)         # a fixed reservation (an earlier run's open batch), or None

    worst_case_usd(price, prompt_tokens, max_tokens)   # what a call at `max_tokens` may cost
    cost_usd(price, usage)                              # what to settle with

`cap_usd=None` is no cap (every call goes whole, and spending is still counted). `spent_usd`
is what the directory's earlier runs already paid (its response store): the cap is for the
whole directory, not per run, so a resumed run cannot spend the cap again.
"""

from __future__ import annotations

import math
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


# A sized-down call gets at least this many times the longest reply seen: replies of one
# directory vary in length (a call asks for the same number of rows each time), and a reply cut
# at max_tokens loses its last rows, so a quarter more than the longest keeps cuts rare.
MARGIN = 1.25


def smallest_reply(longest_reply: int, max_tokens: int) -> int:
    """The fewest completion tokens a call may be sent with: all of `max_tokens` before any
    reply is known (`longest_reply` 0), else MARGIN x the longest reply, at most `max_tokens`."""
    if longest_reply <= 0:
        return max_tokens
    return min(max_tokens, math.ceil(MARGIN * longest_reply))


def longest_reply(records) -> int:
    """The longest reply (completion tokens) among stored records: where sizing starts on resume."""
    lengths = ((r.get("usage") or {}).get("completion_tokens") if isinstance(r.get("usage"), dict) else None
               for r in records)
    return int(max((n for n in lengths if isinstance(n, (int, float)) and n > 0), default=0))


class Budget:
    def __init__(self, cap_usd: float | None = None, spent_usd: float = 0.0, longest_reply: int = 0):
        self.cap_usd = cap_usd
        self.spent_usd = float(spent_usd)  # settled: what the provider billed (or may have)
        self.reserved: dict[int, float] = {}  # ticket -> worst case still outstanding
        self.owners: dict[int, str] = {}  # ticket -> the generator actor that holds it (release)
        self.longest_reply = int(longest_reply)  # completion tokens of the longest reply seen
        self.peak_reserved_usd = 0.0  # the most reserved at once: what the calls in flight could have cost
        self.refused = 0  # calls told to stop because of the cap
        self.settled = 0
        self.sized_down = 0  # calls sent with less than their max_tokens so that they fit
        self.waits = 0  # times a call was told to wait for the calls in flight
        self.stop: dict | None = None  # the call that did not fit: what it needed, what was left
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

    def _take(self, usd: float) -> int:
        ticket, self._next = self._next, self._next + 1
        self.reserved[ticket] = float(usd)
        self.peak_reserved_usd = max(self.peak_reserved_usd, self.reserved_usd)
        return ticket

    def reserve(self, usd: float) -> int | None:
        """A ticket for a fixed worst case of `usd`, or None when it could pass the cap."""
        with self._lock:
            room = self.room_usd()
            if room is not None and usd > room + _EPS:
                self.refused += 1
                return None
            return self._take(usd)

    def size(self, prompt_usd: float, usd_per_token: float, max_tokens: int, owner: str | None = None) -> dict:
        """Go (with the max_tokens the call is sent with), wait or stop: see the module doc.

        `prompt_usd`: the prompt's upper-bound cost; `usd_per_token`: the price of one reply token;
        `owner`: the actor asking, so that its reservation can be released if it dies."""
        grant = self._size(prompt_usd, usd_per_token, max_tokens)
        if owner is not None and "ticket" in grant:
            with self._lock:
                self.owners[grant["ticket"]] = owner
        return grant

    def _size(self, prompt_usd: float, usd_per_token: float, max_tokens: int) -> dict:
        with self._lock:
            if self.cap_usd is None:
                return {"ticket": self._take(prompt_usd + max_tokens * usd_per_token), "max_tokens": max_tokens}
            room = self.cap_usd - self.spent_usd - self.reserved_usd - prompt_usd
            fits = max_tokens if usd_per_token <= 0 else math.floor((room + _EPS) / usd_per_token)
            need = smallest_reply(self.longest_reply, max_tokens)
            if room >= -_EPS and fits >= need:
                tokens = max_tokens if fits >= max_tokens else need
                self.sized_down += tokens < max_tokens
                return {"ticket": self._take(prompt_usd + tokens * usd_per_token), "max_tokens": tokens}
            need_usd = prompt_usd + need * usd_per_token
            left = self.cap_usd - self.spent_usd
            if self.reserved and need_usd <= left + _EPS:
                self.waits += 1
                return {"wait": True}
            self.refused += 1
            self.stop = {"need_usd": round(need_usd, 6), "reply_tokens": need, "max_tokens": max_tokens,
                         "longest_reply": self.longest_reply, "left_usd": round(max(0.0, left), 6)}
            return {"stop": True}

    def settle(self, ticket: int, used_usd: float, reply_tokens: int | None = None) -> None:
        """The call of `ticket` was billed `used_usd` (0: refused by the provider, not billed) for
        a reply of `reply_tokens` completion tokens (None: no reply)."""
        with self._lock:
            self.reserved.pop(ticket, None)
            self.owners.pop(ticket, None)
            self.spent_usd += float(used_usd)
            self.settled += 1
            if isinstance(reply_tokens, (int, float)) and reply_tokens > 0:  # a provider's usage, as sent
                self.longest_reply = max(self.longest_reply, int(reply_tokens))

    def release(self, owner: str) -> int:
        """A generator actor died holding reservations: they count as spent (its call may have been
        billed), and no longer as in flight, or calls waiting for them to settle would wait forever."""
        with self._lock:
            held = {t: self.reserved.get(t, 0.0) for t, o in self.owners.items() if o == owner}
        for ticket, usd in held.items():
            self.settle(ticket, usd)
        return len(held)

    def stats(self) -> dict:
        return {"cap_usd": self.cap_usd, "spent_usd": round(self.spent_usd, 6),
                "reserved_usd": round(self.reserved_usd, 6), "peak_reserved_usd": round(self.peak_reserved_usd, 6),
                "refused": self.refused, "settled": self.settled, "sized_down": self.sized_down,
                "waits": self.waits, "longest_reply": self.longest_reply, "stop": self.stop}


def stop_line(stats: dict) -> str:
    """Why a run stopped at the cap, in one line: what was spent and reserved, what the next call
    needed and what was left (`stats` from Budget.stats, read after the calls in flight settled)."""
    line = (f"stopped at llm.max_cost_usd (${stats['cap_usd']:g}): ${stats['spent_usd']:.4f} spent, "
            f"at most ${stats['peak_reserved_usd']:.4f} reserved at once by the calls in flight")
    stop = stats.get("stop")
    if stop:
        why = (f"{MARGIN:g} x the longest reply so far, {stop['longest_reply']:,} tokens" if stop["longest_reply"]
               else "its whole max_tokens: no reply seen yet")
        left = max(0.0, stats["cap_usd"] - stats["spent_usd"])
        line += (f"; the next call needs ${stop['need_usd']:.4f} (its prompt and a {stop['reply_tokens']:,}-token "
                 f"reply: {why}) and ${left:.4f} is left")
    return line


class LLMBudget(Budget):
    """Budget as an actor, named for the dashboard (which lists actors by class name)."""


# Zero CPUs, as the limiter: microseconds per call, and it must never queue behind a trial.
BudgetActor = ray.remote(num_cpus=0)(LLMBudget)


def call(budget, method: str, *args):
    """Call `method` on a plain Budget or a BudgetActor handle alike."""
    return shared_call(budget, method, args, BudgetError("the shared budget actor died; rerun to resume from the store"))

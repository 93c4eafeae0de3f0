"""One token bucket for requests per minute and one for tokens per minute, shared by every caller.

`RateLimiter` is a plain class with an injectable clock, so its arithmetic is tested exactly
with a fake clock; `RateLimiterActor` is the same class as a Ray actor that every generator
actor talks to, which is what makes the limits hold for the pool and not per actor.

The protocol per call:
  1. `acquire(estimate)` takes one request and `estimate` tokens (prompt estimate + max_tokens,
     an upper bound) and returns a ticket, or says how long to wait before asking again;
  2. after the reply, `settle(ticket, estimate, used)` replaces the estimate with the usage the
     provider reported;
  3. a 429 with Retry-After calls `pause(seconds)`: nobody in the pool starts a call until then.

A bucket holds at most `burst_seconds - jitter_seconds` of its per-minute limit (times
`headroom`) and refills continuously, so any window of T seconds admits at most
capacity + rate * T. The provider, seeing each call up to `jitter_seconds` later or earlier
than we granted it, then counts no more than its own burst_seconds of limit + rate * T. A call
larger than the whole bucket waits for a full bucket and leaves it in debt, so it is never stuck.

Why settling is not just "give the unused tokens back": the provider counts a call's real usage
when the call arrives, and its bucket, refilling meanwhile, may have been full while ours was
short by the estimate. Tokens simply returned later would include refill the provider's bucket
never got, and the pool would overshoot right after. So a bucket keeps its level as the
token-bucket formula over the windows that matter,

    level(now) = min(capacity, min over a of [capacity + rate * (now - a) - charged(a .. now)]),

and settling lowers the charge of exactly the windows that contain the call. Only windows that
start at a call's arrival can be the minimum, and an earlier start whose term is not lower than
a later one's never becomes the minimum again (settling only lowers later terms), so the list of
candidate starts stays short.
"""

from __future__ import annotations

import time
from typing import Callable

import ray

from raysweep.errors import RaysweepError

_EPS = 1e-9  # float slack: a caller who slept exactly the advised wait must not be told to wait again


class LimitError(RaysweepError, ValueError):
    """The shared limiter is gone."""


class TokenBucket:
    def __init__(self, per_minute: float, burst_seconds: float, clock: Callable[[], float]):
        self.rate = per_minute / 60.0  # per second
        self.capacity = per_minute * burst_seconds / 60.0
        self._clock = clock
        self._charged = 0.0  # all charges so far: real usage once settled, the estimate until then
        # Candidate window starts as (charge number, g), g = charged before the start - rate *
        # start, so that a window's term is capacity + rate * now - charged + g. Kept with g
        # strictly increasing: the first is the minimum. Number -1 is the bucket's creation (it
        # starts full); charge k starts the window at the moment it was taken.
        self._starts: list[tuple[int, float]] = [(-1, -self.rate * clock())]
        self._charges = 0

    @property
    def level(self) -> float:
        return min(self.capacity, self.capacity + self.rate * self._clock() - self._charged + self._starts[0][1])

    def wait_for(self, amount: float) -> float:
        """Seconds until `amount` can be taken (0 if it can now)."""
        need = min(amount, self.capacity)
        level = self.level
        if level + _EPS >= need:
            return 0.0
        return (need - level) / self.rate

    def take(self, amount: float) -> int:
        """Charge `amount` now; returns the charge's number, for `settle`."""
        number, self._charges = self._charges, self._charges + 1
        g = self._charged - self.rate * self._clock()
        while self._starts and self._starts[-1][1] >= g:
            self._starts.pop()  # a later start with a lower term: the earlier one never binds again
        self._starts.append((number, g))
        self._charged += amount
        return number

    def settle(self, number: int, reserved: float, used: float) -> None:
        """Charge `number` took `reserved`; the provider counted `used`."""
        if used > reserved:
            # Under-estimated: charge the rest now. Later than the provider did, so our level
            # after it is at most the provider's.
            self.take(used - reserved)
            return
        refund = reserved - used
        self._charged -= refund
        # Windows that start after the charge do not contain it: keep their terms as they were.
        starts = [(n, g - refund if n > number else g) for n, g in self._starts]
        kept: list[tuple[int, float]] = []
        for start in reversed(starts):
            if not kept or start[1] < kept[-1][1]:
                kept.append(start)
        self._starts = kept[::-1]


class RateLimiter:
    def __init__(self, requests_per_minute: float, tokens_per_minute: float,
                 burst_seconds: float = 10.0, headroom: float = 0.97, jitter_seconds: float = 0.0,
                 clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        # A limit of 0 means none; headroom scales both the rate and the burst, and the jitter
        # allowance comes out of the burst.
        burst = burst_seconds - jitter_seconds
        self.requests = (TokenBucket(requests_per_minute * headroom, burst, clock)
                         if requests_per_minute else None)
        self.tokens = (TokenBucket(tokens_per_minute * headroom, burst, clock)
                       if tokens_per_minute else None)
        self.paused_until = float("-inf")
        self.granted = 0  # calls let through
        self.tokens_used = 0  # tokens settled as really used
        self.pauses = 0

    @classmethod
    def from_config(cls, limits, clock: Callable[[], float] = time.monotonic) -> "RateLimiter":
        return cls(limits.requests_per_minute, limits.tokens_per_minute,
                   limits.burst_seconds, limits.headroom, limits.jitter_seconds, clock)

    def acquire(self, tokens: float) -> tuple[float, int | None]:
        """(0.0, ticket) when one request and `tokens` tokens are taken, else (seconds to wait, None)."""
        now = self._clock()
        if now < self.paused_until:
            return self.paused_until - now, None
        wait = max(self.requests.wait_for(1) if self.requests else 0.0,
                   self.tokens.wait_for(tokens) if self.tokens else 0.0)
        if wait > 0:
            return wait, None
        # Take from both buckets only when both allow it: a half-granted call would leak budget.
        if self.requests is not None:
            self.requests.take(1)
        ticket = self.tokens.take(tokens) if self.tokens is not None else -1
        self.granted += 1
        return 0.0, ticket

    def settle(self, ticket: int, reserved: float, used: float) -> None:
        """Replace a granted call's token estimate with what the provider counted."""
        self.tokens_used += used
        if self.tokens is not None:
            self.tokens.settle(ticket, reserved, used)

    def pause(self, seconds: float) -> None:
        """The provider said 'retry after': hold every caller, not just the one that was told."""
        self.pauses += 1
        self.paused_until = max(self.paused_until, self._clock() + seconds)

    def stats(self) -> dict:
        return {"granted": self.granted, "tokens_used": self.tokens_used, "pauses": self.pauses}


class LLMRateLimiter(RateLimiter):
    """RateLimiter as an actor, named for the dashboard (which lists actors by class name)."""


# Zero CPUs: the limiter's methods take microseconds, and it must never wait for a free core
# behind the trials that keep the cluster busy.
RateLimiterActor = ray.remote(num_cpus=0)(LLMRateLimiter)


def call(limiter, method: str, *args):
    """Call `method` on a plain RateLimiter or on a RateLimiterActor handle alike."""
    return shared_call(limiter, method, args, LimitError("the shared rate limiter actor died; rerun to resume "
                                                         "from the store"))


def shared_call(obj, method: str, args: tuple, if_dead: Exception):
    """`obj.method(*args)` on a plain object or on a Ray actor handle alike; `if_dead` is raised
    when the actor is gone (the pool's shared limiter and budget both go through here)."""
    fn = getattr(obj, method)
    if hasattr(fn, "remote"):
        try:
            return ray.get(fn.remote(*args))
        except ray.exceptions.RayActorError:
            raise if_dead from None
    return fn(*args)


def wait_for_slot(limiter, tokens: float, sleep: Callable[[float], None] = time.sleep) -> tuple[float, int]:
    """Block until the limiter grants a call of `tokens` tokens; returns (seconds waited, ticket)."""
    waited = 0.0
    while True:
        wait, ticket = call(limiter, "acquire", tokens)
        if ticket is not None:
            return waited, ticket
        sleep(wait)
        waited += wait

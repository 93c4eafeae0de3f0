"""How much of `llm.max_cost_usd` do concurrent calls spend before they stop, and do they ever pass it?

The issue's case (issue 30): a $1.20 cap, max_tokens 4096 (a worst case of about half the cap)
and replies of ~80 tokens (a call costs ~2% of the cap). It compares, in one run on the same
fake OpenAI-compatible server, the two rules of llm/budget.py:

- "worst case, final": what raysweep did before: every call reserves prompt + the whole
  max_tokens, and the first refusal stops the run (the pool starts no more calls);
- "sized": the rule today: whole when it fits, else sized down to 1.25 x the longest reply
  seen, else wait for the calls in flight; stop only when nothing fits with nothing in flight.

The callers are llm/client.py's Generator (the code the generator actors run) in threads, one
per concurrent call, sharing one plain Budget: the budget logic without Ray's start-up. What
the server billed (its own token counts at the price) is the "billed" column.

    .venv/bin/python benchmarks/llm_budget.py [--cap 1.2] [--concurrency 1,2,8] [--delay 0.1]
"""

from __future__ import annotations

import argparse
import itertools
import threading
import time

import pandas as pd

from raysweep.llm.budget import Budget, stop_line
from raysweep.llm.client import Generator
from raysweep.llm.config import PriceConfig
from raysweep.llm.fake_server import FakeOpenAI, Reply
from raysweep.llm.limiter import RateLimiter

from measurement import measurement  # benchmarks/measurement.py: the docs/measurements.md block

PRICE = PriceConfig(prompt=100.0, completion=150.0)  # dollars per 1M tokens: a 4096-token worst case ~$0.62
MESSAGES = [{"role": "user", "content": "Generate 5 movie review sentences as a JSON list of [sentence, label] "
                                        "pairs, labels 0 (very negative) to 4 (very positive)."}]


class WorstCaseFinal(Budget):
    """The rule before issue 30: reserve the whole worst case; a refusal is final."""

    def size(self, prompt_usd: float, usd_per_token: float, max_tokens: int) -> dict:
        ticket = self.reserve(prompt_usd + max_tokens * usd_per_token)
        return {"stop": True} if ticket is None else {"ticket": ticket, "max_tokens": max_tokens}


class Counting:
    """Calls in flight at once, as the server would see them."""

    def __init__(self):
        self.now = self.most = 0
        self.lock = threading.Lock()

    def __enter__(self):
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)

    def __exit__(self, *exc):
        with self.lock:
            self.now -= 1


def run(budget: Budget, concurrency: int, cap: float, delay: float) -> dict:
    with FakeOpenAI(default=Reply(delay=delay), rows_per_reply=5) as server:
        ids, lock, stop = itertools.count(), threading.Lock(), threading.Event()
        in_flight = Counting()
        calls = []

        def caller():
            gen = Generator(server.base_url, "fake-model", {"temperature": 1.0, "max_tokens": 4096}, None,
                            RateLimiter(0, 0), timeout=30.0, retries=0, retry_backoff=0.01, budget=budget, price=PRICE)
            while not stop.is_set():  # as the pool: after a stop, no new call starts
                with lock:
                    i = next(ids)
                with in_flight:
                    result = gen.call(i, MESSAGES, seed=i)
                if result.get("budget"):
                    stop.set()
                elif "response" in result:
                    calls.append(result)

        start = time.perf_counter()
        threads = [threading.Thread(target=caller) for _ in range(concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seconds = time.perf_counter() - start
        billed = sum(a["tokens"] for a in server.served())  # prompt + completion, priced below
        usage = [c["usage"] for c in calls]
        billed_usd = sum(u["prompt_tokens"] * PRICE.prompt + u["completion_tokens"] * PRICE.completion
                         for u in usage) / 1e6
        cut = sum(c["response"]["choices"][0]["finish_reason"] == "length" for c in calls)
    s = budget.stats()
    return {"rule": type(budget).__name__, "concurrency": concurrency, "calls": len(calls), "rows": 5 * len(calls),
            "billed_usd": round(billed_usd, 4), "of_cap": f"{billed_usd / cap:.1%}", "past_cap": billed_usd > cap + 1e-9,
            "sized_down": s["sized_down"], "waits": s["waits"], "most_in_flight": in_flight.most,
            "replies_cut": cut, "tokens": billed, "seconds": round(seconds, 1), "stop_line": stop_line(s)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cap", type=float, default=1.2)
    parser.add_argument("--concurrency", default="1,2,8")
    parser.add_argument("--delay", type=float, default=0.1, help="seconds the fake server takes per reply")
    args = parser.parse_args()
    rows = []
    for concurrency in (int(c) for c in args.concurrency.split(",")):
        for rule in (WorstCaseFinal, Budget):
            rows.append(run(rule(cap_usd=args.cap), concurrency, args.cap, args.delay))
    table = pd.DataFrame(rows).replace({"rule": {"WorstCaseFinal": "worst case, final", "Budget": "sized"}})
    print(table.drop(columns="stop_line").to_string(index=False))
    for row in rows:  # what a run says when it stops (generate's summary line ends with it)
        print(f"{row['rule']} at concurrency {row['concurrency']}: {row['stop_line']}")


if __name__ == "__main__":
    with measurement("llm.max_cost_usd: spent before the stop, by rule and concurrency (fake server)"):
        main()

"""How close do several generator actors get to the provider's limits, without going over?

Runs `raysweep.llm.generate.generate` (the real path: Ray actors, the shared limiter actor, the
`openai` client, the response store) against the fake OpenAI-compatible server, which enforces
the same limits on its side and counts every call that breaks them. Each reply takes `--latency`
seconds, so one actor cannot reach the limit alone and the table shows the pool filling it.

Achieved rates are measured by the server, in steady state: over the second half of each run,
so the actors' start-up and the initial burst (2 s of the limit) do not inflate them.
"pool reach" is what the actors could do with no limit (actors / latency) as a multiple of the
limit: below 1x the pool itself is the bottleneck. The target: at least 95% of the binding limit
wherever the pool can clearly reach it (2x), and zero violations everywhere.

    .venv/bin/python benchmarks/llm_throughput.py [--seconds 40] [--actors 1,2,4,8] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import ray

from raysweep.llm.config import load_llm_config
from raysweep.llm.fake_server import FakeOpenAI, Reply
from raysweep.llm.generate import generate

from measurement import measurement  # benchmarks/measurement.py: the docs/measurements.md block

ROWS_PER_CALL = 5
# The provider's burst: short, so that a burst inside the measured 20 s window moves its rate
# little, yet long enough that, less the 0.5 s jitter allowance, a few calls' token estimates
# fit in it (with 1 s, one did, and tokens/min fell to 78% at load 30: every late poll of the
# limiter found a full bucket and lost its refill).
BURST_SECONDS = 2.0
# (name, requests/min, tokens/min, max_tokens): one scenario where requests bind, one where tokens do.
SCENARIOS = [
    ("requests-bound", 600, 0, 200),
    ("tokens-bound", 0, 120_000, 200),
]


def examples() -> pd.DataFrame:
    words = ["awful", "dull", "fine", "good", "superb"]
    return pd.DataFrame({"text": [f"a {words[c]} film , take {k} ." for c in range(5) for k in range(5)],
                         "label": [c for c in range(5) for _ in range(5)]})


def steady_rates(arrivals: list[dict]) -> tuple[float, float, int]:
    """(requests/min, tokens/min, calls measured) over the second half of the run.

    The first half holds the actors' start-up (seconds apart on a busy machine) and the one
    burst the bucket allows when the pool first fills it. Rates count the calls after the
    window's first over the span between them (counting both ends would add one call).
    """
    served = [a for a in arrivals if a["status"] == 200]
    middle = (served[0]["t"] + served[-1]["t"]) / 2
    window = [a for a in served if a["t"] >= middle]
    span = window[-1]["t"] - window[0]["t"]
    after_first = window[1:]
    return 60 * len(after_first) / span, 60 * sum(a["tokens"] for a in after_first) / span, len(window)


def run(name: str, rpm: float, tpm: float, max_tokens: int, actors: int, seconds: float, latency: float,
        jitter: float | None) -> dict:
    # The limits as the provider states them; the client's own margins (headroom, jitter) are
    # the config defaults.
    limits = {"requests_per_minute": rpm, "tokens_per_minute": tpm, "burst_seconds": BURST_SECONDS}
    if jitter is not None:
        limits["jitter_seconds"] = jitter
    with FakeOpenAI(default=Reply(delay=latency), rows_per_reply=ROWS_PER_CALL, requests_per_minute=rpm,
                    tokens_per_minute=tpm, burst_seconds=BURST_SECONDS) as server:
        # Enough calls to keep the pool busy for `seconds` at whatever it can reach.
        per_call_tokens = 350  # about what one call of the fake provider counts
        reachable = min(rpm / 60 if rpm else math.inf, tpm / 60 / per_call_tokens if tpm else math.inf,
                        actors / latency)
        calls = max(10, int(reachable * seconds))
        cfg = load_llm_config({
            "base_url": server.base_url, "api_key_env": "none", "model": "fake-model", "n_rows": calls * ROWS_PER_CALL,
            "samples_per_call": ROWS_PER_CALL, "max_tokens": max_tokens, "concurrency": actors,
            "limits": limits, "max_requests": calls, "near_duplicate": 1.0,
            "prices": {"fake-model": {"prompt": 0.15, "completion": 0.60}}})
        with tempfile.TemporaryDirectory() as out:
            result = generate(cfg, examples(), [], Path(out))
        req_min, tok_min, measured = steady_rates(server.arrivals)
    binding, limit, achieved = ("requests/min", rpm, req_min) if rpm else ("tokens/min", tpm, tok_min)
    # What the pool could do with no limit at all, as a share of the limit: below 1 the pool, not
    # the limiter, is what holds the rate down, and 95% cannot be expected.
    calls_per_min_at_limit = rpm if rpm else tpm / (tok_min / req_min)
    pool_reach = (actors / latency * 60) / calls_per_min_at_limit
    return {
        "scenario": name, "actors": actors, "latency_s": latency, "calls": result.summary["requests"],
        "measured_calls": measured, "requests_per_min": round(req_min, 1), "tokens_per_min": round(tok_min),
        "limit": f"{limit:g} {binding}", "of_limit": round(achieved / limit, 4),
        "violations": server.violations["requests"] + server.violations["tokens"],
        "pool_reach": round(pool_reach, 2),
        "retries": result.summary["retries"], "rows_kept": result.summary["rows_kept"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=40.0, help="target length of each run")
    parser.add_argument("--actors", default="1,2,4,8", help="pool sizes to try")
    parser.add_argument("--scenarios", default=",".join(n for n, *_ in SCENARIOS), help="which scenarios to run")
    parser.add_argument("--latency", type=float, default=0.25, help="seconds the fake server takes per reply")
    parser.add_argument("--jitter-seconds", type=float, help="override llm.limits.jitter_seconds (default: the config's)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    rows = []
    header = (f"{'scenario':<15} {'actors':>6} {'pool reach':>10} {'calls':>6} {'req/min':>8} {'tok/min':>8} "
              f"{'limit':>18} {'of limit':>8} {'violations':>10}  retries")
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(header)
    print("-" * len(header))
    try:
        for name, rpm, tpm, max_tokens in [s for s in SCENARIOS if s[0] in args.scenarios.split(",")]:
            for actors in [int(a) for a in args.actors.split(",")]:
                started = time.monotonic()
                row = run(name, rpm, tpm, max_tokens, actors, args.seconds, args.latency, args.jitter_seconds)
                row["wall_s"] = round(time.monotonic() - started, 1)
                rows.append(row)
                print(f"{row['scenario']:<15} {row['actors']:>6} {row['pool_reach']:>9.2f}x {row['calls']:>6} "
                      f"{row['requests_per_min']:>8.1f} "
                      f"{row['tokens_per_min']:>8} {row['limit']:>18} {row['of_limit']:>8.1%} {row['violations']:>10}  "
                      f"{row['retries'] or '-'}", flush=True)
    finally:
        ray.shutdown()
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    # Where the pool alone could go well past the limit, the limiter is what sets the rate. "Well
    # past": 2x, because a call also spends time in Ray and waiting for a core, which the
    # nominal reach (actors / latency) leaves out.
    saturated = [r for r in rows if r["pool_reach"] >= 2]
    no_violations = all(r["violations"] == 0 for r in rows)
    at_limit = bool(saturated) and all(r["of_limit"] >= 0.95 for r in saturated)
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    print(f"\nzero violations: {no_violations}; >= 95% of the limit in every run whose pool reaches "
          f">= 2x the limit ({len(saturated)} runs): {at_limit}")
    ok = no_violations and at_limit
    return 0 if ok else 1


if __name__ == "__main__":
    with measurement("LLM generator pool against provider limits (benchmarks/llm_throughput.py)"):
        code = main()
    sys.exit(code)

"""What a fixed few-shot prefix buys and costs on the embedded SmolLM2 server (issue 30 item 5).

1. Speed: llama.cpp keeps the KV cache of the last prompt it evaluated and re-evaluates only what
   differs after the longest shared prefix. Prompts of `llm.few_shot: fixed` share their whole
   prefix (a generation prompt is identical from call to call; a labeling prompt differs in its
   sentences only), `per_call` prompts share only the instructions. Each call here asks for one
   token (max_tokens 1), so its latency is the prompt's evaluation. Blocks of `--calls` calls of
   one kind follow each other (the cache is the previous prompt: interleaving single calls would
   hide it), `--rounds` times, so both kinds see the same machine load.
2. Variety: `--generate` generation calls of each kind (20 samples each, as the embedded default),
   and how many of their rows survive parsing and dedup (exact and near-duplicates, copies of
   the shown examples): whether showing the same examples every call narrows what is written.

    nice -n 10 .venv/bin/python benchmarks/prompt_cache.py [--calls 4] [--rounds 2] [--generate 4]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from raysweep.augment import examples_for
from raysweep.config import DataConfig, SplitConfig
from raysweep.data import load_splits
from raysweep.llm.client import Generator
from raysweep.llm.config import EMBEDDED_MODEL, EmbeddedConfig
from raysweep.llm.dedup import clean_rows, similar_pairs
from raysweep.llm.limiter import RateLimiter
from raysweep.llm.parse import parse_reply
from raysweep.llm.prompt import DEFAULT_TEMPLATE, SST5_CLASS_NAMES, build_label_messages, build_messages
from raysweep.llm.server import embedded_server, label_format_for, response_format_for

from measurement import measurement  # benchmarks/measurement.py: the docs/measurements.md block

SEED = 0
PER_CLASS = 3  # the study's few-shot examples per class


def prompts(examples, texts, kind: str, few_shot: str, first: int, n: int, samples: int) -> list[list[dict]]:
    """`n` calls' messages from call `first` on: a generation's or a labeling's, fixed or per call."""
    out = []
    for i in range(first, first + n):
        call = i if few_shot == "per_call" else None
        if kind == "generate":
            out.append(build_messages(DEFAULT_TEMPLATE, samples, examples, PER_CLASS, SEED, call, SST5_CLASS_NAMES))
        else:
            out.append(build_label_messages(texts[5 * i: 5 * i + 5], examples, PER_CLASS, SEED, call, SST5_CLASS_NAMES))
    return out


def speed(client: Generator, examples, texts, calls: int, rounds: int, samples: int) -> dict:
    times: dict[tuple[str, str], list[float]] = {}
    tokens: dict[tuple[str, str], list[int]] = {}
    cached_reported: list[int] = []
    for r in range(rounds):
        for kind in ("generate", "label"):
            for few_shot in ("per_call", "fixed"):
                fmt = {"response_format": label_format_for(5, 5)} if kind == "label" else {}
                first = 100 * r + 50 * (few_shot == "fixed")  # labeling: other sentences in each block
                for j, messages in enumerate(prompts(examples, texts, kind, few_shot, first, calls, samples)):
                    start = time.perf_counter()
                    record = client.call(j, messages, seed=j, params={"max_tokens": 1, "temperature": 0.0, **fmt})
                    if "error" in record:
                        raise SystemExit(f"call failed: {record['error']}")
                    elapsed = time.perf_counter() - start
                    usage = record["usage"] or {}
                    cached_reported.append(((usage.get("prompt_tokens_details") or {}).get("cached_tokens")) or 0)
                    if j == 0:
                        continue  # the block's first call follows another kind's prompt: no shared prefix yet
                    times.setdefault((kind, few_shot), []).append(elapsed)
                    tokens.setdefault((kind, few_shot), []).append(usage.get("prompt_tokens", 0))
    print(f"{'prompt':10s} {'few_shot':9s} {'calls':>5s} {'prompt tokens':>13s} {'median s':>9s} {'min s':>7s}")
    result = {}
    for (kind, few_shot), seconds in times.items():
        median = statistics.median(seconds)
        result[f"{kind}/{few_shot}"] = {"median_s": round(median, 3), "min_s": round(min(seconds), 3),
                                        "prompt_tokens": round(statistics.mean(tokens[(kind, few_shot)]))}
        print(f"{kind:10s} {few_shot:9s} {len(seconds):5d} {statistics.mean(tokens[(kind, few_shot)]):13.0f} "
              f"{median:9.2f} {min(seconds):7.2f}")
    for kind in ("generate", "label"):
        ratio = result[f"{kind}/per_call"]["median_s"] / result[f"{kind}/fixed"]["median_s"]
        print(f"{kind}: a fixed prefix's calls are {ratio:.1f}x faster (median per_call / median fixed)")
    print(f"cached_tokens the server reported: {sum(cached_reported)} over {len(cached_reported)} calls")
    return result


def variety(client: Generator, examples, n: int, samples: int) -> dict:
    shown = examples["text"].astype(str).tolist()
    print(f"{'few_shot':9s} {'calls':>5s} {'rows parsed':>11s} {'kept':>5s} {'exact dup':>9s} {'near dup':>8s} "
          f"{'copies':>6s} {'distinct words':>14s} {'s/call':>7s}")
    result = {}
    for few_shot in ("per_call", "fixed"):
        rows, seconds = [], []
        for i in range(n):
            call = i if few_shot == "per_call" else None
            messages = build_messages(DEFAULT_TEMPLATE, samples, examples, PER_CLASS, SEED, call, SST5_CLASS_NAMES)
            start = time.perf_counter()
            record = client.call(i, messages, seed=SEED + i, params={"response_format": response_format_for(samples, 5)})
            seconds.append(time.perf_counter() - start)
            if "error" in record:
                raise SystemExit(f"call failed: {record['error']}")
            content = record["response"]["choices"][0]["message"]["content"]
            rows.extend((text, label, i) for text, label in parse_reply(content, SST5_CLASS_NAMES).rows)
        import pandas as pd

        frame = pd.DataFrame(rows, columns=["text", "llm_label", "request_id"])
        kept, removed = clean_rows(frame, [], 0.8)
        copies = len(similar_pairs(kept["text"].tolist(), shown, 0.8))
        words = {w for t in kept["text"] for w in str(t).lower().split()}
        reasons = removed["reason"] if len(removed) else pd.Series([], dtype=str)
        out = {"calls": n, "rows_parsed": len(frame), "kept": len(kept),
               "exact_duplicates": int((reasons == "exact_duplicate").sum()),
               "near_duplicates": int((reasons == "near_duplicate").sum()), "copies_of_examples": copies,
               "distinct_words": len(words), "median_s_per_call": round(statistics.median(seconds), 1)}
        result[few_shot] = out
        print(f"{few_shot:9s} {n:5d} {out['rows_parsed']:11d} {out['kept']:5d} {out['exact_duplicates']:9d} "
              f"{out['near_duplicates']:8d} {copies:6d} {len(words):14d} {out['median_s_per_call']:7.1f}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=4, help="calls per block (the first of each is not timed)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--generate", type=int, default=4, help="generation calls per kind for the variety table")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    splits = load_splits(DataConfig(), SplitConfig())
    examples = examples_for(splits)
    texts = splits.train["text"].astype(str).tolist()
    cfg = EmbeddedConfig()
    with tempfile.TemporaryDirectory() as tmp, embedded_server(cfg, Path(tmp) / "server.log") as url:
        client = Generator(url, EMBEDDED_MODEL, {"temperature": 1.0, "max_tokens": cfg.max_tokens}, None,
                           RateLimiter(0, 0), timeout=cfg.timeout, retries=1, retry_backoff=1.0)
        print(f"embedded {EMBEDDED_MODEL}, n_threads {cfg.n_threads}, {PER_CLASS} examples per class, seed {SEED}")
        result = {"speed": speed(client, examples, texts, args.calls, args.rounds, cfg.samples_per_call)}
        if args.generate:
            result["variety"] = variety(client, examples, args.generate, cfg.samples_per_call)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    with measurement("prompt caching on the embedded SmolLM2: prompt evaluation and variety, fixed vs per-call few-shot"):
        main()

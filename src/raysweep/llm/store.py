"""The append-only response store: every paid reply, written before anything reads it.

One JSON line per successful call: the request as sent, the raw response body as received, its
usage and cost, and the `setup` that made the request. A line is flushed and fsynced before
the reply is parsed, so a crash in parsing, dedup or anything later never loses a paid
response, and a rerun starts by reading this file and asks only for the calls not in it.

A process killed while writing leaves at most one torn last line; `load` cuts it off (that
one call is requested again). A damaged line anywhere else is an error: guessing would hide it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from raysweep.errors import RaysweepError
from raysweep.llm import budget

STORE_NAME = "responses.jsonl"


class StoreError(RaysweepError, ValueError):
    """The store cannot be read, or holds responses made for a different config."""


class ResponseStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.torn_lines = 0  # torn last lines cut off by load()

    def load(self) -> list[dict]:
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        records, pos, lineno = [], 0, 0
        while pos < len(data):
            lineno += 1
            newline = data.find(b"\n", pos)
            end = len(data) if newline == -1 else newline + 1
            line, last = data[pos:end], end >= len(data)
            if line.strip():
                try:
                    records.append(json.loads(line))
                except (ValueError, RecursionError) as exc:  # RecursionError: nesting beyond the stack
                    if not last or not isinstance(exc, json.JSONDecodeError):
                        raise StoreError(f"{self.path}:{lineno}: not a JSON record; the store is damaged") from None
                    # The final line: a write cut short by a kill. Cut it so appends start clean.
                    with open(self.path, "r+b") as f:
                        f.truncate(pos)
                    self.torn_lines += 1
                    break
                if newline == -1:  # a whole record without its newline: end the line before appending
                    with open(self.path, "ab") as f:
                        f.write(b"\n")
            pos = end
        return records

    def append(self, record: dict) -> None:
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())  # the call is paid for: on disk before anyone parses it


def check_setup(records: list[dict], setup: dict, path: Path) -> None:
    """Refuse to mix responses made for another prompt, model or call size into this run; the
    line names every setting that differs (a digest, for the template and examples)."""
    for record in records:
        stored = record.get("setup", {})
        differ = [key for key in sorted(set(stored) | set(setup)) if stored.get(key) != setup.get(key)]
        if differ == ["few_shot"]:
            # The one change a user meets by upgrading (llm.few_shot's default): say how to keep the store.
            made, wanted = stored.get("few_shot") or "per_call", setup.get("few_shot") or "per_call"
            raise StoreError(
                f"{path}: holds replies to prompts with few_shot={made}, the config says few_shot={wanted} "
                f"(other prompts); set llm.few_shot: {made} to reuse them, or use another output directory "
                "(its calls are paid again)")
        if differ:
            said = ", ".join(f"{key}={stored.get(key)!r} (the config says {setup.get(key)!r})" for key in differ)
            raise StoreError(f"{path}: holds responses made with {said}; use another output directory or "
                             "restore the config")


def cost_usd(usage: dict | None, model: str, prices: dict, answered_by: str | None = None,
             mode: str = "online") -> float | None:
    """Dollars for one call from the price table (per 1M tokens, at `mode`'s price: a batch's
    discount applied); None when the model is not in it."""
    price = prices.get(model) or (prices.get(answered_by) if answered_by else None)
    if price is None or not usage:
        return None
    return budget.cost_usd(price.for_mode(mode), usage)


def totals(records: list[dict]) -> dict:
    """Requests, tokens and dollars over stored records."""
    prompt = sum((r.get("usage") or {}).get("prompt_tokens", 0) for r in records)
    cached = sum(budget.cached_tokens(r.get("usage")) for r in records)
    completion = sum((r.get("usage") or {}).get("completion_tokens", 0) for r in records)
    costs = [r.get("cost_usd") for r in records]
    unpriced = sum(c is None for c in costs)
    return {
        "requests": len(records),
        "prompt_tokens": prompt,
        "cached_prompt_tokens": cached,  # of prompt_tokens, served from the provider's prompt cache
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "cost_usd": round(sum(c for c in costs if c is not None), 6),
        "unpriced_requests": unpriced,  # calls whose model is not in llm.prices: cost_usd leaves them out
    }

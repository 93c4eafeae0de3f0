"""What `check`, `generate --dry-run` and `run`'s preflight can tell about LLM calls before any
call: the problems a run would otherwise hit after starting Ray and a server (preflight.py
applies them to a sweep's generation and LLM labeling directories).

- `endpoint_problems`: the endpoint rules the config out (a budget on a model with no price,
  batch mode on the embedded server: calls.check_endpoint), or the calls would go to the
  embedded SmolLM2 server and it is not installed (the line gives a command that installs it
  from where raysweep runs: server.install_hint);
- `store_problem`: a directory's response store was made with other settings (its identity, the
  `setup` a run checks: model, max_tokens, samples per call, prompt template, examples...);
- `cap_problem`: `llm.max_cost_usd` cannot pay for the next call even with nothing in flight
  (budget.py's sizing). Refused when nothing is stored yet (the run could only end with no
  rows); with stored replies it is a note, as the run then stops at once with what is stored.
"""

from __future__ import annotations

from pathlib import Path

from raysweep.errors import RaysweepError
from raysweep.llm.calls import Endpoint, below_one_call, check_endpoint, choose_endpoint, first_call
from raysweep.llm.config import LLMConfig
from raysweep.llm.store import ResponseStore, StoreError, check_setup


def endpoint_problems(llm: LLMConfig) -> tuple[Endpoint | None, list[str]]:
    """(where the calls would go, what rules that out); (None, []) when the key is missing: said
    by `generate` itself, where the key is read (on a cluster, maybe not this machine)."""
    try:
        endpoint = choose_endpoint(llm)
    except RaysweepError:
        return None, []
    problems: list[str] = []
    try:
        check_endpoint(llm, endpoint)
    except RaysweepError as exc:
        problems.append(str(exc))
    if endpoint.kind == "embedded":
        from raysweep.llm.server import missing_parts, not_installed

        if missing_parts():
            problems.append(f"llm: {not_installed()}")
    return endpoint, problems


def stored(store: Path | None) -> list[dict]:
    """The store's records; [] when there is none (or it is damaged: the run names the line)."""
    if store is None or not store.exists():
        return []
    try:
        return ResponseStore(store).load()
    except StoreError:
        return []


def store_problem(records: list[dict], setup: dict, store: Path | None) -> str | None:
    """The run's refusal of a store made with other settings, naming every one that differs."""
    try:
        check_setup(records, setup, store)
    except StoreError as exc:
        return str(exc)
    return None


def cap_problem(what: str, llm: LLMConfig, endpoint: Endpoint, messages: list[dict],
                records: list[dict]) -> tuple[str | None, str | None]:
    """(problem, note) about whether the cap pays for the next call of `what` (its `messages`)."""
    first = first_call(llm, endpoint, messages, records)
    if first is None or first["fits"]:
        return None, None
    line = below_one_call(llm, endpoint, first)
    if not records:
        return f"{line} (for {what})", None
    return None, f"{line}: {what} makes no more calls and goes on with the {len(records)} stored replies"

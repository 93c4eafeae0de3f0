"""Generation: Ray actors call the LLM under one shared limiter; paid replies go to the store first.

    generate(cfg, examples, val_texts, out_dir) -> GenerationResult

Top to bottom: where the calls go (`choose_endpoint`: OpenAI with a key, any `base_url`, or the
embedded server; one line says which and why before the first call), the pool of generator
actors (one call each, see client.py) that appends each reply to the store the moment it
arrives, and `generate`, which reads the store, works out which calls are still missing, asks
only for those, and turns the store into rows.

A call is numbered (`request_id`) and its prompt is a pure function of that number and the
config, so "what is missing" is simply "which numbers are not in the store".

Each round of missing calls goes either to the actor pool (online) or to one provider batch
(`llm.mode: batch`, batch.py); both store replies the same way, both stop cleanly at
`llm.max_cost_usd` (budget.py: every call reserves its worst case first), and the progress bar
shows calls, rows kept, tokens, dollars and time waited on the limiter (`RunProgress`).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import Counter, deque
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator

import pandas as pd
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from raysweep import dashboard
from raysweep.console import progress
from raysweep.errors import RaysweepError
from raysweep.llm.budget import BudgetActor, BudgetError, worst_case_usd
from raysweep.llm.client import GeneratorActor, estimate_tokens, one_line
from raysweep.llm.config import (EMBEDDED_MODEL, OPENAI_URL, KeyRoute, LLMConfig, endpoint_host,
                                  load_template)
from raysweep.llm.dedup import clean_rows, remove_by_meaning, similar_pairs
from raysweep.llm.limiter import LimitError, RateLimiterActor
from raysweep.llm.parse import failure_counts, parse_reply
from raysweep.llm.prompt import (DEFAULT_TEMPLATE, SST5_CLASS_NAMES, build_messages, check_examples,
                                 examples_digest, template_digest)
from raysweep.llm.server import ServerError, embedded_server, response_format_for
from raysweep.llm.store import STORE_NAME, ResponseStore, StoreError, check_setup, cost_usd, totals
from raysweep.runtime import start_ray, stop_ray

log = logging.getLogger(__name__)


class GenerationError(RaysweepError, RuntimeError):
    """Generation cannot go on. The message is one line; paid replies are already in the store."""


# --------------------------------------------------------------------------- where calls go


@dataclass(frozen=True)
class Endpoint:
    kind: str  # "api": OpenAI with a key; "base_url": any compatible server; "embedded": SmolLM2 here
    base_url: str | None  # None until the embedded server starts
    model: str
    samples_per_call: int
    max_tokens: int
    timeout: float  # seconds for one call
    key: KeyRoute | None = None  # where the generator actors read the key; None: no key is sent
    why: str = ""  # why this endpoint: printed with its host before the first call

    def line(self) -> str:
        return f"llm: calls go to {endpoint_host(self.base_url or '')} ({self.why})"


def choose_endpoint(cfg: LLMConfig) -> Endpoint:
    """Where the calls will go, decided without starting anything.

    The key is looked up here too, so that a missing one stops the run before any work; the
    generator actors read it again where they run (see KeyRoute)."""
    route = cfg.key_route()
    if cfg.base_url:
        if route is not None and route.read() is None:
            raise GenerationError(f"llm.api_key_env: {route.env} is not set, and it holds the key for "
                                  f"{endpoint_host(cfg.base_url)} (api_key_env: none if that server needs no key)")
        why = f"llm.base_url is given; key from {route}" if route else "llm.base_url is given; no key sent"
        return Endpoint("base_url", cfg.base_url, cfg.model, cfg.samples_per_call, cfg.max_tokens, cfg.timeout,
                        route, why)
    if route is not None and route.read():
        return Endpoint("api", OPENAI_URL, cfg.model, cfg.samples_per_call, cfg.max_tokens, cfg.timeout,
                        route, f"OpenAI: a key is in {route}")
    e = cfg.embedded
    why = f"no key in {route}" if route else "api_key_env: none"
    return Endpoint("embedded", None, EMBEDDED_MODEL, e.samples_per_call, e.max_tokens, e.timeout, None,
                    f"the embedded {EMBEDDED_MODEL} server: no llm.base_url and {why}")


@contextmanager
def running(endpoint: Endpoint, cfg: LLMConfig, out_dir: Path) -> Iterator[Endpoint]:
    """The endpoint, reachable: starts and stops the embedded server when that is the one."""
    if endpoint.kind != "embedded":
        yield endpoint
        return
    with embedded_server(cfg.embedded, out_dir / "llm-server.log") as url:
        yield replace(endpoint, base_url=url)


# --------------------------------------------------------------------------- the pool


class GeneratorPool:
    """Up to `size` generator actors, one call in flight each, kept alive across rounds
    (starting an actor takes seconds on a busy machine)."""

    def __init__(self, make_actor: Callable[[], object], size: int, max_deaths: int):
        self.make_actor = make_actor
        self.size = size
        self.max_deaths = max_deaths
        self.actors: list = []
        self.idle: list = []
        self.counts: Counter = Counter()  # retried_<kind>, actor_restarts
        self.budget_reached = False  # a call was refused by llm.max_cost_usd: start no more
        self.meter = dashboard.LLMMeter()  # the dashboard's LLM metrics (_launch gives the spent and the cap)

    def _new_actor(self) -> None:
        actor = self.make_actor()
        self.actors.append(actor)
        self.idle.append(actor)

    def run(self, calls: list[tuple], on_record: Callable[[dict], None],
            drain_timeout: float, enough: Callable[[], bool] = lambda: False) -> tuple[list[dict], str | None]:
        """Run `calls` ((request_id, messages, seed) each); every record goes to `on_record` (the
        store) the moment it arrives, and a dead actor's call is queued again on a new actor.
        Once `enough()` (the rows are there), no further call of the round is started.

        Returns (calls that gave up after their retries, the fatal error or None). On Ctrl-C the
        calls in flight, already being paid for, are awaited and stored before it propagates.
        """
        pending = deque(calls)
        in_flight: dict = {}
        gave_up: list[dict] = []
        fatal: str | None = None
        while len(self.actors) < min(self.size, len(calls)):
            self._new_actor()

        def dispatch():
            while self.idle and pending and fatal is None and not self.budget_reached and not enough():
                actor, job = self.idle.pop(), pending.popleft()
                in_flight[actor.call.remote(*job)] = (actor, job)

        def take(ref) -> None:
            nonlocal fatal
            actor, job = in_flight.pop(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayTaskError as exc:  # a bug, or the limiter gone: no use retrying
                self.idle.append(actor)
                log.debug("generator call %s failed", job[0], exc_info=True)
                fatal = f"call {job[0]} failed: {one_line(exc.cause if exc.cause is not None else exc, 160)}"
                return
            except ray.exceptions.RayActorError as exc:
                self.actors.remove(actor)
                self.counts["actor_restarts"] += 1
                pending.appendleft(job)
                if self.counts["actor_restarts"] > self.max_deaths:
                    fatal = f"generator actors keep dying ({self.counts['actor_restarts']} so far); last: {one_line(exc, 120)}"
                else:
                    log.warning("generator actor died during call %s; starting another", job[0])
                    self._new_actor()
                return
            self.idle.append(actor)
            self.counts.update({f"retried_{k}": v for k, v in result.get("retried", {}).items()})
            if "error" not in result:
                on_record(result)  # priced there (cost_usd), then counted on the dashboard
                self.meter.reply(result)
            elif result.get("budget"):
                self.budget_reached = True  # the calls in flight are reserved: let them finish
            elif result["fatal"]:
                fatal = result["error"]
            else:
                gave_up.append(result)

        try:
            dispatch()
            while in_flight:
                ready, _ = ray.wait(list(in_flight), num_returns=1)
                take(ready[0])
                dispatch()
        except KeyboardInterrupt:
            if in_flight:
                log.warning("interrupted: storing the %d call(s) in flight (up to %.0f s); Ctrl-C again to abandon them",
                            len(in_flight), drain_timeout)
                try:
                    ready, _ = ray.wait(list(in_flight), num_returns=len(in_flight), timeout=drain_timeout)
                    for ref in ready:
                        take(ref)
                except KeyboardInterrupt:
                    pass
            raise
        return gave_up, fatal

    def close(self) -> None:
        for actor in self.actors:
            ray.kill(actor)
        self.actors, self.idle = [], []


# --------------------------------------------------------------------------- from the store to rows


@dataclass
class GenerationResult:
    rows: pd.DataFrame  # text, llm_label: the kept rows, at most n_rows, in call order
    summary: dict  # requests, tokens, cost, rows kept, parse failures by kind, duplicates, leaks, ...
    removed: pd.DataFrame  # text, llm_label, request_id, reason, matches: duplicates and val leaks
    store_path: Path


@dataclass
class _State:
    kept: pd.DataFrame
    removed: pd.DataFrame
    rows_parsed: int
    repairs: dict
    failures: dict
    failure_log: list[dict]
    cut_replies: int


def content_of(record: dict) -> tuple[str | None, str | None]:
    """(message content, finish_reason) of a stored reply; (None, None) if it has no choice."""
    body = record.get("response")
    try:
        choice = body["choices"][0]
        return choice["message"].get("content"), choice.get("finish_reason")
    except (TypeError, KeyError, IndexError, AttributeError):
        return None, None


def evaluate(records: dict[int, dict], class_names, val_texts: list[str], near_duplicate: float,
             embed: Callable[[list[str]], object] | None = None, cosine: float | None = None) -> _State:
    """Parse every stored reply in call order, then drop val leaks and duplicates (by meaning too,
    with `embed` and a `cosine` threshold)."""
    rows, replies, failure_log, cut = [], [], [], 0
    for request_id in sorted(records):
        content, finish = content_of(records[request_id])
        cut += finish == "length"
        reply = parse_reply(content, class_names)
        replies.append(reply)
        rows.extend((text, label, request_id) for text, label in reply.rows)
        failure_log.extend({"request_id": request_id, "kind": kind, "text": text} for kind, text in reply.failures)
    frame = pd.DataFrame(rows, columns=["text", "llm_label", "request_id"])
    kept, removed = clean_rows(frame, val_texts, near_duplicate)
    if embed is not None and cosine is not None:
        kept, by_meaning = remove_by_meaning(kept, val_texts, embed, cosine)
        removed = pd.concat([removed, by_meaning], ignore_index=True)
    repairs, failures = failure_counts(replies)
    return _State(kept, removed, len(frame), repairs, failures, failure_log, cut)


def plan_calls(done: set[int], kept: int, n_rows: int, per_call: int, budget: int) -> list[int]:
    """The next request_ids to ask for: the lowest numbers not yet stored, as many as the rows
    still missing need at the yield seen so far (per_call before anything is known)."""
    room = budget - len(done)
    if kept >= n_rows or room <= 0:
        return []
    per_reply = kept / len(done) if done else per_call
    wanted = room if per_reply <= 0 else min(room, math.ceil((n_rows - kept) / per_reply))
    ids, candidate = [], 0
    while len(ids) < wanted:
        if candidate not in done:
            ids.append(candidate)
        candidate += 1
    return ids


def generate(cfg: LLMConfig, examples: pd.DataFrame, val_texts: list[str], out_dir: str | Path,
             class_names=SST5_CLASS_NAMES, say: Callable[[str], None] = print, wait: bool = True,
             cancel: bool = False, embed: Callable[[list[str]], object] | None = None) -> GenerationResult:
    """Generate `cfg.n_rows` labeled sentences, resuming from `out_dir`'s response store.

    `examples` (columns text, label) are the real rows shown in prompts (the study: D_labeled);
    generated sentences that also appear in `val_texts` are removed as leaks. Writes to `out_dir`
    the store (responses.jsonl), the parse failure log (parse_failures.jsonl) and the removed
    rows (removed.csv). On a complete store it makes no call and starts nothing.

    Anything that stops the run (the store, the embedded server, the limiter, the calls) is a
    GenerationError with a one-line message; paid replies are in the store by then. Before the
    first call, `say` gets one line naming the host the calls go to and why (Endpoint.line);
    at the end, one summary line. `llm.max_cost_usd` reached is not an error: the run stops
    cleanly with the rows it has (`summary["stopped"] == "budget"`). With `cfg.cosine_duplicate`,
    `embed(texts)` gives the sentence vectors dedup by meaning compares.

    In batch mode (`llm.mode: batch`, see batch.py) `wait=False` submits the missing calls and
    raises BatchPending unless they are done; a later run collects them. `cancel` stops the
    open batches, stores what they finished and submits nothing (`stopped: cancelled`).
    """
    from raysweep.llm.batch import BatchError

    if cfg.cosine_duplicate is not None and embed is None:
        raise ValueError("llm.cosine_duplicate needs the sentence vectors of an encoder (embed)")
    try:
        return _generate(cfg, examples, val_texts, Path(out_dir), class_names, say, wait, cancel, embed)
    except (StoreError, ServerError, LimitError, BudgetError, BatchError) as exc:
        raise GenerationError(str(exc)) from None


def check_endpoint(cfg: LLMConfig, endpoint: Endpoint) -> None:
    """What the endpoint rules out, refused before any call: a budget on a model the price table
    does not know (it could not be kept), batch mode on the embedded server (no Batch API)."""
    if cfg.max_cost_usd is not None and cfg.price_for(endpoint.model) is None:
        raise GenerationError(f"llm.max_cost_usd: {endpoint.model} has no price in llm.prices, so the budget cannot "
                              f"be kept; add llm.prices.{endpoint.model} (dollars per 1M tokens)")
    if cfg.mode == "batch" and endpoint.kind == "embedded":
        raise GenerationError("llm.mode: batch needs a provider's Batch API; the embedded server has none "
                              "(give llm.base_url or a key, or use mode: online)")


class RunProgress:
    """What the progress bar shows beside the calls: rows kept toward n_rows, tokens, dollars,
    time waited on the limiter. The same counts end in the summary line and generation.json."""

    def __init__(self, bar, n_rows: int, kept: int):
        self.bar, self.n_rows, self.kept = bar, n_rows, kept
        self.calls = self.tokens = 0
        self.usd = self.waited_s = 0.0
        self.note = ""  # a batch's state, in batch mode
        self.show()

    def add(self, record: dict, kept: int) -> None:
        self.calls += 1
        self.tokens += (record.get("usage") or {}).get("total_tokens", 0)
        self.usd += record.get("cost_usd") or 0.0
        self.waited_s += record.get("waited_s", 0.0)
        self.kept = kept
        self.show()  # before the count moves: the bar redraws on update, with this detail
        self.bar.update(1)

    def set_note(self, text: str) -> None:
        self.note = text
        self.show()

    def show(self) -> None:
        self.bar.set_detail(f"rows {self.kept:,}/{self.n_rows:,}, {self.tokens:,} tokens, ${self.usd:.4f}, "
                            f"{self.waited_s:.0f} s waited on the limiter" + (f"; {self.note}" if self.note else ""))


# Rows kept are counted again (parse + dedup of the whole store) at most this often while calls
# arrive: a few milliseconds for hundreds of rows, but not after each of thousands of calls.
RECOUNT_EVERY_S = 2.0


def _generate(cfg: LLMConfig, examples: pd.DataFrame, val_texts: list[str], out_dir: Path,
              class_names, say: Callable[[str], None], wait: bool, cancel: bool, embed=None) -> GenerationResult:
    started = time.monotonic()
    check_examples(examples, len(class_names))
    val_texts = list(val_texts)
    endpoint = choose_endpoint(cfg)
    check_endpoint(cfg, endpoint)  # before anything is written
    out_dir.mkdir(parents=True, exist_ok=True)
    template = load_template(cfg.template) if cfg.template else DEFAULT_TEMPLATE
    # What makes a stored reply answer *this* config's call n. Limits, concurrency, prices and
    # the URL may change between runs; these may not.
    setup = {"model": endpoint.model, "samples_per_call": endpoint.samples_per_call,
             "max_tokens": endpoint.max_tokens, "examples_per_class": cfg.examples_per_class,
             "temperature": cfg.temperature, "seed": cfg.seed, "template": template_digest(template),
             "examples": examples_digest(examples), "class_names": list(class_names)}
    store = ResponseStore(out_dir / STORE_NAME)
    records: dict[int, dict] = {}
    for record in store.load():
        records.setdefault(record["request_id"], record)
    check_setup(list(records.values()), setup, store.path)
    if store.torn_lines:
        log.warning("%s: cut off a torn last line (a run killed while writing); that call is asked again", store.path)
    stored_before = len(records)

    state = evaluate(records, class_names, val_texts, cfg.near_duplicate, embed, cfg.cosine_duplicate)
    budget = cfg.request_budget(endpoint.samples_per_call)
    spent_before = totals(list(records.values()))["cost_usd"]
    new_records: list[dict] = []
    recounted = time.monotonic()

    def on_record(record: dict) -> None:
        nonlocal state, recounted
        record["setup"] = setup
        record["endpoint"] = endpoint.kind
        record["cost_usd"] = cost_usd(record.get("usage"), endpoint.model, cfg.prices,
                                      (record.get("response") or {}).get("model"), record.get("mode", "online"))
        store.append(record)  # on disk before anything parses it
        records[record["request_id"]] = record
        new_records.append(record)
        # Near n_rows every reply is counted, so that no call is started for rows already there.
        if (time.monotonic() - recounted >= RECOUNT_EVERY_S
                or len(state.kept) + endpoint.samples_per_call >= cfg.n_rows):
            state = evaluate(records, class_names, val_texts, cfg.near_duplicate, embed, cfg.cosine_duplicate)
            recounted = time.monotonic()
        shown.add(record, len(state.kept))

    def build(ids: list[int]) -> list[tuple]:
        return [(i, build_messages(template, endpoint.samples_per_call, examples, cfg.examples_per_class,
                                   cfg.seed, i, class_names), cfg.seed + i) for i in ids]

    stopped: str | None = None
    with ExitStack() as stack:
        # In calls, the first round's (at the yield seen so far): if its replies keep fewer rows
        # than that yield, more rounds follow (up to the call cap), which the bar counts past its end.
        needed = len(plan_calls(set(records), len(state.kept), cfg.n_rows, endpoint.samples_per_call, budget))
        bar = stack.enter_context(progress(needed, "LLM calls", "calls"))
        shown = RunProgress(bar, cfg.n_rows, len(state.kept))
        runner = pool = None
        if cfg.mode == "batch":
            from raysweep.llm.batch import BatchRunner

            params = {"temperature": cfg.temperature, "max_tokens": endpoint.max_tokens}
            runner = BatchRunner(cfg, endpoint, out_dir, params, records.__contains__, spent_before, wait, shown.set_note)
            say(endpoint.line() + "; batch mode")
            if cancel:
                runner.cancel(say)
        while True:
            ids = plan_calls(set(records), len(state.kept), cfg.n_rows, endpoint.samples_per_call, budget)
            if embed is not None and cfg.cosine_duplicate is not None:
                ids = ids[: cfg.dedup_calls]  # small rounds: what dedup by meaning removes plans the next
            if not ids and not (runner and runner.open):
                break
            log.info("requesting %d call(s) of %d samples (%d rows kept of %d)", len(ids),
                     endpoint.samples_per_call, len(state.kept), cfg.n_rows)
            calls = build(ids)
            # Counted before the round: on_record may recount during it (near n_rows, or every
            # RECOUNT_EVERY_S), and the round's own rows must count as its progress.
            before = len(state.kept)
            if runner is not None:
                gave_up, fatal, reached = runner.run(calls, on_record), None, runner.budget_reached
            else:
                if pool is None:
                    if not affordable(cfg, endpoint, calls[0][1], spent_before):
                        stopped = "budget"  # not even one call fits: start nothing
                        break
                    pool = stack.enter_context(_launch(cfg, endpoint, out_dir, len(class_names), say, spent_before))
                gave_up, fatal = pool.run(calls, on_record, drain_timeout=endpoint.timeout + 5,
                                          enough=lambda: len(state.kept) >= cfg.n_rows)
                reached = pool.budget_reached
            check_round(fatal, [], len(calls), len(records), store.path)
            state = evaluate(records, class_names, val_texts, cfg.near_duplicate, embed, cfg.cosine_duplicate)
            if runner is not None and runner.cancelled:
                stopped = "cancelled"
                break
            if reached:
                stopped = "budget"
                break
            check_round(None, gave_up, len(calls), len(records), store.path)
            if len(state.kept) <= before:
                stopped = "no_progress"
                break  # a whole round added nothing: more calls would buy more of the same
        counts = pool.counts if pool else runner.counts if runner else Counter()
        shown.kept = len(state.kept)

    _write_logs(out_dir, state)
    rows = state.kept.head(cfg.n_rows)
    if len(rows) >= cfg.n_rows:
        stopped = None
    elif stopped is None or stopped == "no_progress" and len(records) >= budget:
        stopped = "max_requests"
    all_records = [records[i] for i in sorted(records)]
    # A small model often hands back the examples it was shown. They are real rows, not a leak
    # into val, so they stay; the count says how much of the pool is the prompt echoed.
    copies = {i for i, _ in similar_pairs(rows["text"].tolist(), examples["text"].astype(str).tolist(),
                                          cfg.near_duplicate)}
    this_run = totals(new_records)
    summary = {
        "endpoint": endpoint.kind,
        "mode": cfg.mode,
        "model": endpoint.model,
        **totals(all_records),
        "requests_this_run": len(new_records),
        "tokens_this_run": this_run["total_tokens"],
        "cost_usd_this_run": this_run["cost_usd"],
        "max_cost_usd": cfg.max_cost_usd,
        "limiter_wait_s": round(shown.waited_s, 2),
        "replies_cut_at_max_tokens": state.cut_replies,
        "rows_parsed": state.rows_parsed,
        "parse_repairs": state.repairs,
        "parse_failures": state.failures,
        "duplicates_removed": {"exact": int((state.removed["reason"] == "exact_duplicate").sum()),
                               "near": int((state.removed["reason"] == "near_duplicate").sum()),
                               **({"meaning": int((state.removed["reason"] == "same_meaning").sum()),
                                   "val_meaning": int((state.removed["reason"] == "val_meaning").sum())}
                                  if cfg.cosine_duplicate is not None else {})},
        "leaks_removed": int((state.removed["reason"] == "val_leak").sum()),
        "copies_of_examples": len(copies),
        "rows_surplus": max(0, len(state.kept) - cfg.n_rows),
        "rows_kept": len(rows),
        "rows_target": cfg.n_rows,
        "complete": len(rows) >= cfg.n_rows,
        # Why fewer rows than n_rows: budget (llm.max_cost_usd), max_requests (the call cap), or
        # no_progress (a whole round added no row); None when complete.
        "stopped": stopped,
        "resumed_from": stored_before,
        "retries": {k.removeprefix("retried_"): v for k, v in sorted(counts.items()) if k.startswith("retried_")},
        "actor_restarts": counts["actor_restarts"],
        **({"batches_created": counts["batches"], "requests_resubmitted": counts["resubmitted"]}
           if cfg.mode == "batch" else {}),
        "elapsed_s": round(time.monotonic() - started, 2),
    }
    say(summary_line(summary))
    return GenerationResult(rows[["text", "llm_label"]].reset_index(drop=True), summary, state.removed, store.path)


def affordable(cfg: LLMConfig, endpoint: Endpoint, messages: list[dict], spent_usd: float) -> bool:
    """Whether one call's worst case still fits in llm.max_cost_usd after `spent_usd`."""
    if cfg.max_cost_usd is None:
        return True
    worst = worst_case_usd(cfg.price_for(endpoint.model), estimate_tokens(messages, 0), endpoint.max_tokens)
    return spent_usd + worst <= cfg.max_cost_usd


_STOPPED = {
    "budget": "stopped at llm.max_cost_usd (${max_cost_usd:g}); the LLM pools run with these rows",
    "max_requests": "stopped at the call cap (llm.max_requests)",
    "no_progress": "stopped: a whole round of calls added no row",
    "cancelled": "the batches were cancelled; what they finished is kept",
}


def summary_line(s: dict) -> str:
    """The one line a run ends with: calls, tokens, dollars, rows, waiting, and why it stopped short."""
    line = (f"llm: {s['requests_this_run']:,} calls this run ({s['requests']:,} stored), "
            f"{s['tokens_this_run']:,} tokens, ${s['cost_usd_this_run']:.4f} this run (${s['cost_usd']:.4f} in all), "
            f"{s['rows_kept']:,} of {s['rows_target']:,} rows kept, {s['limiter_wait_s']:.0f} s waited on the limiter")
    if s.get("unpriced_requests"):
        line += f", {s['unpriced_requests']} calls unpriced (not in llm.prices)"
    if s["stopped"]:
        line += "; " + _STOPPED[s["stopped"]].format(**s)
    return line


def check_round(fatal: str | None, gave_up: list[dict], n_calls: int, n_stored: int, store_path: Path) -> None:
    """Stop the run in one line after a round of calls with a fatal error or calls that gave up."""
    if fatal:
        raise GenerationError(f"{fatal} ({n_stored} paid replies are safe in {store_path})")
    if gave_up:
        raise GenerationError(
            f"{len(gave_up)} of {n_calls} call(s) failed, e.g. call {gave_up[0]['request_id']}: "
            f"{gave_up[0]['error']}; rerun to ask for them again ({n_stored} replies kept in {store_path})")


@contextmanager
def _launch(cfg: LLMConfig, endpoint: Endpoint, out_dir: Path, num_classes: int,
            say: Callable[[str], None], spent_usd: float = 0.0) -> Iterator[GeneratorPool]:
    """Ray (if nobody started it), the endpoint, the shared limiter, the shared budget (when
    llm.max_cost_usd is set; `spent_usd` already paid) and the generator pool."""
    started_ray = start_ray()  # the caller's Ray if it started one (raysweep run / generate)
    limiter = money = pool = None
    try:
        with running(endpoint, cfg, out_dir) as live:
            say(live.line())
            limits = cfg.limits
            # Named actors of the sweep's namespace: the dashboard says whose LLM actors they are.
            limiter = RateLimiterActor.options(**dashboard.actor_options("LLMRateLimiter")).remote(
                limits.requests_per_minute, limits.tokens_per_minute, limits.burst_seconds, limits.headroom,
                limits.jitter_seconds)
            price = cfg.price_for(live.model)
            if cfg.max_cost_usd is not None:
                money = BudgetActor.options(**dashboard.actor_options("LLMBudget")).remote(cfg.max_cost_usd, spent_usd)
            params = {"temperature": cfg.temperature, "max_tokens": live.max_tokens}
            options: dict = {}
            size = cfg.concurrency
            if live.kind == "embedded":
                # llama.cpp's server answers one call at a time, and only on this machine.
                params["response_format"] = response_format_for(live.samples_per_call, num_classes)
                size = 1
                options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(
                    ray.get_runtime_context().get_node_id(), soft=False)

            def make_actor():
                # The actor gets where the key is (live.key), never the key: it reads it where it runs.
                return GeneratorActor.options(**options, **dashboard.actor_options("LLMGenerator")).remote(
                    live.base_url, live.model, params, live.key, limiter,
                    live.timeout, cfg.retries, cfg.retry_backoff, money, price)

            pool = GeneratorPool(make_actor, size, max_deaths=cfg.retries + size)
            pool.meter = dashboard.LLMMeter(spent_usd, cfg.max_cost_usd)
            yield pool
    finally:
        if pool is not None:
            pool.close()
        for actor in (limiter, money):
            if actor is not None:
                ray.kill(actor)
        if started_ray:
            stop_ray()


def _write_logs(out_dir: Path, state: _State) -> None:
    """The failure log and the removed rows: derived from the store, so rewritten on every run."""
    with open(out_dir / "parse_failures.jsonl", "w", encoding="utf-8") as f:
        for entry in state.failure_log:
            f.write(json.dumps(entry, ensure_ascii=False) + "\n")
    state.removed.to_csv(out_dir / "removed.csv", index=False)

"""Generation: the LLM writes labeled sentences; paid replies go to the store first.

    generate(cfg, examples, val_texts, out_dir) -> GenerationResult

`generate` reads the store, works out which calls are still missing, asks only for those
(through the paid-call loop both LLM steps share, llm/calls.py), and turns the store into rows.

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
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from raysweep.console import progress
from raysweep.llm.budget import BudgetError, longest_reply, stop_line
from raysweep.llm.calls import (Endpoint, GenerationError, PaidCalls, check_endpoint, check_round,  # noqa: F401
                                choose_endpoint, content_of)
from raysweep.llm.config import LLMConfig, load_template
from raysweep.llm.dedup import clean_rows, remove_by_meaning, similar_pairs
from raysweep.llm.limiter import LimitError
from raysweep.llm.parse import failure_counts, parse_reply
from raysweep.llm.prompt import (DEFAULT_TEMPLATE, SST5_CLASS_NAMES, build_messages, check_examples,
                                 examples_digest, template_digest)
from raysweep.llm.server import ServerError
from raysweep.llm.store import StoreError

log = logging.getLogger(__name__)


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


def rows_from_store(records: dict[int, dict], class_names, val_texts: list[str], near_duplicate: float,
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


def setup_for(cfg: LLMConfig, endpoint: Endpoint, template: str, examples: pd.DataFrame, class_names) -> dict:
    """What makes a stored reply answer *this* config's call n (the store's identity, checked by
    a run and by `check`/`--dry-run` alike). Limits, concurrency, prices and the URL may change
    between runs; these may not."""
    return {"model": endpoint.model, "samples_per_call": endpoint.samples_per_call,
            "max_tokens": endpoint.max_tokens, "examples_per_class": cfg.examples_per_class,
            "temperature": cfg.temperature, "seed": cfg.seed, "template": template_digest(template),
            "examples": examples_digest(examples), "class_names": list(class_names), **cfg.prompt_setup()}


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
    endpoint = choose_endpoint(cfg)
    check_endpoint(cfg, endpoint)  # before anything is written
    template = load_template(cfg.template) if cfg.template else DEFAULT_TEMPLATE
    setup = setup_for(cfg, endpoint, template, examples, class_names)
    with PaidCalls(cfg, endpoint, out_dir, setup, len(class_names), say) as calls:
        run = _Run(cfg, endpoint, calls, template, examples, class_names, list(val_texts), embed)
        stopped, counts, waited_s = run.rounds(out_dir, say, wait, cancel)
        # Read before the budget actor goes: the stop line says what was spent and reserved.
        money = run.unstarted or (run.runner.budget.stats() if run.runner else calls.budget_stats())
    state = run.state
    _write_logs(out_dir, state)
    rows = state.kept.head(cfg.n_rows)
    if len(rows) >= cfg.n_rows:
        stopped = None
    elif stopped is None or stopped == "no_progress" and len(calls.records) >= run.budget:
        stopped = "max_requests"
    # A small model often hands back the examples it was shown. They are real rows, not a leak
    # into val, so they stay; the count says how much of the pool is the prompt echoed.
    copies = {i for i, _ in similar_pairs(rows["text"].tolist(), examples["text"].astype(str).tolist(),
                                          cfg.near_duplicate)}
    removed = state.removed["reason"]
    summary = {
        "endpoint": endpoint.kind,
        "mode": cfg.mode,
        "model": endpoint.model,
        **calls.totals(),
        "max_cost_usd": cfg.max_cost_usd,
        # The cap's account (budget.py): peak reserved, calls sized down or held, why it stopped.
        **({"budget": money} if money and cfg.max_cost_usd is not None else {}),
        "limiter_wait_s": round(waited_s, 2),
        "replies_cut_at_max_tokens": state.cut_replies,
        "rows_parsed": state.rows_parsed,
        "parse_repairs": state.repairs,
        "parse_failures": state.failures,
        "duplicates_removed": {"exact": int((removed == "exact_duplicate").sum()),
                               "near": int((removed == "near_duplicate").sum()),
                               **({"meaning": int((removed == "same_meaning").sum()),
                                   "val_meaning": int((removed == "val_meaning").sum())}
                                  if cfg.cosine_duplicate is not None else {})},
        "leaks_removed": int((removed == "val_leak").sum()),
        "copies_of_examples": len(copies),
        "rows_surplus": max(0, len(state.kept) - cfg.n_rows),
        "rows_kept": len(rows),
        "rows_target": cfg.n_rows,
        "complete": len(rows) >= cfg.n_rows,
        # Why fewer rows than n_rows: budget (llm.max_cost_usd), max_requests (the call cap), or
        # no_progress (a whole round added no row); None when complete.
        "stopped": stopped,
        "retries": {k.removeprefix("retried_"): v for k, v in sorted(counts.items()) if k.startswith("retried_")},
        "actor_restarts": counts["actor_restarts"],
        **({"batches_created": counts["batches"], "requests_resubmitted": counts["resubmitted"]}
           if cfg.mode == "batch" else {}),
        "elapsed_s": round(time.monotonic() - started, 2),
    }
    say(summary_line(summary))
    return GenerationResult(rows[["text", "llm_label"]].reset_index(drop=True), summary, state.removed, calls.store.path)


class _Run:
    """The rounds of one generation: which calls are missing, their prompts, and the rows kept so far."""

    def __init__(self, cfg: LLMConfig, endpoint: Endpoint, calls: PaidCalls, template: str, examples: pd.DataFrame,
                 class_names, val_texts: list[str], embed):
        self.cfg, self.endpoint, self.calls, self.template = cfg, endpoint, calls, template
        self.examples, self.class_names, self.val_texts, self.embed = examples, class_names, val_texts, embed
        self.budget = cfg.request_budget(endpoint.samples_per_call)
        self.state = self.evaluate()
        self.recounted = time.monotonic()
        self.shown: RunProgress | None = None
        self.runner = None  # the batch runner, in batch mode
        self.unstarted: dict | None = None  # the budget's stats when not even the first call fitted

    def evaluate(self) -> _State:
        return rows_from_store(self.calls.records, self.class_names, self.val_texts, self.cfg.near_duplicate, self.embed,
                        self.cfg.cosine_duplicate)

    def missing(self) -> list[int]:
        return plan_calls(set(self.calls.records), len(self.state.kept), self.cfg.n_rows,
                          self.endpoint.samples_per_call, self.budget)

    def on_record(self, record: dict) -> None:
        self.calls.keep(record)
        # Near n_rows every reply is counted, so that no call is started for rows already there.
        if (time.monotonic() - self.recounted >= RECOUNT_EVERY_S
                or len(self.state.kept) + self.endpoint.samples_per_call >= self.cfg.n_rows):
            self.state = self.evaluate()
            self.recounted = time.monotonic()
        self.shown.add(record, len(self.state.kept))

    def build(self, ids: list[int]) -> list[tuple]:
        cfg = self.cfg
        return [(i, build_messages(self.template, self.endpoint.samples_per_call, self.examples,
                                   cfg.examples_per_class, cfg.seed, cfg.examples_call(i), self.class_names), cfg.seed + i)
                for i in ids]

    def rounds(self, out_dir: Path, say, wait: bool, cancel: bool):
        """Rounds of missing calls until the rows are there or a limit stops them; returns (why
        it stopped or None, the retry counts, the seconds waited on the limiter)."""
        cfg, calls = self.cfg, self.calls
        with ExitStack() as stack:
            # In calls, the first round's (at the yield seen so far): if its replies keep fewer rows
            # than that yield, more rounds follow (up to the call cap), which the bar counts past its end.
            bar = stack.enter_context(progress(len(self.missing()), "LLM calls", "calls"))
            self.shown = RunProgress(bar, cfg.n_rows, len(self.state.kept))
            runner = None
            if cfg.mode == "batch":
                from raysweep.llm.batch import BatchRunner

                params = {"temperature": cfg.temperature, "max_tokens": self.endpoint.max_tokens}
                runner = BatchRunner(cfg, self.endpoint, out_dir, params, calls.records.__contains__,
                                     calls.spent_before, wait, self.shown.set_note,
                                     longest_reply(calls.records.values()))
                say(self.endpoint.line() + "; batch mode")
                if cancel:
                    runner.cancel(say)
            self.runner = runner
            stopped = self._until_stopped(runner)
            self.shown.kept = len(self.state.kept)
            return stopped, runner.counts if runner else calls.counts, self.shown.waited_s

    def _until_stopped(self, runner) -> str | None:
        cfg, calls = self.cfg, self.calls
        while True:
            ids = self.missing()
            if self.embed is not None and cfg.cosine_duplicate is not None:
                ids = ids[: cfg.dedup_calls]  # small rounds: what dedup by meaning removes plans the next
            if not ids and not (runner and runner.open):
                return None
            log.info("requesting %d call(s) of %d samples (%d rows kept of %d)", len(ids),
                     self.endpoint.samples_per_call, len(self.state.kept), cfg.n_rows)
            batch = self.build(ids)
            # Counted before the round: on_record may recount during it (near n_rows, or every
            # RECOUNT_EVERY_S), and the round's own rows must count as its progress.
            before = len(self.state.kept)
            if runner is not None:
                gave_up, fatal, reached = runner.run(batch, self.on_record), None, runner.budget_reached
            else:
                first = calls.first_call(batch[0][1]) if calls.pool is None else None
                if first is not None and not first["fits"]:
                    # Not even one call fits: start nothing (no Ray, no actors), and say why.
                    self.unstarted = {"cap_usd": cfg.max_cost_usd, "spent_usd": calls.spent_before,
                                      "peak_reserved_usd": 0.0, "stop": first}
                    return "budget"
                gave_up, fatal, reached = calls.round(batch, self.on_record,
                                                      enough=lambda: len(self.state.kept) >= cfg.n_rows)
            check_round(fatal, [], len(batch), len(calls.records), calls.store.path)
            self.state = self.evaluate()
            if runner is not None and runner.cancelled:
                return "cancelled"
            if reached:
                return "budget"
            check_round(None, gave_up, len(batch), len(calls.records), calls.store.path)
            if len(self.state.kept) <= before:
                return "no_progress"  # a whole round added nothing: more calls would buy more of the same


_STOPPED = {
    "budget": "{budget_line}; the LLM pools run with these rows",
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
        budget = s.get("budget") or {"cap_usd": s["max_cost_usd"], "spent_usd": s["cost_usd"], "peak_reserved_usd": 0.0}
        line += "; " + _STOPPED[s["stopped"]].format(
            **s, budget_line=stop_line(budget) if s["stopped"] == "budget" else "")
    return line


def _write_logs(out_dir: Path, state: _State) -> None:
    """The failure log and the removed rows: derived from the store, so rewritten on every run."""
    with open(out_dir / "parse_failures.jsonl", "w", encoding="utf-8") as f:
        for entry in state.failure_log:
            f.write(json.dumps(entry, ensure_ascii=False) + "\n")
    state.removed.to_csv(out_dir / "removed.csv", index=False)

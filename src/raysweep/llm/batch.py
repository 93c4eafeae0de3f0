"""Batch mode (`llm.mode: batch`): the calls go to the provider's Batch API, at its batch price.

    BatchRunner(cfg, endpoint, out_dir, ...).run(calls, on_record) -> calls that failed for good

A round of calls becomes one batch: the requests are written as the provider's JSONL
(`custom_id` "call-<request_id>", the same body an online call sends), uploaded, the batch
created, polled until it ends, and its output downloaded; each reply goes to the response store
through `on_record`, like an online reply, with its `batch_id`.

Nothing paid for is lost and nothing is paid twice. Every step is appended to `batches.jsonl`
in the generation directory (fsynced, as the store) before the next one starts:

    {"event": "uploaded", "input_file_id", "request_ids", "worst_usd"}   the file is up
    {"event": "created", "batch_id", "input_file_id"}                    the batch exists (it will be billed)
    {"event": "cancel", "batch_id"}                                      `raysweep generate --cancel`
    {"event": "collected", "batch_id", "status", "stored", "failed"}     its replies are in the store

A run killed at any point resumes from this log: an uploaded file whose batch is not on record
is looked up among the provider's batches by its input file (a kill between creating the batch
and writing it down) and created only if it is not there; a created batch is polled again; a
finished one is downloaded again and only the replies not yet in the store are stored.

Failed and expired requests (a 5xx inside the batch, the window ending first, a batch that
fails validation) are asked again in a new batch, up to `llm.batch.resubmits` times a run;
what still fails ends the run with one line, and a rerun asks for them again. A new batch, not
online calls: the point of the mode is its price and its separate limits.

`llm.max_cost_usd` holds here as online: each request of a batch is sized on the budget before
the batch is uploaded (budget.py: its whole max_tokens, or sized down to a useful reply), and
settles with its reply's usage when collected. A request that must wait ends the batch (the
next round's batch sizes it once this one is settled); one that must stop ends the run. `wait=False` submits (or checks) and raises
BatchPending instead of waiting; the next run collects.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import openai

from raysweep.errors import RaysweepError
from raysweep.llm.budget import Budget, cost_usd, longest_reply, worst_case_usd
from raysweep.llm.client import estimate_tokens, one_line
from raysweep.llm.config import PriceConfig
from raysweep.llm.store import ResponseStore

BATCHES_NAME = "batches.jsonl"
ENDPOINT = "/v1/chat/completions"
ENDED = ("completed", "failed", "expired", "cancelled")


class BatchPending(RaysweepError):
    """Batches are submitted and not finished (`--no-wait`); the message says how to collect them."""


class BatchError(RaysweepError, RuntimeError):
    """The Batch API refused something; the message is one line and paid replies are in the store."""


def _stage(name: str) -> None:
    """A point where a run may be killed; tests replace this to kill it there."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class OpenBatch:
    input_file_id: str
    request_ids: list[int]
    worst_usd: float
    batch_id: str | None = None
    cancelled: bool = False
    ticket: int | None = None  # an earlier run's batch: its whole worst case, reserved as one
    tickets: dict = field(default_factory=dict)  # request_id -> its reservation, for a batch of this run


def open_batches(events: list[dict]) -> list[OpenBatch]:
    """The batches of the log not yet collected, in upload order."""
    batches: dict[str, OpenBatch] = {}
    for e in events:
        kind = e.get("event")
        if kind == "uploaded":
            batches[e["input_file_id"]] = OpenBatch(e["input_file_id"], e["request_ids"], e.get("worst_usd", 0.0))
        elif kind == "created" and e["input_file_id"] in batches:
            batches[e["input_file_id"]].batch_id = e["batch_id"]
        elif kind == "cancel":
            for b in batches.values():
                b.cancelled |= b.batch_id == e["batch_id"]
        elif kind == "collected":
            batches = {k: b for k, b in batches.items() if b.batch_id != e["batch_id"]}
    return list(batches.values())


def _jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


class BatchRunner:
    def __init__(self, cfg, endpoint, out_dir: Path, params: dict, stored: Callable[[int], bool],
                 spent_usd: float = 0.0, wait: bool = True, note: Callable[[str], None] = lambda text: None,
                 longest: int = 0):
        self.cfg, self.endpoint, self.params, self.stored = cfg, endpoint, params, stored
        self.wait, self.note = wait, note
        key = endpoint.key.read() if endpoint.key is not None else None
        # The openai client's own retries are fine here: a handful of control calls, no limiter.
        self.client = openai.OpenAI(base_url=endpoint.base_url, api_key=key or "no-key", timeout=120.0,
                                    max_retries=cfg.retries)
        self.price = cfg.price_for(endpoint.model)
        self.log = ResponseStore(out_dir / BATCHES_NAME)
        self.open = open_batches(self.log.load())
        self.budget = Budget(cfg.max_cost_usd, spent_usd, longest)  # longest: the store's longest reply
        for b in self.open:  # an earlier run's batches may still be billed: keep them reserved
            b.ticket = self.budget.reserve(b.worst_usd)
        self.counts: Counter = Counter()  # batches, resubmitted
        self.budget_reached = False
        self.cancelled = any(b.cancelled for b in self.open)

    # ------------------------------------------------------------------ a round

    def run(self, calls: list[tuple], on_record: Callable[[dict], None]) -> list[dict]:
        """Collect what earlier runs left, then ask for `calls` ((request_id, messages, seed) each)
        in batches. Returns the calls that failed in every attempt, as {"request_id", "error"}."""
        for b in list(self.open):
            self._finish(b, on_record)
        if self.cancelled:
            return []  # --cancel: keep what the cancelled batches finished, submit nothing new
        todo = [c for c in calls if not self.stored(c[0])]
        failed: dict[int, str] = {}
        for attempt in range(self.cfg.batch.resubmits + 1):
            if not todo or self.budget_reached:
                break
            self.counts["resubmitted"] += len(todo) if attempt else 0
            batch = self._submit(todo)
            if batch is None:
                break
            failed = self._finish(batch, on_record)
            todo = [c for c in todo if c[0] in failed]
        return [{"request_id": i, "error": message} for i, message in sorted(failed.items()) if not self.stored(i)]

    def _submit(self, calls: list[tuple]) -> OpenBatch | None:
        """Upload and create one batch of as many of `calls` as the budget and the provider allow."""
        lines, worst, tickets = [], 0.0, {}
        price = self.price or PriceConfig()  # no price and no cap: every request goes whole
        per_token = price.completion / 1e6
        for request_id, messages, seed in calls[: self.cfg.batch.max_requests_per_batch]:
            prompt_usd = worst_case_usd(price, estimate_tokens(messages, 0), 0)
            grant = self.budget.size(prompt_usd, per_token, self.params["max_tokens"])
            if "ticket" not in grant:
                # stop: not even a useful reply fits; wait: it would once this batch's own
                # requests settle, so the next round's batch takes it.
                self.budget_reached |= bool(grant.get("stop"))
                break
            tickets[request_id] = grant["ticket"]
            worst += prompt_usd + grant["max_tokens"] * per_token
            lines.append({"custom_id": f"call-{request_id}", "method": "POST", "url": ENDPOINT,
                          "body": {"model": self.endpoint.model, "messages": messages, "seed": seed, **self.params,
                                   "max_tokens": grant["max_tokens"]}})
        if not lines:
            return None
        data = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode()
        uploaded = self._api("upload the batch file", self.client.files.create,
                             file=("raysweep-batch.jsonl", data), purpose="batch")
        _stage("uploaded")
        batch = OpenBatch(uploaded.id, [int(line["custom_id"][5:]) for line in lines], worst, tickets=tickets)
        self.log.append({"event": "uploaded", "input_file_id": uploaded.id, "request_ids": batch.request_ids,
                         "worst_usd": worst, "time": _now()})
        self.open.append(batch)
        _stage("logged_upload")
        self._create(batch)
        return batch

    def _create(self, batch: OpenBatch) -> None:
        created = self._api("create the batch", self.client.batches.create, input_file_id=batch.input_file_id,
                            endpoint=ENDPOINT, completion_window=self.cfg.batch.completion_window,
                            metadata={"raysweep_input_file": batch.input_file_id})
        _stage("created")
        self._created(batch, created.id)

    def _created(self, batch: OpenBatch, batch_id: str) -> None:
        batch.batch_id = batch_id
        self.counts["batches"] += 1
        self.log.append({"event": "created", "batch_id": batch_id, "input_file_id": batch.input_file_id,
                         "time": _now()})

    def _adopt(self, batch: OpenBatch) -> None:
        """An uploaded file with no batch on record: the run died around creating it. The
        provider's own list says whether it exists; create it only if it does not."""
        for found in self._api("list the batches", self.client.batches.list, limit=100):
            if found.input_file_id == batch.input_file_id:
                self._created(batch, found.id)
                return
        self._create(batch)

    # ------------------------------------------------------------------ wait and collect

    def _finish(self, batch: OpenBatch, on_record: Callable[[dict], None]) -> dict[int, str]:
        """Wait for `batch` to end, store its replies; returns {request_id: why} of those that failed."""
        if batch.batch_id is None:
            self._adopt(batch)
        while True:
            info = self._api("check the batch", self.client.batches.retrieve, batch.batch_id)
            counts = info.request_counts
            done = f"{counts.completed + counts.failed}/{counts.total}" if counts else "?"
            self.note(f"batch {info.id} {info.status} ({done})")
            if info.status in ENDED:
                break
            if not self.wait:
                raise BatchPending(f"llm: batch {info.id} is {info.status} ({done} requests done); run the same "
                                   "`raysweep generate` again to collect it (--cancel stops it)")
            _stage("polling")
            time.sleep(self.cfg.batch.poll_interval)
        requests = {line["custom_id"]: line["body"] for line in self._download(batch.input_file_id)}
        failed: dict[int, str] = {}
        stored = billed = 0
        for line in self._download(info.output_file_id) if info.output_file_id else []:
            request_id = int(line["custom_id"][5:])
            body = line["response"]["body"]
            usage = body.get("usage") if isinstance(body, dict) else None
            if self.stored(request_id):
                continue  # stored by a run killed while collecting (and counted as spent since)
            used = cost_usd(self.price, usage) if self.price and usage else 0.0
            billed += used
            if request_id in batch.tickets:
                self.budget.settle(batch.tickets.pop(request_id), used, (usage or {}).get("completion_tokens"))
            on_record({"request_id": request_id, "request": requests.get(line["custom_id"]), "response": body,
                       "usage": usage, "mode": "batch", "batch_id": info.id, "attempts": 1, "retried": {},
                       "waited_s": 0.0, "time": _now()})
            stored += 1
            _stage("collecting")
        for line in self._download(info.error_file_id) if info.error_file_id else []:
            error = line.get("error") or ((line.get("response") or {}).get("body") or {}).get("error") or {}
            status = (line.get("response") or {}).get("status_code")
            failed[int(line["custom_id"][5:])] = one_line(
                f"{'HTTP ' + str(status) + ': ' if status else ''}{error.get('code') or ''} {error.get('message') or ''}")
        if info.status == "failed":  # the whole batch: no request ran
            why = "; ".join(e.message or "" for e in (info.errors.data or [])) if info.errors else ""
            failed.update({i: one_line(f"batch {info.id} failed: {why}") for i in batch.request_ids
                           if not self.stored(i)})
        if batch.ticket is not None:
            self.budget.settle(batch.ticket, billed)
        for ticket in batch.tickets.values():  # failed or expired in the batch: not billed
            self.budget.settle(ticket, 0.0)
        batch.tickets = {}
        self.log.append({"event": "collected", "batch_id": info.id, "status": info.status, "stored": stored,
                         "failed": sorted(failed), "time": _now()})
        self.open.remove(batch)
        return failed

    def _download(self, file_id: str) -> list[dict]:
        return _jsonl(self._api("download a batch file", self.client.files.content, file_id).text)

    # ------------------------------------------------------------------ cancel

    def cancel(self, say: Callable[[str], None]) -> int:
        """Ask the provider to stop every open batch; a run then collects what they finished."""
        n = 0
        for b in self.open:
            if b.batch_id is None:
                self._adopt(b)
            info = self._api("cancel the batch", self.client.batches.cancel, b.batch_id)
            self.log.append({"event": "cancel", "batch_id": b.batch_id, "time": _now()})
            b.cancelled = self.cancelled = True
            say(f"llm: cancelling batch {b.batch_id} ({info.status}, {len(b.request_ids)} requests)")
            n += 1
        return n

    def _api(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except openai.APIStatusError as exc:
            from raysweep.llm.client import error_message

            raise BatchError(f"HTTP {exc.status_code} from {self.endpoint.base_url} trying to {what}: "
                             f"{error_message(exc)}") from None
        except (openai.APITimeoutError, openai.APIConnectionError) as exc:
            raise BatchError(f"cannot reach {self.endpoint.base_url} to {what}: {one_line(exc)}; "
                             "rerun to resume (the batches are on record in batches.jsonl)") from None

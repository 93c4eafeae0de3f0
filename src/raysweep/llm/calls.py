"""The one loop of paid LLM calls that generation and annotation both run.

    with PaidCalls(cfg, endpoint, out_dir, setup, num_classes, say) as calls:
        ...calls.round(batch_of_calls, on_record)...   each reply kept in the store on arrival
        calls.totals()                                  what the summary reports

Top to bottom: where the calls go (`choose_endpoint`: OpenAI with a key, any `base_url`, or the
embedded server; one line says which and why before the first call), the pool of generator
actors (one call each, see client.py), and `PaidCalls`: the response store read back and checked
against this run's setup, the actors launched on the first call (Ray, the shared limiter and
dollar budget), every reply appended to the store with its setup, endpoint and cost before
anything parses it, and the totals of the store and of this run.

A caller (llm/generate.py, annotation.py) decides which calls are missing and what a reply means.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from raysweep import dashboard
from raysweep.errors import RaysweepError
from raysweep.llm.budget import MARGIN, BudgetActor, call as budget_call, longest_reply, smallest_reply, worst_case_usd
from raysweep.llm.client import GeneratorActor, estimate_tokens, one_line
from raysweep.llm.config import EMBEDDED_MODEL, OPENAI_URL, KeyRoute, LLMConfig, endpoint_host
from raysweep.llm.limiter import RateLimiterActor
from raysweep.llm.server import embedded_server, response_format_for
from raysweep.llm.store import STORE_NAME, ResponseStore, check_setup, cost_usd, totals
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
        self.budget = None  # the shared budget (launch sets it), read for the stop line
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
                if self.budget is not None:  # its reservation would never settle: count it as spent
                    budget_call(self.budget, "release", actor._actor_id.hex())
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
                # Not even a useful reply fits with nothing in flight (budget.py): final. The
                # calls in flight are reserved: let them finish.
                self.budget_reached = True
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




def content_of(record: dict) -> tuple[str | None, str | None]:
    """(message content, finish_reason) of a stored reply; (None, None) if it has no choice."""
    body = record.get("response")
    try:
        choice = body["choices"][0]
        return choice["message"].get("content"), choice.get("finish_reason")
    except (TypeError, KeyError, IndexError, AttributeError):
        return None, None



def check_endpoint(cfg: LLMConfig, endpoint: Endpoint) -> None:
    """What the endpoint rules out, refused before any call: a budget on a model the price table
    does not know (it could not be kept), batch mode on the embedded server (no Batch API)."""
    if cfg.max_cost_usd is not None and cfg.price_for(endpoint.model) is None:
        raise GenerationError(f"llm.max_cost_usd: {endpoint.model} has no price in llm.prices, so the budget cannot "
                              f"be kept; add llm.prices.{endpoint.model} (dollars per 1M tokens)")
    if cfg.mode == "batch" and endpoint.kind == "embedded":
        raise GenerationError("llm.mode: batch needs a provider's Batch API; the embedded server has none "
                              "(give llm.base_url or a key, or use mode: online)")



def first_call(cfg: LLMConfig, endpoint: Endpoint, messages: list[dict], records) -> dict | None:
    """The smallest reservation the next call can get (budget.py's sizing: its whole max_tokens
    before any reply is stored, else MARGIN x the longest stored reply), against what the cap
    leaves after the stored `records`: {"need_usd", "reply_tokens", "longest_reply", "left_usd",
    "fits"}; None without a cap or a price."""
    price = cfg.price_for(endpoint.model)
    if cfg.max_cost_usd is None or price is None:
        return None
    longest = longest_reply(records)
    reply = smallest_reply(longest, endpoint.max_tokens)
    need = worst_case_usd(price, estimate_tokens(messages, 0), reply)
    left = cfg.max_cost_usd - totals(list(records))["cost_usd"]
    return {"need_usd": round(need, 6), "reply_tokens": reply, "longest_reply": longest,
            "left_usd": round(max(0.0, left), 6), "fits": need <= left + 1e-12}


def below_one_call(cfg: LLMConfig, endpoint: Endpoint, first: dict) -> str:
    """The one line that refuses a cap which cannot pay for the next call even alone."""
    what = (f"a {first['reply_tokens']:,}-token reply ({MARGIN:g} x the longest stored)" if first["longest_reply"]
            else f"max_tokens {endpoint.max_tokens:,}")
    return (f"llm.max_cost_usd: ${cfg.max_cost_usd:g} is below one call: ${first['left_usd']:.4f} is left and the "
            f"next call needs up to ${first['need_usd']:.4f} (its prompt and {what} at {endpoint.model}'s price); "
            "raise the cap or lower max_tokens")



def check_round(fatal: str | None, gave_up: list[dict], n_calls: int, n_stored: int, store_path: Path) -> None:
    """Stop the run in one line after a round of calls with a fatal error or calls that gave up."""
    if fatal:
        raise GenerationError(f"{fatal} ({n_stored} paid replies are safe in {store_path})")
    if gave_up:
        raise GenerationError(
            f"{len(gave_up)} of {n_calls} call(s) failed, e.g. call {gave_up[0]['request_id']}: "
            f"{gave_up[0]['error']}; rerun to ask for them again ({n_stored} replies kept in {store_path})")


@contextmanager
def launch(cfg: LLMConfig, endpoint: Endpoint, out_dir: Path, num_classes: int,
            say: Callable[[str], None], spent_usd: float = 0.0, longest: int = 0) -> Iterator[GeneratorPool]:
    """Ray (if nobody started it), the endpoint, the shared limiter, the shared budget (when
    llm.max_cost_usd is set; `spent_usd` already paid, `longest` the longest stored reply) and
    the generator pool."""
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
                money = BudgetActor.options(**dashboard.actor_options("LLMBudget")).remote(
                    cfg.max_cost_usd, spent_usd, longest)
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
            pool.budget = money
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



# --------------------------------------------------------------------------- the loop


class PaidCalls:
    """The response store of one directory and the calls that add to it (see the module doc).

    On entry the stored replies are read (a torn last line cut off) and each must answer this
    run's `setup` (check_setup) and pass `check_record`; the actors start with the first round."""

    def __init__(self, cfg: LLMConfig, endpoint: Endpoint, out_dir: Path, setup: dict, num_classes: int,
                 say: Callable[[str], None], check_record: Callable[[dict, Path], None] | None = None):
        self.cfg, self.endpoint, self.out_dir, self.setup = cfg, endpoint, Path(out_dir), setup
        self.num_classes, self.say = num_classes, say
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.store = ResponseStore(self.out_dir / STORE_NAME)
        self.records: dict[int, dict] = {}
        for record in self.store.load():
            self.records.setdefault(record["request_id"], record)
        check_setup(list(self.records.values()), setup, self.store.path)
        for record in self.records.values():
            if check_record is not None:
                check_record(record, self.store.path)
        if self.store.torn_lines:
            log.warning("%s: cut off a torn last line (a run killed while writing); that call is asked again",
                        self.store.path)
        self.stored_before = len(self.records)
        self.spent_before = self.spent()
        self.new: list[dict] = []
        self.pool: GeneratorPool | None = None
        self._stack = ExitStack()

    def __enter__(self) -> PaidCalls:
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()  # the actors, the limiter, the budget and Ray if this started it

    def spent(self) -> float:
        return totals(list(self.records.values()))["cost_usd"]

    def keep(self, record: dict, **extra) -> None:
        """A paid reply: tagged with what it answers, its endpoint and its cost, then appended to
        the store (fsynced) before anything parses it."""
        record.update(extra)
        record["setup"] = self.setup
        record["endpoint"] = self.endpoint.kind
        record["cost_usd"] = cost_usd(record.get("usage"), self.endpoint.model, self.cfg.prices,
                                      (record.get("response") or {}).get("model"), record.get("mode", "online"))
        self.store.append(record)
        self.records[record["request_id"]] = record
        self.new.append(record)

    def first_call(self, messages: list[dict]) -> dict | None:
        return first_call(self.cfg, self.endpoint, messages, self.records.values())

    def budget_stats(self) -> dict | None:
        """The shared budget's stats (budget.py) once the round is over; None without a cap."""
        money = self.pool.budget if self.pool is not None else None
        return budget_call(money, "stats") if money is not None else None

    def round(self, calls: list[tuple], on_record: Callable[[dict], None],
              enough: Callable[[], bool] = lambda: False) -> tuple[list[dict], str | None, bool]:
        """Run `calls` ((request_id, messages, seed[, params]) each) on the actors, launched on
        the first round with the dollars earlier runs paid counted; `on_record` gets each reply.
        Returns (calls that gave up, the fatal error or None, whether the budget was reached)."""
        if self.pool is None:
            self.pool = self._stack.enter_context(
                launch(self.cfg, self.endpoint, self.out_dir, self.num_classes, self.say, self.spent_before,
                       longest_reply(self.records.values())))
        gave_up, fatal = self.pool.run(calls, on_record, drain_timeout=self.endpoint.timeout + 5, enough=enough)
        return gave_up, fatal, self.pool.budget_reached

    @property
    def counts(self) -> Counter:
        return self.pool.counts if self.pool else Counter()

    def totals(self) -> dict:
        """The store's requests, tokens and dollars, and this run's share of them."""
        this_run = totals(self.new)
        return {**totals([self.records[i] for i in sorted(self.records)]), "requests_this_run": len(self.new),
                "tokens_this_run": this_run["total_tokens"], "cost_usd_this_run": this_run["cost_usd"],
                "resumed_from": self.stored_before}

"""What a person watching a sweep sees on the Ray dashboard: names, and raysweep's own metrics.

Names. Ray Data datasets are named `raysweep:<sweep>:<stage>` (`encode`, `score`; Ray adds an id);
the LLM actors are the classes `LLMGenerator`, `LLMRateLimiter` and `LLMBudget`, named actors in
the namespace `raysweep:<sweep>`; the trial actors of Tune say which pack they run (sweep.py).

Metrics. `ray.util.metrics` counters and gauges, each labeled `sweep`, which Ray serves on every
node's Prometheus endpoint (`--metrics-export-port`) as `ray_raysweep_*` and which the dashboard's
Metrics view charts once Prometheus and Grafana are set up (docs/cluster.md, "Watching a sweep").
They are all recorded by the sweep's driver, from what reaches it anyway (a trial's result, an LLM
reply, a round of labels), so no worker needs to know the sweep's name, and a run without Ray
(`raysweep select`, the unit tests) records nothing and imports nothing of Ray.

`follow(name)` says which sweep the process runs; a library caller that never calls it gets `-`.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import uuid

_sweep = "-"
_run = uuid.uuid4().hex[:6]  # names this process's actors apart from another driver's of the same sweep
_lock = threading.Lock()
_made: dict[str, object] = {}
_actors = 0

# name -> (kind, description); every one carries the tag `sweep`, a few one more.
METRICS = {
    # Gauges, not counters, so that they read 0 from the run's start (a counter shows once it moves).
    "raysweep_cells_done": ("gauge", "Cells this run finished with a result"),
    "raysweep_cells_failed": ("gauge", "Cells this run failed (their error is in cells/<id>.json)"),
    "raysweep_cells_running": ("gauge", "Cells in the Tune trials running now"),
    "raysweep_cells_to_run": ("gauge", "Cells this run of the sweep set out to run"),
    "raysweep_trainings": ("counter", "Models trained (kind: trial, or scoring for the strategies' scoring models)"),
    "raysweep_llm_calls": ("counter", "LLM calls answered (paid for)"),
    "raysweep_llm_tokens": ("counter", "LLM tokens used (kind: prompt or completion)"),
    "raysweep_llm_dollars_spent": ("gauge", "Dollars spent on LLM calls, earlier runs' included (what the cap counts)"),
    "raysweep_llm_dollars_cap": ("gauge", "llm.max_cost_usd (absent when there is no cap)"),
    "raysweep_llm_limiter_wait_seconds": ("gauge", "Seconds this run's LLM calls waited on the shared rate limiter"),
    "raysweep_rows_labeled": ("counter", "Rows given a label (by: llm for llm_annotated, teacher for the LLM pools)"),
}
_EXTRA_TAGS = {"raysweep_trainings": ("kind",), "raysweep_llm_tokens": ("kind",), "raysweep_rows_labeled": ("by",)}


def follow(sweep: str) -> None:
    """Name and label what this process does from now on after `sweep`."""
    global _sweep
    _sweep = sweep or "-"


def sweep() -> str:
    return _sweep


def dataset_name(stage: str) -> str:
    """The name a Ray Data dataset of `stage` shows on the dashboard (Ray appends its own id)."""
    return f"raysweep:{_sweep}:{stage}"


def actor_options(kind: str) -> dict:
    """`.options(...)` that make an actor of `kind` (LLMGenerator, ...) a named actor of the sweep:
    unique per process and call, since a name can be held only once in a namespace."""
    global _actors
    with _lock:
        _actors += 1
        n = _actors
    return {"name": f"{kind}-{_run}-{n}", "namespace": f"raysweep:{_sweep}"}


# ------------------------------------------------------------------------------------ metrics


def _metric(name: str):
    """The metric object, made on first use; None when Ray is not running in this process."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return None
    with _lock:
        if name not in _made:
            from ray.util.metrics import Counter, Gauge

            kind, description = METRICS[name]
            cls = Counter if kind == "counter" else Gauge
            _made[name] = cls(name, description=description, tag_keys=("sweep", *_EXTRA_TAGS.get(name, ())))
        return _made[name]


def _record(name: str, value: float, **tags: str) -> None:
    metric = _metric(name)
    if metric is None:
        return
    tags = {"sweep": _sweep, **tags}
    if METRICS[name][0] == "counter":
        if value > 0:  # a counter refuses 0 and less
            metric.inc(value, tags=tags)
        return
    metric.set(value, tags=tags)
    with _lock:
        _gauges[(name, tuple(sorted(tags.items())))] = value
        if not _refresher:
            _refresher.append(threading.Thread(target=_refresh, name="raysweep-gauges", daemon=True))
            _refresher[0].start()


# Ray 2.60 exports a gauge's value only for a while after it was set (twice the export interval,
# RAY_metrics_report_interval_ms, 10 s by default), then drops the series: a gauge that did not
# move (cells to run, the cap) would vanish from Prometheus. A thread sets each one again.
_gauges: dict[tuple[str, tuple], float] = {}
_refresher: list[threading.Thread] = []


def refresh_every() -> float:
    return min(5.0, int(os.environ.get("RAY_metrics_report_interval_ms", "10000")) / 2000)


def _refresh() -> None:
    while True:
        time.sleep(refresh_every())
        ray = sys.modules.get("ray")
        if ray is None or not ray.is_initialized():
            continue
        with _lock:
            current = list(_gauges.items())
        for (name, tags), value in current:
            metric = _made.get(name)
            if metric is not None:
                metric.set(value, tags=dict(tags))


_cells = {"done": 0, "failed": 0}  # this run's, for the gauges


def cells_planned(n: int) -> None:
    """A run of the sweep starts `n` cells: every cell gauge starts from here."""
    _cells.update(done=0, failed=0)
    _record("raysweep_cells_to_run", n)
    for name in ("running", "done", "failed"):
        _record(f"raysweep_cells_{name}", 0)


def cells_running(n: int) -> None:
    _record("raysweep_cells_running", n)


def cells_finished(ok: int, failed: int) -> None:
    _cells["done"] += ok
    _cells["failed"] += failed
    _record("raysweep_cells_done", _cells["done"])
    _record("raysweep_cells_failed", _cells["failed"])


def trained(kind: str, n: int) -> None:
    _record("raysweep_trainings", n, kind=kind)


def rows_labeled(by: str, n: int) -> None:
    _record("raysweep_rows_labeled", n, by=by)


class LLMMeter:
    """The LLM metrics of one run of calls: each reply's tokens and wait, and the dollars spent
    counted from what earlier runs paid (`spent_usd`), which is what llm.max_cost_usd caps."""

    def __init__(self, spent_usd: float = 0.0, cap_usd: float | None = None):
        self.spent, self.waited = spent_usd, 0.0
        _record("raysweep_llm_dollars_spent", self.spent)
        _record("raysweep_llm_limiter_wait_seconds", 0.0)
        if cap_usd is not None:
            _record("raysweep_llm_dollars_cap", cap_usd)

    def reply(self, record: dict) -> None:
        """A paid reply as the store keeps it (usage, cost_usd, waited_s)."""
        usage = record.get("usage") or {}
        _record("raysweep_llm_calls", 1)
        _record("raysweep_llm_tokens", usage.get("prompt_tokens") or 0, kind="prompt")
        _record("raysweep_llm_tokens", usage.get("completion_tokens") or 0, kind="completion")
        self.waited += record.get("waited_s") or 0.0
        _record("raysweep_llm_limiter_wait_seconds", self.waited)
        self.spent += record.get("cost_usd") or 0.0
        _record("raysweep_llm_dollars_spent", self.spent)

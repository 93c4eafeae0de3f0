"""raysweep.dashboard without Ray: the names it gives, and what its metrics record (through a
stand-in for ray.util.metrics); tests/cluster/test_dashboard.py reads them off a real head."""

from __future__ import annotations

import sys
import types

import pytest

from raysweep import dashboard


class FakeMetric:
    def __init__(self, name, description="", tag_keys=()):
        self.name, self.tag_keys, self.values = name, tag_keys, {}

    def _key(self, tags):
        assert set(tags) == set(self.tag_keys), (self.name, tags)
        return tuple(sorted(tags.items()))

    def inc(self, value, tags):
        assert value > 0  # Ray's Counter refuses 0
        self.values[self._key(tags)] = self.values.get(self._key(tags), 0) + value

    def set(self, value, tags):
        self.values[self._key(tags)] = value


@pytest.fixture
def fake_ray(monkeypatch):
    """sys.modules' ray replaced by a stand-in that is 'initialised' and has ray.util.metrics."""
    ray = types.ModuleType("ray")
    ray.is_initialized = lambda: True
    metrics = types.ModuleType("ray.util.metrics")
    metrics.Counter = type("Counter", (FakeMetric,), {})
    metrics.Gauge = type("Gauge", (FakeMetric,), {})
    util = types.ModuleType("ray.util")
    util.metrics = metrics
    ray.util = util
    for name, module in (("ray", ray), ("ray.util", util), ("ray.util.metrics", metrics)):
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(dashboard, "_made", {})
    monkeypatch.setattr(dashboard, "_gauges", {})
    monkeypatch.setattr(dashboard, "_sweep", "-")

    def value(name, **tags):
        return dashboard._made[name].values.get(tuple(sorted({"sweep": dashboard.sweep(), **tags}.items())))

    return value


def test_names_carry_the_sweep(monkeypatch):
    monkeypatch.setattr(dashboard, "_sweep", "-")
    assert dashboard.dataset_name("encode") == "raysweep:-:encode"
    dashboard.follow("paper")
    assert dashboard.dataset_name("score") == "raysweep:paper:score"
    a, b = dashboard.actor_options("LLMGenerator"), dashboard.actor_options("LLMGenerator")
    assert a["namespace"] == b["namespace"] == "raysweep:paper"
    assert a["name"].startswith("LLMGenerator-") and a["name"] != b["name"]  # a name is held once per namespace


def test_without_ray_nothing_is_recorded_and_ray_is_not_imported(monkeypatch):
    monkeypatch.delitem(sys.modules, "ray", raising=False)
    dashboard.cells_planned(3)
    dashboard.LLMMeter(0.5, 2.0).reply({"usage": {"prompt_tokens": 3}, "cost_usd": 0.1})
    assert "ray" not in sys.modules


def test_cell_llm_and_label_metrics_record_what_happened(fake_ray):
    dashboard.follow("paper")
    dashboard.cells_planned(5)
    assert fake_ray("raysweep_cells_done") == 0 and fake_ray("raysweep_cells_failed") == 0  # visible from the start
    dashboard.cells_running(3)
    dashboard.cells_finished(2, 1)
    dashboard.cells_finished(1, 0)
    dashboard.trained("trial", 2)
    dashboard.trained("scoring", 0)  # nothing trained: a counter is not moved by 0
    assert (fake_ray("raysweep_cells_to_run"), fake_ray("raysweep_cells_running")) == (5, 3)
    assert (fake_ray("raysweep_cells_done"), fake_ray("raysweep_cells_failed")) == (3, 1)
    assert fake_ray("raysweep_trainings", kind="trial") == 2 and fake_ray("raysweep_trainings", kind="scoring") is None

    meter = dashboard.LLMMeter(spent_usd=0.25, cap_usd=1.0)  # 0.25 paid by an earlier run
    for cost in (0.1, 0.05):
        meter.reply({"usage": {"prompt_tokens": 100, "completion_tokens": 20}, "cost_usd": cost, "waited_s": 1.5})
    assert fake_ray("raysweep_llm_calls") == 2
    assert fake_ray("raysweep_llm_tokens", kind="prompt") == 200
    assert fake_ray("raysweep_llm_tokens", kind="completion") == 40
    assert fake_ray("raysweep_llm_dollars_spent") == pytest.approx(0.40)
    assert fake_ray("raysweep_llm_dollars_cap") == 1.0
    assert fake_ray("raysweep_llm_limiter_wait_seconds") == 3.0
    dashboard.rows_labeled("llm", 7)
    assert fake_ray("raysweep_rows_labeled", by="llm") == 7
    assert set(dashboard._made) <= set(dashboard.METRICS)


def test_gauges_are_set_again_before_ray_drops_them(fake_ray, monkeypatch):
    # Ray 2.60 drops a gauge's series twice its export interval after the last set.
    monkeypatch.setenv("RAY_metrics_report_interval_ms", "1000")
    assert dashboard.refresh_every() == 0.5
    monkeypatch.delenv("RAY_metrics_report_interval_ms")
    assert dashboard.refresh_every() == 5.0
    dashboard.cells_planned(4)
    assert dashboard._gauges[("raysweep_cells_to_run", (("sweep", "-"),))] == 4
    assert dashboard._refresher and dashboard._refresher[0].is_alive()

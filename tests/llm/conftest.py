"""Fixtures for the LLM tests: a scriptable fake OpenAI server, real examples, val sentences."""

from __future__ import annotations

import pandas as pd
import pytest

from raysweep.llm.config import load_llm_config
from raysweep.llm.fake_server import FakeOpenAI


class FakeClock:
    """A clock that moves only when told to: the limiter's arithmetic, exactly."""

    def __init__(self, t: float = 0.0):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def fake_openai():
    """`fake_openai(script=[...], ...)` starts a FakeOpenAI on 127.0.0.1; all are stopped after the test."""
    servers = []

    def start(**kwargs) -> FakeOpenAI:
        server = FakeOpenAI(**kwargs).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def examples():
    """Five real-looking rows per class."""
    words = ["awful", "dull", "fine", "good", "superb"]
    return pd.DataFrame({
        "text": [f"a {words[label]} film , take {k} ." for label in range(5) for k in range(5)],
        "label": [label for label in range(5) for _ in range(5)],
    })


@pytest.fixture
def val_texts():
    return ["the acting is wooden and the plot is thin .", "a warm , funny and touching story ."]


@pytest.fixture
def llm_cfg():
    """`llm_cfg(base_url, **overrides)`: a config for fast runs against a fake server."""

    def make(base_url: str, **overrides):
        data = {"base_url": base_url, "api_key_env": "none", "model": "fake-model", "n_rows": 20, "samples_per_call": 5,
                "concurrency": 2, "retries": 3, "retry_backoff": 0.01, "timeout": 10.0,
                "prices": {"fake-model": {"prompt": 1.0, "completion": 2.0}}}
        data.update(overrides)
        return load_llm_config(data)

    return make

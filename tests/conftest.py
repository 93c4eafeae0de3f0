"""Shared fixtures. Tests that need Ray share one local Ray instance per test session."""

from __future__ import annotations

import os
import tempfile

import pytest

# No model or data set can come from a hub here, and none should be tried.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray with 2 CPUs, shared by the session's tests and shut down at the end.

    `address="local"` always starts a fresh instance: a bare `ray.init()` would attach to any
    cluster another process started on this machine with `ray start`.
    """
    import ray

    temp_dir = tempfile.mkdtemp(prefix="rs-ray-", dir="/tmp")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             _temp_dir=temp_dir, configure_logging=False)
    yield ray
    ray.shutdown()

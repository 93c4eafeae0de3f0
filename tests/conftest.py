"""Shared fixtures. Tests that need Ray share one local Ray instance per test session."""

from __future__ import annotations

import os
import tempfile

import pytest

from tiny import ARCHITECTURES, make_tiny_encoder

# No model or data set can come from a hub here, and none should be tried.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Fake AWS credentials for the moto S3 server, in a credentials file named before any Ray worker
# starts (workers inherit this environment). Not in the URI, which `run` refuses, nor in
# AWS_SECRET_ACCESS_KEY, which Ray Tune would copy into its logged runtime_envs (see sweep.py).
# They also keep every test away from a real AWS account, as moto advises.
_aws = os.path.join(tempfile.mkdtemp(prefix="rs-aws-"), "credentials")
with open(_aws, "w") as _f:
    _f.write("[default]\naws_access_key_id = testing\naws_secret_access_key = testing\n")
os.environ["AWS_SHARED_CREDENTIALS_FILE"] = _aws
for _name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE"):
    os.environ.pop(_name, None)


def pytest_configure(config):
    # One torch thread: tests run beside Ray workers on 2 cores, and oversubscribed OpenMP
    # threads spin-wait (a tiny backward pass went from 26 ms to 500 ms with two threads).
    import torch

    torch.set_num_threads(1)


_RAY_INIT = pytest.StashKey()  # a not-slow test's real ray.init, put back after it


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """`-m "not slow"` must start no Ray (it is the quick loop): a test that starts Ray, itself,
    through a fixture (ray_local) or through the code under test, fails until it is marked slow."""
    if item.get_closest_marker("slow") is None:
        import ray

        def refuse(*args, **kwargs):
            raise RuntimeError(f"{item.nodeid} is not marked slow but starts Ray: mark it @pytest.mark.slow")

        item.stash[_RAY_INIT] = (ray, ray.init)  # the module itself: a test may swap sys.modules["ray"]
        ray.init = refuse


def pytest_runtest_teardown(item):
    if _RAY_INIT in item.stash:
        # Not `import ray`: this hook may run before the test's monkeypatch is undone, while
        # sys.modules["ray"] is still a test's stand-in (tests/test_engine.py's fake_ray), and the
        # real module would keep `refuse` for every later test of this process.
        ray, init = item.stash[_RAY_INIT]
        ray.init = init


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


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    return make_tiny_encoder("bert", tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session", params=ARCHITECTURES)
def tiny_encoder(request, tmp_path_factory):
    """One tiny random encoder per architecture whose attribute names differ from BertModel's."""
    return make_tiny_encoder(request.param, tmp_path_factory.mktemp(f"tiny-{request.param}"))


@pytest.fixture(scope="session")
def sst5_subset(tmp_path_factory):
    """The first 300 train and 100 dev rows of the bundled SST-5: real text, seconds to embed."""
    import pandas as pd

    from raysweep.data import bundled_path

    df = pd.read_csv(bundled_path(), keep_default_na=False)
    small = pd.concat([df[df.split == "train"].head(300), df[df.split == "dev"].head(100)])
    path = tmp_path_factory.mktemp("data") / "sst5-small.csv"
    small.to_csv(path, index=False)
    return path

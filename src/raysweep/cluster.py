"""What a cluster can provide: the node shapes it has now or can scale to.

    capacity(address=None) -> Capacity

The encoder and scoring actor pools are sized from this, not from `ray.available_resources()`
at the instant of the call: on cluster.yaml (a head with `CPU: 0`, `min_workers: 0`) that
instant has no worker at all, which would give one CPU actor and no GPU for a whole pass while
the autoscaler is about to bring four GPU workers. The same answer says whether a local
`--output` path can work (one node) or needs a filesystem every node mounts.

Where the shapes come from:
- no Ray in this process and no address: the local machine (what a fresh local Ray would be);
- a running cluster: every live node's CPUs and GPUs, plus the node types of its autoscaler
  config with their `max_workers`. The autoscaler reads that config from the head's
  `~/ray_bootstrap_config.yaml` (`ray up` writes it; cluster.yaml's head starts Ray with
  `--autoscaling-config=~/ray_bootstrap_config.yaml`), and the sweep's driver runs on the head,
  so it reads the same file. `$RAYSWEEP_AUTOSCALING_CONFIG` names another file.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

AUTOSCALING_CONFIG = "~/ray_bootstrap_config.yaml"


@dataclass(frozen=True)
class NodeShape:
    """One kind of node: its CPUs and GPUs, how many run now, and how many there can be."""

    name: str  # "local", "running" or the autoscaler's node type name
    cpus: float
    gpus: float
    running: int
    max_count: int  # running now, or the autoscaler's max_workers for the type if more


@dataclass(frozen=True)
class Capacity:
    """The node shapes a cluster has or can scale to (or the local machine's)."""

    shapes: tuple[NodeShape, ...]
    source: str  # where the answer came from, for messages: "local machine", "running cluster", a config path

    def fits(self, cpus: float, gpus: float = 0) -> bool:
        """Can any node ever host one bundle of `cpus` CPUs and `gpus` GPUs?"""
        return any(s.max_count > 0 and s.cpus >= cpus and s.gpus >= gpus for s in self.shapes)

    @property
    def max_nodes(self) -> int:
        return sum(s.max_count for s in self.shapes)

    @property
    def multi_node(self) -> bool:
        """More than one node now, or the autoscaler may add one."""
        return self.max_nodes > 1

    @property
    def max_cpus(self) -> float:
        """CPUs of the cluster at its largest."""
        return sum(s.cpus * s.max_count for s in self.shapes)

    @property
    def max_gpus(self) -> float:
        return sum(s.gpus * s.max_count for s in self.shapes)

    def actors(self, cpus: float = 1, gpus: float = 0) -> int:
        """How many actors of (`cpus`, `gpus`) the cluster can hold at its largest (at least 1)."""
        total = 0
        for s in self.shapes:
            per_node = min(s.cpus // cpus if cpus else float("inf"), s.gpus // gpus if gpus else float("inf"))
            if per_node != float("inf"):
                total += int(per_node) * s.max_count
        return max(1, total)

    def describe(self) -> str:
        return ", ".join(f"{s.name}: {s.running}/{s.max_count} x ({s.cpus:g} CPU, {s.gpus:g} GPU)"
                         for s in self.shapes) + f" [{self.source}]"


def capacity(address: str | None = None) -> Capacity:
    """What the cluster at `address` (or the one this process is connected to) has or can scale to.

    Without Ray in this process and without an address (or with "local"): the local machine,
    which is what a fresh local Ray would be. With an address and no Ray yet, the cluster is
    joined the way a sweep joins it.
    """
    import ray

    if not ray.is_initialized():
        if address in (None, "local"):
            return _local()
        from raysweep.runtime import start_ray

        start_ray(address)
    running = Counter()
    for node in ray.nodes():
        if node.get("Alive"):
            res = node.get("Resources", {})
            running[(float(res.get("CPU", 0)), float(res.get("GPU", 0)))] += 1
    return combine(running, autoscaler_node_types())


def combine(running: Counter, node_types: dict[str, dict], source: str | None = None) -> Capacity:
    """Running nodes by (cpus, gpus), merged with the autoscaler's node types: a type's running
    nodes count toward its `max_workers`, so a running node is never counted twice."""
    left = Counter(running)
    shapes = []
    for name, t in sorted(node_types.items()):
        key = (float(t["resources"].get("CPU", 0)), float(t["resources"].get("GPU", 0)))
        up = left.pop(key, 0)
        shapes.append(NodeShape(name, *key, running=up, max_count=max(t["max_workers"], up)))
    for (cpus, gpus), n in sorted(left.items()):
        if n > 0:
            shapes.append(NodeShape("running", cpus, gpus, running=n, max_count=n))
    return Capacity(tuple(shapes), source or ("autoscaler config" if node_types else "running cluster"))


def autoscaler_node_types(path: str | Path | None = None) -> dict[str, dict]:
    """{type name: {"resources": {...}, "max_workers": n}} from the autoscaler config, or {}
    where there is none (a cluster started by hand, or a driver not on the head).

    The head type counts one node (its own), whatever its max_workers says; a type without
    `max_workers` may grow to the cluster's `max_workers`.
    """
    import yaml

    path = Path(os.path.expanduser(str(path or os.environ.get("RAYSWEEP_AUTOSCALING_CONFIG") or AUTOSCALING_CONFIG)))
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}
    types = config.get("available_node_types") or {}
    head = config.get("head_node_type")
    overall = int(config.get("max_workers", 0) or 0)
    out = {}
    for name, t in types.items():
        if not isinstance(t, dict):
            continue
        most = 1 if name == head else int(t.get("max_workers", overall) or 0)
        out[name] = {"resources": dict(t.get("resources") or {}), "max_workers": most}
    return out


def _local() -> Capacity:
    try:
        import torch

        gpus = torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - no usable torch CUDA: no GPU, as Ray would see it
        gpus = 0
    return Capacity((NodeShape("local", float(os.cpu_count() or 1), float(gpus), running=1, max_count=1),),
                    "local machine")


@dataclass(frozen=True)
class ActorPool:
    """The size of a Ray Data actor pool (encoder or pool scorer) and each actor's GPU."""

    min_size: int
    max_size: int
    gpus: int  # per actor: 1 when some node has, or can be, a GPU node

    def strategy(self, limit: int | None = None):
        """Ray Data's ActorPoolStrategy, at most `limit` actors (a pass with fewer blocks needs no more).

        min < max makes it an autoscaling pool: it starts with what the cluster has and grows as
        Ray Data's autoscaler asks the cluster's autoscaler for nodes."""
        import ray

        most = max(1, min(self.max_size, limit or self.max_size))
        return ray.data.ActorPoolStrategy(min_size=min(self.min_size, most), max_size=most)


def actor_pool(actors: int = 0, cap: Capacity | None = None) -> ActorPool:
    """A pool of one-CPU actors (one GPU each where the cluster has or can get GPU nodes).

    `actors` > 0 is a fixed size (the sweep's `encoder.actors` / `selection.actors`); otherwise
    the pool autoscales from one actor to as many as the cluster can hold at its largest."""
    cap = cap or capacity()
    gpus = 1 if cap.fits(1, 1) else 0
    if actors > 0:
        return ActorPool(actors, actors, gpus)
    return ActorPool(1, cap.actors(1, gpus), gpus)


def get(refs):
    """`ray.get`, except that a raysweep error raised on another node comes back as itself: one
    line naming what failed and where, not a remote traceback."""
    import ray

    from raysweep.errors import RaysweepError

    try:
        return ray.get(refs)
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, RaysweepError):
            raise exc.cause from None
        raise

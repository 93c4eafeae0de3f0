"""The one place raysweep starts or joins Ray.

Three stages need Ray (the sweep's trials, the generation's teacher and encoder pass, the LLM
generator actors) and each may run first, alone or inside another: `raysweep generate` runs the
generation on its own, `raysweep run` runs it inside a sweep. So every stage asks here, and Ray
is started once per process with one set of flags:

- `address=None` starts a fresh local Ray ("local"); a bare `ray.init()` would join any cluster
  that happens to run on this machine (another user's, another engineer's test).
- `log_to_driver=True`: the workers' output reaches the driver's stderr, which the CLI's log
  file (console.py) captures in full; what the terminal shows is decided there, not here.
- `configure_logging=False`: Ray leaves the process's logging setup to the caller.

Whoever started Ray stops it (`ray_running`), so a stage run inside another leaves the outer
stage's Ray alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

_started = False  # whether this process's Ray was started here (not joined, not the caller's own)


def start_ray(address: str | None = None, **options) -> bool:
    """Start a local Ray, or join `address` ("auto", "ray://...", host:port), unless Ray is up.

    Returns True if this call started it (its caller then owns the shutdown). `options` are
    passed to `ray.init` (tests: `num_cpus`, `include_dashboard`).
    """
    global _started
    import ray

    if ray.is_initialized():
        return False
    ray.init(address=address or "local", configure_logging=False, log_to_driver=True, **options)
    _started = True
    return True


def stop_ray() -> None:
    """Shut down the Ray this process started here, if any (a joined cluster keeps running)."""
    global _started
    import ray

    if _started and ray.is_initialized():
        ray.shutdown()
    _started = False


@contextmanager
def ray_running(address: str | None = None, enabled: bool = True) -> Iterator[None]:
    """Ray for the body (unless `enabled` is false), shut down afterwards only if started here."""
    started = enabled and start_ray(address)
    try:
        yield
    finally:
        if started:
            stop_ray()

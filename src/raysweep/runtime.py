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

import os
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from raysweep.errors import RaysweepError

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
    if address not in (None, "local"):
        probe_address(address)
    ray.init(address=address or "local", configure_logging=False, log_to_driver=True, **options)
    _started = True
    return True


# Seconds to wait for a Ray address to accept a connection. ray.init retries a dead address for
# minutes, printing nothing a person reads (`check --address 127.0.0.1:1` hung).
ADDRESS_DEADLINE_S = 5.0


class RayAddressError(RaysweepError):
    """A Ray address nobody answers at; the message names it."""


def probe_address(address: str) -> None:
    """One RayAddressError line unless the GCS at `address` ("auto", "ray://host:port" or host:port)
    accepts a TCP connection within ADDRESS_DEADLINE_S. "auto" is probed when it resolves to an
    address (RAY_ADDRESS, or the cluster this machine last started)."""
    target = address
    if address == "auto":
        target = os.environ.get("RAY_ADDRESS") or _current_cluster()
        if not target or target == "auto":
            return  # ray.init says itself, at once, that no cluster runs here
    target = target.removeprefix("ray://").removeprefix("http://")
    host, _, port = target.rstrip("/").rpartition(":")
    if not host or not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
        raise RayAddressError(f"--address {address}: not a Ray address (host:port, ray://host:port or auto)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=ADDRESS_DEADLINE_S).close()
    except OSError as exc:
        why = (f"no answer within {ADDRESS_DEADLINE_S:.0f} s" if isinstance(exc, TimeoutError)
               else (exc.strerror or type(exc).__name__).lower())
        raise RayAddressError(f"--address {address}: no Ray cluster answers at {host}:{port} ({why}); is it up, "
                              "and is the port its GCS port (6379)?") from None


def _current_cluster() -> str | None:
    """The address `ray start` on this machine recorded (Ray's own "auto" source after RAY_ADDRESS)."""
    try:
        return Path(tempfile.gettempdir(), "ray", "ray_current_cluster").read_text().strip() or None
    except OSError:
        return None


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

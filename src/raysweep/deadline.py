"""A deadline on a network wait that has none of its own, with a line once it runs long.

pyarrow resolving a `gs://` output's credentials on a machine without network, or joining a
Ray address nobody answers, waited minutes with nothing printed. `within` runs such a call in
a daemon thread: after `notice_s` it says on stderr what it waits for and until when; at
`seconds` it gives up with one line (the thread is left behind; the process is about to exit
with the error, and a daemon thread does not hold it).
"""

from __future__ import annotations

import sys
import threading
from typing import Callable, TypeVar

from raysweep.errors import RaysweepError

T = TypeVar("T")
NOTICE_S = 3.0  # a wait longer than this gets a line saying what it waits for


class DeadlineError(RaysweepError, TimeoutError):
    """A network wait that passed its deadline; the message names what was waited for."""


def within(seconds: float, what: str, fn: Callable[[], T], error=DeadlineError, notice_s: float = NOTICE_S) -> T:
    """`fn()`'s value, or `error` ("WHAT: no answer within N s") when it takes longer than `seconds`."""
    box: dict = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=run, name=f"deadline: {what[:40]}", daemon=True)
    thread.start()
    thread.join(min(notice_s, seconds))
    if thread.is_alive() and seconds > notice_s:
        print(f"waiting for {what} (giving up after {seconds:.0f} s)", file=sys.stderr, flush=True)
        thread.join(seconds - notice_s)
    if thread.is_alive():
        raise error(f"{what}: no answer within {seconds:.0f} s")
    if "error" in box:
        raise box["error"]
    return box["value"]

"""The block a benchmark prints for docs/measurements.md: date, machine, load, command, result.

    if __name__ == "__main__":
        with measurement("what was measured"):
            main()

Everything the benchmark prints still appears as it runs, and is repeated at the end inside the
block, with the 1-minute load average at the start and the end (numbers on a shared machine are
upper bounds: the load says how shared it was). Nothing here is a GPU number unless the machine
line names a GPU.
"""

from __future__ import annotations

import contextlib
import io
import os
import platform
import shlex
import sys
import time


class _Tee(io.TextIOBase):
    def __init__(self, *streams):
        self.streams = streams

    def write(self, text):
        for s in self.streams:
            s.write(text)
        return len(text)

    def flush(self):
        for s in self.streams:
            s.flush()


def machine() -> str:
    import torch

    try:
        import ray

        ray_version = ray.__version__
    except ImportError:
        ray_version = "not installed"
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{os.cpu_count()} cores ({platform.machine()}), {mem:.0f} GiB, {gpu}, Python {platform.python_version()}, "
            f"torch {torch.__version__}, Ray {ray_version}")


@contextlib.contextmanager
def measurement(title: str):
    captured = io.StringIO()
    load_before = os.getloadavg()[0]
    start = time.time()
    with contextlib.redirect_stdout(_Tee(sys.stdout, captured)):
        yield
    minutes = (time.time() - start) / 60
    result = "\n".join("  " + line if line else "" for line in captured.getvalue().rstrip().splitlines())
    print(f"""
----- paste into docs/measurements.md -----
### {title} ({time.strftime('%Y-%m-%d', time.gmtime(start))})
- machine: {machine()}; load: {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end (1-min average); took {minutes:.1f} min
- command: `python {shlex.join([os.path.relpath(sys.argv[0]), *sys.argv[1:]])}`
- result:

  ```
{result}
  ```
----- end -----""")

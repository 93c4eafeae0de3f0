"""Run a sweep on a Ray cluster as a Ray Job: submit it, ask its status, read its logs.

The job ships two things in its runtime environment: the project directory the sweep file
lives in (`working_dir`, so the sweep and anything beside it reach the head) and this
`raysweep` package (`py_modules`, so the driver and every trial run the code you have here,
not whatever version `ray up` installed).

No secret goes with a job: Ray records a job's entrypoint, metadata and runtime environment
(env_vars included) in clear, in the Jobs API and in every node's runtime_env_agent.log. So
`--env` refuses variables that look like secrets, and an `--output` or `--set` holding
credentials is refused. An LLM key reaches the nodes as a file (`llm.api_key_file`, shipped by
cluster.yaml's file_mounts), storage access through the provider's own credentials (an instance
profile); docs/cluster.md#secrets says how.

Ray 2.60 clusters use token authentication. The token is found the way Ray itself looks for
it (RAY_AUTH_TOKEN, then the file RAY_AUTH_TOKEN_PATH names, then ~/.ray/auth_token) and sent
as a Bearer header, whatever RAY_AUTH_MODE says in this process.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from raysweep.errors import RaysweepError

# Where `ray dashboard cluster.yaml` forwards the head's dashboard (and its Jobs API) to.
DEFAULT_ADDRESS = "http://127.0.0.1:8265"
# Never uploaded: git history and bytecode are large and useless to the job.
UPLOAD_EXCLUDES = [".git", "__pycache__", "*.pyc"]
PACKAGE_DIR = Path(__file__).resolve().parent
# A head's dashboard answers before its job agent has registered: until then a submit gets
# HTTP 500 "No available agent to submit job, please try again later". Retry that this long.
AGENT_WAIT_S = 60.0
# A variable named like a credential (OPENAI_API_KEY, HF_TOKEN, AWS_SECRET_ACCESS_KEY, DB_PASSWORD, ...)
# or holding a value shaped like one (OpenAI's sk-, AWS's AKIA, GitHub's ghp_, Hugging Face's hf_).
# (Not AUTH or SESSION alone: RAY_AUTH_MODE is a setting; AWS_SESSION_TOKEN is caught by TOKEN.)
SECRET_NAME = re.compile(r"KEY|SECRET|TOKEN|PASSW|CREDENTIAL|PRIVATE|COOKIE", re.IGNORECASE)
SECRET_VALUE = re.compile(r"^(sk-|AKIA|ASIA|ghp_|github_pat_|hf_|xox[bp]-)")
SECRETS_DOC = "docs/cluster.md#secrets"


class JobError(RaysweepError, RuntimeError):
    """A submit / status / logs request that cannot be done; the message is one line."""


@dataclass(frozen=True)
class JobState:
    job_id: str
    status: str  # PENDING, RUNNING, STOPPED, SUCCEEDED or FAILED (Ray's JobStatus)
    message: str  # Ray's own one-line account, e.g. the entrypoint's exit code
    entrypoint: str
    error: str = ""  # a failed job: the last error line of its driver's output

    @property
    def finished(self) -> bool:
        return self.status in ("STOPPED", "SUCCEEDED", "FAILED")

    def __str__(self) -> str:
        text = f"{self.job_id}: {self.status}" + (f" ({self.message})" if self.message else "")
        return text + (f"\n  {self.error}" if self.error else "")


# A line of a driver's output that says what went wrong: raysweep's own `error: ...` lines and
# one-line job failures, or the last line of a Python traceback (`SomeError: ...`).
_ERROR_LINE = re.compile(r"^(error: |raysweep job: |[\w.]+(Error|Exception|Interrupt|Exit)\b)")


def last_error_line(output: str) -> str:
    """The last line of a driver's output that names an error, else its last non-empty line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in reversed(lines):
        if _ERROR_LINE.match(line):
            return line
    return lines[-1] if lines else ""


def _account(message: str) -> str:
    """Ray's account of a job, first line only, without the driver output a failed job's message
    carries after it ("..., last available logs (truncated to 20,000 chars):")."""
    first = message.strip().splitlines()[0] if message.strip() else ""
    return re.sub(r",? *last available logs.*$", "", first).strip()


def load_token() -> tuple[str, str] | None:
    """The cluster token and where it came from, in Ray 2.60's order, or None if there is none.

    Same order and trimming as Ray's AuthenticationTokenLoader: a non-empty RAY_AUTH_TOKEN,
    else the file RAY_AUTH_TOKEN_PATH names (which must then exist and be non-empty: Ray
    treats anything else as a misconfiguration, not as "no token"), else ~/.ray/auth_token.
    """
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if token:
        return token, "RAY_AUTH_TOKEN"
    path_var = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if path_var:
        try:
            token = Path(path_var).expanduser().read_text().strip()
        except OSError as exc:
            raise JobError(f"RAY_AUTH_TOKEN_PATH={path_var}: cannot read the token file ({exc.strerror})") from None
        if not token:
            raise JobError(f"RAY_AUTH_TOKEN_PATH={path_var}: the token file is empty")
        return token, path_var
    default = Path.home() / ".ray" / "auth_token"
    try:
        token = default.read_text().strip()
    except OSError:
        return None
    return (token, str(default)) if token else None


def _http_address(address: str) -> str:
    address = address.strip().rstrip("/")
    if address in ("", "auto", "local") or address.startswith("ray://"):
        raise JobError(f"address {address!r}: give the dashboard's HTTP address, e.g. {DEFAULT_ADDRESS}")
    return address if address.startswith(("http://", "https://")) else f"http://{address}"


def _client(address: str, what: str):
    """A JobSubmissionClient that sends the token (if any); it asks the cluster's version at once."""
    from ray.job_submission import JobSubmissionClient

    url = _http_address(address)
    found = load_token()
    headers = {"Authorization": f"Bearer {found[0]}"} if found else {}
    source = found[1] if found else None
    with _one_line_errors(what, url, source):
        return JobSubmissionClient(url, headers=headers), url, source


@contextmanager
def _one_line_errors(what: str, url: str, token_source: str | None):
    """Turn the SDK's multi-line errors into one line that names the cause."""
    import requests
    from ray.exceptions import AuthenticationError

    try:
        yield
    except AuthenticationError as exc:
        # No token of ours: whatever Ray's SDK sent in its place (its own loader's answer, which a
        # long-lived process may have cached from another cluster), the cause is the missing token.
        if token_source is None or "Authentication required" in str(exc):
            raise JobError(f"{what}: the cluster at {url} needs its auth token: set RAY_AUTH_TOKEN or "
                           "write it to ~/.ray/auth_token (docs/cluster.md says where to get it)") from None
        raise JobError(f"{what}: the cluster at {url} rejected the token from {token_source}: "
                       "it is not this cluster's token") from None
    except ConnectionError:  # the SDK's own, raised when the first request finds nobody
        raise JobError(f"{what}: no Ray dashboard answers at {url} "
                       "(is the cluster up, and `ray dashboard cluster.yaml` running?)") from None
    except requests.RequestException as exc:  # a later request that failed on the way
        raise JobError(f"{what}: the request to {url} failed ({type(exc).__name__})") from None
    except (RuntimeError, ValueError) as exc:  # "Request failed with status code 404: ...", a too-big upload
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise JobError(f"{what}: {first}") from None


def _call(what: str, address: str, fn: str, *args, **kwargs):
    client, url, source = _client(address, what)
    with _one_line_errors(what, url, source):
        return getattr(client, fn)(*args, **kwargs)


def find_project(sweep_path: Path) -> Path:
    """The nearest directory above the sweep file that holds a pyproject.toml."""
    for parent in sweep_path.resolve().parents:
        if (parent / "pyproject.toml").is_file():
            return parent
    raise JobError(f"{sweep_path}: not inside a project directory (no pyproject.toml above it), "
                   "so it cannot ship with the job: put it under the checkout's sweeps/")


def _ignored(project: Path, path: Path) -> bool:
    """Whether Ray's working_dir upload would leave `path` out (.gitignore, .rayignore, excludes)."""
    import logging

    from ray._private.runtime_env.packaging import _get_excludes, get_excludes_from_ignore_files

    quiet = logging.getLogger("raysweep.jobs.ignore")
    quiet.disabled = True
    include_gitignore = os.environ.get("RAY_RUNTIME_ENV_IGNORE_GITIGNORE", "0") != "1"
    rules = [_get_excludes(project, UPLOAD_EXCLUDES)]
    chain = [project / p for p in reversed(path.relative_to(project).parents)] + [path]
    for i, node in enumerate(chain):
        if node.is_dir():
            rules += get_excludes_from_ignore_files(node, include_gitignore=include_gitignore, logger=quiet)
        if i > 0 and any(rule(node) for rule in rules):
            return True
    return False


def build_entrypoint(sweep_rel: str, output: str, overrides: Sequence[str] = (), shared_output: bool = False) -> str:
    """The shell command the job runs on the head, from the uploaded working_dir.

    `python -m raysweep.jobs` rather than the `raysweep` script: the module comes from the
    package shipped in py_modules, the script from whatever the cluster has installed; and it
    runs the CLI or says in one line what the head's Python lacks (`job_main`). That
    `python` is the first on the head's PATH when Ray started there: the image's on cluster.yaml,
    the login shell's on cluster-local.yaml (a head started as /some/venv/bin/ray without that
    venv on PATH would run the sweep with another Python).
    """
    words = ["python", "-m", "raysweep.jobs", "run", sweep_rel, "--output", output, "--address", "auto"]
    for item in overrides:
        words += ["--set", item]
    if shared_output:
        words.append("--shared-output")
    return " ".join(shlex.quote(w) for w in words)


def _check_output(output: str) -> None:
    if "://" in output or Path(output).is_absolute():
        return
    raise JobError(f"--output {output}: a relative path would land in the job's temporary working directory "
                   "on the head; give a storage URI every node reaches (s3://..., gs://...) or an absolute path on a "
                   "file system they share (on a single-node cluster, e.g. /home/ray/runs/NAME)")


def runtime_env(project: Path, env_keys: Sequence[str] = (), key_env: str | None = None) -> dict:
    """The job's runtime environment: the project, this package, and the named variables' values.

    Not secrets: Ray writes a runtime environment in clear to every node's runtime_env_agent.log
    and serves it through the Jobs API. `key_env` is the sweep's LLM key variable, refused whatever
    its name."""
    env_vars = {}
    for key in env_keys:
        value = os.environ.get(key)
        if not value:
            raise JobError(f"environment variable {key} is not set here, so it cannot be passed to the job")
        if key == key_env or SECRET_NAME.search(key) or SECRET_VALUE.match(value):
            raise JobError(f"--env {key}: looks like a secret, and Ray records a job's environment in clear "
                           f"(its logs, the Jobs API); give the nodes a key file instead (llm.api_key_file, "
                           f"{SECRETS_DOC})")
        env_vars[key] = value
    env = {"working_dir": str(project), "py_modules": [str(PACKAGE_DIR)], "excludes": list(UPLOAD_EXCLUDES)}
    if env_vars:
        env["env_vars"] = env_vars
    return env


def submit(sweep_path: str | Path, address: str = DEFAULT_ADDRESS, output: str = "", overrides: Sequence[str] = (),
           env_keys: Sequence[str] = (), *, command: str | None = None, shared_output: bool = False) -> str:
    """Submit the sweep as a Ray Job; returns its job (submission) id.

    The sweep and overrides are validated here first, so a typo fails before anything is
    uploaded. `env_keys` names local environment variables (never secrets: see runtime_env) whose
    values reach the driver and every trial through runtime_env env_vars. `command` replaces the
    `raysweep run` entrypoint (it still runs in the uploaded project directory).
    """
    from raysweep.config import ConfigError, load_sweep
    from raysweep.storage import refuse_credentials

    sweep = Path(sweep_path)
    if not sweep.is_file():
        raise JobError(f"{sweep}: no such sweep file")
    try:
        cfg = load_sweep(sweep, list(overrides))
    except ConfigError as exc:
        raise JobError(str(exc)) from None
    for label, value in [("--output", output), *(("--set", o.partition("=")[2]) for o in overrides)]:
        refuse_credentials(value, label, "Ray would show in the job's entrypoint and metadata")
    if command is None:
        _check_output(output)
    with _shipped(sweep, cfg) as (project, sweep_rel):
        if command is None:
            command = build_entrypoint(str(sweep_rel), output, overrides, shared_output)
        metadata = {"sweep": str(sweep_rel)}
        if output:
            metadata["output"] = output
        env = runtime_env(project, env_keys, cfg.llm.api_key_env)
        deadline = time.monotonic() + AGENT_WAIT_S
        while True:
            try:
                return _call("submit", address, "submit_job", entrypoint=command, runtime_env=env, metadata=metadata)
            except JobError as exc:
                if "No available agent" not in str(exc):
                    raise
                if time.monotonic() > deadline:
                    raise JobError(f"{exc}; {NO_AGENT_HINT}") from None
                time.sleep(2)  # the packages are uploaded already; the retry only posts the job


# Ray's "No available agent to submit job" past AGENT_WAIT_S: the head's dashboard answers but its
# job agent never registered. Seen here when another Ray on the host held a port the agent wanted.
NO_AGENT_HINT = ("the head's job agent never registered: look at dashboard_agent.log in the head's Ray session "
                 "logs (/tmp/ray/session_latest/logs); a port it needs (--dashboard-agent-listen-port, default "
                 "52365, or --metrics-export-port) may be held by another Ray on that host, and `ray status` "
                 "there says whether the head is up at all")


@contextmanager
def _shipped(sweep: Path, cfg):
    """(working_dir, the sweep's path in it) for the job: the project the sweep file is in when
    it has one and its upload keeps the file; else a temporary directory holding the sweep file
    alone (removed once submitted: Ray uploads it during the submit). A sweep shipped alone has
    no project beside it, so a relative path in it would point at nothing on the cluster."""
    import shutil
    import tempfile

    try:
        project = find_project(sweep)
        sweep_rel = sweep.resolve().relative_to(project)
        in_upload = not _ignored(project, project / sweep_rel)
    except JobError:  # outside any project: shipped alone
        in_upload = False
    if in_upload:
        yield project, sweep_rel
        return
    for key, value in (("data.path", cfg.data.path), ("cache_dir", cfg.cache_dir),
                       ("generation_dir", cfg.generation_dir), ("llm.api_key_file", cfg.llm.api_key_file)):
        if value and "://" not in str(value) and not Path(str(value)).expanduser().is_absolute():
            raise JobError(f"{sweep}: {key} {value} is relative, and this sweep file is shipped alone (it is not in "
                           "a project's upload), so the path would not reach the cluster: give an absolute path or "
                           "URI the nodes reach, or put the sweep file in the project (sweeps/)")
    with tempfile.TemporaryDirectory(prefix="raysweep-job-") as staging:
        shutil.copyfile(sweep, Path(staging) / sweep.name)
        yield Path(staging), Path(sweep.name)


def dashboard_url(address: str, job_id: str) -> str:
    """The dashboard page of the job (reached through the same forwarded port)."""
    return f"{_http_address(address)}/#/jobs/{job_id}"


def status(address: str, job_id: str) -> JobState:
    info = _call("status", address, "get_job_info", job_id)
    state = str(getattr(info.status, "value", info.status))
    error = ""
    if state == "FAILED":
        # Ray's message holds only the output's tail, if any: the driver's own log is whole.
        output = "\n".join((info.message or "").splitlines()[1:])
        try:
            output = _call("status", address, "get_job_logs", job_id) or output
        except JobError:
            pass  # the tail in Ray's message will do
        error = last_error_line(output)
    return JobState(job_id=job_id, status=state, message=_account(info.message or ""), entrypoint=info.entrypoint,
                    error=error)


def logs(address: str, job_id: str, follow: bool = False) -> Iterator[str]:
    """The job's driver output: all of it so far, or (follow) chunk by chunk until the job ends."""
    if not follow:
        yield _call("logs", address, "get_job_logs", job_id)
        return
    import aiohttp

    status(address, job_id)  # an unknown job id fails here, in one line, not inside the websocket
    client, _, _ = _client(address, "logs")
    stream = client.tail_job_logs(job_id)
    loop = asyncio.new_event_loop()
    try:
        while True:
            try:
                chunk = loop.run_until_complete(stream.__anext__())
            except StopAsyncIteration:
                return
            except (RuntimeError, OSError, aiohttp.ClientError) as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise JobError(f"logs: the log stream broke ({first})") from None
            yield chunk
    finally:
        loop.run_until_complete(stream.aclose())
        loop.close()


def job_main(argv: Sequence[str]) -> int:
    """A job's entrypoint on the head (`python -m raysweep.jobs run ...`): the CLI, or, when the
    head's Python cannot import what raysweep needs, one line saying what and how to ship it (the
    job then fails with that line, which `raysweep status` shows) instead of a traceback."""
    import sys

    try:
        from raysweep.cli import main
    except ImportError as exc:  # ModuleNotFoundError, and importlib.metadata's PackageNotFoundError
        missing = getattr(exc, "name", None) or str(exc)
        print(f"raysweep job: the head's Python ({sys.executable}) cannot import {missing} "
              f"({type(exc).__name__}), which raysweep needs: start Ray on the head from the environment "
              "raysweep is installed in (its bin/ first on PATH), or install raysweep and its dependencies in "
              "the cluster's image (cluster.yaml's setup_commands: pip install -e .), or ship them with the job "
              "(a runtime environment's pip list)", file=sys.stderr)
        return 2
    return main(args=list(argv), prog_name="raysweep")


if __name__ == "__main__":
    import sys

    sys.exit(job_main(sys.argv[1:]))

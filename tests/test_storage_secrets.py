"""No storage secret in a printed line or a file: every way an output URI fails (a bucket whose
region cannot be resolved, an endpoint that does not answer, access denied), through `run`,
`status` and `analyze`, with sentinel credentials in the URI, is one line without them."""

from __future__ import annotations

import os
import socket
from urllib.parse import quote

import pytest
from click.testing import CliRunner

from raysweep.cli import main
from raysweep.storage import Output, StorageError, redact, scrub, uri_secrets
from test_sweep_storage import start_moto

ACCESS = "AKIASENTINEL7Q2W3E4R"
SECRET = "sentinel/Secret+Value0123456789abcdefGHIJ"  # AWS secrets hold '/' and '+': percent-encoded in a URI
CREDS = f"{ACCESS}:{quote(SECRET, safe='')}"
SENTINELS = [ACCESS, SECRET, quote(SECRET, safe=""), "Secret+Value0123456789"]


def test_redact_and_scrub_take_out_user_info_and_secret_options():
    uri = f"s3://{CREDS}@bucket/runs/x?region=us-east-1&session_token=TOKEN123&endpoint_override=h:9"
    assert redact(uri) == "s3://***@bucket/runs/x?region=us-east-1&session_token=***&endpoint_override=h:9"
    assert set(uri_secrets(uri)) >= {ACCESS, SECRET, quote(SECRET, safe=""), "TOKEN123"}
    message = f"AWS said {ACCESS} and {SECRET} and {quote(SECRET, safe='')} and TOKEN123"
    assert scrub(message, uri) == "AWS said *** and *** and *** and ***"
    # A secret with a raw "/" (not percent-encoded) still counts as user-info, whole.
    raw = f"s3://{ACCESS}:{SECRET}@bucket/x"
    assert redact(raw) == "s3://***@bucket/x" and SECRET in uri_secrets(raw)
    out = Output(f"s3://{CREDS}@bucket/runs/x?region=us-east-1&endpoint_override=127.0.0.1:9&scheme=http")
    assert out.uri == str(out) == "s3://bucket/runs/x" and out.show("trials.csv") == "s3://bucket/runs/x/trials.csv"


def test_keys_from_the_credential_chain_stay_out_of_a_pickled_filesystem(monkeypatch):
    """Why `run` refuses keys in the URI: Tune pickles the filesystem it writes through (into
    tuner.pkl and its state files), and a filesystem made from a URI pickles its keys with it;
    one made from the environment's keys does not."""
    import cloudpickle

    where = "results/runs/x?region=us-east-1&endpoint_override=127.0.0.1:9&scheme=http"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    from_chain = cloudpickle.dumps(Output(f"s3://{where}").fs)
    assert not any(s.encode() in from_chain for s in SENTINELS)
    from_uri = cloudpickle.dumps(Output(f"s3://{CREDS}@{where}").fs)
    assert SECRET.encode() in from_uri


@pytest.mark.parametrize("where, message", [
    (f"ftp://{CREDS}@host/x", r"output ftp://\*\*\*@host/x: unsupported scheme"),
    (f"s3://{CREDS}@bucket/x?colour=blue", r"output s3://\*\*\*@bucket/x\?colour=blue: .*colour"),
    (f"s3://{CREDS}@", r"output s3://\*\*\*@: "),
])
def test_a_malformed_output_is_one_line_without_its_credentials(where, message):
    with pytest.raises(StorageError, match=message) as info:
        Output(where)
    assert "\n" not in str(info.value) and not any(s in str(info.value) for s in SENTINELS)


def test_a_filesystem_error_is_one_storage_error_line(tmp_path):
    (tmp_path / "a-file").write_text("not a directory")
    out = Output(f"file://{tmp_path}/a-file/out")
    with pytest.raises(StorageError, match=r"^output file://.*/a-file/out: cannot create directory cells \(") as info:
        out.mkdir("cells")
    assert "\n" not in str(info.value)
    with pytest.raises(StorageError, match=r": cannot write sweep.yaml \("):
        out.write_text("sweep.yaml", "x")


# --------------------------------------------------------------------------- every path, every command


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def denying_s3(tmp_path_factory):
    """A moto S3 server that checks credentials (INITIAL_NO_AUTH_ACTION_COUNT=0): the sentinel
    keys are unknown to it, so every request is denied. Stopped by its PID afterwards."""
    proc, port = start_moto(tmp_path_factory.mktemp("moto") / "moto.log",
                            env=dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="0"))
    try:
        yield f"region=us-east-1&endpoint_override=127.0.0.1:{port}&scheme=http"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _uri(case: str, request, creds: str) -> str:
    at = f"{creds}@" if creds else ""
    if case == "denied":
        return f"s3://{at}results/runs/x?{request.getfixturevalue('denying_s3')}"
    if case == "unreachable":  # nobody listens on that port
        return f"s3://{at}results/runs/x?region=us-east-1&endpoint_override=127.0.0.1:{_free_port()}&scheme=http"
    # No region given: pyarrow asks AWS for the bucket's, which fails without network or for a
    # bucket that does not exist (this name is random).
    return f"s3://{at}raysweep-no-such-bucket-{os.urandom(6).hex()}/runs/x"


# What pyarrow reports: HeadBucket says ACCESS_DENIED, a listing names the unknown key's code.
REASONS = {"region": ("resolving region",), "unreachable": ("NETWORK_CONNECTION",),
           "denied": ("ACCESS_DENIED", "INVALID_ACCESS_KEY_ID")}


def test_run_refuses_aws_keys_tune_would_log_before_any_work(tmp_path, monkeypatch):
    """Ray Tune copies AWS_* keys from the driver's environment into each trial's runtime_env,
    which Ray writes to runtime_env_agent.log: with an s3:// output they must come from elsewhere."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    sweep = tmp_path / "s.yaml"
    sweep.write_text("name: s\n")
    uri = f"s3://results/runs/x?region=us-east-1&endpoint_override=127.0.0.1:{_free_port()}&scheme=http"
    result = CliRunner().invoke(main, ["run", str(sweep), "--output", uri])
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert result.output.startswith(f"error: output {uri}: Ray Tune would copy AWS_ACCESS_KEY_ID, "
                                    "AWS_SECRET_ACCESS_KEY from this environment")
    assert "~/.aws/credentials" in result.output and not any(s in result.output for s in SENTINELS)
    assert list(tmp_path.iterdir()) == [sweep]


def test_run_refuses_credentials_in_the_output_uri_before_any_work(tmp_path, monkeypatch):
    """Tune pickles its storage filesystem, keys included, into tuner.pkl and its state files."""
    monkeypatch.chdir(tmp_path)
    sweep = tmp_path / "s.yaml"
    sweep.write_text("name: s\n")
    uri = f"s3://{CREDS}@results/runs/x?region=us-east-1&endpoint_override=127.0.0.1:{_free_port()}&scheme=http"
    result = CliRunner().invoke(main, ["run", str(sweep), "--output", uri])
    assert result.exit_code == 2
    assert result.output.startswith("error: output s3://***@results/runs/x?region=us-east-1&endpoint_override=")
    assert "holds credentials, which Tune would write into its experiment state" in result.output
    assert "~/.aws/credentials" in result.output and result.output.count("\n") == 1
    assert not any(s in result.output for s in SENTINELS)


COMMANDS = ("run", "status", "analyze")


def _setup(case: str, command: str, request, where, tmp_path_factory) -> tuple[list[str], dict]:
    """The command line of `command` against `case`'s output, and its environment. `run` takes keys
    only from the provider's chain (here a credentials file, kept out of the directory searched
    afterwards); `status` and `analyze` still take them in the URI, which their messages must not repeat."""
    credentials = tmp_path_factory.mktemp("aws") / "credentials"
    credentials.write_text(f"[default]\naws_access_key_id = {ACCESS}\naws_secret_access_key = {SECRET}\n")
    uri = _uri(case, request, "" if command == "run" else CREDS)
    sweep = where / "s.yaml"
    sweep.write_text("name: s\n")
    args = {"run": ["run", str(sweep), "--output", uri],
            "status": ["status", "--sweep", str(sweep), "--output", uri],
            "analyze": ["analyze", uri, "--output", str(where / "report")]}[command]
    return args, {"AWS_SHARED_CREDENTIALS_FILE": str(credentials)}


def _check(case: str, where, code: int, printed: str) -> None:
    assert code == 2, printed
    # A wait past a few seconds says so first (deadline.within: pyarrow's connect retries take ~6 s);
    # the error itself is still one line.
    waiting, _, rest = printed.partition("\n")
    if waiting.startswith("waiting for output s3://") and "giving up after" in waiting:
        printed = rest
    assert printed.count("\n") == 1 and printed.startswith("error: output s3://"), printed
    assert any(reason in printed for reason in REASONS[case]), printed
    assert not any(s in printed for s in SENTINELS), printed
    holding = [p for p in where.rglob("*") if p.is_file() and any(s.encode() in p.read_bytes() for s in SENTINELS)]
    assert holding == []


# Slow: a moto server.
@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS)
def test_every_storage_error_is_one_line_without_the_secret(command, request, tmp_path, tmp_path_factory, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args, env = _setup("denied", command, request, tmp_path, tmp_path_factory)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(main, args)
    _check("denied", tmp_path, result.exit_code, result.output)


# Slow: pyarrow retries an unreachable endpoint and a region lookup for ~6 s each before it gives
# up (ConnectRetryStrategy's fixed budget). The six commands wait in parallel, each a `raysweep`
# process of its own, as a user runs it; the file:// test above covers the wrapping fast.
@pytest.mark.slow
def test_storage_errors_that_wait_on_the_network_are_one_line_without_the_secret(request, tmp_path, tmp_path_factory):
    import subprocess
    import sys

    runs = []
    for case in ("unreachable", "region"):
        for command in COMMANDS:
            where = tmp_path / f"{case}-{command}"
            where.mkdir()
            args, env = _setup(case, command, request, where, tmp_path_factory)
            proc = subprocess.Popen([sys.executable, "-m", "raysweep.cli", *args], cwd=where, env=dict(os.environ, **env),
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            runs.append((case, command, where, proc))
    for case, command, where, proc in runs:
        printed = proc.communicate(timeout=120)[0]
        _check(case, where, proc.returncode, printed)

"""raysweep.jobs: submit / status / logs through Ray's Jobs API, with token authentication on.

The fast tests check what submit refuses before anything is uploaded and how the token is
found; the slow ones run real jobs on a head node this module starts (conftest.ray_head).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from headnode import wait_job

from raysweep import jobs
from raysweep.jobs import JobError

KEY_VAR = "RAYSWEEP_TEST_API_KEY"
SETTING_VAR = "RAYSWEEP_TEST_SETTING"  # a variable that is not a secret: --env may pass it


@pytest.fixture
def project(tmp_path):
    """A tiny project: pyproject.toml, a valid sweep, an ignored sweep and a .gitignore."""
    root = tmp_path / "proj"
    (root / "sweeps").mkdir(parents=True)
    (root / "runs").mkdir()
    (root / "pyproject.toml").write_text("[project]\nname = 'demo'\n")
    (root / ".gitignore").write_text("runs/\n")
    (root / "sweeps" / "tiny.yaml").write_text("name: tiny\nrecipe:\n  epochs: 1\n")
    (root / "runs" / "old.yaml").write_text("name: old\n")
    return root


@pytest.fixture
def no_token_env(monkeypatch, tmp_path):
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "emptyhome"))


# --- the token, found as Ray 2.60 finds it ------------------------------------------------------

def test_token_order_env_then_path_then_home(no_token_env, monkeypatch, tmp_path):
    home = tmp_path / "emptyhome"
    assert jobs.load_token() is None
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text("from-home\n")
    assert jobs.load_token() == ("from-home", str(home / ".ray" / "auth_token"))
    path = tmp_path / "tok"
    path.write_text("  from-path \n")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(path))
    assert jobs.load_token() == ("from-path", str(path))
    monkeypatch.setenv("RAY_AUTH_TOKEN", "")  # empty: ignored, as Ray does
    assert jobs.load_token()[0] == "from-path"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert jobs.load_token() == ("from-env", "RAY_AUTH_TOKEN")


def test_token_path_that_cannot_be_read_is_an_error_not_no_token(no_token_env, monkeypatch, tmp_path):
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "missing"))
    with pytest.raises(JobError, match=r"RAY_AUTH_TOKEN_PATH=.*missing: cannot read"):
        jobs.load_token()
    (tmp_path / "empty").write_text("\n")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "empty"))
    with pytest.raises(JobError, match="is empty"):
        jobs.load_token()


# Each case needs a process where Ray's loader has not run yet (it caches its first answer). One fresh
# interpreter imports Ray once, then forks a child per case, which sets the case's environment and
# asks both loaders: one interpreter start instead of three (~1 s of CPU each).
_TOKEN_CASES = r"""
import json, os, sys
from ray._raylet import AuthenticationTokenLoader as L
from raysweep.jobs import load_token
for env in json.loads(sys.argv[1]):
    r, w = os.pipe()
    if os.fork() == 0:
        for k in [k for k in os.environ if k.startswith("RAY_AUTH_TOKEN")]:
            del os.environ[k]
        os.environ.update(env)
        os.write(w, json.dumps([L.instance().get_raw_token(ignore_auth_mode=True), load_token()[0]]).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        print(f.read())
    os.wait()
"""


def test_token_matches_rays_own_loader(tmp_path):
    """Ray's C++ loader, asked in a fresh process (it caches), picks the same token we do."""
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("home-token\n")
    (tmp_path / "tok").write_text("path-token")
    cases = [{"HOME": str(tmp_path)},
             {"HOME": str(tmp_path), "RAY_AUTH_TOKEN_PATH": str(tmp_path / "tok")},
             {"HOME": str(tmp_path), "RAY_AUTH_TOKEN_PATH": str(tmp_path / "tok"), "RAY_AUTH_TOKEN": "env-token"}]
    out = subprocess.run([sys.executable, "-c", _TOKEN_CASES, json.dumps(cases)], capture_output=True, text=True,
                         timeout=60, check=True).stdout.split("\n")
    got = [json.loads(line) for line in out if line.strip()]
    # Each case picks a different source, so a loader that ignored one would differ from Ray's or repeat.
    assert got == [["home-token"] * 2, ["path-token"] * 2, ["env-token"] * 2], got


def test_a_refusal_without_a_token_of_ours_says_the_token_is_missing():
    """Given no header, Ray's SDK sends whatever its own loader found, which a long-lived process
    may have cached from another cluster; the cluster's 403 for that token still means ours is missing."""
    from ray.exceptions import AuthenticationError

    url = "http://127.0.0.1:8265"
    for reply in ("Authentication required: ...", "Authentication failed: Invalid token"):
        with pytest.raises(JobError, match="needs its auth token: set RAY_AUTH_TOKEN"):
            with jobs._one_line_errors("status", url, None):
                raise AuthenticationError(reply)
    with pytest.raises(JobError, match="rejected the token from RAY_AUTH_TOKEN: it is not this cluster's token"):
        with jobs._one_line_errors("status", url, "RAY_AUTH_TOKEN"):
            raise AuthenticationError("Authentication failed: Invalid token")


# --- what submit refuses before uploading anything ----------------------------------------------

def test_entrypoint_quotes_every_word_and_joins_auto():
    cmd = jobs.build_entrypoint("sweeps/my sweep.yaml", "s3://bucket/runs/x", ["recipe.epochs=5", "name=a b"])
    assert cmd == ("python -m raysweep.jobs run 'sweeps/my sweep.yaml' --output s3://bucket/runs/x --address auto "
                   "--set recipe.epochs=5 --set 'name=a b'")


def test_submit_refuses_a_relative_output(project):
    with pytest.raises(JobError, match="relative path would land in the job's temporary working directory"):
        jobs.submit(project / "sweeps" / "tiny.yaml", "http://127.0.0.1:1", "runs/x")


def _capture_submit(monkeypatch) -> list[dict]:
    """jobs._call replaced by a recorder of what submit would send (and the working_dir's files)."""
    sent = []

    def fake_call(what, address, fn, **kwargs):
        kwargs["files"] = sorted(p.name for p in Path(kwargs["runtime_env"]["working_dir"]).iterdir())
        sent.append(kwargs)
        return "raysubmit_ok"

    monkeypatch.setattr(jobs, "_call", fake_call)
    return sent


@pytest.mark.parametrize("where", ["outside", "ignored"])
def test_a_sweep_file_anywhere_is_shipped_alone(project, tmp_path, monkeypatch, where):
    sent = _capture_submit(monkeypatch)
    sweep = tmp_path / "elsewhere" / "loose.yaml" if where == "outside" else project / "runs" / "old.yaml"
    sweep.parent.mkdir(exist_ok=True)
    sweep.write_text("name: loose\ndata: {path: /data/sst5.csv}\n")
    assert jobs.submit(sweep, "http://h:8265", "/tmp/out") == "raysubmit_ok"
    [job] = sent
    assert job["files"] == [sweep.name]  # the sweep file alone, not its directory
    assert job["entrypoint"].startswith(f"python -m raysweep.jobs run {sweep.name} --output /tmp/out")
    assert not Path(job["runtime_env"]["working_dir"]).exists()  # uploaded during the submit, then removed


def test_a_sweep_shipped_alone_refuses_a_relative_path_that_would_not_ship(tmp_path, monkeypatch):
    _capture_submit(monkeypatch)
    sweep = tmp_path / "loose.yaml"
    (tmp_path / "mine.csv").write_text("split,text,label\n")
    sweep.write_text("name: loose\ndata: {path: mine.csv}\n")
    with pytest.raises(JobError, match=r"data.path mine.csv is relative, and this sweep file is shipped alone"):
        jobs.submit(sweep, "http://h:8265", "/tmp/out")


def test_a_sweep_in_a_project_ships_the_project(project, monkeypatch):
    sent = _capture_submit(monkeypatch)
    jobs.submit(project / "sweeps" / "tiny.yaml", "http://h:8265", "/tmp/out")
    assert sent[0]["runtime_env"]["working_dir"] == str(project)
    assert sent[0]["entrypoint"].startswith("python -m raysweep.jobs run sweeps/tiny.yaml ")


def test_a_head_that_cannot_import_raysweeps_dependencies_fails_in_one_line():
    # `click` stands for any dependency the head's Python lacks (torch, ray[tune], ...).
    code = ("import sys, runpy; sys.modules['click'] = None; sys.argv = ['x', 'run', 'sweeps/a.yaml']; "
            "runpy.run_module('raysweep.jobs', run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"raysweep job: the head's Python ({sys.executable}) cannot import click ")
    assert "PATH" in line and "setup_commands" in line and "runtime environment" in line
    assert jobs.last_error_line("some output\n" + done.stderr) == line  # what `status` shows of it


def test_status_shows_the_drivers_last_error_line_not_rays_truncated_header(monkeypatch):
    from types import SimpleNamespace

    message = ("Job entrypoint command failed with exit code 2, last available logs (truncated to 20,000 chars):\n"
               "raysweep run: the full log is /x.log\n")
    logs = "raysweep run: the full log is /x.log\nerror: sweeps/a.yaml: recipe.epochs: expected an integer\n"
    info = SimpleNamespace(status="FAILED", message=message, entrypoint="python -m raysweep.jobs run a")
    monkeypatch.setattr(jobs, "_call", lambda what, address, fn, *a: info if fn == "get_job_info" else logs)
    state = jobs.status("http://h:8265", "raysubmit_x")
    assert state.message == "Job entrypoint command failed with exit code 2"
    assert state.error == "error: sweeps/a.yaml: recipe.epochs: expected an integer"
    assert str(state).splitlines() == ["raysubmit_x: FAILED (Job entrypoint command failed with exit code 2)",
                                       "  error: sweeps/a.yaml: recipe.epochs: expected an integer"]
    # A traceback's last line; else the last line of all; nothing for no output.
    assert jobs.last_error_line("Traceback (most recent call last):\n  File x\nValueError: bad\nbye\n") == "ValueError: bad"
    assert jobs.last_error_line("one\ntwo\n\n") == "two" and jobs.last_error_line("") == ""


def test_submit_validates_the_sweep_and_overrides_first(project):
    with pytest.raises(JobError, match="recipe.epochs"):
        jobs.submit(project / "sweeps" / "tiny.yaml", "http://127.0.0.1:1", "/tmp/out", ["recipe.epochs=ten"])


def test_submit_refuses_an_unset_key(project, monkeypatch):
    monkeypatch.delenv(KEY_VAR, raising=False)
    with pytest.raises(JobError, match=f"environment variable {KEY_VAR} is not set here"):
        jobs.submit(project / "sweeps" / "tiny.yaml", "http://127.0.0.1:1", "/tmp/out", env_keys=[KEY_VAR])


def test_runtime_env_ships_project_package_and_a_setting(project, monkeypatch):
    monkeypatch.setenv(SETTING_VAR, "blue")
    env = jobs.runtime_env(project, [SETTING_VAR])
    assert env["working_dir"] == str(project)
    assert env["py_modules"] == [str(Path(jobs.__file__).resolve().parent)]
    assert env["env_vars"] == {SETTING_VAR: "blue"}
    assert ".git" in env["excludes"]


# --- no secret rides with a job: Ray records its environment, entrypoint and metadata in clear ---

SENTINEL = "sk-raysweep-sentinel-0123456789abcdef"


@pytest.mark.parametrize("name, value, sweep", [
    ("OPENAI_API_KEY", SENTINEL, ""),
    ("HF_TOKEN", "hf_x", ""),
    ("AWS_SECRET_ACCESS_KEY", "abc", ""),
    ("DB_PASSWORD", "abc", ""),
    ("AWS_SESSION_TOKEN", "abc", ""),
    ("INNOCENT_LOOKING", SENTINEL, ""),  # the value is shaped like an OpenAI key
    ("PROVIDER", "abc", "llm: {base_url: 'http://10.0.0.1:8000/v1', api_key_env: PROVIDER}\n"),  # the sweep's key
])
def test_submit_refuses_a_secret_in_env(project, monkeypatch, name, value, sweep):
    monkeypatch.setenv(name, value)
    (project / "sweeps" / "tiny.yaml").write_text("name: tiny\n" + sweep)
    with pytest.raises(JobError, match=f"^--env {name}: looks like a secret, .*llm.api_key_file") as info:
        jobs.submit(project / "sweeps" / "tiny.yaml", "http://127.0.0.1:1", "/tmp/out", env_keys=[name])
    assert value not in str(info.value)


@pytest.mark.parametrize("output, overrides, shown", [
    (f"s3://AKIAEXAMPLE:{SENTINEL}@bucket/runs/x", [], "--output s3://***@bucket/runs/x"),
    (f"s3://bucket/runs/x?region=us-east-1&session_token={SENTINEL}", [],
     "--output s3://bucket/runs/x?region=us-east-1&session_token=***"),
    ("/tmp/out", [f"data.path=s3://AKIAEXAMPLE:{SENTINEL}@bucket/data.csv"], "--set s3://***@bucket/data.csv"),
])
def test_submit_refuses_credentials_in_the_output_or_an_override(project, output, overrides, shown):
    from raysweep.storage import StorageError

    with pytest.raises(StorageError) as info:
        jobs.submit(project / "sweeps" / "tiny.yaml", "http://127.0.0.1:1", output, overrides)
    message = str(info.value)
    assert message.startswith(f"{shown}: holds credentials") and "provider's own credentials" in message
    assert SENTINEL not in message and "AKIAEXAMPLE" not in message and "\n" not in message


def test_submit_waits_for_a_late_job_agent_but_not_forever(project, monkeypatch):
    calls, naps = [], []
    late = JobError("submit: Request failed with status code 500: No available agent to submit job, please try again later..")

    def fake_call(what, address, fn, **kwargs):
        calls.append(fn)
        if len(calls) < 3:
            raise late
        return "raysubmit_ok"

    monkeypatch.setattr(jobs, "_call", fake_call)
    monkeypatch.setattr(jobs.time, "sleep", naps.append)
    assert jobs.submit(project / "sweeps" / "tiny.yaml", "http://h:8265", "/tmp/out") == "raysubmit_ok"
    assert calls == ["submit_job"] * 3 and len(naps) == 2
    monkeypatch.setattr(jobs, "AGENT_WAIT_S", -1.0)  # past the deadline: the error comes through
    calls.clear()
    with pytest.raises(JobError, match="No available agent.*; the head's job agent never registered: look at "
                                       "dashboard_agent.log.*may be held by another Ray on that host"):
        jobs.submit(project / "sweeps" / "tiny.yaml", "http://h:8265", "/tmp/out")
    assert len(calls) == 1


@pytest.mark.parametrize("address", ["auto", "ray://10.0.0.1:10001", ""])
def test_non_http_addresses_are_refused(address):
    with pytest.raises(JobError, match="dashboard's HTTP address"):
        jobs.status(address, "raysubmit_x")


def test_nobody_listening_is_one_line(no_token_env):
    with socket.socket() as s:  # a port that was free a moment ago; nothing listens on it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(JobError, match=r"status: no Ray dashboard answers at http://127.0.0.1:\d+ ") as info:
        jobs.status(f"127.0.0.1:{port}", "raysubmit_x")
    assert "\n" not in str(info.value)


# --- real jobs on a real head node ----------------------------------------------------------------

_wait = wait_job


@pytest.mark.slow
def test_submit_status_logs_round_trip_with_a_setting_off_the_entrypoint(ray_head, project, monkeypatch, tmp_path):
    monkeypatch.setenv("RAY_AUTH_TOKEN", ray_head.token)
    key = "setting-" + os.urandom(8).hex()
    monkeypatch.setenv(SETTING_VAR, key)
    marker = tmp_path / "ran.json"
    # Runs in the uploaded project: reports what it sees without ever printing the key.
    command = (f"python -c \"import hashlib, json, os, sys, raysweep.jobs as j; "
               f"json.dump(dict(key=hashlib.sha256(os.environ['{SETTING_VAR}'].encode()).hexdigest(), "
               f"sweep=os.path.isfile('sweeps/tiny.yaml'), package=j.__file__, python=sys.executable), "
               f"open('{marker}', 'w')); "
               f"print('raysweep-job-ran')\"")
    t0 = time.monotonic()
    job_id = jobs.submit(project / "sweeps" / "tiny.yaml", ray_head.address, "", env_keys=[SETTING_VAR], command=command)
    submitted = time.monotonic() - t0
    state = _wait(ray_head.address, job_id)
    finished = time.monotonic() - t0
    print(f"submit {submitted:.2f} s, submit-to-SUCCEEDED {finished:.2f} s")
    assert state.status == "SUCCEEDED", state
    seen = json.loads(marker.read_text())
    assert seen["key"] == hashlib.sha256(key.encode()).hexdigest()  # the setting reached the job
    assert seen["sweep"]  # the project is the job's working directory
    assert "/work/" not in seen["package"] and "_ray_pkg_" in seen["package"]  # shipped raysweep, not the checkout's
    # The head's PATH python, i.e. the venv Ray runs from (python / python3 are both its links).
    assert Path(seen["python"]).parent == Path(sys.executable).parent
    text = "".join(jobs.logs(ray_head.address, job_id))
    assert "raysweep-job-ran" in text
    assert key not in text and key not in state.entrypoint
    followed = "".join(jobs.logs(ray_head.address, job_id, follow=True))
    assert "raysweep-job-ran" in followed
    assert jobs.dashboard_url(ray_head.address, job_id) == f"{ray_head.address}/#/jobs/{job_id}"


@pytest.mark.slow
def test_a_key_reaches_a_job_through_a_key_file_and_no_record_of_ray_holds_it(ray_head, project, monkeypatch, tmp_path):
    """docs/cluster.md's route: the key in a 0600 file on the nodes, named by llm.api_key_file.
    With the same key in this shell's OPENAI_API_KEY as well, nothing Ray keeps of the job (its
    record through the Jobs API, as the SDK and `ray job list` get it, its logs, every file under
    the head's temp dir) holds the key, while the job reads it."""
    monkeypatch.setenv("RAY_AUTH_TOKEN", ray_head.token)
    key = "sk-raysweep-sentinel-" + os.urandom(8).hex()
    monkeypatch.setenv("OPENAI_API_KEY", key)
    key_file = tmp_path / "openai.key"
    key_file.write_text(key + "\n")
    key_file.chmod(0o600)
    (project / "sweeps" / "tiny.yaml").write_text(f"name: tiny\nllm: {{api_key_file: {key_file}}}\n")
    with pytest.raises(JobError, match="^--env OPENAI_API_KEY: looks like a secret"):
        jobs.submit(project / "sweeps" / "tiny.yaml", ray_head.address, "", env_keys=["OPENAI_API_KEY"],
                    command="python -c pass")
    marker = tmp_path / "read.txt"
    command = (f"python -c \"import hashlib; from raysweep.llm.config import load_llm_config as c; "
               f"k = c(dict(api_key_file='{key_file}')).key_route().read(); "
               f"open('{marker}', 'w').write(hashlib.sha256(k.encode()).hexdigest())\"")
    job_id = jobs.submit(project / "sweeps" / "tiny.yaml", ray_head.address, "", command=command)
    state = _wait(ray_head.address, job_id)
    assert state.status == "SUCCEEDED", "".join(jobs.logs(ray_head.address, job_id))[-2000:]
    assert marker.read_text() == hashlib.sha256(key.encode()).hexdigest()  # the job read the key

    req = urllib.request.Request(f"{ray_head.address}/api/jobs/{job_id}",
                                 headers={"Authorization": f"Bearer {ray_head.token}", "User-Agent": "python-requests/2"})
    with urllib.request.urlopen(req, timeout=10) as r:
        record = r.read().decode(errors="replace")
    assert json.loads(record)["submission_id"] == job_id
    assert key not in record and key not in "".join(jobs.logs(ray_head.address, job_id))
    holding = [p for p in Path(ray_head.temp_dir).rglob("*")
               if p.is_file() and not p.is_symlink() and key.encode() in p.read_bytes()]
    assert holding == []


@pytest.mark.slow
def test_a_failing_job_reports_failed_with_its_output(ray_head, project, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_TOKEN", ray_head.token)
    job_id = jobs.submit(project / "sweeps" / "tiny.yaml", ray_head.address, "",
                         command="python -c \"print('about to fail'); raise SystemExit(3)\"")
    state = _wait(ray_head.address, job_id)
    assert state.status == "FAILED" and "3" in state.message
    assert "about to fail" in "".join(jobs.logs(ray_head.address, job_id))


@pytest.mark.slow
def test_wrong_token_missing_token_and_unknown_job_are_one_line_errors(ray_head, monkeypatch, tmp_path):
    monkeypatch.setenv("RAY_AUTH_TOKEN", "not-the-token")
    with pytest.raises(JobError, match="rejected the token from RAY_AUTH_TOKEN") as info:
        jobs.status(ray_head.address, "raysubmit_nope")
    assert "\n" not in str(info.value)
    monkeypatch.setenv("RAY_AUTH_TOKEN", ray_head.token)
    with pytest.raises(JobError, match="status: .*404") as info:
        jobs.status(ray_head.address, "raysubmit_nope")
    assert "\n" not in str(info.value)
    # No token at all, in a fresh process: Ray caches the token it found in-process.
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "RAY_ADDRESS"))}
    code = ("import sys; from raysweep import jobs\n"
            "try: jobs.status(sys.argv[1], 'raysubmit_nope')\n"
            "except jobs.JobError as e: print(e)")
    out = subprocess.run([sys.executable, "-c", code, ray_head.address], env={**clean, "HOME": str(tmp_path)},
                         capture_output=True, text=True, timeout=60).stdout.strip()
    assert out.startswith("status: the cluster at") and "needs its auth token" in out, out


@pytest.mark.slow
def test_a_real_sweep_through_the_jobs_api_writes_its_results(ray_head, project, monkeypatch, tmp_path):
    """The default entrypoint: `raysweep run` as a job on the head, results where --output says."""
    monkeypatch.setenv("RAY_AUTH_TOKEN", ray_head.token)
    # 300 made-up rows instead of SST-5: embedding them takes seconds, not minutes, on 2 cores.
    words = ["awful", "bad", "flat", "fine", "good", "great", "moving", "dull", "sharp", "warm"]
    rows = ["text,label,split"] + [
        f"{words[i % 10]} film number {i} {words[(i * 7) % 10]},{i % 5},{'dev' if i % 6 == 0 else 'train'}"
        for i in range(300)]
    (tmp_path / "tiny.csv").write_text("\n".join(rows) + "\n")
    (project / "sweeps" / "one.yaml").write_text(
        "name: one\n"
        f"data: {{path: {tmp_path / 'tiny.csv'}}}\n"
        "compare: {pool: [real], strategy: [random], fraction: [0], freeze: [last-linear]}\n"
        "replicate: {seed: [0]}\nrecipe: {epochs: 1}\nresources: {cpus_per_trial: 1}\n")
    out = tmp_path / "out"
    t0 = time.monotonic()
    job_id = jobs.submit(project / "sweeps" / "one.yaml", ray_head.address, str(out))
    state = _wait(ray_head.address, job_id, timeout=600)
    print(f"one-cell sweep as a job: {time.monotonic() - t0:.1f} s")
    assert state.status == "SUCCEEDED", "".join(jobs.logs(ray_head.address, job_id))[-3000:]
    assert state.entrypoint == f"python -m raysweep.jobs run sweeps/one.yaml --output {out} --address auto"
    import pandas as pd

    table = pd.read_csv(out / "trials.csv")
    assert table["status"].tolist() == ["ok"] and table["freeze"].tolist() == ["last-linear"]

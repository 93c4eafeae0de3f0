"""`select --label-studio` and `serve` against a real Label Studio 1.23 (one server per module).

Label Studio lives in a venv of its own (`.venv-ls`, made by scripts/test.sh: its Django pins
clash with the Ray/torch venv). Without it these tests skip, saying so; under CI they fail.
Ray-free: a tiny encoder and `--no-ray`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from raysweep import serve, studio
from raysweep.cli import main
from raysweep.lsclient import Client
from tests.test_serve import small_project

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
BINARY = Path(os.environ.get("RAYSWEEP_LABEL_STUDIO", ROOT / ".venv-ls" / "bin" / "label-studio"))
# A server already running (URL and its legacy token, "URL|TOKEN") skips the start-up: for
# working on these tests; CI starts a fresh one.
RUNNING = os.environ.get("RAYSWEEP_TEST_LABEL_STUDIO", "")
LEGACY = RUNNING.split("|")[1] if RUNNING else "5e1ec7ab1e70ce2b0a7e5e1ec7ab1e70ce2b0a7e"
START_S = 300  # a fresh data directory runs Label Studio's migrations first (~30-60 s here)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory):
    if RUNNING:
        yield RUNNING.split("|")[0]
        return
    if not BINARY.exists():
        message = f"Label Studio is not installed at {BINARY} (scripts/test.sh makes .venv-ls)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    data = tmp_path_factory.mktemp("label-studio")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("HOST", "LABEL_STUDIO_API_KEY")}
    # No update check against PyPI at start; the ML backend runs on 127.0.0.1, which Label
    # Studio refuses to connect (ML_BLOCK_LOCAL_IP), add a webhook for (USE_DEFAULT_BANNED_SUBNETS)
    # or call (SSRF_PROTECTION_ENABLED) by default.
    env.update(LABEL_STUDIO_BASE_DATA_DIR=str(data), LATEST_VERSION_CHECK="false", SSRF_PROTECTION_ENABLED="false",
               USE_DEFAULT_BANNED_SUBNETS="false", ML_BLOCK_LOCAL_IP="false")
    log = open(data / "server.log", "w")
    proc = subprocess.Popen([str(BINARY), "start", "--no-browser", "--port", str(port), "--username",
                             "test@example.com", "--password", "test-password-1", "--user-token", LEGACY,
                             "--enable-legacy-api-token"], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_S
    try:
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=5) as resp:
                    if json.loads(resp.read()).get("status") == "UP":
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = (data / "server.log").read_text()[-2000:]
                pytest.fail(f"Label Studio did not start in {START_S} s:\n{tail}")
            time.sleep(1)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server we started, and its children only
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


@pytest.fixture
def project(tmp_path, tiny_bert):
    d, pool = small_project(tmp_path, tiny_bert, "classes: [positive, negative]\nstrategy: entropy\nbatch: 5\n"
                                                 "cv_folds: 2")
    return d, dict(zip(pool["id"], pool["gold"]))


def _select(d, url, token):
    env = {"LABEL_STUDIO_API_KEY": token}
    return CliRunner().invoke(main, ["select", "--project", str(d), "--label-studio", url, "--no-ray"], env=env)


def _personal_access_token(url) -> str:
    """A personal access token made through the API (a running server's may be in RUNNING's third field:
    Label Studio makes one per user)."""
    if RUNNING.count("|") == 2:
        return RUNNING.split("|")[2]
    return Client(url, LEGACY).call("POST", "/api/token/", {})["token"]


def test_two_rounds_through_label_studio_with_both_kinds_of_token(label_studio, project):
    d, gold = project
    url = label_studio
    first = _select(d, url, LEGACY)
    assert first.exit_code == 0, first.output
    state = json.loads((d / studio.STATE).read_text())
    client = Client(url, LEGACY)
    ls_project = client.project(state["project"])
    # the buttons in the classes' order (not the alphabet's)
    assert ls_project["label_config"].index('"positive"') < ls_project["label_config"].index('"negative"')
    assert "keep labeling" in ls_project["description"] or "stop" in ls_project["description"]
    tasks = client.tasks(state["project"])
    assert len(tasks) == 5
    pred = tasks[0]["predictions"][0]
    assert pred["model_version"] == "round-001" and pred["score"] is not None
    assert "keep labeling" in first.output or "stop:" in first.output

    # Nothing finished yet: one line, nothing closed, nothing imported twice.
    again = _select(d, url, LEGACY)
    assert again.exit_code == 2 and "none of its 5 tasks is finished" in again.output
    assert len(client.tasks(state["project"])) == 5

    # An annotator labels four tasks and skips one, through Label Studio's API, with a personal access token.
    pat = _personal_access_token(url)
    batch = pd.read_csv(d / "rounds/round-001/to_label.csv", dtype=str)
    answers = {i: (None if n == 0 else gold[i]) for n, i in enumerate(batch["id"])}
    assert studio.annotate(Client(url, pat), state["project"], answers) == (4, 1)

    second = _select(d, url, pat)
    assert second.exit_code == 0, second.output
    labels = pd.read_csv(d / "rounds/round-001/labels.csv", dtype=str)
    assert sorted(labels["id"]) == sorted(batch["id"][1:])
    assert list(pd.read_csv(d / "rounds/round-001/skipped.csv", dtype=str)["id"]) == [batch["id"][0]]
    assert len(client.tasks(state["project"])) == 10
    round2 = json.loads((d / "rounds/round-002/round.json").read_text())
    assert round2["labeled"] == 8 + 4 and round2["stopping"]["line"] in client.project(state["project"])["description"]

    # A crash after the import was sent but before it was recorded: the repeat sends nothing twice.
    state = json.loads((d / studio.STATE).read_text())
    state["imported"].remove("round-002")
    (d / studio.STATE).write_text(json.dumps(state))
    repeat = _select(d, url, pat)
    assert repeat.exit_code == 0 and "0 tasks imported (5 were there already)" in repeat.output
    assert len(client.tasks(state["project"])) == 10

    # The token is in no file the project holds.
    for path in d.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".log", ".csv", ".jsonl", ".yaml"):
            text = path.read_text(errors="replace")
            assert LEGACY not in text and pat not in text, path


def test_a_wrong_token_or_url_is_one_line_before_any_work(label_studio, project):
    d, _ = project
    wrong = _select(d, label_studio, LEGACY[::-1])
    assert wrong.exit_code == 2 and LEGACY[::-1] not in wrong.output
    assert wrong.output.strip().count("\n") == 0 and "refused the legacy token" in wrong.output
    nowhere = _select(d, f"http://127.0.0.1:{_free_port()}", LEGACY)
    assert nowhere.exit_code == 2 and "cannot reach it" in nowhere.output
    assert not (d / "rounds").exists() and not (d / "cache").exists()


def test_the_ml_backend_predicts_and_retrains_on_label_studio_webhooks(label_studio, project):
    d, gold = project
    url = label_studio
    assert _select(d, url, LEGACY).exit_code == 0
    pid = json.loads((d / studio.STATE).read_text())["project"]
    backend = serve.Backend(d, retrain_every=2, log=lambda *_: None)
    httpd = serve.make_server(backend, "127.0.0.1", 0)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    backend_url = f"http://127.0.0.1:{httpd.server_address[1]}"
    client = Client(url, LEGACY)
    try:
        client.call("POST", "/api/ml", {"url": backend_url, "project": pid, "title": "raysweep"})
        # Label Studio asks the backend for predictions of every task (the data manager's action).
        client.call("POST", f"/api/dm/actions?id=retrieve_tasks_predictions&project={pid}",
                    {"selectedItems": {"all": True, "excluded": []}})
        tasks = client.tasks(pid)
        ours = [p for t in tasks for p in t["predictions"] if p["model_version"].startswith("raysweep-v")]
        assert len(ours) == len(tasks) and all(p["score"] is not None for p in ours)
        # Two annotations made in Label Studio reach /webhook; the backend retrains in the background.
        answers = {t["data"]["row_id"]: gold[t["data"]["row_id"]] for t in tasks[:2]}
        studio.annotate(client, pid, answers)
        deadline = time.monotonic() + 60
        while backend.model_version != "raysweep-v2" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert backend.model_version == "raysweep-v2" and backend.trained_on == 8 + 2
        assert len((d / serve.ANNOTATIONS).read_text().splitlines()) == 2
    finally:
        httpd.shutdown()
        httpd.server_close()

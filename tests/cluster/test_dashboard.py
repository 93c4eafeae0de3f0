"""What a person watching a sweep sees on the Ray dashboard, read from a real head during a real
sweep: the state API's actors and tasks, the Ray Data view's datasets, and the node's Prometheus
endpoint with raysweep's own metrics.

The head is started here (`ray start`, ports of its own: another engineer's Ray may hold 8265 or
52365); the sweep's driver is a child process, so this test's process never joins a Ray.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from headnode import RAY, free_port, stop_by_pid, wait_for_dashboard

pytestmark = pytest.mark.slow

# The driver: a tiny sweep whose every stage shows on the dashboard. Its passes are far below the
# sizes at which raysweep leaves a pass to Ray Data (embed/scoring RAY_MIN_*), so those are lowered.
DRIVER = r"""
import json, sys, time
from pathlib import Path
args = json.loads(sys.argv[1])
import ray
from raysweep import embed, scoring
from raysweep.config import load_sweep
from raysweep.llm.fake_server import FakeOpenAI
from raysweep.sweep import run_sweep
embed.RAY_MIN_ENCODE_ROWS = 0
scoring.RAY_MIN_POOLED_ROWS = 0
server = FakeOpenAI(rows_per_reply=5).start()
cfg = load_sweep(args["sweep"], [f"llm.base_url={server.base_url}"])
table = run_sweep(cfg, args["out"], address=args["address"], log=print)
Path(args["ready"]).write_text(json.dumps({"job": ray.get_runtime_context().get_job_id(),
                                           "status": table["status"].tolist()}))
deadline = time.monotonic() + 120
while not Path(args["done"]).exists() and time.monotonic() < deadline:
    time.sleep(0.2)
server.stop()
"""

SWEEP = """
name: watch
compare: {{pool: [llm], strategy: [random, entropy], fraction: [0.5], freeze: [last-linear]}}
replicate: {{seed: [0]}}
data: {{path: {data}}}
encoder: {{name: {encoder}, max_length: 32}}
recipe: {{epochs: 1}}
selection: {{k: 3}}
resources: {{cpus_per_trial: 1}}
llm: {{base_url: http://127.0.0.1:9/v1, api_key_env: none, model: fake-model, n_rows: 10, samples_per_call: 5,
      concurrency: 2, retry_backoff: 0.01, timeout: 10, max_cost_usd: 1.0,
      prices: {{fake-model: {{prompt: 1.0, completion: 2.0}}}}}}
teacher: {{freeze: last-linear, epochs: 1}}
"""


@pytest.fixture
def head(tmp_path):
    """A token-authenticated head with its dashboard and metrics export on ports of its own."""
    root = Path(tempfile.mkdtemp(prefix="rs-watch-", dir="/tmp"))
    token = secrets.token_hex(16)
    ports = {name: free_port() for name in ("gcs", "dashboard", "agent", "metrics", "client")}
    path = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token, PATH=path,
               RAY_metrics_report_interval_ms="1000")  # a metric reaches the endpoint within a second
    env.pop("RAY_ADDRESS", None)
    cmd = [str(RAY), "start", "--head", "--block", "--disable-usage-stats", "--port", str(ports["gcs"]),
           "--dashboard-port", str(ports["dashboard"]), "--dashboard-host", "127.0.0.1",
           "--dashboard-agent-listen-port", str(ports["agent"]), "--metrics-export-port", str(ports["metrics"]),
           "--ray-client-server-port", str(ports["client"]), "--temp-dir", str(root / "ray"), "--num-cpus", "2",
           "--memory", str(4 * 1024**3), "--object-store-memory", str(300 * 1024**2)]
    log = open(root / "head.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{ports['dashboard']}"
    try:
        wait_for_dashboard(url, token, proc, timeout=120)
        yield {"url": url, "token": token, "env": env, "metrics": ports["metrics"],
               "address": f"127.0.0.1:{ports['gcs']}"}
    finally:
        stop_by_pid(proc)
        log.close()


def get(url: str, token: str | None = None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
        text = r.read().decode()
    return json.loads(text) if text.lstrip().startswith("{") else text


def scrape(head) -> str:
    """The node's Prometheus page; empty until its metrics agent listens (it starts after the dashboard)."""
    try:
        return get(f"http://127.0.0.1:{head['metrics']}/metrics")
    except OSError:
        return ""


def state_rows(head, kind: str) -> list[dict]:
    """The state API's list of `kind` (actors, tasks), through the dashboard's REST endpoint."""
    body = get(f"{head['url']}/api/v0/{kind}?limit=10000&detail=1", head["token"])
    return body["data"]["result"]["result"]


def samples(text: str) -> dict[tuple[str, str], float]:
    """raysweep's samples on a Prometheus page for the sweep `watch`: {(name, extra label): value}."""
    found = {}
    for line in text.splitlines():
        m = re.match(r"^(ray_raysweep_\w+)\{([^}]*)\} (\S+)$", line)
        if m and 'sweep="watch"' in m.group(2):
            extra = re.search(r'\b(kind|by)="([^"]*)"', m.group(2))
            found[(m.group(1), extra.group(2) if extra else "")] = float(m.group(3))
    return found


def test_the_dashboard_shows_named_datasets_actors_trials_and_raysweeps_metrics(
        head, sst5_subset, tiny_bert, tmp_path):
    t0 = time.monotonic()
    sweep = tmp_path / "watch.yaml"
    sweep.write_text(SWEEP.format(data=sst5_subset, encoder=tiny_bert))
    ready, done = tmp_path / "ready.json", tmp_path / "done"
    args = {"sweep": str(sweep), "out": str(tmp_path / "out"), "address": head["address"],
            "ready": str(ready), "done": str(done)}
    env = {**head["env"], "PYTHONPATH": os.pathsep.join(sys.path)}
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, json.dumps(args)], env=env,
                              stdout=open(tmp_path / "driver.log", "w"), stderr=subprocess.STDOUT)
    try:
        # During the sweep: the metrics endpoint, until the driver has finished its cells.
        seen_running = False
        while not ready.exists():
            assert driver.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
            seen_running |= samples(scrape(head)).get(("ray_raysweep_cells_running", ""), 0) > 0
            time.sleep(0.5)
        result = json.loads(ready.read_text())
        assert result["status"] == ["ok", "ok"], (tmp_path / "driver.log").read_text()[-3000:]

        # The driver is still connected: everything it made is on the dashboard.
        datasets = get(f"{head['url']}/api/data/datasets/{result['job']}", head["token"])["datasets"]
        names = [d["dataset"] for d in datasets]
        assert any(n.startswith("raysweep:watch:encode_") for n in names), names
        assert any(n.startswith("raysweep:watch:score_") for n in names), names

        actors = state_rows(head, "actors")
        classes = {a["class_name"] for a in actors}
        assert {"LLMGenerator", "LLMRateLimiter", "LLMBudget", "PackTrial"} <= classes, classes
        llm = [a for a in actors if a["class_name"].startswith("LLM")]
        assert all(a["ray_namespace"] == "raysweep:watch" and a["name"].startswith(a["class_name"] + "-")
                   for a in llm), llm
        trials = [a["repr_name"] for a in actors if a["class_name"] == "PackTrial"]
        assert trials and all(re.fullmatch(r"PackTrial\(llm-.+-last-linear-n\d+-\d+-\d+cells\)", r) for r in trials), \
            trials
        tasks = {t["name"] for t in state_rows(head, "tasks")}
        assert "train_pack" in tasks and "_train_pack" not in tasks, sorted(tasks)

        deadline = time.monotonic() + 30
        while True:
            got = samples(scrape(head))
            wanted = {("ray_raysweep_cells_to_run", ""): 2, ("ray_raysweep_cells_done", ""): 2,
                      ("ray_raysweep_cells_failed", ""): 0, ("ray_raysweep_cells_running", ""): 0,
                      ("ray_raysweep_llm_dollars_cap", ""): 1.0, ("ray_raysweep_rows_labeled_total", "teacher"): 10}
            if all(got.get(k) == v for k, v in wanted.items()) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert {k: got.get(k) for k in wanted} == wanted, got
        assert got[("ray_raysweep_llm_calls_total", "")] >= 2
        assert got[("ray_raysweep_llm_tokens_total", "prompt")] > 0
        assert got[("ray_raysweep_llm_tokens_total", "completion")] > 0
        assert 0 < got[("ray_raysweep_llm_dollars_spent", "")] <= 1.0
        assert got[("ray_raysweep_llm_limiter_wait_seconds", "")] >= 0
        assert got[("ray_raysweep_trainings_total", "trial")] >= 1  # the riders share one training
        assert got[("ray_raysweep_trainings_total", "scoring")] == 1
        print(f"dashboard test: {time.monotonic() - t0:.1f} s (running cells seen while it ran: {seen_running})")
    finally:
        done.write_text("")
        try:
            driver.wait(timeout=60)
        except subprocess.TimeoutExpired:
            driver.kill()

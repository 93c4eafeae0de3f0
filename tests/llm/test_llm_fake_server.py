"""The fake provider is the benchmark's referee: check that it scripts and counts what it claims."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from raysweep.llm.fake_server import Reply, estimate_usage_tokens


def post(server, content="hello", call="0"):
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": content}]}).encode()
    request = urllib.request.Request(f"{server.base_url}/chat/completions", data=body,
                                     headers={"Content-Type": "application/json", "X-Raysweep-Call": call})
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:
            return reply.status, json.loads(reply.read()), dict(reply.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), dict(exc.headers)


def test_scripted_replies_then_the_default(fake_openai):
    server = fake_openai(script=[Reply(status=500), Reply(status=429, headers={"retry-after": "2"}),
                                 Reply(content="[]", truncate_at=0.5)], rows_per_reply=3)
    assert post(server)[0] == 500
    status, _, headers = post(server)
    assert (status, headers["retry-after"]) == (429, "2")
    status, body, _ = post(server)
    assert body["choices"][0] == {"index": 0, "finish_reason": "length", "message": {"role": "assistant", "content": "["}}
    status, body, _ = post(server, content="x" * 40, call="7")
    pairs = json.loads(body["choices"][0]["message"]["content"])
    assert [label for _, label in pairs] == [0, 1, 2] and len({s for s, _ in pairs}) == 3
    assert body["usage"]["prompt_tokens"] == 10
    assert body["usage"]["completion_tokens"] == estimate_usage_tokens(body["choices"][0]["message"]["content"])
    assert [a["status"] for a in server.arrivals] == [500, 429, 200, 200]
    assert server.calls_served() == ["0", "7"]


def test_it_refuses_and_counts_calls_over_the_request_limit(fake_openai):
    server = fake_openai(requests_per_minute=60, burst_seconds=2)  # 2 at once, then 1 per second
    statuses = [post(server)[0] for _ in range(3)]
    assert statuses == [200, 200, 429]
    assert server.violations == {"requests": 1, "tokens": 0}
    assert server.arrivals[-1]["violation"] == "requests"


def test_it_refuses_and_counts_calls_over_the_token_limit(fake_openai):
    server = fake_openai(tokens_per_minute=600, burst_seconds=10, rows_per_reply=1)  # 100 tokens at once
    status, body, _ = post(server, content="x" * 200)  # 50 prompt tokens + ~12 completion
    assert status == 200 and body["usage"]["total_tokens"] < 100
    status, body, headers = post(server, content="x" * 200)
    assert status == 429 and headers["retry-after"] == "1.0"
    assert server.violations == {"requests": 0, "tokens": 1}


def test_python_dash_m_runs_it_on_the_given_port_for_a_person_without_a_key(tmp_path):
    import os
    import signal
    import socket
    import subprocess
    import sys
    from types import SimpleNamespace

    with socket.socket() as s:  # a free port, released for the server
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "raysweep.llm.fake_server", "--port", str(port)],
                            stdout=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}/v1" in line and "api_key_env: none" in line
        status, body, _ = post(SimpleNamespace(base_url=f"http://127.0.0.1:{port}/v1"))
        assert status == 200 and json.loads(body["choices"][0]["message"]["content"])
    finally:
        proc.send_signal(signal.SIGTERM)  # a pytest-xdist worker's children inherit SIGINT ignored
        assert proc.wait(timeout=60) == 0
    with socket.socket() as taken:  # a port someone holds: one line, exit code 2
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        held = taken.getsockname()[1]
        busy = subprocess.run([sys.executable, "-m", "raysweep.llm.fake_server", "--port", str(held)],
                              capture_output=True, text=True, timeout=60)
    assert busy.returncode == 2 and busy.stderr.startswith(f"error: --port {held}:")

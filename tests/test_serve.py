"""`raysweep serve`: the ML-backend protocol over HTTP with a tiny encoder (fast, Ray-free):
predictions with the strategy's score, background retraining after K annotations, 4xx JSON on
bad payloads, and annotations surviving a restart."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from raysweep import serve
from tests.test_select import _sentences


def small_project(tmp_path, encoder, settings: str):
    """8 labeled and 40 unlabeled rows of the tiny vocabulary, the tiny encoder, and `settings`
    (project.yaml lines: classes, strategy, batch). Returns (directory, the pool with its gold)."""
    d = tmp_path / "proj"
    d.mkdir()
    _sentences(8, 1).rename(columns={"gold": "label"}).to_csv(d / "labeled.csv", index=False)
    pool = _sentences(40, 2)
    pool[["id", "text"]].to_csv(d / "unlabeled.csv", index=False)
    (d / "project.yaml").write_text(f"""{settings}
encoder: {{name: {encoder}, max_length: 16}}
recipe: {{epochs: 3, batch_size: 8}}
""")
    return d, pool


@pytest.fixture
def project(tmp_path, tiny_bert):
    return small_project(tmp_path, tiny_bert, "classes: [negative, positive]\nstrategy: margin\nbatch: 6")


@pytest.fixture
def server(project):
    d, pool = project
    backend = serve.Backend(d, retrain_every=3, log=lambda *_: None)
    httpd = serve.make_server(backend, "127.0.0.1", 0)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield backend, f"http://127.0.0.1:{httpd.server_address[1]}", pool
    httpd.shutdown()
    httpd.server_close()


def _post(url, body, raw=None):
    data = raw if raw is not None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _annotation(label):
    return {"id": 1, "result": [{"from_name": "label", "to_name": "text", "type": "choices",
                                 "value": {"choices": [label]}}], "was_cancelled": False}


def test_predict_carries_the_strategys_score_and_model_version(server):
    backend, url, pool = server
    with urllib.request.urlopen(url + "/health", timeout=10) as resp:
        health = json.loads(resp.read())
    assert health["status"] == "UP" and health["model_version"] == "raysweep-v1"
    status, setup = _post(url + "/setup", {"project": "1.123", "schema": '<View><Text name="t" value="$text"/></View>'})
    assert status == 200 and setup["model_version"] == "raysweep-v1"
    tasks = [{"id": i, "data": {"row_id": r, "text": t}} for i, (r, t) in enumerate(zip(pool["id"][:5], pool["text"][:5]))]
    tasks.append({"id": 99, "data": {"text": "a sentence that is not in the project"}})
    status, reply = _post(url + "/predict", {"tasks": tasks, "project": "1.123"})
    assert status == 200 and len(reply["results"]) == 6
    for r in reply["results"]:
        assert r["model_version"] == "raysweep-v1"
        assert r["result"][0]["value"]["choices"][0] in ("negative", "positive")
    # margin's score: minus the gap between the two top probabilities, as the strategy ranks rows
    rows = np.array([backend.position[r] for r in pool["id"][:5]])
    probs, scores = backend._score(backend.model, backend.acts, rows)
    assert np.allclose([r["score"] for r in reply["results"][:5]], scores)
    assert np.allclose(scores, -np.abs(probs[:, 0] - probs[:, 1]))


@pytest.mark.parametrize("path, raw, status", [
    ("/predict", b"{not json", 400),
    ("/predict", b"[1, 2]", 422),
    ("/predict", b'{"tasks": "x"}', 422),
    ("/predict", b'{"tasks": [{"id": 1}]}', 422),
    ("/webhook", b'{"annotation": {}}', 422),
    ("/webhook", b'{"action": "ANNOTATION_CREATED", "task": {"data": {"text": "x"}}}', 422),
    ("/nope", b"{}", 404),
])
def test_bad_payloads_get_a_4xx_json_error(server, path, raw, status):
    _, url, _ = server
    got, body = _post(url + path, None, raw=raw)
    assert got == status and isinstance(body["error"], str) and body["error"]


def test_a_label_outside_the_classes_is_refused(server):
    _, url, pool = server
    got, body = _post(url + "/webhook", {"action": "ANNOTATION_CREATED", "task": {"data": {"row_id": pool["id"][0]}},
                                         "annotation": _annotation("maybe")})
    assert got == 422 and "maybe" in body["error"]


def test_webhooks_retrain_in_the_background_and_survive_a_restart(server, project):
    backend, url, pool = server
    gate = threading.Event()
    real_train = backend._train

    def slow_train():  # training waits until the test has seen that requests do not
        gate.wait(30)
        real_train()
    backend._train = slow_train
    for row_id, gold in zip(pool["id"][:3], pool["gold"][:3]):
        status, reply = _post(url + "/webhook", {"action": "ANNOTATION_CREATED", "task": {"data": {"row_id": row_id}},
                                                 "annotation": _annotation(gold)})
        assert status == 201
    assert reply["training"] is True
    status, reply = _post(url + "/predict", {"tasks": [{"id": 1, "data": {"row_id": pool["id"][5]}}]})
    assert status == 200 and reply["results"][0]["model_version"] == "raysweep-v1"  # answered during training
    gate.set()
    deadline = time.monotonic() + 60
    while backend.model_version != "raysweep-v2" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert backend.model_version == "raysweep-v2" and backend.trained_on == 8 + 3
    # an ignored action, and a cancelled annotation that takes a label back
    assert _post(url + "/webhook", {"action": "PROJECT_UPDATED"})[1]["status"] == "ignored"
    cancelled = dict(_annotation(pool["gold"][0]), was_cancelled=True)
    _post(url + "/webhook", {"action": "ANNOTATION_UPDATED", "task": {"data": {"row_id": pool["id"][0]}},
                             "annotation": cancelled})
    again = serve.Backend(project[0], retrain_every=3, log=lambda *_: None)
    assert int((again.labels >= 0).sum()) == 8 + 2  # replayed from serve/annotations.jsonl


def test_start_training_takes_every_annotated_task(server):
    backend, url, pool = server
    tasks = [{"id": i, "data": {"row_id": r}, "annotations": [_annotation(g)]}
             for i, (r, g) in enumerate(zip(pool["id"][:2], pool["gold"][:2]))]
    status, reply = _post(url + "/train", {"annotations": tasks})
    assert status == 200 and reply["training"] is True
    backend.training.join(60)
    assert backend.model_version == "raysweep-v2" and backend.trained_on == 8 + 2
    assert _post(url + "/train", {"annotations": "x"})[0] == 422

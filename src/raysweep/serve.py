"""`raysweep serve --project DIR --port N`: a Label Studio ML backend over a `select` project.

Label Studio's own active-learning loop: it asks a backend for predictions with a score, orders
its tasks by that score, and sends every annotation to the backend, which retrains. The protocol
(label-studio-ml-backend's):

    GET  /health     {"status": "UP", "model_class", "model_version", ...}   (also GET /)
    POST /setup      {"project", "schema", ...} -> {"model_version"}
    POST /predict    {"tasks": [{"id", "data": {...}}, ...]} -> {"results": [{"result", "score", "model_version"}]}
    POST /webhook    {"action": "ANNOTATION_CREATED" | "ANNOTATION_UPDATED" | "ANNOTATION_DELETED" |
                      "START_TRAINING", "annotation", "task"} -> {"status": "ok", ...}
    POST /train      {"annotations": [task, ...]}: the "Start Training" button of servers without
                     the START_TRAINING webhook; takes every task's last annotation, retrains

A prediction is the head's label for the task's text with the project strategy's score (higher:
label it sooner); a strategy without a per-row score (random, coreset, badge) is scored by entropy,
which /health says. Tasks are found among the project's rows by `data.row_id` (what `select`
imports), else by their text; any other text is encoded on the spot (once: the cache keeps it).

Annotations of the project's rows count as labels: each is appended to serve/annotations.jsonl
(fsynced, replayed at start, so a restart loses none); after every `retrain_every` new ones the
head retrains in a background thread and `model_version` goes up. Requests never wait for it:
/predict answers with the model it has. Annotations of texts outside the project's files are
recorded but not trained on (they have no row in the cached activations).

The standard library's threaded HTTP server: a handful of small JSON calls from one Label
Studio, so no web framework is needed in the Ray/torch environment for it.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

from raysweep import labeling, labelstudio, scoring, strategies
from raysweep import model as modeling
from raysweep.strategies import RankingStrategy
from raysweep.strategies.uncertainty import Entropy

MAX_BODY = 20 * 1024 * 1024  # a /predict of thousands of tasks fits; anything larger is refused (413)
RETRAIN_EVERY = 10
LABEL_ACTIONS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED")
ANNOTATIONS = "serve/annotations.jsonl"


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class Backend:
    """The model, the labels and the retraining behind the HTTP handler (tests call it directly)."""

    def __init__(self, project_dir: str | Path, overrides=(), retrain_every: int = RETRAIN_EVERY, log=print):
        self.dir = Path(project_dir)
        self.log = log
        self.retrain_every = retrain_every
        self.project = labeling.prepare(self.dir, overrides, log=log, allow_open=True)
        cfg = self.project.cfg
        self.acts = labeling.activations(self.project, use_ray=False, log=log)
        self.position = {str(i): n for n, i in enumerate(self.project.ids)}
        self.by_text = {t: n for n, t in enumerate(self.project.texts)}
        self.file_labels = self.project.labels.copy()  # labeled file + closed rounds
        self.labels = self.file_labels.copy()  # ... plus annotations received here
        chosen = strategies.get(cfg.strategy).configure(cfg.selection)
        self.strategy = chosen if isinstance(chosen, RankingStrategy) else Entropy()
        self.score_note = ("" if self.strategy is chosen else
                           f"{cfg.strategy} has no per-row score: predictions are scored by entropy")
        self.text_field = labelstudio.OBJECT
        self.lock = threading.Lock()
        self.model, self.version, self.trained_on = None, 0, 0
        self.pending = 0  # annotations since the last training started
        self.training: threading.Thread | None = None
        self.last_error: str | None = None
        self.path = self.dir / ANNOTATIONS
        self.path.parent.mkdir(parents=True, exist_ok=True)
        replayed = self._replay()
        self._train()  # at start, before serving: the first predictions come from a model when there are labels
        log(f"serve: {int((self.labels >= 0).sum())} labeled rows ({replayed} annotations replayed from {self.path}); "
            f"model_version {self.model_version}; strategy {self.strategy}"
            + (f" ({self.score_note})" if self.score_note else ""))

    # ----------------------------------------------------------------------- state

    @property
    def model_version(self) -> str:
        return f"raysweep-v{self.version}" if self.model is not None else "raysweep-untrained"

    def health(self) -> dict:
        return {"status": "UP", "model_class": "raysweep", "model_version": self.model_version,
                "strategy": str(self.strategy), "score_note": self.score_note,
                "labeled": int((self.labels >= 0).sum()), "trained_on": self.trained_on,
                "training": bool(self.training and self.training.is_alive()), "pending": self.pending,
                "retrain_every": self.retrain_every, "last_error": self.last_error}

    def setup(self, payload: dict) -> dict:
        schema = payload.get("schema") or payload.get("label_config")
        if schema is not None and not isinstance(schema, str):
            raise BadRequest("setup: `schema` must be the labeling config as a string", 422)
        if schema:  # the <Text value="$field"> the labeling config shows is where the text is
            found = re.search(r"<Text\b[^>]*\bvalue=\"\$([\w.]+)\"", schema)
            if found:
                self.text_field = found.group(1)
        return {"model_version": self.model_version}

    # ----------------------------------------------------------------------- predictions

    def _row_of(self, task: dict) -> tuple[int | None, str]:
        data = task.get("data")
        if not isinstance(data, dict):
            raise BadRequest("each task needs a `data` object", 422)
        row_id = data.get(labelstudio.ROW_ID)
        if row_id is not None and str(row_id) in self.position:
            at = self.position[str(row_id)]
            return at, self.project.texts[at]
        text = data.get(self.text_field)
        if not isinstance(text, str):
            text = next((v for v in data.values() if isinstance(v, str) and v.strip()), None)
        if not isinstance(text, str) or not text.strip():
            raise BadRequest(f"task {task.get('id')}: no text in data.{self.text_field}", 422)
        return self.by_text.get(text.strip()), text.strip()

    def predict(self, payload: dict) -> dict:
        tasks = payload.get("tasks")
        if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
            raise BadRequest("predict: expected {\"tasks\": [task, ...]}", 422)
        found = [self._row_of(t) for t in tasks]
        with self.lock:  # one consistent (model, version) for the whole reply
            model, version = self.model, self.model_version
        if model is None or not tasks:
            return {"results": [{"result": [], "score": 0.0, "model_version": version} for _ in tasks],
                    "model_version": version}
        probs, scores = np.zeros((len(tasks), len(self.project.classes))), np.zeros(len(tasks))
        known = [i for i, (at, _) in enumerate(found) if at is not None]
        if known:
            p, s = self._score(model, self.acts, np.array([found[i][0] for i in known]))
            probs[known], scores[known] = p, s
        new = [i for i, (at, _) in enumerate(found) if at is None]
        if new:
            p, s = self._score_texts(model, [found[i][1] for i in new])
            probs[new], scores[new] = p, s
        results = []
        for k in range(len(tasks)):
            pred = labelstudio.task("", "", self.project.classes[int(probs[k].argmax())], float(scores[k]),
                                    model_version=version)["predictions"][0]
            results.append(pred)
        return {"results": results, "model_version": version}

    def _score(self, model, acts, rows: np.ndarray, use_labeled: bool = True):
        labeled = np.flatnonzero(self.labels >= 0) if use_labeled else np.empty(0, dtype=np.int64)
        needs = self.strategy.needs | {"probs"}
        view = scoring.pool_view(needs, model, acts, rows, labeled, self.labels[labeled], self.project.cfg.selection,
                                 self.project.cfg.seed)
        return view.probs, np.asarray(self.strategy.scores(view), dtype=np.float64)

    def _score_texts(self, model, texts: list[str]):
        """Texts not in the project: encoded (cached by content), scored by the strategy when it
        needs only the rows themselves, else by entropy (its other inputs are the project's rows)."""
        from raysweep.backbone import boundary_for, load_backbone
        from raysweep.embed import ensure_activation_sets, load_activations

        cfg = self.project.cfg
        backbone = load_backbone(cfg.encoder.name)
        boundary = boundary_for(cfg.freeze, backbone.num_layers, cfg.encoder.pooling, cfg.encoder.max_length)
        paths = ensure_activation_sets(cfg.encoder.name, {"texts": texts}, [boundary], self.dir / "cache",
                                       use_ray=False, batch_size=cfg.encoder.batch_size, log=lambda *_: None)
        acts = load_activations(paths["texts"][0])
        rows = np.arange(len(texts))
        if self.strategy.needs <= {"probs", "mc_probs", "embeddings"}:
            return self._score(model, acts, rows, use_labeled=False)
        view = scoring.pool_view(frozenset({"probs"}), model, acts, rows, np.empty(0, dtype=np.int64),
                                 np.empty(0, dtype=np.int64), cfg.selection, cfg.seed)
        return view.probs, np.asarray(Entropy().scores(view), dtype=np.float64)

    # ----------------------------------------------------------------------- annotations

    def webhook(self, payload: dict) -> dict:
        action = payload.get("action")
        if not isinstance(action, str):
            raise BadRequest("webhook: expected {\"action\": ..., \"annotation\": ..., \"task\": ...}", 422)
        if action == "START_TRAINING":
            return {"status": "ok", "training": self._start_training(force=True)}
        if action not in (*LABEL_ACTIONS, "ANNOTATION_DELETED", "ANNOTATIONS_DELETED"):
            return {"status": "ignored", "action": action}
        task, annotation = payload.get("task"), payload.get("annotation")
        if action == "ANNOTATIONS_DELETED":  # a bulk delete names only ids: nothing to undo by row
            return {"status": "ignored", "action": action}
        if not isinstance(task, dict) or not isinstance(annotation, dict):
            raise BadRequest(f"webhook {action}: needs `task` and `annotation` objects", 422)
        at, text = self._row_of(task)
        label = None
        if action in LABEL_ACTIONS and not annotation.get("was_cancelled"):
            choices = [r.get("value", {}).get("choices") for r in annotation.get("result") or []
                       if isinstance(r, dict) and isinstance(r.get("value"), dict)]
            choices = [c for c in choices if c]
            if choices:
                label = str(choices[0][0])
                if label not in self.project.classes:
                    raise BadRequest(f"webhook: label {label!r} is not one of the classes "
                                     f"({', '.join(self.project.classes)})", 422)
        record = {"time": time.time(), "action": action, "row": None if at is None else str(self.project.ids[at]),
                  "text": text if at is None else None, "label": label}
        self._append(record)
        if at is None:
            return {"status": "recorded", "trained_on": False,
                    "note": "the text is not one of the project's rows: recorded, not trained on"}
        with self.lock:
            self._apply(record)
        return {"status": "ok", "training": self._start_training(), "pending": self.pending}

    def train(self, payload: dict) -> dict:
        """Label Studio's older "Start Training" call: every annotated task at once, then a retrain."""
        tasks = payload.get("annotations")
        if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
            raise BadRequest("train: expected {\"annotations\": [task with annotations, ...]}", 422)
        for t in tasks:
            kept = [a for a in t.get("annotations") or [] if isinstance(a, dict)]
            if kept:
                self.webhook({"action": "ANNOTATION_UPDATED", "task": t, "annotation": kept[-1]})
        return {"status": "ok", "training": self._start_training(force=True)}

    def _append(self, record: dict) -> None:
        with self.lock, open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def _apply(self, record: dict) -> None:
        at = self.position.get(record["row"]) if record["row"] is not None else None
        if at is None:
            return
        if record["label"] is not None and record["label"] in self.project.classes:
            self.labels[at] = self.project.classes.index(record["label"])
        else:  # deleted or cancelled: back to what the project's files say
            self.labels[at] = self.file_labels[at]
        self.pending += 1

    def _replay(self) -> int:
        if not self.path.exists():
            return 0
        n = 0
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                self._apply(json.loads(line))
                n += 1
            except (json.JSONDecodeError, KeyError, TypeError):
                continue  # a line cut by a crash mid-write: the ones before it count
        self.pending = 0
        return n

    # ----------------------------------------------------------------------- training

    def _start_training(self, force: bool = False) -> bool:
        with self.lock:
            if self.training is not None and self.training.is_alive():
                return True  # the running one re-checks `pending` when it ends
            if not force and self.pending < self.retrain_every:
                return False
            self.training = threading.Thread(target=self._train_loop, name="raysweep-retrain", daemon=True)
            self.training.start()
            return True

    def _train_loop(self) -> None:
        while True:
            try:
                self._train()
                self.last_error = None
            except Exception as exc:  # noqa: BLE001 - a failed retrain keeps the old model serving
                self.last_error = f"{type(exc).__name__}: {exc}".splitlines()[0]
                self.log(f"serve: retraining failed, still serving {self.model_version}: {self.last_error}")
                return
            with self.lock:
                if self.pending < self.retrain_every:
                    return

    def _train(self) -> None:
        with self.lock:
            labels = self.labels.copy()
            self.pending = 0
        rows = np.flatnonzero(labels >= 0)
        if len(rows) == 0 or len(np.unique(labels[rows])) < 2:
            return  # nothing (or one class) to learn from yet: predictions stay empty
        cfg = self.project.cfg
        with labeling._one_thread():
            model = modeling.trained_model(self.acts, rows, labels[rows], len(self.project.classes), cfg.recipe,
                                           cfg.seed, self.dir / "cache")
        with self.lock:
            self.model, self.version, self.trained_on = model, self.version + 1, len(rows)
        self.log(f"serve: trained on {len(rows)} labeled rows: model_version {self.model_version}")


class Handler(BaseHTTPRequestHandler):
    """The protocol's routes over `self.server.backend`."""

    server_version = "raysweep-ml-backend"

    def log_message(self, fmt, *args):  # one line per request through the backend's log
        self.server.backend.log(f"serve: {self.command} {self.path} {args[1] if len(args) > 1 else ''}")

    def _reply(self, status: int, body: dict) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self):
        backend = self.server.backend
        path = self.path.split("?")[0].rstrip("/")
        if path in ("", "/health"):
            self._reply(200, backend.health())
        elif path == "/versions":
            self._reply(200, {"versions": [backend.model_version], "model_version": backend.model_version})
        else:
            self._reply(404, {"error": f"no such endpoint: GET {path}"})

    def do_POST(self):
        backend = self.server.backend
        path = self.path.split("?")[0].rstrip("/")
        routes = {"/setup": backend.setup, "/predict": backend.predict, "/webhook": backend.webhook,
                  "/train": backend.train}
        try:
            if path not in routes:
                raise BadRequest(f"no such endpoint: POST {path}", 404)
            size = int(self.headers.get("Content-Length") or 0)
            if size > MAX_BODY:
                raise BadRequest(f"body of {size} bytes is over the {MAX_BODY}-byte limit", 413)
            raw = self.rfile.read(size) if size else b""
            try:
                payload = json.loads(raw or b"null")
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise BadRequest(f"body is not JSON ({exc.msg if hasattr(exc, 'msg') else exc})") from None
            if not isinstance(payload, dict):
                raise BadRequest("body must be a JSON object", 422)
            self._reply(200 if path != "/webhook" else 201, routes[path](payload))
        except BadRequest as exc:
            self._reply(exc.status, {"error": str(exc)})
        except Exception as exc:  # noqa: BLE001 - a bug answers 500 JSON, the server stays up
            self._reply(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"{type(exc).__name__}: {exc}"})

def make_server(backend: Backend | None, host: str, port: int) -> ThreadingHTTPServer:
    """The server, bound (a taken port fails here, before any work); `backend` may be set later
    as `server.backend`, which the CLI does once the model is trained."""
    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    server.backend = backend
    return server

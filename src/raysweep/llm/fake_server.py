"""A scriptable OpenAI-compatible chat server on 127.0.0.1: for trying the LLM path without a key,
for the tests and for the throughput benchmark.

    python -m raysweep.llm.fake_server --port 8401
    # then in the sweep file: llm: {base_url: http://127.0.0.1:8401/v1, api_key_env: none}

It also serves the Batch API (POST /v1/files, GET /v1/files/{id}/content, POST /v1/batches,
GET /v1/batches[/{id}], POST /v1/batches/{id}/cancel): a batch follows its `BatchScript`
(seconds validating and in progress, requests that fail, expiry after some requests, a batch
that fails validation), and each of its requests is answered by the same script as a chat call.

It answers POST /v1/chat/completions like a provider would: scripted replies first (200s with any
content, 429 with Retry-After, 500s, slow replies, cut-off JSON), then a default reply whose
content is `rows_per_reply` well-formed [sentence, label] pairs that no two calls repeat. A
labeling call (annotation.py: a prompt with sentences to label) gets a JSON list of one label
per sentence, from `labeler` (by default a fixed function of the sentence's text). Its usage
reports `prompt_tokens_details.cached_tokens` as a provider with prompt caching does: the prompt's
longest prefix shared with an earlier call's (at least `cache_min_tokens`).

It also *enforces* rate limits the way a provider does and counts every violation: with
requests_per_minute R (or tokens_per_minute), a stream of calls conforms when every window of
T seconds holds at most R * (burst_seconds + T) / 60 of them. That is checked over every
window ending at each arrival, by summing the arrivals directly, so the check does not share
code or arithmetic with the client's token bucket it is there to catch. A violating call gets
a 429 and is counted; like at OpenAI, rejected calls count against the request limit too.
"""

from __future__ import annotations

import json
import math
import os
import random
import threading
import time
import zlib
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import default as default_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from raysweep.llm.config import CALL_HEADER  # each call's request_id, as generate.py sends it
from raysweep.llm.prompt import sentences_in  # where a labeling prompt holds its sentences

_WORDS = """acting actor actress ambitious ashamed audience awful beautiful bland bold boring brave
brilliant cast charming cheap clever clumsy comedy compelling confusing crisp cynical dazzling
delightful dialogue director dull earnest elegant empty energetic engaging epic familiar fresh
funny gentle gorgeous grim hilarious hollow honest intense joyless lame lazy lively loud lovely
masterful mediocre messy moving murky noisy odd original overlong painful plot poignant polished
predictable quiet quirky rich sad score script sharp silly sincere slick slow smart smug soulful
stiff story stunning subtle sweet tedious tender thin thrilling tired touching twist uneven
uplifting vivid warm weak weird witty wooden""".split()


CACHE_PROMPTS = 256  # prompts the fake prompt cache remembers (a provider's cache is bounded too)


def estimate_usage_tokens(text: str) -> int:
    """The fake provider's tokenizer: one token per 4 characters, as for English text."""
    return math.ceil(len(text) / 4)


@dataclass
class Reply:
    """One scripted answer."""

    status: int = 200
    content: str | None = None  # None: `rows` fresh [sentence, label] pairs as a JSON list
    rows: int | None = None  # None: the server's rows_per_reply (a labeling call: one label per sentence)
    finish_reason: str = "stop"
    delay: float = 0.0  # seconds before answering: a slow provider, or one that outlasts the timeout
    headers: dict = field(default_factory=dict)  # e.g. {"retry-after": "0.5"}
    body: str | None = None  # a raw body instead of a chat completion (errors, broken JSON)
    truncate_at: float | None = None  # keep this fraction of the content and say finish_reason=length
    trickle: float = 0.0  # seconds between the body's bytes: a server that sends its reply a byte at a time


@dataclass
class BatchScript:
    """How one batch behaves, from its creation (times in seconds)."""

    validating: float = 0.0  # status `validating` this long
    running: float = 0.0  # then `in_progress` this long, request_counts growing evenly; then the end
    fail: tuple = ()  # request numbers within the batch (0-based) answered with a 500 in the error file
    expire_after: int | None = None  # the window ends after this many requests: the rest expire
    error: str | None = None  # the batch fails validation with this message (no request runs)


class FakeOpenAI:
    def __init__(self, script: list[Reply] | None = None, default: Reply | None = None,
                 responder: Callable[[int, dict], Reply | None] | None = None,
                 requests_per_minute: float = 0, tokens_per_minute: float = 0,
                 burst_seconds: float = 10.0, rows_per_reply: int = 5,
                 violation_retry_after: float = 1.0, model: str = "fake-model",
                 batch_script: list[BatchScript] | None = None, batch_default: BatchScript | None = None,
                 labeler: Callable[[str], int] | None = None, cache_min_tokens: int = 0):
        self.script = list(script or [])
        self.default = default or Reply()
        self.responder = responder  # (arrival number, request body) -> Reply, or None for the script
        self.requests_per_minute = requests_per_minute
        self.tokens_per_minute = tokens_per_minute
        self.burst_seconds = burst_seconds
        self.rows_per_reply = rows_per_reply
        self.violation_retry_after = violation_retry_after
        self.model = model
        # A labeling call's answer for each sentence: the same text always gets the same label.
        self.labeler = labeler or (lambda text: zlib.crc32(text.encode()) % 5)
        # Prompt caching as providers report it: a call's prompt tokens that an earlier answered
        # call's prompt already began with are `cached_tokens`, when at least this many.
        self.cache_min_tokens = cache_min_tokens
        self._prompts: list[str] = []  # the prompts answered so far (the cache); the last CACHE_PROMPTS
        self.arrivals: list[dict] = []  # one per call: t, call, status, tokens, violation, authorization, request
        self.violations = {"requests": 0, "tokens": 0}
        self.batch_script = list(batch_script or [])
        self.batch_default = batch_default or BatchScript()
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}  # id -> the batch object, plus "_script", "_lines", "_t0"
        self.batch_ops: list[tuple[str, str]] = []  # (operation, id): what the client asked, in order
        self._lock = threading.RLock()  # the Batch API answers its requests through _answer
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self, port: int = 0) -> "FakeOpenAI":
        """Serve on 127.0.0.1:`port` (0: any free port; `base_url` says which) from a daemon thread."""
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the openai client expects

            def log_message(self, *args):  # quiet: tests read the counters, not a log
                pass

            def do_GET(self):
                path = self.path.split("?", 1)[0]
                if path.startswith(("/v1/files", "/v1/batches")):
                    self._send(*fake._batch_api("GET", path, b"", self.headers), {})
                    return
                self._send(200, json.dumps({"object": "list", "data": [{"id": fake.model, "object": "model"}]}), {})

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if self.path.startswith(("/v1/files", "/v1/batches")):
                    self._send(*fake._batch_api("POST", self.path, raw, self.headers), {})
                    return
                try:
                    request = json.loads(raw)
                except json.JSONDecodeError:
                    self._send(400, json.dumps({"error": {"message": "body is not JSON"}}), {})
                    return
                status, body, headers, delay = fake._answer(request, self.headers.get(CALL_HEADER),
                                                            self.headers.get("Authorization"))
                if delay:
                    time.sleep(delay)
                self._send(status, body, headers, headers.pop("x-fake-trickle", 0.0))

            def _send(self, status, body, headers, trickle=0.0):
                data = body if isinstance(body, bytes) else body.encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    if trickle:
                        for i in range(len(data)):
                            self.wfile.write(data[i:i + 1])
                            self.wfile.flush()
                            time.sleep(trickle)
                    else:
                        self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (its timeout): nothing to answer

        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-openai", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> "FakeOpenAI":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    # ------------------------------------------------------------------ answers

    def _next_reply(self, number: int, request: dict) -> Reply:
        if self.responder is not None:
            reply = self.responder(number, request)
            if reply is not None:
                return reply
        if self.script:
            return self.script.pop(0)
        return self.default

    def _answer(self, request: dict, call: str | None, authorization: str | None = None) -> tuple[int, str, dict, float]:
        with self._lock:
            now = time.monotonic()
            number = len(self.arrivals)
            reply = self._next_reply(number, request)
            prompt_text = "".join(str(m.get("content", "")) for m in request.get("messages", []))
            content, finish = self._content(reply, call, number, prompt_text)
            limit = request.get("max_tokens")
            if content and isinstance(limit, int) and estimate_usage_tokens(content) > limit:
                content, finish = content[: 4 * limit], "length"  # as a provider: never more than max_tokens
            usage = {"prompt_tokens": estimate_usage_tokens(prompt_text),
                     "completion_tokens": estimate_usage_tokens(content or ""),
                     "prompt_tokens_details": {"cached_tokens": self._cached_tokens(prompt_text)}}
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
            tokens = usage["total_tokens"] if reply.status == 200 and reply.body is None else 0
            # The Authorization header as sent, kept in memory only: tests check which key went where.
            arrival = {"t": now, "call": call, "status": reply.status, "tokens": tokens, "violation": None,
                       "authorization": authorization, "request": request}
            kind = self._violation(now, tokens)
            if kind:
                self.violations[kind] += 1
                arrival.update(status=429, tokens=0, violation=kind)
            self.arrivals.append(arrival)
        if kind:
            body = json.dumps({"error": {"message": f"rate limit exceeded ({kind} per minute)",
                                         "type": "requests", "code": "rate_limit_exceeded"}})
            return 429, body, {"retry-after": str(self.violation_retry_after)}, 0.0
        if reply.body is not None or reply.status != 200:
            body = reply.body if reply.body is not None else json.dumps(
                {"error": {"message": f"scripted HTTP {reply.status}", "type": "server_error", "code": None}})
            return reply.status, body, dict(reply.headers), reply.delay
        completion = {
            "id": f"chatcmpl-fake-{number}", "object": "chat.completion", "created": int(time.time()),
            "model": request.get("model", self.model),
            "choices": [{"index": 0, "finish_reason": finish,
                         "message": {"role": "assistant", "content": content}}],
            "usage": usage,
        }
        return 200, json.dumps(completion), {**reply.headers, **({"x-fake-trickle": reply.trickle} if reply.trickle
                                                                 else {})}, reply.delay

    def _cached_tokens(self, prompt: str) -> int:
        """The tokens of `prompt`'s longest prefix shared with an earlier prompt (whole tokens of
        4 characters, as the fake tokenizer counts), below cache_min_tokens none; then `prompt`
        is cached too. Called under the lock."""
        shared = max((len(os.path.commonprefix([prompt, p])) for p in self._prompts), default=0)
        self._prompts = self._prompts[-(CACHE_PROMPTS - 1):] + [prompt]
        tokens = shared // 4
        return tokens if tokens >= max(1, self.cache_min_tokens) else 0

    def _content(self, reply: Reply, call: str | None, number: int, prompt: str = "") -> tuple[str | None, str]:
        content = reply.content
        texts = sentences_in(prompt) if content is None else None
        if texts is not None:  # a labeling call
            labels = [int(self.labeler(t)) for t in texts]
            content = json.dumps(labels[: reply.rows] if reply.rows is not None else labels)
        elif content is None:
            rng = random.Random(f"{call}-{number}")
            rows = self.rows_per_reply if reply.rows is None else reply.rows
            content = json.dumps([[" ".join(rng.sample(_WORDS, 8)), k % 5] for k in range(rows)])
        if reply.truncate_at is not None:
            return content[: int(len(content) * reply.truncate_at)], "length"
        return content, reply.finish_reason

    # ------------------------------------------------------------------ the Batch API

    def _batch_api(self, method: str, path: str, raw: bytes, headers) -> tuple[int, str | bytes]:
        parts = path.strip("/").split("/")[1:]  # without "v1"
        with self._lock:
            if parts == ["files"] and method == "POST":
                name, content = _multipart_file(raw, headers.get("Content-Type", ""))
                file_id = f"file-{len(self.files)}"
                self.files[file_id] = content
                self.batch_ops.append(("upload", file_id))
                return 200, json.dumps({"id": file_id, "object": "file", "bytes": len(content), "created_at": int(time.time()),
                                        "filename": name, "purpose": "batch", "status": "processed"})
            if len(parts) == 3 and parts[0] == "files" and parts[2] == "content":
                if parts[1] not in self.files:
                    return 404, json.dumps({"error": {"message": f"no file {parts[1]}"}})
                self.batch_ops.append(("download", parts[1]))
                return 200, self.files[parts[1]]
            if parts == ["batches"] and method == "POST":
                request = json.loads(raw)
                if request["input_file_id"] not in self.files:
                    return 400, json.dumps({"error": {"message": f"no file {request['input_file_id']}"}})
                batch_id = f"batch_{len(self.batches)}"
                lines = [json.loads(line) for line in self.files[request["input_file_id"]].splitlines() if line.strip()]
                script = self.batch_script.pop(0) if self.batch_script else self.batch_default
                self.batches[batch_id] = {
                    "id": batch_id, "object": "batch", "endpoint": request["endpoint"], "status": "validating",
                    "input_file_id": request["input_file_id"], "completion_window": request["completion_window"],
                    "created_at": int(time.time()), "metadata": request.get("metadata"),
                    "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
                    "_script": script, "_lines": lines, "_t0": time.monotonic()}
                self.batch_ops.append(("create", batch_id))
                return 200, json.dumps(self._batch_view(batch_id))
            if parts == ["batches"] and method == "GET":
                data = [self._batch_view(b) for b in reversed(list(self.batches))]
                return 200, json.dumps({"object": "list", "data": data, "has_more": False})
            if len(parts) >= 2 and parts[0] == "batches":
                if parts[1] not in self.batches:
                    return 404, json.dumps({"error": {"message": f"no batch {parts[1]}"}})
                if parts[2:] == ["cancel"]:
                    batch = self.batches[parts[1]]
                    self.batch_ops.append(("cancel", parts[1]))
                    if batch["status"] in ("validating", "in_progress"):
                        self._advance(parts[1])
                        if batch["status"] in ("validating", "in_progress"):
                            batch["status"] = "cancelling"
                    return 200, json.dumps(self._batch_view(parts[1]))
                self.batch_ops.append(("retrieve", parts[1]))
                return 200, json.dumps(self._batch_view(parts[1]))
        return 404, json.dumps({"error": {"message": f"no route {method} {path}"}})

    def _batch_view(self, batch_id: str) -> dict:
        self._advance(batch_id)
        return {k: v for k, v in self.batches[batch_id].items() if not k.startswith("_")}

    def _advance(self, batch_id: str) -> None:
        """Move a batch along its script to now: status, counts and, at its end, its files."""
        batch = self.batches[batch_id]
        script, lines = batch["_script"], batch["_lines"]
        if batch["status"] in ("completed", "failed", "expired", "cancelled"):
            return
        elapsed = time.monotonic() - batch["_t0"]
        if batch["status"] == "cancelling":
            done = batch["request_counts"]["completed"] + batch["request_counts"]["failed"]
            self._finish(batch, done, "cancelled", "batch_cancelled")
            return
        if elapsed < script.validating:
            return
        if script.error:
            batch.update(status="failed", errors={"object": "list", "data": [{"code": "invalid", "message": script.error}]})
            return
        stop = len(lines) if script.expire_after is None else min(script.expire_after, len(lines))
        share = 1.0 if script.running <= 0 else min(1.0, (elapsed - script.validating) / script.running)
        if share < 1.0:
            batch["status"] = "in_progress"
            done = int(stop * share)
            batch["request_counts"].update(completed=done - sum(i in script.fail for i in range(done)),
                                           failed=sum(i in script.fail for i in range(done)))
            return
        self._finish(batch, stop, "completed" if stop == len(lines) else "expired", "batch_expired")

    def _finish(self, batch: dict, done: int, status: str, code: str) -> None:
        """Answer the first `done` requests (as chat calls would be), the rest end with `code`."""
        script, lines = batch["_script"], batch["_lines"]
        out, errors = [], []
        for i, line in enumerate(lines):
            custom_id = line["custom_id"]
            if i >= done:
                errors.append({"id": f"batch_req_{i}", "custom_id": custom_id, "response": None,
                               "error": {"code": code, "message": f"the request did not run ({code})"}})
                continue
            call = custom_id.removeprefix("call-")
            http, body, _, _ = self._answer(line["body"], call) if i not in script.fail else (
                500, json.dumps({"error": {"message": "scripted batch failure", "type": "server_error"}}), {}, 0.0)
            entry = {"id": f"batch_req_{i}", "custom_id": custom_id,
                     "response": {"status_code": http, "request_id": f"req_{i}", "body": json.loads(body)}, "error": None}
            (out if http == 200 else errors).append(entry)
        for kind, entries in (("output_file_id", out), ("error_file_id", errors)):
            if entries:
                file_id = f"file-{len(self.files)}"
                self.files[file_id] = "".join(json.dumps(e) + "\n" for e in entries).encode()
                batch[kind] = file_id
        batch["status"] = status
        batch["request_counts"].update(completed=len(out), failed=len(errors))
        batch[f"{status}_at"] = int(time.time())

    # ------------------------------------------------------------------ limits

    def _violation(self, now: float, tokens: int) -> str | None:
        """'requests' or 'tokens' if admitting this call breaks a limit over some window."""
        recent = [a for a in self.arrivals if a["t"] >= now - 120.0]  # longer windows never bind in tests
        if self.requests_per_minute and not _fits(recent, now, 1, lambda a: 1,
                                                  self.requests_per_minute, self.burst_seconds):
            return "requests"
        if self.tokens_per_minute and tokens and not _fits(recent, now, tokens, lambda a: a["tokens"],
                                                           self.tokens_per_minute, self.burst_seconds):
            return "tokens"
        return None

    # ------------------------------------------------------------------ what happened

    def served(self) -> list[dict]:
        """Arrivals answered with a paid 200."""
        return [a for a in self.arrivals if a["status"] == 200]

    def calls_served(self) -> list[str]:
        return [a["call"] for a in self.served()]


def _multipart_file(raw: bytes, content_type: str) -> tuple[str, bytes]:
    """(filename, content) of the `file` part of a multipart/form-data upload."""
    message = BytesParser(policy=default_policy).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + raw)
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == "file":
            return part.get_filename() or "upload", part.get_payload(decode=True)
    raise ValueError("no file part in the upload")


def _fits(arrivals: list[dict], now: float, amount: float, counted: Callable[[dict], float],
          per_minute: float, burst_seconds: float) -> bool:
    """Whether every window [t, now] ending with this arrival holds at most
    per_minute * (burst_seconds + (now - t)) / 60 of the counted amount."""
    def allowance(start: float) -> float:
        return per_minute * (burst_seconds + (now - start)) / 60.0 + 1e-6

    total = amount
    if total > allowance(now):
        return False
    for arrival in reversed(arrivals):
        total += counted(arrival)
        if total > allowance(arrival["t"]):
            return False
    return True


def main(argv: list[str] | None = None) -> None:
    """Serve until Ctrl-C: every call gets well-formed rows (or labels), no key needed, nothing paid."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m raysweep.llm.fake_server", description=main.__doc__)
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free one)")
    parser.add_argument("--rows-per-reply", type=int, default=5, help="[sentence, label] pairs per generation reply")
    parser.add_argument("--requests-per-minute", type=float, default=0, help="enforce this rate limit (0: none)")
    parser.add_argument("--cache-min-tokens", type=int, default=0,
                        help="report a shared prompt prefix as cached_tokens from this many tokens (OpenAI: 1024)")
    args = parser.parse_args(argv)
    server = FakeOpenAI(rows_per_reply=args.rows_per_reply, requests_per_minute=args.requests_per_minute,
                        cache_min_tokens=args.cache_min_tokens)
    try:
        server.start(args.port)
    except OSError as exc:
        parser.exit(2, f"error: --port {args.port}: {exc.strerror or exc}\n")
    import signal

    # Ctrl-C, and SIGTERM from a supervisor, stop it cleanly; also when started from a process
    # that ignores SIGINT (which a child inherits).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        print(f"fake OpenAI server at {server.base_url} (llm: {{base_url: {server.base_url}, api_key_env: none}}); "
              "Ctrl-C stops it", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()

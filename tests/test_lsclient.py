"""The Label Studio client (lsclient.py) against a fake server: both kinds of token, the refresh
of an expired access token, one-line errors that never hold the token, and deadlines."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from raysweep.lsclient import Client, LabelStudioError, is_jwt


def _jwt(payload: dict) -> str:
    enc = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()  # noqa: E731
    return f"{enc({'alg': 'HS256', 'typ': 'JWT'})}.{enc(payload)}.c2lnbmF0dXJl"


REFRESH = _jwt({"token_type": "refresh", "jti": "abc"})
LEGACY = "0123456789abcdef0123456789abcdef01234567"


class Fake:
    """A Label Studio that accepts REFRESH (access tokens expire after `access_uses` calls) and LEGACY."""

    def __init__(self, legacy_enabled=True, access_uses=100, delay=0.0):
        self.legacy_enabled, self.access_uses, self.delay = legacy_enabled, access_uses, delay
        self.issued: dict[str, int] = {}
        self.calls: list[tuple[str, str, str]] = []
        fake = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _reply(self, status, body):
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                try:
                    self.wfile.write(raw)
                except BrokenPipeError:  # the client gave up (the deadline test)
                    pass

            def _handle(self):
                time.sleep(fake.delay)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                auth = self.headers.get("Authorization", "")
                fake.calls.append((self.command, self.path, auth))
                if self.path == "/api/token/refresh/":
                    if json.loads(body).get("refresh") != REFRESH:
                        return self._reply(401, {"detail": "Token is invalid or expired"})
                    access = f"access-{len(fake.issued)}"
                    fake.issued[access] = fake.access_uses
                    return self._reply(200, {"access": access})
                if auth == f"Token {LEGACY}":
                    if not fake.legacy_enabled:
                        return self._reply(401, {"detail": "legacy token authentication has been disabled"})
                elif auth.startswith("Bearer ") and fake.issued.get(auth[7:], 0) > 0:
                    fake.issued[auth[7:]] -= 1
                else:
                    return self._reply(401, {"detail": f"bad credentials {auth}"})
                if self.path == "/api/current-user/whoami":
                    return self._reply(200, {"id": 1, "email": "u@example.com"})
                if self.path.startswith("/api/projects/999"):
                    return self._reply(404, {"detail": "Not found."})
                if self.path == "/api/projects" and self.command == "POST":
                    return self._reply(400, {"title": [f"too short: {json.loads(body)['title']}"]})
                return self._reply(200, {"ok": True})

            do_GET = do_POST = do_PATCH = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake():
    f = Fake()
    yield f
    f.close()


def test_token_kinds_are_told_apart():
    assert is_jwt(REFRESH) and not is_jwt(LEGACY) and not is_jwt("a.b.c")


def test_a_personal_access_token_is_exchanged_and_refreshed_when_it_expires(fake):
    fake.access_uses = 2
    client = Client(fake.url + "/", REFRESH)
    for _ in range(5):
        assert client.whoami()["id"] == 1
    refreshes = [c for c in fake.calls if c[1] == "/api/token/refresh/"]
    assert len(refreshes) == 3  # 2 calls per access token: 5 calls need 3
    assert all(auth.startswith("Bearer access-") for _, path, auth in fake.calls if path != "/api/token/refresh/")


def test_a_legacy_token_is_sent_as_token(fake):
    assert Client(fake.url, LEGACY).whoami()["email"] == "u@example.com"
    assert fake.calls[-1][2] == f"Token {LEGACY}"


@pytest.mark.parametrize("token, words", [(LEGACY[::-1], "refused the legacy token"),
                                          (_jwt({"token_type": "refresh", "jti": "other"}),
                                           "refused the personal access token")])
def test_a_wrong_token_is_one_line_without_the_token(fake, token, words):
    with pytest.raises(LabelStudioError) as info:
        Client(fake.url, token).whoami()
    message = str(info.value)
    assert words in message and token not in message and "\n" not in message


def test_legacy_tokens_disabled_on_the_server_says_how_to_fix_it():
    f = Fake(legacy_enabled=False)
    try:
        with pytest.raises(LabelStudioError, match="--enable-legacy-api-token"):
            Client(f.url, LEGACY).whoami()
    finally:
        f.close()


def test_server_errors_are_masked_and_short(fake):
    client = Client(fake.url, LEGACY)
    with pytest.raises(LabelStudioError) as info:
        client.create_project("ab", "<View/>", LEGACY)
    assert "HTTP 400" in str(info.value) and LEGACY not in str(info.value)
    assert client.project(999) is None


@pytest.mark.parametrize("url", ["localhost:8080", "ftp://host", "http://user:pw@host:1"])
def test_a_bad_url_is_one_line(url):
    with pytest.raises(LabelStudioError, match="Label Studio URL"):
        Client(url, LEGACY)


def test_nothing_listening_is_one_line():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(LabelStudioError, match="cannot reach it"):
        Client(f"http://127.0.0.1:{port}", LEGACY).whoami()


def test_a_server_that_never_answers_hits_the_deadline():
    f = Fake(delay=3.0)
    try:
        start = time.monotonic()
        with pytest.raises(LabelStudioError, match="no answer within 0.3 s"):
            Client(f.url, LEGACY, timeout=0.3).whoami()
        assert time.monotonic() - start < 2.5
    finally:
        f.close()

"""A small client of Label Studio's HTTP API (1.23): the calls `raysweep select --label-studio` makes.

Plain `urllib`, not label-studio-sdk: seven endpoints are all the loop needs, and the SDK would
bring its own pins (pydantic, httpx) into the Ray/torch environment for them.

The token: both kinds Label Studio 1.23 issues work. A personal access token is a JWT refresh
token: it is exchanged at /api/token/refresh for a short-lived access token (sent as `Bearer`),
exchanged again when a call gets 401. A legacy token is sent as `Token T` (the server must
allow legacy tokens). The token is held in memory only; every error line is built from the URL,
the method, the path and the server's reply with both tokens masked, never from the request.

Every call has a deadline (`timeout`): a server that accepts the connection and never answers
fails the call with one line instead of hanging the loop.
"""

from __future__ import annotations

import base64
import json
import socket
import urllib.error
import urllib.parse
import urllib.request

from raysweep.errors import RaysweepError

TIMEOUT_S = 30.0  # one call's deadline (connect + reply); an import of a large batch gets IMPORT_TIMEOUT_S
IMPORT_TIMEOUT_S = 300.0
PAGE = 100  # tasks per page when listing


class LabelStudioError(RaysweepError):
    """Label Studio is unreachable, refused the token, or answered a call with an error."""


def is_jwt(token: str) -> bool:
    """Whether `token` is a JWT (a personal access token), not a legacy hex token."""
    parts = token.split(".")
    if len(parts) != 3:
        return False
    try:
        head = json.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
    except ValueError:
        return False
    return isinstance(head, dict) and "alg" in head


def check_url(url: str) -> str:
    """The base URL without a trailing slash; one line naming what is wrong with a bad one."""
    parsed = urllib.parse.urlsplit(url.strip())
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise LabelStudioError(f"Label Studio URL {url!r}: expected http(s)://host[:port]")
    if parsed.username or parsed.password:
        raise LabelStudioError("Label Studio URL: put the token in LABEL_STUDIO_API_KEY, not in the URL")
    return urllib.parse.urlunsplit((parsed.scheme, parsed.netloc, parsed.path.rstrip("/"), "", ""))


class Client:
    def __init__(self, url: str, token: str, timeout: float = TIMEOUT_S):
        self.url = check_url(url)
        if not token or not token.strip():
            raise LabelStudioError("the Label Studio token is empty")
        self._token = token.strip()
        self._jwt = is_jwt(self._token)
        self._access: str | None = None
        self.timeout = timeout

    @property
    def token_kind(self) -> str:
        return "personal access token" if self._jwt else "legacy token"

    def _mask(self, text: str) -> str:
        for secret in (self._token, self._access):
            if secret:
                text = text.replace(secret, "***")
        return text

    def _send(self, method: str, path: str, body=None, headers: dict | None = None, timeout: float | None = None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json", "Accept": "application/json",
                                              **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw.strip() else None
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:300].decode("utf-8", "replace")
            return exc.code, detail
        except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, (socket.timeout, TimeoutError)):
                raise LabelStudioError(f"Label Studio at {self.url}: {method} {path.split('?')[0]}: no answer within "
                                       f"{timeout or self.timeout:g} s") from None
            raise LabelStudioError(self._mask(f"Label Studio at {self.url}: cannot reach it ({reason}); "
                                              "is it running, and is the URL right?")) from None
        except json.JSONDecodeError:
            raise LabelStudioError(f"Label Studio at {self.url}: {method} {path} did not answer JSON; "
                                   "is this URL a Label Studio server?") from None

    def _refresh(self) -> None:
        status, reply = self._send("POST", "/api/token/refresh/", {"refresh": self._token})
        if status != 200 or not isinstance(reply, dict) or "access" not in reply:
            raise LabelStudioError(f"Label Studio at {self.url} refused the personal access token in "
                                   f"LABEL_STUDIO_API_KEY (HTTP {status}); make a new one under Account & Settings")
        self._access = reply["access"]

    def call(self, method: str, path: str, body=None, timeout: float | None = None, ok=(200, 201, 204)):
        """The JSON reply of one call; one masked line on any error."""
        for attempt in (0, 1):
            if self._jwt and self._access is None:
                self._refresh()
            auth = f"Bearer {self._access}" if self._jwt else f"Token {self._token}"
            status, reply = self._send(method, path, body, {"Authorization": auth}, timeout)
            if status == 401 and self._jwt and attempt == 0:  # the access token expired: exchange again
                self._access = None
                continue
            break
        if status == 401 or (status == 403 and "legacy" in str(reply).lower()):
            hint = ("legacy tokens are disabled on this server (start it with --enable-legacy-api-token, or use a "
                    "personal access token)" if "legacy" in str(reply).lower() else
                    "check LABEL_STUDIO_API_KEY")
            raise LabelStudioError(f"Label Studio at {self.url} refused the {self.token_kind} (HTTP {status}): {hint}")
        if status not in ok:
            raise LabelStudioError(self._mask(f"Label Studio at {self.url}: {method} {path.split('?')[0]}: "
                                              f"HTTP {status}: {' '.join(str(reply).split())[:200]}"))
        return reply

    # ----------------------------------------------------------------------- the loop's calls

    def whoami(self) -> dict:
        return self.call("GET", "/api/current-user/whoami")

    def projects(self) -> list[dict]:
        out, page = [], 1
        while True:
            reply = self.call("GET", f"/api/projects?page={page}&page_size={PAGE}")
            rows = reply.get("results", []) if isinstance(reply, dict) else reply
            out += rows
            if not isinstance(reply, dict) or not reply.get("next") or not rows:
                return out
            page += 1

    def project(self, project_id: int) -> dict | None:
        try:
            return self.call("GET", f"/api/projects/{int(project_id)}")
        except LabelStudioError as exc:
            if "HTTP 404" in str(exc):
                return None
            raise

    def create_project(self, title: str, label_config: str, description: str) -> dict:
        return self.call("POST", "/api/projects", {"title": title, "label_config": label_config,
                                                   "description": description})

    def update_project(self, project_id: int, **fields) -> dict:
        return self.call("PATCH", f"/api/projects/{int(project_id)}", fields)

    def tasks(self, project_id: int) -> list[dict]:
        """Every task of the project with its annotations (paged: a large project stays bounded per call)."""
        out, page = [], 1
        while True:
            reply = self.call("GET", f"/api/tasks?project={int(project_id)}&page={page}&page_size={PAGE}"
                                     "&fields=all", ok=(200, 404))
            rows = reply.get("tasks", []) if isinstance(reply, dict) else []
            out += rows
            if len(rows) < PAGE:
                return out
            page += 1

    def import_tasks(self, project_id: int, tasks: list[dict]) -> dict:
        return self.call("POST", f"/api/projects/{int(project_id)}/import", tasks, timeout=IMPORT_TIMEOUT_S)

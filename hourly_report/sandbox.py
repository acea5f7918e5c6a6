"""A local OpsRamp-compatible API, on the standard library only.

The same server is the project's test fake, what ``hourly-report sandbox`` and
``hourly-report demo`` serve, and the benchmark's target.  It speaks the part of
the OpsRamp API described in the design (token, create analysis, delete
analysis), validates requests strictly, and can be told to misbehave: injected
faults, token revocation, throttling and latency.

In-process tests drive it through :class:`SandboxState`; other processes use the
control endpoints under ``/_sandbox/`` (see :data:`CONTROL_ACTIONS`).

Conventions:

* Every request is recorded in ``state.requests`` *before* its answer is sent,
  so a client that has read an answer can already observe it.
* The rate limit (when set) counts token, create and delete requests that reach
  the "real" API: an injected fault with ``act=False`` (other than ``slow``)
  models a failure in front of the API and is not counted.
* Secrets (client secret, access tokens) never appear in answers or logs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import secrets
import socket
import ssl
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from hourly_report.clock import Clock, SystemClock

log = logging.getLogger(__name__)

TOKEN_PATH = "/tenancy/auth/oauth/token"  # noqa: S105 (a path, not a password)
CONTROL_PREFIX = "/_sandbox/"
FAULT_ENDPOINTS = frozenset({"token", "create", "delete"})
FAULT_KINDS = frozenset({"status", "drop", "slow", "non_json", "no_id", "html"})
CONTROL_ACTIONS = {
    "state": "GET",
    "faults": "POST",
    "revoke": "POST",
    "rate-limit": "POST",
    "latency": "POST",
    "reset": "POST",
}

_CREATE_RE = re.compile(r"/reporting/api/v3/tenants/([^/]+)/analyses/?")
_DELETE_RE = re.compile(r"/reporting/api/v3/tenants/([^/]+)/analyses/([^/]+)/?")
_TIME_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", re.ASCII)
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
_MAX_BODY = 1 << 20
_POLL_INTERVAL = 0.02  # how fast stop() is noticed
_TOP_KEYS = frozenset({"name", "tenantId", "appId", "format", "parameters"})
_PARAM_KEYS = frozenset(
    {
        "method",
        "metrics",
        "startTime",
        "endTime",
        "options",
        "opsqlQuery",
        "displayMode",
        "queryConfig",
        "analysisPeriod",
        "client",
    }
)
_OPTIONS = ["resource.id", "resource.name"]
_OPSQL_KEYS = frozenset({"groupBy", "filterCriteria"})
_JSON = "application/json"
_FORM = "application/x-www-form-urlencoded"
_NON_JSON_BODY = "<html>proxy login</html>"
_ERROR_CODES = {
    400: "invalid_request",
    401: "invalid_token",
    403: "access_denied",
    404: "not_found",
    405: "method_not_allowed",
    407: "invalid_token",
    415: "unsupported_media_type",
    429: "throttled",
    500: "server_error",
    502: "bad_gateway",
    503: "service_unavailable",
    504: "gateway_timeout",
}
_ERROR_DESCRIPTIONS = {
    401: "Access token expired",
    407: "Token expired",
    429: "Too Many Requests",
}


# --------------------------------------------------------------------------- data


@dataclass
class Fault:
    """A misbehaviour to inject into the next request(s) to one endpoint."""

    kind: str
    status: int = 500
    body: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    act: bool = False


@dataclass
class RequestRecord:
    """One request as the sandbox saw it (``status`` None: connection dropped)."""

    method: str
    path: str
    endpoint: str
    status: int | None
    connection: int
    user_agent: str | None
    at: float


@dataclass
class _Reply:
    """An answer to send; ``status`` None means drop the connection instead."""

    status: int | None
    body: bytes = b""
    content_type: str = _JSON
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass(frozen=True)
class _Route:
    endpoint: str
    status: int | None = None  # set when the route itself is the answer (404/405)
    tenant: str = ""
    analysis_id: str = ""
    action: str = ""
    allow: str = ""


def _json_reply(status: int, payload: object, headers: dict[str, str] | None = None) -> _Reply:
    return _Reply(status, json.dumps(payload).encode(), _JSON, dict(headers or {}))


def _error(status: int, description: str, error: str | None = None) -> _Reply:
    code = error or _ERROR_CODES.get(status, "error")
    return _json_reply(status, {"error": code, "error_description": description})


def _default_error_body(status: int) -> str:
    description = _ERROR_DESCRIPTIONS.get(status, _phrase(status))
    code = _ERROR_CODES.get(status, "error")
    return json.dumps({"error": code, "error_description": description})


def _guess_content_type(body: str) -> str:
    try:
        json.loads(body)
    except ValueError:
        return "text/html" if body.lstrip().startswith("<") else "text/plain"
    return _JSON


# --------------------------------------------------------------------- validation


def _nonempty_str(value: object) -> bool:
    return isinstance(value, str) and bool(value)


def _str_list(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(_nonempty_str(v) for v in value)


def _exact_keys(obj: dict[str, Any], expected: frozenset[str], where: str) -> str | None:
    missing = sorted(expected - obj.keys())
    if missing:
        return f"{where}: missing key(s) {', '.join(_where_key(where, k) for k in missing)}"
    extra = sorted(obj.keys() - expected)
    if extra:
        return f"{where}: unexpected key(s) {', '.join(_where_key(where, k) for k in extra)}"
    return None


def _where_key(where: str, key: str) -> str:
    """``parameters`` + ``client`` -> ``parameters.client``; ``body`` + ``name`` -> ``name``."""
    return key if where == "body" else f"{where}.{key}"


def _parse_time(value: object, field_name: str) -> tuple[datetime | None, str | None]:
    message = f"{field_name}: must be UTC with milliseconds, like 2026-02-12T07:00:00.000Z"
    if not isinstance(value, str) or not _TIME_RE.fullmatch(value):
        return None, message
    try:
        parsed = datetime.strptime(value, _TIME_FORMAT).replace(tzinfo=timezone.utc)
    except ValueError:
        return None, f"{field_name}: not a valid date and time"
    return parsed, None


def _check_period(start_value: object, end_value: object) -> str | None:
    start, error = _parse_time(start_value, "parameters.startTime")
    if error or start is None:
        return error
    end, error = _parse_time(end_value, "parameters.endTime")
    if error or end is None:
        return error
    if (end - start).total_seconds() != 3600:
        return "parameters.endTime: must be exactly one hour after parameters.startTime"
    return None


def _check_opsql(value: object) -> str | None:
    message = 'parameters.opsqlQuery: must be [{"groupBy": [], "filterCriteria": "<string>"}]'
    if not isinstance(value, list) or len(value) != 1 or not isinstance(value[0], dict):
        return message
    query: dict[str, Any] = value[0]
    if query.keys() != _OPSQL_KEYS:
        return message
    if query["groupBy"] != [] or not isinstance(query["groupBy"], list):
        return "parameters.opsqlQuery.groupBy: must be an empty list"
    if not isinstance(query["filterCriteria"], str):
        return "parameters.opsqlQuery.filterCriteria: must be a string"
    return None


def _check_top(body: dict[str, Any], tenant: str) -> str | None:
    if not _nonempty_str(body["name"]):
        return "name: must be a non-empty string"
    if body["tenantId"] != tenant:
        return f"tenantId: must be the tenant id {tenant!r}"
    if not _nonempty_str(body["appId"]):
        return "appId: must be a non-empty string"
    if not _str_list(body["format"]):
        return "format: must be a non-empty list of non-empty strings"
    return None


def _check_parameters(params: object, tenant: str) -> str | None:
    if not isinstance(params, dict):
        return "parameters: must be a JSON object"
    error = _exact_keys(params, _PARAM_KEYS, "parameters")
    if error:
        return error
    for key in ("method", "metrics"):
        if not _str_list(params[key]):
            return f"parameters.{key}: must be a non-empty list of non-empty strings"
    error = _check_period(params["startTime"], params["endTime"])
    if error:
        return error
    if params["options"] != _OPTIONS:
        return f"parameters.options: must be {json.dumps(_OPTIONS)}"
    error = _check_opsql(params["opsqlQuery"])
    if error:
        return error
    for key in ("displayMode", "queryConfig"):
        if not _nonempty_str(params[key]):
            return f"parameters.{key}: must be a non-empty string"
    if params["analysisPeriod"] != "Specific Period":
        return 'parameters.analysisPeriod: must be "Specific Period"'
    if params["client"] != tenant:
        return f"parameters.client: must be the tenant id {tenant!r}"
    return None


def validate_analysis(body: object, tenant: str) -> str | None:
    """Check a create-analysis body against the design; the error, or None if valid."""
    if not isinstance(body, dict):
        return "body: must be a JSON object"
    return (
        _exact_keys(body, _TOP_KEYS, "body")
        or _check_top(body, tenant)
        or _check_parameters(body["parameters"], tenant)
    )


def fault_from_json(data: object) -> tuple[str, Fault, int]:
    """Parse a ``POST /_sandbox/faults`` body into (endpoint, fault, times); ValueError if bad."""
    if not isinstance(data, dict):
        raise ValueError("body: must be a JSON object")
    allowed = {"endpoint", "kind", "status", "body", "headers", "delay", "act", "times"}
    extra = sorted(data.keys() - allowed)
    if extra:
        raise ValueError(f"unexpected key(s) {', '.join(extra)}")
    status, times, delay = data.get("status", 500), data.get("times", 1), data.get("delay", 0.0)
    headers, body, act = data.get("headers") or {}, data.get("body"), data.get("act", False)
    if not _is_int(status) or not 100 <= status <= 599:
        raise ValueError("status: must be an integer HTTP status")
    if not _is_int(times):
        raise ValueError("times: must be a positive integer")
    if not _is_number(delay):
        raise ValueError("delay: must be a non-negative number")
    if not isinstance(headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise ValueError("headers: must be an object of strings")
    if body is not None and not isinstance(body, str):
        raise ValueError("body: must be a string or null")
    if not isinstance(act, bool):
        raise ValueError("act: must be a boolean")
    kind = data.get("kind", "status")  # {"endpoint": "create", "status": 503} is enough
    fault = Fault(str(kind), status, body, dict(headers), float(delay), act)
    _check_fault(str(data.get("endpoint")), fault, times)
    return str(data["endpoint"]), fault, times


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0


def _check_fault(endpoint: str, fault: Fault, times: int) -> None:
    if endpoint not in FAULT_ENDPOINTS:
        raise ValueError(f"endpoint: must be one of {', '.join(sorted(FAULT_ENDPOINTS))}")
    if fault.kind not in FAULT_KINDS:
        raise ValueError(f"kind: must be one of {', '.join(sorted(FAULT_KINDS))}")
    if times < 1:
        raise ValueError("times: must be a positive integer")
    if fault.delay < 0:
        raise ValueError("delay: must be a non-negative number")


# -------------------------------------------------------------------------- state


class SandboxState:
    """Everything the sandbox knows; thread-safe behind one lock.

    Tests read the public attributes directly (after the answer they waited for,
    the state is up to date) and steer the server with the methods.
    """

    def __init__(
        self,
        *,
        tenant_id: str = "sandbox-tenant",
        client_id: str = "sandbox-client",
        client_secret: str = "sandbox-secret",  # noqa: S107 (sandbox only)
        token_ttl: int = 7199,
        clock: Clock | None = None,
        delete_status: int = 200,
    ) -> None:
        if delete_status not in (200, 204):
            raise ValueError("delete_status must be 200 or 204")
        self.tenant_id = tenant_id
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_ttl = token_ttl
        self.delete_status = delete_status
        self.clock: Clock = clock or SystemClock()
        self.analyses: dict[str, dict[str, Any]] = {}
        self.deleted: set[str] = set()
        self.names: list[str] = []
        self.requests: list[RequestRecord] = []
        self.connections = 0
        self.tokens_issued = 0
        self._lock = threading.RLock()
        self._tokens: dict[str, float] = {}  # token -> expiry (clock.time())
        self._faults: dict[str, deque[Fault]] = {e: deque() for e in FAULT_ENDPOINTS}
        self._rate_limit: int | None = None
        self._rate_window = 60.0
        self._window_index: int | None = None
        self._window_count = 0
        self._connect_latency = 0.0
        self._request_latency = 0.0
        self._live: set[socket.socket] = set()

    # ---- control

    def inject(self, endpoint: str, fault: Fault, times: int = 1) -> None:
        """Queue ``fault`` for the next ``times`` requests to ``endpoint``."""
        _check_fault(endpoint, fault, times)
        with self._lock:
            self._faults[endpoint].extend(fault for _ in range(times))

    def revoke_tokens(self) -> None:
        """Every token issued so far is refused (401) from now on."""
        with self._lock:
            self._tokens.clear()

    def set_rate_limit(self, limit: int | None, window_seconds: float = 60.0) -> None:
        """Allow ``limit`` token/create/delete requests per fixed window; None disables."""
        if limit is not None and limit < 0:
            raise ValueError("limit must be >= 0 or None")
        if window_seconds <= 0:
            raise ValueError("window_seconds must be positive")
        with self._lock:
            self._rate_limit = limit
            self._rate_window = float(window_seconds)
            self._window_index = None
            self._window_count = 0

    def set_latency(self, connect: float = 0.0, request: float = 0.0) -> None:
        """Real sleeps: ``connect`` once per new connection, ``request`` per request."""
        if connect < 0 or request < 0:
            raise ValueError("latencies must be non-negative")
        with self._lock:
            self._connect_latency = float(connect)
            self._request_latency = float(request)

    def reset(self) -> None:
        """Forget analyses, requests and queued faults (tokens and settings stay)."""
        with self._lock:
            self.analyses.clear()
            self.deleted.clear()
            self.names.clear()
            self.requests.clear()
            for queue in self._faults.values():
                queue.clear()
            self._window_index = None
            self._window_count = 0

    # ---- observation

    def count(self, endpoint: str | None = None, status: int | None = None) -> int:
        """Requests seen, optionally only those to ``endpoint`` and/or answered ``status``."""
        with self._lock:
            return sum(
                1
                for r in self.requests
                if (endpoint is None or r.endpoint == endpoint)
                and (status is None or r.status == status)
            )

    def duplicate_names(self) -> list[str]:
        """Names created more than once, in order of first creation."""
        with self._lock:
            seen: set[str] = set()
            dups: list[str] = []
            for name in self.names:
                if name in seen and name not in dups:
                    dups.append(name)
                seen.add(name)
            return dups

    def snapshot(self) -> dict[str, Any]:
        """A JSON-able summary of the state."""
        with self._lock:
            per_endpoint: dict[str, dict[str, int]] = {}
            for r in self.requests:
                key = "dropped" if r.status is None else str(r.status)
                bucket = per_endpoint.setdefault(r.endpoint, {})
                bucket[key] = bucket.get(key, 0) + 1
            return {
                "tenant_id": self.tenant_id,
                "requests_total": len(self.requests),
                "requests": per_endpoint,
                "connections": self.connections,
                "tokens_issued": self.tokens_issued,
                "analyses": list(self.analyses),
                "deleted": sorted(self.deleted),
                "names_created": len(self.names),
                "duplicates": self.duplicate_names(),
                "pending_faults": {e: len(q) for e, q in sorted(self._faults.items()) if q},
                "rate_limit": None
                if self._rate_limit is None
                else {"limit": self._rate_limit, "window_seconds": self._rate_window},
            }

    # ---- used by the server

    def _open_connection(self, sock: socket.socket) -> int:
        with self._lock:
            self.connections += 1
            self._live.add(sock)
            return self.connections

    def _close_connection(self, sock: socket.socket) -> None:
        with self._lock:
            self._live.discard(sock)

    def _close_all_connections(self) -> None:
        with self._lock:
            live = list(self._live)
            self._live.clear()
        for sock in live:
            _shutdown(sock)

    def _latencies(self) -> tuple[float, float]:
        with self._lock:
            return self._connect_latency, self._request_latency

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self.requests.append(record)

    def _next_fault(self, endpoint: str) -> Fault | None:
        with self._lock:
            queue = self._faults.get(endpoint)
            return queue.popleft() if queue else None

    def _issue_token(self) -> str:
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[token] = self.clock.time() + self.token_ttl
            self.tokens_issued += 1
        return token

    def _token_valid(self, token: str) -> bool:
        with self._lock:
            expiry = self._tokens.get(token)
            return expiry is not None and self.clock.time() < expiry

    def _rate(self, consume: bool) -> tuple[bool, dict[str, str]]:
        """(allowed, X-RateLimit-* headers); ``consume`` counts this request."""
        with self._lock:
            if self._rate_limit is None:
                return True, {}
            index = math.floor(self.clock.time() / self._rate_window)
            if index != self._window_index:
                self._window_index, self._window_count = index, 0
            if consume:
                self._window_count += 1
            allowed = self._window_count <= self._rate_limit
            headers = {
                "X-RateLimit-Limit": str(self._rate_limit),
                "X-RateLimit-Remaining": str(max(0, self._rate_limit - self._window_count)),
                "X-RateLimit-Reset": str(math.ceil((index + 1) * self._rate_window)),
            }
            return allowed, headers

    def _create(self, body: dict[str, Any]) -> str:
        analysis_id = str(uuid.uuid4())
        with self._lock:
            self.analyses[analysis_id] = body
            self.names.append(str(body["name"]))
        return analysis_id

    def _delete(self, analysis_id: str) -> bool:
        with self._lock:
            if self.analyses.pop(analysis_id, None) is None:
                return False
            self.deleted.add(analysis_id)
            return True


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


# ------------------------------------------------------------------------ routing


def route(method: str, path: str) -> _Route:
    """Which endpoint a request is for; ``status`` is set for 404/405 answers."""
    if path == TOKEN_PATH:
        return _Route("token") if method == "POST" else _Route("other", 405, allow="POST")
    match = _CREATE_RE.fullmatch(path)
    if match:
        if method != "POST":
            return _Route("other", 405, allow="POST")
        return _Route("create", tenant=match.group(1))
    match = _DELETE_RE.fullmatch(path)
    if match:
        if method != "DELETE":
            return _Route("other", 405, allow="DELETE")
        return _Route("delete", tenant=match.group(1), analysis_id=match.group(2))
    if path.startswith(CONTROL_PREFIX):
        return _control_route(method, path[len(CONTROL_PREFIX) :].rstrip("/"))
    return _Route("other", 404)


def _control_route(method: str, action: str) -> _Route:
    expected = CONTROL_ACTIONS.get(action)
    if expected is None:
        return _Route("control", 404)
    if method != expected:
        return _Route("control", 405, action=action, allow=expected)
    return _Route("control", action=action)


# ------------------------------------------------------------------------- server


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # many clients connecting at once (benchmark)
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], state: SandboxState) -> None:
        self.state = state
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("sandbox: error while serving %s", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "opsramp-sandbox"
    sys_version = ""
    timeout = 300  # idle keep-alive connections are closed after this

    connection_id = 0
    _fresh = True

    # ---- plumbing

    @property
    def state(self) -> SandboxState:
        server = self.server
        assert isinstance(server, _Server)
        return server.state

    def setup(self) -> None:
        super().setup()
        with contextlib.suppress(OSError):  # answers go out whole, no Nagle delay
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.connection_id = self.state._open_connection(self.connection)
        self._fresh = True

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.state._close_connection(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: no per-request noise on stderr (and never a token)."""

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        at = self.state.clock.time()
        self._sleep_latency()
        target = route(self.command, urlsplit(self.path).path)
        body = self._read_body()
        if body is None:
            reply = _error(400, "invalid Content-Length")
            self.close_connection = True
        else:
            reply = self._answer(target, body)
        if reply.delay > 0:
            time.sleep(reply.delay)
        self.state._record(
            RequestRecord(
                method=self.command,
                path=self.path,
                endpoint=target.endpoint,
                status=reply.status,
                connection=self.connection_id,
                user_agent=self.headers.get("User-Agent"),
                at=at,
            )
        )
        self._deliver(reply)

    def _sleep_latency(self) -> None:
        connect, request = self.state._latencies()
        delay = request + (connect if self._fresh else 0.0)
        self._fresh = False
        if delay > 0:
            time.sleep(delay)

    def _read_body(self) -> bytes | None:
        raw = self.headers.get("Content-Length")
        if raw is None:
            return b""
        try:
            length = int(raw)
        except ValueError:
            return None
        if length < 0 or length > _MAX_BODY:
            return None
        return self.rfile.read(length) if length else b""

    def _deliver(self, reply: _Reply) -> None:
        if reply.status is None:
            self.close_connection = True
            _shutdown(self.connection)
            return
        try:
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            if reply.status != 204:
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(reply.body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if reply.status != 204 and reply.body:
                self.wfile.write(reply.body)
        except OSError:
            self.close_connection = True

    # ---- answers

    def _answer(self, target: _Route, body: bytes) -> _Reply:
        try:
            if target.status is not None:
                reply = _error(target.status, f"no {self.command} {urlsplit(self.path).path}")
                if target.allow:
                    reply.headers["Allow"] = target.allow
                return reply
            if target.endpoint == "control":
                return self._control(target.action, body)
            return self._api(target, body)
        except Exception:
            log.exception("sandbox: internal error")
            return _error(500, "sandbox internal error", "sandbox_error")

    def _api(self, target: _Route, body: bytes) -> _Reply:
        fault = self.state._next_fault(target.endpoint)
        if fault is None:
            return self._perform(target, body)
        if fault.kind == "slow":
            if fault.act:
                reply = self._perform(target, body)
                reply.delay = fault.delay
                return reply
            time.sleep(fault.delay)
            return self._perform(target, body)
        if fault.act:
            self._perform(target, body)
        _, headers = self.state._rate(consume=False)
        return _fault_reply(fault, headers)

    def _perform(self, target: _Route, body: bytes) -> _Reply:
        allowed, headers = self.state._rate(consume=True)
        if not allowed:
            reply = _error(429, "Too Many Requests", "throttled")
        elif target.endpoint == "token":
            reply = self._token(body)
        elif target.endpoint == "create":
            reply = self._create(target, body)
        else:
            reply = self._delete(target)
        reply.headers.update(headers)
        return reply

    def _media_type(self) -> str:
        return (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()

    def _token(self, body: bytes) -> _Reply:
        if self._media_type() != _FORM:
            return _error(400, f"Content-Type must be {_FORM}")
        try:
            form = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=True)
        except (UnicodeDecodeError, ValueError):
            return _error(400, "malformed form body")
        fields = {k: v[0] for k, v in form.items() if len(v) == 1}
        if fields.get("grant_type") != "client_credentials":
            return _error(400, "grant_type must be client_credentials")
        client_id, client_secret = fields.get("client_id"), fields.get("client_secret")
        if not client_id or client_secret is None:
            return _error(400, "client_id and client_secret are required")
        state = self.state
        id_ok = secrets.compare_digest(client_id.encode(), state.client_id.encode())
        secret_ok = secrets.compare_digest(client_secret.encode(), state.client_secret.encode())
        if not (id_ok and secret_ok):
            return _error(401, "Bad client credentials", "invalid_client")
        return _json_reply(
            200,
            {
                "access_token": state._issue_token(),
                "token_type": "bearer",
                "expires_in": state.token_ttl,
                "scope": "global:manage",
            },
        )

    def _auth_error(self) -> _Reply | None:
        header = self.headers.get("Authorization") or ""
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            reply = _error(401, "Full authentication is required to access this resource")
        elif not self.state._token_valid(token.strip()):
            reply = _error(401, "Invalid, expired or revoked access token")
        else:
            return None
        reply.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
        return reply

    def _tenant_error(self, tenant: str) -> _Reply | None:
        if tenant != self.state.tenant_id:
            return _error(404, f"unknown tenant {tenant!r}")
        return None

    def _create(self, target: _Route, body: bytes) -> _Reply:
        refusal = self._auth_error() or self._tenant_error(target.tenant)
        if refusal:
            return refusal
        if self._media_type() != _JSON:
            return _error(415, f"Content-Type must be {_JSON}")
        try:
            payload = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return _error(400, "body: not valid JSON")
        problem = validate_analysis(payload, self.state.tenant_id)
        if problem:
            return _error(400, problem)
        analysis_id = self.state._create(payload)
        return _json_reply(200, {"id": analysis_id, "name": payload["name"], "status": "QUEUED"})

    def _delete(self, target: _Route) -> _Reply:
        refusal = self._auth_error() or self._tenant_error(target.tenant)
        if refusal:
            return refusal
        if not self.state._delete(target.analysis_id):
            return _error(404, f"analysis {target.analysis_id!r} not found")
        if self.state.delete_status == 204:
            return _Reply(204)
        return _json_reply(200, {"success": True})

    # ---- control endpoints

    def _control(self, action: str, body: bytes) -> _Reply:
        state = self.state
        if action == "state":
            return _json_reply(200, state.snapshot())
        try:
            data = json.loads(body.decode("utf-8")) if body.strip() else {}
            _apply_control(state, action, data)
        except (UnicodeDecodeError, ValueError, TypeError) as exc:
            return _error(400, str(exc) or "malformed control request")
        return _json_reply(200, {"ok": True, "state": state.snapshot()})


def _fault_reply(fault: Fault, rate_headers: dict[str, str]) -> _Reply:
    headers = {**rate_headers, **fault.headers}
    if fault.kind == "drop":
        return _Reply(None)
    if fault.kind == "non_json":
        return _Reply(200, _NON_JSON_BODY.encode(), "text/html", headers)
    if fault.kind == "no_id":
        return _json_reply(200, {"status": "QUEUED"}, headers)
    if fault.kind == "html":
        phrase = _phrase(fault.status)
        default = f"<html><body><h1>{fault.status} {phrase}</h1></body></html>"
        return _Reply(fault.status, (fault.body or default).encode(), "text/html", headers)
    body = fault.body if fault.body is not None else _default_error_body(fault.status)
    return _Reply(fault.status, body.encode(), _guess_content_type(body), headers)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _apply_control(state: SandboxState, action: str, data: object) -> None:
    if not isinstance(data, dict):
        raise ValueError("body: must be a JSON object")
    if action == "faults":
        endpoint, fault, times = fault_from_json(data)
        state.inject(endpoint, fault, times)
    elif action == "revoke":
        state.revoke_tokens()
    elif action == "rate-limit":
        limit, window = data.get("limit"), data.get("window_seconds", 60.0)
        if limit is not None and not _is_int(limit):
            raise ValueError("limit: must be an integer or null")
        if not _is_number(window):
            raise ValueError("window_seconds: must be a positive number")
        state.set_rate_limit(limit, float(window))
    elif action == "latency":
        connect, request = data.get("connect", 0.0), data.get("request", 0.0)
        if not (_is_number(connect) and _is_number(request)):
            raise ValueError("connect, request: must be non-negative numbers")
        state.set_latency(float(connect), float(request))
    elif action == "reset":
        state.reset()


# ----------------------------------------------------------------------- frontend


def _client_host(requested: str, bound: str) -> str:
    """The address a local client should use: wildcards become loopback."""
    if requested in ("", "0.0.0.0"):  # noqa: S104
        return "127.0.0.1"
    if requested == "::":
        return "::1"
    return bound


class Sandbox:
    """The server: bound on construction, served by :meth:`start` or :meth:`serve_forever`."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        tenant_id: str = "sandbox-tenant",
        client_id: str = "sandbox-client",
        client_secret: str = "sandbox-secret",  # noqa: S107 (sandbox only)
        token_ttl: int = 7199,
        clock: Clock | None = None,
        delete_status: int = 200,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """``tls``: a server-side SSL context to serve HTTPS (tests of TLS options)."""
        self.state = SandboxState(
            tenant_id=tenant_id,
            client_id=client_id,
            client_secret=client_secret,
            token_ttl=token_ttl,
            clock=clock,
            delete_status=delete_status,
        )
        self._server = _Server((host, port), self.state)
        if tls is not None:
            # The handshake happens in the handler thread, on the first read.
            self._server.socket = tls.wrap_socket(
                self._server.socket, server_side=True, do_handshake_on_connect=False
            )
        bound_host, bound_port = self._server.server_address[:2]
        shown = _client_host(host, str(bound_host))
        self.host = shown
        self.port = int(bound_port)
        scheme = "https" if tls is not None else "http"
        self.base_url = (
            f"{scheme}://[{shown}]:{self.port}"
            if ":" in shown
            else f"{scheme}://{shown}:{self.port}"
        )
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._serving = False
        self._stopped = False

    def __repr__(self) -> str:
        return f"Sandbox({self.base_url!r}, tenant_id={self.state.tenant_id!r})"

    def start(self) -> Sandbox:
        """Serve in a daemon thread; returns self."""
        with self._lock:
            if self._stopped:
                raise RuntimeError("sandbox already stopped")
            if self._serving:
                return self
            self._serving = True
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                args=(_POLL_INTERVAL,),
                name="opsramp-sandbox",
                daemon=True,
            )
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the foreground until Ctrl-C or :meth:`stop` (from another thread)."""
        with self._lock:
            if self._stopped or self._serving:
                raise RuntimeError("sandbox already started or stopped")
            self._serving = True
        try:
            self._server.serve_forever(_POLL_INTERVAL)
        except KeyboardInterrupt:
            pass
        finally:
            with self._lock:
                self._serving = False
            self.stop()

    def stop(self) -> None:
        """Stop serving, close every connection and the socket; idempotent."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            serving, thread = self._serving, self._thread
        if serving:
            self._server.shutdown()
        self.state._close_all_connections()
        self._server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

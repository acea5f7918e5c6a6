"""The sandbox OpsRamp API, spoken to over real HTTP on 127.0.0.1."""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from hourly_report.clock import FakeClock
from hourly_report.sandbox import Fault, Sandbox, validate_analysis

TENANT = "sandbox-tenant"
TOKEN = "/tenancy/auth/oauth/token"
ANALYSES = f"/reporting/api/v3/tenants/{TENANT}/analyses"
TIMEOUT = 5
SECRET = "sandbox-secret"


def valid_body(tenant: str = TENANT) -> dict[str, Any]:
    return {
        "name": "hourly-perf-report-2026-02-12-0700-0800",
        "tenantId": tenant,
        "appId": "PERFORMANCE-UTILIZATION",
        "format": ["xlsx"],
        "parameters": {
            "method": ["max"],
            "metrics": ["system_cpu_utilization"],
            "startTime": "2026-02-12T07:00:00.000Z",
            "endTime": "2026-02-12T08:00:00.000Z",
            "options": ["resource.id", "resource.name"],
            "opsqlQuery": [
                {"groupBy": [], "filterCriteria": 'state = "active" AND monitorable = "true"'}
            ],
            "displayMode": "Consolidated List",
            "queryConfig": "summary",
            "analysisPeriod": "Specific Period",
            "client": tenant,
        },
    }


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sandbox(clock: FakeClock) -> Iterator[Sandbox]:
    sb = Sandbox(clock=clock).start()
    try:
        yield sb
    finally:
        sb.stop()


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        s.headers["User-Agent"] = "hourly-report/test"
        yield s


class Client:
    def __init__(self, sandbox: Sandbox, session: requests.Session) -> None:
        self.base = sandbox.base_url
        self.s = session
        self.token: str | None = None

    def get_token(self, secret: str = SECRET, **kw: Any) -> requests.Response:
        data = {"grant_type": "client_credentials", "client_id": "sandbox-client"}
        data["client_secret"] = secret
        return self.s.post(self.base + TOKEN, data=data, timeout=TIMEOUT, **kw)

    def auth(self) -> dict[str, str]:
        if self.token is None:
            self.token = self.get_token().json()["access_token"]
        return {"Authorization": f"Bearer {self.token}"}

    def create(self, body: Any = None, timeout: float = TIMEOUT, **kw: Any) -> requests.Response:
        headers = {**self.auth(), **kw.pop("headers", {})}
        payload = valid_body() if body is None else body
        return self.s.post(
            self.base + ANALYSES, json=payload, headers=headers, timeout=timeout, **kw
        )

    def delete(self, analysis_id: str) -> requests.Response:
        return self.s.delete(
            f"{self.base}{ANALYSES}/{analysis_id}", headers=self.auth(), timeout=TIMEOUT
        )

    def control(self, action: str, payload: Any = None) -> requests.Response:
        url = f"{self.base}/_sandbox/{action}"
        if action == "state":
            return self.s.get(url, timeout=TIMEOUT)
        return self.s.post(url, json=payload or {}, timeout=TIMEOUT)


@pytest.fixture
def client(sandbox: Sandbox, session: requests.Session) -> Client:
    return Client(sandbox, session)


# ---------------------------------------------------------------------- token


def test_token_ok(client: Client, sandbox: Sandbox) -> None:
    r = client.get_token()
    assert r.status_code == 200
    data = r.json()
    assert data["token_type"] == "bearer"
    assert data["expires_in"] == 7199
    assert data["access_token"]
    assert data["scope"]
    assert sandbox.state.tokens_issued == 1
    assert sandbox.state.requests[0].user_agent == "hourly-report/test"


def test_token_bad_secret(client: Client, sandbox: Sandbox) -> None:
    r = client.get_token(secret="wrong")
    assert r.status_code == 401
    assert r.json()["error"] == "invalid_client"
    assert sandbox.state.tokens_issued == 0
    assert "wrong" not in r.text


def test_token_wrong_content_type(client: Client) -> None:
    r = client.s.post(
        client.base + TOKEN,
        json={"grant_type": "client_credentials", "client_id": "sandbox-client"},
        timeout=TIMEOUT,
    )
    assert r.status_code == 400
    assert r.json()["error"] == "invalid_request"


def test_token_wrong_grant_type(client: Client) -> None:
    r = client.s.post(
        client.base + TOKEN,
        data={"grant_type": "password", "client_id": "x", "client_secret": "y"},
        timeout=TIMEOUT,
    )
    assert r.status_code == 400


def test_token_expires_by_server_clock(client: Client, clock: FakeClock) -> None:
    assert client.create().status_code == 200
    clock.advance(7200)
    r = client.create()
    assert r.status_code == 401
    assert r.json()["error"] == "invalid_token"


# --------------------------------------------------------------------- create


def test_create_ok_recorded(client: Client, sandbox: Sandbox) -> None:
    r = client.create()
    assert r.status_code == 200
    data = r.json()
    assert data["status"] == "QUEUED"
    assert data["id"] in sandbox.state.analyses
    assert sandbox.state.analyses[data["id"]] == valid_body()
    assert sandbox.state.names == [valid_body()["name"]]
    assert sandbox.state.count("create", 200) == 1


def test_duplicate_names_detected(client: Client, sandbox: Sandbox) -> None:
    client.create()
    client.create()
    assert sandbox.state.duplicate_names() == [valid_body()["name"]]


def _set(path: str, value: Any) -> Any:
    def mutate(body: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target = body
        for p in parents:
            target = target[p]
        if value is _DELETE:
            del target[last]
        else:
            target[last] = value

    return mutate


_DELETE = object()

MUTATIONS = [
    ("name", _set("name", "")),
    ("name", _set("name", 5)),
    ("tenantId", _set("tenantId", "other")),
    ("appId", _set("appId", _DELETE)),
    ("appId", _set("appId", "")),
    ("format", _set("format", [])),
    ("format", _set("format", "xlsx")),
    ("extra", _set("extra", 1)),
    ("parameters", _set("parameters", [])),
    ("parameters.method", _set("parameters.method", [])),
    ("parameters.metrics", _set("parameters.metrics", [1])),
    ("parameters.startTime", _set("parameters.startTime", "2026-02-12T07:00:00Z")),
    ("parameters.startTime", _set("parameters.startTime", "2026-02-12 07:00:00.000Z")),
    ("parameters.endTime", _set("parameters.endTime", "2026-02-12T08:00:00.000+00:00")),
    ("parameters.endTime", _set("parameters.endTime", "2026-02-12T09:00:00.000Z")),
    ("parameters.endTime", _set("parameters.endTime", "2026-02-12T07:59:59.999Z")),
    ("parameters.startTime", _set("parameters.startTime", "2026-13-12T07:00:00.000Z")),
    ("parameters.options", _set("parameters.options", ["resource.id"])),
    ("parameters.opsqlQuery", _set("parameters.opsqlQuery", [])),
    ("parameters.opsqlQuery", _set("parameters.opsqlQuery", {"groupBy": []})),
    ("parameters.opsqlQuery.groupBy", _set("parameters.opsqlQuery", [{"groupBy": ["x"], "filterCriteria": ""}])),  # noqa: E501
    ("parameters.opsqlQuery.filterCriteria", _set("parameters.opsqlQuery", [{"groupBy": [], "filterCriteria": 1}])),  # noqa: E501
    ("parameters.displayMode", _set("parameters.displayMode", "")),
    ("parameters.queryConfig", _set("parameters.queryConfig", None)),
    ("parameters.analysisPeriod", _set("parameters.analysisPeriod", "Last Hour")),
    ("parameters.client", _set("parameters.client", "other")),
    ("parameters.client", _set("parameters.client", _DELETE)),
    ("parameters.bogus", _set("parameters.bogus", True)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("field_name", "mutate"), MUTATIONS, ids=[f"{i}-{m[0]}" for i, m in enumerate(MUTATIONS)]
)
def test_create_validation(client: Client, sandbox: Sandbox, field_name: str, mutate: Any) -> None:
    body = copy.deepcopy(valid_body())
    mutate(body)
    r = client.create(body)
    assert r.status_code == 400
    data = r.json()
    assert data["error"] == "invalid_request"
    assert field_name in data["error_description"]
    assert sandbox.state.analyses == {}
    assert sandbox.state.names == []


def test_validate_analysis_pure() -> None:
    assert validate_analysis(valid_body(), TENANT) is None
    assert validate_analysis(valid_body("t2"), TENANT) is not None
    assert validate_analysis([], TENANT) == "body: must be a JSON object"
    kolkata = valid_body()
    kolkata["parameters"]["startTime"] = "2026-02-12T06:30:00.000Z"
    kolkata["parameters"]["endTime"] = "2026-02-12T07:30:00.000Z"
    assert validate_analysis(kolkata, TENANT) is None


def test_create_not_json(client: Client) -> None:
    r = client.s.post(
        client.base + ANALYSES,
        data=b"{not json",
        headers={**client.auth(), "Content-Type": "application/json"},
        timeout=TIMEOUT,
    )
    assert r.status_code == 400


def test_create_wrong_content_type(client: Client) -> None:
    r = client.s.post(
        client.base + ANALYSES, data={"a": "b"}, headers=client.auth(), timeout=TIMEOUT
    )
    assert r.status_code == 415


def test_create_wrong_tenant(client: Client, sandbox: Sandbox) -> None:
    url = client.base + "/reporting/api/v3/tenants/other/analyses"
    r = client.s.post(url, json=valid_body(), headers=client.auth(), timeout=TIMEOUT)
    assert r.status_code in (403, 404)
    assert "error" in r.json()
    assert sandbox.state.analyses == {}


def test_create_without_token(client: Client) -> None:
    r = client.s.post(client.base + ANALYSES, json=valid_body(), timeout=TIMEOUT)
    assert r.status_code == 401
    assert r.json()["error"] == "invalid_token"


def test_create_unknown_token(client: Client) -> None:
    r = client.create(headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401


def test_revoked_token(client: Client, sandbox: Sandbox) -> None:
    assert client.create().status_code == 200
    sandbox.state.revoke_tokens()
    r = client.create()
    assert r.status_code == 401
    assert r.json()["error"] == "invalid_token"
    client.token = None
    assert client.create().status_code == 200
    assert sandbox.state.tokens_issued == 2


# --------------------------------------------------------------------- delete


def test_delete_200_then_404(client: Client, sandbox: Sandbox) -> None:
    analysis_id = client.create().json()["id"]
    r = client.delete(analysis_id)
    assert r.status_code == 200
    assert r.json() == {"success": True}
    assert analysis_id not in sandbox.state.analyses
    assert analysis_id in sandbox.state.deleted
    assert client.delete(analysis_id).status_code == 404
    assert client.delete("no-such-id").status_code == 404


def test_delete_204(clock: FakeClock, session: requests.Session) -> None:
    with Sandbox(clock=clock, delete_status=204) as sb:
        c = Client(sb, session)
        analysis_id = c.create().json()["id"]
        r = c.delete(analysis_id)
        assert r.status_code == 204
        assert r.content == b""
        assert c.delete(analysis_id).status_code == 404


def test_delete_requires_token(client: Client) -> None:
    analysis_id = client.create().json()["id"]
    r = client.s.delete(f"{client.base}{ANALYSES}/{analysis_id}", timeout=TIMEOUT)
    assert r.status_code == 401


# -------------------------------------------------------------------- routing


def test_unknown_path_and_wrong_method(client: Client) -> None:
    r = client.s.get(client.base + "/nope", timeout=TIMEOUT)
    assert r.status_code == 404
    assert r.json()["error"] == "not_found"
    r = client.s.get(client.base + TOKEN, timeout=TIMEOUT)
    assert r.status_code == 405
    r = client.s.put(client.base + ANALYSES, json={}, timeout=TIMEOUT)
    assert r.status_code == 405


def test_keep_alive_one_connection(client: Client, sandbox: Sandbox) -> None:
    client.create()
    client.create()
    assert sandbox.state.count() == 3
    assert sandbox.state.connections == 1
    assert {r.connection for r in sandbox.state.requests} == {1}


# --------------------------------------------------------------------- faults


def test_fault_drop(client: Client, sandbox: Sandbox) -> None:
    client.auth()
    sandbox.state.inject("create", Fault("drop"))
    with pytest.raises(requests.ConnectionError):
        client.create()
    assert sandbox.state.analyses == {}
    assert sandbox.state.requests[-1].status is None
    assert client.create().status_code == 200


def test_fault_drop_after_acting(client: Client, sandbox: Sandbox) -> None:
    client.auth()
    sandbox.state.inject("create", Fault("drop", act=True))
    with pytest.raises(requests.ConnectionError):
        client.create()
    assert len(sandbox.state.analyses) == 1


def test_fault_slow_act_times_out_but_created(client: Client, sandbox: Sandbox) -> None:
    client.auth()
    sandbox.state.inject("create", Fault("slow", delay=0.5, act=True))
    with pytest.raises(requests.ReadTimeout):
        client.create(timeout=0.2)
    assert len(sandbox.state.analyses) == 1


def test_fault_slow_answers_for_real(client: Client, sandbox: Sandbox) -> None:
    client.auth()
    sandbox.state.inject("create", Fault("slow", delay=0.05))
    r = client.create()
    assert r.status_code == 200
    assert r.json()["id"] in sandbox.state.analyses


def test_fault_status_with_headers(client: Client, sandbox: Sandbox) -> None:
    client.auth()
    sandbox.state.inject("create", Fault("status", status=429, headers={"Retry-After": "1"}))
    r = client.create()
    assert r.status_code == 429
    assert r.headers["Retry-After"] == "1"
    assert r.json() == {"error": "throttled", "error_description": "Too Many Requests"}
    assert sandbox.state.analyses == {}


def test_fault_status_custom_body_and_act(client: Client, sandbox: Sandbox) -> None:
    client.auth()
    sandbox.state.inject("create", Fault("status", status=502, body="bad gateway", act=True))
    r = client.create()
    assert r.status_code == 502
    assert r.text == "bad gateway"
    assert len(sandbox.state.analyses) == 1


def test_fault_non_json(client: Client, sandbox: Sandbox) -> None:
    client.auth()
    sandbox.state.inject("create", Fault("non_json"))
    r = client.create()
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/html")
    assert r.text == "<html>proxy login</html>"
    assert sandbox.state.analyses == {}


def test_fault_no_id_with_act(client: Client, sandbox: Sandbox) -> None:
    client.auth()
    sandbox.state.inject("create", Fault("no_id", act=True))
    r = client.create()
    assert r.status_code == 200
    assert r.json() == {"status": "QUEUED"}
    assert len(sandbox.state.analyses) == 1


def test_fault_html(client: Client, sandbox: Sandbox) -> None:
    sandbox.state.inject("token", Fault("html", status=503))
    r = client.get_token()
    assert r.status_code == 503
    assert r.text.startswith("<html>")
    assert sandbox.state.tokens_issued == 0


def test_fault_queue_order_and_times(client: Client, sandbox: Sandbox) -> None:
    client.auth()
    sandbox.state.inject("create", Fault("status", status=503), times=2)
    sandbox.state.inject("create", Fault("status", status=500))
    sandbox.state.inject("delete", Fault("status", status=504))
    codes = [client.create().status_code for _ in range(4)]
    assert codes == [503, 503, 500, 200]
    assert sandbox.state.count("create", 503) == 2
    assert sandbox.state.snapshot()["pending_faults"] == {"delete": 1}


def test_inject_rejects_unknown(sandbox: Sandbox) -> None:
    with pytest.raises(ValueError, match="kind"):
        sandbox.state.inject("create", Fault("explode"))
    with pytest.raises(ValueError, match="endpoint"):
        sandbox.state.inject("status", Fault("drop"))


# ----------------------------------------------------------------- rate limit


def test_rate_limit_with_fake_clock(client: Client, sandbox: Sandbox, clock: FakeClock) -> None:
    sandbox.state.set_rate_limit(2, window_seconds=60)
    first = client.get_token()
    assert first.status_code == 200
    assert first.headers["X-RateLimit-Limit"] == "2"
    assert first.headers["X-RateLimit-Remaining"] == "1"
    client.token = first.json()["access_token"]
    assert client.create().status_code == 200
    r = client.create()
    assert r.status_code == 429
    assert r.json() == {"error": "throttled", "error_description": "Too Many Requests"}
    assert r.headers["X-RateLimit-Remaining"] == "0"
    reset = int(r.headers["X-RateLimit-Reset"])
    assert reset == 1_770_879_660
    assert reset >= clock.time()
    assert len(sandbox.state.analyses) == 1
    clock.advance(reset - clock.time())
    r = client.create()
    assert r.status_code == 200
    assert r.headers["X-RateLimit-Remaining"] == "1"
    sandbox.state.set_rate_limit(None)
    assert "X-RateLimit-Limit" not in client.create().headers


# -------------------------------------------------------------------- control


def test_control_endpoints_over_http(client: Client, sandbox: Sandbox) -> None:
    fault = {"endpoint": "create", "kind": "status", "status": 503, "times": 2}
    assert client.control("faults", {**fault, "headers": {}, "delay": 0, "act": False}).ok
    assert client.create().status_code == 503
    assert client.create().status_code == 503
    assert client.create().status_code == 200

    assert client.control("revoke").ok
    assert client.create().status_code == 401

    assert client.control("rate-limit", {"limit": 1, "window_seconds": 1}).ok
    client.token = None
    assert client.get_token().status_code == 200
    assert client.get_token().status_code == 429
    assert client.control("rate-limit", {"limit": None}).ok
    assert client.get_token().status_code == 200

    assert client.control("latency", {"connect": 0, "request": 0.01}).ok

    state = client.control("state").json()
    assert state["requests"]["create"] == {"503": 2, "200": 1, "401": 1}
    assert state["requests"]["token"] == {"200": 3, "429": 1}
    assert state["tokens_issued"] == 3
    assert len(state["analyses"]) == 1
    assert state["requests"]["control"]["200"] >= 5

    assert client.control("reset").ok
    assert sandbox.state.analyses == {}
    assert client.control("state").json()["requests_total"] == 1  # the reset itself


def test_control_rejects_bad_input(client: Client) -> None:
    r = client.control("faults", {"endpoint": "create", "kind": "nope"})
    assert r.status_code == 400
    assert client.control("rate-limit", {"limit": "x"}).status_code == 400
    assert client.control("latency", {"connect": -1}).status_code == 400
    assert client.s.get(client.base + "/_sandbox/faults", timeout=TIMEOUT).status_code == 405
    assert client.s.get(client.base + "/_sandbox/nope", timeout=TIMEOUT).status_code == 404


def test_control_requests_do_not_count_for_rate_limit(client: Client, sandbox: Sandbox) -> None:
    sandbox.state.set_rate_limit(1)
    for _ in range(3):
        assert client.control("state").status_code == 200
    assert client.get_token().status_code == 200
    assert sandbox.state.count("control") == 3


def test_snapshot(client: Client, sandbox: Sandbox) -> None:
    analysis_id = client.create().json()["id"]
    client.create()
    client.delete(analysis_id)
    snap = sandbox.state.snapshot()
    assert snap["requests"] == {"token": {"200": 1}, "create": {"200": 2}, "delete": {"200": 1}}
    assert snap["connections"] == 1
    assert snap["tokens_issued"] == 1
    assert snap["deleted"] == [analysis_id]
    assert len(snap["analyses"]) == 1
    assert snap["duplicates"] == [valid_body()["name"]]


def test_secrets_not_in_snapshot(client: Client, sandbox: Sandbox) -> None:
    client.auth()
    text = str(sandbox.state.snapshot())
    assert "sandbox-secret" not in text
    assert client.token is not None
    assert client.token not in text


# ------------------------------------------------------------------ lifecycle


def test_latency_is_real_but_applied(sandbox: Sandbox, client: Client) -> None:
    sandbox.state.set_latency(connect=0.05, request=0.0)
    r = client.get_token()
    assert r.elapsed.total_seconds() >= 0.05


def test_stop_idempotent_and_closes(clock: FakeClock) -> None:
    sb = Sandbox(clock=clock).start()
    assert sb.base_url.startswith("http://127.0.0.1:")
    sb.stop()
    sb.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(sb.base_url + "/_sandbox/state", timeout=1)


def test_stop_without_start() -> None:
    Sandbox().stop()


def test_serve_forever_stopped_from_other_thread() -> None:
    sb = Sandbox()
    thread = threading.Thread(target=sb.serve_forever, daemon=True)
    thread.start()
    r = requests.get(sb.base_url + "/_sandbox/state", timeout=TIMEOUT)
    assert r.status_code == 200
    sb.stop()
    thread.join(timeout=5)
    assert not thread.is_alive()


def test_a_fault_without_a_kind_is_a_status_fault(client: Client, sandbox: Sandbox) -> None:
    assert client.control("faults", {"endpoint": "create", "status": 503}).ok
    assert client.create().status_code == 503
    assert client.create().status_code == 200

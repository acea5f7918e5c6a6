"""Monitoring pings against a real local HTTP server that records what it receives."""

from __future__ import annotations

import logging
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from hourly_report.monitoring import BODY_BYTES, Pinger, safe_url

CHECK = "5f0e3c2a-9b1d-4e6f-8a7b-0c1d2e3fc3d4"
USER_AGENT = "hourly-report/test"


@dataclass
class Received:
    method: str
    path: str
    body: bytes
    headers: dict[str, str]
    client_port: int


@dataclass
class Recorder:
    """What the server received, and the statuses it should answer (then 200)."""

    requests: list[Received] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    base_url: str = ""


class RecordingHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a real ping endpoint does
    recorder: Recorder

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        headers = {key.lower(): value for key, value in self.headers.items()}
        self.recorder.requests.append(
            Received(self.command, self.path, body, headers, self.client_address[1])
        )
        status = self.recorder.statuses.pop(0) if self.recorder.statuses else 200
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server():
    recorder = Recorder()
    handler = type("Handler", (RecordingHandler,), {"recorder": recorder})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    recorder.base_url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield recorder
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


@pytest.fixture
def sleeps():
    return []


@pytest.fixture
def make_pinger(sleeps):
    pingers: list[Pinger] = []

    def make(url: str | None, **options) -> Pinger:
        options.setdefault("backoff", 0.5)
        pinger = Pinger(url, user_agent=USER_AGENT, sleep=sleeps.append, **options)
        pingers.append(pinger)
        return pinger

    yield make
    for pinger in pingers:
        pinger.close()


@pytest.fixture
def dead_url():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_start_posts_to_the_start_endpoint_with_the_user_agent(server, make_pinger):
    make_pinger(f"{server.base_url}/{CHECK}").start()
    [request] = server.requests
    assert (request.method, request.path) == ("POST", f"/{CHECK}/start")
    assert request.headers["user-agent"] == USER_AGENT
    assert request.body == b""


def test_success_posts_the_log_tail_to_the_ping_url(server, make_pinger):
    make_pinger(f"{server.base_url}/{CHECK}").success("created 07:00-08:00\n")
    [request] = server.requests
    assert request.path == f"/{CHECK}"
    assert request.body == b"created 07:00-08:00\n"
    assert request.headers["content-type"] == "text/plain; charset=utf-8"


def test_failure_posts_the_exit_status_and_the_log_tail(server, make_pinger):
    make_pinger(f"{server.base_url}/{CHECK}").failure(1, "ERROR create failed: HTTP 500\n")
    [request] = server.requests
    assert request.path == f"/{CHECK}/1"
    assert request.body == b"ERROR create failed: HTTP 500\n"


def test_the_body_is_the_last_ten_kilobytes_of_the_tail(server, make_pinger):
    tail = "ä" * 20_000 + "the end"
    make_pinger(f"{server.base_url}/{CHECK}").success(tail)
    [request] = server.requests
    assert len(request.body) <= BODY_BYTES
    assert request.body.decode("utf-8").endswith("ääthe end")


def test_a_trailing_slash_on_the_ping_url_is_ignored(server, make_pinger):
    make_pinger(f"{server.base_url}/{CHECK}/").start()
    assert server.requests[0].path == f"/{CHECK}/start"


def test_all_pings_of_a_run_share_one_connection(server, make_pinger):
    pinger = make_pinger(f"{server.base_url}/{CHECK}")
    pinger.start()
    pinger.success("ok")
    pinger.failure(2)
    assert [r.path for r in server.requests] == [f"/{CHECK}/start", f"/{CHECK}", f"/{CHECK}/2"]
    assert len({r.client_port for r in server.requests}) == 1


@pytest.mark.parametrize("url", [None, "", "  "])
def test_without_a_ping_url_nothing_is_sent(make_pinger, sleeps, caplog, url):
    pinger = make_pinger(url)
    pinger.start()
    pinger.success("tail")
    pinger.failure(1, "tail")
    assert not pinger.enabled
    assert sleeps == []
    assert warnings_of(caplog) == []


def test_server_errors_are_retried_until_the_ping_gets_through(server, make_pinger, sleeps, caplog):
    server.statuses[:] = [500, 500]
    make_pinger(f"{server.base_url}/{CHECK}", attempts=3).success("ok")
    assert [r.path for r in server.requests] == [f"/{CHECK}"] * 3
    assert sleeps == [0.5, 0.5]
    assert warnings_of(caplog) == []


def test_persistent_server_errors_end_in_one_warning(server, make_pinger, sleeps, caplog):
    server.statuses[:] = [503, 503, 503]
    make_pinger(f"{server.base_url}/{CHECK}", attempts=3).start()
    assert len(server.requests) == 3
    assert sleeps == [0.5, 0.5]
    [warning] = warnings_of(caplog)
    assert "failed: HTTP 503; the job itself is unaffected" in warning


def test_a_client_error_is_not_retried(server, make_pinger, sleeps, caplog):
    server.statuses[:] = [404]
    make_pinger(f"{server.base_url}/{CHECK}").start()
    assert len(server.requests) == 1
    assert sleeps == []
    [warning] = warnings_of(caplog)
    assert "HTTP 404" in warning


def test_an_unreachable_monitor_is_a_warning_not_an_error(dead_url, make_pinger, sleeps, caplog):
    pinger = make_pinger(f"{dead_url}/{CHECK}", attempts=4, backoff=2.0)
    pinger.failure(1, "tail")  # must not raise
    assert sleeps == [2.0, 2.0, 2.0]
    [warning] = warnings_of(caplog)
    assert warning.startswith(f"monitoring ping to {dead_url}/…c3d4/1 failed: could not connect")
    assert "Connection refused" in warning
    assert warning.endswith("the job itself is unaffected")
    assert CHECK not in warning


def test_the_warning_never_shows_credentials_query_or_check_id(dead_url, make_pinger, caplog):
    url = dead_url.replace("http://", "http://ops:hunter22@") + f"/{CHECK}?create=1&key=k3y"
    make_pinger(url, attempts=1).start()
    [warning] = warnings_of(caplog)
    for secret in ("hunter22", "ops:", "k3y", "create=1", CHECK):
        assert secret not in warning


def test_a_proxy_receives_the_ping_for_the_monitor(server, make_pinger):
    pinger = make_pinger(f"http://hc-ping.invalid/{CHECK}", proxy=server.base_url)
    pinger.start()
    [request] = server.requests
    assert request.path == f"http://hc-ping.invalid/{CHECK}/start"


@pytest.mark.parametrize(
    ("url", "suffix", "expected"),
    [
        (f"https://hc-ping.com/{CHECK}", "", "https://hc-ping.com/…c3d4"),
        (
            f"https://u:p@hc.example.com:8443/ping/{CHECK}?x=1",
            "/start",
            "https://hc.example.com:8443/…c3d4/start",
        ),
        ("https://hc.example.com/short", "/1", "https://hc.example.com/…/1"),
    ],
)
def test_safe_url_keeps_only_scheme_host_and_a_hint(url, suffix, expected):
    assert safe_url(url, suffix) == expected


def test_debug_logs_never_show_the_secret_path_of_the_ping_url(server, make_pinger):
    from io import StringIO

    from hourly_report.logs import configure_logging

    secret = "PINGSECRETUUID1234"
    captured = StringIO()
    configure_logging("DEBUG", stream=captured)
    pinger = make_pinger(f"{server.base_url}/ping/{secret}?key=QUERYKEY5678")
    pinger.start()
    pinger.success("ok")
    pinger.failure(1)

    text = captured.getvalue()
    assert [r.path for r in server.requests] == [
        f"/ping/{secret}/start?key=QUERYKEY5678",
        f"/ping/{secret}?key=QUERYKEY5678",
        f"/ping/{secret}/1?key=QUERYKEY5678",
    ]
    assert "127.0.0.1" in text  # urllib3's DEBUG lines were captured...
    assert "HTTP/1.1" in text
    assert secret not in text  # ...with the secret parts masked
    assert "QUERYKEY5678" not in text


def test_a_ping_url_password_and_a_proxy_password_are_masked_in_every_log_line(make_pinger):
    import logging as std_logging
    from io import StringIO

    from hourly_report.logs import configure_logging

    captured = StringIO()
    configure_logging("DEBUG", stream=captured)
    make_pinger(
        "https://ops:PingUserPass77@hc.example.com/ping/CHECKKEY-abcdef123456",
        proxy="http://puser:ProxyPassWord88@127.0.0.1:3128",
    )
    std_logging.getLogger("test").warning(
        "echo PingUserPass77 ProxyPassWord88 /ping/CHECKKEY-abcdef123456 CHECKKEY-abcdef123456"
    )
    text = captured.getvalue()
    assert "echo" in text
    for secret in ("PingUserPass77", "ProxyPassWord88", "CHECKKEY-abcdef123456"):
        assert secret not in text


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://hc-ping.com/short", []),  # nothing secret-looking: mask nothing
        ("https://hc.example.com/ping?rid=true", ["rid=true"]),
        (f"https://hc-ping.com/{CHECK}/", [f"/{CHECK}", CHECK]),
        ("https://u:pw123456@hc.example.com/ping/abc", ["/ping/abc", "pw123456"]),
    ],
)
def test_secret_parts_of_a_ping_url(url, expected):
    from hourly_report.monitoring import secret_parts

    assert secret_parts(url) == expected


def test_the_suffix_goes_into_the_path_before_a_query_string(server, make_pinger):
    pinger = make_pinger(f"{server.base_url}/ping/key/slug/?create=1")
    pinger.start()
    pinger.failure(3)
    pinger.success()
    assert [r.path for r in server.requests] == [
        "/ping/key/slug/start?create=1",
        "/ping/key/slug/3?create=1",
        "/ping/key/slug?create=1",
    ]

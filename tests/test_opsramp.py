"""The OpsRamp client's retry policy, over real HTTP against the sandbox.

Every retry wait happens on the shared :class:`FakeClock` (asserted through
``clock.sleeps``); the only real waits are sub-second read timeouts.
"""

from __future__ import annotations

import email.utils
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from hourly_report import __version__, config, payloads, windows
from hourly_report.clock import FakeClock
from hourly_report.config import Settings
from hourly_report.errors import (
    ApiError,
    AuthError,
    DeadlineExceededError,
    OutcomeUnknownError,
)
from hourly_report.opsramp import (
    BODY_EXCERPT_CHARS,
    USER_AGENT,
    Deadline,
    OpsRampClient,
    rate_limit_wait,
)
from hourly_report.sandbox import Fault, Sandbox
from tests.conftest import CLIENT_ID, CLIENT_SECRET, TENANT

MakeConfig = Callable[..., Path]
JITTER = 0.1  # the client's jitter on server-given waits
BACKOFF = {"max_attempts": 3, "backoff_seconds": 1, "max_backoff_seconds": 10}
WINDOW_END = datetime(2026, 2, 12, 8, 0, tzinfo=timezone.utc)


# --- helpers -------------------------------------------------------------------------


def load(make_config: MakeConfig, server: Sandbox | str, **sections: Any) -> Settings:
    return config.load(make_config(server, **sections))


def client_for(settings: Settings, clock: FakeClock, deadline: float = 600.0) -> OpsRampClient:
    return OpsRampClient(
        settings.opsramp, settings.retry, clock=clock, deadline=Deadline(deadline, clock)
    )


def body(settings: Settings, end: datetime = WINDOW_END) -> dict[str, Any]:
    window = windows.latest_ended_window(end, settings.report.zone, settings.report.name_prefix)
    return payloads.analysis_body(window, TENANT, settings.report)


def free_port() -> int:
    """A port on 127.0.0.1 with nothing listening (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``predicate``: for the sandbox to finish a request the client gave up on."""
    give_up = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > give_up:
            return False
        time.sleep(0.02)
    return True


def create_one(settings: Settings, clock: FakeClock, **kwargs: Any) -> str:
    with client_for(settings, clock, **kwargs) as client:
        return client.create_analysis(body(settings))


# --- create: which answers are resent, and after how long ------------------------------


def test_create_is_resent_after_two_503s_with_two_backoff_waits(
    fake_sandbox: Sandbox, clock: FakeClock, make_config: MakeConfig
) -> None:
    settings = load(make_config, fake_sandbox, retry=BACKOFF)
    fake_sandbox.state.inject("create", Fault("status", status=503), times=2)

    analysis_id = create_one(settings, clock)

    assert analysis_id in fake_sandbox.state.analyses
    assert fake_sandbox.state.count("create") == 3
    assert fake_sandbox.state.count("create", 503) == 2
    first, second = clock.sleeps
    assert 1.0 <= first <= 2.0  # backoff 1 s + jitter up to backoff_seconds
    assert 2.0 <= second <= 3.0  # doubled


def test_a_503_with_retry_after_waits_as_long_as_the_server_asks(
    fake_sandbox: Sandbox, clock: FakeClock, make_config: MakeConfig
) -> None:
    settings = load(make_config, fake_sandbox, retry=BACKOFF)
    fault = Fault("status", status=503, headers={"Retry-After": "4"})
    fake_sandbox.state.inject("create", fault)

    create_one(settings, clock)

    assert fake_sandbox.state.count("create") == 2
    [wait] = clock.sleeps
    assert 4.0 <= wait <= 4.0 + JITTER


def _http_date(epoch: float) -> str:
    return email.utils.formatdate(epoch, usegmt=True)


# (case, headers as a function of "now", expected wait before the jitter)
THROTTLE_WAITS: list[tuple[str, Callable[[float], dict[str, str]], float]] = [
    ("reset one second ahead", lambda now: {"X-RateLimit-Reset": str(int(now) + 1)}, 1.0),
    ("reset already past", lambda now: {"X-RateLimit-Reset": str(int(now) - 30)}, 0.0),
    ("retry-after in seconds", lambda now: {"Retry-After": "2"}, 2.0),
    ("retry-after as an HTTP date", lambda now: {"Retry-After": _http_date(now + 3)}, 3.0),
    (
        "both headers, retry-after later",
        lambda now: {"X-RateLimit-Reset": str(int(now) + 1), "Retry-After": "3"},
        3.0,
    ),
    (
        "both headers, reset later",
        lambda now: {"X-RateLimit-Reset": str(int(now) + 4), "Retry-After": "2"},
        4.0,
    ),
]


@pytest.mark.parametrize(
    ("headers", "expected"),
    [pytest.param(h, e, id=case) for case, h, e in THROTTLE_WAITS],
)
def test_a_throttled_create_waits_for_the_servers_hint_then_succeeds(
    fake_sandbox: Sandbox,
    clock: FakeClock,
    make_config: MakeConfig,
    headers: Callable[[float], dict[str, str]],
    expected: float,
) -> None:
    settings = load(make_config, fake_sandbox, retry=BACKOFF)
    fake_sandbox.state.inject("create", Fault("status", status=429, headers=headers(clock.time())))

    analysis_id = create_one(settings, clock)

    assert analysis_id in fake_sandbox.state.analyses
    assert fake_sandbox.state.count("create") == 2
    assert fake_sandbox.state.count("create", 429) == 1
    [wait] = clock.sleeps
    assert expected <= wait <= expected + JITTER


def test_a_throttled_create_with_a_garbage_retry_after_falls_back_to_the_backoff(
    fake_sandbox: Sandbox, clock: FakeClock, make_config: MakeConfig
) -> None:
    settings = load(make_config, fake_sandbox, retry=BACKOFF)
    fake_sandbox.state.inject(
        "create", Fault("status", status=429, headers={"Retry-After": "soon-ish"})
    )

    create_one(settings, clock)

    assert fake_sandbox.state.count("create") == 2
    [wait] = clock.sleeps
    assert 1.0 <= wait <= 2.0  # backoff_seconds = 1, plus up to 1 s of jitter


NOW = 1_770_879_600.0


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param({}, None, id="no headers"),
        pytest.param({"Retry-After": "garbage"}, None, id="garbage retry-after"),
        pytest.param({"X-RateLimit-Reset": "soon"}, None, id="garbage reset"),
        pytest.param({"Retry-After": "7"}, 7.0, id="retry-after seconds"),
        pytest.param({"Retry-After": _http_date(NOW + 3)}, 3.0, id="retry-after date"),
        pytest.param({"Retry-After": _http_date(NOW - 3)}, 0.0, id="retry-after date past"),
        pytest.param({"X-RateLimit-Reset": str(int(NOW) + 10)}, 10.0, id="reset epoch seconds"),
        pytest.param({"X-RateLimit-Reset": str(int(NOW + 5) * 1000)}, 5.0, id="reset epoch ms"),
        pytest.param({"X-RateLimit-Reset": str(int(NOW) - 60)}, 0.0, id="reset in the past"),
        pytest.param(
            {"X-RateLimit-Reset": str(int(NOW) + 2), "Retry-After": "9"}, 9.0, id="later wins"
        ),
    ],
)
def test_rate_limit_wait_reads_reset_and_retry_after(
    headers: dict[str, str], expected: float | None
) -> None:
    assert rate_limit_wait(headers, NOW) == expected


def test_a_persistent_503_gives_up_after_max_attempts_without_outcome_unknown(
    fake_sandbox: Sandbox, clock: FakeClock, make_config: MakeConfig
) -> None:
    settings = load(make_config, fake_sandbox, retry=BACKOFF)
    fake_sandbox.state.inject("create", Fault("status", status=503), times=10)

    with pytest.raises(ApiError) as caught:
        create_one(settings, clock)

    assert not isinstance(caught.value, OutcomeUnknownError)  # 503: the server did not act
    assert caught.value.status == 503
    assert "gave up after 3 attempts" in str(caught.value)
    assert fake_sandbox.state.count("create") == 3
    assert len(clock.sleeps) == 2


def test_a_400_on_create_is_sent_once_and_reported_with_the_servers_message(
    fake_sandbox: Sandbox, clock: FakeClock, make_config: MakeConfig
) -> None:
    settings = load(make_config, fake_sandbox, retry=BACKOFF)
    long_reason = "name: " + "x" * 500
    fault_body = f'{{"error": "invalid_request", "error_description": "{long_reason}"}}'
    fake_sandbox.state.inject("create", Fault("status", status=400, body=fault_body))

    with pytest.raises(ApiError) as caught:
        create_one(settings, clock)

    message = str(caught.value)
    assert caught.value.status == 400
    assert not isinstance(caught.value, OutcomeUnknownError)
    assert "HTTP 400: invalid_request: name: xxx" in message
    assert "x" * (BODY_EXCERPT_CHARS + 1) not in message
    assert message.endswith("…")
    assert fake_sandbox.state.count("create") == 1
    assert clock.sleeps == []


@pytest.mark.parametrize("status", [500, 502, 504])
def test_a_5xx_other_than_503_on_create_is_not_resent_because_the_outcome_is_unknown(
    fake_sandbox: Sandbox, clock: FakeClock, make_config: MakeConfig, status: int
) -> None:
    settings = load(make_config, fake_sandbox, retry=BACKOFF)
    fake_sandbox.state.inject("create", Fault("status", status=status), times=5)

    with pytest.raises(OutcomeUnknownError) as caught:
        create_one(settings, clock)

    message = str(caught.value)
    assert "outcome unknown" in message
    assert "check in OpsRamp" in message
    assert f"HTTP {status}" in message
    assert caught.value.status == status
    assert fake_sandbox.state.count("create") == 1
    assert clock.sleeps == []


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_a_5xx_on_delete_is_retried_because_delete_is_idempotent(
    fake_sandbox: Sandbox, clock: FakeClock, make_config: MakeConfig, status: int
) -> None:
    settings = load(make_config, fake_sandbox, retry=BACKOFF)
    with client_for(settings, clock) as client:
        analysis_id = client.create_analysis(body(settings))
        fake_sandbox.state.inject("delete", Fault("status", status=status), times=2)

        assert client.delete_analysis(analysis_id) is True

    assert analysis_id in fake_sandbox.state.deleted
    assert fake_sandbox.state.count("delete") == 3
    assert len(clock.sleeps) == 2


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429])
def test_a_5xx_or_429_on_the_token_endpoint_is_retried(
    fake_sandbox: Sandbox, clock: FakeClock, make_config: MakeConfig, status: int
) -> None:
    settings = load(make_config, fake_sandbox, retry=BACKOFF)
    fake_sandbox.state.inject("token", Fault("status", status=status), times=2)

    create_one(settings, clock)

    assert fake_sandbox.state.count("token") == 3
    assert fake_sandbox.state.tokens_issued == 1
    assert fake_sandbox.state.count("create") == 1
    assert len(clock.sleeps) == 2


def test_deleting_an_analysis_that_is_already_gone_counts_as_deleted(
    fake_sandbox: Sandbox, clock: FakeClock, make_config: MakeConfig
) -> None:
    settings = load(make_config, fake_sandbox)
    with client_for(settings, clock) as client:
        assert client.delete_analysis("no-such-analysis") is False
    assert fake_sandbox.state.count("delete", 404) == 1


# --- transport failures ----------------------------------------------------------------


@pytest.mark.parametrize("act", [False, True], ids=["before acting", "after acting"])
def test_a_dropped_connection_on_create_is_outcome_unknown_and_not_resent(
    fake_sandbox: Sandbox, clock: FakeClock, make_config: MakeConfig, act: bool
) -> None:
    settings = load(make_config, fake_sandbox, retry=BACKOFF)
    fake_sandbox.state.inject("create", Fault("drop", act=act), times=3)

    with pytest.raises(OutcomeUnknownError) as caught:
        create_one(settings, clock)

    assert "outcome unknown" in str(caught.value)
    assert "dropped" in str(caught.value)
    assert fake_sandbox.state.count("create") == 1
    assert len(fake_sandbox.state.analyses) == (1 if act else 0)
    assert clock.sleeps == []


@pytest.mark.parametrize("endpoint", ["token", "delete"])
def test_a_dropped_connection_on_an_idempotent_call_is_retried(
    fake_sandbox: Sandbox, clock: FakeClock, make_config: MakeConfig, endpoint: str
) -> None:
    settings = load(make_config, fake_sandbox, retry=BACKOFF)
    fake_sandbox.state.inject(endpoint, Fault("drop"), times=2)
    with client_for(settings, clock) as client:
        analysis_id = client.create_analysis(body(settings))
        assert client.delete_analysis(analysis_id) is True

    assert fake_sandbox.state.count(endpoint) == 3
    assert fake_sandbox.state.count(endpoint, 200) == 1
    assert analysis_id in fake_sandbox.state.deleted
    assert fake_sandbox.state.tokens_issued == 1
    assert len(clock.sleeps) == 2


def test_a_delete_whose_reply_was_dropped_after_deleting_ends_as_already_gone(
    fake_sandbox: Sandbox, clock: FakeClock, make_config: MakeConfig
) -> None:
    settings = load(make_config, fake_sandbox, retry=BACKOFF)
    with client_for(settings, clock) as client:
        analysis_id = client.create_analysis(body(settings))
        fake_sandbox.state.inject("delete", Fault("drop", act=True))
        assert client.delete_analysis(analysis_id) is False  # the resend found it gone

    assert fake_sandbox.state.count("delete") == 2
    assert fake_sandbox.state.count("delete", 404) == 1
    assert analysis_id in fake_sandbox.state.deleted


def test_a_read_timeout_after_the_server_created_it_is_outcome_unknown_and_not_resent(
    fake_sandbox: Sandbox, clock: FakeClock, make_config: MakeConfig
) -> None:
    settings = load(make_config, fake_sandbox, opsramp={"timeout_seconds": 0.3}, retry=BACKOFF)
    fake_sandbox.state.inject("create", Fault("slow", delay=1.0, act=True))

    with client_for(settings, clock) as client:
        with pytest.raises(OutcomeUnknownError) as caught:
            client.create_analysis(body(settings))
        assert client.requests_sent == 2  # the token, and one create

    assert "outcome unknown" in str(caught.value)
    assert "no answer within 0.3 s" in str(caught.value)
    # The sandbox logs the request once its slow answer is out: wait for that.
    assert eventually(lambda: fake_sandbox.state.count("create") == 1)
    assert len(fake_sandbox.state.analyses) == 1
    assert fake_sandbox.state.duplicate_names() == []
    assert clock.sleeps == []


def test_a_server_that_never_answers_costs_one_read_timeout_not_more(
    fake_sandbox: Sandbox, clock: FakeClock, make_config: MakeConfig
) -> None:
    settings = load(make_config, fake_sandbox, opsramp={"timeout_seconds": 0.3}, retry=BACKOFF)
    with client_for(settings, clock) as client:
        client.token()
        fake_sandbox.state.inject("create", Fault("slow", delay=1.0))
        started = time.monotonic()
        with pytest.raises(OutcomeUnknownError):
            client.create_analysis(body(settings))
        elapsed = time.monotonic() - started

    assert 0.25 <= elapsed < 0.3 + 0.5
    assert clock.sleeps == []


def test_a_refused_connection_on_create_is_retried_because_nothing_was_sent(
    fake_sandbox: Sandbox, clock: FakeClock, make_config: MakeConfig
) -> None:
    settings = load(make_config, fake_sandbox, retry={**BACKOFF, "max_attempts": 4})
    with client_for(settings, clock) as client:
        client.token()
        fake_sandbox.stop()  # nothing listens on its port any more
        started = time.monotonic()
        with pytest.raises(ApiError) as caught:
            client.create_analysis(body(settings))
        elapsed = time.monotonic() - started

        assert client.requests_sent == 1 + 4  # the token, then max_attempts creates

    assert not isinstance(caught.value, OutcomeUnknownError)
    assert "cannot connect" in str(caught.value)
    assert "gave up after 4 attempts" in str(caught.value)
    assert len(clock.sleeps) == 3
    assert sum(clock.sleeps) <= 1 + 2 + 4 + 3  # three doubling backoffs plus jitter
    assert elapsed < 2.0


def test_an_address_where_nothing_listens_fails_with_cannot_connect_after_max_attempts(
    clock: FakeClock, make_config: MakeConfig
) -> None:
    settings = load(make_config, f"http://127.0.0.1:{free_port()}", retry=BACKOFF)
    with client_for(settings, clock) as client:
        started = time.monotonic()
        with pytest.raises(ApiError) as caught:
            client.create_analysis(body(settings))
        elapsed = time.monotonic() - started
        assert client.requests_sent == 3

    assert "request an access token: cannot connect to http://127.0.0.1" in str(caught.value)
    assert len(clock.sleeps) == 2
    assert elapsed < 2.0


# --- tokens ------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 407])
def test_a_refused_token_is_replaced_once_and_the_call_repeated(
    fake_sandbox: Sandbox, clock: FakeClock, make_config: MakeConfig, status: int
) -> None:
    settings = load(make_config, fake_sandbox, retry=BACKOFF)
    fake_sandbox.state.inject("create", Fault("status", status=status))

    analysis_id = create_one(settings, clock)

    assert analysis_id in fake_sandbox.state.analyses
    assert fake_sandbox.state.tokens_issued == 2
    assert fake_sandbox.state.count("create") == 2
    assert fake_sandbox.state.count("create", status) == 1
    assert clock.sleeps == []


@pytest.mark.parametrize("status", [401, 407])
def test_a_freshly_issued_token_refused_again_is_an_auth_error_not_a_loop(
    fake_sandbox: Sandbox, clock: FakeClock, make_config: MakeConfig, status: int
) -> None:
    settings = load(make_config, fake_sandbox, retry=BACKOFF)
    fake_sandbox.state.inject("create", Fault("status", status=status), times=5)

    with pytest.raises(AuthError) as caught:
        create_one(settings, clock)

    assert "refused a freshly issued token" in str(caught.value)
    assert CLIENT_ID in str(caught.value)
    assert caught.value.status == status
    assert fake_sandbox.state.count("create") == 2
    assert fake_sandbox.state.count("token") == 2


def test_a_revoked_token_is_replaced_on_the_next_call(
    fake_sandbox: Sandbox, clock: FakeClock, make_config: MakeConfig
) -> None:
    settings = load(make_config, fake_sandbox)
    with client_for(settings, clock) as client:
        first = client.create_analysis(body(settings))
        fake_sandbox.state.revoke_tokens()
        client.delete_analysis(first)

    assert fake_sandbox.state.tokens_issued == 2
    assert fake_sandbox.state.count("delete", 401) == 1
    assert first in fake_sandbox.state.deleted


def test_bad_client_credentials_are_an_auth_error_sent_once(
    fake_sandbox: Sandbox, clock: FakeClock, make_config: MakeConfig
) -> None:
    settings = load(
        make_config, fake_sandbox, opsramp={"client_secret": "wrong-secret"}, retry=BACKOFF
    )

    with pytest.raises(AuthError) as caught:
        create_one(settings, clock)

    message = str(caught.value)
    assert "rejected the client credentials" in message
    assert "invalid_client" in message
    assert "wrong-secret" not in message
    assert fake_sandbox.state.count("token") == 1
    assert fake_sandbox.state.count("create") == 0
    assert clock.sleeps == []


def test_a_token_endpoint_answering_html_points_at_a_proxy_or_login_page(
    fake_sandbox: Sandbox, clock: FakeClock, make_config: MakeConfig
) -> None:
    settings = load(make_config, fake_sandbox, retry=BACKOFF)
    fake_sandbox.state.inject("token", Fault("non_json"))

    with pytest.raises(AuthError) as caught:
        create_one(settings, clock)

    message = str(caught.value)
    assert "not JSON" in message
    assert "text/html" in message
    assert "proxy or login page" in message
    assert fake_sandbox.state.count("token") == 1
    assert fake_sandbox.state.count("create") == 0


def test_the_token_is_refreshed_only_once_inside_the_refresh_margin(
    clock: FakeClock, make_config: MakeConfig
) -> None:
    with Sandbox(
        tenant_id=TENANT,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        token_ttl=400,
        clock=clock,
    ) as server:
        settings = load(make_config, server, opsramp={"token_refresh_margin_seconds": 300})
        with client_for(settings, clock) as client:
            client.create_analysis(body(settings, WINDOW_END))
            clock.advance(90)  # 10 s before ttl - margin
            client.create_analysis(body(settings, WINDOW_END.replace(hour=9)))
            assert server.state.tokens_issued == 1

            clock.advance(20)  # 10 s past ttl - margin, token still valid for 290 s
            client.create_analysis(body(settings, WINDOW_END.replace(hour=10)))
            assert server.state.tokens_issued == 2

        assert server.state.count("create", 401) == 0
        assert server.state.count("create", 200) == 3


def test_a_token_shorter_than_the_margin_is_still_used_for_a_while(
    clock: FakeClock, make_config: MakeConfig
) -> None:
    with Sandbox(
        tenant_id=TENANT,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        token_ttl=100,
        clock=clock,
    ) as server:
        settings = load(make_config, server, opsramp={"token_refresh_margin_seconds": 300})
        with client_for(settings, clock) as client:
            client.create_analysis(body(settings, WINDOW_END))
            client.create_analysis(body(settings, WINDOW_END.replace(hour=9)))
            assert server.state.tokens_issued == 1


def test_token_and_create_share_one_connection_and_carry_the_user_agent(
    fake_sandbox: Sandbox, clock: FakeClock, make_config: MakeConfig
) -> None:
    settings = load(make_config, fake_sandbox)
    with client_for(settings, clock) as client:
        for hour in (8, 9, 10):
            analysis_id = client.create_analysis(body(settings, WINDOW_END.replace(hour=hour)))
        client.delete_analysis(analysis_id)

    assert f"hourly-report/{__version__}" == USER_AGENT
    assert fake_sandbox.state.connections == 1
    assert [r.endpoint for r in fake_sandbox.state.requests] == [
        "token",
        "create",
        "create",
        "create",
        "delete",
    ]
    assert {r.user_agent for r in fake_sandbox.state.requests} == {USER_AGENT}


# --- answers that are not what they claim ---------------------------------------------


@pytest.mark.parametrize("kind", ["non_json", "no_id"])
def test_a_200_create_without_a_usable_id_is_outcome_unknown(
    fake_sandbox: Sandbox, clock: FakeClock, make_config: MakeConfig, kind: str
) -> None:
    settings = load(make_config, fake_sandbox, retry=BACKOFF)
    fake_sandbox.state.inject("create", Fault(kind))

    with pytest.raises(OutcomeUnknownError) as caught:
        create_one(settings, clock)

    assert "without an analysis id" in str(caught.value)
    assert caught.value.status == 200
    assert fake_sandbox.state.count("create") == 1


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        pytest.param(
            Fault("status", status=403, body='{"error": "access_denied", "message": "no"}'),
            "HTTP 403: access_denied: no; check that the client may use this tenant's "
            "reporting API",
            id="json",
        ),
        pytest.param(
            Fault("html", status=404),
            "HTTP 404: <html><body><h1>404 Not Found</h1></body></html>; check [opsramp] "
            "tenant_id and base_url",
            id="html",
        ),
        pytest.param(Fault("status", status=409, body=""), "HTTP 409: (empty body)", id="empty"),
        pytest.param(
            Fault("status", status=422, body="plain\n  text\treason"),
            "HTTP 422: plain text reason",
            id="text on one line",
        ),
    ],
)
def test_an_error_answer_is_reported_with_its_status_and_a_short_body(
    fake_sandbox: Sandbox, clock: FakeClock, make_config: MakeConfig, fault: Fault, expected: str
) -> None:
    settings = load(make_config, fake_sandbox, retry=BACKOFF)
    fake_sandbox.state.inject("create", fault)

    with pytest.raises(ApiError) as caught:
        create_one(settings, clock)

    assert str(caught.value).endswith(expected)
    assert caught.value.status == fault.status
    assert fake_sandbox.state.count("create") == 1


def test_a_long_html_error_page_is_cut_to_about_200_characters(
    fake_sandbox: Sandbox, clock: FakeClock, make_config: MakeConfig
) -> None:
    settings = load(make_config, fake_sandbox, retry=BACKOFF)
    page = "<html><body>" + "<p>gateway says no</p>" * 200 + "</body></html>"
    fake_sandbox.state.inject("create", Fault("html", status=418, body=page))

    with pytest.raises(ApiError) as caught:
        create_one(settings, clock)

    excerpt = str(caught.value).split("HTTP 418: ", 1)[1]
    assert len(excerpt) == BODY_EXCERPT_CHARS
    assert excerpt.startswith("<html><body><p>gateway says no</p>")
    assert excerpt.endswith("…")


@pytest.mark.parametrize("status", [302, 307])
@pytest.mark.parametrize("endpoint", ["token", "create", "delete"])
def test_a_redirect_is_reported_and_never_followed(
    fake_sandbox: Sandbox, clock: FakeClock, make_config: MakeConfig, endpoint: str, status: int
) -> None:
    settings = load(make_config, fake_sandbox, retry=BACKOFF)
    login = f"{fake_sandbox.base_url}/login"
    analysis_id = create_one(settings, clock)
    fake_sandbox.state.inject(endpoint, Fault("status", status=status, headers={"Location": login}))

    def call_redirected(fresh: OpsRampClient) -> None:
        if endpoint == "create":
            fresh.create_analysis(body(settings, WINDOW_END.replace(hour=9)))
        else:
            fresh.delete_analysis(analysis_id)

    with client_for(settings, clock) as fresh, pytest.raises(ApiError) as caught:
        call_redirected(fresh)  # a fresh client asks for a token before anything else

    assert f"HTTP {status}, a redirect to {login}, which is not followed" in str(caught.value)
    assert caught.value.status == status
    assert fake_sandbox.state.count(endpoint, status) == 1
    assert fake_sandbox.state.count("other") == 0  # nothing went to the login page
    assert analysis_id in fake_sandbox.state.analyses  # a redirected delete deleted nothing
    assert clock.sleeps == []


# --- the time budget ---------------------------------------------------------------------


def test_a_throttle_reset_beyond_the_deadline_stops_at_once_without_waiting(
    fake_sandbox: Sandbox, clock: FakeClock, make_config: MakeConfig
) -> None:
    settings = load(make_config, fake_sandbox, retry=BACKOFF)
    reset = str(int(clock.time()) + 3600)
    fake_sandbox.state.inject(
        "create", Fault("status", status=429, headers={"X-RateLimit-Reset": reset})
    )

    with pytest.raises(DeadlineExceededError) as caught:
        create_one(settings, clock, deadline=60)

    message = str(caught.value)
    assert "deadline_seconds = 60" in message
    assert "throttled" in message
    assert "create analysis hourly-perf-report-2026-02-12-0700-0800" in message
    assert clock.sleeps == []
    assert fake_sandbox.state.count("create") == 1


def test_backoff_waits_that_would_pass_the_deadline_stop_the_retries(
    fake_sandbox: Sandbox, clock: FakeClock, make_config: MakeConfig
) -> None:
    retry = {"max_attempts": 10, "backoff_seconds": 4, "max_backoff_seconds": 60}
    settings = load(make_config, fake_sandbox, retry=retry)
    fake_sandbox.state.inject("create", Fault("status", status=503), times=10)

    with pytest.raises(DeadlineExceededError):
        create_one(settings, clock, deadline=30)

    assert sum(clock.sleeps) <= 30
    assert fake_sandbox.state.count("create") == len(clock.sleeps) + 1 < 10


def test_a_client_whose_budget_is_spent_sends_nothing(
    fake_sandbox: Sandbox, clock: FakeClock, make_config: MakeConfig
) -> None:
    settings = load(make_config, fake_sandbox)
    with client_for(settings, clock, deadline=10) as client:
        clock.advance(11)
        with pytest.raises(DeadlineExceededError) as caught:
            client.create_analysis(body(settings))

    assert "not sent" in str(caught.value)
    assert fake_sandbox.state.count() == 0


# --- a proxy in the way ------------------------------------------------------------------


def test_a_dead_proxy_is_named_with_its_password_masked_not_blamed_on_opsramp(
    fake_sandbox: Sandbox, clock: FakeClock, make_config: MakeConfig
) -> None:
    port = free_port()
    proxy = f"http://puser:ProxyPass99@127.0.0.1:{port}"
    settings = load(make_config, fake_sandbox, opsramp={"proxy": proxy}, retry=BACKOFF)
    with client_for(settings, clock) as client:
        with pytest.raises(ApiError) as caught:
            client.create_analysis(body(settings))
        assert client.requests_sent == 3  # retried: nothing was sent

    message = str(caught.value)
    assert message == (
        f"request an access token: cannot connect to proxy http://puser:***@127.0.0.1:{port} "
        f"(Connection refused) for {fake_sandbox.base_url} (gave up after 3 attempts)"
    )
    assert "ProxyPass99" not in message
    assert len(clock.sleeps) == 2
    assert fake_sandbox.state.tokens_issued == 0


@pytest.fixture
def refusing_proxy() -> Iterator[str]:
    """A proxy on 127.0.0.1 that answers every request 407 (wrong proxy credentials)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.05)
    stop = threading.Event()
    seen: list[bytes] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            with conn:
                seen.append(conn.recv(65536))
                conn.sendall(
                    b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                    b"Content-Length: 0\r\nConnection: close\r\n\r\n"
                )

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://puser:WrongPass42@127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join(timeout=5)
    listener.close()
    assert seen
    assert all(request.startswith(b"CONNECT ") for request in seen)


def test_a_proxy_refusing_the_tunnel_is_reported_as_the_proxy_not_opsramp(
    refusing_proxy: str, clock: FakeClock, make_config: MakeConfig
) -> None:
    settings = load(
        make_config,
        "https://acme.api.opsramp.invalid",
        opsramp={"proxy": refusing_proxy},
        retry={**BACKOFF, "max_attempts": 1},
    )
    with client_for(settings, clock) as client, pytest.raises(ApiError) as caught:
        client.token()

    message = str(caught.value)
    assert "proxy http://puser:***@127.0.0.1:" in message
    assert "could not reach https://acme.api.opsramp.invalid" in message
    assert "Tunnel connection failed: 407 Proxy Authentication Required" in message
    assert "WrongPass42" not in message


# --- retries that recover are quiet (cron mails any output) ------------------------------


def test_a_create_that_succeeds_after_two_503s_prints_nothing(
    sandbox: Sandbox, make_config: MakeConfig, invoke
) -> None:
    config_file = make_config(sandbox)
    sandbox.state.inject("create", Fault("status", status=503), times=2)

    result = invoke(config_file, "run", "--at", "2026-02-12T08:05:00Z")

    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    assert sandbox.state.count("create", 503) == 2
    assert len(sandbox.state.analyses) == 1


def test_the_retries_are_logged_at_info(sandbox: Sandbox, make_config: MakeConfig, invoke) -> None:
    config_file = make_config(sandbox)
    sandbox.state.inject("create", Fault("status", status=503), times=2)

    result = invoke(config_file, "--log-level", "INFO", "run", "--at", "2026-02-12T08:05:00Z")

    assert result.exit_code == 0, result.stderr
    retries = [line for line in result.stderr.splitlines() if "; retrying in" in line]
    assert len(retries) == 2
    assert all(" INFO " in line and "HTTP 503" in line for line in retries)
    assert "(attempt 1)" in retries[0]
    assert "(attempt 2)" in retries[1]
    assert " WARNING " not in result.stderr


def test_waits_for_the_rate_limit_and_429_retries_are_logged_at_info_not_warning(
    fake_sandbox: Sandbox, clock: FakeClock, make_config: MakeConfig, caplog
) -> None:
    import logging

    caplog.set_level(logging.INFO)
    settings = load(make_config, fake_sandbox)
    fake_sandbox.state.set_rate_limit(2)  # the token uses one; the first create the other
    with client_for(settings, clock) as client:
        client.create_analysis(body(settings))  # answered "X-RateLimit-Remaining: 0"
        client.create_analysis(body(settings, WINDOW_END.replace(hour=9)))  # waits
        fake_sandbox.state.inject("create", Fault("status", status=429))
        client.create_analysis(body(settings, WINDOW_END.replace(hour=10)))  # retried

    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert any(level == logging.INFO and "rate limit exhausted" in m for level, m in messages)
    assert any(level == logging.INFO and "retrying in" in m for level, m in messages)
    assert clock.sleeps  # the waits were taken (on the fake clock)
    assert [m for level, m in messages if level >= logging.WARNING] == []

"""Failure semantics end to end: jobs.run/backfill over the client, sandbox and ledger.

Each job runs on the test's FakeClock, shared with the sandbox so that rate-limit
windows and token expiry move with it; retry waits are read from ``clock.sleeps``.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from hourly_report import config, jobs, logs, windows
from hourly_report.clock import FakeClock
from hourly_report.config import Settings
from hourly_report.errors import HourlyReportError
from hourly_report.ledger import Ledger, Row
from hourly_report.opsramp import Deadline, OpsRampClient
from hourly_report.sandbox import Fault, Sandbox
from tests.conftest import CLIENT_SECRET, TENANT

MakeConfig = Callable[..., Path]
RETRY = {"max_attempts": 3, "backoff_seconds": 1, "max_backoff_seconds": 10}
RUN_AT = datetime(2026, 2, 12, 8, 5, tzinfo=timezone.utc)  # creates 07:00-08:00
WINDOW_NAME = "hourly-perf-report-2026-02-12-0700-0800"
DAY = date(2026, 2, 11)  # a finished day (the FakeClock starts 2026-02-12T07:00Z)


# --- helpers ---------------------------------------------------------------------------


def load(make_config: MakeConfig, server: Sandbox, **sections: Any) -> Settings:
    return config.load(
        make_config(server, retry={**RETRY, **sections.pop("retry", {})}, **sections)
    )


def make_job(
    settings: Settings,
    clock: FakeClock,
    now: datetime = RUN_AT,
    progress: Callable[[jobs.Outcome], None] | None = None,
) -> jobs.Job:
    return jobs.Job(settings, clock, now, emit=lambda line: None, progress=progress)


def run_once(settings: Settings, clock: FakeClock, now: datetime = RUN_AT) -> jobs.JobResult:
    job = make_job(settings, clock, now)
    try:
        return jobs.run(job)
    finally:
        job.close()


def backfill(
    settings: Settings,
    clock: FakeClock,
    days: list[date],
    progress: Callable[[jobs.Outcome], None] | None = None,
) -> jobs.JobResult:
    now = datetime.fromtimestamp(clock.time(), tz=timezone.utc)
    job = make_job(settings, clock, now, progress)
    try:
        return jobs.backfill(job, days)
    finally:
        job.close()


def ledger_rows(settings: Settings, start: datetime, end: datetime) -> list[Row]:
    with Ledger.open(settings.ledger_path, read_only=True) as ledger:
        return ledger.rows_between(TENANT, start, end)


def only_row(settings: Settings) -> Row:
    [row] = ledger_rows(settings, RUN_AT - timedelta(days=1), RUN_AT)
    return row


def day_rows(settings: Settings, day: date) -> list[Row]:
    return ledger_rows(settings, *windows.day_bounds(day, settings.report.zone))


def after_creates(count: int, action: Callable[[], None]) -> Callable[[jobs.Outcome], None]:
    """A Job ``progress`` callback that runs ``action`` once ``count`` windows are created."""
    created = 0

    def progress(outcome: jobs.Outcome) -> None:
        nonlocal created
        if outcome.result == "created":
            created += 1
            if created == count:
                action()

    return progress


# --- one window: what the ledger says after each kind of failure --------------------------


def test_a_400_marks_the_window_failed_and_the_next_run_creates_it(
    fake_sandbox: Sandbox, clock: FakeClock, make_config: MakeConfig
) -> None:
    settings = load(make_config, fake_sandbox)
    fake_sandbox.state.inject(
        "create",
        Fault("status", status=400, body='{"error": "invalid_request", "message": "bad metric"}'),
    )

    first = run_once(settings, clock)

    assert first.exit_code == 1
    [failed] = first.failures
    assert failed.name == WINDOW_NAME
    assert "HTTP 400: invalid_request: bad metric" in (failed.error or "")
    row = only_row(settings)
    assert (row.state, row.attempts, row.analysis_id) == ("failed", 1, None)
    assert "HTTP 400: invalid_request: bad metric" in (row.last_error or "")
    assert fake_sandbox.state.count("create") == 1

    second = run_once(settings, clock)

    assert second.exit_code == 0
    assert second.count("created") == 1
    row = only_row(settings)
    assert (row.state, row.attempts) == ("created", 2)
    assert row.analysis_id in fake_sandbox.state.analyses
    assert fake_sandbox.state.count("create") == 2


# (case, endpoint fault, whether the server made the analysis anyway)
OUTCOME_UNKNOWN: list[tuple[str, Fault, bool]] = [
    ("500", Fault("status", status=500), False),
    ("500 after acting", Fault("status", status=500, act=True), True),
    ("502", Fault("status", status=502), False),
    ("504", Fault("status", status=504), False),
    ("reply dropped", Fault("drop"), False),
    ("reply dropped after acting", Fault("drop", act=True), True),
    ("200 not JSON", Fault("non_json"), False),
    ("200 without id", Fault("no_id", act=True), True),
]


@pytest.mark.parametrize(
    ("fault", "made"), [pytest.param(f, m, id=case) for case, f, m in OUTCOME_UNKNOWN]
)
def test_a_create_with_an_unknown_outcome_is_sent_once_and_recorded_as_such(
    fake_sandbox: Sandbox, clock: FakeClock, make_config: MakeConfig, fault: Fault, made: bool
) -> None:
    settings = load(make_config, fake_sandbox)
    fake_sandbox.state.inject("create", fault, times=3)

    result = run_once(settings, clock)

    assert result.exit_code == 1
    assert result.stopped is None
    assert fake_sandbox.state.count("create") == 1
    assert len(fake_sandbox.state.analyses) == (1 if made else 0)
    row = only_row(settings)
    assert row.state == "unknown"
    assert row.analysis_id is None
    assert "outcome unknown" in (row.last_error or "")
    assert "check in OpsRamp" in (row.last_error or "")
    assert clock.sleeps == []


def test_a_read_timeout_after_the_server_created_it_leaves_one_analysis_and_an_unknown_row(
    fake_sandbox: Sandbox, clock: FakeClock, make_config: MakeConfig
) -> None:
    settings = load(make_config, fake_sandbox, opsramp={"timeout_seconds": 0.3})
    fake_sandbox.state.inject("create", Fault("slow", delay=1.0, act=True))

    started = time.monotonic()
    result = run_once(settings, clock)
    elapsed = time.monotonic() - started

    assert elapsed < 0.3 + 0.6
    assert result.exit_code == 1
    row = only_row(settings)
    assert row.state == "unknown"
    assert "outcome unknown" in (row.last_error or "")
    assert "no answer within 0.3 s" in (row.last_error or "")
    assert list(fake_sandbox.state.names) == [WINDOW_NAME]
    assert fake_sandbox.state.duplicate_names() == []


def test_a_503_burst_on_create_is_waited_out_and_the_window_created(
    fake_sandbox: Sandbox, clock: FakeClock, make_config: MakeConfig
) -> None:
    settings = load(make_config, fake_sandbox)
    fake_sandbox.state.inject("create", Fault("status", status=503), times=2)

    result = run_once(settings, clock)

    assert result.exit_code == 0
    row = only_row(settings)
    assert (row.state, row.attempts) == ("created", 1)
    assert fake_sandbox.state.count("create") == 3
    assert len(clock.sleeps) == 2


# --- a whole day ------------------------------------------------------------------------


def test_a_token_revoked_mid_backfill_is_replaced_once_and_every_window_created(
    fake_sandbox: Sandbox, clock: FakeClock, make_config: MakeConfig
) -> None:
    settings = load(make_config, fake_sandbox)

    result = backfill(
        settings, clock, [DAY], progress=after_creates(10, fake_sandbox.state.revoke_tokens)
    )

    assert result.exit_code == 0
    assert result.count("created") == 24
    assert fake_sandbox.state.tokens_issued == 2
    assert fake_sandbox.state.count("token") == 2
    assert fake_sandbox.state.count("create", 401) == 1
    assert fake_sandbox.state.count("create") == 25
    assert fake_sandbox.state.connections == 1
    assert [r.state for r in day_rows(settings, DAY)] == ["created"] * 24
    assert fake_sandbox.state.duplicate_names() == []


def test_a_fresh_token_refused_stops_the_backfill_without_marking_later_windows(
    fake_sandbox: Sandbox, clock: FakeClock, make_config: MakeConfig
) -> None:
    settings = load(make_config, fake_sandbox)

    def refuse_everything() -> None:
        fake_sandbox.state.inject("create", Fault("status", status=401), times=10)

    result = backfill(settings, clock, [DAY], progress=after_creates(3, refuse_everything))

    assert result.exit_code == 1
    assert "refused a freshly issued token" in (result.stopped or "")
    assert "(20 windows not attempted)" in (result.stopped or "")
    assert fake_sandbox.state.count("create", 401) == 2
    assert fake_sandbox.state.count("token") == 2
    states = [r.state for r in day_rows(settings, DAY)]
    assert states == ["created"] * 3 + ["failed"]


def test_bad_credentials_stop_the_run_before_any_create(
    fake_sandbox: Sandbox, clock: FakeClock, make_config: MakeConfig
) -> None:
    settings = load(make_config, fake_sandbox, opsramp={"client_secret": "not-the-secret"})

    result = backfill(settings, clock, [DAY])

    assert result.exit_code == 1
    assert "client credentials" in (result.stopped or "")
    assert fake_sandbox.state.count("token") == 1
    assert fake_sandbox.state.count("create") == 0


def test_rate_limit_pacing_makes_a_three_day_backfill_without_a_single_429(
    fake_sandbox: Sandbox, clock: FakeClock, make_config: MakeConfig
) -> None:
    settings = load(make_config, fake_sandbox)
    fake_sandbox.state.set_rate_limit(5, 1.0)
    days = [date(2026, 2, 9), date(2026, 2, 10), date(2026, 2, 11)]

    result = backfill(settings, clock, days)

    assert result.exit_code == 0
    assert result.count("created") == 72
    assert len(fake_sandbox.state.analyses) == 72
    assert fake_sandbox.state.count(status=429) == 0
    assert fake_sandbox.state.tokens_issued == 1
    # 73 requests at 5 per window: a wait after every fifth, each at most one window.
    assert len(clock.sleeps) == 73 // 5
    assert all(0 < wait <= 1.1 for wait in clock.sleeps)


def test_an_injected_429_burst_under_a_rate_limit_still_recovers(
    fake_sandbox: Sandbox, clock: FakeClock, make_config: MakeConfig
) -> None:
    settings = load(make_config, fake_sandbox)
    fake_sandbox.state.set_rate_limit(5, 1.0)

    def burst() -> None:
        fake_sandbox.state.inject("create", Fault("status", status=429), times=2)

    result = backfill(settings, clock, [DAY], progress=after_creates(7, burst))

    assert result.exit_code == 0
    assert result.count("created") == 24
    assert fake_sandbox.state.count("create", 429) == 2
    assert fake_sandbox.state.count("create") == 26
    assert all(wait <= 1.1 for wait in clock.sleeps)


def test_a_throttle_past_the_deadline_stops_the_job_and_leaves_later_windows_untouched(
    fake_sandbox: Sandbox, clock: FakeClock, make_config: MakeConfig
) -> None:
    settings = load(make_config, fake_sandbox, retry={"deadline_seconds": 120})

    def throttle_for_an_hour() -> None:
        reset = str(int(clock.time()) + 3600)
        fault = Fault("status", status=429, headers={"X-RateLimit-Reset": reset})
        fake_sandbox.state.inject("create", fault)

    result = backfill(settings, clock, [DAY], progress=after_creates(5, throttle_for_an_hour))

    assert result.exit_code == 1
    assert "deadline_seconds = 120" in (result.stopped or "")
    assert "(18 windows not attempted)" in (result.stopped or "")
    assert result.count("created") == 5
    assert clock.sleeps == []
    rows = day_rows(settings, DAY)
    assert [r.state for r in rows] == ["created"] * 5 + ["failed"]
    assert "deadline_seconds" in (rows[-1].last_error or "")
    assert fake_sandbox.state.count("create") == 6


# --- secrets ----------------------------------------------------------------------------


@pytest.fixture
def debug_log() -> Iterator[io.StringIO]:
    """Everything logged at DEBUG (urllib3 included), through the project's handlers."""
    root, urllib3 = logging.getLogger(), logging.getLogger("urllib3")
    saved = (list(root.handlers), root.level, urllib3.level)
    stream = io.StringIO()
    logs.configure_logging("DEBUG", stream=stream)
    try:
        yield stream
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
        urllib3.setLevel(saved[2])


def test_no_secret_reaches_the_debug_log_or_an_error_message(
    fake_sandbox: Sandbox, clock: FakeClock, make_config: MakeConfig, debug_log: io.StringIO
) -> None:
    settings = load(make_config, fake_sandbox)
    messages: list[str] = []
    tokens: list[str] = []
    client = OpsRampClient(
        settings.opsramp, settings.retry, clock=clock, deadline=Deadline(600, clock)
    )
    with client:
        tokens.append(client.token())
        fake_sandbox.state.revoke_tokens()
        for hour, fault in ((8, None), (9, Fault("status", status=500))):
            if fault is not None:
                fake_sandbox.state.inject("create", fault)
            run_at = RUN_AT.replace(hour=hour)
            job = jobs.Job(settings, clock, run_at, emit=messages.append, _client=client)
            messages.extend(o.error or "" for o in jobs.run(job).outcomes)
            tokens.append(client.token())
        fake_sandbox.state.inject("delete", Fault("status", status=401), times=2)
        try:
            client.delete_analysis("some-id")
        except HourlyReportError as err:
            messages.append(str(err))
        tokens.append(client.token())
    fake_sandbox.state.inject("token", Fault("non_json"))
    for secret in (CLIENT_SECRET, "wrong-secret-value"):
        bad = load(make_config, fake_sandbox, opsramp={"client_secret": secret})
        with OpsRampClient(bad.opsramp, bad.retry, clock=clock, deadline=Deadline(60, clock)) as c:
            try:
                c.token()
            except HourlyReportError as err:
                messages.append(str(err))

    text = debug_log.getvalue() + "\n".join(messages)
    assert fake_sandbox.state.tokens_issued == 3  # first, after the revocation, after the 401
    assert len(set(tokens)) == 3
    assert fake_sandbox.state.count("create", 401) == 1
    assert "/tenancy/auth/oauth/token" in text  # urllib3's DEBUG lines were captured
    assert "outcome unknown" in text
    assert "refused a freshly issued token" in text
    assert "proxy or login page" in text
    assert "rejected the client credentials" in text
    for secret in (CLIENT_SECRET, "wrong-secret-value", *tokens):
        assert secret not in text


# --- unknown outcomes are held; an unreachable OpsRamp stops the job ------------------------


def test_a_window_with_an_unknown_outcome_is_not_resent_until_retry_unknown(
    fake_sandbox: Sandbox, clock: FakeClock, make_config: MakeConfig
) -> None:
    settings = load(make_config, fake_sandbox)
    fake_sandbox.state.inject("create", Fault("status", status=502))
    assert run_once(settings, clock).exit_code == 1

    again = run_once(settings, clock)

    assert again.exit_code == 1
    assert [o.result for o in again.outcomes] == ["held"]
    assert "--retry-unknown" in (again.outcomes[0].error or "")
    assert fake_sandbox.state.count("create") == 1  # nothing re-sent
    assert only_row(settings).state == "unknown"

    job = make_job(settings, clock)
    job.retry_unknown = True
    try:
        confirmed = jobs.run(job)
    finally:
        job.close()

    assert confirmed.exit_code == 0
    assert fake_sandbox.state.count("create") == 2
    row = only_row(settings)
    assert (row.state, row.attempts) == ("created", 2)


def test_a_dry_run_shows_a_held_window_as_held_not_as_planned(
    fake_sandbox: Sandbox, clock: FakeClock, make_config: MakeConfig
) -> None:
    settings = load(make_config, fake_sandbox)
    fake_sandbox.state.inject("create", Fault("drop"))
    run_once(settings, clock)
    printed: list[str] = []
    job = jobs.Job(settings, clock, RUN_AT, emit=printed.append)

    result = jobs.run(job, dry_run=True)

    assert [o.result for o in result.outcomes] == ["held"]
    assert printed == []  # no token, no create would be sent


def test_a_backfill_stops_at_once_when_opsramp_cannot_be_reached(
    clock: FakeClock, make_config: MakeConfig, unused_port_url: str
) -> None:
    settings = config.load(make_config(unused_port_url, retry=RETRY))
    started = time.monotonic()

    result = backfill(settings, clock, [DAY])

    assert time.monotonic() - started < 10
    assert result.exit_code == 1
    assert result.stopped is not None
    assert "request an access token: cannot connect" in result.stopped
    assert "Connection refused" in result.stopped
    assert "23 windows not attempted" in result.stopped
    assert len(clock.sleeps) == RETRY["max_attempts"] - 1  # one token's retries, not 24
    rows = day_rows(settings, DAY)
    assert [r.state for r in rows] == ["failed"]


@pytest.fixture
def unused_port_url() -> str:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_a_backfill_stops_when_no_token_can_be_obtained(
    fake_sandbox: Sandbox, clock: FakeClock, make_config: MakeConfig
) -> None:
    settings = load(make_config, fake_sandbox)
    fake_sandbox.state.inject("token", Fault("status", status=500), times=RETRY["max_attempts"])

    result = backfill(settings, clock, [DAY])

    assert result.exit_code == 1
    assert result.stopped is not None
    assert result.stopped.startswith("could not obtain an access token: ")
    assert "HTTP 500" in result.stopped
    assert fake_sandbox.state.count("token") == RETRY["max_attempts"]
    assert fake_sandbox.state.count("create") == 0

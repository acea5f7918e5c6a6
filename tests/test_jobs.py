"""The main job end to end: run, backfill, cleanup, status and --dry-run.

Every test drives the real command line in-process (``invoke``) against a real
sandbox on 127.0.0.1 and inspects what the server received and what the ledger
holds.  Time is fixed with ``--at``; configs set every backoff to 0.
"""

from __future__ import annotations

import json
from datetime import timezone
from pathlib import Path

import requests

from hourly_report.ledger import Row
from hourly_report.sandbox import Fault, Sandbox
from tests.conftest import CLIENT_ID, CLIENT_SECRET, TENANT, config_text, ledger_rows

D = "2026-02-12"
PREFIX = "hourly-perf-report"
UTC = timezone.utc


def row_named(path: Path, name: str) -> Row:
    (row,) = [r for r in ledger_rows(path) if r.name == name]
    return row


def names_on_server(sandbox: Sandbox) -> list[str]:
    return sorted(body["name"] for body in sandbox.state.analyses.values())


def day_names(day: str, hours: range = range(24)) -> list[str]:
    def hhmm(hour: int) -> str:
        return f"{hour % 24:02d}00"

    return [f"{PREFIX}-{day}-{hhmm(h)}-{hhmm(h + 1)}" for h in hours]


def files_snapshot(path: Path) -> tuple[bytes, bytes, bytes]:
    """The bytes of the ledger, its write-ahead log and rollback journal (b"" if absent).

    A read-only SQLite connection to a WAL database may leave an *empty* ``-wal``
    file behind; that holds no data, so absent and empty compare equal.
    """

    def read(suffix: str) -> bytes:
        candidate = path.with_name(path.name + suffix)
        return candidate.read_bytes() if candidate.exists() else b""

    return read(""), read("-wal"), read("-journal")


def delete_on_server(sandbox: Sandbox, analysis_id: str) -> None:
    """Delete an analysis behind the tool's back, over HTTP like any other client."""
    token = requests.post(
        sandbox.base_url + "/tenancy/auth/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
        },
        timeout=5,
    ).json()["access_token"]
    answer = requests.delete(
        f"{sandbox.base_url}/reporting/api/v3/tenants/{TENANT}/analyses/{analysis_id}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=5,
    )
    assert answer.status_code == 200


# --- run --------------------------------------------------------------------------------------


def test_run_creates_the_hour_that_just_ended_quietly_with_one_token_on_one_connection(
    sandbox, config_path, ledger_path, invoke
):
    result = invoke(config_path, "run", "--at", "2026-02-12T08:05:00Z")

    assert result.exit_code == 0
    assert result.stdout == ""
    assert result.stderr == ""
    assert sandbox.state.count("token") == 1
    assert sandbox.state.count("create") == 1
    assert sandbox.state.count() == 2
    assert len({r.connection for r in sandbox.state.requests}) == 1
    assert {r.user_agent for r in sandbox.state.requests} == {"hourly-report/0.1.0"}
    ((analysis_id, body),) = sandbox.state.analyses.items()
    assert body["name"] == "hourly-perf-report-2026-02-12-0700-0800"
    assert body["parameters"]["startTime"] == "2026-02-12T07:00:00.000Z"
    assert body["parameters"]["endTime"] == "2026-02-12T08:00:00.000Z"
    assert body["tenantId"] == TENANT
    row = row_named(ledger_path, "hourly-perf-report-2026-02-12-0700-0800")
    assert (row.state, row.analysis_id) == ("created", analysis_id)


def test_run_at_the_top_of_the_hour_creates_the_hour_that_just_ended(sandbox, config_path, invoke):
    result = invoke(config_path, "run", "--at", "2026-02-12T08:00:00Z")

    assert result.exit_code == 0
    assert names_on_server(sandbox) == ["hourly-perf-report-2026-02-12-0700-0800"]


def test_run_just_after_midnight_names_the_last_hour_under_the_previous_day(
    sandbox, config_path, invoke
):
    result = invoke(config_path, "run", "--at", "2026-02-13T00:05:00Z")

    assert result.exit_code == 0
    (body,) = sandbox.state.analyses.values()
    assert body["name"] == "hourly-perf-report-2026-02-12-2300-0000"
    assert body["parameters"]["startTime"] == "2026-02-12T23:00:00.000Z"
    assert body["parameters"]["endTime"] == "2026-02-13T00:00:00.000Z"


def test_a_second_run_for_the_same_window_sends_nothing_and_exits_0(
    sandbox, config_path, ledger_path, invoke
):
    assert invoke(config_path, "run", "--at", "2026-02-12T08:05:00Z").exit_code == 0
    before = sandbox.state.count()

    again = invoke(config_path, "run", "--at", "2026-02-12T08:59:00Z")

    assert again.exit_code == 0
    assert (again.stdout, again.stderr) == ("", "")
    assert sandbox.state.count() == before  # not even a token request
    assert len(ledger_rows(ledger_path)) == 1


def test_a_refused_create_fails_the_run_with_one_line_and_the_next_run_creates_it(
    sandbox, config_path, ledger_path, invoke
):
    name = "hourly-perf-report-2026-02-12-0700-0800"
    sandbox.state.inject("create", Fault("status", status=400))

    failed = invoke(config_path, "run", "--at", "2026-02-12T08:05:00Z")

    assert failed.exit_code == 1
    lines = failed.stderr.strip().splitlines()
    assert len(lines) == 1, failed.stderr
    assert name in lines[0]
    assert "HTTP 400" in lines[0]
    assert "Traceback" not in failed.stderr
    assert sandbox.state.analyses == {}

    shown = invoke(config_path, "status", "--date", D, "--json", "--at", "2026-02-12T08:10Z")
    (row,) = [r for r in json.loads(shown.stdout) if r["name"] == name]
    assert row["state"] == "failed"
    assert "HTTP 400" in row["last_error"]

    retried = invoke(config_path, "run", "--at", "2026-02-12T08:10:00Z")

    assert retried.exit_code == 0
    assert names_on_server(sandbox) == [name]
    assert row_named(ledger_path, name).state == "created"
    assert sandbox.state.count("create") == 2


# --- backfill ---------------------------------------------------------------------------------


def test_backfill_of_an_ended_day_creates_its_24_hours_with_one_token(
    sandbox, config_path, ledger_path, invoke
):
    result = invoke(config_path, "backfill", "--date", D, "--at", "2026-02-13T01:00Z")

    assert result.exit_code == 0
    assert result.stdout.strip() == "backfill: 24 created, 0 failed"
    assert result.stderr == ""
    assert sandbox.state.count("token") == 1
    assert sandbox.state.count("create") == 24
    assert names_on_server(sandbox) == day_names(D)
    assert sandbox.state.duplicate_names() == []
    rows = ledger_rows(ledger_path)
    assert [r.state for r in rows] == ["created"] * 24
    assert {r.analysis_id for r in rows} == set(sandbox.state.analyses)


def test_backfill_run_twice_creates_nothing_the_second_time(sandbox, config_path, invoke):
    assert invoke(config_path, "backfill", "--date", D, "--at", "2026-02-13T01:00Z").exit_code == 0
    before = sandbox.state.count()

    again = invoke(config_path, "backfill", "--date", D, "--at", "2026-02-13T02:00Z")

    assert again.exit_code == 0
    assert again.stdout.strip() == "backfill: 24 exists, 0 failed"
    assert sandbox.state.count() == before


def test_backfill_of_today_creates_only_the_hours_that_have_ended(
    sandbox, config_path, ledger_path, invoke
):
    result = invoke(config_path, "backfill", "--date", D, "--at", "2026-02-12T10:30Z")

    assert result.exit_code == 0
    assert result.stdout.strip() == "backfill: 10 created, 0 failed"
    assert names_on_server(sandbox) == day_names(D, range(10))
    latest_end = max(body["parameters"]["endTime"] for body in sandbox.state.analyses.values())
    assert latest_end == "2026-02-12T10:00:00.000Z"
    assert len(ledger_rows(ledger_path)) == 10


def test_backfill_fills_around_windows_that_a_run_already_created(sandbox, config_path, invoke):
    assert invoke(config_path, "run", "--at", "2026-02-12T08:05:00Z").exit_code == 0

    result = invoke(config_path, "backfill", "--date", D, "--at", "2026-02-13T01:00Z")

    assert result.exit_code == 0
    assert result.stdout.strip() == "backfill: 23 created, 1 exists, 0 failed"
    assert names_on_server(sandbox) == day_names(D)
    assert sandbox.state.count("create") == 24


def test_backfill_from_to_covers_both_ends_of_the_range(sandbox, config_path, invoke):
    result = invoke(
        config_path,
        "backfill",
        "--from",
        "2026-02-10",
        "--to",
        "2026-02-11",
        "--at",
        "2026-02-13T01:00Z",
    )

    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == "backfill: 48 created, 0 failed"
    assert names_on_server(sandbox) == day_names("2026-02-10") + day_names("2026-02-11")
    assert sandbox.state.count("token") == 1


def test_backfill_with_some_refused_windows_creates_the_rest_and_exits_1(
    sandbox, config_path, ledger_path, invoke
):
    sandbox.state.inject("create", Fault("status", status=400), times=2)

    result = invoke(config_path, "backfill", "--date", D, "--at", "2026-02-13T01:00Z")

    assert result.exit_code == 1
    assert result.stdout.startswith("backfill: 22 created, 2 failed (")
    assert "HTTP 400" in result.stderr
    states = [r.state for r in ledger_rows(ledger_path)]
    assert states.count("failed") == 2
    assert states.count("created") == 22

    again = invoke(config_path, "backfill", "--date", D, "--at", "2026-02-13T02:00Z")

    assert again.exit_code == 0
    assert again.stdout.strip() == "backfill: 2 created, 22 exists, 0 failed"
    assert names_on_server(sandbox) == day_names(D)


# --- cleanup ----------------------------------------------------------------------------------


def backfill_and_next_run(invoke, config_path) -> None:
    """Day D fully created, plus the first hour of D+1."""
    assert invoke(config_path, "backfill", "--date", D, "--at", "2026-02-13T00:30Z").exit_code == 0
    assert invoke(config_path, "run", "--at", "2026-02-13T01:05:00Z").exit_code == 0


def test_cleanup_deletes_the_finished_day_and_leaves_today_alone(
    sandbox, config_path, ledger_path, invoke
):
    backfill_and_next_run(invoke, config_path)
    d_ids = {r.analysis_id for r in ledger_rows(ledger_path) if r.name.startswith(f"{PREFIX}-{D}")}
    assert len(d_ids) == 24

    result = invoke(config_path, "cleanup", "--at", "2026-02-13T12:00:00Z")

    assert result.exit_code == 0
    assert (result.stdout, result.stderr) == ("", "")
    assert sandbox.state.count("delete") == 24
    assert sandbox.state.deleted == d_ids
    assert names_on_server(sandbox) == ["hourly-perf-report-2026-02-13-0000-0100"]
    states = {r.name: r.state for r in ledger_rows(ledger_path)}
    assert [states[n] for n in day_names(D)] == ["deleted"] * 24
    assert states["hourly-perf-report-2026-02-13-0000-0100"] == "created"

    again = invoke(config_path, "cleanup", "--at", "2026-02-13T13:00:00Z")

    assert again.exit_code == 0
    assert sandbox.state.count("delete") == 24  # nothing left to delete: nothing sent


def test_cleanup_counts_an_analysis_already_gone_404_as_deleted(
    sandbox, config_path, ledger_path, invoke
):
    backfill_and_next_run(invoke, config_path)
    gone = row_named(ledger_path, f"{PREFIX}-{D}-0500-0600").analysis_id
    delete_on_server(sandbox, gone)

    result = invoke(config_path, "cleanup", "--at", "2026-02-13T12:00:00Z")

    assert result.exit_code == 0, result.stderr
    assert sandbox.state.count("delete", status=404) == 1
    assert row_named(ledger_path, f"{PREFIX}-{D}-0500-0600").state == "deleted"
    assert [row_named(ledger_path, n).state for n in day_names(D)] == ["deleted"] * 24


def test_a_refused_delete_fails_cleanup_and_the_next_cleanup_retries_it(
    sandbox, config_path, ledger_path, invoke
):
    backfill_and_next_run(invoke, config_path)
    sandbox.state.inject("delete", Fault("status", status=400))
    first = day_names(D)[0]

    result = invoke(config_path, "cleanup", "--at", "2026-02-13T12:00:00Z")

    assert result.exit_code == 1
    assert first in result.stderr
    assert "HTTP 400" in result.stderr
    assert "Traceback" not in result.stderr
    failed = row_named(ledger_path, first)
    assert failed.state == "delete_failed"
    assert "HTTP 400" in (failed.last_error or "")
    assert failed.analysis_id in sandbox.state.analyses
    assert [row_named(ledger_path, n).state for n in day_names(D)[1:]] == ["deleted"] * 23

    retried = invoke(config_path, "cleanup", "--at", "2026-02-13T23:00:00Z")

    assert retried.exit_code == 0, retried.stderr
    assert row_named(ledger_path, first).state == "deleted"
    assert failed.analysis_id in sandbox.state.deleted


def test_a_delete_failing_with_500_on_every_attempt_is_recorded_and_retried_next_night(
    sandbox, config_path, ledger_path, invoke
):
    backfill_and_next_run(invoke, config_path)
    sandbox.state.inject("delete", Fault("status", status=500), times=3)  # max_attempts = 3

    result = invoke(config_path, "cleanup", "--at", "2026-02-13T12:00:00Z")

    assert result.exit_code == 1
    assert "gave up after 3 attempts" in result.stderr
    assert row_named(ledger_path, day_names(D)[0]).state == "delete_failed"

    retried = invoke(config_path, "cleanup", "--at", "2026-02-13T23:00:00Z")

    assert retried.exit_code == 0
    assert row_named(ledger_path, day_names(D)[0]).state == "deleted"
    assert names_on_server(sandbox) == ["hourly-perf-report-2026-02-13-0000-0100"]


def test_cleanup_of_one_date_deletes_only_that_day(sandbox, config_path, ledger_path, invoke):
    for day, at in (("2026-02-11", "2026-02-12T00:30Z"), (D, "2026-02-13T00:30Z")):
        assert invoke(config_path, "backfill", "--date", day, "--at", at).exit_code == 0

    result = invoke(config_path, "cleanup", "--date", D, "--at", "2026-02-13T12:00Z")

    assert result.exit_code == 0
    assert sandbox.state.count("delete") == 24
    assert names_on_server(sandbox) == day_names("2026-02-11")
    states = {r.name: r.state for r in ledger_rows(ledger_path)}
    assert {states[n] for n in day_names(D)} == {"deleted"}
    assert {states[n] for n in day_names("2026-02-11")} == {"created"}


def test_cleanup_of_a_day_that_has_not_ended_is_refused_and_sends_nothing(
    sandbox, config_path, ledger_path, invoke
):
    assert invoke(config_path, "backfill", "--date", D, "--at", "2026-02-12T10:30Z").exit_code == 0
    before, ledger_bytes = sandbox.state.count(), files_snapshot(ledger_path)

    result = invoke(config_path, "cleanup", "--date", D, "--at", "2026-02-12T12:00Z")

    assert result.exit_code == 2
    assert f"day {D} has not ended" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert sandbox.state.count() == before
    assert files_snapshot(ledger_path) == ledger_bytes
    assert len(sandbox.state.analyses) == 10


def test_cleanup_by_id_deletes_those_ids_whether_in_the_ledger_or_not(
    sandbox, config_path, ledger_path, tmp_path, invoke
):
    assert invoke(config_path, "run", "--at", "2026-02-12T08:05:00Z").exit_code == 0
    ours = row_named(ledger_path, f"{PREFIX}-{D}-0700-0800").analysis_id
    other_config = tmp_path / "other.ini"
    other_config.write_text(config_text(sandbox.base_url, tmp_path / "other.sqlite3"))
    assert invoke(other_config, "run", "--at", "2026-02-12T10:05:00Z").exit_code == 0
    (foreign,) = set(sandbox.state.analyses) - {ours}
    assert invoke(config_path, "run", "--at", "2026-02-12T09:05:00Z").exit_code == 0

    result = invoke(
        config_path, "cleanup", "--id", ours, "--id", foreign, "--at", "2026-02-12T11:00Z"
    )

    assert result.exit_code == 0, result.stderr
    assert sandbox.state.deleted == {ours, foreign}
    assert names_on_server(sandbox) == [f"{PREFIX}-{D}-0800-0900"]
    assert row_named(ledger_path, f"{PREFIX}-{D}-0700-0800").state == "deleted"
    assert row_named(ledger_path, f"{PREFIX}-{D}-0800-0900").state == "created"
    assert len(ledger_rows(ledger_path)) == 2  # the foreign id added no row


# --- status -----------------------------------------------------------------------------------


def test_status_table_shows_every_window_of_the_day_including_missing_ones(
    sandbox, config_path, invoke
):
    assert invoke(config_path, "backfill", "--date", D, "--at", "2026-02-12T10:30Z").exit_code == 0

    result = invoke(config_path, "status", "--date", D, "--at", "2026-02-12T12:30Z")

    assert result.exit_code == 0
    header, *lines = result.stdout.strip().splitlines()
    assert header.split() == [
        "NAME",
        "START",
        "(UTC)",
        "END",
        "(UTC)",
        "ANALYSIS",
        "ID",
        "STATE",
        "LAST",
        "ERROR",
    ]
    assert len(lines) == 24
    assert [line.split()[0] for line in lines] == day_names(D)
    states = [line.split()[4] for line in lines]
    assert states == ["created"] * 10 + ["missing"] * 2 + ["upcoming"] * 12
    assert all(aid in result.stdout for aid in sandbox.state.analyses)


def test_status_json_lists_every_window_with_the_documented_keys(sandbox, config_path, invoke):
    assert invoke(config_path, "run", "--at", "2026-02-12T08:05:00Z").exit_code == 0
    (analysis_id,) = sandbox.state.analyses

    result = invoke(config_path, "status", "--date", D, "--json", "--at", "2026-02-12T08:30Z")

    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    assert len(rows) == 24
    for row in rows:
        assert {"name", "window_start", "window_end", "analysis_id", "state"} <= row.keys()
    created = rows[7]
    assert created == {
        **created,
        "name": "hourly-perf-report-2026-02-12-0700-0800",
        "window_start": "2026-02-12T07:00:00Z",
        "window_end": "2026-02-12T08:00:00Z",
        "analysis_id": analysis_id,
        "state": "created",
    }
    assert rows[0]["state"] == "missing"
    assert rows[0]["analysis_id"] is None
    assert rows[23]["window_end"] == "2026-02-13T00:00:00Z"
    assert rows[23]["state"] == "upcoming"


def test_status_of_a_day_without_a_ledger_shows_all_missing_and_creates_no_file(
    sandbox, config_path, ledger_path, invoke
):
    result = invoke(config_path, "status", "--date", D, "--json", "--at", "2026-02-13T01:00Z")

    assert result.exit_code == 0
    assert {row["state"] for row in json.loads(result.stdout)} == {"missing"}
    assert not ledger_path.exists()
    assert not ledger_path.parent.exists()


def test_status_max_age_is_ok_when_the_last_hours_were_created(sandbox, config_path, invoke):
    assert invoke(config_path, "backfill", "--date", D, "--at", "2026-02-12T10:30Z").exit_code == 0

    result = invoke(config_path, "status", "--max-age", "2h", "--at", "2026-02-12T10:30Z")

    assert result.exit_code == 0
    assert result.stdout.startswith("OK")
    assert "CRITICAL" not in result.stdout


def test_status_max_age_is_critical_when_recent_hours_are_missing(sandbox, config_path, invoke):
    assert invoke(config_path, "backfill", "--date", D, "--at", "2026-02-12T10:30Z").exit_code == 0

    result = invoke(config_path, "status", "--max-age", "2h", "--at", "2026-02-12T14:30Z")

    assert result.exit_code == 1
    assert result.stdout.startswith("CRITICAL")
    assert f"{PREFIX}-{D}-1300-1400 is missing" in result.stdout


def test_status_max_age_is_critical_when_the_last_hour_failed(sandbox, config_path, invoke):
    assert invoke(config_path, "backfill", "--date", D, "--at", "2026-02-12T10:30Z").exit_code == 0
    sandbox.state.inject("create", Fault("status", status=400))
    assert invoke(config_path, "run", "--at", "2026-02-12T11:05Z").exit_code == 1

    result = invoke(config_path, "status", "--max-age", "2h", "--at", "2026-02-12T11:30Z")

    assert result.exit_code == 1
    assert "CRITICAL" in result.stdout
    assert f"{PREFIX}-{D}-1000-1100 is failed" in result.stdout


# --- dry run ----------------------------------------------------------------------------------


def planned_requests(stdout: str) -> list[tuple[str, str, str]]:
    """(method, url, body) of each request block a dry run printed."""
    found = []
    for block in stdout.strip().split("\n\n"):
        first, _, body = block.strip().partition("\n")
        method, url = first.split(" ", 1)
        found.append((method, url, body.strip()))
    return found


def test_run_dry_run_prints_the_requests_and_sends_and_writes_nothing(
    sandbox, config_path, ledger_path, invoke
):
    result = invoke(config_path, "run", "--at", "2026-02-12T08:05:00Z", "--dry-run")

    assert result.exit_code == 0
    assert sandbox.state.count() == 0
    assert not ledger_path.exists()
    assert not ledger_path.parent.exists()
    token, create = planned_requests(result.stdout)
    assert token[:2] == ("POST", sandbox.base_url + "/tenancy/auth/oauth/token")
    assert "client_secret=***" in token[2]
    assert f"client_id={CLIENT_ID}" in token[2]
    assert create[:2] == ("POST", f"{sandbox.base_url}/reporting/api/v3/tenants/{TENANT}/analyses")
    body = json.loads(create[2])
    assert body["name"] == "hourly-perf-report-2026-02-12-0700-0800"
    assert body["parameters"]["startTime"] == "2026-02-12T07:00:00.000Z"
    assert CLIENT_SECRET not in result.stdout + result.stderr


def test_run_dry_run_of_a_window_already_created_plans_nothing(
    sandbox, config_path, ledger_path, invoke
):
    assert invoke(config_path, "run", "--at", "2026-02-12T08:05:00Z").exit_code == 0
    before, ledger_bytes = sandbox.state.count(), files_snapshot(ledger_path)

    result = invoke(config_path, "run", "--at", "2026-02-12T08:05:00Z", "--dry-run")

    assert result.exit_code == 0
    assert result.stdout == ""
    assert sandbox.state.count() == before
    assert files_snapshot(ledger_path) == ledger_bytes


def test_backfill_dry_run_plans_only_the_missing_windows_and_changes_nothing(
    sandbox, config_path, ledger_path, invoke
):
    assert invoke(config_path, "run", "--at", "2026-02-12T08:05:00Z").exit_code == 0
    before, ledger_bytes = sandbox.state.count(), files_snapshot(ledger_path)

    result = invoke(config_path, "backfill", "--date", D, "--at", "2026-02-13T01:00Z", "--dry-run")

    assert result.exit_code == 0
    assert sandbox.state.count() == before
    assert files_snapshot(ledger_path) == ledger_bytes
    assert result.stdout.rstrip().endswith("backfill: 1 exists, 23 planned, 0 failed")
    blocks = planned_requests(result.stdout.rstrip().rsplit("\n", 1)[0])
    assert [b[0] for b in blocks] == ["POST"] * 24  # one token, 23 creates
    assert "client_secret=***" in blocks[0][2]
    planned = sorted(json.loads(body)["name"] for _, _, body in blocks[1:])
    assert planned == [n for n in day_names(D) if not n.endswith("0700-0800")]
    assert CLIENT_SECRET not in result.stdout + result.stderr


def test_backfill_dry_run_without_a_ledger_creates_no_file(
    sandbox, config_path, ledger_path, invoke
):
    result = invoke(config_path, "backfill", "--date", D, "--at", "2026-02-12T03:10Z", "--dry-run")

    assert result.exit_code == 0
    assert "backfill: 3 planned, 0 failed" in result.stdout
    assert sandbox.state.count() == 0
    assert not ledger_path.parent.exists()


def test_cleanup_dry_run_prints_each_delete_and_deletes_nothing(
    sandbox, config_path, ledger_path, invoke
):
    backfill_and_next_run(invoke, config_path)
    before, ledger_bytes = sandbox.state.count(), files_snapshot(ledger_path)
    d_ids = {r.analysis_id for r in ledger_rows(ledger_path) if r.name.startswith(f"{PREFIX}-{D}")}

    result = invoke(config_path, "cleanup", "--at", "2026-02-13T12:00Z", "--dry-run")

    assert result.exit_code == 0
    assert sandbox.state.count() == before
    assert files_snapshot(ledger_path) == ledger_bytes
    token, *deletes = planned_requests(result.stdout)
    assert token[0] == "POST"
    assert "client_secret=***" in token[2]
    prefix = f"{sandbox.base_url}/reporting/api/v3/tenants/{TENANT}/analyses/"
    assert {d[0] for d in deletes} == {"DELETE"}
    assert {d[1].removeprefix(prefix) for d in deletes} == d_ids
    assert len(sandbox.state.analyses) == 25
    assert {r.state for r in ledger_rows(ledger_path)} == {"created"}


# --- authentication failures stop the job -------------------------------------------------------


def test_a_backfill_with_refused_credentials_stops_at_once_and_says_what_was_left(
    sandbox, make_config, ledger_path, invoke
):
    config = make_config(sandbox, opsramp={"client_secret": "not-the-secret"})

    result = invoke(config, "backfill", "--date", D, "--at", "2026-02-12T03:05Z")

    assert result.exit_code == 1
    assert result.stdout.strip() == f"backfill: 1 failed ({PREFIX}-{D}-0000-0100)"
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1
    assert "rejected the client credentials" in line
    assert "2 windows not attempted" in line
    assert sandbox.state.count("token") == 1  # a 401 on the token is never retried
    assert sandbox.state.count("create") == 0
    (row,) = ledger_rows(ledger_path)
    assert (row.name, row.state) == (f"{PREFIX}-{D}-0000-0100", "failed")
    assert "rejected the client credentials" in (row.last_error or "")


def test_a_cleanup_whose_fresh_token_is_refused_stops_and_the_next_night_finishes(
    sandbox, config_path, ledger_path, invoke
):
    assert invoke(config_path, "backfill", "--date", D, "--at", "2026-02-12T03:05Z").exit_code == 0
    sandbox.state.inject("delete", Fault("status", status=401), times=2)
    first, *rest = day_names(D, range(3))

    result = invoke(config_path, "cleanup", "--at", "2026-02-13T01:00Z")

    assert result.exit_code == 1
    assert "refused a freshly issued token" in result.stderr
    assert "2 analyses not attempted" in result.stderr
    assert sandbox.state.count("delete") == 2
    assert row_named(ledger_path, first).state == "delete_failed"
    assert [row_named(ledger_path, n).state for n in rest] == ["created", "created"]

    again = invoke(config_path, "cleanup", "--at", "2026-02-14T01:00Z")

    assert again.exit_code == 0, again.stderr
    assert sandbox.state.analyses == {}
    assert [row_named(ledger_path, n).state for n in day_names(D, range(3))] == ["deleted"] * 3


def test_status_max_age_keeps_flagging_a_failed_window_until_it_is_fixed(
    sandbox, config_path, invoke
):
    sandbox.state.inject("create", Fault("status", status=400))
    assert invoke(config_path, "run", "--at", "2026-02-12T08:05:00Z").exit_code == 1
    for hour in range(9, 20):
        assert invoke(config_path, "run", "--at", f"2026-02-12T{hour:02d}:05:00Z").exit_code == 0

    late = invoke(config_path, "status", "--max-age", "2h", "--at", "2026-02-12T19:30:00Z")

    assert late.exit_code == 1
    assert late.stdout.startswith("CRITICAL: hourly-perf-report-2026-02-12-0700-0800 is failed")
    assert "HTTP 400" in late.stdout

    fixed = invoke(config_path, "backfill", "--date", D, "--at", "2026-02-12T19:30:00Z")
    assert fixed.exit_code == 0
    healthy = invoke(
        config_path, "status", "--max-age", "2h", "--json", "--at", "2026-02-12T19:30:00Z"
    )
    assert healthy.exit_code == 0
    assert json.loads(healthy.stdout) == {"ok": True, "problems": []}


def test_status_needs_no_client_secret(sandbox, make_config, invoke):
    config = make_config(sandbox, opsramp={"client_secret": None})
    assert invoke(config, "run", "--at", "2026-02-12T08:05:00Z").exit_code == 2  # run does

    result = invoke(config, "status", "--date", D, "--json", "--at", "2026-02-12T08:30Z")

    assert result.exit_code == 0, result.stderr
    assert len(json.loads(result.stdout)) == 24

"""Real processes racing each other on one ledger, as cron overlaps make them.

Each test starts ``python -m hourly_report`` processes (``start_process``), so
locking, WAL set-up and claims are exercised across processes, not threads.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from datetime import date, datetime, timedelta, timezone

import pytest

from hourly_report.sandbox import Fault
from tests.conftest import ledger_rows, run_process, start_process

pytestmark = pytest.mark.slow

UTC = timezone.utc
D = "2026-02-12"


def finish(processes: list[subprocess.Popen[str]], timeout: float = 60) -> list[tuple[int, str]]:
    """Wait for every process; (exit status, stderr) of each."""
    results = []
    for process in processes:
        _, stderr = process.communicate(timeout=timeout)
        results.append((process.returncode, stderr))
    return results


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_six_runs_started_together_on_a_fresh_ledger_create_one_analysis(
    sandbox, config_path, ledger_path
):
    sandbox.state.set_latency(request=0.02)  # the create is in flight while others claim
    assert not ledger_path.exists()

    at = "2026-02-12T08:05:00Z"
    results = finish([start_process(config_path, "run", "--at", at) for _ in range(6)])

    assert [code for code, _ in results] == [0] * 6, results
    assert all("locked" not in err and "Traceback" not in err for _, err in results), results
    assert sandbox.state.count("create") == 1
    assert sandbox.state.names == ["hourly-perf-report-2026-02-12-0700-0800"]
    (row,) = ledger_rows(ledger_path)
    assert row.state == "created"
    assert row.analysis_id in sandbox.state.analyses


def test_six_runs_started_together_create_one_analysis_each_hour_repeatedly(
    sandbox, config_path, ledger_path
):
    sandbox.state.set_latency(request=0.01)
    hours = [9, 10, 11, 12]

    for hour in hours:
        at = f"{D}T{hour:02d}:05:00Z"
        results = finish([start_process(config_path, "run", "--at", at) for _ in range(6)])
        assert [code for code, _ in results] == [0] * 6, (at, results)
        assert all("locked" not in err for _, err in results), results

    assert sandbox.state.count("create") == len(hours)
    assert sandbox.state.duplicate_names() == []
    rows = ledger_rows(ledger_path)
    assert [r.state for r in rows] == ["created"] * len(hours)
    assert {r.analysis_id for r in rows} == set(sandbox.state.analyses)


def test_a_backfill_killed_mid_way_is_completed_without_resending_blindly(
    sandbox, config_path, ledger_path
):
    sandbox.state.set_latency(request=0.05)
    args = ("backfill", "--date", D, "--at", "2026-02-13T01:00Z")
    process = start_process(config_path, *args)
    deadline = time.monotonic() + 30
    while sandbox.state.count("create") < 6 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert 6 <= len(sandbox.state.names) < 24

    shown = run_process(config_path, "status", "--date", D, "--json", "--at", "2026-02-13T01:00Z")
    assert shown.returncode == 0, shown.stderr
    assert "locked" not in shown.stderr
    states = [row["state"] for row in json.loads(shown.stdout)]
    assert len(states) == 24
    assert states.count("created") >= 5
    assert set(states) <= {"created", "pending", "missing"}
    assert states.count("pending") <= 1  # the create in flight when it was killed

    sandbox.state.set_latency(request=0.0)
    sent_before = sandbox.state.count("create")
    done = run_process(config_path, *args)

    # Every window is created except the one in flight at the kill (if any): its
    # outcome is unknown, so it is held, not re-sent blindly.
    held = [r for r in ledger_rows(ledger_path) if r.state == "unknown"]
    assert len(held) == states.count("pending")
    assert sandbox.state.count("create") == sent_before + states.count("missing")
    assert "locked" not in done.stderr
    if held:
        assert done.returncode == 1
        assert f"{held[0].name} not re-sent" in done.stderr
        assert "--retry-unknown" in done.stderr
    else:
        assert done.returncode == 0, done.stderr

    confirmed = run_process(config_path, *args, "--retry-unknown")

    assert confirmed.returncode == 0, confirmed.stderr
    rows = ledger_rows(ledger_path)
    assert [r.state for r in rows] == ["created"] * 24
    assert {r.analysis_id for r in rows} <= set(sandbox.state.analyses)
    assert 24 <= sandbox.state.count("create") <= 25


def test_a_run_racing_a_cleanup_loses_no_analysis_and_never_sees_a_locked_ledger(
    sandbox, config_path, ledger_path, invoke
):
    sandbox.state.set_latency(request=0.005)
    first = date(2026, 1, 1)
    for offset in range(10):
        day = first + timedelta(days=offset)
        next_midnight = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
        # The day's hours up to 23:00; the run below creates 23:00-24:00 during the cleanup.
        before_last_hour = iso(next_midnight - timedelta(minutes=30))
        filled = invoke(
            config_path, "backfill", "--date", day.isoformat(), "--at", before_last_hour
        )
        assert filled.exit_code == 0, filled.stderr
        at = iso(next_midnight + timedelta(minutes=5))

        results = finish(
            [
                start_process(config_path, "run", "--at", at),
                start_process(config_path, "cleanup", "--at", at),
            ]
        )

        assert [code for code, _ in results] == [0, 0], (day, results)
        assert all("locked" not in err and "Traceback" not in err for _, err in results), results

    rows = {r.analysis_id: r for r in ledger_rows(ledger_path)}
    created_on_server = set(sandbox.state.analyses) | sandbox.state.deleted
    assert sandbox.state.count("create") == 240
    assert set(rows) == created_on_server  # every analysis ever created is in the ledger
    for analysis_id in sandbox.state.analyses:
        assert rows[analysis_id].state == "created"
    for analysis_id in sandbox.state.deleted:
        assert rows[analysis_id].state == "deleted"
    # Everything but the last day's 23:00 hour may remain: each cleanup ran after its day ended.
    assert len(sandbox.state.analyses) <= 1


def test_sigterm_mid_create_records_the_window_unknown_and_says_so(
    sandbox, config_path, ledger_path
):
    sandbox.state.inject("create", Fault("slow", delay=3.0))
    process = start_process(config_path, "run", "--at", f"{D}T08:05:00Z")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if ledger_path.exists() and [r.state for r in ledger_rows(ledger_path)] == ["pending"]:
            break
        time.sleep(0.02)
    time.sleep(0.3)  # the create is on the wire, waiting for the slow answer
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)

    assert process.returncode == 143
    assert stderr.strip().splitlines() == [
        "hourly-report: error: terminated by SIGTERM (systemd stop or timeout?); a window "
        "being created at that moment is recorded as unknown (see 'hourly-report status')"
    ]
    [row] = ledger_rows(ledger_path)
    assert (row.state, row.last_error) == ("unknown", "interrupted while creating: outcome unknown")


def test_a_run_killed_mid_create_is_flagged_by_the_next_hourly_run_and_by_monitoring(
    sandbox, config_path, ledger_path
):
    sandbox.state.inject("create", Fault("slow", delay=2.0, act=True))
    process = start_process(config_path, "run", "--at", f"{D}T06:05:00Z")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if ledger_path.exists() and [r.state for r in ledger_rows(ledger_path)] == ["pending"]:
            break
        time.sleep(0.02)
    time.sleep(0.3)  # the create is on the wire
    os.kill(process.pid, signal.SIGKILL)
    process.communicate(timeout=30)

    later = run_process(config_path, "run", "--at", f"{D}T07:05:00Z")

    assert later.returncode == 0
    [warning] = later.stderr.strip().splitlines()
    assert "hourly-perf-report-2026-02-12-0500-0600 was being created by" in warning
    assert "stopped mid-request: outcome unknown" in warning
    assert "'hourly-report run --at 2026-02-12T06:00:00Z --retry-unknown'" in warning
    assert [r.state for r in ledger_rows(ledger_path)] == ["unknown", "created"]
    for hour in (8, 9, 10):
        assert run_process(config_path, "run", "--at", f"{D}T{hour:02d}:05:00Z").returncode == 0
    check = run_process(config_path, "status", "--max-age", "2h", "--at", f"{D}T10:30:00Z")
    assert check.returncode == 1
    assert "hourly-perf-report-2026-02-12-0500-0600 is unknown" in check.stdout

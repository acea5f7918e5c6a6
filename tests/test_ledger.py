"""The SQLite ledger: files, migrations, claims, records, queries, processes."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from hourly_report.errors import LedgerError
from hourly_report.ledger import SCHEMA_VERSION, ClaimStatus, Ledger
from tests.conftest import without_root_override

ROOT = Path(__file__).resolve().parent.parent
APPLIED = [(1, "create_windows"), (2, "unknown_state")]
WORKER = Path(__file__).resolve().parent / "ledger_worker.py"
UTC = timezone.utc
DAY = datetime(2026, 2, 12, tzinfo=UTC)
NOW = datetime(2026, 2, 13, 1, 5, tzinfo=UTC)
LEASE = 600.0
TENANT = "tenant-a"
NOT_SQLITE = "is not a SQLite database; it was left untouched"


@dataclass(frozen=True)
class Win:
    start: datetime
    end: datetime
    name: str


def hour(index: int) -> Win:
    start = DAY + timedelta(hours=index)
    return Win(start, start + timedelta(hours=1), f"report-{index:02d}")


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "ledger.sqlite3"


@pytest.fixture
def ledger(db: Path) -> Iterator[Ledger]:
    with Ledger.open(db) as opened:
        yield opened


def set_pending(ledger: Ledger, index: int, owner: str, updated_at: datetime) -> None:
    """Put a pending claim by ``owner`` on window ``index``, as another process would."""
    ledger.claim(TENANT, hour(index), now=updated_at, lease_seconds=LEASE)
    stamp = updated_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    with ledger.transaction() as conn:
        conn.execute(
            "UPDATE windows SET owner = ?, updated_at = ? WHERE window_start = ?",
            (owner, stamp, hour(index).start.strftime("%Y-%m-%dT%H:%M:%SZ")),
        )


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def snapshot(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), path.stat().st_mtime_ns


def migrations(path: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT version, name FROM migrations ORDER BY version").fetchall()


# --- files -------------------------------------------------------------------------


def test_open_creates_private_directory_and_owner_only_files_whatever_the_umask(db: Path) -> None:
    old_umask = os.umask(0)
    try:
        with Ledger.open(db) as ledger:
            ledger.claim(TENANT, hour(0), now=NOW, lease_seconds=LEASE)
            sidecars = [Path(f"{db}-wal"), Path(f"{db}-shm")]
            modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [db, *sidecars]}
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700
    assert modes == {p.name: 0o600 for p in [db, *sidecars]}


def test_open_keeps_an_existing_directory_mode(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    Ledger.open(tmp_path / "ledger.sqlite3").close()
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o755


@pytest.mark.parametrize("content", [b"[opsramp]\nbase_url = https://x\n", b"x"])
@pytest.mark.parametrize("read_only", [False, True])
def test_a_file_that_is_not_sqlite_is_refused_and_left_byte_identical(
    db: Path, content: bytes, read_only: bool
) -> None:
    db.parent.mkdir()
    db.write_bytes(content)
    before = snapshot(db)
    with pytest.raises(LedgerError, match=NOT_SQLITE) as caught:
        Ledger.open(db, read_only=read_only)
    assert str(db) in str(caught.value)
    assert "set [ledger] path to another file" in str(caught.value)
    assert snapshot(db) == before
    assert sorted(db.parent.iterdir()) == [db]


@pytest.mark.parametrize("read_only", [False, True])
def test_another_applications_sqlite_database_is_refused_untouched(
    db: Path, read_only: bool
) -> None:
    db.parent.mkdir()
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER)")
    conn.close()
    before = snapshot(db)
    with pytest.raises(LedgerError, match="not an hourly-report ledger"):
        Ledger.open(db, read_only=read_only)
    assert snapshot(db) == before


def _valid_database_bytes(path: Path) -> bytes:
    with Ledger.open(path) as ledger:
        ledger.claim(TENANT, hour(0), now=NOW, lease_seconds=LEASE)
    return path.read_bytes()


@pytest.mark.parametrize("damage", ["truncated", "garbage_after_header"])
@pytest.mark.parametrize("read_only", [False, True])
def test_a_corrupt_sqlite_file_raises_ledger_error_naming_the_path(
    tmp_path: Path, db: Path, damage: str, read_only: bool
) -> None:
    good = _valid_database_bytes(tmp_path / "good.sqlite3")
    db.parent.mkdir()
    tail = b"" if damage == "truncated" else os.urandom(3 * 4096)
    db.write_bytes(good[:100] + tail)
    with pytest.raises(LedgerError, match=r"malformed|not a database") as caught:
        Ledger.open(db, read_only=read_only)
    assert str(db) in str(caught.value)


def test_a_missing_parent_that_cannot_be_created_is_a_ledger_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with pytest.raises(LedgerError, match=r"cannot create ledger directory .*not-a-dir"):
        Ledger.open(blocker / "ledger.sqlite3")


_PERMISSION_SCRIPT = """
import sys
from pathlib import Path
from hourly_report.errors import LedgerError
from hourly_report.ledger import Ledger

db = Path(sys.argv[1])
Ledger.open(db).close()
db.chmod(0o400)
with Ledger.open(db) as ledger:
    try:
        ledger.check_writable()
    except LedgerError as err:
        print("WRITABLE-ERROR", err)
db.parent.chmod(0o500)
try:
    Ledger.open(db.parent / "other.sqlite3")
except LedgerError as err:
    print("OPEN-ERROR", err)
finally:
    db.parent.chmod(0o700)
"""


def test_permission_problems_are_ledger_errors_naming_the_path(tmp_path: Path) -> None:
    db = tmp_path / "db" / "ledger.sqlite3"
    db.parent.mkdir()
    done = subprocess.run(
        [*without_root_override(), sys.executable, "-c", _PERMISSION_SCRIPT, str(db)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    writable = [line for line in lines if line.startswith("WRITABLE-ERROR")]
    opening = [line for line in lines if line.startswith("OPEN-ERROR")]
    assert writable, done.stdout
    assert "not writable" in writable[0]
    assert str(db) in writable[0]
    assert opening, done.stdout
    assert "Permission denied" in opening[0]
    assert "other.sqlite3" in opening[0]


# --- migrations --------------------------------------------------------------------


def test_migrations_are_recorded_once_and_reopening_is_idempotent(db: Path) -> None:
    for _ in range(3):
        Ledger.open(db).close()
    assert migrations(db) == APPLIED
    assert SCHEMA_VERSION == 2


@pytest.mark.parametrize("read_only", [False, True])
def test_a_ledger_from_a_newer_hourly_report_is_refused(db: Path, read_only: bool) -> None:
    with Ledger.open(db) as ledger, ledger.transaction() as conn:
        conn.execute("INSERT INTO migrations VALUES (99, 'future', '2030-01-01T00:00:00Z')")
    with pytest.raises(LedgerError, match="written by a newer hourly-report"):
        Ledger.open(db, read_only=read_only)
    assert migrations(db)[-1] == (99, "future")


def test_read_only_open_of_an_older_schema_asks_for_an_upgrade(db: Path) -> None:
    db.parent.mkdir()
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE migrations (version INTEGER PRIMARY KEY, name, applied_at)")
    conn.close()
    with pytest.raises(LedgerError, match="run any non-dry-run command once to upgrade"):
        Ledger.open(db, read_only=True)
    with Ledger.open(db) as upgraded:
        assert upgraded.rows_between(TENANT, DAY, NOW) == []
    assert migrations(db) == APPLIED


def test_transaction_rolls_back_when_the_block_raises(ledger: Ledger) -> None:
    def write_then_fail() -> None:
        with ledger.transaction() as conn:
            conn.execute("INSERT INTO migrations VALUES (50, 'half-done', 'x')")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        write_then_fail()
    assert migrations(ledger.path) == APPLIED


# --- read-only ---------------------------------------------------------------------


def test_read_only_on_a_missing_file_creates_nothing_on_disk(tmp_path: Path) -> None:
    area = tmp_path / "area"
    area.mkdir()
    path = area / "absent" / "ledger.sqlite3"
    with Ledger.open(path, read_only=True) as ledger:
        assert ledger.rows_between(TENANT, DAY, NOW) == []
        assert ledger.last_created(TENANT) is None
        with pytest.raises(LedgerError, match="read-only"):
            ledger.claim(TENANT, hour(0), now=NOW, lease_seconds=LEASE)
        with pytest.raises(LedgerError, match="read-only"):
            ledger.check_writable()
    assert list(area.iterdir()) == []


def test_read_only_on_an_empty_file_reads_as_empty_and_leaves_it_empty(db: Path) -> None:
    db.parent.mkdir()
    db.touch()
    with Ledger.open(db, read_only=True) as ledger:
        assert ledger.rows_between(TENANT, DAY, NOW) == []
    assert db.read_bytes() == b""


def test_read_only_reads_rows_and_never_writes_the_database(tmp_path: Path) -> None:
    path = tmp_path / "odd dir #1?" / "ledger.sqlite3"
    with Ledger.open(path) as writer:
        writer.claim(TENANT, hour(3), now=NOW, lease_seconds=LEASE)
        writer.record_created(TENANT, hour(3).start, "an-3", now=NOW)
    before = snapshot(path)
    with Ledger.open(path, read_only=True) as reader:
        assert [row.analysis_id for row in reader.rows_between(TENANT, DAY, NOW)] == ["an-3"]
        with pytest.raises(LedgerError, match="read-only"):
            reader.record_deleted(TENANT, "an-3", now=NOW)
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reader._conn.execute("DELETE FROM windows")  # bypassing the guard: sqlite refuses
    assert snapshot(path) == before


# --- claims --------------------------------------------------------------------------


def test_claiming_a_new_window_inserts_a_pending_row_owned_by_this_process(ledger: Ledger) -> None:
    claim = ledger.claim(TENANT, hour(7), now=NOW, lease_seconds=LEASE)
    assert claim.status is ClaimStatus.CLAIMED
    assert not claim.recovered
    row = claim.row
    assert (row.state, row.attempts, row.name) == ("pending", 1, "report-07")
    assert (row.window_start, row.window_end) == (hour(7).start, hour(7).end)
    assert row.owner == f"{socket.gethostname()}:{os.getpid()}"
    assert row.created_at == row.updated_at == NOW
    assert row.window_start.tzinfo is not None


@pytest.mark.parametrize("final", ["created", "deleted", "delete_failed"])
def test_a_window_with_an_analysis_is_done(ledger: Ledger, final: str) -> None:
    ledger.claim(TENANT, hour(1), now=NOW, lease_seconds=LEASE)
    ledger.record_created(TENANT, hour(1).start, "an-1", now=NOW)
    if final == "deleted":
        ledger.record_deleted(TENANT, "an-1", now=NOW)
    elif final == "delete_failed":
        ledger.record_delete_failed(TENANT, "an-1", "HTTP 500", now=NOW)
    claim = ledger.claim(TENANT, hour(1), now=NOW, lease_seconds=LEASE)
    assert (claim.status, claim.row.state, claim.row.attempts) == (ClaimStatus.DONE, final, 1)


def test_a_failed_window_is_claimed_again_keeping_its_last_error(ledger: Ledger) -> None:
    ledger.claim(TENANT, hour(2), now=NOW, lease_seconds=LEASE)
    ledger.record_failed(TENANT, hour(2).start, "read timeout", now=NOW)
    later = NOW + timedelta(hours=1)
    claim = ledger.claim(TENANT, hour(2), now=later, lease_seconds=LEASE)
    assert (claim.status, claim.recovered) == (ClaimStatus.CLAIMED, False)
    assert (claim.row.state, claim.row.attempts) == ("pending", 2)
    assert (claim.row.last_error, claim.row.updated_at) == ("read timeout", later)
    assert claim.row.created_at == NOW


@pytest.mark.parametrize(
    ("owner", "age_seconds"),
    [
        pytest.param(f"{socket.gethostname()}:{os.getppid()}", 0, id="live-pid-here"),
        pytest.param("other-host:12345", 0, id="other-host-fresh"),
        pytest.param("other-host:12345", LEASE - 1, id="other-host-lease-not-yet-over"),
    ],
)
def test_a_fresh_claim_by_another_live_process_is_busy(
    ledger: Ledger, owner: str, age_seconds: float
) -> None:
    set_pending(ledger, 4, owner, NOW - timedelta(seconds=age_seconds))
    claim = ledger.claim(TENANT, hour(4), now=NOW, lease_seconds=LEASE)
    assert claim.status is ClaimStatus.BUSY
    assert (claim.row.owner, claim.row.attempts) == (owner, 1)


@pytest.mark.parametrize(
    ("owner", "age_seconds"),
    [
        pytest.param(f"{socket.gethostname()}:{dead_pid()}", 0, id="dead-pid-here"),
        pytest.param("other-host:12345", LEASE, id="lease-just-over"),
        pytest.param(f"{socket.gethostname()}:{os.getppid()}", LEASE + 60, id="live-but-expired"),
    ],
)
def test_a_stale_claim_is_held_as_unknown_and_retried_only_when_asked(
    ledger: Ledger, owner: str, age_seconds: float
) -> None:
    set_pending(ledger, 5, owner, NOW - timedelta(seconds=age_seconds))

    held = ledger.claim(TENANT, hour(5), now=NOW, lease_seconds=LEASE)
    assert (held.status, held.recovered) == (ClaimStatus.HELD, True)
    assert (held.row.state, held.row.owner, held.row.attempts) == ("unknown", None, 1)
    assert held.row.last_error == (
        f"the process that was creating it ({owner}) stopped mid-request; outcome unknown"
    )
    again = ledger.claim(TENANT, hour(5), now=NOW, lease_seconds=LEASE)
    assert (again.status, again.recovered) == (ClaimStatus.HELD, False)

    retried = ledger.claim(TENANT, hour(5), now=NOW, lease_seconds=LEASE, retry_unknown=True)
    assert retried.status is ClaimStatus.CLAIMED
    assert retried.row.owner == f"{socket.gethostname()}:{os.getpid()}"
    assert (retried.row.state, retried.row.attempts, retried.row.updated_at) == (
        "pending",
        2,
        NOW,
    )


def test_a_pending_claim_of_this_very_process_counts_as_interrupted(ledger: Ledger) -> None:
    ledger.claim(TENANT, hour(6), now=NOW, lease_seconds=LEASE)
    again = ledger.claim(TENANT, hour(6), now=NOW, lease_seconds=LEASE)
    assert (again.status, again.recovered, again.row.state) == (ClaimStatus.HELD, True, "unknown")
    retried = ledger.claim(TENANT, hour(6), now=NOW, lease_seconds=LEASE, retry_unknown=True)
    assert (retried.status, retried.row.attempts) == (ClaimStatus.CLAIMED, 2)


def test_a_ledger_removed_during_a_run_is_not_written_to(db: Path) -> None:
    with Ledger.open(db) as ledger:
        ledger.claim(TENANT, hour(7), now=NOW, lease_seconds=LEASE)
        db.unlink()
        with pytest.raises(LedgerError, match="was removed or replaced while this run"):
            ledger.record_created(TENANT, hour(7).start, "a-7", now=NOW)


def test_a_ledger_path_that_is_a_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="is a directory; set \\[ledger\\] path to a file"):
        Ledger.open(tmp_path)


def test_a_ledger_under_a_regular_file_names_the_file(tmp_path: Path) -> None:
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    with pytest.raises(LedgerError, match=f"{blocker} is not a directory"):
        Ledger.open(blocker / "sub" / "ledger.sqlite3")


def test_tenants_do_not_share_windows(ledger: Ledger) -> None:
    ledger.claim("tenant-b", hour(8), now=NOW, lease_seconds=LEASE)
    ledger.record_created("tenant-b", hour(8).start, "b-8", now=NOW)
    claim = ledger.claim(TENANT, hour(8), now=NOW, lease_seconds=LEASE)
    assert claim.status is ClaimStatus.CLAIMED


def test_naive_datetimes_are_refused(ledger: Ledger) -> None:
    naive = Win(datetime(2026, 2, 12, 7), datetime(2026, 2, 12, 8), "naive")
    with pytest.raises(ValueError, match="aware"):
        ledger.claim(TENANT, naive, now=NOW, lease_seconds=LEASE)


def test_times_in_another_zone_are_stored_as_utc(ledger: Ledger) -> None:
    plus_two = timezone(timedelta(hours=2))
    window = Win(hour(9).start.astimezone(plus_two), hour(9).end.astimezone(plus_two), "tz")
    ledger.claim(TENANT, window, now=NOW, lease_seconds=LEASE)
    stored = ledger.rows_between(TENANT, hour(9).start, hour(10).start)
    assert [row.window_start for row in stored] == [hour(9).start]
    assert stored[0].window_start.utcoffset() == timedelta(0)


# --- records ---------------------------------------------------------------------------


def _claimed(ledger: Ledger, index: int) -> None:
    ledger.claim(TENANT, hour(index), now=NOW, lease_seconds=LEASE)


def test_record_created_stores_the_analysis_and_clears_owner_and_error(ledger: Ledger) -> None:
    _claimed(ledger, 1)
    ledger.record_failed(TENANT, hour(1).start, "HTTP 503", now=NOW)
    _claimed(ledger, 1)
    later = NOW + timedelta(minutes=1)
    ledger.record_created(TENANT, hour(1).start, "an-1", now=later)
    row = ledger.row_for_analysis(TENANT, "an-1")
    assert row is not None
    assert (row.state, row.analysis_id, row.last_error, row.owner) == (
        "created",
        "an-1",
        None,
        None,
    )
    assert (row.updated_at, row.attempts) == (later, 2)


def test_record_created_twice_with_the_same_id_is_harmless(ledger: Ledger) -> None:
    _claimed(ledger, 1)
    ledger.record_created(TENANT, hour(1).start, "an-1", now=NOW)
    ledger.record_created(TENANT, hour(1).start, "an-1", now=NOW)
    assert [r.analysis_id for r in ledger.rows_between(TENANT, DAY, NOW)] == ["an-1"]


def test_a_second_analysis_for_a_window_is_refused_with_a_cleanup_hint(ledger: Ledger) -> None:
    _claimed(ledger, 1)
    ledger.record_created(TENANT, hour(1).start, "an-1", now=NOW)
    with pytest.raises(LedgerError, match=r"already has analysis an-1.*cleanup --id an-dup"):
        ledger.record_created(TENANT, hour(1).start, "an-dup", now=NOW)
    assert ledger.row_for_analysis(TENANT, "an-dup") is None


def test_recording_a_window_never_claimed_is_an_error(ledger: Ledger) -> None:
    with pytest.raises(LedgerError, match="no row"):
        ledger.record_created(TENANT, hour(1).start, "an-1", now=NOW)
    with pytest.raises(LedgerError, match="no row"):
        ledger.record_failed(TENANT, hour(1).start, "boom", now=NOW)


def test_record_failed_truncates_the_error_and_releases_the_claim(ledger: Ledger) -> None:
    _claimed(ledger, 1)
    ledger.record_failed(TENANT, hour(1).start, "x" * 2000, now=NOW)
    (row,) = ledger.rows_between(TENANT, DAY, NOW)
    assert (row.state, row.owner, row.last_error) == ("failed", None, "x" * 500)


def test_record_failed_does_not_hide_a_created_analysis(ledger: Ledger) -> None:
    _claimed(ledger, 1)
    ledger.record_created(TENANT, hour(1).start, "an-1", now=NOW)
    ledger.record_failed(TENANT, hour(1).start, "late timeout", now=NOW)
    (row,) = ledger.rows_between(TENANT, DAY, NOW)
    assert (row.state, row.last_error) == ("created", None)


def test_record_failed_leaves_a_claim_another_process_took_over(ledger: Ledger) -> None:
    set_pending(ledger, 1, "other-host:7", NOW)
    ledger.record_failed(TENANT, hour(1).start, "my stale attempt failed", now=NOW)
    (row,) = ledger.rows_between(TENANT, DAY, NOW)
    assert (row.state, row.owner, row.last_error) == ("pending", "other-host:7", None)


def test_delete_records_move_between_delete_states_and_keep_the_id(ledger: Ledger) -> None:
    _claimed(ledger, 1)
    ledger.record_created(TENANT, hour(1).start, "an-1", now=NOW)
    ledger.record_delete_failed(TENANT, "an-1", "HTTP 502 " + "y" * 600, now=NOW)
    failed = ledger.row_for_analysis(TENANT, "an-1")
    assert failed is not None
    assert failed.state == "delete_failed"
    assert failed.last_error is not None
    assert len(failed.last_error) == 500
    ledger.record_deleted(TENANT, "an-1", now=NOW)
    ledger.record_delete_failed(TENANT, "an-1", "404 race", now=NOW)
    deleted = ledger.row_for_analysis(TENANT, "an-1")
    assert deleted is not None
    assert (deleted.state, deleted.analysis_id, deleted.last_error) == ("deleted", "an-1", None)


def test_deleting_an_id_not_in_the_ledger_changes_nothing(ledger: Ledger) -> None:
    _claimed(ledger, 1)
    ledger.record_created(TENANT, hour(1).start, "an-1", now=NOW)
    ledger.record_deleted(TENANT, "manual-id", now=NOW)
    ledger.record_deleted("tenant-b", "an-1", now=NOW)
    assert [r.state for r in ledger.rows_between(TENANT, DAY, NOW)] == ["created"]


# --- queries -----------------------------------------------------------------------------


def _fill(ledger: Ledger, states: dict[int, str]) -> None:
    """Window index -> final state; analysis IDs are ``an-<index>``."""
    for index, state in states.items():
        _claimed(ledger, index)
        if state == "failed":
            ledger.record_failed(TENANT, hour(index).start, "boom", now=NOW)
        elif state != "pending":
            ledger.record_created(TENANT, hour(index).start, f"an-{index}", now=NOW)
        if state == "deleted":
            ledger.record_deleted(TENANT, f"an-{index}", now=NOW)
        elif state == "delete_failed":
            ledger.record_delete_failed(TENANT, f"an-{index}", "boom", now=NOW)


def test_rows_between_is_half_open_and_ordered(ledger: Ledger) -> None:
    _fill(ledger, {index: "created" for index in (25, 0, 23, 24, -1, 5)})
    rows = ledger.rows_between(TENANT, DAY, DAY + timedelta(days=1))
    assert [row.window_start for row in rows] == [hour(i).start for i in (0, 5, 23)]


def test_deletable_keeps_analyses_not_yet_deleted_in_the_range(ledger: Ledger) -> None:
    _fill(
        ledger,
        {
            -30: "created",
            -2: "delete_failed",
            0: "created",
            1: "deleted",
            2: "failed",
            3: "pending",
            4: "delete_failed",
            24: "created",
        },
    )
    day_end = DAY + timedelta(days=1)
    assert [r.analysis_id for r in ledger.deletable(TENANT, DAY, day_end)] == ["an-0", "an-4"]
    everything = [r.analysis_id for r in ledger.deletable(TENANT, None, day_end)]
    assert everything == ["an--30", "an--2", "an-0", "an-4"]
    assert ledger.deletable("tenant-b", None, day_end) == []


def test_last_created_is_the_latest_window_that_got_an_analysis(ledger: Ledger) -> None:
    assert ledger.last_created(TENANT) is None
    _fill(ledger, {1: "created", 3: "deleted", 5: "failed", 6: "pending", 2: "created"})
    latest = ledger.last_created(TENANT)
    assert latest is not None
    assert (latest.window_start, latest.state) == (hour(3).start, "deleted")


def test_row_for_analysis_is_scoped_to_the_tenant(ledger: Ledger) -> None:
    _fill(ledger, {1: "created"})
    found = ledger.row_for_analysis(TENANT, "an-1")
    assert found is not None
    assert found.window_start == hour(1).start
    assert ledger.row_for_analysis("tenant-b", "an-1") is None


@pytest.mark.parametrize(
    "name", ["rows_between", "deletable", "claim", "row_for_analysis", "last_created"]
)
def test_queries_search_an_index_instead_of_scanning_the_table(ledger: Ledger, name: str) -> None:
    plan = ledger.query_plan(name)
    assert "USING INDEX" in plan or "USING COVERING INDEX" in plan, plan
    assert "SCAN windows" not in plan, plan


def test_query_plan_rejects_unknown_names(ledger: Ledger) -> None:
    with pytest.raises(ValueError, match="unknown query"):
        ledger.query_plan("everything")


# --- locking -------------------------------------------------------------------------------


def test_a_lock_held_past_the_busy_timeout_is_a_ledger_error_naming_the_path(db: Path) -> None:
    Ledger.open(db).close()
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with Ledger.open(db, busy_timeout=0.05) as ledger:
            with pytest.raises(LedgerError, match="locked") as caught:
                ledger.check_writable()
            assert str(db) in str(caught.value)
            with pytest.raises(LedgerError, match="locked"):
                ledger.claim(TENANT, hour(0), now=NOW, lease_seconds=LEASE)
            assert ledger.rows_between(TENANT, DAY, NOW) == []  # WAL: reads still work
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    with Ledger.open(db) as ledger:
        ledger.check_writable()


# --- real processes ---------------------------------------------------------------------------


def run_workers(argvs: list[list[str]]) -> list[tuple[int, dict[str, object]]]:
    """Start every worker, wait until all are ready, then start them at once."""
    search_path = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(search_path)}
    command = [sys.executable, str(WORKER)]
    procs = [
        subprocess.Popen(
            [*command, *argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        for argv in argvs
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        # Every worker reports while all are still alive; closing stdin ends them.
        outputs = [json.loads(proc.stdout.readline()) for proc in procs if proc.stdout]
        codes = [proc.communicate(timeout=30) and proc.returncode for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return list(zip(codes, outputs, strict=True))


@pytest.mark.slow
def test_eight_processes_racing_on_a_fresh_file_claim_the_window_exactly_once(db: Path) -> None:
    results = run_workers([["claim", str(db)] for _ in range(8)])
    assert [code for code, _ in results] == [0] * 8, results
    statuses = sorted(str(out["status"]) for _, out in results)
    assert statuses == ["busy"] * 7 + ["claimed"], results
    assert migrations(db) == APPLIED
    with Ledger.open(db) as ledger:
        (row,) = ledger.rows_between("tenant", DAY, NOW)
    assert (row.state, row.attempts) == ("pending", 1)


@pytest.mark.slow
def test_two_processes_hammering_writes_lose_nothing(db: Path) -> None:
    count = 200
    results = run_workers([["hammer", str(db), tenant, str(count)] for tenant in ("t1", "t2")])
    assert results == [(0, {"done": count}), (0, {"done": count})]
    with Ledger.open(db) as ledger:
        for tenant in ("t1", "t2"):
            rows = ledger.rows_between(tenant, DAY, DAY + timedelta(days=30))
            assert len(rows) == count
            created = [r for r in rows if r.state == "created"]
            assert [r.analysis_id for r in created] == [f"a-{i}" for i in range(0, count, 2)]
            assert {r.state for r in rows} == {"created", "failed"}


# --- migration 2: the 'unknown' state ----------------------------------------------


_V1_SCHEMA = """
CREATE TABLE migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL);
INSERT INTO migrations VALUES (1, 'create_windows', '2026-01-01T00:00:00Z');
CREATE TABLE windows (
    id INTEGER PRIMARY KEY, tenant_id TEXT NOT NULL, window_start TEXT NOT NULL,
    window_end TEXT NOT NULL, name TEXT NOT NULL, analysis_id TEXT,
    state TEXT NOT NULL
        CHECK (state IN ('pending', 'created', 'failed', 'deleted', 'delete_failed')),
    attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT, owner TEXT,
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL, UNIQUE (tenant_id, window_start));
INSERT INTO windows VALUES
    (1, 't', '2026-02-12T07:00:00Z', '2026-02-12T08:00:00Z', 'w7', 'a-7', 'created', 1,
     NULL, NULL, '2026-02-12T08:05:00Z', '2026-02-12T08:05:01Z'),
    (2, 't', '2026-02-12T08:00:00Z', '2026-02-12T09:00:00Z', 'w8', NULL, 'failed', 1,
     'create analysis w8: outcome unknown, no answer within 30 s', NULL,
     '2026-02-12T09:05:00Z', '2026-02-12T09:05:30Z'),
    (3, 't', '2026-02-12T09:00:00Z', '2026-02-12T10:00:00Z', 'w9', NULL, 'failed', 1,
     'create analysis w9: HTTP 400: invalid_request', NULL,
     '2026-02-12T10:05:00Z', '2026-02-12T10:05:00Z');
"""


def test_a_version_1_ledger_is_upgraded_keeping_rows_and_holding_unknown_outcomes(
    db: Path,
) -> None:
    db.parent.mkdir()
    with sqlite3.connect(db) as conn:
        conn.executescript(_V1_SCHEMA)
    conn.close()

    with Ledger.open(db) as ledger:
        rows = ledger.rows_between("t", DAY, DAY + timedelta(days=1))
        plan = ledger.query_plan("rows_between")

    assert migrations(db) == APPLIED
    assert [(r.name, r.state, r.analysis_id) for r in rows] == [
        ("w7", "created", "a-7"),
        ("w8", "unknown", None),
        ("w9", "failed", None),
    ]
    assert "SCAN windows" not in plan


def test_an_unknown_outcome_holds_the_window_until_retry_unknown_is_asked(
    ledger: Ledger,
) -> None:
    window = hour(0)
    ledger.claim(TENANT, window, now=NOW, lease_seconds=LEASE)
    ledger.record_unknown(TENANT, window.start, "outcome unknown: read timeout", now=NOW)

    held = ledger.claim(TENANT, window, now=NOW, lease_seconds=LEASE)
    assert held.status is ClaimStatus.HELD
    assert held.row.state == "unknown"
    assert held.row.last_error == "outcome unknown: read timeout"

    retried = ledger.claim(TENANT, window, now=NOW, lease_seconds=LEASE, retry_unknown=True)
    assert retried.status is ClaimStatus.CLAIMED
    assert retried.row.state == "pending"
    assert retried.row.attempts == 2

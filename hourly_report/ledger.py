"""The SQLite ledger: one row per (tenant, hour window), the tool's only state.

Cron may start a run while the previous one is still going, and ``cleanup`` may
overlap a ``run``.  So the database is in WAL mode (readers never block the
writer), every write is one short ``BEGIN IMMEDIATE`` transaction (the write
lock is taken up front, so two processes never both decide to create the same
window), and a busy timeout makes a second writer wait instead of failing with
"database is locked".

A window is claimed (state ``pending``, with the owner's ``host:pid``) *before*
the create request goes out, so a crash mid-request leaves a visible trace and a
concurrent run sees the claim and stays away.

Times are stored as ``YYYY-MM-DDTHH:MM:SSZ`` UTC text, which sorts like time.
"""

from __future__ import annotations

import enum
import os
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import TracebackType
from typing import Protocol

from hourly_report.errors import LedgerError

STATES = ("pending", "created", "failed", "unknown", "deleted", "delete_failed")
# States of a row whose analysis exists (or existed) in OpsRamp.
_HAS_ANALYSIS = ("created", "deleted", "delete_failed")

_SQLITE_MAGIC = b"SQLite format 3\x00"
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_MAX_ERROR_CHARS = 500
# Sorts before every stored timestamp: "no lower bound" for range queries.
_MIN_TIME = ""


class WindowLike(Protocol):
    """What the ledger needs of an hour window (``windows.Window`` fits)."""

    @property
    def start(self) -> datetime: ...

    @property
    def end(self) -> datetime: ...

    @property
    def name(self) -> str: ...


@dataclass(frozen=True)
class Row:
    """One ledger row; all datetimes are aware UTC."""

    tenant_id: str
    name: str
    window_start: datetime
    window_end: datetime
    analysis_id: str | None
    state: str
    attempts: int
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    owner: str | None


class ClaimStatus(enum.Enum):
    CLAIMED = "claimed"
    DONE = "done"
    BUSY = "busy"
    # The last create's outcome is unknown (timeout, dropped reply, 5xx): it is not
    # re-sent until the operator has checked OpsRamp and asks for it.
    HELD = "held"


@dataclass(frozen=True)
class Claim:
    status: ClaimStatus
    row: Row
    # True when a stale pending claim was taken over: that earlier create's
    # outcome is unknown, so the caller should say so.
    # True when a stale pending claim (its owner died mid-request) was found: the
    # window is HELD as unknown, or CLAIMED again when the caller asked to retry.
    recovered: bool = False


# --- schema -------------------------------------------------------------------

_CREATE_MIGRATIONS = """
CREATE TABLE IF NOT EXISTS migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at TEXT NOT NULL
)"""
_SELECT_VERSION = "SELECT COALESCE(MAX(version), 0) FROM migrations"
_INSERT_MIGRATION = "INSERT INTO migrations (version, name, applied_at) VALUES (?, ?, ?)"
_SELECT_TABLES = "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"

# An applied migration is never edited: the state list is spelled out here
# rather than taken from STATES, which may grow in a later migration.
_M001_WINDOWS = """
CREATE TABLE windows (
    id INTEGER PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    window_start TEXT NOT NULL,
    window_end TEXT NOT NULL,
    name TEXT NOT NULL,
    analysis_id TEXT,
    state TEXT NOT NULL
        CHECK (state IN ('pending', 'created', 'failed', 'deleted', 'delete_failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    owner TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (tenant_id, window_start)
)"""
_M001_STATE_INDEX = (
    "CREATE INDEX windows_tenant_state_start ON windows (tenant_id, state, window_start)"
)
_M001_ANALYSIS_INDEX = "CREATE INDEX windows_tenant_analysis ON windows (tenant_id, analysis_id)"


def _m001_create_windows(conn: sqlite3.Connection) -> None:
    conn.execute(_M001_WINDOWS)
    conn.execute(_M001_STATE_INDEX)
    conn.execute(_M001_ANALYSIS_INDEX)


# SQLite cannot alter a CHECK constraint: the table is rebuilt, rows copied as is.
_M002_WINDOWS = """
CREATE TABLE windows_v2 (
    id INTEGER PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    window_start TEXT NOT NULL,
    window_end TEXT NOT NULL,
    name TEXT NOT NULL,
    analysis_id TEXT,
    state TEXT NOT NULL CHECK (
        state IN ('pending', 'created', 'failed', 'unknown', 'deleted', 'delete_failed')
    ),
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    owner TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (tenant_id, window_start)
)"""
_M002_COPY = "INSERT INTO windows_v2 SELECT * FROM windows"
# Failures recorded before version 2 whose outcome was unknown become 'unknown'.
_M002_RECLASSIFY = """
UPDATE windows SET state = 'unknown'
WHERE state = 'failed' AND last_error LIKE '%outcome unknown%'"""


def _m002_unknown_state(conn: sqlite3.Connection) -> None:
    conn.execute(_M002_WINDOWS)
    conn.execute(_M002_COPY)
    conn.execute("DROP TABLE windows")
    conn.execute("ALTER TABLE windows_v2 RENAME TO windows")
    conn.execute(_M001_STATE_INDEX)
    conn.execute(_M001_ANALYSIS_INDEX)
    conn.execute(_M002_RECLASSIFY)


MIGRATIONS: list[tuple[str, Callable[[sqlite3.Connection], None]]] = [
    ("create_windows", _m001_create_windows),
    ("unknown_state", _m002_unknown_state),
]
SCHEMA_VERSION = len(MIGRATIONS)

# --- queries ------------------------------------------------------------------

_COLUMNS = (
    "tenant_id, name, window_start, window_end, analysis_id, state, attempts,"
    " last_error, created_at, updated_at, owner"
)
_SELECT_WINDOW = f"SELECT {_COLUMNS} FROM windows WHERE tenant_id = ? AND window_start = ?"  # noqa: S608
_INSERT_PENDING = """
INSERT INTO windows (tenant_id, window_start, window_end, name, state, attempts, owner,
                     created_at, updated_at)
VALUES (?, ?, ?, ?, 'pending', 1, ?, ?, ?)"""
_RECLAIM = """
UPDATE windows
SET state = 'pending', attempts = attempts + 1, owner = ?, name = ?, window_end = ?,
    updated_at = ?
WHERE tenant_id = ? AND window_start = ?"""
# Only a row without an analysis may become created: a second ID for the same
# window is a duplicate the operator must hear about, not silently lose.
_SET_CREATED = """
UPDATE windows
SET state = 'created', analysis_id = ?, last_error = NULL, owner = NULL, updated_at = ?
WHERE tenant_id = ? AND window_start = ? AND analysis_id IS NULL"""
# A failure never overwrites a created row, nor a claim another process took
# over (its create may be in flight).
_SET_FAILED = """
UPDATE windows
SET state = 'failed', last_error = ?, owner = NULL, updated_at = ?
WHERE tenant_id = ? AND window_start = ? AND state IN ('pending', 'failed')
  AND (owner IS NULL OR owner = ?)"""
_SET_UNKNOWN = """
UPDATE windows
SET state = 'unknown', last_error = ?, owner = NULL, updated_at = ?
WHERE tenant_id = ? AND window_start = ? AND state IN ('pending', 'failed', 'unknown')
  AND (owner IS NULL OR owner = ?)"""
_SET_ABANDONED = """
UPDATE windows
SET state = 'unknown', last_error = ?, owner = NULL, updated_at = ?
WHERE tenant_id = ? AND window_start = ? AND state = 'pending'"""
_ABANDON_UNCHANGED = _SET_ABANDONED + " AND owner = ? AND updated_at = ?"
_SET_DELETED = """
UPDATE windows
SET state = 'deleted', last_error = NULL, owner = NULL, updated_at = ?
WHERE tenant_id = ? AND analysis_id = ?"""
# Once deleted, always deleted: a later failed attempt (e.g. a manual --id
# re-run) does not bring the analysis back.
_SET_DELETE_FAILED = """
UPDATE windows
SET state = 'delete_failed', last_error = ?, updated_at = ?
WHERE tenant_id = ? AND analysis_id = ? AND state <> 'deleted'"""
_ROWS_BETWEEN = f"""
SELECT {_COLUMNS} FROM windows
WHERE tenant_id = ? AND window_start >= ? AND window_start < ?
ORDER BY window_start"""  # noqa: S608
_DELETABLE = f"""
SELECT {_COLUMNS} FROM windows
WHERE tenant_id = ? AND state IN ('created', 'delete_failed') AND analysis_id IS NOT NULL
  AND window_start >= ? AND window_start < ?
ORDER BY window_start"""  # noqa: S608
_ROW_FOR_ANALYSIS = f"""
SELECT {_COLUMNS} FROM windows
WHERE tenant_id = ? AND analysis_id = ?
ORDER BY window_start LIMIT 1"""  # noqa: S608
_LAST_CREATED = f"""
SELECT {_COLUMNS} FROM windows
WHERE tenant_id = ? AND state IN ('created', 'deleted', 'delete_failed')
  AND analysis_id IS NOT NULL
ORDER BY window_start DESC LIMIT 1"""  # noqa: S608

_UNRESOLVED = f"""
SELECT {_COLUMNS} FROM windows
WHERE tenant_id = ? AND state IN ('failed', 'unknown')
ORDER BY window_start"""  # noqa: S608

_PENDING = f"""
SELECT {_COLUMNS} FROM windows
WHERE tenant_id = ? AND state = 'pending'
ORDER BY window_start"""  # noqa: S608

_SAMPLE_START = "2026-02-12T00:00:00Z"
_SAMPLE_END = "2026-02-13T00:00:00Z"
_PLANNED_QUERIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "rows_between": (_ROWS_BETWEEN, ("t", _SAMPLE_START, _SAMPLE_END)),
    "deletable": (_DELETABLE, ("t", _SAMPLE_START, _SAMPLE_END)),
    "claim": (_SELECT_WINDOW, ("t", _SAMPLE_START)),
    "row_for_analysis": (_ROW_FOR_ANALYSIS, ("t", "a")),
    "last_created": (_LAST_CREATED, ("t",)),
    "unresolved": (_UNRESOLVED, ("t",)),
    "pending": (_PENDING, ("t",)),
}


# --- the ledger -----------------------------------------------------------------


class Ledger:
    """An open ledger.  Use :meth:`open`; close it (or use ``with``) when done."""

    def __init__(self, conn: sqlite3.Connection, path: Path, *, read_only: bool) -> None:
        self._conn = conn
        self.path = path
        self.read_only = read_only
        self._identity = None if read_only else _file_identity(path)

    @classmethod
    def open(cls, path: Path, *, busy_timeout: float = 30.0, read_only: bool = False) -> Ledger:
        """Open (creating and migrating if needed) the ledger at ``path``.

        ``read_only=True`` never writes the database: a missing or empty file
        reads as an empty ledger (held in memory, nothing created on disk).
        """
        path = Path(path)
        if read_only:
            return cls._open_read_only(path, busy_timeout)
        _create_file(path)
        conn = _connect(path, str(path), busy_timeout, uri=False)
        with _closing_on_error(conn, path):
            # Checked before journal_mode, which would rewrite a foreign file's header.
            _schema_version(conn, path)
            _use_wal(conn, busy_timeout)
            # FULL: a commit survives power loss, so an analysis ID once
            # recorded is never lost (a lost ID is an analysis never cleaned up).
            conn.execute("PRAGMA synchronous = FULL")
            _migrate(conn, path)
        return cls(conn, path, read_only=False)

    @classmethod
    def _open_read_only(cls, path: Path, busy_timeout: float) -> Ledger:
        if not path.exists() or _read_header(path) == b"":
            return cls._empty_in_memory(path, busy_timeout)
        # A URI so that mode=ro holds; as_uri() escapes '?' and '#' in the path.
        # SQLite may still create the -wal/-shm side files: reading a WAL
        # database safely needs its shared-memory index.  The database itself
        # is never written.
        conn = _connect(path, path.resolve().as_uri() + "?mode=ro", busy_timeout, uri=True)
        with _closing_on_error(conn, path):
            version = _read_only_version(conn, path)
        if version is None:
            conn.close()
            return cls._empty_in_memory(path, busy_timeout)
        return cls(conn, path, read_only=True)

    @classmethod
    def _empty_in_memory(cls, path: Path, busy_timeout: float) -> Ledger:
        conn = _connect(path, ":memory:", busy_timeout, uri=False)
        with _closing_on_error(conn, path):
            _migrate(conn, path)
        return cls(conn, path, read_only=True)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT``; ``ROLLBACK`` if the block raises."""
        if self.read_only:
            raise LedgerError(f"ledger {self.path} was opened read-only; nothing was written")
        self._ensure_same_file()
        with _immediate(self._conn, self.path) as conn:
            yield conn

    def _ensure_same_file(self) -> None:
        """Refuse to write into a file that was deleted or replaced under us.

        SQLite would go on writing to the unlinked inode, and every ID recorded there
        would be lost: better to fail loudly, naming what was created.
        """
        if self._identity is not None and _file_identity(self.path) != self._identity:
            raise LedgerError(
                f"ledger {self.path} was removed or replaced while this run was using it; "
                "nothing more is written to it"
            )

    # --- writes -------------------------------------------------------------------

    def claim(
        self,
        tenant_id: str,
        window: WindowLike,
        *,
        now: datetime,
        lease_seconds: float,
        retry_unknown: bool = False,
    ) -> Claim:
        """Decide, under the write lock, whether this process creates ``window``.

        A window whose last outcome is unknown is HELD unless ``retry_unknown``.
        """
        key = (tenant_id, _iso(window.start))
        me = _this_owner()
        with self.transaction() as conn:
            found = conn.execute(_SELECT_WINDOW, key).fetchone()
            current = _to_row(found) if found is not None else None
            status, recovered = _decide(current, me, now, lease_seconds, retry_unknown)
            if status is ClaimStatus.CLAIMED:
                _write_claim(conn, key, window, me, _iso(now), insert=current is None)
            elif status is ClaimStatus.HELD and recovered and current is not None:
                conn.execute(_SET_ABANDONED, (_abandoned_error(current), _iso(now), *key))
            row = _to_row(conn.execute(_SELECT_WINDOW, key).fetchone())
        return Claim(status, row, recovered)

    def record_created(
        self, tenant_id: str, window_start: datetime, analysis_id: str, *, now: datetime
    ) -> None:
        key = (tenant_id, _iso(window_start))
        with self.transaction() as conn:
            cursor = conn.execute(_SET_CREATED, (analysis_id, _iso(now), *key))
            if cursor.rowcount == 0:
                _check_same_analysis(conn, self.path, key, analysis_id)

    def record_failed(
        self, tenant_id: str, window_start: datetime, error: str, *, now: datetime
    ) -> None:
        """The create failed and OpsRamp did not act: the next backfill retries it."""
        self._record_failure(_SET_FAILED, tenant_id, window_start, error, now)

    def record_unknown(
        self, tenant_id: str, window_start: datetime, error: str, *, now: datetime
    ) -> None:
        """The create was sent but its outcome is unknown: hold the window for the operator."""
        self._record_failure(_SET_UNKNOWN, tenant_id, window_start, error, now)

    def _record_failure(
        self, sql: str, tenant_id: str, window_start: datetime, error: str, now: datetime
    ) -> None:
        key = (tenant_id, _iso(window_start))
        params = (error[:_MAX_ERROR_CHARS], _iso(now), *key, _this_owner())
        with self.transaction() as conn:
            # No change means another process now holds or has created the
            # window; their outcome stands.  Only a missing row is an error.
            if conn.execute(sql, params).rowcount == 0:
                _require_row(conn, self.path, key)

    def record_deleted(self, tenant_id: str, analysis_id: str, *, now: datetime) -> None:
        """Mark ``analysis_id`` deleted; an ID not in the ledger (``--id``) is ignored."""
        with self.transaction() as conn:
            conn.execute(_SET_DELETED, (_iso(now), tenant_id, analysis_id))

    def record_delete_failed(
        self, tenant_id: str, analysis_id: str, error: str, *, now: datetime
    ) -> None:
        params = (error[:_MAX_ERROR_CHARS], _iso(now), tenant_id, analysis_id)
        with self.transaction() as conn:
            conn.execute(_SET_DELETE_FAILED, params)

    # --- reads --------------------------------------------------------------------

    def rows_between(self, tenant_id: str, start: datetime, end: datetime) -> list[Row]:
        """Rows whose window starts in ``[start, end)``, oldest first."""
        return self._select(_ROWS_BETWEEN, (tenant_id, _iso(start), _iso(end)))

    def deletable(self, tenant_id: str, start: datetime | None, end: datetime) -> list[Row]:
        """Analyses still to delete whose window starts in ``[start, end)``, oldest first."""
        lower = _MIN_TIME if start is None else _iso(start)
        return self._select(_DELETABLE, (tenant_id, lower, _iso(end)))

    def row_for_analysis(self, tenant_id: str, analysis_id: str) -> Row | None:
        rows = self._select(_ROW_FOR_ANALYSIS, (tenant_id, analysis_id))
        return rows[0] if rows else None

    def last_created(self, tenant_id: str) -> Row | None:
        """The latest window that got an analysis, whatever happened to it since."""
        rows = self._select(_LAST_CREATED, (tenant_id,))
        return rows[0] if rows else None

    def stale_pending(self, tenant_id: str, *, now: datetime, lease_seconds: float) -> list[Row]:
        """Pending claims whose owner died (or whose lease ran out): interrupted creates."""
        me = _this_owner()
        pending = self._select(_PENDING, (tenant_id,))
        return [
            row for row in pending if row.owner != me and _is_stale(row, me, now, lease_seconds)
        ]

    def abandon_stale(self, tenant_id: str, *, now: datetime, lease_seconds: float) -> list[Row]:
        """Mark interrupted creates ``unknown`` (held); return the rows as they were."""
        stale = self.stale_pending(tenant_id, now=now, lease_seconds=lease_seconds)
        abandoned = []
        for row in stale:
            key = (tenant_id, _iso(row.window_start))
            params = (_abandoned_error(row), _iso(now), *key, row.owner, _iso(row.updated_at))
            with self.transaction() as conn:
                # Unless another process took the window over since it was read.
                if conn.execute(_ABANDON_UNCHANGED, params).rowcount:
                    abandoned.append(row)
        return abandoned

    def unresolved(self, tenant_id: str) -> list[Row]:
        """Windows whose create failed or has an unknown outcome, whenever that was."""
        return self._select(_UNRESOLVED, (tenant_id,))

    def check_writable(self) -> None:
        """Raise :class:`LedgerError` unless this process can write the ledger now."""
        if self.read_only:
            raise LedgerError(f"ledger {self.path} was opened read-only")
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                # BEGIN IMMEDIATE alone succeeds on a read-only file; rewriting
                # user_version with its own value is a real write, rolled back.
                version = int(self._conn.execute("PRAGMA user_version").fetchone()[0])
                self._conn.execute(f"PRAGMA user_version = {version}")
            finally:
                self._conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            raise LedgerError(f"ledger {self.path} is not writable: {exc}") from exc

    def query_plan(self, sql_name: str) -> str:
        """``EXPLAIN QUERY PLAN`` of a named internal query (for index tests)."""
        if sql_name not in _PLANNED_QUERIES:
            raise ValueError(f"unknown query {sql_name!r}; known: {sorted(_PLANNED_QUERIES)}")
        sql, params = _PLANNED_QUERIES[sql_name]
        plan = self._conn.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()
        return "\n".join(str(step["detail"]) for step in plan)

    def _select(self, sql: str, params: tuple[str, ...]) -> list[Row]:
        try:
            return [_to_row(found) for found in self._conn.execute(sql, params)]
        except sqlite3.Error as exc:
            raise _ledger_error(self.path, exc) from exc


# --- claim decision -------------------------------------------------------------


def _decide(
    current: Row | None, me: str, now: datetime, lease_seconds: float, retry_unknown: bool
) -> tuple[ClaimStatus, bool]:
    """(status, recovered) for a claim on a window whose row is ``current``."""
    if current is None or current.state == "failed":
        return ClaimStatus.CLAIMED, False
    if current.state == "unknown":
        return (ClaimStatus.CLAIMED if retry_unknown else ClaimStatus.HELD), False
    if current.state in _HAS_ANALYSIS:
        return ClaimStatus.DONE, False
    if _is_stale(current, me, now, lease_seconds):
        # Its owner died (kill -9, OOM, reboot) with the create possibly sent: the
        # outcome is unknown, so it is held like any other unknown outcome.
        return (ClaimStatus.CLAIMED if retry_unknown else ClaimStatus.HELD), True
    return ClaimStatus.BUSY, False


def _is_stale(row: Row, me: str, now: datetime, lease_seconds: float) -> bool:
    """True when nobody can still be creating the window of this pending row."""
    if row.owner is None or row.owner == me:
        return True
    if row.updated_at + timedelta(seconds=lease_seconds) <= now:
        return True
    # A dead owner on this host is certain; on another host only the lease tells.
    host, _, pid = row.owner.rpartition(":")
    return host == socket.gethostname() and pid.isdigit() and not _pid_alive(int(pid))


def _pid_alive(pid: int) -> bool:
    if pid <= 0:  # os.kill(0 or negative) would signal process groups
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists but belongs to another user
        return True
    return True


def _write_claim(
    conn: sqlite3.Connection,
    key: tuple[str, str],
    window: WindowLike,
    owner: str,
    now: str,
    *,
    insert: bool,
) -> None:
    if insert:
        conn.execute(_INSERT_PENDING, (*key, _iso(window.end), window.name, owner, now, now))
    else:
        conn.execute(_RECLAIM, (owner, window.name, _iso(window.end), now, *key))


def _this_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _require_row(conn: sqlite3.Connection, path: Path, key: tuple[str, str]) -> sqlite3.Row:
    found: sqlite3.Row | None = conn.execute(_SELECT_WINDOW, key).fetchone()
    if found is None:
        raise LedgerError(
            f"ledger {path} has no row for tenant {key[0]} window {key[1]}; claim it first"
        )
    return found


def _check_same_analysis(
    conn: sqlite3.Connection, path: Path, key: tuple[str, str], analysis_id: str
) -> None:
    """Accept a repeated record of the same ID; refuse a second one for the window."""
    recorded = _require_row(conn, path, key)["analysis_id"]
    if recorded != analysis_id:
        raise LedgerError(
            f"window {key[1]} of tenant {key[0]} already has analysis {recorded}; "
            f"analysis {analysis_id} is a duplicate: "
            f"delete it with `hourly-report cleanup --id {analysis_id}`"
        )


# --- opening and migrating --------------------------------------------------------


def _create_file(path: Path) -> None:
    """Create the file owner-only before sqlite sees it, or vet the existing one."""
    if path.is_dir():
        raise LedgerError(f"ledger path {path} is a directory; set [ledger] path to a file")
    _create_parent(path.parent)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        _read_header(path)
        return
    except OSError as exc:
        raise LedgerError(f"cannot create ledger {path}: {exc.strerror}") from exc
    try:
        os.fchmod(fd, 0o600)  # the mode given to os.open is filtered by the umask
    finally:
        os.close(fd)


def _create_parent(parent: Path) -> None:
    if parent.is_dir():
        return
    blocker = next((p for p in (parent, *parent.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise LedgerError(f"cannot create ledger directory {parent}: {blocker} is not a directory")
    try:
        parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(parent, 0o700)  # mkdir's mode is filtered by the umask
    except OSError as exc:
        raise LedgerError(f"cannot create ledger directory {parent}: {exc.strerror}") from exc


def _read_header(path: Path) -> bytes:
    """The first 16 bytes, after refusing a non-empty file that is not SQLite."""
    try:
        with path.open("rb") as handle:
            header = handle.read(len(_SQLITE_MAGIC))
    except OSError as exc:
        raise LedgerError(f"cannot read ledger {path}: {exc.strerror}") from exc
    if header not in (b"", _SQLITE_MAGIC):
        raise LedgerError(
            f"{path} is not a SQLite database; it was left untouched. "
            "Move it aside or set [ledger] path to another file."
        )
    return header


def _connect(path: Path, target: str, busy_timeout: float, *, uri: bool) -> sqlite3.Connection:
    try:
        # isolation_level=None: transactions are explicit (see _immediate).
        conn = sqlite3.connect(target, timeout=busy_timeout, isolation_level=None, uri=uri)
    except sqlite3.Error as exc:
        raise LedgerError(f"cannot open ledger {path}: {exc}") from exc
    conn.row_factory = sqlite3.Row
    with _closing_on_error(conn, path):
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        conn.execute("PRAGMA foreign_keys = ON")
    return conn


def _use_wal(conn: sqlite3.Connection, busy_timeout: float) -> None:
    """Switch a fresh database to WAL, waiting up to ``busy_timeout`` for the lock.

    The switch needs an exclusive lock, and while other processes are opening
    the same fresh file SQLite answers "database is locked" at once instead of
    calling its busy handler (waiting there could deadlock), so wait here.
    The mode is persistent: a ledger already in WAL never gets this far.
    """
    if conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
        return
    deadline = time.monotonic() + busy_timeout
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if not _is_locked(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(0.005)


@contextmanager
def _closing_on_error(conn: sqlite3.Connection, path: Path) -> Iterator[None]:
    """Close ``conn`` if the block fails, and report sqlite errors as LedgerError."""
    try:
        yield
    except sqlite3.Error as exc:
        conn.close()
        if "malformed" in str(exc):
            raise _ledger_error(path, exc) from exc
        raise LedgerError(f"cannot open ledger {path}: {exc}") from exc
    except BaseException:
        conn.close()
        raise


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Apply missing migrations, each with its bookkeeping row, in one transaction.

    The write lock is taken before the version is read again, so of two
    processes opening a fresh file at once, the second waits and then finds
    nothing left to do.
    """
    # The usual case, an up-to-date schema, needs no write lock: opening the
    # ledger does not wait behind another process's write.
    if _schema_version(conn, path) == SCHEMA_VERSION:
        return
    with _immediate(conn, path):
        applied = _schema_version(conn, path) or 0
        conn.execute(_CREATE_MIGRATIONS)
        applied_at = _iso(datetime.now(timezone.utc))
        for version, (name, migrate) in enumerate(MIGRATIONS, start=1):
            if version > applied:
                migrate(conn)
                conn.execute(_INSERT_MIGRATION, (version, name, applied_at))


def _read_only_version(conn: sqlite3.Connection, path: Path) -> int | None:
    """Schema version of a file opened read-only (None: no tables yet)."""
    version = _schema_version(conn, path)
    if version is not None and version < SCHEMA_VERSION:
        raise LedgerError(
            f"ledger {path} has an older schema (version {version}, this hourly-report "
            f"uses {SCHEMA_VERSION}); run any non-dry-run command once to upgrade it"
        )
    return version


def _schema_version(conn: sqlite3.Connection, path: Path) -> int | None:
    """The applied schema version, None for an empty database (no tables yet).

    Refuses another application's database and one from a newer hourly-report.
    """
    tables = {found[0] for found in conn.execute(_SELECT_TABLES)}
    if not tables:
        return None
    if "migrations" not in tables:
        raise LedgerError(
            f"{path} is a SQLite database but not an hourly-report ledger; it was left "
            "untouched. Move it aside or set [ledger] path to another file."
        )
    version = int(conn.execute(_SELECT_VERSION).fetchone()[0])
    if version > SCHEMA_VERSION:
        raise LedgerError(
            f"ledger {path} was written by a newer hourly-report (schema version "
            f"{version}, this one knows {SCHEMA_VERSION}); upgrade hourly-report"
        )
    return version


# --- transactions, errors, time ---------------------------------------------------


@contextmanager
def _immediate(conn: sqlite3.Connection, path: Path) -> Iterator[sqlite3.Connection]:
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        raise _ledger_error(path, exc) from exc
    try:
        yield conn
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        _rollback(conn)
        raise _ledger_error(path, exc) from exc
    except BaseException:
        _rollback(conn)
        raise


def _rollback(conn: sqlite3.Connection) -> None:
    # SQLite may already have rolled back (e.g. disk full); the original error
    # is the one worth reporting.
    if conn.in_transaction:
        with suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def _is_locked(exc: sqlite3.Error) -> bool:
    return "locked" in str(exc) or "busy" in str(exc)


def _abandoned_error(row: Row) -> str:
    return f"the process that was creating it ({row.owner}) stopped mid-request; outcome unknown"


def _file_identity(path: Path) -> tuple[int, int] | None:
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_dev, found.st_ino


def _ledger_error(path: Path, exc: sqlite3.Error) -> LedgerError:
    if _is_locked(exc):
        return LedgerError(
            f"ledger {path} stayed locked by another process past the busy timeout: {exc}"
        )
    if isinstance(exc, sqlite3.DatabaseError) and "malformed" in str(exc):
        return LedgerError(
            f"ledger {path} is damaged ({exc}); move it aside and restore it from a backup "
            "(or start a new one: status and cleanup will not know the old analyses)"
        )
    return LedgerError(f"ledger {path}: {exc}")


def _to_row(found: sqlite3.Row) -> Row:
    return Row(
        tenant_id=found["tenant_id"],
        name=found["name"],
        window_start=_parse(found["window_start"]),
        window_end=_parse(found["window_end"]),
        analysis_id=found["analysis_id"],
        state=found["state"],
        attempts=int(found["attempts"]),
        last_error=found["last_error"],
        created_at=_parse(found["created_at"]),
        updated_at=_parse(found["updated_at"]),
        owner=found["owner"],
    )


def _iso(moment: datetime) -> str:
    if moment.utcoffset() is None:
        raise ValueError(f"the ledger needs aware datetimes, got naive {moment!r}")
    return moment.astimezone(timezone.utc).strftime(_TIME_FORMAT)


def _parse(text: str) -> datetime:
    return datetime.strptime(text, _TIME_FORMAT).replace(tzinfo=timezone.utc)

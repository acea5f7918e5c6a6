"""run / backfill / cleanup / status / check as plain functions over client and ledger.

No click here: the CLI builds a :class:`Job` and prints what these return.
The order of operations is the safety argument:

1. claim the window in the ledger (a short ``BEGIN IMMEDIATE`` write) -- so a
   crash leaves a trace and a concurrent run sees the claim and stands back;
2. send the create (no transaction is open while waiting on the network);
3. record the answer: created with its id, or failed with the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from hourly_report import __version__, logs, payloads, windows
from hourly_report.clock import Clock
from hourly_report.config import Settings
from hourly_report.errors import (
    ApiError,
    AuthError,
    ConfigError,
    DeadlineExceededError,
    HourlyReportError,
    LedgerError,
    OutcomeUnknownError,
    ServiceUnavailableError,
)
from hourly_report.ledger import Claim, ClaimStatus, Ledger, Row
from hourly_report.windows import Window

if TYPE_CHECKING:
    from hourly_report.opsramp import Deadline, OpsRampClient

log = logging.getLogger(__name__)

LEASE_MARGIN_SECONDS = 120.0
RECORD_ATTEMPTS = 3


@dataclass
class Outcome:
    """What happened to one window or analysis."""

    name: str
    # created | exists | busy | failed | unknown | held | deleted | gone | delete_failed | planned
    result: str
    analysis_id: str | None = None
    error: str | None = None


FAILED_RESULTS = frozenset({"failed", "unknown", "held", "delete_failed"})
# Failures after which every remaining request of the job would fail the same way.
STOPPING_ERRORS = (AuthError, ServiceUnavailableError, DeadlineExceededError)


@dataclass
class JobResult:
    action: str
    outcomes: list[Outcome] = field(default_factory=list)
    stopped: str | None = None  # why the job stopped early, if it did

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.result in FAILED_RESULTS]

    @property
    def exit_code(self) -> int:
        return 1 if self.failures or self.stopped else 0

    def count(self, result: str) -> int:
        return sum(1 for o in self.outcomes if o.result == result)

    def summary(self) -> str:
        labels = ("created", "exists", "busy", "deleted", "gone", "planned")
        counts = [f"{self.count(r)} {r}" for r in labels if self.count(r)]
        counts.append(f"{len(self.failures)} failed")
        text = f"{self.action}: " + ", ".join(counts)
        if self.failures:
            text += " (" + ", ".join(_failure_label(o) for o in self.failures) + ")"
        return text


def _failure_label(outcome: Outcome) -> str:
    plain = outcome.result in ("failed", "delete_failed")
    return outcome.name if plain else f"{outcome.name}: {outcome.result}"


@dataclass
class Job:
    """Everything one invocation needs; built by the CLI, or by tests with a FakeClock."""

    settings: Settings
    clock: Clock
    now: datetime
    emit: Callable[[str], None] = print
    progress: Callable[[Outcome], None] | None = None
    expect: Callable[[int], None] | None = None  # told how many items the job will handle
    retry_unknown: bool = False  # re-send creates whose earlier outcome was unknown
    _client: OpsRampClient | None = None
    _deadline: Deadline | None = None

    @property
    def tenant(self) -> str:
        return self.settings.opsramp.tenant_id

    @property
    def deadline(self) -> Deadline:
        if self._deadline is None:
            from hourly_report.opsramp import Deadline

            self._deadline = Deadline(self.settings.retry.deadline_seconds, self.clock)
        return self._deadline

    def client(self) -> OpsRampClient:
        """The invocation's one API client, created on first use (so no-op runs send nothing)."""
        if self._client is None:
            from hourly_report.opsramp import OpsRampClient

            self._client = OpsRampClient(
                self.settings.opsramp, self.settings.retry, clock=self.clock, deadline=self.deadline
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def wall_now(self) -> datetime:
        return datetime.fromtimestamp(self.clock.time(), tz=timezone.utc)

    def lease_seconds(self) -> float:
        return lease_seconds(self.settings)

    def report(self, result: JobResult, outcome: Outcome) -> None:
        result.outcomes.append(outcome)
        if self.progress is not None:
            self.progress(outcome)


def lease_seconds(settings: Settings) -> float:
    """How long a pending claim may be silent before its owner counts as dead."""
    retry, api = settings.retry, settings.opsramp
    return retry.deadline_seconds + 2 * api.timeout_seconds + LEASE_MARGIN_SECONDS


# --- run and backfill ------------------------------------------------------------------


def run(job: Job, *, dry_run: bool = False) -> JobResult:
    """Create the analysis of the hour that ended last before ``job.now``."""
    window = windows.latest_ended_window(job.now, job.settings.report.zone, _prefix(job))
    log.info(
        "hourly-report %s run: tenant %s, window %s [%s, %s)",
        __version__,
        job.tenant,
        window.name,
        windows.iso_z(window.start),
        windows.iso_z(window.end),
        extra=logs.extra_fields(window=windows.iso_z(window.start), name=window.name),
    )
    return _create(job, "run", [window], dry_run)


def backfill_windows(job: Job, days: Iterable[date]) -> list[Window]:
    """Every ended window of ``days``; a day that has not begun is a usage error."""
    zone, found = job.settings.report.zone, []
    for day in days:
        start, _ = windows.day_bounds(day, zone)
        if start > job.now:
            raise ConfigError(f"day {day} has not begun yet ({job.settings.report.timezone})")
        found.extend(windows.ended_windows_of_day(day, zone, _prefix(job), job.now))
    return found


def backfill(job: Job, days: list[date], *, dry_run: bool = False) -> JobResult:
    """Create every ended, not-yet-created window of ``days``."""
    selected = backfill_windows(job, days)
    log.info(
        "hourly-report %s backfill: tenant %s, %s to %s, %d ended windows",
        __version__,
        job.tenant,
        days[0],
        days[-1],
        len(selected),
    )
    return _create(job, "backfill", selected, dry_run)


def _create(job: Job, action: str, selected: list[Window], dry_run: bool) -> JobResult:
    if dry_run:
        return _plan_creates(job, action, selected)
    result = JobResult(action)
    if job.expect is not None:
        job.expect(len(selected))
    with Ledger.open(job.settings.ledger_path) as ledger:
        _hold_interrupted(job, ledger)
        for index, window in enumerate(selected):
            try:
                job.report(result, _create_one(job, ledger, window))
            except STOPPING_ERRORS as err:
                # The window being attempted is recorded failed: count it in the summary.
                job.report(result, Outcome(window.name, "failed", error=str(err)))
                left = len(selected) - index - 1
                result.stopped = f"{err}" + (f" ({left} windows not attempted)" if left else "")
                break
    return result


def _hold_interrupted(job: Job, ledger: Ledger) -> None:
    """Mark creates left pending by a dead process (kill -9, OOM, reboot) unknown, once."""
    for row in ledger.abandon_stale(
        job.tenant, now=job.wall_now(), lease_seconds=job.lease_seconds()
    ):
        log.warning(
            "%s was being created by %s, which stopped mid-request: outcome unknown. Check in "
            "OpsRamp whether it exists, then '%s --retry-unknown'",
            row.name,
            row.owner,
            _retry_command(row.window_end),
            extra=logs.extra_fields(window=windows.iso_z(row.window_start), name=row.name),
        )


def _retry_command(window_end: datetime) -> str:
    """The narrowest command that creates one window again."""
    return f"hourly-report run --at {windows.iso_z(window_end)}"


def _create_one(job: Job, ledger: Ledger, window: Window) -> Outcome:
    claim = ledger.claim(
        job.tenant,
        window,
        now=job.wall_now(),
        lease_seconds=job.lease_seconds(),
        retry_unknown=job.retry_unknown,
    )
    fields = logs.extra_fields(window=windows.iso_z(window.start), name=window.name)
    skipped = _skipped(claim, window, fields)
    if skipped is not None:
        return skipped
    body = payloads.analysis_body(window, job.tenant, job.settings.report)
    retry_hint = _retry_command(window.end)
    try:
        analysis_id = job.client().create_analysis(body)
    except STOPPING_ERRORS as err:
        _record_failure(job, ledger, window, str(err), unknown=False)
        raise
    except OutcomeUnknownError as err:
        _record_failure(job, ledger, window, str(err), unknown=True)
        log.error("%s; then '%s --retry-unknown'", err, retry_hint, extra=fields)
        return Outcome(window.name, "unknown", error=str(err))
    except ApiError as err:
        _record_failure(job, ledger, window, str(err), unknown=False)
        log.error("%s (retry with '%s')", err, retry_hint, extra=fields)
        return Outcome(window.name, "failed", error=str(err))
    except BaseException:
        # SIGTERM, Ctrl-C: the request may have reached OpsRamp.
        _record_failure(
            job, ledger, window, "interrupted while creating: outcome unknown", unknown=True
        )
        raise
    _record_created(job, ledger, window, analysis_id)
    log.info(
        "%s created: %s", window.name, analysis_id, extra={**fields, "analysis_id": analysis_id}
    )
    return Outcome(window.name, "created", analysis_id)


def _skipped(claim: Claim, window: Window, fields: dict[str, Any]) -> Outcome | None:
    """The outcome for a window this process must not create, or None to go ahead."""
    if claim.status is ClaimStatus.DONE:
        log.info("%s already created (%s)", window.name, claim.row.analysis_id, extra=fields)
        return Outcome(window.name, "exists", claim.row.analysis_id)
    if claim.status is ClaimStatus.BUSY:
        log.info(
            "%s is being created by %s; leaving it", window.name, claim.row.owner, extra=fields
        )
        return Outcome(window.name, "busy")
    if claim.status is ClaimStatus.HELD:
        message = (
            f"{window.name} not re-sent: {claim.row.last_error or 'outcome unknown'}. Check in "
            f"OpsRamp whether it exists; if not, '{_retry_command(window.end)} --retry-unknown'"
        )
        log.error("%s", message, extra=fields)
        return Outcome(window.name, "held", error=message)
    if claim.recovered:
        log.info("%s: retrying an interrupted create, as asked", window.name, extra=fields)
    return None


def _record_created(job: Job, ledger: Ledger, window: Window, analysis_id: str) -> None:
    """Record a created analysis; losing this write would orphan it, so insist a little."""
    for attempt in range(1, RECORD_ATTEMPTS + 1):
        try:
            ledger.record_created(job.tenant, window.start, analysis_id, now=job.wall_now())
            return
        except LedgerError as err:
            if attempt == RECORD_ATTEMPTS:
                log.critical(
                    "analysis %s (%s) was created but could not be recorded: %s",
                    analysis_id,
                    window.name,
                    err,
                )
                raise LedgerError(
                    f"created analysis {analysis_id} for {window.name} but could not record it "
                    f"in {ledger.path} ({err}); delete it later with "
                    f"'hourly-report cleanup --id {analysis_id}'"
                ) from None
            job.clock.sleep(0.5 * attempt)


def _record_failure(job: Job, ledger: Ledger, window: Window, error: str, *, unknown: bool) -> None:
    record = ledger.record_unknown if unknown else ledger.record_failed
    try:
        record(job.tenant, window.start, error, now=job.wall_now())
    except LedgerError as err:
        log.error("%s: could not record the failure in the ledger: %s", window.name, err)


def _reason(error: str, name: str) -> str:
    """The error as the ledger keeps it: no window name (the row has it), no advice."""
    reason = error.removeprefix(f"create analysis {name}: ")
    return reason.split("; check in OpsRamp", 1)[0]


def _plan_creates(job: Job, action: str, selected: list[Window]) -> JobResult:
    result = JobResult(action)
    known = _rows_by_start(job, selected)
    api = job.settings.opsramp
    todo = [w for w in selected if _needs_create(known.get(w.start), job.retry_unknown)]
    if todo:
        job.emit(payloads.planned_token(api.base_url, api.client_id).render())
    for window in selected:
        if window not in todo:
            row = known[window.start]
            label = "held" if row.state == "unknown" else "exists"
            job.report(result, Outcome(window.name, label, row.analysis_id, row.last_error))
            continue
        body = payloads.analysis_body(window, job.tenant, job.settings.report)
        job.emit(payloads.planned_create(api.base_url, job.tenant, body).render())
        job.report(result, Outcome(window.name, "planned"))
    return result


def _needs_create(row: Row | None, retry_unknown: bool) -> bool:
    retried = ("failed", "pending", "unknown") if retry_unknown else ("failed", "pending")
    return row is None or row.state in retried


def _rows_by_start(job: Job, selected: list[Window]) -> dict[datetime, Row]:
    if not selected:
        return {}
    with Ledger.open(job.settings.ledger_path, read_only=True) as ledger:
        rows = ledger.rows_between(job.tenant, selected[0].start, selected[-1].end)
    return {row.window_start: row for row in rows}


# --- cleanup -----------------------------------------------------------------------------


def cleanup(
    job: Job, *, day: date | None = None, ids: Iterable[str] = (), dry_run: bool = False
) -> JobResult:
    """Delete analyses: finished days by default, one ``day``, or explicit ``ids``."""
    ids = list(dict.fromkeys(ids))
    with Ledger.open(job.settings.ledger_path, read_only=dry_run) as ledger:
        targets = _cleanup_targets(job, ledger, day, ids)
        log.info(
            "hourly-report %s cleanup: tenant %s, %d analyses to delete",
            __version__,
            job.tenant,
            len(targets),
        )
        if dry_run:
            return _plan_deletes(job, targets)
        return _delete_all(job, ledger, targets)


def _cleanup_targets(
    job: Job, ledger: Ledger, day: date | None, ids: list[str]
) -> list[tuple[str, str]]:
    """(name, analysis id) pairs to delete, ledger rows first, then explicit ids."""
    zone = job.settings.report.zone
    rows: list[Row] = []
    if day is not None:
        if not windows.day_has_ended(day, zone, job.now):
            raise ConfigError(
                f"day {day} has not ended ({job.settings.report.timezone}); its reports are "
                "still being made. Use --id to delete specific analyses"
            )
        rows = ledger.deletable(job.tenant, *windows.day_bounds(day, zone))
    elif not ids:
        start_of_today, _ = windows.day_bounds(windows.today(job.now, zone), zone)
        rows = ledger.deletable(job.tenant, None, start_of_today)
    targets = [(row.name, row.analysis_id) for row in rows if row.analysis_id]
    for analysis_id in ids:
        row = ledger.row_for_analysis(job.tenant, analysis_id)
        if (row.name if row else analysis_id, analysis_id) not in targets:
            targets.append((row.name if row else analysis_id, analysis_id))
    return targets


def _delete_all(job: Job, ledger: Ledger, targets: list[tuple[str, str]]) -> JobResult:
    result = JobResult("cleanup")
    if job.expect is not None:
        job.expect(len(targets))
    for index, (name, analysis_id) in enumerate(targets):
        try:
            job.report(result, _delete_one(job, ledger, name, analysis_id))
        except STOPPING_ERRORS as err:
            ledger.record_delete_failed(job.tenant, analysis_id, str(err), now=job.wall_now())
            job.report(result, Outcome(name, "delete_failed", analysis_id, str(err)))
            left = len(targets) - index - 1
            result.stopped = f"{err}" + (f" ({left} analyses not attempted)" if left else "")
            break
    return result


def _delete_one(job: Job, ledger: Ledger, name: str, analysis_id: str) -> Outcome:
    fields = logs.extra_fields(name=name, analysis_id=analysis_id)
    try:
        deleted = job.client().delete_analysis(analysis_id)
    except STOPPING_ERRORS:
        raise
    except ApiError as err:
        ledger.record_delete_failed(job.tenant, analysis_id, str(err), now=job.wall_now())
        log.error("%s: delete failed: %s", name, err, extra=fields)
        return Outcome(name, "delete_failed", analysis_id, str(err))
    ledger.record_deleted(job.tenant, analysis_id, now=job.wall_now())
    log.info("%s: %s", name, "deleted" if deleted else "already gone (404)", extra=fields)
    return Outcome(name, "deleted" if deleted else "gone", analysis_id)


def _plan_deletes(job: Job, targets: list[tuple[str, str]]) -> JobResult:
    result = JobResult("cleanup")
    api = job.settings.opsramp
    if targets:
        job.emit(payloads.planned_token(api.base_url, api.client_id).render())
    for name, analysis_id in targets:
        job.emit(payloads.planned_delete(api.base_url, job.tenant, analysis_id).render())
        job.report(result, Outcome(name, "planned", analysis_id))
    return result


# --- status --------------------------------------------------------------------------------


@dataclass(frozen=True)
class StatusRow:
    name: str
    window_start: datetime
    window_end: datetime
    analysis_id: str | None
    state: str  # a ledger state, or "missing" (ended, no row) / "upcoming" (not ended)
    attempts: int = 0
    last_error: str | None = None
    updated_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "window_start": windows.iso_z(self.window_start),
            "window_end": windows.iso_z(self.window_end),
            "analysis_id": self.analysis_id,
            "state": self.state,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "updated_at": windows.iso_z(self.updated_at) if self.updated_at else None,
        }


def status(settings: Settings, start: datetime, end: datetime, now: datetime) -> list[StatusRow]:
    """One row per window starting in [start, end): ledger rows plus windows never created."""
    zone, prefix = settings.report.zone, settings.report.name_prefix
    expected: dict[datetime, Window] = {}
    for day in windows.days_between(windows.day_of(start, zone), windows.day_of(end, zone)):
        for window in windows.windows_of_day(day, zone, prefix):
            if start <= window.start < end:
                expected[window.start] = window
    with Ledger.open(settings.ledger_path, read_only=True) as ledger:
        rows = {
            r.window_start: r for r in ledger.rows_between(settings.opsramp.tenant_id, start, end)
        }
    merged = [_status_row(expected.get(s), rows.get(s), now) for s in sorted({*expected, *rows})]
    return merged


def _status_row(window: Window | None, row: Row | None, now: datetime) -> StatusRow:
    if row is not None:
        return StatusRow(
            row.name,
            row.window_start,
            row.window_end,
            row.analysis_id,
            row.state,
            row.attempts,
            row.last_error,
            row.updated_at,
        )
    assert window is not None
    state = "missing" if window.end <= now else "upcoming"
    return StatusRow(window.name, window.start, window.end, None, state)


def day_status(settings: Settings, day: date, now: datetime) -> list[StatusRow]:
    start, end = windows.day_bounds(day, settings.report.zone)
    return status(settings, start, end, now)


def freshness_problems(
    settings: Settings, now: datetime, max_age: timedelta, grace: timedelta
) -> list[str]:
    """Why monitoring should alert: nothing created within ``max_age``, a recent window
    missing, or any window anywhere in the ledger still failed or of unknown outcome.

    Windows that ended less than ``grace`` ago are not judged yet (cron runs at :05).
    """
    rows = status(settings, now - max_age - timedelta(hours=1), now, now)
    judged = [r for r in rows if now - max_age <= r.window_end <= now - grace]
    problems = [f"{r.name} is missing" for r in judged if r.state == "missing"]
    tenant = settings.opsramp.tenant_id
    with Ledger.open(settings.ledger_path, read_only=True) as ledger:
        unresolved = ledger.unresolved(tenant)
        stale = ledger.stale_pending(tenant, now=now, lease_seconds=lease_seconds(settings))
    problems += [
        f"{r.name} is {r.state}" + (f" ({r.last_error})" if r.last_error else "")
        for r in unresolved
    ]
    problems += [f"{r.name} was interrupted mid-create: outcome unknown" for r in stale]
    produced = [r for r in rows if r.analysis_id and r.window_end >= now - max_age]
    if not produced:
        hours = max_age.total_seconds() / 3600
        problems.insert(0, f"no analysis created for a window ending in the last {hours:g} h")
    return problems


# --- check --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckLine:
    what: str
    ok: bool
    detail: str


def check(job: Job) -> list[CheckLine]:
    """Open the ledger for writing and request a token; report each separately."""
    lines = [CheckLine("config", True, str(job.settings.source))]
    try:
        with Ledger.open(job.settings.ledger_path) as ledger:
            ledger.check_writable()
        lines.append(CheckLine("ledger", True, str(job.settings.ledger_path)))
    except HourlyReportError as err:
        lines.append(CheckLine("ledger", False, str(err)))
    try:
        job.client().token()
        lines.append(
            CheckLine("token", True, f"client {job.settings.opsramp.client_id} authenticated")
        )
    except HourlyReportError as err:
        lines.append(CheckLine("token", False, str(err)))
    return lines


def _prefix(job: Job) -> str:
    return job.settings.report.name_prefix

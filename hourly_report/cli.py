"""The click command line: thin commands over :mod:`hourly_report.jobs`.

This is the only module that imports click, and the one place where the
project's errors become a single line on stderr and an exit status
(0 success, 1 an operation failed, 2 usage or configuration error).
Heavy modules (requests, tenacity, sqlite) are imported inside the commands so
``--version`` and ``--help`` start fast.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, NoReturn

import click

from hourly_report import __version__
from hourly_report.errors import HourlyReportError, TerminatedError

if TYPE_CHECKING:
    from hourly_report.config import Settings
    from hourly_report.jobs import Job, JobResult, StatusRow
    from hourly_report.logs import TailBuffer

LOGGER = "hourly_report"

PROG = "hourly-report"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
MAX_DAYS_WITHOUT_YES = 31
STATUS_GRACE = timedelta(minutes=15)
FUTURE_TOLERANCE = timedelta(minutes=1)  # clock skew between hosts


# --- parameter types ------------------------------------------------------------------


def _parse_timestamp(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value is None or isinstance(value, datetime):
        return value
    from hourly_report.windows import parse_instant

    try:
        instant = parse_instant(value)
    except ValueError as err:
        raise click.BadParameter(str(err), ctx, param) from None
    # A window that has not really ended must never be created, whatever --at says.
    if instant > datetime.now(timezone.utc) + FUTURE_TOLERANCE:
        raise click.BadParameter(f"{value!r} is in the future", ctx, param)
    return instant


def _parse_day(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value is None or isinstance(value, date):
        return value
    from hourly_report.windows import parse_day

    try:
        return parse_day(value)
    except ValueError as err:
        raise click.BadParameter(str(err), ctx, param) from None


_DURATION_PART = re.compile(r"(\d+)([smhd])")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION_UNITS_DESC = sorted(_DURATION_UNITS.items(), key=lambda item: -item[1])


def _parse_duration(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """``90m``, ``2h``, ``1h30m``, ``1d``, ``3600s`` or plain seconds."""
    if value is None or isinstance(value, timedelta):
        return value
    text = str(value).strip().lower()
    if text.isdigit():
        text += "s"
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise click.BadParameter(
            f"{value!r} is not a duration (examples: 90m, 2h, 1h30m, 1d)", ctx, param
        )
    seconds = sum(int(n) * _DURATION_UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise click.BadParameter(f"{value!r} must be longer than 0", ctx, param)
    return timedelta(seconds=seconds)


def day_option(help_text: str, *names: str) -> Callable[[Any], Any]:
    return click.option(*names, metavar="YYYY-MM-DD", callback=_parse_day, help=help_text)


at_option = click.option(
    "--at",
    metavar="TIMESTAMP",
    callback=_parse_timestamp,
    help="Act as if it were TIMESTAMP (ISO 8601 with Z or an offset, e.g. "
    "2026-02-12T08:05:00Z; not in the future). Default: now.",
)
retry_unknown_option = click.option(
    "--retry-unknown",
    is_flag=True,
    help="Also re-send creates whose earlier outcome was unknown (check OpsRamp first).",
)
dry_run_option = click.option(
    "--dry-run",
    is_flag=True,
    help="Print the requests that would be sent; send nothing and write nothing.",
)


# --- invocation state ----------------------------------------------------------------------


class State:
    """What the group options decided, shared by every command.

    (A plain class: ``dataclasses`` would cost ``--help`` a few milliseconds.)
    """

    def __init__(self, config_path: str | None, log_level: str, log_format: str = "text"):
        self.config_path = config_path
        self.log_level = log_level
        self.log_format = log_format
        self.tail: TailBuffer | None = None
        self._settings: Settings | None = None

    def settings(self, *, need_secret: bool = True) -> Settings:
        if self._settings is None:
            from hourly_report import config

            path = config.resolve_path(self.config_path, os.environ)
            self._settings = config.load(path, os.environ, need_secret=need_secret)
        return self._settings

    def job(self, at: datetime | None, bar: Any = None) -> Job:
        """A Job at ``at`` (default now); ``bar``: a click progress bar to drive, if any."""
        from hourly_report.clock import SystemClock
        from hourly_report.jobs import Job

        clock = SystemClock()
        now = at or datetime.fromtimestamp(clock.time(), tz=timezone.utc)
        job = Job(self.settings(), clock, now, emit=_emit)
        if bar is not None:
            job.progress = lambda outcome: bar.update(1)
            job.expect = lambda total: setattr(bar, "length", max(total, 1))
        return job


class Group(click.Group):
    """Turns the project's errors into one line and an exit status, in one place."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except HourlyReportError as err:
            _fail(ctx, str(err), err.exit_code, err)
        except KeyboardInterrupt:
            _fail(ctx, "interrupted", 130, None)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as err:
            _fail(
                ctx,
                f"internal error: {type(err).__name__}: {err} "
                "(re-run with --log-level DEBUG for the traceback and report it)",
                1,
                err,
            )


def _fail(ctx: click.Context, message: str, code: int, err: BaseException | None) -> NoReturn:
    import logging

    from hourly_report.logs import JsonFormatter, redact

    log = logging.getLogger(LOGGER)
    if err is not None and log.isEnabledFor(logging.DEBUG):
        log.debug("traceback", exc_info=err)
    line = f"{PROG}: error: {redact(message)}"
    state = ctx.find_object(State)
    if state is not None and state.log_format == "json":
        # --log-format json promises one JSON object per stderr line, errors included.
        record = logging.LogRecord(log.name, logging.ERROR, __file__, 0, line, None, None)
        line = JsonFormatter().format(record)
    click.echo(line, err=True)
    ctx.exit(code)


def _emit(text: str) -> None:
    click.echo(text)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    metavar="PATH",
    help="Configuration file. Default: $HOURLY_REPORT_CONFIG, else ./config.ini.",
)
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default="WARNING",
    show_default=True,
    help="Log verbosity on stderr. DEBUG also shows tracebacks.",
)
@click.option(
    "--log-format",
    type=click.Choice(("text", "json")),
    default="text",
    show_default=True,
    help="json: one JSON object per line.",
)
@click.version_option(__version__, prog_name=PROG, message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, log_level: str, log_format: str) -> None:
    """Create one OpsRamp performance-utilization report per hour, and clean them up.

    \b
    Run from cron:   hourly-report run          (every hour, at :05)
                     hourly-report cleanup      (every night)
    By hand:         hourly-report backfill --date 2026-02-12
                     hourly-report status
                     hourly-report check
    Try it locally:  hourly-report demo
    """
    from hourly_report.logs import configure_logging

    state = State(config_path, log_level.upper(), log_format)
    state.tail = configure_logging(state.log_level, log_format)
    ctx.obj = state


# --- run / backfill / cleanup ----------------------------------------------------------------


@cli.command(short_help="Create the report of the hour that just ended.")
@at_option
@retry_unknown_option
@dry_run_option
@click.pass_obj
def run(state: State, at: datetime | None, retry_unknown: bool, dry_run: bool) -> None:
    """Create the analysis of the hour that just ended (cron: every hour at :05).

    Does nothing, and exits 0, if that window is already in the ledger or another
    run is creating it right now.

    \b
    Example:  hourly-report run
              hourly-report run --at 2026-02-12T08:05:00Z --dry-run
    """
    from hourly_report import jobs

    job = state.job(at)
    job.retry_unknown = retry_unknown
    result = _execute(state, job, lambda: jobs.run(job, dry_run=dry_run), monitored=not dry_run)
    _exit(result.exit_code)


@cli.command(short_help="Create the missing hours of a day or range.")
@day_option("The day to fill (in [report] timezone).", "--date", "day")
@day_option("First day of a range (inclusive).", "--from", "first")
@day_option("Last day of a range (inclusive).", "--to", "last")
@click.option("--yes", is_flag=True, help=f"Allow a range over {MAX_DAYS_WITHOUT_YES} days.")
@at_option
@retry_unknown_option
@dry_run_option
@click.pass_obj
def backfill(
    state: State,
    day: date | None,
    first: date | None,
    last: date | None,
    yes: bool,
    at: datetime | None,
    retry_unknown: bool,
    dry_run: bool,
) -> None:
    """Create the missing, ended hours of a day or a range of days.

    Windows already in the ledger are skipped, so running it twice creates
    nothing the second time. Failed windows are tried again; windows whose
    earlier outcome is unknown only with --retry-unknown.

    \b
    Example:  hourly-report backfill --date 2026-02-12
              hourly-report backfill --from 2026-02-01 --to 2026-02-07
    """
    from hourly_report import jobs
    from hourly_report.windows import days_between

    days = _days(day, first, last, yes, days_between)
    with _progress("backfill", state) as bar:
        job = state.job(at, bar)
        job.retry_unknown = retry_unknown
        result = _execute(
            state,
            job,
            lambda: jobs.backfill(job, days, dry_run=dry_run),
            monitored=not dry_run,
            log_summary=False,  # printed on stdout below
        )
    click.echo(result.summary())
    _exit(result.exit_code)


def _days(
    day: date | None,
    first: date | None,
    last: date | None,
    yes: bool,
    days_between: Callable[[date, date], list[date]],
) -> list[date]:
    if day and (first or last):
        raise click.UsageError("use either --date or --from/--to, not both")
    if day:
        return [day]
    if not (first and last):
        raise click.UsageError("give --date YYYY-MM-DD, or both --from and --to")
    if last < first:
        raise click.UsageError(f"--to {last} is before --from {first}")
    days = days_between(first, last)
    if len(days) > MAX_DAYS_WITHOUT_YES and not yes:
        raise click.UsageError(
            f"{len(days)} days is a large backfill (over {MAX_DAYS_WITHOUT_YES}); add --yes"
        )
    return days


@cli.command(short_help="Delete the reports of finished days.")
@day_option("Delete that day's analyses only.", "--date", "day")
@click.option(
    "--id", "ids", multiple=True, metavar="ID", help="Delete this analysis ID (repeatable)."
)
@at_option
@dry_run_option
@click.pass_obj
def cleanup(
    state: State, day: date | None, ids: tuple[str, ...], at: datetime | None, dry_run: bool
) -> None:
    """Delete the analyses of finished days (cron: nightly).

    Without options: every analysis in the ledger whose day has ended and that is
    not deleted yet, so failures of earlier nights are retried. A 404 counts as
    already deleted.

    \b
    Example:  hourly-report cleanup
              hourly-report cleanup --date 2026-02-12
              hourly-report cleanup --id 3f1c... --id 9a2b...
    """
    from hourly_report import jobs

    if any(not analysis_id.strip() for analysis_id in ids):
        raise click.UsageError("--id needs a non-empty analysis ID")
    with _progress("cleanup", state) as bar:
        job = state.job(at, bar)
        result = _execute(
            state,
            job,
            lambda: jobs.cleanup(job, day=day, ids=ids, dry_run=dry_run),
            monitored=not dry_run,
        )
    _exit(result.exit_code)


def _execute(
    state: State,
    job: Job,
    action: Callable[[], JobResult],
    *,
    monitored: bool,
    log_summary: bool = True,
) -> JobResult:
    """Run a job between monitoring pings and log its summary."""
    pinger = _pinger(job) if monitored else None
    if pinger:
        pinger.start()
    code = 1
    try:
        with _terminate_as_exit():
            result = action()
        code = result.exit_code
        _log_result(result, log_summary)
        return result
    except HourlyReportError as err:
        code = err.exit_code
        raise
    finally:
        job.close()
        if pinger:
            tail = state.tail.text() if state.tail else ""
            if code == 0:
                pinger.success(tail)
            else:
                pinger.failure(code, tail)
            pinger.close()


def _log_result(result: JobResult, log_summary: bool) -> None:
    import logging

    log = logging.getLogger(LOGGER)
    if result.stopped:
        log.error("%s stopped: %s", result.action, result.stopped)
    # Each failure was already logged on its own line; the summary adds to that only
    # when the job handled several items, so a failed `run` stays one line on stderr.
    if not log_summary:
        return
    if result.exit_code and len(result.outcomes) > 1:
        log.error("%s", result.summary())
    else:
        log.info("%s", result.summary())


def _pinger(job: Job) -> Any:
    if not job.settings.ping_url:
        return None
    from hourly_report.monitoring import Pinger
    from hourly_report.opsramp import USER_AGENT

    api = job.settings.opsramp
    return Pinger(job.settings.ping_url, user_agent=USER_AGENT, proxy=api.proxy, verify=api.verify)


@contextmanager
def _terminate_as_exit() -> Iterator[None]:
    """Turn SIGTERM (systemd stop, timeout) into an exception so the ledger records it."""
    import signal

    def handler(signum: int, frame: object) -> None:
        raise TerminatedError(
            "terminated by SIGTERM (systemd stop or timeout?); a window being created at "
            "that moment is recorded as unknown (see 'hourly-report status')"
        )

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (e.g. the in-process demo): leave it
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def _progress(label: str, state: State) -> Iterator[Any]:
    """A progress bar on stderr, only when stderr is a terminal and logs are quiet."""
    if not sys.stderr.isatty() or state.log_level in ("DEBUG", "INFO"):
        yield None
        return
    with click.progressbar(length=1, label=label, file=sys.stderr) as bar:
        yield bar


def _exit(code: int) -> None:
    if code:
        raise click.exceptions.Exit(code)


# --- status / check ----------------------------------------------------------------------


@cli.command(short_help="Show a day's windows; --max-age for monitoring.")
@day_option("The day to show. Default: today.", "--date", "day")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array instead of a table.")
@click.option(
    "--max-age",
    metavar="DURATION",
    callback=_parse_duration,
    help="Monitoring mode: exit 1 if no analysis was created in this long (e.g. 2h), a "
    "window that ended in that time is missing, or any window is still failed, unknown or "
    "interrupted, however old.",
)
@at_option
@click.pass_obj
def status(
    state: State, day: date | None, as_json: bool, max_age: timedelta | None, at: datetime | None
) -> None:
    """Show the ledger for a day: one row per window, created or not.

    \b
    Example:  hourly-report status
              hourly-report status --date 2026-02-12 --json
              hourly-report status --max-age 2h      (for Nagios / an agent check)
    """
    from hourly_report import jobs, windows

    settings = state.settings(need_secret=False)  # status reads only the ledger
    now = at or datetime.now(timezone.utc)
    import json

    if max_age is not None:
        problems = jobs.freshness_problems(settings, now, max_age, STATUS_GRACE)
        if as_json:
            click.echo(json.dumps({"ok": not problems, "problems": problems}, indent=2))
        elif problems:
            click.echo("CRITICAL: " + "; ".join(problems))
        else:
            click.echo(f"OK: every window of the last {_human(max_age)} created, none failed")
        _exit(1 if problems else 0)
        return
    rows = jobs.day_status(settings, day or windows.today(now, settings.report.zone), now)
    if as_json:
        click.echo(json.dumps([row.to_json() for row in rows], indent=2))
    else:
        click.echo(_table(rows))


def _human(duration: timedelta) -> str:
    """``2h``, ``1h30m``, ``1d``: a duration as the operator wrote it."""
    seconds, text = int(duration.total_seconds()), ""
    for unit, size in _DURATION_UNITS_DESC:
        if seconds >= size:
            text += f"{seconds // size}{unit}"
            seconds %= size
    return text or "0s"


def _table(rows: list[StatusRow]) -> str:
    from hourly_report.windows import iso_z

    header = ("NAME", "START (UTC)", "END (UTC)", "ANALYSIS ID", "STATE", "LAST ERROR")
    lines = [
        (
            r.name,
            iso_z(r.window_start),
            iso_z(r.window_end),
            r.analysis_id or "-",
            r.state,
            _clip(r.last_error or "", 80),
        )
        for r in rows
    ]
    widths = [max(len(str(c)) for c in col) for col in zip(header, *lines, strict=False)]
    return "\n".join(
        "  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
        for line in (header, *lines)
    )


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


@cli.command(short_help="Check config, ledger and credentials.")
@click.pass_obj
def check(state: State) -> None:
    """Validate the configuration, open the ledger, and request a token.

    The "is my setup right?" command: run it after installing or changing the
    configuration. Exits 0 when all is well.

    \b
    Example:  hourly-report --config /etc/hourly-report/config.ini check
    """
    from hourly_report import jobs

    job = state.job(None)
    try:
        lines = jobs.check(job)
    finally:
        job.close()
    for line in lines:
        click.echo(f"{'ok' if line.ok else 'FAIL':<5} {line.what:<7} {line.detail}")
    _exit(0 if all(line.ok for line in lines) else 1)


# --- sandbox / demo -------------------------------------------------------------------------


@cli.command(short_help="Serve a local OpsRamp-compatible API.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    default=8080,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to listen on (0: any free port).",
)
@click.option(
    "--tenant-id", default="sandbox-tenant", show_default=True, help="The one tenant it serves."
)
@click.option(
    "--client-id", default="sandbox-client", show_default=True, help="The client it accepts."
)
@click.option(
    "--client-secret",
    default="sandbox-secret",
    show_default=True,
    envvar="HOURLY_REPORT_SANDBOX_SECRET",
    help="The secret it accepts (or $HOURLY_REPORT_SANDBOX_SECRET).",
)
def sandbox(host: str, port: int, tenant_id: str, client_id: str, client_secret: str) -> None:
    """Serve a local OpsRamp-compatible API (token, create, delete) for rehearsals.

    Faults can be injected over HTTP (see the README, "sandbox and demo"), e.g.
    curl -X POST localhost:8080/_sandbox/faults -d '{"endpoint":"create","status":503}'

    \b
    Example:  hourly-report sandbox --port 8080
    """
    from hourly_report.sandbox import Sandbox

    try:
        server = Sandbox(
            host, port, tenant_id=tenant_id, client_id=client_id, client_secret=client_secret
        )
    except OSError as err:
        raise click.ClickException(f"cannot listen on {host}:{port}: {err.strerror}") from None
    click.echo(
        f"OpsRamp sandbox listening on {server.base_url} (tenant {tenant_id}, "
        f"client {client_id}); Ctrl-C to stop"
    )
    server.serve_forever()


@cli.command(short_help="Run the main job against a built-in sandbox.")
@click.pass_obj
def demo(state: State) -> None:
    """Run the main job end to end against a built-in sandbox, and show the result.

    Starts a local OpsRamp sandbox on a free port, writes a throw-away config and
    ledger in a temporary directory, then runs: run, run again (nothing to do),
    backfill of yesterday, status, cleanup, status. Nothing leaves this machine.

    \b
    Example:  hourly-report demo
    """
    from hourly_report.demo import run_demo

    _exit(run_demo(click.echo))


def main(argv: list[str] | None = None) -> NoReturn:
    """Console-script entry point: usage errors, too, are one line on stderr."""
    try:
        code = cli.main(args=argv, prog_name=PROG, standalone_mode=False)
    except click.UsageError as err:
        where = err.ctx.command_path if err.ctx else PROG
        click.echo(f"{PROG}: error: {err.format_message()} (see '{where} --help')", err=True)
        sys.exit(err.exit_code)
    except click.ClickException as err:
        click.echo(f"{PROG}: error: {err.format_message()}", err=True)
        sys.exit(err.exit_code)
    except click.Abort:
        click.echo(f"{PROG}: error: aborted", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])

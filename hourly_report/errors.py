"""The project's exceptions.

Library modules raise these; ``cli`` turns them into one line on stderr and an
exit status, in one place.  ``exit_code`` follows the design: 1 for an operation
that failed, 2 for a usage or configuration error.
"""

from __future__ import annotations


class HourlyReportError(Exception):
    """Base class: ``str(err)`` is the one-line message shown to the operator."""

    exit_code = 1


class ConfigError(HourlyReportError):
    """The configuration file, a value in it, or a command-line argument is wrong."""

    exit_code = 2


class LedgerError(HourlyReportError):
    """The SQLite ledger cannot be opened, migrated, read or written."""


class ApiError(HourlyReportError):
    """OpsRamp answered with an error, or could not be reached."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class AuthError(ApiError):
    """The token endpoint refused the credentials, or a fresh token was refused."""


class OutcomeUnknownError(ApiError):
    """A create was sent but its outcome is unknown (timeout, dropped reply, 500/502/504).

    The analysis may or may not exist in OpsRamp; it must not be re-sent blindly.
    """


class ServiceUnavailableError(ApiError):
    """OpsRamp cannot serve this job now: unreachable, or no token could be obtained.

    Every remaining request of the job would fail the same way, so the job stops.
    """


class DeadlineExceededError(HourlyReportError):
    """The invocation's total time budget ran out (attempts plus waits)."""


class TerminatedError(HourlyReportError):
    """SIGTERM arrived (systemd stop or start timeout, ``kill``): stop where we are."""

    exit_code = 143  # 128 + SIGTERM, as a shell reports it

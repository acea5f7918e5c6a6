"""Logging set-up: stderr output (text or JSON), secret redaction, a tail buffer.

Everything goes through the *root* logger so that third-party records (urllib3's
connection debug lines in particular) pass through the same :class:`RedactingFilter`
as our own.  Secrets are registered at run time with :func:`register_secret` and
never reach any handler installed here, at any level.

The design's quiet-on-success rule is kept by the stderr handler's level (default
WARNING); the :class:`TailBuffer` still sees INFO so the monitoring ping can carry
the last few lines of a run.
"""

from __future__ import annotations

import collections
import json
import logging
import re
import sys
import threading
from datetime import datetime, timezone
from typing import Any, TextIO

from hourly_report.errors import ConfigError

LOGGER_NAME = "hourly_report"
TAIL_BYTES = 10_000
MIN_SECRET_LENGTH = 4
MASK = "***"
FORMATS = ("text", "json")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

# Extra fields copied into JSON lines.  ``name`` is reserved on LogRecord (it is the
# logger's name), so callers pass the analysis name as ``analysis_name``; see
# :func:`extra_fields`.
_EXTRA_KEYS = {
    "window": "window",
    "analysis_name": "name",
    "analysis_id": "analysis_id",
    "state": "state",
    "status": "status",
    "attempt": "attempt",
}

_secrets: set[str] = set()
_secrets_lock = threading.Lock()

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?i)\b(bearer)\s+[^\s'\",;]+"), r"\1 " + MASK),
    (
        # JSON or Python-repr bodies: "access_token": "…", 'client_secret': '…'
        re.compile(
            r"""(?i)(?P<key>["'](?:access_token|refresh_token|id_token|client_secret)["']"""
            r"""\s*:\s*)(?P<q>["'])(?:\\.|(?!(?P=q)).)*(?P=q)"""
        ),
        r"\g<key>\g<q>" + MASK + r"\g<q>",
    ),
    (
        # form bodies and query strings: client_secret=…&…
        re.compile(r"(?i)\b(access_token|refresh_token|id_token|client_secret)=[^&\s'\",;]*"),
        r"\1=" + MASK,
    ),
)


def register_secret(value: str | None) -> None:
    """Never let ``value`` appear in log output (short or empty values are ignored)."""
    if value and len(value) >= MIN_SECRET_LENGTH:
        with _secrets_lock:
            _secrets.add(value)


def redact(text: str) -> str:
    """``text`` with every registered secret and every token-looking value masked."""
    with _secrets_lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        text = text.replace(secret, MASK)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def extra_fields(**fields: Any) -> dict[str, Any]:
    """``extra=`` for a log call; ``name=`` is renamed (LogRecord reserves ``name``)."""
    if "name" in fields:
        fields["analysis_name"] = fields.pop("name")
    return {key: value for key, value in fields.items() if value is not None}


class RedactingFilter(logging.Filter):
    """Masks secrets in the message, its arguments, the traceback and extra fields.

    The record is rewritten in place (message pre-formatted, ``args`` cleared) so
    every handler that sees it afterwards sees only the redacted text.
    """

    _traceback_formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(_message_of(record))
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._traceback_formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for key in _EXTRA_KEYS:
            value = getattr(record, key, None)
            if value is not None and not isinstance(value, (bool, int, float)):
                setattr(record, key, redact(str(value)))
        return True


def _message_of(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:  # a bad format string must not turn logging into a crash
        return f"{record.msg!s} {record.args!r}"


def _utc_iso(created: float, msecs: float | None = None) -> str:
    stamp = datetime.fromtimestamp(created, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return stamp + ("Z" if msecs is None else f".{int(msecs):03d}Z")


class TextFormatter(logging.Formatter):
    """``2026-02-12T08:05:01Z WARNING message`` — UTC, whatever the host zone."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _utc_iso(record.created)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, extras, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _utc_iso(record.created, record.msecs),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for attr, key in _EXTRA_KEYS.items():
            if hasattr(record, attr):
                entry[key] = getattr(record, attr)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, default=str)


class TailBuffer(logging.Handler):
    """Keeps the last ``max_bytes`` of formatted log text (UTF-8), oldest dropped first."""

    def __init__(self, level: int = logging.NOTSET, max_bytes: int = TAIL_BYTES) -> None:
        super().__init__(level)
        self.max_bytes = max_bytes
        self._lines: collections.deque[bytes] = collections.deque()
        self._size = 0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = (self.format(record) + "\n").encode("utf-8")
        except Exception:
            self.handleError(record)
            return
        self._append(line[-self.max_bytes :])

    def _append(self, line: bytes) -> None:
        # ``handle`` already holds self.lock around ``emit``.
        self._lines.append(line)
        self._size += len(line)
        while self._size > self.max_bytes:
            self._size -= len(self._lines.popleft())

    def text(self) -> str:
        """The buffered lines; a character cut in half at the front is dropped."""
        self.acquire()
        try:
            data = b"".join(self._lines)
        finally:
            self.release()
        return data.decode("utf-8", errors="ignore")


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the stream handler as ours, so re-configuration can find and replace it."""


def configure_logging(
    level: str = "WARNING", fmt: str = "text", stream: TextIO | None = None
) -> TailBuffer:
    """Install redacted stderr logging on the root logger; return the tail buffer.

    Calling it again replaces the stream handler and keeps the same tail buffer.
    """
    numeric = _level_number(level)
    formatter = _formatter(fmt)
    root = logging.getLogger()
    tail = _replace_handlers(root)
    handler = _StderrHandler(stream if stream is not None else sys.stderr)
    handler.setLevel(numeric)
    handler.setFormatter(formatter)
    handler.addFilter(RedactingFilter())
    root.addHandler(handler)
    tail.setLevel(min(numeric, logging.INFO))
    root.addHandler(tail)
    # The root must let INFO through for the tail buffer; stderr stays at ``level``.
    root.setLevel(min(numeric, logging.INFO))
    logging.getLogger("urllib3").setLevel(
        logging.DEBUG if numeric <= logging.DEBUG else logging.NOTSET
    )
    return tail


def _level_number(level: str) -> int:
    name = level.strip().upper()
    if name not in LEVELS:
        raise ConfigError(f"unknown log level {level!r}: use one of {', '.join(LEVELS)}")
    return int(getattr(logging, name))


def _formatter(fmt: str) -> logging.Formatter:
    if fmt not in FORMATS:
        raise ConfigError(f"unknown log format {fmt!r}: use text or json")
    return JsonFormatter() if fmt == "json" else TextFormatter()


def _replace_handlers(root: logging.Logger) -> TailBuffer:
    """Remove our previous handlers; return the existing tail buffer or a new one."""
    tail: TailBuffer | None = None
    for handler in list(root.handlers):
        if isinstance(handler, TailBuffer):
            tail = handler
        if isinstance(handler, (TailBuffer, _StderrHandler)):
            root.removeHandler(handler)
    if tail is None:
        tail = TailBuffer()
        tail.setFormatter(TextFormatter())
        tail.addFilter(RedactingFilter())
    return tail

"""Logging: formats, levels, the tail buffer and secret redaction."""

from __future__ import annotations

import io
import json
import logging
import re

import pytest

from hourly_report import logs
from hourly_report.errors import ConfigError

SECRET = "s3cr3t-client-value"
TOKEN = "eyJhbGciOiJSUzI1NiJ9.payload.signature"
TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ (DEBUG|INFO|WARNING|ERROR) .*$")


@pytest.fixture(autouse=True)
def clean_logging(monkeypatch):
    """Restore the root logger, urllib3's level and the secret registry after each test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    urllib3_level = logging.getLogger("urllib3").level
    monkeypatch.setattr(logs, "_secrets", set())
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    logging.getLogger("urllib3").setLevel(urllib3_level)


@pytest.fixture
def stream():
    return io.StringIO()


def lines_of(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def log() -> logging.Logger:
    return logging.getLogger(logs.LOGGER_NAME + ".test")


def test_text_format_is_utc_time_level_and_message(stream):
    logs.configure_logging("INFO", "text", stream)
    log().info("created %s", "hourly-perf-report-2026-02-12-0700-0800")
    [line] = lines_of(stream)
    assert TEXT_LINE.match(line)
    assert line.endswith(" INFO created hourly-perf-report-2026-02-12-0700-0800")


def test_json_format_writes_one_object_per_line_with_extras(stream):
    logs.configure_logging("INFO", "json", stream)
    extra = logs.extra_fields(window="07:00-08:00", name="n-1", analysis_id="a1", attempt=2)
    log().info("created", extra=extra)
    log().warning("throttled", extra={"status": 429, "state": "failed"})
    first, second = (json.loads(line) for line in lines_of(stream))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"])
    assert first["level"] == "INFO"
    assert first["logger"] == "hourly_report.test"
    assert first["message"] == "created"
    assert first["window"] == "07:00-08:00"
    assert first["name"] == "n-1"
    assert (first["analysis_id"], first["attempt"]) == ("a1", 2)
    assert (second["status"], second["state"]) == (429, "failed")
    assert "exception" not in second
    assert "window" not in second


def test_json_format_carries_the_traceback(stream):
    logs.configure_logging("INFO", "json", stream)
    try:
        raise ValueError("boom")
    except ValueError:
        log().exception("it failed")
    [entry] = [json.loads(line) for line in lines_of(stream)]
    assert entry["level"] == "ERROR"
    assert "Traceback" in entry["exception"]
    assert "ValueError: boom" in entry["exception"]


def test_default_level_is_quiet_on_success_but_the_tail_keeps_info(stream):
    tail = logs.configure_logging(stream=stream)
    log().info("window created")
    log().debug("noise")
    log().warning("ping failed")
    assert len(lines_of(stream)) == 1
    assert "WARNING ping failed" in stream.getvalue()
    assert "window created" in tail.text()
    assert "noise" not in tail.text()


def test_debug_level_shows_debug_and_enables_urllib3(stream):
    tail = logs.configure_logging("debug", "text", stream)
    log().debug("details")
    assert "DEBUG details" in stream.getvalue()
    assert "details" in tail.text()
    assert logging.getLogger("urllib3").getEffectiveLevel() == logging.DEBUG


def test_error_level_hides_warnings(stream):
    logs.configure_logging("ERROR", "text", stream)
    log().warning("hidden")
    log().error("shown")
    [line] = lines_of(stream)
    assert line.endswith(" ERROR shown")


def test_configure_twice_does_not_duplicate_handlers(stream):
    first = logs.configure_logging("INFO", "text", io.StringIO())
    second = logs.configure_logging("INFO", "json", stream)
    ours = [h for h in logging.getLogger().handlers if isinstance(h, logs.TailBuffer)]
    assert ours == [first]
    assert second is first
    log().warning("once")
    assert len(lines_of(stream)) == 1
    assert first.text().count("once") == 1


@pytest.mark.parametrize(("level", "fmt"), [("LOUD", "text"), ("INFO", "xml")])
def test_unknown_level_or_format_is_a_config_error(level, fmt):
    with pytest.raises(ConfigError):
        logs.configure_logging(level, fmt, io.StringIO())


def test_tail_buffer_keeps_only_the_newest_ten_kilobytes():
    tail = logs.TailBuffer()
    tail.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("tail-test")
    logger.propagate, logger.level = False, logging.INFO
    logger.addHandler(tail)
    try:
        for number in range(1000):
            logger.info("line %04d %s", number, "é" * 40)
    finally:
        logger.removeHandler(tail)
    text = tail.text()
    assert 9_000 < len(text.encode("utf-8")) <= logs.TAIL_BYTES
    assert text.endswith(f"line 0999 {'é' * 40}\n")
    assert "line 0000" not in text


def test_tail_buffer_truncates_a_single_huge_line():
    tail = logs.TailBuffer()
    tail.setFormatter(logging.Formatter("%(message)s"))
    tail.handle(logging.makeLogRecord({"msg": "x" * 50_000 + "END"}))
    assert len(tail.text().encode("utf-8")) <= logs.TAIL_BYTES
    assert tail.text().endswith("END\n")


def test_registered_secrets_are_masked_in_message_and_args(stream):
    tail = logs.configure_logging("INFO", "text", stream)
    logs.register_secret(SECRET)
    log().warning("secret in message " + SECRET)
    log().warning("secret in args %s / %r", SECRET, {"k": SECRET})
    output = stream.getvalue() + tail.text()
    assert SECRET not in output
    assert output.count("***") >= 6


def test_short_and_empty_values_are_not_registered(stream):
    logs.configure_logging("INFO", "text", stream)
    for value in (None, "", "abc"):
        logs.register_secret(value)
    log().warning("abc stays")
    assert "abc stays" in stream.getvalue()


@pytest.mark.parametrize(
    ("message", "leaked"),
    [
        (f"Authorization: Bearer {TOKEN}", TOKEN),
        (f"{{'Authorization': 'bearer {TOKEN}'}}", TOKEN),
        (f'{{"access_token": "{TOKEN}", "token_type": "bearer"}}', TOKEN),
        (f"{{'access_token': '{TOKEN}'}}", TOKEN),
        (f"grant_type=client_credentials&client_id=me&client_secret={SECRET}", SECRET),
        (f'{{"client_secret": "{SECRET}"}}', SECRET),
    ],
)
def test_token_shaped_values_are_masked_without_registration(stream, message, leaked):
    logs.configure_logging("DEBUG", "text", stream)
    log().debug(message)
    assert leaked not in stream.getvalue()
    assert "***" in stream.getvalue()


def test_form_body_keeps_non_secret_fields(stream):
    logs.configure_logging("DEBUG", "text", stream)
    log().debug("body grant_type=client_credentials&client_secret=%s&x=1", SECRET)
    assert "grant_type=client_credentials&client_secret=***&x=1" in stream.getvalue()


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_secrets_are_masked_in_tracebacks(stream, fmt):
    tail = logs.configure_logging("INFO", fmt, stream)
    logs.register_secret(SECRET)
    try:
        raise RuntimeError(f"token request failed for {SECRET} with Bearer {TOKEN}")
    except RuntimeError:
        log().exception("failure")
    output = stream.getvalue() + tail.text()
    assert "RuntimeError" in output
    assert SECRET not in output
    assert TOKEN not in output


def test_urllib3_debug_records_are_masked(stream):
    logs.configure_logging("DEBUG", "text", stream)
    logs.register_secret(TOKEN)
    urllib3_log = logging.getLogger("urllib3.connectionpool")
    url = f"/x?access_token={TOKEN}"
    # the shape of urllib3.connectionpool's per-request debug line
    urllib3_log.debug(
        '%s://%s:%s "%s %s %s" %s %s', "https", "h", 443, "GET", url, "HTTP/1.1", 200, 9
    )
    assert '"GET /x?access_token=*** HTTP/1.1" 200' in stream.getvalue()
    assert TOKEN not in stream.getvalue()


def test_secret_in_an_extra_field_is_masked(stream):
    logs.configure_logging("INFO", "json", stream)
    logs.register_secret(SECRET)
    log().warning("x", extra={"state": f"failed: {SECRET}"})
    [entry] = [json.loads(line) for line in lines_of(stream)]
    assert entry["state"] == "failed: ***"


def test_bad_format_arguments_do_not_make_the_filter_raise():
    record = logging.makeLogRecord({"msg": "two %s %s " + SECRET, "args": ("only-one",)})
    logs.register_secret(SECRET)
    assert logs.RedactingFilter().filter(record)
    assert record.getMessage() == "two %s %s *** ('only-one',)"

"""Tests for hourly_report.windows: hour windows, local days and names."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from itertools import pairwise
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hourly_report.windows import (
    Window,
    api_time,
    day_bounds,
    day_has_ended,
    day_of,
    days_between,
    ended_windows_of_day,
    from_iso_z,
    iso_z,
    latest_ended_window,
    load_zone,
    parse_day,
    parse_instant,
    today,
    window_name,
    windows_of_day,
)

P = "hourly-perf-report"
HOUR = timedelta(hours=1)
QUARTER = timedelta(minutes=15)


def utc(text: str) -> datetime:
    """``2026-02-12T08:05`` or ``...:05.5`` (no offset) read as UTC."""
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def zi(name: str) -> ZoneInfo:
    return ZoneInfo(name)


# --- latest_ended_window: fixed cases -------------------------------------------------


@pytest.mark.parametrize(
    ("at", "start", "name"),
    [
        ("2026-02-12T08:05:00", "2026-02-12T07:00", f"{P}-2026-02-12-0700-0800"),
        ("2026-02-12T08:00:00", "2026-02-12T07:00", f"{P}-2026-02-12-0700-0800"),
        ("2026-02-12T07:59:59.999", "2026-02-12T06:00", f"{P}-2026-02-12-0600-0700"),
        ("2026-02-13T00:05:00", "2026-02-12T23:00", f"{P}-2026-02-12-2300-0000"),
        ("2026-02-13T00:00:00", "2026-02-12T23:00", f"{P}-2026-02-12-2300-0000"),
    ],
)
def test_latest_ended_window_utc(at: str, start: str, name: str) -> None:
    window = latest_ended_window(utc(at), zi("UTC"), P)
    assert window == Window(utc(start), utc(start) + HOUR, name)
    assert window.start.tzinfo is timezone.utc
    assert window.end.tzinfo is timezone.utc


def test_latest_ended_window_api_times() -> None:
    window = latest_ended_window(utc("2026-02-12T08:05:00"), zi("UTC"), P)
    assert api_time(window.start) == "2026-02-12T07:00:00.000Z"
    assert api_time(window.end) == "2026-02-12T08:00:00.000Z"


@pytest.mark.parametrize(
    ("zone", "at", "start"),
    [
        ("America/New_York", "2026-03-08T07:05", "2026-03-08T06:00"),
        ("America/New_York", "2026-11-01T05:05", "2026-11-01T04:00"),
        ("America/New_York", "2026-11-01T06:05", "2026-11-01T05:00"),
        ("America/New_York", "2026-11-01T07:05", "2026-11-01T06:00"),
        ("Asia/Kolkata", "2026-01-15T04:35", "2026-01-15T03:30"),
        ("Asia/Kolkata", "2026-01-15T04:30", "2026-01-15T03:30"),
        ("Asia/Kolkata", "2026-01-15T04:29", "2026-01-15T02:30"),
        ("Asia/Kathmandu", "2026-01-15T04:20", "2026-01-15T03:15"),
        ("America/St_Johns", "2026-01-15T13:35", "2026-01-15T12:30"),
        ("Pacific/Chatham", "2026-01-15T04:50", "2026-01-15T03:15"),
    ],
)
def test_latest_ended_window_in_zones(zone: str, at: str, start: str) -> None:
    window = latest_ended_window(utc(at), zi(zone), P)
    assert (window.start, window.end) == (utc(start), utc(start) + HOUR)


def test_latest_ended_window_new_york_spring_forward_name() -> None:
    window = latest_ended_window(utc("2026-03-08T07:05"), zi("America/New_York"), P)
    assert window.name == f"{P}-2026-03-08-0100-0300"


# --- windows_of_day: counts and bounds --------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "day", "count", "first", "last"),
    [
        ("UTC", "2026-02-12", 24, "2026-02-12T00:00", "2026-02-12T23:00"),
        ("America/New_York", "2026-02-12", 24, "2026-02-12T05:00", "2026-02-13T04:00"),
        ("America/New_York", "2026-03-08", 23, "2026-03-08T05:00", "2026-03-09T03:00"),
        ("America/New_York", "2026-11-01", 25, "2026-11-01T04:00", "2026-11-02T04:00"),
        ("Europe/London", "2026-03-29", 23, "2026-03-29T00:00", "2026-03-29T22:00"),
        ("Europe/London", "2026-10-25", 25, "2026-10-24T23:00", "2026-10-25T23:00"),
        ("Asia/Kolkata", "2026-02-12", 24, "2026-02-11T18:30", "2026-02-12T17:30"),
        ("America/Santiago", "2026-09-06", 23, "2026-09-06T04:00", "2026-09-07T02:00"),
        ("America/Santiago", "2026-04-04", 25, "2026-04-04T03:00", "2026-04-05T03:00"),
        ("Australia/Lord_Howe", "2026-04-05", 24, "2026-04-04T13:00", "2026-04-05T12:30"),
        ("Australia/Lord_Howe", "2026-10-04", 23, "2026-10-03T13:30", "2026-10-04T12:00"),
    ],
)
def test_windows_of_day(zone: str, day: str, count: int, first: str, last: str) -> None:
    windows = windows_of_day(date.fromisoformat(day), zi(zone), P)
    assert len(windows) == count
    assert windows[0].start == utc(first)
    assert windows[-1].start == utc(last)
    assert windows == sorted(windows)
    assert len({w.name for w in windows}) == count
    assert all(w.end - w.start == HOUR for w in windows)


def test_kolkata_first_name() -> None:
    windows = windows_of_day(date(2026, 2, 12), zi("Asia/Kolkata"), P)
    assert windows[0].name == f"{P}-2026-02-12-0000-0100"
    assert windows[-1].name == f"{P}-2026-02-12-2300-0000"


@pytest.mark.parametrize(
    ("zone", "day", "expected"),
    [
        (
            "America/New_York",
            "2026-11-01",
            {
                "2026-11-01T04:00": f"{P}-2026-11-01-0000-0100",
                "2026-11-01T05:00": f"{P}-2026-11-01-0100-0100-UTC-0400",
                "2026-11-01T06:00": f"{P}-2026-11-01-0100-0200-UTC-0500",
                "2026-11-01T07:00": f"{P}-2026-11-01-0200-0300",
            },
        ),
        (
            "Europe/London",
            "2026-10-25",
            {
                "2026-10-24T23:00": f"{P}-2026-10-25-0000-0100",
                "2026-10-25T00:00": f"{P}-2026-10-25-0100-0100-UTC+0100",
                "2026-10-25T01:00": f"{P}-2026-10-25-0100-0200-UTC+0000",
                "2026-10-25T02:00": f"{P}-2026-10-25-0200-0300",
            },
        ),
        (
            "America/New_York",
            "2026-03-08",
            {
                "2026-03-08T05:00": f"{P}-2026-03-08-0000-0100",
                "2026-03-08T06:00": f"{P}-2026-03-08-0100-0300",
                "2026-03-08T07:00": f"{P}-2026-03-08-0300-0400",
            },
        ),
        (
            "America/Santiago",
            "2026-04-04",
            {
                "2026-04-05T01:00": f"{P}-2026-04-04-2200-2300",
                "2026-04-05T02:00": f"{P}-2026-04-04-2300-2300-UTC-0300",
                "2026-04-05T03:00": f"{P}-2026-04-04-2300-0000-UTC-0400",
            },
        ),
    ],
)
def test_names_around_shifts(zone: str, day: str, expected: dict[str, str]) -> None:
    by_start = {w.start: w.name for w in windows_of_day(date.fromisoformat(day), zi(zone), P)}
    assert {start: by_start[utc(start)] for start in expected} == expected


@pytest.mark.parametrize(
    ("zone", "day", "suffixed"),
    [
        ("America/New_York", "2026-11-01", 2),
        ("America/New_York", "2026-03-08", 0),
        ("Europe/London", "2026-10-25", 2),
        ("Australia/Lord_Howe", "2026-04-05", 0),
        ("UTC", "2026-02-12", 0),
    ],
)
def test_suffix_only_on_repeated_hours(zone: str, day: str, suffixed: int) -> None:
    windows = windows_of_day(date.fromisoformat(day), zi(zone), P)
    assert sum("-UTC" in w.name for w in windows) == suffixed


def test_window_name_helper() -> None:
    start = utc("2026-11-01T05:00")
    zone = zi("America/New_York")
    assert window_name("x", start, zone, False) == "x-2026-11-01-0100-0100"
    assert window_name("x", start, zone, True) == "x-2026-11-01-0100-0100-UTC-0400"


# --- Lord Howe: 30-minute shifts leave a 30-minute uncovered stretch ------------------------


@pytest.mark.parametrize(
    ("day", "before", "after", "gap_start", "gap_end"),
    [
        (
            "2026-04-05",  # DST ends 2026-04-04T15:00Z: +11:00 -> +10:30
            ("2026-04-04T14:00", f"{P}-2026-04-05-0100-0130"),
            ("2026-04-04T15:30", f"{P}-2026-04-05-0200-0300"),
            "2026-04-04T15:00",
            "2026-04-04T15:30",
        ),
        (
            "2026-10-04",  # DST starts 2026-10-03T15:30Z: +10:30 -> +11:00
            ("2026-10-03T14:30", f"{P}-2026-10-04-0100-0230"),
            ("2026-10-03T16:00", f"{P}-2026-10-04-0300-0400"),
            "2026-10-03T15:30",
            "2026-10-03T16:00",
        ),
    ],
)
def test_lord_howe_gap(
    day: str, before: tuple[str, str], after: tuple[str, str], gap_start: str, gap_end: str
) -> None:
    windows = windows_of_day(date.fromisoformat(day), zi("Australia/Lord_Howe"), P)
    index = next(i for i, w in enumerate(windows) if w.start == utc(before[0]))
    first, second = windows[index], windows[index + 1]
    assert (first.start, first.name) == (utc(before[0]), before[1])
    assert (second.start, second.name) == (utc(after[0]), after[1])
    assert (first.end, second.start) == (utc(gap_start), utc(gap_end))
    assert second.start - first.end == timedelta(minutes=30)
    inside_gap = utc(gap_start) + timedelta(minutes=10)
    assert not any(w.start <= inside_gap < w.end for w in windows)
    pairs = list(pairwise(windows))
    assert all(b.start == a.end for i, (a, b) in enumerate(pairs) if i != index)


def test_lord_howe_latest_ended_window_across_gap() -> None:
    zone = zi("Australia/Lord_Howe")
    assert latest_ended_window(utc("2026-04-04T16:29"), zone, P).start == utc("2026-04-04T14:00")
    assert latest_ended_window(utc("2026-04-04T16:30"), zone, P).start == utc("2026-04-04T15:30")
    assert latest_ended_window(utc("2026-10-03T16:59"), zone, P).start == utc("2026-10-03T14:30")
    assert latest_ended_window(utc("2026-10-03T17:00"), zone, P).start == utc("2026-10-03T16:00")


# --- every start is a local top of the hour ---------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "day"),
    [
        ("UTC", "2026-02-12"),
        ("America/New_York", "2026-03-08"),
        ("America/New_York", "2026-11-01"),
        ("Europe/London", "2026-03-29"),
        ("Europe/London", "2026-10-25"),
        ("Asia/Kolkata", "2026-02-12"),
        ("Asia/Kathmandu", "2026-02-12"),
        ("America/St_Johns", "2026-11-01"),
        ("Australia/Lord_Howe", "2026-04-05"),
        ("Australia/Lord_Howe", "2026-10-04"),
        ("America/Santiago", "2026-09-06"),
        ("Pacific/Chatham", "2026-04-05"),
    ],
)
def test_starts_are_local_tops(zone: str, day: str) -> None:
    tz = zi(zone)
    d = date.fromisoformat(day)
    for window in windows_of_day(d, tz, P):
        local = window.start.astimezone(tz)
        assert (local.minute, local.second, local.microsecond) == (0, 0, 0)
        assert local.date() == d
        assert window.name.startswith(f"{P}-{day}-{local:%H%M}-")


# --- historic oddities, checked against the 15-minute grid oracle ------------------------------


@pytest.mark.parametrize(
    ("zone", "day"),
    [
        ("America/Managua", "2006-10-01"),  # fold at local midnight
        ("Antarctica/Casey", "2010-03-04"),  # 3-hour fold reaching back across midnight
        ("Antarctica/Casey", "2010-03-05"),
        ("Asia/Pyongyang", "2015-08-14"),  # 30-minute fall-back at midnight
        ("Asia/Pyongyang", "2015-08-15"),
        ("America/Caracas", "2007-12-09"),  # 30-minute fall-back
        ("Africa/Casablanca", "2008-06-01"),  # skipped local midnight
        ("Pacific/Apia", "2011-12-29"),  # the next day was skipped
        ("Pacific/Apia", "2011-12-31"),
    ],
)
def test_odd_days_match_oracle(zone: str, day: str) -> None:
    tz = zi(zone)
    d = date.fromisoformat(day)
    windows = windows_of_day(d, tz, P)
    assert [w.start for w in windows] == grid_tops(d, tz)
    names = [w.name for n in (-1, 0, 1) for w in windows_of_day(d + timedelta(days=n), tz, P)]
    assert len(set(names)) == len(names)
    at = datetime.combine(d, datetime.min.time(), tzinfo=timezone.utc) - timedelta(hours=14)
    for _ in range(4 * 40):
        assert latest_ended_window(at, tz, P).start == grid_latest_ended(at, tz)
        at += timedelta(minutes=15)
    over = max(day_bounds(d, tz)[1], *(w.end for w in windows))
    assert day_has_ended(d, tz, over - timedelta(microseconds=1)) is False
    assert day_has_ended(d, tz, over) is True


def test_managua_midnight_fold() -> None:
    zone = zi("America/Managua")
    windows = windows_of_day(date(2006, 10, 1), zone, P)
    assert len(windows) == 25
    assert [(w.start, w.name) for w in windows[:3]] == [
        (utc("2006-10-01T05:00"), f"{P}-2006-10-01-0000-0000-UTC-0500"),
        (utc("2006-10-01T06:00"), f"{P}-2006-10-01-0000-0100-UTC-0600"),
        (utc("2006-10-01T07:00"), f"{P}-2006-10-01-0100-0200"),
    ]
    assert day_bounds(date(2006, 10, 1), zone) == (utc("2006-10-01T05:00"), utc("2006-10-02T06:00"))


def test_casey_day_ends_after_its_last_window() -> None:
    zone = zi("Antarctica/Casey")
    windows = windows_of_day(date(2010, 3, 4), zone, P)
    assert windows[-1].start == utc("2010-03-04T15:00")
    assert day_bounds(date(2010, 3, 4), zone)[1] == utc("2010-03-04T13:00")
    assert day_has_ended(date(2010, 3, 4), zone, utc("2010-03-04T15:59")) is False
    assert day_has_ended(date(2010, 3, 4), zone, utc("2010-03-04T16:00")) is True


# --- days ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "day", "start", "end"),
    [
        ("UTC", "2026-02-12", "2026-02-12T00:00", "2026-02-13T00:00"),
        ("America/New_York", "2026-03-08", "2026-03-08T05:00", "2026-03-09T04:00"),
        ("America/New_York", "2026-11-01", "2026-11-01T04:00", "2026-11-02T05:00"),
        ("Asia/Kolkata", "2026-02-12", "2026-02-11T18:30", "2026-02-12T18:30"),
        # Santiago skips local midnight on 2026-09-06: the day starts at 01:00 -03.
        ("America/Santiago", "2026-09-05", "2026-09-05T04:00", "2026-09-06T04:00"),
        ("America/Santiago", "2026-09-06", "2026-09-06T04:00", "2026-09-07T03:00"),
        ("Australia/Lord_Howe", "2026-04-05", "2026-04-04T13:00", "2026-04-05T13:30"),
    ],
)
def test_day_bounds(zone: str, day: str, start: str, end: str) -> None:
    assert day_bounds(date.fromisoformat(day), zi(zone)) == (utc(start), utc(end))


def test_day_bounds_for_a_skipped_day() -> None:
    # Samoa skipped 2011-12-30 entirely: the day is empty and has no windows.
    zone = zi("Pacific/Apia")
    start, end = day_bounds(date(2011, 12, 30), zone)
    assert start == end == utc("2011-12-30T10:00")
    assert windows_of_day(date(2011, 12, 30), zone, P) == []
    assert day_bounds(date(2011, 12, 31), zone)[0] == start


@pytest.mark.parametrize(
    ("instant", "zone", "day"),
    [
        ("2026-02-12T23:59:59", "UTC", "2026-02-12"),
        ("2026-02-13T00:00", "UTC", "2026-02-13"),
        ("2026-02-12T18:29", "Asia/Kolkata", "2026-02-12"),
        ("2026-02-12T18:30", "Asia/Kolkata", "2026-02-13"),
        ("2026-02-13T04:59", "America/New_York", "2026-02-12"),
    ],
)
def test_day_of_and_today(instant: str, zone: str, day: str) -> None:
    assert day_of(utc(instant), zi(zone)) == date.fromisoformat(day)
    assert today(utc(instant), zi(zone)) == date.fromisoformat(day)


@pytest.mark.parametrize(
    ("now", "ended"),
    [("2026-02-12T18:29:59", False), ("2026-02-12T18:30", True), ("2026-02-13T00:00", True)],
)
def test_day_has_ended(now: str, ended: bool) -> None:
    assert day_has_ended(date(2026, 2, 12), zi("Asia/Kolkata"), utc(now)) is ended


@pytest.mark.parametrize(
    ("now", "count", "last"),
    [
        ("2026-02-12T00:59:59", 0, None),
        ("2026-02-12T01:00", 1, "2026-02-12T00:00"),
        ("2026-02-12T08:05", 8, "2026-02-12T07:00"),
        ("2026-02-14T00:00", 24, "2026-02-12T23:00"),
    ],
)
def test_ended_windows_of_day(now: str, count: int, last: str | None) -> None:
    windows = ended_windows_of_day(date(2026, 2, 12), zi("UTC"), P, utc(now))
    assert len(windows) == count
    assert (windows[-1].start if windows else None) == (utc(last) if last else None)


def test_days_between() -> None:
    assert days_between(date(2026, 2, 27), date(2026, 3, 2)) == [
        date(2026, 2, 27),
        date(2026, 2, 28),
        date(2026, 3, 1),
        date(2026, 3, 2),
    ]
    assert days_between(date(2026, 2, 12), date(2026, 2, 12)) == [date(2026, 2, 12)]
    with pytest.raises(ValueError, match="2026-02-11 is before start date 2026-02-12"):
        days_between(date(2026, 2, 12), date(2026, 2, 11))


@pytest.mark.parametrize(
    "call",
    [
        lambda: latest_ended_window(datetime(2026, 2, 12, 8), zi("UTC"), P),
        lambda: day_of(datetime(2026, 2, 12, 8), zi("UTC")),
        lambda: day_has_ended(date(2026, 2, 12), zi("UTC"), datetime(2026, 2, 13)),
        lambda: iso_z(datetime(2026, 2, 12, 8)),
        lambda: api_time(datetime(2026, 2, 12, 8)),
    ],
)
def test_naive_datetimes_are_rejected(call: Callable[[], object]) -> None:
    with pytest.raises(ValueError, match="has no UTC offset"):
        call()


# --- parsing ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-02-12T08:05:00Z", "2026-02-12T08:05:00"),
        ("2026-02-12T08:05Z", "2026-02-12T08:05:00"),
        ("2026-02-12T08:05:00+01:00", "2026-02-12T07:05:00"),
        ("2026-02-12T08:05:00-0330", "2026-02-12T11:35:00"),
        ("2026-02-12 08:05:00Z", "2026-02-12T08:05:00"),
        ("2026-02-12T08:05:00.5Z", "2026-02-12T08:05:00.500000"),
        ("2026-02-12T08:05:00.123456789Z", "2026-02-12T08:05:00.123456"),
        ("2026-02-13T00:30:00+05:30", "2026-02-12T19:00:00"),
        ("  2026-02-12t08:05:00z ", "2026-02-12T08:05:00"),
    ],
)
def test_parse_instant(text: str, expected: str) -> None:
    parsed = parse_instant(text)
    assert parsed == utc(expected)
    assert parsed.tzinfo is timezone.utc


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2026-02-12T08:05:00", r"has no UTC offset; add Z"),
        ("2026-02-12 08:05", r"has no UTC offset; add Z"),
        ("2026-02-12", r"expected ISO 8601"),
        ("yesterday", r"expected ISO 8601"),
        ("", r"expected ISO 8601"),
        ("2026-02-12T8:05Z", r"expected ISO 8601"),
        ("2026-02-30T08:05Z", r"invalid timestamp .*day is out of range"),
        ("2026-02-12T24:00Z", r"invalid timestamp .*hour must be in 0\.\.23"),
        ("2026-02-12T08:05+25:00", r"UTC offset \+25:00 is out of range"),
        ("٢٠٢٦-02-12T08:05Z", r"expected ISO 8601"),
    ],
)
def test_parse_instant_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_instant(text)


@pytest.mark.parametrize(
    ("text", "expected"), [("2026-02-12", date(2026, 2, 12)), ("2024-02-29", date(2024, 2, 29))]
)
def test_parse_day(text: str, expected: date) -> None:
    assert parse_day(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2026-02-30", r"invalid date '2026-02-30': day is out of range for month"),
        ("2025-02-29", r"invalid date '2025-02-29': day is out of range"),
        ("2026-13-01", r"invalid date '2026-13-01': month must be in 1\.\.12"),
        ("2026-2-1", r"invalid date '2026-2-1': expected YYYY-MM-DD"),
        ("yesterday", r"invalid date 'yesterday': expected YYYY-MM-DD"),
        ("20260212", r"expected YYYY-MM-DD"),
        ("2026-02-12T00:00", r"expected YYYY-MM-DD"),
        (" 2026-02-12", r"expected YYYY-MM-DD"),
    ],
)
def test_parse_day_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_day(text)


@pytest.mark.parametrize(
    "name", ["UTC", "Europe/Paris", "America/Argentina/Buenos_Aires", "Etc/GMT+5"]
)
def test_load_zone(name: str) -> None:
    zone = load_zone(name)
    assert isinstance(zone, ZoneInfo)
    assert zone.key == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "Mars/Olympus",
        "utc ",
        "America",
        "America/",
        "/etc/localtime",
        "../etc/passwd",
        "Europe/../UTC",
    ],
)
def test_load_zone_rejects(name: str) -> None:
    expected = f"unknown time zone {name!r} (use an IANA name such as Europe/Paris)"
    with pytest.raises(ValueError, match="unknown time zone") as info:
        load_zone(name)
    assert str(info.value) == expected


# --- formatting ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dt", "api", "iso"),
    [
        (utc("2026-02-12T07:00"), "2026-02-12T07:00:00.000Z", "2026-02-12T07:00:00Z"),
        (utc("2026-02-12T07:00:01.2349"), "2026-02-12T07:00:01.234Z", "2026-02-12T07:00:01Z"),
        (
            datetime(2026, 2, 12, 8, 0, tzinfo=timezone(timedelta(hours=1))),
            "2026-02-12T07:00:00.000Z",
            "2026-02-12T07:00:00Z",
        ),
        (
            datetime(2026, 2, 12, 2, 0, tzinfo=zi("America/New_York")),
            "2026-02-12T07:00:00.000Z",
            "2026-02-12T07:00:00Z",
        ),
    ],
)
def test_api_time_and_iso_z(dt: datetime, api: str, iso: str) -> None:
    assert api_time(dt) == api
    assert iso_z(dt) == iso
    assert from_iso_z(iso) == dt.replace(microsecond=0)
    assert from_iso_z(iso).tzinfo is timezone.utc


@pytest.mark.parametrize(
    "text", ["2026-02-12T07:00:00", "2026-02-12T07:00Z", "2026-02-12 07:00:00Z", "x"]
)
def test_from_iso_z_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid UTC timestamp"):
        from_iso_z(text)


# --- properties ---------------------------------------------------------------------------------

ZONES = [
    "UTC",
    "America/New_York",
    "America/Los_Angeles",
    "America/St_Johns",
    "America/Santiago",
    "Europe/London",
    "Europe/Paris",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Asia/Tehran",
    "Australia/Lord_Howe",
    "Australia/Sydney",
    "Pacific/Auckland",
    "Pacific/Chatham",
    "Pacific/Apia",
]
HALF_HOUR_SHIFT_ZONES = {"Australia/Lord_Howe"}
EPOCH_2000 = int(datetime(2000, 1, 2, tzinfo=timezone.utc).timestamp() * 1000)
EPOCH_2037 = int(datetime(2037, 12, 30, tzinfo=timezone.utc).timestamp() * 1000)

zones = st.sampled_from(ZONES)
days = st.dates(min_value=date(2000, 1, 2), max_value=date(2037, 12, 29))
instants = st.integers(EPOCH_2000, EPOCH_2037).map(
    lambda ms: datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
)
fast = settings(max_examples=200, deadline=None)


def is_local_top(instant: datetime, zone: ZoneInfo) -> bool:
    local = instant.astimezone(zone)
    return (local.minute, local.second) == (0, 0)


def grid_tops(day: date, zone: ZoneInfo) -> list[datetime]:
    """Oracle: UTC 15-minute grid around the day, kept where local time is HH:00 on ``day``."""
    first = datetime(day.year, day.month, day.day, tzinfo=timezone.utc) - timedelta(hours=16)
    grid = (first + n * QUARTER for n in range(4 * 60))
    return [u for u in grid if is_local_top(u, zone) and u.astimezone(zone).date() == day]


def grid_latest_ended(at: datetime, zone: ZoneInfo) -> datetime:
    """Oracle: scan back on the UTC 15-minute grid for the latest local top that has ended."""
    candidate = datetime.fromtimestamp(at.timestamp() // 900 * 900, tz=timezone.utc) - HOUR
    while not (candidate + HOUR <= at and is_local_top(candidate, zone)):
        candidate -= QUARTER
    return candidate


def next_window(window: Window, zone: ZoneInfo) -> Window:
    following = windows_of_day(day_of(window.start, zone), zone, P)
    following += windows_of_day(day_of(window.start, zone) + timedelta(days=1), zone, P)
    return next(w for w in following if w.start > window.start)


@fast
@given(zones, days)
def test_windows_of_day_matches_grid_oracle(zone_name: str, day: date) -> None:
    zone = zi(zone_name)
    windows = windows_of_day(day, zone, P)
    assert [w.start for w in windows] == grid_tops(day, zone)
    assert all(w.end - w.start == HOUR for w in windows)
    assert all(w.start.tzinfo is timezone.utc for w in windows)
    start, end = day_bounds(day, zone)
    assert all(start <= w.start < end for w in windows)
    assert ended_windows_of_day(day, zone, P, end + HOUR) == windows


@fast
@given(zones, days)
def test_names_unique_over_consecutive_days(zone_name: str, day: date) -> None:
    zone = zi(zone_name)
    windows = [w for n in range(3) for w in windows_of_day(day + timedelta(days=n), zone, P)]
    names = [w.name for w in windows]
    assert len(set(names)) == len(names)
    for w in windows:
        local = w.start.astimezone(zone)
        assert w.name.startswith(f"{P}-{local:%Y-%m-%d}-{local:%H%M}-")


@fast
@given(zones, instants)
def test_latest_ended_window_is_latest(zone_name: str, at: datetime) -> None:
    zone = zi(zone_name)
    window = latest_ended_window(at, zone, P)
    assert window.end <= at
    assert window.end - window.start == HOUR
    assert is_local_top(window.start, zone)
    assert next_window(window, zone).end > at
    assert window.start == grid_latest_ended(at, zone)


@fast
@given(st.sampled_from([z for z in ZONES if z not in HALF_HOUR_SHIFT_ZONES]), days)
def test_windows_tile_in_whole_hour_shift_zones(zone_name: str, day: date) -> None:
    zone = zi(zone_name)
    today_windows = windows_of_day(day, zone, P)
    tomorrow_windows = windows_of_day(day + timedelta(days=1), zone, P)
    if today_windows and tomorrow_windows:
        assert today_windows[-1].end == tomorrow_windows[0].start
    windows = today_windows + tomorrow_windows
    assert all(a.end == b.start for a, b in pairwise(windows))


@fast
@given(zones, instants)
def test_day_of_lies_within_day_bounds(zone_name: str, at: datetime) -> None:
    zone = zi(zone_name)
    day = day_of(at, zone)
    start, end = day_bounds(day, zone)
    assert start <= at < end
    assert day_has_ended(day, zone, at) is False
    assert day_has_ended(day, zone, end) is True


@fast
@given(instants)
def test_iso_z_round_trip(at: datetime) -> None:
    assert from_iso_z(iso_z(at)) == at.replace(microsecond=0)
    assert parse_instant(api_time(at)) == at.replace(microsecond=at.microsecond // 1000 * 1000)
    assert parse_instant(iso_z(at)) == at.replace(microsecond=0)


_NO_TZ_DATABASE = """
import sys
sys.modules["tzdata"] = None  # as if the tzdata package were not installed
from hourly_report.windows import load_zone, windows_of_day
from datetime import date
day = windows_of_day(date(2026, 2, 12), load_zone("UTC"), "p")
print(len(day), day[7].name)
try:
    load_zone("Europe/Paris")
except ValueError as err:
    print("ERROR", err)
"""


def test_utc_works_and_other_zones_explain_themselves_without_a_tz_database(
    tmp_path: Path,
) -> None:
    empty = tmp_path / "no-zoneinfo"
    empty.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", _NO_TZ_DATABASE],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONTZPATH": str(empty)},
    )
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.splitlines()
    assert first == "24 p-2026-02-12-0700-0800"
    assert second.startswith("ERROR time zone 'Europe/Paris' cannot be loaded: ")
    assert "pip install tzdata" in second

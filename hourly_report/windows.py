"""Hour windows, local days and report names (pure: no I/O, no clock).

Scheme
------
* A window is ``[start, start + 3600 s)``, held as aware UTC datetimes.
* Windows start at every *local top of the hour* of the configured zone: every
  UTC instant whose wall-clock time in the zone has minute 0 and second 0.
  A wall-clock hour that occurs twice (autumn fold) gives two windows; one that
  is skipped (spring gap) gives none.
* Local day ``D`` is the set of windows whose start's local date is ``D``: 24
  normally, 23 on a spring-forward day, 25 on a fall-back day (Lord Howe's
  30-minute fall-back day keeps 24).
* ``latest_ended_window(T)`` is the latest window whose end is ``<= T``; a window
  that has not ended is never returned.
* Name: ``{prefix}-{YYYY-MM-DD}-{HHMM}-{HHMM}`` -- local start date, local start
  wall time, local *end* wall time.  So 23:00-24:00 is ``...-2300-0000`` under
  its start day, and the hour across a spring gap shows it honestly
  (New York 2026-03-08: ``...-0100-0300``).
* Fold suffix: when the local start wall time occurs twice that day, the name
  gets ``-UTC+HHMM`` / ``-UTC-HHMM`` (the start's UTC offset), e.g. New York
  2026-11-01: ``...-0100-0100-UTC-0400`` then ``...-0100-0200-UTC-0500``.
  Ordinary hours never carry a suffix.  Names are unique per zone.
* Zones whose shifts are whole hours tile time exactly: each window ends where
  the next begins.  A zone that shifts by 30 minutes (Australia/Lord_Howe) has
  local tops 30 or 90 minutes apart around a shift; windows still last exactly
  one hour, one per local top, so around each shift a 30-minute stretch is
  covered by no window (e.g. 2026-04-04T15:00Z-15:30Z and
  2026-10-03T15:30Z-16:00Z) and the hour before the gap is named by its real
  end (``...-0100-0130``, ``...-0100-0230``).
* ``day_bounds(D)`` is the first instant of local ``D`` and of ``D + 1`` (if a
  local midnight is skipped, the first instant after it).  Days whose midnight
  is skipped start at the first existing top (America/Santiago 2026-09-06
  starts at 01:00); a fully skipped day (Pacific/Apia 2011-12-30) is empty.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "HOUR",
    "Window",
    "api_time",
    "day_bounds",
    "day_has_ended",
    "day_of",
    "days_between",
    "ended_windows_of_day",
    "from_iso_z",
    "iso_z",
    "latest_ended_window",
    "load_zone",
    "parse_day",
    "parse_instant",
    "today",
    "window_name",
    "windows_of_day",
]

HOUR = timedelta(hours=1)
_UTC = timezone.utc
_ONE_DAY = timedelta(days=1)

_INSTANT_RE = re.compile(
    r"(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})[Tt ]"
    r"(?P<hour>[0-9]{2}):(?P<minute>[0-9]{2})"
    r"(?::(?P<second>[0-9]{2})(?:[.,](?P<fraction>[0-9]{1,9}))?)?"
    r"(?P<offset>[Zz]|[+-][0-9]{2}:?[0-9]{2})?"
)
_DAY_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_ZONE_RE = re.compile(r"[A-Za-z0-9_+-]+(?:/[A-Za-z0-9_+-]+)*")
_ISO_Z_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


@dataclass(frozen=True, order=True)
class Window:
    """One report hour: ``[start, end)`` in UTC, ``end - start`` == 3600 s."""

    start: datetime
    end: datetime
    name: str


# --- parsing -----------------------------------------------------------------


def parse_instant(text: str) -> datetime:
    """Parse an ISO 8601 timestamp that carries a UTC offset; return aware UTC.

    Accepts ``2026-02-12T08:05:00Z``, ``2026-02-12T08:05Z``,
    ``2026-02-12T08:05:00+01:00``, a space instead of ``T`` and fractional seconds.
    """
    match = _INSTANT_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(
            f"invalid timestamp {text!r}: expected ISO 8601 such as 2026-02-12T08:05:00Z"
        )
    if match["offset"] is None:
        raise ValueError(
            f"timestamp {text!r} has no UTC offset; add Z for UTC or an offset such as +01:00"
        )
    try:
        day = date.fromisoformat(match["date"])
        fraction = (match["fraction"] or "0")[:6].ljust(6, "0")
        wall = time(
            int(match["hour"]), int(match["minute"]), int(match["second"] or 0), int(fraction)
        )
        tz = _parse_offset(match["offset"])
    except ValueError as exc:
        raise ValueError(f"invalid timestamp {text!r}: {exc}") from None
    return datetime.combine(day, wall, tzinfo=tz).astimezone(_UTC)


def _parse_offset(text: str) -> timezone:
    if text in ("Z", "z"):
        return _UTC
    digits = text[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:])
    if hours > 23 or minutes > 59:
        raise ValueError(f"UTC offset {text} is out of range")
    offset = timedelta(hours=hours, minutes=minutes)
    return timezone(-offset if text[0] == "-" else offset)


def parse_day(text: str) -> date:
    """Parse a calendar date written strictly as ``YYYY-MM-DD``."""
    if _DAY_RE.fullmatch(text) is None:
        raise ValueError(f"invalid date {text!r}: expected YYYY-MM-DD, e.g. 2026-02-12")
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"invalid date {text!r}: {exc}") from None


def load_zone(name: str) -> ZoneInfo:
    """Return the IANA time zone ``name``; ``ValueError`` if it is unknown or not a plain name.

    UTC works even where the system has no time zone database (minimal containers);
    any other zone then needs the OS's tzdata package or ``pip install tzdata``.
    """
    error = ValueError(f"unknown time zone {name!r} (use an IANA name such as Europe/Paris)")
    if _ZONE_RE.fullmatch(name) is None:
        raise error
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError, UnicodeError):
        if _no_zone_database():
            if name == "UTC":
                return ZoneInfo.from_file(io.BytesIO(_UTC_TZIF), key="UTC")
            raise ValueError(
                f"time zone {name!r} cannot be loaded: this system has no time zone database "
                "(install the OS package tzdata, or 'pip install tzdata' in the venv)"
            ) from None
        raise error from None


# The TZif file of UTC (from the IANA database), for systems that have none.
_UTC_TZIF = (
    b"TZif2"
    + bytes(15)
    + bytes(19)
    + b"\x01"
    + bytes(3)
    + b"\x01"
    + bytes(7)
    + b"TZif2"
    + bytes(15)
    + bytes(19)
    + b"\x01"
    + bytes(3)
    + b"\x04"
    + bytes(6)
    + b"UTC\x00\nUTC0\n"
)


def _no_zone_database() -> bool:
    import zoneinfo

    return not zoneinfo.available_timezones()


# --- formatting ----------------------------------------------------------------


def api_time(dt: datetime) -> str:
    """Format for the OpsRamp API: UTC, milliseconds, ``Z`` (``2026-02-12T07:00:00.000Z``)."""
    utc = _to_utc(dt)
    return f"{utc:%Y-%m-%dT%H:%M:%S}.{utc.microsecond // 1000:03d}Z"


def iso_z(dt: datetime) -> str:
    """Format as ``2026-02-12T07:00:00Z`` (UTC, whole seconds; a sub-second part is dropped)."""
    return _to_utc(dt).strftime(_ISO_Z_FORMAT)


def from_iso_z(text: str) -> datetime:
    """Inverse of :func:`iso_z`: parse ``2026-02-12T07:00:00Z`` into an aware UTC datetime."""
    try:
        return datetime.strptime(text, _ISO_Z_FORMAT).replace(tzinfo=_UTC)
    except ValueError:
        raise ValueError(
            f"invalid UTC timestamp {text!r}: expected e.g. 2026-02-12T07:00:00Z"
        ) from None


def window_name(prefix: str, start: datetime, zone: ZoneInfo, ambiguous: bool) -> str:
    """Name of the window starting at ``start``; ``ambiguous`` adds the ``-UTC±HHMM`` suffix."""
    local_start = _to_utc(start).astimezone(zone)
    local_end = (_to_utc(start) + HOUR).astimezone(zone)
    name = f"{prefix}-{local_start:%Y-%m-%d}-{local_start:%H%M}-{local_end:%H%M}"
    if ambiguous:
        name += f"-UTC{_format_offset(local_start.utcoffset())}"
    return name


def _format_offset(offset: timedelta | None) -> str:
    minutes = int((offset or timedelta()).total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    hours, mins = divmod(abs(minutes), 60)
    return f"{sign}{hours:02d}{mins:02d}"


# --- windows --------------------------------------------------------------------


def latest_ended_window(at: datetime, zone: ZoneInfo, prefix: str) -> Window:
    """The latest window whose end is at or before ``at``."""
    limit = _to_utc(at) - HOUR
    anchor = day_of(limit, zone)
    # Neighbouring days too: local dates need not be monotonic around a shift.
    starts = [s for offset in (-1, 0, 1) for s in _local_tops(anchor + offset * _ONE_DAY, zone)]
    return _window(max(s for s in starts if s <= limit), zone, prefix)


def windows_of_day(day: date, zone: ZoneInfo, prefix: str) -> list[Window]:
    """All windows whose start's local date is ``day``, ordered by start."""
    return [_window(start, zone, prefix) for start in _local_tops(day, zone)]


def ended_windows_of_day(day: date, zone: ZoneInfo, prefix: str, now: datetime) -> list[Window]:
    """The windows of ``day`` whose end is at or before ``now``."""
    now_utc = _to_utc(now)
    return [w for w in windows_of_day(day, zone, prefix) if w.end <= now_utc]


def _window(start: datetime, zone: ZoneInfo, prefix: str) -> Window:
    start = _to_utc(start)
    ambiguous = _is_ambiguous(start.astimezone(zone).replace(tzinfo=None), zone)
    return Window(start, start + HOUR, window_name(prefix, start, zone, ambiguous))


def _local_tops(day: date, zone: ZoneInfo) -> list[datetime]:
    """UTC instants whose local time is ``HH:00:00`` on ``day``, sorted."""
    tops: set[datetime] = set()
    for hour in range(24):
        wall = datetime.combine(day, time(hour))
        tops.update(u for u in _interpretations(wall, zone) if _exists_as(u, wall, zone))
    return sorted(tops)


def _interpretations(wall: datetime, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The UTC instants of naive ``wall`` read with fold=0 and fold=1."""
    return (
        wall.replace(tzinfo=zone, fold=0).astimezone(_UTC),
        wall.replace(tzinfo=zone, fold=1).astimezone(_UTC),
    )


def _exists_as(instant: datetime, wall: datetime, zone: ZoneInfo) -> bool:
    return instant.astimezone(zone).replace(tzinfo=None) == wall


def _is_ambiguous(wall: datetime, zone: ZoneInfo) -> bool:
    """True if naive ``wall`` occurs twice in ``zone`` (it lies in a fold)."""
    early, late = _interpretations(wall, zone)
    return early != late and _exists_as(early, wall, zone) and _exists_as(late, wall, zone)


# --- days -------------------------------------------------------------------------


def day_bounds(day: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """UTC instants of the local start of ``day`` and of the next day."""
    return _day_start(day, zone), _day_start(day + _ONE_DAY, zone)


def _day_start(day: date, zone: ZoneInfo) -> datetime:
    """First instant of local ``day``: midnight, or the first instant after it if skipped."""
    midnight = datetime.combine(day, time())
    early, late = _interpretations(midnight, zone)
    if _exists_as(early, midnight, zone):  # fold=0 is the earlier reading of a repeated midnight
        return early
    low, high = late, early  # midnight lies in a gap: the shift happened between these
    while high - low > timedelta(microseconds=1):
        mid = low + (high - low) / 2
        if mid.astimezone(zone).replace(tzinfo=None) >= midnight:
            high = mid
        else:
            low = mid
    return high


def day_of(instant: datetime, zone: ZoneInfo) -> date:
    """The local date of ``instant`` in ``zone``."""
    return _to_utc(instant).astimezone(zone).date()


def today(now: datetime, zone: ZoneInfo) -> date:
    """The local date of ``now`` in ``zone``."""
    return day_of(now, zone)


def day_has_ended(day: date, zone: ZoneInfo, now: datetime) -> bool:
    """True once the local ``day`` is over at ``now``: ``day_bounds(day)[1] <= now``.

    It also waits for the day's last window to end, which only matters where a
    fold reaches back across midnight (Antarctica/Casey, 2010-03-04).
    """
    windows = windows_of_day(day, zone, "")
    end = max([day_bounds(day, zone)[1], *(w.end for w in windows)])
    return end <= _to_utc(now)


def days_between(first: date, last: date) -> list[date]:
    """Every date from ``first`` to ``last`` inclusive."""
    if last < first:
        raise ValueError(f"end date {last.isoformat()} is before start date {first.isoformat()}")
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def _to_utc(dt: datetime) -> datetime:
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"datetime {dt.isoformat()} has no UTC offset")
    return dt.astimezone(_UTC)

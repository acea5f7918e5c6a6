"""Time sources, injectable so that tests never sleep for real.

Everything that reads the time or waits takes a :class:`Clock`.  Production code
uses :class:`SystemClock`; tests pass a :class:`FakeClock` whose ``sleep``
advances time instantly (and can be shared with an in-process sandbox so that
the server's rate-limit windows move with it).
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    def time(self) -> float:
        """Wall-clock seconds since the epoch (UTC)."""

    def monotonic(self) -> float:
        """Monotonic seconds, for durations, expiries and deadlines."""

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds``."""


class SystemClock:
    """The real clock."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class FakeClock:
    """A clock for tests: ``sleep`` advances both readings at once and is recorded."""

    def __init__(self, start: float = 1_770_879_600.0) -> None:  # 2026-02-12T07:00:00Z
        self._lock = threading.Lock()
        self._wall = start
        self._mono = 1000.0
        self.sleeps: list[float] = []

    def time(self) -> float:
        with self._lock:
            return self._wall

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            if seconds > 0:
                self._wall += seconds
                self._mono += seconds

    def advance(self, seconds: float) -> None:
        """Move time forward without recording a sleep."""
        with self._lock:
            self._wall += seconds
            self._mono += seconds

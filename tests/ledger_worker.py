"""A separate process for the ledger's concurrency tests (tests/test_ledger.py).

    python tests/ledger_worker.py claim DB
    python tests/ledger_worker.py hammer DB TENANT COUNT

The worker prints ``ready``, waits for a line on stdin (the starting gun, so
that all workers hit the ledger at once), does its job, prints one JSON object
(an exception as ``{"error": ...}``), then stays alive until stdin closes: a
claimer that exited early would look like a dead owner and be taken over.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from hourly_report.ledger import Ledger

FIRST_HOUR = datetime(2026, 2, 12, 7, tzinfo=timezone.utc)
NOW = datetime(2026, 2, 12, 9, tzinfo=timezone.utc)


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime
    name: str


def window(index: int) -> Window:
    start = FIRST_HOUR + timedelta(hours=index)
    return Window(start, start + timedelta(hours=1), f"w-{index}")


def claim(db: Path) -> dict[str, object]:
    with Ledger.open(db) as ledger:
        result = ledger.claim("tenant", window(0), now=NOW, lease_seconds=600)
    return {"status": result.status.value, "recovered": result.recovered}


def hammer(db: Path, tenant: str, count: int) -> dict[str, object]:
    with Ledger.open(db) as ledger:
        for index in range(count):
            result = ledger.claim(tenant, window(index), now=NOW, lease_seconds=600)
            if result.status.value != "claimed":
                raise RuntimeError(f"window {index}: {result.status}")
            if index % 2:
                ledger.record_failed(tenant, window(index).start, "boom", now=NOW)
            else:
                ledger.record_created(tenant, window(index).start, f"a-{index}", now=NOW)
    return {"done": count}


def main(argv: list[str]) -> int:
    print("ready", flush=True)
    sys.stdin.readline()
    try:
        if argv[0] == "claim":
            outcome = claim(Path(argv[1]))
        else:
            outcome = hammer(Path(argv[1]), argv[2], int(argv[3]))
    except Exception as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return 1
    print(json.dumps(outcome), flush=True)
    sys.stdin.read()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Quick-mode benchmark: each job's request and connection counts, in CI.

Runs ``tests/perf/bench.py``'s quick mode: the real CLI as child processes
against an in-process sandbox, without latency, once.  Timings are not judged
here (CI machines are noisy); run ``python tests/perf/bench.py`` for those.
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.perf import bench


def test_jobs_use_one_connection_and_the_minimum_of_requests(tmp_path: Path) -> None:
    started = time.perf_counter()
    counts = bench.quick(tmp_path)
    elapsed = time.perf_counter() - started
    assert counts == {"run": (2, 1), "backfill": (25, 1), "cleanup": (25, 1)}
    assert elapsed < 15, f"quick benchmark took {elapsed:.1f} s"

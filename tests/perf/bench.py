#!/usr/bin/env python
"""Benchmark every job of hourly-report against its network floor.

Usage::

    python tests/perf/bench.py [--quick] [--runs N] [--connect-ms 100] [--request-ms 20]

An in-process :class:`~hourly_report.sandbox.Sandbox` (a thread of this process)
injects latency: ``--connect-ms`` once per new connection (models TCP + TLS
handshake) and ``--request-ms`` per request.  The real CLI runs as child processes
(``python -m hourly_report --config <tmp config> ...``), each measured for wall
time and peak RSS (``os.wait4``), and the sandbox's own records give the number of
requests and connections.  Every timing is the median of ``--runs`` repetitions,
after one unmeasured warm-up.

The floor of a job is what no client can avoid: Python start-up with
requests + click + tenacity imported, one connection, and one round trip per
request.  ``--quick`` runs each job once without latency and only checks counts
(what ``tests/test_perf_quick.py`` does in CI).

Exit status: 0 when every job behaved (counts right, exit 0); 1 when one did not,
or, with ``--strict``, when a performance target was missed.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(REPO))

if TYPE_CHECKING:
    from hourly_report.sandbox import RequestRecord, Sandbox

TENANT = "bench-tenant"
CLIENT_ID = "bench-client"
CLIENT_SECRET = "bench-secret-value"
DAY = date(2026, 2, 12)  # the day the run/backfill/cleanup scenarios start from
RSS_FIRST_DAY = date(2026, 1, 1)  # 31-day backfill: January 2026
RSS_DAYS = 31
HEAVY_IMPORTS = "import requests, click, tenacity"
LAZY_MODULES = ("requests", "tenacity", "sqlite3", "urllib3")
RATE_LIMIT = 10
RATE_WINDOW = 1.0
RATE_DAYS = 3
CHILD_TIMEOUT = 300.0

TARGET_JOB_RATIO = 1.2
TARGET_STARTUP_RATIO = 1.3
TARGET_RATE_FILL = 0.90
TARGET_RSS_MB = 60.0

_SCRUBBED_ENV = (
    "HOURLY_REPORT_CONFIG",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "http_proxy",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "PYTHONDONTWRITEBYTECODE",
)

# Two stdlib reference clients sending the same 25 requests, run as child processes:
# "close" is the naive one, a fresh connection per request (urllib.request sends
# "Connection: close"); "keepalive" is one http.client connection, the best a
# client can do (it measures the sandbox's own per-request cost).
NAIVE_CLIENT = """\
import json, sys
from datetime import datetime, timedelta, timezone

base, tenant, client_id, secret, day, mode = sys.argv[1:7]
if mode == "keepalive":
    import http.client, urllib.parse
    host, port = urllib.parse.urlsplit(base).hostname, urllib.parse.urlsplit(base).port
    connection = http.client.HTTPConnection(host, port, timeout=30)
else:
    import urllib.parse, urllib.request

def post(url, data, content_type, token=None):
    headers = {"Content-Type": content_type, "User-Agent": "naive-bench/1"}
    if token:
        headers["Authorization"] = "Bearer " + token
    if mode == "keepalive":
        connection.request("POST", urllib.parse.urlsplit(url).path, data, headers)
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise SystemExit("HTTP %d" % response.status)
        return json.loads(body)
    request = urllib.request.Request(url, data=data, headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)

form = urllib.parse.urlencode({"grant_type": "client_credentials",
                               "client_id": client_id, "client_secret": secret}).encode()
token = post(base + "/tenancy/auth/oauth/token", form,
             "application/x-www-form-urlencoded")["access_token"]
start = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=timezone.utc)
for hour in range(24):
    begin, end = start + timedelta(hours=hour), start + timedelta(hours=hour + 1)
    stamp = lambda t: t.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    body = {
        "name": "naive-%s-%s-%s" % (day, begin.strftime("%H%M"), end.strftime("%H%M")),
        "tenantId": tenant, "appId": "PERFORMANCE-UTILIZATION", "format": ["xlsx"],
        "parameters": {
            "method": ["max"], "metrics": ["system_cpu_utilization"],
            "startTime": stamp(begin), "endTime": stamp(end),
            "options": ["resource.id", "resource.name"],
            "opsqlQuery": [{"groupBy": [], "filterCriteria": "state = \\"active\\""}],
            "displayMode": "Consolidated List", "queryConfig": "summary",
            "analysisPeriod": "Specific Period", "client": tenant,
        },
    }
    url = "%s/reporting/api/v3/tenants/%s/analyses" % (base, tenant)
    post(url, json.dumps(body).encode(), "application/json", token)
"""


# --------------------------------------------------------------------------- plumbing


@dataclass
class Proc:
    """One finished child process."""

    argv: list[str]
    returncode: int
    elapsed: float
    stdout: str
    stderr: str
    maxrss_kb: int  # Linux: kilobytes

    def check(self, expected: int = 0) -> Proc:
        if self.returncode != expected:
            raise BenchError(
                f"{' '.join(self.argv[-6:])} exited {self.returncode} (expected {expected}):\n"
                f"{self.stderr.strip()[-2000:]}"
            )
        return self


class BenchError(Exception):
    """A job misbehaved (wrong exit status or wrong request/connection counts)."""


def run_child(argv: Sequence[str], env: dict[str, str], cwd: Path) -> Proc:
    """Run a child, return its wall time and its own peak RSS (``os.wait4``)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(list(argv), stdout=out, stderr=err, env=env, cwd=cwd)
        timer = threading.Timer(CHILD_TIMEOUT, _kill, (proc.pid,))
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        elapsed = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Proc(
            list(argv),
            proc.returncode,
            elapsed,
            out.read().decode("utf-8", "replace"),
            err.read().decode("utf-8", "replace"),
            int(usage.ru_maxrss),
        )


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


@dataclass
class Traffic:
    """What the sandbox saw during one measured child."""

    records: list[RequestRecord]

    def count(self, endpoint: str, status: int | None = None) -> int:
        return sum(
            1
            for r in self.records
            if r.endpoint == endpoint and (status is None or r.status == status)
        )

    @property
    def total(self) -> int:
        return len(self.records)

    @property
    def connections(self) -> int:
        return len({r.connection for r in self.records})


class Bench:
    """A sandbox, a scratch directory and the child environment, shared by all scenarios."""

    def __init__(self, workdir: Path, connect: float, request: float) -> None:
        from hourly_report.sandbox import Sandbox

        self.workdir = workdir
        self.connect = connect
        self.request = request
        self.python = sys.executable
        self.sandbox: Sandbox = Sandbox(
            tenant_id=TENANT, client_id=CLIENT_ID, client_secret=CLIENT_SECRET
        ).start()
        home = workdir / "home"
        home.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
        path = env.get("PYTHONPATH")
        env.update(
            HOME=str(home),
            XDG_STATE_HOME=str(home / ".local" / "state"),
            PYTHONPATH=str(REPO) + (os.pathsep + path if path else ""),
        )
        self.env = env
        self.server_cost = 0.0  # the sandbox's own seconds per request (measure_reference)
        self.naive_script = workdir / "naive_client.py"
        self.naive_script.write_text(NAIVE_CLIENT, encoding="utf-8")

    def close(self) -> None:
        self.sandbox.stop()

    # ---- sandbox settings

    def latency(self, on: bool) -> None:
        if on:
            self.sandbox.state.set_latency(connect=self.connect, request=self.request)
        else:
            self.sandbox.state.set_latency(0.0, 0.0)

    # ---- configs and children

    def config(self, name: str, *, rate_limited: bool = False) -> Path:
        """A config with its own ledger; retry waits are 0 unless ``rate_limited``."""
        folder = self.workdir / name
        folder.mkdir(parents=True, exist_ok=True)
        retry = (
            "max_attempts = 5\nbackoff_seconds = 1\nmax_backoff_seconds = 60\n"
            if rate_limited
            else "max_attempts = 3\nbackoff_seconds = 0\nmax_backoff_seconds = 0\n"
        )
        path = folder / "config.ini"
        path.write_text(
            f"[opsramp]\nbase_url = {self.sandbox.base_url}\ntenant_id = {TENANT}\n"
            f"client_id = {CLIENT_ID}\nclient_secret = {CLIENT_SECRET}\ntimeout_seconds = 30\n\n"
            f"[ledger]\npath = {folder / 'ledger.sqlite3'}\n\n[retry]\n{retry}",
            encoding="utf-8",
        )
        path.chmod(0o600)
        return path

    def naive(self, day: date, mode: str) -> Proc:
        """The stdlib reference client (``mode`` "close" or "keepalive") for ``day``."""
        argv = [
            self.python,
            str(self.naive_script),
            self.sandbox.base_url,
            TENANT,
            CLIENT_ID,
            CLIENT_SECRET,
            day.isoformat(),
            mode,
        ]
        return run_child(argv, self.env, self.workdir).check()

    def python_c(self, code: str) -> Proc:
        return run_child([self.python, "-c", code], self.env, self.workdir).check()

    def cli(self, config: Path | None, *args: str, python_flags: Sequence[str] = ()) -> Proc:
        prefix = ["--config", str(config)] if config is not None else []
        argv = [self.python, *python_flags, "-m", "hourly_report", *prefix, *args]
        return run_child(argv, self.env, self.workdir)

    def console_script(self, *args: str) -> Proc | None:
        script = Path(self.python).parent / "hourly-report"
        if not script.exists():
            return None
        return run_child([str(script), *args], self.env, self.workdir)

    def observed(self, action: Callable[[], Proc]) -> tuple[Proc, Traffic]:
        """Run ``action`` and return the sandbox records made meanwhile."""
        state = self.sandbox.state
        before = len(state.requests)
        proc = action()
        return proc, Traffic(list(state.requests[before:]))

    def heavy_startup(self) -> float:
        """One sample of the jobs' start-up floor, taken beside each measured job."""
        return self.python_c(HEAVY_IMPORTS).elapsed

    def observed_cli(self, config: Path, *args: str) -> tuple[Proc, Traffic]:
        """Run the CLI (which must exit 0) and return the sandbox records it made."""
        return self.observed(lambda: self.cli(config, *args).check())

    def observed_naive(self, day: date, mode: str) -> tuple[Proc, Traffic]:
        return self.observed(lambda: self.naive(day, mode))


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _at(day: date, hh_mm: str = "00:05") -> str:
    return f"{day.isoformat()}T{hh_mm}:00Z"


def expect(traffic: Traffic, what: str, *, requests: int, connections: int, **by: int) -> None:
    """Raise :class:`BenchError` unless the sandbox saw exactly these counts."""
    problems = []
    if traffic.total != requests:
        problems.append(f"{traffic.total} requests (expected {requests})")
    if traffic.connections != connections:
        problems.append(f"{traffic.connections} connections (expected {connections})")
    for endpoint, wanted in by.items():
        got = traffic.count(endpoint, 200)
        if got != wanted:
            problems.append(f"{got} {endpoint} answered 200 (expected {wanted})")
    if problems:
        raise BenchError(f"{what}: " + "; ".join(problems))


# -------------------------------------------------------------------------- results


@dataclass
class Row:
    """One line of the results table."""

    scenario: str
    measured: str
    floor: str = ""
    ratio: float | None = None
    target: str = ""
    ok: bool | None = None
    detail: str = ""


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, row: Row) -> None:
        self.rows.append(row)
        print(f"  {row.scenario}: {row.measured} {row.detail}", file=sys.stderr, flush=True)

    @property
    def missed(self) -> list[Row]:
        return [r for r in self.rows if r.ok is False]

    def markdown(self) -> str:
        lines = [
            "| Scenario | Measured (median) | Floor | Ratio | Target | Met | Details |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            ratio = "" if r.ratio is None else f"{r.ratio:.2f}"
            met = "" if r.ok is None else ("yes" if r.ok else "**NO**")
            lines.append(
                f"| {r.scenario} | {r.measured} | {r.floor} | {ratio} | {r.target} | {met} "
                f"| {r.detail} |"
            )
        return "\n".join(lines)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


# ------------------------------------------------------------------------ scenarios


@dataclass
class Startup:
    python_pass: float
    import_click: float
    heavy: float  # python -c "import requests, click, tenacity": the jobs' start-up floor
    heavy_rss_kb: int


def measure_startup(bench: Bench, runs: int, results: Results) -> Startup:
    """Interpreter start-up floors, and ``--version`` / ``--help`` against them."""
    samples: dict[str, list[float]] = {}
    rss = 0

    actions: dict[str, Callable[[], Proc | None]] = {
        "pass": lambda: bench.python_c("pass"),
        "click": lambda: bench.python_c("import click"),
        "heavy": lambda: bench.python_c(HEAVY_IMPORTS),
        "version -m": lambda: bench.cli(None, "--version"),
        "version script": lambda: bench.console_script("--version"),
        "help": lambda: bench.cli(None, "--help"),
    }
    # Round-robin, so that load from elsewhere on the machine hits every command
    # alike; start-up is cheap and noisy, so it gets 3x the repetitions.
    for i in range(3 * runs + 1):  # the first round is a warm-up
        for label, action in actions.items():
            proc = action()
            if proc is None:
                continue
            proc.check()
            if label == "heavy":
                rss = max(rss, proc.maxrss_kb)
            if i:
                samples.setdefault(label, []).append(proc.elapsed)
    floor = Startup(
        median(samples["pass"]), median(samples["click"]), median(samples["heavy"]), rss
    )
    results.add(Row("start-up floor: `python -c pass`", _ms(floor.python_pass)))
    results.add(Row('start-up floor: `python -c "import click"`', _ms(floor.import_click)))
    results.add(
        Row(
            f'job start-up floor: `python -c "{HEAVY_IMPORTS}"`',
            _ms(floor.heavy),
            detail=f"peak RSS {floor.heavy_rss_kb / 1024:.1f} MB",
        )
    )
    for label, shown in (
        ("version script", "`hourly-report --version`"),
        ("version -m", "`python -m hourly_report --version`"),
        ("help", "`python -m hourly_report --help`"),
    ):
        if label not in samples:
            continue
        value = median(samples[label])
        ratio = value / floor.import_click
        results.add(
            Row(
                shown,
                _ms(value),
                floor=f"{_ms(floor.import_click)} (import click)",
                ratio=ratio,
                target=f"≤ {TARGET_STARTUP_RATIO}",
                ok=ratio <= TARGET_STARTUP_RATIO,
                detail=f"{value / floor.python_pass:.2f}× `python -c pass`",
            )
        )
    return floor


_IMPORT_LINE = re.compile(r"import time:\s+(\d+)\s+\|\s+(\d+)\s+\|( *)(\S+)")


def imported_modules(stderr: str) -> list[tuple[str, int, int]]:
    """(module, cumulative µs, nesting depth) from ``-X importtime`` output."""
    found = []
    for line in stderr.splitlines():
        match = _IMPORT_LINE.match(line)
        if match:
            depth = len(match.group(3)) // 2
            found.append((match.group(4), int(match.group(2)), depth))
    return found


def check_lazy_imports(bench: Bench, results: Results) -> None:
    """``--version`` / ``--help`` must not import the heavy modules; list what ``run`` does."""
    for args in (("--version",), ("--help",)):
        proc = bench.cli(None, *args, python_flags=("-X", "importtime")).check()
        names = {name for name, _, _ in imported_modules(proc.stderr)}
        heavy = sorted(m for m in LAZY_MODULES if m in names)
        results.add(
            Row(
                f"`{args[0]}` imports {'/'.join(LAZY_MODULES)}?",
                "none" if not heavy else ", ".join(heavy),
                target="none",
                ok=not heavy,
                detail=f"{len(names)} modules imported in total",
            )
        )
    config = bench.config("imports")
    bench.latency(False)
    proc = bench.cli(
        config, "run", "--at", _at(DAY, "08:05"), python_flags=("-X", "importtime")
    ).check()
    modules = imported_modules(proc.stderr)
    top: Counter[str] = Counter()
    for name, cumulative, _depth in modules:
        root = name.split(".")[0]
        if name == root:  # a top-level package's own cumulative time
            top[root] = max(top[root], cumulative)
    third_party = [
        m
        for m in (
            "requests",
            "urllib3",
            "charset_normalizer",
            "idna",
            "certifi",
            "tenacity",
            "click",
            "sqlite3",
            "zoneinfo",
        )
        if m in top
    ]
    slowest = ", ".join(f"{name} {us / 1000:.0f} ms" for name, us in top.most_common(12))
    results.notes.append(
        f"`run` imports {len(modules)} modules; heavy ones present: {', '.join(third_party)}. "
        f"Largest top-level imports (cumulative): {slowest}."
    )


def measure_run(bench: Bench, runs: int, floor: Startup | None, results: Results) -> Traffic:
    """``run``: one token + one create on one connection."""
    config = bench.config("run")
    times: list[float] = []
    heavy: list[float] = []  # the start-up floor, sampled beside each repetition
    traffic = Traffic([])
    for i in range(runs + (1 if floor else 0)):
        bench.latency(floor is not None)
        proc, traffic = bench.observed_cli(
            config, "run", "--at", _at(DAY + timedelta(days=i), "08:05")
        )
        expect(traffic, "run", requests=2, connections=1, token=1, create=1)
        if floor is None or i:
            times.append(proc.elapsed)
        if floor is not None and i:
            heavy.append(bench.heavy_startup())
    if floor is not None:
        net = bench.connect + 2 * bench.request
        _job_row(results, bench, "`run` (1 window)", median(times), median(heavy) + net, traffic)
    return traffic


def measure_backfill(bench: Bench, runs: int, floor: Startup | None, results: Results) -> Traffic:
    """``backfill --date D``: 1 token + 24 creates on one connection; naive client beside it."""
    config = bench.config("backfill")
    mine: list[float] = []
    naive: list[float] = []
    heavy: list[float] = []
    traffic = Traffic([])
    naive_traffic = Traffic([])
    for i in range(runs + (1 if floor else 0)):
        day = DAY + timedelta(days=i)
        bench.latency(floor is not None)
        proc, traffic = bench.observed_cli(
            config, "backfill", "--date", day.isoformat(), "--at", _at(day + timedelta(1))
        )
        expect(traffic, "backfill", requests=25, connections=1, token=1, create=24)
        if floor is None:
            continue
        naive_proc, naive_traffic = bench.observed_naive(day, "close")
        expect(naive_traffic, "naive client", requests=25, connections=25, token=1, create=24)
        if i:
            mine.append(proc.elapsed)
            naive.append(naive_proc.elapsed)
            heavy.append(bench.heavy_startup())
    if floor is not None:
        net = bench.connect + 25 * bench.request
        _job_row(
            results,
            bench,
            "`backfill --date D` (24 windows)",
            median(mine),
            median(heavy) + net,
            traffic,
        )
        naive_floor = 25 * (bench.connect + bench.request)
        results.add(
            Row(
                "naive stdlib client, new connection per request (24 windows)",
                _ms(median(naive)),
                floor=f"{_ms(naive_floor)} (network only)",
                detail=f"{naive_traffic.total} req / {naive_traffic.connections} conn; "
                f"**backfill is {median(naive) / median(mine):.1f}× faster**",
            )
        )
    return traffic


def measure_cleanup(bench: Bench, runs: int, floor: Startup | None, results: Results) -> Traffic:
    """``cleanup`` of 24 analyses: 1 token + 24 deletes on one connection."""
    config = bench.config("cleanup")
    times: list[float] = []
    heavy: list[float] = []  # the start-up floor, sampled beside each repetition
    traffic = Traffic([])
    for i in range(runs + (1 if floor else 0)):
        day = DAY + timedelta(days=i)
        bench.latency(False)  # set-up: create the day's 24 analyses
        bench.cli(
            config, "backfill", "--date", day.isoformat(), "--at", _at(day + timedelta(1))
        ).check()
        bench.latency(floor is not None)
        proc, traffic = bench.observed_cli(
            config, "cleanup", "--at", _at(day + timedelta(1), "01:00")
        )
        expect(traffic, "cleanup", requests=25, connections=1, token=1, delete=24)
        if floor is None or i:
            times.append(proc.elapsed)
        if floor is not None and i:
            heavy.append(bench.heavy_startup())
    if floor is not None:
        net = bench.connect + 25 * bench.request
        _job_row(
            results, bench, "`cleanup` (24 analyses)", median(times), median(heavy) + net, traffic
        )
    return traffic


def measure_reference(bench: Bench, runs: int, floor: Startup, results: Results) -> float:
    """The sandbox's own cost per request, from the stdlib keep-alive reference client.

    ``python -c pass`` + 1 connection + 25 requests is what that client cannot avoid;
    the rest of its wall time is the sandbox working (parsing, validating, recording),
    which the job floors above do not include.
    """
    times = []
    for i in range(runs + 1):
        bench.latency(True)
        proc, traffic = bench.observed_naive(DAY + timedelta(days=i), "keepalive")
        expect(traffic, "keep-alive client", requests=25, connections=1, token=1, create=24)
        if i:
            times.append(proc.elapsed)
    network = bench.connect + 25 * bench.request
    overhead = max(0.0, (median(times) - floor.python_pass - network) / 25)
    results.add(
        Row(
            "reference: stdlib http.client, 1 keep-alive connection, 25 requests",
            _ms(median(times)),
            floor=f"{_ms(floor.python_pass + network)} (`python -c pass` + network)",
            detail=f"so the sandbox itself costs ≈ {overhead * 1000:.1f} ms per request; "
            "informational",
        )
    )
    bench.server_cost = overhead
    return overhead


def _job_row(
    results: Results, bench: Bench, name: str, value: float, floor: float, traffic: Traffic
) -> None:
    ratio = value / floor
    adjusted = floor + traffic.total * bench.server_cost
    results.add(
        Row(
            name,
            _ms(value),
            floor=_ms(floor),
            ratio=ratio,
            target=f"≤ {TARGET_JOB_RATIO}",
            ok=ratio <= TARGET_JOB_RATIO,
            detail=f"{traffic.total} req / {traffic.connections} conn; {value / adjusted:.2f}× "
            f"the floor plus the sandbox's own cost ({_ms(adjusted)})",
        )
    )


@dataclass
class RateRun:
    elapsed: float
    requests: int
    created: int
    throttled: int
    fill: float  # requests per window / limit, over the windows between the first and last
    per_window: list[int]


def rate_limited_backfill(
    bench: Bench, config: Path, first: date, days: int, limit: int, window: float
) -> RateRun:
    """Backfill ``days`` days under ``limit`` requests per ``window`` seconds."""
    bench.latency(True)
    bench.sandbox.state.set_rate_limit(limit, window)
    last = first + timedelta(days=days - 1)
    try:
        proc, traffic = bench.observed(
            lambda: bench.cli(
                config,
                "backfill",
                "--from",
                first.isoformat(),
                "--to",
                last.isoformat(),
                "--at",
                _at(last + timedelta(1)),
            ).check()
        )
    finally:
        bench.sandbox.state.set_rate_limit(None)
    limited = [r for r in traffic.records if r.endpoint in ("token", "create", "delete")]
    # The sandbox decides the window after the injected latency; records hold arrival.
    index = [
        math.floor((r.at + bench.request + (bench.connect if n == 0 else 0.0)) / window)
        for n, r in enumerate(limited)
    ]
    counts = Counter(index)
    span = list(range(min(index), max(index) + 1))
    per_window = [counts.get(k, 0) for k in span]
    # The first window is partial by the start-up's phase, the last by the work left:
    # judge the windows in between (each should carry the full limit).
    interior = per_window[1:-1] or per_window[:-1] or per_window
    fill = sum(interior) / (limit * len(interior))
    return RateRun(
        proc.elapsed,
        traffic.total,
        traffic.count("create", 200),
        traffic.count("create", 429) + traffic.count("token", 429),
        fill,
        per_window,
    )


def measure_rate_limit(bench: Bench, runs: int, results: Results) -> None:
    """A 3-day backfill (72 windows) under 10 requests per 1 s window."""
    config = bench.config("ratelimit", rate_limited=True)
    windows = 24 * RATE_DAYS
    samples = [
        rate_limited_backfill(
            bench, config, DAY + timedelta(days=RATE_DAYS * i), RATE_DAYS, RATE_LIMIT, RATE_WINDOW
        )
        for i in range(runs)
    ]
    fill = median([s.fill for s in samples])
    throttled = max(s.throttled for s in samples)
    created = min(s.created for s in samples)
    allowed = RATE_LIMIT / RATE_WINDOW
    results.add(
        Row(
            f"rate limit {RATE_LIMIT}/{RATE_WINDOW:g} s: `backfill` of {windows} windows",
            f"{fill * allowed:.1f} req/s of {allowed:g} allowed ({fill:.0%})",
            floor=f"{math.ceil((windows + 1) / RATE_LIMIT)} windows",
            target=f"≥ {TARGET_RATE_FILL:.0%}",
            ok=fill >= TARGET_RATE_FILL,
            detail=f"median wall {median([s.elapsed for s in samples]):.2f} s; "
            f"per window {samples[-1].per_window}",
        )
    )
    results.add(
        Row(
            "rate limit: 429 answers (max over runs)",
            str(throttled),
            target="0",
            ok=throttled == 0,
        )
    )
    results.add(
        Row(
            "rate limit: analyses created (min over runs)",
            f"{created} of {windows}",
            target=str(windows),
            ok=created == windows,
        )
    )
    # Probe: a window that is not a whole number of seconds, to expose the cost of
    # X-RateLimit-Reset being whole epoch seconds (rounded up).
    probe = rate_limited_backfill(
        bench, bench.config("ratelimit-probe", rate_limited=True), date(2025, 6, 1), 1, 5, 0.5
    )
    results.add(
        Row(
            "probe: rate limit 5/0.5 s, 24 windows (Reset rounded up to whole seconds)",
            f"{probe.fill * 10:.1f} req/s of 10 allowed ({probe.fill:.0%})",
            detail=f"429s {probe.throttled}; per window {probe.per_window}; informational",
        )
    )


def measure_memory(bench: Bench, results: Results) -> None:
    """Peak RSS of a 31-day backfill without latency; ledger query plans."""
    from hourly_report.ledger import Ledger

    config = bench.config("rss")
    bench.latency(False)
    last = RSS_FIRST_DAY + timedelta(days=RSS_DAYS - 1)
    proc, traffic = bench.observed(
        lambda: bench.cli(
            config,
            "backfill",
            "--from",
            RSS_FIRST_DAY.isoformat(),
            "--to",
            last.isoformat(),
            "--yes",
            "--at",
            _at(last + timedelta(1)),
        ).check()
    )
    windows = 24 * RSS_DAYS
    expect(traffic, "31-day backfill", requests=windows + 1, connections=1, create=windows)
    mb = proc.maxrss_kb / 1024
    results.add(
        Row(
            f"peak RSS, `backfill` of {RSS_DAYS} days ({windows} windows, no latency)",
            f"{mb:.1f} MB",
            target=f"< {TARGET_RSS_MB:g} MB",
            ok=mb < TARGET_RSS_MB,
            detail=f"{traffic.total} req / {traffic.connections} conn; wall {proc.elapsed:.2f} s "
            f"({proc.elapsed / windows * 1000:.1f} ms per window)",
        )
    )
    status = bench.cli(config, "status", "--date", (RSS_FIRST_DAY + timedelta(15)).isoformat())
    status.check()
    with Ledger.open(config.parent / "ledger.sqlite3", read_only=True) as ledger:
        for name in ("rows_between", "deletable"):
            plan = ledger.query_plan(name)
            indexed = "USING" in plan and "INDEX" in plan and not re.search(r"\bSCAN\b", plan)
            results.add(
                Row(
                    f"ledger query plan `{name}` ({windows} rows)",
                    plan.replace("\n", "; "),
                    target="uses an index",
                    ok=indexed,
                    detail=f"`status --date` on this ledger: {_ms(status.elapsed)}"
                    if name == "rows_between"
                    else "",
                )
            )


# ----------------------------------------------------------------------------- entry


def quick(workdir: Path) -> dict[str, tuple[int, int]]:
    """One repetition of run / backfill / cleanup without latency; counts only.

    Returns ``{job: (requests, connections)}``; raises :class:`BenchError` when a
    job's counts or exit status are wrong.
    """
    bench = Bench(workdir, 0.0, 0.0)
    try:
        counts = {}
        for name, measure in (
            ("run", measure_run),
            ("backfill", measure_backfill),
            ("cleanup", measure_cleanup),
        ):
            traffic = measure(bench, 1, None, Results())
            counts[name] = (traffic.total, traffic.connections)
        return counts
    finally:
        bench.close()


def full(workdir: Path, runs: int, connect: float, request: float) -> Results:
    bench = Bench(workdir, connect, request)
    results = Results()
    try:
        print("start-up ...", file=sys.stderr, flush=True)
        floor = measure_startup(bench, runs, results)
        check_lazy_imports(bench, results)
        print("jobs ...", file=sys.stderr, flush=True)
        measure_reference(bench, runs, floor, results)
        measure_run(bench, runs, floor, results)
        measure_backfill(bench, runs, floor, results)
        measure_cleanup(bench, runs, floor, results)
        print("rate limit ...", file=sys.stderr, flush=True)
        measure_rate_limit(bench, runs, results)
        print("memory ...", file=sys.stderr, flush=True)
        measure_memory(bench, results)
    finally:
        bench.close()
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 run, no latency, counts only")
    parser.add_argument("--runs", type=int, default=5, help="repetitions per timing (median)")
    parser.add_argument("--connect-ms", type=float, default=100.0, help="per new connection")
    parser.add_argument("--request-ms", type=float, default=20.0, help="per request")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="hourly-report-bench-") as tmp:
        started = time.perf_counter()
        try:
            if args.quick:
                counts = quick(Path(tmp))
                print("| Job | Requests | Connections |\n|---|---|---|")
                for job, (requests, connections) in counts.items():
                    print(f"| `{job}` | {requests} | {connections} |")
                return 0
            results = full(Path(tmp), args.runs, args.connect_ms / 1000, args.request_ms / 1000)
        except BenchError as err:
            print(f"bench: FAILED: {err}", file=sys.stderr)
            return 1
        elapsed = time.perf_counter() - started
    print(
        f"hourly-report benchmark: {args.runs} runs (median), latency {args.connect_ms:g} ms per "
        f"connection + {args.request_ms:g} ms per request; Python {sys.version.split()[0]} on "
        f"{os.cpu_count()} CPUs; load average {load_before:.2f} before, "
        f"{os.getloadavg()[0]:.2f} after; took {elapsed:.0f} s\n"
    )
    print(results.markdown())
    for note in results.notes:
        print(f"\n{note}")
    if results.missed:
        print("\nMissed: " + "; ".join(r.scenario for r in results.missed))
        return 1 if args.strict else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Shared fixtures: an isolated home, a sandbox on 127.0.0.1, configs, CLI runners.

Tests never touch the real home directory, never reach past 127.0.0.1, and never
sleep for real for a retry: configs written here set every backoff to 0, and
in-process tests share a :class:`FakeClock` between client and sandbox.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from hourly_report.cli import cli
from hourly_report.clock import FakeClock
from hourly_report.ledger import Ledger, Row
from hourly_report.logs import TailBuffer, _StderrHandler
from hourly_report.sandbox import Sandbox

TENANT = "acme-tenant"
CLIENT_ID = "acme-client"
CLIENT_SECRET = "s3cr3t-client-secret-value"

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
    "CREDENTIALS_DIRECTORY",
    "STATE_DIRECTORY",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
)


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private HOME and XDG_STATE_HOME; no proxy or config variables from outside."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / ".local" / "state"))
    for name in _SCRUBBED_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return home


def _remove_project_log_handlers() -> None:
    # pytest's own capture handlers are left alone.
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, (TailBuffer, _StderrHandler)):
            root.removeHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.NOTSET)


@pytest.fixture(autouse=True)
def fresh_logging() -> Iterator[None]:
    """Each test starts without the handlers an in-process CLI run installed."""
    _remove_project_log_handlers()
    yield
    _remove_project_log_handlers()


def ledger_rows(path: Path) -> list[Row]:
    """Every row of the ledger at ``path`` for the test tenant, oldest first."""
    with Ledger.open(path, read_only=True) as ledger:
        return ledger.rows_between(
            TENANT,
            datetime(2000, 1, 1, tzinfo=timezone.utc),
            datetime(2100, 1, 1, tzinfo=timezone.utc),
        )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    """A sandbox on the real clock (for CLI and subprocess tests)."""
    with Sandbox(tenant_id=TENANT, client_id=CLIENT_ID, client_secret=CLIENT_SECRET) as server:
        yield server


@pytest.fixture
def fake_sandbox(clock: FakeClock) -> Iterator[Sandbox]:
    """A sandbox sharing the test's FakeClock (rate-limit windows, token expiry)."""
    with Sandbox(
        tenant_id=TENANT, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, clock=clock
    ) as server:
        yield server


def config_text(base_url: str, ledger: Path, /, **sections: dict[str, Any]) -> str:
    """A config.ini for the sandbox; ``sections`` override or add keys (None removes one)."""
    values: dict[str, dict[str, Any]] = {
        "opsramp": {
            "base_url": base_url,
            "tenant_id": TENANT,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "timeout_seconds": 5,
        },
        "ledger": {"path": str(ledger)},
        "retry": {"max_attempts": 3, "backoff_seconds": 0, "max_backoff_seconds": 0},
    }
    for section, overrides in sections.items():
        values.setdefault(section, {}).update(overrides)
    lines = []
    for section, keys in values.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {value}" for key, value in keys.items() if value is not None)
        lines.append("")
    return "\n".join(lines)


@pytest.fixture
def ledger_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "ledger.sqlite3"


@pytest.fixture
def make_config(tmp_path: Path, ledger_path: Path):
    """Write a config for a given sandbox: ``make_config(sandbox, report={...})`` -> Path."""

    def make(server: Sandbox | str, name: str = "config.ini", **sections: dict[str, Any]) -> Path:
        base_url = server if isinstance(server, str) else server.base_url
        path = tmp_path / name
        path.write_text(config_text(base_url, ledger_path, **sections), encoding="utf-8")
        path.chmod(0o600)
        return path

    return make


@pytest.fixture
def config_path(make_config, sandbox: Sandbox) -> Path:
    return make_config(sandbox)


@pytest.fixture
def invoke():
    """Run the CLI in-process: ``invoke(config, "run", "--at", ...)`` -> click Result."""

    def run(config: Path | None, *args: str, env: dict[str, str] | None = None) -> Result:
        runner = CliRunner()
        prefix = ["--config", str(config)] if config is not None else []
        return runner.invoke(cli, [*prefix, *args], env=env, catch_exceptions=False)

    return run


def run_process(
    config: Path | None, *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m hourly_report`` as a real process."""
    prefix = ["--config", str(config)] if config is not None else []
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "hourly_report", *prefix, *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        check=False,
    )


def start_process(
    config: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """Start ``python -m hourly_report`` without waiting for it."""
    return subprocess.Popen(
        [sys.executable, "-m", "hourly_report", "--config", str(config), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def without_root_override() -> list[str]:
    """A command prefix under which file modes apply even to root (tests often run as root).

    Drops CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH with util-linux ``setpriv``.
    """
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    assert setpriv, "running as root needs util-linux setpriv to test permission errors"
    caps = "-dac_override,-dac_read_search"
    return [setpriv, "--bounding-set", caps, "--inh-caps", caps]


@pytest.fixture
def unused_port() -> int:
    """A port on 127.0.0.1 where nothing listens (connection refused)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])

"""Operator-facing behaviour through the real command line: monitoring pings, proxies,
the progress bar on a terminal, and shell completion."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time

from hourly_report.sandbox import Fault, Sandbox
from tests.conftest import CLIENT_SECRET, run_process
from tests.test_monitoring import server  # noqa: F401 - the recording ping server fixture

RUN_AT = ("--at", "2026-02-12T08:05:00Z")


# --- monitoring pings -----------------------------------------------------------------------


def test_a_successful_run_pings_start_then_success(
    sandbox: Sandbox,
    make_config,
    invoke,
    server,  # noqa: F811
) -> None:
    config = make_config(sandbox, monitoring={"ping_url": f"{server.base_url}/ping/abcd-1234"})

    result = invoke(config, "run", *RUN_AT)

    assert result.exit_code == 0
    assert result.stderr == ""
    assert [(r.method, r.path) for r in server.requests] == [
        ("POST", "/ping/abcd-1234/start"),
        ("POST", "/ping/abcd-1234"),
    ]
    assert server.requests[0].headers["user-agent"].startswith("hourly-report/")


def test_a_failed_run_pings_its_exit_status_with_the_log_tail(
    sandbox: Sandbox,
    make_config,
    invoke,
    server,  # noqa: F811
) -> None:
    config = make_config(sandbox, monitoring={"ping_url": f"{server.base_url}/ping/abcd-1234"})
    sandbox.state.inject("create", Fault("status", status=400))

    result = invoke(config, "run", *RUN_AT)

    assert result.exit_code == 1
    assert [r.path for r in server.requests] == ["/ping/abcd-1234/start", "/ping/abcd-1234/1"]
    body = server.requests[1].body.decode()
    assert "hourly-perf-report-2026-02-12-0700-0800" in body
    assert "HTTP 400" in body
    assert CLIENT_SECRET not in body


def test_an_unreachable_monitor_does_not_fail_the_run(
    sandbox: Sandbox, make_config, invoke, unused_port: int
) -> None:
    config = make_config(
        sandbox,
        monitoring={"ping_url": f"http://127.0.0.1:{unused_port}/ping/secret-check-uuid"},
    )

    result = invoke(config, "run", *RUN_AT)

    assert result.exit_code == 0
    assert sandbox.state.count("create") == 1
    assert "monitoring ping" in result.stderr
    assert "secret-check-uuid" not in result.stderr


def test_a_dry_run_sends_no_ping(sandbox: Sandbox, make_config, invoke, server) -> None:  # noqa: F811
    config = make_config(sandbox, monitoring={"ping_url": f"{server.base_url}/ping/x"})

    assert invoke(config, "run", *RUN_AT, "--dry-run").exit_code == 0
    assert server.requests == []


# --- proxies --------------------------------------------------------------------------------


def test_the_configured_proxy_carries_all_api_traffic_whatever_the_environment(
    sandbox: Sandbox, make_config, unused_port: int
) -> None:
    # The sandbox serves absolute-URI (proxy) requests too, so it can stand in as the proxy
    # for a base_url that does not resolve; the environment's proxy is a dead port.
    config = make_config(
        "http://opsramp.invalid", opsramp={"proxy": sandbox.base_url, "timeout_seconds": 5}
    )

    result = run_process(
        config, "run", *RUN_AT, env={"HTTP_PROXY": f"http://127.0.0.1:{unused_port}"}
    )

    assert result.returncode == 0, result.stderr
    assert sandbox.state.count("token") == 1
    assert sandbox.state.count("create") == 1


def test_without_a_configured_proxy_the_environment_proxy_is_used(
    sandbox: Sandbox, make_config
) -> None:
    config = make_config("http://opsramp.invalid")

    result = run_process(config, "run", *RUN_AT, env={"HTTP_PROXY": sandbox.base_url})

    assert result.returncode == 0, result.stderr
    assert sandbox.state.count("create") == 1


def test_proxy_credentials_never_reach_the_log(sandbox: Sandbox, make_config) -> None:
    proxy = sandbox.base_url.replace("http://", "http://alice:pr0xy-pa55@")
    config = make_config("http://opsramp.invalid", opsramp={"proxy": proxy})

    result = run_process(config, "--log-level", "DEBUG", "run", *RUN_AT)

    assert result.returncode == 0, result.stderr
    assert "through proxy http://alice:***@127.0.0.1" in result.stderr
    assert "pr0xy-pa55" not in result.stderr + result.stdout


# --- progress bar and completion ------------------------------------------------------------


def test_backfill_shows_a_progress_bar_only_on_a_terminal(sandbox: Sandbox, make_config) -> None:
    config = make_config(sandbox)
    at = ("--at", "2026-02-13T01:00Z")

    piped = run_process(config, "backfill", "--date", "2026-02-12", *at)
    on_terminal = _stderr_on_a_terminal(config, "backfill", "--date", "2026-02-11", *at)

    assert piped.returncode == 0
    assert piped.stderr == ""
    assert sandbox.state.count("create") == 48
    assert "backfill" in on_terminal
    assert "100%" in on_terminal
    assert "   4%" in on_terminal  # the bar counts windows: 1 of 24 done
    assert "[####################################]" in on_terminal


def _stderr_on_a_terminal(config, *args: str) -> str:
    """Run the CLI with stderr on a pseudo-terminal (stdout piped); return what it showed."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "hourly_report", "--config", str(config), *args],
        stdout=subprocess.PIPE,
        stderr=follower,
        env={**os.environ, "COLUMNS": "100"},
    )
    os.close(follower)
    shown = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            shown += chunk
        elif process.poll() is not None:
            break
    process.wait(timeout=60)
    os.close(leader)
    assert process.returncode == 0
    return shown.decode(errors="replace")


def test_bash_completion_script_is_available() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "hourly_report"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "_HOURLY_REPORT_COMPLETE": "bash_source"},
    )
    assert done.returncode == 0
    assert "complete" in done.stdout
    assert "_HOURLY_REPORT_COMPLETE" in done.stdout

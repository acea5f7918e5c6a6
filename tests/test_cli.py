"""The command line's surface: configuration, usage errors, exit codes, logs, secrets.

Bad input must give exit 2 (usage/config) or 1 (operation), one clear line on
stderr, no traceback, nothing sent to OpsRamp and nothing written to the ledger.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from hourly_report.sandbox import Fault, Sandbox
from tests.conftest import CLIENT_SECRET, TENANT, config_text, run_process

D = "2026-02-12"
AT = "2026-02-12T08:05:00Z"
BEARER_VALUE = re.compile(r"(?i)bearer\s+(?!\*\*\*)\S+")


def assert_one_clean_error_line(result, *fragments: str) -> str:
    """stderr holds exactly one line, no traceback, and names every fragment."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def issued_tokens(sandbox: Sandbox) -> list[str]:
    # The sandbox keeps the tokens it issued only privately; good enough for a leak check.
    return list(sandbox.state._tokens)


# --- version and help -------------------------------------------------------------------------


def test_version_prints_the_program_name_and_version(invoke):
    result = invoke(None, "--version")

    assert result.exit_code == 0
    assert result.stdout.strip() == "hourly-report 0.1.0"


def test_python_dash_m_help_lists_every_command():
    done = run_process(None, "--help")

    assert done.returncode == 0
    assert done.stdout.startswith("Usage: ")
    for command in ("run", "backfill", "cleanup", "status", "check", "sandbox", "demo"):
        assert re.search(rf"^\s+{command}\s", done.stdout, re.MULTILINE), command
    assert done.stderr == ""


def test_run_help_shows_the_at_and_dry_run_options(invoke):
    result = invoke(None, "run", "--help")

    assert result.exit_code == 0
    assert "--at TIMESTAMP" in result.stdout
    assert "--dry-run" in result.stdout


# --- configuration errors ---------------------------------------------------------------------


def test_a_missing_config_file_is_a_config_error_naming_the_file(sandbox, tmp_path, invoke):
    missing = tmp_path / "nowhere" / "config.ini"

    result = invoke(missing, "run", "--at", AT)

    assert result.exit_code == 2
    assert_one_clean_error_line(result, str(missing), "not found")
    assert sandbox.state.count() == 0


@pytest.mark.parametrize(
    ("sections", "fragments"),
    [
        pytest.param({"opsramp": {"base_url": None}}, ["base_url", "missing"], id="no-base-url"),
        pytest.param(
            {"opsramp": {"client_secret": "${HR_TEST_UNSET_SECRET}"}},
            ["client_secret", "HR_TEST_UNSET_SECRET", "not set"],
            id="unset-env-var",
        ),
        pytest.param(
            {"opsramp": {"timeout_seconds": "abc"}},
            ["timeout_seconds", "'abc'", "not a number"],
            id="bad-number",
        ),
        pytest.param(
            {"report": {"timezone": "Mars/Olympus_Mons"}},
            ["timezone", "Mars/Olympus_Mons"],
            id="unknown-zone",
        ),
        pytest.param(
            {"opsramp": {"tiemout_seconds": "5"}}, ["[opsramp]", "tiemout_seconds"], id="typo-key"
        ),
        pytest.param({"reprot": {"timezone": "UTC"}}, ["[reprot]"], id="unknown-section"),
    ],
)
def test_a_bad_config_exits_2_with_one_line_naming_the_key_and_sends_nothing(
    sandbox, make_config, ledger_path, invoke, monkeypatch, sections, fragments
):
    monkeypatch.delenv("HR_TEST_UNSET_SECRET", raising=False)
    config = make_config(sandbox, **sections)

    result = invoke(config, "run", "--at", AT)

    assert result.exit_code == 2
    assert_one_clean_error_line(result, str(config), *fragments)
    assert sandbox.state.count() == 0
    assert not ledger_path.exists()


def test_a_malformed_base_url_is_a_config_error(sandbox, make_config, ledger_path, invoke):
    config = make_config("htp:/not-a-url")

    result = invoke(config, "run", "--at", AT)

    assert result.exit_code == 2
    assert_one_clean_error_line(result, "base_url", "htp:/not-a-url", "not an http(s) URL")
    assert not ledger_path.exists()


def test_a_config_error_stops_every_command_before_anything_is_sent(sandbox, make_config, invoke):
    config = make_config(sandbox, opsramp={"timeout_seconds": "abc"})

    codes = [
        invoke(config, *args).exit_code
        for args in (
            ["backfill", "--date", D, "--at", "2026-02-13T01:00Z"],
            ["cleanup", "--at", "2026-02-13T01:00Z"],
            ["status", "--date", D],
            ["check"],
            ["run", "--dry-run", "--at", AT],
        )
    ]

    assert codes == [2, 2, 2, 2, 2]
    assert sandbox.state.count() == 0


def test_a_percent_sign_in_filter_criteria_reaches_the_api_verbatim(sandbox, make_config, invoke):
    config = make_config(sandbox, report={"filter_criteria": 'name LIKE "%web%" AND x = "100%"'})

    result = invoke(config, "run", "--at", AT)

    assert result.exit_code == 0, result.stderr
    (body,) = sandbox.state.analyses.values()
    assert body["parameters"]["opsqlQuery"] == [
        {"groupBy": [], "filterCriteria": 'name LIKE "%web%" AND x = "100%"'}
    ]


def test_an_environment_variable_in_the_config_is_substituted(
    sandbox, make_config, invoke, monkeypatch
):
    monkeypatch.setenv("HR_TEST_SECRET", CLIENT_SECRET)
    config = make_config(sandbox, opsramp={"client_secret": "${HR_TEST_SECRET}"})

    result = invoke(config, "run", "--at", AT)

    assert result.exit_code == 0, result.stderr
    assert len(sandbox.state.analyses) == 1


def test_the_config_comes_from_hourly_report_config_before_dot_config_ini(
    sandbox, make_config, invoke
):
    make_config(sandbox, name="config.ini", report={"name_prefix": "from-cwd"})
    from_env = make_config(sandbox, name="env.ini", report={"name_prefix": "from-env"})

    result = invoke(None, "run", "--at", AT, env={"HOURLY_REPORT_CONFIG": str(from_env)})

    assert result.exit_code == 0, result.stderr
    assert sandbox.state.names == ["from-env-2026-02-12-0700-0800"]


def test_the_config_option_wins_over_hourly_report_config(sandbox, make_config, invoke):
    from_env = make_config(sandbox, name="env.ini", report={"name_prefix": "from-env"})
    from_option = make_config(sandbox, name="option.ini", report={"name_prefix": "from-option"})

    result = invoke(from_option, "run", "--at", AT, env={"HOURLY_REPORT_CONFIG": str(from_env)})

    assert result.exit_code == 0, result.stderr
    assert sandbox.state.names == ["from-option-2026-02-12-0700-0800"]


def test_without_option_or_variable_the_config_is_dot_config_ini(sandbox, make_config, invoke):
    make_config(sandbox, name="config.ini", report={"name_prefix": "from-cwd"})  # in the cwd

    result = invoke(None, "run", "--at", AT)

    assert result.exit_code == 0, result.stderr
    assert sandbox.state.names == ["from-cwd-2026-02-12-0700-0800"]


def test_without_any_config_the_error_says_how_to_give_one(sandbox, invoke):
    result = invoke(None, "run", "--at", AT)

    assert result.exit_code == 2
    assert_one_clean_error_line(result, "config.ini", "--config", "HOURLY_REPORT_CONFIG")
    assert sandbox.state.count() == 0


# --- usage errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        pytest.param(["backfill", "--date", "2026-02-30"], "2026-02-30", id="no-such-date"),
        pytest.param(["backfill", "--date", "12/02/2026"], "12/02/2026", id="wrong-format"),
        pytest.param(
            ["backfill", "--date", D, "--from", "2026-02-10"], "not both", id="date-and-from"
        ),
        pytest.param(["backfill", "--from", "2026-02-10"], "--to", id="from-without-to"),
        pytest.param(["backfill"], "--date", id="nothing"),
        pytest.param(
            ["backfill", "--from", "2026-02-12", "--to", "2026-02-10"], "before", id="reversed"
        ),
        pytest.param(
            ["backfill", "--from", "2026-01-01", "--to", "2026-02-01"], "--yes", id="32-days"
        ),
        pytest.param(["run", "--at", "2026-02-12T08:05:00"], "offset", id="at-without-zone"),
        pytest.param(["run", "--at", "yesterday"], "yesterday", id="at-not-a-time"),
        pytest.param(["run", "--at", "2099-01-01T00:05:00Z"], "future", id="at-in-the-future"),
        pytest.param(["cleanup", "--date", "today"], "today", id="cleanup-date-word"),
        pytest.param(["status", "--max-age", "2 hours"], "duration", id="bad-duration"),
        pytest.param(["cleanup", "--id", " "], "non-empty analysis ID", id="blank-id"),
    ],
)
def test_bad_arguments_exit_2_naming_the_problem_and_touch_nothing(
    sandbox, config_path, ledger_path, invoke, args, fragment
):
    result = invoke(config_path, *args)

    assert result.exit_code == 2
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert sandbox.state.count() == 0
    assert not ledger_path.exists()


def test_a_range_over_31_days_goes_ahead_with_yes(sandbox, config_path, ledger_path, invoke):
    result = invoke(
        config_path,
        *("backfill", "--from", "2026-01-01", "--to", "2026-02-01", "--yes"),
        *("--at", "2026-02-02T00:00Z", "--dry-run"),
    )

    assert result.exit_code == 0, result.stderr
    assert result.stdout.rstrip().endswith("backfill: 768 planned, 0 failed")
    assert sandbox.state.count() == 0
    assert not ledger_path.exists()


def test_backfill_of_a_day_that_has_not_begun_is_refused(sandbox, config_path, ledger_path, invoke):
    result = invoke(config_path, "backfill", "--date", "2026-02-14", "--at", "2026-02-13T23:59Z")

    assert result.exit_code == 2
    assert_one_clean_error_line(result, "2026-02-14", "has not begun")
    assert sandbox.state.count() == 0
    assert not ledger_path.exists()


def test_cleanup_of_today_is_refused_before_anything_is_sent(
    sandbox, config_path, ledger_path, invoke
):
    result = invoke(config_path, "cleanup", "--date", D, "--at", "2026-02-12T23:30Z")

    assert result.exit_code == 2
    assert_one_clean_error_line(result, D, "has not ended")
    assert sandbox.state.count() == 0


# --- the ledger file --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["run", "--at", AT],
        ["run", "--at", AT, "--dry-run"],
        ["backfill", "--date", D, "--at", "2026-02-13T01:00Z"],
        ["cleanup", "--at", "2026-02-13T01:00Z"],
        ["status", "--date", D],
    ],
    ids=["run", "run-dry", "backfill", "cleanup", "status"],
)
def test_a_ledger_that_is_not_sqlite_is_refused_untouched_and_nothing_is_sent(
    sandbox, config_path, ledger_path, invoke, args
):
    ledger_path.parent.mkdir(parents=True)
    ledger_path.write_bytes(b"hello")

    result = invoke(config_path, *args)

    assert result.exit_code == 1
    assert_one_clean_error_line(result, str(ledger_path), "not a SQLite database")
    assert ledger_path.read_bytes() == b"hello"
    assert sorted(p.name for p in ledger_path.parent.iterdir()) == [ledger_path.name]
    assert sandbox.state.count() == 0


def test_a_ledger_path_under_a_regular_file_fails_the_run_without_sending(
    sandbox, make_config, tmp_path, invoke
):
    (tmp_path / "afile").write_text("not a directory")
    config = tmp_path / "config.ini"
    config.write_text(config_text(sandbox.base_url, tmp_path / "afile" / "ledger.sqlite3"))
    config.chmod(0o600)

    result = invoke(config, "run", "--at", AT)

    assert result.exit_code == 1
    assert_one_clean_error_line(result, "afile")
    assert sandbox.state.count() == 0


# --- check ------------------------------------------------------------------------------------


def test_check_on_a_good_setup_prints_ok_lines_and_exits_0(
    sandbox, config_path, ledger_path, invoke
):
    result = invoke(config_path, "check")

    assert result.exit_code == 0, result.stdout + result.stderr
    lines = result.stdout.strip().splitlines()
    assert [line.split()[:2] for line in lines] == [
        ["ok", "config"],
        ["ok", "ledger"],
        ["ok", "token"],
    ]
    assert str(ledger_path) in lines[1]
    assert sandbox.state.count("token") == 1
    assert sandbox.state.count("create") == 0
    assert CLIENT_SECRET not in result.stdout + result.stderr


def test_check_with_a_wrong_secret_fails_on_the_token_line(sandbox, make_config, invoke):
    config = make_config(sandbox, opsramp={"client_secret": "wrong-secret-value"})

    result = invoke(config, "check")

    assert result.exit_code == 1
    token_line = next(line for line in result.stdout.splitlines() if "token" in line.split()[:2])
    assert token_line.startswith("FAIL")
    assert "rejected the client credentials" in token_line
    assert "HTTP 401" in token_line
    assert "wrong-secret-value" not in result.stdout + result.stderr
    assert sandbox.state.count("token", status=401) == 1  # a 401 is never retried


def test_check_with_an_unwritable_ledger_location_fails_on_the_ledger_line(
    sandbox, tmp_path, invoke
):
    (tmp_path / "afile").write_text("a regular file, not a directory")
    config = tmp_path / "config.ini"
    config.write_text(config_text(sandbox.base_url, tmp_path / "afile" / "ledger.sqlite3"))
    config.chmod(0o600)

    result = invoke(config, "check")

    assert result.exit_code == 1
    lines = {line.split()[1]: line for line in result.stdout.strip().splitlines()}
    assert lines["ledger"].startswith("FAIL")
    assert "afile" in lines["ledger"]
    assert lines["token"].startswith("ok")
    assert lines["config"].startswith("ok")


# --- errors, tracebacks, secrets in logs ------------------------------------------------------


def test_an_error_shows_a_traceback_only_at_debug_level(sandbox, config_path, ledger_path, invoke):
    ledger_path.parent.mkdir(parents=True)
    ledger_path.write_bytes(b"hello")

    quiet = invoke(config_path, "run", "--at", AT)
    debug = invoke(config_path, "--log-level", "DEBUG", "run", "--at", AT)

    assert quiet.exit_code == debug.exit_code == 1
    assert "Traceback" not in quiet.stderr
    assert "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1].startswith("hourly-report: error:")
    assert "Traceback" not in debug.stdout


def test_no_secret_or_token_appears_in_any_output_at_debug_level(sandbox, config_path, invoke):
    outputs = []
    for args in (
        ["run", "--at", AT],
        ["backfill", "--date", D, "--at", "2026-02-12T03:10Z"],
        ["cleanup", "--id", "no-such-analysis"],
        ["check"],
    ):
        result = invoke(config_path, "--log-level", "DEBUG", *args)
        assert result.exit_code == 0, result.stderr
        outputs.append(result.stdout + result.stderr)
    sandbox.state.revoke_tokens()  # the next call is refused: a fresh token is fetched
    result = invoke(config_path, "--log-level", "DEBUG", "run", "--at", "2026-02-12T09:05Z")
    assert result.exit_code == 0, result.stderr
    outputs.append(result.stdout + result.stderr)
    text = "\n".join(outputs)

    assert "POST /reporting/api/v3/tenants" in text  # DEBUG really is verbose
    assert sandbox.state.tokens_issued >= 5
    assert CLIENT_SECRET not in text
    for token in issued_tokens(sandbox):
        assert token not in text
    assert BEARER_VALUE.search(text) is None


def test_a_wrong_secret_is_not_echoed_in_the_run_error(sandbox, make_config, invoke):
    config = make_config(sandbox, opsramp={"client_secret": "wrong-secret-value"})

    result = invoke(config, "--log-level", "DEBUG", "run", "--at", AT)

    assert result.exit_code == 1
    assert "rejected the client credentials" in result.stderr
    assert "wrong-secret-value" not in result.stdout + result.stderr
    assert sandbox.state.count("create") == 0


# --- log format -------------------------------------------------------------------------------


def test_json_logs_are_one_object_per_line_and_the_first_info_names_version_tenant_window(
    sandbox, config_path, invoke
):
    result = invoke(config_path, "--log-level", "INFO", "--log-format", "json", "run", "--at", AT)

    assert result.exit_code == 0
    entries = [json.loads(line) for line in result.stderr.strip().splitlines()]
    assert len(entries) >= 2
    for entry in entries:
        assert {"time", "level", "message"} <= entry.keys()
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["time"])
    first = next(e for e in entries if e["level"] == "INFO")
    assert "0.1.0" in first["message"]
    assert TENANT in first["message"]
    assert "hourly-perf-report-2026-02-12-0700-0800" in first["message"]
    assert first["window"] == "2026-02-12T07:00:00Z"
    assert result.stdout == ""


def test_json_logs_stay_json_when_the_job_fails(sandbox, config_path, ledger_path, invoke):
    sandbox.state.inject("create", Fault("status", status=400))

    failed = invoke(config_path, "--log-format", "json", "run", "--at", AT)

    assert failed.exit_code == 1
    (entry,) = [json.loads(line) for line in failed.stderr.strip().splitlines()]
    assert entry["level"] == "ERROR"
    assert "HTTP 400" in entry["message"]


def test_json_logs_carry_the_final_error_line_as_json_too(
    sandbox, config_path, ledger_path, invoke
):
    ledger_path.parent.mkdir(parents=True)
    ledger_path.write_bytes(b"hello")

    result = invoke(config_path, "--log-format", "json", "run", "--at", AT)

    assert result.exit_code == 1
    (entry,) = [json.loads(line) for line in result.stderr.strip().splitlines()]
    assert entry["level"] == "ERROR"
    assert "not a SQLite database" in entry["message"]


def test_text_logs_at_info_show_the_run_and_its_result_on_stderr_only(sandbox, config_path, invoke):
    result = invoke(config_path, "--log-level", "INFO", "run", "--at", AT)

    assert result.exit_code == 0
    assert result.stdout == ""
    assert "run: tenant acme-tenant, window hourly-perf-report-2026-02-12-0700-0800" in (
        result.stderr
    )
    assert "run: 1 created, 0 failed" in result.stderr


# --- demo -------------------------------------------------------------------------------------


def test_demo_runs_end_to_end_and_prints_a_summary():
    done = run_process(None, "demo", timeout=60)

    assert done.returncode == 0, done.stdout + done.stderr
    for command in ("run", "backfill", "status", "cleanup"):
        assert re.search(rf"^\$ hourly-report .*\b{command}\b", done.stdout, re.MULTILINE)
    assert "(exit status 1)" not in done.stdout
    assert re.search(r"The sandbox saw \d+ requests on \d+ connections", done.stdout)
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("flag", ["--version", "--help"])
def test_version_and_help_do_not_import_the_heavy_modules(flag: str) -> None:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "hourly_report", flag],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()}
    assert "click" in imported
    assert not imported & {"requests", "urllib3", "tenacity", "sqlite3", "json", "logging"}


def test_usage_errors_are_one_line_from_the_installed_command(config_path, sandbox):
    result = run_process(config_path, "backfill", "--date", "2026-02-30")

    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "hourly-report: error: Invalid value for '--date': invalid date '2026-02-30': "
        "day is out of range for month (see 'hourly-report backfill --help')"
    ]
    assert sandbox.state.count() == 0


def test_a_sandbox_port_in_use_is_a_plain_error(sandbox):
    result = run_process(None, "sandbox", "--port", str(sandbox.port))

    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"hourly-report: error: cannot listen on 127.0.0.1:{sandbox.port}: Address already in use"
    )

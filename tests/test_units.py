"""The ready-to-install schedules in cron/: cron.d file, user crontab, systemd units."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path

import pytest

CRON_DIR = Path(__file__).resolve().parent.parent / "cron"
EXECUTABLE = "/opt/hourly-report/venv/bin/hourly-report"
CONFIG = "/etc/hourly-report/config.ini"
ENV_LINE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
TIME_FIELD = re.compile(r"^[0-9*,/-]+$")
VERIFY_PROBLEMS = ("Unknown key", "Unknown section", "Invalid", "Failed to parse", "ignoring")

SERVICES = {"hourly-report.service": "run", "hourly-report-cleanup.service": "cleanup"}
TIMERS = {
    "hourly-report.timer": ("*-*-* *:05:00 UTC", "hourly-report.service"),
    "hourly-report-cleanup.timer": ("*-*-* 00:30:00 UTC", "hourly-report-cleanup.service"),
}
SERVICE_SETTINGS = {
    "Type": "oneshot",
    "TimeoutStartSec": "15min",
    "User": "hourly-report",
    "Group": "hourly-report",
    "StateDirectory": "hourly-report",
    "StateDirectoryMode": "0700",
    "LoadCredential": "opsramp_client_secret:/etc/hourly-report/client_secret",
    "Environment": f"HOURLY_REPORT_CONFIG={CONFIG}",
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectControlGroups": "yes",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "ReadOnlyPaths": "/etc/hourly-report",
    "UMask": "0077",
}


def read_unit(name: str, directory: Path = CRON_DIR) -> configparser.ConfigParser:
    # systemd allows repeated keys; strict=False keeps the last, as a reader would.
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((directory / name).read_text(encoding="utf-8"), source=name)
    return parser


def cron_lines(name: str) -> tuple[dict[str, str], list[list[str]]]:
    """(environment settings, job lines split on whitespace) of a crontab file."""
    env: dict[str, str] = {}
    jobs: list[list[str]] = []
    for raw in (CRON_DIR / name).read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if ENV_LINE.match(line):
            key, _, value = line.partition("=")
            env[key] = value
        else:
            jobs.append(line.split())
    return env, jobs


def jobs_by_command(jobs: list[list[str]], command_index: int) -> dict[str, list[str]]:
    return {fields[-1]: fields for fields in jobs if len(fields) > command_index}


# --- cron.d -----------------------------------------------------------------------


def test_cron_d_file_name_has_no_dot_and_ends_with_a_newline():
    path = CRON_DIR / "hourly-report"
    assert "." not in path.name  # cron ignores /etc/cron.d files with a dot
    assert path.read_bytes().endswith(b"\n")


def test_cron_d_sets_shell_path_and_mailto():
    env, _ = cron_lines("hourly-report")
    assert env["SHELL"] == "/bin/sh"
    assert env["PATH"] == "/usr/local/bin:/usr/bin:/bin"
    assert env["MAILTO"]
    assert env.get("HOURLY_REPORT_CONFIG", CONFIG) == CONFIG


def test_cron_d_runs_at_five_past_every_hour_and_cleans_up_at_half_past_midnight():
    _, jobs = cron_lines("hourly-report")
    by_command = jobs_by_command(jobs, 6)
    assert set(by_command) == {"run", "cleanup"}
    assert by_command["run"][:5] == ["5", "*", "*", "*", "*"]
    assert by_command["cleanup"][:5] == ["30", "0", "*", "*", "*"]


def test_cron_d_jobs_run_as_the_service_user_with_absolute_paths():
    _, jobs = cron_lines("hourly-report")
    for fields in jobs:
        assert len(fields) >= 7
        assert all(TIME_FIELD.match(field) for field in fields[:5])
        assert fields[5] == "hourly-report"
        assert fields[6:9] == [EXECUTABLE, "--config", CONFIG]


# --- user crontab -----------------------------------------------------------------


def test_user_crontab_has_no_user_field_and_the_same_schedule():
    env, jobs = cron_lines("crontab")
    assert env["PATH"]
    assert env["MAILTO"]
    by_command = jobs_by_command(jobs, 5)
    assert set(by_command) == {"run", "cleanup"}
    assert by_command["run"][:5] == ["5", "*", "*", "*", "*"]
    assert by_command["cleanup"][:5] == ["30", "0", "*", "*", "*"]
    for fields in jobs:
        assert len(fields) >= 6
        assert fields[5].startswith("/")  # the executable, not a user name
        assert fields[5].endswith("/bin/hourly-report")
    assert (CRON_DIR / "crontab").read_bytes().endswith(b"\n")


# --- systemd ----------------------------------------------------------------------


@pytest.mark.parametrize(("name", "command"), SERVICES.items())
def test_service_is_a_hardened_oneshot_with_credentials_and_state(name, command):
    unit = read_unit(name)
    service = dict(unit["Service"])
    assert {key: service.get(key) for key in SERVICE_SETTINGS} == SERVICE_SETTINGS
    assert service["ExecStart"] == f"{EXECUTABLE} --config {CONFIG} {command}"
    assert unit["Unit"]["After"] == "network-online.target"
    assert unit["Unit"]["Wants"] == "network-online.target"
    assert "# OnFailure=status-email@%n.service" in (CRON_DIR / name).read_text()


@pytest.mark.parametrize(("name", "expected"), TIMERS.items())
def test_timer_fires_on_time_persistently_and_targets_its_service(name, expected):
    on_calendar, service = expected
    unit = read_unit(name)
    timer = unit["Timer"]
    assert timer["OnCalendar"] == on_calendar
    assert timer["Persistent"] == "true"
    assert timer["AccuracySec"] == "1s"
    assert timer["Unit"] == service
    assert (CRON_DIR / service).is_file()
    assert unit["Install"]["WantedBy"] == "timers.target"


def verify_problems(output: str, unit_names: list[str]) -> list[str]:
    """Lines of ``systemd-analyze verify`` output that point at our units' syntax."""
    return [
        line
        for line in output.splitlines()
        if any(name in line for name in unit_names)
        and any(problem in line for problem in VERIFY_PROBLEMS)
    ]


def run_verify(directory: Path, names: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", "verify", *(str(directory / name) for name in names)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def copy_units(tmp_path: Path) -> list[str]:
    """The units, copied with ExecStart pointing at an executable that exists here."""
    names = [*SERVICES, *TIMERS]
    for name in names:
        text = (CRON_DIR / name).read_text(encoding="utf-8")
        text = re.sub(r"(?m)^ExecStart=.*$", "ExecStart=/bin/true", text)
        (tmp_path / name).write_text(text, encoding="utf-8")
    return names


def test_verify_problems_picks_out_syntax_errors_in_our_units():
    output = (
        "/tmp/x/hourly-report.timer:3: Unknown key 'Bogus' in section [Timer], ignoring.\n"
        "/tmp/x/hourly-report.service:9: Failed to parse protect system value, ignoring: no\n"
        "/lib/systemd/system/other.service:1: Unknown key 'X' in section [Unit], ignoring.\n"
        "Some unrelated notice\n"
    )
    names = ["hourly-report.service", "hourly-report.timer"]
    assert len(verify_problems(output, names)) == 2


def test_units_pass_systemd_analyze_verify_where_available(tmp_path):
    names = copy_units(tmp_path)
    for name in SERVICES:
        assert read_unit(name, tmp_path)["Service"]["ExecStart"] == "/bin/true"
    if shutil.which("systemd-analyze") is None:
        return  # configparser checks above (and in the tests before) still apply
    result = run_verify(tmp_path, names)
    output = result.stdout + result.stderr
    assert verify_problems(output, names) == [], output
    assert result.returncode == 0, output
    broken = tmp_path / "hourly-report.timer"
    broken.write_text(broken.read_text() + "Bogus=1\n", encoding="utf-8")
    result = run_verify(tmp_path, names)
    assert verify_problems(result.stdout + result.stderr, names), "verify must catch a bad key"

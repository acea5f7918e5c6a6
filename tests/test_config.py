"""config.ini -> Settings: resolution, parsing, defaults, validation, secrets, TLS, proxy."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from hourly_report import config
from hourly_report.config import (
    OpsRampSettings,
    ReportSettings,
    RetrySettings,
    Secret,
    Settings,
    default_ledger_path,
    redact_url,
    resolve_path,
)
from hourly_report.errors import ConfigError
from tests.conftest import without_root_override

REPO_ROOT = Path(__file__).resolve().parents[1]
BASE_URL = "https://acme.api.opsramp.com"
SECRET = "s3cr3t-client-secret-value"
HIDDEN = "hunter2-proxy-password"

OPSRAMP_KEYS = (
    "base_url, ca_bundle, client_id, client_secret, client_secret_file, proxy, "
    "tenant_id, timeout_seconds, token_refresh_margin_seconds, verify_tls"
)
KNOWN_SECTIONS = "[opsramp], [report], [ledger], [retry], [monitoring]"

MINIMAL = {
    "base_url": BASE_URL,
    "tenant_id": "acme-tenant",
    "client_id": "acme-client",
    "client_secret": "${SECRET}",
}


def render(sections: dict[str, dict[str, str | None]]) -> str:
    lines: list[str] = []
    for section, keys in sections.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {value}" for key, value in keys.items() if value is not None)
        lines.append("")
    return "\n".join(lines)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The environment handed to ``load``: explicit, never the real one."""
    return {
        "SECRET": SECRET,
        "HOME": str(tmp_path / "home"),
        "XDG_STATE_HOME": str(tmp_path / "xdg-state"),
    }


@pytest.fixture
def write(tmp_path: Path):
    """``write(opsramp={...}, report={...}, ...)`` -> path of a 0600 config.ini.

    ``opsramp`` starts from MINIMAL; a value of None removes that key.
    ``text=`` writes raw text instead; ``mode=`` and ``name=`` as expected.
    """

    def make(
        *,
        text: str | None = None,
        name: str = "config.ini",
        mode: int = 0o600,
        **sections: dict[str, str | None],
    ) -> Path:
        if text is None:
            values: dict[str, dict[str, str | None]] = {"opsramp": dict(MINIMAL)}
            for section, overrides in sections.items():
                values.setdefault(section, {}).update(overrides)
            text = render(values)
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        path.chmod(mode)
        return path

    return make


def error_of(path: Path, env: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as info:
        config.load(path, env)
    assert info.value.exit_code == 2
    return str(info.value)


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.fixture(autouse=True)
def _capture_warnings(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="hourly_report.config")


# --- resolution ----------------------------------------------------------------------


def test_resolve_prefers_cli_value_over_env_and_default() -> None:
    env = {"HOURLY_REPORT_CONFIG": "/etc/from-env.ini"}
    assert resolve_path("/etc/from-cli.ini", env) == Path("/etc/from-cli.ini")


def test_resolve_uses_env_when_no_cli_value() -> None:
    env = {"HOURLY_REPORT_CONFIG": "/etc/from-env.ini"}
    assert resolve_path(None, env) == Path("/etc/from-env.ini")


@pytest.mark.parametrize("env", [{}, {"HOURLY_REPORT_CONFIG": ""}])
def test_resolve_falls_back_to_config_ini_in_cwd(env: dict[str, str]) -> None:
    assert resolve_path(None, env) == Path("config.ini")


def test_load_without_env_uses_process_environment(write, monkeypatch) -> None:
    monkeypatch.setenv("SECRET", "from-os-environ")
    settings = config.load(write())
    assert settings.opsramp.client_secret.reveal() == "from-os-environ"


# --- file-level errors -----------------------------------------------------------------


def test_missing_file_names_path_and_hints_config_option(tmp_path: Path, env) -> None:
    path = tmp_path / "nowhere" / "config.ini"
    message = error_of(path, env)
    assert message == (
        f"configuration file {path} not found (use --config PATH or set HOURLY_REPORT_CONFIG; "
        "see config.ini in the project for an example)"
    )


def test_directory_instead_of_file(tmp_path: Path, env) -> None:
    message = error_of(tmp_path, env)
    assert message.startswith(f"cannot read configuration file {tmp_path}: ")


def test_a_config_that_is_not_utf8_names_the_byte_and_its_offset(tmp_path: Path, env) -> None:
    text = render({"opsramp": dict(MINIMAL), "report": {"name_prefix": "caf"}})
    data = text.encode("utf-8").replace(b"= caf", b"= caf\xe9")  # Latin-1 "café"
    offset = data.index(b"\xe9")
    path = tmp_path / "config.ini"
    path.write_bytes(data)
    assert error_of(path, env) == (
        f"{path}: not UTF-8 text (byte 0xe9 at offset {offset}); save the file as UTF-8"
    )


def test_the_offset_of_a_bad_byte_counts_a_bom_and_bytes_past_the_first_8_kib(
    tmp_path: Path, env
) -> None:
    # A long comment pushes the bad byte past any read-buffer boundary.
    data = b"\xef\xbb\xbf# " + b"x" * 10_000 + b"\n[opsramp]\ntenant_id = \xff\n"
    path = tmp_path / "config.ini"
    path.write_bytes(data)
    offset = data.index(b"\xff")
    assert offset > 10_000
    assert error_of(path, env) == (
        f"{path}: not UTF-8 text (byte 0xff at offset {offset}); save the file as UTF-8"
    )


def test_garbage_is_not_ini(write, env) -> None:
    path = write(text="this is not an ini file\njust words\n")
    assert error_of(path, env) == (
        f"{path}: not a valid INI file: File contains no section headers."
    )


def test_line_without_equals_is_not_ini(write, env) -> None:
    path = write(text="[opsramp]\nbase_url is the api root\n")
    assert error_of(path, env) == (
        f"{path}: not a valid INI file: Source contains parsing errors: '{path}'"
    )


def test_duplicate_key(write, env) -> None:
    path = write(text=render({"opsramp": MINIMAL}) + "\n[report]\nmethods = max\nmethods = avg\n")
    assert error_of(path, env) == (
        f"{path}: not a valid INI file: While reading from '{path}' [line  9]: "
        "option 'methods' in section 'report' already exists"
    )


def test_duplicate_section(write, env) -> None:
    path = write(text=render({"opsramp": MINIMAL}) + "[report]\n[report]\n")
    assert error_of(path, env) == (
        f"{path}: not a valid INI file: While reading from '{path}' [line  7]: "
        "section 'report' already exists"
    )


def test_utf8_bom_is_accepted(write, env) -> None:
    path = write(text="\ufeff" + render({"opsramp": MINIMAL}))
    assert config.load(path, env).opsramp.base_url == BASE_URL


# --- required keys -----------------------------------------------------------------------


@pytest.mark.parametrize("key", ["base_url", "tenant_id", "client_id"])
def test_required_key_missing(write, env, key: str) -> None:
    path = write(opsramp={key: None})
    assert error_of(path, env) == f"{path} [opsramp] {key} is missing; it is required"


@pytest.mark.parametrize("key", ["base_url", "tenant_id", "client_id", "client_secret"])
def test_required_key_empty(write, env, key: str) -> None:
    path = write(opsramp={key: ""})
    assert error_of(path, env) == f"{path} [opsramp] {key} is empty; it is required"


def test_required_key_empty_after_substitution(write, env) -> None:
    path = write(opsramp={"client_id": "${EMPTY}"})
    env["EMPTY"] = ""
    assert error_of(path, env) == f"{path} [opsramp] client_id is empty; it is required"


def test_secret_missing(write, env) -> None:
    path = write(opsramp={"client_secret": None})
    assert error_of(path, env) == (
        f"{path} [opsramp]: no client secret: set client_secret or client_secret_file "
        "(or the systemd credential opsramp_client_secret)"
    )


@pytest.mark.parametrize("text", ["[report]\nmethods = max\n", "", "\n# only a comment\n"])
def test_opsramp_section_missing(write, env, text: str) -> None:
    path = write(text=text)
    assert error_of(path, env) == (
        f"{path} has no [opsramp] section (see config.ini in the project for an example)"
    )


def test_a_misspelt_opsramp_section_is_reported_as_unknown_not_missing(write, env) -> None:
    path = write(text="[opsram]\nbase_url = https://x.example\n")
    assert error_of(path, env).startswith(f"{path}: unknown section [opsram] (known: ")


# --- ${NAME} substitution, no other interpolation ---------------------------------------------


def test_env_substitution(write, env) -> None:
    env.update(CID="client-from-env", TENANT="tenant-from-env", A="x", B="y")
    path = write(
        opsramp={"client_id": "${CID}", "tenant_id": "${TENANT}"},
        report={"name_prefix": "pre-${A}-${B}"},
    )
    settings = config.load(path, env)
    assert settings.opsramp.client_id == "client-from-env"
    assert settings.opsramp.tenant_id == "tenant-from-env"
    assert settings.opsramp.client_secret.reveal() == SECRET
    assert settings.report.name_prefix == "pre-x-y"


def test_substituted_value_is_not_expanded_again(write, env) -> None:
    env["CID"] = "${SECRET}"
    path = write(opsramp={"client_id": "${CID}"})
    assert config.load(path, env).opsramp.client_id == "${SECRET}"


def test_unset_variable_is_named(write, env) -> None:
    path = write(opsramp={"client_id": "${OPSRAMP_CLIENT_ID}"})
    assert error_of(path, env) == (
        f"{path} [opsramp] client_id: environment variable OPSRAMP_CLIENT_ID is not set"
    )


def test_unset_variable_in_secret_is_named(write, env) -> None:
    path = write(opsramp={"client_secret": "${OPSRAMP_CLIENT_SECRET}"})
    assert error_of(path, env) == (
        f"{path} [opsramp] client_secret: environment variable OPSRAMP_CLIENT_SECRET is not set"
    )


def test_percent_is_not_interpolated(write, env) -> None:
    path = write(report={"filter_criteria": 'name LIKE "%web%" AND x = "%(y)s"'})
    settings = config.load(path, env)
    assert settings.report.filter_criteria == 'name LIKE "%web%" AND x = "%(y)s"'


@pytest.mark.parametrize("value", ["cost > $5", "$HOME", "a $ b", "${lone", "$$", "${1X}"])
def test_dollar_without_braced_name_is_kept(write, env, value: str) -> None:
    path = write(report={"filter_criteria": value})
    assert config.load(path, env).report.filter_criteria == value


# --- comma lists -------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["metrics", "methods", "formats"])
def test_comma_list_strips_spaces_and_drops_empty_items(write, env, key: str) -> None:
    path = write(report={key: " a ,b,, c , "})
    assert getattr(config.load(path, env).report, key) == ("a", "b", "c")


def test_comma_list_single_item(write, env) -> None:
    path = write(report={"metrics": "system_cpu_utilization"})
    assert config.load(path, env).report.metrics == ("system_cpu_utilization",)


@pytest.mark.parametrize("key", ["metrics", "methods", "formats"])
def test_all_empty_list_is_an_error(write, env, key: str) -> None:
    path = write(report={key: " , ,"})
    assert error_of(path, env) == (
        f"{path} [report] {key}: needs at least one comma-separated value"
    )


# --- defaults ----------------------------------------------------------------------------------


def test_defaults_match_the_design(write, env, tmp_path: Path, caplog) -> None:
    path = write()
    settings = config.load(path, env)
    assert settings.source == path
    assert settings.opsramp == OpsRampSettings(
        base_url=BASE_URL,
        tenant_id="acme-tenant",
        client_id="acme-client",
        client_secret=Secret(SECRET),
        verify=True,
        timeout_seconds=30.0,
        token_refresh_margin_seconds=300.0,
        proxy=None,
    )
    assert settings.opsramp.connect_timeout == 10.0
    report = settings.report
    assert report.app_id == "PERFORMANCE-UTILIZATION"
    assert report.metrics == ("system_cpu_utilization",)
    assert report.methods == ("max",)
    assert report.formats == ("xlsx",)
    assert report.filter_criteria == 'state = "active" AND monitorable = "true"'
    assert report.name_prefix == "hourly-perf-report"
    assert report.display_mode == "Consolidated List"
    assert report.query_config == "summary"
    assert report.timezone == "UTC"
    assert report.zone == ZoneInfo("UTC")
    assert settings.retry == RetrySettings(
        max_attempts=5, backoff_seconds=1.0, max_backoff_seconds=60.0, deadline_seconds=600.0
    )
    assert settings.ledger_path == tmp_path / "xdg-state" / "hourly-report" / "ledger.sqlite3"
    assert settings.ping_url is None
    assert warnings_of(caplog) == []


def test_empty_optional_values_mean_default(write, env) -> None:
    path = write(
        opsramp={"verify_tls": "", "ca_bundle": "", "timeout_seconds": "", "proxy": ""},
        report={"metrics": "", "timezone": ""},
        retry={"max_attempts": ""},
        monitoring={"ping_url": ""},
    )
    settings = config.load(path, env)
    assert settings.opsramp.verify is True
    assert settings.opsramp.timeout_seconds == 30.0
    assert settings.opsramp.proxy is None
    assert settings.report == ReportSettings()
    assert settings.retry == RetrySettings()
    assert settings.ping_url is None


def test_values_are_read(write, env) -> None:
    path = write(
        opsramp={"timeout_seconds": "2.5", "token_refresh_margin_seconds": "0"},
        report={
            "app_id": "OTHER-APP",
            "display_mode": "Separate List",
            "query_config": "detailed",
        },
        retry={
            "max_attempts": "1",
            "backoff_seconds": "0",
            "max_backoff_seconds": "0",
            "deadline_seconds": "30",
        },
    )
    settings = config.load(path, env)
    assert settings.opsramp.timeout_seconds == 2.5
    assert settings.opsramp.connect_timeout == 2.5
    assert settings.opsramp.token_refresh_margin_seconds == 0.0
    assert settings.report.app_id == "OTHER-APP"
    assert settings.report.display_mode == "Separate List"
    assert settings.report.query_config == "detailed"
    assert settings.retry == RetrySettings(1, 0.0, 0.0, 30.0)


def test_keys_are_case_insensitive(write, env) -> None:
    path = write(text=render({"opsramp": MINIMAL}) + "[retry]\nMax_Attempts = 7\n")
    assert config.load(path, env).retry.max_attempts == 7


# --- the example config.ini ----------------------------------------------------------------


def test_example_config_ini_parses_with_design_defaults(tmp_path: Path, caplog) -> None:
    # The example names files under /etc and /var/lib: point them into tmp_path.
    secret = tmp_path / "client_secret"
    secret.write_text("example-secret\n", encoding="utf-8")
    text = (REPO_ROOT / "config.ini").read_text(encoding="utf-8")
    assert "client_secret_file = /etc/hourly-report/client_secret\n" in text
    assert "path = /var/lib/hourly-report/ledger.sqlite3\n" in text
    text = text.replace("/etc/hourly-report/client_secret", str(secret))
    text = text.replace("/var/lib/hourly-report/ledger.sqlite3", str(tmp_path / "ledger.sqlite3"))
    path = tmp_path / "config.ini"
    path.write_text(text, encoding="utf-8")
    path.chmod(0o640)

    settings = config.load(path, {"HOME": str(tmp_path / "home")})

    assert settings.opsramp == OpsRampSettings(
        base_url="https://acme.api.opsramp.com",
        tenant_id="00000000-0000-0000-0000-000000000000",
        client_id="REPLACE-WITH-YOUR-CLIENT-ID",
        client_secret=Secret("example-secret"),
        verify=True,
        timeout_seconds=30.0,
        token_refresh_margin_seconds=300.0,
        proxy=None,
    )
    assert settings.report == ReportSettings()
    assert settings.report.filter_criteria == 'state = "active" AND monitorable = "true"'
    assert settings.report.display_mode == "Consolidated List"
    assert settings.retry == RetrySettings(5, 1.0, 60.0, 600.0)
    assert settings.ledger_path == tmp_path / "ledger.sqlite3"
    assert settings.ping_url is None
    assert warnings_of(caplog) == []  # group-readable is fine: the secret is in its own file


def test_example_config_ini_documents_every_key() -> None:
    """Every known key appears in the example, set or as a commented ``# key = ...`` line."""
    text = (REPO_ROOT / "config.ini").read_text(encoding="utf-8")
    documented: dict[str, set[str]] = {}
    section = ""
    for line in text.splitlines():
        header = re.fullmatch(r"\[(\w+)\]", line.strip())
        if header:
            section = header.group(1)
            documented[section] = set()
            continue
        key = re.match(r"#?\s*([a-z_]+)\s*=", line)
        if key and section:
            documented[section].add(key.group(1))
    assert set(documented) == set(config._KNOWN)
    for name, keys in config._KNOWN.items():
        assert keys <= documented[name], (name, keys - documented[name])


def test_example_config_ini_has_no_inline_comments() -> None:
    """configparser keeps "30  # seconds" as the value: comments must be whole lines."""
    for line in (REPO_ROOT / "config.ini").read_text(encoding="utf-8").splitlines():
        if line and not line.startswith(("#", "[")):
            assert "#" not in line, line
            assert ";" not in line, line


# --- numbers, booleans, retry bounds --------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("abc", "'abc' is not a number"),
        ("0", "'0' must be greater than 0"),
        ("-1", "'-1' must be greater than 0"),
        ("nan", "'nan' is not a finite number"),
        ("inf", "'inf' is not a finite number"),
        ("-inf", "'-inf' is not a finite number"),
        ("1e400", "'1e400' is not a finite number"),
        ("30 # seconds", "'30 # seconds' is not a number"),
    ],
)
def test_bad_timeout(write, env, value: str, reason: str) -> None:
    path = write(opsramp={"timeout_seconds": value})
    assert error_of(path, env) == f"{path} [opsramp] timeout_seconds: {reason}"


@pytest.mark.parametrize(
    ("section", "key", "value", "reason"),
    [
        ("opsramp", "token_refresh_margin_seconds", "-1", "'-1' must not be negative"),
        ("opsramp", "token_refresh_margin_seconds", "nan", "'nan' is not a finite number"),
        ("retry", "backoff_seconds", "-0.5", "'-0.5' must not be negative"),
        ("retry", "backoff_seconds", "soon", "'soon' is not a number"),
        ("retry", "max_backoff_seconds", "inf", "'inf' is not a finite number"),
        ("retry", "deadline_seconds", "0", "'0' must be greater than 0"),
        ("retry", "deadline_seconds", "nan", "'nan' is not a finite number"),
    ],
)
def test_bad_numbers(write, env, section: str, key: str, value: str, reason: str) -> None:
    path = write(**{section: {key: value}})
    assert error_of(path, env) == f"{path} [{section}] {key}: {reason}"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("0", "'0' must be between 1 and 100"),
        ("-3", "'-3' must be between 1 and 100"),
        ("101", "'101' must be between 1 and 100"),
        ("2.5", "'2.5' is not a whole number"),
        ("many", "'many' is not a whole number"),
    ],
)
def test_bad_max_attempts(write, env, value: str, reason: str) -> None:
    path = write(retry={"max_attempts": value})
    assert error_of(path, env) == f"{path} [retry] max_attempts: {reason}"


@pytest.mark.parametrize("value", [1, 100])
def test_max_attempts_bounds_are_inclusive(write, env, value: int) -> None:
    path = write(retry={"max_attempts": str(value)})
    assert config.load(path, env).retry.max_attempts == value


def test_max_backoff_below_backoff(write, env) -> None:
    path = write(retry={"backoff_seconds": "10", "max_backoff_seconds": "5"})
    assert error_of(path, env) == (
        f"{path} [retry]: max_backoff_seconds (5) is below backoff_seconds (10)"
    )


def test_max_backoff_below_default_backoff(write, env) -> None:
    path = write(retry={"max_backoff_seconds": "0.5"})
    assert error_of(path, env) == (
        f"{path} [retry]: max_backoff_seconds (0.5) is below backoff_seconds (1)"
    )


def test_max_backoff_equal_to_backoff_is_fine(write, env) -> None:
    path = write(retry={"backoff_seconds": "5", "max_backoff_seconds": "5"})
    assert config.load(path, env).retry.max_backoff_seconds == 5.0


@pytest.mark.parametrize("value", ["maybe", "2", "enabled", "t"])
def test_bad_boolean(write, env, value: str) -> None:
    path = write(opsramp={"verify_tls": value})
    assert error_of(path, env) == (
        f"{path} [opsramp] verify_tls: {value!r} is not a boolean (use true or false)"
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        *[("true", True), ("TRUE", True), ("yes", True), ("on", True), ("1", True)],
        *[("false", False), ("False", False), ("no", False), ("off", False), ("0", False)],
    ],
)
def test_booleans(write, env, value: str, expected: bool) -> None:
    path = write(opsramp={"verify_tls": value})
    assert config.load(path, env).opsramp.verify is expected


# --- base_url ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (
            "acme.api.opsramp.com",
            "'acme.api.opsramp.com' is not an http(s) URL (like https://acme.api.opsramp.com)",
        ),
        (
            "ftp://acme.api.opsramp.com",
            "'ftp://acme.api.opsramp.com' is not an http(s) URL "
            "(like https://acme.api.opsramp.com)",
        ),
        ("https://", "'https://' is not an http(s) URL (like https://acme.api.opsramp.com)"),
        (
            "https://acme.api.opsramp.com:99999",
            "'https://acme.api.opsramp.com:99999' has an invalid port",
        ),
        (
            "https://acme.api.opsramp.com:https",
            "'https://acme.api.opsramp.com:https' has an invalid port",
        ),
        (
            "https://acme.api.opsramp.com/?tenant=x",
            "'https://acme.api.opsramp.com/?tenant=x' must not have a query or fragment",
        ),
        (
            "https://acme.api.opsramp.com/#top",
            "'https://acme.api.opsramp.com/#top' must not have a query or fragment",
        ),
    ],
)
def test_malformed_base_url(write, env, value: str, reason: str) -> None:
    path = write(opsramp={"base_url": value})
    assert error_of(path, env) == f"{path} [opsramp] base_url: {reason}"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("https://acme.api.opsramp.com/", "https://acme.api.opsramp.com"),
        ("https://acme.api.opsramp.com", "https://acme.api.opsramp.com"),
        ("https://gw.example.com:8443/opsramp/", "https://gw.example.com:8443/opsramp"),
    ],
)
def test_base_url_trailing_slash_stripped(write, env, value: str, expected: str) -> None:
    path = write(opsramp={"base_url": value})
    assert config.load(path, env).opsramp.base_url == expected


def test_plain_http_base_url_warns(write, env, caplog) -> None:
    path = write(opsramp={"base_url": "http://opsramp.internal:8080"})
    assert config.load(path, env).opsramp.base_url == "http://opsramp.internal:8080"
    assert warnings_of(caplog) == [
        "base_url http://opsramp.internal:8080 uses plain http: "
        "credentials would travel unencrypted"
    ]


@pytest.mark.parametrize(
    "value",
    ["http://127.0.0.1:8080", "http://localhost:8080/", "http://[::1]:8080", "http://127.0.0.2:9"],
)
def test_plain_http_loopback_base_url_does_not_warn(write, env, caplog, value: str) -> None:
    config.load(write(opsramp={"base_url": value}), env)
    assert warnings_of(caplog) == []


def test_base_url_password_is_never_shown(write, env, caplog) -> None:
    path = write(opsramp={"base_url": f"http://user:{HIDDEN}@opsramp.internal/?x=1"})
    message = error_of(path, env)
    assert HIDDEN not in message
    assert "user:***@opsramp.internal" in message
    path = write(opsramp={"base_url": f"http://user:{HIDDEN}@opsramp.internal"})
    config.load(path, env)
    assert warnings_of(caplog)
    assert HIDDEN not in caplog.text


# --- identifiers -----------------------------------------------------------------------------


TENANT_RULE = "(letters, digits, '-', '_', '.', ':' only, starting with a letter or digit)"


@pytest.mark.parametrize(
    "value",
    ["acme/tenant", "acme tenant", "../etc", "acme?x=1", "..", ".", "...", "-acme", ":acme", "_a"],
)
def test_bad_tenant_id(write, env, value: str) -> None:
    path = write(opsramp={"tenant_id": value})
    assert error_of(path, env) == (
        f"{path} [opsramp] tenant_id: {value!r} is not a tenant id {TENANT_RULE}"
    )


def test_tenant_id_from_env_with_trailing_newline_is_rejected(write, env) -> None:
    env["TENANT"] = "acme-tenant\n"
    path = write(opsramp={"tenant_id": "${TENANT}"})
    assert error_of(path, env) == (
        f"{path} [opsramp] tenant_id: 'acme-tenant\\n' is not a tenant id {TENANT_RULE}"
    )


@pytest.mark.parametrize("length", [129, 100_000])
def test_an_over_long_tenant_id_is_rejected_with_a_short_message(write, env, length) -> None:
    path = write(opsramp={"tenant_id": "a" * length})
    message = error_of(path, env)
    assert message == (
        f"{path} [opsramp] tenant_id: '{'a' * 20}…' is {length} characters long; "
        "a tenant id has at most 128"
    )


@pytest.mark.parametrize(
    "value", ["client:acme-tenant", "msp_1.acme", "00000000-0000-0000", "a", "9" + "x" * 127]
)
def test_good_tenant_id(write, env, value: str) -> None:
    assert config.load(write(opsramp={"tenant_id": value}), env).opsramp.tenant_id == value


def test_client_id_of_256_characters_is_accepted_and_257_rejected(write, env) -> None:
    assert config.load(write(opsramp={"client_id": "c" * 256}), env).opsramp.client_id == "c" * 256
    path = write(opsramp={"client_id": "c" * 257})
    assert error_of(path, env) == (
        f"{path} [opsramp] client_id: '{'c' * 20}…' is 257 characters long; "
        "a client id has at most 256"
    )


def test_name_prefix_of_100_characters_is_accepted_and_101_rejected(write, env) -> None:
    settings = config.load(write(report={"name_prefix": "p" * 100}), env)
    assert settings.report.name_prefix == "p" * 100
    path = write(report={"name_prefix": "p" * 101})
    assert error_of(path, env) == (
        f"{path} [report] name_prefix: '{'p' * 20}…' is 101 characters long; "
        "at most 100 are allowed"
    )


@pytest.mark.parametrize("value", ["hourly perf", "hourly/perf", "report:1"])
def test_bad_name_prefix(write, env, value: str) -> None:
    path = write(report={"name_prefix": value})
    assert error_of(path, env) == (
        f"{path} [report] name_prefix: {value!r} may hold only letters, digits, '-', '_' and '.'"
    )


def test_name_prefix_from_env_with_trailing_newline_is_rejected(write, env) -> None:
    env["PREFIX"] = "hourly\n"
    path = write(report={"name_prefix": "${PREFIX}"})
    assert "[report] name_prefix: 'hourly\\n' may hold only" in error_of(path, env)


# --- unknown keys and sections -----------------------------------------------------------------


def test_unknown_key_is_named(write, env) -> None:
    path = write(opsramp={"timeout": "5"})
    assert error_of(path, env) == (
        f"{path} [opsramp]: unknown key(s) timeout (known: {OPSRAMP_KEYS})"
    )


def test_unknown_keys_in_other_sections(write, env) -> None:
    path = write(report={"metric": "x", "format": "csv"})
    message = error_of(path, env)
    assert message.startswith(f"{path} [report]: unknown key(s) format, metric (known: ")


def test_unknown_section_is_named(write, env) -> None:
    path = write(reports={"metrics": "x"})
    assert error_of(path, env) == f"{path}: unknown section [reports] (known: {KNOWN_SECTIONS})"


def test_default_section_is_rejected(write, env) -> None:
    path = write(text="[DEFAULT]\ntimeout_seconds = 5\n\n" + render({"opsramp": MINIMAL}))
    assert error_of(path, env) == f"{path}: unknown section [DEFAULT] (known: {KNOWN_SECTIONS})"


# --- timezone ------------------------------------------------------------------------------------


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "Europe/Pariss", "../etc/passwd", "utc+2"])
def test_unknown_timezone(write, env, zone: str) -> None:
    path = write(report={"timezone": zone})
    assert error_of(path, env) == (
        f"{path} [report] timezone: unknown time zone {zone!r} "
        "(use an IANA name such as Europe/Paris)"
    )


@pytest.mark.parametrize("zone", ["Europe/Paris", "Asia/Kolkata", "America/New_York"])
def test_valid_non_utc_timezone(write, env, zone: str) -> None:
    report = config.load(write(report={"timezone": zone}), env).report
    assert report.timezone == zone
    assert report.zone == ZoneInfo(zone)


# --- ledger path ---------------------------------------------------------------------------------


def test_relative_ledger_path_is_relative_to_config_dir(write, env, tmp_path: Path) -> None:
    path = write(name="etc/config.ini", ledger={"path": "state/ledger.sqlite3"})
    expected = tmp_path / "etc" / "state" / "ledger.sqlite3"
    assert config.load(path, env).ledger_path == expected


def test_absolute_ledger_path_is_kept(write, env, tmp_path: Path) -> None:
    target = tmp_path / "var" / "ledger.sqlite3"
    path = write(name="etc/config.ini", ledger={"path": str(target)})
    assert config.load(path, env).ledger_path == target


def test_ledger_default_state_directory(write, env, tmp_path: Path) -> None:
    env["STATE_DIRECTORY"] = str(tmp_path / "systemd-state")
    expected = tmp_path / "systemd-state" / "ledger.sqlite3"
    assert config.load(write(), env).ledger_path == expected
    assert config.load(write(ledger={"path": ""}), env).ledger_path == expected


def test_ledger_default_first_of_several_state_directories(tmp_path: Path) -> None:
    env = {"STATE_DIRECTORY": f"{tmp_path}/one:{tmp_path}/two"}
    assert default_ledger_path(env) == tmp_path / "one" / "ledger.sqlite3"


def test_ledger_default_xdg_state_home(write, env, tmp_path: Path) -> None:
    expected = tmp_path / "xdg-state" / "hourly-report" / "ledger.sqlite3"
    assert config.load(write(), env).ledger_path == expected


def test_ledger_default_home(write, env, tmp_path: Path) -> None:
    del env["XDG_STATE_HOME"]
    expected = tmp_path / "home" / ".local" / "state" / "hourly-report" / "ledger.sqlite3"
    assert config.load(write(), env).ledger_path == expected


def test_ledger_default_empty_variables_are_ignored(tmp_path: Path) -> None:
    env = {"STATE_DIRECTORY": "", "XDG_STATE_HOME": "", "HOME": str(tmp_path)}
    expected = tmp_path / ".local" / "state" / "hourly-report" / "ledger.sqlite3"
    assert default_ledger_path(env) == expected


# --- secrets -------------------------------------------------------------------------------------


@pytest.mark.parametrize("content", [f"{SECRET}\n", f"{SECRET}\r\n", SECRET, f"{SECRET}\n\n"])
def test_secret_file_trailing_newline_stripped(write, env, tmp_path, content: str) -> None:
    secret_file = tmp_path / "client_secret"
    secret_file.write_text(content, encoding="utf-8", newline="")
    path = write(opsramp={"client_secret": None, "client_secret_file": str(secret_file)})
    assert config.load(path, env).opsramp.client_secret.reveal() == SECRET


def test_relative_secret_file_is_relative_to_config(write, env, tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "secret").write_text("from-relative-file\n", encoding="utf-8")
    path = write(
        name="etc/config.ini", opsramp={"client_secret": None, "client_secret_file": "secret"}
    )
    assert config.load(path, env).opsramp.client_secret.reveal() == "from-relative-file"


def test_missing_secret_file_is_named(write, env, tmp_path: Path) -> None:
    path = write(opsramp={"client_secret": None, "client_secret_file": "nope"})
    assert error_of(path, env) == (
        f"cannot read client secret file {tmp_path / 'nope'}: No such file or directory "
        f"(set by {path} [opsramp] client_secret_file)"
    )


def test_unreadable_secret_file_is_named(write, tmp_path: Path) -> None:
    secret_file = tmp_path / "locked"
    secret_file.write_text(SECRET, encoding="utf-8")
    secret_file.chmod(0)
    path = write(opsramp={"client_secret": None, "client_secret_file": str(secret_file)})
    done = subprocess.run(
        [
            *without_root_override(),
            sys.executable,
            "-m",
            "hourly_report",
            "--config",
            str(path),
            "run",
            "--dry-run",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"hourly-report: error: cannot read client secret file {secret_file}: Permission denied "
        f"(set by {path} [opsramp] client_secret_file)"
    )


def test_secret_file_that_is_a_directory_is_named(write, env, tmp_path: Path) -> None:
    (tmp_path / "adir").mkdir()
    path = write(opsramp={"client_secret": None, "client_secret_file": "adir"})
    assert error_of(path, env) == (
        f"cannot read client secret file {tmp_path / 'adir'}: Is a directory "
        f"(set by {path} [opsramp] client_secret_file)"
    )


def test_secret_file_not_utf8(write, env, tmp_path: Path) -> None:
    (tmp_path / "binary").write_bytes(b"\xff\xfe\x00secret")
    path = write(opsramp={"client_secret": None, "client_secret_file": "binary"})
    assert error_of(path, env) == (
        f"cannot read client secret file {tmp_path / 'binary'}: not UTF-8 text "
        f"(set by {path} [opsramp] client_secret_file)"
    )


@pytest.mark.parametrize("content", ["", "\n", "\r\n"])
def test_empty_secret_file(write, env, tmp_path: Path, content: str) -> None:
    (tmp_path / "empty").write_text(content, encoding="utf-8", newline="")
    path = write(opsramp={"client_secret": None, "client_secret_file": "empty"})
    assert error_of(path, env) == (
        f"client secret file {tmp_path / 'empty'} is empty "
        f"(set by {path} [opsramp] client_secret_file)"
    )


@pytest.mark.parametrize(
    ("content", "reason"), [(b"\n", "is empty"), (b"\xff\xfe", "not UTF-8 text")]
)
def test_a_bad_systemd_credential_says_it_is_the_systemd_credential(
    write, env, credentials: Path, content: bytes, reason: str
) -> None:
    credentials.write_bytes(content)
    message = error_of(write(opsramp={"client_secret": None}), env)
    assert str(credentials) in message
    assert reason in message
    assert message.endswith(" (systemd credential)")


@pytest.fixture
def credentials(tmp_path: Path, env: dict[str, str]) -> Path:
    """A systemd credentials directory holding opsramp_client_secret."""
    directory = tmp_path / "credentials"
    directory.mkdir()
    (directory / "opsramp_client_secret").write_text("from-systemd\n", encoding="utf-8")
    env["CREDENTIALS_DIRECTORY"] = str(directory)
    return directory / "opsramp_client_secret"


def test_systemd_credential_is_used(write, env, credentials: Path, caplog) -> None:
    # A 0644 config is normal under /etc: without a literal secret there is no warning.
    path = write(opsramp={"client_secret": None}, mode=0o644)
    assert config.load(path, env).opsramp.client_secret.reveal() == "from-systemd"
    assert warnings_of(caplog) == []


def test_credentials_directory_without_our_file_is_ignored(write, env, tmp_path: Path) -> None:
    (tmp_path / "other-credentials").mkdir()
    env["CREDENTIALS_DIRECTORY"] = str(tmp_path / "other-credentials")
    assert config.load(write(), env).opsramp.client_secret.reveal() == SECRET
    path = write(opsramp={"client_secret": None})
    assert "no client secret" in error_of(path, env)


@pytest.mark.parametrize(
    ("literal", "use_file", "use_credential"),
    [(True, True, False), (True, False, True), (False, True, True), (True, True, True)],
)
def test_two_secret_sources_are_named(
    write, env, tmp_path, credentials: Path, literal: bool, use_file: bool, use_credential: bool
) -> None:
    (tmp_path / "secret").write_text("from-file\n", encoding="utf-8")
    if not use_credential:
        del env["CREDENTIALS_DIRECTORY"]
    path = write(
        opsramp={
            "client_secret": "${SECRET}" if literal else None,
            "client_secret_file": "secret" if use_file else None,
        }
    )
    names = []
    if literal:
        names.append(f"{path} [opsramp] client_secret")
    if use_file:
        names.append(f"{path} [opsramp] client_secret_file")
    if use_credential:
        names.append(f"systemd credential {credentials}")
    assert error_of(path, env) == (
        "the client secret is set more than once; keep exactly one of: " + ", ".join(names)
    )


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_literal_secret_in_readable_config_warns(write, env, caplog, mode: int) -> None:
    path = write(opsramp={"client_secret": SECRET}, mode=mode)
    settings = config.load(path, env)
    assert settings.opsramp.client_secret.reveal() == SECRET
    (warning,) = warnings_of(caplog)
    assert f"chmod 600 {path}" in warning
    assert SECRET not in caplog.text


def test_literal_secret_in_private_config_does_not_warn(write, env, caplog) -> None:
    path = write(opsramp={"client_secret": SECRET}, mode=0o600)
    config.load(path, env)
    assert warnings_of(caplog) == []


def test_env_or_file_secret_in_readable_config_does_not_warn(write, env, caplog, tmp_path):
    config.load(write(opsramp={"client_secret": "${SECRET}"}, mode=0o644), env)
    (tmp_path / "secret").write_text("from-file\n", encoding="utf-8")
    path = write(opsramp={"client_secret": None, "client_secret_file": "secret"}, mode=0o644)
    config.load(path, env)
    assert warnings_of(caplog) == []


def test_secret_never_shows_itself() -> None:
    secret = Secret(SECRET)
    assert repr(secret) == "Secret('***')"
    assert str(secret) == "Secret('***')"
    shown = " ".join([str(secret), repr([secret]), format(secret), str({"k": secret})])
    assert SECRET not in shown
    assert secret.reveal() == SECRET
    assert secret == Secret(SECRET)
    assert secret != Secret("other")
    assert secret != SECRET
    assert hash(secret) == hash(Secret(SECRET))


def test_settings_repr_hides_secret_and_proxy_password(write, env) -> None:
    proxy = f"http://alice:{HIDDEN}@proxy.example.com:3128"
    settings = config.load(write(opsramp={"client_secret": SECRET, "proxy": proxy}), env)
    assert isinstance(settings, Settings)
    assert settings.opsramp.proxy == proxy
    for text in (repr(settings), str(settings), repr(settings.opsramp)):
        assert SECRET not in text
        assert HIDDEN not in text


# --- TLS -----------------------------------------------------------------------------------------


def test_verify_tls_false_warns(write, env, caplog) -> None:
    settings = config.load(write(opsramp={"verify_tls": "false"}), env)
    assert settings.opsramp.verify is False
    assert warnings_of(caplog) == [
        "TLS certificate verification is OFF (verify_tls = false): "
        "prefer ca_bundle = PATH to the gateway's CA certificate"
    ]


def test_ca_bundle_becomes_verify_path(write, env, tmp_path: Path, caplog) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n", encoding="utf-8")
    settings = config.load(write(opsramp={"ca_bundle": str(bundle), "verify_tls": "true"}), env)
    assert settings.opsramp.verify == str(bundle)
    assert warnings_of(caplog) == []


def test_relative_ca_bundle_is_relative_to_config(write, env, tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "ca.pem").write_text("pem", encoding="utf-8")
    path = write(name="etc/config.ini", opsramp={"ca_bundle": "ca.pem"})
    assert config.load(path, env).opsramp.verify == str(tmp_path / "etc" / "ca.pem")


def test_missing_ca_bundle(write, env, tmp_path: Path) -> None:
    path = write(opsramp={"ca_bundle": "missing.pem"})
    assert error_of(path, env) == (
        f"{path} [opsramp] ca_bundle: {tmp_path / 'missing.pem'} is not a file"
    )


def test_ca_bundle_and_verify_false_conflict(write, env, tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("pem", encoding="utf-8")
    path = write(opsramp={"ca_bundle": "ca.pem", "verify_tls": "false"})
    assert error_of(path, env) == (
        f"{path} [opsramp]: ca_bundle is set but verify_tls = false; choose one"
    )


# --- proxy, ping_url, redact_url ------------------------------------------------------------------


@pytest.mark.parametrize(
    "proxy",
    [
        "http://proxy.example.com:3128",
        "https://proxy.example.com",
        f"http://alice:{HIDDEN}@proxy.example.com:3128",
    ],
)
def test_proxy_accepted(write, env, proxy: str) -> None:
    assert config.load(write(opsramp={"proxy": proxy}), env).opsramp.proxy == proxy


@pytest.mark.parametrize(
    ("proxy", "shown"),
    [
        (
            f"socks5://alice:{HIDDEN}@proxy:1080",
            "'socks5://alice:***@proxy:1080' is not an http(s) URL",
        ),
        (f"http://alice:{HIDDEN}@proxy:port", "'http://alice:***@proxy:port' has an invalid port"),
        (f"alice:{HIDDEN}@proxy:3128", "'***@proxy:3128' is not an http(s) URL"),
        (f"http://alice:pa/{HIDDEN}@proxy:3128", "'http://***@proxy:3128' has an invalid port"),
        ("proxy.example.com:3128", "'proxy.example.com:3128' is not an http(s) URL"),
        (f"http://alice:{HIDDEN}@[::1:3128", "Invalid IPv6 URL"),
    ],
)
def test_bad_proxy_never_echoes_password(write, env, proxy: str, shown: str) -> None:
    path = write(opsramp={"proxy": proxy})
    message = error_of(path, env)
    assert message.startswith(f"{path} [opsramp] proxy: {shown}")
    assert HIDDEN not in message


def test_ping_url(write, env) -> None:
    url = "https://hc-ping.com/0123abcd-0000-0000-0000-000000000000"
    assert config.load(write(monitoring={"ping_url": url}), env).ping_url == url
    path = write(monitoring={"ping_url": "hc-ping.com/abc"})
    assert error_of(path, env) == (
        f"{path} [monitoring] ping_url: 'hc-ping.com/abc' is not an http(s) URL "
        "(like https://acme.api.opsramp.com)"
    )


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://proxy:3128", "http://proxy:3128"),
        ("http://alice@proxy:3128", "http://alice@proxy:3128"),
        (f"http://alice:{HIDDEN}@proxy:3128", "http://alice:***@proxy:3128"),
        (f"https://alice:{HIDDEN}@proxy/path?q=1", "https://alice:***@proxy/path?q=1"),
        (f"http://alice:p@ss:{HIDDEN}@proxy:3128", "http://alice:***@proxy:3128"),
        (f"alice:{HIDDEN}@proxy:3128", "***@proxy:3128"),
        (f"http://alice:a#{HIDDEN}@proxy:3128", "http://***@proxy:3128"),
        (f"http://alice:{HIDDEN}@[::1:3128", "http://***@[::1:3128"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected

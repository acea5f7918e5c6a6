"""config.ini -> a typed, validated :class:`Settings`.

Rules (see README "Configuration"):

* ``${NAME}`` is replaced by environment variable NAME; an unset one is an error.
  No other interpolation: ``%`` reaches the API verbatim.
* Only ``[opsramp]`` base_url, tenant_id, client_id and a client secret are
  required; everything else has a default.  Unknown sections and keys are errors,
  so a typo never silently falls back to a default.
* Every problem raises :class:`ConfigError` naming the file, section and key.
"""

from __future__ import annotations

import configparser
import ipaddress
import logging
import os
import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from hourly_report.errors import ConfigError
from hourly_report.windows import load_zone

log = logging.getLogger(__name__)

CONFIG_ENV = "HOURLY_REPORT_CONFIG"
CREDENTIAL_NAME = "opsramp_client_secret"
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# First character alphanumeric: rules out "..", "." and "-x" (a path or an option).
_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
_PREFIX = re.compile(r"^[A-Za-z0-9_.-]+$")
MAX_TENANT_ID = 128
MAX_NAME_PREFIX = 100
MAX_CLIENT_ID = 256
T = TypeVar("T")


class Secret:
    """A string that never shows itself in reprs, logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class OpsRampSettings:
    base_url: str
    tenant_id: str
    client_id: str
    client_secret: Secret = field(repr=False)
    verify: bool | str = True  # True/False, or the path of a CA bundle
    timeout_seconds: float = 30.0
    token_refresh_margin_seconds: float = 300.0
    # repr=False: a proxy URL may carry a password (http://user:pass@proxy:3128).
    proxy: str | None = field(default=None, repr=False)

    @property
    def connect_timeout(self) -> float:
        # A TCP+TLS handshake that takes over 10 s will not succeed later either.
        return min(self.timeout_seconds, 10.0)


@dataclass(frozen=True)
class ReportSettings:
    app_id: str = "PERFORMANCE-UTILIZATION"
    metrics: tuple[str, ...] = ("system_cpu_utilization",)
    methods: tuple[str, ...] = ("max",)
    formats: tuple[str, ...] = ("xlsx",)
    filter_criteria: str = 'state = "active" AND monitorable = "true"'
    name_prefix: str = "hourly-perf-report"
    display_mode: str = "Consolidated List"
    query_config: str = "summary"
    timezone: str = "UTC"

    @property
    def zone(self) -> ZoneInfo:
        return load_zone(self.timezone)


@dataclass(frozen=True)
class RetrySettings:
    max_attempts: int = 5
    backoff_seconds: float = 1.0
    max_backoff_seconds: float = 60.0
    deadline_seconds: float = 600.0


@dataclass(frozen=True)
class Settings:
    source: Path
    opsramp: OpsRampSettings
    report: ReportSettings
    ledger_path: Path
    retry: RetrySettings
    ping_url: str | None = None


_KNOWN: dict[str, set[str]] = {
    "opsramp": {
        "base_url",
        "tenant_id",
        "client_id",
        "client_secret",
        "client_secret_file",
        "verify_tls",
        "ca_bundle",
        "timeout_seconds",
        "token_refresh_margin_seconds",
        "proxy",
    },
    "report": {
        "app_id",
        "metrics",
        "methods",
        "formats",
        "filter_criteria",
        "name_prefix",
        "display_mode",
        "query_config",
        "timezone",
    },
    "ledger": {"path"},
    "retry": {"max_attempts", "backoff_seconds", "max_backoff_seconds", "deadline_seconds"},
    "monitoring": {"ping_url"},
}


def resolve_path(cli_value: str | None, env: Mapping[str, str]) -> Path:
    """``--config``, else ``$HOURLY_REPORT_CONFIG``, else ``./config.ini``."""
    if cli_value:
        return Path(cli_value)
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV])
    return Path("config.ini")


def load(path: Path, env: Mapping[str, str] | None = None, *, need_secret: bool = True) -> Settings:
    """Read, interpolate and validate the configuration file at ``path``.

    ``need_secret=False`` (for ``status``, which never talks to OpsRamp) skips the
    client secret: a monitoring agent can read the ledger without the credential.
    """
    env = os.environ if env is None else env
    parser = _read(path)
    reader = _Reader(parser, path, env)
    reader.need_secret = need_secret
    reader.reject_unknown()
    if not parser.has_section("opsramp"):
        raise ConfigError(
            f"{path} has no [opsramp] section (see config.ini in the project for an example)"
        )
    settings = Settings(
        source=path,
        opsramp=_opsramp(reader),
        report=_report(reader),
        ledger_path=_ledger_path(reader, env),
        retry=_retry(reader),
        ping_url=reader.get("monitoring", "ping_url", "", _url) or None,
    )
    _warn_if_exposed(path, reader)
    return settings


def _read(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, empty_lines_in_values=False)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"configuration file {path} not found "
            f"(use --config PATH or set {CONFIG_ENV}; see config.ini in the project for an example)"
        ) from None
    except OSError as err:
        raise ConfigError(f"cannot read configuration file {path}: {err}") from None
    try:
        parser.read_string(_decode(path, data), source=str(path))
    except configparser.Error as err:
        first_line = str(err).splitlines()[0]
        raise ConfigError(f"{path}: not a valid INI file: {first_line}") from None
    return parser


def _decode(path: Path, data: bytes) -> str:
    """The file's text; a BOM left by a Windows editor is dropped, not a "missing
    section header"; a byte that is not UTF-8 is named with its offset in the file."""
    bom = b"\xef\xbb\xbf"
    skipped = len(bom) if data.startswith(bom) else 0
    try:
        return data[skipped:].decode("utf-8")
    except UnicodeDecodeError as err:
        offset = skipped + err.start
        raise ConfigError(
            f"{path}: not UTF-8 text (byte 0x{data[offset]:02x} at offset {offset}); "
            "save the file as UTF-8"
        ) from None


class _Reader:
    """Typed access to the parsed file, with errors that name file, section and key."""

    def __init__(self, parser: configparser.ConfigParser, path: Path, env: Mapping[str, str]):
        self.parser = parser
        self.path = path
        self.env = env
        self.literal_secret = False
        self.need_secret = True

    def where(self, section: str, key: str) -> str:
        return f"{self.path} [{section}] {key}"

    def reject_unknown(self) -> None:
        if self.parser.defaults():
            # configparser would copy [DEFAULT] keys into every section.
            known = ", ".join(f"[{name}]" for name in _KNOWN)
            raise ConfigError(f"{self.path}: unknown section [DEFAULT] (known: {known})")
        for section in self.parser.sections():
            if section not in _KNOWN:
                known = ", ".join(f"[{name}]" for name in _KNOWN)
                raise ConfigError(f"{self.path}: unknown section [{section}] (known: {known})")
            unknown = sorted(set(self.parser[section]) - _KNOWN[section])
            if unknown:
                raise ConfigError(
                    f"{self.path} [{section}]: unknown key(s) {', '.join(unknown)} "
                    f"(known: {', '.join(sorted(_KNOWN[section]))})"
                )

    def raw(self, section: str, key: str) -> str | None:
        if not self.parser.has_option(section, key):
            return None
        value = self.parser.get(section, key).strip()
        return self.expand(section, key, value)

    def expand(self, section: str, key: str, value: str) -> str:
        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in self.env:
                raise ConfigError(
                    f"{self.where(section, key)}: environment variable {name} is not set"
                )
            return self.env[name]

        return _ENV_REF.sub(substitute, value)

    def get(self, section: str, key: str, default: T, convert: Callable[[str], T]) -> T:
        value = self.raw(section, key)
        if value is None or value == "":
            return default
        try:
            return convert(value)
        except ValueError as err:
            raise ConfigError(f"{self.where(section, key)}: {err}") from None

    def required(self, section: str, key: str) -> str:
        value = self.raw(section, key)
        if not value:
            state = "is missing" if value is None else "is empty"
            raise ConfigError(f"{self.where(section, key)} {state}; it is required")
        return value


def _opsramp(reader: _Reader) -> OpsRampSettings:
    section = "opsramp"
    tenant = reader.required(section, "tenant_id")
    if len(tenant) > MAX_TENANT_ID:
        raise ConfigError(
            f"{reader.where(section, 'tenant_id')}: {_excerpt(tenant)} is {len(tenant)} "
            f"characters long; a tenant id has at most {MAX_TENANT_ID}"
        )
    if not _TENANT.fullmatch(tenant):
        raise ConfigError(
            f"{reader.where(section, 'tenant_id')}: {tenant!r} is not a tenant id "
            "(letters, digits, '-', '_', '.', ':' only, starting with a letter or digit)"
        )
    client_id = reader.required(section, "client_id")
    if len(client_id) > MAX_CLIENT_ID:
        raise ConfigError(
            f"{reader.where(section, 'client_id')}: {_excerpt(client_id)} is "
            f"{len(client_id)} characters long; a client id has at most {MAX_CLIENT_ID}"
        )
    timeout = reader.get(section, "timeout_seconds", 30.0, _positive_float)
    margin = reader.get(section, "token_refresh_margin_seconds", 300.0, _non_negative_float)
    return OpsRampSettings(
        base_url=_base_url(reader),
        tenant_id=tenant,
        client_id=client_id,
        client_secret=_client_secret(reader) if reader.need_secret else Secret(""),
        verify=_verify(reader),
        timeout_seconds=timeout,
        token_refresh_margin_seconds=margin,
        proxy=reader.get(section, "proxy", None, _url),
    )


def _base_url(reader: _Reader) -> str:
    value = reader.required("opsramp", "base_url")
    try:
        url = _url(value)
    except ValueError as err:
        raise ConfigError(f"{reader.where('opsramp', 'base_url')}: {err}") from None
    parts = urlsplit(url)
    if parts.query or parts.fragment:
        raise ConfigError(
            f"{reader.where('opsramp', 'base_url')}: {redact_url(url)!r} "
            "must not have a query or fragment"
        )
    if parts.scheme == "http" and not _is_loopback(parts.hostname or ""):
        log.warning(
            "base_url %s uses plain http: credentials would travel unencrypted", redact_url(url)
        )
    return url.rstrip("/")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _client_secret(reader: _Reader) -> Secret:
    section = "opsramp"
    literal_origin = reader.where(section, "client_secret")
    sources: dict[str, Callable[[], str]] = {}
    if reader.parser.has_option(section, "client_secret"):
        sources[literal_origin] = lambda: reader.required(section, "client_secret")
    file_value = reader.raw(section, "client_secret_file")
    if file_value:
        secret_file = _relative_to(reader.path, file_value)
        file_origin = reader.where(section, "client_secret_file")
        sources[file_origin] = lambda: _read_secret_file(secret_file, f"set by {file_origin}")
    credentials = reader.env.get("CREDENTIALS_DIRECTORY")
    if credentials and (Path(credentials) / CREDENTIAL_NAME).exists():
        credential = Path(credentials) / CREDENTIAL_NAME
        sources[f"systemd credential {credential}"] = lambda: _read_secret_file(
            credential, "systemd credential"
        )
    if not sources:
        raise ConfigError(
            f"{reader.path} [opsramp]: no client secret: set client_secret or "
            f"client_secret_file (or the systemd credential {CREDENTIAL_NAME})"
        )
    if len(sources) > 1:
        raise ConfigError(
            "the client secret is set more than once; keep exactly one of: " + ", ".join(sources)
        )
    ((origin, read),) = sources.items()
    raw = reader.parser.get(section, "client_secret", fallback="")
    # Only the client_secret key itself can be literal ("... opsramp_client_secret", the
    # systemd credential, also ends with "client_secret": compare the whole origin).
    reader.literal_secret = origin == literal_origin and not _ENV_REF.search(raw)
    return Secret(read())


def _read_secret_file(path: Path, origin: str) -> str:
    """The secret in ``path``; errors end with ``(origin)``: where the path was set."""
    try:
        value = path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as err:
        raise ConfigError(
            f"cannot read client secret file {path}: {err.strerror} ({origin})"
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(
            f"cannot read client secret file {path}: not UTF-8 text ({origin})"
        ) from None
    if not value:
        raise ConfigError(f"client secret file {path} is empty ({origin})")
    return value


def _verify(reader: _Reader) -> bool | str:
    verify = reader.get("opsramp", "verify_tls", True, _bool)
    bundle = reader.raw("opsramp", "ca_bundle")
    if bundle:
        path = _relative_to(reader.path, bundle)
        if not path.is_file():
            raise ConfigError(f"{reader.where('opsramp', 'ca_bundle')}: {path} is not a file")
        if not verify:
            raise ConfigError(
                f"{reader.path} [opsramp]: ca_bundle is set but verify_tls = false; choose one"
            )
        return str(path)
    if not verify:
        log.warning(
            "TLS certificate verification is OFF (verify_tls = false): "
            "prefer ca_bundle = PATH to the gateway's CA certificate"
        )
    return verify


def _report(reader: _Reader) -> ReportSettings:
    section, defaults = "report", ReportSettings()
    prefix = reader.get(section, "name_prefix", defaults.name_prefix, _text)
    if len(prefix) > MAX_NAME_PREFIX:
        raise ConfigError(
            f"{reader.where(section, 'name_prefix')}: {_excerpt(prefix)} is {len(prefix)} "
            f"characters long; at most {MAX_NAME_PREFIX} are allowed"
        )
    if not _PREFIX.fullmatch(prefix):
        raise ConfigError(
            f"{reader.where(section, 'name_prefix')}: {prefix!r} may hold only letters, "
            "digits, '-', '_' and '.'"
        )
    zone_name = reader.get(section, "timezone", defaults.timezone, _text)
    try:
        load_zone(zone_name)
    except ValueError as err:
        raise ConfigError(f"{reader.where(section, 'timezone')}: {err}") from None
    return ReportSettings(
        app_id=reader.get(section, "app_id", defaults.app_id, _text),
        metrics=reader.get(section, "metrics", defaults.metrics, _list),
        methods=reader.get(section, "methods", defaults.methods, _list),
        formats=reader.get(section, "formats", defaults.formats, _list),
        filter_criteria=reader.get(section, "filter_criteria", defaults.filter_criteria, _text),
        name_prefix=prefix,
        display_mode=reader.get(section, "display_mode", defaults.display_mode, _text),
        query_config=reader.get(section, "query_config", defaults.query_config, _text),
        timezone=zone_name,
    )


def _retry(reader: _Reader) -> RetrySettings:
    section, defaults = "retry", RetrySettings()
    settings = RetrySettings(
        max_attempts=reader.get(section, "max_attempts", defaults.max_attempts, _attempts),
        backoff_seconds=reader.get(
            section, "backoff_seconds", defaults.backoff_seconds, _non_negative_float
        ),
        max_backoff_seconds=reader.get(
            section, "max_backoff_seconds", defaults.max_backoff_seconds, _non_negative_float
        ),
        deadline_seconds=reader.get(
            section, "deadline_seconds", defaults.deadline_seconds, _positive_float
        ),
    )
    if settings.max_backoff_seconds < settings.backoff_seconds:
        raise ConfigError(
            f"{reader.path} [retry]: max_backoff_seconds ({settings.max_backoff_seconds:g}) "
            f"is below backoff_seconds ({settings.backoff_seconds:g})"
        )
    return settings


def _ledger_path(reader: _Reader, env: Mapping[str, str]) -> Path:
    value = reader.raw("ledger", "path")
    if value:
        return _relative_to(reader.path, value)
    return default_ledger_path(env)


def default_ledger_path(env: Mapping[str, str]) -> Path:
    """The ledger under $STATE_DIRECTORY (systemd), $XDG_STATE_HOME or ~/.local/state."""
    if env.get("STATE_DIRECTORY"):
        # systemd may pass several colon-separated directories; the first is ours.
        return Path(env["STATE_DIRECTORY"].split(":")[0]) / "ledger.sqlite3"
    if env.get("XDG_STATE_HOME"):
        base = Path(env["XDG_STATE_HOME"])
    else:
        base = Path(env.get("HOME") or Path.home()) / ".local" / "state"
    return base / "hourly-report" / "ledger.sqlite3"


def _warn_if_exposed(path: Path, reader: _Reader) -> None:
    if not reader.literal_secret:
        return
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning(
            "%s holds a literal client_secret and is readable by others: run 'chmod 600 %s' "
            "(or use client_secret_file / ${ENV})",
            path,
            path,
        )


def _excerpt(value: str, keep: int = 20) -> str:
    """``'abcdefgh…'``: the start of an over-long value, for a one-line message."""
    return repr(value if len(value) <= keep else value[:keep] + "…")


def _relative_to(config_path: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else config_path.parent / path


# --- converters: each raises ValueError with the reason --------------------------------


def _text(value: str) -> str:
    return value


def _list(value: str) -> tuple[str, ...]:
    items = tuple(item.strip() for item in value.split(",") if item.strip())
    if not items:
        raise ValueError("needs at least one comma-separated value")
    return items


def _bool(value: str) -> bool:
    lowered = value.lower()
    if lowered in ("1", "yes", "true", "on"):
        return True
    if lowered in ("0", "no", "false", "off"):
        return False
    raise ValueError(f"{value!r} is not a boolean (use true or false)")


def _float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a number") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise ValueError(f"{value!r} is not a finite number")
    return number


def _positive_float(value: str) -> float:
    number = _float(value)
    if number <= 0:
        raise ValueError(f"{value!r} must be greater than 0")
    return number


def _non_negative_float(value: str) -> float:
    number = _float(value)
    if number < 0:
        raise ValueError(f"{value!r} must not be negative")
    return number


def _attempts(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a whole number") from None
    if not 1 <= number <= 100:
        raise ValueError(f"{value!r} must be between 1 and 100")
    return number


def _url(value: str) -> str:
    parts = urlsplit(value)
    shown = redact_url(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{shown!r} is not an http(s) URL (like https://acme.api.opsramp.com)")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValueError(f"{shown!r} has an invalid port") from None
    return value


def redact_url(url: str) -> str:
    """``url`` without a password in its user-info part (proxy URLs may carry one)."""
    try:
        parts = urlsplit(url)
        username, password = parts.username, parts.password
    except ValueError:
        username = password = None
    if password is not None:
        netloc = parts.netloc.rsplit("@", 1)[1]
        return parts._replace(netloc=f"{username}:***@{netloc}").geturl()
    if username is not None or "@" not in url:
        return url
    # Not parsed as user-info, yet an "@" is there: "user:pass@proxy:3128" without a
    # scheme, or an unencoded "/" or "#" in the password.  Hide all before the last "@".
    lead = re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", url)
    return f"{lead.group(0) if lead else ''}***@{url.rsplit('@', 1)[1]}"

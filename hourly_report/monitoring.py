"""Healthchecks-style monitoring pings: start, success, failure with exit status.

A ping is best effort: it is retried a few times, and a final failure is one
warning line, never an exception — monitoring must not turn a good run into a bad
one.  Ping URLs carry a secret (the check's UUID or ping key) in their path, so
logs show only the scheme, the host and the last four characters of the path, and
:class:`Pinger` registers the URL's secret parts (path, query, password) with
:func:`hourly_report.logs.register_secret`, so even urllib3's DEBUG request lines
are masked.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlsplit

from hourly_report import logs

if TYPE_CHECKING:
    import requests

log = logging.getLogger("hourly_report.monitoring")

BODY_BYTES = 10_000


class _PingError(Exception):
    """A ping attempt failed; ``str`` is a reason safe to log (no URL in it)."""


class _Retryable(_PingError):
    """A failure worth another try: no connection, a timeout, or a 5xx answer."""


class Pinger:
    """Sends pings to ``ping_url``; with no URL every method does nothing."""

    def __init__(
        self,
        ping_url: str | None,
        *,
        user_agent: str,
        proxy: str | None = None,
        verify: bool | str = True,
        timeout: float = 10.0,
        attempts: int = 3,
        backoff: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.ping_url = _without_trailing_slash((ping_url or "").strip())
        # urllib3 logs every request line at DEBUG ("POST /ping/<uuid>/start HTTP/1.1"):
        # mask the URL's secret parts in every log line, whoever writes it.
        for secret in secret_parts(self.ping_url):
            logs.register_secret(secret)
        if proxy:
            logs.register_secret(_password_of(proxy))
        self.user_agent = user_agent
        self.proxies = {"http": proxy, "https": proxy} if proxy else None
        self.verify = verify
        self.timeout = timeout
        self.attempts = max(1, attempts)
        self.backoff = backoff
        self.sleep = sleep
        self._session: requests.Session | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.ping_url)

    def start(self) -> None:
        """Tell the monitor a run has begun (it can then alert on a run that hangs)."""
        self._ping("/start", b"")

    def success(self, log_tail: str = "") -> None:
        """Report success, with the end of the run's log as the body."""
        self._ping("", _body(log_tail))

    def failure(self, exit_status: int, log_tail: str = "") -> None:
        """Report failure with the process exit status, log tail as the body."""
        self._ping(f"/{int(exit_status)}", _body(log_tail))

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def _ping(self, suffix: str, body: bytes) -> None:
        if not self.enabled:
            return
        try:
            self._send_with_retries(with_suffix(self.ping_url, suffix), body)
        except Exception as err:  # a ping never fails the job
            reason = str(err) if isinstance(err, _PingError) else _describe(err)
            log.warning(
                "monitoring ping to %s failed: %s; the job itself is unaffected",
                safe_url(self.ping_url, suffix),
                reason,
            )

    def _send_with_retries(self, url: str, body: bytes) -> None:
        for attempt in range(1, self.attempts + 1):
            try:
                self._send(url, body)
                return
            except _Retryable:
                if attempt == self.attempts:
                    raise
                self.sleep(self.backoff)

    def _send(self, url: str, body: bytes) -> None:
        import requests

        try:
            response = self._get_session().post(
                url,
                data=body,
                headers={"Content-Type": "text/plain; charset=utf-8"},
                timeout=(self.timeout, self.timeout),
                proxies=self.proxies,
                verify=self.verify,
            )
        except (requests.ConnectionError, requests.Timeout) as err:
            raise _Retryable(_describe(err)) from None
        status = response.status_code
        response.close()
        if status >= 500:
            raise _Retryable(f"HTTP {status}")
        if status >= 400:
            raise _PingError(f"HTTP {status}")

    def _get_session(self) -> requests.Session:
        if self._session is None:
            import requests

            self._session = requests.Session()
            self._session.headers["User-Agent"] = self.user_agent
        return self._session


def _body(log_tail: str) -> bytes:
    """The last ``BODY_BYTES`` of ``log_tail`` as UTF-8, not starting mid-character."""
    data = log_tail.encode("utf-8")[-BODY_BYTES:]
    return data.decode("utf-8", errors="ignore").encode("utf-8")


def safe_url(ping_url: str, suffix: str = "") -> str:
    """``https://hc-ping.com/…c3d4/start``: no userinfo, query, or secret path."""
    parts = urlsplit(ping_url)
    host = parts.hostname or "?"
    if parts.port:
        host = f"{host}:{parts.port}"
    path = parts.path.strip("/")
    hint = path[-4:] if len(path) >= 12 else ""
    return f"{parts.scheme}://{host}/…{hint}{suffix}"


def _without_trailing_slash(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return url.rstrip("/")
    return parts._replace(path=parts.path.rstrip("/")).geturl()


def with_suffix(ping_url: str, suffix: str) -> str:
    """``ping_url`` with ``suffix`` ("/start", "/1") added to its path, before any
    query string (``…/<uuid>?create=1`` -> ``…/<uuid>/start?create=1``)."""
    if not suffix:
        return ping_url
    parts = urlsplit(ping_url)
    return parts._replace(path=parts.path.rstrip("/") + suffix).geturl()


# A path segment this long is a check UUID or ping key, whatever precedes it.
_SECRET_SEGMENT_CHARS = 16
# Shorter paths or query values ("/ping", "rid=true") hold no secret, and masking
# them would mask ordinary words in every log line.
_TRIVIAL_CHARS = 8


def secret_parts(ping_url: str) -> list[str]:
    """The parts of ``ping_url`` that are secret: its path (without a trailing slash),
    long path segments on their own, the query string and its values, the password."""
    if not ping_url:
        return []
    try:
        parts = urlsplit(ping_url)
    except ValueError:
        return [ping_url]
    found: list[str] = []
    path = parts.path.rstrip("/")
    if len(path.strip("/")) >= _TRIVIAL_CHARS:
        found.append(path)
        found.extend(seg for seg in path.split("/") if len(seg) >= _SECRET_SEGMENT_CHARS)
    if parts.query:
        found.append(parts.query)
        found.extend(value for _, value in parse_qsl(parts.query) if len(value) >= _TRIVIAL_CHARS)
    password = _password_of(ping_url)
    if password:
        found.append(password)
    return found


def _password_of(url: str) -> str | None:
    try:
        return urlsplit(url).password
    except ValueError:
        return None


def _describe(err: BaseException) -> str:
    """A reason for ``err`` that never quotes the URL (requests' messages do)."""
    import requests

    if isinstance(err, requests.Timeout):
        return "timed out"
    if isinstance(err, requests.exceptions.SSLError):
        return "TLS error (check verify_tls / ca_bundle)"
    if isinstance(err, requests.exceptions.ProxyError):
        return "proxy error"
    if isinstance(err, requests.ConnectionError):
        cause = _os_error_in(err)
        return f"could not connect ({cause})" if cause else "could not connect"
    return type(err).__name__


def _os_error_in(err: BaseException) -> str:
    """The first ``strerror`` found among the exception's causes ("Connection refused")."""
    pending: list[BaseException] = [err]
    seen: set[int] = set()
    while pending and len(seen) < 20:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.strerror:
            return str(current.strerror)
        linked = [getattr(current, "reason", None), current.__cause__, current.__context__]
        linked.extend(current.args)
        pending.extend(item for item in linked if isinstance(item, BaseException))
    return ""

"""The OpsRamp API client: one session, token lifecycle, timeouts, retry policy.

One :class:`OpsRampClient` per invocation holds one ``requests.Session`` (so a
whole job reuses one connection), fetches a token lazily and refreshes it
``token_refresh_margin_seconds`` before expiry (tracked on a monotonic clock).

The retry rules live in :func:`classify_exception` and :func:`classify_status`,
following the design's "Which failures may be retried":

==================  =========================  ======================================
failure             token / delete             create (not idempotent)
==================  =========================  ======================================
connect failed      retried                    retried (nothing was sent)
read timeout        retried                    outcome unknown: not resent
reply dropped       retried                    outcome unknown: not resent
429                 wait for reset, retried    wait for reset, retried
503                 retried                    retried (server did not act)
500 / 502 / 504     retried                    outcome unknown: not resent
401 / 407           new token once, repeat     new token once, repeat once
other 4xx, 3xx      never (3xx not followed)   never (3xx not followed)
TLS failure         never                      never
no TLS at all       never (https:// for an http port: said so, no ca_bundle advice)
==================  =========================  ======================================

With ``proxy`` set, a failed connect is reported as the proxy's (password masked),
not as OpsRamp's; it stays retryable, since nothing reached OpsRamp.  Retries and
rate-limit waits are logged at INFO: one that recovers is a success and prints
nothing at the default level (cron mails any output).

Waits honour ``X-RateLimit-Reset`` / ``Retry-After`` (on a 429; ``Retry-After`` on a
retried 5xx too) plus at most 0.1 s of jitter; without them the wait is exponential
with jitter.  An answer saying ``X-RateLimit-Remaining: 0`` makes the next request
wait for the reset.  Every wait is checked against the invocation's :class:`Deadline`
before it is logged or taken, so a run never stalls past its budget.  The read
timeout is ``timeout_seconds``, shortened (not below 1 s) when the budget runs low.
This module raises only the project's errors; it knows nothing of click or SQLite.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
import tenacity
from requests.adapters import HTTPAdapter
from urllib3.exceptions import InsecureRequestWarning, NewConnectionError
from urllib3.exceptions import ProxyError as _Urllib3ProxyError

from hourly_report import __version__, logs, payloads
from hourly_report.clock import Clock
from hourly_report.config import OpsRampSettings, RetrySettings, redact_url
from hourly_report.errors import (
    ApiError,
    AuthError,
    DeadlineExceededError,
    OutcomeUnknownError,
    ServiceUnavailableError,
)

log = logging.getLogger(__name__)

USER_AGENT = f"hourly-report/{__version__}"
RATE_LIMIT_JITTER_SECONDS = 0.1
BODY_EXCERPT_CHARS = 200


class Deadline:
    """The invocation's total time budget, on a monotonic clock."""

    def __init__(self, seconds: float, clock: Clock) -> None:
        self.seconds = seconds
        self._clock = clock
        self._expires = clock.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.0, self._expires - self._clock.monotonic())

    def ensure_can_wait(self, seconds: float, reason: str) -> None:
        if seconds > self.remaining():
            raise DeadlineExceededError(
                f"{reason}: waiting {seconds:.0f} s would pass this run's time budget "
                f"([retry] deadline_seconds = {self.seconds:g}); stopped. Re-run later; "
                "windows already created are kept"
            )


class RetryableError(ApiError):
    """A failure the current request kind may retry; ``wait`` is the server's hint, if any."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        wait: float | None = None,
        connect_failed: bool = False,
    ) -> None:
        super().__init__(message, status=status)
        self.wait = wait
        self.connect_failed = connect_failed


class _TokenRejected(ApiError):
    """An API call answered 401/407: the token was revoked or expired."""


@dataclass(frozen=True)
class Call:
    """One logical API request, and how it may be retried."""

    kind: str  # "token" | "create" | "delete"
    method: str
    url: str
    what: str  # for messages: "create analysis hourly-...-0700-0800"
    idempotent: bool


class OpsRampClient:
    """Talks to one tenant of one OpsRamp instance for the length of one job."""

    def __init__(
        self,
        settings: OpsRampSettings,
        retry: RetrySettings,
        *,
        clock: Clock,
        deadline: Deadline,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.retry = retry
        self.clock = clock
        self.deadline = deadline
        self.rng = rng or random.Random()
        # The form body carries it; make sure no log line ever can.
        logs.register_secret(settings.client_secret.reveal())
        self.session = _make_session(settings)
        self.requests_sent = 0
        self.tokens_fetched = 0
        self._token: str | None = None
        self._token_expires = 0.0
        self._resume_at = 0.0  # wall-clock epoch before which the rate limit is exhausted

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> OpsRampClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- public operations --------------------------------------------------------

    def token(self) -> str:
        """A valid access token, fetched or refreshed when needed.

        Refreshed ``token_refresh_margin_seconds`` before expiry; a margin as long as
        the token's whole lifetime would refetch on every call, so at least a tenth of
        the lifetime is always used.
        """
        lifetime = self._token_lifetime
        margin = min(self.settings.token_refresh_margin_seconds, lifetime * 0.9)
        if self._token is None or self.clock.monotonic() >= self._token_expires - margin:
            self._fetch_token()
        assert self._token is not None
        return self._token

    def create_analysis(self, body: dict[str, Any]) -> str:
        """Create one analysis; return its id.  Raises OutcomeUnknownError when unsure."""
        call = Call(
            "create",
            "POST",
            payloads.analyses_url(self.settings.base_url, self.settings.tenant_id),
            f"create analysis {body.get('name', '')}",
            idempotent=False,
        )
        response = self._authorized(call, json=body)
        return _analysis_id(call, response)

    def delete_analysis(self, analysis_id: str) -> bool:
        """Delete one analysis; True if deleted now, False if it was already gone (404)."""
        call = Call(
            "delete",
            "DELETE",
            payloads.analysis_url(self.settings.base_url, self.settings.tenant_id, analysis_id),
            f"delete analysis {analysis_id}",
            idempotent=True,
        )
        response = self._authorized(call, allow_404=True)
        return response.status_code != 404

    # --- token ----------------------------------------------------------------------

    _token_lifetime = 7199.0

    def _fetch_token(self) -> None:
        call = Call(
            "token",
            "POST",
            payloads.token_url(self.settings.base_url),
            "request an access token",
            idempotent=True,
        )
        form = payloads.token_form(self.settings.client_id, self.settings.client_secret.reveal())
        try:
            response = self._with_retries(call, lambda: self._send(call, data=form))
        except (AuthError, ServiceUnavailableError):
            raise
        except ApiError as err:
            reason = str(err).removeprefix(f"{call.what}: ")
            raise ServiceUnavailableError(
                f"could not obtain an access token: {reason}", status=err.status
            ) from None
        token, lifetime = _parse_token(response)
        logs.register_secret(token)
        self.tokens_fetched += 1
        self._token = token
        self._token_lifetime = lifetime
        self._token_expires = self.clock.monotonic() + lifetime
        log.debug("obtained an access token valid for %.0f s", lifetime)

    def _authorized(
        self, call: Call, *, json: Any = None, allow_404: bool = False
    ) -> requests.Response:
        """Send an API call with a token; on 401/407 get a new token once and repeat once."""
        try:
            return self._with_retries(call, lambda: self._send_api(call, json, allow_404))
        except _TokenRejected as first:
            log.info(
                "%s: token refused (%s); fetching a new token and repeating once",
                call.what,
                first.status,
            )
            self._token = None
        try:
            return self._with_retries(call, lambda: self._send_api(call, json, allow_404))
        except _TokenRejected as second:
            raise AuthError(
                f"{call.what}: OpsRamp refused a freshly issued token ({second}); check that "
                f"client {self.settings.client_id} may use tenant {self.settings.tenant_id}",
                status=second.status,
            ) from None

    def _send_api(self, call: Call, body: Any, allow_404: bool) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token()}"}
        return self._send(call, headers=headers, json=body, allow_404=allow_404)

    # --- retries --------------------------------------------------------------------

    def _with_retries(
        self, call: Call, attempt: Callable[[], requests.Response]
    ) -> requests.Response:
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(RetryableError),
            stop=tenacity.stop_after_attempt(self.retry.max_attempts),
            wait=lambda state: self._wait_for(state, call),
            sleep=self.clock.sleep,
            reraise=True,
            before_sleep=lambda state: _log_retry(call, state),
        )
        try:
            return retrying(attempt)
        except RetryableError as err:
            # Unreachable after every attempt: the rest of the job would fare no better.
            final = ServiceUnavailableError if err.connect_failed else ApiError
            raise final(
                f"{err} (gave up after {self.retry.max_attempts} attempts)", status=err.status
            ) from None

    def _wait_for(self, state: tenacity.RetryCallState, call: Call) -> float:
        """The wait before the next attempt; refused here (before any "retrying" log
        line) when it would pass the deadline."""
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, RetryableError) and error.wait is not None:
            wait = error.wait + self.rng.uniform(0, RATE_LIMIT_JITTER_SECONDS)
        else:
            base = self.retry.backoff_seconds * 2.0 ** (state.attempt_number - 1)
            jitter = self.rng.uniform(0, self.retry.backoff_seconds)
            wait = min(self.retry.max_backoff_seconds, base + jitter)
        self.deadline.ensure_can_wait(wait, f"{call.what}: {_message_tail(error)}")
        return wait

    def _pace(self) -> None:
        """Wait for the rate-limit window to reset if the last answer said none remain."""
        wait = self._resume_at - self.clock.time()
        if wait <= 0:
            return
        wait += self.rng.uniform(0, RATE_LIMIT_JITTER_SECONDS)
        self.deadline.ensure_can_wait(wait, "OpsRamp rate limit exhausted")
        log.info("rate limit exhausted; waiting %.1f s for the window to reset", wait)
        self.clock.sleep(wait)

    # --- one HTTP exchange ----------------------------------------------------------

    def _send(
        self,
        call: Call,
        *,
        headers: Mapping[str, str] | None = None,
        allow_404: bool = False,
        **kwargs: Any,
    ) -> requests.Response:
        if self.deadline.remaining() <= 0:
            raise DeadlineExceededError(
                f"{call.what}: not sent, this run's time budget ([retry] deadline_seconds = "
                f"{self.deadline.seconds:g}) is used up; re-run later"
            )
        self._pace()
        # The configured timeout is the ceiling; a nearly spent budget shortens it,
        # but not below a second (or the configured value, if that is lower).
        read_timeout = min(self.settings.timeout_seconds, max(1.0, self.deadline.remaining()))
        timeout = (self.settings.connect_timeout, read_timeout)
        start = self.clock.monotonic()
        self.requests_sent += 1
        try:
            # Never follow a redirect: a DELETE sent on as a GET to a login page would
            # "succeed", and a 307 would resend the client secret to another host.
            response = self.session.request(
                call.method,
                call.url,
                headers=headers,
                timeout=timeout,
                allow_redirects=False,
                **kwargs,
            )
        except requests.RequestException as err:
            raise classify_exception(call, err, self.settings) from None
        log.debug(
            "%s %s -> %s in %.3f s",
            call.method,
            _path_of(call.url),
            response.status_code,
            self.clock.monotonic() - start,
        )
        self._note_rate_limit(response)
        if 200 <= response.status_code < 300 or (allow_404 and response.status_code == 404):
            return response
        raise classify_status(call, response, self.clock.time())

    def _note_rate_limit(self, response: requests.Response) -> None:
        if response.headers.get("X-RateLimit-Remaining", "").strip() != "0":
            return
        reset = _epoch(response.headers.get("X-RateLimit-Reset"))
        if reset is not None and response.status_code != 429:
            self._resume_at = max(self._resume_at, reset)


# --- classification (pure functions of the failure) -----------------------------------


def classify_exception(
    call: Call, err: requests.RequestException, settings: OpsRampSettings
) -> ApiError:
    """Map a transport failure to a retryable, outcome-unknown or final error."""
    host = redact_url(settings.base_url)
    if isinstance(err, requests.exceptions.SSLError):
        reason = _reason(err)
        if _is_protocol_mismatch(reason):
            return ApiError(
                f"{call.what}: the server at {host} did not answer TLS ({reason}): does "
                "base_url use https:// for a plain-http port?"
            )
        return ApiError(
            f"{call.what}: TLS verification failed for {host} ({reason}); set "
            "[opsramp] ca_bundle to the CA that signed the gateway's certificate"
        )
    if settings.proxy and _never_sent(err):
        # With a proxy the connection that failed is the one to the proxy (or the
        # proxy's own, reported back as a refused tunnel): never blame OpsRamp for it.
        proxy = redact_url(settings.proxy)
        reason = _reason(err)
        if reason.startswith("Tunnel connection failed"):
            message = f"{call.what}: proxy {proxy} could not reach {host} ({reason})"
        else:
            message = f"{call.what}: cannot connect to proxy {proxy} ({reason}) for {host}"
        # Nothing reached OpsRamp: as retryable as any other failed connect.
        return RetryableError(message, connect_failed=True)
    if _never_sent(err):
        return RetryableError(
            f"{call.what}: cannot connect to {host} ({_reason(err)})", connect_failed=True
        )
    if isinstance(err, requests.exceptions.Timeout):
        detail = f"no answer within {settings.timeout_seconds:g} s"
    else:
        detail = f"the connection was dropped before the answer ({_reason(err)})"
    if call.idempotent:
        return RetryableError(f"{call.what}: {detail}")
    return OutcomeUnknownError(
        f"{call.what}: outcome unknown, {detail}; check in OpsRamp whether it exists "
        "before re-running"
    )


# What OpenSSL says when the other end does not speak TLS at all (an https:// URL
# for a plain-http port): OpenSSL 1.1/3.0 "wrong version number", 3.2+ "record layer
# failure" or "packet length too long", LibreSSL "unknown protocol", or an EOF.
_PROTOCOL_MISMATCH = (
    "WRONG_VERSION_NUMBER",
    "wrong version number",
    "record layer failure",
    "RECORD_LAYER_FAILURE",
    "packet length too long",
    "PACKET_LENGTH_TOO_LONG",
    "unknown protocol",
    "UNKNOWN_PROTOCOL",
    "EOF occurred in violation of protocol",
)


def _is_protocol_mismatch(reason: str) -> bool:
    return "CERTIFICATE_VERIFY_FAILED" not in reason and any(
        marker in reason for marker in _PROTOCOL_MISMATCH
    )


def _never_sent(err: requests.RequestException) -> bool:
    """True when the request provably never reached the server (connect phase failed)."""
    if isinstance(err, (requests.exceptions.ConnectTimeout, requests.exceptions.ProxyError)):
        return True
    if not isinstance(err, requests.exceptions.ConnectionError):
        return False
    cause: object = err.args[0] if err.args else None
    reason = getattr(cause, "reason", cause)
    return isinstance(reason, NewConnectionError)


def classify_status(call: Call, response: requests.Response, now: float) -> ApiError:
    """Map an HTTP error answer to a retryable, outcome-unknown or final error."""
    status = response.status_code
    detail = f"HTTP {status}: {describe_body(response)}"
    if 300 <= status < 400:
        location = logs.redact(_shorten(redact_url(response.headers.get("Location") or "?")))
        return ApiError(
            f"{call.what}: OpsRamp answered HTTP {status}, a redirect to {location}, which is "
            "not followed; check [opsramp] base_url (and whether a proxy or login page is in "
            "the way)",
            status=status,
        )
    if status in (401, 407):
        if call.kind == "token":
            return AuthError(
                f"OpsRamp rejected the client credentials ({detail}); check [opsramp] "
                "client_id and the client secret",
                status=status,
            )
        return _TokenRejected(detail, status=status)
    if status == 429:
        wait = rate_limit_wait(response.headers, now)
        return RetryableError(f"{call.what}: throttled ({detail})", status=status, wait=wait)
    if status == 503 or (status >= 500 and call.idempotent):
        hint = _retry_after(response.headers.get("Retry-After"), now)
        wait = None if hint is None else max(0.0, hint)
        return RetryableError(f"{call.what}: {detail}", status=status, wait=wait)
    if status >= 500:
        return OutcomeUnknownError(
            f"{call.what}: outcome unknown ({detail}); check in OpsRamp whether it exists "
            "before re-running",
            status=status,
        )
    return ApiError(f"{call.what}: {detail}{_advice(call, status)}", status=status)


def _advice(call: Call, status: int) -> str:
    """What a 403/404 on an API path usually means: the configuration, not the moment."""
    if call.kind == "token":
        return ""
    if status == 404 and call.kind == "create":
        return "; check [opsramp] tenant_id and base_url"
    if status == 403:
        return "; check that the client may use this tenant's reporting API"
    return ""


def rate_limit_wait(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds to wait from ``X-RateLimit-Reset`` / ``Retry-After``; None if neither parses.

    When both are given the later one wins; a reset in the past means "retry now".
    """
    candidates: list[float] = []
    reset = _epoch(headers.get("X-RateLimit-Reset"))
    if reset is not None:
        candidates.append(reset - now)
    retry_after = _retry_after(headers.get("Retry-After"), now)
    if retry_after is not None:
        candidates.append(retry_after)
    if not candidates:
        return None
    return max(0.0, *candidates)


def _epoch(value: str | None) -> float | None:
    try:
        number = float(value) if value is not None else None
    except ValueError:
        return None
    if number is None or number != number or number <= 0:
        return None
    # Some servers send milliseconds; an epoch in seconds stays below 1e11 until year 5138.
    return number / 1000 if number > 1e11 else number


def _retry_after(value: str | None, now: float) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return when.timestamp() - now


def describe_body(response: requests.Response) -> str:
    """A short, single-line rendering of an answer's body, whatever its type."""
    text = response.text.strip()
    if not text:
        return "(empty body)"
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        parts = [str(data[key]) for key in ("error", "error_description", "message") if key in data]
        if parts:
            text = ": ".join(parts)
    return logs.redact(_shorten(" ".join(text.split())))


def _shorten(text: str) -> str:
    if len(text) <= BODY_EXCERPT_CHARS:
        return text
    return text[: BODY_EXCERPT_CHARS - 1] + "…"


def _parse_token(response: requests.Response) -> tuple[str, float]:
    try:
        data = response.json()
    except ValueError:
        kind = response.headers.get("Content-Type", "unknown type")
        raise AuthError(
            f"the token endpoint answered {response.status_code} with {kind}, not JSON "
            f"({_shorten(' '.join(response.text.split()))!r}); is a proxy or login page in the "
            "way? check [opsramp] base_url and proxy"
        ) from None
    token = data.get("access_token") if isinstance(data, dict) else None
    if not isinstance(token, str) or not token:
        raise AuthError("the token endpoint answered without an access_token; check base_url")
    try:
        lifetime = float(data.get("expires_in", 7199))
    except (TypeError, ValueError):
        lifetime = 7199.0
    return token, max(lifetime, 1.0)


def _analysis_id(call: Call, response: requests.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        data = None
    analysis_id = data.get("id") if isinstance(data, dict) else None
    if isinstance(analysis_id, (str, int)) and str(analysis_id):
        return str(analysis_id)
    raise OutcomeUnknownError(
        f"{call.what}: outcome unknown, OpsRamp answered {response.status_code} without an "
        f"analysis id ({describe_body(response)}); check in OpsRamp whether it exists "
        "before re-running",
        status=response.status_code,
    )


def _make_session(settings: OpsRampSettings) -> requests.Session:
    session = requests.Session()
    session.headers["User-Agent"] = USER_AGENT
    session.headers["Accept"] = "application/json"
    session.verify = settings.verify
    if settings.verify is False:
        # The operator chose this and config already warned once per run; urllib3
        # would add a warning per request to every cron mail.
        warnings.simplefilter("ignore", InsecureRequestWarning)
    # One connection serves the whole job; our own policy does all retrying.
    adapter = HTTPAdapter(pool_connections=1, pool_maxsize=1, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    if settings.proxy:
        # cron has no HTTPS_PROXY: the configured proxy wins over any environment.
        session.trust_env = False
        session.proxies = {"http": settings.proxy, "https": settings.proxy}
        log.debug("sending OpsRamp traffic through proxy %s", redact_url(settings.proxy))
    return session


def _log_retry(call: Call, state: tenacity.RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    wait = state.next_action.sleep if state.next_action else 0.0
    # INFO, not WARNING: a failure that a retry recovers from is a success, and cron
    # mails any output.  A final failure is reported by the caller as an error.
    log.info(
        "%s failed (attempt %d): %s; retrying in %.1f s",
        call.what,
        state.attempt_number,
        _message_tail(error),
        wait,
    )


def _message_tail(error: BaseException | None) -> str:
    text = str(error) if error else "unknown error"
    return text.split(": ", 1)[1] if ": " in text else text


def _reason(err: BaseException) -> str:
    """The innermost useful reason of a requests/urllib3 exception chain."""
    cause: object = err.args[0] if err.args else err
    reason = getattr(cause, "reason", cause)
    if isinstance(reason, _Urllib3ProxyError):
        # ('Unable to connect to proxy', OSError('Tunnel connection failed: 407 …')):
        # the wrapped error is the reason.
        reason = getattr(reason, "original_error", None) or reason
    text = str(reason)
    # urllib3 wraps the OS error: "HTTPConnection(host=…): Failed to establish a new
    # connection: [Errno 111] Connection refused" -- the operator needs the last part.
    errno_text = _ERRNO.search(text)
    if errno_text:
        return errno_text.group(1)
    if ">: " in text:  # older urllib3: "<…HTTPConnection object at 0x…>: …"
        text = text.split(">: ", 1)[1]
    return _shorten(text)


_ERRNO = re.compile(r"\[Errno -?\d+\] ([^'\")]+)")


def _path_of(url: str) -> str:
    return urlsplit(url).path

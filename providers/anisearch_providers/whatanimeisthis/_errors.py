"""whatanimeisthis.com's error table: every status, code and message mapped to one exception class.

Errors come in three dialects (``research/whatanimeisthis-contract.md`` §5, §7.3): better-auth's
``{message, code}`` with a real status on ``/api/auth/*`` (and from its API-key plugin); the site's own
JSON with a real status; and the template envelope ``{code: -1, message}`` sent with **HTTP 200**.

Classification is by status and code (§7.3): the message text is read only when the answer carries no
code of its own. Substring rules misfire on better-auth's real wording: ``INVALID_NAME_LENGTH`` says
"The name length is either too large or too small." (a key-name validation error, not an oversized
image: that is status 413), and ``RATE_LIMITED`` says "Rate limit exceeded." (a rate limit, not a
quota). A 2xx envelope error has no status to go by, so there the message decides.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import httpx

from anisearch.provider import (
    CDN_BLOCKED,
    AuthenticationError,
    BadRequestError,
    ErrorRule,
    ImageFetchError,
    ImageTooLargeError,
    ProviderBusyError,
    ProviderError,
    ProviderServerError,
    QuotaExhaustedError,
    RateLimitedError,
    SignInRateLimitedError,
    UpstreamResponseError,
    as_float,
    as_int,
    capped_seconds,
    cdn_challenge,
    error_message,
    first_rule,
    request_of,
    retry_after_seconds,
)

from ._tolerant import Body, pick, read_body

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "ERROR_RULES",
    "PROVIDER",
    "SIGN_IN_WAIT_SECONDS",
    "Problem",
    "check",
    "error_for",
    "means_signed_out",
    "no_session_to_end",
    "retry_after",
]

PROVIDER = "whatanimeisthis"

ORIGIN_CODES = frozenset({"MISSING_OR_NULL_ORIGIN", "INVALID_ORIGIN", "CROSS_SITE_NAVIGATION_LOGIN_BLOCKED"})
AUTH_CODES = frozenset(
    {
        "INVALID_EMAIL_OR_PASSWORD", "UNAUTHORIZED", "INVALID_API_KEY", "API_KEY_NOT_FOUND", "KEY_DISABLED",
        "KEY_EXPIRED", "KEY_NOT_FOUND", "EMAIL_NOT_VERIFIED", "FAILED_TO_CREATE_SESSION",
        "FAILED_TO_GET_SESSION", "INVALID_REFERENCE_ID_FROM_API_KEY", "SESSION_EXPIRED",
    }
)  # fmt: skip
_QUOTA_WORDS = re.compile(
    r"credit|quota|daily|per day|a day|today|usage[ _]exceeded|usage limit|out of searches", re.IGNORECASE
)
_RATE_WORDS = re.compile(r"too many|rate[ _-]?limit|slow down|per hour|hourly", re.IGNORECASE)
_AUTH_WORDS = re.compile(
    r"unauthori[sz]ed|not (?:signed|logged) in|sign[ -]?in required|log[ -]?in required|login required|"
    r"session (?:expired|required|not found)|invalid api key|api key (?:not found|expired|disabled)",
    re.IGNORECASE,
)
_FETCH_WORDS = re.compile(
    r"fetch|download|unreachable|could not (?:get|load|retrieve)|failed to (?:get|load|retrieve)",
    re.IGNORECASE,
)
_BUSY_WORDS = re.compile(r"busy|queue|overloaded|try again later", re.IGNORECASE)
_SERVER_WORDS = re.compile(r"internal|server error|unexpected error|database", re.IGNORECASE)
_TOO_LARGE_WORDS = re.compile(r"too large|entity too large|payload too large|file size", re.IGNORECASE)
QUOTA_CODES = frozenset({"USAGE_EXCEEDED"})
KEY_NAME_LIMITS = "1 to 32"
"""better-auth's API-key plugin's default name length, characters (``INVALID_NAME_LENGTH`` outside)."""
_UPPER_SNAKE = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")
_MAX_MESSAGE = 200
_NO_STATUS = 600  # envelope codes from 400 up to this are HTTP statuses
_SIGN_IN_ROUTES = "/api/auth/sign-in/"
SIGN_IN_WAIT_SECONDS = 10.0
"""better-auth's sign-in window, seconds: the wait when its 429 names none (3 sign-ins per 10 s per IP)."""
_SESSION_HINT = "sign in again (anisearch login, or set ANISEARCH_WHATANIMEISTHIS_EMAIL and _PASSWORD)"


@dataclass(frozen=True, slots=True)
class Problem:
    """An error response, boiled down to what the table matches on.

    Attributes:
        status: The HTTP status when >= 400; else a numeric envelope ``code`` in 400..599; else None.
        http_status: The HTTP status as received.
        code: The upstream's error code (``INVALID_ORIGIN``), or ``HTTP_<status>``.
        message: The upstream's message (first 200 characters), or the reason phrase.
        body: The decoded body.
        response: The response itself.
    """

    status: int | None
    http_status: int
    code: str
    message: str
    body: Body
    response: httpx.Response

    @property
    def endpoint(self) -> str | None:
        """The path that was asked, when the response knows its request."""
        request = request_of(self.response)
        return request.url.path if request is not None else None

    @property
    def used_api_key(self) -> bool:
        """Whether the request spoke with an API key (``Authorization: Bearer``)."""
        request = request_of(self.response)
        return request is not None and request.headers.get("authorization", "").lower().startswith("bearer ")

    @property
    def url_search(self) -> bool:
        """Whether the request was a search by URL (multipart ``url`` field, no ``image``)."""
        request = request_of(self.response)
        if request is None or not request.url.path.endswith("/search"):
            return False
        content = request_content(request)
        return b'name="url"' in content and b'name="image"' not in content

    @property
    def has_code(self) -> bool:
        """Whether the answer named its error (better-auth's ``code``), rather than a synthetic
        ``HTTP_<status>``."""
        return not self.code.startswith("HTTP_")

    def matches(self, pattern: re.Pattern[str]) -> bool:
        """Whether the message matches ``pattern``, for answers without a code of their own only."""
        return not self.has_code and bool(pattern.search(self.message))


def request_content(request: httpx.Request) -> bytes:
    """The request body (reading a multipart stream if it was not read yet), or ``b""``."""
    try:
        return request.content
    except httpx.RequestNotRead:
        pass
    try:
        return request.read()
    except (httpx.StreamError, RuntimeError, TypeError):
        return b""


def _is_envelope_error(value: Any) -> bool:
    """§7.3: ``success: false``, a numeric ``code`` not 0/2xx, ``code: "error"``, or a bare ``error``."""
    if not isinstance(value, dict):
        return False
    if value.get("success") is False:
        return True
    code = value.get("code")
    number = None if isinstance(code, bool) else as_int(code)
    if number is not None and number != 0 and not HTTPStatus.OK <= number < HTTPStatus.MULTIPLE_CHOICES:
        return True
    if isinstance(code, str) and code.strip().lower() == "error":
        return True
    error = value.get("error")
    has_error = (isinstance(error, str) and error.strip()) or (isinstance(error, dict) and error)
    has_payload = any(value.get(key) is not None for key in ("data", "result", "results", "items"))
    return bool(has_error) and not has_payload


def _message(body: Body, response: httpx.Response) -> str:
    value = body.json
    candidates: list[Any] = []
    if isinstance(value, dict):
        error = value.get("error")
        errors = value.get("errors")
        first = errors[0] if isinstance(errors, list) and errors else None
        candidates = [
            value.get("message"),
            error,
            pick(error, "message"),
            value.get("msg"),
            value.get("detail"),
            pick(first, "message"),
            first,
        ]
    elif isinstance(value, str):
        candidates = [value]
    if not body.is_json:  # plain text, or an HTML error page (a proxy's, the framework's): its title
        candidates.append(error_message(response))
    for candidate in candidates:
        if isinstance(candidate, str) and candidate.strip():
            return " ".join(candidate.split())[:_MAX_MESSAGE]
    return response.reason_phrase or f"HTTP {response.status_code}"


def _code(body: Body, status: int) -> str:
    value = body.json
    if isinstance(value, dict):
        code = value.get("code")
        if isinstance(code, str) and code.strip() and as_int(code) is None:
            return code.strip()
        nested = pick(value.get("error"), "code")
        if isinstance(nested, str) and nested.strip():
            return nested.strip()
        error = value.get("error")
        if isinstance(error, str) and _UPPER_SNAKE.fullmatch(error.strip()):
            return error.strip()
    return f"HTTP_{status}"


def problem_of(response: httpx.Response, body: Body | None = None) -> Problem | None:
    """The error a response carries, or None when it is a success."""
    body = read_body(response) if body is None else body
    http_status = response.status_code
    if http_status < HTTPStatus.BAD_REQUEST and not (body.is_json and _is_envelope_error(body.json)):
        return None
    status: int | None = http_status if http_status >= HTTPStatus.BAD_REQUEST else None
    if status is None and isinstance(body.json, dict):
        code = body.json.get("code")
        number = None if isinstance(code, bool) else as_int(code)
        in_range = number is not None and HTTPStatus.BAD_REQUEST <= number < _NO_STATUS
        status = number if in_range else None
    return Problem(status, http_status, _code(body, http_status), _message(body, response), body, response)


def retry_after(
    response: httpx.Response, body: Body | None = None, *, now: datetime | None = None
) -> float | None:
    """Seconds to wait: what the headers say (:func:`~anisearch.provider.retry_after_seconds`:
    ``X-Retry-After`` from better-auth, ``Retry-After``, the rate-limit reset headers), else the body's
    ``details.tryAgainIn`` (milliseconds). None when nothing says; at most 24 h.
    """
    seconds = retry_after_seconds(response.headers, now or datetime.now(UTC))
    if seconds is not None:
        return seconds
    body = read_body(response) if body is None else body
    millis = as_float(pick(pick(body.json, "details"), "tryAgainIn"))
    if millis is None:
        millis = as_float(pick(body.json, "tryAgainIn"))
    return capped_seconds(millis / 1000) if millis is not None else None


# ---------------------------------------------------------------- the table


def _origin_error(problem: Problem) -> ProviderError:
    request = request_of(problem.response)
    sent = request.headers.get("origin") if request is not None else None
    return AuthenticationError(
        f"the site refused the Origin header {sent!r} ({problem.code}): set the whatanimeisthis 'origin' "
        "setting (ANISEARCH_WHATANIMEISTHIS_ORIGIN) to an origin the site trusts, normally its own",
        provider=PROVIDER,
        status_code=problem.http_status,
    )


def _auth_error(problem: Problem) -> ProviderError:
    if problem.code == "INVALID_EMAIL_OR_PASSWORD":
        message = f"sign-in refused: {problem.message}"
    elif problem.code == "EMAIL_NOT_VERIFIED":
        message = f"{problem.message}: verify the account's email address first"
    elif problem.used_api_key:
        message = f"the API key was refused: {problem.message}"
    else:
        message = f"{problem.message}: not signed in or the session expired; {_SESSION_HINT}"
    return AuthenticationError(message, provider=PROVIDER, status_code=problem.http_status)


def _simple(cls: type[ProviderError], prefix: str = "") -> Callable[[Problem], ProviderError]:
    def build(problem: Problem) -> ProviderError:
        return cls(
            f"{prefix}{problem.message}",
            provider=PROVIDER,
            status_code=problem.http_status,
            retry_after=retry_after(problem.response, problem.body),
        )

    return build


def _too_large(problem: Problem) -> ProviderError:
    request = request_of(problem.response)
    size = len(request_content(request)) or None if request is not None else None
    return ImageTooLargeError(
        f"the image is too large for the site ({problem.message}); downscale it or search by URL",
        provider=PROVIDER,
        status_code=problem.http_status,
        size_bytes=size,
    )


def sign_in_wait(response: httpx.Response, body: Body | None = None) -> float:
    """Seconds before signing in again after ``response``, a sign-in refused with 429: what it says
    (:func:`retry_after`), else (nothing, or a wait already over) better-auth's window,
    :data:`SIGN_IN_WAIT_SECONDS`."""
    return retry_after(response, body) or SIGN_IN_WAIT_SECONDS


def _sign_in_limited(problem: Problem) -> ProviderError:
    return SignInRateLimitedError(
        f"too many sign-ins: {problem.message}",
        provider=PROVIDER,
        status_code=problem.http_status,
        retry_after=sign_in_wait(problem.response, problem.body),
    )


def _key_name(problem: Problem) -> ProviderError:
    return BadRequestError(
        f"the API key name was refused: {problem.message} (names are {KEY_NAME_LIMITS} characters)",
        provider=PROVIDER,
        status_code=problem.http_status,
    )


def _cdn_blocked(problem: Problem) -> ProviderError:
    return ProviderServerError(CDN_BLOCKED, provider=PROVIDER, status_code=problem.http_status)


def _cdn_page(p: Problem) -> bool:
    return cdn_challenge(p.response)


def _too_large_status(p: Problem) -> bool:
    return p.status == HTTPStatus.REQUEST_ENTITY_TOO_LARGE or (
        p.status is None and p.matches(_TOO_LARGE_WORDS)
    )


def _sign_in_refused_for_now(p: Problem) -> bool:
    return p.http_status == HTTPStatus.TOO_MANY_REQUESTS and _SIGN_IN_ROUTES in (p.endpoint or "")


def _spent(p: Problem) -> bool:
    if p.code in QUOTA_CODES or p.status == HTTPStatus.PAYMENT_REQUIRED:
        return True
    quota_statuses = (HTTPStatus.FORBIDDEN, HTTPStatus.TOO_MANY_REQUESTS, None)
    return p.status in quota_statuses and p.matches(_QUOTA_WORDS)


def _rate_limited(p: Problem) -> bool:
    if p.code == "RATE_LIMITED" or p.status == HTTPStatus.TOO_MANY_REQUESTS:
        return True
    return p.status is None and p.matches(_RATE_WORDS)


def _refused_credentials(p: Problem) -> bool:
    if p.status in (HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN) or p.code in AUTH_CODES:
        return True
    return p.status is None and p.matches(_AUTH_WORDS)


def _fetch_failed(p: Problem) -> bool:
    client_side = p.status is None or p.status < HTTPStatus.INTERNAL_SERVER_ERROR
    return client_side and p.url_search and p.matches(_FETCH_WORDS)


def _busy(p: Problem) -> bool:
    gateway = (HTTPStatus.BAD_GATEWAY, HTTPStatus.SERVICE_UNAVAILABLE, HTTPStatus.GATEWAY_TIMEOUT)
    return p.status in gateway and p.matches(_BUSY_WORDS)


def _server_failed(p: Problem) -> bool:
    if p.status is None:
        return p.matches(_SERVER_WORDS)
    return p.status >= HTTPStatus.INTERNAL_SERVER_ERROR


ERROR_RULES: tuple[ErrorRule[Problem], ...] = (
    # A CDN challenge is an HTML 403 with Cloudflare's cf-ray header: not the site talking.
    ErrorRule(ProviderServerError, when=_cdn_page, build=_cdn_blocked),
    # better-auth's API-key plugin: a key name outside 1-32 characters ("too large or too small").
    ErrorRule(BadRequestError, codes=frozenset({"INVALID_NAME_LENGTH"}), build=_key_name),
    # 413 (the platform's body limit), or, with no status or code to go by, an envelope saying so.
    ErrorRule(ImageTooLargeError, when=_too_large_status, build=_too_large),
    # better-auth's origin/CSRF check: retrying will not help until the Origin setting is fixed.
    ErrorRule(AuthenticationError, codes=ORIGIN_CODES, build=_origin_error),
    # better-auth's own limiter on sign-in (3 per 10 s per address, X-Retry-After): not the search quota.
    ErrorRule(SignInRateLimitedError, when=_sign_in_refused_for_now, build=_sign_in_limited),
    # Spent credits or the guest's daily searches: 402, USAGE_EXCEEDED, or (no code) a 403/429/HTTP-200
    # envelope whose message speaks of credits or a daily quota.
    ErrorRule(QuotaExhaustedError, when=_spent),
    # 429 and RATE_LIMITED (sent as 401 up to better-auth 1.6.10): a rate limit, never a quota.
    ErrorRule(RateLimitedError, when=_rate_limited),
    ErrorRule(AuthenticationError, when=_refused_credentials, build=_auth_error),
    ErrorRule(ImageFetchError, when=_fetch_failed),
    ErrorRule(ProviderBusyError, when=_busy),
    ErrorRule(ProviderServerError, when=_server_failed),
    # Whatever else refuses this request: 400, 404, 405, 409, 415, 422, or an envelope error.
    ErrorRule(BadRequestError),
)


def error_for(response: httpx.Response, body: Body | None = None) -> ProviderError | None:
    """The exception an error response means (first matching row of :data:`ERROR_RULES`), or None."""
    problem = problem_of(response, body)
    if problem is None:
        return None
    rule = first_rule(ERROR_RULES, problem, status=problem.status, message=problem.message, code=problem.code)
    if rule is None:  # pragma: no cover - the last row matches everything
        raise AssertionError("the last error rule matches everything")
    return (rule.build or _simple(rule.error))(problem)


def check(response: httpx.Response) -> Body:
    """The decoded body of a success response.

    Raises:
        ProviderError: The most specific subclass the status, code and message mean (see the table).
    """
    body = read_body(response)
    error = error_for(response, body)
    if error is not None:
        raise error
    return body


def uninterpretable(response: httpx.Response, what: str) -> UpstreamResponseError:
    """The error for a 2xx answer without ``what`` (``"a list of results"``)."""
    request = request_of(response)
    endpoint = request.url.path if request is not None else None
    return UpstreamResponseError(
        f"cannot read the answer from {endpoint or 'the site'}: {what}",
        provider=PROVIDER,
        status_code=response.status_code,
        endpoint=endpoint,
    )


def no_session_to_end(status: int | None, text: str) -> bool:
    """Whether a sign-out answer (its ``status``, its body's ``text``) says there was no session to end
    any more: 401, or better-auth 1.3's ``FAILED_TO_GET_SESSION``."""
    return status == HTTPStatus.UNAUTHORIZED or "FAILED_TO_GET_SESSION" in text


def means_signed_out(response: httpx.Response) -> bool:
    """Whether a response says the session is missing or expired (401, or an HTTP-200 envelope saying so)."""
    if response.status_code == HTTPStatus.UNAUTHORIZED:
        return True
    if response.status_code >= HTTPStatus.BAD_REQUEST:
        return False
    problem = problem_of(response)
    if problem is None or problem.status not in (None, HTTPStatus.UNAUTHORIZED):
        return False
    return problem.code == "UNAUTHORIZED" or problem.matches(_AUTH_WORDS)

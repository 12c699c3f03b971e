"""Helpers shared by the trace.moe providers (current API and legacy): coercion, JSON, HTTP dates, errors.

Everything here is pure: values in, values out. Upstream JSON is loose (numbers sent as strings,
episodes of four types, missing keys), so the coercions return None rather than raise, and the callers
decide which fields are required.
"""

from __future__ import annotations

import html
import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

import httpx

from anisearch._exceptions import ProviderError, UpstreamResponseError
from anisearch._models import Episode, Title, coerce_episode

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = [
    "MAX_COUNT",
    "MAX_JSON_DEPTH",
    "MAX_RETRY_AFTER_SECONDS",
    "ErrorRule",
    "ShapeError",
    "as_bool",
    "as_count",
    "as_float",
    "as_int",
    "as_str",
    "capped_seconds",
    "clamp_similarity",
    "classify_error",
    "episode_value",
    "epoch",
    "error_message",
    "http_date",
    "is_multipart_request",
    "json_body",
    "loads",
    "next_hour",
    "request_bytes",
    "response_date",
    "retry_after_seconds",
    "statuses",
    "string_list",
    "title_from",
    "without",
]

_INT_TEXT = re.compile(r"[+-]?[0-9]+")
_HTML_PRE = re.compile(r"<pre>(.*?)</pre>", re.DOTALL | re.IGNORECASE)
_HTML_TAG = re.compile(r"<[^>]+>")
_MAX_MESSAGE = 300
MAX_JSON_DEPTH = 64
"""Deepest nesting accepted in an upstream JSON body; trace.moe's deepest (``anilistInfo``) is about 6."""
MAX_RETRY_AFTER_SECONDS = 86_400.0
"""Longest wait any upstream header is believed (24 h): a ``Retry-After`` in 2099 or of 10**20 seconds
is read as one day, so a confused server cannot switch a provider off for good."""


# ---------------------------------------------------------------- coercion


def as_int(value: Any) -> int | None:
    """An int from an int, an integral finite float or a decimal string (``"18"``), else None.

    Booleans are not numbers here (``True`` is None), whatever Python thinks.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) and value.is_integer() else None
    if isinstance(value, str) and _INT_TEXT.fullmatch(value.strip()):
        try:
            return int(value.strip())
        except ValueError:  # more digits than Python converts (4300): no count is that large
            return None
    return None


MAX_COUNT = 2**31 - 1
"""Largest count trace.moe can send (a PostgreSQL ``integer``: the system tier's quota)."""


class ShapeError(ValueError):
    """A body that is JSON but not the shape trace.moe sends."""


def as_count(value: Any, name: str) -> int | None:
    """A quota-like count (0..2**31-1) from a loose value; None when absent or not a number.

    Raises:
        ShapeError: The value is a number out of that range (``"quota": -5``).
    """
    number = as_int(value)
    if number is None and as_float(value) is not None:
        number = -1  # a fraction or an exponent: not a count
    if number is not None and not 0 <= number <= MAX_COUNT:
        raise ShapeError(f"{name} is not a count: {str(value)[:40]!r}")
    return number


def as_float(value: Any) -> float | None:
    """A finite float from a number or a numeric string (``"1169.17"``), else None (booleans too)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        result = float(value)
    elif isinstance(value, str):
        try:
            result = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return result if math.isfinite(result) else None


def as_str(value: Any) -> str | None:
    """The value if it is a non-empty string, else None."""
    return value if isinstance(value, str) and value else None


def as_bool(value: Any) -> bool | None:
    """The value if it is a JSON boolean, else None."""
    return value if isinstance(value, bool) else None


def string_list(value: Any) -> list[str]:
    """The strings of a JSON array (anything else in it is dropped); ``[]`` for a non-array."""
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, str) and item]


def clamp_similarity(value: Any) -> float | None:
    """A similarity clamped to 0..1 (upstream scores can stray outside), or None if it is not a number."""
    number = as_float(value)
    if number is None:
        return None
    return min(max(number, 0.0), 1.0)


def episode_value(value: Any) -> Episode:
    """The upstream ``episode`` kept as it came (see :func:`anisearch._models.coerce_episode`)."""
    return coerce_episode(value)


def title_from(
    romaji: Any = None, english: Any = None, native: Any = None, chinese: Any = None
) -> Title | None:
    """A :class:`~anisearch.Title` from loose upstream values, or None when none of them is a string."""
    title = Title(
        romaji=as_str(romaji), english=as_str(english), native=as_str(native), chinese=as_str(chinese)
    )
    if title.preferred() is None:
        return None
    return title


# ---------------------------------------------------------------- bodies


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _too_deep(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether a decoded JSON value nests deeper than ``limit`` (checked without recursion)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
    return False


def loads(content: bytes | str) -> Any:
    """Strict JSON (``NaN``/``Infinity`` refused), nested at most :data:`MAX_JSON_DEPTH` deep.

    Raises:
        ValueError: Not JSON, not UTF-8, or nested too deep (a ``RecursionError`` included).
    """
    try:
        value = json.loads(content, parse_constant=_no_constants)
    except RecursionError as exc:
        raise ValueError("JSON nested too deep") from exc
    if _too_deep(value):
        raise ValueError(f"JSON nested more than {MAX_JSON_DEPTH} deep")
    return value


def json_body(response: httpx.Response, *, provider: str, endpoint: str | None = None) -> Any:
    """The response body decoded as strict JSON (``NaN``/``Infinity`` refused, at most 64 levels deep).

    Raises:
        UpstreamResponseError: The body is not JSON, not UTF-8, or nested absurdly deep.
    """
    try:
        return loads(response.content)
    except ValueError as exc:  # UnicodeDecodeError is a ValueError
        kind = response.headers.get("content-type", "no content type")
        raise UpstreamResponseError(
            f"expected a JSON body, got {kind} ({len(response.content)} bytes)",
            provider=provider,
            status_code=response.status_code,
            endpoint=endpoint,
        ) from exc


def _body_text(response: httpx.Response) -> str:
    try:
        return response.content.decode("utf-8", errors="replace")
    except httpx.ResponseNotRead:
        return ""


def error_message(response: httpx.Response) -> str:
    """The upstream's error message, one line, at most 300 characters.

    Understood shapes: a JSON object's ``error`` member (``{"error":"Invalid API key"}``), a JSON string
    (the legacy API's ``"Image is empty"``), an Express HTML error page (the text of its ``<pre>``), and
    plain text. An empty body gives the HTTP reason phrase.
    """
    text = _body_text(response).strip()
    message = ""
    if text[:1] in '{"':
        try:
            decoded = loads(text)
        except ValueError:
            decoded = None
        if isinstance(decoded, dict) and isinstance(decoded.get("error"), str):
            message = decoded["error"]
        elif isinstance(decoded, str):
            message = decoded
    if not message and text:
        pre = _HTML_PRE.search(text)
        fragment = pre.group(1) if pre else text
        fragment = fragment.replace("<br>", "\n")
        message = html.unescape(_HTML_TAG.sub(" ", fragment)).strip()
    if not message:
        message = response.reason_phrase or f"HTTP {response.status_code}"
    first_line = " ".join(message.split("\n", 1)[0].split())
    return first_line[:_MAX_MESSAGE]


def is_multipart_request(response: httpx.Response) -> bool:
    """Whether the request behind ``response`` was a multipart upload (False when it is unknown)."""
    try:
        request = response.request
    except RuntimeError:  # a Response built without its Request
        return False
    content_type: str = request.headers.get("content-type", "")
    return content_type.lower().startswith("multipart/form-data")


def request_bytes(response: httpx.Response) -> int | None:
    """How many body bytes the request behind ``response`` sent: its ``Content-Length``, else the length
    of a body already read; None when that cannot be told."""
    try:
        request = response.request
    except RuntimeError:
        return None
    declared = as_int(request.headers.get("content-length"))
    if declared is not None and declared >= 0:
        return declared
    try:
        return len(request.content)
    except httpx.RequestNotRead:
        return None


# ---------------------------------------------------------------- time


def http_date(value: str | None) -> datetime | None:
    """An aware UTC datetime from an HTTP-date (``Thu, 07 May 2026 11:15:01 GMT``), or None."""
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def response_date(response: httpx.Response) -> datetime | None:
    """The response's ``Date`` header as an aware UTC datetime, or None when absent or unreadable."""
    return http_date(response.headers.get("date"))


def epoch(value: float) -> datetime | None:
    """An aware UTC datetime from Unix seconds, or None when out of range."""
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def retry_after_seconds(
    headers: httpx.Headers, now: datetime, *, fallback_to_reset: bool = True
) -> float | None:
    """Seconds to wait, from ``Retry-After`` (seconds or an HTTP-date), else (when ``fallback_to_reset``)
    ``RateLimit-Reset`` (seconds) or ``X-RateLimit-Reset`` (Unix seconds). None when no header says;
    never negative, and never more than :data:`MAX_RETRY_AFTER_SECONDS` (24 h).
    """
    raw = headers.get("retry-after", "").strip()
    seconds = as_float(raw)
    if seconds is None and raw:
        when = http_date(raw)
        seconds = (when - now).total_seconds() if when else None
    if seconds is None and fallback_to_reset:
        seconds = as_float(headers.get("ratelimit-reset"))
    if seconds is None and fallback_to_reset:
        reset = as_float(headers.get("x-ratelimit-reset"))
        when = epoch(reset) if reset is not None else None
        seconds = (when - now).total_seconds() if when else None
    return None if seconds is None else capped_seconds(seconds)


def capped_seconds(seconds: float) -> float:
    """A wait clamped to 0..:data:`MAX_RETRY_AFTER_SECONDS`."""
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


def next_hour(moment: datetime) -> datetime:
    """The first full hour strictly after ``moment`` (UTC)."""
    floor = moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return floor + timedelta(hours=1)


# ---------------------------------------------------------------- errors


@dataclass(frozen=True, slots=True)
class ErrorRule:
    """One row of a provider's error table: which answers mean which exception class.

    A rule matches when the status is in ``statuses`` (None: any status) and the upstream message
    starts with ``prefix`` (when given) and the raw body contains one of ``contains`` (when given) and,
    when ``min_upload_bytes`` is set, the request was a multipart upload of at least that many bytes.
    """

    error: type[ProviderError]
    statuses: frozenset[int] | None = None
    prefix: str | None = None
    contains: tuple[str, ...] = ()
    min_upload_bytes: int | None = None

    def matches(self, status: int, message: str, body: str, *, upload_bytes: int | None) -> bool:
        """Whether an answer with this status, message and raw body falls under this rule.

        ``upload_bytes`` is the size of the multipart upload that was sent (None: not one, or unknown).
        """
        if self.statuses is not None and status not in self.statuses:
            return False
        if self.prefix is not None and not message.startswith(self.prefix):
            return False
        if self.contains and not any(marker in body for marker in self.contains):
            return False
        if self.min_upload_bytes is None:
            return True
        return upload_bytes is not None and upload_bytes >= self.min_upload_bytes


def classify_error(rules: Sequence[ErrorRule], response: httpx.Response) -> type[ProviderError] | None:
    """The error class of the first rule in ``rules`` that matches ``response``, or None."""
    message = error_message(response)
    body = _body_text(response)
    upload = request_bytes(response) if is_multipart_request(response) else None
    for rule in rules:
        if rule.matches(response.status_code, message, body, upload_bytes=upload):
            return rule.error
    return None


def statuses(*codes: int | range) -> frozenset[int]:
    """A status set for an :class:`ErrorRule` from codes and ranges (``statuses(401, range(500, 600))``)."""
    result: set[int] = set()
    for code in codes:
        result.update(code if isinstance(code, range) else (code,))
    return frozenset(result)


def without(mapping: Mapping[str, Any], *keys: str) -> dict[str, Any]:
    """A copy of ``mapping`` without ``keys`` (to keep an upstream body in ``raw`` minus personal data)."""
    return {key: value for key, value in mapping.items() if key not in keys}

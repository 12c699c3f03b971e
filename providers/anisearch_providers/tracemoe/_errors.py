"""trace.moe's error table: every status and message of the current API mapped to one exception class.

The 402 and 503 statuses each mean two things, and ``Failed to fetch image`` comes with whatever status
the image host answered, so the table matches on the message prefix first and uses the status only to
tell rows apart and as a last resort. The rows follow ``research/tracemoe-contract.md`` §4 and cover
V1 (2021-2025) wordings as well as the current server's.

Choices worth knowing:

- ``Invalid image url``, ``Failed to process image``, ``Failed to process file``: :class:`BadRequestError`,
  not :class:`~anisearch.InvalidImageError`. anisearch has already decoded and re-encoded every upload
  with Pillow, so a server that cannot decode it (or cannot parse or read a URL) is a property of this
  upstream and this request, not proof that the image is bad: the router should try the next provider
  (failed trace.moe searches cost no quota) instead of stopping the whole search.
- An HTML 500 is Express's page for *any* uncaught failure: multer refusing a file over 25 MiB, but also
  a database that is down or a repeated ``anilistID`` (all verified). So it means "too large"
  (:class:`ImageTooLargeError`) only when what was sent was a multipart upload within 1 MiB of the limit
  (:data:`NEAR_LIMIT_BYTES`, keyed on the request's own body size: multer counts the file alone, the
  client sees the whole body). Any other HTML 500 is :class:`ProviderServerError`; it can leave this
  caller's concurrency slot taken on the server for up to 15 minutes (its counters leak until
  housekeeping), so its message says so.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Literal

from anisearch.provider import (
    CDN_BLOCKED,
    AuthenticationError,
    BadRequestError,
    ConcurrencyLimitError,
    ErrorAnswer,
    ErrorRule,
    ImageFetchError,
    ImageTooLargeError,
    ProviderBusyError,
    ProviderError,
    ProviderServerError,
    QuotaExhaustedError,
    RateLimitedError,
    ShapeError,
    UpstreamResponseError,
    as_count,
    cdn_challenge,
    classify_error,
    json_body,
    retry_after_seconds,
    statuses,
)

if TYPE_CHECKING:
    from datetime import datetime

    import httpx

__all__ = [
    "ERROR_RULES",
    "LEAK_HOUSEKEEPING_SECONDS",
    "MAX_UPLOAD_BYTES",
    "NEAR_LIMIT_BYTES",
    "error_for",
    "quota_numbers",
    "quota_window",
]

MAX_UPLOAD_BYTES = 25 * 1024 * 1024
"""Largest upload the server accepts (raw body and multipart file), bytes."""
NEAR_LIMIT_BYTES = MAX_UPLOAD_BYTES - 1024 * 1024
"""A multipart body this large (bytes) answered by an HTML 500 is read as an upload over the limit."""
LEAK_HOUSEKEEPING_SECONDS = 900
"""After an uncaught server error the server may hold the caller's slot until its 15-minute sweep."""

_TOO_LARGE_MARKERS = (
    "PayloadTooLargeError",
    "Payload Too Large",
    "request entity too large",
    "File too large",
)
_HTML_MARKERS = ("<!DOCTYPE html", "<html", "<pre>")


def _cdn_page(answer: ErrorAnswer) -> bool:
    """Cloudflare's page, not trace.moe's own answer (:func:`~anisearch.provider.cdn_challenge`)."""
    return cdn_challenge(answer.response)


def _near_the_limit(answer: ErrorAnswer) -> bool:
    """Whether what was sent was a multipart upload of at least :data:`NEAR_LIMIT_BYTES`."""
    return answer.upload_bytes is not None and answer.upload_bytes >= NEAR_LIMIT_BYTES


ERROR_RULES: tuple[ErrorRule[ErrorAnswer], ...] = (
    # The image host's own status is mirrored (404, 403, 5xx...); a fetch that threw is a 400.
    ErrorRule(ImageFetchError, prefix="Failed to fetch image"),
    # 402 means two things: a spent quota (do not retry) and too many searches in flight (retry).
    ErrorRule(QuotaExhaustedError, statuses(402), prefix="Search quota depleted"),
    ErrorRule(ConcurrencyLimitError, statuses(402), prefix="Concurrency limit exceeded"),
    # 503 also means two things: the priority queue is full (short backoff), or (V1) Solr is down.
    ErrorRule(ProviderBusyError, statuses(503), prefix="Error: Search queue is full"),
    ErrorRule(ProviderBusyError, statuses(504), prefix="Database is overloaded"),
    ErrorRule(ProviderServerError, statuses(503), prefix="Error: Database is not responding"),
    ErrorRule(ProviderServerError, statuses(500, 502, 503, 504), prefix="Database is offline"),
    ErrorRule(ProviderServerError, statuses(500), prefix="Search failed. Database temporarily unavailable"),
    ErrorRule(AuthenticationError, statuses(403), prefix="Invalid API key"),
    # The HTTP rate limiter answers HTML text, with Retry-After.
    ErrorRule(RateLimitedError, statuses(429)),
    # Express's body parser (413) and multer (an HTML 500 to a multipart upload) refuse big bodies.
    ErrorRule(ImageTooLargeError, statuses(413)),
    ErrorRule(ImageTooLargeError, statuses(range(400, 600)), contains=_TOO_LARGE_MARKERS),
    ErrorRule(ImageTooLargeError, statuses(500), contains=_HTML_MARKERS, when=_near_the_limit),
    # Any other HTML 500 is an uncaught exception (database down, a repeated anilistID...).
    ErrorRule(ProviderServerError, statuses(500), contains=_HTML_MARKERS),
    ErrorRule(BadRequestError, statuses(400), prefix="Invalid image url"),
    ErrorRule(BadRequestError, statuses(400), prefix="Failed to process"),  # image, file, input image
    ErrorRule(BadRequestError, statuses(400), prefix="Invalid vector format"),
    ErrorRule(BadRequestError, statuses(400), prefix="Too many vectors"),
    ErrorRule(BadRequestError, statuses(400), prefix="OpenCV:"),  # V1 cutBorders failure
    ErrorRule(BadRequestError, statuses(400), prefix="Invalid period"),  # /me?period=
    ErrorRule(BadRequestError, statuses(405)),  # "Method Not Allowed": no usable input
    ErrorRule(BadRequestError, statuses(404), prefix="Cannot "),  # Express: unknown route, wrong base URL
    # api.trace.moe is behind Cloudflare: its challenge or block page (an HTML 403 with cf-ray) is not
    # trace.moe refusing this request, whose own 403s are JSON.
    ErrorRule(ProviderServerError, statuses(403), when=_cdn_page),
    # Whatever else: by status class. 1xx, 3xx and odd 2xx fall through to UpstreamResponseError.
    ErrorRule(AuthenticationError, statuses(401)),
    ErrorRule(BadRequestError, statuses(range(400, 500))),
    ErrorRule(ProviderServerError, statuses(range(500, 600))),
)
"""trace.moe's error table, first match wins (status set, message prefix, body markers -> class)."""

_QUOTA_NUMBERS = re.compile(r"quota per [^:]*:\s*(\d+)\s*,\s*used:\s*(\d+)")


def quota_numbers(response: httpx.Response, message: str) -> tuple[int | None, int | None]:
    """``(limit, used)`` from a 402 quota body: its ``quota``/``quotaUsed`` members (2026-07+), else the
    numbers in the message (``Search quota depleted (quota per 24 hours: 100, used: 100)``, 2026-02+).

    Raises:
        ShapeError: A number that is not a count (negative, fractional, over 2**31-1).
    """
    limit = used = None
    try:
        body = json_body(response, provider="tracemoe")
    except UpstreamResponseError:
        body = None
    if isinstance(body, dict):
        limit, used = as_count(body.get("quota"), "quota"), as_count(body.get("quotaUsed"), "quotaUsed")
    match = _QUOTA_NUMBERS.search(message)
    if match:
        limit = limit if limit is not None else as_count(match.group(1), "quota")
        used = used if used is not None else as_count(match.group(2), "used")
    return limit, used


def quota_window(message: str) -> Literal["rolling-24h", "month"]:
    """The window a quota-depleted message speaks of.

    The current server says ``quota per 24 hours`` (rolling); the bare ``Search quota depleted`` was
    sent only by the 2021-2026 servers, whose quota was per calendar month.
    """
    return "month" if message.strip() == "Search quota depleted" else "rolling-24h"


def error_for(
    response: httpx.Response, *, provider: str, now: datetime, endpoint: str | None = None
) -> ProviderError:
    """The exception an error answer means, per :data:`ERROR_RULES`, with what the answer says attached
    (``retry_after`` seconds, the quota numbers, the size limit).

    Args:
        response: A trace.moe answer that is not a usable 200.
        provider: The provider name to stamp on the error.
        now: The current time, to turn an HTTP-date ``Retry-After`` into seconds.
        endpoint: The path asked (``"/search"``), for :class:`UpstreamResponseError`.
    """
    rule, answer = classify_error(ERROR_RULES, response)
    error = rule.error if rule is not None else UpstreamResponseError
    message, status = answer.message, answer.status
    if error is QuotaExhaustedError:
        try:
            limit, used = quota_numbers(response, message)
        except ShapeError as exc:
            return UpstreamResponseError(
                f"a quota answer with impossible numbers: {exc}",
                provider=provider,
                status_code=status,
                endpoint=endpoint,
            )
        return QuotaExhaustedError(message, provider=provider, status_code=status, limit=limit, used=used)
    if error is ImageTooLargeError:
        return ImageTooLargeError(
            f"the upload is over the server's size limit ({message})",
            provider=provider,
            status_code=status,
            limit_bytes=MAX_UPLOAD_BYTES,
        )
    if error is UpstreamResponseError:
        return UpstreamResponseError(
            f"unexpected answer: {message}", provider=provider, status_code=status, endpoint=endpoint
        )
    retry_after = retry_after_seconds(response.headers, now, fallback_to_reset=error is RateLimitedError)
    if error is ProviderServerError and status == 500 and message == "Internal Server Error":  # noqa: PLR2004
        message = (
            "Internal Server Error (an uncaught failure on trace.moe; it may hold this caller's search "
            f"slot for up to {LEAK_HOUSEKEEPING_SECONDS // 60} minutes)"
        )
    if rule is not None and rule.when is _cdn_page:
        message = CDN_BLOCKED
    if error is BadRequestError and message.startswith("Cannot "):
        message = f"{message} (is ANISEARCH_TRACEMOE_URL the trace.moe API?)"
    return error(message, provider=provider, status_code=status, retry_after=retry_after)

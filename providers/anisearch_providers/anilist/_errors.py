"""AniList's error shapes and rate-limit headers, each translated once.

AniList (https://graphql.anilist.co, documented at https://docs.anilist.co) answers every request with a
GraphQL body. An error carries an ``errors`` array whose items hold a ``message`` and the HTTP ``status``
they stand for; the response's own status is the same number::

    HTTP 429  Retry-After: 60  X-RateLimit-Limit: 90  X-RateLimit-Remaining: 0  X-RateLimit-Reset: <epoch s>
    {"data": null, "errors": [{"message": "Too Many Requests.", "status": 429}]}

    HTTP 400  {"data": null, "errors": [{"message": "Cannot query field \\"x\\" on type \\"Media\\".",
                                         "status": 400, "locations": [{"line": 1, "column": 9}]}]}

    HTTP 404  {"data": {"Media": null}, "errors": [{"message": "Not Found.", "status": 404}]}

The limit is 90 requests a minute per address (lower while the API is "degraded": 30 in 2025), reported on
every answer in ``X-RateLimit-Limit`` / ``X-RateLimit-Remaining``; a 429 says how long to wait in
``Retry-After`` (seconds). :data:`ERROR_STATUSES` maps the status an error names to one exception class.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx

from anisearch.provider import (
    AuthenticationError,
    BadRequestError,
    ProviderError,
    ProviderServerError,
    Quota,
    RateLimitedError,
    UpstreamResponseError,
    loads,
    rate_limit_quota,
    retry_after_seconds,
)

__all__ = [
    "ERROR_STATUSES",
    "RATE_LIMIT_FALLBACK_SECONDS",
    "error_for",
    "graphql_errors",
    "json_or_none",
    "observed_quotas",
]

RATE_LIMIT_FALLBACK_SECONDS = 60.0
"""How long a 429 without a usable ``Retry-After`` keeps AniList cooled down: its one-minute window."""

ERROR_STATUSES: dict[int, type[ProviderError]] = {
    400: BadRequestError,  # a query AniList cannot validate (a field it does not have)
    401: AuthenticationError,  # "Invalid token" (a bearer token; anisearch sends none)
    403: AuthenticationError,
    404: BadRequestError,  # "Not Found." for a single Media; a Page never answers it
    429: RateLimitedError,  # "Too Many Requests."
    500: ProviderServerError,  # "Internal Server Error"
    502: ProviderServerError,
    503: ProviderServerError,  # maintenance
    504: ProviderServerError,
}
"""The exception for the HTTP status an error names (its ``errors[].status``, else the response's)."""

_SERVER_ERRORS = 500
_CLIENT_ERRORS = 400


def json_or_none(response: httpx.Response) -> Any:
    """The decoded JSON body (strict: no ``NaN``, bounded depth), or None when it is not JSON."""
    try:
        return loads(response.content)
    except ValueError:
        return None


def graphql_errors(body: Any) -> list[dict[str, Any]]:
    """The ``errors`` items of a GraphQL body that are objects (empty when there are none)."""
    if not isinstance(body, dict) or not isinstance(body.get("errors"), list):
        return []
    return [item for item in body["errors"] if isinstance(item, dict)]


def _retry_after(response: httpx.Response, now: datetime) -> float | None:
    """``Retry-After`` (seconds or an HTTP date), capped at 24 h; AniList's ``X-RateLimit-Reset`` is an
    epoch, read by :func:`observed_quotas` as ``resets_at``, not as a wait."""
    return retry_after_seconds(response.headers, now, fallback_to_reset=False)


def _status_of(item: dict[str, Any], fallback: int) -> int:
    status = item.get("status")
    return status if isinstance(status, int) and not isinstance(status, bool) else fallback


def error_for(response: httpx.Response, *, provider: str, now: datetime) -> ProviderError:
    """The exception an AniList error answer means: the first ``errors[]`` item's status (else the HTTP
    status) through :data:`ERROR_STATUSES`, its message, and ``retry_after`` from ``Retry-After``."""
    items = graphql_errors(json_or_none(response))
    status = _status_of(items[0], response.status_code) if items else response.status_code
    message = ""
    if items and isinstance(items[0].get("message"), str):
        message = " ".join(items[0]["message"].split())[:200]
    error = ERROR_STATUSES.get(status)
    if error is None and status >= _CLIENT_ERRORS:
        error = ProviderServerError if status >= _SERVER_ERRORS else BadRequestError
    if error is None:
        return UpstreamResponseError(
            f"unexpected answer: {message or f'HTTP {response.status_code}'}",
            provider=provider,
            status_code=response.status_code,
        )
    retry_after = _retry_after(response, now)
    if error is RateLimitedError and retry_after is None:
        retry_after = RATE_LIMIT_FALLBACK_SECONDS
    text = message or httpx.codes.get_reason_phrase(status) or f"HTTP {status}"
    return error(text, provider=provider, status_code=response.status_code, retry_after=retry_after)


def observed_quotas(response: httpx.Response, *, provider: str, now: datetime) -> list[Quota]:
    """The minute window as the answer's headers report it (source ``headers``); never raises.

    ``X-RateLimit-Limit`` is the limit in force (90, or less while AniList is degraded), so a lowered
    limit reaches the ledger with the first answer. A 429 also sets ``remaining`` 0 and
    ``cooldown_until`` = now + ``Retry-After``.
    """
    quota = rate_limit_quota(response, provider=provider, scope="guest", now=now)
    if response.status_code != httpx.codes.TOO_MANY_REQUESTS:
        return [quota] if quota is not None else []
    wait = _retry_after(response, now)
    cooldown = now + timedelta(seconds=RATE_LIMIT_FALLBACK_SECONDS if wait is None else wait)
    quota = quota or Quota(
        provider=provider, scope="guest", window="minute", source="headers", observed_at=now
    )
    return [quota.model_copy(update={"remaining": 0, "cooldown_until": cooldown})]

"""whatanimeisthis.com's quota rules and what any response says about them.

Documented (api-docs): guests get 5 searches a day per IP; signed-in users (session or API key) get 10
free credits a day (expiring at midnight), then 1 purchased credit per search, and at most 100 searches
an hour. The site never says when "midnight" is, so anisearch does not compute resets: the ledger's
calendar day (configurable time zone) counts, and whatever the site reports (credits endpoint, a
remaining-credits number in a search answer, rate-limit headers, a 429) replaces the estimate.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from pydantic import ValidationError

from anisearch.provider import (
    AnisearchError,
    ProviderError,
    Quota,
    QuotaExhaustedError,
    QuotaScope,
    RateLimitedError,
    WindowSpec,
    rate_limit_quota,
)

from ._auth import AUTH_PREFIX
from ._errors import PROVIDER, error_for
from ._parse import Payload, parse_credits, remaining_credits
from ._tolerant import read_body, unwrap

if TYPE_CHECKING:
    import httpx

__all__ = [
    "GUEST_DAILY_SEARCHES",
    "HOURLY_SEARCHES",
    "SIGNED_IN_DAILY_CREDITS",
    "assumed_quotas",
    "credits_quota",
    "observe",
    "scope_of",
    "windows",
]

GUEST_DAILY_SEARCHES = 5
"""Searches a guest may run per day, per IP address (api-docs)."""
SIGNED_IN_DAILY_CREDITS = 10
"""Free credits a signed-in user gets per day; each search costs one (api-docs)."""
HOURLY_SEARCHES = 100
"""Searches a signed-in user may run per hour (api-docs)."""

_SITE_COOLDOWN = 60.0  # seconds; a site 429 without a wait
_HOUR = 3600
_PER_DAY = re.compile(r"(\d{1,6}) searches per day")
"""The guest limit a "Daily search limit reached" message names (the documented 5 otherwise)."""


def assumed_quotas(scope: QuotaScope) -> list[Quota]:
    """The documented limits for ``scope`` (source ``ledger``), until the site reports its own."""
    if scope == "guest":
        return [
            Quota(provider=PROVIDER, scope=scope, limit=GUEST_DAILY_SEARCHES, window="day", source="ledger")
        ]
    return [
        Quota(provider=PROVIDER, scope=scope, limit=SIGNED_IN_DAILY_CREDITS, window="day", source="ledger"),
        Quota(provider=PROVIDER, scope=scope, limit=HOURLY_SEARCHES, window="hour", source="ledger"),
    ]


def windows(scope: QuotaScope) -> list[WindowSpec]:
    """The site's windows for ``scope`` (api-docs):

    - ``day``: a calendar day ending at midnight UTC (the site's ``resetsAt`` and its 429's ``Retry-After``
      say so; ``ANISEARCH_TIMEZONE`` does not move it), a quota; 5 searches
      for a guest, 10 free credits for a signed-in user (purchased credits raise it: the remaining count
      the site reports wins). Signed in, the credits endpoint reports it.
    - ``hour``: 100 searches an hour when signed in, a rate limit (429 with ``Retry-After``).
    """
    if scope == "guest":
        return [WindowSpec("day", calendar="day", timezone="UTC", limit=GUEST_DAILY_SEARCHES)]
    return [
        WindowSpec("day", calendar="day", timezone="UTC", limit=SIGNED_IN_DAILY_CREDITS, reported=True),
        WindowSpec("hour", span_seconds=_HOUR, kind="rate", limit=HOURLY_SEARCHES),
    ]


def scope_of(request: httpx.Request, default: QuotaScope = "guest") -> QuotaScope:
    """Who a request spoke as: ``api-key`` (Bearer), ``session`` (a session cookie), else ``default``."""
    if request.headers.get("authorization", "").lower().startswith("bearer "):
        return "api-key"
    if "session_token=" in request.headers.get("cookie", ""):
        return "session"
    return default


def credits_quota(response: httpx.Response, scope: QuotaScope) -> Quota:
    """The day window the credits endpoint reports: ``remaining`` credits (free and paid), ``limit`` the
    free daily ones plus the paid ones left (so ``used`` is what today's free credits lost), when the
    site says how many are free a day.

    Raises:
        ProviderError: The answer is an error.
        UpstreamResponseError: It has no remaining-credits number.
    """
    balance = parse_credits(response)
    limit = balance.free_daily + (balance.paid or 0) if balance.free_daily is not None else None
    if limit is not None and limit < balance.remaining:  # purchased credits it did not count: unknown
        limit = None
    return Quota(
        provider=PROVIDER,
        scope=scope,
        remaining=balance.remaining,
        limit=limit,
        used=limit - balance.remaining if limit is not None else None,
        window="day",
        resets_at=balance.resets_at,
        source="upstream",
        raw=balance.raw,
    )


def _header_quota(response: httpx.Response, scope: QuotaScope, now: datetime) -> Quota | None:
    """The rate window of the standard rate-limit headers (an hour unless they say), raw headers not kept."""
    quota = rate_limit_quota(response, provider=PROVIDER, scope=scope, now=now, default_window="hour")
    return quota.model_copy(update={"raw": {}}) if quota is not None else None


def _success_quota(response: httpx.Response, scope: QuotaScope, now: datetime) -> Quota | None:
    path = response.request.url.path
    if path.endswith("/api/user/anime-credits"):
        return credits_quota(response, scope).model_copy(update={"observed_at": now})
    value, meta = unwrap(read_body(response).json)
    remaining = remaining_credits(Payload(value, meta).containers)
    if remaining is None:
        return None
    return Quota(
        provider=PROVIDER, scope=scope, remaining=remaining, window="day", source="upstream", observed_at=now
    )


def _error_quota(error: ProviderError, scope: QuotaScope, now: datetime) -> Quota | None:
    if isinstance(error, QuotaExhaustedError):
        until = now + timedelta(seconds=error.retry_after) if error.retry_after else None
        named = _PER_DAY.search(error.message)
        # A guest's day is spent at its known limit: without it the ledger would take the searches it
        # counted itself for the limit (a ledger reset the same day counts only the last one).
        limit = int(named.group(1)) if named else GUEST_DAILY_SEARCHES if scope == "guest" else None
        return Quota(
            provider=PROVIDER,
            scope=scope,
            limit=limit,
            remaining=0,
            window="day",
            resets_at=until,  # the site's word on when its day ends, not ANISEARCH_TIMEZONE's midnight
            cooldown_until=until,
            source="upstream",
            observed_at=now,
            raw={"message": error.message},
        )
    if isinstance(error, RateLimitedError):
        wait = error.retry_after if error.retry_after is not None else _SITE_COOLDOWN
        return Quota(
            provider=PROVIDER,
            scope=scope,
            remaining=0,
            window="hour",
            cooldown_until=now + timedelta(seconds=wait),
            source="headers",
            observed_at=now,
            raw={"message": error.message},
        )
    return None


def observe(
    response: httpx.Response, default_scope: QuotaScope, *, now: datetime | None = None
) -> list[Quota]:
    """Quota facts in any response: credits and remaining-credits numbers in bodies, rate-limit
    headers, and cooldowns from 429s and spent credits. Never raises; an unreadable body says nothing.

    better-auth's routes (``/api/auth/*``: sign-in, sign-out, get-session) say nothing about the search
    quota: their 429 is better-auth's own limiter, per address and path (sign-in 3 per 10 s), which the
    error (:class:`~anisearch.provider.SignInRateLimitedError` for a sign-in) reports instead.
    """
    if AUTH_PREFIX in response.request.url.path:
        return []
    now = now or datetime.now(UTC)
    scope = scope_of(response.request, default_scope)
    facts: list[Quota | None] = []
    try:
        facts.append(_header_quota(response, scope, now))
        error = error_for(response)
        if error is not None:
            facts.append(_error_quota(error, scope, now))
        else:
            facts.append(_success_quota(response, scope, now))
    except (AnisearchError, ValidationError):
        pass
    return [fact for fact in facts if fact is not None]

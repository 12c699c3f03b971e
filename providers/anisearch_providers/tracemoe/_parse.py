"""trace.moe bodies and headers -> anisearch models: hits, quotas, preview lifetimes.

Pure functions over decoded JSON and headers. Shape problems raise :class:`ShapeError`, which the
provider translates once into :class:`~anisearch.UpstreamResponseError` with the status and endpoint.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

import httpx
from pydantic import ValidationError

from anisearch.provider import (
    Hit,
    Quota,
    QuotaScope,
    ShapeError,
    anilist_media_fields,
    as_count,
    as_episode,
    as_float,
    as_int,
    as_str,
    clamp_similarity,
    epoch,
    error_message,
    next_hour,
    rate_limit_quota,
    retry_after_seconds,
    without,
)

from ._errors import quota_numbers, quota_window

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "PREVIEW_GRACE_SECONDS",
    "ShapeError",
    "UsageBucket",
    "answer_quota",
    "hit_from_item",
    "hits_from_items",
    "me_quota",
    "observed_quotas",
    "percent_similarity",
    "preview_expiry",
    "usage_buckets",
]

RATE_LIMIT_FALLBACK_SECONDS = 60.0
"""How long a 429 without any timing header keeps the provider cooling down: one rate window."""
PERCENT_ABOVE = 1.000001
"""A similarity above this is no rounding stray past 1: the answer is in percent (0..100)."""
PREVIEW_GRACE_SECONDS = 300
"""Preview URLs are honoured until this many seconds after the hour they embed (server ``video.ts``)."""

_OPAQUE_PREVIEW = re.compile(r"/(?:video|image)/[A-Za-z0-9_-]+/?$")


def _after(base: datetime, seconds: float) -> datetime | None:
    try:
        return base + timedelta(seconds=max(seconds, 0.0))
    except OverflowError:
        return None


# ---------------------------------------------------------------- search


def preview_expiry(url: str | None, date: datetime | None) -> datetime | None:
    """When a preview URL stops working (``/video``, ``/image``), or None when that cannot be told.

    - 2022-05 to 2025-07 URLs carry ``now=<unix seconds>``: valid until ``now`` + 300 s.
    - 2025-08+ opaque URLs (``/video/{id}``) embed the next full hour after the search, valid 300 s past
      it: the next full hour after the response ``Date`` + 300 s.
    - Older URLs (``?t=&token=`` without ``now``) and answers without a ``Date``: None.
    """
    return _PreviewClock(date).expiry(url)


class _PreviewClock:
    """:func:`preview_expiry` for the hits of one answer: the opaque URLs' expiry is worked out once."""

    def __init__(self, date: datetime | None) -> None:
        self._date = date
        self._opaque: datetime | None = None
        self._opaque_known = False

    def _opaque_expiry(self, date: datetime) -> datetime | None:
        if not self._opaque_known:
            self._opaque = _after(next_hour(date), PREVIEW_GRACE_SECONDS)
            self._opaque_known = True
        return self._opaque

    def expiry(self, url: str | None) -> datetime | None:
        if not url:
            return None
        try:  # the standard library's parser: httpx.URL costs ~80 us a URL, two URLs a hit, ten hits a search
            parsed = urlsplit(url)
            pairs = parse_qsl(parsed.query, keep_blank_values=True) if parsed.query else None
        except (ValueError, TypeError):
            return None
        if pairs is not None:  # a 2022-2025 URL says when it was issued; an older one cannot be told
            now_param = as_float(next((value for name, value in pairs if name == "now"), None))
            issued = epoch(now_param) if now_param is not None else None
            return _after(issued, PREVIEW_GRACE_SECONDS) if issued else None
        date = self._date
        if date is None or not _OPAQUE_PREVIEW.search(unquote(parsed.path)):
            return None
        return self._opaque_expiry(date)


def hit_from_item(item: Any, *, provider: str, date: datetime | None, percent: bool = False) -> Hit:
    """One ``result[]`` item as a :class:`~anisearch.Hit`.

    ``anilist`` may be an int, an object (``anilistInfo``: AniList's ``Media`` record, whole since V2, read by
    :func:`~anisearch.provider.anilist_media_fields`) or absent (V1, when AniList lacked the ID). ``from``,
    ``to``, ``at`` and ``duration`` are seconds; ``similarity`` is clamped to 0..1, after dividing it by 100
    when ``percent`` (an answer in percent: :func:`percent_similarity`).

    Raises:
        ShapeError: The item is not an object or has no numeric ``similarity``.
    """
    return _hit(item, provider, _PreviewClock(date), 100.0 if percent else 1.0)


def percent_similarity(items: list[Any]) -> float | None:
    """The highest similarity of a ``result`` array given in percent (0..100), or None when it is in 0..1.

    trace.moe reports ``(255 - distance) / 255`` clamped to 0..1 itself, so a similarity above 1 (by more
    than rounding: :data:`PERCENT_ABOVE`) is a server that answers in percent (a self-hosted or modified
    one): ``96.9`` means 0.969, not a perfect match. Items that are not hits are left to the parser.
    """
    numbers = (as_float(item.get("similarity")) for item in items if isinstance(item, dict))
    highest = max((number for number in numbers if number is not None), default=None)
    return highest if highest is not None and highest > PERCENT_ABOVE else None


def _hit(item: Any, provider: str, previews: _PreviewClock, scale: float) -> Hit:
    """:func:`hit_from_item`, with the preview clock of the whole answer and its similarity scale (1 or 100).

    Only the fields the item has are passed (a model validates each one it is given, None included).
    """
    if not isinstance(item, dict):
        raise ShapeError(f"a result item is {type(item).__name__}, not an object")
    number = as_float(item.get("similarity"))
    if number is not None and scale != 1.0:
        number = round(number / scale, 12)  # 96.9 is 0.969, not 0.9690000000000001
    similarity = clamp_similarity(number)
    if similarity is None:
        raise ShapeError(f"a result item has no numeric similarity: {item.get('similarity')!r}")
    anilist = item.get("anilist")
    fields: dict[str, Any] = (
        _anilist_fields(anilist) if isinstance(anilist, dict) else {"anilist_id": as_int(anilist)}
    )
    video, image = as_str(item.get("video")), as_str(item.get("image"))
    fields.update(
        episode=as_episode(item.get("episode")),
        episode_start=as_int(item.get("episode_start")),
        episode_end=as_int(item.get("episode_end")),
        start_seconds=as_float(item.get("from")),
        end_seconds=as_float(item.get("to")),
        at_seconds=as_float(item.get("at")),
        episode_duration_seconds=as_float(item.get("duration")),
        filename=as_str(item.get("filename")),
        video_url=video,
        image_url=image,
        preview_expires_at=previews.expiry(video or image),
    )
    known = {name: value for name, value in fields.items() if value is not None}
    try:
        return Hit.model_validate({"provider": provider, "similarity": similarity, "raw": item, **known})
    except (
        ValidationError
    ) as exc:  # pragma: no cover - every field is coerced above; guards future model rules
        raise ShapeError(f"a result item does not fit the hit schema: {exc.error_count()} errors") from exc


def _anilist_fields(info: Mapping[str, Any]) -> dict[str, Any]:
    """The hit fields of ``anilistInfo``, AniList's record (:func:`~anisearch.provider.anilist_media_fields`:
    titles, adult flag, format, episodes and their length, season, cover, page), its IDs read as loosely as
    every other trace.moe number (``"849"`` is 849)."""
    return {
        **anilist_media_fields(info),
        "anilist_id": as_int(info.get("id")),
        "mal_id": as_int(info.get("idMal")),
    }


def hits_from_items(
    items: list[Any], *, provider: str, date: datetime | None, percent: bool = False
) -> list[Hit]:
    """A ``result`` array as hits, most similar first (a stable sort keeps upstream order on ties).

    With ``percent`` (an answer in percent: :func:`percent_similarity`) every similarity is divided by 100
    before it is clamped to 0..1.

    Raises:
        ShapeError: An item is not a hit.
    """
    previews = _PreviewClock(date)
    scale = 100.0 if percent else 1.0
    hits = [_hit(item, provider, previews, scale) for item in items]
    return sorted(hits, key=lambda hit: hit.similarity, reverse=True)


def answer_quota(
    body: Mapping[str, Any], *, provider: str, scope: QuotaScope, searches: int, now: datetime
) -> Quota | None:
    """The quota a search answer reports (``quota``, ``quotaUsed``; 2026-07+), or None when it has none.

    ``quotaUsed`` is counted *before* the request, and a successful search (a batch of N vectors: N
    searches) counts against it, so ``used`` is ``quotaUsed + searches``.

    Raises:
        ShapeError: ``quota`` or ``quotaUsed`` is a number but not a count (negative, fractional, huge).
    """
    limit, before = as_count(body.get("quota"), "quota"), as_count(body.get("quotaUsed"), "quotaUsed")
    if limit is None and before is None:
        return None
    used = before + searches if before is not None else None
    remaining = max(limit - used, 0) if limit is not None and used is not None else None
    return Quota(
        provider=provider,
        scope=scope,
        limit=limit,
        used=used,
        remaining=remaining,
        window="rolling-24h",
        source="upstream",
        observed_at=now,
        raw={"quota": body.get("quota"), "quotaUsed": body.get("quotaUsed")},
    )


# ---------------------------------------------------------------- /me


def me_quota(body: Any, *, provider: str, scope: QuotaScope, now: datetime) -> Quota:
    """The ``/me`` body as a rolling-24h :class:`~anisearch.Quota`.

    Numeric strings are coerced (``"quotaUsed": "18"``, 2025-07 to 2026-07). The caller's ``id`` (an IP
    address, a network or an email) is dropped, from ``raw`` too. Servers before 2026-07-12 reported a
    guest who had not searched yet as quota 0 and concurrency 0; that is read as "not known" (None),
    not as "no quota at all".

    Raises:
        ShapeError: The body is not an object with a ``quota`` or ``quotaUsed``, or a number in it is not
            a count (negative, fractional, huge).
    """
    if not isinstance(body, dict):
        raise ShapeError(f"the /me answer is {type(body).__name__}, not an object")
    limit, used = as_count(body.get("quota"), "quota"), as_count(body.get("quotaUsed"), "quotaUsed")
    concurrency = as_count(body.get("concurrency"), "concurrency")
    priority = as_count(body.get("priority"), "priority")
    if limit is None and used is None:
        raise ShapeError("the /me answer has neither 'quota' nor 'quotaUsed'")
    if limit == 0 and concurrency == 0:
        limit = concurrency = priority = None
    remaining = max(limit - used, 0) if limit is not None and used is not None else None
    return Quota(
        provider=provider,
        scope=scope,
        limit=limit,
        used=used,
        remaining=remaining,
        window="rolling-24h",
        concurrency=concurrency,
        priority=priority,
        source="upstream",
        observed_at=now,
        raw=without(body, "id"),
    )


@dataclass(frozen=True, slots=True)
class UsageBucket:
    """One bucket of ``/me?period=``: how many searches ended with which status in one time slot."""

    time: datetime | None
    """Start of the slot (upstream ``time``, ISO 8601 UTC)."""
    total: int
    """All searches in the slot (upstream ``total``)."""
    statuses: dict[int, int] = field(default_factory=dict)
    """Searches per HTTP status (upstream ``"200"``, ``"402"``... members)."""


def usage_buckets(body: Any) -> list[UsageBucket]:
    """The ``/me?period=minute|hour|day`` body (a list of slots) as :class:`UsageBucket` values.

    Raises:
        ShapeError: The body is not an array of objects.
    """
    if not isinstance(body, list) or not all(isinstance(row, dict) for row in body):
        raise ShapeError("the /me usage answer is not an array of objects")
    buckets = []
    for row in body:
        counts = {
            int(key): count
            for key, value in row.items()
            if len(key) == 3 and key.isascii() and key.isdigit() and (count := as_int(value)) is not None  # noqa: PLR2004 - an HTTP status
        }
        stamp = as_str(row.get("time"))
        try:
            when = datetime.fromisoformat(stamp) if stamp else None
        except ValueError:
            when = None
        buckets.append(
            UsageBucket(time=when, total=as_int(row.get("total")) or sum(counts.values()), statuses=counts)
        )
    return buckets


# ---------------------------------------------------------------- headers


def observed_quotas(
    response: httpx.Response, *, provider: str, scope: QuotaScope, now: datetime
) -> list[Quota]:
    """What any answer says about the limits, for the ledger; never raises.

    - Rate-limit headers (every route, errors too): the 100-per-minute window (source ``headers``).
    - A 429: that window with ``remaining`` 0 and ``cooldown_until`` = now + ``Retry-After`` (one
      window when no header says).
    - A 402 ``Search quota depleted``: the search quota, spent (``remaining`` 0, ``used`` = the limit
      unless the body says more).
    """
    quotas: list[Quota] = []
    rate = rate_limit_quota(response, provider=provider, scope=scope, now=now)
    if response.status_code == httpx.codes.TOO_MANY_REQUESTS:
        wait = retry_after_seconds(response.headers, now)
        until = _after(now, RATE_LIMIT_FALLBACK_SECONDS if wait is None else wait)
        rate = rate or Quota(provider=provider, scope=scope, window="minute", source="headers")
        rate = rate.model_copy(update={"remaining": 0, "cooldown_until": until, "observed_at": now})
    if rate is not None:
        quotas.append(rate)
    message = error_message(response) if response.status_code == httpx.codes.PAYMENT_REQUIRED else ""
    if message.startswith("Search quota depleted"):
        try:
            limit, used = quota_numbers(response, message)
        except ShapeError:  # absurd numbers: the error says so; nothing to record
            return quotas
        quotas.append(
            Quota(
                provider=provider,
                scope=scope,
                limit=limit,
                used=used if used is not None else limit,
                remaining=0,
                window=quota_window(message),
                source="upstream",
                observed_at=now,
                raw={"error": message},
            )
        )
    return quotas

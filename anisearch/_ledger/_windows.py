"""Window arithmetic: what a quota window counts at a given instant, and when it frees up again.

Every backend stores the same things per ``(provider, scope, window)``: the last *truth* the upstream told
(limit, used or remaining, when it was observed, when the upstream said it resets) and, per scope, the
local events since (``search`` for successful searches, ``request`` for any HTTP request). This module
turns those into an estimate; it does no I/O.

How each window kind ages (``T`` = the truth's ``observed_at``, ``R`` = its ``resets_at``):

``rolling-24h`` (trace.moe since 2026-02-22)
    The upstream counts the successes of the last 24 hours. Its ``used`` at ``T`` covers searches made
    anywhere in ``(T - 24h, T]``; the ledger cannot tell when each of them ages out, so the whole count is
    assumed to stay until ``T + 24h`` (the latest any of them can leave), or until ``R`` when the upstream
    named a reset time. A local success made at ``s`` leaves at ``s + 24h``. Assuming late drain never
    admits a search the upstream would refuse; the next answer carries a fresh truth anyway.

``day`` / ``month`` (whatanimeisthis.com credits, trace.moe before 2026-02-22)
    Calendar periods in the ledger's time zone: everything resets at local midnight (the 1st, for a
    month). A truth observed in an earlier period is void. When the upstream named ``R``, it wins over
    the local calendar for the truth and for the successes counted on top of it.

``minute`` / ``hour`` (HTTP rate limits, whatanimeisthis.com's 100 searches per hour)
    With ``R`` (``X-RateLimit-Reset``) the window is fixed: the truth and the events since ``T`` all
    leave at ``R``. Without it the window rolls: the truth leaves at ``T + span``, an event at
    ``s + span``.

Timestamps are whole microseconds; datetimes are timezone-aware UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal, get_args

from anisearch._exceptions import ConfigurationError
from anisearch._models import QuotaWindow

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

    from anisearch._models import Quota, QuotaSource

__all__ = [
    "SEARCH_WINDOWS",
    "WINDOWS",
    "Estimate",
    "EventKind",
    "Truth",
    "aware",
    "estimate",
    "event_kind",
    "from_us",
    "horizon",
    "needed_events",
    "period_bounds",
    "since",
    "to_us",
    "truth_from_quota",
]

EventKind = Literal["search", "request"]

WINDOWS: tuple[QuotaWindow, ...] = get_args(QuotaWindow)
SEARCH_WINDOWS: tuple[QuotaWindow, ...] = ("rolling-24h", "day", "month", "hour")
"""Windows that count successful searches; ``minute`` counts HTTP requests."""

_SPANS: dict[QuotaWindow, timedelta] = {
    "rolling-24h": timedelta(hours=24),
    "hour": timedelta(hours=1),
    "minute": timedelta(minutes=1),
}
_CALENDAR = ("day", "month")
_TICK = timedelta(microseconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_us(moment: datetime) -> int:
    """Microseconds since the Unix epoch, exactly (no float rounding)."""
    return (moment - _EPOCH) // _TICK


def from_us(micros: int) -> datetime:
    """The aware UTC datetime of ``micros`` microseconds since the Unix epoch."""
    return _EPOCH + timedelta(microseconds=micros)


def aware(moment: datetime, what: str) -> datetime:
    """``moment`` in UTC.

    Raises:
        ConfigurationError: ``moment`` is naive (no time zone), so its instant is unknown.
    """
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ConfigurationError(f"{what} must be a timezone-aware datetime, got naive {moment.isoformat()}")
    return moment.astimezone(UTC)


def event_kind(window: QuotaWindow) -> EventKind:
    """``request`` for ``minute`` windows (HTTP request rates), ``search`` for the others."""
    return "request" if window == "minute" else "search"


def horizon(kind: EventKind) -> timedelta:
    """How long an event of ``kind`` is kept: the longest any window could still count it."""
    return timedelta(hours=1) if kind == "request" else timedelta(days=32)


def period_bounds(window: QuotaWindow, moment: datetime, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """The calendar day (``day``) or else month holding ``moment`` in ``tz``, as UTC ``[start, end)``."""
    # Aware datetimes sharing one tzinfo add in wall-clock time, so "the next midnight" stays a midnight
    # across a DST change; astimezone() then finds that midnight's own offset.
    local = moment.astimezone(tz)
    if window == "day":
        start = local.replace(hour=0, minute=0, second=0, microsecond=0)
        after = start + timedelta(days=1)
    else:
        start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        after = (start + timedelta(days=32)).replace(day=1)
    return start.astimezone(UTC), after.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class Truth:
    """What the upstream last said about one window (never its ``raw`` payload).

    ``used`` and ``remaining`` are normalised on the way in: with a ``limit``, ``used`` is set and
    ``remaining`` is None; without one, only what the upstream said is kept.
    """

    window: QuotaWindow
    observed_at: datetime
    limit: int | None = None
    used: int | None = None
    remaining: int | None = None
    resets_at: datetime | None = None
    source: QuotaSource = "upstream"


def truth_from_quota(quota: Quota, previous: Truth | None) -> Truth | None:
    """The truth a ``Quota`` tells, or None when it names no count (only a cooldown or a concurrency).

    A missing ``limit`` is taken from ``previous`` (limits are learned and kept); ``remaining`` without
    ``used`` becomes ``used = limit - remaining``.

    Raises:
        ConfigurationError: A datetime in ``quota`` is naive, or a count is negative.
    """
    if quota.limit is None and quota.used is None and quota.remaining is None:
        return None
    for name in ("limit", "used", "remaining"):
        value = getattr(quota, name)
        if value is not None and value < 0:
            raise ConfigurationError(f"Quota.{name} must not be negative, got {value}")
    limit = quota.limit if quota.limit is not None else (previous.limit if previous else None)
    used, remaining = quota.used, quota.remaining
    if limit is not None:
        if used is None:
            used = max(limit - remaining, 0) if remaining is not None else 0
        remaining = None
    resets_at = aware(quota.resets_at, "Quota.resets_at") if quota.resets_at else None
    return Truth(
        window=quota.window,
        observed_at=aware(quota.observed_at, "Quota.observed_at"),
        limit=limit,
        used=used,
        remaining=remaining,
        resets_at=resets_at,
        source=quota.source,
    )


def _fixed_reset(truth: Truth) -> datetime | None:
    # A reset time the upstream named for the whole window (not for a rolling log, where it frees one unit).
    return truth.resets_at if truth.window != "rolling-24h" else None


def truth_end(truth: Truth, tz: ZoneInfo) -> datetime:
    """When the truth's count stops counting."""
    if truth.resets_at is not None:
        return truth.resets_at
    if truth.window in _CALENDAR:
        return period_bounds(truth.window, truth.observed_at, tz)[1]
    return truth.observed_at + _SPANS[truth.window]


def _natural_since(window: QuotaWindow, now: datetime, tz: ZoneInfo) -> datetime:
    if window in _CALENDAR:
        return period_bounds(window, now, tz)[0]
    return now - _SPANS[window] + _TICK


def since(truth: Truth, now: datetime, tz: ZoneInfo) -> datetime:
    """The oldest event time (inclusive) that still counts in the truth's window at ``now``."""
    fixed = _fixed_reset(truth)
    if fixed is not None:
        return truth.observed_at if now < fixed else max(fixed, _natural_since(truth.window, now, tz))
    return max(truth.observed_at, _natural_since(truth.window, now, tz))


def _event_end(truth: Truth, at: datetime, tz: ZoneInfo) -> datetime:
    fixed = _fixed_reset(truth)
    if fixed is not None and truth.observed_at <= at < fixed:
        return fixed
    if truth.window in _CALENDAR:
        return period_bounds(truth.window, at, tz)[1]
    return at + _SPANS[truth.window]


def _base_used(truth: Truth, now: datetime, tz: ZoneInfo) -> int:
    return (truth.used or 0) if now < truth_end(truth, tz) else 0


def needed_events(truth: Truth, now: datetime, tz: ZoneInfo, count: int) -> int:
    """How many of the oldest counted events :func:`estimate` needs to date the next free unit."""
    if truth.limit is None:
        return 0
    used = _base_used(truth, now, tz) + count
    return min(count, max(used - truth.limit + 1, 1))


@dataclass(frozen=True, slots=True)
class Estimate:
    """A window's state at one instant.

    Attributes:
        used: Units used now (truth still in force + local events), or None when unknown.
        remaining: Units left now, or None when unknown.
        spent_until: When the window is spent: the first instant it admits one more; else None.
        resets_at: When at least one counted unit frees (the period's end for an idle calendar window).
        source: ``ledger`` when local events or ageing changed the upstream's numbers, else its source.
    """

    used: int | None
    remaining: int | None
    spent_until: datetime | None
    resets_at: datetime | None
    source: QuotaSource


def estimate(truth: Truth, now: datetime, tz: ZoneInfo, count: int, oldest: list[datetime]) -> Estimate:
    """Estimate the window at ``now`` from its truth and the local events counted since :func:`since`.

    Args:
        truth: The window's last truth.
        now: The instant (aware UTC).
        tz: The ledger's time zone, for calendar windows.
        count: Events of the window's kind at or after ``since(truth, now, tz)``.
        oldest: The oldest ``needed_events(...)`` of those, ascending.
    """
    end = truth_end(truth, tz)
    active = now < end
    calendar_end = period_bounds(truth.window, now, tz)[1] if truth.window in _CALENDAR else None
    source: QuotaSource = truth.source if active and count == 0 else "ledger"
    if truth.limit is None:
        if truth.remaining is not None and active:
            left = truth.remaining - count
            return Estimate(None, max(left, 0), end if left <= 0 else None, end, source)
        used = None if truth.used is None else (truth.used if active else 0) + count
        return Estimate(used, None, None, calendar_end, source)
    if truth.limit == 0 and not active:  # a zero quota (an upstream glitch) is believed only while fresh
        return Estimate(count, None, None, calendar_end, "ledger")
    base = _base_used(truth, now, tz)
    used = base + count
    points = sorted(([(end, base)] if base else []) + [(_event_end(truth, at, tz), 1) for at in oldest])
    resets_at = points[0][0] if points else calendar_end
    spent_until = None
    if used >= truth.limit:
        freed = 0
        spent_until = end if active else (points[-1][0] if points else now)
        for moment, units in points:
            freed += units
            if used - freed < truth.limit:
                spent_until = moment
                break
    return Estimate(used, max(truth.limit - used, 0), spent_until, resets_at, source)

"""Quota windows as data, and the time arithmetic behind them (no I/O).

A provider declares each of its windows as a :class:`WindowSpec` value: a name, how it ages (a rolling span
of seconds, or a calendar ``day``/``month`` in a time zone), what it counts (searches or HTTP requests),
whether running out of it is a *quota* (:class:`~anisearch.QuotaExhaustedError`) or a *rate limit*
(:class:`~anisearch.RateLimitedError`), the documented default limit, and whether the upstream reports it.
Adding a window kind (a 30-second window, a weekly one) is one more value in a provider: nothing here
changes.

The ledger keeps, per window, one *unit* for every search (or request) it counted, each with the instant it
*leaves* the window:

- rolling windows: the instant it was counted + the span (trace.moe's rolling 24 h: each search ages out
  exactly 24 h after it was made, so the next free slot is the oldest counted search + 24 h);
- calendar windows: the end of the period it was counted in, in the window's zone;
- with a reset instant the upstream named (``X-RateLimit-Reset``): that instant.

An upstream count (a *truth*) reconciles the units: searches the upstream counted that the ledger does not
know of are kept as *unknown* units, assumed to leave at the latest instant they could (the truth's time +
the span, the period's end, or the named reset); local units the upstream did not count are dropped, oldest
first. Timestamps are whole microseconds since the Unix epoch; datetimes are timezone-aware UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from anisearch._exceptions import ConfigurationError

__all__ = [
    "STANDARD_WINDOWS",
    "Counts",
    "WindowKind",
    "WindowSpec",
    "aware",
    "from_us",
    "period_bounds",
    "spec_for",
    "to_us",
    "zone",
]

Counts = Literal["searches", "requests"]
WindowKind = Literal["quota", "rate"]

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


def zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``.

    Raises:
        ConfigurationError: No such zone.
    """
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigurationError(
            f"unknown time zone {name!r}; use an IANA name such as 'UTC' or 'Asia/Tokyo'"
        ) from exc


def period_bounds(unit: Literal["day", "month"], moment: datetime, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """The calendar day or month holding ``moment`` in ``tz``, as UTC ``[start, end)``."""
    # Aware datetimes sharing one tzinfo add in wall-clock time, so "the next midnight" stays a midnight
    # across a DST change; astimezone() then finds that midnight's own offset.
    local = moment.astimezone(tz)
    if unit == "day":
        start = local.replace(hour=0, minute=0, second=0, microsecond=0)
        after = start + timedelta(days=1)
    else:
        start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        after = (start + timedelta(days=32)).replace(day=1)
    return start.astimezone(UTC), after.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """One quota or rate window of a provider, declared as data.

    Exactly one of ``span_seconds`` and ``calendar`` is set.

    Attributes:
        name: The window's name, as in :attr:`anisearch.Quota.window` (``"rolling-24h"``, ``"minute"``).
        span_seconds: A rolling window's length in seconds (86400 for trace.moe's 24 h).
        calendar: ``"day"`` or ``"month"``: the window resets at the period's start.
        timezone: IANA zone of a calendar window's midnight; None uses the ledger's zone
            (``ANISEARCH_TIMEZONE``).
        counts: ``"searches"`` (answered searches) or ``"requests"`` (every HTTP request sent).
        kind: ``"quota"``: running out raises :class:`~anisearch.QuotaExhaustedError`; ``"rate"``:
            :class:`~anisearch.RateLimitedError` with ``retry_after``.
        limit: The documented limit, used until the upstream reports its own; None when unknown.
        reported: The upstream reports this window's count (a free quota endpoint, or every answer), so
            the ledger asks before trusting its own estimate that a unit has freed.
    """

    name: str
    span_seconds: float | None = None
    calendar: Literal["day", "month"] | None = None
    timezone: str | None = None
    counts: Counts = "searches"
    kind: WindowKind = "quota"
    limit: int | None = None
    reported: bool = False

    def __post_init__(self) -> None:
        for field, value, allowed in (
            ("calendar", self.calendar, ("day", "month", None)),
            ("counts", self.counts, get_args(Counts)),
            ("kind", self.kind, get_args(WindowKind)),
        ):
            if value not in allowed:
                known = " or ".join(repr(one) for one in allowed if one is not None)
                raise ConfigurationError(f"window {self.name!r}: {field} must be {known}, got {value!r}")
        if (self.span_seconds is None) == (self.calendar is None):
            raise ConfigurationError(f"window {self.name!r} needs exactly one of span_seconds and calendar")
        if self.span_seconds is not None and not self.span_seconds > 0:
            raise ConfigurationError(f"window {self.name!r}: span_seconds must be positive")
        if self.limit is not None and self.limit < 0:
            raise ConfigurationError(f"window {self.name!r}: limit must not be negative")
        if self.timezone is not None:
            zone(self.timezone)

    def leave(self, at: datetime, tz: ZoneInfo) -> datetime:
        """When a unit counted at ``at`` leaves the window."""
        if self.span_seconds is not None:
            return at + timedelta(seconds=self.span_seconds)
        assert self.calendar is not None  # noqa: S101 - __post_init__ guarantees one of the two
        return period_bounds(self.calendar, at, zone(self.timezone) if self.timezone else tz)[1]

    def horizon(self) -> timedelta:
        """The longest a unit can stay in this window."""
        if self.span_seconds is not None:
            return timedelta(seconds=self.span_seconds)
        return timedelta(days=32 if self.calendar == "month" else 1, hours=2)


STANDARD_WINDOWS: dict[str, WindowSpec] = {
    "rolling-24h": WindowSpec("rolling-24h", span_seconds=86400),
    "day": WindowSpec("day", calendar="day"),
    "month": WindowSpec("month", calendar="month"),
    "hour": WindowSpec("hour", span_seconds=3600, kind="rate"),
    "minute": WindowSpec("minute", span_seconds=60, counts="requests", kind="rate"),
}
"""How a window a provider did not declare is read, by its name: the fallback for a third-party provider
that has no ``windows()`` yet, or an answer naming a window its provider never declared. Every provider
shipped with anisearch declares its own windows."""


def spec_for(name: str, declared: dict[str, WindowSpec]) -> WindowSpec | None:
    """The declared spec named ``name``, else the standard one of that name, else None."""
    return declared.get(name) or STANDARD_WINDOWS.get(name)

"""The ledger logic shared by every backend, written against a few storage primitives.

A backend stores truths, per-scope settings, timestamped events and leases, and makes each primitive
atomic (a lock, one SQLite transaction, one Redis script); everything else (argument checks, window
estimates, admission, snapshots, the lease wait loop) lives here once.
"""

from __future__ import annotations

import abc
import random
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, get_args

import anyio

from anisearch._exceptions import ConfigurationError
from anisearch._ledger._base import Admission, Lease, Ledger
from anisearch._ledger._windows import (
    SEARCH_WINDOWS,
    WINDOWS,
    Estimate,
    EventKind,
    Truth,
    aware,
    estimate,
    event_kind,
    needed_events,
    since,
    truth_from_quota,
)
from anisearch._models import Quota, QuotaScope, QuotaWindow

if TYPE_CHECKING:
    from collections.abc import Sequence
    from zoneinfo import ZoneInfo

__all__ = ["Clock", "ScopeRecord", "StoredLedger", "check_provider", "check_scope", "stamp"]

Clock = Callable[[], datetime]
"""Returns the current instant as an aware datetime (tests inject a fake one)."""

_PROVIDER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SCOPE = re.compile(r"(?:guest|api-key|session)(?::[0-9a-f]{8,64})?")
_SCOPE_KINDS: tuple[QuotaScope, ...] = get_args(QuotaScope)
_UPSTREAM_WAIT = "the upstream asked to wait"
_POLL_SECONDS = (0.02, 0.1)


def _system_clock() -> datetime:
    return datetime.now(UTC)


def stamp(moment: datetime) -> str:
    """``2026-11-22T09:14Z``: UTC, rounded *up* to the minute, so it is never earlier than ``moment``."""
    moment = moment.astimezone(UTC)
    floor = moment.replace(second=0, microsecond=0)
    if floor < moment:
        floor += timedelta(minutes=1)
    return floor.strftime("%Y-%m-%dT%H:%MZ")


def check_provider(provider: str) -> str:
    """``provider`` unchanged.

    Raises:
        ConfigurationError: It is not an entry-point style name (letters, digits, ``.``, ``_``, ``-``).
    """
    if not _PROVIDER.fullmatch(provider):
        raise ConfigurationError(f"invalid provider name for the ledger: {provider!r}")
    return provider


def check_scope(scope: str) -> str:
    """``scope`` unchanged.

    Raises:
        ConfigurationError: It is not what :func:`~anisearch._ledger.scope_id` makes. The check keeps a raw
            API key, cookie or address from ever being written to the ledger by mistake.
    """
    if not _SCOPE.fullmatch(scope):
        raise ConfigurationError(
            "invalid ledger scope: use scope_id() ('guest' or '<kind>:<hash>'), never a raw credential"
        )
    return scope


@dataclass(slots=True)
class ScopeRecord:
    """What a backend holds for one ``(provider, scope)`` besides its events and leases."""

    truths: dict[QuotaWindow, Truth] = field(default_factory=dict)
    cooldown_until: datetime | None = None
    cooldown_reason: str | None = None
    concurrency: int | None = None


class StoredLedger(Ledger):
    """:class:`Ledger` on top of storage primitives that each backend makes atomic.

    Args:
        url: The URL the ledger was opened from (any password masked).
        timezone: Zone of the calendar ``day`` and ``month`` windows (their midnight).
        clock: The current instant; defaults to the system clock. Tests inject a fake one.
    """

    def __init__(self, url: str, *, timezone: ZoneInfo, clock: Clock | None = None) -> None:
        self.url = url
        self.timezone = timezone
        self._clock = clock or _system_clock

    # ------------------------------------------------------------------ storage primitives

    @abc.abstractmethod
    async def _load(self, provider: str, scope: str) -> ScopeRecord:
        """The scope's truths, cooldown and observed concurrency."""

    @abc.abstractmethod
    async def _scopes(self, provider: str | None) -> list[tuple[str, str]]:
        """Every ``(provider, scope)`` with a truth, a cooldown or a concurrency (of one provider)."""

    @abc.abstractmethod
    async def _put_truths(self, provider: str, scope: str, truths: Sequence[Truth]) -> None:
        """Store each truth unless the stored one for its window was observed later; then forget the
        events older than every stored truth (no window counts them any more)."""

    @abc.abstractmethod
    async def _put_cooldown(self, provider: str, scope: str, until: datetime, reason: str) -> None:
        """Set the cooldown unless a later one is stored."""

    @abc.abstractmethod
    async def _put_concurrency(self, provider: str, scope: str, concurrency: int) -> None:
        """Store the concurrency the upstream reported."""

    @abc.abstractmethod
    async def _add_event(
        self, provider: str, scope: str, kind: EventKind, at: datetime, now: datetime
    ) -> None:
        """Log one event, and drop the scope's events of ``kind`` older than ``now - horizon(kind)``."""

    @abc.abstractmethod
    async def _events(
        self, provider: str, scope: str, kind: EventKind, since: datetime, need: Callable[[int], int]
    ) -> tuple[int, list[datetime]]:
        """How many events of ``kind`` are at or after ``since``, and the oldest ``need(count)`` of them."""

    @abc.abstractmethod
    async def _try_acquire(
        self, provider: str, scope: str, *, token: str, slots: int, expires_at: datetime, now: datetime
    ) -> bool:
        """Drop leases expired at ``now``; add ``token`` if fewer than ``slots`` remain (the stored
        concurrency, when there is one, replaces ``slots``)."""

    @abc.abstractmethod
    async def _release_token(self, provider: str, scope: str, token: str) -> None:
        """Drop one lease, if it is still there."""

    # ------------------------------------------------------------------ the Ledger interface

    def _now(self, given: datetime | None = None) -> datetime:
        return aware(given if given is not None else self._clock(), "now")

    async def observe(self, scope: str, quotas: Sequence[Quota]) -> None:
        """Record what the upstream said about ``scope``.

        Per quota: a count (``limit``/``used``/``remaining``) becomes the truth of its ``window`` unless a
        later one is stored (``raw`` is never stored); ``concurrency`` (when above 0) replaces the
        ``slots`` of :meth:`acquire`; ``cooldown_until`` sets a cooldown.

        Raises:
            ConfigurationError: ``scope`` is not a :func:`scope_id`, a provider name is invalid, a count
                is negative or a datetime is naive.
        """
        check_scope(scope)
        for provider in dict.fromkeys(quota.provider for quota in quotas):
            check_provider(provider)
            mine = [quota for quota in quotas if quota.provider == provider]
            known = dict((await self._load(provider, scope)).truths)
            truths: list[Truth] = []
            for quota in mine:
                truth = truth_from_quota(quota, known.get(quota.window))
                if truth is not None:
                    truths.append(truth)
                    known[truth.window] = truth
                if quota.concurrency is not None and quota.concurrency > 0:
                    await self._put_concurrency(provider, scope, quota.concurrency)
                if quota.cooldown_until is not None:
                    until = aware(quota.cooldown_until, "Quota.cooldown_until")
                    await self._put_cooldown(provider, scope, until, _UPSTREAM_WAIT)
            if truths:
                await self._put_truths(provider, scope, truths)

    async def record_success(self, provider: str, scope: str, *, at: datetime | None = None) -> None:
        """Count one successful search (HTTP 200) against the scope's ``rolling-24h``, ``day``, ``month``
        and ``hour`` windows, from ``at`` (default: now).

        Raises:
            ConfigurationError: Invalid ``provider`` or ``scope``, or a naive ``at``.
        """
        await self._record(provider, scope, "search", at)

    async def record_request(self, provider: str, scope: str, *, at: datetime | None = None) -> None:
        """Count one HTTP request (any outcome) against the scope's ``minute`` windows.

        Raises:
            ConfigurationError: Invalid ``provider`` or ``scope``, or a naive ``at``.
        """
        await self._record(provider, scope, "request", at)

    async def _record(self, provider: str, scope: str, kind: EventKind, at: datetime | None) -> None:
        check_provider(provider)
        check_scope(scope)
        now = self._now()
        await self._add_event(provider, scope, kind, self._now(at), now)

    async def _estimate(self, provider: str, scope: str, truth: Truth, now: datetime) -> Estimate:
        tz = self.timezone
        count, oldest = await self._events(
            provider,
            scope,
            event_kind(truth.window),
            since(truth, now, tz),
            lambda count: needed_events(truth, now, tz, count),
        )
        return estimate(truth, now, tz, count, oldest)

    async def admit(self, provider: str, scope: str, *, now: datetime | None = None) -> Admission:
        """Whether one more search may be sent at ``now`` (default: the clock).

        Refused while any known window's estimate is spent (``"quota exhausted until
        2026-11-22T09:14Z"``) or a cooldown runs (``"cooling down until ...: <reason>"``); when both, the
        one lasting longer is named. Times are UTC, rounded up to the minute; ``until`` is exact.

        Raises:
            ConfigurationError: Invalid ``provider`` or ``scope``, or a naive ``now``.
        """
        check_provider(provider)
        check_scope(scope)
        moment = self._now(now)
        record = await self._load(provider, scope)
        blockers: list[tuple[datetime, str]] = []
        for truth in record.truths.values():
            spent = (await self._estimate(provider, scope, truth, moment)).spent_until
            if spent is not None and spent > moment:
                blockers.append((spent, f"quota exhausted until {stamp(spent)}"))
        if record.cooldown_until is not None and record.cooldown_until > moment:
            until = record.cooldown_until
            blockers.append((until, f"cooling down until {stamp(until)}: {record.cooldown_reason}"))
        if not blockers:
            return Admission(allowed=True)
        until, reason = max(blockers, key=lambda blocker: blocker[0])
        return Admission(allowed=False, reason=reason, until=until)

    async def set_cooldown(self, provider: str, scope: str, until: datetime, reason: str) -> None:
        """Admit nothing for the scope before ``until``; the later of two cooldowns wins, with its reason.

        ``reason`` is stored and shown in :class:`Admission`: one line, and never a secret.

        Raises:
            ConfigurationError: Invalid ``provider`` or ``scope``, or a naive ``until``.
        """
        check_provider(provider)
        check_scope(scope)
        line = " ".join(reason.split()) or "cooldown"
        await self._put_cooldown(provider, scope, aware(until, "until"), line)

    async def mark_exhausted(
        self, provider: str, scope: str, *, window: str | None = None, until: datetime | None = None
    ) -> None:
        """The upstream said the quota is spent (trace.moe 402 ``Search quota depleted``).

        Writes a truth observed now with ``used = limit`` in ``window``, or in every known search window
        (``rolling-24h``, ``day``, ``month``, ``hour``). A window whose limit is unknown is marked with
        ``remaining = 0`` instead; with no window known at all, a ``rolling-24h`` one is marked. The mark
        lasts until ``until`` when given, else until the window would free a unit (24 h for
        ``rolling-24h``, the period's end for ``day``/``month``, a span for ``minute``/``hour``), or
        until a fresh truth replaces it.

        Raises:
            ConfigurationError: Invalid ``provider``, ``scope`` or ``window``, or a naive ``until``.
        """
        check_provider(provider)
        check_scope(scope)
        if window is not None and window not in WINDOWS:
            raise ConfigurationError(f"unknown quota window {window!r}; use one of {', '.join(WINDOWS)}")
        now = self._now()
        reset = aware(until, "until") if until is not None else None
        known = (await self._load(provider, scope)).truths
        targets = [window] if window else [w for w in SEARCH_WINDOWS if w in known]
        truths = []
        for name in targets or ["rolling-24h"]:
            old = known.get(name)
            limit = old.limit if old is not None else None
            kept = old.resets_at if old is not None and old.resets_at and old.resets_at > now else None
            truths.append(
                Truth(
                    window=name,
                    observed_at=now,
                    limit=limit,
                    used=limit,
                    remaining=0 if limit is None else None,
                    resets_at=reset or kept,
                )
            )
        await self._put_truths(provider, scope, truths)

    async def acquire(
        self, provider: str, scope: str, *, slots: int, lease_seconds: float, wait_seconds: float
    ) -> Lease | None:
        """Take one of the scope's concurrency slots, shared by every process using the same store.

        The concurrency last observed from the upstream (``Quota.concurrency``, trace.moe ``/me``)
        replaces ``slots``. Polls every 20-100 ms (jittered) until ``wait_seconds`` have passed.

        Args:
            provider: Provider name.
            scope: A :func:`scope_id`.
            slots: Searches allowed in flight at once when the upstream never said.
            lease_seconds: The lease frees itself after this many seconds (a killed process never holds
                a slot for ever); set it above the longest search.
            wait_seconds: How long to wait for a slot; 0 tries once.

        Returns:
            The lease, or None when no slot freed in time.

        Raises:
            ConfigurationError: Invalid ``provider`` or ``scope``, ``slots`` below 1, ``lease_seconds``
                not positive or ``wait_seconds`` negative.
        """
        check_provider(provider)
        check_scope(scope)
        if slots < 1 or not lease_seconds > 0 or not wait_seconds >= 0:
            raise ConfigurationError(
                "acquire() needs slots >= 1, lease_seconds > 0 and wait_seconds >= 0, got "
                f"{slots}, {lease_seconds}, {wait_seconds}"
            )
        deadline = anyio.current_time() + wait_seconds
        while True:
            now = self._now()
            token = secrets.token_hex(16)
            expires_at = now + timedelta(seconds=lease_seconds)
            if await self._try_acquire(
                provider, scope, token=token, slots=slots, expires_at=expires_at, now=now
            ):
                return Lease(provider=provider, scope=scope, token=token, expires_at=expires_at)
            left = deadline - anyio.current_time()
            if left <= 0:
                return None
            await anyio.sleep(min(left, random.uniform(*_POLL_SECONDS)))  # noqa: S311 - jitter, not a secret

    async def release(self, lease: Lease) -> None:
        """Give the slot back; releasing twice, or after expiry, does nothing."""
        await self._release_token(lease.provider, lease.scope, lease.token)

    async def snapshot(self, provider: str | None = None) -> list[Quota]:
        """Every known window of every scope (of ``provider``), estimated now, sorted by provider, scope
        and window.

        ``source`` is ``ledger`` when local successes (or ageing) changed the upstream's numbers;
        ``resets_at`` is when a spent window admits again, else when it next frees a unit; a scope with
        only a cooldown or a concurrency appears once with no counts. ``raw`` holds ``{"scope_id": ...}``
        (the hashed scope, to tell two keys apart).

        Raises:
            ConfigurationError: An invalid ``provider`` name.
        """
        if provider is not None:
            check_provider(provider)
        now = self._now()
        quotas: list[Quota] = []
        for name, scope in sorted(await self._scopes(provider)):
            record = await self._load(name, scope)
            kind = scope.partition(":")[0]
            common = {
                "provider": name,
                "scope": kind if kind in _SCOPE_KINDS else "guest",
                "concurrency": record.concurrency,
                "cooldown_until": record.cooldown_until
                if record.cooldown_until and record.cooldown_until > now
                else None,
                "raw": {"scope_id": scope},
            }
            for window in WINDOWS:
                truth = record.truths.get(window)
                if truth is None:
                    continue
                est = await self._estimate(name, scope, truth, now)
                quotas.append(
                    Quota(
                        **common,
                        window=window,
                        limit=truth.limit,
                        used=est.used,
                        remaining=est.remaining,
                        resets_at=est.spent_until or est.resets_at,
                        source=est.source,
                        observed_at=truth.observed_at if est.source != "ledger" else now,
                    )
                )
            if not record.truths and (common["cooldown_until"] or record.concurrency):
                quotas.append(Quota(**common, source="ledger", observed_at=now))
        return quotas

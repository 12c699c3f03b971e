"""``memory://``: the ledger in this process's memory, forgotten at exit.

Concurrency slots are shared by the tasks (and threads) of this process only. Every primitive is a few
dictionary operations under a :class:`threading.Lock` and never awaits inside it, so it is safe for
asyncio tasks and for several event loops in several threads alike, and never blocks a loop for long.
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import replace
from typing import TYPE_CHECKING

from anisearch._ledger._stored import ScopeRecord, StoredLedger
from anisearch._ledger._windows import horizon

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from anisearch._ledger._stored import Clock
    from anisearch._ledger._windows import EventKind, Truth

__all__ = ["MemoryLedger"]

_Key = tuple[str, str]


class MemoryLedger(StoredLedger):
    """The ledger in process memory (``memory://``).

    Args:
        timezone: Zone of the calendar ``day`` and ``month`` windows.
        clock: The current instant (default: the system clock).
    """

    def __init__(self, *, timezone: ZoneInfo, clock: Clock | None = None) -> None:
        super().__init__("memory://", timezone=timezone, clock=clock)
        self._lock = threading.Lock()
        self._records: dict[_Key, ScopeRecord] = {}
        self._log: dict[tuple[str, str, EventKind], list[datetime]] = {}
        self._leases: dict[_Key, dict[str, datetime]] = {}

    async def _load(self, provider: str, scope: str) -> ScopeRecord:
        with self._lock:
            record = self._records.get((provider, scope), ScopeRecord())
            return replace(record, truths=dict(record.truths))

    async def _scopes(self, provider: str | None) -> list[tuple[str, str]]:
        with self._lock:
            return [key for key in self._records if provider is None or key[0] == provider]

    async def _put_truths(self, provider: str, scope: str, truths: Sequence[Truth]) -> None:
        with self._lock:
            record = self._records.setdefault((provider, scope), ScopeRecord())
            for truth in truths:
                old = record.truths.get(truth.window)
                if old is None or old.observed_at <= truth.observed_at:
                    record.truths[truth.window] = truth
            oldest = min(truth.observed_at for truth in record.truths.values())
            for kind in ("search", "request"):
                log = self._log.get((provider, scope, kind))
                if log:
                    del log[: bisect.bisect_left(log, oldest)]

    async def _put_cooldown(self, provider: str, scope: str, until: datetime, reason: str) -> None:
        with self._lock:
            record = self._records.setdefault((provider, scope), ScopeRecord())
            if record.cooldown_until is None or record.cooldown_until < until:
                record.cooldown_until, record.cooldown_reason = until, reason

    async def _put_concurrency(self, provider: str, scope: str, concurrency: int) -> None:
        with self._lock:
            self._records.setdefault((provider, scope), ScopeRecord()).concurrency = concurrency

    async def _add_event(
        self, provider: str, scope: str, kind: EventKind, at: datetime, now: datetime
    ) -> None:
        with self._lock:
            log = self._log.setdefault((provider, scope, kind), [])
            bisect.insort(log, at)
            del log[: bisect.bisect_left(log, now - horizon(kind))]

    async def _events(
        self, provider: str, scope: str, kind: EventKind, since: datetime, need: Callable[[int], int]
    ) -> tuple[int, list[datetime]]:
        with self._lock:
            log = self._log.get((provider, scope, kind), [])
            first = bisect.bisect_left(log, since)
            count = len(log) - first
            return count, log[first : first + need(count)]

    async def _try_acquire(
        self, provider: str, scope: str, *, token: str, slots: int, expires_at: datetime, now: datetime
    ) -> bool:
        with self._lock:
            held = self._leases.setdefault((provider, scope), {})
            for expired in [held_token for held_token, end in held.items() if end <= now]:
                del held[expired]
            record = self._records.get((provider, scope))
            limit = record.concurrency if record is not None and record.concurrency else slots
            if len(held) >= limit:
                return False
            held[token] = expires_at
            return True

    async def _release_token(self, provider: str, scope: str, token: str) -> None:
        with self._lock:
            self._leases.get((provider, scope), {}).pop(token, None)

    async def clear(self) -> None:
        """Forget every truth, event, cooldown and lease."""
        with self._lock:
            self._records.clear()
            self._log.clear()
            self._leases.clear()

"""The ledger interface: what every backend (memory, SQLite, Redis) must do.

A *scope* is ``(provider, scope_id)``: ``scope_id`` is ``"guest"`` or ``"<kind>:<keyed hash>"`` (never the
key itself; see :func:`scope_id`). Per scope the ledger keeps:

- windows: for each window kind (``rolling-24h``, ``day``, ``month``, ``minute``, ``hour``) the limit and
  the used count as last told by the upstream (a "truth" with its ``observed_at``), plus the local
  successes since then (timestamps), so the estimate between truths is ``used_at_truth + local``;
- a cooldown (until, reason);
- concurrency leases (slot holders with an expiry, so a killed process never holds a slot).

All datetimes are timezone-aware UTC. All durations are seconds.
"""

from __future__ import annotations

import abc
import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    from anisearch._models import Quota, QuotaScope

__all__ = ["Admission", "Lease", "Ledger", "scope_id"]

_SCOPE_KEY = b"anisearch ledger scope v1"


def scope_id(scope: QuotaScope, secret: str | None) -> str:
    """The ledger's name for a credential: ``"guest"``, or the scope kind and a keyed BLAKE2b hash.

    The same secret gives the same id on every machine (so a Redis ledger is shared by a fleet), and the
    secret cannot be read back from it.
    """
    if secret is None:
        return scope
    digest = hashlib.blake2b(secret.encode(), key=_SCOPE_KEY, digest_size=10).hexdigest()
    return f"{scope}:{digest}"


@dataclass(frozen=True, slots=True)
class Admission:
    """The ledger's verdict on sending one more search now.

    Attributes:
        allowed: True when no known window is spent and no cooldown runs.
        reason: Why not, one line (``"quota exhausted until 2026-11-22T09:14Z"``), or None.
        until: When it may be allowed again, when known.
    """

    allowed: bool
    reason: str | None = None
    until: datetime | None = None


@dataclass(frozen=True, slots=True)
class Lease:
    """A held concurrency slot. Give it back with :meth:`Ledger.release`; it expires by itself anyway."""

    provider: str
    scope: str
    token: str
    expires_at: datetime


class Ledger(abc.ABC):
    """Quota, rate, cooldown and concurrency state per (provider, scope). Safe across processes
    (SQLite) and machines (Redis) where the backend says so."""

    url: str
    """The ledger URL it was opened from (``memory://``, ``sqlite:///path``, ``redis://host:port/db``)."""

    @abc.abstractmethod
    async def observe(self, scope: str, quotas: Sequence[Quota]) -> None:
        """Record what the upstream said (a truth per window). Resets the local count of that window.

        A truth counts the local successes recorded at or after its ``observed_at``, so a count the upstream
        took *before* the search it answers is observed first and the success recorded after it. A
        ``Quota`` with ``cooldown_until`` also sets the scope's cooldown; its ``concurrency`` replaces the
        ``slots`` of :meth:`acquire`; its ``raw`` is never stored.
        """

    @abc.abstractmethod
    async def record_success(self, provider: str, scope: str, *, at: datetime | None = None) -> None:
        """Count one successful search (HTTP 200) against every search-counting window of the scope."""

    @abc.abstractmethod
    async def record_request(self, provider: str, scope: str, *, at: datetime | None = None) -> None:
        """Count one request (any outcome) against the scope's ``minute`` rate windows."""

    @abc.abstractmethod
    async def admit(self, provider: str, scope: str, *, now: datetime | None = None) -> Admission:
        """Whether one more search may be sent now, and if not why and until when."""

    @abc.abstractmethod
    async def set_cooldown(self, provider: str, scope: str, until: datetime, reason: str) -> None:
        """Do not admit the scope before ``until`` (keeps the later of two cooldowns)."""

    @abc.abstractmethod
    async def mark_exhausted(
        self, provider: str, scope: str, *, window: str | None = None, until: datetime | None = None
    ) -> None:
        """The upstream said the quota is spent: set used = limit in ``window`` (or every search window)."""

    @abc.abstractmethod
    async def acquire(
        self, provider: str, scope: str, *, slots: int, lease_seconds: float, wait_seconds: float
    ) -> Lease | None:
        """Take one of ``slots`` concurrency slots, waiting up to ``wait_seconds``; None if none freed.

        The concurrency last observed from the upstream (``Quota.concurrency``) replaces ``slots``. The
        lease expires after ``lease_seconds`` even if never released.
        """

    @abc.abstractmethod
    async def release(self, lease: Lease) -> None:
        """Give the slot back (a no-op when it already expired)."""

    @abc.abstractmethod
    async def snapshot(self, provider: str | None = None) -> list[Quota]:
        """Every known window of every scope (of one provider), as ``Quota`` with the current estimate."""

    @abc.abstractmethod
    async def clear(self) -> None:
        """Forget everything (tests, ``anisearch quota --reset``)."""

    async def aclose(self) -> None:  # noqa: B027 - an optional hook, not an abstract method
        """Release connections and files."""

"""``memory://``: the ledger in this process's memory, shared by every client of the process.

One :class:`MemoryLedger` per process (and zone) is handed out by ``open_ledger``, so ``search()``,
``asearch()`` and every ``Client``/``AsyncClient`` count against the same windows and slots and never
collide with each other. Every step is a few dictionary operations under a :class:`threading.Lock` and
never awaits inside it, so it is safe for tasks and threads alike; waiters are woken by their own loops.
"""

from __future__ import annotations

import contextlib
import threading
from typing import TYPE_CHECKING, Any

import anyio

from anisearch._ledger import _logic
from anisearch._ledger._base import Ledger, Nap
from anisearch._ledger._units import WAITERS, MemoryUnits

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence
    from zoneinfo import ZoneInfo

    from anisearch._ledger._base import Clock
    from anisearch._ledger._logic import ReserveRequest, ScopeView, SettleRequest, WindowArgs

__all__ = ["MemoryLedger"]

_Key = tuple[str, str]


class MemoryLedger(Ledger):
    """The ledger in process memory (``memory://``).

    Args:
        timezone: Zone of calendar windows that do not name their own.
        clock: The current instant (default: the system clock).
    """

    def __init__(self, *, timezone: ZoneInfo, clock: Clock | None = None) -> None:
        super().__init__("memory://", timezone=timezone, clock=clock)
        self._lock = threading.Lock()
        self._states: dict[_Key, tuple[_logic.ScopeState, MemoryUnits]] = {}

    def _scope(self, provider: str, scope: str) -> tuple[_logic.ScopeState, MemoryUnits]:
        return self._states.setdefault((provider, scope), (_logic.ScopeState(), MemoryUnits()))

    async def _reserve(self, provider: str, scope: str, request: ReserveRequest) -> Any:
        with self._lock:
            return _logic.reserve(*self._scope(provider, scope), request)

    async def _settle(self, provider: str, scope: str, request: SettleRequest) -> None:
        with self._lock:
            freed = _logic.settle(*self._scope(provider, scope), request)
        if freed:
            WAITERS.notify((id(self), provider, scope))

    async def _free_slot(self, provider: str, scope: str, token: str) -> None:
        with self._lock:
            freed = _logic.free_slot(self._scope(provider, scope)[0], token)
        if freed:
            WAITERS.notify((id(self), provider, scope))

    async def _wake(self, provider: str, scope: str) -> None:
        WAITERS.notify((id(self), provider, scope))

    async def _renew(
        self, provider: str, scope: str, token: str, lease_until: int, holder: str | None = None
    ) -> bool:
        with self._lock:
            held = self._scope(provider, scope)[0].held.get(token)
            if held is None:
                return False
            held.lease_until = lease_until
            if holder is not None:
                held.holder = holder
            return True

    async def _inspect(self, provider: str, scope: str, now: int, windows: Sequence[WindowArgs]) -> ScopeView:
        with self._lock:
            return _logic.inspect(*self._scope(provider, scope), now, tuple(windows))

    async def _scopes(self, provider: str | None) -> list[tuple[str, str]]:
        with self._lock:
            return [key for key in self._states if provider is None or key[0] == provider]

    async def _clear(self, provider: str | None) -> None:
        with self._lock:
            for key in [key for key in self._states if provider is None or key[0] == provider]:
                del self._states[key]

    @contextlib.asynccontextmanager
    async def listening(self, provider: str, scope: str) -> AsyncIterator[Nap]:
        """Listen for slots freed in this process from now on (see :meth:`Ledger.listening`)."""
        with WAITERS.watching((id(self), provider, scope)) as woken:

            async def nap(seconds: float) -> None:
                with anyio.move_on_after(seconds):
                    await woken.wait()
                woken.clear()

            yield Nap(provider, scope, nap)

    async def wait(self, provider: str, scope: str, seconds: float) -> None:
        """Return when a reservation of the scope is settled in this process, or after ``seconds``."""
        await WAITERS.wait((id(self), provider, scope), seconds)

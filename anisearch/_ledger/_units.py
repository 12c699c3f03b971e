"""Units in memory (the ``memory://`` backend), and wake-ups for the tasks waiting for a slot."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import threading
from collections.abc import Hashable, Iterator

import anyio

__all__ = ["WAITERS", "MemoryUnits", "Waiters"]


class MemoryUnits:
    """The :class:`~anisearch._ledger._logic.Units` of one scope, in sorted lists (one per window)."""

    def __init__(self) -> None:
        self._sorted: dict[str, list[tuple[int, str]]] = {}
        self._leave: dict[str, dict[str, int]] = {}
        self._pending: dict[str, set[str]] = {}

    def _lists(self, window: str) -> tuple[list[tuple[int, str]], dict[str, int], set[str]]:
        return (
            self._sorted.setdefault(window, []),
            self._leave.setdefault(window, {}),
            self._pending.setdefault(window, set()),
        )

    def purge(self, window: str, now: int) -> int:
        rows, leave, pending = self._lists(window)
        cut = bisect.bisect_right(rows, (now, "\U0010ffff"))
        for _, member in rows[:cut]:
            del leave[member]
            pending.discard(member)
        del rows[:cut]
        return cut

    def count(self, window: str) -> int:
        return len(self._lists(window)[0])

    def count_settled(self, window: str) -> int:
        rows, _, pending = self._lists(window)
        return len(rows) - len(pending)

    def count_before(self, window: str, instant: int) -> int:
        return bisect.bisect_left(self._lists(window)[0], (instant, ""))

    def count_settled_before(self, window: str, instant: int) -> int:
        _, leaves, pending = self._lists(window)
        return self.count_before(window, instant) - sum(1 for member in pending if leaves[member] < instant)

    def kth_leave(self, window: str, k: int) -> int | None:
        rows = self._lists(window)[0]
        return rows[k - 1][0] if 0 < k <= len(rows) else None

    def add(self, window: str, member: str, leave: int) -> None:
        rows, leaves, pending = self._lists(window)
        bisect.insort(rows, (leave, member))
        leaves[member] = leave
        pending.add(member)

    def settle(self, window: str, member: str, leave: int | None) -> None:
        rows, leaves, pending = self._lists(window)
        if member not in pending:
            return
        pending.discard(member)
        if leave is not None and leave != leaves[member]:
            self.remove(window, member)
            bisect.insort(rows, (leave, member))
            leaves[member] = leave

    def remove(self, window: str, member: str) -> None:
        rows, leaves, pending = self._lists(window)
        if member not in leaves:
            return
        rows.pop(bisect.bisect_left(rows, (leaves.pop(member), member)))
        pending.discard(member)

    def drop_oldest_settled(self, window: str, k: int) -> None:
        rows, leaves, pending = self._lists(window)
        doomed = [member for _, member in rows if member not in pending][:k]
        for member in doomed:
            self.remove(window, member)
        del leaves  # the rows were rebuilt through remove()


class Waiters:
    """Wake the tasks waiting on a key, from any thread and any event loop of this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[Hashable, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}

    async def wait(self, key: Hashable, seconds: float) -> None:
        """Return on :meth:`notify` of ``key`` or after ``seconds``."""
        with self.watching(key) as event, anyio.move_on_after(seconds):
            await event.wait()

    @contextlib.contextmanager
    def watching(self, key: Hashable) -> Iterator[asyncio.Event]:
        """An event of the running loop that :meth:`notify` of ``key`` sets while the context lasts."""
        entry = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            self._waiting.setdefault(key, set()).add(entry)
        try:
            yield entry[1]
        finally:
            with self._lock:
                waiting = self._waiting.get(key)
                if waiting is not None:
                    waiting.discard(entry)
                    if not waiting:
                        del self._waiting[key]

    def notify(self, key: Hashable) -> None:
        """Wake every task waiting on ``key``: at once on the calling task's own loop (so a task that
        yields right after runs behind the woken ones), and through ``call_soon_threadsafe`` elsewhere."""
        with self._lock:
            entries = list(self._waiting.get(key, ()))
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # called from a worker thread
            running = None
        for loop, event in entries:
            if loop is running:
                event.set()
                continue
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # that loop has closed; its waiter is gone
                continue


WAITERS = Waiters()
"""The process's waiters: every ledger of the process notifies through it."""

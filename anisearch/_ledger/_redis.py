"""``redis://host:port/db``: the ledger in Redis, shared by a fleet of workers on many machines.

Needs the ``redis`` extra (``pip install 'anisearch-gateway[redis]'``). Reserve, settle, free, renew and
inspect are one Lua script call each (``_redis_scripts.py``): atomic on the server, one round trip. A search
waiting for a slot blocks on ``BLPOP`` of the scope's wake list, which every settle pushes to, so it
wakes as soon as a slot frees anywhere in the fleet. Keys live under ``anisearch:ledger:``.

Times come from the workers' clocks (keep them in sync with NTP), so one injected clock drives a test.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from anisearch._exceptions import LedgerError
from anisearch._ledger import _redis_scripts
from anisearch._ledger._base import Ledger
from anisearch._ledger._logic import Refusal, Reservation, ScopeView, Stale, WindowView
from anisearch._ledger._units import WAITERS

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from zoneinfo import ZoneInfo

    from anisearch._ledger._base import Clock
    from anisearch._ledger._logic import ReserveRequest, SettleRequest, WindowArgs

__all__ = ["RedisLedger"]

PREFIX = "anisearch:ledger:"
_VIEW_FIELDS = 9


def _text(value: int | None) -> str:
    return "" if value is None else str(value)


def _int(value: Any) -> int | None:
    return None if value in (None, "") else int(value)


class RedisLedger(Ledger):
    """The ledger in a Redis database (``redis://host:port/db``, ``rediss://`` for TLS).

    Args:
        client: A ``redis.asyncio.Redis`` with ``decode_responses=True``; the ledger closes it.
        url: The URL it was opened from (password masked).
        timezone: Zone of calendar windows that do not name their own.
        clock: The current instant (default: the system clock).
    """

    def __init__(self, client: Any, *, url: str, timezone: ZoneInfo, clock: Clock | None = None) -> None:
        super().__init__(url, timezone=timezone, clock=clock)
        # Any, not redis.asyncio.Redis: redis-py's own annotations and the separate types-redis stubs
        # disagree (generic or not, aclose, return unions), and either may be what a checker finds.
        self._redis: Any = client
        self._scripts = {
            name: client.register_script(getattr(_redis_scripts, name))
            for name in ("RESERVE", "SETTLE", "FREE", "RENEW", "INSPECT")
        }
        self._listening: set[tuple[int, str, str]] = set()

    async def _run(self, script: str, provider: str, scope: str, args: list[Any]) -> Any:
        with self._unusable():
            return await self._scripts[script](keys=[PREFIX], args=[f"{provider}|{scope}", *args])

    @contextlib.contextmanager
    def _unusable(self) -> Iterator[None]:
        """Redis failing (down, refusing, a full memory) as :class:`LedgerError`."""
        from redis.exceptions import RedisError

        try:
            yield
        except (RedisError, OSError) as exc:
            raise LedgerError(
                f"the quota ledger {self.url} cannot be used ({type(exc).__name__}: {exc}); check that Redis "
                "runs there, or set ANISEARCH_LEDGER to another ledger",
                ledger=self.url,
            ) from exc

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._redis.aclose()

    async def _reserve(self, provider: str, scope: str, request: ReserveRequest) -> Any:
        args: list[Any] = [
            request.now,
            request.token,
            request.holder,
            request.lease_until,
            request.slots,
            int(request.take_slot),
            int(request.trust_estimate),
            len(request.dead_holders),
            *sorted(request.dead_holders),
            len(request.windows),
        ]
        for window in request.windows:
            args += [
                window.name,
                window.kind,
                window.counts,
                _text(window.limit),
                int(window.reported),
                window.leave,
            ]
        reply = await self._run("RESERVE", provider, scope, args)
        if reply[0] == "ok":
            return Reservation(request.token, request.lease_until)
        if reply[0] == "stale":
            return Stale(reply[1])
        holders = tuple(reply[5].split()) if reply[5] else ()
        return Refusal(reply[1], int(reply[2]), reply[3], reply[4] or None, holders)

    async def _settle(self, provider: str, scope: str, request: SettleRequest) -> None:
        until, reason, kind = request.cooldown or (None, "", "")
        args: list[Any] = [
            request.now,
            request.token,
            request.outcome,
            request.busy or "",
            request.busy_jitter,
            _text(request.concurrency),
            _text(request.priority),
            _text(until),
            reason,
            kind,
            len(request.windows),
        ]
        for window in request.windows:
            args += [window.name, window.counts, window.leave]
        args.append(len(request.truths))
        for fact in request.truths:
            args += [
                fact.window,
                fact.observed_at,
                _text(fact.limit),
                _text(fact.used),
                _text(fact.remaining),
                fact.unknown_leave,
                fact.resets_at,
                fact.source,
                fact.since_leave,
            ]
        args.append(len(request.blocks))
        for name, blocked in request.blocks:
            args += [name, blocked]
        if await self._run("SETTLE", provider, scope, args):  # it freed a slot
            WAITERS.notify((id(self), provider, scope))

    async def _free_slot(self, provider: str, scope: str, token: str) -> None:
        if await self._run("FREE", provider, scope, [token]):
            WAITERS.notify((id(self), provider, scope))

    async def _renew(self, provider: str, scope: str, token: str, lease_until: int) -> bool:
        return bool(await self._run("RENEW", provider, scope, [token, lease_until]))

    async def _inspect(self, provider: str, scope: str, now: int, windows: Sequence[WindowArgs]) -> ScopeView:
        args: list[Any] = [now, len(windows)]
        for window in windows:
            args += [window.name, _text(window.limit)]
        reply = await self._run("INSPECT", provider, scope, args)
        head, rows = reply[:5], reply[5:]
        views = []
        for start in range(0, len(rows), _VIEW_FIELDS):
            name, limit, declared, used, nxt, spent, truth_at, source, blocked = rows[
                start : start + _VIEW_FIELDS
            ]
            views.append(
                WindowView(
                    name=name,
                    limit=_int(limit),
                    declared=_int(declared),
                    used=int(used),
                    next_leave=_int(nxt),
                    spent_until=_int(spent),
                    truth_at=_int(truth_at),
                    source=source,
                    blocked_until=int(blocked or 0),
                )
            )
        return ScopeView(
            windows=tuple(views),
            cooldown_until=int(head[0] or 0),
            cooldown_reason=head[1],
            concurrency=_int(head[2]),
            priority=_int(head[3]),
            held=int(head[4]),
        )

    async def _scopes(self, provider: str | None) -> list[tuple[str, str]]:
        with self._unusable():
            members: set[str] = await self._redis.smembers(f"{PREFIX}scopes")
        pairs = [tuple(member.split("|", 1)) for member in members]
        return [(p, s) for p, s in pairs if provider is None or p == provider]

    async def _clear(self, provider: str | None) -> None:
        with self._unusable():
            pattern = f"{PREFIX}*" if provider is None else f"{PREFIX}*:{provider}|*"
            keys = [key async for key in self._redis.scan_iter(match=pattern, count=500)]
            for start in range(0, len(keys), 500):
                await self._redis.delete(*keys[start : start + 500])
            if provider is None:
                await self._redis.delete(f"{PREFIX}scopes")
            else:
                for member in [
                    m for m in await self._redis.smembers(f"{PREFIX}scopes") if m.startswith(f"{provider}|")
                ]:
                    await self._redis.srem(f"{PREFIX}scopes", member)

    async def wait(self, provider: str, scope: str, seconds: float) -> None:
        """Return when any worker settles a reservation of the scope, or after ``seconds``.

        One task per process and scope blocks on the wake list; the others wait for it in memory, so a
        thousand waiting searches hold one Redis connection, not a thousand.
        """
        from redis.exceptions import RedisError

        key = (id(self), provider, scope)
        if key in self._listening:
            await WAITERS.wait(key, seconds)
            return
        self._listening.add(key)
        try:
            # At most a second per call: redis-py gives up reading a socket after a few seconds, and an
            # early return only costs the waiter one more reserve.
            await self._redis.blpop(
                [f"{PREFIX}wake:{provider}|{scope}"], timeout=min(max(seconds, 0.01), 1.0)
            )
        except (RedisError, OSError) as exc:
            raise LedgerError(f"the quota ledger {self.url} cannot be used ({exc})", ledger=self.url) from exc
        finally:
            self._listening.discard(key)
            WAITERS.notify(key)

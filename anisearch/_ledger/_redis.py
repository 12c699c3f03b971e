"""``redis://host:port/db``: the ledger in Redis, shared by a fleet of workers on many machines.

Needs the ``redis`` extra (``pip install 'anisearch-gateway[redis]'``). Reserve, settle, free, renew and
inspect are one Lua script call each (``_redis_scripts.py``): atomic on the server, one round trip. A search
refused a slot is queued (``reserve(waiting=nap)``): the settle or free that frees a slot anywhere in the
fleet reserves it for the search queued first, in the same script, and announces it on that search's own
list, where its nap blocks (``BLPOP``); the search then sends at once, without a reserve of its own. A
reserve that finds slots freed without such a step (a lapsed lease, a dead holder) hands them to the queue
first. A search not queued blocks on the scope's wake list instead. Keys live under ``anisearch:ledger:``.

Times are the Redis server's (``TIME``, measured about once a minute): a worker whose own clock runs ahead
(no NTP, a resumed VM) neither takes a live slot as lapsed nor ages the fleet's counted searches out of a
window. A ledger given a clock (a test, a simulation) keeps that clock instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import anyio

from anisearch._exceptions import LedgerError
from anisearch._ledger import _redis_scripts
from anisearch._ledger._base import QUEUE_SECONDS, Ledger, Nap
from anisearch._ledger._logic import Refusal, Reservation, ScopeView, Stale, WindowView
from anisearch._ledger._units import WAITERS
from anisearch._ledger._windows import to_us
from anisearch._limits import remaining_seconds

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
    from zoneinfo import ZoneInfo

    from anisearch._ledger._base import Clock, Ticket
    from anisearch._ledger._logic import ReserveRequest, SettleRequest, WindowArgs

__all__ = ["RedisLedger"]

logger = logging.getLogger("anisearch")

PREFIX = "anisearch:ledger:"
_VIEW_FIELDS = 9


def _text(value: int | None) -> str:
    return "" if value is None else str(value)


def _int(value: Any) -> int | None:
    return None if value in (None, "") else int(value)


def _queued(request: ReserveRequest) -> str:
    """The RESERVE script's last argument: '' or the search as the script reserves a freed slot for it
    (``grant_or_wake``): its lease and windows relative to that instant, and how long it stays queued."""
    if not request.queue_until:
        return ""
    return json.dumps(
        {
            "holder": request.holder,
            "lease": request.lease_until - request.now,
            "slots": request.slots,
            "trust": request.trust_estimate,
            "valid_until": request.queue_until,
            "windows": [
                {
                    "name": w.name,
                    "kind": w.kind,
                    "counts": w.counts,
                    "limit": _text(w.limit),
                    "reported": w.reported,
                    "leave": w.leave,
                    "span": w.span,
                }
                for w in request.windows
            ],
        },
        separators=(",", ":"),
    )


class _QueuedNap(Nap):
    """:class:`Nap` for the Redis ledger: a queued search blocks on ``g:<ps>:<token>`` too, where the
    script that freed a slot announces the instant it reserved it for the search (or '' to ask again)."""

    __slots__ = ("_ledger",)

    def __init__(
        self, ledger: RedisLedger, provider: str, scope: str, wait: Callable[[float], Awaitable[None]]
    ) -> None:
        super().__init__(provider, scope, wait)
        self._ledger = ledger

    async def __call__(self, seconds: float) -> Ticket | None:
        if self.token is None:
            return await super().__call__(seconds)
        ps = f"{self.provider}|{self.scope}"
        handed = f"{PREFIX}g:{ps}:{self.token}"
        nap = min(max(seconds, 0.01), 1.0)
        reply = None
        with self._ledger._unusable():  # noqa: SLF001 - the nap of this ledger
            async with _waking_on_a_lost_connection(nap):
                reply = await self._ledger._redis.blpop([handed, f"{PREFIX}wake:{ps}"], timeout=nap)  # noqa: SLF001 - at most a second, as RedisLedger.wait
        if reply is None:
            return None
        if reply[0] != handed:  # a slot freed for the searches not queued: they may go on too
            WAITERS.notify((id(self._ledger), self.provider, self.scope))
            return None
        return self._ticket(int(reply[1])) if reply[1] else None


def _hint(exc: BaseException) -> str:
    """What to do about a Redis failure, by its kind (redis-py's error classes, by name: older versions
    lack some)."""
    kinds = {kind.__name__ for kind in type(exc).__mro__}
    if kinds & {"AuthenticationError", "AuthenticationWrongNumberOfArgsError"}:
        return "check the user and password in ANISEARCH_LEDGER"
    if kinds & {"AuthorizationError", "NoPermissionError"}:
        return "the Redis user lacks a permission the ledger needs (scripts, TIME, anisearch:ledger: keys)"
    if "ReadOnlyError" in kinds:
        return "that Redis is a read-only replica: point ANISEARCH_LEDGER at its primary"
    if "OutOfMemoryError" in kinds:
        return (
            "that Redis is out of memory (maxmemory): give the ledger an instance that never evicts its keys"
        )
    return "check that Redis runs there, or set ANISEARCH_LEDGER to another ledger"


def _never_connected(exc: LedgerError) -> bool:
    """Whether the step failed opening its connection (refused, unreachable, a name that does not resolve):
    its command never reached Redis. redis-py says so only in its message ("Error 111 connecting to ...",
    "Timeout connecting to server")."""
    from redis.exceptions import ConnectionError as LostConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    cause = exc.__cause__
    return isinstance(cause, LostConnectionError | RedisTimeoutError) and "connecting to" in str(cause)


@contextlib.asynccontextmanager
async def _waking_on_a_lost_connection(nap: float) -> AsyncIterator[None]:
    """A wait whose connection was lost (Redis restarting, a network blip) ends as if it timed out, after
    ``nap`` seconds: the waiting search then asks the ledger again, which fails only if Redis is still
    away (a waiting search has sent nothing), and not at the first blip."""
    from redis.exceptions import ConnectionError as LostConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    try:
        yield
    except (LostConnectionError, RedisTimeoutError, OSError):
        await anyio.sleep(nap)


CLOCK_CHECK_SECONDS = 60.0
"""How often a worker reads the Redis server's clock, seconds."""
CLOCK_RETRY_SECONDS = 1.0
"""How soon it reads it again when a reading failed or was imprecise, seconds."""
CLOCK_STEP_SECONDS = 1.0
"""A step of this machine's wall clock against its monotonic one past which the server's is read again."""
CLOCK_ROUND_TRIP_SECONDS = 0.05
"""A reading whose round trip took longer than this (a busy event loop) is imprecise, seconds."""
GRACE_SECONDS = 1.0
"""The least a reservation is given to be answered, seconds, even when the search's deadline has passed or
is about to: a Redis that answers does so in a millisecond, or a few hundred on a loaded machine whose event
loop runs many searches, and a reservation cut off ends the search with a LedgerError. One cut off is given
up (within :data:`GIVE_UP_SECONDS`, or later by a task of its own) rather than left to hold its slot until
its lease lapses."""
GIVE_UP_SECONDS = 0.25
"""How long a search cut off waits for its reservation to be given up before it leaves that to a task."""


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
            for name in ("RESERVE", "SETTLE", "FREE", "RENEW", "INSPECT", "WITHDRAW")
        }
        self._follow_server_clock = clock is None  # a given clock (a test's) is kept as it is
        self._server_time: tuple[datetime, float] | None = None  # (the server's instant, time.monotonic())
        self._next_check = -math.inf  # time.monotonic() when the server's clock is to be asked again
        self._wall_at_reading: tuple[datetime, float] | None = None  # this machine's clock, and monotonic
        self._checking = asyncio.Lock()  # one check at a time: the others wait for its answer
        self._time_refused = False  # a TIME refused (a proxy's) was said once
        self._listening: set[tuple[int, str, str]] = set()
        self._giving_up: set[asyncio.Task[None]] = set()
        """Tasks giving up reservations cut off at a deadline or whose reply was lost (see
        :meth:`_reserve_by_deadline`)."""

    hands_over = True

    def now(self) -> datetime:
        """The ledger's current instant: the Redis server's (its ``TIME`` when last asked, plus this
        machine's monotonic time since: a step of this machine's clock changes nothing), or the clock it
        was given; this machine's clock until the server's was first read."""
        if self._server_time is None:
            return super().now()
        instant, at = self._server_time
        return instant + timedelta(seconds=time.monotonic() - at)

    def rebased(self, moment: datetime) -> datetime:
        """An instant read on this machine's clock (an upstream's answer, stamped by its provider) on the
        ledger's clock."""
        if self._server_time is None:
            return moment
        return moment + (self.now() - super().now())

    async def _sync_clock(self) -> None:
        """Read the Redis server's clock (``TIME``) every :data:`CLOCK_CHECK_SECONDS`, at once when this
        machine's wall clock stepped against its monotonic one (an NTP step; a resumed VM, whose monotonic
        clock stood still), or again after a second when the last reading failed or was imprecise (a round
        trip over :data:`CLOCK_ROUND_TRIP_SECONDS`: a busy event loop). Searches arriving meanwhile wait
        for the reading in progress; until a first one succeeds, each search tries. A reading takes at most
        :data:`GRACE_SECONDS` (a later one no more than what is left of the search's deadline); one that
        fails keeps the last one (the step after says what is wrong with Redis)."""
        if not self._follow_server_clock or not self._clock_due():
            return
        async with self._checking:
            if not self._clock_due():  # read while this search waited
                return
            # None while the reading below has no answer: cancelled, or past its bound, with no reading
            # before it, the next search reads the clock itself
            next_check: float | None = None
            # a first reading gets its second however late the search is (every step until it is read runs
            # on this machine's clock); a later one no more than what is left of the deadline
            bound = GRACE_SECONDS if self._server_time is None else min(remaining_seconds(), GRACE_SECONDS)
            try:
                with anyio.move_on_after(max(bound, 0.0)):
                    with self._unusable():
                        before = time.monotonic()
                        seconds, micros = await self._redis.time()
                        after = time.monotonic()
                    instant = datetime.fromtimestamp(int(seconds), UTC) + timedelta(microseconds=int(micros))
                    round_trip, middle = after - before, (before + after) / 2
                    precise = round_trip <= CLOCK_ROUND_TRIP_SECONDS
                    if precise or self._further_off_than(instant, middle, round_trip):
                        self._server_time = (instant, middle)
                    next_check = CLOCK_CHECK_SECONDS if precise else CLOCK_RETRY_SECONDS
            except LedgerError as exc:  # refused (a proxy without TIME), or Redis away
                self._said_time_refused(exc)
                next_check = CLOCK_RETRY_SECONDS
            finally:
                if next_check is not None or self._server_time is not None:
                    self._next_check = time.monotonic() + (next_check or CLOCK_RETRY_SECONDS)
                    self._wall_at_reading = (super().now(), time.monotonic())  # a step is acted on once

    def _further_off_than(self, instant: datetime, at: float, error: float) -> bool:
        """Whether the estimate of the server's time is further from ``instant`` (read at monotonic ``at``,
        within ``error`` seconds) than that reading's own error: a slow reading beats a wrong estimate (a
        resumed VM's, or none at all)."""
        if self._server_time is None:
            return True
        estimate, since = self._server_time
        return abs((estimate + timedelta(seconds=at - since) - instant).total_seconds()) > error

    def _clock_due(self) -> bool:
        """Whether the server's clock is to be read now: it is time, or this machine's wall clock moved
        otherwise than its monotonic clock since the last reading."""
        if time.monotonic() >= self._next_check:
            return True
        if self._wall_at_reading is None:
            return False
        wall, at = self._wall_at_reading
        drift = (super().now() - wall).total_seconds() - (time.monotonic() - at)
        return abs(drift) > CLOCK_STEP_SECONDS

    def _said_time_refused(self, exc: LedgerError) -> None:
        """A Redis (or a proxy in front of it) that refuses ``TIME`` while it runs the ledger's scripts
        leaves this machine's clock in use: say so once."""
        from redis.exceptions import ConnectionError as LostConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        if self._time_refused or isinstance(exc.__cause__, LostConnectionError | RedisTimeoutError | OSError):
            return
        self._time_refused = True
        logger.warning(
            "the quota ledger %s cannot read the Redis server's clock (%s); this machine's clock is used, "
            "so keep the clocks of the machines sharing it in step",
            self.url,
            exc.__cause__,
        )

    async def _run(self, script: str, provider: str, scope: str, args: list[Any]) -> Any:
        with self._unusable():
            return await self._scripts[script](keys=[PREFIX], args=[f"{provider}|{scope}", *args])

    async def _reserve_by_deadline(
        self, provider: str, scope: str, request: ReserveRequest, args: list[Any]
    ) -> Any:
        """The RESERVE script, given up when the current search's deadline passes (:class:`LedgerError`),
        not only after :data:`~anisearch._limits.REDIS_SECONDS`; at least :data:`GRACE_SECONDS` however
        little is left, so that a Redis that answers is never cut off.

        The script was sent: Redis may run it when it answers again, reserving a slot nobody settles. It is
        given up as soon as Redis answers (at once, or later by a task of its own, until its lease ends); so
        is one whose reply was lost (:class:`LedgerError`: a connection reset after Redis ran the script, a
        reply slower than the socket timeout), which may have reserved a slot and counted a search never
        sent."""
        try:
            with anyio.move_on_after(max(remaining_seconds(), GRACE_SECONDS)):
                return await self._run("RESERVE", provider, scope, args)
            failure = self._past_deadline()
        except LedgerError as exc:
            if _never_connected(exc):  # the script never left: nothing to give up (Redis is down)
                raise
            failure = exc
        with anyio.CancelScope(shield=True), anyio.move_on_after(GIVE_UP_SECONDS):
            if await self._give_up(provider, scope, request.token):
                raise failure
        lease_left = (request.lease_until - to_us(self.now())) / 1_000_000
        task = asyncio.get_running_loop().create_task(
            self._give_up_later(provider, scope, request.token, lease_left)
        )
        self._giving_up.add(task)
        task.add_done_callback(self._giving_up.discard)
        raise failure

    def _past_deadline(self) -> LedgerError:
        return LedgerError(
            f"the quota ledger {self.url} did not answer before the search's deadline; check that Redis "
            "runs there and answers, or set ANISEARCH_LEDGER to another ledger",
            ledger=self.url,
        )

    async def _give_up(self, provider: str, scope: str, token: str) -> bool:
        """Free the slot and leave the queue of the reservation ``token``, once Redis answers (a ping
        first: the cut-off script, written before, has run by the time the answer comes); whether it
        did."""
        from redis.exceptions import RedisError

        try:
            await self._redis.ping()
            await self._free_slot(provider, scope, token)
            await self._run("WITHDRAW", provider, scope, [token, to_us(self.now())])
        except (LedgerError, RedisError, OSError):
            return False
        return True

    async def _give_up_later(self, provider: str, scope: str, token: str, seconds: float) -> None:
        """:meth:`_give_up` every second or so while the reservation's lease lasts."""
        give_up_by = anyio.current_time() + seconds
        while anyio.current_time() < give_up_by:
            with anyio.move_on_after(1.0):
                if await self._give_up(provider, scope, token):
                    return
            await anyio.sleep(0.25)

    @contextlib.contextmanager
    def _unusable(self) -> Iterator[None]:
        """Redis failing (down, refusing, a full memory) as :class:`LedgerError`."""
        from redis.exceptions import RedisError

        try:
            yield
        except (RedisError, OSError) as exc:
            raise LedgerError(
                f"the quota ledger {self.url} cannot be used ({type(exc).__name__}: {exc}); {_hint(exc)}",
                ledger=self.url,
            ) from exc

    async def aclose(self) -> None:
        """Close the connection pool (reservations still to give up lapse with their lease)."""
        for task in list(self._giving_up):
            task.cancel()
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
        args.append(_queued(request))
        reply = await self._reserve_by_deadline(provider, scope, request, args)  # nothing sent yet
        if reply[0] == "ok":
            if len(reply) > 2:  # noqa: PLR2004 - handed over to this queued search: its lease and instant
                return Reservation(request.token, int(reply[2]), reserved_at=int(reply[3]))
            return Reservation(request.token, request.lease_until)
        if reply[0] == "stale":
            return Stale(reply[1])
        holders = tuple(reply[5].split()) if reply[5] else ()
        queued = len(reply) > 6  # noqa: PLR2004 - the seventh field says "queued"
        return Refusal(reply[1], int(reply[2]), reply[3], reply[4] or None, holders, queued=queued)

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
        if await self._run("FREE", provider, scope, [token, to_us(self.now())]):
            WAITERS.notify((id(self), provider, scope))

    async def _wake(self, provider: str, scope: str) -> None:
        WAITERS.notify((id(self), provider, scope))
        key = f"{PREFIX}wake:{provider}|{scope}"
        with self._unusable():  # as the scripts' wake_one()
            async with self._redis.pipeline(transaction=True) as pipe:
                await pipe.lpush(key, "1").ltrim(key, 0, 63).pexpire(key, 60000).execute()

    async def _renew(
        self, provider: str, scope: str, token: str, lease_until: int, holder: str | None = None
    ) -> bool:
        return bool(await self._run("RENEW", provider, scope, [token, lease_until, holder or ""]))

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

    @contextlib.asynccontextmanager
    async def listening(self, provider: str, scope: str) -> AsyncIterator[Nap]:
        """A nap that, for a search queued by :meth:`reserve` (``waiting=``), blocks on both the list its
        handed-over slot is announced on and the scope's wake list; on leaving, a search still queued is
        taken out of the queue, and a slot reserved for it that it never took is given up."""

        async def wait(seconds: float) -> None:
            await self.wait(provider, scope, seconds)

        nap = _QueuedNap(self, provider, scope, wait)
        try:
            yield nap
        finally:
            if nap.token is not None:
                token, nap.token = nap.token, None
                with anyio.CancelScope(shield=True):
                    try:
                        await self._run("WITHDRAW", provider, scope, [token, to_us(self.now())])
                    except LedgerError as exc:  # what ended the wait (a refusal, a cancellation) stands
                        logger.warning(
                            "%s: a search that stopped waiting stays queued for %g s more: %s",
                            provider,
                            QUEUE_SECONDS,
                            exc,
                        )

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
        nap = min(max(seconds, 0.01), 1.0)
        try:
            # At most a second per call: redis-py gives up reading a socket after a few seconds, and an
            # early return only costs the waiter one more reserve.
            async with _waking_on_a_lost_connection(nap):
                await self._redis.blpop([f"{PREFIX}wake:{provider}|{scope}"], timeout=nap)
        except (RedisError, OSError) as exc:
            raise LedgerError(f"the quota ledger {self.url} cannot be used ({exc})", ledger=self.url) from exc
        finally:
            self._listening.discard(key)
            WAITERS.notify(key)

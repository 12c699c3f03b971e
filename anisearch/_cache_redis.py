"""A result cache in Redis (``ANISEARCH_CACHE=redis://host:port/db``), and identical searches merged
across the processes and machines that share it.

A fleet of gateway replicas (or any processes) pointed at one Redis share their answers: a search one of
them paid for is free for all of them for ``ANISEARCH_CACHE_TTL`` seconds. Keys live under
``anisearch:cache:``; values are :class:`SearchResult` JSON with Redis's own expiry.

Merging (:class:`Flights`): identical searches in one process wait for the first (an ``anyio.Event``);
with a Redis cache, the first of the fleet also takes a lease ``anisearch:flight:<key>`` (``SET NX PX``,
renewed while it runs), and the others subscribe to ``anisearch:flight-done:<key>``, so they are woken
when it finishes and read its answer from the cache. A leader that fails or dies (its lease lapses)
lets the next waiter search. Like the cache, merging is disposable: when Redis fails, a search simply
runs on its own.
"""

from __future__ import annotations

import contextlib
import logging
import math
import secrets
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from anisearch._config import is_redis_url
from anisearch._limits import REDIS_SECONDS, remaining_seconds
from anisearch._models import SearchResult, fresh_previews

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from anisearch._config import Settings

__all__ = ["CacheStore", "Flights", "RedisResultCache", "merged_searches", "open_cache"]

logger = logging.getLogger("anisearch")

CACHE_PREFIX = "anisearch:cache:"
FLIGHT_PREFIX = "anisearch:flight:"
DONE_PREFIX = "anisearch:flight-done:"
LEASE_SECONDS = 15.0
"""A leader's lease; renewed every third of it while its search runs."""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('DEL', KEYS[1])
    redis.call('PUBLISH', KEYS[2], '1')
    return 1
end
return 0
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_MERGED = [0]


def merged_searches() -> int:
    """How many searches of this process were answered by an identical search in flight (any replica)."""
    return _MERGED[0]


class CacheStore(Protocol):
    """What the engine needs of a result cache (SQLite file or Redis)."""

    @property
    def usable(self) -> bool: ...

    async def get(self, key: str) -> SearchResult | None: ...

    async def put(self, key: str, result: SearchResult) -> None: ...

    def close(self) -> None: ...


class RedisResultCache:
    """A TTL cache of :class:`SearchResult` in Redis, shared by every process that points at it.

    It never raises: a Redis that cannot be reached gives one logged warning per outage and a miss.

    Args:
        url: ``redis://[:password@]host:port/db`` (or ``rediss://``).
        ttl_seconds: How long an answer is reused, seconds.
    """

    def __init__(self, url: str, *, ttl_seconds: float) -> None:
        from redis.asyncio import Redis

        from anisearch._redact import redact

        self.url = redact(url)
        self.ttl_seconds = ttl_seconds
        self.redis: Any = Redis.from_url(
            url, decode_responses=True, socket_timeout=REDIS_SECONDS, socket_connect_timeout=REDIS_SECONDS
        )
        self._warned = False
        self._refused = False
        self._down_until = -math.inf
        """Until when (``time.monotonic()``) searches go without the cache: it failed or was too slow."""

    @property
    def usable(self) -> bool:
        """Always True: an outage is a miss, not a reason to stop asking."""
        return True

    @property
    def down(self) -> bool:
        """Whether the cache failed or was too slow in the last :data:`DOWN_SECONDS`: searches skip it."""
        return time.monotonic() < self._down_until

    def _warn(self, exc: BaseException) -> None:
        self._down_until = time.monotonic() + DOWN_SECONDS
        if not self._warned:
            logger.warning(
                "the result cache %s cannot be used (%s); searching without it for %g s",
                self.url,
                exc,
                DOWN_SECONDS,
            )
            self._warned = True

    async def get(self, key: str) -> SearchResult | None:
        """The cached result for ``key`` (expired previews removed), or None: a miss also when the cache
        is :attr:`down`, or does not answer within :data:`WAIT_SECONDS` (or the search's deadline)."""
        from redis.exceptions import RedisError

        if self.down:
            return None
        payload = None
        budget = max(remaining_seconds(WAIT_SECONDS), 0.0)
        try:
            with anyio.move_on_after(budget) as waiting:
                payload = await self.redis.get(CACHE_PREFIX + key)
        except (RedisError, OSError) as exc:
            self._warn(exc)
            return None
        if waiting.cancelled_caught:
            if budget >= WAIT_SECONDS:  # Redis was slow, not the search out of time
                self._warn(TimeoutError(f"no answer within {WAIT_SECONDS:g} s"))
            return None
        self._warned = False
        if payload is None:
            return None
        try:
            result = SearchResult.model_validate_json(payload)
        except ValueError:  # written by an incompatible version: a miss
            return None
        return fresh_previews(result, datetime.now(UTC))

    async def put(self, key: str, result: SearchResult) -> None:
        """Store a successful answer for ``ttl_seconds`` (kept until Redis evicts it when the TTL is
        infinite, or longer than Redis can count).

        A write Redis refuses while it answers (``OOM command not allowed``: a full Redis without an
        eviction policy) is logged once and skipped: reads go on, since the answers stored still hold.
        """
        from redis.exceptions import RedisError, ResponseError

        if self.down:
            return
        milliseconds = self.ttl_seconds * 1000
        expiry = max(int(milliseconds), 1) if milliseconds < _LONGEST_EXPIRY_MS else None
        try:
            with anyio.move_on_after(WAIT_SECONDS) as waiting:  # the answer is in hand: never held up long
                await self.redis.set(CACHE_PREFIX + key, result.model_dump_json(), px=expiry)
        except ResponseError as exc:
            self._refused_write(exc)
            return
        except (RedisError, OSError) as exc:
            self._warn(exc)
            return
        if waiting.cancelled_caught:
            self._warn(TimeoutError(f"no answer within {WAIT_SECONDS:g} s"))

    def _refused_write(self, exc: BaseException) -> None:
        """A write Redis refused while answering (full, or not allowed): logged once; reads go on."""
        if not self._refused:
            self._refused = True
            logger.warning("the result cache %s refused to store an answer (%s)", self.url, exc)

    def _lease_failed(self, exc: BaseException) -> None:
        """A search's lease (:class:`Flights`) could not be taken: a lease Redis refused while answering
        (``OOM``: full) leaves the cache read, as a refused answer does; Redis failing or too slow puts the
        cache :attr:`down`."""
        from redis.exceptions import ResponseError

        if isinstance(exc, ResponseError):
            self._refused_write(exc)
        else:
            self._warn(exc)

    async def ping(self) -> bool:
        """Whether Redis answers."""
        from redis.exceptions import RedisError

        try:
            return bool(await self.redis.ping())
        except (RedisError, OSError):
            return False

    async def info(self) -> tuple[int, int]:
        """``(entries, bytes)``: the answers stored (Redis drops expired ones itself) and their size.

        Raises:
            redis.exceptions.RedisError, OSError: Redis cannot be reached.
        """
        entries = size = 0
        async for batch in self._batches():
            entries += len(batch)
            async with self.redis.pipeline(transaction=False) as pipe:
                for key in batch:
                    pipe.strlen(key)
                size += sum(int(n) for n in await pipe.execute())
        return entries, size

    async def clear(self) -> int:
        """Delete every stored answer of every process sharing this cache; returns how many there were.

        Raises:
            redis.exceptions.RedisError, OSError: Redis cannot be reached.
        """
        removed = 0
        async for batch in self._batches():
            removed += int(await self.redis.unlink(*batch))
        return removed

    async def _batches(self) -> AsyncIterator[list[str]]:
        """The cache's keys (``anisearch:cache:*``), a few hundred at a time (``SCAN``, never ``KEYS``)."""
        batch: list[str] = []
        async for key in self.redis.scan_iter(match=CACHE_PREFIX + "*", count=500):
            batch.append(key)
            if len(batch) >= 500:  # noqa: PLR2004 - one pipeline's worth
                yield batch
                batch = []
        if batch:
            yield batch

    def close(self) -> None:
        """Nothing to do: the connections close with the event loop (``aclose`` closes them now)."""

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self.redis.aclose()


def open_cache(settings: Settings) -> CacheStore | None:
    """The result cache the settings name: None (``off``), Redis, or the SQLite file."""
    from anisearch._cache import ResultCache

    if is_redis_url(settings.cache):
        assert settings.cache is not None  # noqa: S101 - is_redis_url checked it
        try:
            return RedisResultCache(settings.cache, ttl_seconds=settings.cache_ttl)
        except ImportError:
            logger.warning("ANISEARCH_CACHE names Redis but the redis extra is missing; no cache")
            return None
    path = settings.cache_path
    store = None if path is None else ResultCache(path, ttl_seconds=settings.cache_ttl)
    return store if store is not None and store.usable else None  # disposable: warned


FOLLOW_SECONDS = 120.0
"""The longest a search waits for an identical one (of this process, or of another on a shared Redis cache)
without a deadline of its own, seconds; then it runs on its own. Every step of a search is bounded, so this
only matters if one ever was not."""


WAIT_SECONDS = 1.0
"""The longest a search waits for the Redis result cache to read or store one answer, or to start merging
identical searches, seconds: a Redis that answers does so in milliseconds, and the cache is only a way to
save a search. Past it, the cache is a miss and is skipped for :data:`DOWN_SECONDS`."""
DOWN_SECONDS = 30.0
"""How long searches go without a Redis result cache that failed or did not answer in time, seconds."""
_LONGEST_EXPIRY_MS = 2**62
"""Expiries at or past this many milliseconds (past what Redis counts) store the answer without one."""
LET_GO_SECONDS = 0.25
"""The longest letting go of a flight's lease may take past the search's deadline, seconds: a Redis that
answers does so in a millisecond, and a lease not let go lapses by itself (:data:`LEASE_SECONDS`)."""


async def _let_go(redis: Any, lease: str, channel: str, token: str) -> None:
    """Release ``lease`` (and wake its followers), never waiting long past the search's deadline."""
    from redis.exceptions import RedisError

    with anyio.move_on_after(max(remaining_seconds(REDIS_SECONDS), LET_GO_SECONDS)):
        with contextlib.suppress(RedisError, OSError):
            await redis.eval(_RELEASE, 2, lease, channel, token)


class Flights:
    """Identical searches in flight, merged: in this process always, across a fleet with a Redis cache."""

    def __init__(self) -> None:
        self._local: dict[str, anyio.Event] = {}

    async def run(
        self,
        key: str,
        search: Callable[[], Awaitable[SearchResult]],
        cached: Callable[[], Awaitable[SearchResult | None]] | None,
        store: CacheStore | None,
    ) -> SearchResult:
        """``search()``, unless an identical one in flight answers first (its answer read by ``cached``).

        Waiting for the identical search ends at this search's deadline (``search(deadline=...)``), or
        after :data:`FOLLOW_SECONDS` without one: it then runs on its own (and fails as a search past its
        deadline does), instead of waiting for the other's whole request.

        Args:
            key: What makes two searches identical.
            search: Runs the search.
            cached: Reads the answer the first search left in the cache (None: no cache, so a waiter
                runs its own search once the first is done).
            store: The cache; a :class:`RedisResultCache` extends merging to every process using it.
        """
        while key in self._local:  # the same search is running here: wait and reuse its answer
            with anyio.move_on_after(remaining_seconds(FOLLOW_SECONDS)) as waiting:
                await self._local[key].wait()
            if waiting.cancelled_caught:  # the deadline came first: the search says so on its own
                return await search()
            if cached is not None and (result := await cached()) is not None:
                _MERGED[0] += 1
                return result
        done = self._local[key] = anyio.Event()
        try:
            if cached is not None and isinstance(store, RedisResultCache) and not store.down:
                return await self._fleet(store, key, search, cached)
            return await search()
        finally:
            del self._local[key]
            done.set()

    async def _fleet(
        self,
        store: RedisResultCache,
        key: str,
        search: Callable[[], Awaitable[SearchResult]],
        cached: Callable[[], Awaitable[SearchResult | None]],
    ) -> SearchResult:
        from redis.exceptions import RedisError

        redis = store.redis
        lease, channel = FLIGHT_PREFIX + key, DONE_PREFIX + key
        from anisearch._ledger._base import this_holder

        token = f"{secrets.token_hex(12)} {this_holder()}"  # the holder: a dead one's lease is taken over
        try:
            with anyio.move_on_after(remaining_seconds(FOLLOW_SECONDS)) as waiting:
                while True:
                    with anyio.move_on_after(WAIT_SECONDS) as asking:
                        taken = await redis.set(lease, token, nx=True, px=int(LEASE_SECONDS * 1000))
                    if asking.cancelled_caught:
                        raise TimeoutError(f"no answer within {WAIT_SECONDS:g} s")
                    if taken:
                        break
                    if await self._wait(redis, lease, channel):
                        result = await cached()
                        if result is not None:
                            _MERGED[0] += 1
                            return result
        except (RedisError, OSError) as exc:  # TimeoutError is an OSError
            store._lease_failed(exc)  # noqa: SLF001 - the cache and its flights are one Redis
            return await search()
        if waiting.cancelled_caught:  # the deadline came first: the search says so on its own
            await _let_go(redis, lease, channel, token)  # a lease taken as the deadline came
            return await search()
        failure: Exception | None = None
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(self._renew, redis, lease, token)
                try:
                    answer = await search()
                except Exception as exc:  # noqa: BLE001 - raised as it is below, not in the group's ExceptionGroup
                    failure = exc
                finally:
                    tasks.cancel_scope.cancel()
            if failure is not None:
                raise failure
            return answer
        finally:
            with anyio.CancelScope(shield=True):
                await _let_go(redis, lease, channel, token)

    @staticmethod
    async def _wait(redis: Any, lease: str, channel: str) -> bool:
        """Wait until the leader of ``lease`` is done (or its lease lapsed, or it died on this host: its
        lease is let go at once); True when it was released."""
        from anisearch._ledger._base import holder_is_dead

        pubsub = redis.pubsub()
        try:
            await pubsub.subscribe(channel)
            while True:
                remaining = await redis.pttl(lease)
                if remaining < 0:  # released (or lapsed) before or while subscribing
                    return True
                held = await redis.get(lease)
                if held is not None and holder_is_dead(held.partition(" ")[2]):
                    await redis.eval(_RELEASE, 2, lease, channel, held)  # killed mid-search: nothing comes
                    return True
                message = await pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=min(remaining / 1000 + 0.05, 1.0)
                )
                if message is not None:
                    return True
        finally:
            with anyio.CancelScope(shield=True):
                await pubsub.aclose()

    @staticmethod
    async def _renew(redis: Any, lease: str, token: str) -> None:
        from redis.exceptions import RedisError

        while True:
            await anyio.sleep(LEASE_SECONDS / 3)
            with contextlib.suppress(RedisError, OSError):
                await redis.eval(_RENEW, 1, lease, token, int(LEASE_SECONDS * 1000))


async def cache_ready(settings: Settings) -> bool:
    """Whether the configured cache can be used now (True when the cache is off)."""
    store = open_cache(settings)
    if store is None:
        return settings.cache_path is None and not is_redis_url(settings.cache)
    try:
        if isinstance(store, RedisResultCache):
            return await store.ping()
        return store.usable
    finally:
        if isinstance(store, RedisResultCache):
            await store.aclose()
        else:
            store.close()

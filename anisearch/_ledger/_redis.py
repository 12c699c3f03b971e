"""``redis://host:port/db``: the ledger in Redis, shared by a fleet of workers on many machines.

Needs the ``redis`` extra (``pip install 'anisearch[redis]'``). Every read-modify-write is one Lua script,
so it is atomic on the server. Keys (all under ``anisearch:ledger:``; ``<s>`` is ``provider|scope``):

- ``scopes``: set of every ``<s>`` with a truth, a cooldown or a concurrency;
- ``w:<s>``: hash, window name -> JSON truth (counts, times in microseconds, source; never ``raw``);
- ``s:<s>``: hash with ``cooldown_until`` (microseconds), ``cooldown_reason`` and ``concurrency``;
- ``e:<s>:search`` / ``e:<s>:request``: sorted sets of events scored by time (microseconds);
- ``l:<s>``: sorted set of lease tokens scored by expiry (microseconds).

Times come from the workers' clocks (keep them in sync with NTP), so one injected clock drives a test.
"""

from __future__ import annotations

import json
import secrets
from typing import TYPE_CHECKING, Any, cast

from anisearch._ledger._stored import ScopeRecord, StoredLedger
from anisearch._ledger._windows import Truth, from_us, horizon, to_us

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from anisearch._ledger._stored import Clock
    from anisearch._ledger._windows import EventKind
    from anisearch._models import QuotaSource, QuotaWindow

__all__ = ["RedisLedger"]

PREFIX = "anisearch:ledger:"

# KEYS: windows hash, scopes set, search events, request events. ARGV: member, then (window, json, observed)*.
_PUT_TRUTHS = """
redis.call('SADD', KEYS[2], ARGV[1])
for i = 2, #ARGV, 3 do
  local current = redis.call('HGET', KEYS[1], ARGV[i])
  if (not current) or tonumber(cjson.decode(current)['observed_at']) <= tonumber(ARGV[i + 2]) then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
local oldest = nil
for _, value in ipairs(redis.call('HVALS', KEYS[1])) do
  local observed = tonumber(cjson.decode(value)['observed_at'])
  if (not oldest) or observed < oldest then oldest = observed end
end
if oldest then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. string.format('%d', oldest))
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', '(' .. string.format('%d', oldest))
end
"""

# KEYS: settings hash, scopes set. ARGV: member, until, reason.
_PUT_COOLDOWN = """
redis.call('SADD', KEYS[2], ARGV[1])
local current = redis.call('HGET', KEYS[1], 'cooldown_until')
if (not current) or tonumber(current) < tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'cooldown_until', ARGV[2], 'cooldown_reason', ARGV[3])
end
"""

# KEYS: leases zset, settings hash. ARGV: now, expires_at, token, slots.
_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local slots = tonumber(redis.call('HGET', KEYS[2], 'concurrency') or ARGV[4])
if redis.call('ZCARD', KEYS[1]) < slots then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
  return 1
end
return 0
"""


def _truth_json(truth: Truth) -> str:
    return json.dumps(
        {
            "limit": truth.limit,
            "used": truth.used,
            "remaining": truth.remaining,
            "observed_at": to_us(truth.observed_at),
            "resets_at": to_us(truth.resets_at) if truth.resets_at is not None else None,
            "source": truth.source,
        }
    )


def _truth_from_json(window: str, text: str) -> Truth:
    data: dict[str, Any] = json.loads(text)
    return Truth(
        window=cast("QuotaWindow", window),
        observed_at=from_us(int(data["observed_at"])),
        limit=data["limit"],
        used=data["used"],
        remaining=data["remaining"],
        resets_at=from_us(int(data["resets_at"])) if data["resets_at"] is not None else None,
        source=cast("QuotaSource", data["source"]),
    )


class RedisLedger(StoredLedger):
    """The ledger in a Redis database (``redis://host:port/db``, ``rediss://`` for TLS).

    Args:
        client: A ``redis.asyncio.Redis`` with ``decode_responses=True``; the ledger closes it.
        url: The URL it was opened from (password masked).
        timezone: Zone of the calendar ``day`` and ``month`` windows.
        clock: The current instant (default: the system clock).
    """

    def __init__(self, client: Any, *, url: str, timezone: ZoneInfo, clock: Clock | None = None) -> None:
        super().__init__(url, timezone=timezone, clock=clock)
        # Any, not redis.asyncio.Redis: redis-py's own annotations and the separate types-redis stubs
        # disagree (generic or not, aclose, return unions), and either may be what a checker finds.
        self._redis: Any = client
        self._put_truths_script = client.register_script(_PUT_TRUTHS)
        self._put_cooldown_script = client.register_script(_PUT_COOLDOWN)
        self._acquire_script = client.register_script(_ACQUIRE)

    @staticmethod
    def _key(kind: str, provider: str, scope: str) -> str:
        return f"{PREFIX}{kind}:{provider}|{scope}"

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._redis.aclose()

    async def _load(self, provider: str, scope: str) -> ScopeRecord:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(self._key("w", provider, scope))
            pipe.hgetall(self._key("s", provider, scope))
            windows, settings = await pipe.execute()
        record = ScopeRecord()
        for window, text in windows.items():
            truth = _truth_from_json(window, text)
            record.truths[truth.window] = truth
        if "cooldown_until" in settings:
            record.cooldown_until = from_us(int(settings["cooldown_until"]))
            record.cooldown_reason = settings.get("cooldown_reason")
        if "concurrency" in settings:
            record.concurrency = int(settings["concurrency"])
        return record

    async def _scopes(self, provider: str | None) -> list[tuple[str, str]]:
        members: set[str] = await self._redis.smembers(f"{PREFIX}scopes")
        pairs = [cast("tuple[str, str]", tuple(member.split("|", 1))) for member in members]
        return [pair for pair in pairs if provider is None or pair[0] == provider]

    async def _put_truths(self, provider: str, scope: str, truths: Sequence[Truth]) -> None:
        args: list[str | int] = [f"{provider}|{scope}"]
        for truth in truths:
            args += [truth.window, _truth_json(truth), to_us(truth.observed_at)]
        keys = [
            self._key("w", provider, scope),
            f"{PREFIX}scopes",
            self._key("e", provider, scope) + ":search",
            self._key("e", provider, scope) + ":request",
        ]
        await self._put_truths_script(keys=keys, args=args)

    async def _put_cooldown(self, provider: str, scope: str, until: datetime, reason: str) -> None:
        keys = [self._key("s", provider, scope), f"{PREFIX}scopes"]
        await self._put_cooldown_script(keys=keys, args=[f"{provider}|{scope}", to_us(until), reason])

    async def _put_concurrency(self, provider: str, scope: str, concurrency: int) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.sadd(f"{PREFIX}scopes", f"{provider}|{scope}")
            pipe.hset(self._key("s", provider, scope), "concurrency", concurrency)
            await pipe.execute()

    async def _add_event(
        self, provider: str, scope: str, kind: EventKind, at: datetime, now: datetime
    ) -> None:
        key = f"{self._key('e', provider, scope)}:{kind}"
        micros = to_us(at)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zadd(key, {f"{micros}-{secrets.token_hex(6)}": micros})
            pipe.zremrangebyscore(key, "-inf", f"({to_us(now - horizon(kind))}")
            await pipe.execute()

    async def _events(
        self, provider: str, scope: str, kind: EventKind, since: datetime, need: Callable[[int], int]
    ) -> tuple[int, list[datetime]]:
        key = f"{self._key('e', provider, scope)}:{kind}"
        low = to_us(since)
        count: int = await self._redis.zcount(key, low, "+inf")
        wanted = need(count)
        if not wanted:
            return count, []
        rows: list[tuple[str, float]] = await self._redis.zrangebyscore(
            key, low, "+inf", start=0, num=wanted, withscores=True
        )
        return count, [from_us(int(score)) for _, score in rows]

    async def _try_acquire(
        self, provider: str, scope: str, *, token: str, slots: int, expires_at: datetime, now: datetime
    ) -> bool:
        keys = [self._key("l", provider, scope), self._key("s", provider, scope)]
        taken = await self._acquire_script(keys=keys, args=[to_us(now), to_us(expires_at), token, slots])
        return bool(taken)

    async def _release_token(self, provider: str, scope: str, token: str) -> None:
        await self._redis.zrem(self._key("l", provider, scope), token)

    async def clear(self) -> None:
        """Delete every ``anisearch:ledger:*`` key of the database."""
        keys = [key async for key in self._redis.scan_iter(match=f"{PREFIX}*", count=500)]
        for start in range(0, len(keys), 500):
            await self._redis.delete(*keys[start : start + 500])

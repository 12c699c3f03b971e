"""``ANISEARCH_CACHE=redis://``: answers shared by every process on one Redis; an outage is a miss."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from tests.cli_runner import run_in_process
from tests.conftest import free_port

from anisearch import AllProvidersFailedError, AsyncClient, ConfigurationError, QuotaExhaustedError, Settings
from anisearch._cache_redis import CACHE_PREFIX, FLIGHT_PREFIX, Flights, RedisResultCache, cache_ready
from anisearch._limits import search_deadline
from anisearch._models import SearchResult
from anisearch_emulators.tracemoe import create_app as tracemoe_app

pytestmark = pytest.mark.redis


def settings_for(url: str, cache: str) -> Settings:
    return Settings.load(
        providers=["tracemoe"], provider_options={"tracemoe": {"url": url}}, ledger="memory://", cache=cache
    )


@pytest.mark.usefixtures("tracemoe")
def test_a_redis_cache_url_redis_cannot_read_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, samples: Path
) -> None:
    """``:6379x``, a typo: the first search raised redis-py's own ValueError (at the command, a traceback
    and exit 1), where the same typo in ANISEARCH_LEDGER is refused with the settings."""
    monkeypatch.setenv("ANISEARCH_CACHE", "redis://:hunter2@127.0.0.1:6379x/1")
    monkeypatch.setenv("ANISEARCH_LEDGER", "memory://")
    with pytest.raises(ConfigurationError, match=r"invalid Redis cache URL .*\(ANISEARCH_CACHE\)") as caught:
        AsyncClient()
    assert "hunter2" not in str(caught.value)
    done = run_in_process("search", str(samples / "tinted-good.jpg"))
    assert done.returncode == 2
    assert done.stderr.startswith("anisearch: error: invalid Redis cache URL 'redis://***@127.0.0.1:6379x/1'")
    assert len(done.stderr.strip().splitlines()) == 1
    assert "hunter2" not in done.stderr


def test_two_clients_share_answers_through_redis(
    live_server: Callable[[Any], Any], samples: Path, redis_url: str
) -> None:
    trace = live_server(tracemoe_app())
    image = samples / "tinted-good.jpg"

    async def run() -> tuple[SearchResult, SearchResult]:
        async with AsyncClient(settings_for(trace.url, redis_url)) as first:
            paid = await first.search(image)
        async with AsyncClient(settings_for(trace.url, redis_url)) as second:
            free = await second.search(image)
        return paid, free

    paid, free = anyio.run(run)
    assert (paid.cached, free.cached) == (False, True)
    assert free.best is not None
    assert free.best.anilist_id == 11887
    assert trace.app.state.emulator.search_requests == 1
    assert anyio.run(cache_ready, settings_for(trace.url, redis_url)) is True


def test_a_failed_search_raises_its_own_error_through_a_redis_cache(
    live_server: Callable[[Any], Any], samples: Path, redis_url: str
) -> None:
    """A spent quota is an ``AllProvidersFailedError`` with a Redis cache as without one (it came wrapped in
    an ``ExceptionGroup``: the bot's ``except`` missed it, the command printed a traceback and exit 1), and
    the command says it in one line with its exit code."""
    trace = live_server(tracemoe_app(quota=0))
    image = samples / "tinted-good.jpg"

    async def run() -> None:
        async with AsyncClient(settings_for(trace.url, redis_url)) as client:
            await client.search(image)

    with pytest.raises(AllProvidersFailedError) as caught:
        anyio.run(run)
    assert isinstance(caught.value.exceptions[0], QuotaExhaustedError)
    done = run_in_process(
        "search",
        str(image),
        env={
            "ANISEARCH_CACHE": redis_url,
            "ANISEARCH_LEDGER": "memory://",
            "ANISEARCH_TRACEMOE_URL": trace.url,
        },
    )
    assert done.returncode == 4
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("anisearch: error: every provider failed")


def test_a_redis_outage_is_a_miss_never_an_error(
    live_server: Callable[[Any], Any], samples: Path, caplog: pytest.LogCaptureFixture
) -> None:
    trace = live_server(tracemoe_app())
    gone = f"redis://127.0.0.1:{free_port()}/0"

    async def run() -> list[SearchResult]:
        async with AsyncClient(settings_for(trace.url, gone)) as client:
            return [await client.search(samples / "tinted-good.jpg") for _ in range(2)]

    results = anyio.run(run)
    assert [r.provider for r in results] == ["tracemoe", "tracemoe"]
    assert trace.app.state.emulator.search_requests == 2
    assert sum("cannot be used" in r.getMessage() for r in caplog.records) == 1  # one warning per outage
    assert anyio.run(cache_ready, settings_for(trace.url, gone)) is False


def test_entries_expire_with_the_ttl(redis_url: str) -> None:
    async def run() -> tuple[SearchResult | None, SearchResult | None]:
        store = RedisResultCache(redis_url, ttl_seconds=0.2)
        try:
            await store.put("k", SearchResult(hits=[], provider="tracemoe"))
            first = await store.get("k")
            await anyio.sleep(0.4)
            return first, await store.get("k")
        finally:
            await store.aclose()

    first, later = anyio.run(run)
    assert first is not None
    assert first.provider == "tracemoe"
    assert later is None


def test_an_infinite_ttl_keeps_answers_without_an_expiry(redis_url: str) -> None:
    """``ANISEARCH_CACHE_TTL=inf`` works on Redis as on SQLite: stored, found, never expiring (it raised
    OverflowError out of the search, after the upstream had been paid)."""

    async def run() -> tuple[SearchResult | None, int]:
        store = RedisResultCache(redis_url, ttl_seconds=math.inf)
        try:
            await store.put("k", SearchResult(hits=[], provider="tracemoe"))
            return await store.get("k"), int(await store.redis.pttl(CACHE_PREFIX + "k"))
        finally:
            await store.aclose()

    found, expiry = anyio.run(run)
    assert found is not None
    assert expiry == -1  # no expiry: kept until Redis evicts it


def test_a_write_a_full_redis_refuses_leaves_reading_on(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A Redis at ``maxmemory`` without an eviction policy refuses writes but still answers reads: the
    answers stored go on being found (a refused write turned the cache off for 30 s)."""
    from redis.exceptions import ResponseError

    async def run() -> tuple[SearchResult | None, bool]:
        store = RedisResultCache(redis_url, ttl_seconds=60)
        try:
            await store.put("stored", SearchResult(hits=[], provider="tracemoe"))

            async def full(*_: object, **__: object) -> None:
                raise ResponseError("OOM command not allowed when used memory > 'maxmemory'.")

            monkeypatch.setattr(store.redis, "set", full)
            await store.put("new", SearchResult(hits=[], provider="tracemoe"))
            return await store.get("stored"), store.down
        finally:
            await store.aclose()

    found, down = anyio.run(run)
    assert found is not None
    assert down is False
    assert any("refused to store" in r.getMessage() for r in caplog.records)


def test_a_full_redis_goes_on_answering_from_the_cache_after_a_new_search(
    live_server: Callable[[Any], Any], samples: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full Redis (``maxmemory``, no eviction) refuses the lease of a new search as it refuses its answer:
    the search goes on alone and the answers stored are still found (the refused lease turned the cache
    off for 30 s, and the next repeated search was bought again)."""
    from redis.asyncio import Redis
    from redis.exceptions import ResponseError

    trace = live_server(tracemoe_app())
    stored, new = samples / "tinted-good.jpg", samples / "border-bad.jpg"

    async def full(*_: object, **__: object) -> None:
        raise ResponseError("OOM command not allowed when used memory > 'maxmemory'.")

    async def run() -> list[bool]:
        async with AsyncClient(settings_for(trace.url, redis_url)) as client:
            cached = [(await client.search(stored)).cached]
            monkeypatch.setattr(Redis, "set", full)  # full from here on: every write refused
            cached.append((await client.search(new)).cached)
            cached.append((await client.search(stored)).cached)
            return cached

    assert anyio.run(run) == [False, False, True]
    assert trace.app.state.emulator.search_requests == 2


def test_a_search_waiting_for_another_process_stops_at_its_deadline(redis_url: str) -> None:
    """An identical search in flight in another process (its lease in Redis) is waited for only until this
    search's deadline; then this one runs on its own, and the other's lease stays as it was."""
    key = "the same search"

    async def main() -> tuple[str, str | None, float]:
        store = RedisResultCache(redis_url, ttl_seconds=60)
        try:
            await store.redis.set(FLIGHT_PREFIX + key, "another process", px=60_000)

            async def alone() -> SearchResult:
                return SearchResult(provider="tracemoe")

            async def nothing_cached() -> SearchResult | None:
                return None

            token = search_deadline.set(anyio.current_time() + 0.3)
            try:
                with anyio.fail_after(10):  # without the deadline it waits for the other's 60 s lease
                    result = await Flights().run(key, alone, nothing_cached, store)
            finally:
                search_deadline.reset(token)
            held = await store.redis.get(FLIGHT_PREFIX + key)
            ttl = await store.redis.pttl(FLIGHT_PREFIX + key)
            await store.redis.delete(FLIGHT_PREFIX + key)
            return str(result.provider), held, ttl
        finally:
            await store.aclose()

    provider, held, ttl = anyio.run(main)
    assert provider == "tracemoe"  # this search's own answer
    assert held == "another process"
    assert ttl > 50_000


def test_cache_info_and_clear_work_on_the_redis_cache(
    redis_url: str, cli: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def fill() -> None:
        store = RedisResultCache(redis_url, ttl_seconds=60)
        try:
            for key in ("a", "b", "c"):
                await store.put(key, SearchResult(hits=[], provider="tracemoe"))
        finally:
            await store.aclose()

    anyio.run(fill)
    monkeypatch.chdir(tmp_path)  # where a Redis URL taken for a path made a "redis:" folder
    env = {"ANISEARCH_CACHE": redis_url}
    info = cli("cache", "info", "--json", env=env)
    assert info.returncode == 0, info.stderr
    shown = json.loads(info.stdout)
    assert (shown["path"], shown["entries"], shown["expired"]) == (redis_url, 3, 0)
    assert shown["size_bytes"] > 0
    cleared = cli("cache", "clear", env=env)
    assert (cleared.returncode, cleared.stdout.strip()) == (0, "removed 3 cached result(s)")
    assert json.loads(cli("cache", "info", "--json", env=env).stdout)["entries"] == 0
    assert not (tmp_path / "redis:").exists()
    gone = cli("cache", "clear", env={"ANISEARCH_CACHE": f"redis://127.0.0.1:{free_port()}/0"})
    assert gone.returncode == 2
    assert "cannot be reached" in gone.stderr


class _SilentRedis:
    """A loopback server that accepts connections and never answers: a paused Redis, or a dropped path."""

    def __init__(self) -> None:
        import socket

        self._sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"redis://127.0.0.1:{self._sock.getsockname()[1]}/0"
        self._accepted: list[Any] = []

    def accept_forever(self) -> None:
        import threading

        def loop() -> None:
            while True:
                try:
                    self._accepted.append(self._sock.accept()[0])  # and never a byte back
                except OSError:
                    return

        threading.Thread(target=loop, daemon=True).start()

    def close(self) -> None:
        self._sock.close()
        for conn in self._accepted:
            conn.close()


def test_a_redis_that_stops_answering_fails_each_command_in_bounded_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import time

    import anisearch._cache_redis
    import anisearch._ledger
    from anisearch import LedgerError
    from anisearch._ledger import open_ledger
    from anisearch_providers.tracemoe import TraceMoe

    monkeypatch.setattr(anisearch._ledger, "REDIS_SECONDS", 0.5)
    monkeypatch.setattr(anisearch._cache_redis, "REDIS_SECONDS", 0.5)
    silent = _SilentRedis()
    silent.accept_forever()

    async def run() -> tuple[float, float, SearchResult | None]:
        ledger = open_ledger(silent.url)
        started = time.monotonic()
        with pytest.raises(LedgerError):
            await ledger.reserve("tracemoe", "guest", TraceMoe().windows())
        ledger_seconds = time.monotonic() - started
        cache = RedisResultCache(silent.url, ttl_seconds=60)
        started = time.monotonic()
        found = await cache.get("some-key")  # an outage is a miss
        cache_seconds = time.monotonic() - started
        await cache.aclose()
        return ledger_seconds, cache_seconds, found

    try:
        ledger_seconds, cache_seconds, found = anyio.run(run)
    finally:
        silent.close()
    assert found is None
    # redis-py's own default would wait 5 s (6.x and later) or forever (5.x)
    assert ledger_seconds < 3
    assert cache_seconds < 3


def test_a_search_waits_for_a_stuck_identical_one_only_so_long(monkeypatch: pytest.MonkeyPatch) -> None:
    import anisearch._cache_redis

    monkeypatch.setattr(anisearch._cache_redis, "FOLLOW_SECONDS", 0.2)
    flights = Flights()
    stuck = anyio.Event()  # never set: the first search never ends
    own = SearchResult(provider="own")

    async def first() -> SearchResult:
        await stuck.wait()
        raise AssertionError("unreachable")

    async def second() -> SearchResult:
        return own

    async def run() -> SearchResult:
        async with anyio.create_task_group() as group:
            group.start_soon(flights.run, "key", first, None, None)
            await anyio.sleep(0.01)  # the first is in flight
            with anyio.fail_after(5):
                answer = await flights.run("key", second, None, None)
            group.cancel_scope.cancel()
        return answer

    assert anyio.run(run) is own  # it ran on its own instead of waiting forever


def test_an_identical_search_of_a_process_that_died_is_not_waited_for(redis_url: str) -> None:
    """The process running the identical search was killed (its lease in Redis still runs for up to 15 s):
    a search on the same host sees its holder is dead and runs at once."""
    import subprocess
    import sys

    dead = subprocess.run(
        [sys.executable, "-c", "from anisearch._ledger._base import this_holder; print(this_holder())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()  # a holder of this host whose process has ended
    key = "the same search"

    async def main() -> str:
        store = RedisResultCache(redis_url, ttl_seconds=60)
        try:
            await store.redis.set(FLIGHT_PREFIX + key, f"0123abcd {dead}", px=60_000)

            async def alone() -> SearchResult:
                return SearchResult(provider="tracemoe")

            async def nothing_cached() -> SearchResult | None:
                return None

            with anyio.fail_after(5):  # not the 60 s left on the dead one's lease
                result = await Flights().run(key, alone, nothing_cached, store)
            return str(result.provider)
        finally:
            await store.redis.delete(FLIGHT_PREFIX + key)
            await store.aclose()

    assert anyio.run(main) == "tracemoe"

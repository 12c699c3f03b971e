"""A search's deadline bounds what it waits for from Redis (ledger and result cache), not only Redis's own
5-second timeout per command: a paused Redis ends a ``deadline=1`` search in about a second. A reservation
whose answer never came (cut off at the deadline, or its reply lost) is given up, not left holding a slot."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from redis.asyncio import Redis
from tests.conftest import RedisServer
from tests.test_router import Connections

from anisearch import AsyncClient, LedgerError, Settings
from anisearch._ledger._redis import PREFIX
from anisearch._ledger._redis_scripts import RESERVE
from anisearch._limits import REDIS_SECONDS
from anisearch_emulators.tracemoe import create_app as tracemoe_app

pytestmark = pytest.mark.redis


def settings(url: str, *, ledger: str, cache: str) -> Settings:
    return Settings.load(
        providers=["tracemoe"], provider_options={"tracemoe": {"url": url}}, ledger=ledger, cache=cache
    )


def searched_while_paused(
    redis: RedisServer, chosen: Settings, first: Path, second: Path
) -> tuple[Any, float]:
    """Search ``first`` (connections made, the answer seen), pause Redis, search ``second`` with a
    1-second deadline: ``(its result or error, seconds it took)``."""

    async def run() -> tuple[Any, float]:
        async with AsyncClient(chosen) as client:
            assert (await client.search(first)).best is not None
            with redis.paused():
                start = time.monotonic()
                try:
                    outcome: Any = await client.search(second, deadline=1.0)
                except Exception as exc:  # noqa: BLE001 - what the search ended with is the finding
                    outcome = exc
                return outcome, time.monotonic() - start

    return anyio.run(run)


def test_a_paused_redis_ledger_ends_the_search_at_its_deadline(
    live_server: Callable[[Any], Any], samples: Path, redis_server: RedisServer, redis_url: str
) -> None:
    trace = live_server(tracemoe_app())
    chosen = settings(trace.url, ledger=redis_url, cache="off")
    outcome, took = searched_while_paused(
        redis_server, chosen, samples / "tinted-good.jpg", samples / "flipped-good.webp"
    )
    assert isinstance(outcome, LedgerError)
    assert "did not answer before the search's deadline" in str(outcome)
    assert took < REDIS_SECONDS - 1  # it was 5.03 s: Redis's own timeout, whatever the deadline
    assert trace.app.state.emulator.search_requests == 1  # nothing sent without the ledger's word


def test_a_paused_redis_cache_is_a_quick_miss_then_skipped(
    live_server: Callable[[Any], Any],
    samples: Path,
    redis_server: RedisServer,
    redis_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The cache only saves searches: a paused one costs the first search a second (it took the search's
    whole deadline, which then failed without asking trace.moe; 15 s without a deadline), and the next
    searches nothing, until it has been skipped for 30 s."""
    trace = live_server(tracemoe_app())
    chosen = settings(trace.url, ledger="memory://", cache=redis_url)

    async def run() -> tuple[Any, float, Any, float]:
        async with AsyncClient(chosen) as client:
            assert (await client.search(samples / "tinted-good.jpg")).best is not None
            with redis_server.paused():
                start = time.monotonic()
                first = await client.search(samples / "flipped-good.webp", deadline=3.0)
                middle = time.monotonic()
                second = await client.search(samples / "tinted-good.jpg", cache=True)
                return first, middle - start, second, time.monotonic() - middle

    first, first_took, second, second_took = anyio.run(run)
    assert first.best is not None  # answered by trace.moe, within its deadline
    assert first_took < 2.5
    assert second.best is not None
    assert not second.cached  # the cache was skipped, not waited for
    assert second_took < 1.0
    assert sum("cannot be used (no answer within 1 s)" in r.getMessage() for r in caplog.records) == 1


def test_searches_ending_at_their_deadline_leave_no_slot_held(
    live_server: Callable[[Any], Any], samples: Path, redis_url: str
) -> None:
    """Ten searches at once on a concurrency-1 trace.moe, each with a deadline most of them reach waiting
    for the slot. One reservation cut off at its deadline with Redis answering held the slot for its whole
    15-second lease (the next search waited that long) and ended as a LedgerError blaming Redis."""
    import io

    from PIL import Image

    trace = live_server(tracemoe_app(quota=10**6, rate_limit=10**6, latency=0.4))
    chosen = settings(trace.url, ledger=redis_url, cache="off")

    def picture(n: int) -> bytes:
        buffer = io.BytesIO()
        Image.new("RGB", (320, 180), (n * 20, 255 - n * 20, 90)).save(buffer, "JPEG")
        return buffer.getvalue()

    async def run() -> tuple[list[BaseException | None], float]:
        async with AsyncClient(chosen) as client:
            await client.search(samples / "tinted-good.jpg")
            errors: list[BaseException | None] = []
            for _ in range(3):

                async def one(n: int) -> None:
                    try:
                        await client.search(picture(n), deadline=1.0)
                    except Exception as exc:  # noqa: BLE001 - which error each ended with is the finding
                        errors.append(exc)
                    else:
                        errors.append(None)

                async with anyio.create_task_group() as tasks:
                    for n in range(10):
                        tasks.start_soon(one, n)
            start = time.monotonic()
            await client.search(samples / "flipped-good.webp")
            return errors, time.monotonic() - start

    errors, next_took = anyio.run(run)
    assert not any(isinstance(error, LedgerError) for error in errors)
    assert next_took < 5.0


def test_a_reservation_cut_off_by_a_short_stall_is_given_up_when_redis_answers_again(
    live_server: Callable[[Any], Any], samples: Path, redis_server: RedisServer, redis_url: str
) -> None:
    """Redis stalls 2 s, past a 1 s deadline but short of its own 5 s timeout: the reservation written
    before the search gave up runs when Redis answers again. It held trace.moe's only slot for its 15 s
    lease (the next search waited 12.4 s); it is now given up as soon as Redis answers."""
    import threading

    trace = live_server(tracemoe_app(quota=10**6, rate_limit=10**6))
    chosen = settings(trace.url, ledger=redis_url, cache="off")
    stalled = threading.Event()

    def stall() -> None:
        with redis_server.paused():
            stalled.set()
            time.sleep(2.0)

    async def run() -> tuple[BaseException | None, float]:
        async with AsyncClient(chosen) as client:
            await client.search(samples / "tinted-good.jpg")
            threading.Thread(target=stall, daemon=True).start()
            stalled.wait()
            cut_off: BaseException | None = None
            try:
                await client.search(samples / "flipped-good.webp", deadline=1.0)
            except LedgerError as exc:
                cut_off = exc
            await anyio.sleep(1.5)  # Redis answers again
            start = time.monotonic()
            await client.search(samples / "tinted-good.jpg", cache=False)
            return cut_off, time.monotonic() - start

    cut_off, next_took = anyio.run(run)
    assert cut_off is not None
    assert next_took < 5.0
    assert trace.app.state.emulator.search_requests == 2  # the cut-off search sent nothing


class ReplyLost:
    """A TCP proxy to Redis that, when :attr:`armed`, forwards the next command holding ``marker`` and then
    drops the client's connection: Redis runs the command, its reply never arrives."""

    def __init__(self, port: int, marker: bytes) -> None:
        self.port = port
        self.marker = marker
        self.armed = False

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        redis_reader, redis_writer = await asyncio.open_connection("127.0.0.1", self.port)

        async def up() -> None:
            while data := await reader.read(65536):
                redis_writer.write(data)
                if self.armed and self.marker in data:
                    self.armed = False
                    writer.transport.abort()  # before the reply can be read; Redis's side closes after it
                    return
            redis_writer.close()

        async def down() -> None:
            while (data := await redis_reader.read(65536)) and not writer.transport.is_closing():
                writer.write(data)
            redis_writer.close()

        await asyncio.gather(up(), down())


def test_a_reservation_whose_reply_was_lost_is_given_up(
    live_server: Callable[[Any], Any], samples: Path, redis_server: RedisServer, redis_url: str
) -> None:
    """The connection drops after Redis ran the reserve script, before its reply arrives: the search fails
    (nothing sent upstream), and the reservation is given up. It held its slot for its 15 s lease and
    counted a search never sent against the quota (``used`` 2 after one search) for the whole window."""
    trace = live_server(tracemoe_app())
    lost = ReplyLost(
        redis_server.port, hashlib.sha1(RESERVE.encode(), usedforsecurity=False).hexdigest().encode()
    )

    async def state(client: AsyncClient) -> tuple[int | None, int]:
        """trace.moe's rolling-24h ``used``, and the reservations Redis holds."""
        used = next(q.used for q in await client.quota("tracemoe") if q.window == "rolling-24h")
        async with Redis.from_url(redis_url, decode_responses=True) as redis:
            held = sum([await redis.hlen(key) async for key in redis.scan_iter(f"{PREFIX}h:*")])
        return used, held

    async def run() -> tuple[BaseException | None, tuple[int | None, int]]:
        connections = Connections()
        proxy = await asyncio.start_server(connections(lost), "127.0.0.1", 0)
        port = proxy.sockets[0].getsockname()[1]
        try:
            async with AsyncClient(
                settings(trace.url, ledger=f"redis://127.0.0.1:{port}/0", cache="off")
            ) as client:
                await client.search(samples / "tinted-good.jpg")  # the scripts loaded, one search counted
                assert await state(client) == (1, 0)
                lost.armed = True
                failed: BaseException | None = None
                try:
                    await client.search(samples / "flipped-good.webp")
                except LedgerError as exc:
                    failed = exc
                with anyio.move_on_after(3.0):  # given up at once, or by a task of its own
                    while await state(client) != (1, 0):
                        await anyio.sleep(0.1)
                return failed, await state(client)
        finally:
            proxy.close()
            await connections.closed()

    failed, after = anyio.run(run)
    assert isinstance(failed, LedgerError)
    assert not lost.armed  # the reserve's reply was the one lost
    assert trace.app.state.emulator.search_requests == 1  # the failed search sent nothing
    assert after == (1, 0)


def test_a_search_out_of_time_at_the_cache_does_not_turn_it_off(redis_url: str) -> None:
    """A search whose deadline ran out before it read the cache (a slow download, a first provider that
    took its time) gets a miss; the cache stays on for the others, and says nothing."""
    from anisearch._cache_redis import RedisResultCache
    from anisearch._limits import search_deadline

    async def run() -> tuple[bool, bool]:
        store = RedisResultCache(redis_url, ttl_seconds=60)
        try:
            token = search_deadline.set(anyio.current_time())
            try:
                assert await store.get("a key") is None
            finally:
                search_deadline.reset(token)
            return store.down, await store.redis.ping()
        finally:
            await store.aclose()

    assert anyio.run(run) == (False, True)


def test_a_reserve_that_never_reached_redis_leaves_nothing_to_give_up() -> None:
    """Redis down (the connection refused): a search fails with LedgerError, and leaves no task behind
    trying to give up a reservation that was never made (a bot's steady traffic left one per search)."""
    import socket

    from anisearch._ledger import WindowSpec, open_ledger

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    async def scenario() -> int:
        ledger = open_ledger(f"redis://127.0.0.1:{port}/0")
        try:
            for _ in range(3):
                with pytest.raises(LedgerError, match="cannot be used"):
                    await ledger.reserve("tracemoe", "guest", [WindowSpec("day", calendar="day", limit=5)])
            return len(ledger._giving_up)  # type: ignore[attr-defined]
        finally:
            await ledger.aclose()

    assert anyio.run(scenario) == 0

"""A fleet on one Redis ledger keeps the Redis server's time: one worker whose clock runs ahead (no NTP, a
resumed VM) neither takes a live slot as lapsed nor ages the searches the others counted out of a window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import anyio
import pytest

import anisearch._ledger._base as ledger_base
from anisearch._ledger import Ledger, Refusal, Ticket, WindowSpec, open_ledger

if TYPE_CHECKING:
    from tests.conftest import RedisServer

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

DAY = [WindowSpec("rolling-24h", span_seconds=86400, limit=5)]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def ahead(url: str, monkeypatch: pytest.MonkeyPatch, by: timedelta) -> Ledger:
    """A worker on a machine whose system clock is ``by`` ahead (the ledger is given no clock of its own)."""
    with monkeypatch.context() as patched:
        patched.setattr(ledger_base, "system_clock", lambda: datetime.now(UTC) + by)
        return open_ledger(url)


async def spend_the_day(worker: Ledger) -> None:
    """The fleet's five searches of the day, counted by ``worker``."""
    for _ in range(5):
        ticket = await worker.reserve("tracemoe", "guest", DAY, slots=10)
        assert isinstance(ticket, Ticket)
        await worker.settle(ticket, "charged")


async def test_a_worker_whose_clock_runs_ahead_keeps_the_fleets_slot_and_counts(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = open_ledger(redis_url)
    early = ahead(redis_url, monkeypatch, timedelta(seconds=20))
    late = ahead(redis_url, monkeypatch, timedelta(hours=25))
    try:
        held = await worker.reserve("tracemoe", "guest", DAY, slots=1)
        assert isinstance(held, Ticket)
        # 20 s ahead: the 15 s lease of the slot held now is not taken as lapsed
        assert isinstance(await early.reserve("tracemoe", "guest", DAY, slots=1), Refusal)
        await worker.settle(held, "charged")
        for _ in range(4):
            ticket = await worker.reserve("tracemoe", "guest", DAY, slots=1)
            assert isinstance(ticket, Ticket)
            await worker.settle(ticket, "charged")
        # 25 h ahead: the five searches counted in the last minutes are still in the day's window
        assert isinstance(await late.reserve("tracemoe", "guest", DAY, slots=1), Refusal)
        assert isinstance(await worker.reserve("tracemoe", "guest", DAY, slots=1), Refusal)
    finally:
        for ledger in (worker, early, late):
            await ledger.aclose()


async def test_a_burst_of_searches_at_a_workers_start_waits_for_the_servers_clock(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first searches of a worker whose clock runs a day ahead arrive at once: none runs on that
    clock while the first reading of the server's is under way."""
    import asyncio

    worker = open_ledger(redis_url)
    late = ahead(redis_url, monkeypatch, timedelta(hours=25))
    try:
        await spend_the_day(worker)
        burst = await asyncio.gather(*(late.reserve("tracemoe", "guest", DAY, slots=10) for _ in range(4)))
        assert [type(answer).__name__ for answer in burst] == ["Refusal"] * 4
        (day,) = [quota for quota in await worker.snapshot("tracemoe") if quota.window == "rolling-24h"]
        assert day.used == 5
    finally:
        for ledger in (worker, late):
            await ledger.aclose()


async def test_a_step_of_the_workers_clock_after_a_reading_changes_nothing(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read once, the server's time goes on by this machine's monotonic clock: a resumed VM or an NTP
    step a day forward does not age the fleet's counts out."""
    offset = timedelta(0)
    with monkeypatch.context() as patched:
        patched.setattr(ledger_base, "system_clock", lambda: datetime.now(UTC) + offset)
        worker = open_ledger(redis_url)
    try:
        await spend_the_day(worker)
        offset = timedelta(hours=25)  # the machine's clock steps a day ahead
        assert isinstance(await worker.reserve("tracemoe", "guest", DAY, slots=10), Refusal)
    finally:
        await worker.aclose()


async def test_a_redis_refusing_time_says_so_once(
    redis_url: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A proxy in front of Redis may refuse TIME: this machine's clock is used then, and one warning
    says so."""
    import logging

    from redis.exceptions import ResponseError

    ledger = open_ledger(redis_url)

    async def refused() -> None:
        raise ResponseError("unknown command 'TIME'")

    monkeypatch.setattr(ledger._redis, "time", refused)  # type: ignore[attr-defined]
    monkeypatch.setattr("anisearch._ledger._redis.CLOCK_RETRY_SECONDS", 0.0)
    try:
        with caplog.at_level(logging.WARNING, logger="anisearch"):
            for _ in range(3):
                ticket = await ledger.reserve("tracemoe", "guest", DAY, slots=10)
                assert isinstance(ticket, Ticket)
                await ledger.settle(ticket, "charged")
    finally:
        await ledger.aclose()
    said = [record.getMessage() for record in caplog.records if "clock" in record.getMessage()]
    assert len(said) == 1
    assert "cannot read the Redis server's clock (unknown command 'TIME')" in said[0]


async def test_searches_waiting_for_a_first_reading_that_was_cancelled_read_it_themselves(
    redis_server: RedisServer, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The search taking the first reading is given up by its caller while Redis is slow: the searches
    that waited for that reading do not go on with this machine's (a day ahead) clock."""
    import asyncio

    worker = open_ledger(redis_url)
    late = ahead(redis_url, monkeypatch, timedelta(hours=25))
    try:
        await spend_the_day(worker)
        await late._redis.ping()  # type: ignore[attr-defined]  # its connection is open
        with redis_server.paused():
            first = asyncio.create_task(late.reserve("tracemoe", "guest", DAY, slots=10))
            await asyncio.sleep(0.1)
            burst = [asyncio.create_task(late.reserve("tracemoe", "guest", DAY, slots=10)) for _ in range(4)]
            await asyncio.sleep(0.1)
            first.cancel()
        answers = await asyncio.gather(*burst)
        assert [type(answer).__name__ for answer in answers] == ["Refusal"] * 4
        (day,) = [quota for quota in await worker.snapshot("tracemoe") if quota.window == "rolling-24h"]
        assert day.used == 5
    finally:
        for ledger in (worker, late):
            await ledger.aclose()


async def test_after_a_resumed_vm_a_slow_reading_corrects_the_clock_once(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A VM suspended an hour: its monotonic clock stood still while the world's went on. The step is
    seen, and the reading taken then corrects the hour even when it is slow (a busy loop); the next
    searches read nothing more."""
    ledger = open_ledger(redis_url)
    try:
        await spend_the_day(ledger)
        instant, at = ledger._server_time  # type: ignore[attr-defined]
        hour = timedelta(hours=1)
        ledger._server_time = (instant - hour, at)  # type: ignore[attr-defined]  # the estimate an hour behind
        wall, mono = ledger._wall_at_reading  # type: ignore[attr-defined]
        ledger._wall_at_reading = (wall - hour, mono)  # type: ignore[attr-defined]  # the wall clock moved on
        real_time = ledger._redis.time  # type: ignore[attr-defined]
        readings = 0

        async def slow_time() -> Any:
            nonlocal readings
            readings += 1
            await anyio.sleep(0.1)  # over CLOCK_ROUND_TRIP_SECONDS
            return await real_time()

        monkeypatch.setattr(ledger._redis, "time", slow_time)  # type: ignore[attr-defined]
        for _ in range(3):
            assert isinstance(await ledger.reserve("tracemoe", "guest", DAY, slots=10), Refusal)
        assert abs((ledger.now() - datetime.now(UTC)).total_seconds()) < 1
        assert readings == 1
    finally:
        await ledger.aclose()


async def test_a_reset_a_worker_behind_works_out_from_its_own_clock_holds_for_the_fleet(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker 10 min behind the Redis server's clock is told the hour is spent for 120 s more (a TTL):
    the reset it works out on its own clock is moved onto the ledger's with the rest of what it read, and
    a worker with a correct clock is refused for those 120 s, not for the hour nor for nothing."""
    from anisearch._ledger._windows import from_us
    from anisearch._models import Quota

    hour = [WindowSpec("hour", span_seconds=3600, limit=10)]
    late = ahead(redis_url, monkeypatch, timedelta(minutes=-10))
    good = open_ledger(redis_url)
    try:
        ticket = await late.reserve("whatanime-ga", "guest", hour, slots=10)
        assert isinstance(ticket, Ticket)
        local_now = datetime.now(UTC) - timedelta(minutes=10)  # what its provider stamps
        spent = Quota(
            provider="whatanime-ga",
            window="hour",
            limit=10,
            used=10,
            remaining=0,
            resets_at=local_now + timedelta(seconds=120),
            observed_at=local_now,
            source="headers",
        )
        await late.settle(ticket, "charged", observations=[spent])
        refusal = await good.reserve("whatanime-ga", "guest", hour, slots=10)
        assert isinstance(refusal, Refusal)
        assert 115 <= (from_us(refusal.until) - good.now()).total_seconds() <= 121
    finally:
        for ledger in (late, good):
            await ledger.aclose()

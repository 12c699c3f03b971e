"""The Redis ledger hands a freed slot to the search queued first: the search's nap returns its ticket, and
it sends without asking the ledger again (one round trip less between two searches on one slot)."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import pytest
from tests.test_router import Scripted, answer, routes

from anisearch._exceptions import LedgerError
from anisearch._ledger import Ledger, Refusal, Ticket, WindowSpec, open_ledger
from anisearch._ledger._base import Nap
from anisearch._ledger._redis import RedisLedger
from anisearch._models import Quota, SearchResult
from anisearch._router import Router

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

T0 = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
ROLLING = WindowSpec("rolling-24h", span_seconds=86400, limit=3, reported=True)
DAY = WindowSpec("day", calendar="day", limit=10)
WINDOWS = (ROLLING,)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # redis-py's client is asyncio-only


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def make(redis_url: str, clock: Clock) -> AsyncIterator[Callable[[], RedisLedger]]:
    """Ledgers on one Redis database, as separate processes of a fleet would open them."""
    opened: list[Ledger] = []

    def factory() -> RedisLedger:
        ledger = open_ledger(redis_url, clock=clock)
        assert isinstance(ledger, RedisLedger)
        opened.append(ledger)
        return ledger

    yield factory
    for ledger in opened:
        await ledger.aclose()


def counting_reserves(ledger: RedisLedger) -> list[str]:
    """The RESERVE script calls ``ledger`` makes (each one round trip)."""
    calls: list[str] = []
    run = ledger._run

    async def counted(script: str, *args: Any) -> Any:
        if script == "RESERVE":
            calls.append(script)
        return await run(script, *args)

    ledger._run = counted  # type: ignore[method-assign,assignment]
    return calls


@contextlib.asynccontextmanager
async def queued(*ledgers: RedisLedger) -> AsyncIterator[list[Nap]]:
    """Each ledger's search refused the slot held and queued for it, in this order; their naps."""
    async with contextlib.AsyncExitStack() as stack:
        naps = []
        for ledger in ledgers:
            nap = await stack.enter_async_context(ledger.listening("tracemoe", "guest"))
            refusal = await ledger.reserve("tracemoe", "guest", WINDOWS, waiting=nap)
            assert isinstance(refusal, Refusal)
            assert refusal.queued
            naps.append(nap)
        yield naps


async def held(ledger: Ledger) -> Ticket:
    ticket = await ledger.reserve("tracemoe", "guest", WINDOWS)
    assert isinstance(ticket, Ticket), ticket
    return ticket


async def used(ledger: Ledger, windows: tuple[WindowSpec, ...] = WINDOWS) -> int:
    (found,) = [q for q in await ledger.snapshot(windows=lambda _: windows) if q.window == windows[0].name]
    assert found.used is not None
    return found.used


async def test_a_queued_search_is_handed_the_freed_slot_without_asking_again(
    make: Callable[[], RedisLedger], clock: Clock
) -> None:
    first, second, third = make(), make(), make()
    ticket = await held(first)
    reserves = counting_reserves(second)
    async with second.listening("tracemoe", "guest") as nap:
        refusal = await second.reserve("tracemoe", "guest", WINDOWS, lease_seconds=5, waiting=nap)
        assert isinstance(refusal, Refusal)
        assert (refusal.kind, refusal.queued) == ("concurrency", True)
        clock.now += timedelta(seconds=1)
        async with anyio.create_task_group() as group:
            group.start_soon(first.free_slot, ticket)  # its answer is in
            with anyio.fail_after(5):
                handed = await nap(0.9)
    assert isinstance(handed, Ticket)
    assert reserves == ["RESERVE"]  # asked once: the slot came with the wake-up
    assert handed.reserved_at == clock.now  # reserved when the slot freed, its lease from then on
    assert handed.lease_until == clock.now + timedelta(seconds=5)
    assert isinstance(await third.reserve("tracemoe", "guest", WINDOWS), Refusal)  # the slot is its
    assert await used(third) == 2
    await first.settle(ticket, "charged")
    await second.settle(handed, "charged")  # the ticket settles like any other, and frees the slot
    assert isinstance(await third.reserve("tracemoe", "guest", WINDOWS), Ticket)


async def test_a_slot_handed_over_after_the_nap_ended_is_taken_on_asking_again(
    make: Callable[[], RedisLedger], clock: Clock
) -> None:
    first, second, third = make(), make(), make()
    ticket = await held(first)
    async with queued(second) as (nap,):
        assert await nap(0.01) is None  # nothing freed yet
        clock.now += timedelta(seconds=1)
        await first.free_slot(ticket)  # reserved for the queued search, which is not napping
        again = await second.reserve("tracemoe", "guest", WINDOWS, waiting=nap)
    assert isinstance(again, Ticket)
    assert again.reserved_at == clock.now
    assert isinstance(await third.reserve("tracemoe", "guest", WINDOWS), Refusal)  # one slot, one holder
    assert await used(third) == 2


async def test_a_search_that_stops_waiting_gives_up_the_slot_reserved_for_it(
    make: Callable[[], RedisLedger],
) -> None:
    first, second, third = make(), make(), make()
    ticket = await held(first)
    async with queued(second):
        await first.free_slot(ticket)  # reserved for the second search, which then gives up (a deadline)
    assert isinstance(await third.reserve("tracemoe", "guest", WINDOWS), Ticket)  # the slot is free again
    assert await used(third) == 2  # the first search and the third: the second never sent anything


async def test_a_cancelled_nap_takes_the_search_out_of_the_queue(make: Callable[[], RedisLedger]) -> None:
    first, second, third = make(), make(), make()
    ticket = await held(first)
    with anyio.move_on_after(0.3):
        async with second.listening("tracemoe", "guest") as nap:
            assert isinstance(await second.reserve("tracemoe", "guest", WINDOWS, waiting=nap), Refusal)
            await nap(30)  # cancelled while queued
    await first.free_slot(ticket)
    assert isinstance(await third.reserve("tracemoe", "guest", WINDOWS), Ticket)  # it was not queued any more


async def test_a_search_cancelled_while_it_is_being_queued_is_taken_out_of_the_queue(
    make: Callable[[], RedisLedger],
) -> None:
    """Its reserve ran on the server but the answer never reached it (a deadline, a failed sibling)."""
    first, second, third = make(), make(), make()
    ticket = await held(first)
    run = second._run

    async def answer_lost(script: str, *args: Any) -> Any:
        reply = await run(script, *args)
        if script == "RESERVE":
            await anyio.sleep(30)  # cancelled before the answer is read
        return reply

    second._run = answer_lost  # type: ignore[method-assign,assignment]
    with anyio.move_on_after(0.3):
        async with second.listening("tracemoe", "guest") as nap:
            await second.reserve("tracemoe", "guest", WINDOWS, waiting=nap)
    await first.free_slot(ticket)
    assert isinstance(await third.reserve("tracemoe", "guest", WINDOWS), Ticket)  # nobody holds it
    assert await used(third) == 2


async def test_a_queued_search_refused_when_a_slot_frees_keeps_its_place(
    make: Callable[[], RedisLedger], clock: Clock
) -> None:
    """The slot freed inside a busy backoff: the first queued search is woken to ask itself (and is told
    to wait), and stays first in the queue for the next slot."""
    first, second, third = make(), make(), make()
    ticket = await held(first)
    async with queued(second, third) as (second_nap, _):  # the third, queued behind the second
        await first.settle(ticket, "uncharged", busy="Concurrency limit exceeded")  # a backoff of 0.25-0.5 s
        with anyio.fail_after(5):
            assert await second_nap(0.9) is None  # woken, not handed the slot
        clock.now += timedelta(seconds=1)  # the backoff is over
        assert isinstance(await first.reserve("tracemoe", "guest", WINDOWS), Refusal)  # no overtaking
        with anyio.fail_after(5):
            assert isinstance(await second_nap(0.9), Ticket)  # still first in the queue


async def test_a_slot_whose_lease_lapsed_goes_to_the_search_queued_first(
    make: Callable[[], RedisLedger], clock: Clock
) -> None:
    """The holder never settles (its process hangs): once its lease lapses, the next search to ask does not
    take the slot ahead of the queue; the search queued first is handed it."""
    first, second, third = make(), make(), make()
    stuck = await first.reserve("tracemoe", "guest", WINDOWS, lease_seconds=1)
    assert isinstance(stuck, Ticket)
    async with queued(second) as (nap,):
        clock.now += timedelta(seconds=1.5)  # the lease lapsed; the second is still queued (for 2 s)
        refusal = await third.reserve("tracemoe", "guest", WINDOWS)
        assert isinstance(refusal, Refusal)
        assert refusal.kind == "concurrency"
        with anyio.fail_after(5):
            handed = await nap(0.9)
        assert isinstance(handed, Ticket)
        assert handed.reserved_at == clock.now
    assert await used(third) == 2  # the lapsed search still counts; the third was never counted


async def test_a_slot_of_a_dead_holder_goes_to_the_search_queued_first(
    make: Callable[[], RedisLedger], monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second, third = make(), make(), make()
    monkeypatch.setattr("anisearch._ledger._base.this_holder", lambda: "host:1:1")  # a process that died
    await held(first)
    monkeypatch.undo()
    async with queued(second) as (nap,):
        refusal = await third.reserve("tracemoe", "guest", WINDOWS, dead_holders=frozenset({"host:1:1"}))
        assert isinstance(refusal, Refusal)
        assert refusal.kind == "concurrency"
        with anyio.fail_after(5):
            assert isinstance(await nap(0.9), Ticket)


async def test_the_search_queued_first_is_handed_a_lapsed_slot_when_it_asks_again(
    make: Callable[[], RedisLedger], clock: Clock
) -> None:
    first, second, third = make(), make(), make()
    stuck = await first.reserve("tracemoe", "guest", WINDOWS, lease_seconds=1)
    assert isinstance(stuck, Ticket)
    async with queued(second, third) as (second_nap, third_nap):
        clock.now += timedelta(seconds=1.5)
        assert isinstance(await third.reserve("tracemoe", "guest", WINDOWS, waiting=third_nap), Refusal)
        ticket = await second.reserve("tracemoe", "guest", WINDOWS, waiting=second_nap)
        assert isinstance(ticket, Ticket)
        assert ticket.reserved_at == clock.now
        assert await second_nap(0.01) is None  # nothing left announced for it


async def test_a_queued_search_that_no_longer_naps_is_passed_over(
    make: Callable[[], RedisLedger], clock: Clock
) -> None:
    """A queued search stays queued for two seconds unless it asks again (a process that died)."""
    first, second, third = make(), make(), make()
    ticket = await held(first)
    async with queued(second) as (nap,):
        clock.now += timedelta(seconds=3)
        await first.free_slot(ticket)
        assert isinstance(await third.reserve("tracemoe", "guest", WINDOWS), Ticket)
        refusal = await second.reserve("tracemoe", "guest", WINDOWS, waiting=nap)  # queued anew
        assert isinstance(refusal, Refusal)
        assert refusal.queued


async def test_a_queued_search_is_handed_no_slot_once_its_quota_is_spent(
    make: Callable[[], RedisLedger],
) -> None:
    first, second = make(), make()
    ticket = await held(first)
    async with queued(second) as (nap,):
        spent = Quota(provider="tracemoe", limit=3, used=3, observed_at=T0)
        async with anyio.create_task_group() as group:
            group.start_soon(partial(first.settle, ticket, "charged", observations=[spent]))
            with anyio.fail_after(5):
                assert await nap(0.9) is None  # woken to ask itself
        refusal = await second.reserve("tracemoe", "guest", WINDOWS, waiting=nap)
    assert isinstance(refusal, Refusal)
    assert (refusal.kind, refusal.queued) == ("quota", False)


async def test_a_slot_freed_in_the_next_calendar_period_is_not_handed_to_a_search_queued_in_the_last(
    make: Callable[[], RedisLedger], clock: Clock
) -> None:
    """The search would count in the day it was queued in: it asks again instead, in the new day."""
    windows = (DAY,)
    first, second, third = make(), make(), make()
    clock.now = datetime(2026, 11, 21, 23, 59, 59, 500_000, tzinfo=UTC)
    ticket = await first.reserve("tracemoe", "guest", windows)
    assert isinstance(ticket, Ticket)
    async with second.listening("tracemoe", "guest") as nap:
        assert isinstance(await second.reserve("tracemoe", "guest", windows, waiting=nap), Refusal)
        clock.now += timedelta(seconds=1)  # past midnight
        await first.free_slot(ticket)
        assert isinstance(await third.reserve("tracemoe", "guest", windows), Ticket)


async def test_searches_queue_in_the_order_they_were_refused(make: Callable[[], RedisLedger]) -> None:
    first, second, third = make(), make(), make()
    ticket = await held(first)
    async with queued(second, third) as (second_nap, third_nap):
        # the third asks again (its nap ended): it keeps its place behind the second
        assert isinstance(await third.reserve("tracemoe", "guest", WINDOWS, waiting=third_nap), Refusal)
        await first.free_slot(ticket)
        with anyio.fail_after(5):
            handed = await second_nap(0.9)
        assert isinstance(handed, Ticket)
        await second.settle(handed, "charged")
        with anyio.fail_after(5):
            assert isinstance(await third_nap(0.9), Ticket)


async def test_a_search_waiting_in_another_process_sends_on_the_slot_handed_to_it(
    make: Callable[[], RedisLedger],
) -> None:
    """Two routers on two ledgers of one Redis database (two workers): the second search is refused, is
    handed the slot freed by the first one's answer, and sends without a third reserve."""
    first_ledger, second_ledger = make(), make()
    reserves = counting_reserves(second_ledger)
    queued, sending = anyio.Event(), anyio.Event()

    async def upstream(_provider: Any, request: httpx.Request) -> httpx.Response:
        sending.set()
        if not queued.is_set():  # the first search answers once the second is queued
            with anyio.fail_after(5):
                await queued.wait()
        return httpx.Response(200, request=request)

    reserve = second_ledger.reserve

    async def noting(*args: Any, **kwargs: Any) -> Any:
        result = await reserve(*args, **kwargs)
        if isinstance(result, Refusal) and result.queued:
            queued.set()
        return result

    second_ledger.reserve = noting  # type: ignore[method-assign]
    provider = Scripted("one", answer("one", 0.9), answer("one", 0.9))
    first = Router(first_ledger, upstream, wait_seconds=5, lease_seconds=5)
    second = Router(second_ledger, upstream, wait_seconds=5, lease_seconds=5)
    results: list[SearchResult] = []

    async def search(router: Router) -> None:
        results.append(await router.search(routes(provider)))

    async with anyio.create_task_group() as group:
        group.start_soon(search, first)
        await sending.wait()  # the first search holds the slot
        group.start_soon(search, second)
    assert [r.provider for r in results] == ["one", "one"]
    # refused once without waiting, once queued; then handed the slot, with no reserve of its own
    assert reserves == ["RESERVE", "RESERVE"]


async def test_a_search_whose_queueing_failed_has_nothing_to_withdraw(
    make: Callable[[], RedisLedger], caplog: pytest.LogCaptureFixture
) -> None:
    first, second = make(), make()
    await held(first)
    calls: list[str] = []

    async def down(script: str, *args: Any) -> Any:
        calls.append(script)
        raise LedgerError("the quota ledger cannot be used (ConnectionError)", ledger=second.url)

    second._run = down  # type: ignore[method-assign,assignment]
    async with second.listening("tracemoe", "guest") as nap:
        with pytest.raises(LedgerError):
            await second.reserve("tracemoe", "guest", WINDOWS, waiting=nap)
    # The nap's exit withdraws nothing (and so never warns that the search stays queued); the reserve, which
    # may have run on Redis before the error, is given up as one whose reply was lost: its FREE failed too.
    assert calls[:2] == ["RESERVE", "FREE"]
    assert "stays queued" not in caplog.text


async def test_a_wait_whose_connection_is_lost_ends_as_if_it_timed_out(
    make: Callable[[], RedisLedger], redis_url: str
) -> None:
    """Redis restarting, or a network blip, while searches wait for a slot: each wait ends without an
    error (a waiting search has sent nothing), and the search asks again; it failed at once."""
    import redis.asyncio

    first, second, third = make(), make(), make()
    await held(first)
    ended: list[object] = []

    async def killer() -> None:
        await anyio.sleep(0.2)
        async with redis.asyncio.Redis.from_url(redis_url) as admin:
            await admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")  # type: ignore[no-untyped-call]

    async with queued(second) as (nap,):
        with anyio.fail_after(5):
            async with anyio.create_task_group() as group:
                group.start_soon(killer)

                async def queued_wait() -> None:
                    ended.append(await nap(0.9))

                async def plain_wait() -> None:
                    await third.wait("tracemoe", "guest", 0.9)
                    ended.append("woke")

                group.start_soon(queued_wait)
                group.start_soon(plain_wait)
    assert sorted(map(str, ended)) == ["None", "woke"]
    assert isinstance(await third.reserve("tracemoe", "guest", WINDOWS), Refusal)  # and Redis answers again

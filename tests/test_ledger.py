"""The quota ledger: one suite run against memory://, sqlite:/// and redis:// (a real redis-server)."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import sqlite3
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import anyio
import pytest
import redis

from anisearch._exceptions import ConfigurationError, LedgerError
from anisearch._ledger import (
    UPSTREAM_HOLDER,
    Ledger,
    Refusal,
    Stale,
    Ticket,
    WindowSpec,
    default_ledger_url,
    open_ledger,
    scope_id,
)
from anisearch._ledger import _doorbell as doorbell
from anisearch._ledger import _sqlite as sqlite_backend
from anisearch._ledger._base import holder_is_dead, this_holder
from anisearch._ledger._windows import from_us, period_bounds
from anisearch._models import Quota
from anisearch._sqlite_busy import resetting, set_aside

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
KEY = scope_id("api-key", "sk-live-0123456789abcdef")
GUEST = "guest"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # redis-py's client is asyncio-only


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


BACKENDS = ["memory", "sqlite", pytest.param("redis", marks=pytest.mark.redis)]
SHARED_BACKENDS = ["sqlite", pytest.param("redis", marks=pytest.mark.redis)]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def ledger_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if backend == "memory":
        return "memory://"
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'state' / 'ledger.sqlite3'}"
    return str(request.getfixturevalue("redis_url"))


@pytest.fixture
async def make(ledger_url: str, clock: FakeClock) -> AsyncIterator[Callable[..., Ledger]]:
    """Open ledgers on the test's store (same file / same Redis database), all closed afterwards."""
    opened: list[Ledger] = []

    def factory(timezone: str = "UTC") -> Ledger:
        ledger = open_ledger(ledger_url, timezone=timezone, clock=clock)
        opened.append(ledger)
        return ledger

    yield factory
    for ledger in opened:
        await ledger.aclose()


@pytest.fixture
def ledger(make: Callable[..., Ledger]) -> Ledger:
    return make()


def quota(**fields: Any) -> Quota:
    return Quota(**{"provider": "tracemoe", "observed_at": T0, **fields})


ROLLING = WindowSpec("rolling-24h", span_seconds=86400, limit=3, reported=True)
MINUTE = WindowSpec("minute", span_seconds=60, counts="requests", kind="rate", limit=100)
DAY = WindowSpec("day", calendar="day", limit=5)
HOUR = WindowSpec("hour", span_seconds=3600, kind="rate", limit=100)
TRACEMOE = (ROLLING, MINUTE)


async def search(
    ledger: Ledger,
    windows: tuple[WindowSpec, ...] = TRACEMOE,
    outcome: str = "charged",
    scope: str = GUEST,
    **settle: Any,
) -> Ticket:
    """One search that reserves and settles at once (the common case)."""
    ticket = await ledger.reserve("tracemoe", scope, windows, trust_estimate=True)
    assert isinstance(ticket, Ticket), ticket
    await ledger.settle(ticket, outcome, **settle)  # type: ignore[arg-type]
    return ticket


async def refused(ledger: Ledger, windows: tuple[WindowSpec, ...] = TRACEMOE, **kwargs: Any) -> Refusal:
    result = await ledger.reserve("tracemoe", kwargs.pop("scope", GUEST), windows, **kwargs)
    assert isinstance(result, Refusal), result
    return result


async def only(ledger: Ledger, window: str) -> Quota:
    found = [q for q in await ledger.snapshot(windows=lambda _: TRACEMOE) if q.window == window]
    assert len(found) == 1, found
    return found[0]


# ---------------------------------------------------------------------------------------------- windows


async def test_a_rolling_window_frees_slot_by_slot_by_event_time(ledger: Ledger, clock: FakeClock) -> None:
    """Quota 3 at T, T+1h, T+2h: at T+23h refused until T+24h; then the T search has aged out."""
    for _ in range(3):
        await search(ledger)
        clock.advance(hours=1)
    clock.now = T0 + timedelta(hours=23)
    refusal = await refused(ledger)
    assert (refusal.kind, refusal.window) == ("quota", "rolling-24h")
    assert from_us(refusal.until) == T0 + timedelta(hours=24)
    clock.now = T0 + timedelta(hours=24, minutes=1)
    assert isinstance(await ledger.reserve("tracemoe", GUEST, TRACEMOE, trust_estimate=True), Ticket)
    assert isinstance(await refused(ledger), Refusal)  # T+1h has not aged out yet


async def test_searches_in_flight_count_before_they_are_settled(ledger: Ledger) -> None:
    tickets = [await ledger.reserve("tracemoe", GUEST, TRACEMOE, take_slot=False) for _ in range(3)]
    assert all(isinstance(ticket, Ticket) for ticket in tickets)
    assert (await refused(ledger, take_slot=False)).kind == "quota"
    for ticket in tickets:
        assert isinstance(ticket, Ticket)
        await ledger.settle(ticket, "uncharged")  # answered with an error: the upstream did not count them
    assert isinstance(await ledger.reserve("tracemoe", GUEST, TRACEMOE, take_slot=False), Ticket)


async def test_an_upstream_count_reconciles_unknown_searches(ledger: Ledger, clock: FakeClock) -> None:
    """Searches the ledger never saw (another machine on the address) leave at the count's time + 24 h."""
    await ledger.observe("tracemoe", GUEST, TRACEMOE, [quota(limit=3, used=3, observed_at=T0)])
    refusal = await refused(ledger)
    assert from_us(refusal.until) == T0 + timedelta(hours=24)
    assert (await only(ledger, "rolling-24h")).source == "upstream"


async def test_a_lower_upstream_count_drops_the_oldest_local_searches(
    ledger: Ledger, clock: FakeClock
) -> None:
    for _ in range(3):
        await search(ledger)
        clock.advance(minutes=10)
    await ledger.observe("tracemoe", GUEST, TRACEMOE, [quota(limit=3, used=2, observed_at=clock.now)])
    assert (await only(ledger, "rolling-24h")).used == 2
    await search(ledger)
    refusal = await refused(ledger)
    assert from_us(refusal.until) == T0 + timedelta(hours=24, minutes=10)  # the oldest counted one left


async def test_a_count_in_an_answer_keeps_the_searches_answered_while_it_was_in_flight(
    ledger: Ledger, clock: FakeClock
) -> None:
    """The upstream counted the first search before the second reached it; the second answered first."""
    first = await ledger.reserve("tracemoe", GUEST, TRACEMOE, take_slot=False)
    clock.advance(seconds=1)
    second = await ledger.reserve("tracemoe", GUEST, TRACEMOE, take_slot=False)
    assert isinstance(first, Ticket)
    assert isinstance(second, Ticket)
    clock.advance(seconds=1)
    await ledger.settle(second, "charged")
    clock.advance(seconds=1)
    await ledger.settle(first, "charged", observations=[quota(limit=3, used=1, observed_at=clock.now)])
    assert (await only(ledger, "rolling-24h")).used == 2  # the second search still counts


async def test_a_count_in_an_answer_still_drops_earlier_searches_missing_upstream(
    ledger: Ledger, clock: FakeClock
) -> None:
    for _ in range(2):
        await search(ledger)  # say, two timeouts counted as maybe charged that the upstream never ran
        clock.advance(minutes=10)
    await search(ledger, observations=[quota(limit=3, used=1, observed_at=clock.now)])
    assert (await only(ledger, "rolling-24h")).used == 1


async def test_a_quota_check_keeps_the_searches_answered_while_it_was_in_flight(
    ledger: Ledger, clock: FakeClock
) -> None:
    sent_at = clock.now
    clock.advance(seconds=1)
    await search(ledger)  # answered while the quota check was on its way back
    clock.advance(seconds=1)
    told = [quota(limit=3, used=0, observed_at=clock.now)]
    await ledger.observe("tracemoe", GUEST, TRACEMOE, told, sent_at=sent_at)
    assert (await only(ledger, "rolling-24h")).used == 1


async def test_a_quota_check_after_a_given_up_search_ran_to_its_end_counts_it_once(
    ledger: Ledger, clock: FakeClock
) -> None:
    """A search given up while the upstream ran it (its slot held a while, then its lease lapsed) is in
    the upstream's next count: a quota check then counts it once, not once more as a search unknown here."""
    ticket = await ledger.reserve("tracemoe", GUEST, TRACEMOE)
    assert isinstance(ticket, Ticket)
    assert await ledger.hold(ticket, 2.0)  # given up; the upstream works on it about 2 s more
    clock.advance(seconds=3)  # it ran to its end upstream, and was counted there; nothing reserved since
    told = [quota(limit=100, used=1, observed_at=clock.now)]
    await ledger.observe("tracemoe", GUEST, TRACEMOE, told, sent_at=clock.now)
    assert (await only(ledger, "rolling-24h")).used == 1
    await ledger.observe("tracemoe", GUEST, TRACEMOE, told, sent_at=clock.now)  # asked again: the same
    assert (await only(ledger, "rolling-24h")).used == 1


WIDE = (WindowSpec("rolling-24h", span_seconds=86400, limit=10, reported=True),)


async def used_of(ledger: Ledger, windows: tuple[WindowSpec, ...]) -> int | None:
    return next(q.used for q in await ledger.snapshot(windows=lambda _: windows) if q.window == "rolling-24h")


async def test_a_count_in_an_answer_judges_only_answered_searches_not_those_still_in_flight(
    ledger: Ledger, clock: FakeClock
) -> None:
    await search(ledger, WIDE)  # answered long before: the upstream no longer counts it
    clock.advance(minutes=1)
    in_flight = await ledger.reserve(
        "tracemoe", GUEST, WIDE, take_slot=False, lease_seconds=3600
    )  # no answer yet
    clock.advance(minutes=10)
    counted = await ledger.reserve("tracemoe", GUEST, WIDE, take_slot=False, lease_seconds=3600)
    assert isinstance(in_flight, Ticket)
    assert isinstance(counted, Ticket)
    clock.advance(seconds=2)
    await search(ledger, WIDE)  # answered while the counted search was in flight
    clock.advance(seconds=1)
    await ledger.settle(counted, "charged", observations=[quota(limit=10, used=1, observed_at=clock.now)])
    assert await used_of(ledger, WIDE) == 3  # the one in flight, the counted one, the one answered during it


async def test_a_count_in_an_answer_keeps_a_search_answered_a_moment_before_it_set_out(
    ledger: Ledger, clock: FakeClock
) -> None:
    """trace.moe counts a search a moment after answering it (once its log row is written)."""
    await search(ledger, WIDE)
    clock.advance(seconds=0.5)
    counted = await ledger.reserve("tracemoe", GUEST, WIDE, take_slot=False)
    assert isinstance(counted, Ticket)
    clock.advance(seconds=1)
    await ledger.settle(counted, "charged", observations=[quota(limit=10, used=1, observed_at=clock.now)])
    assert await used_of(ledger, WIDE) == 2


async def test_a_count_of_zero_in_an_answer_keeps_the_searches_answered_while_it_was_in_flight(
    ledger: Ledger, clock: FakeClock
) -> None:
    await search(ledger)  # counted by the upstream, which now says 0: it is dropped
    clock.advance(minutes=10)
    first = await ledger.reserve("tracemoe", GUEST, TRACEMOE, take_slot=False)
    assert isinstance(first, Ticket)
    clock.advance(seconds=2)
    await search(ledger)
    clock.advance(seconds=1)
    await ledger.settle(first, "charged", observations=[quota(limit=3, used=0, observed_at=clock.now)])
    assert (await only(ledger, "rolling-24h")).used == 2  # the first and the one answered during it


async def test_a_count_in_a_calendar_window_drops_the_oldest_searches_across_midnight(
    make: Callable[..., Ledger], clock: FakeClock
) -> None:
    """A calendar window's units all leave at midnight, so no order tells the searches apart: the count
    drops the oldest, whether the counted search set out the day before or not."""
    ledger = make()
    clock.now = datetime(2026, 11, 21, 23, 59, 59, tzinfo=UTC)
    first = await ledger.reserve("tracemoe", GUEST, (DAY,), take_slot=False)
    assert isinstance(first, Ticket)
    clock.now = datetime(2026, 11, 22, 0, 0, 1, tzinfo=UTC)
    for _ in range(2):
        await search(ledger, (DAY,))
    clock.advance(seconds=1)
    await ledger.settle(
        first, "charged", observations=[quota(window="day", limit=5, used=1, observed_at=clock.now)]
    )
    day = [q for q in await ledger.snapshot(windows=lambda _: (DAY,)) if q.window == "day"]
    assert [q.used for q in day] == [1]


async def test_a_freed_slot_is_confirmed_upstream_before_it_is_trusted(
    ledger: Ledger, clock: FakeClock
) -> None:
    for _ in range(3):
        await search(ledger)
    clock.advance(hours=24, minutes=1)
    stale = await ledger.reserve("tracemoe", GUEST, TRACEMOE)
    assert stale == Stale("rolling-24h")
    await ledger.observe("tracemoe", GUEST, TRACEMOE, [quota(limit=3, used=0, observed_at=clock.now)])
    assert isinstance(await ledger.reserve("tracemoe", GUEST, TRACEMOE), Ticket)


async def test_a_day_resets_at_local_midnight_of_its_zone(
    make: Callable[..., Ledger], clock: FakeClock
) -> None:
    ledger = make("Asia/Tokyo")
    windows = (DAY,)
    for _ in range(5):
        await search(ledger, windows)
    refusal = await refused(ledger, windows)
    _, end = period_bounds("day", T0, ZoneInfo("Asia/Tokyo"))
    assert from_us(refusal.until) == end
    clock.now = end
    assert isinstance(await ledger.reserve("tracemoe", GUEST, windows), Ticket)


def test_a_day_ends_at_the_next_local_midnight_across_dst() -> None:
    zone = ZoneInfo("Europe/Berlin")
    start, end = period_bounds("day", datetime(2026, 3, 29, 12, tzinfo=UTC), zone)
    assert (end - start) == timedelta(hours=23)


async def test_a_window_of_a_new_kind_needs_no_core_change(ledger: Ledger, clock: FakeClock) -> None:
    thirty = WindowSpec("30s", span_seconds=30, counts="requests", kind="rate", limit=2)
    await search(ledger, (thirty,))
    await search(ledger, (thirty,))
    refusal = await refused(ledger, (thirty,))
    assert (refusal.kind, refusal.window, from_us(refusal.until)) == (
        "rate",
        "30s",
        T0 + timedelta(seconds=30),
    )
    clock.advance(seconds=30)
    assert isinstance(await ledger.reserve("tracemoe", GUEST, (thirty,)), Ticket)


async def test_a_rate_window_refuses_as_a_rate_limit(ledger: Ledger) -> None:
    rate = WindowSpec("minute", span_seconds=60, counts="requests", kind="rate", limit=1)
    await search(ledger, (rate,), outcome="uncharged")  # an error answer is still a request
    assert (await refused(ledger, (rate,))).kind == "rate"


async def test_every_window_counts_every_search(ledger: Ledger) -> None:
    """A count reported for the day window does not stop the hour window from counting."""
    hour = WindowSpec("hour", span_seconds=3600, kind="rate", limit=2)
    windows = (WindowSpec("day", calendar="day", limit=100), hour)
    for left in (99, 98):
        await search(ledger, windows, observations=[quota(window="day", remaining=left, observed_at=T0)])
    refusal = await refused(ledger, windows)
    assert (refusal.kind, refusal.window) == ("rate", "hour")


async def test_remaining_without_a_limit_blocks_at_zero(ledger: Ledger, clock: FakeClock) -> None:
    windows = (WindowSpec("day", calendar="day"),)
    await ledger.observe("tracemoe", GUEST, windows, [quota(window="day", remaining=0, observed_at=T0)])
    refusal = await refused(ledger, windows)
    assert from_us(refusal.until) == period_bounds("day", T0, ZoneInfo("UTC"))[1]


async def test_a_spent_count_without_a_limit_is_not_shown_as_a_limit(ledger: Ledger) -> None:
    """whatanime-ga's 429 says only that nothing is left of the day (other clients spent it): the one
    search this ledger counted is no limit of 1, in the snapshot or in the refusal's reason."""
    day = WindowSpec("day", calendar="day", limit=150)
    told = [quota(window="day", remaining=0, observed_at=T0)]
    await search(ledger, (day,), observations=told)
    snapshot = [q for q in await ledger.snapshot(windows=lambda _: (day,)) if q.window == "day"]
    assert [(q.limit, q.remaining) for q in snapshot] == [(None, 0)]
    refusal = await refused(ledger, (day,))
    assert (refusal.window, refusal.reason) == (
        "day",
        "none left by the upstream's count and the searches since",
    )


async def test_purchased_credits_raise_the_enforced_limit(ledger: Ledger) -> None:
    windows = (WindowSpec("day", calendar="day", limit=10),)
    await ledger.observe("tracemoe", GUEST, windows, [quota(window="day", remaining=25, observed_at=T0)])
    assert (await only(ledger, "day")).remaining == 25


# ---------------------------------------------------------------------------------------------- settling


async def test_a_search_sent_but_not_answered_stays_counted(ledger: Ledger) -> None:
    for _ in range(3):
        await search(ledger, outcome="charged")  # a dropped connection after sending: maybe charged
    assert (await refused(ledger)).kind == "quota"


async def test_an_unsent_request_counts_nowhere(ledger: Ledger) -> None:
    for _ in range(5):
        await search(ledger, outcome="unsent")
    assert (await only(ledger, "minute")).used == 0


async def test_a_cooldown_refuses_with_its_own_kind_and_keeps_the_later(
    ledger: Ledger, clock: FakeClock
) -> None:
    later, sooner = T0 + timedelta(minutes=5), T0 + timedelta(minutes=1)
    first = await ledger.reserve("tracemoe", GUEST, TRACEMOE, take_slot=False)
    second = await ledger.reserve("tracemoe", GUEST, TRACEMOE, take_slot=False)
    assert isinstance(first, Ticket)
    assert isinstance(second, Ticket)
    await ledger.settle(first, "uncharged", cooldown=(later, "HTTP 429", "rate"))
    await ledger.settle(second, "uncharged", cooldown=(sooner, "HTTP 429", "rate"))
    refusal = await refused(ledger)
    assert (refusal.kind, from_us(refusal.until), refusal.reason) == ("rate", later, "HTTP 429")
    clock.now = later
    assert isinstance(await ledger.reserve("tracemoe", GUEST, TRACEMOE), Ticket)


async def test_a_short_cooldown_on_a_spent_window_refuses_until_the_window_frees(
    ledger: Ledger, clock: FakeClock
) -> None:
    day = WindowSpec("rolling-24h", span_seconds=86400, limit=2)
    for _ in range(2):
        ticket = await ledger.reserve("tracemoe", GUEST, (day,))
        assert isinstance(ticket, Ticket)
        await ledger.settle(ticket, "charged")
    probe = await ledger.reserve("tracemoe", GUEST, (), take_slot=False)
    assert isinstance(probe, Ticket)
    await ledger.settle(probe, "uncharged", cooldown=(T0 + timedelta(seconds=30), "HTTP 429", "rate"))
    refusal = await ledger.reserve("tracemoe", GUEST, (day,))
    assert isinstance(refusal, Refusal)
    # the 30 s cooldown is not the wait: the spent day is, so a bot retrying at `until` is admitted
    assert (refusal.kind, from_us(refusal.until)) == ("quota", T0 + timedelta(days=1))
    clock.now = from_us(refusal.until)
    assert isinstance(await ledger.reserve("tracemoe", GUEST, (day,)), Ticket)


async def test_a_spent_block_lasts_until_given_and_a_fresh_count_lifts_it(
    ledger: Ledger, clock: FakeClock
) -> None:
    until = T0 + timedelta(hours=3)
    await search(ledger, outcome="uncharged", blocks=[("rolling-24h", until)])
    refusal = await refused(ledger)
    assert (refusal.kind, from_us(refusal.until)) == ("quota", until)
    await ledger.observe("tracemoe", GUEST, TRACEMOE, [quota(limit=3, used=0, observed_at=clock.now)])
    assert isinstance(await ledger.reserve("tracemoe", GUEST, TRACEMOE), Ticket)


@pytest.mark.parametrize("backend", SHARED_BACKENDS, indirect=True)
async def test_busy_answers_grow_one_backoff_for_everyone(
    make: Callable[..., Ledger], clock: FakeClock
) -> None:
    one, two = make(), make()
    await search(one, outcome="uncharged", busy="queue full")
    first = await refused(two)
    assert first.kind == "busy"
    assert T0 < from_us(first.until) <= T0 + timedelta(seconds=0.5)
    clock.now = from_us(first.until)
    await search(two, outcome="uncharged", busy="queue full")
    second = await refused(one)
    assert timedelta(seconds=0.5) <= from_us(second.until) - clock.now <= timedelta(seconds=1)
    clock.now = from_us(second.until)
    await search(one)  # a success resets the streak
    await search(one, outcome="uncharged", busy="queue full")
    assert from_us((await refused(two)).until) - clock.now <= timedelta(seconds=0.5)


async def test_concurrency_and_priority_are_kept(ledger: Ledger) -> None:
    await ledger.observe("tracemoe", GUEST, TRACEMOE, [quota(limit=3, used=0, concurrency=2, priority=5)])
    found = await only(ledger, "rolling-24h")
    assert (found.concurrency, found.priority) == (2, 5)
    assert isinstance(await ledger.reserve("tracemoe", GUEST, TRACEMOE), Ticket)
    assert isinstance(await ledger.reserve("tracemoe", GUEST, TRACEMOE), Ticket)
    assert (await refused(ledger)).kind == "concurrency"


# ---------------------------------------------------------------------------------------------- slots


async def test_one_slot_and_its_holder(ledger: Ledger) -> None:
    ticket = await ledger.reserve("tracemoe", GUEST, TRACEMOE, slots=1)
    assert isinstance(ticket, Ticket)
    refusal = await refused(ledger, slots=1)
    assert refusal.kind == "concurrency"
    assert len(refusal.holders) == 1
    assert refusal.holders[0].split(":")[1] == str(os.getpid())
    await ledger.settle(ticket, "charged")
    assert isinstance(await ledger.reserve("tracemoe", GUEST, TRACEMOE, slots=1), Ticket)


async def test_a_lapsed_lease_frees_the_slot_and_stays_counted(ledger: Ledger, clock: FakeClock) -> None:
    assert isinstance(await ledger.reserve("tracemoe", GUEST, TRACEMOE, lease_seconds=10), Ticket)
    clock.advance(seconds=11)
    assert isinstance(await ledger.reserve("tracemoe", GUEST, TRACEMOE, lease_seconds=10), Ticket)
    assert (await only(ledger, "rolling-24h")).used == 2  # the lapsed one may have reached the upstream


async def test_a_renewed_lease_keeps_the_slot(ledger: Ledger, clock: FakeClock) -> None:
    ticket = await ledger.reserve("tracemoe", GUEST, TRACEMOE, lease_seconds=10)
    assert isinstance(ticket, Ticket)
    clock.advance(seconds=8)
    assert await ledger.renew(ticket, 10)
    clock.advance(seconds=8)
    assert (await refused(ledger)).kind == "concurrency"


async def test_a_dead_holder_frees_its_slot_at_once(ledger: Ledger) -> None:
    assert isinstance(await ledger.reserve("tracemoe", GUEST, TRACEMOE), Ticket)
    holder = (await refused(ledger)).holders[0]
    assert isinstance(
        await ledger.reserve("tracemoe", GUEST, TRACEMOE, dead_holders=frozenset({holder})), Ticket
    )


async def test_a_search_held_for_the_upstream_outlives_the_process_that_gave_it_up(
    ledger: Ledger, clock: FakeClock
) -> None:
    """A search given up while the upstream runs it keeps its slot until the hold ends, even when the
    process that gave it up has ended since (stopped by SIGTERM): the upstream holds it, not the process."""
    ticket = await ledger.reserve("tracemoe", GUEST, TRACEMOE)
    assert isinstance(ticket, Ticket)
    assert await ledger.hold(ticket, 2.0)
    (holder,) = (await refused(ledger)).holders
    assert holder.startswith(UPSTREAM_HOLDER)
    assert not holder_is_dead(holder)
    dead = frozenset({this_holder()})  # say this process had ended: its own searches' slots free
    refusal = await ledger.reserve("tracemoe", GUEST, TRACEMOE, dead_holders=dead)
    assert isinstance(refusal, Refusal)
    assert refusal.kind == "concurrency"
    clock.advance(seconds=3)  # the hold ends: the upstream is done with it
    assert isinstance(await ledger.reserve("tracemoe", GUEST, TRACEMOE, dead_holders=dead), Ticket)
    assert (await only(ledger, "rolling-24h")).used == 2  # the given-up one stays counted


async def test_a_waiter_wakes_when_the_slot_is_released(ledger: Ledger) -> None:
    ticket = await ledger.reserve("tracemoe", GUEST, TRACEMOE)
    assert isinstance(ticket, Ticket)
    woke: list[float] = []

    async def waiter() -> None:
        start = anyio.current_time()
        await ledger.wait("tracemoe", GUEST, 5)
        woke.append(anyio.current_time() - start)

    async with anyio.create_task_group() as group:
        group.start_soon(waiter)
        await anyio.sleep(0.05)
        await ledger.settle(ticket, "charged")
    assert woke
    assert woke[0] < 2  # woken by the release, not by the 5 s timeout


async def test_a_freed_slot_goes_to_the_next_search_while_the_first_stays_counted(ledger: Ledger) -> None:
    first = await ledger.reserve("tracemoe", GUEST, TRACEMOE)
    assert isinstance(first, Ticket)
    await ledger.free_slot(first)  # its answer arrived; it is still being read
    second = await ledger.reserve("tracemoe", GUEST, TRACEMOE)
    assert isinstance(second, Ticket)
    assert (await refused(ledger)).kind == "concurrency"  # the second holds the one slot now
    await ledger.settle(first, "charged")  # frees nothing more
    assert (await refused(ledger)).kind == "concurrency"
    assert (await only(ledger, "rolling-24h")).used == 2  # both counted: one settled, one in flight
    await ledger.settle(second, "charged")
    assert (await only(ledger, "rolling-24h")).used == 2
    assert isinstance(await ledger.reserve("tracemoe", GUEST, TRACEMOE), Ticket)


async def test_a_waiter_listening_before_it_asks_misses_no_freed_slot(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(doorbell, "MAX_NAP_SECONDS", 60.0)  # so only a wake-up ends the nap early
    ticket = await ledger.reserve("tracemoe", GUEST, TRACEMOE)
    assert isinstance(ticket, Ticket)
    other = await ledger.reserve("tracemoe", GUEST, TRACEMOE)
    async with ledger.listening("tracemoe", GUEST) as nap:
        assert isinstance(other, Refusal)
        await ledger.free_slot(ticket)  # freed after the refusal, before the nap
        start = anyio.current_time()
        await nap(30)
        assert anyio.current_time() - start < 10  # woken by the hand-over, not by the nap's end
    assert isinstance(await ledger.reserve("tracemoe", GUEST, TRACEMOE), Ticket)


# ---------------------------------------------------------------------------------------------- snapshot


async def test_snapshot_shows_defaults_estimates_and_upstream_truths(
    ledger: Ledger, clock: FakeClock
) -> None:
    await search(ledger)
    found = await only(ledger, "rolling-24h")
    assert (found.limit, found.used, found.remaining, found.source) == (3, 1, 2, "ledger")
    assert found.resets_at == T0 + timedelta(hours=24)
    clock.advance(minutes=1)
    await ledger.observe("tracemoe", GUEST, TRACEMOE, [quota(limit=3, used=1, observed_at=clock.now)])
    found = await only(ledger, "rolling-24h")
    assert (found.source, found.observed_at) == ("upstream", clock.now)


async def test_snapshot_filters_by_provider_and_names_the_scope(ledger: Ledger) -> None:
    await ledger.observe("tracemoe", KEY, TRACEMOE, [quota(limit=3, used=1)])
    await ledger.observe("other", GUEST, (DAY,), [quota(provider="other", window="day", limit=5, used=1)])
    mine = await ledger.snapshot("tracemoe")
    assert {q.provider for q in mine} == {"tracemoe"}
    assert {q.raw["scope_id"] for q in mine} == {KEY}
    assert all(q.scope == "api-key" for q in mine)


async def test_clear_forgets_one_provider_or_everything(ledger: Ledger) -> None:
    await ledger.observe("tracemoe", GUEST, TRACEMOE, [quota(limit=3, used=3)])
    await ledger.observe("other", GUEST, (DAY,), [quota(provider="other", window="day", limit=5, used=5)])
    await ledger.clear("tracemoe")
    assert {q.provider for q in await ledger.snapshot()} == {"other"}
    assert isinstance(await ledger.reserve("tracemoe", GUEST, TRACEMOE), Ticket)
    await ledger.clear()
    assert await ledger.snapshot() == []
    assert isinstance(await ledger.reserve("other", GUEST, (DAY,)), Ticket)


async def test_bad_input_is_refused(ledger: Ledger) -> None:
    with pytest.raises(ConfigurationError, match="scope_id"):
        await ledger.reserve("tracemoe", "sk-live-0123456789abcdef", TRACEMOE)  # a raw key is never stored
    with pytest.raises(ConfigurationError, match="provider"):
        await ledger.reserve("trace moe", GUEST, TRACEMOE)
    naive = datetime(2026, 1, 1)  # noqa: DTZ001 - the point of the test
    with pytest.raises(ConfigurationError, match="timezone-aware"):
        await ledger.observe("tracemoe", GUEST, TRACEMOE, [quota(limit=3, used=1, observed_at=naive)])
    with pytest.raises(ConfigurationError, match="within"):
        await ledger.observe("tracemoe", GUEST, TRACEMOE, [quota(limit=10, used=-1)])
    with pytest.raises(ConfigurationError, match="exactly one"):
        WindowSpec("broken")


@pytest.mark.parametrize("backend", SHARED_BACKENDS, indirect=True)
async def test_two_ledgers_on_one_store_share_state(make: Callable[..., Ledger]) -> None:
    writer, reader = make(), make()
    await writer.observe("tracemoe", KEY, TRACEMOE, [quota(limit=3, used=2, concurrency=1)])
    ticket = await writer.reserve("tracemoe", KEY, TRACEMOE)
    assert isinstance(ticket, Ticket)
    assert (await refused(reader, scope=KEY)).kind == "quota"  # the pending search counts everywhere
    await writer.settle(ticket, "unsent")
    await writer.observe("tracemoe", KEY, TRACEMOE, [quota(limit=3, used=1, observed_at=T0)])
    ticket = await writer.reserve("tracemoe", KEY, TRACEMOE)
    assert isinstance(ticket, Ticket)
    assert (await refused(reader, scope=KEY)).kind == "concurrency"
    await writer.settle(ticket, "unsent")
    assert isinstance(await reader.reserve("tracemoe", KEY, TRACEMOE), Ticket)


def test_one_memory_ledger_per_process() -> None:
    assert open_ledger("memory://") is open_ledger("memory://")


# ---------------------------------------------------------------------------------------------- privacy

SECRET_KEY = "sk-live-0123456789abcdef"
SECRET_IP = "203.0.113.77"


async def _write_everything(ledger: Ledger) -> None:
    raw = {"key": SECRET_KEY, "ip": SECRET_IP, "cookie": f"session={SECRET_KEY}"}
    observed = [
        quota(limit=100, used=5, concurrency=1, raw=raw),
        quota(window="minute", limit=100, remaining=99, raw=raw, source="headers"),
    ]
    await search(ledger, scope=KEY, observations=observed)
    assert isinstance(await ledger.reserve("tracemoe", KEY, TRACEMOE, take_slot=False), Ticket)  # in flight
    await search(
        ledger, scope=KEY, outcome="uncharged", cooldown=(T0 + timedelta(minutes=5), "HTTP 429", "rate")
    )
    await ledger.clear("other")


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_the_sqlite_file_holds_no_secret(ledger: Ledger, tmp_path: Path) -> None:
    await _write_everything(ledger)
    files = list((tmp_path / "state").iterdir())
    assert any(path.name.endswith("-wal") for path in files)  # the log is grepped too
    blob = b"".join(path.read_bytes() for path in files)
    assert KEY.encode() in blob  # the hashed scope is what is stored
    for secret in (SECRET_KEY, SECRET_IP, "0123456789abcdef"):
        assert secret.encode() not in blob
    await ledger.aclose()
    blob = b"".join(path.read_bytes() for path in (tmp_path / "state").iterdir())
    assert SECRET_KEY.encode() not in blob
    assert SECRET_IP.encode() not in blob


@pytest.mark.redis
@pytest.mark.parametrize("backend", ["redis"], indirect=True)
async def test_redis_holds_no_secret(ledger: Ledger, redis_url: str) -> None:
    await _write_everything(ledger)
    dump: list[str] = []
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        for key in client.scan_iter():
            dump.append(key)
            kind = client.execute_command("TYPE", key)
            if kind == "hash":
                dump += [f"{k}={v}" for k, v in client.hgetall(key).items()]
            elif kind == "zset":
                dump += [f"{member}={score}" for member, score in client.zrange(key, 0, -1, withscores=True)]
            elif kind == "set":
                dump += list(client.smembers(key))
            elif kind == "list":
                dump += list(client.lrange(key, 0, -1))
            else:  # pragma: no cover - the ledger writes no other type
                pytest.fail(f"unexpected Redis type {kind} at {key}")
    text = "\n".join(dump)
    assert KEY in text
    assert all(key.startswith("anisearch:ledger:") for key in dump[:1])
    for secret in (SECRET_KEY, SECRET_IP, "0123456789abcdef"):
        assert secret not in text


# ---------------------------------------------------------------------------------------------- open_ledger


def test_unknown_scheme_lists_the_supported_ones() -> None:
    with pytest.raises(ConfigurationError, match=r"memory://, sqlite:///path or redis://host:port/db"):
        open_ledger("postgres://db/ledger")
    with pytest.raises(ConfigurationError, match="names no file"):
        open_ledger("sqlite:///")
    with pytest.raises(ConfigurationError, match="unknown time zone 'Mars/Olympus'"):
        open_ledger("memory://", timezone="Mars/Olympus")


async def test_a_relative_sqlite_path_surely_meant_as_absolute_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``sqlite:///tmp/x.db`` is ``./tmp/x.db``: started elsewhere, a second process would keep a second
    ledger and spend the quota twice. When ``./tmp`` is missing and ``/tmp`` is not, that is a typo."""
    absolute = tmp_path / "ledger.db"
    here = tmp_path / "work"
    here.mkdir()
    monkeypatch.chdir(here)
    misread = "sqlite:///" + str(absolute).lstrip("/")
    with pytest.raises(ConfigurationError, match=re.escape(f"write sqlite:///{absolute} for {absolute}")):
        open_ledger(misread)
    assert not (here / absolute.parts[1]).exists()  # nothing was created here
    for meant in (
        "sqlite:///./" + str(absolute).lstrip("/"),
        "sqlite:///no-such-dir-anywhere/x.db",
        "sqlite:///x.db",
    ):
        ledger = open_ledger(meant)  # said to be relative, or no other reading
        await ledger.aclose()
    (here / absolute.parts[1]).mkdir()  # the relative directory exists: it is what is meant
    await open_ledger(misread).aclose()


def test_default_url_is_in_the_user_state_dir(tmp_path: Path) -> None:
    expected = Path(os.environ["XDG_STATE_HOME"]) / "anisearch" / "ledger.sqlite3"
    assert default_ledger_url() == f"sqlite:///{expected}"
    assert default_ledger_url().startswith("sqlite:////")  # an absolute path


async def test_sqlite_creates_a_private_directory_and_file(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "ledger.sqlite3"
    ledger = open_ledger(f"sqlite:///{path}")
    assert not path.exists()  # nothing is touched before first use
    await ledger.observe("tracemoe", GUEST, TRACEMOE, [quota(limit=1, used=0)])
    await ledger.aclose()
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    reopened = open_ledger(f"sqlite:///{path}")
    assert [q.limit for q in await reopened.snapshot()] == [1]  # it persists
    await reopened.aclose()


async def test_a_bare_absolute_path_is_a_sqlite_ledger(tmp_path: Path) -> None:
    path = tmp_path / "bare" / "ledger.sqlite3"
    ledger = open_ledger(str(path))
    await ledger.observe("tracemoe", GUEST, TRACEMOE, [quota(limit=1, used=0)])
    await ledger.aclose()
    assert path.is_file()
    with pytest.raises(ConfigurationError, match="unsupported ledger URL"):
        open_ledger("relative/ledger.sqlite3")  # a relative one says which file only as sqlite:///


async def test_sqlite_relative_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    ledger = open_ledger("sqlite:///relative/ledger.db")
    await ledger.snapshot()
    await ledger.aclose()
    assert (tmp_path / "relative" / "ledger.db").is_file()


async def test_a_relative_sqlite_path_stays_on_its_file_after_a_chdir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path)
    ledger = open_ledger("sqlite:///ledger.db")
    for _ in range(2):
        ticket = await ledger.reserve("tracemoe", GUEST, TRACEMOE)
        assert isinstance(ticket, Ticket)
        await ledger.settle(ticket, "charged")
        monkeypatch.chdir(tmp_path / "elsewhere")  # a long-lived process changing directory
    (window,) = [q for q in await ledger.snapshot("tracemoe") if q.window == "rolling-24h"]
    await ledger.aclose()
    assert window.used == 2
    assert not (tmp_path / "elsewhere" / "ledger.db").exists()


async def test_sqlite_unwritable_location_is_a_ledger_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    ledger = open_ledger(f"sqlite:///{blocker / 'ledger.db'}")
    with pytest.raises(
        LedgerError, match="check that the file and its directory can be read and written"
    ) as caught:
        await ledger.reserve("tracemoe", GUEST, TRACEMOE)
    assert str(blocker) in str(caught.value)


async def test_a_damaged_sqlite_ledger_is_started_afresh_by_a_reset(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    damaged = b"SQLite format 3\x00" + b"\xa5" * 8192  # a ledger of ours, its pages damaged
    path.write_bytes(damaged)
    ledger = open_ledger(f"sqlite:///{path}")
    with pytest.raises(LedgerError, match=f"{path}.*run 'anisearch quota --reset --yes' to start it afresh"):
        await ledger.reserve("tracemoe", GUEST, TRACEMOE)
    await ledger.clear("tracemoe")  # whichever provider is named: nothing in the file can be read
    assert isinstance(await ledger.reserve("tracemoe", GUEST, TRACEMOE), Ticket)
    await ledger.aclose()
    assert path.with_name("ledger.sqlite3.damaged").read_bytes() == damaged  # moved aside, not lost


async def test_every_process_reconnects_to_a_ledger_started_afresh(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    running, resetting = open_ledger(f"sqlite:///{path}"), open_ledger(f"sqlite:///{path}")
    first = await running.reserve("tracemoe", GUEST, TRACEMOE)  # connected, as a long-lived bot is
    assert isinstance(first, Ticket)
    await running.settle(first, "charged")
    with contextlib.closing(sqlite3.connect(path)) as conn:  # every page in the file, none in the WAL
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    with path.open("r+b") as file:  # damaged under it
        file.seek(100)
        file.write(b"\xa5" * (path.stat().st_size - 100))
    await resetting.clear()  # "anisearch quota --reset" in another process: a new file at the path
    assert path.with_name("ledger.sqlite3.damaged").exists()
    ticket = await running.reserve("tracemoe", GUEST, TRACEMOE)
    assert isinstance(ticket, Ticket)
    await running.settle(ticket, "charged")
    (window,) = [q for q in await resetting.snapshot("tracemoe") if q.window == "rolling-24h"]
    assert window.used == 1  # both on the new file: the running one's search counts there
    await running.aclose()
    await resetting.aclose()


async def test_two_resets_at_once_never_move_the_fresh_ledger_aside(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    damaged = b"SQLite format 3\x00" + b"\xa5" * 8192
    path.write_bytes(damaged)
    first, second = open_ledger(f"sqlite:///{path}"), open_ledger(f"sqlite:///{path}")
    for ledger in (first, second):  # both processes met the damage
        with pytest.raises(LedgerError):
            await ledger.reserve("tracemoe", GUEST, TRACEMOE)
    async with anyio.create_task_group() as group:
        with resetting(path):  # the first reset, under its lock: the damaged file aside, a fresh ledger
            group.start_soon(second.clear)  # the second reset waits for the lock
            await anyio.sleep(0.3)
            assert not path.with_name("ledger.sqlite3.damaged").exists()
            set_aside(path)
            assert isinstance(await first.reserve("tracemoe", GUEST, TRACEMOE), Ticket)
    # the second found a sound ledger: it forgot what it holds, as a reset does, and moved nothing aside
    assert path.with_name("ledger.sqlite3.damaged").read_bytes() == damaged
    assert not path.with_name("ledger.sqlite3.damaged-2").exists()
    assert isinstance(await first.reserve("tracemoe", GUEST, TRACEMOE), Ticket)
    assert isinstance(await second.reserve("tracemoe", "api-key:0123456789abcdef", TRACEMOE), Ticket)
    await first.aclose()
    await second.aclose()


async def test_a_reset_waiting_for_another_process_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ledger.sqlite3"
    path.write_bytes(b"SQLite format 3\x00" + b"\xa5" * 8192)
    ledger = open_ledger(f"sqlite:///{path}")
    monkeypatch.setattr(sqlite_backend, "resetting", partial(resetting, timeout=0.2))
    with resetting(path), pytest.raises(LedgerError, match="being started afresh by another process"):
        await ledger.clear()  # the other process holds the lock past the timeout
    await ledger.clear()  # once it let go
    assert isinstance(await ledger.reserve("tracemoe", GUEST, TRACEMOE), Ticket)
    assert stat.S_IMODE(path.with_name("ledger.sqlite3.reset-lock").stat().st_mode) == 0o600
    await ledger.aclose()


async def test_a_reset_without_filelock_installed_still_starts_afresh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An environment upgraded without reinstalling lacks the new dependency: the reset works as before."""
    monkeypatch.setitem(sys.modules, "filelock", None)  # import filelock fails
    path = tmp_path / "ledger.sqlite3"
    path.write_bytes(b"SQLite format 3\x00" + b"\xa5" * 8192)
    ledger = open_ledger(f"sqlite:///{path}")
    await ledger.clear()
    assert isinstance(await ledger.reserve("tracemoe", GUEST, TRACEMOE), Ticket)
    assert path.with_name("ledger.sqlite3.damaged").exists()
    await ledger.aclose()


async def test_a_file_that_is_not_a_ledger_is_never_offered_for_deletion(tmp_path: Path) -> None:
    for name, content in (("notes.txt", b"this is not a database" * 100), ("disk.iso", bytes(32768))):
        path = tmp_path / name  # ANISEARCH_LEDGER pointed at somebody's file by mistake
        path.write_bytes(content)
        path.chmod(0o644)
        ledger = open_ledger(f"sqlite:///{path}")
        for step in (ledger.reserve("tracemoe", GUEST, TRACEMOE), ledger.clear()):
            with pytest.raises(
                LedgerError, match=f"{path}.*not a SQLite file, so it is left as it is"
            ) as caught:
                await step
            assert "reset" not in str(caught.value)
            assert "remove" not in str(caught.value)
        assert path.read_bytes() == content
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(name)] == [name]


@pytest.mark.parametrize("state", ['{"nonsense": 1}', "null", "[]", '{"windows": [], "held": {}}'])
async def test_bad_values_stored_in_sqlite_are_a_ledger_error(tmp_path: Path, state: str) -> None:
    path = tmp_path / "ledger.sqlite3"
    ledger = open_ledger(f"sqlite:///{path}")
    await ledger.snapshot()
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO scopes VALUES ('tracemoe', 'guest', ?)", (state,))
    conn.close()
    with pytest.raises(LedgerError, match="run 'anisearch quota --reset --yes'"):
        await ledger.reserve("tracemoe", GUEST, TRACEMOE)
    with pytest.raises(LedgerError):
        await ledger.snapshot()
    await ledger.clear()  # which the reset does: the values are forgotten
    assert isinstance(await ledger.reserve("tracemoe", GUEST, TRACEMOE), Ticket)
    await ledger.aclose()


async def test_unreachable_redis_is_a_ledger_error_for_every_step() -> None:
    ledger = open_ledger(f"redis://127.0.0.1:{_closed_port()}/0")
    with pytest.raises(LedgerError, match="Redis"):
        await ledger.reserve("tracemoe", GUEST, TRACEMOE)
    with pytest.raises(LedgerError, match="Redis"):  # what `anisearch quota` shows
        await ledger.snapshot()
    with pytest.raises(LedgerError, match="Redis"):  # what `anisearch quota --reset` does
        await ledger.clear()
    await ledger.aclose()


def test_a_forked_child_holds_slots_as_itself() -> None:
    parent = this_holder()
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports and leaves at once
        os.write(writer, this_holder().encode())
        os._exit(0)
    os.close(writer)
    with os.fdopen(reader, "rb") as pipe:
        child = pipe.read().decode()
    os.waitpid(pid, 0)
    assert child.split(":")[1] == str(pid)
    assert child != parent


_FORK_WITH_A_SLOT_HELD = """
import os
import anyio
from anisearch._ledger import Ticket, open_ledger
from anisearch_providers.tracemoe import TraceMoe

windows = TraceMoe().windows()


async def reserve():
    return await open_ledger("memory://").reserve("tracemoe", "guest", windows, trust_estimate=True)


assert isinstance(anyio.run(reserve), Ticket)  # a search of this process is in flight: its slot is held
print("parent:", type(anyio.run(reserve)).__name__)
pid = os.fork()
if pid == 0:
    os._exit(0 if isinstance(anyio.run(reserve), Ticket) else 3)
print("child:", "Ticket" if os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0 else "Refusal")
"""


def test_a_forked_child_starts_its_memory_ledger_empty() -> None:
    """``memory://`` is a process's own: a child forked while the parent held trace.moe's one slot inherited
    that slot, which the parent freed in its own copy only, and waited out its 15 s lease."""
    command = [sys.executable, "-c", _FORK_WITH_A_SLOT_HELD]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["parent: Refusal", "child: Ticket"]


_FORK_MID_TRANSACTION = """
import os, sys, threading, time
import anyio
from anisearch._ledger import Ticket, _logic, open_ledger, scope_id
from anisearch_providers.tracemoe import TraceMoe

url, windows, parent = f"sqlite:///{sys.argv[1]}", TraceMoe().windows(), os.getpid()
real, inside = _logic.settle, threading.Event()


def slow_settle(*args, **kwargs):  # the parent's settle holds its transaction a second
    if os.getpid() == parent and not inside.is_set():
        inside.set()
        time.sleep(1.0)
    return real(*args, **kwargs)


_logic.settle = slow_settle


async def search(scope):
    ledger = open_ledger(url)
    try:
        ticket = await ledger.reserve("tracemoe", scope, windows, trust_estimate=True)
        assert isinstance(ticket, Ticket), ticket
        await ledger.settle(ticket, "charged")
    finally:
        await ledger.aclose()


threading.Thread(target=anyio.run, args=(search, "guest")).start()
inside.wait()
time.sleep(0.2)  # another thread of this process is inside a ledger transaction: fork now
pid = os.fork()
if pid == 0:
    anyio.run(search, scope_id("api-key", "the child's"))  # a new ledger in the child, as the docs say
    os._exit(0)
for _ in range(200):  # 20 s: the child's busy timeout is 30 s
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        print("child", "ok" if os.waitstatus_to_exitcode(status) == 0 else "failed")
        break
    time.sleep(0.1)
else:
    os.kill(pid, 9)
    print("child stuck")
"""


def test_a_child_forked_while_another_thread_is_in_a_transaction_can_use_the_ledger(tmp_path: Path) -> None:
    """A child forked while another thread of the parent was inside a SQLite ledger transaction inherited
    SQLite's note of that lock, held by no one in the child: its own new ledger waited for it, then failed
    "database is locked" after 30 s (or hung on SQLite's mutex). The fork now waits for the step."""
    command = [sys.executable, "-c", _FORK_MID_TRANSACTION, str(tmp_path / "ledger.sqlite3")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "child ok"


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_sqlite_from_a_newer_anisearch_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 99")
    conn.close()
    ledger = open_ledger(f"sqlite:///{path}")
    with pytest.raises(LedgerError, match="newer anisearch"):
        await ledger.snapshot()


def test_redis_needs_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis.asyncio", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'anisearch-gateway\[redis\]'"):
        open_ledger("redis://127.0.0.1:6379/0")


async def test_redis_url_password_is_masked() -> None:
    for url, shown in [
        ("redis://:hunter2@127.0.0.1:6379/3", "redis://***@127.0.0.1:6379/3"),
        ("rediss://worker:hunter2@redis.internal/0", "rediss://***@redis.internal/0"),  # as in every log
    ]:
        ledger = open_ledger(url)
        assert ledger.url == shown
        await ledger.aclose()
    with pytest.raises(ConfigurationError, match="invalid Redis ledger URL") as caught:
        open_ledger("redis://:hunter2@127.0.0.1:port/0")
    assert "hunter2" not in str(caught.value)


async def test_a_redis_password_in_the_query_is_masked_too() -> None:
    """redis-py reads the password from ``?password=`` as well: it was shown in the ledger's URL, in the
    LedgerError's message and in its ``ledger``."""
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ledger = open_ledger(f"redis://127.0.0.1:{port}/0?password=hunter2")
    try:
        with pytest.raises(LedgerError) as caught:
            await ledger.snapshot("tracemoe")
    finally:
        await ledger.aclose()
    assert ledger.url == f"redis://127.0.0.1:{port}/0?password=***"
    assert "hunter2" not in str(caught.value)
    assert caught.value.ledger == ledger.url
    with pytest.raises(ConfigurationError, match="invalid Redis ledger URL") as refused:
        open_ledger("redis://127.0.0.1:port/0?password=hunter2")
    assert "hunter2" not in str(refused.value)


def test_a_holder_is_judged_dead_only_by_a_process_that_sees_its_pids() -> None:
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    gone = int(finished.stdout)
    machine = this_holder().rsplit(":", 2)[0]
    assert holder_is_dead(f"{machine}:{gone}:0")  # this host, this PID namespace: it is gone
    assert not holder_is_dead(this_holder())
    # The same host name in another PID namespace (a pod's sidecar, a container with --network host) numbers
    # its own processes: its holder is left to its lease.
    assert not holder_is_dead(f"{socket.gethostname()}/pid-ns-1:{gone}:0")
    assert not holder_is_dead(f"elsewhere:{gone}:0")


def test_a_holder_in_another_pid_namespace_of_this_host_is_left_to_its_lease() -> None:
    show = "from anisearch._ledger._base import this_holder; print(this_holder())"
    inside = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", show],
        capture_output=True,
        text=True,
        check=False,
    )
    if inside.returncode != 0:  # pragma: no cover - depends on the machine: unshare needs privileges
        pytest.skip(f"cannot make a PID namespace here: {inside.stderr.strip()[:120]}")
    holder = inside.stdout.strip()
    assert holder.split(":")[1] == "1"  # the first process of its namespace, alive as it printed
    assert holder != this_holder()
    assert not holder_is_dead(holder)  # pid 1 here is another process: it says nothing about that one


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a start from boot is read on Linux only")
def test_a_live_holder_stays_alive_when_the_clock_is_stepped(monkeypatch: pytest.MonkeyPatch) -> None:
    import psutil

    holder = this_holder()
    real = psutil._psplatform.boot_time  # type: ignore[attr-defined]
    # what NTP stepping the clock 30 s does: the boot time read from the system moves with it
    monkeypatch.setattr(psutil._psplatform, "boot_time", lambda: real() + 30.0)  # type: ignore[attr-defined]
    assert not holder_is_dead(holder)


def test_who_holds_a_slot_is_said_in_words() -> None:
    """A wait names the process holding the slot, but never blames this process's own pid on another."""
    from anisearch._verdict import holders_text

    assert holders_text([this_holder()]) == "another search of this process"
    assert holders_text(["elsewhere:4321:99"]) == "pid 4321"
    assert (
        holders_text([UPSTREAM_HOLDER + "elsewhere:4321:99"])
        == "pid 4321 (given up; the upstream still runs it)"
    )
    assert holders_text([]) == "another search"


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"calendar": "week"}, "calendar must be 'day' or 'month', got 'week'"),
        ({"span_seconds": 60, "kind": "ratelimit"}, "kind must be 'quota' or 'rate', got 'ratelimit'"),
        ({"span_seconds": 60, "counts": "request"}, "counts must be 'searches' or 'requests', got 'request'"),
    ],
    ids=["calendar", "kind", "counts"],
)
def test_a_window_declared_with_a_misspelt_value_is_refused(fields: dict[str, Any], words: str) -> None:
    """A ``calendar="week"`` was taken for a month, a ``kind="ratelimit"`` for a quota."""
    with pytest.raises(ConfigurationError, match=words):
        WindowSpec("w", **fields)


async def test_a_count_from_a_clock_that_ran_ahead_does_not_hide_the_newer_ones(
    ledger: Ledger, clock: FakeClock
) -> None:
    """A machine 5 minutes ahead (or this one before its clock was stepped back) stored a count "from the
    future": the counts that follow, which say the quota is spent, must still be taken (they were all
    thrown away as older, and every search met trace.moe's 402)."""
    clock.now = T0 + timedelta(minutes=5)  # the machine whose clock runs ahead
    await search(ledger, observations=[quota(window="rolling-24h", limit=3, used=1, observed_at=clock.now)])
    clock.now = T0 + timedelta(seconds=1)  # a correct clock, a moment later in truth
    await search(ledger, observations=[quota(window="rolling-24h", limit=3, used=3, observed_at=clock.now)])
    assert (await refused(ledger)).kind == "quota"
    assert (await only(ledger, "rolling-24h")).remaining == 0


async def test_a_window_spent_on_an_old_count_is_asked_about_before_a_refusal(
    ledger: Ledger, clock: FakeClock
) -> None:
    """A paid tier raises the limit: spent on a count the upstream gave over ten minutes ago, the window
    is stale (asked about for free) rather than refused for up to a day; on a fresh count it refuses."""
    told = [quota(window="rolling-24h", limit=3, used=3, observed_at=T0)]
    await search(ledger, observations=told)
    assert isinstance(await refused(ledger), Refusal)  # a count of a moment ago: spent
    clock.advance(minutes=11)
    stale = await ledger.reserve("tracemoe", GUEST, TRACEMOE)
    assert isinstance(stale, Stale)
    assert stale.window == "rolling-24h"
    assert isinstance(await refused(ledger, trust_estimate=True), Refusal)  # asking failed: refused


async def test_an_older_count_from_a_clock_a_little_behind_is_still_older(
    ledger: Ledger, clock: FakeClock
) -> None:
    """Clocks of machines sharing a ledger differ by seconds: a count taken earlier, written later by a
    machine 2 s behind, must not replace the newer one (only a clock far ahead is disregarded)."""
    clock.now = T0 + timedelta(seconds=2)  # machine A
    await search(ledger, observations=[quota(window="rolling-24h", limit=3, used=3, observed_at=clock.now)])
    clock.now = T0  # machine B, 2 s behind, writing a count it took a second before A's
    older = [quota(window="rolling-24h", limit=3, used=1, observed_at=T0 - timedelta(seconds=1))]
    await ledger.observe("tracemoe", GUEST, TRACEMOE, older)
    assert (await only(ledger, "rolling-24h")).remaining == 0


async def test_a_remaining_count_that_matches_the_documented_limit_keeps_the_plain_wording(
    ledger: Ledger,
) -> None:
    """whatanimeisthis says only what is left; when that and the searches counted make its documented 5, the
    refusal says "5 of 5 used", as the quota table does."""
    day = WindowSpec("day", calendar="day", limit=5)
    for left in (4, 3, 2, 1, 0):  # this ledger's searches were all of them
        await search(ledger, (day,), observations=[quota(window="day", remaining=left, observed_at=T0)])
    refusal = await refused(ledger, (day,))
    assert refusal.reason.endswith("of 5 used")

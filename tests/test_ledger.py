"""The quota ledger: one suite run against memory://, sqlite:/// and redis:// (a real redis-server)."""

from __future__ import annotations

import os
import sqlite3
import stat
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import anyio
import pytest
import redis

from anisearch._exceptions import ConfigurationError
from anisearch._ledger import Ledger, default_ledger_url, open_ledger, scope_id
from anisearch._ledger._windows import period_bounds
from anisearch._models import Quota

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


async def only(ledger: Ledger, window: str) -> Quota:
    found = [q for q in await ledger.snapshot() if q.window == window]
    assert len(found) == 1, found
    return found[0]


# ---------------------------------------------------------------------------------------------- windows


async def test_rolling_24h_truth_drains_24h_after_it_was_observed(ledger: Ledger, clock: FakeClock) -> None:
    await ledger.observe(KEY, [quota(limit=3, used=1)])
    clock.advance(hours=1)
    await ledger.record_success("tracemoe", KEY)
    clock.advance(hours=1)
    await ledger.record_success("tracemoe", KEY)

    verdict = await ledger.admit("tracemoe", KEY)
    assert not verdict.allowed
    assert verdict.until == T0 + timedelta(hours=24)  # the upstream's count can only be assumed gone then
    assert verdict.reason == "quota exhausted until 2026-11-22T09:00Z"
    window = await only(ledger, "rolling-24h")
    assert (window.used, window.remaining, window.source) == (3, 0, "ledger")

    clock.now = T0 + timedelta(hours=24)
    assert (await ledger.admit("tracemoe", KEY)).allowed
    assert (await only(ledger, "rolling-24h")).used == 2
    clock.now = T0 + timedelta(hours=25, seconds=1)  # the first local success aged out
    assert (await only(ledger, "rolling-24h")).used == 1
    clock.now = T0 + timedelta(hours=26, seconds=1)
    assert (await only(ledger, "rolling-24h")).used == 0


async def test_rolling_24h_spent_by_local_successes_frees_when_the_oldest_ages_out(
    ledger: Ledger, clock: FakeClock
) -> None:
    await ledger.observe(GUEST, [quota(limit=2, used=0)])
    await ledger.record_success("tracemoe", GUEST, at=T0 + timedelta(hours=1))
    await ledger.record_success("tracemoe", GUEST, at=T0 + timedelta(hours=3))
    clock.advance(hours=4)

    verdict = await ledger.admit("tracemoe", GUEST)
    assert verdict.until == T0 + timedelta(hours=25)
    assert verdict.reason == "quota exhausted until 2026-11-22T10:00Z"
    clock.now = T0 + timedelta(hours=25)
    assert (await ledger.admit("tracemoe", GUEST)).allowed


async def test_upstream_reset_time_wins_for_a_rolling_truth(ledger: Ledger, clock: FakeClock) -> None:
    resets = T0 + timedelta(hours=2, minutes=30)
    await ledger.observe(GUEST, [quota(limit=100, used=100, resets_at=resets)])
    assert (await ledger.admit("tracemoe", GUEST)).until == resets
    clock.now = resets
    assert (await ledger.admit("tracemoe", GUEST)).allowed


async def test_day_resets_at_local_midnight_of_the_configured_zone(
    make: Callable[..., Ledger], clock: FakeClock
) -> None:
    tokyo, utc = make(timezone="Asia/Tokyo"), make(timezone="UTC")
    clock.now = datetime(2026, 11, 22, 14, 30, tzinfo=UTC)  # 23:30 in Tokyo
    provider = "whatanimeisthis"
    for ledger in (tokyo, utc):
        scope = KEY if ledger is tokyo else GUEST
        await ledger.observe(
            scope, [quota(provider=provider, window="day", limit=10, used=9, observed_at=clock.now)]
        )
        await ledger.record_success(provider, scope)

    # midnight in Tokyo, not in UTC
    assert (await tokyo.admit(provider, KEY)).reason == "quota exhausted until 2026-11-22T15:00Z"
    assert (await utc.admit(provider, GUEST)).reason == "quota exhausted until 2026-11-23T00:00Z"

    clock.now = datetime(2026, 11, 22, 15, 0, tzinfo=UTC)
    assert (await tokyo.admit(provider, KEY)).allowed
    assert not (await utc.admit(provider, GUEST)).allowed
    [fresh] = [q for q in await tokyo.snapshot() if q.scope == "api-key"]
    assert (fresh.limit, fresh.used, fresh.remaining) == (10, 0, 10)  # yesterday's truth is void
    assert fresh.resets_at == datetime(2026, 11, 23, 15, 0, tzinfo=UTC)

    clock.advance(minutes=10)
    await tokyo.record_success(provider, KEY)
    assert [q.used for q in await tokyo.snapshot() if q.scope == "api-key"] == [1]


@pytest.mark.parametrize(
    ("moment", "start", "end"),
    [
        (
            datetime(2026, 3, 29, 5, tzinfo=UTC),
            datetime(2026, 3, 28, 23, tzinfo=UTC),
            datetime(2026, 3, 29, 22, tzinfo=UTC),
        ),
        (
            datetime(2026, 10, 25, 5, tzinfo=UTC),
            datetime(2026, 10, 24, 22, tzinfo=UTC),
            datetime(2026, 10, 25, 23, tzinfo=UTC),
        ),
    ],
    ids=["23-hour day", "25-hour day"],
)
def test_a_day_ends_at_the_next_local_midnight_across_dst(
    moment: datetime, start: datetime, end: datetime
) -> None:
    assert period_bounds("day", moment, ZoneInfo("Europe/Berlin")) == (start, end)


async def test_month_resets_on_the_first(ledger: Ledger, clock: FakeClock) -> None:
    clock.now = datetime(2026, 1, 31, 23, 59, tzinfo=UTC)
    await ledger.observe(GUEST, [quota(window="month", limit=1000, used=999, observed_at=clock.now)])
    await ledger.record_success("tracemoe", GUEST)
    verdict = await ledger.admit("tracemoe", GUEST)
    assert verdict.until == datetime(2026, 2, 1, tzinfo=UTC)
    assert verdict.reason == "quota exhausted until 2026-02-01T00:00Z"

    clock.now = datetime(2026, 2, 1, 0, 0, 1, tzinfo=UTC)
    assert (await ledger.admit("tracemoe", GUEST)).allowed
    await ledger.record_success("tracemoe", GUEST)
    month = await only(ledger, "month")
    assert (month.limit, month.used, month.resets_at) == (1000, 1, datetime(2026, 3, 1, tzinfo=UTC))


async def test_minute_window_honours_the_upstream_reset(ledger: Ledger, clock: FakeClock) -> None:
    resets = T0 + timedelta(seconds=17)  # X-RateLimit-Reset
    await ledger.observe(
        GUEST, [quota(window="minute", limit=100, remaining=0, resets_at=resets, source="headers")]
    )
    window = await only(ledger, "minute")
    assert (window.used, window.remaining, window.source) == (100, 0, "headers")
    assert (await ledger.admit("tracemoe", GUEST)).until == resets

    clock.now = resets
    assert (await ledger.admit("tracemoe", GUEST)).allowed
    assert (await only(ledger, "minute")).used == 0


async def test_minute_window_rolls_without_a_reset_and_counts_requests_only(
    ledger: Ledger, clock: FakeClock
) -> None:
    await ledger.observe(GUEST, [quota(window="minute", limit=2, used=0)])
    await ledger.record_success("tracemoe", GUEST)
    assert (await ledger.admit("tracemoe", GUEST)).allowed  # a search is not a request count
    await ledger.record_request("tracemoe", GUEST)
    clock.advance(seconds=10)
    await ledger.record_request("tracemoe", GUEST)

    verdict = await ledger.admit("tracemoe", GUEST)
    assert verdict.until == T0 + timedelta(seconds=60)
    clock.now = T0 + timedelta(seconds=60)
    assert (await ledger.admit("tracemoe", GUEST)).allowed


async def test_an_overshoot_waits_for_enough_successes_to_age_out(ledger: Ledger, clock: FakeClock) -> None:
    await ledger.observe(GUEST, [quota(limit=2, used=0)])
    for hour in (1, 2, 3):  # a batch can overshoot the quota (trace.moe checks only before the search)
        await ledger.record_success("tracemoe", GUEST, at=T0 + timedelta(hours=hour))
    clock.advance(hours=4)
    assert (await ledger.admit("tracemoe", GUEST)).until == T0 + timedelta(hours=26)  # two must leave


async def test_requests_inside_a_fixed_window_leave_with_it(ledger: Ledger, clock: FakeClock) -> None:
    resets = T0 + timedelta(seconds=30)
    await ledger.observe(GUEST, [quota(window="minute", limit=2, used=1, resets_at=resets)])
    clock.advance(seconds=5)
    await ledger.record_request("tracemoe", GUEST)
    assert (await ledger.admit("tracemoe", GUEST)).until == resets
    clock.now = resets
    assert (await only(ledger, "minute")).used == 0


async def test_a_zero_quota_is_believed_only_while_fresh(ledger: Ledger, clock: FakeClock) -> None:
    # trace.moe before 2026-07-12 told a guest who had never searched "quota": 0
    await ledger.observe(GUEST, [quota(limit=0, used=0)])
    assert (await ledger.admit("tracemoe", GUEST)).until == T0 + timedelta(hours=24)
    clock.advance(hours=24)
    assert (await ledger.admit("tracemoe", GUEST)).allowed


async def test_hour_window_counts_successes_not_requests(ledger: Ledger, clock: FakeClock) -> None:
    await ledger.observe(KEY, [quota(provider="whatanimeisthis", window="hour", limit=1, used=0)])
    await ledger.record_request("whatanimeisthis", KEY)
    assert (await ledger.admit("whatanimeisthis", KEY)).allowed
    clock.advance(minutes=5)
    await ledger.record_success("whatanimeisthis", KEY)
    assert (await ledger.admit("whatanimeisthis", KEY)).until == T0 + timedelta(hours=1, minutes=5)


async def test_windows_are_kept_per_provider_and_scope(ledger: Ledger) -> None:
    await ledger.observe(KEY, [quota(limit=1, used=1)])
    assert not (await ledger.admit("tracemoe", KEY)).allowed
    assert (await ledger.admit("tracemoe", GUEST)).allowed
    assert (await ledger.admit("whatanimeisthis", KEY)).allowed


# ---------------------------------------------------------------------------------------------- truths


async def test_a_new_truth_replaces_the_old_and_the_local_count_before_it(
    ledger: Ledger, clock: FakeClock
) -> None:
    await ledger.observe(KEY, [quota(limit=10, used=5)])
    for _ in range(3):
        clock.advance(minutes=1)
        await ledger.record_success("tracemoe", KEY)
    estimate = await only(ledger, "rolling-24h")
    assert (estimate.used, estimate.source) == (8, "ledger")

    clock.advance(minutes=1)
    await ledger.observe(KEY, [quota(limit=10, used=6, observed_at=clock.now)])
    truth = await only(ledger, "rolling-24h")
    assert (truth.used, truth.remaining, truth.source, truth.observed_at) == (6, 4, "upstream", clock.now)

    # a late answer, older than the stored truth, changes nothing
    await ledger.observe(KEY, [quota(limit=10, used=1, observed_at=T0)])
    assert (await only(ledger, "rolling-24h")).used == 6


async def test_limits_are_learned_per_window(ledger: Ledger, clock: FakeClock) -> None:
    await ledger.observe(KEY, [quota(window="month", limit=1000, used=10)])
    clock.advance(minutes=1)
    # no limit this time: the learned one is kept
    await ledger.observe(KEY, [quota(window="month", remaining=900, observed_at=clock.now)])
    month = await only(ledger, "month")
    assert (month.limit, month.used, month.remaining) == (1000, 100, 900)
    assert [q.window for q in await ledger.snapshot()] == ["month"]


async def test_remaining_without_used_is_converted(ledger: Ledger) -> None:
    await ledger.observe(KEY, [quota(limit=100, remaining=40)])
    window = await only(ledger, "rolling-24h")
    assert (window.limit, window.used, window.remaining) == (100, 60, 40)


async def test_remaining_without_any_limit_still_blocks_at_zero(ledger: Ledger, clock: FakeClock) -> None:
    resets = T0 + timedelta(hours=3)
    await ledger.observe(
        KEY, [quota(provider="whatanimeisthis", window="day", remaining=1, resets_at=resets)]
    )
    assert (await ledger.admit("whatanimeisthis", KEY)).allowed
    await ledger.record_success("whatanimeisthis", KEY)
    assert (await ledger.admit("whatanimeisthis", KEY)).until == resets
    clock.now = resets
    assert (await ledger.admit("whatanimeisthis", KEY)).allowed


async def test_reason_rounds_up_to_the_minute(ledger: Ledger) -> None:
    resets = T0 + timedelta(minutes=13, seconds=30)
    await ledger.observe(GUEST, [quota(window="minute", limit=10, used=10, resets_at=resets)])
    verdict = await ledger.admit("tracemoe", GUEST)
    assert (verdict.allowed, verdict.until) == (False, resets)
    assert verdict.reason == "quota exhausted until 2026-11-21T09:14Z"


async def test_mark_exhausted_spends_every_known_search_window(ledger: Ledger, clock: FakeClock) -> None:
    await ledger.observe(KEY, [quota(limit=100, used=3), quota(window="minute", limit=100, used=0)])
    await ledger.mark_exhausted("tracemoe", KEY)
    verdict = await ledger.admit("tracemoe", KEY)
    assert verdict.until == T0 + timedelta(hours=24)
    assert (await only(ledger, "rolling-24h")).used == 100
    assert (await only(ledger, "minute")).used == 0  # a rate window is not a search quota

    until = T0 + timedelta(hours=5)
    await ledger.mark_exhausted("tracemoe", KEY, window="rolling-24h", until=until)
    assert (await ledger.admit("tracemoe", KEY)).reason == "quota exhausted until 2026-11-21T14:00Z"


async def test_mark_exhausted_without_a_known_window(ledger: Ledger, clock: FakeClock) -> None:
    until = T0 + timedelta(hours=6, minutes=14)
    await ledger.mark_exhausted("whatanime-ga", GUEST, until=until)
    verdict = await ledger.admit("whatanime-ga", GUEST)
    assert (verdict.until, verdict.reason) == (until, "quota exhausted until 2026-11-21T15:14Z")
    window = await only(ledger, "rolling-24h")
    assert (window.limit, window.remaining) == (None, 0)
    clock.now = until
    assert (await ledger.admit("whatanime-ga", GUEST)).allowed

    with pytest.raises(ConfigurationError, match="unknown quota window 'week'"):
        await ledger.mark_exhausted("whatanime-ga", GUEST, window="week")


# ---------------------------------------------------------------------------------------------- cooldowns


async def test_cooldowns_keep_the_later_one(ledger: Ledger, clock: FakeClock) -> None:
    later, earlier = T0 + timedelta(minutes=10), T0 + timedelta(minutes=2)
    await ledger.set_cooldown("tracemoe", GUEST, later, "HTTP 503 search queue is full")
    await ledger.set_cooldown("tracemoe", GUEST, earlier, "HTTP 429")
    verdict = await ledger.admit("tracemoe", GUEST)
    assert (verdict.allowed, verdict.until) == (False, later)
    assert verdict.reason == "cooling down until 2026-11-21T09:10Z: HTTP 503 search queue is full"

    latest = T0 + timedelta(minutes=30)
    await ledger.observe(GUEST, [quota(cooldown_until=latest)])
    assert (await ledger.admit("tracemoe", GUEST)).until == latest
    [shown] = await ledger.snapshot("tracemoe")
    assert (shown.cooldown_until, shown.limit, shown.scope) == (latest, None, "guest")

    clock.now = latest
    assert (await ledger.admit("tracemoe", GUEST)).allowed
    assert await ledger.snapshot() == []


async def test_the_longer_blocker_is_named(ledger: Ledger) -> None:
    await ledger.observe(GUEST, [quota(limit=1, used=1)])
    await ledger.set_cooldown("tracemoe", GUEST, T0 + timedelta(minutes=1), "HTTP 429")
    assert (await ledger.admit("tracemoe", GUEST)).reason == "quota exhausted until 2026-11-22T09:00Z"
    await ledger.set_cooldown("tracemoe", GUEST, T0 + timedelta(days=2), "HTTP 429")
    assert (await ledger.admit("tracemoe", GUEST)).reason == "cooling down until 2026-11-23T09:00Z: HTTP 429"


# ---------------------------------------------------------------------------------------------- concurrency


async def test_a_second_task_waits_for_the_slot(ledger: Ledger) -> None:
    first = await ledger.acquire("tracemoe", KEY, slots=1, lease_seconds=60, wait_seconds=0)
    assert first is not None
    got: list[float] = []

    async def second() -> None:
        lease = await ledger.acquire("tracemoe", KEY, slots=1, lease_seconds=60, wait_seconds=5)
        assert lease is not None
        got.append(anyio.current_time())
        await ledger.release(lease)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(second)
        await anyio.sleep(0.3)
        assert got == []  # still waiting
        released = anyio.current_time()
        await ledger.release(first)
    assert 0 <= got[0] - released < 0.5
    assert await ledger.acquire("tracemoe", KEY, slots=1, lease_seconds=60, wait_seconds=0) is not None


async def test_waiting_gives_up_after_wait_seconds(ledger: Ledger) -> None:
    assert await ledger.acquire("tracemoe", KEY, slots=1, lease_seconds=60, wait_seconds=0) is not None
    started = anyio.current_time()
    assert await ledger.acquire("tracemoe", KEY, slots=1, lease_seconds=60, wait_seconds=0.25) is None
    assert 0.2 <= anyio.current_time() - started < 1


async def test_an_expired_lease_frees_the_slot(ledger: Ledger, clock: FakeClock) -> None:
    dead = await ledger.acquire("tracemoe", KEY, slots=1, lease_seconds=30, wait_seconds=0)
    assert dead is not None  # its holder dies and never releases it
    assert await ledger.acquire("tracemoe", KEY, slots=1, lease_seconds=30, wait_seconds=0) is None
    clock.advance(seconds=30)
    alive = await ledger.acquire("tracemoe", KEY, slots=1, lease_seconds=30, wait_seconds=0)
    assert alive is not None
    await ledger.release(dead)  # late and harmless: it must not free the live lease
    await ledger.release(dead)
    assert await ledger.acquire("tracemoe", KEY, slots=1, lease_seconds=30, wait_seconds=0) is None
    await ledger.release(alive)
    assert await ledger.acquire("tracemoe", KEY, slots=1, lease_seconds=30, wait_seconds=0) is not None


async def test_observed_concurrency_overrides_slots(ledger: Ledger) -> None:
    await ledger.observe(KEY, [quota(limit=50000, used=0, concurrency=2)])
    leases = [
        await ledger.acquire("tracemoe", KEY, slots=1, lease_seconds=60, wait_seconds=0) for _ in range(3)
    ]
    assert [lease is not None for lease in leases] == [True, True, False]
    assert (await only(ledger, "rolling-24h")).concurrency == 2

    await ledger.observe(GUEST, [quota(concurrency=1)])
    leases = [
        await ledger.acquire("tracemoe", GUEST, slots=4, lease_seconds=60, wait_seconds=0) for _ in range(2)
    ]
    assert [lease is not None for lease in leases] == [True, False]


async def test_acquire_rejects_nonsense(ledger: Ledger) -> None:
    with pytest.raises(ConfigurationError, match="slots >= 1"):
        await ledger.acquire("tracemoe", KEY, slots=0, lease_seconds=60, wait_seconds=0)
    with pytest.raises(ConfigurationError, match="lease_seconds > 0"):
        await ledger.acquire("tracemoe", KEY, slots=1, lease_seconds=0, wait_seconds=0)


# ---------------------------------------------------------------------------------------------- the rest


async def test_snapshot_filters_by_provider_and_names_the_scope(ledger: Ledger) -> None:
    await ledger.observe(KEY, [quota(limit=100, used=1, priority=2)])
    await ledger.observe(GUEST, [quota(provider="whatanimeisthis", window="day", limit=5, used=2)])
    [mine] = await ledger.snapshot("tracemoe")
    assert (mine.provider, mine.scope, mine.raw) == ("tracemoe", "api-key", {"scope_id": KEY})
    assert [(q.provider, q.scope) for q in await ledger.snapshot()] == [
        ("tracemoe", "api-key"),
        ("whatanimeisthis", "guest"),
    ]


async def test_clear_forgets_everything(ledger: Ledger) -> None:
    await ledger.observe(KEY, [quota(limit=1, used=1, concurrency=1)])
    await ledger.set_cooldown("tracemoe", KEY, T0 + timedelta(hours=1), "HTTP 429")
    assert await ledger.acquire("tracemoe", KEY, slots=1, lease_seconds=60, wait_seconds=0) is not None
    await ledger.clear()
    assert await ledger.snapshot() == []
    assert (await ledger.admit("tracemoe", KEY)).allowed
    assert await ledger.acquire("tracemoe", KEY, slots=1, lease_seconds=60, wait_seconds=0) is not None


async def test_bad_input_is_refused(ledger: Ledger) -> None:
    with pytest.raises(ConfigurationError, match="scope_id"):
        await ledger.admit("tracemoe", "sk-live-0123456789abcdef")  # a raw key must never be stored
    with pytest.raises(ConfigurationError, match="provider"):
        await ledger.record_success("trace moe", GUEST)
    with pytest.raises(ConfigurationError, match="timezone-aware"):
        await ledger.set_cooldown("tracemoe", GUEST, datetime(2026, 11, 21, 10, 0), "naive")  # noqa: DTZ001
    with pytest.raises(ConfigurationError, match="negative"):
        await ledger.observe(GUEST, [quota(limit=10, used=-1)])


@pytest.mark.parametrize("backend", SHARED_BACKENDS, indirect=True)
async def test_two_ledgers_on_one_store_share_state(make: Callable[..., Ledger]) -> None:
    writer, reader = make(), make()
    await writer.observe(KEY, [quota(limit=2, used=1, concurrency=1)])
    await writer.record_success("tracemoe", KEY)
    assert not (await reader.admit("tracemoe", KEY)).allowed
    assert await writer.acquire("tracemoe", KEY, slots=1, lease_seconds=60, wait_seconds=0) is not None
    assert await reader.acquire("tracemoe", KEY, slots=1, lease_seconds=60, wait_seconds=0) is None


# ---------------------------------------------------------------------------------------------- privacy

SECRET_KEY = "sk-live-0123456789abcdef"
SECRET_IP = "203.0.113.77"


async def _write_everything(ledger: Ledger) -> None:
    raw = {"key": SECRET_KEY, "ip": SECRET_IP, "cookie": f"session={SECRET_KEY}"}
    await ledger.observe(KEY, [quota(limit=100, used=5, concurrency=1, raw=raw)])
    await ledger.observe(KEY, [quota(window="minute", limit=100, remaining=99, raw=raw, source="headers")])
    await ledger.record_success("tracemoe", KEY)
    await ledger.record_request("tracemoe", KEY)
    await ledger.set_cooldown("tracemoe", KEY, T0 + timedelta(minutes=5), "HTTP 429")
    assert await ledger.acquire("tracemoe", KEY, slots=1, lease_seconds=60, wait_seconds=0) is not None


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


def test_default_url_is_in_the_user_state_dir(tmp_path: Path) -> None:
    expected = Path(os.environ["XDG_STATE_HOME"]) / "anisearch" / "ledger.sqlite3"
    assert default_ledger_url() == f"sqlite:///{expected}"
    assert default_ledger_url().startswith("sqlite:////")  # an absolute path


async def test_sqlite_creates_a_private_directory_and_file(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "ledger.sqlite3"
    ledger = open_ledger(f"sqlite:///{path}")
    assert not path.exists()  # nothing is touched before first use
    await ledger.observe(GUEST, [quota(limit=1, used=0)])
    await ledger.aclose()
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    reopened = open_ledger(f"sqlite:///{path}")
    assert [q.limit for q in await reopened.snapshot()] == [1]  # it persists
    await reopened.aclose()


async def test_sqlite_relative_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    ledger = open_ledger("sqlite:///relative/ledger.db")
    await ledger.record_request("tracemoe", GUEST)
    await ledger.aclose()
    assert (tmp_path / "relative" / "ledger.db").is_file()


async def test_sqlite_unwritable_location_is_a_configuration_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    ledger = open_ledger(f"sqlite:///{blocker / 'ledger.db'}")
    with pytest.raises(ConfigurationError, match="cannot open the ledger database"):
        await ledger.admit("tracemoe", GUEST)


async def test_sqlite_from_a_newer_anisearch_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 99")
    conn.close()
    ledger = open_ledger(f"sqlite:///{path}")
    with pytest.raises(ConfigurationError, match="newer anisearch"):
        await ledger.snapshot()


def test_redis_needs_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis.asyncio", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'anisearch\[redis\]'"):
        open_ledger("redis://127.0.0.1:6379/0")


async def test_redis_url_password_is_masked() -> None:
    for url, shown in [
        ("redis://:hunter2@127.0.0.1:6379/3", "redis://:***@127.0.0.1:6379/3"),
        ("rediss://worker:hunter2@redis.internal/0", "rediss://worker:***@redis.internal/0"),
    ]:
        ledger = open_ledger(url)
        assert ledger.url == shown
        await ledger.aclose()
    with pytest.raises(ConfigurationError, match="invalid Redis ledger URL") as caught:
        open_ledger("redis://:hunter2@127.0.0.1:port/0")
    assert "hunter2" not in str(caught.value)

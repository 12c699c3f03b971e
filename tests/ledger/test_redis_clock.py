"""A fleet on one Redis ledger keeps the Redis server's time: one worker whose clock runs ahead (no NTP, a
resumed VM) neither takes a live slot as lapsed nor ages the searches the others counted out of a window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

import anisearch._ledger._base as ledger_base
from anisearch._ledger import Ledger, Refusal, Ticket, WindowSpec, open_ledger

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

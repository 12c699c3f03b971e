"""The SQLite ledger's units: the counts its triggers keep match the rows, whatever the steps."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

import anyio
import pytest

from anisearch._ledger import Ticket, WindowSpec, open_ledger
from anisearch._ledger._sqlite import _create_schema, _transaction, _Units

if TYPE_CHECKING:
    from pathlib import Path


def _rows(conn: sqlite3.Connection) -> tuple[int, int]:
    total, settled = conn.execute("SELECT COUNT(*), COALESCE(SUM(pending = 0), 0) FROM units").fetchone()
    return int(total), int(settled)


def test_counts_follow_adds_settles_and_removes(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "ledger.sqlite3", isolation_level=None)
    _transaction(conn, _create_schema)
    units = _Units(conn, "tracemoe", "guest")
    units.add("day", "a", 100)
    units.add("day", "b", 200)
    assert (units.count("day"), units.count_settled("day")) == (2, 0) == _rows(conn)
    units.settle("day", "a", 150)
    assert (units.count("day"), units.count_settled("day")) == (2, 1) == _rows(conn)
    assert units.kth_leave("day", 1) == 150
    units.add("day", "a", 300)  # the same member again: pending again, still one row
    assert (units.count("day"), units.count_settled("day")) == (2, 0) == _rows(conn)
    assert units.kth_leave("day", 2) == 300
    units.settle("day", "b", None)
    units.remove("day", "a")
    assert (units.count("day"), units.count_settled("day")) == (1, 1) == _rows(conn)
    assert units.purge("day", 200) == 1
    assert (units.count("day"), units.count_settled("day")) == (0, 0) == _rows(conn)
    conn.close()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_a_step_waits_for_another_process_lock_off_the_event_loop(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    ledger = open_ledger(f"sqlite:///{path}")
    windows = (WindowSpec("day", limit=100, span_seconds=86_400),)
    first = await ledger.reserve("tracemoe", "guest", windows, trust_estimate=True)  # opens the file
    assert isinstance(first, Ticket)
    other = sqlite3.connect(path, isolation_level=None)  # another process's writer holds the lock
    other.execute("BEGIN IMMEDIATE")
    ticks = 0
    done = anyio.Event()

    async def tick() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await anyio.sleep(0.01)

    async def release() -> None:
        await anyio.sleep(0.3)
        other.execute("COMMIT")

    try:
        async with anyio.create_task_group() as group:
            group.start_soon(tick)
            group.start_soon(release)
            await ledger.settle(first, "charged")  # waits for the lock in a worker thread
            done.set()
        assert ticks >= 10  # the event loop ran on while the step waited
        second = await ledger.reserve("tracemoe", "guest", windows, trust_estimate=True)  # inline again
        assert isinstance(second, Ticket)
        await ledger.settle(second, "charged")
        (day,) = await ledger.snapshot("tracemoe", lambda _name: windows)
        assert (day.used, day.remaining) == (2, 98)  # both searches counted once
    finally:
        other.close()
        await ledger.aclose()

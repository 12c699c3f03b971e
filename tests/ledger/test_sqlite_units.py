"""The SQLite ledger's units: the counts its triggers keep match the rows, whatever the steps."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

import anyio
import pytest

from anisearch._exceptions import LedgerError
from anisearch._ledger import Ticket, WindowSpec, open_ledger
from anisearch._ledger._sqlite import SQLiteLedger, _create_schema, _transaction, _Units

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
    order: list[str] = []

    async def tick() -> None:
        nonlocal ticks
        while "settled" not in order:
            ticks += 1
            await anyio.sleep(0.01)

    async def release() -> None:
        await anyio.sleep(0.3)
        order.append(f"committed after {ticks} ticks")
        other.execute("COMMIT")

    try:
        async with anyio.create_task_group() as group:
            group.start_soon(tick)
            group.start_soon(release)
            await ledger.settle(first, "charged")  # waits for the lock in a worker thread
            order.append("settled")
        # The settle waited for the other writer while the event loop ran on (a step waiting on the
        # event loop would have settled before the others ran, or failed).
        assert order[1] == "settled"
        assert int(order[0].split()[2]) >= 10
        second = await ledger.reserve("tracemoe", "guest", windows, trust_estimate=True)  # inline again
        assert isinstance(second, Ticket)
        await ledger.settle(second, "charged")
        (day,) = await ledger.snapshot("tracemoe", lambda _name: windows)
        assert (day.used, day.remaining) == (2, 98)  # both searches counted once
    finally:
        other.close()
        await ledger.aclose()


@pytest.mark.anyio
async def test_a_step_whose_commit_fails_leaves_the_ledger_usable(tmp_path: Path) -> None:
    ledger = open_ledger(f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    windows = (WindowSpec("day", limit=100, span_seconds=86_400),)
    first = await ledger.reserve("tracemoe", "guest", windows, trust_estimate=True)
    assert isinstance(first, Ticket)
    assert isinstance(ledger, SQLiteLedger)
    conn = ledger._conn  # the backend's own connection, to make one COMMIT fail
    assert conn is not None

    def refuse_commit(action: int, operation: str | None, *_: object) -> int:
        commit = action == sqlite3.SQLITE_TRANSACTION and operation == "COMMIT"
        return sqlite3.SQLITE_DENY if commit else sqlite3.SQLITE_OK

    conn.set_authorizer(refuse_commit)
    try:
        with pytest.raises(LedgerError):
            await ledger.settle(first, "charged")
    finally:
        conn.set_authorizer(None)
    assert not conn.in_transaction  # rolled back: the next step begins as usual
    await ledger.settle(first, "charged")  # the settle that failed, again: nothing of it was kept
    second = await ledger.reserve("tracemoe", "guest", windows, trust_estimate=True)
    assert isinstance(second, Ticket)
    await ledger.settle(second, "charged")
    (day,) = await ledger.snapshot("tracemoe", lambda _name: windows)
    assert day.used == 2
    await ledger.aclose()

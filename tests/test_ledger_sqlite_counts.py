"""The SQLite ledger counts a window's units with one lookup, and keeps those counts exact."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

import pytest

from anisearch._ledger import Ticket, WindowSpec, open_ledger

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.anyio

WINDOWS = (WindowSpec("day", span_seconds=86_400, limit=5),)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def used(url: str) -> int:
    ledger = open_ledger(url)
    try:
        quotas = await ledger.snapshot("tracemoe", lambda _: WINDOWS)
    finally:
        await ledger.aclose()
    return sum(quota.used or 0 for quota in quotas)  # a cleared ledger knows no scope


async def search(url: str, outcome: str = "charged") -> None:
    ledger = open_ledger(url)
    try:
        ticket = await ledger.reserve("tracemoe", "guest", WINDOWS)
        assert isinstance(ticket, Ticket)
        await ledger.settle(ticket, outcome)  # type: ignore[arg-type]
    finally:
        await ledger.aclose()


async def test_counts_follow_every_search_settled_or_not(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    for outcome in ("charged", "unsent", "charged", "uncharged", "charged"):
        await search(url, outcome)
    assert await used(url) == 3
    ledger = open_ledger(url)
    await ledger.clear()
    await ledger.aclose()
    assert await used(url) == 0


async def test_counting_uses_no_scan_of_the_units(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    await search(f"sqlite:///{path}")
    with sqlite3.connect(path) as conn:
        plan = conn.execute(
            "EXPLAIN QUERY PLAN SELECT total, settled FROM unit_counts"
            " WHERE provider = ? AND scope = ? AND window_name = ?",
            ("tracemoe", "guest", "day"),
        ).fetchall()
    conn.close()
    assert "PRIMARY KEY" in str(plan)
    assert "units " not in str(plan)


async def test_a_ledger_from_the_previous_schema_keeps_its_counts(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    url = f"sqlite:///{path}"
    for _ in range(2):
        await search(url)
    with sqlite3.connect(path) as conn:  # as schema 2 left it: units, no counts
        for trigger in ("units_added", "units_removed", "units_settled"):
            conn.execute(f"DROP TRIGGER {trigger}")
        conn.execute("DROP TABLE unit_counts")
        conn.execute("PRAGMA user_version = 2")
    conn.close()
    assert await used(url) == 2
    await search(url)
    assert await used(url) == 3

"""What one search costs each shared ledger, counted at the store itself: one reserve and one settle are
two SQLite transactions and two Redis round trips, with trace.moe's two windows and its rate-limit headers
reported on every answer."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from anisearch import Quota
from anisearch._ledger import Ledger, Ticket, open_ledger
from anisearch._ledger._sqlite import SQLiteLedger
from anisearch_providers.tracemoe import TraceMoe

if TYPE_CHECKING:
    from pathlib import Path

WINDOWS = TraceMoe("http://127.0.0.1").windows()
SEARCHES = 30


async def _searches(ledger: Ledger, count: int) -> None:
    """``count`` searches as the router makes them: reserve, then settle with the answer's headers."""
    for _ in range(count):
        ticket = await ledger.reserve("tracemoe", "guest", WINDOWS, trust_estimate=True)
        assert isinstance(ticket, Ticket)
        told = Quota(
            provider="tracemoe",
            window="minute",
            limit=100,
            remaining=90,
            source="headers",
            observed_at=datetime.now(UTC),
        )
        await ledger.settle(ticket, "charged", observations=[told])


def test_a_search_is_two_sqlite_transactions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    begun: list[str] = []
    opened = SQLiteLedger._open

    def traced(ledger: SQLiteLedger) -> sqlite3.Connection:
        conn = opened(ledger)
        conn.set_trace_callback(
            lambda statement: begun.append(statement) if statement.startswith("BEGIN") else None
        )
        return conn

    monkeypatch.setattr(SQLiteLedger, "_open", traced)

    async def run() -> int:
        ledger = open_ledger(f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
        try:
            await _searches(ledger, 3)  # the file, its tables and the first counts
            begun.clear()
            await _searches(ledger, SEARCHES)
            return len(begun)
        finally:
            await ledger.aclose()

    assert anyio.run(run) == 2 * SEARCHES


@pytest.mark.redis
def test_a_search_is_two_redis_round_trips(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from redis.asyncio.connection import AbstractConnection

    sent: list[object] = []
    send = AbstractConnection.send_packed_command

    async def counted(connection: AbstractConnection, command: Any, check_health: bool = True) -> None:
        sent.append(command)  # one request to the server, answered before the next is sent
        await send(connection, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counted)

    async def run() -> int:
        ledger = open_ledger(redis_url)
        try:
            await _searches(ledger, 3)  # the connection's handshake; the scripts loaded on first use
            sent.clear()
            await _searches(ledger, SEARCHES)
            return len(sent)
        finally:
            await ledger.aclose()

    assert anyio.run(run) == 2 * SEARCHES

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


def _per_search(url: str, counted: list[Any]) -> float:
    """What ``counted`` gathers per search over ``SEARCHES`` searches on the ledger at ``url``, after three
    that open the store, make its tables or load its scripts."""

    async def run() -> int:
        ledger = open_ledger(url)
        try:
            await _searches(ledger, 3)
            counted.clear()
            await _searches(ledger, SEARCHES)
            return len(counted)
        finally:
            await ledger.aclose()

    return anyio.run(run) / SEARCHES


def test_a_search_is_two_sqlite_transactions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    begun: list[str] = []
    opened = SQLiteLedger._open

    def note(statement: str) -> None:
        if statement.startswith("BEGIN"):
            begun.append(statement)

    def traced(ledger: SQLiteLedger) -> sqlite3.Connection:
        conn = opened(ledger)
        conn.set_trace_callback(note)  # every statement, on the event loop or in a worker thread
        return conn

    monkeypatch.setattr(SQLiteLedger, "_open", traced)
    assert _per_search(f"sqlite:///{tmp_path / 'ledger.sqlite3'}", begun) == 2


@pytest.mark.redis
def test_a_search_is_two_redis_round_trips(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from redis.asyncio.connection import AbstractConnection

    sent: list[object] = []
    send = AbstractConnection.send_packed_command

    async def counted(connection: AbstractConnection, command: Any, check_health: bool = True) -> None:
        sent.append(command)  # one request to the server, answered before the next is sent
        await send(connection, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counted)
    assert _per_search(redis_url, sent) == 2

"""Processes creating one SQLite file at once (the result cache, the ledger) all end up using it."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

import pytest
from tests.forked import Job, run_forked

from anisearch._sqlite_busy import locked, open_waiting

if TYPE_CHECKING:
    from pathlib import Path


def test_a_locked_file_is_opened_again_once_the_lock_is_gone(tmp_path: Path) -> None:
    path = tmp_path / "f.sqlite3"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process making the file
    calls = 0

    def open_file() -> sqlite3.Connection:
        nonlocal calls
        calls += 1
        if calls == 3:
            holder.execute("COMMIT")
        conn = sqlite3.connect(path, timeout=0, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("COMMIT")
        except sqlite3.Error:
            conn.close()
            raise
        return conn

    conn = open_waiting(open_file, timeout=5)
    assert calls == 3
    conn.close()
    holder.close()


def test_any_other_error_is_raised_at_once(tmp_path: Path) -> None:
    calls = 0

    def open_file() -> None:
        nonlocal calls
        calls += 1
        sqlite3.connect(tmp_path / "f.sqlite3").execute("SELECT * FROM missing")

    with pytest.raises(sqlite3.OperationalError, match="no such table") as caught:
        open_waiting(open_file, timeout=5)
    assert calls == 1
    assert not locked(caught.value)


LEDGER = (
    "import sys, anyio\n"
    "from anisearch._ledger import open_ledger, WindowSpec\n"
    "async def main():\n"
    "    ledger = open_ledger(sys.argv[1])\n"
    "    windows = (WindowSpec('day', limit=100, span_seconds=86400),)\n"
    "    ticket = await ledger.reserve('tracemoe', 'guest', windows, slots=4, trust_estimate=True)\n"
    "    await ledger.settle(ticket, 'charged')\n"
    "    print('settled')\n"
    "anyio.run(main)\n"
)


def test_processes_starting_on_a_new_ledger_at_once_all_search(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    jobs = [Job([url]) for _ in range(4)]  # four processes, released at once on a file none has made
    workers = run_forked(LEDGER, jobs, tmp_path / "processes", together=True, preload=["anisearch._ledger"])
    assert [(worker.returncode, worker.stdout.strip()) for worker in workers] == [(0, "settled")] * 4

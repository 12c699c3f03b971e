"""The concurrency gate across processes: several Python processes share one slot through the ledger.

The processes are forked from one parent that imported anisearch once (``tests/forked.py``) and released
together, for the most contention.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import pytest
from tests.forked import Job, run_forked

if TYPE_CHECKING:
    from pathlib import Path

PROCESSES = 4
ROUNDS = 5
HOLD_SECONDS = 0.02

# Each process takes the slot, holds it, and logs "start end" (monotonic, which on Linux is one clock for
# every process) before giving it back.
WORKER = """
import sys, time
from pathlib import Path
import anyio
from anisearch._ledger import Ticket, WindowSpec, open_ledger, scope_id

url, log, rounds, hold = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])

async def main():
    ledger = open_ledger(url)
    scope = scope_id("api-key", "shared by every worker")
    lines = []
    windows = [WindowSpec("rolling-24h", span_seconds=86400)]
    for _ in range(rounds):
        give_up = time.monotonic() + 30
        async with ledger.listening("tracemoe", scope) as nap:  # before asking: no freed slot is missed
            while not isinstance(ticket := await ledger.reserve("tracemoe", scope, windows), Ticket):
                if time.monotonic() > give_up:
                    raise SystemExit("no slot within 30 s")
                await nap(1)
        start = time.monotonic()
        await anyio.sleep(hold)
        end = time.monotonic()
        await ledger.settle(ticket, "charged")
        lines.append(f"{start} {end}")
    log.write_text("\\n".join(lines))
    await ledger.aclose()

anyio.run(main)
"""


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fresh' / 'ledger.sqlite3'}"  # created by the racing workers
    return str(request.getfixturevalue("redis_url"))


def test_one_slot_is_held_by_one_process_at_a_time(shared_url: str, tmp_path: Path) -> None:
    logs = [tmp_path / f"worker-{n}.log" for n in range(PROCESSES)]
    jobs = [Job([shared_url, str(log), str(ROUNDS), str(HOLD_SECONDS)]) for log in logs]
    for worker in run_forked(WORKER, jobs, tmp_path / "processes", together=True, timeout=120):
        assert worker.returncode == 0, worker.stderr

    intervals = sorted(
        (float(start), float(end), log.name)
        for log in logs
        for start, end in (line.split() for line in log.read_text().splitlines())
    )
    assert len(intervals) == PROCESSES * ROUNDS
    overlaps = [(a, b) for a, b in itertools.pairwise(intervals) if b[0] < a[1]]
    assert overlaps == []
    assert len({name for *_, name in intervals}) == PROCESSES


ASK_FOR_THE_SLOT = """
import sys
import anyio
from anisearch._ledger import Ticket, WindowSpec, open_ledger, scope_id

async def main():
    ledger = open_ledger(sys.argv[1])
    windows = [WindowSpec("rolling-24h", span_seconds=86400)]
    answer = await ledger.reserve("tracemoe", scope_id("api-key", "one"), windows)
    print("slot" if isinstance(answer, Ticket) else "refused")
    await ledger.aclose()

anyio.run(main)
"""


def test_a_second_ledger_on_the_same_file_leaves_it_shared_with_other_processes(tmp_path: Path) -> None:
    """Two ledgers of one process on one SQLite file (a bot with two clients), then another process that
    opens and closes the file: the WAL is not deleted from under this process (it was: closing any
    descriptor of a file drops the process's locks on it, SQLite's shared lock included), and a slot this
    process holds keeps the other process out."""
    import subprocess
    import sys

    import anyio

    from anisearch._ledger import Ticket, WindowSpec, open_ledger, scope_id

    path = tmp_path / "ledger.sqlite3"
    url = f"sqlite:///{path}"
    windows = [WindowSpec("rolling-24h", span_seconds=86400)]
    scope = scope_id("api-key", "one")

    def run(*args: str) -> str:
        done = subprocess.run([sys.executable, "-c", *args], capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    async def main() -> None:
        first = open_ledger(url)
        ticket = await first.reserve("tracemoe", scope, windows)
        assert isinstance(ticket, Ticket)
        await first.settle(ticket, "charged")
        second = open_ledger(url)
        ticket = await second.reserve("tracemoe", scope, windows)
        assert isinstance(ticket, Ticket)
        await second.settle(ticket, "charged")
        await second.aclose()
        run("import sqlite3, sys; sqlite3.connect(sys.argv[1]).execute('PRAGMA schema_version')", str(path))
        assert path.with_name(path.name + "-wal").exists()
        assert path.with_name(path.name + "-shm").exists()
        held = await first.reserve("tracemoe", scope, windows)
        assert isinstance(held, Ticket)
        assert run(ASK_FOR_THE_SLOT, url) == "refused"
        await first.settle(held, "charged")
        assert run(ASK_FOR_THE_SLOT, url) == "slot"
        await first.aclose()

    anyio.run(main)

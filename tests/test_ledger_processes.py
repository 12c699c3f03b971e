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

"""The concurrency gate across processes: several Python processes share one slot through the ledger."""

from __future__ import annotations

import contextlib
import itertools
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pathlib import Path

PROCESSES = 4
ROUNDS = 5
HOLD_SECONDS = 0.02

# Each process says "ready", waits for "go" on stdin, then takes the slot, holds it, and logs "start end"
# (monotonic, which on Linux is one clock for every process) before giving it back.
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
        while not isinstance(ticket := await ledger.reserve("tracemoe", scope, windows), Ticket):
            if time.monotonic() > give_up:
                raise SystemExit("no slot within 30 s")
            await ledger.wait("tracemoe", scope, 1)
        start = time.monotonic()
        await anyio.sleep(hold)
        end = time.monotonic()
        await ledger.settle(ticket, "charged")
        lines.append(f"{start} {end}")
    log.write_text("\\n".join(lines))
    await ledger.aclose()

print("ready", flush=True)
sys.stdin.readline()
anyio.run(main)
"""


def _kill_survivors(workers: list[subprocess.Popen[str]]) -> None:
    for worker in workers:
        if worker.poll() is None:  # pragma: no cover - only after a failure
            worker.kill()


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fresh' / 'ledger.sqlite3'}"  # created by the racing workers
    return str(request.getfixturevalue("redis_url"))


def test_one_slot_is_held_by_one_process_at_a_time(shared_url: str, tmp_path: Path) -> None:
    logs = [tmp_path / f"worker-{n}.log" for n in range(PROCESSES)]
    with contextlib.ExitStack() as stack:
        workers = [
            stack.enter_context(
                subprocess.Popen(
                    [sys.executable, "-c", WORKER, shared_url, str(log), str(ROUNDS), str(HOLD_SECONDS)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
            for log in logs
        ]
        stack.callback(_kill_survivors, workers)  # runs first: a failed test leaves no process behind
        for worker in workers:  # everyone has imported anisearch: start together, for the most contention
            assert worker.stdout is not None
            assert worker.stdout.readline() == "ready\n", worker.communicate(timeout=60)[1]
        for worker in workers:  # go, all at once
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        for worker in workers:
            _, errors = worker.communicate(timeout=60)
            assert worker.returncode == 0, errors

    intervals = sorted(
        (float(start), float(end), log.name)
        for log in logs
        for start, end in (line.split() for line in log.read_text().splitlines())
    )
    assert len(intervals) == PROCESSES * ROUNDS
    overlaps = [(a, b) for a, b in itertools.pairwise(intervals) if b[0] < a[1]]
    assert overlaps == []
    assert len({name for *_, name in intervals}) == PROCESSES

"""Processes creating one SQLite file at once (the result cache, the ledger) all end up using it."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
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


_FORKS_FROM_FOUR_THREADS = """
import os, sys, threading
from pathlib import Path
from anisearch._cache import ResultCache

caches = [ResultCache(Path(sys.argv[1]) / f"c{n}.sqlite3", ttl_seconds=60) for n in range(4)]
sys.setswitchinterval(1e-6)  # threads switch as often as they can: forks overlap


def forker():
    for _ in range(300):
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)


threads = [threading.Thread(target=forker) for _ in range(4)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join(60)
stuck = sum(thread.is_alive() for thread in threads)
held = sum(not cache._lock.acquire(timeout=1) for cache in caches)
print(f"stuck {stuck}, held {held}, usable {sum(cache.usable for cache in caches)}")
os._exit(0)
"""


def test_threads_forking_at_once_leave_no_cache_or_ledger_lock_held(tmp_path: Path) -> None:
    """Each fork waits for the SQLite steps in flight by taking their locks, and lets go after it. Two
    threads forking at once (a fork pool, subprocesses with preexec_fn) each let go of locks the other had
    taken: every cache and ledger step of the process then waited forever."""
    command = [sys.executable, "-c", _FORKS_FROM_FOUR_THREADS, str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.stdout.strip() == "stuck 0, held 0, usable 4", done.stderr[-2000:]


_FORK_WHILE_A_CACHE_OPENS = """
import os, sys, threading, time
from pathlib import Path
import anisearch._anime_cache as anime_cache

path, parent, inside = Path(sys.argv[1]), os.getpid(), threading.Event()
real = anime_cache._set_up


def slow_set_up(db, wait_ms):  # opening takes a transaction a second long (a version 0 file migrated)
    count = real(db, wait_ms)
    if os.getpid() == parent and not inside.is_set():
        db.execute("BEGIN IMMEDIATE")
        db.execute("CREATE TABLE IF NOT EXISTS migrating (x)")
        inside.set()
        time.sleep(1.0)
        db.execute("COMMIT")
    return count


anime_cache._set_up = slow_set_up
threading.Thread(target=anime_cache.AnimeCache, args=(path,)).start()
inside.wait()
time.sleep(0.2)
pid = os.fork()
if pid == 0:
    started = time.monotonic()
    cache = anime_cache.AnimeCache(path)
    cleared = cache.clear()
    print(f"cleared {cleared} in {time.monotonic() - started:.0f} s, problem {cache.problem}", flush=True)
    os._exit(0)
os.waitpid(pid, 0)
"""


def test_a_child_forked_while_a_cache_opens_in_another_thread_can_use_it(tmp_path: Path) -> None:
    """Opening a cache is a step too: a fork while another thread opened one (its set-up a transaction)
    left the child's own cache of that file "held by another process" for 10 s, then off."""
    command = [sys.executable, "-c", _FORK_WHILE_A_CACHE_OPENS, str(tmp_path / "anime.sqlite3")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.stdout.strip() == "cleared 0 in 0 s, problem None", done.stderr[-2000:]

"""The quota engine's cost and its slot hand-over, per ledger backend, in one run.

    python benchmarks/bench_ledger.py [--searches N] [--processes P] [--per-process K]

Prints:

- **ledger cost per search**: one reserve + one settle (what the router does per search), median and p90
  over ``N`` searches, for ``memory://``, ``sqlite:///`` and ``redis://``; with the SQLite transactions and
  the Redis round trips each search costs, counted (SQLite: ``BEGIN IMMEDIATE`` transactions; Redis:
  script calls, each one round trip);
- **slot utilisation**: a concurrency-1 trace.moe emulator answering in 50 ms can serve 20 searches a
  second; ``P`` processes (each one ``AsyncClient``, ``K`` searches, cache off) share one SQLite or Redis
  ledger, and 32 tasks share one client: achieved searches per second ÷ 20, the 402s the emulator
  had to send (0 means no search collided with another), and the slot's idle time between searches
  (median and p90, ms from an answer leaving the emulator to the next search arriving), next to one bare
  httpx client's.

Redis: a private ``redis-server`` from ``PATH`` on a free port, persistence off.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from anisearch._ledger import Ledger, Ticket, open_ledger
from anisearch._ledger import _sqlite as sqlite_backend
from anisearch._ledger._redis import RedisLedger
from anisearch._models import Quota
from anisearch_emulators.tracemoe import create_app
from anisearch_providers.tracemoe import TraceMoe
from bench_router import Emulator, RedisServer

LATENCY = 0.05
WINDOWS = TraceMoe("http://127.0.0.1").windows()

WORKER = textwrap.dedent(
    """
    import sys, time, io, json
    import anyio
    import anisearch
    from PIL import Image

    url, ledger = sys.argv[1], sys.argv[2]
    count, seed, tasks = (int(arg) for arg in sys.argv[3:6])
    settings = anisearch.Settings.load(
        providers=["tracemoe"], provider_options={"tracemoe": {"url": url}}, ledger=ledger, cache="off"
    )

    def image(n):
        buffer = io.BytesIO()
        Image.new("RGB", (64, 36), ((seed * 37 + n) % 256, n % 256, seed % 256)).save(buffer, "JPEG")
        return buffer.getvalue()

    async def main():
        async with anisearch.AsyncClient(settings) as client:
            await client.search(image(10**6), cache=False)  # warm, like the baseline: imports, connection
            print("ready", flush=True)
            sys.stdin.readline()
            stamps = []

            async def run(task):
                for n in range(count):
                    await client.search(image(task * count + n), cache=False)
                    stamps.append(time.monotonic())

            async with anyio.create_task_group() as group:
                for task in range(tasks):
                    group.start_soon(run, task)
            print(json.dumps(stamps), flush=True)

    anyio.run(main)
    """
)


def _single_slot() -> Any:
    return create_app(concurrency=1, latency=LATENCY, quota=10**9, rate_limit=10**9, queue_size=1000)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def ledger_cost(url: str, searches: int) -> list[float]:
    """Seconds per reserve + settle, one search at a time, on a fresh ledger at ``url``."""
    ledger = open_ledger(url)
    try:
        return await _ledger_cost(ledger, searches)
    finally:
        await ledger.clear()
        await ledger.aclose()


async def _ledger_cost(ledger: Ledger, searches: int) -> list[float]:
    await ledger.clear()
    return await _timed_steps(ledger, searches)


async def _timed_steps(ledger: Ledger, searches: int) -> list[float]:
    """Seconds per reserve + settle after 20 untimed ones; every tenth settle brings upstream counts."""
    told = [
        Quota(provider="tracemoe", limit=10**9, used=0, window="rolling-24h"),
        Quota(provider="tracemoe", limit=10**9, used=0, window="minute", source="headers"),
    ]
    timings = []
    for index in range(searches + 20):
        start = time.perf_counter()
        ticket = await ledger.reserve("tracemoe", "guest", WINDOWS, trust_estimate=True)
        if not isinstance(ticket, Ticket):
            raise SystemExit(f"the ledger refused: {ticket}")
        await ledger.settle(ticket, "charged", observations=told if index % 10 == 0 else ())
        if index >= 20:
            timings.append(time.perf_counter() - start)
    return timings


def counted_sqlite_transactions(path: Path, searches: int) -> float:
    """SQLite transactions (``BEGIN`` statements, on the event loop or in a worker thread) per search of
    one reserve and one settle, read from the connection's own statement trace."""
    opened = sqlite_backend.SQLiteLedger._open  # noqa: SLF001 - tracing the backend's own connection
    begins: list[str] = []

    def traced(self: sqlite_backend.SQLiteLedger) -> Any:
        conn = opened(self)
        conn.set_trace_callback(
            lambda statement: begins.append(statement) if statement.startswith("BEGIN") else None
        )
        return conn

    async def count() -> int:
        ledger = open_ledger(f"sqlite:///{path}")
        try:
            await ledger.clear()  # opens the file and makes its tables: not a search's work
            begins.clear()
            await _timed_steps(ledger, searches)
            return len(begins)
        finally:
            await ledger.aclose()

    sqlite_backend.SQLiteLedger._open = traced  # type: ignore[method-assign]  # noqa: SLF001
    try:
        transactions = anyio.run(count)
    finally:
        sqlite_backend.SQLiteLedger._open = opened  # type: ignore[method-assign]  # noqa: SLF001
    return transactions / (searches + 20)


def image_variants(count: int) -> list[bytes]:
    out = []
    for n in range(count):
        buffer = io.BytesIO()
        Image.new("RGB", (64, 36), (n % 256, (n * 7) % 256, 99)).save(buffer, "JPEG")
        out.append(buffer.getvalue())
    return out


class ArrivalTap:
    """ASGI middleware around the emulator: when each ``/search`` arrived and when the last byte of its
    answer went to the server (``time.monotonic()``, one clock for every process of the machine)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.stamps: list[tuple[float, str]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/search":
            await self.app(scope, receive, send)
            return
        self.stamps.append((time.monotonic(), "arrived"))

        async def stamped(message: Any) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                self.stamps.append((time.monotonic(), "answered"))

        await self.app(scope, receive, stamped)

    def gaps_ms(self) -> list[float]:
        """Milliseconds from each answer to the arrival of the next search: the slot's idle time."""
        gaps, answered = [], None
        for at, kind in sorted(self.stamps):
            if kind == "answered":
                answered = at
            elif answered is not None:
                gaps.append((at - answered) * 1000)
                answered = None
        return gaps


def _fed(commands: Callable[[str], list[list[str]]], gaps: list[float] | None) -> tuple[float, int]:
    """Feed a fresh concurrency-1 emulator with the workers ``commands(url)`` starts: seconds until the last
    one's last search, and the 402s the emulator sent. With ``gaps``, the slot's idle times (ms from an
    answer leaving to the next search's arrival, once every worker is warm) are added to it."""
    app = _single_slot()
    tap = ArrivalTap(app) if gaps is not None else None
    with Emulator(tap or app) as server:
        wall = _feed(commands(server.url), on_start=tap.stamps.clear if tap is not None else None)
    if tap is not None and gaps is not None:
        gaps.extend(tap.gaps_ms())
    return wall, sum(1 for row in app.state.emulator.log if row.code == 402)


def utilisation_processes(
    ledger_url: str, processes: int, per_process: int, gaps: list[float] | None = None
) -> tuple[float, int]:
    """Searches per second ÷ 20 of ``processes`` workers sharing a concurrency-1 emulator, and its 402s
    (``gaps``: as :func:`_fed`)."""
    wall, refused = _fed(
        lambda url: [
            [sys.executable, "-c", WORKER, url, ledger_url, str(per_process), str(seed), "1"]
            for seed in range(processes)
        ],
        gaps,
    )
    return (processes * per_process / wall) / (1 / LATENCY), refused


BARE_WORKER = textwrap.dedent(
    """
    import sys, time, io, json
    import anyio, httpx
    from PIL import Image

    url, count = sys.argv[1], int(sys.argv[2])
    buffer = io.BytesIO()
    Image.new("RGB", (64, 36), (1, 2, 99)).save(buffer, "JPEG")
    data = buffer.getvalue()

    async def main():
        async with httpx.AsyncClient() as http:
            await http.post(f"{url}/search", files={"image": ("a.jpg", data, "image/jpeg")})  # warm
            print("ready", flush=True)
            sys.stdin.readline()
            stamps = []
            for _ in range(count):
                response = await http.post(f"{url}/search", files={"image": ("a.jpg", data, "image/jpeg")})
                response.json()
                stamps.append(time.monotonic())
            print(json.dumps(stamps), flush=True)

    anyio.run(main)
    """
)


def _feed(commands: list[list[str]], on_start: Callable[[], None] | None = None) -> float:
    """Start the worker processes, release them at once (``on_start`` is called first, once every worker
    is warm); seconds until the last one's last search."""
    workers = [
        subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for command in commands
    ]
    for worker in workers:
        assert worker.stdout is not None
        if worker.stdout.readline() != "ready\n":
            raise SystemExit("a worker did not start")
    if on_start is not None:
        on_start()
    start = time.monotonic()
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.write("go\n")
        worker.stdin.flush()
    ends = []
    for worker in workers:
        out, _ = worker.communicate(timeout=600)
        ends.append(max(float(stamp) for stamp in out.strip().strip("[]").split(",")))
    return max(ends) - start


def bare_rate(searches: int, gaps: list[float] | None = None) -> float:
    """Searches per second one bare httpx client (a process of its own, like the anisearch workers) gets
    back to back from the same kind of emulator (``gaps``: as :func:`_fed`)."""
    wall, _ = _fed(lambda url: [[sys.executable, "-c", BARE_WORKER, url, str(searches)]], gaps)
    return searches / wall


def utilisation_tasks(
    ledger_url: str, tasks: int, per_task: int, gaps: list[float] | None = None
) -> tuple[float, int]:
    """Like :func:`utilisation_processes`, with ``tasks`` concurrent searches in one worker process."""
    wall, refused = _fed(
        lambda url: [[sys.executable, "-c", WORKER, url, ledger_url, str(per_task), "0", str(tasks)]], gaps
    )
    return (tasks * per_task / wall) / (1 / LATENCY), refused


def counted_redis_round_trips(url: str, searches: int) -> tuple[list[float], float]:
    """Time the Redis ledger and count its server calls (each script call is one round trip)."""
    original = RedisLedger._run  # noqa: SLF001 - counting the backend's own server calls
    calls = [0]

    async def counting(self: RedisLedger, script: str, provider: str, scope: str, args: list[Any]) -> Any:
        calls[0] += 1
        return await original(self, script, provider, scope, args)

    RedisLedger._run = counting  # type: ignore[method-assign]  # noqa: SLF001
    try:
        timings = anyio.run(ledger_cost, url, searches)
    finally:
        RedisLedger._run = original  # type: ignore[method-assign]  # noqa: SLF001
    return timings, calls[0] / (searches + 20)


def report_costs(ledgers: dict[str, str], root: Path, searches: int) -> None:
    print(f"\nledger cost per search (reserve + settle), {searches} searches")
    print(f"{'backend':<8} {'median':>9} {'p90':>9}  per search")
    for kind, url in ledgers.items():
        if kind == "redis":
            timings, trips = counted_redis_round_trips(url, searches)
            steps = f"{trips:.2f} round trips (script calls)"
        else:
            timings = anyio.run(ledger_cost, url, searches)
            steps = "in process"
        if kind == "sqlite":
            steps = f"{counted_sqlite_transactions(root / 'count.sqlite3', searches):.2f} transactions"
        median, p90 = statistics.median(timings) * 1000, percentile(timings, 0.9) * 1000
        print(f"{kind:<8} {median:>7.3f}ms {p90:>7.3f}ms  {steps}")


def report_utilisation(ledgers: dict[str, str], root: Path, processes: int, per_process: int) -> None:
    bare_gaps: list[float] = []
    bare = bare_rate(processes * per_process, bare_gaps) / (1 / LATENCY)
    print(f"\nslot utilisation, a concurrency-1 emulator answering in {LATENCY * 1000:.0f} ms (20/s)")
    print("share of 20/s, then of what one bare httpx client gets back to back from it; the slot's idle")
    print("time between searches (from an answer leaving the emulator to the next search arriving), ms")
    print(f"{'bare httpx, back to back':<34}: {bare:6.1%} {'':<16} idle {_spread(bare_gaps)}")
    runs = []
    for kind in ("sqlite", "redis"):
        if kind in ledgers:
            url = ledgers[kind] if kind == "redis" else f"sqlite:///{root / 'util.sqlite3'}"
            gaps: list[float] = []
            share, refused = utilisation_processes(url, processes, per_process, gaps)
            runs.append((f"{processes} processes x {per_process}, {kind}", share, refused, gaps))
    tasks_url = f"sqlite:///{root / 'util-tasks.sqlite3'}"
    task_gaps: list[float] = []
    share, refused = utilisation_tasks(tasks_url, 32, 3, task_gaps)
    runs.append(("32 tasks x 3 in one client, sqlite", share, refused, task_gaps))
    for label, share, refused, gaps in runs:
        print(
            f"{label:<34}: {share:6.1%} {share / bare:6.1%} of bare  idle {_spread(gaps)}  ({refused} x 402)"
        )


def _spread(gaps: list[float]) -> str:
    if not gaps:
        return "-"
    return f"median {statistics.median(gaps):.2f}, p90 {percentile(gaps, 0.9):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--searches", type=int, default=300, help="timed ledger steps per backend")
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--per-process", type=int, default=25)
    args = parser.parse_args()
    for name in [name for name in os.environ if name.startswith("ANISEARCH_")]:
        del os.environ[name]
    with tempfile.TemporaryDirectory(prefix="anisearch-bench-ledger-") as scratch:
        root = Path(scratch)
        (root / "empty-config.toml").write_text("")  # the caller's config file must not apply
        os.environ["ANISEARCH_CONFIG"] = str(root / "empty-config.toml")
        os.environ["ANISEARCH_STATE_DIR"] = str(root / "state")
        binary = shutil.which("redis-server")
        redis_server = RedisServer(binary, root) if binary else None
        try:
            ledgers = {"memory": "memory://", "sqlite": f"sqlite:///{root / 'ledger.sqlite3'}"}
            if redis_server is not None:
                ledgers["redis"] = redis_server.url
            load, version = os.getloadavg()[0], sys.version.split()[0]
            print(f"machine: {os.cpu_count()} cores, load {load:.2f}; python {version}")
            report_costs(ledgers, root, args.searches)
            report_utilisation(ledgers, root, args.processes, args.per_process)
        finally:
            if redis_server is not None:
                redis_server.stop()


if __name__ == "__main__":
    main()

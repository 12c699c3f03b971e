"""The quota engine's cost and its slot hand-over, per ledger backend, in one run.

    python benchmarks/bench_ledger.py [--searches N] [--processes P] [--per-process K]

Prints:

- **ledger cost per search**: one reserve + one settle (what the router does per search), median and p90
  over ``N`` searches, for ``memory://``, ``sqlite:///`` and ``redis://``; with the SQLite transactions and
  the Redis round trips each search costs, counted (SQLite: ``BEGIN IMMEDIATE`` transactions; Redis:
  script calls, each one round trip);
- **slot utilisation**: a concurrency-1 trace.moe emulator answering in 50 ms can serve 20 searches a
  second; ``P`` processes (each one ``AsyncClient``, ``K`` searches, cache off) share one SQLite or Redis
  ledger, and 32 tasks share one client: achieved searches per second ÷ 20, and the 402s the emulator
  had to send (0 means no search collided with another).

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
    original = sqlite_backend._transaction  # noqa: SLF001 - counting the backend's own transactions
    count = [0]

    def counting(conn: Any, body: Any) -> Any:
        count[0] += 1
        return original(conn, body)

    sqlite_backend._transaction = counting  # noqa: SLF001
    try:
        anyio.run(ledger_cost, f"sqlite:///{path}", searches)
    finally:
        sqlite_backend._transaction = original  # noqa: SLF001
    return (count[0] - 3) / (searches + 20)  # the schema, and clear() before and after


def image_variants(count: int) -> list[bytes]:
    out = []
    for n in range(count):
        buffer = io.BytesIO()
        Image.new("RGB", (64, 36), (n % 256, (n * 7) % 256, 99)).save(buffer, "JPEG")
        out.append(buffer.getvalue())
    return out


def utilisation_processes(ledger_url: str, processes: int, per_process: int) -> tuple[float, int]:
    with Emulator(_single_slot()) as server:
        commands = [
            [sys.executable, "-c", WORKER, server.url, ledger_url, str(per_process), str(seed), "1"]
            for seed in range(processes)
        ]
        wall = _feed(commands)
        refused = sum(1 for row in server.app.state.emulator.log if row.code == 402)
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


def _feed(commands: list[list[str]]) -> float:
    """Start the worker processes, release them at once; seconds until the last one's last search."""
    workers = [
        subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for command in commands
    ]
    for worker in workers:
        assert worker.stdout is not None
        if worker.stdout.readline() != "ready\n":
            raise SystemExit("a worker did not start")
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


def bare_rate(searches: int) -> float:
    """Searches per second one bare httpx client (a process of its own, like the anisearch workers) gets
    back to back from the same kind of emulator."""
    with Emulator(_single_slot()) as server:
        return searches / _feed([[sys.executable, "-c", BARE_WORKER, server.url, str(searches)]])


def utilisation_tasks(ledger_url: str, tasks: int, per_task: int) -> tuple[float, int]:
    """Like :func:`utilisation_processes`, with ``tasks`` concurrent searches in one worker process."""
    with Emulator(_single_slot()) as server:
        wall = _feed([[sys.executable, "-c", WORKER, server.url, ledger_url, str(per_task), "0", str(tasks)]])
        refused = sum(1 for row in server.app.state.emulator.log if row.code == 402)
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
    bare = bare_rate(processes * per_process) / (1 / LATENCY)
    print(f"\nslot utilisation, a concurrency-1 emulator answering in {LATENCY * 1000:.0f} ms (20/s)")
    print("share of 20/s, then of what one bare httpx client gets back to back from it")
    print(f"{'bare httpx, back to back':<34}: {bare:6.1%}")
    runs = []
    for kind in ("sqlite", "redis"):
        if kind in ledgers:
            url = ledgers[kind] if kind == "redis" else f"sqlite:///{root / 'util.sqlite3'}"
            runs.append(
                (
                    f"{processes} processes x {per_process}, {kind}",
                    *utilisation_processes(url, processes, per_process),
                )
            )
    tasks_url = f"sqlite:///{root / 'util-tasks.sqlite3'}"
    runs.append(("32 tasks x 3 in one client, sqlite", *utilisation_tasks(tasks_url, 32, 3)))
    for label, share, refused in runs:
        print(f"{label:<34}: {share:6.1%} {share / bare:6.1%} of bare ({refused} x 402)")


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
        os.environ["ANISEARCH_CONFIG"] = str(root / "no-config.toml")
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

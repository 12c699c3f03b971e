"""Gateway benchmark: what ``anisearch serve`` adds to a search, 1 vs 3 replicas, merged identical searches.

Three parts, all on loopback against the trace.moe emulator (run in a thread of this process):

1. **Overhead.** The same JPEG searched, one at a time, by the library (``AsyncClient.search``, the
   baseline) and through an in-process gateway (``POST /search`` and ``POST /v1/search`` with httpx),
   same emulator, same run, rows interleaved. *over base* is the gateway's cost per search.
2. **Throughput.** ``--clients`` concurrent bots send distinct screenshots to 1, then 3, gateway replicas
   (``anisearch serve`` processes on one Redis ledger, cache off) in front of an emulator allowing 4
   searches in flight with ``--latency`` seconds each. Searches per second, and the emulator's 402s.
3. **Merging.** ``--rounds`` rounds of 10 identical searches spread over 3 replicas (one Redis ledger and
   cache): upstream requests per round (1 is perfect) and the round's wall time.

    python benchmarks/bench_gateway.py                 # ~1 min on 2 cores
    python benchmarks/bench_gateway.py --searches 300 --clients 24
"""

from __future__ import annotations

import argparse
import io
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import uvicorn
from PIL import Image

import anisearch
from anisearch import Settings
from anisearch._server import ServerSettings, create_app
from anisearch_emulators.tracemoe import create_app as tracemoe_app
from bench_router import Emulator, RedisServer, Row, free_port, line, measure, upload_image, warmup_for

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

TOKEN = "benchmark-token-0123456789"  # noqa: S105 - the token of a throw-away local gateway
HEADERS = {"x-trace-key": TOKEN}


def noise_jpeg(seed: int) -> bytes:
    rng = random.Random(seed)  # noqa: S311 - reproducible test pictures, not cryptography
    picture = Image.frombytes("RGB", (64, 36), bytes(rng.randrange(256) for _ in range(64 * 36 * 3)))
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


# ---------------------------------------------------------------- 1. overhead


class InProcessGateway(Emulator):
    """The gateway app under uvicorn in a thread (with its lifespan)."""

    def __init__(self, app: Any) -> None:
        super().__init__(app)
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False, lifespan="on"
        )
        self._server = uvicorn.Server(config)
        import threading

        self._thread = threading.Thread(target=self._server.run, daemon=True)


def library_search(client: anisearch.AsyncClient, data: bytes) -> Callable[[], Awaitable[object]]:
    async def run() -> object:
        result = await client.search(data, cache=False)
        assert result.provider == "tracemoe", result.attempts
        return result

    return run


def gateway_search(http: httpx.AsyncClient, url: str, data: bytes) -> Callable[[], Awaitable[object]]:
    async def run() -> object:
        answer = await http.post(url, files={"image": ("shot.jpg", data)}, headers=HEADERS)
        assert answer.status_code == 200, answer.text
        return answer.json()

    return run


def settings_for(emulator_url: str, ledger: str, cache: str = "off") -> Settings:
    return Settings.load(
        providers=["tracemoe"],
        provider_options={"tracemoe": {"url": emulator_url}},
        ledger=ledger,
        cache=cache,
    )


async def overhead_rows(emulator_url: str, gateway_url: str, count: int) -> dict[str, Row]:
    data = upload_image().data
    rows: dict[str, Row] = {}
    # A private memory ledger for the library (a clock of its own), the gateway's in its own thread.
    library = anisearch.AsyncClient(settings_for(emulator_url, "memory://"), clock=lambda: datetime.now(UTC))
    async with library, httpx.AsyncClient(timeout=60) as http:
        rows["library"] = Row("AsyncClient.search [baseline]", library_search(library, data))
        rows["search"] = Row("gateway POST /search", gateway_search(http, gateway_url + "/search", data))
        rows["v1"] = Row(
            "gateway POST /v1/search", gateway_search(http, gateway_url + "/v1/search?cache=false", data)
        )
        await measure(list(rows.values()), count, warmup_for(count))
    return rows


# ---------------------------------------------------------------- 2./3. replicas


class Replica:
    """``anisearch serve`` in its own process."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "anisearch", "serve", "--port", str(self.port)],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"a gateway replica did not start; see {log}")
            time.sleep(0.1)  # noqa: TID251 - a script waiting for its child process

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(timeout=120)
        self._log.close()


def replica_env(root: Path, emulator_url: str, redis_url: str, *, cache: bool) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("ANISEARCH_")}
    env.update(
        {
            "ANISEARCH_PROVIDERS": "tracemoe",
            "ANISEARCH_TRACEMOE_URL": emulator_url,
            "ANISEARCH_LEDGER": redis_url,
            "ANISEARCH_CACHE": redis_url.rsplit("/", 1)[0] + "/1" if cache else "off",
            "ANISEARCH_SERVER_CLIENTS": f"bench={TOKEN}",
            "ANISEARCH_SERVER_CLIENT_CONCURRENCY": "64",
            "ANISEARCH_SERVER_SLOT_WAIT": "120",
            "ANISEARCH_SERVER_DEADLINE": "120",
            "XDG_STATE_HOME": str(root / "state"),
            "XDG_CACHE_HOME": str(root / "cache"),
            "XDG_CONFIG_HOME": str(root / "config"),
        }
    )
    return env


def flush(redis_url: str) -> None:
    import redis

    for db in (redis_url, redis_url.rsplit("/", 1)[0] + "/1"):
        with redis.Redis.from_url(db) as client:
            client.flushdb()


def throughput(urls: list[str], clients: int, searches: int, seed: int) -> tuple[float, list[int]]:
    """Searches per second over ``urls`` round-robin, and the statuses the bots saw."""

    def bot(number: int) -> list[int]:
        statuses = []
        with httpx.Client(timeout=300) as http:
            for turn in range(number, searches, clients):
                url = urls[turn % len(urls)] + "/search"
                statuses.append(
                    http.post(url, files={"image": noise_jpeg(seed + turn)}, headers=HEADERS).status_code
                )
        return statuses

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        statuses = [code for batch in pool.map(bot, range(clients)) for code in batch]
    return searches / (time.perf_counter() - started), statuses


def merged_round(urls: list[str], image: bytes) -> float:
    def search(number: int) -> int:
        url = urls[number % len(urls)] + "/search"
        return httpx.post(url, files={"image": image}, headers=HEADERS, timeout=120).status_code

    started = time.perf_counter()
    with ThreadPoolExecutor(10) as pool:
        codes = list(pool.map(search, range(10)))
    assert codes == [200] * 10, codes
    return time.perf_counter() - started


# ---------------------------------------------------------------- main


def main() -> None:  # noqa: PLR0915 - one script, three parts, printed in order
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--searches", type=int, default=150, help="timed searches per overhead row")
    parser.add_argument("--clients", type=int, default=12, help="concurrent bots in the throughput part")
    parser.add_argument("--fleet-searches", type=int, default=96, help="searches per throughput run")
    parser.add_argument("--latency", type=float, default=0.1, help="emulator seconds per search (parts 2, 3)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of 10 identical searches")
    args = parser.parse_args()
    binary = shutil.which("redis-server")
    if binary is None:
        parser.error("parts 2 and 3 need redis-server on PATH")
    for name in [name for name in os.environ if name.startswith("ANISEARCH_")]:
        del os.environ[name]
    with tempfile.TemporaryDirectory(prefix="anisearch-bench-gw-") as scratch, ExitStack() as stack:
        root = Path(scratch)
        os.environ["XDG_STATE_HOME"] = str(root / "state")
        os.environ["XDG_CACHE_HOME"] = str(root / "cache")

        print("1. gateway overhead per search (ms; one at a time, same emulator, same run)")
        emulator = stack.enter_context(Emulator())
        app = create_app(
            settings_for(emulator.url, "memory://"), ServerSettings.load(clients=f"bench={TOKEN}")
        )
        gateway = stack.enter_context(InProcessGateway(app))
        rows = anyio.run(overhead_rows, emulator.url, gateway.url, args.searches)
        print(f"  {'row':<34} {'median':>8} {'p90':>8} {'over base':>12} {'ratio':>7}")
        base = rows["library"]
        print(line(base.label, base))
        for key in ("search", "v1"):
            print(line(rows[key].label, rows[key], base))

        redis_server = RedisServer(binary, root)
        stack.callback(redis_server.stop)
        limited = Emulator(
            tracemoe_app(quota=10**9, rate_limit=10**9, concurrency=4, queue_size=64, latency=args.latency)
        )
        stack.enter_context(limited)
        state = limited.app.state.emulator

        print(f"\n2. throughput, {args.clients} bots, {args.fleet_searches} distinct searches, emulator: "
              f"4 in flight, {args.latency:g} s each")  # fmt: skip
        for count in (1, 3):
            flush(redis_server.url)
            replicas = [
                Replica(
                    replica_env(root / f"r{n}", limited.url, redis_server.url, cache=False),
                    root / f"r{n}.log",
                )
                for n in range(count)
            ]
            try:
                before = len(state.log)
                rate, statuses = throughput(
                    [r.url for r in replicas], args.clients, args.fleet_searches, count * 10**6
                )
                upstream = [row.code for row in state.log[before:]]
            finally:
                for replica in replicas:
                    replica.stop()
            print(f"  {count} replica(s): {rate:6.1f} searches/s; gateway answers {sorted(set(statuses))}; "
                  f"emulator: {upstream.count(200)} searched, {upstream.count(402)} x 402")  # fmt: skip

        print(f"\n3. merged identical searches: {args.rounds} rounds of 10 over 3 replicas (one Redis)")
        flush(redis_server.url)
        replicas = [
            Replica(
                replica_env(root / f"m{n}", limited.url, redis_server.url, cache=True), root / f"m{n}.log"
            )
            for n in range(3)
        ]
        try:
            upstream_per_round, walls = [], []
            for round_number in range(args.rounds):
                before = state.search_requests
                walls.append(merged_round([r.url for r in replicas], noise_jpeg(7 * 10**6 + round_number)))
                upstream_per_round.append(state.search_requests - before)
        finally:
            for replica in replicas:
                replica.stop()
        print(f"  upstream requests per round of 10: {upstream_per_round}")
        print(f"  round wall time: median {sorted(walls)[len(walls) // 2]:.2f} s "
              f"(one upstream search takes {args.latency:g} s)")  # fmt: skip


if __name__ == "__main__":
    main()

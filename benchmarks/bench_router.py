"""Time anisearch's per-search overhead against a bare httpx request to the same emulator, in the same run.

    python benchmarks/bench_router.py [--searches N] [--redis-url URL]

A trace.moe emulator (``anisearch_emulators.tracemoe``, quota and rate limit out of reach) is
served by uvicorn on a free 127.0.0.1 port in a background thread. Every search uploads the same small
prepared JPEG, one search at a time. Rows, each timed ``N`` times (interleaved in blocks so that drift
hits every row alike, after warm-up searches):

- baseline: a bare ``httpx.AsyncClient`` POSTing the JPEG to ``/search`` (multipart field ``image``)
  and decoding the JSON; also ``GET /``, the loopback round trip without a search, so the difference is
  what the emulator itself spends on a search;
- ``Router.search``: the router alone with the real ``tracemoe`` provider and the real ledger, given a
  ready ``SearchQuery`` (no image preparation): admit, lease, request building, send, rate-limit and
  quota bookkeeping, parsing into ``Hit`` models, release;
- ``AsyncClient.search``: the whole public call on the bytes (cache off), which adds image preparation;

for the ``memory://``, ``sqlite:///`` and ``redis://`` ledgers. Without HTTP it also times the ledger
calls one search makes (admit + acquire + record_request + observe + observe/record_success + release),
the provider's sans-IO work (build the request, read the headers, parse the answer) and the image
preparation, so the overhead can be read as a sum of its parts.

Redis: ``--redis-url`` (use a scratch database: the benchmark writes and then deletes the
``anisearch:ledger:*`` keys there), else a private ``redis-server`` from ``PATH`` on a free port with
persistence off, else the Redis rows are skipped with a note.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import anyio
import httpx
import uvicorn
from PIL import Image

import anisearch
from anisearch._config import Settings
from anisearch._image import prepare
from anisearch._ledger import Ticket, open_ledger
from anisearch._plan import PlannedQuery, Route
from anisearch._provider import ProviderContext, SearchOptions, SearchQuery
from anisearch._router import Router
from anisearch._verdict import provider_windows
from anisearch_emulators.tracemoe import create_app
from anisearch_providers.tracemoe import TraceMoe

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from anisearch._image import PreparedImage
    from anisearch._ledger._base import Ledger
    from anisearch._models import Quota
    from anisearch._provider import Provider, ProviderAnswer

BLOCKS = 20
"""Each row's searches are split in this many blocks, taken in turn with the other rows' blocks."""


def warmup_for(count: int) -> int:
    """Untimed calls per row before timing starts (connections, imports, SQLite schema, Lua scripts)."""
    return max(5, count // 20)


# ---------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Emulator:
    """The trace.moe emulator under uvicorn on 127.0.0.1, in a daemon thread."""

    def __init__(self, app: Any = None) -> None:
        app = app or create_app(quota=10**9, rate_limit=10**9, concurrency=8, queue_size=8)
        self.app = app
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False, lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the trace.moe emulator did not start")
            time.sleep(0.01)  # noqa: TID251 - a script's main thread waiting for the server thread
        return self

    def __exit__(self, *_: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


class RedisServer:
    """A private ``redis-server`` on a free loopback port, persistence off, data in a temporary dir."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(directory)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if time.monotonic() > deadline or self._proc.poll() is not None:
                    self.stop()
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.02)  # noqa: TID251 - a script waiting for its child process

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
        self._proc.wait(timeout=10)


# ---------------------------------------------------------------- timing


@dataclass
class Row:
    """One timed thing: ``run`` is one search (or one search's worth of work)."""

    label: str
    run: Callable[[], Awaitable[object]]
    samples: list[float] = field(default_factory=list)
    """Milliseconds per call."""

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def p90(self) -> float:
        return statistics.quantiles(self.samples, n=10, method="inclusive")[-1]


async def measure(rows: list[Row], count: int, warmup: int) -> None:
    """Warm every row up, then time ``count`` calls of each, in interleaved blocks."""
    for row in rows:
        for _ in range(warmup):
            await row.run()
    blocks = min(BLOCKS, count)
    sizes = [count // blocks + (1 if index < count % blocks else 0) for index in range(blocks)]
    for size in sizes:
        for row in rows:
            for _ in range(size):
                start = time.perf_counter()
                await row.run()
                row.samples.append((time.perf_counter() - start) * 1000)


# ---------------------------------------------------------------- what is timed


def upload_image() -> PreparedImage:
    """A 640x4 gradient strip as a JPEG, prepared as anisearch would upload it (under 1 kB).

    Tiny on purpose. The emulator scales every upload to fit 320x320 before describing it in pure
    Python, so a strip becomes 320x2 pixels and costs it a few milliseconds instead of ~15 for a
    16:9 frame; the baseline is then mostly the loopback round trip, which makes the overhead ratios
    a worst case rather than hiding them behind the emulator's work.
    """
    gradient = Image.linear_gradient("L").resize((640, 4))
    picture = Image.merge("RGB", (gradient, gradient.transpose(Image.Transpose.FLIP_LEFT_RIGHT), gradient))
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=85)
    return prepare(buffer.getvalue())


def bare_search(http: httpx.AsyncClient, url: str, data: bytes) -> Callable[[], Awaitable[object]]:
    async def run() -> object:
        response = await http.post(url, files={"image": ("image.jpg", data, "image/jpeg")})
        if response.status_code != httpx.codes.OK:
            raise RuntimeError(f"the emulator answered {response.status_code}: {response.text[:200]}")
        return response.json()

    return run


def bare_get(http: httpx.AsyncClient, url: str) -> Callable[[], Awaitable[object]]:
    async def run() -> object:
        response = await http.get(url)
        response.raise_for_status()
        return response.content

    return run


def checked(result: anisearch.SearchResult) -> anisearch.SearchResult:
    if result.provider != "tracemoe" or [a.outcome for a in result.attempts] != ["ok"]:
        raise RuntimeError(f"the search did not go through as timed: {result.attempts}")
    return result


def router_search(
    ledger: Ledger, http: httpx.AsyncClient, provider: TraceMoe, image: PreparedImage
) -> Callable[[], Awaitable[object]]:
    async def send(_provider: Provider, request: httpx.Request) -> httpx.Response:
        response = await http.send(request)
        await response.aread()
        return response

    router = Router(ledger, send)
    planned = PlannedQuery(provider, image, SearchOptions())  # the image already fits: sent as it is
    routes = [
        Route(provider=provider, scope="guest", slots=1, windows=provider_windows(provider), query=planned)
    ]

    async def run() -> object:
        return checked(await router.search(routes))

    return run


def client_search(client: anisearch.AsyncClient, data: bytes) -> Callable[[], Awaitable[object]]:
    async def run() -> object:
        return checked(await client.search(data))

    return run


def ledger_calls(
    ledger: Ledger, observed: list[Quota], answer: ProviderAnswer
) -> Callable[[], Awaitable[object]]:
    """The ledger steps of one successful search, as the router makes them: one reserve, one settle."""
    windows = TraceMoe.from_context(ProviderContext()).windows()

    async def run() -> object:
        ticket = await ledger.reserve("tracemoe", "guest", windows, trust_estimate=True)
        if not isinstance(ticket, Ticket):
            raise RuntimeError(f"the ledger refused: {ticket}")  # noqa: TRY004 - a refusal, not a bad type
        now = datetime.now(UTC)
        told = [q.model_copy(update={"observed_at": now}) for q in observed]
        if answer.quota is not None:
            told.append(answer.quota.model_copy(update={"observed_at": now}))
        await ledger.settle(ticket, "charged", observations=told)
        return ticket

    return run


def provider_work(
    provider: TraceMoe, image: PreparedImage, response: httpx.Response
) -> Callable[[], Awaitable[object]]:
    query = SearchQuery(image=image)

    async def run() -> object:
        provider.search_request(query)
        provider.observe(response)
        return provider.parse_search(response)

    return run


def preparation(data: bytes) -> Callable[[], Awaitable[object]]:
    async def run() -> object:
        return prepare(data)

    return run


# ---------------------------------------------------------------- report


def line(label: str, row: Row, baseline: Row | None = None) -> str:
    text = f"  {label:<34} {row.median:>8.2f} {row.p90:>8.2f}"
    if baseline is not None:
        extra = row.median - baseline.median
        text += f" {extra:>+9.2f} ms {row.median / baseline.median:>6.2f}x"
    return text


def summary(kind: str, row: Row, baseline: Row) -> str:
    name, extra, ratio = kind.partition(":")[0], row.median - baseline.median, row.median / baseline.median
    return f"  {name}: {row.median:.1f} ms/search, {extra:+.1f} ms over bare httpx ({ratio:.2f}x)"


def report(
    *,
    args: argparse.Namespace,
    emulator_url: str,
    image: PreparedImage,
    http_rows: dict[str, Row],
    local_rows: dict[str, Row],
    kinds: list[str],
    notes: list[str],
) -> None:
    baseline, floor = http_rows["baseline"], http_rows["get"]
    print(
        f"anisearch router overhead: {args.searches} sequential searches per row (median and p90, ms), "
        f"same run, same emulator"
    )
    print(
        f"trace.moe emulator at {emulator_url} (uvicorn thread, this process); upload: "
        f"{len(image.data)}-byte {image.width}x{image.height} JPEG; Python {sys.version.split()[0]}\n"
    )
    header = f"  {'HTTP, per search':<34} {'median':>8} {'p90':>8} {'over base':>12} {'ratio':>7}"
    print(header)
    print("  " + "-" * (len(header) - 2))
    print(line("bare httpx GET / (no search)", floor))
    print(line("bare httpx POST /search  [baseline]", baseline))
    for kind in kinds:
        print(line(f"Router.search, {kind}", http_rows[f"router {kind}"], baseline))
    for kind in kinds:
        print(line(f"AsyncClient.search, {kind}", http_rows[f"client {kind}"], baseline))
    print(f"\n  {'Without HTTP, per search':<34} {'median':>8} {'p90':>8}")
    print("  " + "-" * 52)
    for kind in kinds:
        print(line(f"ledger calls, {kind}", local_rows[f"ledger {kind}"]))
    print(line("provider: build + observe + parse", local_rows["provider"]))
    print(line("image preparation (prepare)", local_rows["prepare"]))

    search_work = baseline.median - floor.median
    print(
        f"\nThe emulator spends ~{search_work:.1f} ms of the {baseline.median:.1f} ms baseline on the search "
        f"itself (POST /search minus GET /: parsing the upload, describing it in pure Python, ranking "
        f"its index); a real trace.moe search takes far longer, so these ratios are a worst case."
    )
    print("\nRouter overhead (Router.search, image already prepared):")
    for kind in kinds:
        ledger = local_rows[f"ledger {kind}"].median
        print(
            f"{summary(kind, http_rows[f'router {kind}'], baseline)}; its ledger calls alone: {ledger:.2f} ms"
        )
    print("Whole call (AsyncClient.search on the bytes, cache off; includes image preparation):")
    for kind in kinds:
        print(summary(kind, http_rows[f"client {kind}"], baseline))
    print(
        f"\n{warmup_for(args.searches)} warm-up calls per row, then {args.searches} timed calls in "
        f"{min(BLOCKS, args.searches)} interleaved blocks; ratio = row median / baseline median."
    )
    for note in notes:
        print(f"note: {note}")


# ---------------------------------------------------------------- main


async def run_benchmark(
    args: argparse.Namespace, emulator_url: str, ledgers: dict[str, str], notes: list[str]
) -> None:
    count: int = args.searches
    warmup = warmup_for(count)
    image = upload_image()
    data = image.data
    provider = TraceMoe(emulator_url)
    http_rows: dict[str, Row] = {}
    local_rows: dict[str, Row] = {}
    opened: list[Ledger] = []
    clients: list[anisearch.AsyncClient] = []
    async with httpx.AsyncClient(timeout=30.0) as http:
        http_rows["get"] = Row("get", bare_get(http, f"{emulator_url}/"))
        http_rows["baseline"] = Row("baseline", bare_search(http, f"{emulator_url}/search", data))
        sample = await http.send(provider.search_request(SearchQuery(image=image)))
        answer, observed = provider.parse_search(sample), provider.observe(sample)
        try:
            for kind, url in ledgers.items():
                ledger = open_ledger(url)
                opened.append(ledger)
                await ledger.clear()
                http_rows[f"router {kind}"] = Row(kind, router_search(ledger, http, provider, image))
                settings = Settings.load(
                    providers=["tracemoe"],
                    provider_options={"tracemoe": {"url": emulator_url}},
                    ledger=url,
                    cache="off",
                    state_dir=Path(args.state_dir),
                )
                client = anisearch.AsyncClient(settings)
                clients.append(client)
                http_rows[f"client {kind}"] = Row(kind, client_search(client, data))
                local_rows[f"ledger {kind}"] = Row(kind, ledger_calls(ledger, observed, answer))
            local_rows["provider"] = Row("provider", provider_work(provider, image, sample))
            local_rows["prepare"] = Row("prepare", preparation(data))
            await measure([*http_rows.values(), *local_rows.values()], count, warmup)
        finally:
            for client in clients:
                await client.aclose()
            for ledger in opened:
                await ledger.clear()
                await ledger.aclose()
    report(
        args=args,
        emulator_url=emulator_url,
        image=image,
        http_rows=http_rows,
        local_rows=local_rows,
        kinds=list(ledgers),
        notes=notes,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--searches", type=int, default=200, help="timed searches per row (default 200)")
    parser.add_argument(
        "--redis-url",
        help="a scratch Redis database for the redis:// rows (its anisearch:ledger:* keys are deleted); "
        "default: start a private redis-server if one is installed",
    )
    args = parser.parse_args()
    if args.searches < 2:
        parser.error("--searches must be at least 2 (a p90 needs two samples)")
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="anisearch-bench-") as scratch:
        root = Path(scratch)
        args.state_dir = str(root / "state")
        # The caller's ANISEARCH_* variables and config file must not redirect or re-key the searches.
        for name in [name for name in os.environ if name.startswith("ANISEARCH_")]:
            del os.environ[name]
        (root / "empty-config.toml").write_text("")  # the caller's config file must not apply
        os.environ["ANISEARCH_CONFIG"] = str(root / "empty-config.toml")
        ledgers = {"memory://": "memory://", "sqlite:///": f"sqlite:///{root / 'ledger.sqlite3'}"}
        redis: RedisServer | None = None
        if args.redis_url:
            ledgers["redis://"] = args.redis_url
        elif (binary := shutil.which("redis-server")) is not None:
            (root / "redis").mkdir()
            redis = RedisServer(binary, root / "redis")
            ledgers["redis://"] = redis.url
        else:
            notes.append("no redis-server on PATH and no --redis-url: the redis:// rows were skipped")
        try:
            with Emulator() as emulator:
                anyio.run(run_benchmark, args, emulator.url, ledgers, notes)
        finally:
            if redis is not None:
                redis.stop()


if __name__ == "__main__":
    main()

"""Per-search cost against the peers, cache hits, and the command line, against one trace.moe emulator.

The emulator runs in a process of its own (so the client's CPU time per search is the client's alone),
with its quota and rate limit out of reach and a fixed latency per search. Every client is handed the same
sample screenshot; the baseline is a bare ``httpx.AsyncClient`` that posts the JPEG anisearch would send
(already prepared) and decodes the JSON answer: the least any client does.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import anyio
import httpx
from PIL import Image, ImageDraw

import anisearch
from anisearch._image import fit, prepare, prepare_quick
from anisearch._ledger import Ledger, Ticket, open_ledger
from anisearch._models import Quota
from anisearch_providers.tracemoe import TraceMoe

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

SERVER = textwrap.dedent(
    """
    import sys, uvicorn
    from anisearch_emulators.tracemoe import create_app
    app = create_app(quota=10**9, rate_limit=10**9, concurrency=64, queue_size=64, latency=float(sys.argv[2]))
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
    """
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmulatorProcess:
    """The trace.moe emulator under uvicorn in a child process, answering after ``latency`` seconds."""

    def __init__(self, latency: float) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._proc = subprocess.Popen([sys.executable, "-c", SERVER, str(self.port), str(latency)])

    def __enter__(self) -> Self:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(self.url + "/", timeout=1)
            except httpx.HTTPError:
                time.sleep(0.05)  # noqa: TID251 - a script waiting for its child process
                continue
            return self
        self._proc.kill()
        raise RuntimeError("the trace.moe emulator did not start")

    def __exit__(self, *_: object) -> None:
        self._proc.terminate()
        self._proc.wait(timeout=10)


@dataclass
class Timed:
    """One client's searches: wall milliseconds per search, and process CPU milliseconds per search."""

    label: str
    run: Callable[[], Awaitable[object]]
    wall: list[float] = field(default_factory=list)
    cpu: float = 0.0

    @property
    def median(self) -> float:
        return statistics.median(self.wall)


async def interleave(rows: list[Timed], count: int, blocks: int = 10) -> None:
    """Run each row ``count`` times after a warm-up, in turns (``blocks``), so load hits every row alike."""
    for row in rows:
        for _ in range(3):
            await row.run()
    per_block = max(1, count // blocks)
    for _ in range(blocks):
        for row in rows:
            cpu = time.process_time()
            for _ in range(per_block):
                start = time.perf_counter()
                await row.run()
                row.wall.append((time.perf_counter() - start) * 1000)
            row.cpu += (time.process_time() - cpu) * 1000
    for row in rows:
        row.cpu /= len(row.wall)


def tracemoe_upload(sample: Path) -> bytes:
    """The JPEG anisearch sends trace.moe for ``sample``."""
    limits = TraceMoe().limits
    width, height = limits.box
    return fit(prepare(sample, max_width=width, max_height=height), limits).data


def settings(url: str, ledger: str, cache: str = "off") -> anisearch.Settings:
    return anisearch.Settings.load(
        providers=["tracemoe"], provider_options={"tracemoe": {"url": url}}, ledger=ledger, cache=cache
    )


FLOOR = "floor: prepare + SQLite ledger + bare POST"


def floor_search(
    source: bytes, url: str, ledger: Ledger, bare: httpx.AsyncClient
) -> Callable[[], Awaitable[object]]:
    """The least any quota-keeping client of trace.moe does per search, without routing or parsing:
    prepare ``source`` as anisearch does, reserve a slot on ``ledger``, post the upload (as the
    baseline does), settle. What anisearch adds over the baseline beyond this is its own."""
    windows = TraceMoe().windows()
    box = TraceMoe().limits.box

    async def run() -> object:
        prepared = prepare_quick(source, max_width=box[0], max_height=box[1])
        assert prepared is not None  # a small still in memory: prepared in place, as the client does
        ticket = await ledger.reserve("tracemoe", "guest", windows, trust_estimate=True)
        if not isinstance(ticket, Ticket):
            raise SystemExit(f"the ledger refused: {ticket}")
        response = await bare.post(
            f"{url}/search", files={"image": ("image.jpg", prepared.data, "image/jpeg")}
        )
        await ledger.settle(ticket, "charged")
        return response.json()

    return run


async def out_of_reach(ledger: Ledger) -> None:
    """Empty ``ledger`` and record trace.moe's quota and rate limit as the emulator's: out of reach."""
    await ledger.clear()
    ticket = await ledger.reserve("tracemoe", "guest", TraceMoe().windows(), trust_estimate=True)
    assert isinstance(ticket, Ticket)
    told = [
        Quota(provider="tracemoe", limit=10**9, used=0, window="rolling-24h"),
        Quota(provider="tracemoe", limit=10**9, used=0, window="minute", source="headers"),
    ]
    await ledger.settle(ticket, "charged", observations=told)


async def per_search(
    source: bytes, upload: bytes, ledgers: dict[str, str], *, latency: float, count: int
) -> list[Timed]:
    """Medians per search of the baseline, the peers, anisearch (one row per ledger, cache off) and the
    floor under anisearch (:func:`floor_search`, on a SQLite ledger of its own)."""
    from aiotracemoeapi import TraceMoe as AioTraceMoe  # the "bench" extra
    from PicImageSearch import TraceMoe as PicTraceMoe

    floor_ledger = open_ledger(ledgers["SQLite"] + "-floor") if "SQLite" in ledgers else None
    with EmulatorProcess(latency) as server:
        async with (
            httpx.AsyncClient() as bare,
            httpx.AsyncClient() as shared,
            AioTraceMoe(base_url=server.url) as aio,
        ):
            pic = PicTraceMoe(base_url_api=server.url, client=shared)

            async def no_anilist(*_: object) -> None:  # it asks AniList once per hit: another service
                return None

            pic.update_anime_info = no_anilist

            async def bare_post() -> object:
                response = await bare.post(
                    f"{server.url}/search", files={"image": ("image.jpg", upload, "image/jpeg")}
                )
                return response.json()

            rows = [
                Timed("bare httpx POST", bare_post),
                Timed("aiotracemoeapi", lambda: aio.search(source, cut_borders=False, anilist_info=False)),
                Timed("PicImageSearch (shared client)", lambda: pic.search(file=source, cut_borders=False)),
            ]
            clients = []
            for name, url in ledgers.items():
                client = anisearch.AsyncClient(settings(server.url, url))
                clients.append(client)
                rows.append(Timed(f"anisearch, {name} ledger", partial(client.search, source, cache=False)))
            if floor_ledger is not None:
                await out_of_reach(floor_ledger)
                rows.append(Timed(FLOOR, floor_search(source, server.url, floor_ledger, bare)))
            try:
                await interleave(rows, count)
            finally:
                for client in clients:
                    await client.aclose()
                if floor_ledger is not None:
                    await floor_ledger.clear()
                    await floor_ledger.aclose()
    return rows


def variants(sample: Path, count: int) -> list[bytes]:
    """``count`` different pictures made from the same screenshot, each one a cache miss.

    A changed pixel would not do: trace.moe's answer is keyed by the colour layout descriptor, which a
    re-encode or a one-pixel change leaves as it is (such a search is answered from the cache). Each
    variant paints the top-left sixteenth of the frame its own colour, which gives it its own descriptor.
    """
    with Image.open(sample) as image:
        rgb = image.convert("RGB")
    out = []
    for n in range(count):
        copy = rgb.copy()
        colour = ((n * 37) % 256, (n * 91) % 256, (n * 53) % 256)
        ImageDraw.Draw(copy).rectangle((0, 0, copy.width // 4, copy.height // 4), fill=colour)
        buffer = io.BytesIO()
        copy.save(buffer, "JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def _floor_lookup(conn: sqlite3.Connection, sample: Path) -> float:
    """Seconds for the least a cache hit does: hash the file, one ``SELECT`` on an open connection,
    ``json.loads``."""
    start = time.perf_counter()
    with open(sample, "rb") as file:  # noqa: PTH123 - the floor: a plain blocking read
        digest = hashlib.sha256(file.read()).hexdigest()
    row = conn.execute("SELECT result FROM results WHERE key != ? LIMIT 1", (digest,)).fetchone()
    json.loads(row[0])
    return time.perf_counter() - start


async def cache_in_process(sample: Path, misses: list[bytes], root: Path, count: int) -> dict[str, float]:
    """Median ms of a cache hit, a cache miss (50 ms emulator), and the floor of a hit (hash + SELECT).

    Each round is a miss, then a hit, then the floor, so the hit and its floor run in the same conditions
    (right after a search that waited 50 ms for the emulator, with whatever else the machine is doing).
    """
    data = await anyio.Path(sample).read_bytes()
    cache = root / "cache.sqlite3"
    hit, miss, floor = [], [], []
    with EmulatorProcess(0.05) as server:
        async with anisearch.AsyncClient(
            settings(server.url, f"sqlite:///{root / 'cache-ledger.sqlite3'}", cache=str(cache))
        ) as client:
            await client.search(data)
            conn = sqlite3.connect(cache)
            try:
                for n in range(count):
                    start = time.perf_counter()
                    fresh = await client.search(misses[n])
                    miss.append(time.perf_counter() - start)
                    if fresh.cached:
                        raise SystemExit("a new picture was answered from the cache")
                    start = time.perf_counter()
                    result = await client.search(data)
                    hit.append(time.perf_counter() - start)
                    if not result.cached:
                        raise SystemExit("the repeated search was not answered from the cache")
                    floor.append(_floor_lookup(conn, sample))
            finally:
                conn.close()
    return {
        "hit": statistics.median(hit) * 1000,
        "miss": statistics.median(miss) * 1000,
        "floor": statistics.median(floor) * 1000,
    }


PEER_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from aiotracemoeapi import TraceMoe
    async def main():
        async with TraceMoe(base_url=sys.argv[1]) as api:
            print(await api.search(sys.argv[2], cut_borders=False, anilist_info=False))
    asyncio.run(main())
    """
)


CLI_FLOOR = "floor: peer script + the CLI's libraries"
CLI_LIBRARIES = (
    "import PIL.Image, platformdirs, psutil, pydantic_settings, rich.console, rich.table, sqlite3, tomllib,"
    " typer"
)
"""What a command-line search loads that the peer's script does not, besides anisearch itself: the floor of
any CLI built on the libraries anisearch chose (typer and rich, pydantic-settings, Pillow, psutil)."""


def _run_once(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return (time.perf_counter() - start) * 1000


def _interleaved(commands: dict[str, list[str]], env: dict[str, str], runs: int) -> dict[str, float]:
    """Median wall ms of each command over ``runs`` fresh processes, the commands taking turns (so a
    burst of load from elsewhere hits every row alike), after two untimed runs each (they write the
    bytecode; the cache-hit row's first search stores the answer the others find)."""
    for command in commands.values():
        _run_once(command, env)
        _run_once(command, env)
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, command in commands.items():
            times[name].append(_run_once(command, env))
    return {name: statistics.median(values) for name, values in times.items()}


def command_line(sample: Path, root: Path, runs: int) -> dict[str, float]:
    """Median ms of start-up and of one CLI search (cache miss and hit) against a 50 ms emulator."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANISEARCH_")}
    env.update(ANISEARCH_STATE_DIR=str(root / "cli-state"), ANISEARCH_CACHE_DIR=str(root / "cli-cache"))
    # Every process loads bytecode compiled once, as from an installed wheel: an editable install run
    # with PYTHONDONTWRITEBYTECODE would otherwise compile anisearch's sources in every process, while
    # the peers' come compiled from site-packages. The prefix keeps the bytecode out of the source tree.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(root / "pycache")
    env["ANISEARCH_METADATA"] = "off"  # the peers look up no titles; and nothing may leave the machine
    cli = [sys.executable, "-m", "anisearch"]
    with EmulatorProcess(0.05) as server:
        env["ANISEARCH_TRACEMOE_URL"] = server.url
        env["ANISEARCH_PROVIDERS"] = "tracemoe"
        search = [*cli, "search", str(sample)]
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "import anisearch": [sys.executable, "-c", "import anisearch"],
            "anisearch --help": [*cli, "--help"],
            "one CLI search (cache miss)": [*search, "--no-cache"],
            "one CLI search (cache hit)": search,
            "peer one-search script (aiotracemoeapi)": [
                sys.executable,
                "-c",
                PEER_SCRIPT,
                server.url,
                str(sample),
            ],
            CLI_FLOOR: [sys.executable, "-c", CLI_LIBRARIES + "\n" + PEER_SCRIPT, server.url, str(sample)],
        }
        return _interleaved(commands, env, runs)


def upload_sizes(samples: list[Path]) -> list[tuple[str, int, int, int, int]]:
    """Per sample: (name, source bytes, anisearch's trace.moe upload, a 640x360 upload, a vector body)."""
    from anisearch_providers.tracemoe.descriptor import search_descriptor

    provider = TraceMoe()
    out = []
    for sample in samples:
        prepared = prepare(sample, max_width=640, max_height=360)
        with Image.open(sample) as image:
            request = provider.vector_search_request(search_descriptor(image))  # what mode="vector" sends
        sizes = (
            sample.stat().st_size,
            len(tracemoe_upload(sample)),
            len(prepared.data),
            len(request.content),
        )
        out.append((sample.name, *sizes))
    return out


def run_async(function: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    return anyio.run(function, *args)


def main() -> None:
    """``python benchmarks/bench_peers.py --cli``: the start-up and CLI rows of ``benchmarks/run.py``."""
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--cli", action="store_true", required=True, help="the start-up and CLI rows")
    parser.add_argument("--runs", type=int, default=5, help="fresh processes per row (default 5)")
    default = Path(__file__).resolve().parents[2] / "shared" / "upstream-samples" / "tinted-good.jpg"
    parser.add_argument("--sample", type=Path, default=default, help="the screenshot searched")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        figures = command_line(args.sample, Path(tmp), args.runs)
    for name, value in figures.items():
        print(f"{name:<42} {value:>8.0f} ms")
    peer = figures["peer one-search script (aiotracemoeapi)"]
    miss, hit = figures["one CLI search (cache miss)"], figures["one CLI search (cache hit)"]
    print(f"CLI search / peer script: {miss / peer:.2f}x (target <= 1.1x)")
    print(f"floor / peer script: {figures[CLI_FLOOR] / peer:.2f}x")
    print(f"CLI cache hit / CLI search: {hit / miss:.2f}x (target <= 0.5x)")
    print(f"{os.cpu_count()} cores, load average {', '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()

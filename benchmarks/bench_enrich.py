"""Time AniList enrichment of one search's hits: a lookup over loopback, and the same from the metadata cache.

    python benchmarks/bench_enrich.py [--runs N]

The AniList emulator (``anisearch_emulators.anilist``, rate limit out of reach) is served by uvicorn on a
free 127.0.0.1 port in a background thread. The result enriched is trace.moe's real answer for
``tinted-good.jpg`` (``api-v1-search-tinted-good-2021.json``: 10 hits, 6 AniList IDs). Rows, median of
``N`` runs each after a warm-up:

- lookup: the metadata cache off (``ANISEARCH_CACHE=off``), so every run sends the one GraphQL request
  (reserve in the ``memory://`` ledger, send, settle, parse, fill);
- cached: the metadata cache on and already holding the 6 IDs, so no request is sent.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

import uvicorn

from anisearch import Client, Settings
from anisearch._models import Hit, SearchResult
from anisearch_emulators.anilist import create_app

SAMPLE = Path(os.environ.get("ANISEARCH_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared"))
SAMPLE = SAMPLE / "upstream-samples" / "api-v1-search-tinted-good-2021.json"


def serve() -> tuple[str, uvicorn.Server]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(rate_limit=10**9), host="127.0.0.1", port=port, log_level="warning")
    )
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.01)  # noqa: TID251 - a script's main thread waiting for the server thread
    return f"http://127.0.0.1:{port}", server


def result() -> SearchResult:
    items = json.loads(SAMPLE.read_text())["result"]
    hits = [
        Hit(provider="tracemoe", anilist_id=item["anilist"], similarity=item["similarity"]) for item in items
    ]
    return SearchResult(hits=hits, provider="tracemoe")


def median_ms(client: Client, answer: SearchResult, runs: int) -> float:
    enrich = client._async._enrichment(fill=True, include_adult=None)  # noqa: SLF001 - the step alone
    client._run(enrich, answer)  # noqa: SLF001 - warm-up (and, with the cache on, fills it)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        client._run(enrich, answer)  # noqa: SLF001
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    runs = parser.parse_args().runs
    url, server = serve()
    answer = result()
    with tempfile.TemporaryDirectory() as scratch:
        for row, cache in (("lookup", "off"), ("cached", None)):
            settings = Settings.load(
                ledger="memory://",
                metadata="anilist",
                cache=cache,
                cache_dir=Path(scratch) / row,
                provider_options={"anilist": {"url": url}},
            )
            with Client(settings) as client:
                print(f"{row:>7}: {median_ms(client, answer, runs):7.2f} ms median of {runs}")
    server.should_exit = True


if __name__ == "__main__":
    main()

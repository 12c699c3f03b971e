"""A search's deadline bounds what it waits for from Redis (ledger and result cache), not only Redis's own
5-second timeout per command: a paused Redis ends a ``deadline=1`` search in about a second."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from tests.conftest import RedisServer

from anisearch import AllProvidersFailedError, AsyncClient, LedgerError, Settings
from anisearch._limits import REDIS_SECONDS
from anisearch_emulators.tracemoe import create_app as tracemoe_app

pytestmark = pytest.mark.redis


def settings(url: str, *, ledger: str, cache: str) -> Settings:
    return Settings.load(
        providers=["tracemoe"], provider_options={"tracemoe": {"url": url}}, ledger=ledger, cache=cache
    )


def searched_while_paused(
    redis: RedisServer, chosen: Settings, first: Path, second: Path
) -> tuple[Any, float]:
    """Search ``first`` (connections made, the answer seen), pause Redis, search ``second`` with a
    1-second deadline: ``(its result or error, seconds it took)``."""

    async def run() -> tuple[Any, float]:
        async with AsyncClient(chosen) as client:
            assert (await client.search(first)).best is not None
            with redis.paused():
                start = time.monotonic()
                try:
                    outcome: Any = await client.search(second, deadline=1.0)
                except Exception as exc:  # noqa: BLE001 - what the search ended with is the finding
                    outcome = exc
                return outcome, time.monotonic() - start

    return anyio.run(run)


def test_a_paused_redis_ledger_ends_the_search_at_its_deadline(
    live_server: Callable[[Any], Any], samples: Path, redis_server: RedisServer, redis_url: str
) -> None:
    trace = live_server(tracemoe_app())
    chosen = settings(trace.url, ledger=redis_url, cache="off")
    outcome, took = searched_while_paused(
        redis_server, chosen, samples / "tinted-good.jpg", samples / "flipped-good.webp"
    )
    assert isinstance(outcome, LedgerError)
    assert "did not answer before the search's deadline" in str(outcome)
    assert took < REDIS_SECONDS - 1  # it was 5.03 s: Redis's own timeout, whatever the deadline
    assert trace.app.state.emulator.search_requests == 1  # nothing sent without the ledger's word


def test_a_paused_redis_cache_costs_the_search_no_more_than_its_deadline(
    live_server: Callable[[Any], Any],
    samples: Path,
    redis_server: RedisServer,
    redis_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    trace = live_server(tracemoe_app())
    chosen = settings(trace.url, ledger="memory://", cache=redis_url)
    outcome, took = searched_while_paused(
        redis_server, chosen, samples / "tinted-good.jpg", samples / "flipped-good.webp"
    )
    assert took < REDIS_SECONDS - 1  # it was 6.0 s: the flight's lease let go with Redis's own timeout
    assert "cannot be used (no answer before the search's deadline)" in caplog.text
    assert isinstance(outcome, AllProvidersFailedError)  # the deadline passed waiting for the cache
    assert "deadline passed" in str(outcome.exceptions[0])

"""Unmodified trace.moe clients, changed only in their base URL, search through ``anisearch serve``.

aiotracemoeapi and PicImageSearch are test dependencies, used exactly as a bot uses them: the gateway in
front of the trace.moe and whatanimeisthis emulators on loopback.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from aiotracemoeapi import TraceMoe
from aiotracemoeapi.exceptions import SearchQuotaDepleted
from PicImageSearch import Network
from PicImageSearch.engines.tracemoe import TraceMoe as PicTraceMoe
from tests.server.conftest import TOKEN, GatewayFactory, Served, Upstreams

pytestmark = pytest.mark.e2e

KOKORO_CONNECT = 11887


async def aiotracemoe_search(base_url: str, image: bytes, token: str = TOKEN) -> Any:
    async with TraceMoe(token=token, base_url=base_url) as api:
        return await api.search(image)


async def picimagesearch_search(base_url: str, image: Path, token: str = TOKEN) -> Any:
    async with Network() as client:
        engine = PicTraceMoe(base_url=base_url, base_url_api=base_url, client=client)
        return await engine.search(file=image, key=token)


def test_aiotracemoeapi_identifies_the_screenshot_through_the_gateway(
    gateway: GatewayFactory, samples: Path, upstreams: Upstreams
) -> None:
    served = gateway()
    answer = anyio.run(aiotracemoe_search, served.url, (samples / "tinted-good.jpg").read_bytes())
    best = answer.best_result
    assert best is not None
    assert best.anilist_id == KOKORO_CONNECT
    assert best.episode == 5
    assert 1160 <= best.at <= 1180
    assert best.similarity > 0.9
    assert best.anilist_info is not None  # aiotracemoeapi asks anilistInfo: an object, as trace.moe sends
    assert best.anilist_info.title.romaji == "Kokoro Connect"
    assert (answer.quota, answer.quota_used) == (10_000, 0)  # the bot's own allowance at the gateway
    assert upstreams.trace_state.search_requests == 1


def test_picimagesearch_identifies_the_screenshot_through_the_gateway(
    gateway: GatewayFactory, samples: Path, upstreams: Upstreams
) -> None:
    served = gateway()
    answer = anyio.run(picimagesearch_search, served.url, samples / "tinted-good.jpg")
    best = answer.raw[0]
    assert best.anilist == KOKORO_CONNECT
    assert best.episode == 5
    assert best.similarity > 90  # PicImageSearch gives percent
    assert best.title_romaji == "Kokoro Connect"  # from the gateway's /anilist, which asks no upstream
    assert answer.frameCount > 0
    assert upstreams.trace_state.search_requests == 1


@pytest.mark.tracemoe_knobs(quota=0)
def test_with_tracemoes_quota_spent_both_clients_get_whatanimeisthis_in_tracemoes_shape(
    gateway: GatewayFactory, samples: Path, upstreams: Upstreams
) -> None:
    served = gateway()
    image = samples / "tinted-good.jpg"
    first = anyio.run(aiotracemoe_search, served.url, image.read_bytes())
    assert first.best_result is not None
    assert first.best_result.anilist_id == KOKORO_CONNECT
    assert first.best_result.episode == 5
    second = anyio.run(picimagesearch_search, served.url, image)
    assert second.raw[0].anilist == KOKORO_CONNECT
    assert second.raw[0].episode == 5
    # the gateway asked trace.moe's free /me at start-up, learned that its quota is spent, and never
    # sent it a search
    assert upstreams.trace_state.requests["/me"] >= 1
    assert upstreams.trace_state.search_requests == 0
    assert upstreams.whatanimeisthis.app.state.emulator.search_requests >= 2

    raw = httpx.post(
        served.url + "/search",
        content=image.read_bytes(),
        headers={"x-trace-key": TOKEN, "Content-Type": "image/jpeg"},
        timeout=60,
    )
    assert raw.status_code == 200
    assert raw.headers["X-Anisearch-Provider"] == "whatanimeisthis"
    assert raw.headers["X-Anisearch-Attempts"].startswith("tracemoe=skipped")
    item = raw.json()["result"][0]
    assert list(item) == [
        "anilist", "filename", "episode", "episode_start", "episode_end",
        "from", "at", "to", "duration", "similarity", "video", "image",
    ]  # fmt: skip
    assert item["anilist"] == KOKORO_CONNECT
    # trace.moe's types whoever answered: strictly typed clients (serde's f64) decode every item
    assert isinstance(item["duration"], float)
    assert item["duration"] >= item["to"] > 0
    assert isinstance(item["video"], str)


def test_a_clients_own_quota_ends_in_tracemoes_402_body(gateway: GatewayFactory, samples: Path) -> None:
    served = gateway(client_quota=1)
    image = (samples / "tinted-good.jpg").read_bytes()
    anyio.run(aiotracemoe_search, served.url, image)
    with pytest.raises(SearchQuotaDepleted):
        anyio.run(aiotracemoe_search, served.url, image)
    again = httpx.post(
        served.url + "/search", files={"image": image}, headers={"x-trace-key": TOKEN}, timeout=30
    )
    assert again.status_code == 402
    assert again.headers["content-type"] == "application/json; charset=utf-8"
    assert again.json() == {
        "quota": 1,
        "quotaUsed": 1,
        "error": "Search quota depleted (quota per 24 hours: 1, used: 1)",
    }
    me = httpx.get(served.url + "/me", headers={"x-trace-key": TOKEN}).json()
    assert me == {"id": "bot", "priority": 0, "concurrency": 4, "quota": 1, "quotaUsed": 1}


def test_anilist_answers_titles_a_sibling_worker_found(
    gateway: GatewayFactory, samples: Path, upstreams: Upstreams, tmp_path: Path
) -> None:
    """Two workers (or replicas) sharing the result cache: a title lookup on one finds what a search on
    the other answered, as PicImageSearch asks it (the second request may reach any worker); a record
    without a title is never shared, and one that expired is written again by the next answer."""
    shared = {"cache": str(tmp_path / "results.sqlite3"), "cache_ttl": 2}
    searching, looking_up = gateway(settings=shared), gateway(settings=shared)
    image = (samples / "tinted-good.jpg").read_bytes()
    query = {
        "query": "query ($id: Int) { Media(id: $id) { id title { romaji } } }",
        "variables": {"id": 11887},
    }

    def search(path: str, headers: dict[str, str], on: Served | None = None) -> None:
        worker = on or searching
        answer = httpx.post(
            worker.url + path, content=image, headers={**headers, "Content-Type": "image/jpeg"}, timeout=60
        )
        assert answer.status_code == 200, answer.text

    def title() -> object:
        media = httpx.post(looking_up.url + "/anilist", json=query, timeout=30)
        return (
            media.json()["data"]["Media"]["title"]["romaji"]
            if media.status_code == 200
            else media.status_code
        )

    search("/v1/search?cache=false", {"Authorization": f"Bearer {TOKEN}"})  # no titles asked for
    assert title() == 404  # an untitled record is not shared
    search("/v1/search?cache=false", {"Authorization": f"Bearer {TOKEN}"}, on=looking_up)  # untitled there
    search("/search", {"x-trace-key": TOKEN})
    assert title() == "Kokoro Connect"  # its own untitled record does not hide the shared title
    unknown = httpx.post(looking_up.url + "/anilist", json={**query, "variables": {"id": 1}}, timeout=30)
    assert unknown.status_code == 404  # only what the gateway answered: it is no AniList proxy

    other = gateway(settings=shared)  # a worker started after the record expired
    time.sleep(2.2)
    search("/search", {"x-trace-key": TOKEN})  # answered again: the record is written again
    looking_up = other
    assert title() == "Kokoro Connect"

"""Several gateway replicas on one Redis: one ledger, one result cache, identical searches merged.

The replicas are separate apps (each its own engine, connection pools and event loop) served on loopback,
as ``anisearch serve`` runs them on several hosts; they share nothing but Redis.
"""

from __future__ import annotations

import io
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from tests.server.conftest import TOKEN, GatewayFactory, Served, Upstreams

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

AUTH = {"x-trace-key": TOKEN}


def noise_jpeg(seed: int) -> bytes:
    """A distinct 64x36 picture per seed (trace.moe's emulator answers it with a weak match)."""
    rng = random.Random(seed)
    image = Image.frombytes("RGB", (64, 36), bytes(rng.randrange(256) for _ in range(64 * 36 * 3)))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def replicas(gateway: GatewayFactory, redis_url: str, count: int = 3, **server: object) -> list[Served]:
    return [
        gateway(settings={"ledger": redis_url, "cache": redis_url}, client_concurrency=24, **server)
        for _ in range(count)
    ]


@pytest.mark.tracemoe_knobs(quota=40, concurrency=1)
@pytest.mark.whatanimeisthis_knobs(guest_daily_limit=1000, free_daily_credits=1000)
def test_three_replicas_spend_a_concurrency_1_quota_exactly_and_collide_never(
    gateway: GatewayFactory, upstreams: Upstreams, redis_url: str
) -> None:
    fleet = replicas(gateway, redis_url)

    def bot(number: int) -> list[httpx.Response]:
        answers = []
        with httpx.Client(timeout=120) as client:
            for turn in range(3):
                replica = fleet[(number + turn) % len(fleet)]
                image = noise_jpeg(number * 10 + turn)
                answers.append(client.post(replica.url + "/search", files={"image": image}, headers=AUTH))
        return answers

    with ThreadPoolExecutor(24) as pool:
        answers = [a for batch in pool.map(bot, range(24)) for a in batch]

    state = upstreams.trace_state
    statuses = [row.code for row in state.log]
    assert statuses.count(200) == 40  # exactly the quota
    assert statuses.count(402) == 0  # never a concurrency (or quota) collision
    assert state.search_requests == 40
    assert len(answers) == 72
    providers = [a.headers.get("X-Anisearch-Provider") for a in answers]
    assert all(a.status_code == 200 for a in answers), {a.status_code for a in answers}
    assert providers.count("tracemoe") == 40
    assert providers.count("whatanimeisthis") == 32


@pytest.mark.tracemoe_knobs(latency=1.0)
def test_ten_identical_searches_over_three_replicas_cost_one_upstream_request(
    gateway: GatewayFactory, upstreams: Upstreams, redis_url: str, samples: Path
) -> None:
    fleet = replicas(gateway, redis_url)
    image = (samples / "tinted-good.jpg").read_bytes()

    def search(number: int) -> httpx.Response:
        replica = fleet[number % len(fleet)]
        return httpx.post(replica.url + "/search", files={"image": image}, headers=AUTH, timeout=60)

    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(search, range(10)))

    assert [a.status_code for a in answers] == [200] * 10
    assert {a.json()["result"][0]["anilist"] for a in answers} == {11887}
    assert upstreams.trace_state.search_requests == 1
    assert upstreams.whatanimeisthis.app.state.emulator.search_requests == 0
    cached = [a.headers["X-Anisearch-Cached"] for a in answers]
    assert cached.count("false") == 1  # one replica searched; nine were answered with its result
    samples_by_name: dict[str, float] = {}
    for replica in fleet:
        for family in text_string_to_metric_families(httpx.get(replica.url + "/metrics").text):
            for sample in family.samples:
                samples_by_name[sample.name] = samples_by_name.get(sample.name, 0) + sample.value
    assert samples_by_name["anisearch_cache_hits_total"] == 9
    assert samples_by_name["anisearch_searches_total"] == 10
    assert samples_by_name["anisearch_merged_searches"] >= 1

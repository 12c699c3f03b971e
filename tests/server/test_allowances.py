"""Each caller's own allowance at the gateway: guests by address on an open gateway, slots per client."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest
from tests.server.conftest import TOKEN, GatewayFactory, Upstreams

pytestmark = pytest.mark.e2e


def test_an_open_gateway_counts_guests_by_address_behind_a_trusted_proxy(
    gateway: GatewayFactory, samples: Path
) -> None:
    served = gateway(open=True, guest_quota=1, trusted_proxies="127.0.0.1")
    image = (samples / "tinted-good.jpg").read_bytes()

    def search(address: str) -> httpx.Response:
        headers = {"X-Forwarded-For": address}
        return httpx.post(served.url + "/search", files={"image": image}, headers=headers, timeout=60)

    assert search("198.51.100.7").status_code == 200
    spent = search("198.51.100.7")
    assert spent.status_code == 402
    assert spent.json()["error"] == "Search quota depleted (quota per 24 hours: 1, used: 1)"
    assert search("203.0.113.20").status_code == 200  # another address, its own allowance
    me = httpx.get(served.url + "/me", headers={"X-Forwarded-For": "203.0.113.20"}).json()
    assert (me["id"], me["quota"], me["quotaUsed"]) == ("203.0.113.20", 1, 1)
    assert httpx.get(served.url + "/me").json()["id"] == "127.0.0.1"  # the proxy itself, unforwarded


def test_an_untrusted_peer_cannot_choose_its_address(gateway: GatewayFactory, samples: Path) -> None:
    served = gateway(open=True, guest_quota=1)  # no trusted proxies: X-Forwarded-For is ignored
    image = (samples / "tinted-good.jpg").read_bytes()
    first = httpx.post(served.url + "/search", files={"image": image}, headers={"X-Forwarded-For": "1.1.1.1"})
    assert first.status_code == 200
    second = httpx.post(
        served.url + "/search", files={"image": image}, headers={"X-Forwarded-For": "2.2.2.2"}
    )
    assert second.status_code == 402


@pytest.mark.tracemoe_knobs(latency=1.5)
def test_a_client_over_its_concurrency_gets_tracemoes_concurrency_402(
    gateway: GatewayFactory, samples: Path, upstreams: Upstreams
) -> None:
    served = gateway(client_concurrency=1, slot_wait=0.2)
    image = (samples / "tinted-good.jpg").read_bytes()
    answers: list[httpx.Response] = []

    def search() -> None:
        answers.append(
            httpx.post(
                served.url + "/search", files={"image": image}, headers={"x-trace-key": TOKEN}, timeout=60
            )
        )

    first = threading.Thread(target=search)
    first.start()
    while upstreams.trace_state.search_requests == 0 and first.is_alive():
        first.join(timeout=0.02)
    search()  # while the first holds the client's only slot
    first.join(timeout=60)
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200, 402]
    refused = next(a for a in answers if a.status_code == 402)
    assert refused.json() == {"error": "Concurrency limit exceeded"}
    assert upstreams.trace_state.search_requests == 1

"""The native API: ``/v1/search`` with every option, quota, providers, health, OpenAPI."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from tests.server.conftest import TOKEN, GatewayFactory, Upstreams

from anisearch import SearchResult

pytestmark = pytest.mark.e2e

BEARER = {"Authorization": f"Bearer {TOKEN}"}


def test_v1_search_answers_a_search_result(
    gateway: GatewayFactory, samples: Path, upstreams: Upstreams
) -> None:
    served = gateway()
    image = (samples / "tinted-good.jpg").read_bytes()
    answer = httpx.post(
        served.url + "/v1/search?providers=whatanimeisthis&anilist_info=true&min_similarity=0.5",
        files={"image": ("shot.jpg", image)},
        headers=BEARER,
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    result = SearchResult.model_validate(answer.json())
    assert result.provider == "whatanimeisthis"
    assert result.best is not None
    assert result.best.anilist_id == 11887
    assert upstreams.trace_state.search_requests == 0  # providers= was honoured
    assert answer.headers["X-Anisearch-Provider"] == "whatanimeisthis"

    vector = httpx.post(
        served.url + "/v1/search?providers=tracemoe&mode=vector&cache=false",
        content=image,
        headers={**BEARER, "Content-Type": "image/jpeg"},
        timeout=60,
    )
    assert vector.status_code == 200, vector.text
    best = SearchResult.model_validate(vector.json()).best
    assert best is not None
    assert best.anilist_id == 11887
    assert upstreams.trace_state.search_requests == 1  # the descriptor, sent instead of the image

    by_url = httpx.post(served.url + "/v1/search", json={"url": "http://127.0.0.1:9/x.jpg"}, headers=BEARER)
    assert by_url.status_code == 400
    assert by_url.json()["error"]["type"] == "ImageFetchError"


def test_v1_search_refuses_bad_options_with_422(gateway: GatewayFactory, samples: Path) -> None:
    served = gateway()
    answer = httpx.post(
        served.url + "/v1/search?min_similarity=3&strategy=random",
        files={"image": (samples / "tinted-good.jpg").read_bytes()},
        headers=BEARER,
    )
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert error["type"] == "ConfigurationError"
    assert {tuple(d["loc"]) for d in error["details"]} == {("min_similarity",), ("strategy",)}


def test_quota_providers_health_and_openapi(gateway: GatewayFactory, samples: Path) -> None:
    served = gateway(client_quota=5)
    httpx.post(
        served.url + "/v1/search", files={"image": (samples / "tinted-good.jpg").read_bytes()}, headers=BEARER
    )
    quota = httpx.get(served.url + "/v1/quota", headers=BEARER).json()
    assert quota["client"] == {
        "name": "bot",
        "quota": 5,
        "used": 1,
        "remaining": 4,
        "concurrency": 4,
        "window": "rolling-24h",
    }
    assert {q["provider"] for q in quota["providers"]} >= {"tracemoe"}
    providers = httpx.get(served.url + "/v1/providers", headers=BEARER).json()
    assert {p["name"]: p["enabled"] for p in providers}["tracemoe"] is True
    assert httpx.get(served.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(served.url + "/readyz")
    assert (ready.status_code, ready.json()["ledger"]) == (200, "ok")
    document = httpx.get(served.url + "/openapi.json").json()
    assert document["openapi"].startswith("3.")
    assert "SearchResult" in document["components"]["schemas"]
    assert set(document["paths"]) >= {"/v1/search", "/v1/quota", "/v1/providers", "/search", "/me"}


def test_readyz_says_unready_when_the_ledger_is_gone(gateway: GatewayFactory) -> None:
    from tests.conftest import free_port

    served = gateway(settings={"ledger": f"redis://127.0.0.1:{free_port()}/0"})
    ready = httpx.get(served.url + "/readyz", timeout=30)
    assert ready.status_code == 503
    assert ready.json()["status"] == "unready"
    assert ready.json()["ledger"] == "LedgerError"


def test_providers_with_a_misspelt_setting_answer_a_json_error(
    gateway: GatewayFactory, upstreams: Upstreams
) -> None:
    """A provider outside the order set up wrongly (``[whatanime-ga] ulr = ...``) is said, as the command
    says it: a JSON error naming the setting, never a bare 500."""
    options = {
        "tracemoe": {"url": upstreams.tracemoe.url},
        "whatanime-ga": {"ulr": "http://127.0.0.1:9"},
    }
    served = gateway(settings={"providers": ["tracemoe"], "provider_options": options})
    answer = httpx.get(served.url + "/v1/providers", headers=BEARER)
    assert answer.headers["content-type"].startswith("application/json")
    error = answer.json()["error"]
    assert error["type"] == "ConfigurationError"
    assert "ulr" in error["message"]

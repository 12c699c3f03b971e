"""The AniList emulator: the lookup query shape, AniList's error shapes, its rate limit and degraded mode."""

from __future__ import annotations

from typing import Any, Self

import anyio
import httpx
import pytest

from anisearch._exceptions import BadRequestError, ProviderServerError, RateLimitedError
from anisearch_emulators.anilist import DEFAULT_PORT, create_app, load_media
from anisearch_providers.anilist import AniList

URL = "http://anilist.test"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class InProcess:
    """Requests to the app in process (httpx's ASGI transport), one event loop per request."""

    def __init__(self, app: Any, base_url: str) -> None:
        self.app = app
        self.base_url = base_url

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app, client=("127.0.0.1", 50000))
            async with httpx.AsyncClient(transport=transport, base_url=self.base_url) as http:
                response = await http.post(path, **kwargs)
                await response.aread()
                return response

        return anyio.run(go)


def post(app: Any, body: Any) -> httpx.Response:
    with InProcess(app, base_url=URL) as test:
        return test.post("/", json=body)


def test_the_lookup_answers_the_selected_fields_of_the_ids_it_knows() -> None:
    app = create_app()
    provider = AniList(URL)
    with InProcess(app, base_url=URL) as test:
        request = provider.lookup_request([11887, 999999999, 2929])
        response = test.post("/", content=request.content, headers=dict(request.headers))
    kokoro, moonlight = provider.parse_lookup(response)
    assert kokoro.title is not None
    assert (kokoro.anilist_id, kokoro.title.romaji, kokoro.mal_id, kokoro.is_adult) == (
        11887,
        "Kokoro Connect",
        11887,
        False,
    )
    assert (moonlight.anilist_id, moonlight.episode_count, moonlight.format) == (2929, 14, "TV")
    assert app.state.emulator.lookups == [[11887, 999999999, 2929]]
    assert response.headers["x-ratelimit-limit"] == "90"
    assert response.headers["x-ratelimit-remaining"] == "89"


def test_only_the_named_fields_come_back() -> None:
    query = "{ Page(perPage: 5) { media(id_in: [11887], type: ANIME) { id title { romaji } } } }"
    response = post(create_app(), {"query": query})
    assert response.json() == {
        "data": {"Page": {"media": [{"id": 11887, "title": {"romaji": "Kokoro Connect"}}]}}
    }


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"variables": {}}, 400, "Must provide query string."),
        ({"query": "{ Viewer { id } }"}, 400, 'Cannot query field "Viewer" on type "Query".'),
        ({"query": "{ Media(id: 1) { id } }"}, 404, "Not Found."),
        ({"query": "query ($ids: [Int]) { Page(perPage: 50) { media(id_in: $ids) { id } } }"}, 400, None),
    ],
)
def test_other_queries_get_anilists_error_shapes(body: Any, status: int, message: str | None) -> None:
    response = post(create_app(), body)
    assert response.status_code == status
    error = response.json()["errors"][0]
    assert error["status"] == status
    if message is not None:
        assert error["message"] == message
    if status == 404:
        assert response.json()["data"] == {"Media": None}
    with pytest.raises(BadRequestError):
        AniList(URL).parse_lookup(response)


def test_a_body_that_is_not_json_is_a_syntax_error() -> None:
    with InProcess(create_app(), base_url=URL) as test:
        response = test.post("/", content=b"{", headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["errors"][0]["message"].startswith("Syntax Error")


def test_over_the_limit_is_a_429_with_retry_after_until_the_window_ends() -> None:
    clock = Clock()
    app = create_app(rate_limit=2, clock=clock)
    query = {"query": "{ Page(perPage: 1) { media(id_in: [11887]) { id } } }"}
    with InProcess(app, base_url=URL) as test:
        assert [test.post("/", json=query).status_code for _ in range(2)] == [200, 200]
        clock.now += 15
        limited = test.post("/", json=query)
        clock.now += 45
        again = test.post("/", json=query)
    assert limited.status_code == 429
    assert limited.json() == {
        "data": None,
        "errors": [{"message": "Too Many Requests.", "status": 429, "locations": [{"line": 1, "column": 1}]}],
    }
    assert limited.headers["retry-after"] == "45"
    assert limited.headers["x-ratelimit-remaining"] == "0"
    assert int(limited.headers["x-ratelimit-reset"]) == int(clock.now)
    with pytest.raises(RateLimitedError) as caught:
        AniList(URL).parse_lookup(limited)
    assert caught.value.retry_after == 45
    assert again.status_code == 200


def test_degraded_mode_lowers_the_limit_and_says_so() -> None:
    response = post(create_app(degraded=True), {"query": "{ Page(perPage: 1) { media(id_in: [1]) { id } } }"})
    assert response.headers["x-ratelimit-limit"] == "30"
    (quota,) = AniList(URL).observe(response)
    assert (quota.limit, quota.remaining) == (30, 29)


@pytest.mark.parametrize(("status", "error"), [(429, RateLimitedError), (500, ProviderServerError)])
def test_failure_injection(status: int, error: type[Exception]) -> None:
    response = post(
        create_app(fail_status=status), {"query": "{ Page(perPage: 1) { media(id_in: [1]) { id } } }"}
    )
    assert response.status_code == status
    with pytest.raises(error):
        AniList(URL).parse_lookup(response)


@pytest.mark.parametrize("knobs", [{"rate_limit": 0}, {"fail_status": 200}, {"latency": -1}])
def test_bad_knobs_are_refused(knobs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"must"):
        create_app(**knobs)


def test_its_records_are_the_shared_scenes_tables() -> None:
    media = load_media()
    assert media[11887]["title"]["romaji"] == "Kokoro Connect"
    assert media[11887]["idMal"] == 11887  # the legacy 2020 body's mal_id
    adult = [anilist_id for anilist_id, record in media.items() if record["isAdult"]]
    assert adult
    assert DEFAULT_PORT == 8003


def test_an_adult_title_is_flagged() -> None:
    adult = next(anilist_id for anilist_id, record in load_media().items() if record["isAdult"])
    query = f"{{ Page(perPage: 5) {{ media(id_in: [{adult}, 11887]) {{ id isAdult }} }} }}"
    flags = {
        anime.anilist_id: anime.is_adult
        for anime in AniList(URL).parse_lookup(post(create_app(), {"query": query}))
    }
    assert flags == {adult: True, 11887: False}

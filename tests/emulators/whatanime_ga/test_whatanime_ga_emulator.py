"""The legacy whatanime.ga emulator, driven by the ``whatanime-ga`` provider over httpx's ASGI transport."""

from __future__ import annotations

import base64
import io
import json
import os
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import pytest
from PIL import Image

from anisearch._exceptions import (
    AuthenticationError,
    BadRequestError,
    ImageFetchError,
    ImageTooLargeError,
    ProviderServerError,
    QuotaExhaustedError,
    RateLimitedError,
)
from anisearch._image import PreparedImage, fit, prepare
from anisearch._provider import SearchOptions, SearchQuery, load_emulator
from anisearch_emulators.tracemoe._index import SCENES
from anisearch_emulators.whatanime_ga import BODY_LIMIT_2019, Allowance, create_app
from anisearch_emulators.whatanime_ga._index import default_frames, legacy_frame
from anisearch_providers.whatanime_ga import WhatanimeGa, data_url

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path

    from starlette.applications import Starlette
    from tests.conftest import LiveServer

pytestmark = pytest.mark.anyio

BASE = "http://legacy.test"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeClock:
    """Monotonic seconds that only move when a test says so."""

    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def jpeg(width: int = 64, height: int = 36, colour: tuple[int, int, int] = (200, 40, 40)) -> PreparedImage:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, "JPEG")
    return PreparedImage(
        data=buffer.getvalue(), mime_type="image/jpeg", width=width, height=height, digest="2" * 64
    )


@pytest.fixture
def tinted_good(samples: Path) -> PreparedImage:
    data = (samples / "tinted-good.jpg").read_bytes()
    return PreparedImage(data=data, mime_type="image/jpeg", width=640, height=360, digest="3" * 64)


async def send(
    app: Starlette, request: httpx.Request, client: tuple[str, int] = ("127.0.0.1", 40000)
) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=client)) as http:
        return await http.send(request)


async def search(
    app: Starlette, legacy: WhatanimeGa, query: SearchQuery | str | None = None
) -> httpx.Response:
    """Search ``app`` with an image query, or by URL when ``query`` is one."""
    if isinstance(query, str):
        return await send(app, legacy.url_search_request(query))
    return await send(app, legacy.search_request(query or SearchQuery(image=jpeg())))


def raw_post(body: bytes, content_type: str, params: dict[str, str] | None = None) -> httpx.Request:
    return httpx.Request(
        "POST", f"{BASE}/api/search", params=params, content=body, headers={"content-type": content_type}
    )


# ---------------------------------------------------------------- searching


@pytest.mark.parametrize("body", ["form", "json"])
async def test_tinted_good_is_kokoro_connect_episode_5(body: str, tinted_good: PreparedImage) -> None:
    app = create_app()
    legacy = WhatanimeGa(BASE, body=body)  # type: ignore[arg-type]
    response = await search(app, legacy, SearchQuery(image=tinted_good))
    assert response.status_code == 200
    assert response.headers["x-whatanime-limit"] == "9"
    assert response.headers["x-whatanime-quota"] == "149"
    result = legacy.parse_search(response)
    best = result.hits[0]
    assert (best.anilist_id, best.episode, best.mal_id) == (11887, 5, 11887)
    assert best.start_seconds is not None
    assert best.end_seconds is not None
    assert best.at_seconds is not None
    assert 1169 <= best.start_seconds <= best.at_seconds <= best.end_seconds <= 1175
    assert best.similarity > 0.95
    assert all(best.similarity > hit.similarity for hit in result.hits[1:])
    assert best.title is not None
    assert (best.title.romaji, best.title.chinese) == ("Kokoro Connect", "心連·情結")
    assert best.raw["season"] == "2012-07"
    assert result.frames_searched is not None
    assert result.frames_searched > 0
    assert (app.state.emulator.search_requests, app.state.emulator.searches) == (1, 1)


async def test_filter_searches_one_anime_only(tinted_good: PreparedImage) -> None:
    legacy = WhatanimeGa(BASE)
    query = SearchQuery(image=tinted_good, options=SearchOptions(anilist_id=21703))
    hits = legacy.parse_search(await search(create_app(), legacy, query)).hits
    assert hits
    assert {hit.anilist_id for hit in hits} == {21703}


async def test_the_preview_url_of_a_hit_serves_a_jpeg(tinted_good: PreparedImage) -> None:
    app = create_app()
    legacy = WhatanimeGa(BASE)
    best = legacy.parse_search(await search(app, legacy, SearchQuery(image=tinted_good))).hits[0]
    assert best.image_url is not None
    preview = await send(app, httpx.Request("GET", best.image_url))
    assert (preview.status_code, preview.headers["content-type"]) == (200, "image/jpeg")


async def test_form_decoded_base64_is_repaired_and_any_data_url_prefix_is_dropped(
    tinted_good: PreparedImage,
) -> None:
    encoded = base64.b64encode(tinted_good.data)
    assert b"+" in encoded  # sent raw, like the docs' curl -d example: the server sees spaces
    body = b"image=data:image/whatever;base64," + encoded
    response = await send(create_app(), raw_post(body, "application/x-www-form-urlencoded"))
    assert response.status_code == 200
    assert response.json()["docs"][0]["anilist_id"] == 11887


async def test_base64_skips_every_character_outside_the_alphabet_as_php_does(
    tinted_good: PreparedImage,
) -> None:
    encoded = base64.b64encode(tinted_good.data).decode()
    # PHP's non-strict base64_decode skips line breaks, '=', '%' and letters of other scripts alike
    junk = "\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76)) + "==é٣%"
    response = await send(create_app(), raw_post(json.dumps({"image": junk}).encode(), "application/json"))
    assert response.status_code == 200
    assert response.json()["docs"][0]["anilist_id"] == 11887


async def test_multipart_upload_in_the_field_image(tinted_good: PreparedImage) -> None:
    request = httpx.Request(
        "POST", f"{BASE}/api/search", files={"image": ("a.jpg", tinted_good.data, "image/jpeg")}
    )
    response = await send(create_app(), request)
    assert response.status_code == 200
    assert response.json()["docs"][0]["anilist_id"] == 11887


async def test_url_mode_fetches_loopback_images_only(tinted_good: PreparedImage) -> None:
    def serve(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/tinted.jpg":
            return httpx.Response(200, content=tinted_good.data)
        return httpx.Response(404)

    app = create_app(fetch_transport=httpx.MockTransport(serve))
    legacy = WhatanimeGa(BASE)
    found = legacy.parse_search(await search(app, legacy, "http://127.0.0.1:8/tinted.jpg"))
    assert found.hits[0].anilist_id == 11887
    for url in ("https://example.org/tinted.jpg", "http://127.0.0.1:8/missing.jpg", "http://[::1"):
        response = await search(app, legacy, url)
        assert response.text == json.dumps(f"Failed to fetch image {url}")
        with pytest.raises(ImageFetchError):
            legacy.parse_search(response)


# ---------------------------------------------------------------- limits


async def test_the_eleventh_search_in_a_minute_is_refused_until_the_window_ends(clock: FakeClock) -> None:
    app = create_app(clock=clock)
    legacy = WhatanimeGa(BASE)
    for remaining in range(9, -1, -1):
        response = await search(app, legacy)
        assert response.status_code == 200
        assert response.headers["x-whatanime-limit"] == str(remaining)
    clock.now += 15
    refused = await search(app, legacy)
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "45"
    assert refused.headers["x-whatanime-limit"] == "-1"
    assert refused.headers["x-whatanime-limit-ttl"] == "45"
    assert "x-whatanime-quota" not in refused.headers  # only the spent pair
    assert refused.text == json.dumps("Search limit exceeded. Please wait 45 seconds.")
    with pytest.raises(RateLimitedError) as caught:
        legacy.parse_search(refused)
    assert caught.value.retry_after == 45
    (minute,) = legacy.observe(refused)
    assert (minute.window, minute.remaining, minute.cooldown_until) == ("minute", 0, minute.resets_at)
    clock.now += 45
    again = await search(app, legacy)
    assert (again.status_code, again.headers["x-whatanime-limit"]) == (200, "9")
    assert again.headers["x-whatanime-quota"] == "139"  # the refused one did not count against the day
    assert app.state.emulator.search_requests == 12


async def test_the_php_quoting_bug_leaves_the_wait_to_the_headers(clock: FakeClock) -> None:
    app = create_app(clock=clock, quote_bug=True, guest=Allowance(limit=0))
    legacy = WhatanimeGa(BASE)
    refused = await search(app, legacy)
    assert refused.text == '"Search limit exceeded. Please wait ".$limit_ttl." seconds."'
    with pytest.raises(RateLimitedError) as caught:
        legacy.parse_search(refused)
    assert caught.value.retry_after == 60


async def test_plain_text_errors_of_the_2018_server(clock: FakeClock) -> None:
    app = create_app(clock=clock, error_format="text", retry_after=False, guest=Allowance(limit=0))
    legacy = WhatanimeGa(BASE)
    refused = await search(app, legacy)
    assert refused.text == "Search limit exceeded. Please wait 60 seconds."
    assert "retry-after" not in refused.headers
    with pytest.raises(RateLimitedError) as caught:
        legacy.parse_search(refused)
    assert caught.value.retry_after == 60
    empty = await send(app, raw_post(b"", "application/x-www-form-urlencoded"))
    assert (empty.status_code, empty.text) == (400, "No image received")


async def test_the_day_quota_is_a_quota_error_unless_no_longer_enforced(clock: FakeClock) -> None:
    legacy = WhatanimeGa(BASE)
    app = create_app(clock=clock, guest=Allowance(quota=2))
    assert [(await search(app, legacy)).status_code for _ in range(2)] == [200, 200]
    refused = await search(app, legacy)
    assert refused.headers["retry-after"] == "86400"
    with pytest.raises(QuotaExhaustedError) as caught:
        legacy.parse_search(refused)
    assert caught.value.retry_after == 86400
    relaxed = create_app(clock=clock, guest=Allowance(quota=2), enforce_quota=False)
    for _ in range(3):
        response = await search(relaxed, legacy)
        assert (response.status_code, response.headers["x-whatanime-quota"]) == (200, "2")


async def test_callers_are_told_apart_by_address_and_optionally_by_x_forwarded_for(clock: FakeClock) -> None:
    legacy = WhatanimeGa(BASE)

    async def limit_after(app: Starlette, client: str, forwarded: str) -> str:
        request = legacy.search_request(SearchQuery(image=jpeg()))
        request.headers["X-Forwarded-For"] = forwarded
        return (await send(app, request, client=(client, 1))).headers["x-whatanime-limit"]

    direct = create_app(clock=clock)
    assert await limit_after(direct, "10.0.0.1", "198.51.100.1") == "9"
    assert await limit_after(direct, "10.0.0.1", "198.51.100.2") == "8"  # the header is not trusted
    assert await limit_after(direct, "10.0.0.2", "198.51.100.2") == "9"
    proxied = create_app(clock=clock, trust_forwarded_for=True)
    assert await limit_after(proxied, "10.0.0.1", "198.51.100.1, 10.0.0.1") == "9"
    assert await limit_after(proxied, "10.0.0.1", "198.51.100.2") == "9"
    assert await limit_after(proxied, "10.0.0.1", "198.51.100.1") == "8"


async def test_tokens_have_their_own_allowance_and_me_reports_it(clock: FakeClock) -> None:
    app = create_app(clock=clock, tokens={"abc": Allowance(limit=2, quota=1000)})
    owner = WhatanimeGa(BASE, token="abc")
    guest = WhatanimeGa(BASE)
    assert [(await search(app, owner)).status_code for _ in range(3)] == [200, 200, 429]
    assert (await search(app, guest)).status_code == 200
    me = await send(app, owner.quota_request())
    assert me.json()["user_id"] == 1001
    quotas = {quota.window: quota for quota in owner.parse_quota(me)}
    assert (quotas["minute"].limit, quotas["minute"].remaining) == (2, 0)
    assert (quotas["day"].limit, quotas["day"].remaining, quotas["day"].scope) == (1000, 998, "api-key")


async def test_me_never_counts(clock: FakeClock) -> None:
    app = create_app(clock=clock)
    legacy = WhatanimeGa(BASE)
    for _ in range(3):
        body = (await send(app, legacy.quota_request())).json()
        assert (body["limit"], body["quota"], body["user_id"], body["email"]) == (10, 150, None, "127.0.0.1")
    await search(app, legacy)
    assert (await send(app, legacy.quota_request())).json()["limit"] == 9


@pytest.mark.parametrize(
    ("knobs", "token", "status", "error"),
    [
        ({}, "nope", 403, AuthenticationError),
        ({"require_token": True}, None, 401, AuthenticationError),
        ({"fault": "database"}, None, 503, ProviderServerError),
        ({"fault": "process"}, None, 500, ProviderServerError),
        ({"fault": "solr"}, None, 500, ProviderServerError),
    ],
)
async def test_refusals_and_faults(
    knobs: dict[str, Any], token: str | None, status: int, error: type[Exception]
) -> None:
    legacy = WhatanimeGa(BASE, token=token)
    response = await search(create_app(**knobs), legacy)
    assert response.status_code == status
    assert response.text.startswith('"')  # a JSON-encoded string
    with pytest.raises(error):
        legacy.parse_search(response)


async def test_me_answers_token_errors_in_plain_text() -> None:
    response = await send(create_app(), WhatanimeGa(BASE, token="nope").quota_request())
    assert (response.status_code, response.text) == (403, "Invalid API token")


# ---------------------------------------------------------------- bodies


@pytest.mark.parametrize(
    ("body", "content_type", "text"),
    [
        (b"", "application/x-www-form-urlencoded", '"No image received"'),
        (b"filter=5", "application/x-www-form-urlencoded", '"No image received"'),
        (b"image=data:image/jpeg;base64,", "application/x-www-form-urlencoded", '"Image is empty"'),
        (b'{"image": "data:image/jpeg;base64,"}', "application/json", '"Image is empty"'),
    ],
)
async def test_input_errors_are_json_encoded_strings(body: bytes, content_type: str, text: str) -> None:
    response = await send(create_app(), raw_post(body, content_type))
    assert (response.status_code, response.text) == (400, text)
    assert response.headers["content-type"].startswith("text/html")
    with pytest.raises(BadRequestError):
        WhatanimeGa(BASE).parse_search(response)


@pytest.mark.parametrize("image", [base64.b64encode(b"this is not a picture"), b"A"])
async def test_an_unreadable_image_is_the_solr_error(image: bytes) -> None:
    body = b"image=" + image
    response = await send(create_app(), raw_post(body, "application/x-www-form-urlencoded"))
    assert response.status_code == 500
    assert json.loads(response.text).startswith("Error reading image from URL: http://192.168.2.11/pic/")
    with pytest.raises(ProviderServerError):
        WhatanimeGa(BASE).parse_search(response)


async def test_options_answers_200_with_nothing() -> None:
    app = create_app()
    for path in ("/api/search", "/api/me"):
        response = await send(app, httpx.Request("OPTIONS", f"{BASE}{path}"))
        assert (response.status_code, response.content) == (200, b"")
    assert app.state.emulator.search_requests == 0


@pytest.mark.parametrize(
    ("knobs", "size", "refused"),
    [
        ({}, 1024 * 1024 + 1, True),
        ({}, 1024 * 1024, False),
        ({"max_body_bytes": BODY_LIMIT_2019}, 2_000_000, False),
        ({"max_body_bytes": 8192}, 8193, True),
    ],
)
async def test_bodies_over_the_limit_get_the_web_servers_html_413(
    knobs: dict[str, Any], size: int, refused: bool, clock: FakeClock
) -> None:
    app = create_app(clock=clock, **knobs)
    body = b"image=" + b"A" * (size - len(b"image="))
    response = await send(app, raw_post(body, "application/x-www-form-urlencoded"))
    assert (response.status_code == 413) is refused
    if refused:
        assert response.headers["content-type"].startswith("text/html")
        assert "<title>413 Request Entity Too Large</title>" in response.text
        legacy = WhatanimeGa(BASE)
        with pytest.raises(ImageTooLargeError) as caught:
            legacy.parse_search(response)
        assert caught.value.provider == "whatanime-ga"
        me = (await send(app, legacy.quota_request())).json()
        assert me["limit"] == 10  # the web server refused it before the limits were counted


async def test_a_provider_set_to_the_servers_limit_refuses_locally_what_would_be_refused() -> None:
    app = create_app(max_body_bytes=8192)
    legacy = WhatanimeGa(BASE, max_body_bytes=8192)
    big = PreparedImage(data=b"\xff" * 8192, mime_type="image/jpeg", width=1, height=1, digest="4" * 64)
    with pytest.raises(ImageTooLargeError) as caught:
        legacy.search_request(SearchQuery(image=big))
    assert caught.value.provider is None
    assert (await search(app, legacy, SearchQuery(image=jpeg(32, 18)))).status_code == 200


@pytest.mark.parametrize("body", ["form", "json"])
async def test_an_image_fitted_to_the_provider_limits_is_accepted_by_a_server_with_that_limit(
    body: str,
) -> None:
    noise = Image.frombytes("RGB", (640, 360), os.urandom(640 * 360 * 3))  # incompressible: ~200 KB
    legacy = WhatanimeGa(BASE, body=body, max_body_bytes=40_000)  # type: ignore[arg-type]
    prepared = prepare(noise)
    assert len(data_url(prepared)) > legacy.max_body_bytes
    fitted = fit(prepared, legacy.limits)
    request = legacy.search_request(SearchQuery(image=fitted, options=SearchOptions(anilist_id=11887)))
    assert len(request.content) <= 40_000
    response = await send(create_app(max_body_bytes=40_000), request)
    assert response.status_code == 200
    assert {hit.anilist_id for hit in legacy.parse_search(response).hits} == {11887}


# ---------------------------------------------------------------- wiring


def test_the_shared_index_in_legacy_terms() -> None:
    frames = default_frames()
    assert len(frames) == len(SCENES)
    kokoro = next(frame for frame in frames if frame.anilist_id == 11887)
    assert (kokoro.season, kokoro.title_chinese, kokoro.mal_id, kokoro.episode) == (
        "2012-07",
        "心連·情結",
        11887,
        5,
    )
    assert any(scene.episode == "5|17" for scene in SCENES)
    assert all("|" not in str(frame.episode) for frame in frames)
    scene = SCENES[0]
    assert legacy_frame(replace(scene, episode="5|17"), None).episode == 5
    assert legacy_frame(replace(scene, episode=[3, 4]), None).episode == 3
    assert legacy_frame(replace(scene, episode="x|y"), None).episode == ""
    bare = legacy_frame(replace(scene, episode=None), None)
    assert (bare.episode, bare.season, bare.title_romaji, bare.mal_id, bare.synonyms) == (
        "",
        "",
        None,
        None,
        (),
    )


async def test_a_streamed_body_is_cut_off_at_the_limit() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"image="
        for _ in range(3):
            yield b"A" * 4096

    request = httpx.Request(
        "POST",
        f"{BASE}/api/search",
        content=chunks(),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert "content-length" not in request.headers
    response = await send(create_app(max_body_bytes=8192), request)
    assert response.status_code == 413


async def test_a_base64_string_in_a_multipart_field(tinted_good: PreparedImage) -> None:
    request = httpx.Request(
        "POST",
        f"{BASE}/api/search",
        data={"image": data_url(tinted_good), "filter": "11887"},
        files={"x": b"1"},
    )
    response = await send(create_app(), request)
    assert {doc["anilist_id"] for doc in response.json()["docs"]} == {11887}


async def test_an_unreachable_image_url_is_a_fetch_error() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    app = create_app(fetch_transport=httpx.MockTransport(refuse))
    response = await search(app, WhatanimeGa(BASE), "http://localhost:1/a.jpg")
    assert (response.status_code, response.text) == (400, '"Failed to fetch image http://localhost:1/a.jpg"')


async def test_latency_and_a_thumbnail_without_its_token() -> None:
    app = create_app(latency=0.05)
    started = anyio.current_time()
    await search(app, WhatanimeGa(BASE))
    assert anyio.current_time() - started >= 0.05
    response = await send(app, httpx.Request("GET", f"{BASE}/thumbnail.php?anilist_id=1&file=a.mp4&t=1"))
    assert response.status_code == 403


def test_a_body_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_body_bytes"):
        create_app(max_body_bytes=0)


def test_the_emulator_is_registered() -> None:
    assert load_emulator("whatanime-ga") is create_app


def test_a_search_over_real_loopback_http(
    live_server: Callable[[Any], LiveServer], tinted_good: PreparedImage
) -> None:
    server = live_server(create_app())
    legacy = WhatanimeGa(server.url, token=None)
    with httpx.Client(timeout=10) as client:
        response = client.send(legacy.search_request(SearchQuery(image=tinted_good)))
        quotas = legacy.parse_quota(client.send(legacy.quota_request()))
    assert legacy.parse_search(response).hits[0].anilist_id == 11887
    assert {quota.window: quota.remaining for quota in quotas} == {"minute": 9, "day": 149}

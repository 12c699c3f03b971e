"""The trace.moe emulator answers like api.trace.moe (research/tracemoe-contract.md), error for error."""

from __future__ import annotations

import base64
import io
import json
from typing import TYPE_CHECKING, Any
from unittest.mock import ANY

import anyio
import httpx
import pytest
from PIL import Image
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

from anisearch_emulators.tracemoe import EmulatedUser, InjectedFailure, create_app
from anisearch_emulators.tracemoe._index import QUERIES
from anisearch_providers.tracemoe.descriptor import search_descriptor

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path

    from starlette.requests import Request
    from tests.conftest import LiveServer

pytestmark = pytest.mark.anyio

HEAD_TOP = ["quota", "quotaUsed", "frameCount", "error", "result"]
HEAD_ITEM = ["anilist", "filename", "episode", "episode_start", "episode_end", "from", "at", "to", "duration",
             "similarity", "video", "image"]  # fmt: skip
JPEG = {"content-type": "image/jpeg"}


class Clock:
    """A settable epoch clock."""

    def __init__(self, now: float = 1_780_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def tinted(samples: Path) -> bytes:
    return (samples / "tinted-good.jpg").read_bytes()


def client_for(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://emulator.test")


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(create_app()) as c:
        yield c


def encode(image: Image.Image, fmt: str, **params: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def error_of(response: httpx.Response) -> str:
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    message: str = response.json()["error"]
    return message


# ---------------------------------------------------------------- matching


async def test_tinted_sample_is_kokoro_connect_episode_5(client: httpx.AsyncClient, tinted: bytes) -> None:
    response = await client.post("/search", content=tinted, headers=JPEG)
    assert response.status_code == 200
    body = response.json()
    assert list(body) == HEAD_TOP
    assert (body["quota"], body["quotaUsed"], body["error"]) == (100, 0, "")
    assert body["frameCount"] > 0
    best = body["result"][0]
    assert list(best) == HEAD_ITEM
    assert (best["anilist"], best["episode"], best["episode_start"], best["episode_end"]) == (11887, 5, 5, 5)
    assert 1169 <= best["from"] <= best["at"] <= best["to"] <= 1175
    assert best["similarity"] >= 0.9
    similarities = [item["similarity"] for item in body["result"]]
    assert len(similarities) == 10
    assert similarities == sorted(similarities, reverse=True)
    assert all(s < 0.9 for s in similarities[1:])
    assert best["video"].startswith("http://emulator.test/video/")
    assert best["image"] == best["video"].replace("/video/", "/image/")


async def test_reencoded_and_upscaled_uploads_still_match(client: httpx.AsyncClient, tinted: bytes) -> None:
    original = Image.open(io.BytesIO(tinted))
    upscaled = encode(original.resize((1920, 1080), Image.Resampling.LANCZOS), "PNG", compress_level=1)
    jpeg = encode(original, "JPEG", quality=60)
    for data, name in ((upscaled, "big.png"), (jpeg, "small.jpg")):
        # multipart: the first file part counts, whatever its field name
        response = await client.post("/search", files={"anything": (name, data)}, data={"note": "x"})
        best = response.json()["result"][0]
        assert (best["anilist"], best["episode"]) == (11887, 5)
        assert best["similarity"] >= 0.9


async def test_the_other_samples_find_their_anime(client: httpx.AsyncClient, samples: Path) -> None:
    webp = (samples / "flipped-good.webp").read_bytes()
    response = await client.post("/search", content=webp, headers={"content-type": "image/webp"})
    assert response.json()["result"][0]["anilist"] == 20872  # Plastic Memories
    # the player window around border-bad.jpg makes it a bad screenshot; its video area is Nekopara OVA
    with Image.open(samples / "border-bad.jpg") as shot:
        frame = encode(shot.convert("RGB").crop((0, 50, 640, 410)), "PNG")
        whole = (samples / "border-bad.jpg").read_bytes()
    cropped = (await client.post("/search", content=frame, headers={"content-type": "image/png"})).json()
    assert cropped["result"][0]["anilist"] == 99939
    assert cropped["result"][0]["similarity"] >= 0.9
    assert cropped["result"][0]["episode"] is None
    bad = (await client.post("/search", content=whole, headers=JPEG)).json()
    assert bad["result"][0]["similarity"] < 0.5


async def test_anilist_info_attaches_the_stored_record_or_keeps_the_int(
    client: httpx.AsyncClient, tinted: bytes
) -> None:
    body = (await client.post("/search?anilistInfo=0", content=tinted, headers=JPEG)).json()
    record = body["result"][0]["anilist"]
    assert record["title"]["romaji"] == "Kokoro Connect"
    assert (record["id"], record["idMal"], record["isAdult"]) == (11887, 11887, False)
    assert record["synonyms"] == ["Kokoroco"]
    # One Piece has no record in the emulator's AniList table: the server falls back to the bare ID
    assert 21 in [item["anilist"] for item in body["result"]]


async def test_cut_borders_is_a_presence_flag(client: httpx.AsyncClient, tinted: bytes) -> None:
    canvas = Image.new("RGB", (640, 640))
    canvas.paste(Image.open(io.BytesIO(tinted)), (0, 140))
    letterboxed = encode(canvas, "PNG")
    plain = (await client.post("/search", content=letterboxed, headers={"content-type": "image/png"})).json()
    assert plain["result"][0]["similarity"] < 0.9
    trimmed = await client.post(
        "/search?cutBorders=false", content=letterboxed, headers={"content-type": "image/png"}
    )
    best = trimmed.json()["result"][0]
    assert (best["anilist"], best["similarity"] >= 0.9) == (11887, True)


async def test_anilist_id_filters_and_short_circuits(client: httpx.AsyncClient, tinted: bytes) -> None:
    only = (await client.post("/search?anilistID=21", content=tinted, headers=JPEG)).json()
    assert {item["anilist"] for item in only["result"]} == {21}
    ignored = (await client.post("/search?anilistID=21x", content=tinted, headers=JPEG)).json()
    assert ignored["result"][0]["anilist"] == 11887
    empty = await client.post("/search?anilistID=999999", content=tinted, headers=JPEG)
    assert empty.status_code == 200
    assert empty.text == '{"frameCount":0,"error":"","result":[]}'
    me = (await client.get("/me")).json()
    assert me["quotaUsed"] == 3  # the empty short-circuit counts as a successful search


async def test_a_repeated_anilist_id_crashes_and_leaks_the_concurrency_slot(tinted: bytes) -> None:
    clock = Clock()
    async with client_for(create_app(clock=clock)) as client:
        crash = await client.post("/search?anilistID=1&anilistID=2", content=tinted, headers=JPEG)
        assert (crash.status_code, crash.headers["content-type"]) == (500, "text/html; charset=utf-8")
        assert "<pre>Internal Server Error</pre>" in crash.text
        stuck = await client.post("/search", content=tinted, headers=JPEG)
        assert error_of(stuck) == "Concurrency limit exceeded"
        clock.now += 15 * 60  # the server's housekeeping clears its counters every 15 minutes
        assert (await client.post("/search", content=tinted, headers=JPEG)).status_code == 200


async def test_v1_ignored_a_repeated_anilist_id(tinted: bytes) -> None:
    """V1 read it with ``Number(req.query.anilistID)``: an array is NaN, so it searched unfiltered."""
    async with client_for(create_app(era="v1")) as client:
        for _ in range(2):  # and nothing leaked: the next search answers too
            answer = await client.post("/search?anilistID=11887&anilistID=1", content=tinted, headers=JPEG)
            assert answer.status_code == 200
            assert len({item["anilist"] for item in answer.json()["result"]}) > 1


# ---------------------------------------------------------------- inputs and their errors


async def test_no_usable_input_is_405(client: httpx.AsyncClient) -> None:
    for response in (
        await client.get("/search"),
        await client.post("/search"),
        await client.post("/search", content=b"hello", headers={"content-type": "text/plain"}),
        await client.post("/search", content=b"", headers=JPEG),
    ):
        assert response.status_code == 405
        assert error_of(response) == "Method Not Allowed"


async def test_multipart_without_a_file_is_405_and_an_empty_file_is_400(client: httpx.AsyncClient) -> None:
    boundary = "b0undary"
    fields_only = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"\r\n\r\nabc\r\n--{boundary}--\r\n'
    )
    headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
    no_file = await client.post("/search", content=fields_only.encode(), headers=headers)
    assert (no_file.status_code, error_of(no_file)) == (405, "Method Not Allowed")
    empty = await client.post("/search", files={"image": ("a.jpg", b"")})
    assert (empty.status_code, error_of(empty)) == (400, "Failed to process file")


async def test_undecodable_inputs_are_failed_to_process_image(client: httpx.AsyncClient) -> None:
    legacy_json = await client.post("/search", json={"image": base64.b64encode(b"not an image").decode()})
    form = await client.post("/search", data={"image": "aGVsbG8="})  # urlencoded forms are raw bytes
    garbage = await client.post("/search", content=b"\x00\x01garbage", headers={"content-type": "video/mp4"})
    for response in (legacy_json, form, garbage):
        assert response.status_code == 400
        assert error_of(response) == "Failed to process image"


async def test_body_size_limits_answer_express_html_pages(tinted: bytes) -> None:
    app = create_app(max_upload_bytes=1000, max_json_bytes=200)
    async with client_for(app) as client:
        raw = await client.post("/search", content=tinted, headers=JPEG)
        assert (raw.status_code, raw.headers["content-type"]) == (413, "text/html; charset=utf-8")
        assert "Payload Too Large" in raw.text
        big_json = await client.post("/search", json={"vector": [16] * 100})
        assert big_json.status_code == 413
        multipart = await client.post("/search", files={"image": ("a.jpg", tinted)})
        assert (multipart.status_code, multipart.headers["content-type"]) == (500, "text/html; charset=utf-8")
        two = await client.post("/search", files=[("a", ("a.jpg", b"1")), ("b", ("b.jpg", b"2"))])
        assert two.status_code == 500
        malformed = await client.post(
            "/search", content=b"{oops", headers={"content-type": "application/json"}
        )
        assert (malformed.status_code, malformed.headers["content-type"]) == (400, "text/html; charset=utf-8")
    assert app.state.emulator.log == []  # the body parsers answer before the search handler logs anything


def test_an_upload_its_caller_abandons_is_dropped_quietly(
    live_server: Callable[[Any], LiveServer], capfd: pytest.CaptureFixture[str]
) -> None:
    """A search process killed mid-upload: the emulator answered a 500 to nobody and logged a traceback
    (starlette's ClientDisconnect); trace.moe (Express) drops the request, counting nothing."""
    import socket
    import time

    app = create_app()
    server = live_server(app)
    head = (
        b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=xx\r\n"
        b"Content-Length: 100000\r\n\r\n--xx\r\n"
        b'Content-Disposition: form-data; name="image"; filename="a.jpg"\r\n\r\n'
    )
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(head + b"\xff" * 1000)
        time.sleep(0.3)
    time.sleep(0.5)
    assert httpx.get(f"{server.url}/me").json()["quotaUsed"] == 0
    assert app.state.emulator.log == []
    printed = capfd.readouterr().err  # the server's own log (uvicorn's, on stderr)
    assert "ClientDisconnect" not in printed
    assert "Exception in ASGI application" not in printed


async def test_url_inputs(tinted: bytes) -> None:
    images: dict[str, bytes | int] = {
        "https://img.example/a.jpg": tinted,
        "https://img.example/gone.jpg": 404,
    }
    app = create_app(remote_images=images)
    async with client_for(app) as client:
        invalid = await client.get("/search", params={"url": "not a url"})
        assert (invalid.status_code, error_of(invalid)) == (400, "Invalid image url not a url")
        unknown = await client.get("/search", params={"url": "https://elsewhere.example/x.png"})
        assert (unknown.status_code, error_of(unknown)) == (
            400,
            "Failed to fetch image https://elsewhere.example/x.png",
        )
        mirrored = await client.get("/search", params={"url": "https://img.example/gone.jpg"})
        assert (mirrored.status_code, error_of(mirrored)) == (
            404,
            "Failed to fetch image https://img.example/gone.jpg",
        )
        found = await client.get("/search", params={"url": "https://img.example/a.jpg"})
        assert found.json()["result"][0]["anilist"] == 11887
    # the host's 404 is answered, but logged as 400 (search.ts: logAndDequeue(..., 400))
    assert [row.code for row in app.state.emulator.log] == [400, 400, 400, 200]


async def test_url_inputs_can_fetch_loopback_when_allowed(
    tinted: bytes, live_server: Callable[[Any], LiveServer]
) -> None:
    async def picture(_: Request) -> Response:
        return Response(tinted, media_type="image/jpeg")

    host = live_server(Starlette(routes=[Route("/pic.jpg", picture)]))
    async with client_for(create_app(fetch_loopback=True)) as client:
        found = await client.get("/search", params={"url": f"{host.url}/pic.jpg"})
        assert found.json()["result"][0]["anilist"] == 11887
        missing = await client.get("/search", params={"url": f"{host.url}/nope.jpg"})
        assert missing.status_code == 404


# ---------------------------------------------------------------- vectors


async def test_vector_search_single_and_batch(client: httpx.AsyncClient, tinted: bytes) -> None:
    vector = list(search_descriptor(Image.open(io.BytesIO(tinted))))
    single = (await client.post("/search", json={"vector": vector})).json()
    assert single["result"][0]["anilist"] == 11887
    as_base64 = base64.b64encode(bytes(vector)).decode()
    batch = (
        await client.post("/search", json={"vector": [as_base64, list(QUERIES["moonlight-mile-2026-05"])]})
    ).json()
    assert [results[0]["anilist"] for results in batch["result"]] == [11887, 2929]
    assert batch["quotaUsed"] == 1
    assert (await client.get("/me")).json()["quotaUsed"] == 3  # a batch of N spends N


async def test_a_recorded_search_is_reproduced_by_its_query_vector(client: httpx.AsyncClient) -> None:
    body = (await client.post("/search", json={"vector": list(QUERIES["moonlight-mile-2026-05"])})).json()
    top = body["result"][0]
    assert top["filename"] == "[OUR][MOONLIGHT MILE 2nd][05][JP_GB][1280X720].mp4"
    assert (top["from"], top["at"], top["to"], top["duration"]) == (832.7494, 836.7534, 836.8368, 1499.9583)
    assert top["similarity"] == pytest.approx(0.9579, abs=0.005)
    near_miss = (await client.post("/search", json={"vector": list(QUERIES["near-miss-2025-09"])})).json()
    assert 0.6 < near_miss["result"][0]["similarity"] < 0.7
    string_episode = (
        await client.post("/search", json={"vector": list(QUERIES["3d-kanojo-2023-12"])})
    ).json()
    assert string_episode["result"][0]["episode"] == "5|17"
    assert string_episode["result"][0]["episode_start"] is None


@pytest.mark.parametrize(
    ("vector", "message"),
    [
        ([], "Invalid vector format"),
        ([16] * 32, "Invalid vector format"),
        ({"a": 1}, "Invalid vector format"),
        ("AAAA", "Invalid vector format"),
        ([[16] * 33, [16] * 32], "Invalid vector format"),
        ([[16] * 33] * 11, "Too many vectors (max 10)"),
    ],
)
async def test_bad_vectors(client: httpx.AsyncClient, vector: Any, message: str) -> None:
    response = await client.post("/search", json={"vector": vector})
    assert (response.status_code, error_of(response)) == (400, message)


# ---------------------------------------------------------------- keys, quota, concurrency, queue


async def test_keys(tinted: bytes) -> None:
    app = create_app(
        keys={"good": EmulatedUser("fan@example.com", quota=5, concurrency=2, priority=5)}, quota=1
    )
    async with client_for(app) as client:
        bad = await client.post("/search", content=tinted, headers={**JPEG, "x-trace-key": "nope"})
        assert (bad.status_code, error_of(bad)) == (403, "Invalid API key")
        assert (await client.get("/me", headers={"x-trace-key": "nope"})).status_code == 403
        keyed = await client.post("/search", content=tinted, headers={**JPEG, "x-trace-key": "good"})
        assert keyed.json()["quota"] == 5
        me = (await client.get("/me", headers={"x-trace-key": "good"})).json()
        assert me == {"id": "fan@example.com", "priority": 5, "concurrency": 2, "quota": 5, "quotaUsed": 1}
        # ?key= is ignored at HEAD: the request runs as a guest; and a guest's count is every success
        # of its network, the keyed search included (search.ts counts the address's log rows)
        guest = await client.post("/search?key=good", content=tinted, headers=JPEG)
        assert (guest.status_code, guest.json()) == (402, {"quota": 1, "quotaUsed": 1, "error": ANY})
        assert (await client.get("/me")).json()["quotaUsed"] == 1
        usage = (await client.get("/me?period=hour")).json()
        assert [(row["200"], row["402"]) for row in usage] == [(1, 1)]
        keyed_usage = (await client.get("/me?period=hour", headers={"x-trace-key": "good"})).json()
        assert [(row["200"], row["402"]) for row in keyed_usage] == [(1, 0)]  # a key's are its own
        # an unknown period is refused before the key is looked at, as the server does
        period = await client.get("/me?period=week", headers={"x-trace-key": "nope"})
        assert (period.status_code, error_of(period)) == (400, "Invalid period")
    assert len(app.state.emulator.log) == 2  # the 403 is answered before the search is logged


async def test_quota_is_a_rolling_24_hours_checked_before_anything_else(tinted: bytes) -> None:
    clock = Clock()
    async with client_for(create_app(quota=2, clock=clock)) as client:
        first = await client.post("/search", content=tinted, headers=JPEG)
        assert first.json()["quotaUsed"] == 0
        assert (await client.get("/search")).status_code == 405  # failures are free
        clock.now += 3600
        second = await client.post("/search", content=tinted, headers=JPEG)
        assert second.json()["quotaUsed"] == 1
        depleted = await client.post("/search", content=tinted, headers=JPEG)
        assert depleted.status_code == 402
        assert depleted.text == (
            '{"quota":2,"quotaUsed":2,"error":"Search quota depleted (quota per 24 hours: 2, used: 2)"}'
        )
        assert (await client.get("/search")).status_code == 402  # even a request without input
        clock.now += 23 * 3600 + 1  # the first search ages out of the window
        assert (await client.post("/search", content=tinted, headers=JPEG)).json()["quotaUsed"] == 1


async def test_concurrency_is_refused_at_once_per_caller(tinted: bytes) -> None:
    app = create_app(latency=0.2, trust_forwarded_for=True, keys={"two": 4})
    statuses: dict[str, list[int]] = {}

    async def one(client: httpx.AsyncClient, who: str, headers: dict[str, str]) -> None:
        response = await client.post("/search", content=tinted, headers={**JPEG, **headers})
        statuses.setdefault(who, []).append(response.status_code)
        if response.status_code == 402:
            assert error_of(response) == "Concurrency limit exceeded"

    async with client_for(app) as client, anyio.create_task_group() as group:
        for who, headers in [
            ("same guest", {"x-forwarded-for": "203.0.113.7"}),
            ("same guest", {"x-forwarded-for": "203.0.113.7"}),
            ("other guest", {"x-forwarded-for": "198.51.100.9"}),
            ("tier 4 key", {"x-trace-key": "two"}),
            ("tier 4 key", {"x-trace-key": "two"}),
        ]:
            group.start_soon(one, client, who, headers)
    assert sorted(statuses["same guest"]) == [200, 402]
    assert statuses["other guest"] == [200]
    assert statuses["tier 4 key"] == [200, 200]
    assert app.state.emulator.concurrent == {}


async def test_a_search_counts_down_only_once_logged_after_its_answer(
    tinted: bytes, live_server: Callable[[Any], LiveServer]
) -> None:
    app = create_app(log_seconds=2.0)
    server = live_server(app)
    async with httpx.AsyncClient(base_url=server.url) as client:
        first = await client.post("/search", content=tinted, headers=JPEG)
        assert first.status_code == 200
        assert app.state.emulator.concurrent != {}  # answered, not yet logged: still in flight upstream
        too_soon = await client.post("/search", content=tinted, headers=JPEG)
        assert (too_soon.status_code, error_of(too_soon)) == (402, "Concurrency limit exceeded")
        with anyio.fail_after(10):  # logged 2 s after each answer, then counted down
            while app.state.emulator.concurrent:
                await anyio.sleep(0.05)
        assert (await client.post("/search", content=tinted, headers=JPEG)).status_code == 200


async def test_a_full_queue_is_503_but_higher_priorities_pass(tinted: bytes) -> None:
    app = create_app(latency=0.2, queue_size=1, trust_forwarded_for=True, keys={"sponsor": 3})
    statuses: list[tuple[str, int, str]] = []

    async def one(client: httpx.AsyncClient, who: str, headers: dict[str, str], delay: float) -> None:
        await anyio.sleep(delay)
        response = await client.post("/search", content=tinted, headers={**JPEG, **headers})
        statuses.append((who, response.status_code, response.json().get("error", "")))

    async with client_for(app) as client, anyio.create_task_group() as group:
        group.start_soon(one, client, "guest A", {"x-forwarded-for": "203.0.113.1"}, 0)
        group.start_soon(one, client, "guest B", {"x-forwarded-for": "203.0.113.2"}, 0.05)
        group.start_soon(one, client, "sponsor", {"x-trace-key": "sponsor"}, 0.05)
    assert sorted(statuses) == [
        ("guest A", 200, ""),
        ("guest B", 503, "Error: Search queue is full"),
        ("sponsor", 200, ""),
    ]


# ---------------------------------------------------------------- HTTP rate limit, CORS, routes


async def test_rate_limit_headers_and_429_on_every_route() -> None:
    clock = Clock(1_780_000_000.5)
    async with client_for(create_app(rate_limit=3, clock=clock)) as client:
        first = await client.get("/")
        assert first.text == "ok"
        assert first.headers["x-ratelimit-limit"] == "3"
        assert first.headers["x-ratelimit-reset"] == "1780000061"
        assert first.headers["ratelimit-policy"] == "3;w=60"
        assert [first.headers["ratelimit-remaining"], first.headers["ratelimit-reset"]] == ["2", "60"]
        await client.get("/me")
        third = await client.get("/nowhere")
        assert third.headers["x-ratelimit-remaining"] == "0"
        clock.now += 20
        limited = await client.get("/search")
        assert (limited.status_code, limited.headers["content-type"]) == (429, "text/html; charset=utf-8")
        assert limited.text == "Too many requests, please try again later."
        assert (limited.headers["retry-after"], limited.headers["ratelimit-reset"]) == ("40", "40")
        clock.now += 40
        assert (await client.get("/")).status_code == 200


async def test_cors_headers_and_preflight(client: httpx.AsyncClient) -> None:
    plain = await client.get("/")
    assert plain.headers["access-control-allow-origin"] == "*"
    reflected = await client.get("/", headers={"origin": "https://app.example"})
    assert reflected.headers["access-control-allow-origin"] == "https://app.example"
    assert reflected.headers["access-control-allow-credentials"] == "true"
    preflight = await client.options(
        "/search", headers={"origin": "https://app.example", "access-control-request-headers": "x-trace-key"}
    )
    assert (preflight.status_code, preflight.headers["access-control-allow-headers"]) == (204, "x-trace-key")


async def test_unknown_routes_and_post_me_are_express_404_pages(client: httpx.AsyncClient) -> None:
    post_me = await client.post("/me")
    assert (post_me.status_code, post_me.headers["content-type"]) == (404, "text/html; charset=utf-8")
    assert "<pre>Cannot POST /me</pre>" in post_me.text
    assert "<pre>Cannot GET /nope</pre>" in (await client.get("/nope")).text


async def test_me_for_a_guest_and_its_usage_buckets(tinted: bytes) -> None:
    clock = Clock(1_780_000_030.0)
    async with client_for(create_app(clock=clock)) as client:
        fresh = (await client.get("/me")).json()
        assert fresh == {"id": "127.0.0.1", "priority": 0, "concurrency": 1, "quota": 100, "quotaUsed": 0}
        await client.post("/search", content=tinted, headers=JPEG)
        await client.get("/search")
        after = (await client.get("/me")).json()
        assert (after["id"], after["quotaUsed"]) == ("127.0.0.1", 1)  # PostgreSQL prints a /32 bare
        minutes = (await client.get("/me?period=minute")).json()
        assert minutes == [{"200": 1, "400": 0, "402": 0, "405": 1, "500": 0, "503": 0,
                            "time": "2026-05-28T20:27:00.000Z", "total": 2}]  # fmt: skip
        assert list(minutes[0]) == ["200", "400", "402", "405", "500", "503", "time", "total"]
        assert len((await client.get("/me?period=hour")).json()) == 1  # quiet slots are left out
        assert len((await client.get("/me?period=day")).json()) == 1
        bad = await client.get("/me?period=week")
        assert (bad.status_code, error_of(bad)) == (400, "Invalid period")


async def test_previews_are_served_until_they_expire(tinted: bytes) -> None:
    clock = Clock(1_780_000_000.0)  # 20:26:40 UTC: the previews expire at 21:00 (+300 s of grace)
    async with client_for(create_app(clock=clock)) as client:
        best = (await client.post("/search", content=tinted, headers=JPEG)).json()["result"][0]
        image = await client.get(best["image"])
        assert (image.status_code, image.headers["content-type"]) == (200, "image/jpeg")
        assert Image.open(io.BytesIO(image.content)).format == "JPEG"
        video = await client.get(best["video"], params={"size": "s"})
        assert (video.headers["content-type"], video.headers["x-video-start"]) == ("video/mp4", "1169.17")
        assert (await client.get(best["image"], headers={"if-none-match": "v0"})).status_code == 304
        assert (await client.get(best["image"], params={"size": "xl"})).status_code == 400
        assert (await client.get(best["image"][:-3] + "zzz")).status_code in {403, 404}
        clock.now = 1_780_002_000.0 + 301
        gone = await client.get(best["video"])
        assert (gone.status_code, gone.text) == (410, "Gone")


async def test_injected_failures_come_first_then_normal_service(tinted: bytes) -> None:
    failure = InjectedFailure(503, {"error": "Error: Search queue is full"})
    app = create_app(failures=[failure])
    app.state.emulator.fail_next(429, "Too many requests, please try again later.")
    async with client_for(app) as client:
        first = await client.post("/search", content=tinted, headers=JPEG)
        second = await client.post("/search", content=tinted, headers=JPEG)
        third = await client.post("/search", content=tinted, headers=JPEG)
    assert (first.status_code, error_of(first)) == (503, "Error: Search queue is full")
    assert (second.status_code, second.headers["content-type"]) == (429, "text/html; charset=utf-8")
    assert third.status_code == 200
    assert app.state.emulator.search_requests == 3


# ---------------------------------------------------------------- older servers


async def test_v2_quirks(tinted: bytes) -> None:
    async with client_for(create_app(era="v2", quota=1)) as client:
        never = (await client.get("/me")).json()
        assert never == {"id": "127.0.0.1", "priority": 0, "concurrency": 0, "quota": 0, "quotaUsed": "0"}
        body = (await client.post("/search", content=tinted, headers=JPEG)).json()
        assert list(body) == ["frameCount", "error", "result"]
        assert "episode_start" not in body["result"][0]
        assert {"at", "duration"} <= set(body["result"][0])
        assert (await client.get("/me")).json()["quotaUsed"] == "1"
        depleted = await client.post("/search", content=tinted, headers=JPEG)
        assert depleted.text == '{"error":"Search quota depleted"}'
        assert (await client.post("/search", json={"vector": [16] * 33})).status_code == 402


async def test_v1_quirks(tinted: bytes) -> None:
    app = create_app(era="v1", keys={"k": EmulatedUser("fan@example.com")})
    async with client_for(app) as client:
        body = (await client.post("/search?anilistInfo&key=k", content=tinted, headers=JPEG)).json()
        best = body["result"][0]
        assert list(best) == ["anilist", "filename", "episode", "from", "to", "similarity", "video", "image"]
        assert set(best["anilist"]) == {"id", "idMal", "title", "synonyms", "isAdult"}
        assert any("anilist" not in item for item in body["result"])  # IDs AniList lacked lost the key
        assert "/video/11887/Kokoro%20Connect%20-%2005" in best["video"]
        assert ".mp4.jpg?t=" in best["image"]
        assert (await client.get(best["image"])).status_code == 200
        assert (await client.get("/me?key=k")).json()["id"] == "fan@example.com"
        assert (await client.get("/me?key=other")).status_code == 403
        vector = await client.post(
            "/search", content=json.dumps({"vector": [16] * 33}), headers={"content-type": "application/json"}
        )
        assert error_of(vector) == "Failed to process image"  # no vector search before 2026


async def test_v1_previews_are_good_until_five_minutes_past_the_next_full_hour(tinted: bytes) -> None:
    """V1's `now` was the next full hour (search.js), and video.js served until 300 s past it."""
    clock = Clock(1_779_999_000.0)  # 20:10 UTC
    async with client_for(create_app(era="v1", clock=clock)) as client:
        best = (await client.post("/search", content=tinted, headers=JPEG)).json()["result"][0]
        assert "now=1780002000&" in best["video"]  # 21:00
        clock.now = 1_780_002_000.0 + 299  # 20:10 + 55 min: still served
        assert (await client.get(best["video"])).status_code == 200
        clock.now += 2
        assert (await client.get(best["video"])).status_code == 410


def test_an_unknown_era_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown era"):
        create_app(era="v9")  # type: ignore[arg-type]


@pytest.mark.e2e
def test_served_over_loopback_http(tinted: bytes, live_server: Callable[[Any], LiveServer]) -> None:
    server = live_server(create_app())
    with httpx.Client(base_url=server.url) as http:
        found = http.post("/search", files={"image": ("tinted.jpg", tinted, "image/jpeg")})
        assert found.status_code == 200
        assert found.headers["ratelimit-policy"] == "100;w=60"
        best = found.json()["result"][0]
        assert best["anilist"] == 11887
        assert best["image"].startswith(f"{server.url}/image/")
        assert http.get(best["image"]).headers["content-type"] == "image/jpeg"


async def test_a_search_takes_its_latency_and_never_less(tinted: bytes) -> None:
    # `latency` models the upstream's whole answer time: the answer may not leave before it has passed
    async with client_for(create_app(latency=0.03)) as http:
        for _ in range(5):
            started = anyio.current_time()
            response = await http.post("/search", files={"image": ("a.jpg", tinted)})
            assert response.status_code == 200
            assert anyio.current_time() - started >= 0.03

"""trace.moe's contract, fact by fact: the emulator behaves so, and the ``tracemoe`` provider reads it so.

Each test states one fact of ``research/tracemoe-contract.md`` that was verified on the server's own code
(the "Verified against running code (2026-11)" section and its **(verified)** marks), names its section
in the docstring, and checks it twice: against the emulator over HTTP, and through the provider's
parser. When the contract changes, the failing tests name the facts that moved.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import av
import httpx
import pytest
from PIL import Image

from anisearch import (
    AuthenticationError,
    BadRequestError,
    ConcurrencyLimitError,
    ImageTooLargeError,
    ProviderBusyError,
    ProviderServerError,
    QuotaExhaustedError,
    RateLimitedError,
)
from anisearch._image import prepare
from anisearch._provider import SearchOptions, SearchQuery
from anisearch_emulators.tracemoe import create_app
from anisearch_emulators.tracemoe._index import SCENES, IndexedScene
from anisearch_providers.tracemoe import TraceMoe
from anisearch_providers.tracemoe.descriptor import search_descriptor

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from starlette.applications import Starlette

pytestmark = pytest.mark.anyio

BASE = "http://emulator.test"
JPEG = {"content-type": "image/jpeg"}
T0 = 1_780_000_000.0


class Clock:
    """A settable epoch clock, shared by the emulator and the provider."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def aware(self) -> datetime:
        return datetime.fromtimestamp(self.now, UTC)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def tinted(samples: Path) -> bytes:
    return (samples / "tinted-good.jpg").read_bytes()


def client_for(app: Starlette, address: str = "127.0.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app, client=(address, 50000))
    return httpx.AsyncClient(transport=transport, base_url=BASE)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(create_app()) as c:
        yield c


def provider(clock: Clock | None = None, key: str | None = None) -> TraceMoe:
    clock = clock or Clock()
    return TraceMoe(BASE, key, clock=clock.aware)


async def search(
    client: httpx.AsyncClient, data: bytes, tracemoe: TraceMoe | None = None, **options: Any
) -> httpx.Response:
    """A search sent exactly as the provider builds it (multipart ``image``)."""
    tracemoe = tracemoe or provider()
    query = SearchQuery(image=prepare(data), options=SearchOptions(**options))
    return await client.send(tracemoe.search_request(query))


def ordered_json(response: httpx.Response) -> Any:
    return json.loads(response.content)


# ---------------------------------------------------------------- §3.1 numbers


async def test_whole_numbers_are_json_integers() -> None:
    """§3.1 Numbers (verified): a whole value is a JSON integer (``"from":611``, ``"duration":1420``,
    ``"similarity":0``); the parser reads an int wherever the contract says "number"."""
    whole = IndexedScene(9, 21, "One Piece - 611.mp4", 611, 611, 611, 611.0, 612.0, 613.0, 1420.0,
                         SCENES[0].vector)  # fmt: skip
    unrelated = IndexedScene(10, 21, "Far.mp4", 1, 1, 1, 10.0, 11.0, 12.0, 1300.0, (0,) * 33)
    async with client_for(create_app(index=[whole, unrelated])) as client:
        answer = await client.post("/search", content=_solid((255, 255, 255)), headers=JPEG)
    text = answer.text
    assert '"from":611,' in text
    assert '"duration":1420,' in text
    assert '"similarity":0,' in text
    assert ".0," not in text
    hits = provider().parse_search(answer).hits
    assert {(hit.start_seconds, hit.episode_duration_seconds) for hit in hits} == {
        (611.0, 1420.0),
        (10.0, 1300.0),
    }
    assert min(hit.similarity for hit in hits) == 0.0


def _solid(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 36), colour).save(buffer, "JPEG")
    return buffer.getvalue()


# ---------------------------------------------------------------- §3.2 /me


async def test_me_names_an_ipv4_guest_without_a_mask(client: httpx.AsyncClient, tinted: bytes) -> None:
    """§3.2 ``/me`` ``id`` and §8 item 10 (verified): an IPv4 guest is ``"127.0.0.1"`` before and after
    searching, never ``"127.0.0.1/32"``; the parser keeps no ``id`` at all."""
    before = (await client.get("/me")).json()["id"]
    await search(client, tinted)
    after = await client.get("/me")
    assert (before, after.json()["id"]) == ("127.0.0.1", "127.0.0.1")
    (quota,) = provider().parse_quota(after)
    assert "id" not in quota.raw


async def test_me_names_an_ipv6_guest_who_searched_by_network(tinted: bytes) -> None:
    """§3.2: an IPv6 guest who searched in the last 24 h gets the /64 network."""
    async with client_for(create_app(), "2001:db8:1:2::7") as client:
        assert (await client.get("/me")).json()["id"] == "2001:db8:1:2::7"
        await search(client, tinted)
        assert (await client.get("/me")).json()["id"] == "2001:db8:1:2::/64"


async def test_me_gives_priority_and_concurrency_and_the_parser_keeps_them() -> None:
    """§3.2, §6 Tiers: ``/me`` reports the tier's ``priority`` and ``concurrency``; the provider's quota
    carries both (a $20 key: 20000, concurrency 2, priority 5; a guest: 100, 1, 0)."""
    async with client_for(create_app(keys={"sponsor": 4})) as client:
        keyed = provider(key="sponsor")
        (mine,) = keyed.parse_quota(await client.send(keyed.quota_request()))
        guest = provider()
        (theirs,) = guest.parse_quota(await client.send(guest.quota_request()))
    assert (mine.limit, mine.concurrency, mine.priority, mine.scope) == (20000, 2, 5, "api-key")
    assert (theirs.limit, theirs.concurrency, theirs.priority, theirs.scope) == (100, 1, 0, "guest")


async def test_an_unknown_key_is_an_authentication_error_on_me_and_search(tinted: bytes) -> None:
    """§2.3, §3.2, §4 (verified): an unknown ``x-trace-key`` gets 403 ``{"error":"Invalid API key"}`` on
    ``/search`` and ``/me`` alike; the provider raises :class:`AuthenticationError` for both."""
    bad = provider(key="nope")
    async with client_for(create_app()) as client:
        me = await client.send(bad.quota_request())
        found = await search(client, tinted, bad)
    assert (me.status_code, me.json(), found.status_code, found.json()) == (
        403, {"error": "Invalid API key"}, 403, {"error": "Invalid API key"},
    )  # fmt: skip
    with pytest.raises(AuthenticationError):
        bad.parse_quota(me)
    with pytest.raises(AuthenticationError):
        bad.parse_search(found)


async def test_usage_lists_only_periods_with_data_in_the_servers_key_order(tinted: bytes) -> None:
    """§3.2 ``/me?period=`` (verified): one entry per slot in which the caller searched, quiet slots
    left out; keys ``"200"``, ``"400"``, ``"402"``, ``"405"``, ``"500"``, ``"503"``, then ``time``,
    ``total``. The parser reads the buckets."""
    clock = Clock(T0 + 30)
    async with client_for(create_app(clock=clock)) as client:
        await search(client, tinted)
        clock.now += 180
        await client.get("/search")
        usage = await client.send(provider().usage_request("minute"))
    rows = ordered_json(usage)
    assert [list(row) for row in rows] == [["200", "400", "402", "405", "500", "503", "time", "total"]] * 2
    assert [(row["200"], row["405"], row["total"]) for row in rows] == [(1, 0, 1), (0, 1, 1)]
    buckets = provider().parse_usage(usage)
    assert [(bucket.statuses[200], bucket.total) for bucket in buckets] == [(1, 1), (0, 1)]
    assert buckets[1].time is not None
    assert buckets[0].time is not None
    assert (buckets[1].time - buckets[0].time).total_seconds() == 180


# ---------------------------------------------------------------- §2.3 decoding


async def test_a_truncated_jpeg_is_decoded_by_the_fallback(client: httpx.AsyncClient, tinted: bytes) -> None:
    """§2.3 Decoding (verified): a truncated JPEG that the primary decoder refuses is decoded by the
    fallback and gets 200 (its best similarity may be low)."""
    cut = tinted[: len(tinted) * 2 // 3]
    answer = await client.post("/search", content=cut, headers=JPEG)
    assert answer.status_code == 200
    assert provider().parse_search(answer).hits


async def test_an_mp4_upload_searches_its_first_frame(client: httpx.AsyncClient, tinted: bytes) -> None:
    """§2.3 Decoding (verified): an MP4 upload gets 200; its first frame is searched."""
    answer = await client.post("/search", content=_mp4_of(tinted), headers={"content-type": "video/mp4"})
    assert answer.status_code == 200
    best = provider().parse_search(answer).hits[0]
    assert (best.anilist_id, best.similarity > 0.9) == (11887, True)


def _mp4_of(jpeg: bytes) -> bytes:
    frame_image = Image.open(io.BytesIO(jpeg)).convert("RGB").resize((320, 180))
    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=25)
        assert isinstance(stream, av.VideoStream)
        stream.width, stream.height, stream.pix_fmt = 320, 180, "yuv420p"
        for _ in range(3):
            frame = av.VideoFrame.from_image(frame_image)  # type: ignore[no-untyped-call]
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out.getvalue()


@pytest.mark.parametrize(
    "data",
    [b"\xff\xd8\xff\xe0 not really a jpeg", b"just some text", bytes(range(256)) * 4],
    ids=["corrupt", "text", "noise"],
)
async def test_undecodable_uploads_are_400_failed_to_process_image(
    client: httpx.AsyncClient, data: bytes
) -> None:
    """§2.3, §4 (verified): bytes both decoders refuse get 400 ``{"error":"Failed to process image"}``;
    the provider reads :class:`BadRequestError` (the next provider may still read the image)."""
    answer = await client.post("/search", content=data, headers=JPEG)
    assert (answer.status_code, answer.json()) == (400, {"error": "Failed to process image"})
    with pytest.raises(BadRequestError, match="Failed to process image"):
        provider().parse_search(answer)


async def test_an_empty_upload_is_400_failed_to_process_file(client: httpx.AsyncClient) -> None:
    """§2.1 (verified): an empty multipart file gets 400 ``{"error":"Failed to process file"}``."""
    answer = await client.post("/search", files={"image": ("a.jpg", b"", "image/jpeg")})
    assert (answer.status_code, answer.json()) == (400, {"error": "Failed to process file"})
    with pytest.raises(BadRequestError, match="Failed to process file"):
        provider().parse_search(answer)


# ---------------------------------------------------------------- §2.2 sizes, §4 HTML 500


async def test_a_raw_body_over_the_limit_is_an_html_413(tinted: bytes) -> None:
    """§2.2 (verified): a raw body over the limit gets Express's HTML ``Payload Too Large`` (413)."""
    async with client_for(create_app(max_upload_bytes=1000)) as client:
        answer = await client.post("/search", content=tinted, headers=JPEG)
    assert (answer.status_code, answer.headers["content-type"]) == (413, "text/html; charset=utf-8")
    with pytest.raises(ImageTooLargeError):
        provider().parse_search(answer)


async def test_a_multipart_file_over_the_limit_is_an_html_500(tinted: bytes) -> None:
    """§2.2 (verified): a multipart file over the limit gets the HTML ``Internal Server Error`` page
    (500), not 413."""
    async with client_for(create_app(max_upload_bytes=1000)) as client:
        answer = await search(client, tinted)
    assert (answer.status_code, answer.headers["content-type"]) == (500, "text/html; charset=utf-8")
    assert "<pre>Internal Server Error</pre>" in answer.text


def test_an_html_500_means_too_large_only_for_an_upload_near_the_limit() -> None:
    """§2.2, §4, §8 item 1 (verified): the same HTML 500 comes from any uncaught failure, so the provider
    reads it as too large only when the multipart body it sent was near 25 MiB; otherwise it is a
    server error."""
    page = "<!DOCTYPE html>\n<html><body>\n<pre>Internal Server Error</pre>\n</body>\n</html>\n"
    small = httpx.Request("POST", f"{BASE}/search", files={"image": ("a.jpg", b"x" * 100, "image/jpeg")})
    big = httpx.Request(
        "POST",
        f"{BASE}/search",
        headers={"content-type": "multipart/form-data; boundary=b", "content-length": str(26_214_400 + 200)},
    )
    html = {"content-type": "text/html; charset=utf-8"}
    with pytest.raises(ProviderServerError, match="slot") as server:
        provider().parse_search(httpx.Response(500, text=page, headers=html, request=small))
    assert not isinstance(server.value, ImageTooLargeError)
    with pytest.raises(ImageTooLargeError):
        provider().parse_search(httpx.Response(500, text=page, headers=html, request=big))


async def test_a_repeated_anilist_id_is_a_500_that_leaks_the_slot_until_housekeeping(tinted: bytes) -> None:
    """§2.3, §6 Concurrency (verified): a repeated ``anilistID`` throws after the counters went up: HTML
    500, and the caller's concurrency slot stays taken (402 ``Concurrency limit exceeded`` on every
    search) until the 15-minute housekeeping. The provider reads a server error, then
    :class:`ConcurrencyLimitError`."""
    clock = Clock()
    async with client_for(create_app(clock=clock)) as client:
        crash = await client.post("/search?anilistID=1&anilistID=2", content=tinted, headers=JPEG)
        stuck = [await search(client, tinted) for _ in range(3)]
        clock.now += 15 * 60
        freed = await search(client, tinted)
    assert crash.status_code == 500
    with pytest.raises(ProviderServerError):
        provider().parse_search(crash)
    assert [answer.json() for answer in stuck] == [{"error": "Concurrency limit exceeded"}] * 3
    with pytest.raises(ConcurrencyLimitError):
        provider().parse_search(stuck[0])
    assert freed.status_code == 200


async def test_leaked_requests_fill_the_queue_and_every_search_is_503(tinted: bytes) -> None:
    """§6 Priority queue (verified): leaked requests stay in the queue count; with a queue of 2, two
    leaked guest requests make every guest search 503 ``Error: Search queue is full`` until
    housekeeping. The provider reads :class:`ProviderBusyError`."""
    clock = Clock()
    app = create_app(clock=clock, queue_size=2)
    for address in ("10.0.0.1", "10.0.0.2"):
        async with client_for(app, address) as client:
            crash = await client.post("/search?anilistID=1&anilistID=2", content=tinted, headers=JPEG)
            assert crash.status_code == 500
    async with client_for(app, "10.0.0.3") as client:
        full = await search(client, tinted)
        clock.now += 15 * 60
        freed = await search(client, tinted)
    assert (full.status_code, full.json()) == (503, {"error": "Error: Search queue is full"})
    with pytest.raises(ProviderBusyError):
        provider().parse_search(full)
    assert freed.status_code == 200


# ---------------------------------------------------------------- §6 quota


async def test_the_quota_is_a_rolling_window_freed_search_by_search(tinted: bytes) -> None:
    """§6 Quota (verified): each counted search ages out exactly one window after it was made (24 h;
    here the ``quota_window`` knob shortens it), so the window frees slot by slot; ``/me``'s
    ``quotaUsed`` follows the same log; the 402 carries the numbers and the provider reads them."""
    clock = Clock()
    async with client_for(create_app(clock=clock, quota=2, quota_window=100)) as client:
        await search(client, tinted)
        clock.now += 10
        await search(client, tinted)
        clock.now += 10
        spent = await search(client, tinted)
        me = provider().parse_quota(await client.get("/me"))[0]
        clock.now = T0 + 99.999
        still = await search(client, tinted)
        clock.now = T0 + 100  # the first search is exactly one window old: its slot is free
        used_then = (await client.get("/me")).json()["quotaUsed"]
        freed = await search(client, tinted)
    assert spent.json() == {
        "quota": 2,
        "quotaUsed": 2,
        "error": "Search quota depleted (quota per 24 hours: 2, used: 2)",
    }
    with pytest.raises(QuotaExhaustedError) as caught:
        provider().parse_search(spent)
    assert (caught.value.limit, caught.value.used) == (2, 2)
    assert (me.used, me.remaining) == (2, 0)
    assert still.status_code == 402
    assert used_then == 1
    assert freed.status_code == 200
    assert provider().parse_search(freed).quota is not None


async def test_the_anilist_id_short_circuit_counts_as_a_search(
    client: httpx.AsyncClient, tinted: bytes
) -> None:
    """§2.3, §6 (verified): an ``anilistID`` with no indexed files answers 200 ``{"frameCount":0,
    "error":"","result":[]}`` without ``quota``/``quotaUsed``, and counts as a successful search."""
    answer = await search(client, tinted, anilist_id=999_999)
    assert answer.text == '{"frameCount":0,"error":"","result":[]}'
    parsed = provider().parse_search(answer)
    assert (parsed.hits, parsed.frames_searched, parsed.quota) == ([], 0, None)
    assert (await client.get("/me")).json()["quotaUsed"] == 1


async def test_key_in_the_query_is_ignored_and_searches_as_a_guest(
    client: httpx.AsyncClient, tinted: bytes
) -> None:
    """§2.3 ``key`` (HEAD): ``?key=`` is silently ignored; the search runs as a guest."""
    answer = await client.post("/search?key=whatever", content=tinted, headers=JPEG)
    assert answer.status_code == 200
    assert (await client.get("/me")).json()["quotaUsed"] == 1


# ---------------------------------------------------------------- §5 headers


async def test_the_rate_limit_is_a_fixed_minute_with_retry_after_the_seconds_left(tinted: bytes) -> None:
    """§5 (verified): 100 requests per fixed 60 s window per client, on every route; the 101st gets
    the plain 429 with ``Retry-After`` = the seconds left (60 at once); the provider reads
    :class:`RateLimitedError` with that wait."""
    clock = Clock()
    async with client_for(create_app(clock=clock)) as client:
        for _ in range(100):
            await client.get("/")
        limited = await client.send(provider().quota_request())
        clock.now += 20
        later = await client.get("/me")
        clock.now += 40
        fresh = await client.get("/me")
    assert (limited.status_code, limited.text) == (429, "Too many requests, please try again later.")
    assert limited.headers["retry-after"] == "60"
    assert later.headers["retry-after"] == "40"
    with pytest.raises(RateLimitedError) as caught:
        provider().parse_quota(limited)
    assert caught.value.retry_after == 60
    assert fresh.status_code == 200
    assert (fresh.headers["x-ratelimit-limit"], fresh.headers["ratelimit-policy"]) == ("100", "100;w=60")


async def test_cors_on_ordinary_answers_and_preflights(client: httpx.AsyncClient) -> None:
    """§5 CORS (verified): ordinary answers allow ``GET, POST, OPTIONS`` and ``Content-Type,
    x-trace-secret``, reflect the Origin with credentials and ``Vary: Origin``; a preflight is answered
    by the cors package (204, ``GET,HEAD,PUT,PATCH,POST,DELETE``, the requested headers reflected,
    ``Vary: Origin, Access-Control-Request-Headers``)."""
    plain = await client.get("/me", headers={"origin": "https://app.example"})
    assert (
        plain.headers["access-control-allow-origin"],
        plain.headers["access-control-allow-credentials"],
        plain.headers["access-control-allow-methods"],
        plain.headers["access-control-allow-headers"],
        plain.headers["vary"],
    ) == ("https://app.example", "true", "GET, POST, OPTIONS", "Content-Type, x-trace-secret", "Origin")
    assert (await client.get("/me")).headers["access-control-allow-origin"] == "*"
    preflight = await client.options(
        "/search",
        headers={
            "origin": "https://app.example",
            "access-control-request-method": "POST",
            "access-control-request-headers": "x-trace-key",
        },
    )
    assert preflight.status_code == 204
    assert (
        preflight.headers["access-control-allow-origin"],
        preflight.headers["access-control-allow-methods"],
        preflight.headers["access-control-allow-headers"],
        preflight.headers["vary"],
        preflight.headers["access-control-allow-credentials"],
    ) == ("https://app.example", "GET,HEAD,PUT,PATCH,POST,DELETE", "x-trace-key",
          "Origin, Access-Control-Request-Headers", "true")  # fmt: skip


async def test_json_answers_carry_a_weak_etag(client: httpx.AsyncClient, tinted: bytes) -> None:
    """§5 (verified): JSON answers carry Express's weak ``ETag`` (``W/"<length hex>-<hash>"``)."""
    for answer in (await client.get("/me"), await search(client, tinted), await client.get("/search")):
        tag = answer.headers["etag"]
        assert tag.startswith('W/"')
        assert tag[3:].split("-")[0] == f"{len(answer.content):x}"


# ---------------------------------------------------------------- more of §2-§4


async def test_a_database_outage_is_a_server_error_never_too_large(tinted: bytes) -> None:
    """§2.2, §4 (verified): with PostgreSQL down a multipart search gets the HTML 500 page; with the
    vector store down, 500 ``{"error":"Search failed. Database temporarily unavailable."}``. The
    provider reads both as :class:`ProviderServerError` (the upload was small), not too large."""
    app = create_app()
    async with client_for(app) as client:
        app.state.emulator.outage = "postgres"
        postgres = await search(client, tinted)
        app.state.emulator.outage = "vector"
        vector = await search(client, tinted)
        app.state.emulator.outage = None
        assert (await search(client, tinted)).status_code == 200
    assert (postgres.status_code, postgres.headers["content-type"]) == (500, "text/html; charset=utf-8")
    assert vector.json() == {"error": "Search failed. Database temporarily unavailable."}
    for answer in (postgres, vector):
        with pytest.raises(ProviderServerError) as caught:
            provider().parse_search(answer)
        assert not isinstance(caught.value, ImageTooLargeError)


async def test_a_url_the_server_cannot_fetch_is_400_failed_to_fetch(client: httpx.AsyncClient) -> None:
    """§4 (verified with an unreachable host): a fetch that throws gets 400 ``{"error":"Failed to fetch
    image <url>"}``; the provider reads :class:`ImageFetchError` (upload the bytes instead)."""
    from anisearch import ImageFetchError

    url = "http://unreachable.invalid/a.jpg"
    answer = await client.send(provider().url_search_request(url))
    assert (answer.status_code, answer.json()) == (400, {"error": f"Failed to fetch image {url}"})
    with pytest.raises(ImageFetchError):
        provider().parse_search(answer)


async def test_a_vector_search_finds_what_the_upload_finds(client: httpx.AsyncClient, tinted: bytes) -> None:
    """§2.4 (verified): the colour layout descriptor computed locally is the server's own, so a search by
    ``{"vector": ...}`` (33 bytes) answers like the upload."""
    with Image.open(io.BytesIO(prepare(tinted).data)) as uploaded:
        vector = search_descriptor(uploaded)
    by_vector = provider().parse_search(await client.send(provider().vector_search_request(vector)))
    by_upload = provider().parse_search(await search(client, tinted))
    assert (by_vector.hits[0].anilist_id, by_vector.hits[0].similarity) == (
        by_upload.hits[0].anilist_id, by_upload.hits[0].similarity,
    )  # fmt: skip


async def test_anilist_info_falls_back_to_the_id_where_the_table_lacks_it() -> None:
    """§3.1 ``anilist`` (verified): with ``anilistInfo`` an item gets the stored AniList record, or the
    bare int when the server's own table lacks the ID, so one body can mix both; the parser reads the
    ID either way."""
    known = SCENES[0]
    unknown = IndexedScene(
        77, 99_999_999, "Unknown - 01.mp4", 1, 1, 1, 10.0, 11.0, 12.0, 1300.0, known.vector
    )
    async with client_for(create_app(index=[known, unknown])) as client:
        answer = await client.post("/search?anilistInfo", content=_solid((90, 90, 90)), headers=JPEG)
    kinds = {type(item["anilist"]).__name__ for item in answer.json()["result"]}
    assert kinds == {"dict", "int"}
    assert {hit.anilist_id for hit in provider().parse_search(answer).hits} == {known.anilist_id, 99_999_999}


async def test_cut_borders_without_a_16_9_or_4_3_box_searches_the_whole_image(
    client: httpx.AsyncClient, samples: Path
) -> None:
    """§2.3 ``cutBorders`` (verified on ``border-bad.jpg``): when the trim finds no box close to 16:9 or
    4:3, the box is dropped without an error and the uncropped picture is searched."""
    data = (samples / "border-bad.jpg").read_bytes()
    plain = await client.post("/search", content=data, headers=JPEG)
    trimmed = await client.post("/search?cutBorders", content=data, headers=JPEG)
    assert trimmed.status_code == 200
    assert [item["similarity"] for item in trimmed.json()["result"]] == [
        item["similarity"] for item in plain.json()["result"]
    ]

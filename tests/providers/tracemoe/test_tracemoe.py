"""The tracemoe provider: settings, request building, answer shapes, the error table, quota facts."""

from __future__ import annotations

import base64
import email.policy
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.parser import BytesParser
from importlib.metadata import version
from typing import Any

import httpx
import pytest
import respx
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.properties import examples

import anisearch_providers.tracemoe as tracemoe_module
from anisearch._exceptions import (
    AuthenticationError,
    BadRequestError,
    ConcurrencyLimitError,
    ConfigurationError,
    ImageFetchError,
    ImageTooLargeError,
    InvalidImageError,
    ProviderBusyError,
    ProviderError,
    ProviderServerError,
    QuotaExhaustedError,
    RateLimitedError,
    UpstreamResponseError,
)
from anisearch._image import PreparedImage
from anisearch._provider import Provider, ProviderContext, SearchOptions, SearchQuery, load_provider
from anisearch_providers.tracemoe import DEFAULT_URL, TraceMoe

NOW = datetime(2026, 8, 21, 12, 34, 56, tzinfo=UTC)
DATE = "Fri, 21 Aug 2026 12:34:56 GMT"
KEY = "tr4ce-s3cret-key"
JPEG = PreparedImage(
    data=b"\xff\xd8\xff\xe0 a tiny jpeg \xff\xd9",
    mime_type="image/jpeg",
    width=64,
    height=36,
    digest="0" * 64,
)
VECTOR = tuple(range(30, 63))


def tracemoe(key: str | None = None, base_url: str = DEFAULT_URL) -> TraceMoe:
    return TraceMoe(base_url, key, clock=lambda: NOW)


def answer(
    status: int,
    body: Any = None,
    *,
    text: str | None = None,
    headers: dict[str, str] | None = None,
    request: httpx.Request | None = None,
) -> httpx.Response:
    """An answer as trace.moe sends it: JSON, or Express's text/html pages."""
    request = request or httpx.Request("GET", "https://api.trace.moe/search?url=x")
    if text is not None:
        return httpx.Response(
            status,
            text=text,
            headers={"content-type": "text/html; charset=utf-8", **(headers or {})},
            request=request,
        )
    return httpx.Response(status, json=body, headers=headers, request=request)


def express_page(text: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>Error</title>\n</head>\n'
        f"<body>\n<pre>{text}</pre>\n</body>\n</html>\n"
    )


def item(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "anilist": 99088,
        "filename": "Pluto.S01E06.mp4",
        "episode": 6,
        "episode_start": 6,
        "episode_end": 6,
        "from": 1776.191,
        "at": 1776.191,
        "to": 1777.3589,
        "duration": 3602.72,
        "similarity": 0.6461,
        "video": "https://api.trace.moe/video/IhFJYbQ7qlJ0nXhUPMSFdY9L",
        "image": "https://api.trace.moe/image/IhFJYbQ7qlJ0nXhUPMSFdY9L",
    }
    return base | fields


CF_RAY = {"cf-ray": "8f0a1b2c3d4e5f60-NRT", "server": "cloudflare"}
CLOUDFLARE_PAGE = (
    '<!DOCTYPE html><html lang="en-US"><head><title>Just a moment...</title></head>'
    "<body><div>Enable JavaScript and cookies to continue</div></body></html>"
)


def search_body(*items: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"frameCount": 1520187104, "error": "", "result": list(items)} | top


def form_parts(request: httpx.Request) -> dict[str, EmailMessage]:
    """The parts of a multipart body, by field name (parsed with the standard library's MIME parser)."""
    head = f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode()
    message = BytesParser(policy=email.policy.HTTP).parsebytes(head + request.read())
    assert isinstance(message, EmailMessage)
    parts = {}
    for part in message.iter_parts():
        assert isinstance(part, EmailMessage)
        parts[str(part.get_param("name", header="content-disposition"))] = part
    return parts


# ---------------------------------------------------------------- the provider and its settings


def test_is_the_registered_provider() -> None:
    assert load_provider("tracemoe") is TraceMoe
    provider: Provider = tracemoe()
    assert provider.name == "tracemoe"
    assert provider.default_order is True
    assert provider.capabilities.names() == [
        "anilist_filter",
        "anilist_info",
        "cut_borders",
        "quota",
        "upload",
        "vector",
    ]
    assert (provider.limits.max_bytes, provider.limits.max_width, provider.limits.max_height) == (
        25 * 1024 * 1024,
        320,
        320,
    )
    assert provider.auth() is None


def test_settings_default_to_the_public_api_as_a_guest() -> None:
    provider = TraceMoe.from_context(ProviderContext())
    assert provider.base_url == "https://api.trace.moe"
    assert provider.credential.scope == "guest"
    assert provider.credential.secret is None
    assert "x-trace-key" not in provider.quota_request().headers


def test_settings_url_and_key() -> None:
    provider = TraceMoe.from_context(ProviderContext(config={"url": "http://127.0.0.1:8123/", "key": KEY}))
    assert provider.base_url == "http://127.0.0.1:8123"
    assert provider.quota_request().url == "http://127.0.0.1:8123/me"
    assert provider.credential.scope == "api-key"
    assert provider.credential.secret == KEY
    assert KEY not in repr(provider)


@pytest.mark.parametrize(
    "url", ["ftp://api.trace.moe", "api.trace.moe", "file:///etc/passwd", "https://", "http://h/?a=1"]
)
def test_settings_refuse_a_url_that_is_not_http(url: str) -> None:
    with pytest.raises(ConfigurationError, match="http"):
        TraceMoe.from_context(ProviderContext(config={"url": url}))


def test_settings_name_unknown_keys() -> None:
    with pytest.raises(ConfigurationError, match=r"unknown tracemoe setting.*token.*known: key, url"):
        TraceMoe.from_context(ProviderContext(config={"url": DEFAULT_URL, "token": "x"}))


def test_settings_of_the_wrong_type_never_echo_the_value() -> None:
    with pytest.raises(ConfigurationError, match="key") as caught:
        TraceMoe.from_context(ProviderContext(config={"key": 987654321}))
    assert "987654321" not in str(caught.value)


def test_a_blank_key_searches_as_a_guest() -> None:
    assert TraceMoe.from_context(ProviderContext(config={"key": "  "})).credential.scope == "guest"


def test_assumed_quotas_for_a_guest() -> None:
    daily, minute = tracemoe().assumed_quotas()
    assert (daily.window, daily.limit, daily.concurrency, daily.scope, daily.source) == (
        "rolling-24h",
        100,
        1,
        "guest",
        "ledger",
    )
    assert (minute.window, minute.limit, minute.source) == ("minute", 100, "ledger")


def test_assumed_quotas_for_a_key_leave_the_tier_unknown() -> None:
    daily, minute = tracemoe(KEY).assumed_quotas()
    assert (daily.window, daily.limit, daily.used, daily.remaining, daily.concurrency, daily.scope) == (
        "rolling-24h",
        None,
        None,
        None,
        1,
        "api-key",
    )
    assert (minute.window, minute.limit) == ("minute", 100)


# ---------------------------------------------------------------- requests


def test_upload_is_multipart_field_image() -> None:
    request = tracemoe().search_request(SearchQuery(image=JPEG))
    assert request.method == "POST"
    assert request.url == "https://api.trace.moe/search"
    parts = form_parts(request)
    assert list(parts) == ["image"]
    part = parts["image"]
    assert part.get_filename() == "image.jpg"
    assert part.get_content_type() == "image/jpeg"
    assert part.get_payload(decode=True) == JPEG.data


def test_upload_keeps_the_prepared_mime_type() -> None:
    png = PreparedImage(
        data=b"\x89PNG\r\n\x1a\n...", mime_type="image/png", width=1, height=1, digest="1" * 64
    )
    part = form_parts(tracemoe().search_request(SearchQuery(image=png)))["image"]
    assert (part.get_filename(), part.get_content_type()) == ("image.png", "image/png")


def test_every_request_says_who_it_is_and_wants_json() -> None:
    for request in (tracemoe().search_request(SearchQuery(image=JPEG)), tracemoe().quota_request()):
        assert request.headers["accept"] == "application/json"
        assert request.headers["user-agent"].startswith(f"anisearch/{version('anisearch-gateway')}")


def test_url_mode_percent_encodes_the_image_url() -> None:
    image_url = "https://cdn.example/img.php?id=7&size=large&sig=a/b?c"
    request = tracemoe().url_search_request(image_url)
    assert request.method == "GET"
    assert request.url.params["url"] == image_url
    assert list(request.url.params) == ["url"]
    assert "url=https%3A%2F%2Fcdn.example%2Fimg.php%3Fid%3D7%26size%3Dlarge%26sig%3Da%2Fb%3Fc" in str(
        request.url
    )


def test_url_mode_round_trip_through_a_server() -> None:
    image_url = "https://cdn.example/a.jpg?x=1&y=2"
    with respx.mock(assert_all_called=True) as mock:
        route = mock.get("https://api.trace.moe/search", params={"url": image_url}).mock(
            return_value=httpx.Response(200, json=search_body(item()), headers={"date": DATE})
        )
        with httpx.Client() as client:
            response = client.send(tracemoe().url_search_request(image_url))
    assert route.call_count == 1
    assert tracemoe().parse_search(response).hits[0].anilist_id == 99088


@pytest.mark.parametrize("url", ["ftp://example.com/a.jpg", "/local/file.jpg", "not a url"])
def test_url_mode_refuses_what_trace_moe_cannot_fetch(url: str) -> None:
    with pytest.raises(ConfigurationError):
        tracemoe().url_search_request(url)


def test_flags_are_sent_only_when_on_and_as_presence() -> None:
    options = SearchOptions(anilist_id=11887, cut_borders=True, anilist_info=True)
    request = tracemoe().search_request(SearchQuery(image=JPEG, options=options))
    params = request.url.params
    assert params["anilistID"] == "11887"
    assert params["cutBorders"] == ""
    assert params["anilistInfo"] == ""
    off = tracemoe().search_request(SearchQuery(image=JPEG, options=SearchOptions()))
    assert not off.url.query
    for name in ("cutBorders", "anilistInfo"):
        assert name not in str(off.url)


@pytest.mark.parametrize("anilist_id", [-1, True])
def test_a_bad_anilist_id_is_refused(anilist_id: Any) -> None:
    with pytest.raises(ConfigurationError, match="anilist_id"):
        tracemoe().search_request(SearchQuery(image=JPEG, options=SearchOptions(anilist_id=anilist_id)))


@pytest.mark.parametrize(
    "build",
    [
        lambda provider: provider.search_request(SearchQuery(image=JPEG)),
        lambda provider: provider.url_search_request("https://cdn.example/a.jpg"),
        lambda provider: provider.vector_search_request(VECTOR),
    ],
    ids=["upload", "url", "vector"],
)
def test_the_key_travels_only_in_its_header(build: Callable[[TraceMoe], httpx.Request]) -> None:
    request = build(tracemoe(KEY))
    assert request.headers["x-trace-key"] == KEY
    assert "key" not in request.url.params
    assert KEY not in str(request.url)
    guest = build(tracemoe())
    assert "x-trace-key" not in guest.headers


def test_vector_mode_posts_33_bytes_as_base64_json() -> None:
    request = tracemoe().vector_search_request(VECTOR, SearchOptions(cut_borders=True, anilist_info=True))
    assert request.method == "POST"
    assert request.headers["content-type"] == "application/json"
    body = json.loads(request.read())
    assert list(body) == ["vector"]
    assert tuple(base64.b64decode(body["vector"])) == VECTOR
    assert "anilistInfo" in request.url.params
    assert "cutBorders" not in request.url.params  # the server cannot crop a descriptor


@pytest.mark.parametrize("vector", [(1,) * 32, (1,) * 34, (256,) + (0,) * 32, (-1,) + (0,) * 32])
def test_vector_mode_refuses_what_is_not_33_bytes(vector: tuple[int, ...]) -> None:
    with pytest.raises(ConfigurationError, match="33"):
        tracemoe().vector_search_request(vector)


def test_an_empty_image_is_refused_before_sending() -> None:
    empty = PreparedImage(data=b"", mime_type="image/jpeg", width=0, height=0, digest="e" * 64)
    with pytest.raises(InvalidImageError, match="empty"):
        tracemoe().search_request(SearchQuery(image=empty))


def test_an_image_over_25_mib_is_refused_before_sending() -> None:
    big = PreparedImage(
        data=b"\0" * (25 * 1024 * 1024 + 1), mime_type="image/jpeg", width=1, height=1, digest="b" * 64
    )
    with pytest.raises(ImageTooLargeError) as caught:
        tracemoe().search_request(SearchQuery(image=big))
    assert caught.value.provider is None
    assert (caught.value.size_bytes, caught.value.limit_bytes) == (25 * 1024 * 1024 + 1, 25 * 1024 * 1024)


def test_batch_request_and_answers() -> None:
    request = tracemoe().search_batch_request([VECTOR, tuple(reversed(VECTOR))])
    vectors = json.loads(request.read())["vector"]
    assert [tuple(base64.b64decode(text)) for text in vectors] == [VECTOR, tuple(reversed(VECTOR))]
    body = {
        "quota": 100,
        "quotaUsed": 10,
        "frameCount": 5,
        "error": "",
        "result": [[item(similarity=0.5), item(similarity=0.9)], []],
    }
    first, second = tracemoe().parse_search_batch(answer(200, body))
    assert [hit.similarity for hit in first.hits] == [0.9, 0.5]
    assert second.hits == []
    assert first.quota is not None
    assert (first.quota.used, first.quota.remaining) == (12, 88)  # two vectors, two searches
    with pytest.raises(UpstreamResponseError, match="parse_search_batch"):
        tracemoe().parse_search(answer(200, body))
    with pytest.raises(UpstreamResponseError, match="one result list per vector"):
        tracemoe().parse_search_batch(answer(200, search_body(item())))


def test_a_batch_answered_by_an_anilist_id_without_files_is_an_empty_answer_per_vector() -> None:
    """An anilistID with no indexed files answers a batch with one flat ``result: []`` (contract §2.3)."""
    request = tracemoe().search_batch_request([VECTOR, VECTOR, VECTOR], SearchOptions(anilist_id=999999))
    answers = tracemoe().parse_search_batch(
        answer(200, {"frameCount": 0, "error": "", "result": []}, request=request)
    )
    assert [(a.hits, a.frames_searched, a.quota) for a in answers] == [([], 0, None)] * 3


@pytest.mark.parametrize("count", [0, 11])
def test_batch_holds_one_to_ten_vectors(count: int) -> None:
    with pytest.raises(ConfigurationError, match="1 to 10"):
        tracemoe().search_batch_request([VECTOR] * count)


def test_quota_and_usage_requests() -> None:
    with respx.mock(assert_all_called=True) as mock:
        me = mock.get("https://api.trace.moe/me", headers={"x-trace-key": KEY}).mock(
            return_value=httpx.Response(
                200,
                json={
                    "id": "someone@example.com",
                    "priority": 5,
                    "concurrency": 2,
                    "quota": 20000,
                    "quotaUsed": 42,
                },
            )
        )
        with httpx.Client() as client:
            response = client.send(tracemoe(KEY).quota_request())
    assert me.call_count == 1
    (quota,) = tracemoe(KEY).parse_quota(response)
    assert (quota.limit, quota.used, quota.remaining, quota.concurrency, quota.priority) == (
        20000,
        42,
        19958,
        2,
        5,
    )
    assert (quota.scope, quota.window, quota.source) == ("api-key", "rolling-24h", "upstream")
    assert "someone@example.com" not in quota.model_dump_json()

    usage = tracemoe().usage_request("hour")
    assert (usage.method, usage.url.path, usage.url.params["period"]) == ("GET", "/me", "hour")
    with pytest.raises(ConfigurationError, match="period"):
        tracemoe().usage_request("week")


# ---------------------------------------------------------------- answers


def test_current_answer_with_quota_counts_this_search() -> None:
    body = search_body(item(), quota=100, quotaUsed=3)
    result = tracemoe().parse_search(answer(200, body, headers={"date": DATE}))
    assert result.quota is not None
    assert (result.quota.limit, result.quota.used, result.quota.remaining) == (100, 4, 96)
    assert (result.quota.window, result.quota.scope, result.quota.source) == (
        "rolling-24h",
        "guest",
        "upstream",
    )
    (hit,) = result.hits
    assert (hit.episode, hit.episode_start, hit.episode_end) == (6, 6, 6)
    assert (hit.start_seconds, hit.at_seconds, hit.end_seconds) == (1776.191, 1776.191, 1777.3589)
    assert hit.episode_duration_seconds == 3602.72
    assert hit.preview_expires_at == datetime(2026, 8, 21, 13, 5, tzinfo=UTC)
    assert hit.raw == body["result"][0]


def test_quota_used_sent_as_text_is_coerced() -> None:
    result = tracemoe().parse_search(answer(200, search_body(item(), quota="100", quotaUsed="99")))
    assert result.quota is not None
    assert (result.quota.limit, result.quota.used, result.quota.remaining) == (100, 100, 0)


def test_a_preview_issued_on_the_hour_lasts_until_the_next_one() -> None:
    result = tracemoe().parse_search(
        answer(200, search_body(item()), headers={"date": "Fri, 21 Aug 2026 12:00:00 GMT"})
    )
    assert result.hits[0].preview_expires_at == datetime(2026, 8, 21, 13, 5, tzinfo=UTC)


def test_anilist_id_with_no_files_answers_empty_without_quota() -> None:
    result = tracemoe().parse_search(answer(200, {"frameCount": 0, "error": "", "result": []}))
    assert (result.hits, result.frames_searched, result.quota) == ([], 0, None)


def test_anilist_shapes() -> None:
    full = {
        "id": 21,
        "idMal": 21,
        "title": {"native": "ONE PIECE", "romaji": "ONE PIECE", "english": "ONE PIECE", "chinese": "海贼王"},
        "synonyms": ["OP", 7, None],
        "synonyms_chinese": ["航海王"],
        "isAdult": False,
        "genres": ["Action"],
    }
    body = search_body(
        item(anilist=full, similarity=0.99),
        item(anilist=5114, similarity=0.98),  # V2+: not in the local table, the int stays
        {k: v for k, v in item(similarity=0.97).items() if k != "anilist"},  # V1 bug #457: no key at all
        item(
            anilist={"id": "849", "idMal": None, "title": {"romaji": "Suzumiya"}, "isAdult": True},
            similarity=0.96,
        ),
    )
    one_piece, bare, missing, haruhi = tracemoe().parse_search(answer(200, body)).hits
    assert (one_piece.anilist_id, one_piece.mal_id, one_piece.is_adult) == (21, 21, False)
    assert one_piece.title is not None
    assert one_piece.title.chinese == "海贼王"
    assert one_piece.synonyms == ["OP"]
    assert one_piece.raw["anilist"]["genres"] == ["Action"]
    assert (bare.anilist_id, bare.title, bare.mal_id) == (5114, None, None)
    assert (missing.anilist_id, missing.title) == (None, None)
    assert (haruhi.anilist_id, haruhi.mal_id, haruhi.is_adult) == (849, None, True)
    assert haruhi.title is not None
    assert haruhi.title.preferred() == "Suzumiya"


@pytest.mark.parametrize(
    ("episode", "expected"),
    [
        (5, 5),
        (16.5, 16.5),
        ("5|17", "5|17"),
        ("06,07|226,227", "06,07|226,227"),
        ([1, 2], [1, 2]),
        (None, None),
        ({"weird": 1}, None),
        (True, None),
    ],
)
def test_episode_is_kept_as_upstream(episode: Any, expected: Any) -> None:
    (hit,) = tracemoe().parse_search(answer(200, search_body(item(episode=episode)))).hits
    assert hit.episode == expected
    assert type(hit.episode) is type(expected)
    assert hit.raw["episode"] == episode


def test_similarity_is_clamped_and_hits_sorted() -> None:
    body = search_body(
        item(similarity=0.2), item(similarity=1.0000001), item(similarity=-0.1), item(similarity="0.5")
    )
    hits = tracemoe().parse_search(answer(200, body)).hits
    assert [hit.similarity for hit in hits] == [1.0, 0.5, 0.2, 0.0]


def test_a_server_answering_in_percent_is_read_as_percent_and_said_once_per_address(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A self-hosted server answering ``"similarity": 96.9`` made every hit a 100 % match, silently. Once it
    answered above 1, its answers all within 0..1 (a poor match: 0.9 %) are read in percent too, and a
    vector batch is read on one scale."""
    monkeypatch.setattr(tracemoe_module, "_IN_PERCENT", set())
    body = search_body(item(similarity=40.1), item(similarity=96.9), item(similarity=0.5))
    selfhosted = tracemoe(base_url="https://user:secret@trace.home.test")
    with caplog.at_level(logging.WARNING, logger="anisearch"):
        first = selfhosted.parse_search(answer(200, body)).hits
        again = selfhosted.parse_search(answer(200, body)).hits
        poor = selfhosted.parse_search(answer(200, search_body(item(similarity=0.9)))).hits
        batch = tracemoe(base_url="https://batch.test").parse_search_batch(
            answer(
                200,
                {"frameCount": 1, "error": "", "result": [[item(similarity=92.5)], [item(similarity=0.95)]]},
            )
        )
        other = tracemoe(base_url="https://other.test").parse_search(
            answer(200, search_body(item(similarity=88)))
        )
        plain = tracemoe(base_url="https://plain.test").parse_search(
            answer(200, search_body(item(similarity=1.0000001), item(similarity=0.9)))
        )
    assert [hit.similarity for hit in first] == [0.969, 0.401, 0.005]
    assert [hit.similarity for hit in again] == [0.969, 0.401, 0.005]
    assert [hit.similarity for hit in poor] == [0.009]
    assert [[hit.similarity for hit in one.hits] for one in batch] == [[0.925], [0.0095]]
    assert first[0].raw["similarity"] == 96.9  # as the server sent it
    assert [hit.similarity for hit in other.hits] == [0.88]
    assert [hit.similarity for hit in plain.hits] == [1.0, 0.9]  # a rounding stray is no percentage
    said = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    read = "above 1: its similarities are read as percentages (divided by 100)"
    assert said == [
        f"tracemoe at https://***@trace.home.test answered a similarity of 96.9, {read}",
        f"tracemoe at https://batch.test answered a similarity of 92.5, {read}",
        f"tracemoe at https://other.test answered a similarity of 88.0, {read}",
    ]
    assert "secret" not in caplog.text


@pytest.mark.parametrize(
    "response",
    [
        answer(200, text="<html>maintenance</html>"),
        httpx.Response(200, content=b'{"frameCount":1,"error":"","result":[{"similarity":NaN}]}'),
        answer(200, ["not", "an", "object"]),
        answer(200, {"frameCount": 1, "error": ""}),
        answer(200, {"frameCount": 1, "error": "", "result": {"0": item()}}),
        answer(200, {"frameCount": 1, "error": "", "result": ["not an item"]}),
        answer(200, search_body(item(similarity="high"))),
        answer(200, search_body({k: v for k, v in item().items() if k != "similarity"})),
        answer(200, {"frameCount": 1, "error": "something odd", "result": []}),
        answer(204, None),
        answer(302, None, headers={"location": "https://trace.moe/"}),
    ],
    ids=[
        "html",
        "nan",
        "array",
        "no-result",
        "result-object",
        "item-string",
        "similarity-text",
        "no-similarity",
        "error-on-200",
        "204",
        "302",
    ],
)
def test_answers_of_the_wrong_shape_are_upstream_errors(response: httpx.Response) -> None:
    with pytest.raises(UpstreamResponseError) as caught:
        tracemoe().parse_search(response)
    assert caught.value.provider == "tracemoe"
    assert caught.value.status_code == response.status_code


# ---------------------------------------------------------------- the error table

UPLOAD = httpx.Request(
    "POST", "https://api.trace.moe/search", files={"image": ("image.jpg", b"x", "image/jpeg")}
)
BIG_UPLOAD = httpx.Request(  # a multipart body just over 25 MiB (its bytes are not needed to classify)
    "POST",
    "https://api.trace.moe/search",
    headers={"content-type": "multipart/form-data; boundary=b", "content-length": str(26_214_400 + 300)},
)
ERROR_ROWS: list[tuple[str, httpx.Response, type[ProviderError]]] = [
    (
        "quota-2026-07",
        answer(
            402,
            {
                "quota": 100,
                "quotaUsed": 100,
                "error": "Search quota depleted (quota per 24 hours: 100, used: 100)",
            },
        ),
        QuotaExhaustedError,
    ),
    (
        "quota-2026-02",
        answer(402, {"error": "Search quota depleted (quota per 24 hours: 100, used: 103)"}),
        QuotaExhaustedError,
    ),
    ("quota-v1", answer(402, {"error": "Search quota depleted"}), QuotaExhaustedError),
    ("concurrency", answer(402, {"error": "Concurrency limit exceeded"}), ConcurrencyLimitError),
    ("queue-full", answer(503, {"error": "Error: Search queue is full"}), ProviderBusyError),
    ("fetch-threw", answer(400, {"error": "Failed to fetch image http://10.0.0.1/a.jpg"}), ImageFetchError),
    (
        "fetch-404",
        answer(404, {"error": "Failed to fetch image https://cdn.example/gone.jpg"}),
        ImageFetchError,
    ),
    (
        "fetch-503",
        answer(503, {"error": "Failed to fetch image https://cdn.example/busy.jpg"}),
        ImageFetchError,
    ),
    ("invalid-url", answer(400, {"error": "Invalid image url ht!tp://"}), BadRequestError),
    ("undecodable", answer(400, {"error": "Failed to process image"}), BadRequestError),
    (
        "undecodable-v1",
        answer(400, {"error": "Failed to process image. [mjpeg @ 0x55] invalid data"}),
        BadRequestError,
    ),
    ("undecodable-2024", answer(400, {"error": "Failed to process input image."}), BadRequestError),
    ("empty-file", answer(400, {"error": "Failed to process file"}), BadRequestError),
    ("vector-format", answer(400, {"error": "Invalid vector format"}), BadRequestError),
    ("vector-count", answer(400, {"error": "Too many vectors (max 10)"}), BadRequestError),
    ("opencv-v1", answer(400, {"error": "OpenCV: Failed to detect and cut borders"}), BadRequestError),
    ("bad-key", answer(403, {"error": "Invalid API key"}), AuthenticationError),
    ("no-input", answer(405, {"error": "Method Not Allowed"}), BadRequestError),
    ("payload-413", answer(413, text=express_page("Payload Too Large")), ImageTooLargeError),
    (
        "payload-413-dev",
        answer(413, text=express_page("PayloadTooLargeError: request entity too large<br> &nbsp;at")),
        ImageTooLargeError,
    ),
    (
        "multer-500",
        answer(500, text=express_page("Internal Server Error"), request=BIG_UPLOAD),
        ImageTooLargeError,
    ),
    (  # the same page to a small upload: the database is down, or any uncaught failure
        "crash-500-small-upload",
        answer(500, text=express_page("Internal Server Error"), request=UPLOAD),
        ProviderServerError,
    ),
    (
        "multer-500-dev",
        answer(500, text=express_page("MulterError: File too large<br> &nbsp;at")),
        ImageTooLargeError,
    ),
    ("crash-500", answer(500, text=express_page("Internal Server Error")), ProviderServerError),
    (
        "rate-429",
        answer(429, text="Too many requests, please try again later.", headers={"retry-after": "37"}),
        RateLimitedError,
    ),
    (
        "database-head",
        answer(500, {"error": "Search failed. Database temporarily unavailable."}),
        ProviderServerError,
    ),
    ("database-v1", answer(503, {"error": "Error: Database is not responding"}), ProviderServerError),
    ("offline-v1", answer(502, {"error": "Database is offline"}), ProviderServerError),
    ("overloaded-v1", answer(504, {"error": "Database is overloaded"}), ProviderBusyError),
    ("solr-v1", answer(500, {"error": "java.lang.OutOfMemoryError: Java heap space"}), ProviderServerError),
    ("no-route", answer(404, text=express_page("Cannot POST /search")), BadRequestError),
    ("gateway", answer(502, text="<html>Bad gateway</html>"), ProviderServerError),
    ("unauthorized", answer(401, {"error": "Unauthorized"}), AuthenticationError),
    ("cloudflare-challenge", answer(403, text=CLOUDFLARE_PAGE, headers=CF_RAY), ProviderServerError),
    (
        "bad-key-through-cloudflare",
        answer(403, {"error": "Invalid API key"}, headers=CF_RAY),
        AuthenticationError,
    ),
    ("forbidden-page-without-cf-ray", answer(403, text=CLOUDFLARE_PAGE), BadRequestError),
]


@pytest.mark.parametrize(
    ("response", "expected"), [row[1:] for row in ERROR_ROWS], ids=[row[0] for row in ERROR_ROWS]
)
def test_error_table(response: httpx.Response, expected: type[ProviderError]) -> None:
    with pytest.raises(ProviderError) as caught:
        tracemoe().parse_search(response)
    assert type(caught.value) is expected
    assert caught.value.provider == "tracemoe"
    assert caught.value.status_code == response.status_code
    assert "<" not in caught.value.message  # HTML pages are reduced to their text


def test_a_cloudflare_challenge_is_the_sites_cdn_not_a_bad_request() -> None:
    """api.trace.moe is behind Cloudflare: its "Just a moment..." page (HTML 403, cf-ray) was a
    BadRequestError quoting the page, as though this request were wrong; the router now tries the next
    provider, and the message says what happened, as whatanimeisthis's does."""
    with pytest.raises(ProviderServerError) as caught:
        tracemoe().parse_search(answer(403, text=CLOUDFLARE_PAGE, headers=CF_RAY))
    assert caught.value.message == (
        "blocked by the site's CDN (an anti-bot challenge page); try again later or from another network"
    )
    assert caught.value.status_code == 403


def test_quota_depleted_carries_the_numbers() -> None:
    numbers = {}
    for name, response, _ in ERROR_ROWS:
        if name.startswith("quota-"):
            with pytest.raises(QuotaExhaustedError) as caught:
                tracemoe().parse_search(response)
            numbers[name] = (caught.value.limit, caught.value.used)
    assert numbers == {"quota-2026-07": (100, 100), "quota-2026-02": (100, 103), "quota-v1": (None, None)}


def test_image_fetch_failures_keep_the_mirrored_status() -> None:
    rows = {name: response for name, response, _ in ERROR_ROWS}
    for name, status in (("fetch-threw", 400), ("fetch-404", 404), ("fetch-503", 503)):
        with pytest.raises(ImageFetchError) as caught:
            tracemoe().parse_search(rows[name])
        assert caught.value.status_code == status
        assert caught.value.message.startswith("Failed to fetch image ")


def test_too_large_reports_the_limit() -> None:
    with pytest.raises(ImageTooLargeError) as caught:
        tracemoe().parse_search(answer(413, text=express_page("Payload Too Large")))
    assert caught.value.provider == "tracemoe"
    assert caught.value.limit_bytes == 25 * 1024 * 1024


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "37", "ratelimit-reset": "12"}, 37.0),
        ({"retry-after": "Fri, 21 Aug 2026 12:35:26 GMT"}, 30.0),
        ({"ratelimit-reset": "12"}, 12.0),
        ({"x-ratelimit-reset": str(int(NOW.timestamp()) + 20)}, 20.0),
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
)
def test_rate_limited_says_how_long_to_wait(headers: dict[str, str], expected: float | None) -> None:
    with pytest.raises(RateLimitedError) as caught:
        tracemoe().parse_search(
            answer(429, text="Too many requests, please try again later.", headers=headers)
        )
    assert caught.value.retry_after == expected


def test_busy_and_concurrency_are_retryable_not_quota() -> None:
    """402 and 503 each mean two things: the message decides, not the status."""
    for body, status, expected in (
        ({"error": "Concurrency limit exceeded"}, 402, ConcurrencyLimitError),
        ({"error": "Search quota depleted"}, 402, QuotaExhaustedError),
        ({"error": "Error: Search queue is full"}, 503, ProviderBusyError),
        ({"error": "Failed to fetch image https://a.b/c.jpg"}, 503, ImageFetchError),
    ):
        with pytest.raises(expected):
            tracemoe().parse_search(answer(status, body))


# ---------------------------------------------------------------- /me


def test_me_with_text_numbers_and_no_id_in_raw() -> None:
    body = {"id": "2001:db8:1:2::/64", "priority": "0", "concurrency": "1", "quota": "100", "quotaUsed": "18"}
    (quota,) = tracemoe().parse_quota(answer(200, body))
    assert (quota.limit, quota.used, quota.remaining, quota.concurrency, quota.priority) == (
        100,
        18,
        82,
        1,
        0,
    )
    assert quota.raw == {"priority": "0", "concurrency": "1", "quota": "100", "quotaUsed": "18"}
    assert "2001:db8" not in quota.model_dump_json()


def test_me_of_a_guest_who_never_searched_on_old_servers_is_unknown_not_zero() -> None:
    body = {"id": "203.0.113.7", "priority": 0, "concurrency": 0, "quota": 0, "quotaUsed": 0}
    (quota,) = tracemoe().parse_quota(answer(200, body))
    assert (quota.limit, quota.used, quota.remaining, quota.concurrency) == (None, 0, None, None)


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (answer(403, {"error": "Invalid API key"}), AuthenticationError),
        (answer(200, ["not", "me"]), UpstreamResponseError),
        (answer(200, {"id": "x", "priority": 0}), UpstreamResponseError),
        (answer(200, text="<html></html>"), UpstreamResponseError),
        (
            answer(429, text="Too many requests, please try again later.", headers={"retry-after": "5"}),
            RateLimitedError,
        ),
    ],
)
def test_me_errors(response: httpx.Response, expected: type[ProviderError]) -> None:
    with pytest.raises(expected):
        tracemoe().parse_quota(response)


def test_usage_buckets() -> None:
    body = [
        {
            "time": "2026-08-21T12:00:00.000Z",
            "200": 24,
            "400": 1,
            "402": 0,
            "405": 0,
            "500": 0,
            "503": 0,
            "total": 25,
        }
    ]
    (bucket,) = tracemoe().parse_usage(answer(200, body))
    assert bucket.time == datetime(2026, 8, 21, 12, tzinfo=UTC)
    assert bucket.total == 25
    assert bucket.statuses[200] == 24
    assert bucket.statuses[400] == 1
    with pytest.raises(BadRequestError, match="Invalid period"):
        tracemoe().parse_usage(answer(400, {"error": "Invalid period"}))
    with pytest.raises(UpstreamResponseError):
        tracemoe().parse_usage(answer(200, {"not": "a list"}))


# ---------------------------------------------------------------- observe


def test_observe_draft_headers_reset_relative_to_date() -> None:
    response = answer(
        200,
        search_body(),
        headers={
            "date": DATE,
            "ratelimit-limit": "100",
            "ratelimit-remaining": "7",
            "ratelimit-reset": "42",
            "ratelimit-policy": "100;w=60",
        },
    )
    (rate,) = tracemoe().observe(response)
    assert (rate.window, rate.limit, rate.used, rate.remaining, rate.source) == (
        "minute",
        100,
        93,
        7,
        "headers",
    )
    assert rate.resets_at == datetime(2026, 8, 21, 12, 35, 38, tzinfo=UTC)
    assert rate.cooldown_until is None


def test_observe_429_sets_a_cooldown() -> None:
    response = answer(
        429,
        text="Too many requests, please try again later.",
        headers={"retry-after": "30", "x-ratelimit-limit": "100", "x-ratelimit-remaining": "0"},
    )
    (rate,) = tracemoe().observe(response)
    assert rate.cooldown_until == NOW + timedelta(seconds=30)
    assert (rate.window, rate.remaining) == ("minute", 0)


def test_observe_429_without_headers_cools_down_one_window() -> None:
    (rate,) = tracemoe().observe(answer(429, text="Too many requests, please try again later."))
    assert rate.cooldown_until == NOW + timedelta(seconds=60)


def test_observe_spent_quota() -> None:
    head = answer(
        402,
        {
            "quota": 100,
            "quotaUsed": 100,
            "error": "Search quota depleted (quota per 24 hours: 100, used: 100)",
        },
    )
    (quota,) = tracemoe(KEY).observe(head)
    assert (quota.window, quota.limit, quota.used, quota.remaining, quota.scope, quota.source) == (
        "rolling-24h",
        100,
        100,
        0,
        "api-key",
        "upstream",
    )
    (old,) = tracemoe().observe(answer(402, {"error": "Search quota depleted"}))
    assert (old.window, old.limit, old.remaining) == ("month", None, 0)  # 2021-2026 servers counted per month
    assert tracemoe().observe(answer(402, {"error": "Concurrency limit exceeded"})) == []


def test_observe_a_streamed_answer_that_was_never_read() -> None:
    response = httpx.Response(402, stream=httpx.ByteStream(b'{"error":"Search quota depleted"}'))
    assert tracemoe().observe(response) == []


_HEADER_NAMES = st.sampled_from(
    [
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
        "ratelimit-limit",
        "ratelimit-remaining",
        "ratelimit-reset",
        "ratelimit-policy",
        "retry-after",
        "date",
    ]
)
_HEADER_VALUES = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
    st.integers(min_value=-(10**20), max_value=10**20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
)


@settings(max_examples=examples(150), deadline=None)
@given(
    status=st.sampled_from([200, 402, 403, 429, 500, 503]),
    headers=st.dictionaries(_HEADER_NAMES, _HEADER_VALUES, max_size=9),
    body=st.one_of(
        st.binary(max_size=60), st.just(b'{"error":"Search quota depleted (quota per 24 hours: 9')
    ),
)
def test_observe_never_raises(status: int, headers: dict[str, str], body: bytes) -> None:
    quotas = tracemoe().observe(httpx.Response(status, headers=headers, content=body))
    assert all(quota.provider == "tracemoe" for quota in quotas)


# ---------------------------------------------------------------- loose values


def test_numbers_arrive_as_text_or_floats() -> None:
    body = search_body(
        item(episode_start=6.0, episode_end=6.5, duration="1668.2666", at=[], to=None), frameCount="12403339"
    )
    result = tracemoe().parse_search(answer(200, body))
    (hit,) = result.hits
    assert (hit.episode_start, hit.episode_end) == (6, None)
    assert hit.episode_duration_seconds == 1668.2666
    assert (hit.at_seconds, hit.end_seconds) == (None, None)
    assert result.frames_searched == 12403339


def test_an_unreadable_preview_url_has_no_expiry() -> None:
    body = search_body(item(video="http://[::1", image="http://[::1"))
    (hit,) = tracemoe().parse_search(answer(200, body, headers={"date": DATE})).hits
    assert hit.video_url == "http://[::1"
    assert hit.preview_expires_at is None


def test_a_date_without_zone_is_utc() -> None:
    response = answer(200, search_body(item()), headers={"date": "Fri, 21 Aug 2026 12:10:00 -0000"})
    assert tracemoe().parse_search(response).hits[0].preview_expires_at == datetime(
        2026, 8, 21, 13, 5, tzinfo=UTC
    )


@pytest.mark.parametrize("url", ["http://[::1", "http://a:b:c"])
def test_urls_that_do_not_parse(url: str) -> None:
    with pytest.raises(ConfigurationError, match="not a URL"):
        TraceMoe(url)
    with pytest.raises(ConfigurationError, match="not an image URL"):
        tracemoe().url_search_request(url)


def test_errors_in_other_wrappings() -> None:
    """A JSON string body (as the legacy API sent), plain text, and an answer without its request."""
    with pytest.raises(ImageFetchError):
        tracemoe().parse_search(answer(400, "Failed to fetch image https://a.b/c.jpg"))
    with pytest.raises(QuotaExhaustedError) as caught:
        tracemoe().parse_search(
            httpx.Response(402, text="Search quota depleted (quota per 24 hours: 100, used: 101)")
        )
    assert (caught.value.limit, caught.value.used) == (100, 101)
    with pytest.raises(ProviderServerError):
        tracemoe().parse_search(httpx.Response(500, text=express_page("Internal Server Error")))
    with pytest.raises(BadRequestError, match="ANISEARCH_TRACEMOE_URL"):
        tracemoe().parse_search(answer(404, text=express_page("Cannot GET /search")))


def test_usage_bucket_with_an_unreadable_time() -> None:
    (bucket,) = tracemoe().parse_usage(answer(200, [{"time": "yesterday", "200": "3", "402": 1}]))
    assert bucket.time is None
    assert bucket.statuses == {200: 3, 402: 1}
    assert bucket.total == 4


def test_booleans_empty_titles_and_missing_previews_are_unknown() -> None:
    bare = {k: v for k, v in item(anilist=True, **{"from": False}).items() if k not in {"video", "image"}}
    empty_title = item(anilist={"id": 1, "title": {"romaji": None, "english": "", "native": None}})
    odd, untitled = (
        tracemoe().parse_search(answer(200, search_body(bare, empty_title), headers={"date": DATE})).hits
    )
    assert (odd.anilist_id, odd.start_seconds, odd.video_url, odd.image_url, odd.preview_expires_at) == (
        None,
        None,
        None,
        None,
        None,
    )
    assert (untitled.anilist_id, untitled.title) == (1, None)

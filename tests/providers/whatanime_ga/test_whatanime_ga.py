"""The ``whatanime-ga`` provider (legacy whatanime.ga ``/api``): requests, answers, errors, quota facts."""

from __future__ import annotations

import base64
import json
import os
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import httpx
import pytest
import respx

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
from anisearch._provider import ProviderContext, SearchOptions, SearchQuery, load_provider
from anisearch_providers.whatanime_ga import DEFAULT_MAX_BODY_BYTES, WhatanimeGa

if TYPE_CHECKING:
    from pathlib import Path

BASE = "http://legacy.test"
NOW = datetime(2020, 11, 20, 12, 0, 0, tzinfo=UTC)
JPEG = PreparedImage(
    data=b"\xff\xd8\xff\xe0 a tiny jpg\xfb\xef\xbe\xff\xff\xff\xff\xd9",  # base64 "++++////"
    mime_type="image/jpeg",
    width=64,
    height=36,
    digest="0" * 64,
)
LEGACY_SAMPLE = "legacy-api-search-tinted-good-2020.json"


def provider(**kwargs: Any) -> WhatanimeGa:
    return WhatanimeGa(BASE, clock=lambda: NOW, **kwargs)


def image_of(size: int) -> PreparedImage:
    return PreparedImage(data=os.urandom(size), mime_type="image/jpeg", width=1, height=1, digest="1" * 64)


def answer(
    status: int,
    body: str | bytes,
    headers: dict[str, str] | None = None,
    *,
    request: httpx.Request | None = None,
) -> httpx.Response:
    return httpx.Response(
        status,
        content=body.encode() if isinstance(body, str) else body,
        headers=headers or {},
        request=request or httpx.Request("POST", f"{BASE}/api/search"),
    )


def form_fields(request: httpx.Request) -> dict[str, str]:
    return dict(parse_qsl(request.content.decode("ascii"), keep_blank_values=True))


# ---------------------------------------------------------------- registration and settings


def test_is_the_registered_legacy_provider() -> None:
    cls = load_provider("whatanime-ga")
    assert cls is WhatanimeGa
    assert cls.name == "whatanime-ga"
    assert cls.default_order is False  # shut down upstream in 2021: used only when configured or named
    assert {"upload", "anilist_filter", "quota"} <= set(WhatanimeGa.capabilities.names())


def test_without_a_url_it_builds_but_every_request_names_the_setting() -> None:
    legacy = WhatanimeGa.from_context(ProviderContext(config={}))
    assert legacy.base_url == ""
    with pytest.raises(ConfigurationError, match="ANISEARCH_WHATANIME_GA_URL"):
        legacy.search_request(SearchQuery(image=JPEG))
    with pytest.raises(ConfigurationError, match="ANISEARCH_WHATANIME_GA_URL"):
        legacy.quota_request()


def test_settings_arrive_as_environment_strings() -> None:
    legacy = WhatanimeGa.from_context(
        ProviderContext(
            config={"url": f"{BASE}/", "token": " s3cret ", "body": "json", "max_body_bytes": "10000000"}
        )
    )
    assert legacy.base_url == BASE
    assert legacy.body == "json"
    assert legacy.max_body_bytes == 10_000_000
    assert legacy.credential.scope == "api-key"
    assert legacy.credential.secret == "s3cret"
    assert "s3cret" not in repr(legacy)


def test_defaults_are_a_form_body_and_a_one_megabyte_limit() -> None:
    legacy = WhatanimeGa.from_context(ProviderContext(config={"url": BASE}))
    assert legacy.body == "form"
    assert legacy.max_body_bytes == DEFAULT_MAX_BODY_BYTES == 1_000_000
    assert legacy.credential.scope == "guest"
    assert legacy.limits.formats == frozenset({"image/jpeg"})
    assert legacy.limits.max_bytes < legacy.max_body_bytes * 3 / 4  # the image, before base64


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"url": "ftp://legacy.test"}, "http"),
        ({"url": "http://legacy.test/?x=1"}, "query"),
        ({"url": BASE, "body": "xml"}, "body"),
        ({"url": BASE, "max_body_bytes": "lots"}, "max_body_bytes"),
        ({"url": BASE, "max_body_bytes": 100}, "max_body_bytes"),
        ({"url": BASE, "key": "abc"}, "unknown whatanime-ga setting.*key"),
    ],
)
def test_bad_settings_are_configuration_errors(config: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        WhatanimeGa.from_context(ProviderContext(config=config))


@pytest.mark.parametrize(
    "kwargs",
    [{"body": "xml"}, {"max_body_bytes": 10}, {"base_url": "http://"}, {"base_url": "http://[::1"}],
)
def test_bad_constructor_arguments_are_configuration_errors(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        WhatanimeGa(**{"base_url": BASE, **kwargs})


def test_a_bad_token_setting_never_echoes_its_value() -> None:
    with pytest.raises(ConfigurationError) as caught:
        WhatanimeGa.from_context(ProviderContext(config={"url": BASE, "token": ["hunter2-secret"]}))
    assert "hunter2" not in str(caught.value)
    assert "token" in str(caught.value)


def test_assumed_quotas_are_ten_a_minute_and_150_a_day_for_guests() -> None:
    windows = {(q.window, q.limit, q.scope, q.source) for q in provider().assumed_quotas()}
    assert windows == {("minute", 10, "guest", "ledger"), ("day", 150, "guest", "ledger")}
    tokened = {(q.window, q.limit, q.scope) for q in provider(token="t").assumed_quotas()}
    assert tokened == {("minute", 10, "api-key"), ("day", 1000, "api-key")}


# ---------------------------------------------------------------- requests


def test_upload_is_a_base64_data_url_in_the_form_field_image() -> None:
    request = provider().search_request(SearchQuery(image=JPEG))
    assert request.method == "POST"
    assert request.url == httpx.URL(f"{BASE}/api/search")
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    fields = form_fields(request)
    assert set(fields) == {"image"}
    prefix, encoded = fields["image"].split(",", 1)
    assert prefix == "data:image/jpeg;base64"
    assert base64.b64decode(encoded) == JPEG.data
    assert "+" in base64.b64encode(JPEG.data).decode()
    assert b"+" not in request.content  # a literal + would arrive as a space


def test_json_body_alternative_carries_image_and_filter() -> None:
    request = provider(body="json").search_request(
        SearchQuery(image=JPEG, options=SearchOptions(anilist_id=11887))
    )
    assert request.headers["content-type"] == "application/json"
    payload = json.loads(request.content)
    assert payload["filter"] == 11887
    assert base64.b64decode(payload["image"].removeprefix("data:image/jpeg;base64,")) == JPEG.data


def test_anilist_id_is_sent_as_filter_and_the_token_in_the_query() -> None:
    request = provider(token="tok en").search_request(
        SearchQuery(image=JPEG, options=SearchOptions(anilist_id=849))
    )
    assert form_fields(request)["filter"] == "849"
    assert request.url.params["token"] == "tok en"
    assert b"tok" not in request.content


def test_url_mode_puts_the_image_url_in_the_query() -> None:
    image_url = "https://example.org/a b.jpg?x=1&y=2"
    request = provider().url_search_request(image_url, SearchOptions(anilist_id=5))
    assert request.url.params["url"] == image_url
    assert form_fields(request) == {"filter": "5"}
    bare = provider().url_search_request(image_url)
    assert bare.content == b""


def test_an_empty_image_is_refused_before_sending() -> None:
    with pytest.raises(InvalidImageError):
        provider().search_request(SearchQuery(image=image_of(0)))


@pytest.mark.parametrize("body", ["form", "json"])
def test_an_image_fitted_to_the_limits_makes_a_body_within_the_server_limit(body: str) -> None:
    legacy = provider(body=body)
    # the largest image whose data URL fits the advertised budget
    size = (legacy.limits.max_bytes - len("data:image/jpeg;base64,")) // 4 * 3
    request = legacy.search_request(
        SearchQuery(image=image_of(size), options=SearchOptions(anilist_id=123456))
    )
    assert len(request.content) <= legacy.max_body_bytes


@pytest.mark.parametrize("body", ["form", "json"])
def test_a_body_over_the_limit_is_refused_before_sending(body: str) -> None:
    legacy = provider(body=body, max_body_bytes=8192)
    with pytest.raises(ImageTooLargeError) as caught:
        legacy.search_request(SearchQuery(image=image_of(6200)))
    error = caught.value
    assert error.provider is None  # nothing was sent
    assert error.limit_bytes == 8192
    assert error.size_bytes is not None
    assert error.size_bytes > 8192


# ---------------------------------------------------------------- the real 2020 answer


def test_the_real_2020_body_round_trips_through_a_server(samples: Path) -> None:
    body = (samples / LEGACY_SAMPLE).read_bytes()
    legacy = provider(token="tok")
    with respx.mock(assert_all_called=True) as mock:
        route = mock.post(f"{BASE}/api/search").respond(
            200, content=body, headers={"content-type": "application/json"}
        )
        with httpx.Client() as client:
            response = client.send(legacy.search_request(SearchQuery(image=JPEG)))
    assert route.calls.last.request.url.params["token"] == "tok"
    result = legacy.parse_search(response)

    assert result.frames_searched == 5718114
    assert len(result.hits) == 8
    similarities = [hit.similarity for hit in result.hits]
    assert similarities == sorted(similarities, reverse=True)
    best = result.hits[0]
    assert best.provider == "whatanime-ga"
    assert (best.anilist_id, best.mal_id, best.episode) == (11887, 11887, 5)
    assert (best.start_seconds, best.end_seconds, best.at_seconds) == (1173.83, 1174.67, 1174.5)
    assert best.similarity == pytest.approx(0.9685373563005802)
    assert best.title is not None
    assert best.title.native == "ココロコネクト"
    assert best.title.romaji == best.title.english == "Kokoro Connect"
    assert best.title.chinese == "心連·情結"
    assert best.synonyms == ["Kokoroco"]
    assert best.raw["synonyms_chinese"][0] == "戀愛隨意鏈"
    assert best.is_adult is False
    assert best.filename == "[ANK-Raws&NatsuYuki] Kokoro Connect - 05 (BDrip 1280x720 x264 AAC).mp4"
    assert best.image_url is not None
    assert best.video_url is not None
    image = httpx.URL(best.image_url)
    assert str(image).startswith(f"{BASE}/thumbnail.php?")
    assert dict(image.params) == {
        "anilist_id": "11887",
        "file": best.filename,
        "t": "1174.5",
        "token": "I7RtV-BVFDjvgwgPpUwFKw",
    }
    assert httpx.URL(best.video_url).path == "/preview.php"
    assert result.quota is not None
    assert (result.quota.window, result.quota.remaining) == ("day", 150)
    assert result.quota.resets_at == NOW + timedelta(seconds=86400)
    assert [hit.anilist_id for hit in result.hits[1:3]] == [849, 4382]


def search_body(*docs: dict[str, Any], **extra: Any) -> str:
    return json.dumps({"RawDocsCount": 10, "CacheHit": False, "trial": 1, "docs": list(docs), **extra})


def doc(**fields: Any) -> dict[str, Any]:
    return {
        "from": 1.0,
        "to": 2.0,
        "at": 1.5,
        "anilist_id": 1,
        "filename": "a.mp4",
        "similarity": 0.9,
        **fields,
    }


def test_hits_are_sorted_by_similarity_and_clamped() -> None:
    body = search_body(doc(similarity=0.5), doc(similarity=1.2), doc(similarity=-0.3), doc(similarity=0.8))
    hits = provider().parse_search(answer(200, body)).hits
    assert [hit.similarity for hit in hits] == [1.0, 0.8, 0.5, 0.0]


@pytest.mark.parametrize(
    ("episode", "expected"),
    [
        (5, 5),
        (5.0, 5),
        (12.5, 12.5),
        ("OVA/OAD", "OVA/OAD"),
        ("Special", "Special"),
        ("", None),
        (None, None),
        ({"n": 5}, None),
    ],
)
def test_episode_as_the_server_parsed_it(episode: Any, expected: Any) -> None:
    hit = provider().parse_search(answer(200, search_body(doc(episode=episode)))).hits[0]
    assert hit.episode == expected
    assert type(hit.episode) is type(expected)


def test_raw_docs_count_per_core_is_summed() -> None:
    assert provider().parse_search(answer(200, search_body(RawDocsCount=[3, 4, 5]))).frames_searched == 12


def test_missing_titles_and_previews_stay_none() -> None:
    hit = provider().parse_search(answer(200, search_body(doc(title_romaji="", title_native=None)))).hits[0]
    assert hit.title is None
    assert hit.image_url is None  # no tokenthumb
    assert hit.mal_id is None


@pytest.mark.parametrize(
    "body",
    ["<html>oops</html>", '"a string"', json.dumps({"RawDocsCount": 1}), search_body(doc(similarity="x"))],
)
def test_a_success_that_is_not_a_search_body_is_an_upstream_response_error(body: str) -> None:
    with pytest.raises(UpstreamResponseError):
        provider().parse_search(answer(200, body))


# ---------------------------------------------------------------- errors

SOLR_PIC = "http://192.168.2.11/pic/1549186015.8901.jpg"
PHP_LIMIT = '"Search limit exceeded. Please wait ".$limit_ttl." seconds."'
PHP_QUOTA = '"Search quota exceeded. Please wait ".$quota_ttl." seconds."'
NGINX_413 = (
    "<html>\r\n<head><title>413 Request Entity Too Large</title></head>\r\n<body>\r\n"
    "<center><h1>413 Request Entity Too Large</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)

ERRORS: list[tuple[int, str, dict[str, str], type[ProviderError], float | None]] = [
    # the three 429 forms: plain text (-2019-01), the PHP-quoted literal (2019-02-), a JSON string (docs)
    (429, "Search limit exceeded. Please wait 87 seconds.", {}, RateLimitedError, 87.0),
    (
        429,
        PHP_LIMIT,
        {"Retry-After": "42", "X-whatanime-limit": "-1", "X-whatanime-limit-ttl": "42"},
        RateLimitedError,
        42.0,
    ),
    (429, PHP_LIMIT, {"X-whatanime-limit": "-3", "X-whatanime-limit-ttl": "33"}, RateLimitedError, 33.0),
    (429, '"Search limit exceeded. Please wait 87 seconds."', {}, RateLimitedError, 87.0),
    (429, "Too many requests", {"Retry-After": "7"}, RateLimitedError, 7.0),
    (429, "Search quota exceeded. Please wait 3600 seconds.", {}, QuotaExhaustedError, 3600.0),
    (
        429,
        PHP_QUOTA,
        {"Retry-After": "5000", "X-whatanime-quota": "-1", "X-whatanime-quota-ttl": "5000"},
        QuotaExhaustedError,
        5000.0,
    ),
    (429, PHP_QUOTA, {"X-whatanime-quota-ttl": "61"}, QuotaExhaustedError, 61.0),
    (
        429,
        "Search quota exceeded. Please wait  seconds.",
        {"X-whatanime-expire": "20"},
        QuotaExhaustedError,
        20.0,
    ),
    (400, '"No image received"', {}, BadRequestError, None),
    (400, "No image received", {}, BadRequestError, None),
    (400, '"Image is empty"', {}, BadRequestError, None),
    (400, '"Failed to fetch image https://example.org/a.jpg"', {}, ImageFetchError, None),
    (401, "Missing API token", {}, AuthenticationError, None),
    (403, '"Invalid API token"', {}, AuthenticationError, None),
    (403, "Invalid API token", {}, AuthenticationError, None),
    (500, '"Failed to process image"', {}, ProviderServerError, None),
    (
        500,
        f'"Error reading image from URL: {SOLR_PIC}: {SOLR_PIC}"',
        {},
        ProviderServerError,
        None,
    ),
    (503, '"Failed to connect to database"', {}, ProviderServerError, None),
    (503, "Failed to connect to database", {}, ProviderServerError, None),
    (413, NGINX_413, {"content-type": "text/html"}, ImageTooLargeError, None),
    # behind the 2021 proxy every new-API error came back as 500 "<error>"
    (500, '"Search quota depleted"', {}, QuotaExhaustedError, None),
    (500, '"Concurrency limit exceeded"', {}, ConcurrencyLimitError, None),
    (500, '"Error: Search queue is full"', {}, ProviderBusyError, None),
    (502, "<html><head><title>502 Bad Gateway</title></head></html>", {}, ProviderServerError, None),
    (404, "Not Found", {}, BadRequestError, None),
]


@pytest.mark.parametrize(("status", "body", "headers", "error", "retry_after"), ERRORS)
def test_every_error_body_maps_to_one_exception(
    status: int, body: str, headers: dict[str, str], error: type[ProviderError], retry_after: float | None
) -> None:
    with respx.mock(assert_all_called=True) as mock:
        mock.post(f"{BASE}/api/search").respond(status, content=body.encode(), headers=headers)
        with httpx.Client() as client:
            response = client.send(provider().search_request(SearchQuery(image=JPEG)))
    with pytest.raises(error) as caught:
        provider().parse_search(response)
    exc = caught.value
    assert type(exc) is error
    assert exc.provider == "whatanime-ga"
    assert exc.status_code == status
    assert exc.retry_after == retry_after
    assert "$" not in str(exc)  # the PHP placeholder never reaches a user


def test_the_php_quoted_429_says_how_long_from_the_headers() -> None:
    with pytest.raises(RateLimitedError) as caught:
        provider().parse_search(answer(429, PHP_LIMIT, {"Retry-After": "42"}))
    assert "Please wait 42 seconds" in str(caught.value)


def test_a_spent_day_quota_says_when_it_resets() -> None:
    with pytest.raises(QuotaExhaustedError) as caught:
        provider().parse_search(answer(429, PHP_QUOTA, {"Retry-After": "5000"}))
    assert caught.value.resets_at == NOW + timedelta(seconds=5000)


def test_a_413_reports_what_was_sent_and_the_limit() -> None:
    request = provider().search_request(SearchQuery(image=JPEG))
    with pytest.raises(ImageTooLargeError) as caught:
        provider().parse_search(answer(413, NGINX_413, request=request))
    assert caught.value.size_bytes == len(request.content)
    assert caught.value.limit_bytes == DEFAULT_MAX_BODY_BYTES
    assert isinstance(caught.value, InvalidImageError)


def test_a_413_without_a_readable_request_still_maps() -> None:
    streamed = httpx.Request("POST", f"{BASE}/api/search", content=iter([b"image=..."]))
    for response in (httpx.Response(413, text=NGINX_413), answer(413, NGINX_413, request=streamed)):
        with pytest.raises(ImageTooLargeError) as caught:
            provider().parse_search(response)
        assert (caught.value.size_bytes, caught.value.status_code) == (None, 413)


def test_a_missing_token_error_tells_which_setting() -> None:
    with pytest.raises(AuthenticationError, match="ANISEARCH_WHATANIME_GA_TOKEN"):
        provider().parse_search(answer(401, "Missing API token"))


# ---------------------------------------------------------------- quota facts


def test_observe_reads_the_four_success_headers() -> None:
    headers = {
        "x-whatanime-limit": "9",
        "x-whatanime-limit-ttl": "60",
        "x-whatanime-quota": "148",
        "x-whatanime-quota-ttl": "85899",
    }
    quotas = {q.window: q for q in provider().observe(answer(200, search_body(), headers))}
    assert set(quotas) == {"minute", "day"}
    assert (quotas["minute"].remaining, quotas["minute"].resets_at) == (9, NOW + timedelta(seconds=60))
    assert (quotas["day"].remaining, quotas["day"].resets_at) == (148, NOW + timedelta(seconds=85899))
    assert {q.source for q in quotas.values()} == {"headers"}
    assert all(q.cooldown_until is None and q.provider == "whatanime-ga" for q in quotas.values())


def test_observe_a_429_sets_a_cooldown_until_the_window_resets() -> None:
    response = answer(
        429, PHP_LIMIT, {"Retry-After": "42", "X-whatanime-limit": "-1", "X-whatanime-limit-ttl": "42"}
    )
    (minute,) = provider().observe(response)
    assert (minute.window, minute.remaining) == ("minute", 0)
    assert minute.resets_at == minute.cooldown_until == NOW + timedelta(seconds=42)


def test_observe_the_2018_quota_and_expire_pair_as_a_minute_window() -> None:
    (quota,) = provider().observe(
        answer(200, search_body(), {"x-whatanime-quota": "5", "x-whatanime-expire": "30"})
    )
    assert (quota.window, quota.remaining, quota.resets_at) == ("minute", 5, NOW + timedelta(seconds=30))


def test_observe_falls_back_to_the_body_fields() -> None:
    body = search_body(limit=3, limit_ttl=20, quota=100, quota_ttl=1000)
    quotas = {q.window: q for q in provider(token="t").observe(answer(200, body))}
    assert (quotas["minute"].remaining, quotas["day"].remaining) == (3, 100)
    assert {q.source for q in quotas.values()} == {"upstream"}
    assert {q.scope for q in quotas.values()} == {"api-key"}


def test_observe_an_error_without_headers_says_nothing() -> None:
    assert provider().observe(answer(400, '"No image received"')) == []
    assert provider().observe(answer(200, "<html>a proxy page</html>")) == []


def test_an_unexpected_status_is_an_upstream_response_error() -> None:
    with pytest.raises(UpstreamResponseError) as caught:
        provider().parse_search(answer(302, ""))
    assert caught.value.endpoint == "/api/search"
    assert provider().auth() is None


def test_me_reports_both_windows_with_their_allowances() -> None:
    body = {
        "user_id": None,
        "email": "203.0.113.9",
        "limit": 7,
        "limit_ttl": 45,
        "quota": 140,
        "quota_ttl": 80000,
        "user_limit": 10,
        "user_limit_ttl": 60,
        "user_quota": 150,
        "user_quota_ttl": 86400,
    }
    legacy = provider()
    request = legacy.quota_request()
    assert (request.method, request.url) == ("GET", httpx.URL(f"{BASE}/api/me"))
    quotas = {q.window: q for q in legacy.parse_quota(answer(200, json.dumps(body), request=request))}
    assert (quotas["minute"].limit, quotas["minute"].used, quotas["minute"].remaining) == (10, 3, 7)
    assert (quotas["day"].limit, quotas["day"].used, quotas["day"].remaining) == (150, 10, 140)
    assert quotas["day"].resets_at == NOW + timedelta(seconds=80000)
    assert {q.source for q in quotas.values()} == {"upstream"}


def test_a_2017_search_body_reports_its_minute_quota() -> None:
    body = search_body(doc(), quota=4, expire=25)
    quota = provider().parse_search(answer(200, body)).quota
    assert quota is not None
    assert (quota.window, quota.remaining, quota.resets_at) == ("minute", 4, NOW + timedelta(seconds=25))


def test_me_sends_the_token() -> None:
    assert provider(token="abc").quota_request().url.params["token"] == "abc"


def test_me_of_a_2017_server_has_only_the_minute_quota() -> None:
    body = json.dumps({"user_id": 1001, "email": "a@b.c", "quota": 8, "quota_ttl": 50})
    (quota,) = provider(token="t").parse_quota(answer(200, body))
    assert (quota.window, quota.remaining, quota.scope) == ("minute", 8, "api-key")


def test_me_errors_and_junk() -> None:
    with pytest.raises(AuthenticationError):
        provider().parse_quota(answer(403, "Invalid API token"))
    with pytest.raises(UpstreamResponseError):
        provider().parse_quota(answer(200, json.dumps({"user_id": None})))

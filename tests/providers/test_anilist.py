"""The anilist metadata provider: settings, the one GraphQL request, parsing, AniList's errors, rate facts."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import respx

from anisearch._exceptions import (
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    ProviderServerError,
    RateLimitedError,
    UpstreamResponseError,
)
from anisearch._provider import ProviderContext, load_metadata_provider
from anisearch_providers.anilist import DEFAULT_URL, MAX_BATCH, AniList

NOW = datetime(2026, 12, 2, 1, 0, 0, tzinfo=UTC)
URL = "http://anilist.test"

KOKORO = {
    "id": 11887,
    "idMal": 11887,
    "title": {"romaji": "Kokoro Connect", "english": "Kokoro Connect", "native": "ココロコネクト"},
    "synonyms": ["Kokoroco"],
    "isAdult": False,
    "episodes": 13,
    "duration": 24,
    "format": "TV",
    "season": "SUMMER",
    "seasonYear": 2012,
    "coverImage": {"large": "https://s4.anilist.co/cover/11887.jpg", "medium": "https://s4.anilist.co/m.jpg"},
    "siteUrl": "https://anilist.co/anime/11887",
}


def provider() -> AniList:
    return AniList(URL, clock=lambda: NOW)


def page(*media: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json={"data": {"Page": {"media": list(media)}}}, headers=headers)


def graphql_error(message: str, status: int, headers: dict[str, str] | None = None) -> httpx.Response:
    body = {
        "data": None,
        "errors": [{"message": message, "status": status, "locations": [{"line": 1, "column": 9}]}],
    }
    return httpx.Response(status, json=body, headers=headers)


# ---------------------------------------------------------------------------------------------- settings


def test_it_registers_as_a_metadata_provider_not_a_scene_search() -> None:
    from anisearch._provider import available_providers

    assert load_metadata_provider("anilist") is AniList
    assert "anilist" not in available_providers()  # never joins a search order
    assert AniList.capabilities.names() == ["metadata"]


def test_settings_give_the_url_and_the_cache_ttl() -> None:
    built = AniList.from_context(ProviderContext(config={"url": "http://127.0.0.1:8003/", "ttl": "3600"}))
    assert built.base_url == "http://127.0.0.1:8003"
    assert built.ttl_seconds == 3600
    assert AniList.from_context(ProviderContext()).base_url == DEFAULT_URL
    assert AniList.from_context(ProviderContext()).ttl_seconds == 7 * 24 * 3600


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ({"key": "x"}, "unknown anilist setting(s): key"),
        ({"ttl": "0"}, "ttl"),
        ({"url": "ftp://x"}, "http(s)"),
    ],
)
def test_a_bad_setting_is_a_configuration_error(config: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigurationError, match=named.replace("(", r"\(").replace(")", r"\)")):
        AniList.from_context(ProviderContext(config=config))


# ---------------------------------------------------------------------------------------------- request


def test_one_request_asks_for_every_id_once() -> None:
    request = provider().lookup_request([11887, 21, 11887, 849])
    body = json.loads(request.content)
    assert request.method == "POST"
    assert str(request.url) == URL
    assert request.headers["content-type"] == "application/json"
    assert body["variables"] == {"ids": [11887, 21, 849]}
    query = " ".join(body["query"].split())
    assert "Page(perPage: 50) { media(id_in: $ids, type: ANIME) {" in query
    for name in ("idMal", "title { romaji english native }", "synonyms", "isAdult", "episodes", "duration"):
        assert name in query
    for name in ("format", "season", "seasonYear", "coverImage", "siteUrl"):
        assert name in query


@pytest.mark.parametrize("ids", [[], list(range(1, MAX_BATCH + 2)), [0], [-3], [True]])
def test_a_lookup_takes_1_to_50_positive_ids(ids: list[Any]) -> None:
    with pytest.raises(ConfigurationError):
        provider().lookup_request(ids)


# ---------------------------------------------------------------------------------------------- answers


@respx.mock
def test_the_answer_becomes_anime_values() -> None:
    respx.post(URL).mock(
        return_value=page(KOKORO, {"id": 21, "title": {"romaji": "ONE PIECE"}, "isAdult": None})
    )
    anilist = provider()
    response = httpx.Client().send(anilist.lookup_request([11887, 21, 5]))
    kokoro, one_piece = anilist.parse_lookup(response)
    assert kokoro.anilist_id == 11887
    assert kokoro.mal_id == 11887
    assert kokoro.title is not None
    assert kokoro.title.romaji == "Kokoro Connect"
    assert kokoro.title.native == "ココロコネクト"
    assert kokoro.synonyms == ["Kokoroco"]
    assert kokoro.is_adult is False
    assert (kokoro.episode_count, kokoro.episode_minutes, kokoro.format) == (13, 24, "TV")
    assert (kokoro.season, kokoro.season_year) == ("SUMMER", 2012)
    assert kokoro.cover_image_url == "https://s4.anilist.co/cover/11887.jpg"
    assert kokoro.site_url == "https://anilist.co/anime/11887"
    assert kokoro.raw == KOKORO
    assert one_piece.title is not None
    assert one_piece.title.english is None
    assert one_piece.is_adult is None
    assert one_piece.mal_id is None


def test_fields_of_the_wrong_type_are_left_empty() -> None:
    odd = {"id": 7, "idMal": "7", "title": "x", "synonyms": [1, " ", "Alt"], "isAdult": "no", "episodes": -1}
    (anime,) = provider().parse_lookup(page(odd))
    assert anime.mal_id is None
    assert anime.title is None
    assert anime.is_adult is None
    assert anime.synonyms == ["Alt"]
    assert anime.episode_count is None


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, text="<html>maintenance</html>"),
        httpx.Response(200, json={"data": {"Page": None}}),
        httpx.Response(200, json={"data": {"Page": {"media": [{"id": "11887"}]}}}),
        httpx.Response(200, json={"data": {"Page": {"media": ["x"]}}}),
    ],
)
def test_an_answer_of_another_shape_is_an_upstream_response_error(response: httpx.Response) -> None:
    with pytest.raises(UpstreamResponseError):
        provider().parse_lookup(response)


def test_a_429_is_a_rate_limit_with_its_retry_after() -> None:
    headers = {"Retry-After": "37", "X-RateLimit-Limit": "90", "X-RateLimit-Remaining": "0"}
    with pytest.raises(RateLimitedError) as caught:
        provider().parse_lookup(graphql_error("Too Many Requests.", 429, headers))
    assert caught.value.retry_after == 37
    assert caught.value.status_code == 429
    assert caught.value.provider == "anilist"
    assert "Too Many Requests." in str(caught.value)


def test_a_429_without_retry_after_waits_out_the_minute() -> None:
    with pytest.raises(RateLimitedError) as caught:
        provider().parse_lookup(graphql_error("Too Many Requests.", 429))
    assert caught.value.retry_after == 60


@pytest.mark.parametrize(
    ("message", "status", "error"),
    [
        ('Cannot query field "foo" on type "Media".', 400, BadRequestError),
        ("Not Found.", 404, BadRequestError),
        ("Invalid token", 401, AuthenticationError),
        ("Internal Server Error", 500, ProviderServerError),
        ("Service Unavailable", 503, ProviderServerError),
    ],
)
def test_graphql_errors_map_by_the_status_they_name(
    message: str, status: int, error: type[Exception]
) -> None:
    with pytest.raises(error, match=message.replace("(", r"\(")):
        provider().parse_lookup(graphql_error(message, status))


def test_a_200_carrying_errors_is_read_by_the_errors_status() -> None:
    body = {"data": {"Page": {"media": []}}, "errors": [{"message": "Too Many Requests.", "status": 429}]}
    with pytest.raises(RateLimitedError):
        provider().parse_lookup(httpx.Response(200, json=body))


def test_a_200_with_errors_beside_anime_gives_those_anime_as_a_partial_lookup() -> None:
    from anisearch.provider import PartialLookup

    good = {"id": 11887, "title": {"romaji": "Kokoro Connect"}, "isAdult": False}
    body = {
        "data": {"Page": {"media": [good, None]}},
        "errors": [{"message": "Internal Error", "status": 500}],
    }
    found = provider().parse_lookup(httpx.Response(200, json=body))
    assert isinstance(found, PartialLookup)
    assert [anime.anilist_id for anime in found] == [11887]
    assert found.reason == "ProviderServerError: anilist: Internal Error (HTTP 200)"


def test_an_html_error_page_is_classified_by_its_status() -> None:
    with pytest.raises(ProviderServerError):
        provider().parse_lookup(httpx.Response(502, text="<html>Bad Gateway</html>"))


# ---------------------------------------------------------------------------------------------- rate facts


def test_every_answer_reports_the_minute_window_in_force() -> None:
    (quota,) = provider().observe(
        page(KOKORO, headers={"X-RateLimit-Limit": "30", "X-RateLimit-Remaining": "12"})
    )
    assert (quota.window, quota.limit, quota.remaining, quota.used) == ("minute", 30, 12, 18)
    assert quota.source == "headers"
    assert quota.cooldown_until is None


def test_a_429_reports_a_cooldown_for_retry_after() -> None:
    headers = {"Retry-After": "20", "X-RateLimit-Limit": "90", "X-RateLimit-Remaining": "0"}
    (quota,) = provider().observe(graphql_error("Too Many Requests.", 429, headers))
    assert quota.remaining == 0
    assert quota.cooldown_until == NOW + timedelta(seconds=20)


def test_no_headers_no_facts() -> None:
    assert provider().observe(page(KOKORO)) == []


def test_its_window_is_a_request_rate_of_90_a_minute() -> None:
    (window,) = provider().windows()
    assert (window.name, window.span_seconds, window.counts, window.kind, window.limit) == (
        "minute",
        60,
        "requests",
        "rate",
        90,
    )


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("Wed, 02 Dec 2026 01:00:45 GMT", 45), ("Wed, 02 Dec 2026 00:59:00 GMT", 0), ("soon", 60), ("nan", 60)],
)
def test_retry_after_may_be_an_http_date(value: str, seconds: float) -> None:
    with pytest.raises(RateLimitedError) as caught:
        provider().parse_lookup(graphql_error("Too Many Requests.", 429, {"Retry-After": value}))
    assert caught.value.retry_after == seconds


@pytest.mark.parametrize(("status", "error"), [(418, BadRequestError), (302, UpstreamResponseError)])
def test_an_unlisted_status_is_classified_by_its_class(status: int, error: type[Exception]) -> None:
    with pytest.raises(error):
        provider().parse_lookup(httpx.Response(status, text=""))

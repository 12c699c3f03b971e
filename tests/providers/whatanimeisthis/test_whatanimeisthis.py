"""whatanimeisthis.com provider units: request building, tolerant parsing in every envelope, quotas.

The site's response shapes are guesses (research/whatanimeisthis-contract.md §4), so each parser is
driven with the contract's example payloads in the three envelopes it may use, and with the variants
§7 lists. respx stands in for the site.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from anisearch._exceptions import ConfigurationError, UpstreamResponseError
from anisearch._image import PreparedImage
from anisearch._provider import (
    AccountProvider,
    Provider,
    ProviderContext,
    SearchOptions,
    SearchQuery,
    load_emulator,
    load_provider,
)
from anisearch_emulators.whatanimeisthis import create_app
from anisearch_providers.whatanimeisthis import WhatAnimeIsThis

SITE = "https://whatanimeisthis.com"
JPEG = PreparedImage(data=b"\xff\xd8\xff\xe0fake", mime_type="image/jpeg", width=1, height=1, digest="0" * 64)


def wrap(payload: Any, envelope: str) -> Any:
    """The payload in one of the three envelopes the site may use (§4)."""
    if envelope == "bare":
        return payload
    if envelope == "data":
        return {"success": True, "data": payload}
    return {"code": 0, "message": "ok", "data": payload}


ENVELOPES = pytest.mark.parametrize("envelope", ["bare", "data", "code"])


@pytest.fixture
def provider(tmp_path: Path) -> WhatAnimeIsThis:
    return WhatAnimeIsThis(state_dir=tmp_path / "state")


_HTTP = httpx.Client()  # one client for the module: building an SSL context per test costs ~0.1 s


def send(provider: WhatAnimeIsThis, request: httpx.Request) -> httpx.Response:
    return _HTTP.send(request, auth=provider.auth())


# ---------------------------------------------------------------- settings and protocol


def test_registered_under_its_entry_points() -> None:
    assert load_provider("whatanimeisthis") is WhatAnimeIsThis
    assert load_emulator("whatanimeisthis") is create_app


def test_it_is_a_provider_with_account_features(provider: WhatAnimeIsThis) -> None:
    as_provider: Provider = provider  # mypy checks both protocols here
    as_account: AccountProvider = provider
    assert as_provider.auth() is not None
    assert isinstance(as_account, AccountProvider)
    assert provider.name == "whatanimeisthis"
    assert provider.default_order is True
    assert provider.capabilities.names() == ["account", "upload"]
    assert provider.limits.formats == frozenset({"image/jpeg", "image/png"})


def test_it_is_the_fallback_after_tracemoe_in_the_default_order() -> None:
    rank = {
        name: getattr(load_provider(name), "default_rank", 100) for name in ("tracemoe", "whatanimeisthis")
    }
    assert rank["tracemoe"] < rank["whatanimeisthis"]


def test_settings_come_from_the_context(tmp_path: Path) -> None:
    context = ProviderContext(
        config={"url": "http://127.0.0.1:8080/", "key": "sk-abc", "origin": "https://mirror.example"},
        state_dir=tmp_path,
    )
    provider = WhatAnimeIsThis.from_context(context)
    assert provider.base_url == "http://127.0.0.1:8080"
    assert provider.origin == "https://mirror.example"
    assert provider.credential.scope == "api-key"
    assert provider.credential.secret == "sk-abc"
    assert "sk-abc" not in repr(provider)
    assert WhatAnimeIsThis.from_context(ProviderContext()).base_url == SITE


@pytest.mark.parametrize(
    "config",
    [{"url": "ftp://whatanimeisthis.com"}, {"url": "whatanimeisthis.com"}, {"origin": "nope"}, {"key": 5}],
)
def test_bad_settings_are_configuration_errors(config: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        WhatAnimeIsThis.from_context(ProviderContext(config=config))


def test_credential_is_key_then_session_then_guest(tmp_path: Path) -> None:
    assert WhatAnimeIsThis().credential.scope == "guest"
    signed = WhatAnimeIsThis(email="a@b.example", password="pw")
    assert (signed.credential.scope, signed.credential.secret) == ("session", "a@b.example")
    both = WhatAnimeIsThis(email="a@b.example", password="pw", api_key="sk-1")
    assert both.credential.scope == "api-key"


def test_assumed_quotas_are_the_documented_ones() -> None:
    guest = WhatAnimeIsThis().assumed_quotas()
    assert [(q.scope, q.limit, q.window, q.source) for q in guest] == [("guest", 5, "day", "ledger")]
    keyed = WhatAnimeIsThis(api_key="sk-1").assumed_quotas()
    assert [(q.scope, q.limit, q.window) for q in keyed] == [("api-key", 10, "day"), ("api-key", 100, "hour")]


# ---------------------------------------------------------------- requests


def test_every_request_sends_origin_accept_and_a_user_agent(provider: WhatAnimeIsThis) -> None:
    requests = [
        provider.search_request(SearchQuery(image=JPEG)),
        provider.rankings_request("all", 50, include_adult=False),
        provider.recent_searches_request(20, 0),
        provider.credits_request(),
        provider.api_keys_request(1, 20),
        provider.create_api_key_request("bot"),
        provider.sign_in_request("a@b.example", "pw"),
        provider._sign_out_post(),  # with no session stored, sign_out_request() is None
        provider.session_request(),
    ]
    for request in requests:
        assert request.headers["origin"] == SITE
        assert request.headers["accept"] == "application/json"
        assert request.headers["user-agent"].startswith("anisearch/")
        assert request.url.host == "whatanimeisthis.com"


def test_search_by_upload_is_a_multipart_image_part(provider: WhatAnimeIsThis) -> None:
    request = provider.search_request(SearchQuery(image=JPEG))
    body = request.read()
    assert request.method == "POST"
    assert request.url.path == "/api/anime/search"
    assert request.headers["content-type"].startswith("multipart/form-data")
    assert b'name="image"; filename="image.jpg"' in body
    assert b"Content-Type: image/jpeg" in body
    assert b'name="url"' not in body
    assert "authorization" not in request.headers


def test_search_by_url_is_a_multipart_text_field_and_a_key_is_a_bearer() -> None:
    provider = WhatAnimeIsThis(api_key="sk-secret")
    request = provider.url_search_request("https://example.com/frame.png")
    body = request.read()
    assert request.headers["content-type"].startswith("multipart/form-data")
    assert b'name="url"\r\n\r\nhttps://example.com/frame.png' in body
    assert b"filename" not in body
    assert request.headers["authorization"] == "Bearer sk-secret"


@pytest.mark.parametrize(
    ("query", "words"),
    [
        (SearchQuery(image=JPEG, options=SearchOptions(anilist_id=21)), "AniList"),
        (
            SearchQuery(
                image=PreparedImage(data=b"RIFF", mime_type="image/webp", width=1, height=1, digest="")
            ),
            "JPEG or PNG",
        ),
    ],
)
def test_searches_it_cannot_send_are_refused(
    provider: WhatAnimeIsThis, query: SearchQuery, words: str
) -> None:
    with pytest.raises(ConfigurationError, match=words):
        provider.search_request(query)


def test_a_url_search_needs_an_http_url_and_no_anilist_filter(provider: WhatAnimeIsThis) -> None:
    with pytest.raises(ConfigurationError, match=r"http\(s\) image URL"):
        provider.url_search_request("file:///etc/passwd")
    with pytest.raises(ConfigurationError, match="AniList"):
        provider.url_search_request("https://example.com/a.png", SearchOptions(anilist_id=21))


def test_rankings_request_validates_and_omits_include_adult_when_false(provider: WhatAnimeIsThis) -> None:
    request = provider.rankings_request("daily", 10, include_adult=False)
    assert dict(request.url.params) == {"period": "daily", "limit": "10"}
    adult = provider.rankings_request("all", 5, include_adult=True)
    assert adult.url.params["includeAdult"] == "true"
    with pytest.raises(ConfigurationError, match="daily, weekly, monthly, yearly, all"):
        provider.rankings_request("hourly", 10, include_adult=False)
    with pytest.raises(ConfigurationError, match="limit"):
        provider.rankings_request("all", 0, include_adult=False)


def test_paging_requests_carry_their_numbers(provider: WhatAnimeIsThis) -> None:
    assert dict(provider.recent_searches_request(5, 10).url.params) == {"limit": "5", "offset": "10"}
    assert dict(provider.api_keys_request(2, 50).url.params) == {"page": "2", "pageSize": "50"}


@pytest.mark.parametrize(
    "build",
    [
        lambda p: p.recent_searches_request(0, 0),
        lambda p: p.recent_searches_request(5, -1),
        lambda p: p.api_keys_request(0, 20),
        lambda p: p.api_keys_request(1, 0),
        lambda p: p.create_api_key_request("   "),
        lambda p: p.sign_in_request("not-an-email", "pw"),
        lambda p: p.sign_in_request("a@b.example", ""),
    ],
)
def test_bad_numbers_titles_and_credentials_are_refused(
    provider: WhatAnimeIsThis, build: Callable[[WhatAnimeIsThis], object]
) -> None:
    with pytest.raises(ConfigurationError):
        build(provider)


def test_json_posts_carry_exactly_the_documented_bodies(provider: WhatAnimeIsThis) -> None:
    sign_in = provider.sign_in_request(" a@b.example ", "pw")
    assert sign_in.headers["content-type"] == "application/json"
    assert json.loads(sign_in.read()) == {"email": "a@b.example", "password": "pw"}  # no callbackURL
    assert json.loads(provider._sign_out_post().read()) == {}  # sign_out_request() when signed in
    assert json.loads(provider.create_api_key_request(" my bot ").read()) == {"title": "my bot"}


# ---------------------------------------------------------------- search answers

CONTRACT_SEARCH = {
    "results": [
        {
            "anilistId": 21,
            "title": {"romaji": "One Piece", "english": "One Piece", "native": "ワンピース"},
            "episode": 1012,
            "from": 615.2,
            "to": 618.9,
            "at": 616.5,
            "similarity": 0.93,
            "isAdult": False,
            "image": "https://cdn.example/frame.jpg",
            "video": "https://cdn.example/clip.mp4",
            "extra": {"kept": True},
        }
    ],
    "remainingCredits": 9,
}


@ENVELOPES
@respx.mock
def test_search_answer_in_every_envelope(provider: WhatAnimeIsThis, envelope: str) -> None:
    respx.post(f"{SITE}/api/anime/search").respond(json=wrap(CONTRACT_SEARCH, envelope))
    response = send(provider, provider.search_request(SearchQuery(image=JPEG)))
    answer = provider.parse_search(response)
    (hit,) = answer.hits
    assert hit.provider == "whatanimeisthis"
    assert (hit.anilist_id, hit.episode, hit.similarity) == (21, 1012, 0.93)
    assert (hit.start_seconds, hit.end_seconds, hit.at_seconds) == (615.2, 618.9, 616.5)
    assert hit.title is not None
    assert hit.title.native == "ワンピース"
    assert hit.is_adult is False
    assert hit.image_url == "https://cdn.example/frame.jpg"
    assert hit.video_url == "https://cdn.example/clip.mp4"
    assert hit.raw["extra"] == {"kept": True}
    assert answer.quota is not None
    assert (answer.quota.remaining, answer.quota.window, answer.quota.scope) == (9, "day", "guest")


@respx.mock
def test_search_answer_in_other_dialects(provider: WhatAnimeIsThis) -> None:
    body = {
        "data": {
            "matches": [
                {
                    "anilist_id": "11887",
                    "title": "Kokoro Connect",
                    "episode": "5",
                    "similarity": 97.5,
                    "from": "00:19:29.17",
                    "to": "19:34.92",
                    "at_ms": 1172050,
                    "is_adult": "false",
                },
                {
                    "anilist": {"id": 21, "idMal": 21, "title": {"userPreferred": "ONE PIECE"}, "isAdult": 0},
                    "episode": [1, 2],
                    "similarity": "83%",
                    "startMs": 1000,
                    "endMs": 2500,
                },
            ],
            "frame_count": 1234,
        },
        "code": 200,
        "remaining_searches": 4,
    }
    respx.post(f"{SITE}/api/anime/search").respond(json=body)
    answer = provider.parse_search(send(provider, provider.search_request(SearchQuery(image=JPEG))))
    first, second = answer.hits
    assert (first.anilist_id, first.episode, first.similarity, first.is_adult) == (11887, "5", 0.975, False)
    assert first.start_seconds == pytest.approx(1169.17)
    assert first.end_seconds == pytest.approx(1174.92)
    assert first.at_seconds == pytest.approx(1172.05)
    assert first.title is not None
    assert first.title.romaji == "Kokoro Connect"
    assert (second.anilist_id, second.mal_id, second.episode, second.similarity) == (21, 21, [1, 2], 0.83)
    assert (second.start_seconds, second.end_seconds, second.is_adult) == (1.0, 2.5, False)
    assert second.title is not None
    assert second.title.romaji == "ONE PIECE"
    assert answer.frames_searched == 1234
    assert answer.quota is not None
    assert answer.quota.remaining == 4


@respx.mock
def test_search_keeps_the_five_best_and_an_empty_list_is_no_match(provider: WhatAnimeIsThis) -> None:
    items = [{"anilistId": n, "similarity": n / 10} for n in range(1, 9)]
    route = respx.post(f"{SITE}/api/anime/search")
    route.respond(json=items)
    hits = provider.parse_search(send(provider, provider.search_request(SearchQuery(image=JPEG)))).hits
    assert [hit.anilist_id for hit in hits] == [8, 7, 6, 5, 4]
    route.respond(json={"results": [], "remainingCredits": 3})
    assert provider.parse_search(send(provider, provider.search_request(SearchQuery(image=JPEG)))).hits == []


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"remainingCredits": 3}, "no list of search results"),
        ({"results": [{"anilistId": 21}]}, "no similarity"),
        ({"results": [{"anilistId": 21, "similarity": 250}]}, "no similarity"),
        ({"results": ["not an object"]}, "not an object"),
        ("just text", "no list of search results"),
    ],
)
@respx.mock
def test_uninterpretable_search_answers_name_what_is_missing(
    provider: WhatAnimeIsThis, body: Any, words: str
) -> None:
    respx.post(f"{SITE}/api/anime/search").respond(json=body)
    response = send(provider, provider.search_request(SearchQuery(image=JPEG)))
    with pytest.raises(UpstreamResponseError, match=words) as caught:
        provider.parse_search(response)
    assert caught.value.endpoint == "/api/anime/search"
    assert caught.value.provider == "whatanimeisthis"
    assert caught.value.status_code == 200


# ---------------------------------------------------------------- account answers


@ENVELOPES
@respx.mock
def test_rankings_in_every_envelope(provider: WhatAnimeIsThis, envelope: str) -> None:
    payload = {
        "period": "weekly",
        "rankings": [
            {
                "rank": 2,
                "anilistId": 11887,
                "title": "Kokoro Connect",
                "count": 7,
                "coverImage": {"large": "https://c/l.jpg"},
            },
            {
                "rank": 1,
                "anilistId": 21,
                "title": {"english": "One Piece"},
                "count": "1234",
                "isAdult": "0",
                "coverImage": "https://c/op.jpg",
            },
        ],
    }
    respx.get(f"{SITE}/api/anime/rankings").respond(json=wrap(payload, envelope))
    entries = provider.parse_rankings(
        send(provider, provider.rankings_request("weekly", 10, include_adult=False))
    )
    assert [(e.rank, e.anilist_id, e.searches) for e in entries] == [(1, 21, 1234), (2, 11887, 7)]
    assert entries[0].title is not None
    assert entries[0].title.english == "One Piece"
    assert entries[0].is_adult is False
    assert entries[1].cover_image_url == "https://c/l.jpg"
    assert entries[1].raw["title"] == "Kokoro Connect"


@respx.mock
def test_rankings_are_cut_to_the_limit_and_ranked_by_position(provider: WhatAnimeIsThis) -> None:
    respx.get(f"{SITE}/api/anime/rankings").respond(json=[{"anilistId": n} for n in range(10)])
    entries = provider.parse_rankings(
        send(provider, provider.rankings_request("all", 3, include_adult=False))
    )
    assert [(e.rank, e.anilist_id) for e in entries] == [(1, 0), (2, 1), (3, 2)]


@ENVELOPES
@respx.mock
def test_recent_searches_in_every_envelope(provider: WhatAnimeIsThis, envelope: str) -> None:
    payload = {
        "items": [
            {
                "id": "s1",
                "createdAt": "2026-11-21T10:00:00Z",
                "title": "Kokoro Connect",
                "anilistId": 11887,
                "episode": 5,
                "timestamp": 1172.05,
                "similarity": 97,  # an answer in percent, as the other entry's 91 says
                "imageUrl": "https://c/1.jpg",
            },
            {"id": 2, "created_at": 1763719200000, "anilist_id": 21, "time": "00:11:56", "similarity": 91},
        ],
        "total": 532,
        "limit": 2,
        "offset": 0,
        "hasMore": True,
    }
    respx.get(f"{SITE}/api/anime/recent-searches").respond(json=wrap(payload, envelope))
    page = provider.parse_recent_searches(send(provider, provider.recent_searches_request(2, 0)))
    first, second = page.items
    assert (page.total, page.has_more) == (532, True)
    assert first.searched_at == datetime(2026, 11, 21, 10, tzinfo=UTC)
    assert (first.id, first.anilist_id, first.episode, first.at_seconds, first.similarity) == (
        "s1",
        11887,
        5,
        1172.05,
        0.97,
    )
    assert first.image_url == "https://c/1.jpg"
    assert second.searched_at == datetime(2025, 11, 21, 10, tzinfo=UTC)  # epoch milliseconds
    assert (second.id, second.at_seconds, second.similarity) == ("2", 716.0, 0.91)


@pytest.mark.parametrize(
    ("body", "offset", "expected"),
    [
        ({"items": [{}, {}], "total": 10}, 0, (10, True)),
        ({"items": [{}, {}], "total": 4}, 2, (4, False)),
        ({"items": [{}]}, 0, (None, False)),  # a short page is the last
        ({"items": [{}, {}]}, 0, (None, None)),  # a full page says nothing
        ({"items": [{}, {}], "nextCursor": None}, 0, (None, False)),
        ({"items": [{}, {}], "pagination": {"total": 9, "has_next_page": "true"}}, 0, (9, True)),
        ({"data": [{}, {}], "success": True, "meta": {"total": 2}}, 0, (2, False)),
    ],
)
@respx.mock
def test_recent_search_pages_report_or_infer_the_end(
    provider: WhatAnimeIsThis, body: Any, offset: int, expected: tuple[int | None, bool | None]
) -> None:
    respx.get(f"{SITE}/api/anime/recent-searches").respond(json=body)
    page = provider.parse_recent_searches(send(provider, provider.recent_searches_request(2, offset)))
    assert (page.total, page.has_more) == expected


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (
            {
                "credits": 42,
                "freeCredits": 10,
                "freeCreditsRemaining": 7,
                "paidCredits": 35,
                "resetsAt": "2026-11-22T00:00:00Z",
            },
            (42, 7, 10, 35),
        ),
        (9, (9, None, None, None)),
        ({"remainingCredits": "3"}, (3, None, None, None)),
        ({"credits": {"remaining": 12, "free_credits_remaining": 2, "paid_credits": 10}}, (12, 2, None, 10)),
        ({"free_credits_remaining": 4, "paidCredits": 5}, (9, 4, None, 5)),
    ],
)
@ENVELOPES
@respx.mock
def test_credits_in_every_envelope_and_shape(
    provider: WhatAnimeIsThis, envelope: str, payload: Any, expected: tuple[int | None, ...]
) -> None:
    respx.get(f"{SITE}/api/user/anime-credits").respond(json=wrap(payload, envelope))
    balance = provider.parse_credits(send(provider, provider.credits_request()))
    assert (balance.remaining, balance.free_remaining, balance.free_daily, balance.paid) == expected


@respx.mock
def test_credits_without_a_number_are_uninterpretable(provider: WhatAnimeIsThis) -> None:
    respx.get(f"{SITE}/api/user/anime-credits").respond(json={"user": {"plan": "free"}})
    with pytest.raises(UpstreamResponseError, match="remaining-credits") as caught:
        provider.parse_credits(send(provider, provider.credits_request()))
    assert caught.value.endpoint == "/api/user/anime-credits"


@ENVELOPES
@respx.mock
def test_api_keys_are_listed_masked(provider: WhatAnimeIsThis, envelope: str) -> None:
    payload = {
        "items": [
            {
                "id": "k1",
                "title": "my bot",
                "key": "sk-…abcd",
                "status": "active",
                "createdAt": "2026-11-20T08:00:00Z",
                "lastUsedAt": None,
            },
            {"id": 2, "name": "leaky", "key": "sk-live-0123456789abcdefghij", "enabled": False},
            {"id": "k3", "start": "wait_a"},
        ],
        "total": 3,
        "page": 1,
        "pageSize": 20,
    }
    respx.get(f"{SITE}/api/apikeys").respond(json=wrap(payload, envelope))
    page = provider.parse_api_keys(send(provider, provider.api_keys_request(1, 20)))
    first, second, third = page.items
    assert (first.id, first.title, first.masked_key, first.status) == ("k1", "my bot", "sk-…abcd", "active")
    assert first.created_at == datetime(2026, 11, 20, 8, tzinfo=UTC)
    assert (second.id, second.title, second.masked_key, second.status) == (
        "2",
        "leaky",
        "sk-…ghij",
        "disabled",
    )
    assert "0123456789" not in json.dumps(second.raw)
    assert third.masked_key == "wait_a…"
    assert (page.total, page.has_more) == (3, False)


@pytest.mark.parametrize(
    "payload",
    [
        {
            "id": "k9",
            "title": "bot",
            "key": "sk-live-plaintext-0123456789",
            "createdAt": "2026-11-21T00:00:00Z",
        },
        {"apiKey": "sk-live-plaintext-0123456789", "id": "k9", "title": "bot"},
        {"apiKey": {"id": "k9", "title": "bot", "key": "sk-live-plaintext-0123456789"}},
        {"id": "k9", "title": "bot", "key": "sk-…6789", "plainKey": "sk-live-plaintext-0123456789"},
    ],
)
@ENVELOPES
@respx.mock
def test_a_created_key_shows_its_plaintext_once(
    provider: WhatAnimeIsThis, envelope: str, payload: Any
) -> None:
    respx.post(f"{SITE}/api/apikeys").respond(json=wrap(payload, envelope))
    created = provider.parse_created_api_key(send(provider, provider.create_api_key_request("bot")))
    assert created.key.get_secret_value() == "sk-live-plaintext-0123456789"
    assert (created.id, created.title, created.masked_key) == ("k9", "bot", "sk-…6789")
    assert "plaintext" not in repr(created)
    assert "plaintext" not in json.dumps(created.raw)


@respx.mock
def test_a_created_key_that_holds_four_xs_by_chance_is_still_its_plaintext(provider: WhatAnimeIsThis) -> None:
    key = "AbCdEfGhIjKlMnOpQrStUvWxxxxYzAbCdEfGhIjKlMnOpQrStUvWyZaBcDeFgHiJ"  # 64 letters, as better-auth's
    respx.post(f"{SITE}/api/apikeys").respond(json={"id": "k9", "title": "bot", "key": key})
    created = provider.parse_created_api_key(send(provider, provider.create_api_key_request("bot")))
    assert created.key.get_secret_value() == key
    masked = {"id": "k9", "title": "bot", "key": "sk-xxxxxxxx6789"}  # and an x-masked key is still masked
    respx.post(f"{SITE}/api/apikeys").respond(json=masked)
    with pytest.raises(UpstreamResponseError, match="revoke it"):
        provider.parse_created_api_key(send(provider, provider.create_api_key_request("bot")))


@respx.mock
def test_a_created_key_without_plaintext_is_an_error_that_says_what_to_do(provider: WhatAnimeIsThis) -> None:
    respx.post(f"{SITE}/api/apikeys").respond(json={"id": "k9", "title": "bot", "key": "sk-…6789"})
    with pytest.raises(UpstreamResponseError, match="revoke it") as caught:
        provider.parse_created_api_key(send(provider, provider.create_api_key_request("bot")))
    assert "k9" in str(caught.value)


# ---------------------------------------------------------------- quota facts


def response_for(
    request: httpx.Request, status: int = 200, *, json_body: Any = None, headers: dict[str, str] | None = None
) -> httpx.Response:
    return httpx.Response(status, json=json_body, headers=headers, request=request)


NOW = datetime(2026, 11, 21, 12, tzinfo=UTC)


def test_observe_reads_credits_and_remaining_numbers(provider: WhatAnimeIsThis) -> None:
    balance = response_for(
        provider.credits_request(),
        json_body={"code": 0, "data": {"credits": 7, "resetsAt": "2026-11-22T00:00:00Z"}},
    )
    (quota,) = provider.observe(balance)
    assert (quota.remaining, quota.window, quota.source) == (7, "day", "upstream")
    assert quota.resets_at == datetime(2026, 11, 22, tzinfo=UTC)
    search = response_for(
        provider.search_request(SearchQuery(image=JPEG)), json_body={"results": [], "remainingSearches": 2}
    )
    (quota,) = provider.observe(search)
    assert (quota.remaining, quota.scope) == (2, "guest")


def test_observe_reads_rate_limit_headers(provider: WhatAnimeIsThis) -> None:
    headers = {"RateLimit-Limit": "100", "RateLimit-Remaining": "97", "RateLimit-Reset": "1800"}
    (quota,) = provider.observe(
        response_for(provider.rankings_request("all", 5, include_adult=False), headers=headers, json_body=[])
    )
    assert (quota.limit, quota.remaining, quota.used, quota.window, quota.source) == (
        100,
        97,
        3,
        "hour",
        "headers",
    )
    minute = {"X-RateLimit-Limit": "10", "X-RateLimit-Remaining": "0", "RateLimit-Policy": "10;w=60"}
    (quota,) = provider.observe(response_for(provider.credits_request(), 200, headers=minute, json_body=5))[
        :1
    ]
    assert quota.window == "minute"


def test_observe_turns_429_and_spent_credits_into_cooldowns(provider: WhatAnimeIsThis) -> None:
    limited = response_for(
        provider.search_request(SearchQuery(image=JPEG)),
        429,
        json_body={"error": "Too many searches"},
        headers={"Retry-After": "120"},
    )
    (quota,) = provider.observe(limited)
    assert quota.window == "hour"
    assert quota.cooldown_until is not None
    assert 100 < (quota.cooldown_until - quota.observed_at).total_seconds() <= 120
    spent = response_for(
        provider.search_request(SearchQuery(image=JPEG)), 402, json_body={"error": "Insufficient credits"}
    )
    (quota,) = provider.observe(spent)
    assert (quota.remaining, quota.window) == (0, "day")


def test_observe_finds_no_search_quota_in_better_auths_answers(provider: WhatAnimeIsThis) -> None:
    """better-auth's 429 (sign-in 3 per 10 s, other auth paths 100 per 10 s, per address and path) is its
    own limiter, not the search quota: no window, no cooldown, whatever its headers (the sign-in's wait is
    its error's ``retry_after``)."""
    limited = {"message": "Too many requests. Please try again later."}
    headers = {"X-Retry-After": "7", "RateLimit-Limit": "3", "RateLimit-Remaining": "0"}
    for request in (
        provider.sign_in_request("a@b.example", "pw"),
        provider.session_request(),
        provider._sign_out_post(),
    ):
        assert provider.observe(response_for(request, 429, json_body=limited)) == []
        assert provider.observe(response_for(request, 429, json_body=limited, headers=headers)) == []


def test_observe_never_raises_and_reports_nothing_for_plain_answers(provider: WhatAnimeIsThis) -> None:
    request = provider.credits_request()
    assert provider.observe(httpx.Response(200, text="<html>", request=request)) == []
    assert provider.observe(httpx.Response(200, json={"nothing": 1}, request=request)) == []
    assert provider.observe(httpx.Response(500, request=request)) == []


def test_quota_request_needs_a_session(tmp_path: Path) -> None:
    assert WhatAnimeIsThis().quota_request() is None
    signed = WhatAnimeIsThis(email="a@b.example", password="pw")
    request = signed.quota_request()
    assert request is not None
    assert request.url.path == "/api/user/anime-credits"
    quotas = signed.parse_quota(response_for(request, json_body={"credits": 4}))
    assert [(q.remaining, q.window) for q in quotas] == [(4, "day")]


@pytest.mark.parametrize(("paid", "remaining", "limit"), [(0, 9, 10), (5, 14, 15)])
def test_the_credits_day_window_knows_its_limit_so_it_knows_what_was_used(
    provider: WhatAnimeIsThis, paid: int, remaining: int, limit: int
) -> None:
    balance = response_for(
        provider.credits_request(),
        json_body={"credits": remaining, "freeCredits": 10, "freeCreditsRemaining": 9, "paidCredits": paid},
    )
    (quota,) = provider.observe(balance)
    assert (quota.limit, quota.remaining, quota.used) == (limit, remaining, 1)  # one free credit spent

"""whatanimeisthis.com errors: the table (real statuses and HTTP-200 envelopes), waits, tolerant coercions,
and a fuzz check that no body and status make a parser raise anything but an AnisearchError.
"""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.properties import examples

from anisearch._exceptions import (
    AnisearchError,
    AuthenticationError,
    BadRequestError,
    ImageFetchError,
    ImageTooLargeError,
    ProviderBusyError,
    ProviderError,
    ProviderServerError,
    QuotaExhaustedError,
    RateLimitedError,
    SignInRateLimitedError,
)
from anisearch._image import PreparedImage
from anisearch._models import SearchResult
from anisearch._provider import SearchQuery
from anisearch.provider import as_bool
from anisearch_providers.whatanimeisthis import WhatAnimeIsThis
from anisearch_providers.whatanimeisthis._errors import error_for, retry_after
from anisearch_providers.whatanimeisthis._tolerant import (
    as_datetime,
    as_seconds,
    as_similarity,
    find_list,
    pick_seconds,
    unwrap,
)

PROVIDER = WhatAnimeIsThis()
KEYED = WhatAnimeIsThis(api_key="sk-1")
JPEG = PreparedImage(data=b"\xff\xd8\xff\xe0", mime_type="image/jpeg", width=1, height=1, digest="")
NOW = datetime(2026, 11, 21, 12, tzinfo=UTC)


def answer(
    status: int,
    body: Any = None,
    *,
    text: str | None = None,
    headers: dict[str, str] | None = None,
    request: httpx.Request | None = None,
) -> httpx.Response:
    request = request or PROVIDER.credits_request()
    if text is not None:
        return httpx.Response(status, text=text, headers=headers, request=request)
    content = b"" if body is None else json.dumps(body).encode()
    all_headers = {"content-type": "application/json", **(headers or {})}
    return httpx.Response(status, content=content, headers=all_headers, request=request)


SEARCH = PROVIDER.search_request(SearchQuery(image=JPEG))
URL_SEARCH = PROVIDER.url_search_request("https://example.com/a.png")
KEY_SEARCH = KEYED.search_request(SearchQuery(image=JPEG))
SIGN_IN = PROVIDER.sign_in_request("a@b.example", "pw")

TABLE: list[tuple[httpx.Response, type[ProviderError], str]] = [
    # better-auth, real statuses
    (
        answer(
            401,
            {"code": "INVALID_EMAIL_OR_PASSWORD", "message": "Invalid email or password"},
            request=SIGN_IN,
        ),
        AuthenticationError,
        "sign-in refused: Invalid email or password",
    ),
    (answer(401), AuthenticationError, "anisearch login"),  # better-auth <= 1.4: empty body
    (
        answer(401, {"code": "UNAUTHORIZED", "message": "Unauthorized"}),
        AuthenticationError,
        "session expired",
    ),
    (
        answer(403, {"code": "EMAIL_NOT_VERIFIED", "message": "Email not verified"}, request=SIGN_IN),
        AuthenticationError,
        "verify",
    ),
    (
        answer(403, {"code": "MISSING_OR_NULL_ORIGIN", "message": "Missing or null Origin"}, request=SIGN_IN),
        AuthenticationError,
        "ANISEARCH_WHATANIMEISTHIS_ORIGIN",
    ),
    (
        answer(403, {"code": "INVALID_ORIGIN", "message": "Invalid origin"}, request=SIGN_IN),
        AuthenticationError,
        "origin",
    ),
    (
        answer(400, {"code": "VALIDATION_ERROR", "message": "[body.email] Invalid input"}, request=SIGN_IN),
        BadRequestError,
        "body.email",
    ),
    (
        answer(415, {"code": "UNSUPPORTED_MEDIA_TYPE", "message": "Unsupported"}, request=SIGN_IN),
        BadRequestError,
        "Unsupported",
    ),
    (
        answer(
            429,
            {"message": "Too many requests. Please try again later."},
            headers={"X-Retry-After": "7"},
            request=SIGN_IN,
        ),
        SignInRateLimitedError,
        "too many sign-ins: Too many requests",
    ),
    (
        answer(
            401,
            {"code": "RATE_LIMITED", "message": "Rate limited", "details": {"tryAgainIn": 1500}},
            request=KEY_SEARCH,
        ),
        RateLimitedError,
        "Rate limited",
    ),
    (
        answer(
            429,
            {"code": "USAGE_EXCEEDED", "message": "API Key has reached its usage limit"},
            request=KEY_SEARCH,
        ),
        QuotaExhaustedError,
        "usage limit",
    ),
    (
        answer(401, {"code": "INVALID_API_KEY", "message": "Invalid API key."}, request=KEY_SEARCH),
        AuthenticationError,
        "the API key was refused",
    ),
    # the site's own JSON, real statuses
    (answer(402, {"error": "Payment required"}, request=SEARCH), QuotaExhaustedError, "Payment required"),
    (
        answer(403, {"error": "Daily limit reached for guests"}, request=SEARCH),
        QuotaExhaustedError,
        "Daily limit",
    ),
    (answer(429, {"error": "You are out of credits"}, request=SEARCH), QuotaExhaustedError, "credits"),
    (
        answer(429, {"error": "Too many searches"}, request=SEARCH, headers={"Retry-After": "30"}),
        RateLimitedError,
        "Too many searches",
    ),
    (answer(403, {"error": "Forbidden"}, request=KEY_SEARCH), AuthenticationError, "Forbidden"),
    (
        answer(400, {"errors": [{"message": "image is required"}]}, request=SEARCH),
        BadRequestError,
        "image is required",
    ),
    (answer(422, {"detail": "bad url"}, request=URL_SEARCH), BadRequestError, "bad url"),
    (
        answer(400, {"error": "Failed to fetch image"}, request=URL_SEARCH),
        ImageFetchError,
        "Failed to fetch image",
    ),
    (answer(404, text="<!DOCTYPE html><title>404</title>"), BadRequestError, "404"),
    (answer(413, text="Request Entity Too Large", request=SEARCH), ImageTooLargeError, "too large"),
    (answer(500), ProviderServerError, "Internal Server Error"),
    (answer(502, text="<html>Bad gateway</html>"), ProviderServerError, "Bad gateway"),
    (answer(503, {"error": "Search queue is full"}, request=SEARCH), ProviderBusyError, "queue"),
    (
        answer(
            403, text="<html>Just a moment...</html>", headers={"cf-ray": "8a1b2c3d4e5f-NRT"}, request=SEARCH
        ),
        ProviderServerError,
        "blocked by the site's CDN",
    ),
    # the template envelope: errors with HTTP 200
    (answer(200, {"code": -1, "message": "Unauthorized"}), AuthenticationError, "Unauthorized"),
    (
        answer(200, {"code": -1, "message": "Insufficient credits"}, request=SEARCH),
        QuotaExhaustedError,
        "credits",
    ),
    (
        answer(200, {"code": "-1", "message": "Too many requests"}, request=SEARCH),
        RateLimitedError,
        "Too many",
    ),
    (answer(200, {"code": 401, "msg": "login required"}), AuthenticationError, "login required"),
    (answer(200, {"code": -1, "message": "Internal error"}, request=SEARCH), ProviderServerError, "Internal"),
    (
        answer(200, {"code": "error", "message": "Invalid image"}, request=SEARCH),
        BadRequestError,
        "Invalid image",
    ),
    (answer(200, {"success": False, "error": {"code": "BAD", "message": "Nope"}}), BadRequestError, "Nope"),
    (answer(200, {"error": "Something broke"}, request=SEARCH), BadRequestError, "Something broke"),
]


@pytest.mark.parametrize(("response", "expected", "words"), TABLE)
def test_error_table(response: httpx.Response, expected: type[ProviderError], words: str) -> None:
    error = error_for(response)
    assert type(error) is expected
    assert error is not None
    assert words in str(error)
    assert error.provider == "whatanimeisthis"
    assert error.status_code == response.status_code


_NGINX_504 = (
    "<html>\r\n<head><title>504 Gateway Time-out</title></head>\r\n<body>\r\n<center><h1>504 Gateway"
    " Time-out</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
_NEXT_500 = (
    '<!DOCTYPE html><html><head><meta charSet="utf-8"/><title>500: Internal Server Error</title>'
    '<script src="/_next/static/chunks/main.js"></script></head><body><div id="__next"><h1>500</h1>'
    '<h2>Internal Server Error.</h2></div><script id="__NEXT_DATA__" type="application/json">'
    '{"props":{"pageProps":{"statusCode":500}},"page":"/_error"}</script></body></html>'
)


@pytest.mark.parametrize(
    ("page", "said"),
    [
        (_NEXT_500, "whatanimeisthis: 500: Internal Server Error (HTTP 500)"),
        (_NGINX_504, "whatanimeisthis: 504 Gateway Time-out (HTTP 504)"),
    ],
)
def test_an_html_error_page_says_its_title_not_its_markup(page: str, said: str) -> None:
    """The site's own error page (Next.js) or a proxy's, in an outage: the message was the page's first
    200 characters of markup (``<!DOCTYPE html><html><head><meta charSet=...``)."""
    status = int(said.rsplit("HTTP ", 1)[1].rstrip(")"))
    error = error_for(answer(status, text=page, headers={"content-type": "text/html; charset=utf-8"}))
    assert isinstance(error, ProviderServerError)
    assert str(error) == said


def test_errors_raise_from_every_parser() -> None:
    parsers = [
        PROVIDER.parse_search,
        PROVIDER.parse_rankings,
        PROVIDER.parse_recent_searches,
        PROVIDER.parse_credits,
        PROVIDER.parse_api_keys,
        PROVIDER.parse_created_api_key,
        PROVIDER.parse_sign_in,
        PROVIDER.parse_session,
    ]
    for parse in parsers:
        with pytest.raises(QuotaExhaustedError):
            parse(answer(200, {"code": -1, "message": "Insufficient credits"}))


def test_successes_and_success_envelopes_are_not_errors() -> None:
    bodies: list[Any] = [
        {"code": 0, "message": "ok", "data": []},
        {"success": True, "data": 1},
        {"code": 200, "data": {}},
        {"error": "", "result": []},
        {"code": "SOME_CODE", "results": []},
        None,
        [],
    ]
    for body in bodies:
        assert error_for(answer(200, body)) is None


def test_a_sign_in_429_says_when_to_sign_in_again_and_only_a_sign_in_429_is_one() -> None:
    """§2.7: better-auth's sign-in limit (3 per 10 s per address) answers 429 with ``X-Retry-After``, or,
    where a proxy dropped it, nothing: then its 10 s window is the wait. A 429 from anywhere else (the
    site's hourly search cap, get-session) is a plain rate limit."""
    body = {"message": "Too many requests. Please try again later."}
    told = error_for(answer(429, body, headers={"X-Retry-After": "4"}, request=SIGN_IN))
    assert isinstance(told, SignInRateLimitedError)
    assert told.retry_after == 4
    silent = error_for(answer(429, body, request=SIGN_IN))
    assert isinstance(silent, SignInRateLimitedError)
    assert silent.retry_after == 10
    for request in (SEARCH, PROVIDER.session_request()):
        other = error_for(answer(429, body, headers={"Retry-After": "30"}, request=request))
        assert type(other) is RateLimitedError


def test_rate_limit_and_quota_errors_carry_the_wait() -> None:
    error = error_for(
        answer(429, {"message": "Too many requests"}, headers={"X-Retry-After": "7", "Retry-After": "99"})
    )
    assert error is not None
    assert error.retry_after == 7
    error = error_for(answer(401, {"code": "RATE_LIMITED", "details": {"tryAgainIn": 1500}}))
    assert error is not None
    assert error.retry_after == 1.5


@pytest.mark.parametrize(
    ("headers", "body", "seconds"),
    [
        ({"X-Retry-After": "7", "Retry-After": "99"}, None, 7.0),
        ({"Retry-After": "120"}, None, 120.0),
        (
            {"Retry-After": format_datetime(datetime(2026, 11, 21, 12, 1, 30, tzinfo=UTC), usegmt=True)},
            None,
            90.0,
        ),
        ({"RateLimit-Reset": "30"}, None, 30.0),
        ({"X-RateLimit-Reset": str(int(NOW.timestamp()) + 45)}, None, 45.0),
        ({"X-RateLimit-Reset": str(int(NOW.timestamp() * 1000) + 5000)}, None, 5.0),
        ({}, {"details": {"tryAgainIn": 2500}}, 2.5),
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, None, 0.0),  # already past
        ({}, {"message": "x"}, None),
    ],
)
def test_retry_after_reads_every_source_in_order(
    headers: dict[str, str], body: Any, seconds: float | None
) -> None:
    assert retry_after(answer(429, body, headers=headers), now=NOW) == seconds


# ---------------------------------------------------------------- tolerant coercions


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.93, 0.93),
        (1, 1.0),
        (93, 0.93),
        ("97.5", 0.975),
        ("83%", 0.83),
        (100, 1.0),
        (101, None),
        (-0.1, None),
        (True, None),
        ("high", None),
        (float("nan"), None),
    ],
)
def test_similarity_fractions_and_percentages(value: Any, expected: float | None) -> None:
    assert as_similarity(value) == expected


def test_an_answer_in_percent_reads_a_weak_hit_under_one_percent_as_weak() -> None:
    """An answer sends one scale: beside 12.5 (%), a junk hit's 0.95 is 0.95 %, not a 95 % match."""
    hits = [
        {"anilist_id": 11887, "title_romaji": "Kokoro Connect", "from": 1169, "similarity": 12.5},
        {"anilist_id": 21, "title_romaji": "ONE PIECE", "from": 714, "similarity": 0.95},
    ]
    found = PROVIDER.parse_search(answer(200, {"results": hits}, request=SEARCH))
    assert [(hit.anilist_id, hit.similarity) for hit in found.hits] == [(11887, 0.125), (21, 0.0095)]
    assert SearchResult(hits=found.hits).match is None
    recent = PROVIDER.parse_recent_searches(
        answer(200, {"searches": hits}, request=PROVIDER.recent_searches_request(20, 0))
    )
    assert [entry.similarity for entry in recent.items] == [0.125, 0.0095]
    # a "%" among them says it as plainly
    hits[0]["similarity"] = "95%"
    found = PROVIDER.parse_search(answer(200, {"results": hits}, request=SEARCH))
    assert [hit.similarity for hit in found.hits] == [0.95, 0.0095]
    # fractions alone stay fractions
    hits[0]["similarity"] = 0.97
    found = PROVIDER.parse_search(answer(200, {"results": hits}, request=SEARCH))
    assert [hit.similarity for hit in found.hits] == [0.97, 0.95]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (616.5, 616.5),
        ("616.5", 616.5),
        ("00:10:16.5", 616.5),
        ("10:16.5", 616.5),
        ("1:00:00", 3600.0),
        ("10:99", None),
        ("soon", None),
        (-3, None),
        (None, None),
    ],
)
def test_times_in_seconds_or_clock_text(value: Any, expected: float | None) -> None:
    assert as_seconds(value) == expected


def test_millisecond_fields_are_divided() -> None:
    assert pick_seconds({"fromMs": 615200}, "from") == 615.2
    assert pick_seconds({"from_ms": "1500"}, "from") == 1.5
    assert pick_seconds({"from": 3, "fromMs": 9000}, "from") == 9.0
    assert pick_seconds({"start_time": "00:00:02"}, "from", "startTime") == 2.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-21T10:00:00Z", datetime(2026, 11, 21, 10, tzinfo=UTC)),
        ("2026-11-21T19:00:00+09:00", datetime(2026, 11, 21, 10, tzinfo=UTC)),
        ("2026-11-21 10:00:00", datetime(2026, 11, 21, 10, tzinfo=UTC)),
        (1763719200, datetime(2025, 11, 21, 10, tzinfo=UTC)),
        (1763719200000, datetime(2025, 11, 21, 10, tzinfo=UTC)),
        ("yesterday", None),
        (10**30, None),
        (-5, None),
    ],
)
def test_dates_iso_or_epoch_by_magnitude(value: Any, expected: datetime | None) -> None:
    assert as_datetime(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, True),
        (0, False),
        (1, True),
        ("true", True),
        ("FALSE", False),
        ("yes", True),
        ("0", False),
        ("maybe", None),
        (2, None),
        (None, None),
    ],
)
def test_booleans_in_several_forms(value: Any, expected: bool | None) -> None:
    assert as_bool(value, loose=True) is expected


def test_envelopes_are_peeled_and_lists_found() -> None:
    assert unwrap({"code": 0, "message": "ok", "data": [1]}) == ([1], {"code": 0, "message": "ok"})
    assert unwrap({"data": {"a": 1}, "total": 3}) == ({"a": 1}, {"total": 3})
    assert unwrap({"data": [1], "remainingCredits": 2}) == ({"data": [1], "remainingCredits": 2}, {})
    assert unwrap([1]) == ([1], {})
    assert find_list({"rankings": [1], "other": [2]}) == [1]
    assert find_list({"whatever": [3]}) == [3]
    assert find_list({"a": [1], "b": [2]}) is None
    assert find_list({"data": {"items": [4]}}) == [4]


# ---------------------------------------------------------------- fuzz

_KEYS = st.sampled_from(
    [
        "results",
        "data",
        "items",
        "rankings",
        "code",
        "message",
        "success",
        "error",
        "details",
        "tryAgainIn",
        "similarity",
        "anilistId",
        "anilist",
        "title",
        "from",
        "to",
        "at",
        "fromMs",
        "episode",
        "credits",
        "remainingCredits",
        "key",
        "apiKey",
        "id",
        "total",
        "hasMore",
        "nextCursor",
        "createdAt",
        "timestamp",
        "user",
        "session",
        "rank",
        "count",
        "isAdult",
        "start",
        "status",
        "pagination",
        "meta",
    ]
)
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**20), max_value=10**20)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["00:10:16.5", "97%", "-1", "2026-11-21T10:00:00Z", "sk-…abcd", "true"])
)
_JSON = st.recursive(
    _SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(_KEYS | st.text(max_size=6), children, max_size=5)
    ),
    max_leaves=25,
)
_REQUESTS = [
    (PROVIDER.search_request(SearchQuery(image=JPEG)), PROVIDER.parse_search),
    (PROVIDER.rankings_request("all", 3, include_adult=False), PROVIDER.parse_rankings),
    (PROVIDER.recent_searches_request(2, 4), PROVIDER.parse_recent_searches),
    (PROVIDER.credits_request(), PROVIDER.parse_credits),
    (PROVIDER.api_keys_request(2, 2), PROVIDER.parse_api_keys),
    (PROVIDER.create_api_key_request("bot"), PROVIDER.parse_created_api_key),
    (PROVIDER.session_request(), PROVIDER.parse_session),
    (PROVIDER.sign_in_request("a@b.example", "pw"), PROVIDER.parse_sign_in),
    (PROVIDER._sign_out_post(), PROVIDER.parse_sign_out),  # the request sent when a session is stored
]


@settings(max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=_JSON,
    status=st.sampled_from([200, 201, 204, 400, 401, 402, 403, 404, 413, 415, 422, 429, 500, 502, 503]),
    which=st.integers(min_value=0, max_value=len(_REQUESTS) - 1),
    raw_text=st.booleans(),
)
def test_no_body_makes_a_parser_raise_anything_but_an_anisearch_error(
    body: Any, status: int, which: int, raw_text: bool
) -> None:
    request, parse = _REQUESTS[which]
    content = json.dumps(body).encode() if not raw_text else str(body).encode()
    response = httpx.Response(
        status, content=content, headers={"content-type": "application/json"}, request=request
    )
    assert isinstance(PROVIDER.observe(response), list)
    with contextlib.suppress(AnisearchError):
        parse(response)


@settings(max_examples=examples(100), deadline=None)
@given(
    content=st.binary(max_size=64),
    status=st.sampled_from([200, 401, 429, 500]),
    which=st.integers(0, len(_REQUESTS) - 1),
)
def test_no_bytes_make_a_parser_raise_anything_but_an_anisearch_error(
    content: bytes, status: int, which: int
) -> None:
    request, parse = _REQUESTS[which]
    response = httpx.Response(status, content=content, request=request)
    assert isinstance(PROVIDER.observe(response), list)
    with contextlib.suppress(AnisearchError):
        parse(response)


def test_a_spent_day_frees_when_the_site_says_not_at_the_ledgers_midnight() -> None:
    """The site's day ends at its own midnight, which its 429 gives as Retry-After: that is the day's
    reset the ledger is told (it used ANISEARCH_TIMEZONE's midnight, and skipped whatanimeisthis for hours
    after the site had reset)."""
    from anisearch_providers.whatanimeisthis._quota import observe

    response = answer(
        429, {"message": "Daily search limit reached"}, headers={"Retry-After": "30600"}, request=SEARCH
    )
    (day,) = [q for q in observe(response, "guest", now=NOW) if q.window == "day"]
    assert day.remaining == 0
    assert day.resets_at == NOW + timedelta(seconds=30600)


def test_the_sites_day_ends_at_midnight_utc_whatever_the_ledgers_zone(tmp_path: Path) -> None:
    from anisearch.provider import ProviderContext

    keyed = WhatAnimeIsThis.from_context(ProviderContext(config={"key": "sk-abc"}, state_dir=tmp_path))
    for provider in (WhatAnimeIsThis(), keyed):
        (day,) = [w for w in provider.windows() if w.name == "day"]
        assert day.timezone == "UTC"

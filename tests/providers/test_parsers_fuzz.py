"""Every provider's response readers meet arbitrary answers: only anisearch exceptions may escape.

Hypothesis drives each parse function with arbitrary statuses, headers (the timing and rate-limit headers
the readers look at, with absurd values) and bodies (bytes, JSON of any shape, JSON nested far too
deep). A reader may refuse an answer, but only with an :class:`~anisearch.AnisearchError` (an
``UpstreamResponseError`` or the specific class the answer means), never a bare Python exception; and
``observe`` never raises at all.
"""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.properties import examples

from anisearch import AnisearchError
from anisearch._image import PreparedImage
from anisearch._provider import SearchQuery
from anisearch_providers.tracemoe import TraceMoe
from anisearch_providers.whatanime_ga import WhatanimeGa
from anisearch_providers.whatanimeisthis import WhatAnimeIsThis

if TYPE_CHECKING:
    from collections.abc import Callable

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
HEADER_NAMES = (
    "retry-after", "x-retry-after", "ratelimit-reset", "x-ratelimit-reset", "ratelimit-limit",
    "ratelimit-remaining", "x-ratelimit-limit", "x-ratelimit-remaining", "ratelimit-policy", "date",
    "content-type", "set-cookie", "x-whatanime-quota", "x-whatanime-quota-ttl", "x-whatanime-limit",
    "x-whatanime-limit-ttl", "cf-ray",
)  # fmt: skip
ABSURD = (
    "99999999999999999999", "-5", "1e999", "NaN", "-0", "Thu, 01 Jan 2099 00:00:00 GMT", "9" * 5000,
    "0x10", "²", "Mon, 99 Foo 99999 99:99:99 GMT", "", " ", "100;w=99999999999999999999",
)  # fmt: skip

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    | st.sampled_from(ABSURD),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "quota",
                    "quotaUsed",
                    "result",
                    "results",
                    "error",
                    "frameCount",
                    "similarity",
                    "anilist",
                    "from",
                    "to",
                    "at",
                    "episode",
                    "id",
                    "code",
                    "message",
                    "data",
                    "credits",
                    "remainingCredits",
                    "items",
                    "key",
                    "user",
                    "session",
                    "docs",
                    "limit",
                    "limit_ttl",
                    "quota_ttl",
                    "priority",
                    "concurrency",
                    "time",
                    "total",
                    "200",
                    "²",
                    "details",
                    "tryAgainIn",
                    "success",
                    "title",
                    "rankings",
                    "expiresAt",
                    "email",
                    "video",
                    "image",
                    "duration",
                    "episode_start",
                ]
            )
            | st.text(max_size=8),
            children,
            max_size=6,
        )
    ),
    max_leaves=25,
)


def _deep(depth: int, kind: str) -> bytes:
    if kind == "list":
        return b"[" * depth + b"]" * depth
    return b'{"result":' * depth + b"1" + b"}" * depth


bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.builds(_deep, st.sampled_from([50, 500, 3_000]), st.sampled_from(["list", "dict"])),
    st.sampled_from([b"<html><pre>Internal Server Error</pre></html>", b"\xff\xfe{", b"null", b'"x"']),
)
header_values = st.sampled_from(ABSURD) | st.text(
    st.characters(min_codepoint=32, max_codepoint=255), max_size=40
)
headers = st.lists(st.tuples(st.sampled_from(HEADER_NAMES), header_values), max_size=6)
statuses = st.integers(min_value=100, max_value=599) | st.sampled_from([200, 200, 402, 429, 500, 503])


def _image() -> PreparedImage:
    data = b"\xff\xd8\xff" + b"0" * 64
    return PreparedImage(data=data, mime_type="image/jpeg", width=8, height=8, digest="0" * 64)


def _answer(
    request: httpx.Request, status: int, header_list: list[tuple[str, str]], body: bytes
) -> httpx.Response:
    raw = [(name.encode(), value.encode()) for name, value in header_list]  # UTF-8 bytes: readers must cope
    return httpx.Response(status, headers=raw, content=body, request=request)


def _check(call: Callable[[], Any]) -> None:
    with contextlib.suppress(AnisearchError):  # a refusal is fine; anything else fails the test
        call()


FUZZ = settings(
    max_examples=examples(150), deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)


@FUZZ
@given(status=statuses, header_list=headers, body=bodies)
def test_tracemoe_readers_raise_only_anisearch_errors(
    status: int, header_list: list[tuple[str, str]], body: bytes
) -> None:
    provider = TraceMoe(clock=lambda: NOW)
    search = provider.search_request(SearchQuery(image=_image()))
    answer = _answer(search, status, header_list, body)
    _check(lambda: provider.parse_search(answer))
    _check(lambda: provider.parse_search_batch(answer))
    me = _answer(provider.quota_request(), status, header_list, body)
    _check(lambda: provider.parse_quota(me))
    _check(lambda: provider.parse_usage(me))
    provider.observe(answer)
    provider.observe(me)


@FUZZ
@given(status=statuses, header_list=headers, body=bodies)
def test_whatanime_ga_readers_raise_only_anisearch_errors(
    status: int, header_list: list[tuple[str, str]], body: bytes
) -> None:
    provider = WhatanimeGa(base_url="https://whatanime.example", token="t")
    search = provider.search_request(SearchQuery(image=_image()))
    answer = _answer(search, status, header_list, body)
    _check(lambda: provider.parse_search(answer))
    request = provider.quota_request()
    if request is not None:
        _check(lambda: provider.parse_quota(_answer(request, status, header_list, body)))
    provider.observe(answer)


@settings(FUZZ, max_examples=examples(60))
@given(status=statuses, header_list=headers, body=bodies)
def test_whatanimeisthis_readers_raise_only_anisearch_errors(
    status: int, header_list: list[tuple[str, str]], body: bytes
) -> None:
    provider = WhatAnimeIsThis(email="user@example.com", password="pw")
    calls: list[tuple[httpx.Request, Callable[[httpx.Response], Any]]] = [
        (provider.search_request(SearchQuery(image=_image())), provider.parse_search),
        (provider.credits_request(), provider.parse_quota),
        (provider.credits_request(), provider.parse_credits),
        (provider.rankings_request("all", 5, include_adult=False), provider.parse_rankings),
        (provider.recent_searches_request(5, 0), provider.parse_recent_searches),
        (provider.api_keys_request(1, 20), provider.parse_api_keys),
        (provider.create_api_key_request("bot"), provider.parse_created_api_key),
        (provider.sign_in_request("user@example.com", "pw"), provider.parse_sign_in),
        (provider.session_request(), provider.parse_session),
        (provider._sign_out_post(), provider.parse_sign_out),  # sign_out_request() when a session is stored
    ]
    for request, parse in calls:
        answer = _answer(request, status, header_list, body)
        _check(lambda parse=parse, answer=answer: parse(answer))  # type: ignore[misc]
        provider.observe(answer)


@pytest.mark.parametrize("value", ["99999999999999999999", "Thu, 01 Jan 2099 00:00:00 GMT", "1e308"])
def test_tracemoe_caps_a_far_retry_after_at_a_day(value: str) -> None:
    from anisearch import RateLimitedError

    provider = TraceMoe(clock=lambda: NOW)
    answer = httpx.Response(
        429, headers={"retry-after": value}, content=b"Too many requests, please try again later.",
        request=provider.quota_request(),
    )  # fmt: skip
    with pytest.raises(RateLimitedError) as caught:
        provider.parse_quota(answer)
    assert caught.value.retry_after == 86_400
    (rate,) = provider.observe(answer)
    assert rate.cooldown_until is not None
    assert (rate.cooldown_until - NOW).total_seconds() == 86_400


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "Thu, 01 Jan 2099 00:00:00 GMT"}, 86_400),
        ({"x-retry-after": "99999999999999999999"}, 86_400),
        ({"retry-after": "-30"}, 10),  # a wait already over: better-auth's window, never "now"
        ({"x-retry-after": "7"}, 7),
    ],
)
def test_whatanimeisthis_caps_retry_after_at_a_day(headers: dict[str, str], expected: float) -> None:
    from anisearch import RateLimitedError

    provider = WhatAnimeIsThis()
    answer = httpx.Response(
        429,
        headers=headers,
        json={"message": "Too many requests. Please try again later."},
        request=provider.sign_in_request("user@example.com", "pw"),
    )
    with pytest.raises(RateLimitedError) as caught:
        provider.parse_sign_in(answer)
    assert caught.value.retry_after == expected
    assert provider.observe(answer) == []  # a limit on signing in: no search window, no cooldown


@pytest.mark.parametrize(
    "body",
    [
        {"quota": -5, "quotaUsed": 1, "frameCount": 1, "error": "", "result": []},
        {"quota": 100, "quotaUsed": 1.5, "frameCount": 1, "error": "", "result": []},
        {"quota": 10**40, "quotaUsed": 1, "frameCount": 1, "error": "", "result": []},
    ],
)
def test_tracemoe_impossible_counts_are_an_upstream_response_error(body: dict[str, Any]) -> None:
    from anisearch import UpstreamResponseError

    provider = TraceMoe(clock=lambda: NOW)
    search = provider.search_request(SearchQuery(image=_image()))
    with pytest.raises(UpstreamResponseError, match="not a count"):
        provider.parse_search(httpx.Response(200, json=body, request=search))
    with pytest.raises(UpstreamResponseError, match="not a count"):
        provider.parse_quota(httpx.Response(200, json=body, request=provider.quota_request()))
    spent = httpx.Response(402, json={**body, "error": "Search quota depleted"}, request=search)
    with pytest.raises(UpstreamResponseError, match="impossible numbers"):
        provider.parse_search(spent)
    assert all(quota.window != "rolling-24h" for quota in provider.observe(spent))


def test_json_nested_100000_deep_is_an_upstream_response_error() -> None:
    from anisearch import UpstreamResponseError

    deep = b"[" * 100_000 + b"]" * 100_000
    tracemoe = TraceMoe(clock=lambda: NOW)
    search = tracemoe.search_request(SearchQuery(image=_image()))
    with pytest.raises(UpstreamResponseError):
        tracemoe.parse_search(httpx.Response(200, content=deep, request=search))
    with pytest.raises(AnisearchError):
        tracemoe.parse_search(httpx.Response(500, content=deep, request=search))
    legacy = WhatanimeGa(base_url="https://whatanime.example", token="t")
    with pytest.raises(UpstreamResponseError):
        legacy.parse_search(
            httpx.Response(200, content=deep, request=legacy.search_request(SearchQuery(image=_image())))
        )
    site = WhatAnimeIsThis()
    with pytest.raises(AnisearchError):
        site.parse_search(
            httpx.Response(200, content=deep, request=site.search_request(SearchQuery(image=_image())))
        )


@pytest.mark.parametrize("value", ["-5", "99999999999999999999", "1e999"])
def test_absurd_rate_limit_counts_are_never_recorded(value: str) -> None:
    headers = {"ratelimit-limit": value, "ratelimit-remaining": value, "x-ratelimit-limit": value}
    tracemoe = TraceMoe(clock=lambda: NOW)
    site = WhatAnimeIsThis()
    for provider, request in (
        (tracemoe, tracemoe.quota_request()),
        (site, site.rankings_request("all", 5, include_adult=False)),
    ):
        observed = provider.observe(httpx.Response(200, headers=headers, json={}, request=request))
        assert all((quota.limit or 0) >= 0 and (quota.remaining or 0) >= 0 for quota in observed)
        assert all(quota.limit is None or quota.limit < 2**31 for quota in observed)

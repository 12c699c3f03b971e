"""The provider SDK (anisearch.provider): the one copy of each helper every provider relies on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any, ClassVar

import httpx
import pytest

import anisearch.provider as sdk
from anisearch._redact import redact
from anisearch.provider import (
    BaseProvider,
    ConfigurationError,
    ErrorRule,
    PreparedImage,
    ProviderContext,
    QuotaExhaustedError,
    RateLimitedError,
    WindowSpec,
    as_bool,
    as_episode,
    as_float,
    as_int,
    as_str,
    first_rule,
    http_base_url,
    page_of,
    rate_limit_quota,
    retry_after_seconds,
    statuses,
    user_agent,
    validate_settings,
)
from anisearch_providers.tracemoe import TraceMoe
from anisearch_providers.whatanimeisthis import WhatAnimeIsThis

NOW = datetime(2026, 12, 2, 12, 0, 0, tzinfo=UTC)


class Plain(BaseProvider):
    name: ClassVar[str] = "plain"
    default_url: ClassVar[str] = "https://plain.example/"

    def windows(self) -> list[WindowSpec]:
        return [
            WindowSpec("day", calendar="day", limit=50),
            WindowSpec("minute", span_seconds=60, counts="requests", kind="rate", limit=30),
            WindowSpec("hour", span_seconds=3600, kind="rate"),
        ]


class Unset(BaseProvider):
    name: ClassVar[str] = "unset"


def headers(**values: str) -> httpx.Headers:
    return httpx.Headers({name.replace("_", "-"): value for name, value in values.items()})


# ---------------------------------------------------------------- coercion


@pytest.mark.parametrize(
    ("value", "expected"),
    [(5, 5), (5.0, 5), ("18", 18), (" 18 ", 18), ("18.0", 18), ("1e3", 1000), (5.5, None), (True, None),
     ("1_000", None), ("0x10", None), ("nan", None), (None, None), ("9" * 30, int("9" * 30))],
)  # fmt: skip
def test_as_int_reads_whole_numbers_only(value: Any, expected: int | None) -> None:
    assert as_int(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1169.17", 1169.17), (3, 3.0), ("inf", None), (float("nan"), None), (False, None), ("", None),
     ("1.", 1.0), (".5", 0.5), ("-2.5e-1", -0.25), ("1..5", None),
     ("9" * 5000 + ", 100;w=60", None)],  # a header sent twice, joined: refused, and in linear time
)  # fmt: skip
def test_as_float_reads_finite_numbers(value: Any, expected: float | None) -> None:
    assert as_float(value) == expected


def test_as_str_and_as_bool_are_strict_unless_asked() -> None:
    assert as_str(" ") is None
    assert as_str(42) is None
    assert as_str(42, ids=True) == "42"
    assert as_bool("true") is None
    assert as_bool("YES", loose=True) is True
    assert as_bool(0, loose=True) is False
    assert as_bool("maybe", loose=True) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [(5, 5), (5.0, 5), (16.5, 16.5), ("5|17", "5|17"), (" OVA ", "OVA"), ("", None), ([1, 2.0], [1, 2]),
     ([1, {}], None), (True, None), (float("inf"), None), ({"n": 1}, None)],
)  # fmt: skip
def test_as_episode_keeps_what_the_upstream_meant(value: Any, expected: Any) -> None:
    assert as_episode(value) == expected


# ---------------------------------------------------------------- waits


def test_retry_after_reads_the_first_header_that_says() -> None:
    assert retry_after_seconds(headers(x_retry_after="3", retry_after="9"), NOW) == 3
    later = format_datetime(NOW + timedelta(seconds=90), usegmt=True)
    assert retry_after_seconds(headers(retry_after=later), NOW) == 90
    assert retry_after_seconds(headers(retry_after="-5"), NOW) == 0  # a wait in the past means now
    assert retry_after_seconds(headers(retry_after="10" * 20), NOW) == sdk.MAX_RETRY_AFTER_SECONDS


def test_retry_after_falls_back_to_named_and_reset_headers() -> None:
    ttl = headers(x_whatanime_limit_ttl="-1", x_whatanime_quota_ttl="40")
    assert retry_after_seconds(ttl, NOW, also=("x-whatanime-limit-ttl", "x-whatanime-quota-ttl")) == 40
    assert retry_after_seconds(headers(ratelimit_reset="12"), NOW) == 12
    epoch = str(int(NOW.timestamp()) + 30)
    assert retry_after_seconds(headers(x_ratelimit_reset=epoch), NOW) == 30
    assert retry_after_seconds(headers(x_ratelimit_reset=epoch + "000"), NOW) == 30  # milliseconds
    assert retry_after_seconds(headers(ratelimit_reset="12"), NOW, fallback_to_reset=False) is None
    assert retry_after_seconds(headers(), NOW) is None


def test_rate_limit_headers_become_a_quota() -> None:
    response = httpx.Response(
        200,
        headers={
            "RateLimit-Limit": "100",
            "RateLimit-Remaining": "7",
            "RateLimit-Reset": "30",
            "RateLimit-Policy": "100;w=3600",
            "Date": format_datetime(NOW - timedelta(seconds=10), usegmt=True),
        },
    )
    quota = rate_limit_quota(response, provider="p", scope="guest", now=NOW)
    assert quota is not None
    assert (quota.limit, quota.remaining, quota.used, quota.window) == (100, 7, 93, "hour")
    assert quota.resets_at == NOW + timedelta(seconds=20)  # 30 s after the answer's Date
    assert quota.source == "headers"


def test_impossible_or_absent_rate_limit_headers_say_nothing() -> None:
    odd = httpx.Response(200, headers={"X-RateLimit-Limit": "5", "X-RateLimit-Remaining": "9"})
    quota = rate_limit_quota(odd, provider="p", scope="guest", now=NOW, default_window="day")
    assert quota is not None
    assert (quota.limit, quota.remaining, quota.window) == (5, None, "day")
    assert rate_limit_quota(httpx.Response(200), provider="p", scope="guest", now=NOW) is None
    absurd = httpx.Response(200, headers={"X-RateLimit-Remaining": "-3"})
    assert rate_limit_quota(absurd, provider="p", scope="guest", now=NOW) is None


# ---------------------------------------------------------------- settings and URLs


def test_base_urls_are_http_without_query() -> None:
    assert http_base_url(" https://api.example/v1/ ", "X_URL") == "https://api.example/v1"
    assert http_base_url("", "X_URL", allow_empty=True) == ""
    assert http_base_url("http://127.0.0.1:65535", "X_URL") == "http://127.0.0.1:65535"
    bad_urls = ("ftp://api.example", "https://api.example/?a=1", "not a url", "", "http://127.0.0.1:70000")
    for bad in (*bad_urls, "http://127.0.0.1:0"):  # a port no socket connects to
        with pytest.raises(ConfigurationError, match="X_URL"):
            http_base_url(bad, "X_URL")


@pytest.mark.parametrize(
    "url",
    [
        "https://api.trace.moe/?key=SECRET-KEY-123",
        "ftp://user:SECRET-KEY-123@example.com",
        "http://u:SECRET-KEY-123@h:99999",
        "user:SECRET-KEY-123@example.com",  # the scheme left off
        "http://user:SECRET-@KEY-123@example.com:0/",  # an @ in the password
    ],
)
def test_a_refused_base_url_never_shows_its_secret(url: str) -> None:
    """trace.moe once took ``?key=``: a key put in the URL must not reach logs through the error."""
    with pytest.raises(ConfigurationError) as caught:
        http_base_url(url, "X_URL")
    assert "SECRET" not in str(caught.value)
    assert "KEY-123" not in str(caught.value)
    assert "***" in str(caught.value)


def test_settings_refuse_unknown_keys_and_never_echo_a_value() -> None:
    assert (
        validate_settings("plain", sdk.ProviderSettings, {"url": "https://a.example", "key": None}).key
        is None
    )
    with pytest.raises(ConfigurationError, match=r"unknown plain setting\(s\): tokn; known: key, url"):
        validate_settings("plain", sdk.ProviderSettings, {"tokn": "x"})
    with pytest.raises(ConfigurationError, match="invalid plain setting") as caught:
        validate_settings("plain", sdk.ProviderSettings, {"key": ["sk-secret"]})
    assert "sk-secret" not in str(caught.value)


def test_whatanimeisthis_now_refuses_an_unknown_setting() -> None:
    with pytest.raises(ConfigurationError, match="unknown whatanimeisthis setting"):
        WhatAnimeIsThis.from_context(ProviderContext(config={"passwrod": "x"}))


def test_pages_infer_whether_more_exist() -> None:
    assert page_of([1, 2], total=5, has_more=None, first=0, size=2).has_more is True
    assert page_of([5], total=5, has_more=None, first=4, size=2).has_more is False
    assert page_of([1], total=None, has_more=None, first=0, size=2).has_more is False
    assert page_of([1, 2], total=None, has_more=None, first=0, size=2).has_more is None
    assert page_of([1, 2], total=None, has_more=True, first=0, size=9).has_more is True


# ---------------------------------------------------------------- error rules


def test_error_rules_match_prefix_code_status_and_more() -> None:
    rules: tuple[ErrorRule[str], ...] = (
        ErrorRule(QuotaExhaustedError, prefix="Search quota", ignore_case=True),
        ErrorRule(RateLimitedError, codes=frozenset({"RATE_LIMITED"})),
        ErrorRule(RateLimitedError, statuses(429), when=lambda subject: subject == "slow"),
        ErrorRule(sdk.BadRequestError, statuses(range(400, 500))),
    )
    assert first_rule(rules, "", status=500, message="SEARCH QUOTA gone") is rules[0]
    assert first_rule(rules, "", status=None, message="x", code="RATE_LIMITED") is rules[1]
    assert first_rule(rules, "slow", status=429, message="x") is rules[2]
    assert first_rule(rules, "fast", status=429, message="x") is rules[3]
    assert first_rule(rules, "", status=None, message="x") is None  # no status: no status row matches


# ---------------------------------------------------------------- BaseProvider


def test_a_cdn_challenge_is_an_html_403_with_cf_ray_and_never_the_sites_own_answer() -> None:
    """One test for every provider behind Cloudflare (trace.moe, whatanimeisthis.com)."""
    page = "<!DOCTYPE html><title>Just a moment...</title>"

    def answer(status: int, text: str, **headers: str) -> httpx.Response:
        return httpx.Response(status, text=text, headers=headers)

    assert sdk.cdn_challenge(answer(403, page, **{"cf-ray": "8f0a-NRT"}))
    assert not sdk.cdn_challenge(answer(403, '{"error": "Invalid API key"}', **{"cf-ray": "8f0a-NRT"}))
    assert not sdk.cdn_challenge(answer(403, "", **{"cf-ray": "8f0a-NRT"}))
    assert not sdk.cdn_challenge(answer(403, page))  # a 403 page of the site itself, not its CDN's
    assert not sdk.cdn_challenge(answer(503, page, **{"cf-ray": "8f0a-NRT"}))
    assert "CDN" in sdk.CDN_BLOCKED


def test_base_provider_defaults() -> None:
    provider = Plain.from_context(ProviderContext(config={"key": " sk-1 "}))
    assert provider.base_url == "https://plain.example"
    assert (provider.credential.scope, provider.credential.secret) == ("api-key", "sk-1")
    request = provider.request("GET", "/x", headers={"X-Extra": "1"})
    assert request.url == "https://plain.example/x"
    assert request.headers["user-agent"] == user_agent()
    assert request.headers["x-extra"] == "1"
    assert [(q.window, q.limit) for q in provider.assumed_quotas()] == [("day", 50), ("minute", 30)]
    assert provider.quota_request() is None
    assert provider.auth() is None
    image = PreparedImage(data=b"x", mime_type="image/jpeg", width=1, height=1, digest="ab" * 32)
    assert provider.cache_key(image) == "sha256:" + "ab" * 32
    seen = provider.observe(httpx.Response(200, headers={"X-RateLimit-Remaining": "3"}))
    assert [(q.window, q.remaining) for q in seen] == [("minute", 3)]
    with pytest.raises(ConfigurationError, match="unknown plain setting"):
        Plain.from_context(ProviderContext(config={"token": "t"}))


def test_a_provider_without_a_default_server_says_which_setting_to_set() -> None:
    provider = Unset()
    assert provider.base_url == ""
    with pytest.raises(ConfigurationError, match="ANISEARCH_UNSET_URL"):
        provider.request("GET", "/")
    with pytest.raises(NotImplementedError):
        provider.search_request(sdk.SearchQuery(image=PreparedImage(b"", "image/jpeg", 0, 0, "")))
    assert "secret" not in repr(Unset("https://user:secret@unset.example"))


def test_a_providers_credential_header_is_masked_in_logs() -> None:
    line = "(b'X-Scene-Key', b'sk-live-1')\nX-Scene-Key: sk-live-1"
    assert redact(line) == line  # not a secret until a provider says so

    class Keyed(BaseProvider):
        name: ClassVar[str] = "keyed"
        secret_headers: ClassVar[frozenset[str]] = frozenset({"X-Scene-Key"})

    assert "sk-live-1" not in redact(line)
    assert TraceMoe.secret_headers == {"x-trace-key"}  # declared by trace.moe's provider, not the core
    assert "sk-trace" not in redact("x-trace-key: sk-trace")


@pytest.mark.parametrize("text", [False, True])
def test_json_depth_limit_holds_however_many_brackets_the_body_has(text: bool) -> None:
    def nested(depth: int, padding: int = 0) -> bytes:  # ``padding`` more brackets, in a string
        return b"[" * depth + b'"' + b"[{" * padding + b'"' + b"]" * depth

    for body, deep in [
        (nested(sdk.MAX_JSON_DEPTH), False),
        (nested(sdk.MAX_JSON_DEPTH + 1), True),
        (nested(3, padding=sdk.MAX_JSON_DEPTH), False),  # more brackets than the limit, in a string
        (b'{"a": [' + b"{}," * 200 + b"{}]}", False),  # many objects, shallow
    ]:
        source = body.decode() if text else body
        if deep:
            with pytest.raises(ValueError, match="nested"):
                sdk.loads(source)
        else:
            assert sdk.loads(source) is not None


def test_http_dates_parse_alike_however_often_they_repeat() -> None:
    stamp = "Thu, 07 May 2026 11:15:01 GMT"
    first = sdk.http_date(stamp)
    assert first == datetime(2026, 5, 7, 11, 15, 1, tzinfo=UTC)
    assert sdk.http_date(stamp) == first
    assert sdk.http_date("Thu, 07 May 2026 11:15:02 GMT") == first + timedelta(seconds=1)
    assert sdk.http_date("not a date") is None
    assert sdk.http_date("") is None

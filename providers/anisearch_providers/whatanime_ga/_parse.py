"""Reading the legacy whatanime.ga answers: search bodies, quota facts, and error bodies.

The legacy API (``/api/search``, ``/api/me``; whatanime.ga 2017-2018, trace.moe 2018-2021) spoke in three
dialects over its life: plain-text errors (before 2019-02), JSON-encoded string errors (2019-02 on, with
a PHP quoting slip that left the 429 body as the literal ``"Search limit exceeded. Please wait
".$limit_ttl." seconds."``), and, behind the 2021 proxy, the new API's messages under a 500. Everything
here accepts all three.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

import httpx

from anisearch.provider import (
    MAX_COUNT,
    AuthenticationError,
    BadRequestError,
    ConcurrencyLimitError,
    ErrorRule,
    Hit,
    ImageFetchError,
    ImageTooLargeError,
    ProviderBusyError,
    ProviderError,
    ProviderServerError,
    Quota,
    QuotaExhaustedError,
    QuotaScope,
    QuotaSource,
    QuotaWindow,
    RateLimitedError,
    UpstreamResponseError,
    as_episode,
    as_float,
    as_int,
    as_str,
    capped_seconds,
    clamp_similarity,
    first_rule,
    request_of,
    retry_after_seconds,
    statuses,
    string_list,
    title_from,
    window_for,
)
from anisearch.provider import error_message as standard_error_message

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = [
    "classify_error",
    "error_message",
    "frames_searched",
    "parse_hit",
    "quotas_from_body",
    "quotas_from_headers",
]

_WAIT = re.compile(r"wait\s+(\d+(?:\.\d+)?)\s+seconds", re.IGNORECASE)
_PHP_PLACEHOLDER = re.compile(r'"\s*\.\s*\$\w+\s*\.\s*"')
"""The unexpanded ``".$limit_ttl."`` the 2019-2021 server left in its 429 text."""
_HTML_TITLE = re.compile(r"<title>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_SNIPPET = 200


# ---------------------------------------------------------------- quota facts


@dataclass(frozen=True, slots=True)
class _Fact:
    window: QuotaWindow
    remaining: int
    ttl: int | None
    limit: int | None = None


def _quota(
    fact: _Fact,
    *,
    provider: str,
    scope: QuotaScope,
    source: QuotaSource,
    now: datetime,
    raw: dict[str, Any],
    cooldown: bool,
) -> Quota:
    remaining = max(fact.remaining, 0)  # the server decrements past zero on every refused request
    ttl = capped_seconds(fact.ttl) if fact.ttl is not None and fact.ttl >= 0 else None  # at most a day
    resets_at = now + timedelta(seconds=ttl) if ttl is not None else None
    used = max(fact.limit - remaining, 0) if fact.limit is not None else None
    return Quota(
        provider=provider,
        scope=scope,
        limit=fact.limit,
        used=used,
        remaining=remaining,
        window=fact.window,
        resets_at=resets_at,
        cooldown_until=resets_at if cooldown and remaining == 0 else None,
        source=source,
        observed_at=now,
        raw=raw,
    )


def _bounded(value: Any) -> int | None:
    """A header count or TTL; None when absent or beyond any real value (more than 2**31-1 either way)."""
    number = as_int(value)
    return number if number is not None and abs(number) <= MAX_COUNT else None


def quotas_from_headers(
    headers: httpx.Headers, *, provider: str, scope: QuotaScope, now: datetime, refused: bool
) -> list[Quota]:
    """Quota facts in the ``x-whatanime-*`` response headers, one Quota per window (source ``headers``).

    ``x-whatanime-limit`` / ``-limit-ttl`` are the per-minute rate (remaining, seconds to reset);
    ``x-whatanime-quota`` / ``-quota-ttl`` the daily quota; the 2018 pair ``x-whatanime-quota`` /
    ``x-whatanime-expire`` a per-minute quota. On a refused request (``refused``, a 429) a spent window
    also carries ``cooldown_until`` = its reset time.
    """
    facts: list[_Fact] = []
    limit = _bounded(headers.get("x-whatanime-limit"))
    if limit is not None:
        facts.append(_Fact("minute", limit, _bounded(headers.get("x-whatanime-limit-ttl"))))
    quota = _bounded(headers.get("x-whatanime-quota"))
    if quota is not None:
        if "x-whatanime-quota-ttl" in headers:
            facts.append(_Fact("day", quota, _bounded(headers.get("x-whatanime-quota-ttl"))))
        else:
            facts.append(_Fact("minute", quota, _bounded(headers.get("x-whatanime-expire"))))
    raw = {key: value for key, value in headers.items() if key.lower().startswith("x-whatanime-")}
    return [
        _quota(fact, provider=provider, scope=scope, source="headers", now=now, raw=raw, cooldown=refused)
        for fact in facts
    ]


def quotas_from_body(
    body: Mapping[str, Any], *, provider: str, scope: QuotaScope, now: datetime
) -> list[Quota]:
    """Quota facts in a search or ``/api/me`` body (source ``upstream``).

    ``limit``/``limit_ttl`` (per minute) and ``quota``/``quota_ttl`` (per day) are what remains and the
    seconds to reset; ``/api/me`` adds the allowances ``user_limit``/``user_limit_ttl`` and
    ``user_quota``/``user_quota_ttl``, which give ``limit`` and the window size. A 2017-2018 body has
    ``quota`` with ``expire`` (or only ``quota_ttl``), a per-minute quota.
    """
    facts: list[_Fact] = []
    remaining = _bounded(body.get("limit"))
    if remaining is not None:
        window = window_for(_bounded(body.get("user_limit_ttl")), "minute")
        facts.append(
            _Fact(window, remaining, _bounded(body.get("limit_ttl")), _bounded(body.get("user_limit")))
        )
    remaining = _bounded(body.get("quota"))
    if remaining is not None:
        modern = "limit" in body or "user_quota" in body
        ttl = _bounded(body.get("quota_ttl")) if "quota_ttl" in body else _bounded(body.get("expire"))
        window = window_for(_bounded(body.get("user_quota_ttl")), "day" if modern else "minute")
        facts.append(_Fact(window, remaining, ttl, _bounded(body.get("user_quota"))))
    raw = {key: value for key, value in body.items() if key != "docs"}
    return [
        _quota(fact, provider=provider, scope=scope, source="upstream", now=now, raw=raw, cooldown=False)
        for fact in facts
    ]


# ---------------------------------------------------------------- hits


def _js_number(value: float) -> str:
    """A number as JavaScript's template strings print it (``1174.5``, ``1174`` not ``1174.0``)."""
    return str(int(value)) if value.is_integer() else repr(value)


def _previews(base_url: str, doc: Mapping[str, Any], anilist_id: int | None) -> tuple[str | None, str | None]:
    """``preview.php`` (video) and ``thumbnail.php`` (image) URLs built from ``tokenthumb``, per the docs:
    ``{base}/thumbnail.php?anilist_id=&file=&t=<at>&token=<tokenthumb>``."""
    token = as_str(doc.get("tokenthumb"))
    filename = as_str(doc.get("filename"))
    at = as_float(doc.get("at"))
    if token is None or filename is None or at is None or anilist_id is None or not base_url:
        return None, None
    params = {"anilist_id": str(anilist_id), "file": filename, "t": _js_number(at), "token": token}
    video = httpx.URL(f"{base_url}/preview.php", params=params)
    image = httpx.URL(f"{base_url}/thumbnail.php", params=params)
    return str(video), str(image)


def parse_hit(doc: Mapping[str, Any], *, provider: str, base_url: str) -> Hit:
    """One ``docs[]`` item as a :class:`Hit`.

    ``from``/``to``/``at`` are seconds into the episode; ``similarity`` (0..1; a very poor match can come
    out negative upstream) is clamped to 0..1; ``title_native`` (or the deprecated ``title``),
    ``title_romaji``, ``title_english`` and ``title_chinese`` (or the deprecated ``anime``) become the
    Title; ``synonyms_chinese`` stays in ``raw``.

    Raises:
        UpstreamResponseError: The item has no usable ``similarity``.
    """
    similarity = clamp_similarity(doc.get("similarity"))
    if similarity is None:
        raise UpstreamResponseError(
            f"a result without a numeric similarity: {str(dict(doc))[:_SNIPPET]}",
            provider=provider,
            status_code=200,
            endpoint="/api/search",
        )
    anilist_id = as_int(doc.get("anilist_id"))
    video_url, image_url = _previews(base_url, doc, anilist_id)
    return Hit(
        provider=provider,
        anilist_id=anilist_id,
        mal_id=as_int(doc.get("mal_id")),
        title=title_from(
            romaji=doc.get("title_romaji"),
            english=doc.get("title_english"),
            native=doc.get("title_native") or doc.get("title"),
            chinese=doc.get("title_chinese") or doc.get("anime"),
        ),
        synonyms=string_list(doc.get("synonyms")),
        is_adult=doc.get("is_adult") if isinstance(doc.get("is_adult"), bool) else None,
        episode=as_episode(doc.get("episode")),
        start_seconds=as_float(doc.get("from")),
        end_seconds=as_float(doc.get("to")),
        at_seconds=as_float(doc.get("at")),
        similarity=similarity,
        filename=as_str(doc.get("filename")),
        video_url=video_url,
        image_url=image_url,
        raw=dict(doc),
    )


def frames_searched(value: Any) -> int | None:
    """``RawDocsCount``: an int, or (early 2017) one count per search core, which are summed."""
    if isinstance(value, list):
        counts = [as_int(item) for item in value]
        return sum(count for count in counts if count is not None) if counts else None
    return as_int(value)


# ---------------------------------------------------------------- errors


def error_message(response: httpx.Response) -> str:
    """The error text of a response, one line: a JSON-encoded string decoded, an HTML page's ``<title>``
    (the web server's 413), plain text as is, and the 2019-2021 PHP-quoted 429 literal
    (``"Search limit exceeded. Please wait ".$limit_ttl." seconds."``, not valid JSON) without its
    leading quote, so its prefix still reads."""
    text = response.text.strip()
    if text.startswith('"'):
        try:
            json.loads(text)
        except ValueError:
            return " ".join(text.strip('"').split())[:_SNIPPET]
    if text.lstrip().lower().startswith(("<html", "<!doctype")) and (title := _HTML_TITLE.search(text)):
        return " ".join(title.group(1).split())[:_SNIPPET]
    return standard_error_message(response)[:_SNIPPET]


def _wait_seconds(message: str, headers: httpx.Headers, now: datetime, ttl_header: str) -> float | None:
    """The wait a 429 asks for: the number in the message, else ``Retry-After``, else the window's TTL
    header (the 2019-2021 body carries no number at all)."""
    match = _WAIT.search(message)
    if match is not None:
        return capped_seconds(float(match.group(1)))
    return retry_after_seconds(headers, now, fallback_to_reset=False, also=(ttl_header,))


@dataclass(frozen=True, slots=True)
class _Context:
    message: str
    response: httpx.Response
    provider: str
    now: datetime
    max_body_bytes: int | None


def _with_wait(message: str, wait: float | None) -> str:
    """The message with the PHP placeholder replaced by the wait the headers gave (or ``?``)."""
    number = "?" if wait is None else f"{wait:g}"
    return _PHP_PLACEHOLDER.sub(number, message)


def _rate_limited(ctx: _Context) -> ProviderError:
    wait = _wait_seconds(ctx.message, ctx.response.headers, ctx.now, "x-whatanime-limit-ttl")
    return RateLimitedError(
        _with_wait(ctx.message, wait),
        provider=ctx.provider,
        status_code=ctx.response.status_code,
        retry_after=wait,
    )


def _quota_exceeded(ctx: _Context) -> ProviderError:
    headers = ctx.response.headers
    wait = _wait_seconds(ctx.message, headers, ctx.now, "x-whatanime-quota-ttl")
    if wait is None:
        wait = retry_after_seconds(headers, ctx.now, fallback_to_reset=False, also=("x-whatanime-expire",))
    return QuotaExhaustedError(
        _with_wait(ctx.message, wait),
        provider=ctx.provider,
        status_code=ctx.response.status_code,
        retry_after=wait,
        resets_at=ctx.now + timedelta(seconds=wait) if wait is not None else None,
    )


def _sent_bytes(response: httpx.Response) -> int | None:
    request = request_of(response)
    if request is None:
        return None
    try:
        return len(request.content)
    except httpx.RequestNotRead:
        return None


def _too_large(ctx: _Context) -> ProviderError:
    size = _sent_bytes(ctx.response)
    limit = ctx.max_body_bytes
    return ImageTooLargeError(
        f"the server refused the request body as too large ({size or '?'} bytes sent"
        f"{f', limit {limit} bytes' if limit else ''}); lower max_body_bytes for this server",
        provider=ctx.provider,
        status_code=ctx.response.status_code,
        size_bytes=size,
        limit_bytes=limit,
    )


def _simple(cls: type[ProviderError], hint: str = "") -> Callable[[_Context], ProviderError]:
    def build(ctx: _Context) -> ProviderError:
        message = f"{ctx.message}{hint}" if ctx.message else f"HTTP {ctx.response.status_code}{hint}"
        return cls(message, provider=ctx.provider, status_code=ctx.response.status_code)

    return build


_TOKEN_HINT = " (set ANISEARCH_WHATANIME_GA_TOKEN to a valid API token)"  # noqa: S105 - a hint, not a secret


def _said(
    error: type[ProviderError], prefix: str, build: Callable[[_Context], ProviderError] | None = None
) -> ErrorRule[_Context]:
    """A row matching the message's start, in any case (the server's capitalisation changed over time)."""
    return ErrorRule(error, prefix=prefix, build=build, ignore_case=True)


ERROR_RULES: Final[tuple[ErrorRule[_Context], ...]] = (
    # Message prefixes (case-insensitive) first: the upstream's own words decide.
    # 429, the per-minute rate (any of the three body forms).
    _said(RateLimitedError, "Search limit exceeded", build=_rate_limited),
    # 429, the daily quota (2017-2018: the per-minute quota).
    _said(QuotaExhaustedError, "Search quota exceeded", build=_quota_exceeded),
    _said(
        AuthenticationError, "Missing API token", build=_simple(AuthenticationError, _TOKEN_HINT)
    ),  # 401, 2017-2018
    _said(AuthenticationError, "Invalid API token", build=_simple(AuthenticationError, _TOKEN_HINT)),  # 403
    # A 500 behind the 2021 proxy carries the new API's message.
    _said(AuthenticationError, "Invalid API key", build=_simple(AuthenticationError, _TOKEN_HINT)),
    _said(BadRequestError, "No image received"),  # 400: the body carried no image field
    _said(BadRequestError, "Image is empty"),  # 400: the image field was empty after the comma
    _said(ImageFetchError, "Failed to fetch image"),  # 400 (URL mode): upload the bytes instead
    _said(ProviderServerError, "Failed to process image"),  # 500: anisearch always sends a clean JPEG
    _said(ProviderServerError, "Error reading image from URL"),  # 500: the Solr backend's error
    _said(ProviderServerError, "Failed to connect to database"),  # 503: an outage, not a queue
    _said(QuotaExhaustedError, "Search quota depleted", build=_quota_exceeded),  # 500 behind the proxy
    _said(ConcurrencyLimitError, "Concurrency limit exceeded"),  # 500 behind the 2021 proxy
    _said(ProviderBusyError, "Error: Search queue is full"),  # 500 behind the 2021 proxy
    # When no message matched: what the status alone can say.
    ErrorRule(AuthenticationError, statuses(401, 403), build=_simple(AuthenticationError, _TOKEN_HINT)),
    ErrorRule(
        ImageTooLargeError, statuses(413), build=_too_large
    ),  # the web server's page: body over its limit
    ErrorRule(RateLimitedError, statuses(429), build=_rate_limited),
    ErrorRule(ProviderServerError, statuses(range(500, 600))),
    ErrorRule(BadRequestError, statuses(range(400, 500))),
)
"""The legacy API's error table, first match wins."""


def classify_error(
    response: httpx.Response, *, provider: str, now: datetime, max_body_bytes: int | None = None
) -> ProviderError:
    """The exception a non-200 legacy response means, per :data:`ERROR_RULES`.

    Args:
        response: The error response.
        provider: The provider name to stamp on the error.
        now: The current time (aware), to turn a wait into ``resets_at``.
        max_body_bytes: The configured request body limit, reported with a 413.

    Returns:
        The most specific :class:`ProviderError` (``retry_after`` in seconds where the server said).
    """
    message = error_message(response)
    ctx = _Context(message, response, provider, now, max_body_bytes)
    status = response.status_code
    rule = first_rule(ERROR_RULES, ctx, status=status, message=message)
    if rule is not None:
        return (rule.build or _simple(rule.error))(ctx)
    request = request_of(response)
    return UpstreamResponseError(
        f"unexpected HTTP {status}: {message or '(empty body)'}",
        provider=provider,
        status_code=status,
        endpoint=request.url.path if request is not None else None,
    )

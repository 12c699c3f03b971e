"""HTTP plumbing every provider needs: the User-Agent, base-URL and settings validation, rate-limit headers
as a quota, pages. Re-exported by :mod:`anisearch.provider`; import them from there."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError

from anisearch._exceptions import ConfigurationError
from anisearch._models import Quota, QuotaScope, QuotaWindow
from anisearch._provider import Page
from anisearch._redact import display_url
from anisearch._sdk._common import as_float, as_int, capped_seconds, http_date, window_for
from anisearch._transport import user_agent

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "ProviderSettings",
    "http_base_url",
    "page_of",
    "rate_limit_quota",
    "user_agent",
    "validate_settings",
]

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

_POLICY_WINDOW = re.compile(r"(?:^|;)\s*w\s*=\s*(\d+)")
_RATE_HEADERS = (
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
    "ratelimit-policy",
    "retry-after",
)
_EPOCH_SECONDS = 1_000_000_000
_EPOCH_MILLISECONDS = 100_000_000_000
_MAX_COUNT = 2**31 - 1
_MAX_PORT = 65535


def http_base_url(url: str, setting: str, *, allow_empty: bool = False) -> str:
    """``url`` checked to be an absolute http(s) URL without query or fragment, trailing slash dropped.

    Args:
        url: The configured value.
        setting: How the user sets it, for the message (``"ANISEARCH_TRACEMOE_URL"``).
        allow_empty: Return ``""`` for a blank value instead of refusing it (a provider with no default
            server, which raises when asked to build a request).

    Raises:
        ConfigurationError: It is not such a URL; the message names ``setting``.
    """
    text = url.strip() if isinstance(url, str) else url
    if allow_empty and text == "":
        return ""
    try:
        parsed = httpx.URL(text)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ConfigurationError(f"{setting} is not a URL: {_shown(url)}") from exc
    if parsed.scheme not in {"http", "https"} or not parsed.host or parsed.query or parsed.fragment:
        raise ConfigurationError(
            f"{setting} must be an http(s) URL without query or fragment, got {_shown(url)}"
        )
    if parsed.port is not None and not 0 < parsed.port <= _MAX_PORT:  # httpx takes 70000; a socket does not
        raise ConfigurationError(f"{setting} has no port 1..{_MAX_PORT}: {_shown(url)}")
    return str(parsed).rstrip("/")


def _shown(url: object) -> str:
    """A refused URL as its error shows it, a password and a ``?key=`` masked (:func:`display_url`), also
    in a URL whose scheme was left off (``user:pw@host``), where ``display_url`` finds no userinfo."""
    if not isinstance(url, str):
        return repr(url)
    if "://" not in url:
        head, slash, tail = url.partition("/")
        if "@" in head:
            url = f"***@{head.rpartition('@')[2]}{slash}{tail}"
    return repr(display_url(url))


class ProviderSettings(BaseModel):
    """The settings most providers take; subclass it to add a provider's own (``body: Literal[...]``).

    Unknown keys are refused (``extra="forbid"``), so a typo in a config file or an environment variable
    is an error that names it, never silently ignored.

    Attributes:
        url: The upstream's base URL (``ANISEARCH_<NAME>_URL``); None for the provider's default.
        key: An API key or token (``ANISEARCH_<NAME>_KEY``); never shown in messages.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str | None = None
    key: SecretStr | None = None


def validate_settings(provider: str, model: type[M], config: Mapping[str, Any]) -> M:
    """A provider's settings read into ``model``, refusing unknown keys and invalid values.

    Keys set to None (an unset environment variable) count as absent.

    Args:
        provider: The provider's name, for the messages.
        model: A pydantic model of the settings (normally a :class:`ProviderSettings` subclass).
        config: ``ProviderContext.config``.

    Raises:
        ConfigurationError: An unknown key (the message lists the known ones), or a value of the wrong
            type or out of range (the message names the setting and the rule, never the value: it may
            be a secret).
    """
    values = {key: value for key, value in config.items() if value is not None}
    unknown = sorted(set(values) - set(model.model_fields))
    if unknown:
        raise ConfigurationError(
            f"unknown {provider} setting(s): {', '.join(unknown)}; "
            f"known: {', '.join(sorted(model.model_fields))}"
        )
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        from anisearch._config import provider_setting_source

        def named(loc: tuple[int | str, ...]) -> str:  # where the user wrote it
            return f"{'.'.join(str(part) for part in loc)} ({provider_setting_source(provider, str(loc[0]))})"

        problems = "; ".join(f"{named(error['loc'])}: {error['msg']}" for error in exc.errors())
        raise ConfigurationError(f"invalid {provider} setting(s): {problems}") from None


def _header_count(headers: Mapping[str, str], *names: str) -> int | None:
    """The first of ``names`` holding a count (0..2**31-1); absurd or negative values are skipped."""
    for name in names:
        number = as_int(headers.get(name))
        if number is not None and 0 <= number <= _MAX_COUNT:
            return number
    return None


def _header_window(headers: Mapping[str, str], default: QuotaWindow) -> QuotaWindow:
    policy = headers.get("ratelimit-policy") or headers.get("x-ratelimit-policy") or ""
    match = _POLICY_WINDOW.search(policy)
    seconds = as_float(match.group(1)) if match else as_float(headers.get("x-ratelimit-window"))
    return window_for(seconds, default)


def _reset_at(headers: Mapping[str, str], now: datetime) -> datetime | None:
    reset = as_float(headers.get("x-ratelimit-reset"))
    base = now
    if reset is None:
        reset = as_float(headers.get("ratelimit-reset"))
        base = http_date(headers.get("date")) or now  # the IETF draft's delay counts from the answer
    elif reset > _EPOCH_SECONDS:
        reset = (reset / 1000 if reset > _EPOCH_MILLISECONDS else reset) - now.timestamp()
    if reset is None:
        return None
    try:
        return base + timedelta(seconds=capped_seconds(reset))
    except OverflowError:
        return None


def rate_limit_quota(
    response: httpx.Response,
    *,
    provider: str,
    scope: QuotaScope,
    now: datetime,
    default_window: QuotaWindow = "minute",
) -> Quota | None:
    """The rate window the standard rate-limit headers describe, or None when they say nothing.

    Limit and remaining come from ``X-RateLimit-*`` or the IETF draft ``RateLimit-*`` headers; the window
    from ``RateLimit-Policy`` (``100;w=60``) or ``X-RateLimit-Window`` (seconds: ``minute`` below an
    hour, ``hour`` below a day, ``day``), else ``default_window``; ``resets_at`` from
    ``X-RateLimit-Reset`` (seconds, or a Unix epoch when that large) or ``RateLimit-Reset`` (seconds after
    the answer's ``Date``, else after ``now``), at most 24 h ahead. Unreadable, negative or impossible
    values (more remaining than the limit) are skipped, never raised. Source ``headers``.

    Args:
        response: Any answer (successes and errors carry the headers alike).
        provider: The provider name to stamp on the quota.
        scope: Who the request spoke as.
        now: The current aware time.
        default_window: The window when the headers do not say its length.
    """
    headers = dict(response.headers.items())  # one pass: each httpx lookup scans every header
    limit = _header_count(headers, "x-ratelimit-limit", "ratelimit-limit")
    remaining = _header_count(headers, "x-ratelimit-remaining", "ratelimit-remaining")
    if limit is not None and remaining is not None and remaining > limit:
        remaining = None  # an impossible pair says nothing about what is left
    if limit is None and remaining is None:
        return None
    return Quota(
        provider=provider,
        scope=scope,
        limit=limit,
        used=max(limit - remaining, 0) if limit is not None and remaining is not None else None,
        remaining=remaining,
        window=_header_window(headers, default_window),
        resets_at=_reset_at(headers, now),
        source="headers",
        observed_at=now,
        raw={name: headers[name] for name in _RATE_HEADERS if name in headers},
    )


def page_of(
    items: list[T], *, total: int | None, has_more: bool | None, first: int, size: int | None
) -> Page[T]:
    """A :class:`Page`, inferring ``has_more`` when the upstream did not say.

    With a ``total``, more exist when ``first + len(items) < total``; an empty page, or one shorter than
    the ``size`` asked for, is the last. Otherwise ``has_more`` stays None (unknown).

    Args:
        items: The page's items.
        total: Items upstream, when reported.
        has_more: Whether another page exists, when reported.
        first: The 0-based index of the page's first item.
        size: The page size the upstream used when it said so, else the one asked for, when known.
    """
    if has_more is None and total is not None:
        has_more = first + len(items) < total
    if has_more is None and (not items or (size is not None and len(items) < size)):
        has_more = False
    return Page(items=items, total=total, has_more=has_more, page_size=size)

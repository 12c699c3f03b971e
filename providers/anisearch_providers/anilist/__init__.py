"""AniList (``https://graphql.anilist.co``): the ``anilist`` metadata provider, sans-IO.

It describes anime by AniList ID, so every hit of every provider can carry its titles, MyAnimeList ID,
adult flag, format and cover. One GraphQL request asks for up to 50 IDs at once::

    query ($ids: [Int]) { Page(perPage: 50) { media(id_in: $ids, type: ANIME) { id idMal title {...} ... } } }

IDs AniList does not know are simply absent from the answer. Errors and the rate limit (90 requests a
minute, lower while AniList is degraded; ``X-RateLimit-*`` headers; 429 with ``Retry-After``) are read in
``_errors.py``. It registers under the entry-point group ``anisearch.metadata``, not
``anisearch.providers``: it searches no image, so it must never join a search order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import ClassVar, Self

import httpx
from pydantic import BaseModel, ConfigDict, Field

from anisearch.provider import (
    Anime,
    Capabilities,
    ConfigurationError,
    Credential,
    PartialLookup,
    ProviderContext,
    Quota,
    RateLimitedError,
    ShapeError,
    UpstreamResponseError,
    WindowSpec,
    http_base_url,
    redact,
    user_agent,
    validate_settings,
)

from ._errors import error_for, graphql_errors, json_or_none, observed_quotas
from ._parse import MEDIA_FIELDS, anime_from_media

__all__ = ["DEFAULT_TTL_SECONDS", "DEFAULT_URL", "MAX_BATCH", "QUERY", "RATE_PER_MINUTE", "AniList"]

DEFAULT_URL = "https://graphql.anilist.co"
"""Where the ``anilist`` provider sends requests unless ``ANISEARCH_ANILIST_URL`` says otherwise."""
MAX_BATCH = 50
"""Most IDs one request asks for: AniList's largest page (``perPage`` 50)."""
RATE_PER_MINUTE = 90
"""Requests a minute AniList documents; while degraded it serves fewer (``X-RateLimit-Limit`` says)."""
DEFAULT_TTL_SECONDS = 7 * 24 * 3600.0
"""How long an anime's facts are reused from the local metadata cache (7 days), unless ``ttl`` says."""

QUERY = (
    f"query ($ids: [Int]) {{ Page(perPage: {MAX_BATCH}) "
    f"{{ media(id_in: $ids, type: ANIME) {{ {MEDIA_FIELDS} }} }} }}"
)
"""The one GraphQL query the provider sends."""


class _Settings(BaseModel):
    """The ``[anilist]`` settings (env ``ANISEARCH_ANILIST_URL``, ``ANISEARCH_ANILIST_TTL``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str | None = None
    ttl: float = Field(default=DEFAULT_TTL_SECONDS, gt=0)


class AniList:
    """AniList's GraphQL API as an anisearch metadata provider (entry point ``anilist``).

    Args:
        base_url: The GraphQL endpoint, ``https://graphql.anilist.co`` by default (setting ``url``,
            ``ANISEARCH_ANILIST_URL``); a trailing slash is dropped.
        ttl_seconds: How old answers in the local metadata cache may be, seconds (setting ``ttl``,
            ``ANISEARCH_ANILIST_TTL``; default 7 days), checked at each lookup.
        clock: Returns the current aware time; for tests. Defaults to UTC now.

    Raises:
        ConfigurationError: ``base_url`` is not an http(s) URL, or ``ttl_seconds`` is not positive.
    """

    name: ClassVar[str] = "anilist"
    default_url: ClassVar[str] = DEFAULT_URL
    """Its own address: another one's answers (an emulator's, a mirror's) are cached and counted apart."""
    capabilities: Capabilities = Capabilities(upload=False, metadata=True)
    max_batch: int = MAX_BATCH

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if not ttl_seconds > 0:
            raise ConfigurationError(
                f"ANISEARCH_ANILIST_TTL must be a positive number of seconds, got {ttl_seconds}"
            )
        self.base_url = http_base_url(
            base_url, "ANISEARCH_ANILIST_URL (or url in the [anilist] config table)"
        )
        self.ttl_seconds = float(ttl_seconds)
        self._clock = clock or (lambda: datetime.now(UTC))

    def __repr__(self) -> str:
        return f"AniList(base_url={redact(self.base_url)!r})"

    @classmethod
    def from_context(cls, context: ProviderContext) -> Self:
        """Build the provider from its settings: ``url`` and ``ttl`` (seconds).

        Raises:
            ConfigurationError: An unknown setting (named in the message), a ``ttl`` that is not a positive
                number, or a ``url`` that is not http(s).
        """
        settings = validate_settings(cls.name, _Settings, context.config)
        return cls(settings.url or DEFAULT_URL, ttl_seconds=settings.ttl)

    @property
    def credential(self) -> Credential:
        """Always a guest: AniList limits by address, and a token would not raise the limit."""
        return Credential("guest")

    def auth(self) -> httpx.Auth | None:
        """None: AniList's public data needs no token."""
        return None

    def windows(self) -> list[WindowSpec]:
        """AniList's one window: every HTTP request, 90 per minute per address, a rate limit (429).

        The limit in force comes with every answer (``X-RateLimit-Limit``), so a degraded API's lower
        figure reaches the ledger on the first answer.
        """
        return [WindowSpec("minute", span_seconds=60, counts="requests", kind="rate", limit=RATE_PER_MINUTE)]

    def lookup_request(self, anilist_ids: Sequence[int]) -> httpx.Request:
        """``POST`` the GraphQL query for 1 to 50 AniList IDs (duplicates sent once, in order).

        Raises:
            ConfigurationError: No ID, more than 50, or one that is not a positive integer.
        """
        ids = list(dict.fromkeys(anilist_ids))
        if not 1 <= len(ids) <= MAX_BATCH:
            raise ConfigurationError(f"one AniList lookup takes 1 to {MAX_BATCH} IDs, got {len(ids)}")
        for anilist_id in ids:
            if isinstance(anilist_id, bool) or not isinstance(anilist_id, int) or anilist_id <= 0:
                raise ConfigurationError(f"an AniList ID is a positive integer, got {anilist_id!r}")
        return httpx.Request(
            "POST",
            self.base_url,
            headers={
                "Accept": "application/json",
                "Content-Type": "application/json",
                "User-Agent": user_agent(),
            },
            json={"query": QUERY, "variables": {"ids": ids}},
        )

    def parse_lookup(self, response: httpx.Response) -> list[Anime]:
        """The anime of a lookup answer, in AniList's order.

        Raises:
            RateLimitedError: 429 ``Too Many Requests.`` (``retry_after`` from ``Retry-After``).
            BadRequestError: 400 (a query AniList refuses) or 404.
            AuthenticationError: 401/403.
            ProviderServerError: 5xx.
            UpstreamResponseError: A 200 that is not JSON, or lacks ``data.Page.media``.

        A 200 with GraphQL ``errors`` beside anime in ``data.Page.media`` (not a rate limit) gives a
        :class:`PartialLookup` of those anime.
        """
        body = json_or_none(response)
        page = (
            body.get("data", {}).get("Page")
            if isinstance(body, dict) and isinstance(body.get("data"), dict)
            else None
        )
        media = page.get("media") if isinstance(page, dict) else None
        failed = error_for(response, provider=self.name, now=self._clock()) if graphql_errors(body) else None
        if response.status_code != httpx.codes.OK or (
            # a partial answer holds anime; a rate limit, even beside some, is the answer's meaning
            failed is not None
            and (not media or not isinstance(media, list) or isinstance(failed, RateLimitedError))
        ):
            raise failed or error_for(response, provider=self.name, now=self._clock())
        if not isinstance(media, list):
            raise UpstreamResponseError(
                "the AniList answer has no 'data.Page.media' array", provider=self.name, status_code=200
            )
        try:
            found = [anime_from_media(item) for item in media if item is not None]
        except ShapeError as exc:
            raise UpstreamResponseError(str(exc), provider=self.name, status_code=200) from exc
        if failed is not None:  # GraphQL errors beside anime: those are good, a missing one may have failed
            return PartialLookup(found, reason=f"{type(failed).__name__}: {failed}")
        return found

    def observe(self, response: httpx.Response) -> list[Quota]:
        """The minute window as the answer's ``X-RateLimit-*`` headers (and a 429) report it; never raises."""
        return observed_quotas(response, provider=self.name, now=self._clock())

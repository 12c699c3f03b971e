"""The provider SDK: everything a scene-search provider is built from. Stable API.

A provider is a small, pure (sans-IO) class: it builds :class:`httpx.Request` objects and parses the
:class:`httpx.Response` the engine got for them, raising the most specific :class:`ProviderError`. The
engine owns the sockets, retries, quota ledger and cache. A package registers its provider class under
the entry-point group ``anisearch.providers``; the registry checks that what it loads conforms.

Providers import only ``anisearch`` and this module (never ``anisearch._*``). It holds:

- the protocols :class:`Provider` and :class:`AccountProvider`, and :class:`BaseProvider`, which gives
  every member a default so a provider writes only what its upstream needs (at least
  :meth:`~BaseProvider.search_request` and :meth:`~BaseProvider.parse_search`); and
  :class:`MetadataProvider`, for a service that describes anime by AniList ID (group
  ``anisearch.metadata``; it returns :class:`Anime` values);
- the value types a provider takes and returns: :class:`SearchQuery`, :class:`SearchOptions`,
  :class:`ProviderAnswer`, :class:`Capabilities`, :class:`UploadLimits`, :class:`PreparedImage`,
  :class:`WindowSpec` (quota and rate windows as data), :class:`ProviderContext`, :class:`Credential`,
  :class:`Page`, the models it builds (:class:`Hit`, :class:`Quota`, :class:`Title`...) and the
  exceptions it raises;
- the shared helpers: one error-rule engine (:class:`ErrorRule`, :func:`classify_error`,
  :func:`first_rule`, :func:`statuses`) and the CDN challenge page it recognises for every provider
  (:func:`cdn_challenge`, :data:`CDN_BLOCKED`), one ``Retry-After`` reader (:func:`retry_after_seconds`),
  rate-limit headers as a quota (:func:`rate_limit_quota`), coercions of loose upstream JSON
  (:func:`as_int`, :func:`as_float`, :func:`as_episode`...), an AniList ``Media`` object as hit fields
  (:func:`anilist_media_fields`), base-URL and settings validation that
  refuses unknown keys (:func:`http_base_url`, :class:`ProviderSettings`, :func:`validate_settings`),
  the :func:`user_agent`, and :func:`page_of` for paginated lists.

See the guide "Writing a provider" in the documentation for a complete example.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from anisearch._exceptions import (
    AnisearchError,
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
    SignInRateLimitedError,
    UpstreamResponseError,
)
from anisearch._ledger._windows import WindowSpec
from anisearch._models import (
    Anime,
    ApiKey,
    CreatedApiKey,
    Credits,
    Episode,
    Hit,
    Quota,
    QuotaScope,
    QuotaSource,
    QuotaWindow,
    RankingEntry,
    RecentSearch,
    Title,
)
from anisearch._provider import (
    AccountProvider,
    Capabilities,
    Credential,
    MetadataProvider,
    Page,
    PartialLookup,
    Provider,
    ProviderAnswer,
    ProviderContext,
    SearchMode,
    SearchOptions,
    SearchQuery,
    UploadLimits,
)
from anisearch._redact import redact
from anisearch._sdk._base import BaseProvider
from anisearch._sdk._common import (
    MAX_COUNT,
    MAX_JSON_DEPTH,
    MAX_RETRY_AFTER_SECONDS,
    ShapeError,
    anilist_media_fields,
    as_bool,
    as_count,
    as_episode,
    as_float,
    as_int,
    as_str,
    body_text,
    capped_seconds,
    clamp_similarity,
    epoch,
    error_message,
    fit_inside,
    http_date,
    is_multipart_request,
    json_body,
    loads,
    next_hour,
    request_bytes,
    request_of,
    response_date,
    retry_after_seconds,
    string_list,
    title_from,
    window_for,
    without,
)
from anisearch._sdk._errors import (
    CDN_BLOCKED,
    ErrorAnswer,
    ErrorRule,
    cdn_challenge,
    classify_error,
    first_rule,
    statuses,
)
from anisearch._sdk._http import (
    ProviderSettings,
    http_base_url,
    page_of,
    rate_limit_quota,
    user_agent,
    validate_settings,
)

if TYPE_CHECKING:
    from anisearch._borders import cut_borders
    from anisearch._image import PreparedImage

__all__ = [
    "CDN_BLOCKED",
    "MAX_COUNT",
    "MAX_JSON_DEPTH",
    "MAX_RETRY_AFTER_SECONDS",
    "AccountProvider",
    "Anime",
    "AnisearchError",
    "ApiKey",
    "AuthenticationError",
    "BadRequestError",
    "BaseProvider",
    "Capabilities",
    "ConcurrencyLimitError",
    "ConfigurationError",
    "CreatedApiKey",
    "Credential",
    "Credits",
    "Episode",
    "ErrorAnswer",
    "ErrorRule",
    "Hit",
    "ImageFetchError",
    "ImageTooLargeError",
    "InvalidImageError",
    "MetadataProvider",
    "Page",
    "PartialLookup",
    "PreparedImage",
    "Provider",
    "ProviderAnswer",
    "ProviderBusyError",
    "ProviderContext",
    "ProviderError",
    "ProviderServerError",
    "ProviderSettings",
    "Quota",
    "QuotaExhaustedError",
    "QuotaScope",
    "QuotaSource",
    "QuotaWindow",
    "RankingEntry",
    "RateLimitedError",
    "RecentSearch",
    "SearchMode",
    "SearchOptions",
    "SearchQuery",
    "ShapeError",
    "SignInRateLimitedError",
    "Title",
    "UploadLimits",
    "UpstreamResponseError",
    "WindowSpec",
    "anilist_media_fields",
    "as_bool",
    "as_count",
    "as_episode",
    "as_float",
    "as_int",
    "as_str",
    "body_text",
    "capped_seconds",
    "cdn_challenge",
    "clamp_similarity",
    "classify_error",
    "cut_borders",
    "epoch",
    "error_message",
    "first_rule",
    "fit_inside",
    "http_base_url",
    "http_date",
    "is_multipart_request",
    "json_body",
    "loads",
    "next_hour",
    "page_of",
    "rate_limit_quota",
    "redact",
    "request_bytes",
    "request_of",
    "response_date",
    "retry_after_seconds",
    "statuses",
    "string_list",
    "title_from",
    "user_agent",
    "validate_settings",
    "window_for",
    "without",
]


def __getattr__(name: str) -> Any:
    """The Pillow-backed names, imported on first use (a provider that never touches pixels skips PIL)."""
    if name == "PreparedImage":
        from anisearch._image import PreparedImage

        return PreparedImage
    if name == "cut_borders":
        from anisearch._borders import cut_borders

        return cut_borders
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

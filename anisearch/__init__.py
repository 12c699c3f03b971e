"""anisearch: which anime, which episode, which second is this screenshot from.

One call asks every public anime scene-search service, in a quota-aware order, and answers in one schema::

    import anisearch

    result = anisearch.search("shot.jpg", providers=["tracemoe", "whatanimeisthis"])
    hit = result.best
    hit.anilist_id, hit.episode, hit.start_seconds

Importing the package is cheap: each name is loaded from its module the first time it is used.
"""

from __future__ import annotations

from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    import os
    from collections.abc import Sequence

    from PIL import Image

    from anisearch._client import AsyncApiKeys, AsyncClient
    from anisearch._config import Settings
    from anisearch._exceptions import (
        AllProvidersFailedError,
        AnisearchError,
        AuthenticationError,
        BadRequestError,
        ClientClosedError,
        ConcurrencyLimitError,
        ConfigurationError,
        ImageFetchError,
        ImageTooLargeError,
        InvalidImageError,
        LedgerError,
        ProviderBusyError,
        ProviderConnectionError,
        ProviderError,
        ProviderServerError,
        ProviderTimeoutError,
        QuotaExhaustedError,
        RateLimitedError,
        SignInRateLimitedError,
        UnknownProviderError,
        UpstreamResponseError,
    )
    from anisearch._models import (
        DEFAULT_MIN_SIMILARITY,
        ApiKey,
        Attempt,
        AttemptOutcome,
        CreatedApiKey,
        Credits,
        Episode,
        Hit,
        PagedList,
        ProviderInfo,
        Quota,
        QuotaScope,
        QuotaSource,
        QuotaWindow,
        RankingEntry,
        RecentSearch,
        SearchResult,
        Title,
    )
    from anisearch._provider import SearchMode, available_providers
    from anisearch._router import AttemptCallback, Strategy, WaitCallback
    from anisearch._sync import ApiKeys, Client

__all__ = [
    "DEFAULT_MIN_SIMILARITY",
    "AllProvidersFailedError",
    "AnisearchError",
    "ApiKey",
    "ApiKeys",
    "AsyncApiKeys",
    "AsyncClient",
    "Attempt",
    "AttemptCallback",
    "AttemptOutcome",
    "AuthenticationError",
    "BadRequestError",
    "Client",
    "ClientClosedError",
    "ConcurrencyLimitError",
    "ConfigurationError",
    "CreatedApiKey",
    "Credits",
    "Episode",
    "Hit",
    "ImageFetchError",
    "ImageTooLargeError",
    "InvalidImageError",
    "LedgerError",
    "PagedList",
    "ProviderBusyError",
    "ProviderConnectionError",
    "ProviderError",
    "ProviderInfo",
    "ProviderServerError",
    "ProviderTimeoutError",
    "Quota",
    "QuotaExhaustedError",
    "QuotaScope",
    "QuotaSource",
    "QuotaWindow",
    "RankingEntry",
    "RateLimitedError",
    "RecentSearch",
    "SearchMode",
    "SearchResult",
    "Settings",
    "SignInRateLimitedError",
    "Strategy",
    "Title",
    "UnknownProviderError",
    "UpstreamResponseError",
    "WaitCallback",
    "__version__",
    "asearch",
    "available_providers",
    "search",
]

_EXCEPTIONS = (
    "AllProvidersFailedError",
    "AnisearchError",
    "AuthenticationError",
    "BadRequestError",
    "ClientClosedError",
    "ConcurrencyLimitError",
    "ConfigurationError",
    "ImageFetchError",
    "ImageTooLargeError",
    "InvalidImageError",
    "LedgerError",
    "ProviderBusyError",
    "ProviderConnectionError",
    "ProviderError",
    "ProviderServerError",
    "ProviderTimeoutError",
    "QuotaExhaustedError",
    "RateLimitedError",
    "SignInRateLimitedError",
    "UnknownProviderError",
    "UpstreamResponseError",
)
_MODELS = (
    "DEFAULT_MIN_SIMILARITY",
    "ApiKey",
    "Attempt",
    "AttemptOutcome",
    "CreatedApiKey",
    "Credits",
    "Episode",
    "Hit",
    "PagedList",
    "ProviderInfo",
    "Quota",
    "QuotaScope",
    "QuotaSource",
    "QuotaWindow",
    "RankingEntry",
    "RecentSearch",
    "SearchResult",
    "Title",
)
_PROVIDER_TYPES = (
    "AccountProvider",
    "Capabilities",
    "Credential",
    "Page",
    "Provider",
    "ProviderAnswer",
    "ProviderContext",
    "SearchOptions",
    "SearchQuery",
    "UploadLimits",
)
"""For provider authors, not in ``__all__``: they live in :mod:`anisearch.provider`; still importable from
here, for code written before that module."""

_LAZY: dict[str, str] = {
    **dict.fromkeys(_EXCEPTIONS, "anisearch._exceptions"),
    **dict.fromkeys(_MODELS, "anisearch._models"),
    **dict.fromkeys(_PROVIDER_TYPES, "anisearch.provider"),
    "available_providers": "anisearch._provider",
    "SearchMode": "anisearch._provider",
    "AsyncApiKeys": "anisearch._client",
    "AsyncClient": "anisearch._client",
    "ApiKeys": "anisearch._sync",
    "Client": "anisearch._sync",
    "Settings": "anisearch._config",
    "AttemptCallback": "anisearch._router",
    "Strategy": "anisearch._router",
    "WaitCallback": "anisearch._router",
}
"""Where each public name lives; the module is imported the first time the name is used."""


def search(
    image: str | os.PathLike[str] | bytes | IO[bytes] | Image.Image,
    *,
    providers: Sequence[str] | None = None,
    strategy: Strategy = "fallback",
    anilist_id: int | None = None,
    cut_borders: bool = False,
    anilist_info: bool = False,
    min_similarity: float | None = None,
    cache: bool = True,
    deadline: float | None = None,
    mode: SearchMode = "image",
    include_adult: bool | None = None,
    settings: Settings | None = None,
    on_attempt: AttemptCallback | None = None,
) -> SearchResult:
    """Search one image with a short-lived :class:`Client`; see :meth:`AsyncClient.search`.

    For many searches keep one ``Client`` open instead: it reuses connections, the ledger and the cache.

    Raises:
        InvalidImageError: Bad input (before any request).
        ConfigurationError: A bad argument (an empty ``providers`` ...), before any request.
        AllProvidersFailedError: No provider answered.
        LedgerError: The quota ledger cannot be used (no search is sent without it).
    """
    from anisearch._sync import Client

    with Client(settings, on_attempt=on_attempt) as client:
        return client.search(
            image,
            providers=providers,
            strategy=strategy,
            anilist_id=anilist_id,
            cut_borders=cut_borders,
            anilist_info=anilist_info,
            min_similarity=min_similarity,
            cache=cache,
            deadline=deadline,
            mode=mode,
            include_adult=include_adult,
        )


async def asearch(
    image: str | os.PathLike[str] | bytes | IO[bytes] | Image.Image,
    *,
    providers: Sequence[str] | None = None,
    strategy: Strategy = "fallback",
    anilist_id: int | None = None,
    cut_borders: bool = False,
    anilist_info: bool = False,
    min_similarity: float | None = None,
    cache: bool = True,
    deadline: float | None = None,
    mode: SearchMode = "image",
    include_adult: bool | None = None,
    settings: Settings | None = None,
    on_attempt: AttemptCallback | None = None,
) -> SearchResult:
    """Async :func:`search` with a short-lived :class:`AsyncClient`; see :meth:`AsyncClient.search`.

    Raises:
        InvalidImageError: Bad input (before any request).
        ConfigurationError: A bad argument (an empty ``providers`` ...), before any request.
        AllProvidersFailedError: No provider answered.
        LedgerError: The quota ledger cannot be used (no search is sent without it).
    """
    from anisearch._client import AsyncClient

    async with AsyncClient(settings, on_attempt=on_attempt) as client:
        return await client.search(
            image,
            providers=providers,
            strategy=strategy,
            anilist_id=anilist_id,
            cut_borders=cut_borders,
            anilist_info=anilist_info,
            min_similarity=min_similarity,
            cache=cache,
            deadline=deadline,
            mode=mode,
            include_adult=include_adult,
        )


def __getattr__(name: str) -> Any:
    """Load a public name from its module on first use (PEP 562), so ``import anisearch`` stays cheap."""
    module = _LAZY.get(name)
    if module is not None:
        from importlib import import_module

        value = getattr(import_module(module), name)
        globals()[name] = value  # the next use is a plain attribute read
        return value
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        from anisearch._version import DISTRIBUTION
        from anisearch._version import __version__ as source_version

        try:
            return version(DISTRIBUTION)
        except PackageNotFoundError:  # a source tree on sys.path that was never installed
            return source_version
    raise AttributeError(f"module 'anisearch' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, "__version__"})

"""anisearch: which anime, which episode, which second is this screenshot from.

One call asks every public anime scene-search service, in a quota-aware order, and answers in one schema::

    import anisearch

    result = anisearch.search("shot.jpg", providers=["tracemoe", "whatanimeisthis"])
    hit = result.best
    hit.anilist_id, hit.episode, hit.start_seconds
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING, Any

from anisearch._client import AsyncClient
from anisearch._config import Settings
from anisearch._exceptions import (
    AllProvidersFailedError,
    AnisearchError,
    AuthenticationError,
    BadRequestError,
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
    UnknownProviderError,
    UpstreamResponseError,
)
from anisearch._models import (
    DEFAULT_MIN_SIMILARITY,
    ApiKey,
    Attempt,
    CreatedApiKey,
    Credits,
    Hit,
    ProviderInfo,
    Quota,
    RankingEntry,
    RecentSearch,
    SearchResult,
    Title,
)
from anisearch._provider import (
    AccountProvider,
    Capabilities,
    Credential,
    Page,
    Provider,
    ProviderAnswer,
    ProviderContext,
    SearchOptions,
    SearchQuery,
    UploadLimits,
    available_providers,
)
from anisearch._router import Strategy
from anisearch._sync import Client

if TYPE_CHECKING:
    from PIL import Image

    from anisearch._router import AttemptCallback

__all__ = [
    "DEFAULT_MIN_SIMILARITY",
    "AccountProvider",
    "AllProvidersFailedError",
    "AnisearchError",
    "ApiKey",
    "AsyncClient",
    "Attempt",
    "AuthenticationError",
    "BadRequestError",
    "Capabilities",
    "Client",
    "ConcurrencyLimitError",
    "ConfigurationError",
    "CreatedApiKey",
    "Credential",
    "Credits",
    "Hit",
    "ImageFetchError",
    "ImageTooLargeError",
    "InvalidImageError",
    "LedgerError",
    "Page",
    "Provider",
    "ProviderAnswer",
    "ProviderBusyError",
    "ProviderConnectionError",
    "ProviderContext",
    "ProviderError",
    "ProviderInfo",
    "ProviderServerError",
    "ProviderTimeoutError",
    "Quota",
    "QuotaExhaustedError",
    "RankingEntry",
    "RateLimitedError",
    "RecentSearch",
    "SearchOptions",
    "SearchQuery",
    "SearchResult",
    "Settings",
    "Strategy",
    "Title",
    "UnknownProviderError",
    "UploadLimits",
    "UpstreamResponseError",
    "__version__",
    "asearch",
    "available_providers",
    "search",
]


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
    settings: Settings | None = None,
    on_attempt: AttemptCallback | None = None,
) -> SearchResult:
    """Search one image with a short-lived :class:`Client`; see :meth:`AsyncClient.search`.

    For many searches keep one ``Client`` open instead: it reuses connections, the ledger and the cache.

    Raises:
        InvalidImageError: Bad input (before any request).
        AllProvidersFailedError: No provider answered.
    """
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
    settings: Settings | None = None,
    on_attempt: AttemptCallback | None = None,
) -> SearchResult:
    """Async :func:`search` with a short-lived :class:`AsyncClient`; see :meth:`AsyncClient.search`.

    Raises:
        InvalidImageError: Bad input (before any request).
        AllProvidersFailedError: No provider answered.
    """
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
        )


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        from anisearch._version import DISTRIBUTION
        from anisearch._version import __version__ as source_version

        try:
            return version(DISTRIBUTION)
        except PackageNotFoundError:  # a source tree on sys.path that was never installed
            return source_version
    raise AttributeError(f"module 'anisearch' has no attribute {name!r}")

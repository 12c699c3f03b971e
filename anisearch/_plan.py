"""One search's plan: for each provider, a ready query and the rules its answer is read by.

The client resolves the providers and prepares the image once; the plan decides everything per provider
in one place: the options the provider is sent (an AniList filter it cannot apply is applied here to its
answer instead; borders it cannot cut are cut locally), the image fitted to its upload limits, and the
result-cache key. The router receives the routes ready and never calls back into the client.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread

from anisearch import _image
from anisearch._address import cache_name
from anisearch._cache import cache_key
from anisearch._provider import SearchOptions, SearchQuery

if TYPE_CHECKING:
    from anisearch._image import PreparedImage
    from anisearch._ledger import WindowSpec
    from anisearch._models import Hit
    from anisearch._provider import Provider

__all__ = ["PlannedQuery", "Route", "plan_routes"]


class _Cropped:
    """The borderless picture, cut at most once per search and shared by the providers that need it."""

    def __init__(self, prepared: PreparedImage) -> None:
        self._prepared = prepared
        self._image: PreparedImage | None = None
        self._lock = anyio.Lock()

    async def image(self) -> PreparedImage:
        async with self._lock:
            if self._image is None:
                self._image = await anyio.to_thread.run_sync(
                    partial(_image.prepare, self._prepared.data, cut_borders=True)
                )
            return self._image


@dataclass(slots=True, eq=False)
class PlannedQuery:
    """What one provider is sent, built on first use (a provider never asked costs no image work).

    Attributes:
        provider: The provider asked.
        prepared: The image prepared once for the whole search.
        options: The search's options as the caller gave them.
    """

    provider: Provider
    prepared: PreparedImage
    options: SearchOptions
    _cropped: _Cropped | None = None
    _query: SearchQuery | None = field(default=None, init=False)

    @property
    def by_vector(self) -> bool:
        """Whether this provider is sent a descriptor instead of the image (``mode="vector"``)."""
        return self.options.mode == "vector" and self.provider.capabilities.vector

    @property
    def crops_locally(self) -> bool:
        """Whether anisearch cuts the borders itself: the provider cannot, or is sent a descriptor."""
        return self.options.cut_borders and (not self.provider.capabilities.cut_borders or self.by_vector)

    @property
    def sent_options(self) -> SearchOptions:
        """The options as this provider receives them (what it cannot do server-side is done locally)."""
        options = self.options
        if options.anilist_id is not None and not self.provider.capabilities.anilist_filter:
            options = replace(options, anilist_id=None)
        if self.crops_locally:
            options = replace(options, cut_borders=False)
        if options.mode == "vector" and not self.by_vector:
            options = replace(options, mode="image")
        return options

    async def ready(self) -> SearchQuery:
        """The query, image fitted to the provider's upload limits (work done once, in a worker thread).

        Raises:
            ImageTooLargeError: The image cannot be made small enough for this provider.
            InvalidImageError: The prepared image cannot be decoded again.
        """
        if self._query is None:
            image = self.prepared
            if self.crops_locally and self._cropped is not None:
                image = await self._cropped.image()
            limits = self.provider.limits
            fitted = (
                image
                if _image.fits(image, limits)
                else await anyio.to_thread.run_sync(_image.fit, image, limits)
            )
            self._query = SearchQuery(options=self.sent_options, image=fitted)
        return self._query

    def accept(self, hits: Sequence[Hit]) -> list[Hit]:
        """The hits of an answer that this search asked for (its AniList ID, when one was given)."""
        wanted = self.options.anilist_id
        return [hit for hit in hits if wanted is None or hit.anilist_id == wanted]


@dataclass(frozen=True, slots=True)
class Route:
    """One provider as the router sees it, ready to ask.

    Attributes:
        provider: The provider instance.
        scope: The ledger scope id of its credential (see ``scope_id``).
        slots: Concurrency assumed until the upstream reports its own (trace.moe guest: 1).
        cache_key: The result-cache key of this search for this provider, or None when not caching.
        windows: The provider's quota and rate windows (``provider_windows``).
        query: What the provider is sent, and which of its hits are kept; None only in tests that never
            ask the provider.
    """

    provider: Provider
    scope: str
    slots: int = 1
    cache_key: str | None = None
    windows: tuple[WindowSpec, ...] = field(default=())
    query: PlannedQuery | None = None

    async def ready(self) -> SearchQuery:
        """The provider's query (see :meth:`PlannedQuery.ready`).

        Raises:
            ValueError: The route was built without a query.
        """
        if self.query is None:
            raise ValueError(f"the route to {self.provider.name} has no query to send")
        return await self.query.ready()

    def accept(self, hits: Sequence[Hit]) -> list[Hit]:
        """The hits this search keeps (see :meth:`PlannedQuery.accept`)."""
        return self.query.accept(hits) if self.query is not None else list(hits)


def plan_routes(
    providers: Sequence[tuple[Provider, str, int, tuple[WindowSpec, ...]]],
    prepared: PreparedImage,
    options: SearchOptions,
    *,
    use_cache: bool,
) -> list[Route]:
    """A ready route per provider, in the order given.

    Args:
        providers: ``(provider, scope id, assumed slots, windows)`` in the order to ask.
        prepared: The image, prepared once.
        options: The caller's options.
        use_cache: Whether to give each route its result-cache key.
    """
    cropped = _Cropped(prepared) if options.cut_borders else None
    routes = []
    for provider, scope, slots, windows in providers:
        planned = PlannedQuery(provider, prepared, options, cropped)
        key = cache_key(cache_name(provider), provider.cache_key(prepared), [options]) if use_cache else None
        routes.append(
            Route(provider=provider, scope=scope, slots=slots, cache_key=key, windows=windows, query=planned)
        )
    return routes

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

from anisearch import _image, _worker
from anisearch._address import cache_name
from anisearch._cache import cache_key
from anisearch._exceptions import InvalidImageError
from anisearch._provider import SearchOptions, SearchQuery
from anisearch._sdk._base import BaseProvider

if TYPE_CHECKING:
    from anisearch._image import PreparedImage
    from anisearch._ledger import WindowSpec
    from anisearch._models import Hit
    from anisearch._provider import Provider

__all__ = ["PlannedQuery", "Route", "SearchImages", "plan_routes"]


class SearchImages:
    """The search's source, prepared for each upload box its providers take, each box at most once.

    A provider's upload is made for its own box from the source, never from another provider's upload, so
    its answer (and similarity) is the same whichever providers are asked with it. A box is prepared when
    its first provider needs it (a provider never asked costs no image work), or, for a fanout search,
    together with every other box still missing, decoding the source once where that is exact (see
    :func:`anisearch._image.prepare_boxes`).

    Args:
        source: The source read into memory (or the caller's PIL image), or bytes.
        made: The images already prepared, by box (pixels): at least the first provider's.
        boxes: Every box the search's providers take.
        together: Prepare every missing box at once (all providers are asked).
        digest: The source's digest, when ``source`` is a file read again for a later box: its bytes
            must not have changed.
    """

    def __init__(
        self,
        source: _image.SourceBytes | _image.ImageSource,
        made: dict[tuple[int, int], PreparedImage],
        boxes: Sequence[tuple[int, int]] = (),
        *,
        together: bool = False,
        digest: str | None = None,
    ) -> None:
        self._made = dict(made)
        self._boxes = list(dict.fromkeys(boxes))
        self._source: _image.SourceBytes | _image.ImageSource | None = (
            None if self._complete() else source  # kept only while an upload is still to be made
        )
        self._together = together
        self._lock = anyio.Lock()
        self._failed: dict[tuple[int, int], InvalidImageError] = {}
        self._digest = digest

    def _complete(self) -> bool:
        return all(box in self._made for box in self._boxes)

    def made(self, box: tuple[int, int]) -> PreparedImage | None:
        """The image for ``box`` if it was prepared already (no work)."""
        return self._made.get(box)

    async def image(self, box: tuple[int, int]) -> PreparedImage:
        """The image for ``box``, prepared on first use (in place when quick, else in a worker thread).

        Raises:
            InvalidImageError: The source cannot be prepared for this box.
        """
        made = self._made.get(box)
        if made is not None:
            return made
        async with self._lock:
            if box in self._failed:  # told once: the same source fails the same way again
                raise self._failed[box]
            if box not in self._made:
                others = self._boxes if self._together else []
                missing = [box, *(other for other in others if other != box and other not in self._made)]
                source = self._source
                if source is None:  # pragma: no cover - only a box of the search's providers is asked for
                    raise ValueError(f"no upload box {box} was planned for this search")
                work = partial(_image.prepare_boxes, digest=self._digest)  # the source goes as an argument
                try:
                    quick = _image.quick(source)
                    images = (
                        work(source, missing)
                        if quick
                        else await _worker.run_sync(work, source, missing, decoding=True)
                    )
                except InvalidImageError as exc:
                    self._failed[box] = exc
                    raise
                self._made.update(zip(missing, images, strict=True))
                if self._complete():
                    self._source = None  # every upload is made: the source's memory is freed
        return self._made[box]


class _Cropped:
    """The borderless picture of each upload, cut at most once per search and shared by the providers that
    need it."""

    def __init__(self) -> None:
        self._images: dict[tuple[int, int], PreparedImage] = {}
        self._lock = anyio.Lock()

    async def image(self, prepared: PreparedImage) -> PreparedImage:
        async with self._lock:
            size = (prepared.width, prepared.height)
            if size not in self._images:
                crop = partial(_image.prepare, cut_borders=True)
                self._images[size] = await _worker.run_sync(crop, prepared.data, decoding=True)
            return self._images[size]


@dataclass(slots=True, eq=False)
class PlannedQuery:
    """What one provider is sent, built on first use (a provider never asked costs no image work).

    Attributes:
        provider: The provider asked.
        prepared: The image prepared for the search's first provider (this provider's own when ``images``
            is None).
        options: The search's options as the caller gave them.
        images: The search's images by upload box; this provider's is made for its own box.
        keyed: Whether the search uses the result cache (see :meth:`cache_key`).
    """

    provider: Provider
    prepared: PreparedImage
    options: SearchOptions
    cropped: _Cropped | None = None
    images: SearchImages | None = None
    keyed: bool = False
    _query: SearchQuery | None = field(default=None, init=False)
    _key: str | None = field(default=None, init=False)

    async def image(self) -> PreparedImage:
        """The image prepared for this provider's upload box (see :class:`SearchImages`).

        Raises:
            InvalidImageError: The source cannot be prepared for this box.
        """
        return self.prepared if self.images is None else await self.images.image(self.provider.limits.box)

    def known_key(self) -> str | None:
        """The result-cache key, when the search caches and it takes no image work: this provider's image
        is made, or its key is the SDK's, which reads only the source's digest (the same for every
        upload)."""
        if self._key is None and self.keyed:
            made = self.prepared if self.images is None else self.images.made(self.provider.limits.box)
            if made is None and type(self.provider).cache_key is BaseProvider.cache_key:
                made = self.prepared
            if made is not None:
                self._key = cache_key(
                    cache_name(self.provider), self.provider.cache_key(made), [self.options]
                )
        return self._key

    async def cache_key(self) -> str | None:
        """The result-cache key of this provider's answer (None when the search does not cache); it may
        prepare this provider's image.

        Raises:
            InvalidImageError: The source cannot be prepared for this box.
        """
        if self.keyed and self.known_key() is None:
            await self.image()
        return self.known_key()

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
            image = await self.image()
            if self.crops_locally and self.cropped is not None:
                image = await self.cropped.image(image)
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
        cache_key: The result-cache key of this search for this provider when it is known in advance
            (else :meth:`key` finds it, or None when not caching).
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

    async def key(self) -> str | None:
        """The result-cache key of this route's answer, None when not caching (see
        :meth:`PlannedQuery.cache_key`).

        Raises:
            InvalidImageError: The source cannot be prepared for this provider.
        """
        if self.cache_key is not None or self.query is None:
            return self.cache_key
        return await self.query.cache_key()

    def known_key(self) -> str | None:
        """:meth:`key` when it takes no image work, else None."""
        if self.cache_key is not None or self.query is None:
            return self.cache_key
        return self.query.known_key()

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
    images: SearchImages,
    options: SearchOptions,
    *,
    use_cache: bool,
) -> list[Route]:
    """A ready route per provider, in the order given.

    Args:
        providers: ``(provider, scope id, assumed slots, windows)`` in the order to ask.
        images: The search's images by upload box (the first provider's already made).
        options: The caller's options.
        use_cache: Whether to give each route its result-cache key.
    """
    cropped = _Cropped() if options.cut_borders else None
    first = next(made for p, *_ in providers if (made := images.made(p.limits.box)) is not None)
    routes = []
    for provider, scope, slots, windows in providers:
        planned = PlannedQuery(provider, first, options, cropped, images, keyed=use_cache)
        routes.append(
            Route(
                provider=provider,
                scope=scope,
                slots=slots,
                cache_key=planned.known_key(),
                windows=windows,
                query=planned,
            )
        )
    return routes

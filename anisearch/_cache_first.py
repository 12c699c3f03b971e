"""Answering from the result cache before the image is decoded.

A repeated search passes the same bytes. The result key of a provider that keys by a perceptual
descriptor (trace.moe) needs the decoded picture; so whenever an answer is stored, the cache also records,
for each provider asked, which result key this raw source (by its SHA-256, in this upload box, with these
options) mapped to. The next search of the same bytes reads and hashes them in one worker thread and
looks the answer up on the cache's open connection: no decoding, no resizing, no descriptor. Bytes already
in memory are hashed and looked up on the event loop itself, without a worker thread, unless the cache is
busy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from anisearch._cache import cache_key

if TYPE_CHECKING:
    from collections.abc import Sequence

    from anisearch._cache import ResultCache
    from anisearch._image import SourceBytes
    from anisearch._models import SearchResult
    from anisearch._plan import Route
    from anisearch._provider import Provider, SearchOptions

__all__ = ["find_by_digest", "find_by_source", "source_keys"]


def _alias(provider: str, digest: str, box: tuple[int, int], options: SearchOptions) -> str:
    return cache_key(provider, f"source:sha256:{digest}@{box[0]}x{box[1]}", [options])


def find_by_source(
    store: ResultCache,
    source: SourceBytes,
    providers: Sequence[Provider],
    options: SearchOptions,
    box: tuple[int, int],
    *,
    block: bool = True,
) -> tuple[tuple[Provider, SearchResult] | None, bool]:
    """The first provider, in order, with a cached answer for this source, and whether that is sure.

    Returns ``(hit, True)`` on a hit, ``(None, True)`` when no provider has an answer, and
    ``(None, False)`` when that cannot be told without preparing the image.

    Args:
        store: The result cache.
        source: The source read and hashed (:func:`anisearch._image.read`).
        providers: The providers to ask, in order.
        options: The search's options (part of every key).
        box: The upload box the source is prepared in (a descriptor depends on it).
        block: False to raise :class:`~anisearch._cache.WouldBlock` rather than wait for the cache.

    Raises:
        WouldBlock: ``block`` is False and the lookup would have had to wait.
    """
    aliases = [_alias(provider.name, source.digest, box, options) for provider in providers]
    found = store.find(aliases, block=block)
    if found is None:
        return None, False
    index, payload = found
    result = None if index < 0 else store.decode(payload)
    return (None, index < 0) if result is None else ((providers[index], result), True)


def source_keys(
    routes: Sequence[Route], digest: str, box: tuple[int, int], options: SearchOptions
) -> list[tuple[str, str]]:
    """``(source alias, result key)`` of every route that has a result key, to store with an answer."""
    return [
        (_alias(route.provider.name, digest, box, options), route.cache_key)
        for route in routes
        if route.cache_key is not None
    ]


def find_by_digest(
    store: ResultCache, digest: str, names: Sequence[str], options: SearchOptions, box: tuple[int, int]
) -> tuple[tuple[int, SearchResult] | None, bool]:
    """:func:`find_by_source` by the source's digest and the providers' names alone (no provider loaded).

    Returns ``((index in names, result), True)`` on a hit; otherwise as :func:`find_by_source`.
    """
    found = store.find([_alias(name, digest, box, options) for name in names])
    if found is None:
        return None, False
    index, payload = found
    result = None if index < 0 else store.decode(payload)
    return (None, index < 0) if result is None else ((index, result), True)

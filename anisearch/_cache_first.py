"""Answering from the result cache before the image is decoded.

A repeated search passes the same bytes. The result key of a provider that keys by a perceptual
descriptor (trace.moe) needs the decoded picture; so whenever an answer is stored, the cache also records,
for each provider whose upload was made, which result key this raw source (by its SHA-256, in that
provider's upload box, with these options) mapped to. The next search of the same bytes reads and hashes
them in one worker thread and looks the answer up on the cache's open connection: no decoding, no
resizing, no descriptor. Bytes already in memory are hashed and looked up on the event loop itself,
without a worker thread, unless the cache is busy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from anisearch._address import cache_name
from anisearch._cache import cache_key
from anisearch._merge import merge_answers
from anisearch._models import Attempt

if TYPE_CHECKING:
    from collections.abc import Sequence

    from anisearch._cache import ResultCache
    from anisearch._image import SourceBytes
    from anisearch._models import SearchResult
    from anisearch._plan import Route
    from anisearch._provider import Provider, SearchOptions

__all__ = ["cached_attempts", "choose", "confident", "find_by_digest", "find_by_source", "source_keys"]


def _alias(provider: str, digest: str, box: tuple[int, int], options: SearchOptions) -> str:
    return cache_key(provider, f"source:sha256:{digest}@{box[0]}x{box[1]}", [options])


def find_by_source(
    store: ResultCache,
    source: SourceBytes,
    providers: Sequence[Provider],
    options: SearchOptions,
    *,
    block: bool = True,
    min_similarity: float | None = None,
    strategy: str = "fallback",
) -> tuple[tuple[Provider, SearchResult] | None, bool]:
    """The cached answer the search would give for this source (see :func:`choose`), and whether that is
    sure.

    Returns ``(hit, True)`` on a hit, ``(None, True)`` when the cache cannot answer (the providers must be
    asked), and ``(None, False)`` when that cannot be told without preparing the image.

    Args:
        store: The result cache.
        source: The source read and hashed (:func:`anisearch._image.read`).
        providers: The providers to ask, in order.
        options: The search's options (part of every key).
        block: False to raise :class:`~anisearch._cache.WouldBlock` rather than wait for the cache.
        min_similarity: The search's threshold, 0..1 (None: any answer is enough).
        strategy: The search's strategy, ``fallback`` or ``fanout``.

    Raises:
        WouldBlock: ``block`` is False and the lookup would have had to wait.
    """
    aliases = [_alias(cache_name(p), source.digest, p.limits.box, options) for p in providers]
    found, sure = _find(store, aliases, min_similarity, strategy, block=block)
    return ((providers[found[0]], found[1]) if found is not None else None), sure


def source_keys(routes: Sequence[Route], digest: str, options: SearchOptions) -> list[tuple[str, str]]:
    """``(source alias, result key)`` of every route whose result key is known (its provider's upload was
    made), to store with an answer. An alias is per provider and its upload box: a descriptor depends on
    the box."""
    return [
        (_alias(cache_name(route.provider), digest, route.provider.limits.box, options), key)
        for route in routes
        if (key := route.known_key()) is not None
    ]


def find_by_digest(
    store: ResultCache,
    digest: str,
    names: Sequence[str],
    options: SearchOptions,
    boxes: Sequence[tuple[int, int]],
    *,
    min_similarity: float | None = None,
    strategy: str = "fallback",
) -> tuple[tuple[int, SearchResult] | None, bool]:
    """:func:`find_by_source` by the source's digest and the providers' names alone (no provider loaded),
    with each provider's upload box in ``boxes``.

    Returns ``((index in names, result), True)`` on a hit; otherwise as :func:`find_by_source`.
    """
    aliases = [_alias(name, digest, box, options) for name, box in zip(names, boxes, strict=True)]
    return _find(store, aliases, min_similarity, strategy, block=True)


def _find(
    store: ResultCache, aliases: list[str], min_similarity: float | None, strategy: str, *, block: bool
) -> tuple[tuple[int, SearchResult] | None, bool]:
    decoded: dict[int, SearchResult | None] = {}  # by id of the stored JSON: each answer decoded once

    def read(payload: str) -> SearchResult | None:
        if id(payload) not in decoded:
            decoded[id(payload)] = store.decode(payload)
        return decoded[id(payload)]

    def enough(payload: str) -> bool:  # the lookup may stop here: what a fallback search stops at
        if strategy == "fanout":
            return False
        if min_similarity is None:
            return True
        result = read(payload)
        return result is not None and confident(result, min_similarity)

    found = store.find_each(aliases, enough, block=block)
    if found is None:
        return None, False
    payloads, complete = found
    results = [None if payload is None else read(payload) for payload in payloads]
    return choose(results, complete=complete, min_similarity=min_similarity, strategy=strategy)


def confident(result: SearchResult, min_similarity: float | None) -> bool:
    """Whether ``result`` ends a fallback search: its best hit reaches ``min_similarity`` (any answer does
    without one)."""
    return min_similarity is None or (result.best is not None and result.best.similarity >= min_similarity)


def choose(
    results: Sequence[SearchResult | None],
    *,
    complete: bool,
    min_similarity: float | None,
    strategy: str,
) -> tuple[tuple[int, SearchResult] | None, bool]:
    """The answer a search would give from the providers' cached answers, as the router would give it.

    ``results`` holds each provider's cached answer in the search's order (None: none cached), up to the
    first provider whose key is not known yet when ``complete`` is False.

    - ``fallback``: the first confident answer (:func:`confident`), passing over a provider with no cached
      answer as the cache always has (it failed or was not asked; failures are never cached). When none is
      confident, the strongest, but only when every provider's answer is cached: the router keeps the
      strongest of the answers it got, after asking every provider.
    - ``fanout``: every provider's answer merged, only when every one is cached.

    Returns:
        ``((index, result), True)`` on a hit, ``(None, True)`` when the providers must be asked, and
        ``(None, False)`` when that cannot be told before the image is prepared.
    """
    if strategy == "fanout":
        return _fanout_choice(results, complete=complete)
    weak: list[tuple[int, SearchResult]] = []
    for index, result in enumerate(results):
        if result is None:
            continue
        if confident(result, min_similarity):
            return (index, result), True
        weak.append((index, result))
    if not complete:
        return None, False
    if not weak or len(weak) < len(results):  # a provider to ask could still give a confident answer
        return None, True
    return max(weak, key=lambda found: found[1].best.similarity if found[1].best else 0.0), True


def _fanout_choice(
    results: Sequence[SearchResult | None], *, complete: bool
) -> tuple[tuple[int, SearchResult] | None, bool]:
    if not complete:
        return None, False
    answered = [result for result in results if result is not None]
    if not answered or len(answered) < len(results):
        return None, True
    return (0, merge_answers(answered)), True


def cached_attempts(names: Sequence[str], index: int, strategy: str) -> list[Attempt]:
    """The attempts of an answer :func:`choose` found in the cache: ``cached`` for the provider at ``index``
    in the search's order, or for every provider of a fanout (whose answers it merges)."""
    merged = names if strategy == "fanout" else [names[index]]
    return [Attempt(provider=name, outcome="cached", reason="answered from the cache") for name in merged]

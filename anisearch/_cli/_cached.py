"""``anisearch search FILE`` answered from the result cache before the engine starts.

Starting the engine (httpx, Pillow, the ledger, every provider's module) costs a new process far more than
the cache hit itself. So for one local file this path reads and hashes it and looks its answer up in the
SQLite result cache by the raw-digest keys the engine stores with every answer
(:func:`anisearch._cache_first.find_by_digest`), on the main thread, without an event loop.

Those keys name each provider and the upload box. Both come from what the providers' classes said the last
time they were loaded here (their default order and upload limits), kept in ``provider-facts.json`` next to
the cache file, and trusted while Python's search path is unchanged (its directories' modification times) or
the registered providers are the same distributions and versions. Anything this path cannot answer
exactly as the engine would goes to the engine: a URL, stdin or a folder; a Redis cache or no cache; a
title or adult flag the metadata cache does not know (the engine's enricher fills the rest from that cache,
as in the engine); an unknown provider, or one whose limits depend on its settings; a source that was never
answered.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import sqlite3
import sys
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from anisearch._exceptions import AnisearchError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from anisearch._config import Settings
    from anisearch._models import Attempt, SearchResult

__all__ = ["cached_answer"]

FACTS_FILE = "provider-facts.json"
"""Next to the result cache file: what each installed provider class says about ordering and limits."""
_FACTS_VERSION = 3


@dataclasses.dataclass(frozen=True, slots=True)
class Fact:
    """What a provider class says that the cache keys and the default order depend on."""

    default_order: bool
    default_rank: int
    box: tuple[int, int] | None
    """``(max_width, max_height)`` of its class-level upload limits; None when they are set per instance."""
    default_url: str = ""
    """Its own address (``default_url``): answers from another address are cached under that address."""
    settings: tuple[str, ...] | None = None
    """The setting names it takes (its ``Settings`` model's fields); None when it does not say."""


def cached_answer(
    settings: Settings,
    source: str,
    options: dict[str, Any],
    on_attempt: Callable[[Attempt], None] | None = None,
) -> SearchResult | None:
    """The engine's answer to ``search(source, **options)`` when it would come from the cache, else None.

    Args:
        settings: The settings in force.
        source: What the user typed: a path (anything else gives None).
        options: The keyword arguments the command passes to ``AsyncClient.search``.
        on_attempt: Called with each ``cached`` attempt, as the engine would.

    Returns:
        The cached result, marked ``cached`` with a ``cached`` attempt per provider whose answer it holds
        (every provider, for a fanout); None when the engine must run
        (it then answers, or fails, as it always did).
    """
    if not _answerable(settings, options) or not Path(source).is_file():
        return None
    try:
        return _lookup(settings, source, options, on_attempt)
    except (AnisearchError, OSError, ValueError, sqlite3.Error):  # the engine says what is wrong
        return None


def _answerable(settings: Settings, options: dict[str, Any]) -> bool:
    """Whether the engine would answer a cache hit straight from the SQLite cache."""
    if not options.get("cache", True) or settings.cache_path is None:
        return False
    if settings.cache is None:  # the default SQLite file: the Redis cache module (anyio) stays unloaded
        return True
    from anisearch._config import is_redis_url

    return not is_redis_url(settings.cache)


def _enrichment(settings: Settings, options: dict[str, Any]) -> tuple[bool, bool] | None:
    """``(fill, include_adult)`` when the engine would pass a hit through its enricher, as
    ``AsyncClient._enrichment`` decides; None when it returns it unchanged."""
    return settings.enrichment(
        fill=bool(options.get("anilist_info")), include_adult=options.get("include_adult")
    )


class _NeedsEngineError(Exception):
    """The enricher would ask the metadata provider: only the engine (its ledger and transport) may."""


def _enriched(
    settings: Settings, result: SearchResult, *, fill: bool, include_adult: bool
) -> SearchResult | None:
    """``result`` through the engine's enricher, when the metadata cache knows every title it needs;
    None when a request would be needed (the engine then answers the whole search)."""
    import anyio

    from anisearch._enrich import open_enricher

    async def no_ledger() -> Any:
        raise _NeedsEngineError

    async def no_send(*_: Any) -> Any:
        raise _NeedsEngineError

    enricher = open_enricher(settings, no_ledger, no_send)
    try:
        return anyio.run(partial(enricher, result, fill=fill, include_adult=include_adult))
    except _NeedsEngineError:
        return None
    finally:
        enricher.close()


def _lookup(
    settings: Settings,
    source: str,
    options: dict[str, Any],
    on_attempt: Callable[[Attempt], None] | None,
) -> SearchResult | None:
    from anisearch._cache import ResultCache
    from anisearch._cache_first import cached_attempts, find_by_digest
    from anisearch._limits import MAX_SOURCE_BYTES
    from anisearch._provider import SearchOptions
    from anisearch._source import read_source

    path = settings.cache_path
    assert path is not None  # noqa: S101 - _answerable checked it
    facts = _facts(path.with_name(FACTS_FILE))
    names = _order(settings, options.get("providers"), facts)
    if names is None or not _settings_known(settings, names, facts):
        return None  # the engine refuses what is wrong (a misspelt table or setting) or uses it
    cached_as = []  # the names the engine caches their answers under (anisearch._address.cache_name)
    boxes = []  # and each one's upload box, which its answer's alias names
    for name in names:
        url = str(settings.provider_config(name).get("url") or "").strip().rstrip("/")  # a bad credential:
        fact = facts[name]  # the engine reports it
        default = fact.default_url.rstrip("/") if fact is not None else ""
        # a URL typed otherwise than httpx writes it finds nothing here: the engine answers then
        cached_as.append(name if not url or url == default else f"{name}@{url}")
        assert fact is not None and fact.box is not None  # noqa: PT018, S101 - _order checked the facts
        boxes.append(fact.box)
    data, _ = read_source(source, MAX_SOURCE_BYTES)
    if not data:
        return None
    search_options = SearchOptions(
        anilist_id=options.get("anilist_id"),
        cut_borders=bool(options.get("cut_borders")),
        anilist_info=bool(options.get("anilist_info")) and settings.upstream_titles,
    )
    store = ResultCache(path, ttl_seconds=settings.cache_ttl)
    try:
        if not store.usable:
            return None
        found, _ = find_by_digest(
            store,
            hashlib.sha256(data).hexdigest(),
            cached_as,
            search_options,
            boxes,
            min_similarity=options.get("min_similarity"),
            strategy=options.get("strategy") or "fallback",
        )
    finally:
        store.close()
    if found is None:
        return None
    index, result = found
    attempts = cached_attempts(names, index, options.get("strategy") or "fallback")
    answer = result.model_copy(update={"cached": True, "attempts": attempts})
    if (enrich := _enrichment(settings, options)) is not None:
        enriched = _enriched(settings, answer, fill=enrich[0], include_adult=enrich[1])
        if enriched is None:
            return None
        answer = enriched
    if on_attempt is not None:
        for attempt in attempts:
            on_attempt(attempt)
    return answer


def _settings_known(settings: Settings, names: Sequence[str], facts: dict[str, Fact | None]) -> bool:
    """Whether every provider setting in force is one the engine would take as it is: each table of the
    config file (and key of ``provider_options``) names an installed provider, and each setting of the
    providers asked is one of theirs. A typo must fail a cache hit as it fails a search."""
    named = settings.provider_tables()
    if named - set(facts):  # not a search provider's: a metadata provider's ([anilist]), or a typo
        from anisearch._provider import available_metadata_providers

        if named - set(facts) - set(available_metadata_providers()):
            return False
    for name in names:
        fact = facts[name]
        taken = fact.settings if fact is not None else None
        if taken is None or not set(settings.provider_config(name)) <= set(taken):
            return False
    return True


def _order(
    settings: Settings, requested: Sequence[str] | None, facts: dict[str, Fact | None]
) -> list[str] | None:
    """The providers the engine would ask, in order (as ``AsyncClient._order``, which leaves a provider
    that cannot be loaded out of the default order); None when one of them is unknown, cannot be loaded
    or has no class-level upload box."""
    from anisearch._provider import provider_order

    candidates = ((name, fact.default_order, fact.default_rank) for name, fact in facts.items() if fact)
    seen = provider_order(
        requested,
        settings.providers,
        candidates,
        lambda name: bool(settings.provider_config(name).get("url")),
    )
    if not seen or any((fact := facts.get(name)) is None or fact.box is None for name in seen):
        return None
    return seen


# ---------------------------------------------------------------------------------------------- facts


def _installed() -> list[list[str]]:
    """Each registered provider's entry point and the distribution (name, version) that registers it."""
    from importlib.metadata import entry_points

    from anisearch._provider import PROVIDER_GROUP

    rows = []
    for point in entry_points(group=PROVIDER_GROUP):
        dist = point.dist
        rows.append([point.name, point.value, dist.name if dist else "", dist.version if dist else ""])
    return sorted(rows)


def _search_path() -> list[list[Any]]:
    """Each directory Python imports from, with its modification time (ns; None when missing).

    Installing, upgrading or removing a distribution adds or removes its ``.dist-info`` there, so an
    unchanged list means the same providers are installed, for the cost of a few ``stat`` calls (reading
    every distribution's entry points costs tens of milliseconds). The current directory (``python -m``,
    ``python -c``) is left out: it changes as the user works.
    """
    here = str(Path.cwd())
    paths = []
    for index, entry in enumerate(sys.path):
        if index == 0 and entry in {"", here}:
            continue
        try:
            paths.append([entry, Path(entry).stat().st_mtime_ns])
        except OSError:
            paths.append([entry, None])
    return paths


def _stored(file: Path) -> dict[str, Any]:
    with contextlib.suppress(OSError, ValueError):
        stored = json.loads(file.read_text(encoding="utf-8"))
        if isinstance(stored, dict) and stored.get("version") == _FACTS_VERSION:
            return stored
    return {}


def _facts(file: Path) -> dict[str, Fact | None]:
    """Every installed provider's facts (None: it cannot be loaded).

    From ``file`` while Python's search path is unchanged, or while the registered providers are the ones
    it was written for; otherwise from the classes. ``file`` is rewritten whenever it was not current.
    """
    paths = _search_path()
    stored = _stored(file)
    try:
        if stored.get("paths") == paths:
            return {name: _from_json(fact) for name, fact in stored["providers"].items()}
        installed = _installed()
        if stored.get("installed") == installed:
            facts = {name: _from_json(fact) for name, fact in stored["providers"].items()}
        else:
            facts = {row[0]: _read_class(row[0]) for row in installed}
    except (KeyError, TypeError, ValueError, IndexError):  # a file written by hand or by another version
        installed = _installed()
        facts = {row[0]: _read_class(row[0]) for row in installed}
    payload = {
        "version": _FACTS_VERSION,
        "paths": paths,
        "installed": installed,
        "providers": {
            name: None if fact is None else dataclasses.asdict(fact) for name, fact in facts.items()
        },
    }
    temporary = file.with_name(f".{file.name}.{os.getpid()}")
    with contextlib.suppress(OSError):  # without it, the next hit reads the entry points again
        temporary.write_text(json.dumps(payload), encoding="utf-8")
        temporary.replace(file)
    return facts


def _from_json(fact: dict[str, Any] | None) -> Fact | None:
    if fact is None:
        return None
    box = fact["box"]
    return Fact(
        bool(fact["default_order"]),
        int(fact["default_rank"]),
        (int(box[0]), int(box[1])) if box else None,
        str(fact["default_url"]),
        None if fact["settings"] is None else tuple(str(name) for name in fact["settings"]),
    )


def _read_class(name: str) -> Fact | None:
    from anisearch._provider import UploadLimits, load_provider

    try:
        cls = load_provider(name)
    except AnisearchError:
        return None
    limits = getattr(cls, "limits", None)
    box = (limits.max_width, limits.max_height) if isinstance(limits, UploadLimits) else None
    model = getattr(cls, "Settings", None)
    fields = getattr(model, "model_fields", None)
    return Fact(
        bool(getattr(cls, "default_order", False)),
        int(getattr(cls, "default_rank", 0)),
        box,
        str(getattr(cls, "default_url", "") or ""),
        tuple(sorted(fields)) if isinstance(fields, dict) else None,
    )

"""The engine: ``AsyncClient``, the one implementation (``Client`` in ``_sync.py`` wraps it).

``AsyncClient`` owns the lifecycle (the provider instances, the ledger, the result cache, the HTTP layers) and
orchestrates a search: resolve the input, prepare the image once, plan a ready route per provider
(``_plan``), answer from the cache or a search already in flight, and hand the routes to the router.
Account features are in ``_account``, provider HTTP in ``_transport``, user URLs in ``_download``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import logging
import math
import numbers
import os
import stat
import threading
import time
import warnings
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import IO, TYPE_CHECKING, Any, Self, TypeVar

import anyio
import httpx

from anisearch import _image, _worker
from anisearch._account import AccountFeatures, AsyncApiKeys
from anisearch._address import cache_name
from anisearch._arguments import check_flags, check_names, check_text, type_name, whole_number
from anisearch._cache import ResultCache, WouldBlock, cache_key
from anisearch._cache_first import cached_attempts, choose, confident, find_by_source, source_keys
from anisearch._cache_redis import CacheStore, Flights, RedisResultCache, open_cache
from anisearch._config import Settings, setting_named
from anisearch._download import Downloader
from anisearch._enrich import Enricher, metadata_infos, metadata_provider, open_enricher
from anisearch._exceptions import (
    ClientClosedError,
    ConfigurationError,
    InvalidImageError,
    ProviderError,
    ProviderTimeoutError,
    UnknownProviderError,
)
from anisearch._ledger import WindowSpec, open_ledger
from anisearch._ledger._base import provider_scope, system_clock
from anisearch._limits import (
    HASH_IN_PLACE_BYTES,
    MAX_HITS,
    keep_best_hits,
    remaining_seconds,
    search_deadline,
)
from anisearch._models import Attempt, ProviderInfo, Quota, SearchResult
from anisearch._plan import Route, SearchImages, plan_routes
from anisearch._provider import (
    Provider,
    ProviderContext,
    SearchMode,
    SearchOptions,
    available_providers,
    check_registered,
    load_metadata_provider,
    load_provider,
    provider_order,
)
from anisearch._redact import printable, redact
from anisearch._router import AttemptCallback, Router, Strategy, WaitCallback, all_failed
from anisearch._transport import ProviderTransport
from anisearch._verdict import provider_windows, reason

if TYPE_CHECKING:
    from types import TracebackType

    from PIL import Image

    from anisearch._ledger._base import Ledger

__all__ = ["AsyncApiKeys", "AsyncClient"]

T = TypeVar("T")
V = TypeVar("V")

logger = logging.getLogger("anisearch")

_CLOSE_WAIT_SECONDS = 5.0
"""How long :meth:`AsyncClient.aclose` waits for the searches it ended to record what they had sent."""


def _guarded(callback: Callable[[V], None] | None, name: str) -> Callable[[V], None] | None:
    """``callback``, its exceptions logged instead of raised (see :class:`AsyncClient`)."""
    if callback is None:
        return None

    def call(value: V) -> None:
        try:
            callback(value)
        except Exception:
            logger.exception("the %s callback raised; the search goes on", name)

    return call


class AsyncClient(AccountFeatures):
    """The anisearch engine. Use it as ``async with AsyncClient() as client: await client.search(...)``.

    It runs on asyncio (anyio code on its asyncio backend too); under trio, use the sync :class:`Client`
    from ``trio.to_thread.run_sync``. One client serves many tasks at once, all on the event loop it is
    first used on (its connections belong to that loop: on another one it raises ConfigurationError before
    sending anything).

    Args:
        settings: Where to send requests and keep state; ``Settings.load()`` (environment + config file)
            when None.
        transport: An httpx async transport to send every request through (``respx``, a proxy, an ASGI
            app), instead of the network.
        on_attempt: Called with each :class:`Attempt` as it completes (metrics, logging).
        on_wait: Called with one line whenever a search starts waiting (for a slot, or out a provider's
            short backoff), e.g. ``"waiting for a tracemoe slot (held by pid 1234)"``. An exception
            either callback raises is logged (logger ``anisearch``, with its traceback) and the search
            goes on: an answer already paid for is never lost to it. Both run on the event loop, so they
            must return at once: one that blocks (a synchronous write to a slow metrics server) holds
            up every search of the loop meanwhile, past their deadlines; hand slow work to a thread or
            a queue.
        clock: The current instant for the ledger (an aware datetime); tests and simulations move it.

    Raises:
        UnknownProviderError: ``providers`` or ``metadata`` in the settings names a provider that is not
            installed (the message lists those that are).
        ConfigurationError: Provider settings (a table of the config file, a key of
            ``provider_options``) name a provider that is not installed; the ledger URL has an unknown
            scheme or names Redis without the ``redis`` extra; or the time zone is unknown. Nothing is
            connected yet: an unreachable ledger is a :class:`LedgerError` at first use, and a result
            cache that cannot be used is warned about (logger ``anisearch``), never raised. Also when
            ``settings`` is not an :class:`anisearch.Settings` (a URL or a dict: use ``Settings.load(...)``),
            ``transport`` is not an ``httpx.AsyncBaseTransport``, or ``on_attempt``, ``on_wait`` or
            ``clock`` is neither callable nor None.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        on_attempt: AttemptCallback | None = None,
        on_wait: WaitCallback | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        _check_made_with(settings, transport, on_attempt=on_attempt, on_wait=on_wait, clock=clock)
        self.settings = settings if settings is not None else Settings.load()
        # Bad settings fail here, where a bot starts, not at its first search; nothing is connected yet.
        try:
            for name in self.settings.providers or ():
                load_provider(name)
        except UnknownProviderError as exc:  # which setting named it: a variable, or the config file
            raise UnknownProviderError(
                exc.name, exc.known, note=setting_named("providers", exc.name) or ""
            ) from None
        try:
            if self.settings.metadata_provider is not None:
                load_metadata_provider(self.settings.metadata_provider)
        except UnknownProviderError as exc:
            raise UnknownProviderError(
                exc.name, exc.known, note=setting_named("metadata", exc.name) or ""
            ) from None
        self.settings.check_provider_tables()
        ledger = open_ledger(self.settings.ledger_url, timezone=self.settings.timezone, clock=clock)
        self._transport = ProviderTransport(self.settings.timeout, transport)
        self._downloader = Downloader(
            self.settings.timeout, allow_private=self.settings.allow_private_urls, transport=transport
        )
        self._on_attempt = _guarded(on_attempt, "on_attempt")
        self._on_wait = _guarded(on_wait, "on_wait")
        self._clock = clock
        self._providers: dict[str, Provider] = {}
        self._ledger: Ledger = ledger  # closed by aclose()
        self._cache: CacheStore | None = None
        self._cache_opened = False
        self._flights = Flights()
        self._closed = False
        self._pid = os.getpid()  # a forked child's copy is the parent's to close, and never warns
        self._loop: asyncio.AbstractEventLoop | None = None  # the event loop of its first work
        self._working: dict[anyio.CancelScope, int] = {}  # the searches and calls in flight: their task
        self._drained: anyio.Event | None = None  # set for aclose() each time some work has ended
        self._enricher: Enricher | None = None
        self._settle_first: set[str] = set()  # providers whose slot is handed over at settle (the router)
        self._quota_check_failed: dict[tuple[str, str, str], float] = {}  # (the router's, too)
        self.api_keys = AsyncApiKeys(self._account_provider, self._call)

    def __del__(self) -> None:
        if not getattr(self, "_closed", True) and self._pid == os.getpid():  # as httpx warns: the pool and
            # the ledger were never closed
            warnings.warn(
                f"unclosed {type(self).__name__}; close it with 'await client.aclose()' or use "
                "'async with AsyncClient() as client:'",
                ResourceWarning,
                stacklevel=1,
            )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pools, the cache and the ledger; closing twice is harmless.

        Searches and calls still running on the client end first, each with :class:`ClientClosedError`
        (what a search had already sent stays counted in the ledger, as the upstream counts it); closing
        waits for them to record that, at most :data:`_CLOSE_WAIT_SECONDS`. Called on another event loop
        than the client's, it closes on the client's loop when that runs in another thread, and closes
        the files when that loop has ended (its connections went with it).
        """
        if self._closed or self._pid != os.getpid():  # a forked child's copy: the parent closes it
            return
        own = self._loop
        if own is not None and own is not asyncio.get_running_loop() and own.is_running():
            # its loop runs in another thread: the work to end and the connections to close are there
            handed = asyncio.run_coroutine_threadsafe(self.aclose(), own)
            try:
                await asyncio.wrap_future(handed)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():  # this close was cancelled, not that loop ended
                    raise
                await self._close_left()  # that loop ended meanwhile (its asyncio.run returned)
            return
        if own is not None and own.is_closed():
            await self._close_left()
            return
        self._closed = True
        await self._end_work()
        # Shielded: an aclose() in a cancelled scope (async with under move_on_after) still closes the
        # ledger's connection, which it left open, with no way to close it again: the client said closed.
        with anyio.CancelScope(shield=True), anyio.move_on_after(_CLOSE_WAIT_SECONDS):
            await self._transport.aclose()
            await self._downloader.aclose()
            if isinstance(self._cache, RedisResultCache):
                await self._cache.aclose()
            self._close_files()
            await self._ledger.aclose()

    async def _close_left(self) -> None:
        """Close what is left after the loop the client worked on has ended (``asyncio.run`` closes it): the
        files (SQLite) close now; its connections went with that loop and cannot be closed from here."""
        self._closed = True
        self._close_files()
        for close in (self._transport.aclose, self._downloader.aclose, self._ledger.aclose):
            # "Event loop is closed", "attached to a different loop": that loop's, not this one's
            with contextlib.suppress(RuntimeError):
                await close()

    def _abandon(self) -> None:
        """The event loop the client worked on has died (a callback's ``SystemExit``): close its files; its
        connections went with that loop."""
        self._closed = True
        self._close_files()

    def _close_files(self) -> None:
        """Close the SQLite result cache and the metadata cache (files, not connections of a loop)."""
        if self._cache is not None and not isinstance(self._cache, RedisResultCache):
            self._cache.close()
        if self._enricher is not None:
            self._enricher.close()

    @contextlib.contextmanager
    def _work(self) -> Iterator[None]:
        """Run a search or call as work in flight, which :meth:`aclose` ends with :class:`ClientClosedError`.

        Raises:
            ClientClosedError: The client is closed, or was closed while the work ran.
            ConfigurationError: The event loop is not asyncio's (trio), or not the one the client was first
                used on.
        """
        self._check_open()
        self._on_its_loop()
        with anyio.CancelScope() as scope:
            self._working[scope] = anyio.get_current_task().id
            try:
                yield
            finally:
                del self._working[scope]
                if self._drained is not None:  # aclose() counts what is left
                    self._drained.set()
        if scope.cancelled_caught:  # only aclose() cancels this scope
            raise ClientClosedError("the client was closed while this search or call was running")

    async def _end_work(self) -> None:
        """Cancel the work in flight of other tasks and wait (shielded, bounded) until each settled."""
        this = anyio.get_current_task().id
        others = [scope for scope, task in self._working.items() if task != this]
        if not others:
            return
        self._drained = anyio.Event()
        for scope in others:
            scope.cancel()
        with anyio.CancelScope(shield=True), anyio.move_on_after(_CLOSE_WAIT_SECONDS):
            while any(task != this for task in self._working.values()):
                await self._drained.wait()
                self._drained = anyio.Event()

    # ------------------------------------------------------------------ providers and state

    def _provider(self, name: str) -> Provider:
        if name not in self._providers:
            cls = load_provider(name)
            context = ProviderContext(
                config=self.settings.provider_config(name),
                state_dir=self.settings.state_dir,
                timeout=self.settings.timeout,
            )
            self._providers[name] = cls.from_context(context)
        return self._providers[name]

    def _order(self, providers: Sequence[str] | None) -> list[str]:
        providers = check_names("providers", providers)  # a str is a Sequence[str] too: refused
        candidates = (
            (name, bool(getattr(cls, "default_order", False)), cls.default_rank)
            for name in available_providers()
            if (cls := _candidate(name)) is not None
        )
        seen = provider_order(
            providers,
            self.settings.providers,
            candidates,
            lambda name: bool(self.settings.provider_config(name).get("url")),
        )
        for name in seen:
            self._provider(name)  # unknown names fail here, before any work
        return seen

    def _check_open(self) -> None:
        """Refuse to work once closed: a closed pool sends nothing, and a reopened ledger leaks; and in a
        forked child, whose copy of the client's connections and event loop are the parent's."""
        if self._pid != os.getpid():
            raise ClientClosedError(
                f"this {type(self).__name__} was opened before os.fork() and belongs to the parent process;"
                f" open a new {type(self).__name__} in this process"
            )
        if self._closed:
            raise ClientClosedError(f"the client is closed; open a new {type(self).__name__}")

    def _on_its_loop(self) -> None:
        """Check that this runs on asyncio, on the event loop of the client's first work (its connections,
        HTTP and Redis, belong to that loop), which the first call records.

        Raises:
            ConfigurationError: The event loop is not asyncio's (trio), or another one than the first.
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # trio (through anyio): the ledgers and the Redis client are asyncio's
            raise ConfigurationError(
                "AsyncClient runs on asyncio; under trio, call the sync anisearch.Client from "
                "trio.to_thread.run_sync"
            ) from None
        if self._loop is None:
            self._loop = loop
        elif loop is not self._loop:  # fail before anything is sent on a connection of the other loop
            raise ConfigurationError(
                "this AsyncClient was first used on another event loop (each asyncio.run() starts a new "
                "one), and its connections belong to that loop; open one AsyncClient per event loop "
                "('async with AsyncClient()' inside the coroutine you run), or use the sync anisearch.Client"
            )

    async def _get_ledger(self) -> Ledger:
        self._check_open()
        self._on_its_loop()
        return self._ledger

    def _get_cache(self) -> CacheStore | None:
        if not self._cache_opened:
            self._cache = open_cache(self.settings)  # SQLite or Redis; disposable: warned, never raised
            self._cache_opened = True
        return self._cache

    @staticmethod
    def _slots(provider: Provider) -> int:
        known = [q.concurrency for q in provider.assumed_quotas() if q.concurrency]
        return min(known) if known else 1

    def _windows(self, name: str) -> tuple[WindowSpec, ...]:
        try:
            return provider_windows(self._provider(name))
        except ConfigurationError:  # a provider in the ledger that is no longer installed or configured
            return ()

    async def _call(self, provider: Any, request: httpx.Request, parse: Callable[[httpx.Response], T]) -> T:
        with self._work():
            return await self._call_open(provider, request, parse)
        raise AssertionError("unreachable: _work() raises when it ends the call")  # pragma: no cover

    async def _call_open(
        self, provider: Any, request: httpx.Request, parse: Callable[[httpx.Response], T]
    ) -> T:
        sent_at = (self._clock or system_clock)()  # without opening the ledger: rebased on its clock after
        response = await self._transport.send(provider, request)
        observed = provider.observe(response)
        if observed:
            ledger = await self._get_ledger()
            windows = provider_windows(provider)
            sent_at = ledger.rebased(sent_at)
            await ledger.observe(provider.name, provider_scope(provider), windows, observed, sent_at=sent_at)
        return parse(response)

    # ------------------------------------------------------------------ search

    async def search(
        self,
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
    ) -> SearchResult:
        """Which anime, which episode, which second is ``image`` from.

        Args:
            image: A path, ``bytes``, a binary file object, a ``PIL.Image.Image`` or an ``http(s)://`` URL
                (downloaded once by anisearch and uploaded, which is more reliable than letting each
                upstream fetch it).
            providers: Provider names in the order to ask; None means the configured order
                (``ANISEARCH_PROVIDERS``) or the default ``tracemoe``, then ``whatanimeisthis``; an
                empty list is refused (:class:`ConfigurationError`), as it would ask nobody.
            strategy: ``"fallback"`` asks one provider at a time until one answers; ``"fanout"`` asks every
                eligible provider at once and merges their hits.
            anilist_id: Only hits of this AniList ID.
            cut_borders: Trim black borders (server-side where the provider can, locally otherwise).
            anilist_info: Fill every hit's titles, MAL ID, adult flag, format and cover from the metadata
                provider (AniList; one request for all hits, cached per AniList ID for 7 days), whichever
                provider answered; titles an upstream gave are kept. Never fatal: a failed lookup leaves
                the hits as they came, with an ``attempts`` entry saying why.
            min_similarity: 0..1; a weaker best hit also asks the next provider, and the strongest answer
                seen is returned.
            cache: Reuse (and store) results in the local cache; a cached answer costs no quota.
            deadline: Seconds for the whole search (reading the input, downloading a URL, every attempt
                and every wait), or None. Without it a search is bounded by its attempts: each takes at
                most ``ANISEARCH_TIMEOUT`` seconds as a whole (connect, send, read the entire answer), up to
                four per provider, plus the waits between them. An attempt that would outlive the deadline
                is cut short as a :class:`ProviderTimeoutError`, and with ``strategy="fanout"`` the
                providers that answered in time are returned. A file object that has not been read by
                then (or within ``ANISEARCH_TIMEOUT``: a socket's, an HTTP response's) is an
                :class:`InvalidImageError`; the thread reading it is left to finish alone.
            mode: ``"image"`` uploads the image (fitted to each provider's limits); ``"vector"`` sends the
                providers that can search by a descriptor computed here (trace.moe: its colour layout
                vector, a 57-byte request) that descriptor instead, and uploads to the others. Borders are
                then cut locally. The answer is the same; only the bytes sent differ.
            include_adult: False drops hits of adult-only anime (looked up like ``anilist_info``) and
                counts them in ``adult_hits_dropped``; a hit whose flag could not be learned (the lookup
                failed: see the ``anilist`` attempt) is kept with ``is_adult`` None. None uses the setting
                ``include_adult`` (``ANISEARCH_INCLUDE_ADULT``, default True).

        Returns:
            The hits (similarity descending), who answered, and every attempt.

        Raises:
            InvalidImageError: The input is empty, not an image, truncated or a decompression bomb.
            ImageTooLargeError: The input is over the size limit (before any request). An image too large
                for one provider's upload limit alone is that provider's failed attempt: the next is asked.
            ImageFetchError: ``image`` is a URL that could not be downloaded.
            UnknownProviderError: A name in ``providers`` (or the ``metadata`` setting) is not registered.
            ConfigurationError: A bad argument (an empty ``providers``, or one that is not a list of names,
                ``min_similarity`` outside 0..1, an
                unknown strategy or mode, a ``deadline`` that is not a positive number of seconds, a flag
                that is not a ``bool``: ``include_adult="false"`` is refused, not read as true), or CA
                certificates that ``SSL_CERT_FILE``/``SSL_CERT_DIR`` name and that cannot be read (at the
                first HTTPS request).
            AllProvidersFailedError: No provider answered; it holds each provider's error.
            ClientClosedError: The client was closed, before or during the search.
            LedgerError: The quota ledger cannot be used (Redis unreachable, a SQLite file unwritable or
                corrupt): no search is sent without it. An answer already received is returned even when
                the ledger could not record it.
        """
        with self._work():
            if deadline is not None:  # any real number (a numpy scalar too), but True is not 1 s
                given: object = deadline
                if (
                    isinstance(given, bool)
                    or not isinstance(given, numbers.Real)
                    or not 0 < float(given) < math.inf
                ):
                    kind = type_name(given)
                    raise ConfigurationError(
                        f"deadline must be a positive number of seconds, got {given!r} (type {kind})"
                    )
                deadline = float(given)
            if mode not in ("image", "vector"):
                raise ConfigurationError(f"unknown mode {mode!r}; use 'image' or 'vector'")
            check_flags(cut_borders=cut_borders, anilist_info=anilist_info, cache=cache)
            check_flags(include_adult=include_adult, none_allowed=True)
            # numpy's bool scalars pass the check: from here on the flags are plain bools
            cut_borders, anilist_info, cache = bool(cut_borders), bool(anilist_info), bool(cache)
            include_adult = None if include_adult is None else bool(include_adult)
            # bad settings fail first
            enrich = self._enrichment(fill=anilist_info, include_adult=include_adult)
            # Titles come from the metadata provider for every provider alike; trace.moe's own anilistInfo
            # only when asked for (upstream_anilist_info) or when there is no metadata provider.
            token = search_deadline.set(None if deadline is None else anyio.current_time() + deadline)
            try:
                result = await self._search(
                    image,
                    providers,
                    strategy,
                    SearchOptions(
                        anilist_id=anilist_id,
                        cut_borders=cut_borders,
                        anilist_info=anilist_info and self.settings.upstream_titles,
                        mode=mode,
                    ),
                    min_similarity,
                    cache,
                )
                return await enrich(result)
            finally:
                search_deadline.reset(token)
        raise AssertionError("unreachable: _work() raises when it ends the search")  # pragma: no cover

    async def _search(  # noqa: PLR0917 - the arguments of search(), passed on as they came
        self,
        image: Any,
        providers: Sequence[str] | None,
        strategy: Strategy,
        options: SearchOptions,
        min_similarity: float | None,
        cache: bool,
    ) -> SearchResult:
        if strategy not in ("fallback", "fanout"):
            raise ConfigurationError(f"unknown strategy {strategy!r}; use 'fallback' or 'fanout'")
        min_similarity, options = _checked(min_similarity, options)
        names = self._order(providers)
        source = await self._downloader.resolve(image)
        named = _file_name(source)  # a file can be read again (and nothing else is kept by this name)
        wait = remaining_seconds(self.settings.timeout)
        asked = [self._provider(name) for name in names]
        boxes = list(dict.fromkeys(provider.limits.box for provider in asked))
        # the first provider's upload is made first, another's when that provider is asked (a fanout asks
        # them all: every upload is made at once, decoding the source once where that is exact)
        # (and a caller's PIL image, which the caller may change meanwhile, is prepared for all at once)
        wanted = boxes if strategy == "fanout" or _image.is_picture(source) else boxes[:1]
        store = self._get_cache() if cache else None
        use_cache = store is not None
        looked_up = False
        made: _Made | None = None
        if isinstance(store, ResultCache):  # a repeated source is answered before any decoding
            lookup = _Lookup(store, asked, options, wanted, min_similarity, strategy)
            in_memory = lookup.in_memory(source)
            if in_memory is not None:
                source, (early, looked_up) = in_memory
                in_memory = None  # the search keeps the source only as long as it needs it
            else:  # a file, a stream, large bytes or a busy cache: a worker thread, which also prepares
                # the image when there is no answer (one thread hop either way)
                with _out_of_time(asked, self._on_attempt):
                    source, (early, looked_up), made = await _read_in_time(
                        lookup.read_find_prepare, source, max(wait, 0.0)
                    )
            if early is not None:
                names = [provider.name for provider in asked]
                return self._cached(cached_attempts(names, names.index(early[0].name), strategy), early[1])
        if made is None:
            with _out_of_time(asked, self._on_attempt):
                made = await _prepared(source, wanted, max(wait, 0.0))
        prepared = made.images[wanted[0]]
        kept, digest = made.source, None
        if (
            len(made.images) < len(boxes)
            and named is not None
            and await anyio.Path(named).is_file()  # not a pipe, which cannot be read twice
        ):
            kept, digest = named, prepared.digest  # a file is read again if another upload is needed
        images = SearchImages(kept, made.images, boxes, together=strategy == "fanout", digest=digest)
        source = made = kept = None  # the search keeps the source only while an upload is still to be made
        routes = plan_routes(
            [(p, provider_scope(p), self._slots(p), provider_windows(p)) for p in asked],
            images,
            options,
            use_cache=use_cache,
        )
        # an answer found by its key whose source aliases were missing: they are written then
        found_by_key = partial(_alias_found, None if looked_up else store, routes, prepared.digest, options)
        from_cache = partial(self._from_cache, routes, min_similarity, strategy, found_by_key)
        if use_cache and not looked_up and (cached := await from_cache()) is not None:
            return cached
        asking = "|".join(cache_name(provider) for provider in asked)  # the same servers, the same search
        flight = cache_key(asking, prepared.digest, [options, strategy, min_similarity])
        digest = prepared.digest

        async def route_search() -> SearchResult:
            router = Router(
                await self._get_ledger(),
                self._transport.send,
                wait_seconds=max(remaining_seconds(max(self.settings.timeout, 1.0)), 0.0),
                on_attempt=self._on_attempt,
                on_wait=self._on_wait,
                remember=_remember_best(store, partial(source_keys, routes, digest, options))
                if store is not None
                else None,
                settle_first=self._settle_first,
                quota_check_failed=self._quota_check_failed,
            )
            # a provider whose answer is cached is not asked again when another must be (the answer
            # was not confident and the next provider failed last time, or was added since)
            answered = partial(self._answered, found_by_key) if use_cache and len(routes) > 1 else None
            result = await router.search(
                routes, strategy=strategy, min_similarity=min_similarity, answered=answered
            )
            return _best_hits(result)

        # The same search already running (here, or anywhere on a shared Redis cache) answers this one.
        cached_answer = from_cache if use_cache else None
        return await self._flights.run(flight, route_search, cached_answer, store if use_cache else None)

    def _enrichment(
        self, *, fill: bool, include_adult: bool | None
    ) -> Callable[[SearchResult], Awaitable[SearchResult]]:
        """What a search's answer goes through: titles and adult flags from the metadata provider (see
        ``_enrich``, never fatal), or nothing when neither ``anilist_info`` nor the adult filter asks."""
        wanted = self.settings.enrichment(fill=fill, include_adult=include_adult)
        if wanted is None:
            return _unchanged
        if self._enricher is None:
            self._enricher = open_enricher(
                self.settings, self._get_ledger, self._transport.send, self._on_attempt
            )
        return partial(self._enricher, fill=wanted[0], include_adult=wanted[1])

    async def _from_cache(
        self,
        routes: Sequence[Route],
        min_similarity: float | None,
        strategy: Strategy,
        found_by_key: Callable[[], Awaitable[None]],
    ) -> SearchResult | None:
        """The answer the search would give from its providers' cached answers (see
        :func:`~anisearch._cache_first.choose`), or None when its providers must be asked (or the answer
        of a provider whose upload is not made yet is needed: the router looks that up when it comes to
        it, so a provider never asked costs no image work)."""
        store = self._get_cache()
        if store is None:
            return None
        results: list[SearchResult | None] = []
        for route in routes:
            key = route.known_key()
            if key is None:
                break
            result = await store.get(key)
            results.append(result)
            if result is not None and strategy != "fanout" and confident(result, min_similarity):
                break  # what a fallback search stops at: the rest need not be read
        complete = len(results) == len(routes)  # else up to a provider whose upload is not made yet
        found, _ = choose(results, complete=complete, min_similarity=min_similarity, strategy=strategy)
        if found is None:
            return None
        await found_by_key()
        names = [route.provider.name for route in routes]
        return self._cached(cached_attempts(names, found[0], strategy), found[1])

    async def _answered(
        self, found_by_key: Callable[[], Awaitable[None]], route: Route
    ) -> SearchResult | None:
        """The route's provider's answer in the result cache (None: none cached, or its upload cannot be
        made: asking it says why)."""
        store = self._get_cache()
        if store is None:
            return None
        try:
            key = await route.key()
        except InvalidImageError:
            return None
        result = None if key is None else await store.get(key)
        if result is not None:
            await found_by_key()
        return result

    def _cached(self, attempts: list[Attempt], result: SearchResult) -> SearchResult:
        """``result`` from the cache with its ``cached`` attempts (:func:`cached_attempts`)."""
        if self._on_attempt is not None:
            for attempt in attempts:
                self._on_attempt(attempt)
        return result.model_copy(update={"cached": True, "attempts": attempts})

    # ------------------------------------------------------------------ quota and providers

    async def quota(self, provider: str | None = None, *, refresh: bool = False) -> list[Quota]:
        """What each configured provider (or one) allows and what is left, per window.

        Each ``Quota`` says where its figures came from (``source``: ``upstream``, ``headers``, ``ledger``
        estimate, documented ``default``) and when the upstream last confirmed them (``observed_at``).

        Args:
            provider: One provider name (a metadata provider too: ``anilist``, whose requests the ledger
                counts in its rate window), or None for every configured provider.
            refresh: Ask the upstreams' free quota endpoints first (trace.moe ``/me``; costs no quota).

        Raises:
            UnknownProviderError: ``provider`` is not registered.
            ConfigurationError: ``provider`` is neither a ``str`` nor None, or ``refresh`` not a ``bool``.
            ProviderError: ``refresh`` and an upstream failed to answer; or ConfigurationError: its quota
                request cannot be made (no URL). The first such failure, raised once every other provider
                was asked (what they said is in the ledger: call again without ``refresh`` to read it; each
                failure is logged, logger ``anisearch``).
            LedgerError: The ledger cannot be used.
        """
        check_text("provider", provider, what=_ONE_PROVIDER, none_allowed=True)
        check_flags(refresh=refresh)
        if provider is not None and provider not in available_providers():
            check_registered(provider)
            return await self._metadata_quota(provider)
        names = [provider] if provider else self._order(None)
        ledger = await self._get_ledger()
        quotas: list[Quota] = []
        failure: ProviderError | ConfigurationError | None = None
        for name in names:
            instance = self._provider(name)
            scope = provider_scope(instance)
            if refresh:
                try:
                    await self._refresh(instance, scope, ledger)
                except (ProviderError, ConfigurationError) as exc:  # the other providers are still asked
                    logger.info("%s: could not refresh the quota: %s", name, exc)
                    failure = failure or exc
            known = await ledger.snapshot(name, self._windows)
            mine = [q for q in known if q.raw.get("scope_id") == scope]
            if not mine:
                mine = _defaults(name, scope, provider_windows(instance), ledger.now())
            quotas.extend(mine)
        if failure is not None:
            raise failure
        return quotas

    async def _refresh(self, provider: Provider, scope: str, ledger: Ledger) -> None:
        """Ask ``provider``'s free quota endpoint, if it has one, and record the answer in ``ledger``."""
        request = provider.quota_request()
        if request is not None:
            sent_at = ledger.now()
            fresh = await self._call(provider, request, provider.parse_quota)
            await ledger.observe(provider.name, scope, provider_windows(provider), fresh, sent_at=sent_at)

    async def _metadata_quota(self, name: str) -> list[Quota]:
        """The windows of the metadata provider ``name`` (it has no quota endpoint to refresh from)."""
        instance = metadata_provider(self.settings, name)
        scope = provider_scope(instance)
        windows = tuple(instance.windows())
        ledger = await self._get_ledger()
        known = await ledger.snapshot(name, lambda _: windows)
        return [q for q in known if q.raw.get("scope_id") == scope] or _defaults(
            name, scope, windows, ledger.now()
        )

    async def _ledger_now(self) -> datetime:
        """The ledger's current instant: the clock :meth:`quota`'s instants are on (a shared Redis keeps its
        server's, which this machine's may be off from), for a caller that says how far away they are."""
        return (await self._get_ledger()).now()

    async def reset_quota(self, provider: str | None = None) -> None:
        """Forget what the ledger believes about every provider (or one): counts, cooldowns, slots.

        The next search asks the upstream again. ``anisearch quota --reset`` runs this.

        Raises:
            UnknownProviderError: ``provider`` is neither a provider nor a metadata provider (checked
                before anything is forgotten).
            ConfigurationError: ``provider`` is neither a ``str`` nor None.
            LedgerError: The ledger cannot be used.
        """
        check_text("provider", provider, what=_ONE_PROVIDER, none_allowed=True)
        if provider is not None:
            check_registered(provider)
        await (await self._get_ledger()).clear(provider)

    async def providers(self) -> list[ProviderInfo]:
        """Every registered provider: where it points, whether it is in the order, its capabilities; then
        the metadata providers (capability ``metadata``; ``enabled`` when the ``metadata`` setting names
        it). A provider that cannot be set up with nothing of it configured is left out.

        Raises:
            ConfigurationError: The configured order names a provider that cannot be set up, or a
                provider's own settings are wrong (a misspelt key of its table, a bad URL).
        """
        order = self._order(None)
        infos = []
        for name in available_providers():
            instance = self._usable(name)
            if instance is None:
                continue
            infos.append(
                ProviderInfo(
                    name=name,
                    base_url=redact(instance.base_url),  # a password in the URL stays secret
                    enabled=name in order,
                    authenticated=instance.credential.scope != "guest",
                    capabilities=instance.capabilities.names(),
                )
            )
        return infos + metadata_infos(self.settings)  # AniList: titles for every provider's hits


_ONE_PROVIDER = "one provider name (a str such as 'tracemoe') or None for every provider"

_BROKEN_SAID: set[str] = set()


def _candidate(name: str) -> type[Provider] | None:
    """An installed provider for the default order, or None (with one warning per process) when it cannot
    be loaded: somebody's broken package must not stop the searches that do not ask for it."""
    try:
        return load_provider(name)
    except ConfigurationError as exc:
        if name not in _BROKEN_SAID:
            _BROKEN_SAID.add(name)
            logger.warning("%s; it is left out of the default order", exc)
        return None


def _defaults(name: str, scope: str, windows: Sequence[WindowSpec], now: datetime) -> list[Quota]:
    """What a provider's declared windows say before anything was counted (source ``default``)."""
    kind = scope.partition(":")[0]
    return [
        Quota(
            provider=name,
            scope=kind if kind in ("guest", "api-key", "session") else "guest",
            window=spec.name,
            limit=spec.limit,
            used=0,
            remaining=spec.limit,
            source="default",
            observed_at=now,
            raw={"scope_id": scope},
        )
        for spec in windows
        if spec.limit is not None
    ]


def _check_made_with(settings: object, transport: object, **callbacks: object) -> None:
    """Refuse what a client cannot be made with, by name, before anything is opened.

    Raises:
        ConfigurationError: ``settings`` is not an :class:`anisearch.Settings` (a URL or a dict: use
            ``Settings.load(...)``), ``transport`` not an ``httpx.AsyncBaseTransport`` (nothing with its
            ``handle_async_request``), or a callback
            (``on_attempt``, ``on_wait``, ``clock``) not callable.
    """
    if settings is not None and not isinstance(settings, Settings):
        raise ConfigurationError(
            f"settings must be an anisearch.Settings (Settings.load(...)), got {settings!r} (type "
            f"{type_name(settings)})"
        )
    if transport is not None and not callable(getattr(transport, "handle_async_request", None)):
        raise ConfigurationError(
            f"transport must be an httpx.AsyncBaseTransport, got a value of type {type_name(transport)}"
        )
    for name, value in callbacks.items():
        if value is not None and not callable(value):
            raise ConfigurationError(
                f"{name} must be callable or None, got {value!r} (type {type_name(value)})"
            )


def _checked(min_similarity: object, options: SearchOptions) -> tuple[float | None, SearchOptions]:
    """``min_similarity`` and ``options.anilist_id`` as plain numbers (a numpy scalar is one too).

    Raises:
        ConfigurationError: ``min_similarity`` is not a number within 0..1, or ``anilist_id`` not a
            positive whole number (a bool or a string is neither).
    """
    similarity: float | None = None
    if min_similarity is not None:
        if isinstance(min_similarity, bool) or not isinstance(min_similarity, numbers.Real):
            raise ConfigurationError(f"min_similarity must be a number within 0..1, got {min_similarity!r}")
        similarity = float(min_similarity)
        if not 0.0 <= similarity <= 1.0:
            raise ConfigurationError(f"min_similarity must be within 0..1, got {similarity}")
    if options.anilist_id is not None:
        anilist_id = whole_number("anilist_id", options.anilist_id, minimum=1, what="a positive AniList ID")
        options = dataclasses.replace(options, anilist_id=anilist_id)
    return similarity, options


async def _unchanged(result: SearchResult) -> SearchResult:
    return result


def _best_hits(result: SearchResult) -> SearchResult:
    """At most :data:`~anisearch._limits.MAX_HITS` hits (the most similar) of an answer."""
    if len(result.hits) <= MAX_HITS:
        return result
    return result.model_copy(update={"hits": keep_best_hits(result.hits)})


_Found = tuple[tuple[Provider, SearchResult] | None, bool]


@dataclass(frozen=True)
class _Lookup:
    """One search's lookup of its source in the SQLite result cache, before any decoding (see
    ``find_by_source``): the providers in order, the options that key the answers, the upload boxes to
    prepare when there is no answer, and the
    threshold and strategy that choose among them."""

    store: ResultCache
    providers: Sequence[Provider]
    options: SearchOptions
    boxes: Sequence[tuple[int, int]]
    min_similarity: float | None
    strategy: str

    def _find(self, source: _image.SourceBytes, *, block: bool) -> _Found:
        return find_by_source(
            self.store,
            source,
            self.providers,
            self.options,
            block=block,
            min_similarity=self.min_similarity,
            strategy=self.strategy,
        )

    def in_memory(self, source: Any) -> tuple[_image.SourceBytes, _Found] | None:
        """Hash bytes already in memory and look their answer up without waiting.

        Returns None when that takes a worker thread: the source must be read, is large, or the cache is
        busy.
        """
        if not isinstance(source, bytes | bytearray | memoryview | _image.SourceBytes):
            return None
        if not isinstance(source, _image.SourceBytes) and not 0 < len(source) <= HASH_IN_PLACE_BYTES:
            return None
        read = _image.read(source)
        if not isinstance(read, _image.SourceBytes):  # pragma: no cover - bytes are never a PIL image
            return None
        try:
            return read, self._find(read, block=False)
        except WouldBlock:
            return None

    def read_find_prepare(self, source: Any, wait_seconds: float) -> tuple[Any, _Found, _Made | None]:
        """Read and hash the source, look its answer up, and prepare the image when there is none, in one
        worker thread."""
        read = _image.read(source, wait_seconds=wait_seconds)
        found: _Found = (None, False)
        if isinstance(read, _image.SourceBytes):
            found = self._find(read, block=True)
        if found[0] is not None:
            return read, found, None
        return read, found, _Made.of(read, self.boxes)


def _file_name(source: Any) -> str | None:
    """The absolute name of a source given as a path (the working directory may change during the
    search), or None."""
    if not isinstance(source, str | os.PathLike):
        return None
    try:
        return os.path.abspath(os.fsdecode(source))  # noqa: PTH100 - a str for anyio.Path, from bytes too
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class _Made:
    """The source as it is kept for the search (read into memory, or the caller's PIL image), and the
    uploads made from it so far, by box."""

    source: Any
    images: dict[tuple[int, int], _image.PreparedImage]

    @classmethod
    def of(cls, source: Any, boxes: Sequence[tuple[int, int]]) -> _Made:
        """``source`` (read already, or small bytes) prepared for each box (:func:`_image.prepare_boxes`)."""
        return cls(source, dict(zip(boxes, _image.prepare_boxes(source, boxes), strict=True)))


async def _prepared(source: Any, boxes: Sequence[tuple[int, int]], wait_seconds: float) -> _Made:
    """``source`` prepared for each box: in place when it is a small picture in memory (a thread hop costs
    more), else read and prepared in a worker thread, read once (another provider's upload may be made
    from it later)."""
    if isinstance(source, bytes | bytearray | memoryview) and 0 < len(source) <= _image.QUICK_BYTES:
        source = _image.read(source)  # a copy, hashed once: the caller may reuse a bytearray meanwhile
    if len(boxes) == 1:
        box = boxes[0]
        quick = _image.prepare_quick(source, max_width=box[0], max_height=box[1])
        if quick is not None:
            return _Made(source, {box: quick})
    elif _image.quick(source):
        return _Made.of(source, boxes)

    return await _read_in_time(partial(_read_prepare, boxes=boxes), source, wait_seconds)


@contextlib.contextmanager
def _out_of_time(asked: Sequence[Any], on_attempt: AttemptCallback | None) -> Iterator[None]:
    """The search's deadline passed while its picture waited its turn to be decoded, before any provider
    was asked: each provider's timeout and ``failed`` attempt (reported), as when none answers before the
    deadline."""
    started = time.monotonic()
    try:
        yield
    except ProviderTimeoutError as exc:
        errors = [ProviderTimeoutError(exc.message, provider=provider.name) for provider in asked]
        attempts = [
            Attempt(
                provider=error.provider or "",
                outcome="failed",
                reason=reason(error),
                error=type(error).__name__,
                elapsed_seconds=time.monotonic() - started,
            )
            for error in errors
        ]
        if on_attempt is not None:
            for attempt in attempts:
                on_attempt(attempt)
        raise all_failed(attempts, errors) from None


async def _read_in_time(read: Callable[[Any, float], T], source: Any, wait_seconds: float) -> T:
    """``read(source, wait_seconds)`` in a worker thread, a caller's blocking file object read first
    (see :func:`_read_bytes_in_time`). ``read`` may decode the picture: it takes a turn among the event
    loop's decodes (:func:`anisearch._worker.decodes`)."""
    if _reads_blocking(source):
        source = await _read_bytes_in_time(source, wait_seconds, bounded=isinstance(source, _DESCRIPTORS))
    return await _worker.run_sync(read, source, wait_seconds, decoding=True)


async def _read_bytes_in_time(source: Any, wait_seconds: float, *, bounded: bool = False) -> Any:
    """A caller's file object (a socket's, an HTTP response's) read into memory, giving up after
    ``wait_seconds``: its blocking reads cannot be interrupted, so they run in a daemon thread of their
    own, which finishes alone when the search gives up (and never keeps the interpreter from exiting).
    ``bounded``: the reads wait ``wait_seconds`` at most themselves (a pipe's or socket's descriptor), and
    say what they saw ("nothing arrived"); this bound is then the backstop, a moment later.

    Raises:
        InvalidImageError: Not read in time (or unreadable, as :func:`anisearch._image.read` says).
        ImageTooLargeError: Over the input limit.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Any] = loop.create_future()

    def settle(value: Any, error: BaseException | None) -> None:
        if not done.done():
            if error is None:
                done.set_result(value)
            else:
                done.set_exception(error)

    def work() -> None:
        value: Any = None
        error: BaseException | None = None
        try:
            value = _image.read(source, wait_seconds=wait_seconds)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting search
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits any more
            loop.call_soon_threadsafe(settle, value, error)

    threading.Thread(target=work, name="anisearch-read", daemon=True).start()
    try:
        with anyio.fail_after(max(wait_seconds, 0.0) + (_BACKSTOP_SECONDS if bounded else 0.0)):
            return await done
    except TimeoutError:
        name = getattr(source, "name", None)
        where = f"{printable(name)}: " if isinstance(name, str) else ""
        raise InvalidImageError(
            f"{where}the input did not arrive within {wait_seconds:.1f} s (ANISEARCH_TIMEOUT, or the "
            "search's deadline)"
        ) from None


_BACKSTOP_SECONDS = 1.0
"""How long after its own bound a read that bounds itself is given up all the same (a loaded machine)."""
_NEVER_BLOCKING = (str, os.PathLike, bytes, bytearray, memoryview, io.BytesIO)
_DESCRIPTORS = (io.BufferedReader, io.BufferedRandom, io.FileIO)


def _reads_blocking(source: Any) -> bool:
    """Whether ``source`` is a caller's file object whose reads may block (not a path, bytes, memory, a
    regular file, or a picture).

    A pipe or socket (``sys.stdin.buffer`` in a pipeline, ``sock.makefile("rb")``) is read within a bound,
    but in a thread of its own all the same: a worker thread cannot be cancelled, so a search given up
    (a caller's timeout, Ctrl-C) waited out the whole bound, ``ANISEARCH_TIMEOUT``.
    """
    if isinstance(source, _NEVER_BLOCKING):
        return False
    if isinstance(source, _DESCRIPTORS):
        try:
            return not stat.S_ISREG(os.fstat(source.fileno()).st_mode)
        except (OSError, ValueError):  # no descriptor, or closed: read as a file (which says what is wrong)
            return False
    return callable(getattr(source, "read", None)) and not _image.is_picture(source)


def _read_prepare(source: Any, wait_seconds: float, *, boxes: Sequence[tuple[int, int]]) -> _Made:
    return _Made.of(_image.read(source, wait_seconds=wait_seconds), boxes)


async def _alias_found(
    store: CacheStore | None, routes: Sequence[Route], digest: str, options: SearchOptions
) -> None:
    """An answer was found by its result key, after preparing the picture: remember the source's aliases
    (see :func:`~anisearch._cache_first.source_keys`), so that the next search of these bytes finds it by
    their digest alone (an answer cached by an older version, under other aliases, is found so once)."""
    if isinstance(store, ResultCache):
        await store.alias(source_keys(routes, digest, options))


def _remember_best(
    store: CacheStore, sources: Callable[[], Sequence[tuple[str, str]]]
) -> Callable[[str, SearchResult], Awaitable[None]]:
    async def remember(key: str, result: SearchResult) -> None:
        if isinstance(store, ResultCache):  # the SQLite cache also maps the raw source to the key
            await store.put(key, _best_hits(result), sources=sources())
        else:
            await store.put(key, _best_hits(result))

    return remember

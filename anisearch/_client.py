"""The engine: ``AsyncClient``, the one implementation (``Client`` in ``_sync.py`` wraps it).

``AsyncClient`` owns the HTTP connection pool (httpx), the ledger, the result cache and the providers;
it prepares the image once, looks in the cache, and hands the search to the router.
"""

from __future__ import annotations

import math
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import datetime
from functools import partial
from typing import IO, TYPE_CHECKING, Any, Self, TypeVar

import anyio
import anyio.from_thread
import anyio.to_thread
import httpx

from anisearch import _fetch, _image, _redact
from anisearch._cache import ResultCache, cache_key
from anisearch._config import Settings
from anisearch._exceptions import (
    AnisearchError,
    ConfigurationError,
    ImageFetchError,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
    UpstreamResponseError,
)
from anisearch._ledger import WindowSpec, open_ledger
from anisearch._ledger._base import scope_id
from anisearch._limits import (
    MAX_DOWNLOAD_BYTES,
    MAX_HITS,
    MAX_RESPONSE_BYTES,
    keep_best_hits,
    remaining_seconds,
    search_deadline,
)
from anisearch._models import (
    ApiKey,
    Attempt,
    CreatedApiKey,
    Credits,
    ProviderInfo,
    Quota,
    RankingEntry,
    RecentSearch,
    SearchResult,
)
from anisearch._provider import (
    AccountProvider,
    Page,
    Provider,
    ProviderContext,
    SearchOptions,
    SearchQuery,
    available_providers,
    load_provider,
)
from anisearch._router import AttemptCallback, Route, Router, Strategy, WaitCallback
from anisearch._verdict import provider_windows
from anisearch._version import DISTRIBUTION, __version__

if TYPE_CHECKING:
    from types import TracebackType

    from PIL import Image

    from anisearch._image import PreparedImage
    from anisearch._ledger._base import Ledger

__all__ = ["AsyncApiKeys", "AsyncClient"]

T = TypeVar("T")

_ACCEPT_ENCODING = "gzip, deflate"
"""Only decoders whose output httpx hands over chunk by chunk (a brotli or zstd bomb is refused unasked)."""

_redact.install()


def _user_agent() -> str:
    return f"anisearch/{__version__} (+https://pypi.org/project/{DISTRIBUTION}/)"


class AsyncApiKeys:
    """API keys of the signed-in account (whatanimeisthis.com ``/api/apikeys``)."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def list(self, page: int = 1, page_size: int = 20) -> list[ApiKey]:
        """One page of the account's keys (masked), 1-based ``page``.

        Raises:
            AuthenticationError: Not signed in (``anisearch login``).
            ConfigurationError: No configured provider has API keys.
        """
        if page < 1 or page_size < 1:
            raise ConfigurationError("page and page_size must be at least 1")
        provider = self._client._account_provider()
        result: Page[ApiKey] = await self._client._call(
            provider, provider.api_keys_request(page, page_size), provider.parse_api_keys
        )
        return result.items

    async def create(self, title: str) -> CreatedApiKey:
        """Create a key; the plaintext is in ``.key`` (a SecretStr) this one time only.

        Raises:
            AuthenticationError: Not signed in.
            ConfigurationError: An empty title, or no provider with API keys.
        """
        if not title.strip():
            raise ConfigurationError("an API key needs a non-empty title")
        provider = self._client._account_provider()
        return await self._client._call(
            provider, provider.create_api_key_request(title), provider.parse_created_api_key
        )


class AsyncClient:
    """The anisearch engine. Use it as ``async with AsyncClient() as client: await client.search(...)``.

    Args:
        settings: Where to send requests and keep state; ``Settings.load()`` (environment + config file)
            when None.
        transport: An httpx async transport to send every request through (``respx``, a proxy, an ASGI
            app), instead of the network.
        on_attempt: Called with each :class:`Attempt` as it completes (metrics, logging).
        on_wait: Called with one line whenever a search starts waiting (for a slot, or out a provider's
            short backoff), e.g. ``"waiting for a tracemoe slot (held by pid 1234)"``.
        clock: The current instant for the ledger (an aware datetime); tests and simulations move it.

    Raises:
        ConfigurationError: The settings name an unknown provider or an unusable ledger/cache.
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
        self.settings = settings if settings is not None else Settings.load()
        headers = {"User-Agent": _user_agent(), "Accept-Encoding": _ACCEPT_ENCODING}
        # Providers that keep a session keep their own jar (an auth flow); the engine stores no cookie.
        self._http = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(self.settings.timeout),
            headers=headers,
            follow_redirects=False,
            cookies=_fetch.no_cookies(),
        )
        # User URLs: a client of their own, with no cookie jar and no provider credential.
        self._downloads = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(self.settings.timeout),
            headers=headers,
            follow_redirects=False,
            cookies=_fetch.no_cookies(),
            trust_env=False,
        )
        self._pin_downloads = transport is None
        self._on_attempt = on_attempt
        self._on_wait = on_wait
        self._clock = clock
        self._providers: dict[str, Provider] = {}
        self._ledger: Ledger | None = None
        self._cache: ResultCache | None = None
        self._cache_opened = False
        self._inflight: dict[str, anyio.Event] = {}
        self.api_keys = AsyncApiKeys(self)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool and the ledger."""
        await self._http.aclose()
        await self._downloads.aclose()
        if self._cache is not None:
            self._cache.close()
        if self._ledger is not None:
            await self._ledger.aclose()
            self._ledger = None

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
        names = list(providers) if providers else self.settings.providers
        if not names:
            ranked = []
            for name in available_providers():
                cls = load_provider(name)
                # A provider left out of the default order (the legacy whatanime.ga API) joins it once
                # its base URL is configured.
                if getattr(cls, "default_order", False) or self.settings.provider_config(name).get("url"):
                    ranked.append((cls.default_rank, name))
            names = [name for _, name in sorted(ranked)]
        seen: list[str] = []
        for name in names:
            if name not in seen:
                seen.append(name)
        for name in seen:
            self._provider(name)  # unknown names fail here, before any work
        return seen

    async def _get_ledger(self) -> Ledger:
        if self._ledger is None:
            self._ledger = open_ledger(
                self.settings.ledger_url, timezone=self.settings.timezone, clock=self._clock
            )
        return self._ledger

    def _get_cache(self) -> ResultCache | None:
        if not self._cache_opened:
            path = self.settings.cache_path
            store = None if path is None else ResultCache(path, ttl_seconds=self.settings.cache_ttl)
            self._cache = store if store is not None and store.usable else None  # disposable: warned
            self._cache_opened = True
        return self._cache

    def _scope(self, provider: Provider) -> str:
        credential = provider.credential
        return scope_id(credential.scope, credential.secret)

    @staticmethod
    def _slots(provider: Provider) -> int:
        known = [q.concurrency for q in provider.assumed_quotas() if q.concurrency]
        return min(known) if known else 1

    def _windows(self, name: str) -> tuple[WindowSpec, ...]:
        try:
            return provider_windows(self._provider(name))
        except ConfigurationError:  # a provider in the ledger that is no longer installed or configured
            return ()

    # ------------------------------------------------------------------ sending

    async def _send(self, provider: Provider, request: httpx.Request) -> httpx.Response:
        """Send one provider request and read its whole answer within one attempt's time and size.

        ``ANISEARCH_TIMEOUT`` (or what is left of the search's ``deadline``, if less) bounds the attempt as
        a whole: connecting, sending, any sign-in the provider's auth flow makes, and reading the entire
        body. The body is read up to the provider's ``max_response_bytes`` (default
        :data:`~anisearch._limits.MAX_RESPONSE_BYTES`), counted after decompression.

        Raises:
            ProviderTimeoutError: The attempt did not complete in time (or the deadline had passed).
            ProviderConnectionError: The request could not be sent or the connection failed.
            UpstreamResponseError: The answer is over the size limit or its encoding is broken.
        """
        budget = remaining_seconds(self.settings.timeout)
        if budget <= 0:
            raise ProviderTimeoutError(
                "the search's deadline passed before this attempt", provider=provider.name
            )
        request.extensions.setdefault("timeout", httpx.Timeout(self.settings.timeout).as_dict())
        if "user-agent" not in request.headers:
            request.headers["User-Agent"] = _user_agent()
        limit = getattr(provider, "max_response_bytes", None) or MAX_RESPONSE_BYTES
        auth = provider.auth()
        status: int | None = None
        try:
            with anyio.fail_after(budget):
                if auth is None:
                    response = await self._http.send(request, stream=True)
                else:
                    bounded = _fetch.BoundedAuth(auth, limit)
                    response = await self._http.send(request, auth=bounded, stream=True)
                status = response.status_code
                await _fetch.read_capped(response, limit)
        except AnisearchError:
            raise
        except (
            TimeoutError,
            _fetch.BodyTooLargeError,
            httpx.HTTPError,
            OSError,
            ValueError,
            OverflowError,
        ) as exc:
            error = _transfer_error(exc, provider.name, request, budget, status)
            quotes_header = isinstance(exc, httpx.LocalProtocolError | UnicodeError)
            raise error from (None if quotes_header else exc)
        return response

    async def _call(self, provider: Any, request: httpx.Request, parse: Callable[[httpx.Response], T]) -> T:
        response = await self._send(provider, request)
        observed = provider.observe(response)
        if observed:
            ledger = await self._get_ledger()
            await ledger.observe(provider.name, self._scope(provider), provider_windows(provider), observed)
        return parse(response)

    # ------------------------------------------------------------------ search

    async def _resolve(self, image: Any) -> Any:
        """An http(s) URL (any case) becomes its downloaded bytes; anything else goes to the image module."""
        if isinstance(image, str) and image[:8].lower().startswith(("http://", "https://")):
            return await self._download(image)
        return image

    async def _download(self, url: str) -> bytes:
        """Download a user's URL to public addresses only, within one attempt's time (see ``_fetch``).

        Raises:
            ImageFetchError: Refused, unreachable, an HTTP error, too many redirects, or too slow.
            ImageTooLargeError: Over the input limit.
        """
        budget = remaining_seconds(self.settings.timeout)
        shown = _redact.display_url(url)
        if budget <= 0:
            raise ImageFetchError(f"cannot download {shown}: the search's deadline passed")
        try:
            with anyio.fail_after(budget):
                return await _fetch.download(
                    self._downloads,
                    url,
                    allow_private=self.settings.allow_private_urls,
                    pin=self._pin_downloads,
                    limit=MAX_DOWNLOAD_BYTES,
                )
        except TimeoutError as exc:
            if isinstance(exc, ProviderError):
                raise
            raise ImageFetchError(f"cannot download {shown}: no complete answer within {budget:g} s") from exc

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
    ) -> SearchResult:
        """Which anime, which episode, which second is ``image`` from.

        Args:
            image: A path, ``bytes``, a binary file object, a ``PIL.Image.Image`` or an ``http(s)://`` URL
                (downloaded once by anisearch and uploaded, which is more reliable than letting each
                upstream fetch it).
            providers: Provider names in the order to ask; None means the configured order
                (``ANISEARCH_PROVIDERS``) or the default ``tracemoe``, then ``whatanimeisthis``.
            strategy: ``"fallback"`` asks one provider at a time until one answers; ``"fanout"`` asks every
                eligible provider at once and merges their hits.
            anilist_id: Only hits of this AniList ID.
            cut_borders: Trim black borders (server-side where the provider can, locally otherwise).
            anilist_info: Ask for titles and AniList metadata with the hits.
            min_similarity: 0..1; a weaker best hit also asks the next provider, and the strongest answer
                seen is returned.
            cache: Reuse (and store) results in the local cache; a cached answer costs no quota.
            deadline: Seconds for the whole search (reading the input, downloading a URL, every attempt
                and every wait), or None. Without it a search is bounded by its attempts: each takes at
                most ``ANISEARCH_TIMEOUT`` seconds as a whole (connect, send, read the entire answer), up to
                four per provider, plus the waits between them. An attempt that would outlive the deadline
                is cut short as a :class:`ProviderTimeoutError`, and with ``strategy="fanout"`` the
                providers that answered in time are returned.

        Returns:
            The hits (similarity descending), who answered, and every attempt.

        Raises:
            InvalidImageError: The input is empty, not an image, truncated or a decompression bomb.
            ImageTooLargeError: The input is over the size limit (before any request).
            ImageFetchError: ``image`` is a URL that could not be downloaded.
            UnknownProviderError: A name in ``providers`` is not registered.
            ConfigurationError: A bad argument (``min_similarity`` outside 0..1, an unknown strategy, a
                ``deadline`` that is not a positive number of seconds).
            AllProvidersFailedError: No provider answered; it holds each provider's error.
        """
        if deadline is not None and not (isinstance(deadline, int | float) and 0 < deadline < math.inf):
            raise ConfigurationError(f"deadline must be a positive number of seconds, got {deadline!r}")
        token = search_deadline.set(None if deadline is None else anyio.current_time() + deadline)
        try:
            return await self._search(
                image, providers, strategy, anilist_id, cut_borders, anilist_info, min_similarity, cache
            )
        finally:
            search_deadline.reset(token)

    async def _search(  # noqa: PLR0917 - the arguments of search(), passed on as they came
        self,
        image: Any,
        providers: Sequence[str] | None,
        strategy: Strategy,
        anilist_id: int | None,
        cut_borders: bool,
        anilist_info: bool,
        min_similarity: float | None,
        cache: bool,
    ) -> SearchResult:
        if strategy not in ("fallback", "fanout"):
            raise ConfigurationError(f"unknown strategy {strategy!r}; use 'fallback' or 'fanout'")
        if min_similarity is not None and not 0.0 <= min_similarity <= 1.0:
            raise ConfigurationError(f"min_similarity must be within 0..1, got {min_similarity}")
        if anilist_id is not None and anilist_id <= 0:
            raise ConfigurationError(f"anilist_id must be a positive AniList ID, got {anilist_id}")
        names = self._order(providers)
        source = await self._resolve(image)
        wait = remaining_seconds(self.settings.timeout)
        prepared = await anyio.to_thread.run_sync(
            partial(_image.prepare, source, wait_seconds=max(wait, 0.0))
        )
        options = SearchOptions(anilist_id=anilist_id, cut_borders=cut_borders, anilist_info=anilist_info)
        use_cache = cache and self._get_cache() is not None
        routes = [self._route(name, prepared, options, use_cache=use_cache) for name in names]

        if use_cache:
            cached = await self._from_cache(routes)
            if cached is not None:
                return cached
        flight = cache_key("|".join(names), prepared.digest, [options, strategy, min_similarity])
        while flight in self._inflight:  # the same search is running: wait and reuse its answer
            await self._inflight[flight].wait()
            if use_cache and (cached := await self._from_cache(routes)) is not None:
                return cached
        done = self._inflight[flight] = anyio.Event()
        try:
            return await self._route_search(routes, prepared, options, strategy, min_similarity)
        finally:
            del self._inflight[flight]
            done.set()

    def _route(self, name: str, prepared: PreparedImage, options: SearchOptions, *, use_cache: bool) -> Route:
        provider = self._provider(name)
        key = None
        if use_cache:
            image_key = (
                "cld:" + ",".join(map(str, prepared.descriptor))
                if provider.capabilities.vector and prepared.descriptor
                else "sha256:" + prepared.digest
            )
            key = cache_key(name, image_key, [options])
        return Route(
            provider=provider,
            scope=self._scope(provider),
            slots=self._slots(provider),
            cache_key=key,
            windows=provider_windows(provider),
        )

    async def _from_cache(self, routes: Sequence[Route]) -> SearchResult | None:
        store = self._get_cache()
        if store is None:
            return None
        for route in routes:
            if route.cache_key is None:
                continue
            result = await store.get(route.cache_key)
            if result is not None:
                attempt = Attempt(
                    provider=route.provider.name, outcome="cached", reason="answered from the cache"
                )
                if self._on_attempt is not None:
                    self._on_attempt(attempt)
                return result.model_copy(update={"cached": True, "attempts": [attempt]})
        return None

    async def _route_search(
        self,
        routes: Sequence[Route],
        prepared: PreparedImage,
        options: SearchOptions,
        strategy: Strategy,
        min_similarity: float | None,
    ) -> SearchResult:
        cropped: list[PreparedImage] = []

        async def query_for(provider: Provider) -> SearchQuery:
            image = prepared
            provider_options = options
            if options.anilist_id is not None and not provider.capabilities.anilist_filter:
                # The router filters every answer by AniList ID; this provider gets the plain search.
                provider_options = replace(options, anilist_id=None)
            if options.cut_borders and not provider.capabilities.cut_borders:
                if not cropped:
                    cropped.append(
                        await anyio.to_thread.run_sync(
                            partial(_image.prepare, prepared.data, cut_borders=True)
                        )
                    )
                image = cropped[0]
                provider_options = replace(provider_options, cut_borders=False)
            fitted = await anyio.to_thread.run_sync(_image.fit, image, provider.limits)
            return SearchQuery(options=provider_options, image=fitted)

        store = self._get_cache()
        router = Router(
            await self._get_ledger(),
            self._send,
            wait_seconds=max(remaining_seconds(max(self.settings.timeout, 1.0)), 0.0),
            on_attempt=self._on_attempt,
            on_wait=self._on_wait,
            remember=_remember_best(store) if store is not None else None,
        )
        result = await router.search(
            routes,
            query_for,
            strategy=strategy,
            min_similarity=min_similarity,
            anilist_id=options.anilist_id,
        )
        return _best_hits(result)

    # ------------------------------------------------------------------ quota and providers

    async def quota(self, provider: str | None = None, *, refresh: bool = False) -> list[Quota]:
        """What each configured provider (or one) allows and what is left, per window.

        Each ``Quota`` says where its figures came from (``source``: ``upstream``, ``headers``, ``ledger``
        estimate, documented ``default``) and when the upstream last confirmed them (``observed_at``).

        Args:
            provider: One provider name, or None for every configured provider.
            refresh: Ask the upstreams' free quota endpoints first (trace.moe ``/me``; costs no quota).

        Raises:
            UnknownProviderError: ``provider`` is not registered.
            ProviderError: ``refresh`` and an upstream failed to answer.
            LedgerError: The ledger cannot be used.
        """
        names = [provider] if provider else self._order(None)
        ledger = await self._get_ledger()
        quotas: list[Quota] = []
        for name in names:
            instance = self._provider(name)
            scope = self._scope(instance)
            request = instance.quota_request() if refresh else None
            if request is not None:
                fresh = await self._call(instance, request, instance.parse_quota)
                await ledger.observe(name, scope, provider_windows(instance), fresh)
            known = await ledger.snapshot(name, self._windows)
            mine = [q for q in known if q.raw.get("scope_id") == scope]
            if not mine:
                mine = _defaults(name, scope, provider_windows(instance), ledger.now())
            quotas.extend(mine)
        return quotas

    async def reset_quota(self, provider: str | None = None) -> None:
        """Forget what the ledger believes about every provider (or one): counts, cooldowns, slots.

        The next search asks the upstream again. ``anisearch quota --reset`` runs this.

        Raises:
            LedgerError: The ledger cannot be used.
        """
        await (await self._get_ledger()).clear(provider)

    async def providers(self) -> list[ProviderInfo]:
        """Every registered provider: where it points, whether it is in the order, its capabilities."""
        order = self._order(None)
        infos = []
        for name in available_providers():
            try:
                instance = self._provider(name)
            except ConfigurationError:
                continue
            infos.append(
                ProviderInfo(
                    name=name,
                    base_url=_redact.redact(instance.base_url),  # a password in the URL stays secret
                    enabled=name in order,
                    authenticated=instance.credential.scope != "guest",
                    capabilities=instance.capabilities.names(),
                )
            )
        return infos

    # ------------------------------------------------------------------ account features

    def account_provider(self) -> str:
        """The name of the provider that serves the account features (rankings, credits, API keys).

        Raises:
            ConfigurationError: No installed provider has account features.
        """
        name: str = self._account_provider().name
        return name

    def _account_provider(self) -> Any:
        for name in [*self._order(None), *available_providers()]:
            try:
                instance = self._provider(name)
            except ConfigurationError:
                continue
            if isinstance(instance, AccountProvider):
                return instance
        raise ConfigurationError("no installed provider has account features (rankings, credits, API keys)")

    async def rankings(
        self, period: str = "all", limit: int = 50, include_adult: bool = False
    ) -> list[RankingEntry]:
        """The most-searched anime of ``period`` (``daily``, ``weekly``, ``monthly``, ``yearly``, ``all``).

        Raises:
            ConfigurationError: An unknown period or a limit below 1.
            ProviderError: The upstream failed.
        """
        if limit < 1:
            raise ConfigurationError("limit must be at least 1")
        provider = self._account_provider()
        request = provider.rankings_request(period, limit, include_adult)
        entries: list[RankingEntry] = await self._call(provider, request, provider.parse_rankings)
        return entries

    async def recent_searches(self, limit: int = 20, offset: int = 0) -> list[RecentSearch]:
        """One page of recently confirmed public searches (newest first).

        Raises:
            ConfigurationError: A negative offset or a limit below 1.
            ProviderError: The upstream failed.
        """
        page = await self._recent_page(limit, offset)
        return page.items

    async def _recent_page(self, limit: int, offset: int) -> Page[RecentSearch]:
        if limit < 1 or offset < 0:
            raise ConfigurationError("limit must be at least 1 and offset at least 0")
        provider = self._account_provider()
        request = provider.recent_searches_request(limit, offset)
        page: Page[RecentSearch] = await self._call(provider, request, provider.parse_recent_searches)
        return page

    async def iter_recent_searches(
        self, page_size: int = 20, max_items: int | None = None
    ) -> AsyncIterator[RecentSearch]:
        """Every recent public search, page by page; stops on a short page or the reported total.

        Raises:
            ProviderError: The upstream failed mid-way.
        """
        offset = 0
        while max_items is None or offset < max_items:
            page = await self._recent_page(page_size, offset)
            for item in page.items:
                if max_items is not None and offset >= max_items:
                    return
                offset += 1
                yield item
            if _last_page(page, page_size, offset):
                return

    async def credits(self) -> Credits:
        """The signed-in account's search credits (also recorded in the ledger).

        Raises:
            AuthenticationError: Not signed in.
        """
        provider = self._account_provider()
        result: Credits = await self._call(provider, provider.credits_request(), provider.parse_credits)
        return result

    async def sign_in(self, email: str, password: str) -> None:
        """Sign in (whatanimeisthis.com); the session cookie is kept in the state dir (mode 0600).

        The password is used for this request only and never stored.

        Raises:
            AuthenticationError: Wrong email or password, or the site refused the Origin.
        """
        provider = self._account_provider()
        await self._call(provider, provider.sign_in_request(email, password), provider.parse_sign_in)

    async def sign_out(self) -> None:
        """Sign out and delete the stored session.

        Raises:
            ProviderError: The upstream failed (the local session is deleted anyway).
        """
        provider = self._account_provider()
        await self._call(provider, provider.sign_out_request(), provider.parse_sign_out)


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


def _best_hits(result: SearchResult) -> SearchResult:
    """At most :data:`~anisearch._limits.MAX_HITS` hits (the most similar) of an answer."""
    if len(result.hits) <= MAX_HITS:
        return result
    return result.model_copy(update={"hits": keep_best_hits(result.hits)})


def _remember_best(store: ResultCache) -> Callable[[str, SearchResult], Awaitable[None]]:
    async def remember(key: str, result: SearchResult) -> None:
        await store.put(key, _best_hits(result))

    return remember


def _transfer_error(
    exc: BaseException, name: str, request: httpx.Request, budget: float, status: int | None
) -> ProviderError:
    """The attempt's typed error for what went wrong while sending or reading (messages hold no secret)."""
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return ProviderTimeoutError(
            f"no complete answer within {budget:g} s", provider=name, status_code=status
        )
    if isinstance(exc, _fetch.BodyTooLargeError):
        return UpstreamResponseError(
            f"the answer is larger than {exc.limit} bytes (decoded); refused",
            provider=name,
            status_code=status,
            endpoint=request.url.path,
        )
    if isinstance(exc, httpx.DecodingError):
        return UpstreamResponseError(
            "the answer's content encoding is broken", provider=name, status_code=status
        )
    if isinstance(exc, httpx.LocalProtocolError | UnicodeError):  # the message may quote a header: a key
        return ProviderConnectionError(
            "the request could not be sent (a header value is not valid HTTP)", provider=name
        )
    detail = _redact.printable(_redact.redact(str(exc)), 160)
    host = _redact.display_url(request.url.host, 80)
    return ProviderConnectionError(f"cannot reach {host}: {detail}", provider=name)


def _last_page(page: Page[Any], page_size: int, seen: int) -> bool:
    """A paginator stops on a short page, an explicit "no more", or once it has seen the reported total."""
    short = len(page.items) < page_size
    return short or page.has_more is False or (page.total is not None and seen >= page.total)

"""The sync facade: ``Client`` runs an :class:`AsyncClient` on a private event-loop thread.

It uses an anyio blocking portal, as Starlette's TestClient does, so the sync API works in scripts,
inside Jupyter and inside async applications alike. Every method is the engine's, called through the
portal: there is one implementation of each behaviour (the docstrings are repeated here so that sync users
read them where they call).

A ``Client`` that is never closed does not keep the interpreter alive: its loop runs on a daemon thread,
and a finalizer closes the engine (with a :class:`ResourceWarning`) when the client is garbage collected
or the interpreter exits.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import threading
import warnings
import weakref
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import Future
from functools import partial
from typing import IO, TYPE_CHECKING, Any, Self, TypeVar

import anyio
import anyio.from_thread
import httpx

from anisearch._account import RecentPager
from anisearch._client import AsyncClient
from anisearch._config import Settings
from anisearch._exceptions import ClientClosedError
from anisearch._models import (
    ApiKey,
    CreatedApiKey,
    Credits,
    PagedList,
    ProviderInfo,
    Quota,
    RankingEntry,
    RecentSearch,
    SearchResult,
)
from anisearch._provider import SearchMode
from anisearch._router import AttemptCallback, Strategy, WaitCallback

if TYPE_CHECKING:
    from datetime import datetime
    from types import TracebackType

    from PIL import Image

__all__ = ["ApiKeys", "Client"]

T = TypeVar("T")

_CLOSE_SECONDS = 10.0
"""How long closing an abandoned client may take at garbage collection or interpreter exit."""


class _Loop:
    """An event loop on a daemon thread, reached through an anyio blocking portal.

    A daemon thread never holds the interpreter open; :meth:`stop` ends the loop and joins the thread.
    """

    def __init__(self) -> None:
        started: Future[anyio.from_thread.BlockingPortal] = Future()

        async def serve() -> None:
            async with anyio.from_thread.BlockingPortal() as portal:
                started.set_result(portal)
                await portal.sleep_until_stopped()

        def run() -> None:
            try:
                anyio.run(serve)
            except BaseException as exc:  # noqa: BLE001 - handed to the thread that waits for the loop
                if not started.done():
                    started.set_exception(exc)

        self._pid = os.getpid()  # a forked child inherits this object, but not the thread that runs it
        self._thread = threading.Thread(target=run, name="anisearch-client", daemon=True)
        self._thread.start()
        self.portal = started.result()

    def forked(self) -> bool:
        """Whether this is a forked child of the process that started the loop (which has no loop thread)."""
        return os.getpid() != self._pid

    def call(self, func: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """Run ``func(*args, **kwargs)`` on the loop and wait for its result.

        A caller that stops waiting (Ctrl-C, a Jupyter kernel interrupt: a ``KeyboardInterrupt`` raised in
        its thread) cancels the work on the loop too, as cancelling an ``await`` would: a search given up
        while it waits for a slot is never sent, and costs no quota.
        """
        if self.forked():
            raise ClientClosedError(
                "this client was opened before os.fork() and its loop runs in the parent only; open a new"
                " Client in this process"
            )
        if self.on_loop_thread():
            raise RuntimeError(
                "a Client cannot be called from its own on_attempt or on_wait callback (they run on its loop)"
            )
        try:
            future = self.portal.start_task_soon(partial(func, *args, **kwargs))
        except RuntimeError as exc:  # the portal is not running: its loop ended (a callback's SystemExit)
            raise ClientClosedError("the client's event loop has ended; open a new Client") from exc
        try:
            return future.result()
        except concurrent.futures.CancelledError:  # cancelled on the loop: it is ending (a callback's
            # SystemExit stopped it); a caller who stopped waiting gets its own exception, below
            raise ClientClosedError("the client's event loop has ended; open a new Client") from None
        except BaseException:
            future.cancel()  # the task's cancel scope is cancelled on the loop (nothing if it has ended)
            raise

    def on_loop_thread(self) -> bool:
        return threading.get_ident() == self._thread.ident

    def stop(self) -> None:
        """End the loop (cancelling what still runs on it) and wait for its thread."""
        if self.forked():  # the loop is the parent's: nothing of it runs here
            return
        with contextlib.suppress(RuntimeError):  # already stopped
            self.portal.call(self.portal.stop, True)  # noqa: FBT003 - anyio's cancel_remaining flag
        if not self.on_loop_thread():
            self._thread.join(_CLOSE_SECONDS)


def _close(loop: _Loop, engine: AsyncClient) -> None:
    """Close the engine on its loop, then stop the loop (also when closing fails); nothing in a forked
    child (the parent closes what is its) or once the loop has ended."""
    try:
        if not loop.forked():
            try:
                loop.call(engine.aclose)
            except ClientClosedError:  # the loop ended: its files are closed here, its connections are gone
                engine._abandon()
    finally:
        loop.stop()


def _close_abandoned(loop: _Loop, engine: AsyncClient, shown: str) -> None:
    """The finalizer of a client nobody closed: warn as httpx does, and close it within a bound.

    Nothing in a forked child: the client is the parent's, which closes it.
    """
    if loop.forked():
        return
    warnings.warn(
        f"unclosed {shown}; close it with client.close() or use 'with Client() as client:'",
        ResourceWarning,
        stacklevel=1,
    )
    if loop.on_loop_thread():  # dropped by code running on its own loop: it cannot wait for itself
        return

    async def bounded() -> None:
        with anyio.move_on_after(_CLOSE_SECONDS):
            await engine.aclose()

    try:
        loop.call(bounded)
    except ClientClosedError:  # its loop ended: its files are closed here, its connections are gone
        engine._abandon()
    finally:
        loop.stop()


class ApiKeys:
    """API keys of the signed-in account (whatanimeisthis.com ``/api/apikeys``): ``client.api_keys``."""

    def __init__(self, loop: _Loop, engine: AsyncClient) -> None:
        self._loop = loop
        self._engine = engine

    def list(self, page: int = 1, page_size: int = 20) -> PagedList[ApiKey]:
        """One page of the account's keys (masked).

        Args:
            page: Which page, from 1.
            page_size: Keys per page, at least 1.

        Returns:
            The keys on that page, as a ``list``; each shows only a masked form of its secret. Its ``total``
            (and ``pages``) say how many keys the account has, when the upstream reports it (else None).

        Raises:
            AuthenticationError: Not signed in (``anisearch login``).
            ConfigurationError: ``page`` or ``page_size`` is not a whole number of at least 1 (a numpy
                integer is one; a bool or a string is not), or no configured provider has API keys.
            ProviderError: The upstream failed.
        """
        return self._loop.call(self._engine.api_keys.list, page, page_size)

    def create(self, title: str) -> CreatedApiKey:
        """Create a key; its plaintext is in ``.key`` (a SecretStr) this one time only.

        Args:
            title: A name for the key (not empty).

        Returns:
            The new key with its secret.

        Raises:
            AuthenticationError: Not signed in.
            ConfigurationError: A title that is not a ``str`` or is empty, or no provider with API keys.
            ProviderError: The upstream failed.
        """
        return self._loop.call(self._engine.api_keys.create, title)


class Client:
    """The synchronous client: the same engine as :class:`AsyncClient`, run on a private loop thread.

    Use it as ``with Client() as client: client.search("shot.jpg")``, or call :meth:`close` when done. A
    client that is never closed is closed when it is garbage collected or the interpreter exits, with a
    :class:`ResourceWarning`. A client opened before ``os.fork()`` (gunicorn ``--preload``, a ``fork``
    worker pool) belongs to the parent: in the child its methods raise :class:`ClientClosedError`; open a
    new client there.

    Args:
        settings: Where to send requests and keep state; ``Settings.load()`` (environment + config file)
            when None.
        transport: An httpx async transport to send every request through (``respx``, a proxy, an ASGI
            app), instead of the network.
        on_attempt: Called with each :class:`Attempt` as it completes (metrics, logging); it runs on the
            client's loop thread.
        on_wait: Called with one line whenever a search starts waiting (for a slot, or out a provider's
            short backoff), e.g. ``"waiting for a tracemoe slot (held by pid 1234)"``. An exception
            either callback raises is logged (logger ``anisearch``) and the search goes on. Both run on
            the one loop thread every search of this client shares, so they must return at once: one
            that blocks (a synchronous write to a slow metrics server) holds up the searches of every
            thread meanwhile, past their deadlines; hand slow work to a thread or a queue.
        clock: The current instant for the ledger (an aware datetime); tests and simulations move it.

    Raises:
        ConfigurationError: The settings name an unknown provider or an unusable ledger/cache; or
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
        loop = _Loop()
        make = partial(AsyncClient, settings, transport, on_attempt=on_attempt, on_wait=on_wait, clock=clock)
        try:
            engine = loop.call(_make_async, make)
        except BaseException:
            loop.stop()
            raise
        self._loop = loop
        self._async = engine
        self._finalizer = weakref.finalize(self, _close_abandoned, loop, engine, f"<{type(self).__name__}>")
        self.settings = engine.settings
        self.api_keys = ApiKeys(loop, engine)

    def _run(self, func: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        if self.closed:
            raise ClientClosedError("the client is closed; open a new Client")
        return self._loop.call(func, *args, **kwargs)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run (a closed client sends nothing more)."""
        return not self._finalizer.alive

    def close(self) -> None:
        """Close the connection pool, the ledger and the cache, and stop the loop thread.

        Closing twice is harmless: the second call does nothing.

        Raises:
            LedgerError: The ledger could not be closed cleanly (the loop thread is stopped anyway).
            RuntimeError: Called from the client's own ``on_attempt``/``on_wait`` callback (the client is
                left open).
        """
        if self._loop.on_loop_thread():  # checked before anything changes: the client stays usable
            raise RuntimeError(
                "a Client cannot be closed from its own on_attempt or on_wait callback (they run on its loop)"
            )
        if self._finalizer.detach() is not None:
            _close(self._loop, self._async)

    def search(
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
                provider (AniList; one request for all hits, cached per AniList ID), whichever provider
                answered. Never fatal: a failed lookup is an ``attempts`` entry.
            min_similarity: 0..1; a weaker best hit also asks the next provider, and the strongest answer
                seen is returned.
            cache: Reuse (and store) results in the local cache; a cached answer costs no quota.
            deadline: Seconds for the whole search (reading the input, downloading a URL, every attempt
                and every wait), or None. Without it a search is bounded by its attempts: each takes at
                most ``ANISEARCH_TIMEOUT`` seconds as a whole (connect, send, read the entire answer), up to
                four per provider, plus the waits between them.
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
            ImageTooLargeError: The input is over the size limit (before any request).
            ImageFetchError: ``image`` is a URL that could not be downloaded.
            UnknownProviderError: A name in ``providers`` is not registered.
            ConfigurationError: A bad argument (an empty ``providers``, or one that is not a list of names,
                ``min_similarity`` outside 0..1, an
                unknown strategy or mode, a ``deadline`` that is not a positive number of seconds, a flag
                that is not a ``bool``: ``include_adult="false"`` is refused, not read as true), or CA
                certificates that ``SSL_CERT_FILE``/``SSL_CERT_DIR`` name and that cannot be read (at the
                first HTTPS request).
            AllProvidersFailedError: No provider answered; it holds each provider's error.
            ClientClosedError: The client was closed.
            LedgerError: The quota ledger cannot be used (Redis unreachable, a SQLite file unwritable or
                corrupt): no search is sent without it. An answer already received is returned even when
                the ledger could not record it.
        """
        return self._run(
            self._async.search,
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

    def quota(self, provider: str | None = None, *, refresh: bool = False) -> list[Quota]:
        """What each configured provider (or one) allows and what is left, per window.

        Each ``Quota`` says where its figures came from (``source``: ``upstream``, ``headers``, ``ledger``
        estimate, documented ``default``) and when the upstream last confirmed them (``observed_at``).

        Args:
            provider: One provider name (a metadata provider too: ``anilist``, whose requests the ledger
                counts in its rate window), or None for every configured provider.
            refresh: Ask the upstreams' free quota endpoints first (trace.moe ``/me``; costs no quota).

        Returns:
            One ``Quota`` per provider, scope and window.

        Raises:
            UnknownProviderError: ``provider`` is not registered.
            ConfigurationError: ``provider`` is neither a ``str`` nor None, or ``refresh`` not a ``bool``.
            ProviderError: ``refresh`` and an upstream failed to answer; or ConfigurationError: its quota
                request cannot be made (no URL). The first such failure, raised once every other provider
                was asked (what they said is in the ledger: call again without ``refresh`` to read it).
            LedgerError: The ledger cannot be used.
        """
        return self._run(self._async.quota, provider, refresh=refresh)

    def _ledger_now(self) -> datetime:
        """The ledger's current instant, on which :meth:`quota`'s instants are (see the engine's
        ``_ledger_now``): ``anisearch quota`` says how far away they are from it."""
        return self._run(self._async._ledger_now)

    def reset_quota(self, provider: str | None = None) -> None:
        """Forget what the ledger believes about every provider (or one): counts, cooldowns, slots.

        The next search asks the upstream again (``anisearch quota --reset``).

        Args:
            provider: One provider name, or None for every provider.

        Raises:
            UnknownProviderError: ``provider`` is neither a provider nor a metadata provider (checked
                before anything is forgotten).
            ConfigurationError: ``provider`` is neither a ``str`` nor None.
            LedgerError: The ledger cannot be used.
        """
        self._run(self._async.reset_quota, provider)

    def providers(self) -> list[ProviderInfo]:
        """Every registered provider: where it points, whether it is in the order, its capabilities.

        Returns:
            One ``ProviderInfo`` per installed provider that can be set up (base URLs without passwords);
            one that cannot, with nothing of it configured (no server of its own), is left out.

        Raises:
            ConfigurationError: The configured order names a provider that cannot be set up, or a
                provider's own settings are wrong (a misspelt key of its table, a bad URL).
        """
        return self._run(self._async.providers)

    def rankings(
        self, period: str = "all", limit: int = 50, include_adult: bool = False
    ) -> list[RankingEntry]:
        """The most-searched anime of a period, from the provider with account features.

        Args:
            period: ``daily``, ``weekly``, ``monthly``, ``yearly`` or ``all``.
            limit: How many entries, at least 1.
            include_adult: Also list adult titles.

        Returns:
            The entries, most searched first.

        Raises:
            ConfigurationError: An unknown period, a limit that is not a whole number of at least 1 (a
                numpy integer is one; a bool or a string is not), an ``include_adult`` that is not a
                ``bool``, or no provider with account features.
            ProviderError: The upstream failed.
        """
        return self._run(self._async.rankings, period, limit, include_adult)

    def recent_searches(self, limit: int = 20, offset: int = 0) -> list[RecentSearch]:
        """One page of recently confirmed public searches (newest first).

        Args:
            limit: How many searches, at least 1.
            offset: How many of the newest to skip, at least 0.

        Returns:
            At most ``limit`` searches.

        Raises:
            ConfigurationError: A limit that is not a whole number of at least 1, an offset that is not one
                of at least 0 (a numpy integer is one; a bool or a string is not), or no provider with
                account features.
            ProviderError: The upstream failed.
        """
        return self._run(self._async.recent_searches, limit, offset)

    def iter_recent_searches(
        self, page_size: int = 20, max_items: int | None = None
    ) -> Iterator[RecentSearch]:
        """Every recent public search, fetched page by page as you iterate.

        Each search is yielded once. Stops on an explicit "no more", the reported total, ``max_items``, a page
        shorter than the site's page size when it says neither, or a second page in a row of searches
        already yielded (a site that ignores the offset). Searches that new ones pushed down from the page
        before are not yielded again.

        Args:
            page_size: Searches asked per request, at least 1.
            max_items: Stop after this many searches; None for all of them.

        Returns:
            An iterator of searches, newest first.

        Raises:
            ConfigurationError: ``page_size`` is not a whole number of at least 1, ``max_items`` not one of
                at least 0 nor None, or no provider with account features (when iteration starts).
            ProviderError: The upstream failed mid-way (the searches already yielded stay yours).
        """
        pager: RecentPager[RecentSearch] = RecentPager(page_size, max_items)
        while pager.wanted():
            yield from pager.take(self._run(self._async._recent_page, page_size, pager.offset))

    def account_provider(self) -> str:
        """The name of the provider that serves the account features (rankings, credits, API keys).

        Returns:
            A provider name, such as ``"whatanimeisthis"``.

        Raises:
            ConfigurationError: No installed provider has account features.
        """
        return self._async.account_provider()

    def credits(self) -> Credits:
        """The signed-in account's search credits (also recorded in the ledger).

        Returns:
            The credits left, the free searches left today and when they renew.

        Raises:
            AuthenticationError: Not signed in.
            ConfigurationError: No provider with account features.
            ProviderError: The upstream failed.
        """
        return self._run(self._async.credits)

    def sign_in(self, email: str, password: str) -> None:
        """Sign in (whatanimeisthis.com); the session cookie is kept in the state dir (mode 0600).

        The password is used for this request only and never stored.

        Args:
            email: The account's email address.
            password: The account's password.

        Raises:
            AuthenticationError: Wrong email or password, or the site refused the Origin.
            SignInRateLimitedError: Too many sign-ins; ``retry_after`` says when to sign in again (seconds).
            ConfigurationError: ``email`` or ``password`` is not a ``str``, or no provider with account
                features.
            ProviderError: The upstream failed.
        """
        self._run(self._async.sign_in, email, password)

    def sign_out(self) -> bool:
        """Sign out and delete the stored session.

        Returns:
            True when the site ended a session; False when there was none to end (never signed in, or it
            had already ended). Either way no session is stored afterwards.

        Raises:
            ConfigurationError: No provider with account features.
            ProviderError: The site failed to sign out: the session is still signed in there and still
                stored (the message says where).
        """
        return self._run(self._async.sign_out)


async def _make_async(make: Callable[[], AsyncClient]) -> AsyncClient:
    return make()  # inside the portal's loop: the engine's HTTP pool belongs to it

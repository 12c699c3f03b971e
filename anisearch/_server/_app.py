"""The gateway's ASGI app: trace.moe's API and the native ``/v1`` API over one :class:`AsyncClient`.

One :class:`~anisearch.AsyncClient` per app (opened at start-up, closed at shutdown) does every search:
routing, fallback, the ledger, the cache and merged identical searches are the library's. The gateway
adds who is calling (:mod:`._callers`), each caller's allowance (one more ledger scope), and the two
wire formats (:mod:`._tracemoe`, :mod:`._native`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import anyio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.routing import Route

from anisearch import _image
from anisearch._client import AsyncClient
from anisearch._config import Settings
from anisearch._download import is_url
from anisearch._exceptions import AnisearchError, ImageFetchError
from anisearch._ledger import Ticket, open_ledger
from anisearch._models import Attempt, Hit, SearchResult
from anisearch._server import _native, _tracemoe
from anisearch._server._callers import Caller, Denied, Gate, Refused, identify
from anisearch._server._errors import tracemoe_error
from anisearch._server._metrics import Metrics
from anisearch._server._settings import ServerSettings
from anisearch._worker import run_sync

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    import httpx
    from starlette.requests import Request

    from anisearch._cache_redis import CacheStore

__all__ = ["Gateway", "create_app"]

logger = logging.getLogger("anisearch.server")
access = logging.getLogger("anisearch.server.access")
_ANILIST_MEMORY = 4096
"""AniList records remembered from answers, for ``/anilist`` (PicImageSearch asks it for titles)."""
_RECORD_REFRESH_SECONDS = 600.0
"""How often an answered anime's record is written to the result cache again (see ``Gateway.remember``)."""


class Gateway:
    """The state of one gateway process: the engine, the callers' gate, metrics, remembered titles.

    Args:
        settings: The library's settings (providers, ledger, cache). Downloads of user URLs are always
            restricted to public addresses, whatever ``allow_private_urls`` says.
        server: The gateway's settings.
        transport: An httpx transport for every upstream request (tests).
    """

    def __init__(
        self, settings: Settings, server: ServerSettings, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.settings = settings.model_copy(update={"allow_private_urls": False})
        self.server = server
        self.transport = transport
        self.metrics = Metrics()
        self._client: AsyncClient | None = None
        self._gate: Gate | None = None
        self.anilist: OrderedDict[int, dict[str, Any]] = OrderedDict()
        self._written: dict[int, float] = {}  # when each record was last written to the result cache
        self.recent: list[Attempt] = []

    # ------------------------------------------------------------------ lifecycle

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        """Open the engine and the ledger; at shutdown, after in-flight requests finished, close them."""
        ledger = open_ledger(self.settings.ledger_url, timezone=self.settings.timezone)
        self._gate = Gate(
            ledger,
            slot_wait=self.server.slot_wait,
            lease_seconds=self.server.deadline + self.server.slot_wait,
        )
        async with AsyncClient(self.settings, self.transport, on_attempt=self._on_attempt) as client:
            self._client = client
            await self._learn_quotas(client)
            try:
                yield
            finally:
                self._client = None
                with anyio.CancelScope(shield=True):
                    await ledger.aclose()

    async def _learn_quotas(self, client: AsyncClient) -> None:
        """Ask the upstreams' free quota endpoints once (trace.moe ``/me``), so the ledger knows each
        account's real quota and concurrency before the first search; an upstream that does not answer
        within a few seconds is learned from its first search instead."""
        with anyio.move_on_after(min(self.settings.timeout, 10.0)):
            try:
                await client.quota(refresh=True)
            except AnisearchError as exc:
                logger.warning("could not ask the upstreams for their quotas at start-up: %s", exc)

    @property
    def client(self) -> AsyncClient:
        if self._client is None:
            raise RuntimeError("the gateway is not running (its lifespan has not started)")
        return self._client

    @property
    def gate(self) -> Gate:
        if self._gate is None:
            raise RuntimeError("the gateway is not running (its lifespan has not started)")
        return self._gate

    def _on_attempt(self, attempt: Attempt) -> None:
        self.metrics.attempt(attempt)
        self.recent.append(attempt)
        del self.recent[:-50]

    async def remember(self, result: SearchResult) -> None:
        """Keep the AniList records of an answer's hits for ``/anilist``: in this process, and in the result
        cache, where every worker and replica sharing it finds them.

        A record is written there when it is new or changed here, and again every
        :data:`_RECORD_REFRESH_SECONDS` (at most half the cache's TTL), so one that expired or was cleared
        comes back. A record without a title (no lookup asked, or it failed) is never written, and never
        replaces one with a title here.
        """
        now = time.monotonic()
        refresh = min(_RECORD_REFRESH_SECONDS, self.settings.cache_ttl / 2)
        due: dict[int, Hit] = {}
        for hit in result.hits:
            if not hit.anilist_id:
                continue
            new = _tracemoe.anilist_record(hit)
            old = self.anilist.get(hit.anilist_id)
            if _titled(new) or old is None or not _titled(old):
                self.anilist[hit.anilist_id] = new
            self.anilist.move_to_end(hit.anilist_id)
            written = self._written.get(hit.anilist_id)
            if _titled(new) and (new != old or written is None or now - written >= refresh):
                due.setdefault(hit.anilist_id, hit)
        while len(self.anilist) > _ANILIST_MEMORY:
            forgotten, _ = self.anilist.popitem(last=False)
            self._written.pop(forgotten, None)
        store = self._cache()
        if store is not None:  # a disposable cache: it warns, never raises
            for anilist_id, hit in due.items():
                await store.put(_record_key(anilist_id), SearchResult(hits=[hit], provider=hit.provider))
                self._written[anilist_id] = now

    def _cache(self) -> CacheStore | None:
        """The engine's result cache (SQLite or Redis, shared like it), or None when it is off."""
        return self.client._get_cache()  # noqa: SLF001 - the gateway keeps its records where searches are

    async def anilist_record(self, anilist_id: int) -> dict[str, Any] | None:
        """The AniList record of an anime some search through this gateway answered, or None."""
        record = self.anilist.get(anilist_id)
        if (record is None or not _titled(record)) and (store := self._cache()) is not None:
            kept = await store.get(_record_key(anilist_id))  # a sibling's, with a title
            if kept is not None and kept.hits:
                record = self.anilist[anilist_id] = _tracemoe.anilist_record(kept.hits[0])
        return record

    # ------------------------------------------------------------------ one search for a caller

    def deadline_left(self, request: Request) -> float:
        """Seconds left of ``deadline`` since ``request`` arrived (reading its body took the rest): what
        the search it asks for may take.

        Raises:
            BodyTookTheDeadline: Under a second is left (or a quarter of a shorter deadline): too little
                for any provider to answer, so none is asked (and charged) for nothing; the caller gets the
                408 of a body that did not arrive in time.
        """
        arrived = request.scope.get(ARRIVED_KEY)
        left = self.server.deadline - (0.0 if arrived is None else time.monotonic() - arrived)
        if left < min(1.0, self.server.deadline / 4):
            raise _tracemoe.BodyTookTheDeadline
        return left

    async def run_search(
        self,
        caller: Caller,
        image: Any,
        call: Callable[[Any], Awaitable[SearchResult]],
    ) -> tuple[SearchResult | Refused | AnisearchError, int]:
        """Admit the caller, search, settle. Returns the result (or why not) and the caller's count of
        searches before this one. A caller's string is only ever a URL to download: the library would read
        any other string as a path on this machine's disk."""
        if isinstance(image, str) and not is_url(image):
            return ImageFetchError("only http:// and https:// URLs are fetched"), 0
        try:
            with self.metrics.waiting():
                admitted = await self.gate.admit(caller)
        except AnisearchError as exc:  # the ledger cannot be used (Redis down): nothing was reserved
            self.metrics.failures.inc()
            return exc, 0
        if isinstance(admitted, Refused):
            self.metrics.refusal(admitted.kind)
            return admitted, admitted.used
        ticket: Ticket = admitted
        answered = False
        used = 0
        try:
            try:
                used = max(await self.gate.used(caller) - 1, 0)
                with self.metrics.searching():
                    result = await call(image)
            except AnisearchError as exc:
                self.metrics.failures.inc()
                return exc, used
            answered = True
            await self.remember(result)
            self.metrics.answered(result)
            return result, used
        finally:
            await self._settle(ticket, answered=answered)

    async def _settle(self, ticket: Ticket, *, answered: bool) -> None:
        """Settle the caller's reservation; a ledger gone meanwhile is logged, not raised: the answer (or
        the error) still goes to the caller, and the reservation ends with its lease."""
        try:
            await self.gate.settle(ticket, answered=answered)
        except AnisearchError as exc:
            logger.warning("the gateway's ledger could not record a search of %s: %s", ticket.scope, exc)

    # ------------------------------------------------------------------ trace.moe API

    async def search(self, request: Request) -> Response:
        """``/search`` (any method), as trace.moe answers it."""
        caller = identify(request.headers, _peer(request), self.server, native=False)
        if isinstance(caller, Denied):
            return _tracemoe.error(caller.status, caller.message)
        try:
            with anyio.fail_after(self.server.deadline):
                parsed = await _tracemoe.read_input(request, self.server.max_body_bytes)
        except TimeoutError:
            return _tracemoe.error(408, "Request Timeout")
        if isinstance(parsed, Response):
            return parsed
        deadline = self.deadline_left(request)

        async def call(image: Any) -> SearchResult:
            if parsed.no_files:  # an anime no AniList ID can name: nothing to ask once the image reads
                if isinstance(image, bytes):  # a bad one is trace.moe's 400 first
                    await run_sync(_image.prepare, image)
                return SearchResult(frames_searched=0)
            return await self.client.search(
                image,
                anilist_id=parsed.anilist_id,
                cut_borders=parsed.cut_borders,
                anilist_info=True,  # free upstream; keeps /anilist able to answer, and the cache key one
                deadline=deadline,
            )

        outcome, used = await self.run_search(caller, parsed.url or parsed.data, call)
        if isinstance(outcome, Refused):
            return _tracemoe.refused(outcome.kind, outcome.quota, outcome.used)
        if isinstance(outcome, AnisearchError):
            response = tracemoe_error(outcome, parsed.url)
            response.headers.update(_tracemoe.attempt_headers(None, list(getattr(outcome, "attempts", ()))))
            return response
        body = (
            _tracemoe.NO_FILES
            if parsed.no_files
            else _tracemoe.search_body(
                outcome, anilist_info=parsed.anilist_info, quota=caller.quota, quota_used=used
            )
        )
        return _tracemoe.json_response(body, headers=_tracemoe.attempt_headers(outcome, outcome.attempts))

    async def me(self, request: Request) -> Response:
        """``/me``: the caller's own allowance at the gateway, in trace.moe's shape."""
        if request.method not in {"GET", "HEAD"}:
            return _not_found(request)
        caller = identify(request.headers, _peer(request), self.server, native=False)
        if isinstance(caller, Denied):
            return _tracemoe.error(caller.status, caller.message)
        period = request.query_params.get("period")
        if period is not None:
            if period not in {"minute", "hour", "day"}:
                return _tracemoe.error(400, "Invalid period")
            return _tracemoe.json_response([])  # the gateway keeps no per-minute history
        try:
            used = await self.gate.used(caller)
        except AnisearchError as exc:  # the ledger cannot be used: trace.moe's words for it
            return tracemoe_error(exc, None)
        return _tracemoe.json_response(
            {
                "id": caller.name,
                "priority": 0,
                "concurrency": caller.concurrency,
                "quota": caller.quota,
                "quotaUsed": used,
            }
        )

    async def anilist_graphql(self, request: Request) -> Response:
        """``/anilist``: AniList's ``Media(id)`` for titles the gateway has answered (as trace.moe's web
        app proxies AniList); costs no quota and asks no upstream."""
        try:
            document = await _tracemoe.read_json(request, 64 * 1024)
            media_id = int(document["variables"]["id"])
        except (ValueError, KeyError, TypeError, OverflowError, TimeoutError):  # int(inf): OverflowError
            return _tracemoe.json_response(
                {"data": None, "errors": [{"message": "Invalid query", "status": 400}]}, 400
            )
        record = await self.anilist_record(media_id)
        if record is None:
            return _tracemoe.json_response(
                {"data": {"Media": None}, "errors": [{"message": "Not Found.", "status": 404}]}, 404
            )
        media = {
            "type": "ANIME",
            "format": None,
            "startDate": {"year": None, "month": None, "day": None},
            "endDate": {"year": None, "month": None, "day": None},
            "synonyms": [],
            "isAdult": False,
            **record,
        }
        media["coverImage"] = media.get("coverImage") or {"large": None}
        return _tracemoe.json_response({"data": {"Media": media}})


def _titled(record: dict[str, Any]) -> bool:
    """Whether an AniList record names its anime (what ``/anilist`` is asked for)."""
    title = record.get("title")
    return isinstance(title, dict) and any(isinstance(name, str) and name for name in title.values())


def _record_key(anilist_id: int) -> str:
    """Where an answered anime's record is kept in the result cache (search keys are digests: no clash)."""
    return f"gateway-anilist:{anilist_id}"


ARRIVED_KEY = "anisearch.arrived"
"""Where a request's scope keeps when it arrived (``time.monotonic()``), for :meth:`Gateway.deadline_left`."""


class _AccessLog:
    """One log line per request: peer, method, path (never the query string or a header), status, time."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = scope[ARRIVED_KEY] = time.monotonic()
        status = [0]

        async def sending(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            client = scope.get("client") or ("-", 0)
            access.info(
                "%s %s %s %d %.3fs",
                client[0],
                scope["method"],
                _tracemoe.header_text(scope["path"], 200),
                status[0],
                time.monotonic() - started,
            )


def _peer(request: Request) -> str | None:
    return request.client.host if request.client else None


def _not_found(request: Request) -> Response:
    return _tracemoe.express_page(404, f"Cannot {request.method} {request.url.path}")


class _AnyMethod:
    """An endpoint that answers every method (trace.moe's ``app.all``); ``OPTIONS`` with 204, as trace.moe's
    CORS middleware answers it before any route, preflight or not."""

    def __init__(self, handler: Callable[[Request], Awaitable[Response]]) -> None:
        self.handler = handler

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        from starlette.requests import Request

        if scope["method"] == "OPTIONS":
            response = Response(status_code=204)
        else:
            response = await self.handler(Request(scope, receive))
        await response(scope, receive, send)


_EXPOSED = ["X-Anisearch-Provider", "X-Anisearch-Cached", "X-Anisearch-Attempts"]
_TRACE_MOE_ROUTES = frozenset({"/search", "/search/", "/me", "/me/", "/anilist"})


class _Cors:
    """Cross-origin callers: trace.moe's routes (``/search``, ``/me``, the web app's ``/anilist``) answered
    as trace.moe answers them (contract §5: the origin reflected, with credentials); every other route (the
    status page, ``/metrics``, the native API) to any origin without credentials, so a page elsewhere cannot
    read them with what a browser sends on its own (a proxy's Basic auth or SSO cookie). Any header a
    preflight asks for is allowed on both."""

    def __init__(self, app: Any) -> None:
        methods = ["GET", "HEAD", "PUT", "PATCH", "POST", "DELETE"]
        self.trace_moe = CORSMiddleware(
            app,
            allow_origin_regex=".*",
            allow_credentials=True,
            allow_methods=methods,
            allow_headers=["*"],
            expose_headers=_EXPOSED,
        )
        self.others = CORSMiddleware(
            app,
            allow_origins=["*"],
            allow_methods=methods,
            allow_headers=["*"],
            expose_headers=_EXPOSED,
        )

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        trace_moe = scope["type"] == "http" and scope["path"] in _TRACE_MOE_ROUTES
        await (self.trace_moe if trace_moe else self.others)(scope, receive, send)


class _CountedBodies:
    """Each request's body counted in the worker's :class:`~anisearch._server._tracemoe.BodyBudget` from its
    first byte read until its response is sent."""

    def __init__(self, app: Any, budget: _tracemoe.BodyBudget) -> None:
        self.app = app
        self.budget = budget

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope[_tracemoe.BUDGET_KEY] = self.budget
        try:
            await self.app(scope, receive, send)
        finally:
            self.budget.release(scope)


def _refusal(
    request: Request,
    status: int,
    *,
    native: tuple[str, str],
    page: str,
    trace_moe: str,
    headers: dict[str, str] | None = None,
) -> Response:
    """One refusal in the shape of the route asked: the native API's problem (``native``: its type and
    message), a line for the status page, or trace.moe's ``{"error": ...}``."""
    if request.url.path.startswith("/v1/"):
        return _native.problem(status, *native, headers)
    if request.url.path == "/":
        return Response(f"<p>{page}</p>", status, headers, media_type="text/html")
    return _tracemoe.error(status, trace_moe, headers)


async def _bodies_busy(request: Request, _exc: Exception) -> Response:
    """The worker holds as many request bodies as it may: trace.moe's full search queue (503), which its
    clients retry after a short wait; the native API's problem, and a line on the status page."""
    message = "the gateway is receiving as many uploads as it can hold; try again in a moment"
    native = ("ServiceUnavailable", message)
    page = f"{message.capitalize()}."
    headers = {"Retry-After": "1"}
    return _refusal(
        request, 503, native=native, page=page, trace_moe="Error: Search queue is full", headers=headers
    )


async def _too_late(request: Request, _exc: Exception) -> Response:
    """A body that took the search's deadline to arrive: the 408 of one that did not arrive in time."""
    native = ("TimeoutError", "the request body took the search's deadline to arrive")
    page = "The upload did not arrive in time."
    return _refusal(request, 408, native=native, page=page, trace_moe="Request Timeout")


async def _caller_gone(_request: Request, _exc: Exception) -> Response:
    """The caller went away before sending its whole body: nothing to answer (logged as 499, nginx's
    "client closed request"), and no traceback."""
    return Response(status_code=499)


def create_app(
    settings: Settings | None = None,
    server: ServerSettings | None = None,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Starlette:
    """The gateway as an ASGI app (``anisearch serve`` runs it under uvicorn).

    Args:
        settings: The library's settings; ``Settings.load()`` when None.
        server: The gateway's settings; ``ServerSettings.load()`` when None.
        transport: An httpx transport for every upstream request (tests, proxies).

    Returns:
        The Starlette app; ``app.state.gateway`` is its :class:`Gateway`, ``app.state.bodies`` the
        :class:`~anisearch._server._tracemoe.BodyBudget` of its request bodies.

    Raises:
        ConfigurationError: The settings do not parse.
    """
    gateway = Gateway(settings or Settings.load(), server or ServerSettings.load(), transport)
    native = _native.NativeApi(gateway)
    from anisearch._server import _status

    routes = [
        Route("/", _status.page_endpoint(gateway), methods=["GET", "HEAD", "POST"]),
        Route("/search", _AnyMethod(gateway.search)),
        Route("/search/", _AnyMethod(gateway.search)),
        Route("/me", _AnyMethod(gateway.me)),
        Route("/me/", _AnyMethod(gateway.me)),
        Route("/anilist", gateway.anilist_graphql, methods=["POST"]),
        *native.routes(),
        Route("/metrics", gateway.metrics.endpoint, methods=["GET"]),
        Route("/{path:path}", _AnyMethod(_not_found_endpoint)),
    ]
    bodies = _tracemoe.BodyBudget(gateway.server.max_bodies_bytes)
    middleware = [
        Middleware(_AccessLog),
        Middleware(_CountedBodies, budget=bodies),
        Middleware(_Cors),
    ]
    app = Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=gateway.lifespan,
        exception_handlers={
            _tracemoe.BodiesBusy: _bodies_busy,
            _tracemoe.BodyTookTheDeadline: _too_late,
            ClientDisconnect: _caller_gone,
        },
    )
    app.state.gateway = gateway
    app.state.bodies = bodies
    return app


async def _not_found_endpoint(request: Request) -> Response:
    return _not_found(request)

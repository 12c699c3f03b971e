"""A trace.moe server on your own machine: ``create_app(**knobs)`` returns a Starlette app.

It implements ``research/tracemoe-contract.md`` for the current server (``era="v3"``, the API as of
2026-08) closely enough that a client cannot tell the difference on what it can observe: routes and
methods, the order of checks (rate limit, body limits, key, quota, concurrency, queue, input, decode),
exact error bodies and content types (JSON, or Express's HTML pages for 404/413/500 and the plain-text
429), rate-limit and CORS headers, the rolling 24-hour quota per client network or API key, the
concurrency counter, the priority queue, vector search, ``/me`` with usage buckets, and expiring preview
URLs. Searches are scored like the real server: the upload is prepared and described with
:mod:`anisearch_providers.tracemoe.descriptor` and compared with the scenes every emulator shares
(``data/scenes.json``, seen through :mod:`._index`) by ``(255 - squared L2) / 255``.

``era="v2"`` (2025-08 to 2026-02) and ``era="v1"`` (2021-05 to 2025-07) switch on the quirks of older
servers that a client must survive: a calendar-month quota (1000 for guests) with the bare
``Search quota depleted`` message, no ``quota``/``quotaUsed`` in search bodies, ``?key=`` honoured,
no vector search or ``/me?period``; v2 sends ``quotaUsed`` as a JSON string and zeros for a guest who
never searched; v1 has no ``at``/``duration``, V1 preview URLs, the small AniList object, and drops
``anilist`` from items whose anime AniList does not know.

Deliberate differences: the index is tiny, so an unrelated image scores 0 rather than a random 0.5-0.9;
``?url=`` cannot reach the internet (see ``remote_images`` and ``fetch_loopback``). Uploads are decoded
as the server does, a primary decoder (Pillow for sharp) and a fallback for what it refuses (the first
frame through PyAV for ffmpeg; a truncated JPEG decodes to what arrived): only bytes both refuse get
``Failed to process image``. Without PyAV (the ``video`` extra) videos get that 400 too.

Run it with ``anisearch emulate tracemoe`` or any ASGI server (``uvicorn --factory
anisearch_emulators.tracemoe:create_app``). Tests read ``app.state.emulator``
(:class:`EmulatorState`): counters, the search log, :meth:`EmulatorState.fail_next`, and
``outage`` (a database that is down: PostgreSQL or the vector store, each answered as the server does).
"""

from __future__ import annotations

import hmac
import io
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from PIL import Image
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ._index import SCENES, IndexedScene
from ._search import SearchRoutes
from ._state import (
    DAY,
    HTML_TYPE,
    TEXT_TYPE,
    TIERS,
    EmulatedUser,
    EmulatorState,
    Era,
    InjectedFailure,
    LoggedSearch,
    _Caller,
    _Config,
    _error,
    _json,
    _not_found,
    weak_etag,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Sequence

    from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "DEFAULT_PORT",
    "TIERS",
    "EmulatedUser",
    "EmulatorState",
    "Era",
    "InjectedFailure",
    "LoggedSearch",
    "create_app",
]

DEFAULT_PORT = 8000
"""The port ``anisearch emulate`` serves this emulator on by default (fixed; docs/cli.md lists it)."""

MIB = 1024 * 1024
PERIODS = {"minute": (60, 60), "hour": (3600, 72), "day": (86_400, 60)}  # bucket seconds, bucket count
LOGGED_CODES = ("200", "400", "402", "405", "500", "503")


class _Gate:
    """Before routing, on every route: request counters, housekeeping, the HTTP rate limit, CORS."""

    def __init__(self, app: ASGIApp, emulator: _Emulator) -> None:
        self.app = app
        self.emulator = emulator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        emulator, state = self.emulator, self.emulator.state
        path: str = scope["path"]
        state.requests[path] += 1
        if path == "/search":
            state.search_requests += 1
        now = state.clock()
        state.housekeeping(now)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        ip = emulator.client_ip(scope, headers)
        limit_headers, retry_after = emulator.rate_limit(ip, now)
        origin = headers.get("origin")
        # app.ts: a first middleware sets these on everything, the rate limiter runs next, and only
        # then the cors package (credentials, origin reflected) answers preflights and decorates the rest.
        extra = {
            "Access-Control-Allow-Origin": "*",
            "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
            "Access-Control-Allow-Headers": "Content-Type, x-trace-secret",
            **limit_headers,
        }
        response: Response | None = None
        if retry_after is not None:
            extra["Retry-After"] = str(retry_after)
            body = b"Too many requests, please try again later."
            extra["ETag"] = weak_etag(body)
            response = Response(body, 429, media_type=HTML_TYPE)
        else:
            if origin:
                extra["Access-Control-Allow-Origin"] = origin
            extra |= {"Vary": "Origin", "Access-Control-Allow-Credentials": "true"}
        if response is None and scope["method"] == "OPTIONS":
            extra["Access-Control-Allow-Methods"] = "GET,HEAD,PUT,PATCH,POST,DELETE"
            requested = headers.get("access-control-request-headers")
            if requested:
                extra["Access-Control-Allow-Headers"] = requested
                extra["Vary"] = "Origin, Access-Control-Request-Headers"
            response = Response(status_code=204, headers={"Content-Length": "0"})
        if response is not None:
            response.headers.update(extra)
            await response(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in extra.items()),
                ]
            await send(message)

        await self.app(scope, receive, send_with_headers)


class _AnyMethod:
    """An endpoint that takes every method, as Express's ``app.all`` (each handler sorts methods itself)."""

    def __init__(self, handler: Callable[[Request], Awaitable[Response]]) -> None:
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.handler(Request(scope, receive))
        await response(scope, receive, send)


class _Emulator(SearchRoutes):
    """Every route of the server."""

    async def root(self, _request: Request) -> Response:
        return Response("ok", headers={"ETag": weak_etag(b"ok")}, media_type=HTML_TYPE)

    async def me(self, request: Request) -> Response:
        if request.method not in {"GET", "HEAD"}:
            return _not_found(request)
        period = request.query_params.get("period", "") if self.era == "v3" else ""
        if period and period not in PERIODS:  # checked before the key, as the server does
            return _error(400, "Invalid period")
        key = self.api_key(request)
        caller = self.caller(request, key)
        if caller is None:
            return _error(403, "Invalid API key")
        now = self.state.clock()
        if period:
            return self.usage(caller, period, now)
        used = self.quota_used(caller, now)
        body: dict[str, Any] = {
            "id": caller.user.email if caller.user else caller.ip,
            "priority": caller.priority,
            "concurrency": caller.concurrency,
            "quota": caller.quota,
            "quotaUsed": used,
        }
        recent = self.state.successes(
            caller.scope, now - self.config.quota_window, self.guest_network(caller)
        )
        if caller.user is None and self.era != "v1" and recent:
            body["id"] = self.network_text(caller.network)
        if caller.user is None and self.era == "v2" and not self.state.successes(caller.scope, 0):
            body |= {"priority": 0, "concurrency": 0, "quota": 0}
        if self.era == "v2":
            body["quotaUsed"] = str(used)
        return _json(body)

    def usage(self, caller: _Caller, period: str, now: float) -> Response:
        """``/me?period=``: one entry per slot in which the caller searched, oldest first; quiet slots
        are left out. Keys in the server's order: the six logged statuses, ``time``, ``total``."""
        size, count = PERIODS[period]
        first = (now // size - count + 1) * size
        buckets: dict[int, dict[str, Any]] = {}
        network = self.guest_network(caller)  # a guest's rows are its network's, keyed ones too
        for row in self.state.log:
            index = int((row.time - first) // size)
            whose = row.scope == caller.scope if network is None else row.network == network
            if not whose or not 0 <= index < count:
                continue
            bucket = buckets.setdefault(index, {**dict.fromkeys(LOGGED_CODES, 0), "time": "", "total": 0})
            if str(row.code) in bucket:
                bucket[str(row.code)] += 1
            bucket["total"] += 1
        for index, bucket in buckets.items():
            moment = datetime.fromtimestamp(first + index * size, UTC)
            bucket["time"] = moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")
        return _json([buckets[index] for index in sorted(buckets)])

    async def media(self, request: Request) -> Response:
        if request.method not in {"GET", "HEAD"}:
            return _not_found(request)
        kind = request.url.path.split("/")[1]
        size = request.query_params.get("size")
        if size is not None and size not in {"s", "m", "l"}:
            return Response("Bad Request. Invalid param: size", 400, media_type=TEXT_TYPE)
        scene, status = self.resolve_preview(request)
        if scene is None:
            return Response(
                {403: "Forbidden", 410: "Gone"}.get(status, "Not found"), status, media_type=TEXT_TYPE
            )
        headers = {"Cache-Control": "max-age=86400", "ETag": "v0"}
        if request.headers.get("if-none-match") == "v0":
            return Response(status_code=304, headers=headers)
        if kind == "image":
            return Response(_placeholder_jpeg(), headers=headers, media_type="image/jpeg")
        headers |= {
            "x-video-start": str(scene.start),
            "x-video-end": str(scene.end),
            "x-video-duration": str(round(scene.end - scene.start, 4)),
            "Access-Control-Expose-Headers": "x-video-start, x-video-end, x-video-duration",
        }
        return Response(_PLACEHOLDER_MP4, headers=headers, media_type="video/mp4")

    def resolve_preview(self, request: Request) -> tuple[IndexedScene | None, int]:
        """The scene behind a preview URL, or None with 403 (bad hash), 404 or 410 (expired)."""
        parts = request.scope["path"].split("/", 3)[2:]
        now = self.state.clock()
        by_id = {scene.file_id: scene for scene in self.config.index}
        if len(parts) == 1 and self.era != "v1":
            opened = self.open_preview(parts[0])
            if isinstance(opened, int):
                return None, opened
            file_id, expire = opened
            scene = by_id.get(file_id)
            if scene is None:
                return None, 404
            return (None, 410) if now > expire + 300 else (scene, 200)
        if len(parts) == 2 and self.era == "v1":  # noqa: PLR2004 - /video/{anilist}/{filename}
            anilist, name = parts
            if request.scope["path"].startswith("/image/"):
                name = name.removesuffix(".jpg")
            for scene in self.config.index:
                if str(scene.anilist_id) == anilist and scene.filename == name:
                    stamp = request.query_params.get("now", "")
                    token = self.sign(f"{anilist}/{name}/{request.query_params.get('t')}/{stamp}")
                    if not hmac.compare_digest(token, request.query_params.get("token", "")):
                        return None, 403
                    return (None, 410) if not stamp.isdigit() or now > int(stamp) + 300 else (scene, 200)
        return None, 404


_PLACEHOLDER_MP4 = (
    bytes.fromhex("0000001c667479706973736f6d0000020069736f6d69736f326d703431") + b"\x00\x00\x00\x08free"
)


def _placeholder_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 18), (96, 96, 96)).save(buffer, "JPEG", quality=50)
    return buffer.getvalue()


def _accounts(keys: object) -> dict[str, EmulatedUser]:
    """The ``keys`` knob as accounts: an int is a tier of :data:`TIERS` (``-o 'keys={"MYKEY": 4}'``).

    Raises:
        ValueError: Not a mapping, or a value that is neither an account nor a known tier.
    """
    if keys is None:
        return {}
    if not isinstance(keys, Mapping):
        message = f'keys takes an object of API key -> tier, such as {{"MYKEY": 4}}, not {keys!r}'
        raise ValueError(message)  # noqa: TRY004 - a bad knob value, reported as such by `emulate`
    accounts = {}
    for key, user in keys.items():
        if isinstance(user, EmulatedUser):
            accounts[key] = user
        elif isinstance(user, int) and not isinstance(user, bool) and user in TIERS:
            accounts[key] = EmulatedUser.from_tier(user, f"tier{user}@example.com")
        else:
            tiers = ", ".join(str(tier) for tier in TIERS)
            raise ValueError(f"keys: {key!r} maps to {user!r}, not a tier ({tiers})")
    return accounts


def create_app(
    *,
    era: Era = "v3",
    quota: int | None = None,
    quota_window: float = DAY,
    concurrency: int = 1,
    queue_size: int = 4,
    rate_limit: int = 100,
    keys: Mapping[str, EmulatedUser | int] | None = None,
    latency: float = 0.0,
    log_seconds: float = 0.0,
    failures: Iterable[InjectedFailure] = (),
    max_upload_bytes: int = 25 * MIB,
    max_json_bytes: int = 100 * 1024,
    trust_forwarded_for: bool = False,
    remote_images: Mapping[str, bytes | int] | None = None,
    fetch_loopback: bool = False,
    index: Sequence[IndexedScene] = SCENES,
    clock: Callable[[], float] = time.time,
    salt: bytes = b"anisearch-emulator",
) -> Starlette:
    """Build a trace.moe emulator.

    Args:
        era: ``"v3"`` (the current API, default), ``"v2"`` (2025-08 to 2026-02) or ``"v1"`` (2021-05 to
            2025-07); see the module docstring for what changes.
        quota: Guest searches per window (rolling 24 h in v3, calendar month before). Default: 100 in
            v3, 1000 before.
        quota_window: The rolling window of v3, seconds (86400): each successful search counts against
            the quota (and in ``/me``'s ``quotaUsed``) until exactly this long after it was made. Shorten
            it to watch slots free one by one in tests.
        concurrency: Parallel ``/search`` requests per guest.
        queue_size: The priority queue's maximum (upstream ``SEARCH_QUEUE``, the CPU count by default).
        rate_limit: HTTP requests per client per 60 s window, on every route.
        keys: API key -> account; an int is a tier of :data:`TIERS` (email ``tier<N>@example.com``).
        latency: Seconds each search takes, from its arrival to its answer (to a tenth of a millisecond,
            or longer when the work takes longer): reading the upload, the image work, the ranking and
            encoding the answer included (the rest is a wait), to provoke concurrency collisions and to
            model an upstream's answer time.
        log_seconds: Seconds the server takes to log a search after it answered; only then does the
            search stop counting against the caller's concurrency, as on servers before 2026-02-26
            (trace.moe-api ``be269f4``), where the count went down after an awaited database insert that
            ran once the answer was sent. Today's server counts down before it logs: 0.
        failures: Canned answers for the first ``/search`` requests (see :meth:`EmulatorState.fail_next`).
        max_upload_bytes: Raw and multipart upload limit, bytes (25 MiB upstream).
        max_json_bytes: JSON body limit, bytes (100 kB upstream).
        trust_forwarded_for: Take the client address from ``X-Forwarded-For`` (to play several guests).
        remote_images: ``?url=`` answers: URL -> image bytes, or an HTTP status to mirror.
        fetch_loopback: Let ``?url=`` fetch loopback URLs with httpx (the real server refuses them).
        index: The scenes to search (default: :data:`._index.SCENES`).
        clock: Epoch seconds; inject a fake clock to move the quota window in tests.
        salt: Secret for preview URLs.

    Returns:
        The Starlette app; its state is ``app.state.emulator`` (:class:`EmulatorState`).

    Raises:
        ValueError: ``era`` is not one of ``"v1"``, ``"v2"``, ``"v3"``, ``quota_window`` is not positive, or
            ``keys`` is not a mapping of keys to accounts or tiers (an unknown tier included).
    """
    if era not in {"v1", "v2", "v3"}:
        raise ValueError(f"unknown era {era!r}; expected 'v1', 'v2' or 'v3'")
    if isinstance(quota_window, bool) or not isinstance(quota_window, int | float) or not quota_window > 0:
        raise ValueError(f"quota_window must be a positive number of seconds, not {quota_window!r}")
    accounts = _accounts(keys)
    config = _Config(
        era=era,
        quota=quota if quota is not None else (100 if era == "v3" else 1000),
        concurrency=concurrency,
        queue_size=queue_size,
        rate_limit=rate_limit,
        keys=accounts,
        latency=latency,
        log_seconds=log_seconds,
        max_upload_bytes=max_upload_bytes,
        max_json_bytes=max_json_bytes,
        trust_forwarded_for=trust_forwarded_for,
        remote_images=dict(remote_images or {}),
        fetch_loopback=fetch_loopback,
        index=tuple(index),
        salt=salt,
        quota_window=quota_window,
    )
    state = EmulatorState(clock, failures)
    emulator = _Emulator(config, state)
    routes = [
        Route("/", _AnyMethod(emulator.root)),
        Route("/search", _AnyMethod(emulator.search)),
        Route("/search/", _AnyMethod(emulator.search)),  # Express routing ignores a trailing slash
        Route("/me", _AnyMethod(emulator.me)),
        Route("/me/", _AnyMethod(emulator.me)),
        Route("/video/{rest:path}", _AnyMethod(emulator.media)),
        Route("/image/{rest:path}", _AnyMethod(emulator.media)),
        Route("/{path:path}", _AnyMethod(_not_found_endpoint)),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(_Gate, emulator=emulator)])
    app.state.emulator = state
    return app


async def _not_found_endpoint(request: Request) -> Response:
    return _not_found(request)

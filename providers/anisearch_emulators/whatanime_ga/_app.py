"""An emulator of the legacy whatanime.ga / trace.moe ``/api`` server (2018-10 to 2021-02, "L2").

``create_app(**knobs)`` returns a Starlette app with the legacy routes and their exact behaviour:

- ``POST /api/search`` (also ``GET`` with ``?url=``): the image as a base64 data URL in a form field or
  a JSON body (``image``; everything up to the first comma is dropped and spaces are turned back into
  ``+``), as a multipart file part named ``image``, or fetched from ``?url=`` (loopback addresses only:
  the emulator never reaches the internet; anything else is a ``Failed to fetch image``). ``filter``
  restricts the search to one AniList ID.
- ``GET /api/me``: what remains of the caller's minute and day windows (never counts).
- ``OPTIONS`` on both: 200 with an empty body.
- ``GET /thumbnail.php``: a placeholder JPEG for a hit's preview URL.

Limits are kept like the PHP server kept them in Redis: per caller (token owner, else client address),
a minute counter and a day counter set to the allowance on first use, decremented on every search that
reaches them (refused ones included), expiring with their window. Success answers carry the four
``x-whatanime-*`` headers; a 429 carries only the spent pair and ``Retry-After``. Bodies over the limit
get the web server's HTML 413 before anything else happens. Errors are JSON-encoded strings served as
``text/html`` (PHP's default), like the real thing.

Results come from the index shared with the trace.moe emulator: ``tinted-good.jpg`` finds AniList 11887
(Kokoro Connect) episode 5 at about 1174 s.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Final, Literal

import anyio
import httpx
from PIL import Image, UnidentifiedImageError
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from anisearch_providers.tracemoe.descriptor import search_descriptor, similarity

from ._index import LegacyFrame, default_frames
from ._input import SearchInput, anilist_filter, parse_input, read_body
from ._state import Allowance, LegacyEmulatorState

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from starlette.requests import Request

__all__ = [
    "BODY_LIMIT_2017",
    "BODY_LIMIT_2019",
    "DEFAULT_PORT",
    "Allowance",
    "LegacyEmulatorState",
    "create_app",
]

DEFAULT_PORT = 8001
"""The port ``anisearch emulate`` serves this emulator on by default (fixed; docs/cli.md lists it)."""
_NOT_BASE64 = re.compile(r"[^A-Za-z0-9+/]")
"""What PHP's ``base64_decode`` skips in its input (everything outside the alphabet, ``=`` included)."""

BODY_LIMIT_2017: Final = 1024 * 1024
"""The web server's "1M" body limit (1 MiB) the docs called "1MB", until 2019-09."""
BODY_LIMIT_2019: Final = 10 * 1024 * 1024
"""The "10MB" body limit from 2019-09 on."""

_MAX_DOCS: Final = 20
_LOOPBACK: Final = frozenset({"127.0.0.1", "::1", "localhost"})
_PHP_HTML: Final = "text/html; charset=UTF-8"
_SALT: Final = b"anisearch-legacy-emulator"
_NGINX_413: Final = (
    "<html>\r\n<head><title>413 Request Entity Too Large</title></head>\r\n<body>\r\n"
    "<center><h1>413 Request Entity Too Large</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)


@dataclass(frozen=True, slots=True)
class _Knobs:
    max_body_bytes: int
    tokens: Mapping[str, Allowance]
    guest: Allowance
    require_token: bool
    error_format: Literal["json", "text"]
    quote_bug: bool
    retry_after: bool
    enforce_quota: bool
    trust_forwarded_for: bool
    fault: Literal["database", "solr", "process"] | None
    latency: float
    frames: Sequence[LegacyFrame]
    frame_count: int
    fetch_transport: httpx.AsyncBaseTransport | None


class _Refusal(Exception):  # noqa: N818 - a control-flow signal carrying a finished response, not an error
    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


def _php_text(knobs: _Knobs, status: int, message: str, headers: Mapping[str, str] | None = None) -> _Refusal:
    body = message if knobs.error_format == "text" else json.dumps(message, ensure_ascii=False)
    return _Refusal(Response(body, status_code=status, media_type=_PHP_HTML, headers=dict(headers or {})))


def _wait_text(knobs: _Knobs, kind: Literal["limit", "quota"], ttl: int) -> str:
    if knobs.quote_bug and knobs.error_format == "json":
        # the 2019-02 server's single-quoted PHP literal: the variable never expanded
        return f'"Search {kind} exceeded. Please wait ".${kind}_ttl." seconds."'
    return f"Search {kind} exceeded. Please wait {ttl} seconds."


def _too_many(knobs: _Knobs, kind: Literal["limit", "quota"], value: int, ttl: int) -> _Refusal:
    headers = {f"X-whatanime-{kind}": str(value), f"X-whatanime-{kind}-ttl": str(ttl)}
    if knobs.retry_after:
        headers = {"Retry-After": str(ttl), **headers}
    text = _wait_text(knobs, kind, ttl)
    if knobs.quote_bug and knobs.error_format == "json":
        return _Refusal(Response(text, status_code=429, media_type=_PHP_HTML, headers=headers))
    return _php_text(knobs, 429, text, headers)


# ---------------------------------------------------------------- reading the request


def _caller(request: Request, knobs: _Knobs) -> str:
    if knobs.trust_forwarded_for:
        forwarded = request.headers.get("x-forwarded-for", "").split(",")[0].strip()
        if forwarded:
            return forwarded
    return request.client.host if request.client else "unknown"


def _account(request: Request, knobs: _Knobs) -> tuple[str | None, Allowance]:
    """The token (None for a guest) and its allowance.

    Raises:
        _Refusal: 401 ``Missing API token`` (``require_token``), 403 ``Invalid API token``, or the
            injected 503 ``Failed to connect to database``.
    """
    token = request.query_params.get("token", "")
    if knobs.fault == "database":
        raise _php_text(knobs, 503, "Failed to connect to database")
    if not token:
        if knobs.require_token:
            raise _php_text(knobs, 401, "Missing API token")
        return None, knobs.guest
    if token not in knobs.tokens:
        raise _php_text(knobs, 403, "Invalid API token")
    return token, knobs.tokens[token]


# ---------------------------------------------------------------- the image


async def _fetch(url: str, knobs: _Knobs) -> bytes:
    refusal = _php_text(knobs, 400, f"Failed to fetch image {url}")
    try:
        host = httpx.URL(url).host
    except httpx.InvalidURL:
        raise refusal from None
    if host not in _LOOPBACK:
        raise refusal  # the emulator never reaches beyond this machine
    try:
        async with httpx.AsyncClient(transport=knobs.fetch_transport, timeout=10) as client:
            response = await client.get(url)
    except httpx.HTTPError:
        raise refusal from None
    if response.status_code != 200:  # noqa: PLR2004 - only a 200 carries the image
        raise refusal
    return response.content


def _decode_base64(image: str, knobs: _Knobs) -> bytes:
    data = image.split(",", 1)[1] if "," in image else image
    data = data.replace(" ", "+")
    if data == "":
        raise _php_text(knobs, 400, "Image is empty")
    cleaned = _NOT_BASE64.sub("", data)  # PHP's base64_decode skips every character outside the alphabet
    try:
        return base64.b64decode(cleaned + "=" * (-len(cleaned) % 4))
    except binascii.Error:
        return b""


def _solr_error(knobs: _Knobs, clock: Callable[[], float]) -> _Refusal:
    where = f"http://192.168.2.11/pic/{clock():.4f}.jpg"
    return _php_text(knobs, 500, f"Error reading image from URL: {where}: {where}")


def _describe(data: bytes, knobs: _Knobs, clock: Callable[[], float]) -> tuple[int, ...]:
    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.load()
            return search_descriptor(opened, cut_borders=True)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        raise _solr_error(knobs, clock) from None


async def _query_descriptor(
    found: SearchInput, url: str, knobs: _Knobs, clock: Callable[[], float]
) -> tuple[int, ...]:
    """The descriptor of the searched image: fetched from ``url``, the uploaded file, or the base64 field.

    Raises:
        _Refusal: 400 ``Failed to fetch image``/``Image is empty``, or a 500 (an unreadable image, or an
            injected fault).
    """
    if url:
        data = await _fetch(url, knobs)
    elif found.file is not None:
        data = found.file
    else:
        data = _decode_base64(found.image or "", knobs)
    if knobs.fault == "process":
        raise _php_text(knobs, 500, "Failed to process image")
    if knobs.fault == "solr":
        raise _solr_error(knobs, clock)
    return _describe(data, knobs, clock)


def _tokenthumb(at: float) -> str:
    digest = hashlib.md5(f"{at:g}".encode() + _SALT, usedforsecurity=False).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def _doc(frame: LegacyFrame, score: float) -> dict[str, Any]:
    return {
        "from": frame.start,
        "to": frame.end,
        "anilist_id": frame.anilist_id,
        "at": frame.at,
        "season": frame.season,
        "anime": frame.title_chinese or "",
        "filename": frame.filename,
        "episode": frame.episode,
        "tokenthumb": _tokenthumb(frame.at),
        "similarity": score,
        "title": frame.title_native,
        "title_native": frame.title_native,
        "title_chinese": frame.title_chinese,
        "title_english": frame.title_english,
        "title_romaji": frame.title_romaji,
        "mal_id": frame.mal_id,
        "synonyms": list(frame.synonyms),
        "synonyms_chinese": list(frame.synonyms_chinese),
        "is_adult": frame.is_adult,
    }


def _search(descriptor: tuple[int, ...], anilist_id: int | None, knobs: _Knobs) -> list[dict[str, Any]]:
    scored = [
        (similarity(frame.descriptor, descriptor), frame)
        for frame in knobs.frames
        if anilist_id is None or frame.anilist_id == anilist_id
    ]
    scored.sort(key=lambda pair: pair[0], reverse=True)
    return [_doc(frame, score) for score, frame in scored[:_MAX_DOCS]]


# ---------------------------------------------------------------- routes


def _state(request: Request) -> LegacyEmulatorState:
    state: LegacyEmulatorState = request.app.state.emulator
    return state


def _knobs(request: Request) -> _Knobs:
    knobs: _Knobs = request.app.state.knobs
    return knobs


async def _search_route(request: Request) -> Response:
    if request.method == "OPTIONS":
        return Response(b"", status_code=200, media_type=_PHP_HTML)
    state, knobs = _state(request), _knobs(request)
    state.search_requests += 1
    if knobs.latency > 0:
        await anyio.sleep(knobs.latency)
    try:
        return await _answer_search(request, state, knobs)
    except _Refusal as refusal:
        return refusal.response


async def _answer_search(request: Request, state: LegacyEmulatorState, knobs: _Knobs) -> Response:
    body = await read_body(request, knobs.max_body_bytes)
    if body is None:
        return Response(_NGINX_413, status_code=413, media_type="text/html")
    state.body_sizes.append(len(body))
    found = await parse_input(request, body)
    url = request.query_params.get("url", "")
    # 2017-2018 servers checked the token before anything else; later ones after the input
    account = _account(request, knobs) if knobs.require_token else None
    if not found.image and not url and found.file is None:
        raise _php_text(knobs, 400, "No image received")
    token, allowance = account or _account(request, knobs)
    caller = f"user:{token}" if token else _caller(request, knobs)
    limit, limit_ttl = state.take(f"{caller}_limit", allowance.limit, allowance.limit_ttl)
    if limit < 0:
        raise _too_many(knobs, "limit", limit, limit_ttl)
    if knobs.enforce_quota:
        quota, quota_ttl = state.take(f"{caller}_quota", allowance.quota, allowance.quota_ttl)
        if quota < 0:
            raise _too_many(knobs, "quota", quota, quota_ttl)
    else:  # from 2020-09-10 the day quota was reported but no longer counted
        quota, quota_ttl = allowance.quota, allowance.quota_ttl
    headers = {
        "X-whatanime-limit": str(limit),
        "X-whatanime-limit-ttl": str(limit_ttl),
        "X-whatanime-quota": str(quota),
        "X-whatanime-quota-ttl": str(quota_ttl),
    }
    try:
        descriptor = await _query_descriptor(found, url, knobs, state.clock)
    except _Refusal as refusal:  # the PHP server had sent the limit headers by then
        refusal.response.headers.update(headers)
        raise
    docs = _search(descriptor, anilist_filter(found.filter), knobs)
    state.searches += 1
    payload = {
        "RawDocsCount": knobs.frame_count,
        "RawDocsSearchTime": 6293,
        "ReRankSearchTime": 1105,
        "CacheHit": False,
        "trial": 1,
        "docs": docs,
        "limit": limit,
        "limit_ttl": limit_ttl,
        "quota": quota,
        "quota_ttl": quota_ttl,
    }
    return JSONResponse(payload, headers=headers)


async def _me_route(request: Request) -> Response:
    if request.method == "OPTIONS":
        return Response(b"", status_code=200, media_type=_PHP_HTML)
    state, knobs = _state(request), _knobs(request)
    try:  # /api/me answered its errors in plain text in every version
        token, allowance = _account(request, replace(knobs, error_format="text"))
    except _Refusal as refusal:
        return refusal.response
    address = _caller(request, knobs)
    caller = f"user:{token}" if token else address
    limit, limit_ttl = state.peek(f"{caller}_limit", allowance.limit, allowance.limit_ttl)
    quota, quota_ttl = state.peek(f"{caller}_quota", allowance.quota, allowance.quota_ttl)
    user_id = 1001 + sorted(knobs.tokens).index(token) if token else None
    return JSONResponse(
        {
            "user_id": user_id,
            "email": f"user{user_id}@example.org" if token else address,
            "limit": limit,
            "limit_ttl": limit_ttl,
            "quota": quota,
            "quota_ttl": quota_ttl,
            "user_limit": allowance.limit,
            "user_limit_ttl": allowance.limit_ttl,
            "user_quota": allowance.quota,
            "user_quota_ttl": allowance.quota_ttl,
        }
    )


async def _thumbnail_route(request: Request) -> Response:
    """A grey 320x180 JPEG for any well-formed preview URL (the real one cut a frame from the video)."""
    params = request.query_params
    if not all(params.get(name) for name in ("anilist_id", "file", "t", "token")):
        return Response("Forbidden", status_code=403, media_type=_PHP_HTML)
    buffer = io.BytesIO()
    Image.new("RGB", (320, 180), (128, 128, 128)).save(buffer, "JPEG", quality=60)
    return Response(buffer.getvalue(), media_type="image/jpeg")


def _token_allowances(tokens: object) -> dict[str, Allowance]:
    """The ``tokens`` knob (None: no tokens) as token -> allowance.

    Raises:
        ValueError: Not an object (a mapping) of token -> allowance, or an allowance that is not one.
    """
    if tokens is None:
        return {}
    if not isinstance(tokens, Mapping):
        example = '{"MYTOKEN": {}}'
        message = f"tokens takes an object of API token -> allowance, such as {example}, not {tokens!r}"
        raise ValueError(message)  # noqa: TRY004 - a bad knob value, reported as such by `emulate`
    return {
        str(token): Allowance.of(allowance, f"tokens[{str(token)!r}]") for token, allowance in tokens.items()
    }


def create_app(
    *,
    max_body_bytes: int = BODY_LIMIT_2017,
    tokens: Mapping[str, Allowance | Mapping[str, int]] | None = None,
    guest: Allowance | Mapping[str, int] | None = None,
    require_token: bool = False,
    error_format: Literal["json", "text"] = "json",
    quote_bug: bool = False,
    retry_after: bool = True,
    enforce_quota: bool = True,
    trust_forwarded_for: bool = False,
    fault: Literal["database", "solr", "process"] | None = None,
    latency: float = 0.0,
    frames: Sequence[LegacyFrame] | None = None,
    frame_count: int | None = None,
    clock: Callable[[], float] = time.monotonic,
    fetch_transport: httpx.AsyncBaseTransport | None = None,
) -> Starlette:
    """The legacy server as a Starlette app; its counters are ``app.state.emulator``.

    Args:
        max_body_bytes: Request bodies over this many bytes get the HTML 413 (``BODY_LIMIT_2017`` =
            1 MiB, or ``BODY_LIMIT_2019`` = 10 MiB).
        tokens: API token -> its allowance. Unknown tokens get 403 ``Invalid API token``. An allowance
            may be given as a JSON object of its fields (``{"T": {"limit": 5, "quota": 100}}``).
        guest: The allowance of callers without a token (default 10/min, 150/day), also as an object.
        require_token: The 2017-2018 server: no token gives 401 ``Missing API token``.
        error_format: ``"json"`` (JSON-encoded strings, 2019-02 on) or ``"text"`` (plain, before).
        quote_bug: Send the 2019-02 429 literal ``"Search limit exceeded. Please wait ".$limit_ttl."
            seconds."`` (no number) instead of a proper JSON string (``error_format="json"`` only).
        retry_after: Send ``Retry-After`` with a 429 (the server did from 2019-08-15).
        enforce_quota: Count the day quota (the server stopped on 2020-09-10 and reported it unchanged).
        trust_forwarded_for: Take the caller's address from ``X-Forwarded-For`` (behind a proxy).
        fault: Fail every search: ``"database"`` (503 ``Failed to connect to database``), ``"solr"``
            (500 ``Error reading image from URL: ...``) or ``"process"`` (500 ``Failed to process image``).
        latency: Seconds to wait before answering a search.
        frames: The index to search (default: the frames shared with the trace.moe emulator).
        frame_count: ``RawDocsCount`` to report (default: the frames the indexed files stand for).
        clock: Monotonic seconds, for the windows (inject a fake one in tests).
        fetch_transport: The httpx transport ``?url=`` fetches go through (tests), default real sockets
            to loopback hosts only.

    Raises:
        ValueError: ``max_body_bytes`` is not positive, ``tokens`` is not an object (a mapping), or an
            allowance given as an object is not one.
    """
    if max_body_bytes <= 0:
        raise ValueError(f"max_body_bytes must be positive, got {max_body_bytes}")
    index = tuple(frames) if frames is not None else default_frames()
    knobs = _Knobs(
        max_body_bytes=max_body_bytes,
        tokens=_token_allowances(tokens),
        guest=Allowance.of(guest, "guest") if guest is not None else Allowance(),
        require_token=require_token,
        error_format=error_format,
        quote_bug=quote_bug,
        retry_after=retry_after,
        enforce_quota=enforce_quota,
        trust_forwarded_for=trust_forwarded_for,
        fault=fault,
        latency=latency,
        frames=index,
        frame_count=frame_count if frame_count is not None else sum(frame.frames for frame in index),
        fetch_transport=fetch_transport,
    )
    app = Starlette(
        routes=[
            Route("/api/search", _search_route, methods=["GET", "POST", "OPTIONS"]),
            Route("/api/me", _me_route, methods=["GET", "OPTIONS"]),
            Route("/thumbnail.php", _thumbnail_route, methods=["GET"]),
        ]
    )
    app.state.emulator = LegacyEmulatorState(clock=clock)
    app.state.knobs = knobs
    return app

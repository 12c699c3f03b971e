"""An offline whatanimeisthis.com: the site routes and better-auth's, on your own machine.

``create_app(**knobs)`` returns a Starlette app (serve it with ``anisearch emulate whatanimeisthis`` or
any ASGI server). It follows ``research/whatanimeisthis-contract.md``: better-auth's sign-in, session
and sign-out exactly (``_auth``), and for the site's own routes, whose response shapes are not
public, the plausible shapes of §4 in the envelope the ``envelope`` knob picks (bare, ``{data}``, or
``{code, message, data}`` with errors as HTTP 200 ``code: -1``). Quotas are the documented ones: guests
5 searches a day per address, accounts 10 free credits a day then purchased credits, 100 searches an
hour. Searches are scored with trace.moe's colour layout descriptor against the scenes every emulator
shares (``data/scenes.json``, seen through ``_index``). Knobs are the fields of
:class:`~._state.Knobs`; the state and its counters are ``app.state.emulator``.

API keys are modelled on better-auth's API-key plugin behind the site's documented routes: 64 random
letters, listed only by their 6-letter ``start``, titles of 1 to 32 characters (a longer one is 400
``INVALID_NAME_LENGTH``, the plugin's answer). Sessions slide when the site's routes look them up, but
only ``get-session`` sends the refreshed cookie.

One account exists unless the ``users`` knob says otherwise: ``user@example.com`` with the password
``correct horse battery staple``.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import TYPE_CHECKING, Any, get_args

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from . import _auth as auth
from ._index import INDEX, describe, match
from ._state import EmulatorState, Envelope, Knobs, SearchRecord, Style, iso

if TYPE_CHECKING:
    from starlette.requests import Request

    from ._index import IndexEntry
    from ._state import User

__all__ = ["DEFAULT_PORT", "EmulatorState", "Knobs", "create_app"]

DEFAULT_PORT = 8002
"""The port ``anisearch emulate`` serves this emulator on by default (fixed; docs/cli.md lists it)."""

PERIODS = {"daily": 86400, "weekly": 7 * 86400, "monthly": 30 * 86400, "yearly": 365 * 86400, "all": None}
_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")
_UNAUTHORIZED = "Unauthorized"
KEY_LENGTH = 64
"""Characters of an API key (better-auth's plugin default); a shorter one is refused with 403."""
KEY_NAME_MAX = 32
"""Longest API key title: the site's keys are taken as better-auth's plugin keys, whose names are 1-32."""
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


class _Refused(Exception):  # noqa: N818 - a control-flow signal carrying the answer, not an error
    """Raised by a search step to answer with ``response`` right away."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


def _state(request: Request) -> EmulatorState:
    state: EmulatorState = request.app.state.emulator
    return state


def ok(state: EmulatorState, payload: dict[str, Any], list_key: str | None = None) -> JSONResponse:
    """A success in the configured envelope; with ``data``, a list payload's siblings sit beside it."""
    envelope = state.knobs.envelope
    if envelope == "bare":
        return JSONResponse(payload)
    if envelope == "data":
        if list_key is None:
            return JSONResponse({"success": True, "data": payload})
        siblings = {key: value for key, value in payload.items() if key != list_key}
        return JSONResponse({"success": True, "data": payload[list_key], **siblings})
    return JSONResponse({"code": 0, "message": "ok", "data": payload})


def fail(
    state: EmulatorState, status: int, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """An error in the configured envelope (HTTP 200 ``{code: -1, message}`` for ``code``)."""
    envelope = state.knobs.envelope
    if envelope == "code":
        return JSONResponse({"code": -1, "message": message}, headers=headers)
    body: dict[str, Any] = {"error": message} if envelope == "bare" else {"success": False, "error": message}
    return JSONResponse(body, status_code=status, headers=headers)


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        return None
    return value if low <= value <= high else None


def _caller(request: Request) -> User | None:
    """The API key's owner, else the session's user, else None (a guest).

    Raises:
        _Refused: A refused API key, as better-auth's API-key plugin answers: 403 for a key shorter than
            64 characters, 401 for an unknown one, both ``{"message":"Invalid API key.",
            "code":"INVALID_API_KEY"}``.
    """
    state = _state(request)
    authorization = request.headers.get("authorization", "")
    if authorization.lower().startswith("bearer "):
        key = authorization[7:].strip()
        user = state.user_by_key(key)
        if user is None:
            body = {"message": "Invalid API key.", "code": "INVALID_API_KEY"}
            raise _Refused(JSONResponse(body, status_code=403 if len(key) < KEY_LENGTH else 401))
        return user
    return _session_user(request)


def _keyed(request: Request) -> bool:
    return request.headers.get("authorization", "").lower().startswith("bearer ")


def _session_user(request: Request) -> User | None:
    """The signed-in user. Looking the session up slides it server-side, as better-auth's session lookup
    does for the site's own routes, but no refreshed cookie is sent (only ``get-session`` sends one)."""
    state = _state(request)
    record = state.session_from_cookies(request.cookies)
    if record is None:
        return None
    state.slide(record)
    return state.user_by_id(record.user_id)


# ---------------------------------------------------------------- search


def _clock_text(seconds: float) -> str:
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{int(hours):02d}:{int(minutes):02d}:{secs:06.3f}"


def _hit_json(style: Style, similarity: float, entry: IndexEntry) -> dict[str, Any]:
    if style == "snake":
        return {
            "anilist_id": entry.anilist_id,
            "mal_id": entry.mal_id,
            **{f"title_{key}": value for key, value in entry.title.items()},
            "is_adult": entry.is_adult,
            "episode": entry.episode,
            "from": _clock_text(entry.start),
            "to": _clock_text(entry.end),
            "at_ms": round(entry.at * 1000),
            "similarity": round(similarity * 100, 2),
            "filename": entry.filename,
        }
    return {
        "anilistId": entry.anilist_id,
        "malId": entry.mal_id,
        "title": dict(entry.title),
        "synonyms": list(entry.synonyms),
        "isAdult": entry.is_adult,
        "episode": entry.episode,
        "from": entry.start,
        "to": entry.end,
        "at": entry.at,
        "similarity": round(similarity, 4),
        "filename": entry.filename,
    }


def _check_quota(state: EmulatorState, user: User | None, address: str, *, keyed: bool = False) -> None:
    """Refuse a search over the guest's day, the user's hour, or the user's credits.

    Raises:
        _Refused: 429 for the guest day and the hour (with ``Retry-After``; through an API key the
            plugin's ``RATE_LIMITED`` with ``details.tryAgainIn`` in milliseconds), 402 for spent credits.
    """
    if user is None:
        if state.guest_left(address) > 0:
            return
        message = (
            f"Daily search limit reached: guests get {state.knobs.guest_daily_limit} searches per day. "
            "Sign in to get free credits every day."
        )
        midnight = int(state.next_midnight() - state.now()) + 1
        raise _Refused(fail(state, 429, message, {"Retry-After": str(midnight)}))
    hour_wait = state.hourly_wait(user)
    if hour_wait is not None and keyed:  # better-auth's per-key limit, set to the site's 100 an hour
        body = {
            "message": "Rate limit exceeded.",
            "code": "RATE_LIMITED",
            "details": {"tryAgainIn": int(hour_wait * 1000)},
        }
        raise _Refused(JSONResponse(body, status_code=429))
    if hour_wait is not None:
        message = f"Too many searches: at most {state.knobs.hourly_limit} per hour"
        raise _Refused(fail(state, 429, message, {"Retry-After": str(int(hour_wait) + 1)}))
    if state.free_left(user) <= 0 and user.paid_credits <= 0:
        message = (
            f"Insufficient credits: today's {state.knobs.free_daily_credits} free credits are used up "
            "and no purchased credits are left"
        )
        raise _Refused(fail(state, 402, message))


async def _form(request: Request) -> tuple[bytes | None, str | None]:
    """The uploaded bytes or the URL, exactly one of them."""
    state = _state(request)
    if int(request.headers.get("content-length") or 0) > state.knobs.max_upload_bytes:
        raise _Refused(PlainTextResponse("Request Entity Too Large", status_code=413))
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise _Refused(fail(state, 400, "Send multipart/form-data with an image file or an image url"))
    try:
        async with request.form() as form:
            image, raw_url = form.get("image"), form.get("url")
            data = await image.read() if isinstance(image, UploadFile) else None
    except MultiPartException as exc:
        raise _Refused(fail(state, 400, f"Invalid form data: {exc.message}")) from exc
    url = raw_url.strip() if isinstance(raw_url, str) and raw_url.strip() else None
    if data is not None and url is not None:
        raise _Refused(fail(state, 400, "Send either an image or a url, not both"))
    if data is None and url is None:
        raise _Refused(fail(state, 400, "An image file or an image url is required"))
    return data, url


async def _descriptor(request: Request, upload: bytes | None, url: str | None) -> tuple[int, ...]:
    """The colour layout descriptor of the upload, or of the image at the URL (``url_images`` knob)."""
    state = _state(request)
    if upload is not None:
        if len(upload) > state.knobs.max_upload_bytes:
            raise _Refused(PlainTextResponse("Request Entity Too Large", status_code=413))
        if not upload.startswith(_IMAGE_MAGIC):
            raise _Refused(fail(state, 400, "Unsupported image type: upload a JPEG or PNG image"))
        data = upload
    else:
        fetched = state.knobs.url_images.get(url or "")
        if fetched is None:
            raise _Refused(fail(state, 400, "Failed to fetch image from url"))
        data = fetched
    try:
        return await run_in_threadpool(describe, data)
    except ValueError as exc:
        raise _Refused(fail(state, 400, "Could not read the image")) from exc


def _answer(state: EmulatorState, user: User | None, address: str, descriptor: tuple[int, ...]) -> Response:
    found = match(descriptor, minimum=state.knobs.min_similarity)
    state.charge(user, address)
    state.searches_served += 1
    state.last_search_client = "guest" if user is None else user.email
    if found and found[0][0] >= state.knobs.public_similarity:
        best_score, best = found[0]
        state.record_search(
            SearchRecord(state.new_search_id(), state.now(), best.anilist_id, dict(best.title), best.episode,
                         best.at, best_score, best.is_adult)
        )  # fmt: skip
    snake = state.knobs.style == "snake"
    payload: dict[str, Any] = {
        "results": [_hit_json(state.knobs.style, score, entry) for score, entry in found],
        "frame_count" if snake else "frameCount": len(INDEX),
    }
    if user is None:
        payload["remaining_searches" if snake else "remainingSearches"] = state.guest_left(address)
    else:
        payload["remaining_credits" if snake else "remainingCredits"] = (
            state.free_left(user) + user.paid_credits
        )
    return ok(state, payload, "results")


async def search(request: Request) -> Response:
    """``POST /api/anime/search``: multipart ``image`` or ``url``; up to 5 candidates.

    Checks in the order a server would: the form (4xx costs nothing), the API key, the quota, the image.
    """
    state = _state(request)
    state.search_requests += 1
    try:
        upload, url = await _form(request)
        user = _caller(request)
        address = auth.client_address(request)
        _check_quota(state, user, address, keyed=_keyed(request))
        descriptor = await _descriptor(request, upload, url)
    except _Refused as refused:
        return refused.response
    return _answer(state, user, address, descriptor)


# ---------------------------------------------------------------- public lists


async def rankings(request: Request) -> Response:
    """``GET /api/anime/rankings?period=&limit=&includeAdult=``: most searched in the period."""
    state = _state(request)
    period = request.query_params.get("period") or "all"
    if period not in PERIODS:
        return fail(state, 400, f"Invalid period: use one of {', '.join(PERIODS)}")
    limit = _int_param(request, "limit", 50, 1, 100)
    if limit is None:
        return fail(state, 400, "limit must be an integer from 1 to 100")
    include_adult = bool(request.query_params.get("includeAdult"))  # coerced like zod: "false" is true
    span = PERIODS[period]
    since = state.now() - span if span is not None else float("-inf")
    counts: dict[int, tuple[int, float, SearchRecord]] = {}
    for record in state.searches:
        if record.created_at < since or (record.is_adult and not include_adult):
            continue
        count, _, _ = counts.get(record.anilist_id, (0, 0.0, record))
        counts[record.anilist_id] = (count + 1, record.created_at, record)
    ordered = sorted(counts.values(), key=lambda row: (-row[0], -row[1]))[:limit]
    entries = [
        {
            "rank": rank,
            "anilistId": record.anilist_id,
            "title": record.title,
            "count": count,
            "isAdult": record.is_adult,
        }
        for rank, (count, _, record) in enumerate(ordered, start=1)
    ]
    return ok(state, {"period": period, "rankings": entries}, "rankings")


def _recent_json(style: Style, record: SearchRecord) -> dict[str, Any]:
    if style == "snake":
        return {
            "id": record.id,
            "created_at": round(record.created_at * 1000),
            "anilist_id": record.anilist_id,
            **{f"title_{key}": value for key, value in record.title.items()},
            "episode": record.episode,
            "time": _clock_text(record.at) if record.at is not None else None,
            "similarity": round(record.similarity * 100, 2),
        }
    return {
        "id": record.id,
        "createdAt": iso(record.created_at),
        "anilistId": record.anilist_id,
        "title": record.title,
        "episode": record.episode,
        "timestamp": record.at,
        "similarity": round(record.similarity, 4),
        "isAdult": record.is_adult,
    }


async def recent_searches(request: Request) -> Response:
    """``GET /api/anime/recent-searches?limit=&offset=``: confirmed public searches, newest first."""
    state = _state(request)
    limit = _int_param(request, "limit", 20, 1, 50)
    offset = _int_param(request, "offset", 0, 0, 1_000_000)
    if limit is None or offset is None:
        return fail(state, 400, "limit must be from 1 to 50 and offset at least 0")
    newest = sorted(state.searches, key=lambda record: record.created_at, reverse=True)
    page = newest[offset : offset + limit]
    payload = {
        "items": [_recent_json(state.knobs.style, record) for record in page],
        "total": len(newest),
        "limit": limit,
        "offset": offset,
        "hasMore": offset + len(page) < len(newest),
    }
    return ok(state, payload, "items")


# ---------------------------------------------------------------- account


async def anime_credits(request: Request) -> Response:
    """``GET /api/user/anime-credits`` (session): free credits left today, purchased credits, reset time."""
    state = _state(request)
    user = _session_user(request)
    if user is None:
        return fail(state, 401, _UNAUTHORIZED)
    free = state.free_left(user)
    payload = {
        "credits": free + user.paid_credits,
        "freeCredits": state.knobs.free_daily_credits,
        "freeCreditsRemaining": free,
        "paidCredits": user.paid_credits,
        "resetsAt": iso(state.next_midnight()),
    }
    return ok(state, payload)


async def api_keys(request: Request) -> Response:  # noqa: PLR0911 - one exit per refusal
    """``GET /api/apikeys?page=&pageSize=`` (masked keys); ``POST /api/apikeys`` ``{title}`` (plaintext)."""
    state = _state(request)
    user = _session_user(request)
    if user is None:
        return fail(state, 401, _UNAUTHORIZED)
    if request.method == "POST":
        try:
            body = await request.json()
        except ValueError:
            return fail(state, 400, "Invalid JSON body")
        title = body.get("title") if isinstance(body, dict) else None
        if not isinstance(title, str) or not title.strip():
            return fail(state, 400, "title is required")
        if not 1 <= len(title.strip()) <= KEY_NAME_MAX:  # better-auth's API-key plugin, passed through
            message = "The name length is either too large or too small."
            return JSONResponse({"message": message, "code": "INVALID_NAME_LENGTH"}, status_code=400)
        record = state.create_key(user, title.strip())
        return ok(
            state,
            {"id": record.id, "title": record.title, "key": record.key, "createdAt": iso(record.created_at)},
        )
    page = _int_param(request, "page", 1, 1, 1_000_000)
    size = _int_param(request, "pageSize", 20, 1, 100)
    if page is None or size is None:
        return fail(state, 400, "page must be at least 1 and pageSize from 1 to 100")
    owned = sorted(
        (key for key in state.api_keys if key.user_id == user.id),
        key=lambda key: key.created_at,
        reverse=True,
    )
    items = [
        {
            "id": key.id,
            "title": key.title,
            "start": key.key[:6],
            "status": "active",
            "createdAt": iso(key.created_at),
            "lastUsedAt": iso(key.last_used_at) if key.last_used_at is not None else None,
        }
        for key in owned[(page - 1) * size : page * size]
    ]
    return ok(state, {"items": items, "total": len(owned), "page": page, "pageSize": size}, "items")


def create_app(**knobs: Any) -> Starlette:
    """The emulator app. Knobs are the fields of :class:`Knobs` (``envelope="code"``, ``clock=...``).

    The accounts that exist (the ``users`` knob, by default ``user@example.com`` with the password
    ``correct horse battery staple``) are ``app.state.demo_accounts`` (email -> password), which
    ``anisearch emulate`` prints at start.

    Raises:
        TypeError: An unknown knob.
        ValueError: A knob with a value outside its choices.
    """
    settings = Knobs(**knobs)
    if settings.envelope not in get_args(Envelope):
        raise ValueError(f"envelope must be one of {get_args(Envelope)}, not {settings.envelope!r}")
    if settings.style not in get_args(Style):
        raise ValueError(f"style must be one of {get_args(Style)}, not {settings.style!r}")
    routes = [
        Route("/api/auth/{rest:path}", auth.dispatch, methods=list(_METHODS)),
        Route("/api/anime/search", search, methods=["POST"]),
        Route("/api/anime/rankings", rankings, methods=["GET"]),
        Route("/api/anime/recent-searches", recent_searches, methods=["GET"]),
        Route("/api/user/anime-credits", anime_credits, methods=["GET"]),
        Route("/api/apikeys", api_keys, methods=["GET", "POST"]),
    ]
    app = Starlette(routes=routes)
    app.state.emulator = EmulatorState(settings)
    app.state.demo_accounts = dict(settings.users)
    return app


class _Fresh:
    """The default of a knob made fresh for every app (``secret``), shown as such in the signature."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __repr__(self) -> str:
        return f"<{self.what}>"


def _knob_signature() -> inspect.Signature:
    """``create_app``'s keywords as :class:`Knobs` declares them, so tools (and ``anisearch emulate -h``)
    can list each knob with its default."""
    parameters = []
    for knob in dataclasses.fields(Knobs):
        default: Any = knob.default
        if knob.name == "secret":
            default = _Fresh("32 random bytes")
        elif callable(knob.default_factory):
            default = knob.default_factory()
        keyword = inspect.Parameter.KEYWORD_ONLY
        parameters.append(inspect.Parameter(knob.name, keyword, default=default, annotation=knob.type))
    return inspect.Signature(parameters, return_annotation="Starlette")


create_app.__signature__ = _knob_signature()  # type: ignore[attr-defined]  # read by inspect.signature

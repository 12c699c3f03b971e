"""trace.moe's wire format, spoken by the gateway: request forms in, item shapes and error bodies out.

Whatever provider answered, a search is answered as ``api.trace.moe`` answers (``research/tracemoe-
contract.md`` §2-§4): JSON with ``application/json; charset=utf-8``, errors as ``{"error": "..."}``,
Express's HTML pages for 404/413/500 and the plain-text 429, hits as trace.moe's result items (``anilist``
an int, or an object with ``anilistInfo``; ``from``/``at``/``to`` and ``duration`` in seconds;
``similarity`` 0..1).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from html import escape
from typing import TYPE_CHECKING, Any

import anyio
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.responses import Response

if TYPE_CHECKING:
    from collections.abc import MutableMapping

    from starlette.requests import Request

    from anisearch._models import Attempt, Hit, SearchResult

__all__ = [
    "JSON_TYPE",
    "BodiesBusy",
    "BodyBudget",
    "BodyTookTheDeadline",
    "SearchInput",
    "anilist_record",
    "error",
    "express_page",
    "json_response",
    "read_input",
    "search_body",
]

JSON_TYPE = "application/json; charset=utf-8"
HTML_TYPE = "text/html; charset=utf-8"
TEXT_TYPE = "text/plain; charset=utf-8"
_DIGITS = re.compile(r"[0-9]+")  # ASCII digits only, as JavaScript's \d: "²" or "١١٨٨٧" is no number
_ID_DIGITS = 10
_MAX_ANILIST_ID = 2**31 - 1
NO_FILES: dict[str, Any] = {"frameCount": 0, "error": "", "result": []}
"""trace.moe's answer for an ``anilistID`` with no indexed files (contract §2.3), without quota members: for
an ID no anime has (0, or past 2**31-1) the gateway gives it once the caller is admitted and an uploaded
image reads (a URL is not fetched), asking no provider, and counts it as trace.moe does (a successful
search)."""


def _decimal(text: str) -> int | None:
    """``text`` as a whole number written in ASCII digits (at most 18 of them), else None."""
    return int(text) if len(text) <= 18 and _DIGITS.fullmatch(text) else None  # noqa: PLR2004


_RAW_TYPES = ("image/", "video/", "application/octet-stream", "application/x-www-form-urlencoded")
MAX_ITEMS = 10
"""trace.moe answers at most 10 items."""


def _js(value: Any) -> Any:
    """Numbers as JavaScript writes them: a whole float is an integer (``"from":611``)."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _js(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_js(item) for item in value]
    return value


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON answer as trace.moe writes it (compact, UTF-8)."""
    text = json.dumps(_js(body), ensure_ascii=False, separators=(",", ":")).encode()
    return Response(text, status, headers=headers, media_type=JSON_TYPE)


def error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """``{"error": message}`` with ``status``."""
    return json_response({"error": message}, status, headers)


def express_page(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """Express's HTML error page (404 ``Cannot GET /x``, 413 ``Payload Too Large``, 500)."""
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>Error</title>\n</head>\n'
        f"<body>\n<pre>{escape(message, quote=False)}</pre>\n</body>\n</html>\n"
    )
    return Response(page, status, headers=headers, media_type=HTML_TYPE)


def refused(kind: str, quota: int, used: int) -> Response:
    """trace.moe's 402 for a caller's own allowance: its quota body, or the concurrency one."""
    if kind == "concurrency":
        return error(402, "Concurrency limit exceeded")
    message = f"Search quota depleted (quota per 24 hours: {quota}, used: {used})"
    return json_response({"quota": quota, "quotaUsed": used, "error": message}, 402)


def too_many_requests(retry_after: int) -> Response:
    """trace.moe's 429: plain text with ``Retry-After`` (seconds)."""
    return Response(
        "Too many requests, please try again later.",
        429,
        headers={"Retry-After": str(max(retry_after, 1))},
        media_type=HTML_TYPE,
    )


@dataclass(frozen=True, slots=True)
class SearchInput:
    """What a ``/search`` request asks: the image (bytes or a URL) and the options."""

    data: bytes | None
    url: str | None
    anilist_id: int | None
    cut_borders: bool
    anilist_info: bool
    no_files: bool = False
    """``anilistID`` names an anime no AniList ID can (0, or past 2**31-1): answered :data:`NO_FILES`."""


class BodiesBusy(Exception):  # noqa: N818 - a condition the app answers, as Starlette's HTTPException
    """The worker holds as many bytes of request bodies as :class:`BodyBudget` allows."""


class BodyTookTheDeadline(Exception):  # noqa: N818 - a condition the app answers, as BodiesBusy
    """A request's body arrived with too little of the search's deadline left for any provider to answer."""


class BodyBudget:
    """Bytes of request bodies one worker holds at once, across all its requests: each request's body is
    counted as its bytes arrive (never what a ``Content-Length`` only announces) until its response is
    sent, so connections sending bodies at once cannot make it hold more than ``limit`` bytes of them,
    whoever sends them (a closed gateway reads the status page's form before it knows the token inside).

    The request ``take`` cannot count raises :class:`BodiesBusy`, which the app answers as trace.moe
    answers a full search queue (503; its clients retry after a short wait). A request alone is never
    refused, so a ``limit`` below the largest body accepted still lets one upload in at a time.
    """

    SCOPE_KEY = "anisearch.body_bytes"
    """Where a request's scope keeps the bytes it counts."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def take(self, scope: MutableMapping[str, Any], size: int) -> None:
        """Count ``size`` more bytes of the request of ``scope``; raises BodiesBusy when over ``limit``."""
        if size and self.held + size > self.limit and self.held > scope.get(self.SCOPE_KEY, 0):
            raise BodiesBusy
        self.held += size
        scope[self.SCOPE_KEY] = scope.get(self.SCOPE_KEY, 0) + size

    def release(self, scope: MutableMapping[str, Any]) -> None:
        """Stop counting the request of ``scope`` (its response is sent)."""
        self.held -= scope.pop(self.SCOPE_KEY, 0)


BUDGET_KEY = "anisearch.body_budget"
"""Where a request's scope names the :class:`BodyBudget` of its worker (none outside the gateway's app)."""


async def read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None when it is over ``limit`` bytes (announced or streamed).

    Raises:
        BodiesBusy: The worker's :class:`BodyBudget` cannot count this body now.
        starlette.requests.ClientDisconnect: The caller went away before sending all of it.
    """
    declared = _decimal(request.headers.get("content-length", ""))
    if declared is not None and declared > limit:
        return None
    budget: BodyBudget | None = request.scope.get(BUDGET_KEY)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        if budget is not None:  # as the bytes arrive: an announcement alone holds nothing
            budget.take(request.scope, len(chunk))
        chunks.append(chunk)
    return b"".join(chunks)


async def parse_form(request: Request, raw: bytes, *, max_files: int, max_fields: int) -> FormData | str:
    """The form in ``raw``, the body already read (and bounded); or why it does not parse (too many parts,
    a part over 1 MiB that is not a file, no boundary, garbage)."""
    request._body = raw  # noqa: SLF001 - Starlette parses the form from the body already read
    try:
        return await request.form(max_files=max_files, max_fields=max_fields)
    except HTTPException as exc:  # what Starlette makes of a MultiPartException inside an app
        return str(exc.detail)
    except (MultiPartException, ValueError, KeyError, AssertionError) as exc:
        return str(exc) or type(exc).__name__
    finally:
        request._body = b""  # noqa: SLF001 - parsed (or not): the request holds the body no longer


async def _multipart_file(request: Request, limit: int) -> bytes | Response | None:
    """The first file part of a multipart body (multer's rules: one file, ``limit`` bytes; else 500)."""
    raw = await read_body(request, limit + 64 * 1024)
    if raw is None:
        return express_page(500, "Internal Server Error")
    form = await parse_form(request, raw, max_files=8, max_fields=64)
    del raw  # the file is read out of the form: the body is not held beside it for the search
    if isinstance(form, str):
        return express_page(500, "Internal Server Error")
    files = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
    data = await files[0].read() if len(files) == 1 else None
    await form.close()
    if len(files) > 1 or (data is not None and len(data) > limit):
        return express_page(500, "Internal Server Error")
    return data


async def _json_body(request: Request) -> bytes | Response | None:
    """A JSON body (Express's 100 kB limit): a vector search is refused, anything else is image bytes."""
    raw = await read_body(request, 100 * 1024)
    if raw is None:
        return express_page(413, "Payload Too Large")
    if not raw:
        return None
    try:
        document = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return express_page(400, "Bad Request")
    if isinstance(document, dict) and document.get("vector"):
        return error(400, "Invalid vector format")  # vector search needs trace.moe itself
    return raw


async def read_input(request: Request, limit: int) -> SearchInput | Response:
    """Read a ``/search`` request as trace.moe does (§2.1): ``?url=``, the first uploaded file, the raw
    body; else 405. Bodies over ``limit`` bytes get trace.moe's 413 (raw) or 500 (multipart) page."""
    query = request.query_params
    ids = query.getlist("anilistID")
    # trace.moe filters by it when it matches ^\d+$ (ASCII digits), else ignores it; Number() drops the zeros
    single = ids[0] if len(ids) == 1 else ""
    wanted = single.lstrip("0") if _DIGITS.fullmatch(single) else None
    anilist_id = int(wanted) if wanted and len(wanted) <= _ID_DIGITS else None
    no_files = wanted is not None and not 0 < (anilist_id or 0) <= _MAX_ANILIST_ID  # 0, or past AniList's IDs
    options = (anilist_id if not no_files else None, "cutBorders" in query, "anilistInfo" in query, no_files)
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    url = query.get("url", "")
    data: bytes | Response | None = None
    if media == "multipart/form-data":
        data = await _multipart_file(request, limit)
    elif media == "application/json" or media.endswith("+json"):
        data = await _json_body(request)
    elif media.startswith(_RAW_TYPES):
        raw = await read_body(request, limit)
        data = express_page(413, "Payload Too Large") if raw is None else (raw or None)
    if isinstance(data, Response):
        return data
    if url:
        return SearchInput(None, url, *options)
    if data is None:
        return error(405, "Method Not Allowed")
    if not data:
        return error(400, "Failed to process file")
    return SearchInput(data, None, *options)


def _seconds(value: float | None, fallback: float | None = None) -> float:
    chosen = value if value is not None else fallback
    return round(chosen, 4) if chosen is not None else 0


def _duration(hit: Hit) -> float:
    """trace.moe's ``duration`` (a number of seconds, always): the episode file's length when the provider
    gave it, else AniList's length of an episode, else the end of the scene (it lasts at least that)."""
    if hit.episode_duration_seconds is not None:
        return round(hit.episode_duration_seconds, 4)
    end = float(_seconds(hit.end_seconds, hit.at_seconds))
    # AniList's length is an average episode's: never shorter than where the scene ends
    return max(float(hit.episode_minutes * 60), end) if hit.episode_minutes else end


def anilist_record(hit: Hit) -> dict[str, Any]:
    """The AniList object of a hit, as trace.moe's ``anilistInfo`` gives it.

    trace.moe's own object is passed on whole; for other providers one is built from the hit's fields.
    """
    raw = hit.raw.get("anilist") if isinstance(hit.raw, dict) else None
    if isinstance(raw, dict) and raw.get("id") is not None:
        return raw
    title = hit.title
    record: dict[str, Any] = {
        "id": hit.anilist_id or 0,
        "idMal": hit.mal_id,
        "title": {
            "native": title.native if title else None,
            "romaji": title.romaji if title else None,
            "english": title.english if title else None,
        },
        "synonyms": list(hit.synonyms),
        "isAdult": hit.is_adult,  # null when unknown (AniList's own type): never "not adult" for unknown
    }
    if title is not None and title.chinese:
        record["title"]["chinese"] = title.chinese
    return record


def _record_known(hit: Hit) -> bool:
    """Whether ``hit`` carries its anime's AniList record: trace.moe's own object, or the facts a lookup
    filled in (the adult flag among them)."""
    raw = hit.raw.get("anilist") if isinstance(hit.raw, dict) else None
    return (isinstance(raw, dict) and raw.get("id") is not None) or hit.is_adult is not None


def item(hit: Hit, *, anilist_info: bool) -> dict[str, Any]:
    """One hit as a trace.moe result item (HEAD's key order). With ``anilist_info``, ``anilist`` is the
    anime's record, or its bare ID when none is known (the title lookup failed), as trace.moe answers an
    ID its own table lacks (contract §3.1): never a record that would call an unknown anime not adult."""
    known = anilist_info and _record_known(hit)
    body: dict[str, Any] = {
        "anilist": anilist_record(hit) if known else (hit.anilist_id or 0),
        "filename": hit.filename or "",
        "episode": hit.episode,
        "episode_start": hit.episode_start,
        "episode_end": hit.episode_end,
        "from": _seconds(hit.start_seconds, hit.at_seconds),
        "at": _seconds(hit.at_seconds, hit.start_seconds),
        "to": _seconds(hit.end_seconds, hit.at_seconds),
        "duration": _duration(hit),
        "similarity": round(hit.similarity, 4),
        "video": str(hit.video_url) if hit.video_url else "",
        "image": str(hit.image_url) if hit.image_url else "",
    }
    return body


def search_body(result: SearchResult, *, anilist_info: bool, quota: int, quota_used: int) -> dict[str, Any]:
    """A 200 ``/search`` body: the caller's own allowance at the gateway, then the hits."""
    return {
        "quota": quota,
        "quotaUsed": quota_used,
        "frameCount": result.frames_searched or 0,
        "error": "",
        "result": [item(hit, anilist_info=anilist_info) for hit in result.hits[:MAX_ITEMS]],
    }


async def read_json(request: Request, limit: int) -> Any:
    """A JSON request body of at most ``limit`` bytes, or raises ValueError."""
    with anyio.fail_after(30):
        raw = await read_body(request, limit)
    if raw is None:
        raise ValueError("the body is too large")
    return json.loads(raw or b"null")


def header_text(text: str, limit: int = 600) -> str:
    """Printable ASCII for a response header."""
    return "".join(char if 0x20 <= ord(char) < 0x7F else "?" for char in text)[:limit]  # noqa: PLR2004


def attempt_headers(result: SearchResult | None, attempts: list[Attempt]) -> dict[str, str]:
    """``X-Anisearch-Provider`` (who answered), ``X-Anisearch-Cached`` and ``X-Anisearch-Attempts``
    (``provider=outcome[:status]`` per attempt, comma-separated)."""
    parts = []
    for attempt in attempts:
        part = f"{attempt.provider}={attempt.outcome}"
        if attempt.status_code:
            part += f":{attempt.status_code}"
        parts.append(part)
    headers = {"X-Anisearch-Attempts": header_text(",".join(parts))}
    if result is not None:
        headers["X-Anisearch-Provider"] = header_text(result.provider or "")
        headers["X-Anisearch-Cached"] = "true" if result.cached else "false"
    return headers

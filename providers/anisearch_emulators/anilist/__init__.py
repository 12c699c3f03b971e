"""An emulator of AniList's GraphQL API (``https://graphql.anilist.co``) for anisearch's lookups.

``anisearch emulate anilist`` (entry point ``anisearch.emulators``: ``anilist``) serves it on loopback.
It answers the query shape anisearch sends,
``Page(perPage: N) { media(id_in: [...], type: ANIME) { <fields> } }`` (IDs as a ``$variable`` or inline),
with the fields the selection names, over the AniList records of the scenes table every emulator shares
(``data/scenes.json``, ``titles[*].anilist``). An ID it has no record of is left out of the page, as AniList
leaves out unknown IDs.
Everything else gets AniList's own error shapes, status mirrored in ``errors[].status``:

- a body that is not JSON, or no ``query``: 400 ``Syntax Error`` / ``Must provide query string.``;
- a single ``Media(id: N)`` it has no record of: 404 ``Not Found.`` with ``data: {"Media": null}``;
- any other query: 400 ``Cannot query field ...`` (this emulator knows only the lookup shape).

Rate limit as AniList: per client address, ``rate_limit`` requests per fixed 60 s window (90), reported
on every answer in ``X-RateLimit-Limit`` / ``X-RateLimit-Remaining``; over it, 429 ``Too Many
Requests.`` with ``Retry-After`` (seconds) and ``X-RateLimit-Reset`` (epoch seconds). ``degraded`` lowers
the limit to ``degraded_limit`` (30), as AniList does while its API is degraded. ``fail_status`` answers
every request with that error (429 or 500). Tests read ``app.state.emulator`` (:class:`AniListState`).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from anisearch_emulators._scenes import load_table

__all__ = ["DEFAULT_PORT", "AniListState", "create_app", "load_media"]

DEFAULT_PORT = 8003
"""The emulator's own port (``anisearch emulate`` reads it): after the scene searches' 8000-8002."""
WINDOW_SECONDS = 60
_SERVER_ERROR = 500
_PAGE = re.compile(r"\bPage\s*\(\s*perPage\s*:\s*(\d+|\$\w+)\s*\)\s*\{\s*media\s*\(([^)]*)\)\s*\{", re.DOTALL)
_ID_IN = re.compile(r"\bid_in\s*:\s*(\$\w+|\[[\d\s,]*\])")
_SINGLE = re.compile(r"\bMedia\s*\(\s*id\s*:\s*(\d+|\$\w+)")
_FIELDS = (
    "id",
    "idMal",
    "synonyms",
    "isAdult",
    "episodes",
    "duration",
    "format",
    "season",
    "seasonYear",
    "siteUrl",
    "type",
)
_NESTED = {"title": ("romaji", "english", "native"), "coverImage": ("extraLarge", "large", "medium", "color")}


def load_media() -> dict[int, dict[str, Any]]:
    """The AniList ``Media`` records of the shared scenes table (``titles[*].anilist``), by AniList ID; the
    IDs the table has no facts about are left out."""
    return {
        anilist_id: dict(title.anilist) for anilist_id, title in load_table().titles.items() if title.anilist
    }


@dataclass
class AniListState:
    """What the emulator saw, for tests.

    Attributes:
        requests: Every request's client address, body (decoded JSON or None) and status, oldest first.
        windows: Per client address, the current window's start (epoch s) and requests counted in it.
    """

    clock: Callable[[], float] = time.time
    requests: list[dict[str, Any]] = field(default_factory=list)
    windows: dict[str, list[float]] = field(default_factory=dict)

    @property
    def lookups(self) -> list[list[int]]:
        """The AniList IDs of each answered lookup, in order."""
        return [entry["ids"] for entry in self.requests if entry.get("ids") is not None]


def _error(message: str, status: int, headers: Mapping[str, str], data: Any = None) -> JSONResponse:
    body = {"errors": [{"message": message, "status": status, "locations": [{"line": 1, "column": 1}]}]}
    return JSONResponse({"data": data, **body}, status_code=status, headers=dict(headers))


def _variable(token: str, variables: Mapping[str, Any]) -> Any:
    return variables.get(token[1:]) if token.startswith("$") else json.loads(token)


def _selection(query: str, start: int) -> str:
    """The text of the ``{ ... }`` block opened just before ``start``."""
    depth = 1
    for index in range(start, len(query)):
        depth += {"{": 1, "}": -1}.get(query[index], 0)
        if depth == 0:
            return query[start:index]
    return query[start:]


def _project(record: Mapping[str, Any], selection: str) -> dict[str, Any]:
    words = set(re.findall(r"\w+", selection))
    item = {name: record.get(name) for name in _FIELDS if name in words}
    for name, parts in _NESTED.items():
        if name in words:
            value = record.get(name)
            item[name] = (
                None if not isinstance(value, dict) else {p: value.get(p) for p in parts if p in words}
            )
    return item


def _check_knobs(rate_limit: int, degraded_limit: int, fail_status: int, latency: float) -> None:
    if rate_limit < 1 or degraded_limit < 1:
        raise ValueError("rate_limit and degraded_limit must be at least 1")
    if fail_status and not 400 <= fail_status <= 599:  # noqa: PLR2004 - HTTP error statuses
        raise ValueError(f"fail_status must be 0 or an HTTP error status, not {fail_status}")
    if latency < 0:
        raise ValueError("latency must not be negative")


def create_app(
    *,
    rate_limit: int = 90,
    degraded: bool = False,
    degraded_limit: int = 30,
    fail_status: int = 0,
    latency: float = 0.0,
    clock: Callable[[], float] = time.time,
) -> Starlette:
    """Build an AniList emulator.

    Args:
        rate_limit: Requests per client address per 60 s window (AniList documents 90).
        degraded: Serve the degraded limit instead (AniList's API has run degraded at 30 a minute).
        degraded_limit: The limit while ``degraded``.
        fail_status: Answer every request with this error (429: ``Too Many Requests.`` with
            ``Retry-After``; 500: ``Internal Server Error``); 0 answers normally.
        latency: Seconds each answer takes (``anyio.sleep``).
        clock: Epoch seconds; a fake clock moves the rate window in tests.

    Returns:
        The Starlette app; its state is ``app.state.emulator`` (:class:`AniListState`).

    Raises:
        ValueError: A limit below 1, a ``fail_status`` that is not 0 or 400-599, a negative latency.
    """
    _check_knobs(rate_limit, degraded_limit, fail_status, latency)
    media = load_media()
    state = AniListState(clock=clock)
    limit = degraded_limit if degraded else rate_limit

    def rate_headers(address: str) -> tuple[dict[str, str], float | None]:
        now = state.clock()
        window = state.windows.get(address)
        if window is None or now >= window[0] + WINDOW_SECONDS:
            window = state.windows[address] = [now, 0]
        window[1] += 1
        remaining = max(limit - int(window[1]), 0)
        headers = {"X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": str(remaining)}
        if window[1] > limit:
            reset = window[0] + WINDOW_SECONDS
            wait = max(int(reset - now + 0.999), 1)
            headers |= {"Retry-After": str(wait), "X-RateLimit-Reset": str(int(reset))}
            return headers, wait
        return headers, None

    async def graphql(request: Request) -> Response:
        address = request.client.host if request.client else "unknown"
        entry: dict[str, Any] = {"address": address, "body": None, "ids": None}
        state.requests.append(entry)
        if latency:
            await anyio.sleep(latency)
        headers, wait = rate_headers(address)
        if wait is not None or fail_status == 429:  # noqa: PLR2004
            headers.setdefault("Retry-After", str(WINDOW_SECONDS))
            headers["X-RateLimit-Remaining"] = "0"
            entry["status"] = 429
            return _error("Too Many Requests.", 429, headers)
        if fail_status:
            entry["status"] = fail_status
            return _error(
                "Internal Server Error" if fail_status >= _SERVER_ERROR else "Bad Request",
                fail_status,
                headers,
            )
        response = _answer(await request.body(), entry, media, headers)
        entry["status"] = response.status_code
        return response

    app = Starlette(routes=[Route("/", graphql, methods=["POST"])])
    app.state.emulator = state
    return app


def _answer(
    raw: bytes, entry: dict[str, Any], media: Mapping[int, dict[str, Any]], headers: Mapping[str, str]
) -> Response:
    try:
        body = json.loads(raw)
    except ValueError:
        return _error("Syntax Error: Unexpected <EOF>", 400, headers)
    entry["body"] = body
    query = body.get("query") if isinstance(body, dict) else None
    if not isinstance(query, str) or not query.strip():
        return _error("Must provide query string.", 400, headers)
    variables = body.get("variables") if isinstance(body.get("variables"), dict) else {}
    page = _PAGE.search(query)
    if page is not None:
        return _page_answer(query, page, variables, entry, media, headers)
    single = _SINGLE.search(query)
    if single is not None:
        return _single_answer(query, single, variables, media, headers)
    field_name = next(iter(re.findall(r"\{\s*(\w+)", query)), "query")
    return _error(f'Cannot query field "{field_name}" on type "Query".', 400, headers)


def _page_answer(  # noqa: PLR0917 - the pieces _answer has already taken apart
    query: str,
    page: re.Match[str],
    variables: Mapping[str, Any],
    entry: dict[str, Any],
    media: Mapping[int, dict[str, Any]],
    headers: Mapping[str, str],
) -> Response:
    id_in = _ID_IN.search(page.group(2))
    try:
        per_page = int(_variable(page.group(1), variables))
        ids = _variable(id_in.group(1), variables) if id_in else None
    except (ValueError, TypeError):
        return _error('Variable "$ids" got invalid value.', 400, headers)
    if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        return _error('Variable "$ids" got invalid value.', 400, headers)
    entry["ids"] = list(ids)
    selection = _selection(query, page.end())
    wanted = [media[i] for i in dict.fromkeys(ids) if i in media and media[i].get("type") == "ANIME"]
    # perPage caps the page (AniList allows 50 at most); anisearch asks for at most 50 IDs a request.
    items = [_project(record, selection) for record in wanted[: max(min(per_page, 50), 0)]]
    return JSONResponse({"data": {"Page": {"media": items}}}, headers=dict(headers))


def _single_answer(
    query: str,
    single: re.Match[str],
    variables: Mapping[str, Any],
    media: Mapping[int, dict[str, Any]],
    headers: Mapping[str, str],
) -> Response:
    try:
        wanted_id = _variable(single.group(1), variables)
    except ValueError:
        wanted_id = None
    if wanted_id in media:
        selection = _selection(query, query.index("{", single.end()) + 1)
        return JSONResponse({"data": {"Media": _project(media[wanted_id], selection)}}, headers=dict(headers))
    return _error("Not Found.", 404, headers, data={"Media": None})

"""The status page at ``/``: server-rendered HTML (no front-end build, no script), with each provider's
windows and cooldowns, the recent attempts, and a form to search a dropped screenshot."""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING, Any

import anyio
from starlette.datastructures import FormData, UploadFile
from starlette.responses import HTMLResponse, Response

from anisearch._exceptions import AnisearchError
from anisearch._server._callers import Denied, Refused, identify
from anisearch._server._tracemoe import BodyTookTheDeadline, parse_form, read_body
from anisearch._version import __version__

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from starlette.requests import Request

    from anisearch._models import Quota, SearchResult
    from anisearch._server._app import Gateway

__all__ = ["page_endpoint"]

_STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:60rem;padding:0 1rem;color:#222}
table{border-collapse:collapse;width:100%;margin:.5rem 0 1.5rem}
th,td{border-bottom:1px solid #ddd;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#f4f4f4} .muted{color:#777} .ok{color:#176b2c} .bad{color:#a1261b}
form{border:2px dashed #aaa;border-radius:8px;padding:1rem;margin:1rem 0}
input[type=file]{display:block;margin:.5rem 0;padding:2rem;border:1px solid #ccc;width:95%}
"""


def _e(value: object) -> str:
    return escape("" if value is None else str(value))


def _table(headers: list[str], rows: list[list[str]], table_id: str) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    if not rows:
        body = f'<tr><td colspan="{len(headers)}" class="muted">none yet</td></tr>'
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _left(q: Quota) -> str:
    """What is left of a window: "3 of 100 left", "0 left" (no limit known), "12 used"."""
    if q.limit is not None and q.remaining is not None:
        return f"{q.remaining} of {q.limit} left"
    if q.remaining is not None:
        return f"{q.remaining} left"
    return f"{q.used} used" if q.used is not None else "unknown"


async def _providers(gateway: Gateway) -> str:
    rows = []
    try:
        infos = await gateway.client.providers()
        quotas = await gateway.client.quota()
    except AnisearchError as exc:
        return f'<p class="bad">cannot read the providers: {_e(exc)}</p>'
    for info in infos:
        mine = [q for q in quotas if q.provider == info.name]
        windows = "<br>".join(
            f"{_e(q.window)}: {_e(_left(q))}"
            + (f", resets {_e(q.resets_at.isoformat(timespec='seconds'))}" if q.resets_at else "")
            for q in mine
            if q.window
        )
        cooldowns = "<br>".join(
            f"until {_e(q.cooldown_until.isoformat(timespec='seconds'))}" for q in mine if q.cooldown_until
        )
        rows.append(
            [
                f"<strong>{_e(info.name)}</strong>",
                "yes" if info.enabled else '<span class="muted">no</span>',
                _e(info.base_url),
                windows or '<span class="muted">nothing counted yet</span>',
                cooldowns or '<span class="muted">none</span>',
            ]
        )
    return _table(["provider", "in order", "base URL", "windows", "cooldown"], rows, "providers")


def _attempts(gateway: Gateway) -> str:
    rows = [
        [
            _e(a.provider),
            f'<span class="{"ok" if a.outcome in {"ok", "cached"} else "bad"}">{_e(a.outcome)}</span>',
            _e(a.status_code),
            _e(a.reason),
            _e(f"{a.elapsed_seconds:.2f} s" if a.elapsed_seconds is not None else ""),
        ]
        for a in reversed(gateway.recent[-20:])
    ]
    return _table(["provider", "outcome", "status", "reason", "time"], rows, "attempts")


def _result(result: SearchResult) -> str:
    rows = [
        [
            _e(hit.title.preferred() if hit.title else ""),
            _e(hit.anilist_id),
            _e(hit.episode),
            _e(f"{hit.at_seconds:.1f} s" if hit.at_seconds is not None else ""),
            _e(f"{hit.similarity:.1%}"),
        ]
        for hit in result.hits[:10]
    ]
    answered = (
        f"<p>Answered by <strong>{_e(result.provider)}</strong>{' (cached)' if result.cached else ''}.</p>"
    )
    return answered + _table(["title", "AniList", "episode", "at", "similarity"], rows, "hits")


async def _form(gateway: Gateway, request: Request) -> FormData | str:
    """The form of the screenshot dropped on the page, or the outcome to show when it cannot be read. Its
    body is bounded (``max_body_bytes``, the deadline) as every search's is: a closed gateway learns the
    caller's token only from it."""
    limit = gateway.server.max_body_bytes
    try:
        with anyio.fail_after(gateway.server.deadline):
            raw = await read_body(request, limit + 64 * 1024)
    except TimeoutError:
        return '<p class="bad" id="outcome">The upload did not arrive in time.</p>'
    if raw is None:
        return f'<p class="bad" id="outcome">The upload is larger than {limit} bytes.</p>'
    try:
        request.state.deadline = gateway.deadline_left(request)  # what the search may take, counted now
    except BodyTookTheDeadline:  # too little of the deadline is left for a search
        return '<p class="bad" id="outcome">The upload did not arrive in time.</p>'
    form = await parse_form(request, raw, max_files=1, max_fields=8)
    if isinstance(form, str):
        return f'<p class="bad" id="outcome">The form could not be read: {_e(form)}</p>'
    return form


async def _search(gateway: Gateway, request: Request) -> str:
    form = await _form(gateway, request)
    if isinstance(form, str):
        return form
    token, upload = form.get("token"), form.get("image")
    headers = dict(request.headers)
    headers.pop("x-trace-key", None)
    if isinstance(token, str) and token.strip():
        headers["x-trace-key"] = token.strip()
    data = await upload.read() if isinstance(upload, UploadFile) else b""
    await form.close()
    peer = request.client.host if request.client else None
    caller = identify(headers, peer, gateway.server, native=False)
    if isinstance(caller, Denied):
        return f'<p class="bad" id="outcome">{_e(caller.message)}</p>'
    if not data:
        return '<p class="bad" id="outcome">Choose or drop a screenshot first.</p>'
    deadline: float = request.state.deadline

    async def call(image: Any) -> SearchResult:
        return await gateway.client.search(image, anilist_info=True, deadline=deadline)

    outcome, _ = await gateway.run_search(caller, data, call)
    if isinstance(outcome, Refused):
        return (
            f'<p class="bad" id="outcome">Refused: this client\'s {_e(outcome.kind)} allowance is spent.</p>'
        )
    if isinstance(outcome, AnisearchError):
        return f'<p class="bad" id="outcome">No answer: {_e(outcome)}</p>'
    return f'<div id="outcome">{_result(outcome)}</div>'


def page_endpoint(gateway: Gateway) -> Callable[[Request], Awaitable[Response]]:
    """``GET /`` (the page) and ``POST /`` (the page with the dropped screenshot's answer)."""

    async def page(request: Request) -> Response:
        outcome = ""
        if request.method == "POST":
            outcome = await _search(gateway, request)
        token_field = (
            ""
            if gateway.server.open
            else '<label>Client token <input type="password" name="token" autocomplete="off"></label>'
        )
        html = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>anisearch gateway</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_STYLE}</style></head>
<body>
<h1>anisearch gateway</h1>
<p class="muted">anisearch {_e(__version__)} &middot; trace.moe-compatible <code>/search</code> and
<code>/me</code> &middot; native <code>/v1</code> (<a href="/openapi.json">OpenAPI</a>) &middot;
<a href="/metrics">metrics</a></p>
<h2>Search a screenshot</h2>
<form method="post" action="/" enctype="multipart/form-data" id="search">
{token_field}
<input type="file" name="image" accept="image/*,video/*" aria-label="Drop a screenshot here">
<button type="submit">Search</button>
</form>
{outcome}
<h2>Providers</h2>
{await _providers(gateway)}
<h2>Recent attempts</h2>
{_attempts(gateway)}
</body></html>
"""
        return HTMLResponse(html)

    return page

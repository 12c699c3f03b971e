"""better-auth's routes as the whatanimeisthis emulator serves them (contract §2).

``POST /api/auth/sign-in/email``, ``GET /api/auth/get-session`` and ``POST /api/auth/sign-out``, with
better-auth's defaults: JSON (or, for sign-in, form) bodies only; ``{code, message}`` error bodies; the
origin check on cookie-bearing POSTs; 3 sign-ins per 10 s per address with the code-less 429 and
``X-Retry-After``; signed, percent-encoded session cookies; ``null`` for no session.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from starlette.responses import JSONResponse, Response

if TYPE_CHECKING:
    from starlette.requests import Request

    from ._emulator_state import EmulatorState, SessionRecord, User

__all__ = ["client_address", "get_session", "origin_problem", "sign_in", "sign_out"]

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_NO_STORE = {"Cache-Control": "no-store"}


def _state(request: Request) -> EmulatorState:
    state: EmulatorState = request.app.state.emulator
    return state


def error(status: int, code: str | None, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """better-auth's error body: ``{code, message}`` (no ``code`` for the rate limiter)."""
    body = {"code": code, "message": message} if code else {"message": message}
    return JSONResponse(body, status_code=status, headers=headers)


def client_address(request: Request) -> str:
    """The caller's address: the socket peer, or the first ``X-Forwarded-For`` entry when trusted."""
    if _state(request).knobs.trust_forwarded:
        forwarded = request.headers.get("x-forwarded-for", "").split(",")[0].strip()
        if forwarded:
            return forwarded
    return request.client.host if request.client else "unknown"


def own_origin(request: Request) -> str:
    """The origin the emulator is served at (the ``base_url`` knob, else the request's scheme and host)."""
    base = _state(request).knobs.base_url
    if base:
        parts = urlsplit(base)
        return f"{parts.scheme}://{parts.netloc}"
    return f"{request.url.scheme}://{request.url.netloc}"


def origin_problem(request: Request) -> JSONResponse | None:
    """better-auth's check: a POST carrying cookies needs a trusted ``Origin`` (or ``Referer``)."""
    if request.method != "POST" or "cookie" not in request.headers:
        return None
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin or origin == "null":
        return error(403, "MISSING_OR_NULL_ORIGIN", "Missing or null Origin")
    parts = urlsplit(origin)
    trusted = {own_origin(request), *(value.rstrip("/") for value in _state(request).knobs.trusted_origins)}
    if f"{parts.scheme}://{parts.netloc}" not in trusted:
        return error(403, "INVALID_ORIGIN", "Invalid origin")
    return None


async def _body(request: Request, *, form_ok: bool) -> dict[str, Any] | JSONResponse:
    raw = await request.body()
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not raw and not content_type:
        return {}
    if content_type == "application/x-www-form-urlencoded" and form_ok:
        return dict(parse_qsl(raw.decode("utf-8", errors="replace")))
    if content_type != "application/json":
        return error(415, "UNSUPPORTED_MEDIA_TYPE", f"Content-Type {content_type or '(none)'} is not allowed")
    try:
        value = json.loads(raw)
    except ValueError:
        return error(400, "BAD_REQUEST", "Invalid JSON in request body")
    if not isinstance(value, dict):
        return error(400, "VALIDATION_ERROR", "[body] Invalid input: expected object")
    return value


def _kind(value: Any) -> str:
    if value is None:
        return "undefined"
    return {bool: "boolean", int: "number", float: "number", list: "array", dict: "object"}.get(
        type(value), "string"
    )


def _session_cookies(state: EmulatorState, record: SessionRecord, *, remember: bool) -> list[str]:
    attributes = "; Path=/; HttpOnly" + ("; Secure" if state.knobs.https else "") + "; SameSite=Lax"
    max_age = f"; Max-Age={int(record.expires_at - state.now())}" if remember else ""
    cookies = [f"{state.cookie_name('session_token')}={state.sign(record.token)}{max_age}{attributes}"]
    if not remember:
        cookies.append(f"{state.cookie_name('dont_remember')}={state.sign('true')}{attributes}")
    return cookies


def _expired_cookies(state: EmulatorState) -> list[str]:
    secure = "; Secure" if state.knobs.https else ""
    return [
        f"{state.cookie_name(suffix)}=; Max-Age=0; Path=/; HttpOnly{secure}; SameSite=Lax"
        for suffix in ("session_token", "session_data", "dont_remember")
    ]


def _with_cookies(response: Response, cookies: list[str]) -> Response:
    for cookie in cookies:
        response.headers.append("set-cookie", cookie)
    return response


def _check_credentials(state: EmulatorState, body: dict[str, Any]) -> User | JSONResponse:
    for name in ("email", "password"):
        if not isinstance(body.get(name), str):
            message = f"[body.{name}] Invalid input: expected string, received {_kind(body.get(name))}"
            return error(400, "VALIDATION_ERROR", message)
    email, password = body["email"].strip().lower(), body["password"]
    if not _EMAIL.fullmatch(email):
        return error(400, "INVALID_EMAIL", "Invalid email")
    user = state.users.get(email)
    if user is None or user.password != password:
        return error(401, "INVALID_EMAIL_OR_PASSWORD", "Invalid email or password")
    return user


async def sign_in(request: Request) -> Response:
    """``POST /api/auth/sign-in/email``."""
    state = _state(request)
    state.sign_in_requests += 1
    wait = state.sign_in_wait(client_address(request))
    if wait is not None:
        return error(429, None, "Too many requests. Please try again later.", {"X-Retry-After": str(wait)})
    problem = origin_problem(request)
    if problem is not None:
        return problem
    body = await _body(request, form_ok=True)
    if isinstance(body, Response):
        return body
    user = _check_credentials(state, body)
    if isinstance(user, Response):
        return user
    remember = body.get("rememberMe", True) not in (False, "false")
    record = state.create_session(
        user, client_address(request), request.headers.get("user-agent", ""), remember=remember
    )
    response = JSONResponse({"redirect": False, "token": record.token, "user": user.public()})
    return _with_cookies(response, _session_cookies(state, record, remember=remember))


async def get_session(request: Request) -> Response:
    """``GET /api/auth/get-session``: ``{session, user}``, or ``null`` (also for an expired session)."""
    state = _state(request)
    state.get_session_requests += 1
    if request.method != "GET":
        return error(
            405, "METHOD_NOT_ALLOWED_DEFER_SESSION_REQUIRED", "POST method requires deferSessionRefresh"
        )
    sent = state.cookie_name("session_token") in request.cookies
    record = state.session_from_cookies(request.cookies)
    user = state.user_by_id(record.user_id) if record is not None else None
    if record is None or user is None:
        response = JSONResponse(None, headers=_NO_STORE)
        return _with_cookies(response, _expired_cookies(state)) if sent else response
    refresh = record.remember and state.now() - record.updated_at > state.knobs.session_update_age
    if refresh:
        record.updated_at = state.now()
        record.expires_at = record.updated_at + state.knobs.session_expires_in
    response = JSONResponse({"session": record.public(), "user": user.public()}, headers=_NO_STORE)
    return _with_cookies(response, _session_cookies(state, record, remember=True)) if refresh else response


async def sign_out(request: Request) -> Response:
    """``POST /api/auth/sign-out``: ``{"success": true}`` and expired cookies, with or without a session."""
    state = _state(request)
    state.sign_out_requests += 1
    problem = origin_problem(request)
    if problem is not None:
        return problem
    body = await _body(request, form_ok=False)
    if isinstance(body, Response):
        return body
    record = state.session_from_cookies(request.cookies)
    if record is not None:
        state.sessions.pop(record.token, None)
    return _with_cookies(JSONResponse({"success": True}), _expired_cookies(state))

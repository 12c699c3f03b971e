"""better-auth's routes as the whatanimeisthis emulator serves them (contract §2, the [RUN] facts).

``POST /api/auth/sign-up/email``, ``POST /api/auth/sign-in/email``, ``GET /api/auth/get-session`` and
``POST /api/auth/sign-out``, with better-auth's defaults as seen running (1.7.25):

- JSON bodies only (sign-in also takes a form); any other type is 415 ``UNSUPPORTED_MEDIA_TYPE``
  ``Content-Type "<as sent>" is not allowed. Allowed types: ...``; a missing body is 400
  ``VALIDATION_ERROR`` ``[body] Invalid input: expected object, received undefined``;
- error bodies ``{"message", "code"}`` in that order (the rate limiter's 429 has no ``code``);
- the Origin check: a POST carrying cookies needs a trusted ``Origin``; sign-in and sign-up without a
  cookie refuse an untrusted ``Origin`` too (``INVALID_ORIGIN``) and a cross-site navigation
  (``CROSS_SITE_NAVIGATION_LOGIN_BLOCKED``); an untrusted ``callbackURL`` is ``INVALID_CALLBACK_URL``;
- 3 sign-ins (or sign-ups) per 10 s per address, failed ones included, then 429 with ``X-Retry-After``;
- signed, percent-encoded session cookies with ``Max-Age=604800``; ``get-session`` answers ``null`` for
  no session, expires the cookies of an expired or revoked one but not of a bad signature, sends
  ``Cache-Control: no-store`` and ``Pragma: no-cache``, and slides a session older than the update age
  (a new ``Set-Cookie``); site routes slide it too but send no cookie;
- an empty 404 (no body, no ``Content-Type``) for unknown auth paths and wrong methods, except POST
  ``get-session`` (405 ``METHOD_NOT_ALLOWED_DEFER_SESSION_REQUIRED``).
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from starlette.responses import JSONResponse, Response

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from starlette.requests import Request

    from ._state import EmulatorState, SessionRecord, User

__all__ = ["client_address", "dispatch", "get_session", "origin_problem", "sign_in", "sign_out", "sign_up"]

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_JSON_ONLY = ("application/json",)
_SIGN_IN_TYPES = ("application/json", "application/x-www-form-urlencoded")
_CALLBACK_FIELDS = ("callbackURL", "redirectTo", "errorCallbackURL", "newUserCallbackURL")


def _state(request: Request) -> EmulatorState:
    state: EmulatorState = request.app.state.emulator
    return state


def error(status: int, code: str | None, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """better-auth's error body: ``{"message", "code"}`` in that order (no ``code`` for the rate limiter)."""
    body = {"message": message, "code": code} if code else {"message": message}
    return JSONResponse(body, status_code=status, headers=headers)


def not_found() -> Response:
    """better-auth's answer to an unknown path or a wrong method: 404, no body, no content type."""
    return Response(status_code=404)


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


def _trusted(request: Request, origin: str) -> bool:
    parts = urlsplit(origin)
    trusted = {own_origin(request), *(value.rstrip("/") for value in _state(request).knobs.trusted_origins)}
    return f"{parts.scheme}://{parts.netloc}" in trusted


def origin_problem(request: Request, *, login: bool = False) -> JSONResponse | None:  # noqa: PLR0911 - one exit per rule
    """better-auth's origin/CSRF check on a POST.

    With cookies: a trusted ``Origin`` (or ``Referer``) is required. Without cookies only a sign-in or a
    sign-up is checked: a cross-site navigation (fetch metadata) is refused, and an ``Origin`` that is
    present must be trusted; a request with no ``Origin`` at all passes (curl-like clients).
    """
    if request.method != "POST":
        return None
    origin = request.headers.get("origin") or request.headers.get("referer")
    if "cookie" in request.headers:
        if not origin or origin == "null":
            return error(403, "MISSING_OR_NULL_ORIGIN", "Missing or null Origin")
        return None if _trusted(request, origin) else error(403, "INVALID_ORIGIN", "Invalid origin")
    if not login:
        return None
    site, mode = request.headers.get("sec-fetch-site"), request.headers.get("sec-fetch-mode")
    if site == "cross-site" and mode == "navigate":
        return error(403, "CROSS_SITE_NAVIGATION_LOGIN_BLOCKED", "Cross-site navigation login blocked")
    if origin and origin != "null" and not _trusted(request, origin):
        return error(403, "INVALID_ORIGIN", "Invalid origin")
    return None


def _callback_problem(request: Request, body: dict[str, Any]) -> JSONResponse | None:
    for name in _CALLBACK_FIELDS:
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            return error(400, "VALIDATION_ERROR", f"Invalid {name}: expected a string")
        relative = value.startswith("/") and not value.startswith("//")
        if not relative and not _trusted(request, value):
            code = "INVALID_CALLBACK_URL" if name == "callbackURL" else f"INVALID_{_snake(name)}"
            return error(403, code, f"Invalid {name}")
    return None


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z])([A-Z])", r"_\1", name).upper()


async def _body(  # noqa: PLR0911 - one exit per better-call refusal
    request: Request, *, allowed: tuple[str, ...] = _JSON_ONLY
) -> dict[str, Any] | JSONResponse:
    raw = await request.body()
    sent = request.headers.get("content-type", "")
    content_type = sent.split(";")[0].strip().lower()
    if not raw and not content_type:
        return error(400, "VALIDATION_ERROR", "[body] Invalid input: expected object, received undefined")
    if content_type not in allowed:
        message = f'Content-Type "{sent}" is not allowed. Allowed types: {", ".join(allowed)}'
        return error(415, "UNSUPPORTED_MEDIA_TYPE", message)
    if content_type == "application/x-www-form-urlencoded":
        return dict(parse_qsl(raw.decode("utf-8", errors="replace")))
    if not raw:
        return error(400, "VALIDATION_ERROR", "[body] Invalid input: expected object, received undefined")
    try:
        value = json.loads(raw)
    except ValueError:
        return error(400, "BAD_REQUEST", "Invalid JSON in request body")
    if not isinstance(value, dict):
        return error(
            400, "VALIDATION_ERROR", f"[body] Invalid input: expected object, received {_kind(value)}"
        )
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


def _strings(body: dict[str, Any], *names: str) -> JSONResponse | None:
    for name in names:
        if not isinstance(body.get(name), str):
            message = f"[body.{name}] Invalid input: expected string, received {_kind(body.get(name))}"
            return error(400, "VALIDATION_ERROR", message)
    return None


def _check_credentials(state: EmulatorState, body: dict[str, Any]) -> User | JSONResponse:
    problem = _strings(body, "email", "password")
    if problem is not None:
        return problem
    email, password = body["email"].strip().lower(), body["password"]
    if not _EMAIL.fullmatch(email):
        return error(400, "INVALID_EMAIL", "Invalid email")
    user = state.users.get(email)
    if user is None or user.password != password:
        return error(401, "INVALID_EMAIL_OR_PASSWORD", "Invalid email or password")
    return user


async def _login_gate(request: Request, allowed: tuple[str, ...]) -> dict[str, Any] | Response:
    """What sign-in and sign-up check first: the rate limit, the origin, the body, the callback URLs."""
    state = _state(request)
    wait = state.sign_in_wait(client_address(request), request.url.path)
    if wait is not None:
        return error(429, None, "Too many requests. Please try again later.", {"X-Retry-After": str(wait)})
    problem = origin_problem(request, login=True)
    if problem is not None:
        return problem
    body = await _body(request, allowed=allowed)
    if isinstance(body, Response):
        return body
    return _callback_problem(request, body) or body


def _signed_in(request: Request, user: User, body: dict[str, Any]) -> Response:
    state = _state(request)
    remember = body.get("rememberMe", True) not in (False, "false")
    record = state.create_session(
        user, client_address(request), request.headers.get("user-agent", ""), remember=remember
    )
    payload: dict[str, Any] = {"redirect": False, "token": record.token, "user": user.public()}
    headers = {}
    if isinstance(body.get("callbackURL"), str):
        payload |= {"redirect": True, "url": body["callbackURL"]}
        headers["Location"] = body["callbackURL"]
    response = JSONResponse(payload, headers=headers)
    return _with_cookies(response, _session_cookies(state, record, remember=remember))


async def sign_in(request: Request) -> Response:
    """``POST /api/auth/sign-in/email``: a new session (an earlier one stays valid)."""
    state = _state(request)
    state.sign_in_requests += 1
    body = await _login_gate(request, _SIGN_IN_TYPES)
    if isinstance(body, Response):
        return body
    user = _check_credentials(state, body)
    if isinstance(user, Response):
        return user
    return _signed_in(request, user, body)


async def sign_up(request: Request) -> Response:
    """``POST /api/auth/sign-up/email`` ``{name, email, password}``: a new account, signed in."""
    state = _state(request)
    body = await _login_gate(request, _JSON_ONLY)
    if isinstance(body, Response):
        return body
    problem = _strings(body, "name", "email", "password")
    if problem is not None:
        return problem
    email = body["email"].strip().lower()
    if not _EMAIL.fullmatch(email):
        return error(400, "INVALID_EMAIL", "Invalid email")
    if not 8 <= len(body["password"]) <= 128:  # noqa: PLR2004 - better-auth's default password length
        code = "PASSWORD_TOO_SHORT" if len(body["password"]) < 8 else "PASSWORD_TOO_LONG"  # noqa: PLR2004
        return error(400, code, "Password too short" if code == "PASSWORD_TOO_SHORT" else "Password too long")
    if email in state.users:
        message = "User already exists. Use another email."
        return error(422, "USER_ALREADY_EXISTS_USE_ANOTHER_EMAIL", message)
    user = state.add_user(email, body["password"], name=body["name"])
    return _signed_in(request, user, body)


async def get_session(request: Request) -> Response:
    """``GET /api/auth/get-session``: ``{session, user}``, or ``null``.

    An expired or revoked session's cookies are expired; a cookie whose signature does not verify gets
    ``null`` with its cookies left alone. A session older than the update age slides (new Set-Cookie).
    """
    state = _state(request)
    state.get_session_requests += 1
    if request.method == "POST":
        return error(
            405, "METHOD_NOT_ALLOWED_DEFER_SESSION_REQUIRED", "POST method requires deferSessionRefresh"
        )
    value = request.cookies.get(state.cookie_name("session_token"))
    signed = value is not None and state.unsign(value) is not None
    record = state.session_from_cookies(request.cookies)
    user = state.user_by_id(record.user_id) if record is not None else None
    if record is None or user is None:
        response = JSONResponse(None, headers=_NO_STORE)
        return _with_cookies(response, _expired_cookies(state)) if signed else response
    refresh = state.slide(record)
    response = JSONResponse({"session": record.public(), "user": user.public()}, headers=_NO_STORE)
    return _with_cookies(response, _session_cookies(state, record, remember=True)) if refresh else response


async def sign_out(request: Request) -> Response:
    """``POST /api/auth/sign-out``: ``{"success": true}`` and expired cookies, with or without a session."""
    state = _state(request)
    state.sign_out_requests += 1
    problem = origin_problem(request)
    if problem is not None:
        return problem
    if await request.body() or request.headers.get("content-type"):
        body = await _body(request)
        if isinstance(body, Response):
            return body
    record = state.session_from_cookies(request.cookies)
    if record is not None:
        state.sessions.pop(record.token, None)
    return _with_cookies(JSONResponse({"success": True}), _expired_cookies(state))


_ROUTES: dict[tuple[str, str], Callable[[Request], Awaitable[Response]]] = {
    ("POST", "sign-in/email"): sign_in,
    ("POST", "sign-up/email"): sign_up,
    ("GET", "get-session"): get_session,
    ("POST", "get-session"): get_session,
    ("POST", "sign-out"): sign_out,
}


async def dispatch(request: Request) -> Response:
    """Every ``/api/auth/*`` request: a known route, or better-auth's empty 404."""
    path = request.url.path.removeprefix("/api/auth/").rstrip("/")
    handler = _ROUTES.get((request.method, path))
    return not_found() if handler is None else await handler(request)

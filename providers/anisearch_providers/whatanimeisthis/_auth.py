"""The session as an :class:`httpx.Auth` flow: cookies and Origin out, Set-Cookie in, sign in again on 401.

One generator serves the sync and the async client. For every request to the site it:

1. sets ``Origin`` (better-auth refuses a cookie-bearing POST without a trusted one);
2. attaches the jar's cookies, unless the request speaks with an API key (``Authorization: Bearer``),
   so the key, not the session, decides whose credits a search spends;
3. replaces a session held during an explicit sign-in only once the new one exists: the sign-in goes
   without the old cookie, and when it fails (a mistyped password, a rate limit, a refused Origin) its
   answer is the caller's and the old session is kept, still signed in. When it succeeds, the old session
   is signed out with its own cookie (better-auth leaves every earlier session alive otherwise; a refusal
   is logged and the old session then runs out on the site by itself), and ``get-session`` confirms the
   new one: that answer, naming the signed-in user, is the sign-in's;
4. keeps a sliding session alive: when the session is due for a check (:meth:`CookieJar.refresh_due`:
   a quarter of its cookie's lifetime, at most a day, without news), asks ``get-session`` first; the
   answer's ``Set-Cookie`` carries the extended cookie and expiry (better-auth re-issues it only
   there), a user confirms the session, and ``null`` means it was revoked or expired: it is forgotten;
5. signs in first when the account's email and password are configured but the jar holds no session
   and the request needs one (a search without a key, credits, API keys, get-session);
6. reads every response's ``Set-Cookie`` into the jar;
7. when such a request comes back "signed out" (401, or an HTTP-200 envelope saying Unauthorized),
   forgets the session, signs in again **once** (only with configured credentials) and retries;
8. after a sign-in refused for now (429: better-auth allows 3 per 10 s per address), signs in no more
   until the wait it named (``X-Retry-After``, else 10 s) is over: a request that would need one raises
   :class:`~anisearch.provider.SignInRateLimitedError` unsent (contract §2.7: sleep, do not retry).

Without credentials a dead session is not replaced: the request goes without it, so a search runs (and
is reported) as a guest's, and an account route answers 401 (:class:`~anisearch.AuthenticationError`).
If a sign-in fails, its response is the one returned, so the caller learns why (wrong password, rate
limited, Origin refused). Credentials the site refused (401) are not tried again by this process.
"""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING, Literal

import httpx

from anisearch.provider import SignInRateLimitedError

from ._cookies import is_session_cookie
from ._errors import PROVIDER, means_signed_out, no_session_to_end, sign_in_wait, uninterpretable
from ._tolerant import read_body

if TYPE_CHECKING:
    from collections.abc import Callable, Generator

    from ._cookies import CookieJar

__all__ = ["AUTH_PREFIX", "GET_SESSION_PATH", "SESSION_PATHS", "SessionAuth", "session_state"]

AUTH_PREFIX = "/api/auth/"
GET_SESSION_PATH = "/api/auth/get-session"
SIGN_IN_PATH = "/api/auth/sign-in/email"
SESSION_PATHS = ("/api/anime/search", "/api/user/anime-credits", "/api/apikeys", GET_SESSION_PATH)
"""Paths that act for the signed-in user (so a missing session is worth a sign-in)."""

Credentials = tuple[str, str]

logger = logging.getLogger("anisearch")


def _uses_api_key(request: httpx.Request) -> bool:
    authorization: str = request.headers.get("authorization", "")
    return authorization.lower().startswith("bearer ")


def session_state(response: httpx.Response) -> Literal["alive", "gone", "unknown"]:
    """What a ``get-session`` answer says: a user (``alive``), ``null`` (``gone``: expired, revoked, or a
    cookie whose signature the site no longer accepts), or anything else (``unknown``: an error)."""
    if response.status_code != httpx.codes.OK:
        return "unknown"
    body = read_body(response)
    if body.is_json and body.json is None:
        return "gone"
    if isinstance(body.json, dict) and isinstance(body.json.get("user"), dict):
        return "alive"
    return "unknown"


class SessionAuth(httpx.Auth):
    """Session cookies for whatanimeisthis.com (better-auth), as an httpx auth flow.

    Args:
        jar: Where the cookies live.
        origin: The ``Origin`` header value (the site's own origin unless configured otherwise).
        host: Cookies are sent to this host only.
        credentials: Returns ``(email, password)`` to sign in with, or None when there are none.
        sign_in_request: Builds the sign-in request for an email and a password.
        refused: Called when the site refuses the credentials (401), so they are not tried again.
        session_request: Builds the ``get-session`` request (to confirm and slide the session).
        sign_out_request: Builds the sign-out request (for the session a new sign-in replaced).
        clock: Seconds since the epoch (the provider's, as its cookie jar's): when a sign-in may be sent
            again after a refused one (step 8).
    """

    requires_request_body = True  # the request may be sent twice (after a sign-in)
    requires_response_body = True  # an HTTP-200 envelope may say "Unauthorized"

    def __init__(
        self,
        jar: CookieJar,
        *,
        origin: str,
        host: str,
        credentials: Callable[[], Credentials | None],
        sign_in_request: Callable[[str, str], httpx.Request],
        refused: Callable[[], None],
        session_request: Callable[[], httpx.Request] | None = None,
        sign_out_request: Callable[[], httpx.Request] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.jar = jar
        self.origin = origin
        self.host = host
        self._credentials = credentials
        self._sign_in_request = sign_in_request
        self._refused = refused
        self._session_request = session_request
        self._sign_out_request = sign_out_request
        self._clock = clock

    def __repr__(self) -> str:
        return f"SessionAuth(origin={self.origin!r}, signed_in={self.jar.has_session()})"

    def _attach(self, request: httpx.Request) -> None:
        raw = [(key, value) for key, value in request.headers.raw if key.lower() != b"cookie"]
        cookie = None if _uses_api_key(request) else self.jar.header()
        if cookie is not None:
            raw.append((b"Cookie", cookie))
        request.headers = httpx.Headers(raw)
        if "origin" not in request.headers:
            request.headers["Origin"] = self.origin

    def _hold(self) -> None:
        """Raises SignInRateLimitedError while the site's wait for a refused sign-in runs (nothing sent)."""
        left = self.jar.sign_ins_held_until() - self._clock()  # the jar's: every process waits it out
        if left > 0:
            raise SignInRateLimitedError(
                f"too many sign-ins: the site refused the last one; not signing in for {math.ceil(left)} s",
                provider=PROVIDER,
                retry_after=left,
            )

    def _sign_in(self, credentials: Credentials) -> httpx.Request:
        """The sign-in request to send before a request that needs a session.

        Raises:
            SignInRateLimitedError: The site refused a sign-in for a wait not over yet (nothing is sent).
        """
        self._hold()
        request = self._sign_in_request(*credentials)
        self._attach(request)
        return request

    def _held_back(self, response: httpx.Response) -> None:
        """After a sign-in answer: no sign-in until its wait is over when it was refused for now (429)."""
        if response.status_code == httpx.codes.TOO_MANY_REQUESTS:
            self.jar.hold_sign_ins(self._clock() + sign_in_wait(response))

    def _signed_in(self, response: httpx.Response, credentials: Credentials) -> bool:
        self.jar.absorb(response)
        self._held_back(response)
        if response.status_code == httpx.codes.UNAUTHORIZED:
            self._refused()
        if not response.is_success:
            return False
        self.jar.remember_email(credentials[0])
        self.jar.mark_checked()
        return True

    def _session(self) -> dict[str, str]:
        return {
            name: value for name, value in self.jar.cookies().items() if is_session_cookie(name) and value
        }

    def _replace(self, sign_in: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Step 3: an explicit sign-in while a session is held; see the module docstring."""
        old = self.jar.header()
        sign_in.headers = httpx.Headers([(k, v) for k, v in sign_in.headers.raw if k.lower() != b"cookie"])
        sign_in.headers["Origin"] = self.origin
        response = yield sign_in
        self._held_back(response)
        if not response.is_success or self._sign_out_request is None or self._session_request is None:
            return  # a refusal says why, and the old session is kept
        before = self._session()
        self.jar.absorb(response)
        if self._session() in ({}, before):  # the old session is kept
            raise uninterpretable(
                response, "the sign-in succeeded but set no session cookie (*.session_token)"
            )
        sign_out = self._sign_out_request()
        sign_out.headers["Origin"] = self.origin
        if old is not None:
            sign_out.headers["Cookie"] = old.decode("latin-1")
        ended = yield sign_out  # never read into the jar: its Set-Cookie deletes the session cookie
        if not (ended.is_success or no_session_to_end(ended.status_code, read_body(ended).text)):
            logger.warning(
                "%s: the previous session could not be signed out (HTTP %s); it stays valid on the site "
                "until it runs out",
                PROVIDER,
                ended.status_code,
            )
        yield from self._confirm()  # its answer, naming the signed-in user, is the sign-in's

    def _confirm(self) -> Generator[httpx.Request, httpx.Response, None]:
        """Step 4: ask ``get-session``; keep the slid cookie, or forget a session that is gone."""
        if self._session_request is None:
            return
        request = self._session_request()
        self._attach(request)
        response = yield request
        self.jar.absorb(response)
        if session_state(response) == "gone":
            self.jar.drop_session()
        else:  # alive; or the site failed to say, and asking again on every request would not help
            self.jar.mark_checked()

    def _explicit_sign_in(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """A sign-in the caller asked for (``anisearch login``): held back like the others while the site's
        wait runs (step 8), and its own 429 starts one; with a session held, step 3."""
        self._hold()
        if self.jar.has_session():
            yield from self._replace(request)
            return
        self._attach(request)
        response = yield request
        self.jar.absorb(response)
        self._held_back(response)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Send ``request`` with the session; see the module docstring for the steps."""
        if request.url.host != self.host:
            yield request
            return
        path = request.url.path
        if path.endswith(SIGN_IN_PATH):
            yield from self._explicit_sign_in(request)
            return
        wants_session = not _uses_api_key(request) and path.endswith(SESSION_PATHS)
        if wants_session and not path.endswith(GET_SESSION_PATH) and self.jar.refresh_due():
            yield from self._confirm()
        signed_in = False
        credentials = self._credentials() if wants_session else None
        if credentials is not None and not self.jar.has_session():
            response = yield self._sign_in(credentials)
            if not self._signed_in(response, credentials):
                return
            signed_in = True
        self._attach(request)
        response = yield request
        self.jar.absorb(response)
        if not wants_session or signed_in or not means_signed_out(response):
            return
        self.jar.drop_session()
        credentials = self._credentials()
        if credentials is None:
            return
        sign_in = yield self._sign_in(credentials)
        if not self._signed_in(sign_in, credentials):
            return
        self._attach(request)
        response = yield request
        self.jar.absorb(response)

"""whatanimeisthis.com as an anisearch provider: search by upload or URL, plus the account features.

Sans-IO: every method builds an :class:`httpx.Request` or parses an :class:`httpx.Response`; the engine
sends them with :meth:`WhatAnimeIsThis.auth` (the session flow). Upstream facts come from
``research/whatanimeisthis-contract.md``: request shapes are documented by the site's api-docs page,
the ``/api/auth/*`` routes are better-auth's, and every response shape is parsed tolerantly (§7).

Three ways in, chosen per request: an API key (``Authorization: Bearer``) for searches when one is
configured; the session cookie (better-auth sign-in) for the account routes and for searches without a
key; nothing (a guest: 5 searches a day per IP).
"""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, SecretStr

from anisearch.provider import (
    BaseProvider,
    Capabilities,
    ConfigurationError,
    Credential,
    Page,
    ProviderAnswer,
    Quota,
    SearchOptions,
    UploadLimits,
    UpstreamResponseError,
    WindowSpec,
    http_base_url,
    redact,
    request_of,
)

from . import _parse, _quota
from ._auth import GET_SESSION_PATH, SessionAuth
from ._cookies import CookieJar, carries_session
from ._errors import PROVIDER, check, error_for, no_session_to_end, uninterpretable
from ._tolerant import pick, read_body, unwrap

if TYPE_CHECKING:
    from collections.abc import Callable

    from anisearch.provider import (
        ApiKey,
        CreatedApiKey,
        Credits,
        ProviderContext,
        RankingEntry,
        RecentSearch,
        SearchQuery,
    )

__all__ = ["DEFAULT_URL", "PERIODS", "WhatAnimeIsThis"]

DEFAULT_URL = "https://whatanimeisthis.com"
PERIODS = ("daily", "weekly", "monthly", "yearly", "all")
"""Ranking periods the site accepts (``GET /api/anime/rankings?period=``)."""
JAR_NAME = "whatanimeisthis-cookies.json"
"""The session cookie jar of the site at its own address; another address (an emulator, a mirror) gets a
jar of its own (:func:`jar_name`)."""

logger = logging.getLogger("anisearch")


def jar_name(site_origin: str) -> str:
    """The jar file's name for the site at ``site_origin``: :data:`JAR_NAME` for whatanimeisthis.com, and
    ``whatanimeisthis-cookies-<scheme>-<host>-<port>.json`` for any other address, so that signing in or
    out at one address never touches the session kept for another."""
    if site_origin == _origin_of(DEFAULT_URL, "url"):
        return JAR_NAME
    parts = urlsplit(site_origin)
    where = re.sub(r"[^A-Za-z0-9.]+", "-", f"{parts.scheme}-{parts.hostname}-{parts.port or ''}").strip("-")
    return f"whatanimeisthis-cookies-{where}.json"  # never a password of the URL in a file name


UPLOAD_FORMATS = frozenset({"image/jpeg", "image/png"})
"""The only image types the api-docs list for uploads; anything else is re-encoded first."""
MAX_UPLOAD_BYTES = 4 * 1024 * 1024
"""Upload cap, bytes: serverless hosts refuse request bodies over about 4.5 MB (§1, a guess)."""


class _Settings(BaseModel):
    """The ``[providers.whatanimeisthis]`` settings (env ``ANISEARCH_WHATANIMEISTHIS_*``); all optional."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    url: str | None = None
    key: SecretStr | None = None
    email: str | None = None
    password: SecretStr | None = None
    origin: str | None = None


def _origin_of(url: str, setting: str) -> str:
    parts = urlsplit(http_base_url(url, f"whatanimeisthis {setting}"))
    return f"{parts.scheme}://{parts.netloc}"


def _positive(value: Any, name: str, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(f"{name} must be an integer of at least {minimum}, not {value!r}")
    return value


class WhatAnimeIsThis(BaseProvider):
    """The whatanimeisthis.com provider (search, rankings, recent searches, credits, API keys, sign-in).

    Args:
        base_url: The site (setting ``url``, ``ANISEARCH_WHATANIMEISTHIS_URL``).
        api_key: An API key for searches (setting ``key``, ``ANISEARCH_WHATANIMEISTHIS_KEY``).
        email: The account to sign in as when needed (setting ``email``).
        password: Its password (setting ``password``); held in memory only, never written anywhere.
        origin: The ``Origin`` header (setting ``origin``); default the base URL's origin.
        state_dir: Where the session cookie jar is kept (``whatanimeisthis-cookies.json``, or one per
            other site address: :func:`jar_name`; mode 0600); a leading ``~`` is the home directory.
            None keeps the session in memory.
        clock: Seconds since the epoch, for cookie expiry and session refresh (``time.time``); for tests.

    Raises:
        ConfigurationError: The URL or the origin is not http(s).
    """

    name: ClassVar[str] = PROVIDER
    default_order: ClassVar[bool] = True
    default_rank: ClassVar[int] = 200
    """Place in the default order, lower first: after trace.moe (the engine's default rank is 100), as the
    fallback when trace.moe's quota is spent."""
    default_url: ClassVar[str] = DEFAULT_URL
    Settings: ClassVar[type[BaseModel]] = _Settings
    capabilities = Capabilities(upload=True, account=True)
    limits = UploadLimits(max_bytes=MAX_UPLOAD_BYTES, formats=UPLOAD_FORMATS)

    def __init__(
        self,
        *,
        base_url: str = DEFAULT_URL,
        api_key: str | None = None,
        email: str | None = None,
        password: str | None = None,
        origin: str | None = None,
        state_dir: Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(base_url, api_key)
        site_origin = _origin_of(self.base_url, "url")
        self.origin = _origin_of(origin, "origin") if origin else site_origin
        self._email = email or None
        self._password = password or None
        self._signed_out = False
        self._pending_email: str | None = None
        jar_path = Path(state_dir).expanduser() / jar_name(site_origin) if state_dir is not None else None
        self.jar = CookieJar(jar_path, site_origin, clock)
        self._auth = SessionAuth(
            self.jar,
            origin=self.origin,
            host=urlsplit(self.base_url).hostname or "",
            credentials=self._credentials,
            sign_in_request=self.sign_in_request,
            refused=self._forget_password,
            session_request=self.session_request,
            sign_out_request=self._sign_out_post,
            clock=clock,
        )

    @classmethod
    def from_context(cls, context: ProviderContext) -> Self:
        """Build from settings: ``url``, ``key``, ``email``, ``password``, ``origin`` (all optional).

        Raises:
            ConfigurationError: An unknown setting (named in the message), a setting that is not a
                string, or a URL that is not http(s).
        """
        return super().from_context(context)

    @classmethod
    def from_settings(cls, settings: Any, context: ProviderContext) -> Self:
        """Build from validated settings, keeping the session jar in ``context.state_dir``.

        Raises:
            ConfigurationError: A URL is not http(s).
        """
        secret = {
            name: getattr(settings, name).get_secret_value() if getattr(settings, name) else None
            for name in ("key", "password")
        }
        return cls(
            base_url=settings.url or DEFAULT_URL,
            api_key=secret["key"] or None,
            email=settings.email or None,
            password=secret["password"] or None,
            origin=settings.origin or None,
            state_dir=context.state_dir,
        )

    def __repr__(self) -> str:
        return f"WhatAnimeIsThis(base_url={redact(self.base_url)!r}, credential={self.credential.scope!r})"

    # ------------------------------------------------------------ who we are

    def _forget_password(self) -> None:
        self._password = None

    def _credentials(self) -> tuple[str, str] | None:
        if self._signed_out or self._email is None or self._password is None:
            return None
        return self._email, self._password

    @property
    def credential(self) -> Credential:
        """``api-key`` when a key is configured, else ``session`` when signed in or able to, else guest."""
        if self.key is not None:
            return Credential("api-key", self.key)
        if self._credentials() is not None or self.jar.has_session():
            return Credential("session", self._email or self.jar.email)
        return Credential("guest")

    def auth(self) -> httpx.Auth:
        """The session flow (cookies, Origin, sign in again once on 401); see ``_auth``."""
        return self._auth

    def windows(self) -> list[WindowSpec]:
        """The day window (a quota) and, signed in, the 100-an-hour rate window; see ``_quota.windows``."""
        return _quota.windows(self.credential.scope)

    def assumed_quotas(self) -> list[Quota]:
        """Guests: 5 a day; signed in (session or key): 10 free credits a day and 100 searches an hour."""
        return _quota.assumed_quotas(self.credential.scope)

    def observe(self, response: httpx.Response) -> list[Quota]:
        """Quota facts in any response (credits, remaining credits, rate-limit headers, 429). Never raises."""
        return _quota.observe(response, self.credential.scope)

    # ------------------------------------------------------------ requests

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Request:
        return self.request(
            method, path, headers={"Origin": self.origin, **kwargs.pop("headers", {})}, **kwargs
        )

    def _json_request(self, path: str, body: dict[str, Any]) -> httpx.Request:
        content = json.dumps(body, separators=(",", ":")).encode()
        return self._request("POST", path, content=content, headers={"Content-Type": "application/json"})

    def _search_headers(self, options: SearchOptions) -> dict[str, str]:
        if options.anilist_id is not None:
            raise ConfigurationError("whatanimeisthis cannot restrict a search to one AniList ID")
        return {"Authorization": f"Bearer {self.key}"} if self.key else {}

    def search_request(self, query: SearchQuery) -> httpx.Request:
        """``POST /api/anime/search``, multipart ``image`` (JPEG/PNG), with the key if configured.

        Raises:
            ConfigurationError: An AniList filter (unsupported), or an image type the site does not take.
        """
        headers = self._search_headers(query.options)
        if query.image.mime_type not in UPLOAD_FORMATS:
            raise ConfigurationError(
                f"whatanimeisthis takes JPEG or PNG uploads, not {query.image.mime_type}"
            )
        filename = "image.png" if query.image.mime_type == "image/png" else "image.jpg"
        files = {"image": (filename, query.image.data, query.image.mime_type)}
        return self._request("POST", "/api/anime/search", files=files, headers=headers)

    def url_search_request(self, url: str, options: SearchOptions | None = None) -> httpx.Request:
        """``POST /api/anime/search``, multipart ``url``: the site fetches the image. Not used by the
        engine, which downloads URLs itself.

        Raises:
            ConfigurationError: Not an http(s) URL, or an AniList filter (unsupported).
        """
        headers = self._search_headers(options or SearchOptions())
        if not url.startswith(("http://", "https://")):
            raise ConfigurationError(f"whatanimeisthis needs an http(s) image URL, not {url!r}")
        return self._request("POST", "/api/anime/search", files={"url": (None, url)}, headers=headers)

    def parse_search(self, response: httpx.Response) -> ProviderAnswer:
        """Up to 5 hits, similarity descending, and the remaining credits when the answer says.

        The quota's ``scope`` is who the site served: ``api-key`` or ``session`` as sent, except that a
        session search answered with a guest's allowance (remaining searches, no credits) is ``guest``;
        the session is then confirmed with the site before the next search (and signed in again, with
        credentials configured, when the site says it is gone). A session the site confirmed alive so is
        not doubted again (its searches answered as a guest's for another reason) until another session is
        signed in.

        Raises:
            ProviderError: The subclass the status and message mean (see ``_errors.ERROR_RULES``).
            UpstreamResponseError: No list of results, or a result without a similarity.
        """
        hits, payload = _parse.parse_hits(response)
        remaining = _parse.remaining_credits(payload.containers)
        quota = None
        if remaining is not None:
            scope = _quota.scope_of(response.request, self.credential.scope)
            if scope == "session" and _parse.guest_answer(payload.containers):
                scope = "guest"  # the session died on the way: the site served a guest's search
                # asked about before the next search, which signs in again if it is gone; a session the
                # site confirmed alive after that is not asked about (nor warned of) again
                if self.jar.doubt():
                    logger.warning(
                        "%s answered a search sent signed in as a guest's (signed out elsewhere?); the "
                        "session is checked before the next search",
                        PROVIDER,
                    )
            quota = Quota(provider=PROVIDER, scope=scope, remaining=remaining, window="day")
        return ProviderAnswer(hits=hits, frames_searched=_parse.frames_searched(payload), quota=quota)

    def quota_request(self) -> httpx.Request | None:
        """The credits endpoint when signed in (or able to), else None (guests have no quota endpoint)."""
        if self._credentials() is None and not self.jar.has_session():
            return None
        return self.credits_request()

    def parse_quota(self, response: httpx.Response) -> list[Quota]:
        """The day window from the credits endpoint.

        Raises:
            AuthenticationError: Not signed in.
            UpstreamResponseError: No remaining-credits number.
        """
        return [_quota.credits_quota(response, _quota.scope_of(response.request, "session"))]

    # ------------------------------------------------------------ account features

    def rankings_request(self, period: str, limit: int, include_adult: bool) -> httpx.Request:
        """``GET /api/anime/rankings?period=&limit=`` (+ ``includeAdult=true`` only when asked).

        Raises:
            ConfigurationError: An unknown period or a limit below 1.
        """
        if period not in PERIODS:
            raise ConfigurationError(f"unknown ranking period {period!r}; use one of {', '.join(PERIODS)}")
        params: dict[str, str | int] = {"period": period, "limit": _positive(limit, "limit")}
        if include_adult:
            params["includeAdult"] = "true"  # omitted when false: a loose server may read any value as true
        return self._request("GET", "/api/anime/rankings", params=params)

    def parse_rankings(self, response: httpx.Response) -> list[RankingEntry]:
        """The most-searched anime, rank order, at most the requested ``limit``.

        Raises:
            ProviderError: The answer is an error.
            UpstreamResponseError: No list of rankings in it.
        """
        return _parse.parse_rankings(response, _parse.query_int(response, "limit"))

    def recent_searches_request(self, limit: int, offset: int) -> httpx.Request:
        """``GET /api/anime/recent-searches?limit=&offset=``.

        Raises:
            ConfigurationError: A limit below 1 or a negative offset.
        """
        params = {"limit": _positive(limit, "limit"), "offset": _positive(offset, "offset", minimum=0)}
        return self._request("GET", "/api/anime/recent-searches", params=params)

    def parse_recent_searches(self, response: httpx.Response) -> Page[RecentSearch]:
        """One page of recent public searches; ``total``/``has_more`` as reported, or inferred (§7.4).

        Raises:
            ProviderError: The answer is an error.
            UpstreamResponseError: No list of searches in it.
        """
        return _parse.parse_recent_searches(response)

    def credits_request(self) -> httpx.Request:
        """``GET /api/user/anime-credits`` (needs the session)."""
        return self._request("GET", "/api/user/anime-credits")

    def parse_credits(self, response: httpx.Response) -> Credits:
        """The account's credits.

        Raises:
            AuthenticationError: Not signed in.
            UpstreamResponseError: No remaining-credits number in the answer.
        """
        return _parse.parse_credits(response)

    def api_keys_request(self, page: int, page_size: int) -> httpx.Request:
        """``GET /api/apikeys?page=&pageSize=`` (1-based page; needs the session).

        Raises:
            ConfigurationError: A page or page size below 1.
        """
        params = {"page": _positive(page, "page"), "pageSize": _positive(page_size, "page_size")}
        return self._request("GET", "/api/apikeys", params=params)

    def parse_api_keys(self, response: httpx.Response) -> Page[ApiKey]:
        """One page of keys, masked.

        Raises:
            AuthenticationError: Not signed in.
            UpstreamResponseError: No list of keys in the answer.
        """
        return _parse.parse_api_keys(response)

    def create_api_key_request(self, title: str) -> httpx.Request:
        """``POST /api/apikeys`` with JSON ``{"title": ...}`` (needs the session; not idempotent).

        Raises:
            ConfigurationError: An empty title.
        """
        if not isinstance(title, str) or not title.strip():
            raise ConfigurationError("an API key needs a non-empty title")
        return self._json_request("/api/apikeys", {"title": title.strip()})

    def parse_created_api_key(self, response: httpx.Response) -> CreatedApiKey:
        """The new key; its plaintext (``.key``, a SecretStr) is shown this one time only.

        Raises:
            AuthenticationError: Not signed in.
            UpstreamResponseError: The answer holds no plaintext key (revoke it on the site).
        """
        return _parse.parse_created_api_key(response)

    # ------------------------------------------------------------ session

    def sign_in_request(self, email: str, password: str) -> httpx.Request:
        """better-auth ``POST /api/auth/sign-in/email`` with JSON ``{email, password}`` (no callbackURL).

        Raises:
            ConfigurationError: An empty email or password.
        """
        if not isinstance(email, str) or "@" not in email.strip():
            raise ConfigurationError("sign in with an email address")
        if not isinstance(password, str) or not password:
            raise ConfigurationError("sign in with a non-empty password")
        self._pending_email = email.strip()
        return self._json_request("/api/auth/sign-in/email", {"email": email.strip(), "password": password})

    def parse_sign_in(self, response: httpx.Response) -> None:
        """Keep the session cookie the sign-in set (and the account's email).

        Raises:
            AuthenticationError: Wrong email or password, unverified email, or the Origin was refused.
            SignInRateLimitedError: Too many sign-ins (3 per 10 s per IP); ``retry_after`` says how long.
            UpstreamResponseError: The site answered 200 but set no session cookie.
        """
        self.jar.absorb(response)
        request = request_of(response)
        if request is not None and request.url.path.endswith(GET_SESSION_PATH) and self.jar.has_session():
            # a sign-in that replaced a session succeeded before this confirmation (see _auth): a failed or
            # empty confirmation does not undo it, and only names the user when it can
            user = pick(read_body(response).json, "user") if response.is_success else None
            email = pick(user, "email")
            self.jar.remember_email(email if isinstance(email, str) else self._pending_email)
            self._signed_out = False
            return
        body = check(response)
        if not self.jar.has_session():
            raise uninterpretable(
                response, "the sign-in succeeded but set no session cookie (*.session_token)"
            )
        email = pick(pick(body.json, "user"), "email")
        self.jar.remember_email(email if isinstance(email, str) else self._pending_email)
        self._signed_out = False

    def sign_out_request(self) -> httpx.Request | None:
        """better-auth ``POST /api/auth/sign-out`` with ``{}``; :meth:`auth` adds the cookie and Origin.

        None when the jar holds no session: there is none to end, so the site is not asked (an outage or
        no network then fails nothing), and configured credentials are not used to sign in first.
        """
        if not self.jar.has_session():
            self.jar.clear()
            self._signed_out = True
            return None
        return self._sign_out_post()

    def _sign_out_post(self) -> httpx.Request:
        return self._json_request("/api/auth/sign-out", {})

    def parse_sign_out(self, response: httpx.Response) -> bool:
        """Delete the local session once the site has accepted the sign-out.

        A 2xx, or an answer saying there was no session any more (401, or better-auth 1.3's 400
        ``FAILED_TO_GET_SESSION``), ends it: the jar is cleared and configured credentials are not used
        again by this instance until :meth:`parse_sign_in`. Any other answer (an untrusted Origin, a
        server error) leaves the session alive on the site, so the jar is kept and the error says so.

        Returns:
            True when a session was sent and the site accepted the sign-out; False when none was sent
            (better-auth 1.4 and later answer that with 200 too) or the site said it was gone.

        Raises:
            ProviderError: The site refused or failed to sign out; the session is still signed in and
                still stored (the message names the jar file).
        """
        self.jar.absorb(response)
        error = error_for(response)
        gone = error is not None and no_session_to_end(error.status_code, response.text)
        if error is None or gone or not carries_session(response.request):  # none sent: none kept there
            self.jar.clear()
            self._signed_out = True
            return error is None and carries_session(response.request)
        where = str(self.jar.path) if self.jar.path is not None else "memory"
        error.message = (
            f"the site did not sign out ({error.message}); the session is still signed in there and is "
            f"kept in {where}: fix the cause and sign out again"
        )
        error.args = (error.message,)
        raise error

    def session_request(self) -> httpx.Request:
        """better-auth ``GET /api/auth/get-session``: who is signed in (refreshes a sliding session)."""
        return self._request("GET", "/api/auth/get-session")

    def parse_session(self, response: httpx.Response) -> dict[str, Any] | None:
        """``{session, user}`` when signed in, None when not (the site answers 200 ``null``).

        Raises:
            ProviderError: The answer is an error.
            UpstreamResponseError: Neither ``null`` nor an object with ``user``.
        """
        self.jar.absorb(response)
        value, _ = unwrap(check(response).json)
        if value is None:
            self.jar.drop_session()
            return None
        if not isinstance(value, dict) or not isinstance(value.get("user"), dict):
            raise UpstreamResponseError(
                "cannot read the session: expected null or {session, user}",
                provider=PROVIDER,
                status_code=response.status_code,
                endpoint="/api/auth/get-session",
            )
        email = value["user"].get("email")
        if isinstance(email, str):
            self.jar.remember_email(email)
        self.jar.mark_checked()
        return value

"""whatanimeisthis.com's contract, fact by fact: the emulator behaves so, and the provider reads it so.

Each test states one fact of ``research/whatanimeisthis-contract.md`` that was seen on better-auth's own
code running (the **[RUN]** tags and the "Verified against running code (2026-11)" section), names its
section in the docstring, and checks it against the emulator over HTTP and through the
``whatanimeisthis`` provider. The site's own routes stay [GUESS]: only what better-auth decides is here.
"""

from __future__ import annotations

import io
import json
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from PIL import Image
from tests.cli_runner import run_in_process

from anisearch import (
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    ImageTooLargeError,
    QuotaExhaustedError,
    RateLimitedError,
)
from anisearch._image import prepare
from anisearch._provider import SearchQuery
from anisearch_emulators.whatanimeisthis import create_app
from anisearch_providers.whatanimeisthis import WhatAnimeIsThis

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from anisearch_emulators.whatanimeisthis import EmulatorState

pytestmark = pytest.mark.anyio

BASE = "http://testserver"
EMAIL, PASSWORD = "ann@example.com", "correct horse battery staple"
T0 = 1_790_000_000.0
JSON = {"content-type": "application/json"}


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def clock() -> Clock:
    return Clock()


class Site:
    """The emulator in-process, and providers that talk to it (each with its own auth flow)."""

    def __init__(self, clock: Clock, state_dir: Path, **knobs: Any) -> None:
        self.clock = clock
        self.state_dir = state_dir
        self.app = create_app(users={EMAIL: PASSWORD}, clock=clock, **knobs)
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(self.app), base_url=BASE)

    @property
    def state(self) -> EmulatorState:
        state: EmulatorState = self.app.state.emulator
        return state

    def provider(self, **options: Any) -> WhatAnimeIsThis:
        return WhatAnimeIsThis(base_url=BASE, state_dir=self.state_dir, clock=self.clock, **options)

    async def send(self, request: httpx.Request, provider: WhatAnimeIsThis | None = None) -> httpx.Response:
        auth = provider.auth() if provider is not None else None
        return await self.http.send(request, auth=auth)

    async def login(self) -> None:
        provider = self.provider()
        provider.parse_sign_in(await self.send(provider.sign_in_request(EMAIL, PASSWORD), provider))

    async def search(self, provider: WhatAnimeIsThis) -> Any:
        query = SearchQuery(image=prepare(_png()))
        return provider.parse_search(await self.send(provider.search_request(query), provider))


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 36), (120, 30, 200)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
async def site(clock: Clock, tmp_path: Path) -> AsyncIterator[Site]:
    made = Site(clock, tmp_path)
    yield made
    await made.http.aclose()


def body_of(response: httpx.Response) -> Any:
    return json.loads(response.content)


# ---------------------------------------------------------------- §2.1 sign-in, §5 errors


async def test_error_bodies_are_message_then_code(site: Site) -> None:
    """§2.1 Errors, §5 (RUN): better-auth's error bodies are ``{"message", "code"}`` in that order; the
    provider classifies a wrong password by its code as :class:`AuthenticationError`."""
    provider = site.provider()
    answer = await site.send(provider.sign_in_request(EMAIL, "wrong password"), provider)
    assert answer.status_code == 401
    assert list(body_of(answer)) == ["message", "code"]
    assert body_of(answer) == {"message": "Invalid email or password", "code": "INVALID_EMAIL_OR_PASSWORD"}
    with pytest.raises(AuthenticationError, match="Invalid email or password"):
        provider.parse_sign_in(answer)


async def test_sign_in_refuses_an_untrusted_origin_even_without_a_cookie(site: Site) -> None:
    """§2.5 (RUN): the Origin check applies to sign-in without any cookie: an untrusted ``Origin`` gets
    403 ``INVALID_ORIGIN``; the provider says to set ``ANISEARCH_WHATANIMEISTHIS_ORIGIN``."""
    provider = site.provider(origin="https://elsewhere.example")
    answer = await site.send(provider.sign_in_request(EMAIL, PASSWORD), provider)
    assert (answer.status_code, body_of(answer)) == (
        403,
        {"message": "Invalid origin", "code": "INVALID_ORIGIN"},
    )
    with pytest.raises(AuthenticationError, match="ANISEARCH_WHATANIMEISTHIS_ORIGIN"):
        provider.parse_sign_in(answer)
    no_origin = await site.http.post("/api/auth/sign-in/email", json={"email": EMAIL, "password": PASSWORD})
    assert no_origin.status_code == 200  # no Origin at all: the permissive path for curl-like clients


async def test_a_cross_site_navigation_sign_in_is_blocked(site: Site) -> None:
    """§2.5 (RUN): ``Sec-Fetch-Site: cross-site`` with ``Sec-Fetch-Mode: navigate`` gets 403
    ``CROSS_SITE_NAVIGATION_LOGIN_BLOCKED``."""
    answer = await site.http.post(
        "/api/auth/sign-in/email",
        json={"email": EMAIL, "password": PASSWORD},
        headers={"sec-fetch-site": "cross-site", "sec-fetch-mode": "navigate", "sec-fetch-dest": "document"},
    )
    assert (answer.status_code, body_of(answer)["code"]) == (403, "CROSS_SITE_NAVIGATION_LOGIN_BLOCKED")
    with pytest.raises(AuthenticationError, match="Origin"):
        site.provider().parse_sign_in(answer)


async def test_an_untrusted_callback_url_is_refused(site: Site) -> None:
    """§2.1 ``callbackURL`` (RUN): an untrusted one gets 403 ``INVALID_CALLBACK_URL``."""
    answer = await site.http.post(
        "/api/auth/sign-in/email",
        json={"email": EMAIL, "password": PASSWORD, "callbackURL": "https://evil.example/next"},
    )
    assert (answer.status_code, body_of(answer)) == (
        403, {"message": "Invalid callbackURL", "code": "INVALID_CALLBACK_URL"},
    )  # fmt: skip


async def test_an_empty_body_and_a_wrong_content_type(site: Site) -> None:
    """§1 Content types (RUN): no body is 400 ``VALIDATION_ERROR`` ``[body] Invalid input: expected
    object, received undefined``; another type is 415 ``Content-Type "text/plain" is not allowed.
    Allowed types: …`` with the type quoted as sent. The provider reads both as bad requests."""
    empty = await site.http.post("/api/auth/sign-in/email")
    message = "[body] Invalid input: expected object, received undefined"
    assert (empty.status_code, body_of(empty)) == (400, {"message": message, "code": "VALIDATION_ERROR"})
    text = await site.http.post(
        "/api/auth/sign-in/email", content=b"hi", headers={"content-type": "text/plain"}
    )
    assert text.status_code == 415
    assert body_of(text)["message"].startswith('Content-Type "text/plain" is not allowed. Allowed types: ')
    assert body_of(text)["code"] == "UNSUPPORTED_MEDIA_TYPE"
    for answer in (empty, text):
        with pytest.raises(BadRequestError):
            site.provider().parse_sign_in(answer)


async def test_unknown_auth_paths_and_wrong_methods_are_empty_404s(site: Site) -> None:
    """§5 404 (RUN): an unknown path or a wrong method under ``/api/auth`` gets an empty 404 with no
    ``Content-Type``; POST ``get-session`` is the exception (405)."""
    for answer in (
        await site.http.get("/api/auth/nope"),
        await site.http.get("/api/auth/sign-in/email"),
        await site.http.delete("/api/auth/sign-out"),
    ):
        assert (answer.status_code, answer.content, answer.headers.get("content-type")) == (404, b"", None)
    posted = await site.http.post("/api/auth/get-session")
    assert (posted.status_code, body_of(posted)["code"]) == (405, "METHOD_NOT_ALLOWED_DEFER_SESSION_REQUIRED")


async def test_the_session_cookie_and_user_as_better_auth_sets_them(site: Site) -> None:
    """§2.1 (RUN): the session cookie has ``Max-Age=604800; Path=/; HttpOnly; SameSite=Lax``; the user
    has a 32-character id and ``emailVerified: false``; the provider keeps the cookie."""
    provider = site.provider()
    answer = await site.send(provider.sign_in_request(EMAIL, PASSWORD), provider)
    (cookie,) = answer.headers.get_list("set-cookie")
    assert cookie.startswith("better-auth.session_token=")
    assert cookie.endswith("; Max-Age=604800; Path=/; HttpOnly; SameSite=Lax")
    user = body_of(answer)["user"]
    assert (len(user["id"]), user["emailVerified"]) == (32, False)
    provider.parse_sign_in(answer)
    assert provider.jar.has_session()


async def test_sign_up_is_mounted(site: Site) -> None:
    """§2.1 (RUN): better-auth mounts ``POST /api/auth/sign-up/email``; it signs the new user in."""
    answer = await site.http.post(
        "/api/auth/sign-up/email", json={"name": "Bo", "email": "bo@example.com", "password": "longenough1"}
    )
    assert answer.status_code == 200
    assert body_of(answer)["user"]["email"] == "bo@example.com"
    assert any("session_token=" in cookie for cookie in answer.headers.get_list("set-cookie"))


async def test_three_sign_ins_per_ten_seconds_then_429_with_x_retry_after(site: Site, clock: Clock) -> None:
    """§2.7 (RUN): sign-in allows 3 per 10 s per address, failed ones included; the 4th gets 429 with
    ``X-Retry-After`` and a code-less body; the provider waits that long (a rate limit, not a quota)."""
    provider = site.provider()
    for password in ("wrong", "wrong", PASSWORD):
        await site.send(provider.sign_in_request(EMAIL, password), provider)
    fourth = await site.send(provider.sign_in_request(EMAIL, PASSWORD), provider)
    assert (fourth.status_code, body_of(fourth)) == (
        429,
        {"message": "Too many requests. Please try again later."},
    )
    wait = int(fourth.headers["x-retry-after"])
    assert 1 <= wait <= 10
    with pytest.raises(RateLimitedError) as caught:
        provider.parse_sign_in(fourth)
    assert caught.value.retry_after == wait
    clock.now += 10.5
    assert (await site.send(provider.sign_in_request(EMAIL, PASSWORD), provider)).status_code == 200


def test_rate_limited_is_a_rate_limit_and_usage_exceeded_a_quota() -> None:
    """§2.6, §5 (RUN for the 429): the API-key plugin's ``RATE_LIMITED`` ("Rate limit exceeded.") is a
    rate limit with ``details.tryAgainIn`` milliseconds, never a quota; ``USAGE_EXCEEDED`` is a quota."""
    provider = WhatAnimeIsThis(base_url=BASE, api_key="k" * 64)
    request = provider.url_search_request("https://img.example/a.jpg")
    limited = httpx.Response(
        429,
        json={"message": "Rate limit exceeded.", "code": "RATE_LIMITED", "details": {"tryAgainIn": 4500}},
        request=request,
    )
    with pytest.raises(RateLimitedError) as caught:
        provider.parse_search(limited)
    assert not isinstance(caught.value, QuotaExhaustedError)
    assert caught.value.retry_after == 4.5
    spent = httpx.Response(
        429,
        json={"message": "API Key has reached its usage limit", "code": "USAGE_EXCEEDED"},
        request=request,
    )
    with pytest.raises(QuotaExhaustedError):
        provider.parse_search(spent)


# ---------------------------------------------------------------- §2.6 API keys, §7.3


async def test_a_key_title_over_32_characters_is_a_name_error_not_an_image_size(site: Site) -> None:
    """§2.6, §5, §7.3 (RUN): a key name over 32 characters is 400 ``INVALID_NAME_LENGTH`` "The name
    length is either too large or too small."; the provider raises a usage error about the title (exit 2
    in the CLI), never an image-size error; 32 characters pass."""
    await site.login()
    provider = site.provider()
    refused = await site.send(provider.create_api_key_request("x" * 40), provider)
    assert (refused.status_code, body_of(refused)) == (
        400, {"message": "The name length is either too large or too small.", "code": "INVALID_NAME_LENGTH"},
    )  # fmt: skip
    with pytest.raises(ConfigurationError, match="title was refused") as caught:
        provider.parse_created_api_key(refused)
    assert not isinstance(caught.value, ImageTooLargeError)
    assert "image" not in str(caught.value)
    created = provider.parse_created_api_key(
        await site.send(provider.create_api_key_request("y" * 32), provider)
    )
    assert created.title == "y" * 32


async def test_keys_are_64_letters_listed_by_their_6_letter_start(site: Site) -> None:
    """§2.6 (RUN): a key is 64 letters, shown once; a list shows only its first 6 characters."""
    await site.login()
    provider = site.provider()
    created = provider.parse_created_api_key(
        await site.send(provider.create_api_key_request("bot"), provider)
    )
    key = created.key.get_secret_value()
    assert (len(key), key.isascii(), key.isalpha()) == (64, True, True)
    listing = await site.send(provider.api_keys_request(1, 20), provider)
    assert body_of(listing)["items"][0]["start"] == key[:6]
    assert key not in listing.text
    (listed,) = provider.parse_api_keys(listing).items
    assert listed.masked_key == f"{key[:6]}…"


# ---------------------------------------------------------------- §2.2-2.4 sessions


async def test_get_session_headers_and_a_bad_signature(site: Site) -> None:
    """§2.2 (RUN): ``get-session`` sends ``Cache-Control: no-store`` and ``Pragma: no-cache``; a cookie
    whose signature does not verify gets ``null`` without expired cookies (the client drops it)."""
    await site.login()
    provider = site.provider()
    alive = await site.send(provider.session_request(), provider)
    assert (alive.headers["cache-control"], alive.headers["pragma"]) == ("no-store", "no-cache")
    forged = await site.http.get(
        "/api/auth/get-session", headers={"cookie": "better-auth.session_token=abc.bad%3D"}
    )
    assert (forged.status_code, forged.text, forged.headers.get_list("set-cookie")) == (200, "null", [])
    assert provider.parse_session(forged) is None
    assert not provider.jar.has_session()


async def test_a_revoked_session_expires_its_cookies(site: Site) -> None:
    """§2.2 (RUN): for a revoked session ``get-session`` answers ``null`` and expires the cookies."""
    await site.login()
    site.state.sessions.clear()
    provider = site.provider()
    answer = await site.send(provider.session_request(), provider)
    assert answer.text == "null"
    assert any("Max-Age=0" in cookie for cookie in answer.headers.get_list("set-cookie"))
    assert provider.parse_session(answer) is None


async def test_a_sliding_session_stays_signed_in_across_its_first_expiry(
    clock: Clock, tmp_path: Path
) -> None:
    """§2.4 (RUN): sessions slide; better-auth re-issues the cookie only from ``get-session``, so a
    client that keeps the first cookie's expiry throws away a session the server extended. With a
    60 s lifetime and a 20 s update age, searches every 25 s for 3 minutes stay session searches
    without stored credentials."""
    site = Site(clock, tmp_path, session_expires_in=60, session_update_age=20)
    await site.login()
    provider = site.provider()  # no email or password: only the stored cookie
    scopes = []
    for _ in range(8):
        clock.now += 25
        answer = await site.search(provider)
        scopes.append(answer.quota.scope)
    await site.http.aclose()
    assert clock.now - T0 == 200  # past the first cookie's expiry (60 s) three times over
    assert scopes == ["session"] * 8
    assert site.state.get_session_requests >= 3
    assert provider.jar.has_session()


async def test_a_revoked_session_is_noticed_and_the_search_is_a_guests(site: Site, clock: Clock) -> None:
    """§2.2, §2.4 (RUN: revocation): a revoked session is noticed at the next check (``get-session``
    ``null``); without credentials the session is forgotten and the search is reported as a guest's;
    with credentials anisearch signs in once more."""
    await site.login()
    site.state.sessions.clear()
    clock.now += 2 * 86_400  # a check is due
    guest = site.provider()
    answer = await site.search(guest)
    assert answer.quota.scope == "guest"
    assert not guest.jar.has_session()
    await site.login()
    site.state.sessions.clear()
    clock.now += 2 * 86_400
    again = site.provider(email=EMAIL, password=PASSWORD)
    assert (await site.search(again)).quota.scope == "session"
    assert len(site.state.sessions) == 1


async def test_login_signs_the_old_session_out_first(site: Site) -> None:
    """§2.1 (RUN): every sign-in creates a new session and leaves earlier ones alive, so a client that
    signs in again signs the old session out first: one session remains."""
    await site.login()
    await site.login()
    assert len(site.state.sessions) == 1
    assert site.state.sign_out_requests == 1


async def test_a_mistyped_password_while_signed_in_keeps_the_session_alive(site: Site) -> None:
    """§2.1: a failed sign-in leaves the session it would have replaced signed in, there and here."""
    await site.login()
    provider = site.provider()
    answer = await site.send(provider.sign_in_request(EMAIL, "wrong"), provider)
    with pytest.raises(AuthenticationError):
        provider.parse_sign_in(answer)
    assert site.state.sign_out_requests == 0
    assert len(site.state.sessions) == 1
    assert (await site.search(site.provider())).quota.scope == "session"


async def test_logout_refused_keeps_the_session_and_says_so(site: Site) -> None:
    """§2.3 (RUN): a sign-out from an untrusted Origin gets 403 and the session stays alive on the
    server, so the provider keeps the local session and reports the refusal; a sign-out the server
    accepts clears it."""
    await site.login()
    refused_by = site.provider(origin="https://elsewhere.example")
    refused_out = refused_by.sign_out_request()  # the session signed in above
    assert refused_out is not None
    answer = await site.send(refused_out, refused_by)
    assert (answer.status_code, body_of(answer)["code"]) == (403, "INVALID_ORIGIN")
    with pytest.raises(AuthenticationError, match="still signed in"):
        refused_by.parse_sign_out(answer)
    assert refused_by.jar.has_session()
    assert len(site.state.sessions) == 1
    provider = site.provider()
    signing_out = provider.sign_out_request()
    assert signing_out is not None
    accepted = await site.send(signing_out, provider)
    assert body_of(accepted) == {"success": True}
    provider.parse_sign_out(accepted)
    assert not provider.jar.has_session()
    assert site.state.sessions == {}


def test_a_coded_error_is_never_read_by_its_message() -> None:
    """§7.3 (RUN): classification is by status and ``code``; "too large" in ``INVALID_NAME_LENGTH``'s
    message does not make it an image-size error, whichever route it comes from."""
    provider = WhatAnimeIsThis(base_url=BASE)
    request = provider.url_search_request("https://img.example/a.jpg")
    answer = httpx.Response(
        400,
        json={"message": "The name length is either too large or too small.", "code": "INVALID_NAME_LENGTH"},
        request=request,
    )
    with pytest.raises(BadRequestError) as caught:
        provider.parse_search(answer)
    assert not isinstance(caught.value, ImageTooLargeError)


@pytest.mark.e2e
def test_keys_create_with_a_40_character_title_prints_the_name_error(
    live_server: Any, tmp_path: Path
) -> None:
    """§2.6, §7.3 (RUN), end to end: ``anisearch keys create`` with a 40-character title against the
    emulator prints the key-name error and exits 2 (a usage error: the title is the caller's argument),
    never mentioning the image size."""
    site = live_server(create_app(users={EMAIL: PASSWORD}))
    env = {"ANISEARCH_WHATANIMEISTHIS_URL": site.url, "ANISEARCH_PROVIDERS": "whatanimeisthis"}
    cli = run_in_process  # the command in process; the upstream on loopback
    login = cli(
        "login",
        env={**env, "ANISEARCH_WHATANIMEISTHIS_EMAIL": EMAIL, "ANISEARCH_WHATANIMEISTHIS_PASSWORD": PASSWORD},
    )
    assert login.returncode == 0, login.stderr
    done = cli("keys", "create", "t" * 40, env=env)
    assert done.returncode == 2, done.stderr
    assert "title was refused" in done.stderr
    assert "The name length is either too large or too small." in done.stderr
    assert "image" not in done.stderr.lower()


async def test_a_refused_api_key_is_the_plugins_invalid_api_key(site: Site) -> None:
    """§2.6, §5 (RUN): an unknown key gets 401 and a key shorter than 64 characters 403, both
    ``{"message":"Invalid API key.","code":"INVALID_API_KEY"}``; the provider says the key was refused."""
    for key, status in (("A" * 64, 401), ("short", 403)):
        provider = site.provider(api_key=key)
        query = SearchQuery(image=prepare(_png()))
        answer = await site.send(provider.search_request(query), provider)
        assert (answer.status_code, body_of(answer)) == (
            status, {"message": "Invalid API key.", "code": "INVALID_API_KEY"},
        )  # fmt: skip
        with pytest.raises(AuthenticationError, match="API key was refused"):
            provider.parse_search(answer)


async def test_a_keys_rate_limit_is_rate_limited_with_try_again_in(clock: Clock, tmp_path: Path) -> None:
    """§2.6 (RUN: the per-key limit set to the site's hourly cap): the use past the limit gets 429
    ``RATE_LIMITED`` with ``details.tryAgainIn`` (ms); the provider waits that long and calls it a rate
    limit, not spent credits."""
    site = Site(clock, tmp_path, hourly_limit=2)
    await site.login()
    owner = site.provider()
    created = owner.parse_created_api_key(await site.send(owner.create_api_key_request("bot"), owner))
    keyed = site.provider(api_key=created.key.get_secret_value())
    await site.search(keyed)
    clock.now += 600
    await site.search(keyed)
    query = SearchQuery(image=prepare(_png()))
    answer = await site.send(keyed.search_request(query), keyed)
    await site.http.aclose()
    assert (answer.status_code, body_of(answer)["code"], body_of(answer)["details"]) == (
        429, "RATE_LIMITED", {"tryAgainIn": 3_000_000},
    )  # fmt: skip
    with pytest.raises(RateLimitedError) as caught:
        keyed.parse_search(answer)
    assert not isinstance(caught.value, QuotaExhaustedError)
    assert caught.value.retry_after == 3000

"""The whatanimeisthis emulator, driven by the provider's own requests (in-process and over real HTTP).

It has to be faithful where the contract knows the upstream (better-auth's routes, the documented
quotas) and consistent where it guesses (the site routes, in each of the three envelopes), so that the
provider talking to it behaves as it would against whatanimeisthis.com.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from PIL import Image

from anisearch._exceptions import (
    AuthenticationError,
    BadRequestError,
    ImageFetchError,
    ImageTooLargeError,
    QuotaExhaustedError,
    RateLimitedError,
)
from anisearch._image import PreparedImage
from anisearch._provider import ProviderAnswer, SearchQuery
from anisearch_emulators.whatanimeisthis import EmulatorState, create_app
from anisearch_providers.whatanimeisthis import WhatAnimeIsThis

pytestmark = pytest.mark.anyio
T = TypeVar("T")
BASE = "http://testserver"
EMAIL = "user@example.com"
PASSWORD = "correct horse battery staple"
START = datetime(2026, 11, 21, 12, tzinfo=UTC).timestamp()
ONE_PIECE = {"romaji": "ONE PIECE", "english": "ONE PIECE", "native": "ONE PIECE"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Clock:
    """A settable clock for the emulator, seconds since the epoch."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="module")
def tinted(samples: Path) -> PreparedImage:
    data = (samples / "tinted-good.jpg").read_bytes()
    return PreparedImage(data=data, mime_type="image/jpeg", width=640, height=360, digest="tinted")


def other_image(color: tuple[int, int, int] = (200, 30, 30), fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 36), color).save(buffer, fmt)
    return buffer.getvalue()


def left(answer: ProviderAnswer) -> int | None:
    """The remaining searches or credits a search answer reported."""
    return answer.quota.remaining if answer.quota is not None else None


def cookie_header(cookies: dict[str, str]) -> dict[str, str]:
    return {"Cookie": "; ".join(f"{name}={value}" for name, value in cookies.items())}


class Site:
    """A provider and an emulator wired together in-process."""

    def __init__(self, app: Any, http: httpx.AsyncClient, provider: WhatAnimeIsThis) -> None:
        self.app = app
        self.http = http
        self.provider = provider

    @property
    def state(self) -> EmulatorState:
        state: EmulatorState = self.app.state.emulator
        return state

    async def call(
        self,
        request: httpx.Request,
        parse: Callable[[httpx.Response], T],
        provider: WhatAnimeIsThis | None = None,
    ) -> T:
        provider = provider or self.provider
        response = await self.http.send(request, auth=provider.auth())
        provider.observe(response)
        return parse(response)

    async def sign_in(self) -> None:
        await self.call(self.provider.sign_in_request(EMAIL, PASSWORD), self.provider.parse_sign_in)

    async def search(
        self,
        image: PreparedImage,
        provider: WhatAnimeIsThis | None = None,
        *,
        forwarded_for: str | None = None,
    ) -> ProviderAnswer:
        provider = provider or self.provider
        request = provider.search_request(SearchQuery(image=image))
        if forwarded_for is not None:
            request.headers["X-Forwarded-For"] = forwarded_for
        return await self.call(request, provider.parse_search, provider)


@pytest.fixture
async def site_factory(tmp_path: Path, clock: Clock) -> AsyncIterator[Callable[..., Site]]:
    clients: list[httpx.AsyncClient] = []

    def make(*, provider: WhatAnimeIsThis | None = None, **knobs: Any) -> Site:
        knobs.setdefault("clock", clock)
        app = create_app(**knobs)
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app))
        clients.append(http)
        return Site(app, http, provider or WhatAnimeIsThis(base_url=BASE, state_dir=tmp_path / "state"))

    yield make
    for http in clients:
        await http.aclose()


# ---------------------------------------------------------------- the account journey


@pytest.mark.parametrize("envelope", ["bare", "data", "code"])
async def test_sign_in_key_search_recent_rankings_sign_out(
    site_factory: Callable[..., Site], tinted: PreparedImage, tmp_path: Path, envelope: str
) -> None:
    history = [{"anilist_id": 21, "title": ONE_PIECE, "seconds_ago": 3 * 86400} for _ in range(3)]
    site = site_factory(envelope=envelope, history=history)
    provider = site.provider
    await site.sign_in()
    assert provider.credential.scope == "session"

    balance = await site.call(provider.credits_request(), provider.parse_credits)
    assert (balance.remaining, balance.free_remaining, balance.free_daily, balance.paid) == (10, 10, 10, 0)
    assert balance.resets_at == datetime(2026, 11, 22, tzinfo=UTC)

    created = await site.call(provider.create_api_key_request("my bot"), provider.parse_created_api_key)
    plaintext = created.key.get_secret_value()
    assert (len(plaintext), plaintext.isascii() and plaintext.isalpha()) == (64, True)  # better-auth's keys
    keys = await site.call(provider.api_keys_request(1, 20), provider.parse_api_keys)
    (listed,) = keys.items
    assert (listed.id, listed.title, listed.masked_key) == (created.id, "my bot", f"{plaintext[:6]}…")
    assert plaintext not in json.dumps(listed.raw, ensure_ascii=False)

    keyed = WhatAnimeIsThis(base_url=BASE, api_key=plaintext)
    answer = await site.search(tinted, keyed)
    best = answer.hits[0]
    assert (best.anilist_id, best.episode, best.provider) == (11887, 5, "whatanimeisthis")
    assert best.start_seconds is not None
    assert best.end_seconds is not None
    assert 1169 <= best.start_seconds < best.end_seconds <= 1175
    assert best.similarity > 0.95
    assert best.title is not None
    assert best.title.english == "Kokoro Connect"
    assert len(answer.hits) == 5
    assert [hit.similarity for hit in answer.hits] == sorted(
        (hit.similarity for hit in answer.hits), reverse=True
    )
    assert answer.quota is not None
    assert (answer.quota.remaining, answer.quota.scope) == (9, "api-key")
    assert site.state.last_search_client == EMAIL  # the key spends its owner's credits

    after = await site.call(provider.credits_request(), provider.parse_credits)
    assert after.remaining == 9
    recent = await site.call(provider.recent_searches_request(5, 0), provider.parse_recent_searches)
    assert recent.items[0].anilist_id == 11887
    assert recent.items[0].at_seconds == pytest.approx(1172.05)
    assert (recent.total, recent.has_more) == (4, False)
    daily = await site.call(
        provider.rankings_request("daily", 10, include_adult=False), provider.parse_rankings
    )
    assert [(entry.rank, entry.anilist_id, entry.searches) for entry in daily] == [(1, 11887, 1)]
    weekly = await site.call(
        provider.rankings_request("weekly", 10, include_adult=False), provider.parse_rankings
    )
    assert [entry.anilist_id for entry in weekly] == [21, 11887]

    signing_out = provider.sign_out_request()  # a session is stored
    assert signing_out is not None
    await site.call(signing_out, provider.parse_sign_out)
    assert provider.jar.path is not None
    assert provider.jar.path.parent == tmp_path / "state"
    assert not provider.jar.path.exists()
    with pytest.raises(AuthenticationError, match="anisearch login"):
        await site.call(provider.credits_request(), provider.parse_credits)


async def test_a_guests_sixth_search_of_the_day_is_refused(
    site_factory: Callable[..., Site], tinted: PreparedImage, clock: Clock
) -> None:
    site = site_factory(trust_forwarded=True)
    remaining: list[int | None] = []
    for _ in range(5):
        answer = await site.search(tinted, forwarded_for="203.0.113.7")
        remaining.append(left(answer))
    assert remaining == [4, 3, 2, 1, 0]
    with pytest.raises(QuotaExhaustedError, match="5 searches per day") as caught:
        await site.search(tinted, forwarded_for="203.0.113.7")
    assert caught.value.status_code == 429
    assert (site.state.search_requests, site.state.searches_served) == (6, 5)
    neighbour = await site.search(tinted, forwarded_for="198.51.100.1")
    assert left(neighbour) == 4
    clock.now += 12 * 3600  # past midnight UTC
    assert (await site.search(tinted, forwarded_for="203.0.113.7")).hits


async def test_free_credits_then_purchased_ones_then_payment_required(
    site_factory: Callable[..., Site], tinted: PreparedImage
) -> None:
    site = site_factory(free_daily_credits=2, paid_credits=1)
    await site.sign_in()
    assert [left(await site.search(tinted)) for _ in range(3)] == [2, 1, 0]
    with pytest.raises(QuotaExhaustedError, match="Insufficient credits") as caught:
        await site.search(tinted)
    assert caught.value.status_code == 402
    balance = await site.call(site.provider.credits_request(), site.provider.parse_credits)
    assert (balance.remaining, balance.free_remaining, balance.paid) == (0, 0, 0)


async def test_the_hourly_cap_is_a_rate_limit_with_a_wait(
    site_factory: Callable[..., Site], tinted: PreparedImage, clock: Clock
) -> None:
    site = site_factory(hourly_limit=2, free_daily_credits=10)
    await site.sign_in()
    await site.search(tinted)
    clock.now += 600
    await site.search(tinted)
    with pytest.raises(RateLimitedError, match="2 per hour") as caught:
        await site.search(tinted)
    assert caught.value.retry_after == pytest.approx(3001, abs=2)
    clock.now += 3001
    assert (await site.search(tinted)).hits


async def test_an_expired_session_is_renewed_with_configured_credentials(
    site_factory: Callable[..., Site], tmp_path: Path, clock: Clock
) -> None:
    provider = WhatAnimeIsThis(base_url=BASE, email=EMAIL, password=PASSWORD, state_dir=tmp_path / "s")
    site = site_factory(provider=provider)
    assert (await site.call(provider.credits_request(), provider.parse_credits)).remaining == 10
    clock.now += 8 * 86400  # past the 7-day session
    assert (await site.call(provider.credits_request(), provider.parse_credits)).remaining == 10
    assert site.state.sign_in_requests == 2
    assert provider.jar.path is not None
    assert PASSWORD not in provider.jar.path.read_text()


# ---------------------------------------------------------------- better-auth, faithfully


async def test_sign_in_errors_are_better_auths(site_factory: Callable[..., Site]) -> None:
    site = site_factory(sign_in_limit=0)
    url = f"{BASE}/api/auth/sign-in/email"
    cases: list[tuple[dict[str, Any], int, dict[str, str]]] = [
        (
            {"json": {"email": EMAIL, "password": "wrong"}},
            401,
            {"code": "INVALID_EMAIL_OR_PASSWORD", "message": "Invalid email or password"},
        ),
        (
            {"json": {"email": "nobody@example.com", "password": PASSWORD}},
            401,
            {"code": "INVALID_EMAIL_OR_PASSWORD", "message": "Invalid email or password"},
        ),
        (
            {"json": {"email": "not-an-email", "password": PASSWORD}},
            400,
            {"code": "INVALID_EMAIL", "message": "Invalid email"},
        ),
        (
            {"json": {"email": EMAIL}},
            400,
            {
                "code": "VALIDATION_ERROR",
                "message": "[body.password] Invalid input: expected string, received undefined",
            },
        ),
        (
            {"content": b"{broken", "headers": {"content-type": "application/json"}},
            400,
            {"code": "BAD_REQUEST", "message": "Invalid JSON in request body"},
        ),
    ]
    for kwargs, status, body in cases:
        response = await site.http.post(url, **kwargs)
        assert (response.status_code, response.json()) == (status, body)
    wrong_type = await site.http.post(url, content=b"email=x", headers={"content-type": "text/plain"})
    assert (wrong_type.status_code, wrong_type.json()["code"]) == (415, "UNSUPPORTED_MEDIA_TYPE")
    form = await site.http.post(url, data={"email": EMAIL.upper(), "password": PASSWORD})
    assert form.status_code == 200
    assert form.json()["user"]["email"] == EMAIL
    assert form.json()["redirect"] is False


async def test_sign_in_is_rate_limited_three_per_ten_seconds(
    site_factory: Callable[..., Site], clock: Clock, tmp_path: Path
) -> None:
    # the provider waits out a refused sign-in's X-Retry-After on the emulator's clock
    site = site_factory(provider=WhatAnimeIsThis(base_url=BASE, state_dir=tmp_path / "state", clock=clock))
    for _ in range(3):
        await site.sign_in()
    response = await site.http.post(
        f"{BASE}/api/auth/sign-in/email", json={"email": EMAIL, "password": PASSWORD}
    )
    assert response.status_code == 429
    assert response.json() == {"message": "Too many requests. Please try again later."}
    assert 1 <= int(response.headers["x-retry-after"]) <= 10
    with pytest.raises(RateLimitedError) as caught:
        await site.sign_in()
    assert caught.value.retry_after is not None
    clock.now += 10.5
    await site.sign_in()


async def test_the_sign_in_limit_runs_from_the_last_attempt_let_through_and_per_path(
    site_factory: Callable[..., Site], clock: Clock
) -> None:
    """better-auth keeps ``lastRequest``: attempts at 0, 5 and 9 s block a fourth until 19 s, and its
    X-Retry-After counts from the one at 9 s; sign-up, another path, counts apart."""
    site = site_factory()
    url = f"{BASE}/api/auth/sign-in/email"
    wrong = {"email": EMAIL, "password": "not it"}
    origin = {"origin": BASE}
    for step in (0, 5, 4):
        clock.now += step
        assert (await site.http.post(url, json=wrong, headers=origin)).status_code == 401
    clock.now += 0.5  # 9.5 s
    refused = await site.http.post(url, json=wrong, headers=origin)
    assert (refused.status_code, refused.headers["x-retry-after"]) == (429, "10")
    clock.now += 1.0  # 10.5 s: a window after the first, not after the last
    assert (await site.http.post(url, json=wrong, headers=origin)).status_code == 429
    sign_up = await site.http.post(
        f"{BASE}/api/auth/sign-up/email",
        json={"email": "new@example.com", "password": "long enough 123", "name": "n"},
        headers=origin,
    )
    assert sign_up.status_code != 429
    clock.now += 8.6  # 19.1 s
    assert (await site.http.post(url, json=wrong, headers=origin)).status_code == 401


@pytest.mark.parametrize(
    ("https", "name", "secure"),
    [(False, "better-auth.session_token", False), (True, "__Secure-better-auth.session_token", True)],
)
async def test_session_cookies_are_signed_and_percent_encoded(
    site_factory: Callable[..., Site], https: bool, name: str, secure: bool
) -> None:
    site = site_factory(https=https)
    response = await site.http.post(
        f"{BASE}/api/auth/sign-in/email", json={"email": EMAIL, "password": PASSWORD}
    )
    (cookie,) = response.headers.get_list("set-cookie")
    match = re.fullmatch(rf"{re.escape(name)}=([A-Za-z0-9]{{32}})\.([A-Za-z0-9%]+%3D); (.*)", cookie)
    assert match is not None, cookie
    assert match.group(1) == response.json()["token"]
    attributes = match.group(3).split("; ")
    assert {"Max-Age=604800", "Path=/", "HttpOnly", "SameSite=Lax"} <= set(attributes)
    assert ("Secure" in attributes) is secure


async def test_remember_me_false_gives_a_browser_session_cookie(site_factory: Callable[..., Site]) -> None:
    site = site_factory()
    response = await site.http.post(
        f"{BASE}/api/auth/sign-in/email", json={"email": EMAIL, "password": PASSWORD, "rememberMe": False}
    )
    session, dont_remember = response.headers.get_list("set-cookie")
    assert "Max-Age" not in session
    assert dont_remember.startswith("better-auth.dont_remember=")


async def test_get_session_null_session_sliding_refresh_and_expiry(
    site_factory: Callable[..., Site], clock: Clock
) -> None:
    site = site_factory()
    provider = site.provider
    assert await site.call(provider.session_request(), provider.parse_session) is None
    await site.sign_in()
    session = await site.call(provider.session_request(), provider.parse_session)
    assert session is not None
    assert session["user"]["email"] == EMAIL
    assert set(session["session"]) >= {"id", "token", "userId", "expiresAt", "ipAddress", "userAgent"}
    clock.now += 2 * 86400  # older than updateAge: extended and re-issued
    raw = await site.http.get(f"{BASE}/api/auth/get-session", headers=cookie_header(provider.jar.cookies()))
    assert raw.headers["cache-control"] == "no-store"
    assert "Max-Age=604800" in raw.headers["set-cookie"]
    clock.now += 8 * 86400
    raw = await site.http.get(f"{BASE}/api/auth/get-session", headers=cookie_header(provider.jar.cookies()))
    assert raw.content == b"null"
    posted = await site.http.post(f"{BASE}/api/auth/get-session", json={})
    assert (posted.status_code, posted.json()["code"]) == (405, "METHOD_NOT_ALLOWED_DEFER_SESSION_REQUIRED")
    assert "Max-Age=0" in raw.headers["set-cookie"]


async def test_a_tampered_cookie_is_no_session(site_factory: Callable[..., Site]) -> None:
    site = site_factory()
    await site.sign_in()
    ((name, value),) = site.provider.jar.cookies().items()
    tampered = await site.http.get(
        f"{BASE}/api/auth/get-session",
        headers=cookie_header({name: ("a" if value[0] != "a" else "b") + value[1:]}),
    )
    assert tampered.content == b"null"
    decoded = await site.http.get(
        f"{BASE}/api/auth/get-session", headers=cookie_header({name: value.replace("%3D", "=")})
    )
    assert decoded.json()["user"]["email"] == EMAIL  # better-call decodes; the client must not rely on it


async def test_cookie_bearing_posts_need_a_trusted_origin(
    site_factory: Callable[..., Site], tmp_path: Path
) -> None:
    site = site_factory(trusted_origins=["https://mirror.example"])
    url = f"{BASE}/api/auth/sign-out"
    cookies = cookie_header({"better-auth.session_token": "x"})
    missing = await site.http.post(url, json={}, headers=cookies)
    assert (missing.status_code, missing.json()["code"]) == (403, "MISSING_OR_NULL_ORIGIN")
    bad = await site.http.post(url, json={}, headers={**cookies, "origin": "https://evil.example"})
    assert (bad.status_code, bad.json()["code"]) == (403, "INVALID_ORIGIN")
    mirror = await site.http.post(url, json={}, headers={**cookies, "origin": "https://mirror.example"})
    assert (mirror.status_code, mirror.json()) == (200, {"success": True})
    await site.sign_in()
    wrong = WhatAnimeIsThis(base_url=BASE, origin="https://evil.example", state_dir=tmp_path / "state")
    signing_out = wrong.sign_out_request()  # the session signed in above
    assert signing_out is not None
    with pytest.raises(AuthenticationError, match="ANISEARCH_WHATANIMEISTHIS_ORIGIN"):
        await site.call(signing_out, wrong.parse_sign_out, wrong)


# ---------------------------------------------------------------- search input and styles


async def test_search_input_errors(site_factory: Callable[..., Site], tinted: PreparedImage) -> None:
    site = site_factory(max_upload_bytes=40_000, url_images={"https://img.example/frame.jpg": other_image()})
    url = f"{BASE}/api/anime/search"
    both = await site.http.post(
        url,
        data={"url": "https://img.example/frame.jpg"},
        files={"image": ("a.png", other_image(), "image/png")},
    )
    neither = await site.http.post(url, files={"other": (None, "x")})
    gif = await site.http.post(url, files={"image": ("a.gif", other_image(fmt="GIF"), "image/gif")})
    for response, words in ((both, "not both"), (neither, "required"), (gif, "JPEG or PNG")):
        assert response.status_code == 400
        with pytest.raises(BadRequestError, match=words):
            site.provider.parse_search(response)
    with pytest.raises(ImageTooLargeError):
        await site.search(tinted)  # 49 480 bytes
    by_url = site.provider.url_search_request("https://img.example/frame.jpg")
    assert await site.call(by_url, site.provider.parse_search) is not None
    missing = site.provider.url_search_request("https://img.example/gone.jpg")
    with pytest.raises(ImageFetchError):
        await site.call(missing, site.provider.parse_search)
    bad_key = WhatAnimeIsThis(base_url=BASE, api_key="sk-nope")
    with pytest.raises(AuthenticationError, match="API key"):
        await site.search(
            PreparedImage(data=other_image(), mime_type="image/png", width=1, height=1, digest=""), bad_key
        )


async def test_an_unrelated_image_finds_nothing(site_factory: Callable[..., Site]) -> None:
    site = site_factory()
    image = PreparedImage(data=other_image((0, 0, 0)), mime_type="image/png", width=64, height=36, digest="")
    answer = await site.search(image)
    assert answer.hits == []
    recent = await site.call(site.provider.recent_searches_request(5, 0), site.provider.parse_recent_searches)
    assert recent.items == []


@pytest.mark.parametrize("envelope", ["bare", "data", "code"])
async def test_the_snake_case_percent_dialect_parses_the_same(
    site_factory: Callable[..., Site], tinted: PreparedImage, envelope: str
) -> None:
    site = site_factory(style="snake", envelope=envelope)
    answer = await site.search(tinted)
    best = answer.hits[0]
    assert "anilist_id" in best.raw
    camel = (await site_factory(envelope=envelope).search(tinted)).hits[0]
    assert (best.anilist_id, best.episode) == (11887, 5)
    assert best.similarity == pytest.approx(camel.similarity, abs=5e-5)  # percent with two decimals
    assert best.similarity > 0.95
    assert (best.start_seconds, best.end_seconds, best.at_seconds) == (1169.17, 1174.92, 1172.05)
    assert answer.quota is not None
    assert answer.quota.remaining == 4
    recent = await site.call(site.provider.recent_searches_request(5, 0), site.provider.parse_recent_searches)
    assert recent.items[0].searched_at == datetime(2026, 11, 21, 12, tzinfo=UTC)
    assert recent.items[0].at_seconds == pytest.approx(1172.05)


async def test_recent_searches_page_through_and_rankings_hide_adult_titles(
    site_factory: Callable[..., Site],
) -> None:
    history: list[dict[str, Any]] = [{"anilist_id": n, "seconds_ago": n * 60} for n in range(1, 6)]
    history.append({"anilist_id": 999, "seconds_ago": 30, "is_adult": True})
    site = site_factory(envelope="data", history=history)
    provider = site.provider
    pages = []
    offset = 0
    while True:
        page = await site.call(provider.recent_searches_request(2, offset), provider.parse_recent_searches)
        pages.append(([item.anilist_id for item in page.items], page.has_more))
        offset += len(page.items)
        if not page.has_more:
            break
    assert pages == [([999, 1], True), ([2, 3], True), ([4, 5], False)]
    safe = await site.call(provider.rankings_request("all", 50, include_adult=False), provider.parse_rankings)
    assert 999 not in [entry.anilist_id for entry in safe]
    everything = await site.call(
        provider.rankings_request("all", 50, include_adult=True), provider.parse_rankings
    )
    assert 999 in [entry.anilist_id for entry in everything]
    bad = await site.http.get(f"{BASE}/api/anime/rankings", params={"period": "hourly"})
    with pytest.raises(BadRequestError, match="Invalid period"):
        provider.parse_rankings(bad)


def test_unknown_or_bad_knobs_are_refused() -> None:
    with pytest.raises(ValueError, match="envelope"):
        create_app(envelope="xml")
    with pytest.raises(TypeError):
        create_app(colour="blue")


# ---------------------------------------------------------------- over real HTTP


@pytest.mark.e2e
def test_under_uvicorn_with_the_sync_client(live_server: Any, tinted: PreparedImage, tmp_path: Path) -> None:
    server = live_server(create_app())
    provider = WhatAnimeIsThis(base_url=server.url, state_dir=tmp_path / "state")
    with httpx.Client() as http:

        def call(request: httpx.Request, parse: Callable[[httpx.Response], T]) -> T:
            return parse(http.send(request, auth=provider.auth()))

        call(provider.sign_in_request(EMAIL, PASSWORD), provider.parse_sign_in)
        assert call(provider.credits_request(), provider.parse_credits).remaining == 10
        answer = call(provider.search_request(SearchQuery(image=tinted)), provider.parse_search)
        assert answer.hits[0].anilist_id == 11887
        assert call(provider.credits_request(), provider.parse_credits).remaining == 9
        signing_out = provider.sign_out_request()
        assert signing_out is not None
        call(signing_out, provider.parse_sign_out)

"""whatanimeisthis.com sessions: the cookie jar on disk and the httpx auth flow (sync and async).

What a user relies on: signing in once keeps them signed in across runs (a 0600 file without their
password), the session cookie goes back exactly as the site set it, an expired session is renewed
with the configured credentials once, an API key never rides along with the cookie, and signing out
forgets everything.
"""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from anisearch._exceptions import AuthenticationError, ConfigurationError, UpstreamResponseError
from anisearch._image import PreparedImage
from anisearch._provider import ProviderContext, SearchQuery
from anisearch_providers.whatanimeisthis import WhatAnimeIsThis

SITE = "https://whatanimeisthis.com"
SIGNED = "Xk3mPq7RtY2vB9nL4cW8zF1hJ6dS0aGe.q1w2E3r4T5y6U7i8O9p0A1s2D3f4G5h6J7k8L9z0X1c%3D"
FRESH = "Nw5bV8cX2zL6kJ9hG3fD7sA1qW4eR0tY.Zz9Yy8Xx7Ww6Vv5Uu4Tt3Ss2Rr1Qq0Pp9Oo8Nn7Mm6Ll5Kk%2B%3D"
SESSION = "__Secure-better-auth.session_token"
PASSWORD = "correct horse battery staple"
JPEG = PreparedImage(data=b"\xff\xd8\xff\xe0", mime_type="image/jpeg", width=1, height=1, digest="")
CREDITS = {"credits": 10, "freeCredits": 10, "freeCreditsRemaining": 10, "paidCredits": 0}
_HTTP = httpx.Client()


def signed_in(value: str = SIGNED, *extra: str) -> httpx.Response:
    """better-auth's sign-in answer: the user, and one Set-Cookie header per cookie."""
    cookies = [f"{SESSION}={value}; Max-Age=604800; Path=/; HttpOnly; Secure; SameSite=Lax", *extra]
    return httpx.Response(
        200,
        json={
            "redirect": False,
            "token": value.split(".", maxsplit=1)[0],
            "user": {"id": "u1", "email": "a@b.example"},
        },
        headers=[("set-cookie", cookie) for cookie in cookies],
    )


def send(provider: WhatAnimeIsThis, request: httpx.Request | None) -> httpx.Response:
    assert request is not None, "nothing to send (a sign-out with no session stored)"
    return _HTTP.send(request, auth=provider.auth())


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state" / "anisearch"


def jar_file(state: Path) -> Path:
    return state / "whatanimeisthis-cookies.json"


def configured(state: Path, **config: Any) -> WhatAnimeIsThis:
    return WhatAnimeIsThis.from_context(ProviderContext(config=config, state_dir=state))


def sign_in(provider: WhatAnimeIsThis) -> None:
    provider.parse_sign_in(send(provider, provider.sign_in_request("a@b.example", PASSWORD)))


# ---------------------------------------------------------------- the jar


@respx.mock
def test_sign_in_keeps_the_cookie_byte_for_byte_in_a_private_file(state: Path) -> None:
    route = respx.post(f"{SITE}/api/auth/sign-in/email").mock(return_value=signed_in())
    provider = configured(state)
    sign_in(provider)
    sent = route.calls.last.request
    assert sent.headers["origin"] == SITE
    assert json.loads(sent.content) == {"email": "a@b.example", "password": PASSWORD}
    path = jar_file(state)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    text = path.read_text()
    assert PASSWORD not in text
    (cookie,) = json.loads(text)["cookies"]
    assert (cookie["name"], cookie["value"]) == (SESSION, SIGNED)
    assert cookie["expires"] == pytest.approx(time.time() + 604800, abs=60)
    assert "%3D" in text
    assert provider.credential.scope == "session"
    assert provider.credential.secret == "a@b.example"


@respx.mock
def test_the_cookie_goes_back_exactly_and_survives_a_restart(state: Path) -> None:
    respx.post(f"{SITE}/api/auth/sign-in/email").mock(return_value=signed_in())
    balance = respx.get(f"{SITE}/api/user/anime-credits").respond(json=CREDITS)
    sign_in(configured(state))
    later = configured(state)  # a new process: no password configured, the jar is enough
    assert later.parse_credits(send(later, later.credits_request())).remaining == 10
    assert balance.calls.last.request.headers["cookie"] == f"{SESSION}={SIGNED}"
    assert later.credential == later.credential.__class__("session", "a@b.example")


@respx.mock
def test_every_set_cookie_updates_the_jar(state: Path) -> None:
    respx.post(f"{SITE}/api/auth/sign-in/email").mock(
        return_value=signed_in(SIGNED, "better-auth.session_data=eyJhIjoxfQ; Max-Age=300; Path=/")
    )
    route = respx.get(f"{SITE}/api/anime/rankings")
    provider = configured(state)
    sign_in(provider)
    assert provider.jar.cookies() == {SESSION: SIGNED, "better-auth.session_data": "eyJhIjoxfQ"}
    route.respond(
        json=[],
        headers=[
            ("set-cookie", f"{SESSION}={FRESH}; Max-Age=604800; Path=/"),
            ("set-cookie", "better-auth.session_data=; Max-Age=0; Path=/"),
        ],
    )
    send(provider, provider.rankings_request("all", 5, include_adult=False))
    assert provider.jar.cookies() == {SESSION: FRESH}
    route.respond(json=[], headers={"set-cookie": f'{SESSION}=""; Path=/'})
    send(provider, provider.rankings_request("all", 5, include_adult=False))
    assert provider.jar.cookies() == {}
    assert not provider.jar.has_session()


@pytest.mark.parametrize(
    ("header", "kept"),
    [
        (
            "k=b c; Path=/; Max-Age=60",
            {"k": "b c"},
        ),  # SimpleCookie refuses the space; the value is kept as sent
        ('k="q v"; Path=/', {"k": '"q v"'}),  # quotes are part of the value
        ("k=v%2B%3D; Expires=Wed, 21 Oct 2015 07:28:00 GMT", {}),  # already expired
        ("k=v; Max-Age=-1", {}),
        ("no-equals-sign", {}),
    ],
)
@respx.mock
def test_odd_set_cookie_headers(state: Path, header: str, kept: dict[str, str]) -> None:
    respx.get(f"{SITE}/api/anime/rankings").respond(json=[], headers={"set-cookie": header})
    provider = configured(state)
    send(provider, provider.rankings_request("all", 5, include_adult=False))
    assert provider.jar.cookies() == kept


@respx.mock
def test_a_sign_out_in_another_process_is_seen(state: Path) -> None:
    respx.post(f"{SITE}/api/auth/sign-in/email").mock(return_value=signed_in())
    respx.post(f"{SITE}/api/auth/sign-out").respond(json={"success": True})
    first, second = configured(state), configured(state)
    sign_in(first)
    assert second.jar.has_session()
    second.parse_sign_out(send(second, second.sign_out_request()))
    assert not first.jar.has_session()


def test_a_jar_written_for_another_site_is_ignored(state: Path) -> None:
    state.mkdir(parents=True)
    jar_file(state).write_text(
        json.dumps(
            {
                "format": 1,
                "origin": "https://elsewhere.example",
                "email": "x@y.example",
                "cookies": [{"name": SESSION, "value": SIGNED, "expires": None}],
            }
        )
    )
    provider = configured(state)
    assert not provider.jar.has_session()
    assert provider.credential.scope == "guest"


def test_a_broken_jar_file_means_signed_out(state: Path) -> None:
    state.mkdir(parents=True)
    jar_file(state).write_text("{not json")
    assert configured(state).credential.scope == "guest"


@respx.mock
def test_expired_cookies_are_not_sent(state: Path) -> None:
    respx.post(f"{SITE}/api/auth/sign-in/email").respond(
        200,
        json={"user": {"email": "a@b.example"}},
        headers={"set-cookie": f"{SESSION}={SIGNED}; Max-Age=1; Path=/"},
    )
    clock = [1_000_000.0]
    provider = configured(state)
    provider.jar._clock = lambda: clock[0]
    sign_in(provider)
    assert provider.jar.has_session()
    clock[0] += 5
    assert provider.jar.header() is None


@respx.mock
def test_a_sign_in_without_a_session_cookie_is_reported(state: Path) -> None:
    respx.post(f"{SITE}/api/auth/sign-in/email").respond(json={"redirect": False, "token": "abc"})
    provider = configured(state)
    with pytest.raises(UpstreamResponseError, match="session cookie"):
        sign_in(provider)


@respx.mock
def test_wrong_credentials_are_an_authentication_error(state: Path) -> None:
    respx.post(f"{SITE}/api/auth/sign-in/email").respond(
        401, json={"code": "INVALID_EMAIL_OR_PASSWORD", "message": "Invalid email or password"}
    )
    provider = configured(state)
    with pytest.raises(AuthenticationError, match="Invalid email or password"):
        sign_in(provider)
    assert not jar_file(state).exists()


def test_sign_in_needs_an_email_and_a_password(state: Path) -> None:
    with pytest.raises(ConfigurationError):
        configured(state).sign_in_request("", PASSWORD)


# ---------------------------------------------------------------- the flow


@respx.mock
def test_configured_credentials_sign_in_before_the_first_session_request(state: Path) -> None:
    login = respx.post(f"{SITE}/api/auth/sign-in/email").mock(return_value=signed_in())
    balance = respx.get(f"{SITE}/api/user/anime-credits").respond(json=CREDITS)
    provider = configured(state, email="a@b.example", password=PASSWORD)
    response = send(provider, provider.credits_request())
    assert provider.parse_credits(response).remaining == 10
    assert login.call_count == 1
    assert balance.calls.last.request.headers["cookie"] == f"{SESSION}={SIGNED}"
    assert PASSWORD not in jar_file(state).read_text()
    send(provider, provider.credits_request())
    assert login.call_count == 1  # the session is reused


@respx.mock
def test_public_routes_never_trigger_a_sign_in(state: Path) -> None:
    login = respx.post(f"{SITE}/api/auth/sign-in/email").mock(return_value=signed_in())
    respx.get(f"{SITE}/api/anime/rankings").respond(json=[])
    provider = configured(state, email="a@b.example", password=PASSWORD)
    send(provider, provider.rankings_request("all", 5, include_adult=False))
    assert login.call_count == 0


@pytest.mark.parametrize(
    "expired",
    [
        httpx.Response(401, json={"code": "UNAUTHORIZED", "message": "Unauthorized"}),
        httpx.Response(200, json={"code": -1, "message": "Unauthorized"}),
    ],
)
@respx.mock
def test_an_expired_session_signs_in_again_once_and_retries(state: Path, expired: httpx.Response) -> None:
    login = respx.post(f"{SITE}/api/auth/sign-in/email").mock(
        side_effect=[signed_in(SIGNED), signed_in(FRESH)]
    )
    balance = respx.get(f"{SITE}/api/user/anime-credits").mock(
        side_effect=[expired, httpx.Response(200, json=CREDITS)]
    )
    provider = configured(state, email="a@b.example", password=PASSWORD)
    sign_in(provider)
    response = send(provider, provider.credits_request())
    assert provider.parse_credits(response).remaining == 10
    assert login.call_count == 2
    first, retry = (call.request.headers["cookie"] for call in balance.calls)
    assert (first, retry) == (f"{SESSION}={SIGNED}", f"{SESSION}={FRESH}")
    assert json.loads(jar_file(state).read_text())["cookies"][0]["value"] == FRESH


@respx.mock
def test_it_signs_in_again_only_once(state: Path) -> None:
    login = respx.post(f"{SITE}/api/auth/sign-in/email").mock(side_effect=lambda _: signed_in())
    balance = respx.get(f"{SITE}/api/user/anime-credits").respond(
        401, json={"code": "UNAUTHORIZED", "message": "Unauthorized"}
    )
    provider = configured(state, email="a@b.example", password=PASSWORD)
    sign_in(provider)
    with pytest.raises(AuthenticationError, match="session expired"):
        provider.parse_credits(send(provider, provider.credits_request()))
    assert login.call_count == 2  # the sign-in, then one renewal
    assert balance.call_count == 2  # the request and one retry


@respx.mock
def test_a_failed_renewal_reports_why(state: Path) -> None:
    respx.post(f"{SITE}/api/auth/sign-in/email").mock(
        side_effect=[
            signed_in(),
            httpx.Response(
                429,
                json={"message": "Too many requests. Please try again later."},
                headers={"X-Retry-After": "8"},
            ),
        ]
    )
    respx.get(f"{SITE}/api/apikeys").respond(401)
    provider = configured(state, email="a@b.example", password=PASSWORD)
    sign_in(provider)
    response = send(provider, provider.api_keys_request(1, 20))
    assert response.request.url.path == "/api/auth/sign-in/email"
    with pytest.raises(Exception, match="Too many requests") as caught:
        provider.parse_api_keys(response)
    assert getattr(caught.value, "retry_after", None) == 8


@respx.mock
def test_refused_credentials_are_not_tried_again(state: Path) -> None:
    login = respx.post(f"{SITE}/api/auth/sign-in/email").respond(
        401, json={"code": "INVALID_EMAIL_OR_PASSWORD", "message": "Invalid email or password"}
    )
    search = respx.post(f"{SITE}/api/anime/search").respond(json={"results": [], "remainingSearches": 4})
    provider = configured(state, email="a@b.example", password="wrong")
    with pytest.raises(AuthenticationError, match="Invalid email or password"):
        provider.parse_search(send(provider, provider.search_request(SearchQuery(image=JPEG))))
    assert provider.credential.scope == "guest"
    assert provider.parse_search(send(provider, provider.search_request(SearchQuery(image=JPEG)))).hits == []
    assert (login.call_count, search.call_count) == (1, 1)


@respx.mock
def test_without_credentials_a_401_drops_the_session_and_says_how_to_sign_in(state: Path) -> None:
    login = respx.post(f"{SITE}/api/auth/sign-in/email").mock(return_value=signed_in())
    respx.get(f"{SITE}/api/user/anime-credits").respond(401)
    provider = configured(state)
    sign_in(provider)
    with pytest.raises(AuthenticationError, match="anisearch login"):
        provider.parse_credits(send(provider, provider.credits_request()))
    assert login.call_count == 1
    assert not provider.jar.has_session()
    assert provider.credential.scope == "guest"


@respx.mock
def test_an_api_key_search_carries_no_cookie_and_never_signs_in(state: Path) -> None:
    login = respx.post(f"{SITE}/api/auth/sign-in/email").mock(return_value=signed_in())
    search = respx.post(f"{SITE}/api/anime/search").respond(401, json={"error": "Invalid API key"})
    provider = configured(state, key="sk-bad", email="a@b.example", password=PASSWORD)
    sign_in(provider)
    response = send(provider, provider.search_request(SearchQuery(image=JPEG)))
    with pytest.raises(AuthenticationError, match="API key was refused"):
        provider.parse_search(response)
    sent = search.calls.last.request
    assert sent.headers["authorization"] == "Bearer sk-bad"
    assert "cookie" not in sent.headers
    assert login.call_count == 1
    assert provider.jar.has_session()


@respx.mock
def test_cookies_never_go_to_another_host(state: Path) -> None:
    respx.post(f"{SITE}/api/auth/sign-in/email").mock(return_value=signed_in())
    other = respx.get("https://elsewhere.example/x").respond(200)
    provider = configured(state)
    sign_in(provider)
    send(provider, httpx.Request("GET", "https://elsewhere.example/x"))
    assert "cookie" not in other.calls.last.request.headers
    assert "origin" not in other.calls.last.request.headers


@respx.mock
def test_sign_out_posts_with_the_cookie_and_deletes_the_jar(state: Path) -> None:
    respx.post(f"{SITE}/api/auth/sign-in/email").mock(return_value=signed_in())
    out = respx.post(f"{SITE}/api/auth/sign-out").respond(
        json={"success": True}, headers={"set-cookie": f"{SESSION}=; Max-Age=0; Path=/"}
    )
    provider = configured(state, email="a@b.example", password=PASSWORD)
    sign_in(provider)
    assert provider.parse_sign_out(send(provider, provider.sign_out_request())) is True
    sent = out.calls.last.request
    assert (sent.content, sent.headers["origin"], sent.headers["cookie"]) == (
        b"{}",
        SITE,
        f"{SESSION}={SIGNED}",
    )
    assert sent.headers["content-type"] == "application/json"
    assert not jar_file(state).exists()
    assert provider.credential.scope == "guest"  # configured credentials are not used again after a sign-out
    assert provider.quota_request() is None


@respx.mock
def test_sign_out_without_a_session_is_fine_but_a_server_failure_is_reported(state: Path) -> None:
    respx.post(f"{SITE}/api/auth/sign-in/email").mock(return_value=signed_in())
    route = respx.post(f"{SITE}/api/auth/sign-out")
    provider = configured(state, email="a@b.example", password=PASSWORD)
    for answer in (
        httpx.Response(400, json={"code": "FAILED_TO_GET_SESSION", "message": "Failed to get session"}),
        httpx.Response(401, json={"message": "Unauthorized"}),
    ):  # a stored session the site no longer knows: ended all the same
        sign_in(provider)
        route.mock(return_value=answer)
        assert provider.parse_sign_out(send(provider, provider.sign_out_request())) is False
        assert not jar_file(state).exists()
    sign_in(provider)
    route.respond(500)
    with pytest.raises(Exception, match="Internal Server Error"):  # the session stays, and is kept
        provider.parse_sign_out(send(provider, provider.sign_out_request()))
    assert jar_file(state).exists()


@respx.mock
def test_sign_out_with_no_session_stored_asks_nothing(state: Path) -> None:
    """Never signed in (or signed out already): nothing to end, so the site is not asked, and an outage
    or no network cannot make the sign-out fail; configured credentials do not sign in first."""
    route = respx.post(f"{SITE}/api/auth/sign-out").respond(500)
    sign_in_route = respx.post(f"{SITE}/api/auth/sign-in/email").mock(return_value=signed_in())
    provider = configured(state, email="a@b.example", password=PASSWORD)
    assert provider.sign_out_request() is None
    assert not route.called
    assert not sign_in_route.called
    assert provider.credential.scope == "guest"  # and configured credentials are not used after it


def test_a_failed_sign_out_of_a_request_that_carried_no_session_keeps_nothing(state: Path) -> None:
    """A sign-out sent without a session cookie (the jar lost it meanwhile) cannot leave one of ours signed
    in on the site: whatever the site answers, nothing is kept and it is not an error."""
    provider = configured(state)
    sent = httpx.Request("POST", f"{SITE}/api/auth/sign-out", json={})
    assert (
        provider.parse_sign_out(httpx.Response(502, text="<html>Bad gateway</html>", request=sent)) is False
    )


@respx.mock
def test_get_session_null_means_signed_out(state: Path) -> None:
    respx.post(f"{SITE}/api/auth/sign-in/email").mock(return_value=signed_in())
    route = respx.get(f"{SITE}/api/auth/get-session")
    provider = configured(state)
    sign_in(provider)
    route.respond(json={"session": {"id": "s"}, "user": {"email": "a@b.example"}})
    session = provider.parse_session(send(provider, provider.session_request()))
    assert session is not None
    assert session["user"]["email"] == "a@b.example"
    route.respond(content=b"null", headers={"content-type": "application/json"})
    assert provider.parse_session(send(provider, provider.session_request())) is None
    assert not provider.jar.has_session()


@pytest.mark.anyio
@respx.mock
async def test_the_same_flow_serves_the_async_client(state: Path) -> None:
    login = respx.post(f"{SITE}/api/auth/sign-in/email").mock(
        side_effect=[signed_in(SIGNED), signed_in(FRESH)]
    )
    balance = respx.get(f"{SITE}/api/user/anime-credits").mock(
        side_effect=[
            httpx.Response(200, json=CREDITS),
            httpx.Response(401),
            httpx.Response(200, json=CREDITS),
        ]
    )
    provider = configured(state, email="a@b.example", password=PASSWORD)
    async with httpx.AsyncClient() as client:
        first = await client.send(provider.credits_request(), auth=provider.auth())  # signs in first
        second = await client.send(provider.credits_request(), auth=provider.auth())  # renews once
    assert provider.parse_credits(first).remaining == 10
    assert provider.parse_credits(second).remaining == 10
    assert (login.call_count, balance.call_count) == (2, 3)
    assert provider.jar.cookies() == {SESSION: FRESH}


@respx.mock
def test_a_401_right_after_signing_in_is_not_retried(state: Path) -> None:
    login = respx.post(f"{SITE}/api/auth/sign-in/email").mock(side_effect=lambda _: signed_in())
    balance = respx.get(f"{SITE}/api/user/anime-credits").respond(401)
    provider = configured(state, email="a@b.example", password=PASSWORD)
    with pytest.raises(AuthenticationError):
        provider.parse_credits(send(provider, provider.credits_request()))
    assert (login.call_count, balance.call_count) == (1, 1)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _jar_with(set_cookie: str, now: list[float], path: Path | None = None) -> Any:
    from anisearch_providers.whatanimeisthis._cookies import CookieJar

    jar = CookieJar(path, "https://whatanimeisthis.com", clock=lambda: now[0])
    jar.absorb(httpx.Response(200, headers=[("set-cookie", set_cookie)]))
    return jar


def test_a_session_is_due_for_a_check_after_a_quarter_of_its_lifetime_at_most_a_day() -> None:
    now = [1_000.0]
    short = _jar_with("better-auth.session_token=t.s%3D; Max-Age=60; Path=/", now)
    week = _jar_with("better-auth.session_token=t.s%3D; Max-Age=604800; Path=/", now)
    now[0] += 14.9
    assert (short.refresh_due(), week.refresh_due()) == (False, False)
    now[0] += 0.1
    assert short.refresh_due()
    short.mark_checked()
    assert not short.refresh_due()
    now[0] = 1_000.0 + 86_400
    assert week.refresh_due()  # a day, not a quarter of the week


def test_a_browser_session_cookie_is_never_due_and_the_check_time_persists(tmp_path: Path) -> None:
    from anisearch_providers.whatanimeisthis._cookies import CookieJar

    now = [1_000.0]
    browser = _jar_with("better-auth.session_token=t.s%3D; Path=/", now)
    now[0] += 10 * 86_400
    assert browser.has_session()
    assert not browser.refresh_due()
    path = tmp_path / "jar.json"
    stored = _jar_with("better-auth.session_token=t.s%3D; Max-Age=100; Path=/", now, path)
    now[0] += 30
    stored.mark_checked()
    reread = CookieJar(path, "https://whatanimeisthis.com", clock=lambda: now[0])
    assert not reread.refresh_due()
    now[0] += 25
    assert reread.refresh_due()
    assert reread.session_expires() == 1_000.0 + 10 * 86_400 + 100


GET_SESSION_ANSWER = {"session": {"id": "s2"}, "user": {"id": "u2", "email": "new@b.example"}}


WRONG = "Invalid email or password"


@respx.mock
def test_a_mistyped_password_while_signed_in_keeps_the_session(state: Path) -> None:
    routes = respx.post(f"{SITE}/api/auth/sign-in/email")
    routes.side_effect = [
        signed_in(),
        httpx.Response(
            401, json={"code": "INVALID_EMAIL_OR_PASSWORD", "message": "Invalid email or password"}
        ),
    ]
    sign_out = respx.post(f"{SITE}/api/auth/sign-out").respond(json={"success": True})
    provider = configured(state)
    sign_in(provider)
    with pytest.raises(AuthenticationError, match=WRONG):
        sign_in(provider)
    assert "cookie" not in routes.calls.last.request.headers  # a new session, whatever the old one
    assert not sign_out.called
    assert configured(state).jar.header() == f"{SESSION}={SIGNED}".encode()  # still signed in


@respx.mock
def test_a_sign_in_while_signed_in_ends_the_old_session_with_its_own_cookie(state: Path) -> None:
    respx.post(f"{SITE}/api/auth/sign-in/email").side_effect = [signed_in(), signed_in(FRESH)]
    gone = f"{SESSION}=; Max-Age=0; Path=/; HttpOnly; Secure; SameSite=Lax"
    sign_out = respx.post(f"{SITE}/api/auth/sign-out").respond(
        json={"success": True}, headers=[("set-cookie", gone)]
    )
    confirm = respx.get(f"{SITE}/api/auth/get-session").respond(json=GET_SESSION_ANSWER)
    provider = configured(state)
    sign_in(provider)
    sign_in(provider)
    assert sign_out.call_count == 1
    assert sign_out.calls.last.request.headers["cookie"] == f"{SESSION}={SIGNED}"
    assert confirm.calls.last.request.headers["cookie"] == f"{SESSION}={FRESH}"
    reread = configured(state)
    assert reread.jar.header() == f"{SESSION}={FRESH}".encode()  # the sign-out's Set-Cookie was not taken
    assert reread.jar.email == "new@b.example"  # who get-session says is signed in


@respx.mock
@pytest.mark.parametrize(
    "refusal",
    [
        httpx.Response(403, json={"code": "INVALID_ORIGIN", "message": "Invalid origin"}),
        httpx.Response(503, text="<html>Service Unavailable</html>"),
    ],
)
def test_a_refused_sign_out_of_the_replaced_session_keeps_the_new_one_and_says_so(
    state: Path, refusal: httpx.Response, caplog: pytest.LogCaptureFixture
) -> None:
    respx.post(f"{SITE}/api/auth/sign-in/email").side_effect = [signed_in(), signed_in(FRESH)]
    respx.post(f"{SITE}/api/auth/sign-out").mock(return_value=refusal)
    respx.get(f"{SITE}/api/auth/get-session").respond(json=GET_SESSION_ANSWER)
    provider = configured(state)
    sign_in(provider)
    sign_in(provider)
    assert configured(state).jar.header() == f"{SESSION}={FRESH}".encode()
    assert f"could not be signed out (HTTP {refusal.status_code})" in caplog.text


@respx.mock
def test_a_replacing_sign_in_stands_when_its_confirmation_fails(state: Path) -> None:
    """The new session exists and the old one is signed out before ``get-session`` confirms it: a
    confirmation the site fails to give does not make the sign-in fail."""
    respx.post(f"{SITE}/api/auth/sign-in/email").side_effect = [signed_in(), signed_in(FRESH)]
    respx.post(f"{SITE}/api/auth/sign-out").respond(json={"success": True})
    respx.get(f"{SITE}/api/auth/get-session").respond(503, text="<html>Service Unavailable</html>")
    provider = configured(state)
    sign_in(provider)
    sign_in(provider)
    reread = configured(state)
    assert reread.jar.header() == f"{SESSION}={FRESH}".encode()
    assert reread.jar.email == "a@b.example"  # the address signed in with


@respx.mock
def test_a_sign_in_that_sets_no_new_session_keeps_the_old_one(state: Path) -> None:
    respx.post(f"{SITE}/api/auth/sign-in/email").side_effect = [
        signed_in(),
        httpx.Response(200, json={"redirect": False, "user": {"email": "a@b.example"}}),
    ]
    sign_out = respx.post(f"{SITE}/api/auth/sign-out").respond(json={"success": True})
    provider = configured(state)
    sign_in(provider)
    with pytest.raises(UpstreamResponseError, match="set no session cookie"):
        sign_in(provider)
    assert not sign_out.called
    assert configured(state).jar.header() == f"{SESSION}={SIGNED}".encode()


@respx.mock
def test_each_site_address_keeps_its_own_session(state: Path) -> None:
    other = "http://127.0.0.1:18402"
    respx.post(f"{SITE}/api/auth/sign-in/email").mock(return_value=signed_in())
    respx.post(f"{other}/api/auth/sign-in/email").mock(return_value=signed_in(FRESH))
    respx.post(f"{other}/api/auth/sign-out").respond(json={"success": True})
    site = configured(state)
    sign_in(site)
    mirror = configured(state, url=other)
    assert not mirror.jar.has_session()  # the site's session is not the mirror's
    sign_in(mirror)
    assert mirror.parse_sign_out(send(mirror, mirror.sign_out_request())) is True
    assert configured(state).jar.header() == f"{SESSION}={SIGNED}".encode()  # the site's is untouched
    assert jar_file(state).exists()
    assert not (state / "whatanimeisthis-cookies-http-127.0.0.1-18402.json").exists()


@respx.mock
def test_the_jar_is_never_written_through_a_file_planted_beside_it(state: Path, tmp_path: Path) -> None:
    import os
    import threading

    respx.post(f"{SITE}/api/auth/sign-in/email").mock(return_value=signed_in())
    state.mkdir(parents=True)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    # where the jar's temporary file used to go: a name anyone could guess and plant a link at
    planted = state / f".{jar_file(state).name}.{os.getpid()}.{threading.get_ident()}.tmp"
    planted.symlink_to(victim)
    sign_in(configured(state))
    assert victim.read_text() == "keep me"
    assert json.loads(jar_file(state).read_text())["cookies"][0]["value"] == SIGNED
    assert stat.S_IMODE(jar_file(state).stat().st_mode) == 0o600


def test_jar_names_tell_addresses_apart_and_hold_no_password() -> None:
    from anisearch_providers.whatanimeisthis._provider import jar_name

    assert jar_name(SITE) == "whatanimeisthis-cookies.json"
    assert jar_name("http://host:8080") != jar_name("https://host:8080")
    assert "secret" not in jar_name("https://user:secret@host:8080")


@respx.mock
def test_a_session_confirmed_alive_is_not_doubted_again_until_another_session_is_signed_in(
    state: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A live session whose searches are answered as a guest's (its credits spent, say) is checked once,
    not before every search with a "signed out elsewhere?" warning each time; in the next process too."""
    respx.post(f"{SITE}/api/auth/sign-in/email").mock(side_effect=[signed_in(), signed_in(FRESH)])
    alive = respx.get(f"{SITE}/api/auth/get-session").respond(200, json=GET_SESSION_ANSWER)
    respx.post(f"{SITE}/api/auth/sign-out").respond(200, json={"success": True})
    respx.post(url__startswith=f"{SITE}/api/anime/search").respond(
        200, json={"results": [], "remainingSearches": 3}
    )
    provider = configured(state)
    sign_in(provider)

    def search(provider: WhatAnimeIsThis) -> str | None:
        answer = provider.parse_search(send(provider, provider.search_request(SearchQuery(image=JPEG))))
        return None if answer.quota is None else answer.quota.scope

    with caplog.at_level("WARNING", logger="anisearch"):
        assert [search(provider) for _ in range(3)] == ["guest"] * 3
        assert search(configured(state)) == "guest"  # the next process remembers it
    assert alive.call_count == 1
    assert caplog.text.count("signed out elsewhere?") == 1
    sign_in(provider)  # a new session: doubted again when answered as a guest's
    caplog.clear()
    with caplog.at_level("WARNING", logger="anisearch"):
        search(provider)
        search(provider)
    assert caplog.text.count("signed out elsewhere?") == 1
    assert alive.call_count == 3  # the sign-in's own confirmation, and the check of the doubted session


def test_a_session_confirmed_alive_stays_so_when_the_site_slides_its_cookie(state: Path) -> None:
    """better-auth re-issues the session cookie past ``updateAge`` (same token, a new signature and expiry):
    still the session confirmed alive, so no new doubt, no new check and no new warning."""
    provider = configured(state)
    provider.jar.absorb(signed_in())
    assert provider.jar.doubt()
    provider.jar.mark_checked()  # get-session said: alive
    token = SIGNED.split(".", maxsplit=1)[0]
    provider.jar.absorb(signed_in(f"{token}.Zm9yZ2VkX3NpZ25hdHVyZV9vZl90aGVfc2FtZV9zZXNzaW9u%3D"))
    assert provider.jar.doubt() is False
    provider.jar.absorb(signed_in(FRESH))  # another session: doubted when answered as a guest's
    assert provider.jar.doubt() is True

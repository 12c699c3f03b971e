"""End to end: whatanimeisthis.com account features through the `anisearch` command, on its emulator."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.cli_runner import run_in_process

from anisearch_emulators.whatanimeisthis import create_app

pytestmark = pytest.mark.e2e

Cli = Callable[..., "subprocess.CompletedProcess[str]"]
"""Runs ``anisearch ARGS``: in process here (see ``cli_runner``); conftest's ``cli`` starts a process."""


@pytest.fixture
def cli() -> Cli:
    return run_in_process


EMAIL, PASSWORD = "ann@example.com", "correct horse battery staple"


@pytest.fixture
def site(emulated: Callable[[Any], Any]) -> Any:
    return emulated(create_app(users={EMAIL: PASSWORD}))


def credits_json(cli: Cli, env: dict[str, str]) -> dict[str, Any]:
    done = cli("credits", "--json", env=env)
    assert done.returncode == 0, done.stderr
    payload: dict[str, Any] = json.loads(done.stdout)
    return payload


def test_an_account_from_login_to_logout(cli: Cli, site: Any, samples: Path) -> None:
    env = {"ANISEARCH_WHATANIMEISTHIS_URL": site.url, "ANISEARCH_PROVIDERS": "whatanimeisthis"}
    image = str(samples / "tinted-good.jpg")

    signed_in = cli(
        "login",
        env={**env, "ANISEARCH_WHATANIMEISTHIS_EMAIL": EMAIL, "ANISEARCH_WHATANIMEISTHIS_PASSWORD": PASSWORD},
    )
    assert signed_in.returncode == 0, signed_in.stderr
    jars = [
        p
        for p in (Path(os.environ["XDG_STATE_HOME"]) / "anisearch").rglob("*")
        if p.is_file() and "cookie" in p.name
    ]
    assert len(jars) == 1
    assert stat.S_IMODE(jars[0].stat().st_mode) == 0o600
    assert PASSWORD not in jars[0].read_text()
    assert credits_json(cli, env)["free_remaining"] == 10

    for _ in range(6):
        done = cli("search", image, "--json", "--no-cache", env=env)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["provider"] == "whatanimeisthis"
    assert credits_json(cli, env)["free_remaining"] == 4

    created = cli("keys", "create", "bot", env=env)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    assert len(key) >= 16
    listed = cli("keys", "list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    keys = json.loads(listed.stdout)
    assert [k["title"] for k in keys] == ["bot"]
    assert key not in listed.stdout  # masked in lists

    with_key = cli("search", image, "--json", "--no-cache", env={**env, "ANISEARCH_WHATANIMEISTHIS_KEY": key})
    assert with_key.returncode == 0, with_key.stderr
    assert json.loads(with_key.stdout)["hits"][0]["anilist_id"] == 11887

    recent = cli("recent", "--json", "--limit", "3", env=env)
    assert recent.returncode == 0, recent.stderr
    assert json.loads(recent.stdout)[0]["anilist_id"] == 11887
    rankings = cli("rankings", "--period", "daily", "--json", env=env)
    assert rankings.returncode == 0, rankings.stderr
    assert json.loads(rankings.stdout)[0]["anilist_id"] == 11887

    signed_out = cli("logout", env=env)
    assert signed_out.returncode == 0, signed_out.stderr
    assert signed_out.stdout.strip() == "signed out"
    assert not jars[0].exists()
    after = cli("credits", env=env)
    assert after.returncode == 5
    assert "Traceback" not in after.stderr


def test_logout_when_not_signed_in_says_so(cli: Cli, site: Any) -> None:
    done = cli("logout", env={"ANISEARCH_WHATANIMEISTHIS_URL": site.url})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "not signed in: there was no session to end"


def test_logout_when_not_signed_in_asks_nothing_of_a_site_that_is_down(cli: Cli) -> None:
    """Never signed in, with the site down (or no network): there is no session to end, so it is not an
    error (it was exit 4, "the session is still signed in there and is kept", of a session never made)."""
    import socket

    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{closed.getsockname()[1]}"
    done = cli("logout", env={"ANISEARCH_WHATANIMEISTHIS_URL": down})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "not signed in: there was no session to end"


def test_a_wrong_password_is_an_authentication_error(cli: Cli, site: Any) -> None:
    done = cli(
        "login",
        env={
            "ANISEARCH_WHATANIMEISTHIS_URL": site.url,
            "ANISEARCH_WHATANIMEISTHIS_EMAIL": EMAIL,
            "ANISEARCH_WHATANIMEISTHIS_PASSWORD": "wrong",
        },
    )
    assert done.returncode == 5
    error, hint = done.stderr.strip().splitlines()
    assert error.startswith("anisearch: error: ")
    setting = "ANISEARCH_WHATANIMEISTHIS"
    said = f"check the email and password ({setting}_EMAIL, {setting}_PASSWORD)"
    assert hint == f"hint: {said}"  # not 'anisearch login', the command just run
    assert "wrong" not in done.stderr


def test_a_sign_in_429_says_when_to_sign_in_again_and_is_no_search_window(cli: Cli, site: Any) -> None:
    """The site allows 3 sign-ins per 10 s per address (failed ones count): the 4th login is told when to
    sign in again, and ``quota`` shows the search windows only, no cooldown (no "minute" window)."""
    env = {
        "ANISEARCH_WHATANIMEISTHIS_URL": site.url,
        "ANISEARCH_PROVIDERS": "whatanimeisthis",
        "ANISEARCH_WHATANIMEISTHIS_EMAIL": EMAIL,
        "ANISEARCH_WHATANIMEISTHIS_PASSWORD": "wrong",
    }
    for _ in range(3):
        assert cli("login", env=env).returncode == 5
    refused = cli("login", env=env)
    assert refused.returncode == 4, refused.stderr
    error, hint = refused.stderr.strip().splitlines()
    assert "too many sign-ins" in error
    assert re.fullmatch(
        r"hint: try again in (10|[1-9]) s \(whatanimeisthis limits sign-ins, not searches\)", hint
    )
    shown = cli("quota", "whatanimeisthis", "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    quotas = json.loads(shown.stdout)
    assert sorted(q["window"] for q in quotas) == ["day", "hour"]
    assert all(q["cooldown_until"] is None and q["used"] == 0 for q in quotas)


def test_a_guests_sixth_search_of_the_day_is_not_sent(cli: Cli, site: Any, samples: Path) -> None:
    env = {"ANISEARCH_WHATANIMEISTHIS_URL": site.url, "ANISEARCH_PROVIDERS": "whatanimeisthis"}
    image = str(samples / "tinted-good.jpg")
    for _ in range(5):
        done = cli("search", image, "--no-cache", env=env)
        assert done.returncode == 0, done.stderr
    sixth = cli("search", image, "--no-cache", env=env)
    assert sixth.returncode == 4
    assert "whatanimeisthis skipped: quota exhausted until " in sixth.stderr
    assert site.app.state.emulator.search_requests == 5


def test_a_spent_guest_day_shows_its_limit_after_the_ledger_was_reset(
    cli: Cli, site: Any, samples: Path
) -> None:
    """The ledger forgot the day's searches (``quota --reset``), the site did not: its refusal says the day
    is spent, and quota shows 0 of the guest's 5 left, not 0 of the searches counted since the reset."""
    env = {"ANISEARCH_WHATANIMEISTHIS_URL": site.url, "ANISEARCH_PROVIDERS": "whatanimeisthis"}
    image = str(samples / "tinted-good.jpg")
    for _ in range(5):
        assert cli("search", image, "--no-cache", env=env).returncode == 0
    assert cli("quota", "whatanimeisthis", "--reset", "--yes", env=env).returncode == 0
    refused = cli("search", image, "--no-cache", env=env)
    assert refused.returncode == 4
    shown = cli("quota", "whatanimeisthis", "--json", env=env)
    (day,) = [q for q in json.loads(shown.stdout) if q["window"] == "day"]
    assert (day["limit"], day["used"], day["remaining"]) == (5, 5, 0)


def test_an_argument_the_site_refuses_is_a_usage_error_and_a_page_past_the_end_says_so(
    cli: Cli, site: Any
) -> None:
    env = {"ANISEARCH_WHATANIMEISTHIS_URL": site.url, "ANISEARCH_PROVIDERS": "whatanimeisthis"}
    refused = cli("recent", "--limit", "500", env=env)
    assert refused.returncode == 2, refused.stderr  # the site's 400: not "every provider failed" (4)
    assert "limit" in refused.stderr
    signed_in = cli(
        "login",
        env={**env, "ANISEARCH_WHATANIMEISTHIS_EMAIL": EMAIL, "ANISEARCH_WHATANIMEISTHIS_PASSWORD": PASSWORD},
    )
    assert signed_in.returncode == 0, signed_in.stderr
    for title in ("one", "two"):
        assert cli("keys", "create", title, env=env).returncode == 0
    past = cli("keys", "list", "--page", "3", "--page-size", "2", env=env)
    assert past.returncode == 0, past.stderr
    assert "no API keys on page 3" in past.stdout + past.stderr
    assert "keys create" not in past.stdout + past.stderr  # the account has keys


def test_keys_list_says_how_many_keys_and_pages_there_are(cli: Cli, site: Any) -> None:
    """The site's list carries ``total``: the table's title says "N keys, page p of q", and a page past the
    end says how many there are. ``--json`` stays the list of keys."""
    env = {"ANISEARCH_WHATANIMEISTHIS_URL": site.url, "ANISEARCH_PROVIDERS": "whatanimeisthis"}
    signed_in = cli(
        "login",
        env={**env, "ANISEARCH_WHATANIMEISTHIS_EMAIL": EMAIL, "ANISEARCH_WHATANIMEISTHIS_PASSWORD": PASSWORD},
    )
    assert signed_in.returncode == 0, signed_in.stderr
    for title in ("one", "two", "three"):
        assert cli("keys", "create", title, env=env).returncode == 0
    second = cli("keys", "list", "--page", "2", "--page-size", "2", env=env)
    assert second.returncode == 0, second.stderr
    assert "API keys (3 keys, page 2 of 2)" in second.stdout
    past = cli("keys", "list", "--page", "3", "--page-size", "2", env=env)
    assert past.returncode == 0, past.stderr
    assert "no API keys on page 3: the account has 3 keys on 2 pages" in past.stdout + past.stderr
    listed = cli("keys", "list", "--json", "--page-size", "1", env=env)
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)) == 1


def test_a_session_revoked_on_the_site_is_signed_in_again_after_one_guest_search(
    cli: Cli, site: Any, samples: Path
) -> None:
    """Signed out on the site (another device, "log out everywhere"), the session cookie still held here:
    the site answers the next search as a guest's. The session is then checked before the next search,
    found gone and, with credentials configured, signed in again: one guest search, not all five of the
    guest's day spent before "Sign in to get free credits" while the account has credits."""
    env = {
        "ANISEARCH_WHATANIMEISTHIS_URL": site.url,
        "ANISEARCH_PROVIDERS": "whatanimeisthis",
        "ANISEARCH_WHATANIMEISTHIS_EMAIL": EMAIL,
        "ANISEARCH_WHATANIMEISTHIS_PASSWORD": PASSWORD,
    }
    image = str(samples / "tinted-good.jpg")
    assert credits_json(cli, env)  # signed in
    site.app.state.emulator.sessions.clear()  # revoked on the site

    def scope_of_a_search() -> str:
        done = cli("search", image, "--json", "--no-cache", env=env)
        assert done.returncode == 0, done.stderr
        return str(json.loads(done.stdout)["quota"]["scope"])

    assert scope_of_a_search() == "guest"  # sent with the dead session: the site served a guest
    assert scope_of_a_search() == "session"  # checked, found gone, signed in again
    assert scope_of_a_search() == "session"


def test_a_title_the_site_lists_cannot_drive_the_terminal(cli: Cli, emulated: Callable[[Any], Any]) -> None:
    """Rankings and recent searches are public lists the site fills: a title holding an escape sequence
    (clear the screen, retitle the window) or a line break (forge a line of output) is printed escaped."""
    title = "Evil\x1b[2J\x1b]0;pwned\x07Title\r\nanisearch: signed in as admin@example.com\u202e"
    seen = [{"anilist_id": 5, "seconds_ago": 10, "title": {"romaji": title}, "episode": 1, "at": 5.0}]
    server = emulated(create_app(history=seen))
    for command in ("rankings", "recent"):
        done = cli(command, env={"ANISEARCH_WHATANIMEISTHIS_URL": server.url})
        assert done.returncode == 0, done.stderr
        assert "\x1b" not in done.stdout
        assert "\x07" not in done.stdout
        assert "\r" not in done.stdout
        assert "\u202e" not in done.stdout
        assert "Evil\\x1b[2J\\x1b]0;pwned\\x07Title\\r\\nanisearch: signed in as" in done.stdout
        assert not any(line.startswith("anisearch: signed in") for line in done.stdout.splitlines())
        as_json = cli(command, "--json", env={"ANISEARCH_WHATANIMEISTHIS_URL": server.url})
        assert "\x1b" not in as_json.stdout  # JSON escapes it; a program reading it gets the title as sent
        assert json.loads(as_json.stdout)[0]["title"]["romaji"] == title

"""``anisearch quota`` and the ledger: where it is, what it believes, forgetting it, and failing cleanly."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any, Self

import pytest
from tests.cli_runner import run_in_process, run_on_a_terminal

from anisearch_emulators.tracemoe import create_app as tracemoe_app


@pytest.fixture
def spent(emulated: Callable[[Any], Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """A trace.moe emulator whose guest quota of 1 is spent by one search on a SQLite ledger."""
    trace = emulated(tracemoe_app(quota=1))
    monkeypatch.setenv("ANISEARCH_TRACEMOE_URL", trace.url)
    monkeypatch.setenv("ANISEARCH_PROVIDERS", "tracemoe")
    monkeypatch.setenv("ANISEARCH_LEDGER", f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    return trace


def test_quota_shows_where_the_ledger_is_and_what_upstream_confirmed(spent: Any, samples: Path) -> None:
    assert run_in_process("search", str(samples / "tinted-good.jpg"), "--no-cache").returncode == 0
    done = run_in_process("quota", "tracemoe", "--json")
    rolling = next(q for q in json.loads(done.stdout) if q["window"] == "rolling-24h")
    assert (rolling["limit"], rolling["used"], rolling["remaining"], rolling["source"]) == (
        1,
        1,
        0,
        "upstream",
    )
    assert "ledger: sqlite:///" in done.stderr


def test_reset_forgets_what_the_ledger_believes(spent: Any, samples: Path, tmp_path: Path) -> None:
    image = str(samples / "tinted-good.jpg")
    assert run_in_process("search", image, "--no-cache").returncode == 0
    skipped = run_in_process("search", image, "--no-cache")
    assert skipped.returncode == 4
    assert "quota exhausted until" in skipped.stderr
    assert spent.app.state.emulator.search_requests == 1  # the second was not sent
    done = run_in_process("quota", "tracemoe", "--reset", "--yes")
    assert done.returncode == 0
    assert "forgot tracemoe" in done.stderr
    again = run_in_process("search", image, "--no-cache")
    assert spent.app.state.emulator.search_requests == 2  # asked again; the upstream's own 402 is the truth
    assert again.returncode == 4
    assert "Search quota depleted" in again.stderr or "quota exhausted" in again.stderr


@pytest.mark.parametrize(("answer", "forgets"), [(b"y\n", True), (b"n\n", False)])
def test_the_reset_question_is_asked_on_stderr_and_a_no_forgets_nothing(
    spent: Any, samples: Path, answer: bytes, *, forgets: bool
) -> None:
    """At a terminal, `quota --reset --json | jq .` asks on stderr, so stdout stays JSON; declining is no
    error and leaves the ledger as it was."""
    assert run_in_process("search", str(samples / "tinted-good.jpg"), "--no-cache").returncode == 0
    done = run_on_a_terminal("quota", "tracemoe", "--reset", "--json", typed=answer)  # the question reads it
    assert done.returncode == 0, done.stderr
    assert "Forget what sqlite:///" in done.stderr
    if forgets:
        assert "forgot tracemoe" in done.stderr
        json.loads(done.stdout)  # nothing but the JSON
    else:
        assert "nothing forgotten" in done.stderr
        assert done.stdout.strip() == ""  # click's input() leaves one space after the question there
        kept = json.loads(run_in_process("quota", "tracemoe", "--json").stdout)
        assert next(q for q in kept if q["window"] == "rolling-24h")["used"] == 1


def test_an_unusable_ledger_is_one_line_and_exit_6(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    broken = tmp_path / "ledger.sqlite3"
    broken.write_bytes(b"not a database at all" * 64)
    monkeypatch.setenv("ANISEARCH_LEDGER", f"sqlite:///{broken}")
    monkeypatch.setenv("ANISEARCH_PROVIDERS", "tracemoe")
    done = run_in_process("quota")
    assert done.returncode == 6
    lines = done.stderr.strip().splitlines()
    assert lines[0].startswith("anisearch: error:")
    assert str(broken) in done.stderr
    assert "Traceback" not in done.stderr


def test_a_refresh_that_fails_still_shows_what_the_ledger_knows(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("ANISEARCH_PROVIDERS", "tracemoe")
    monkeypatch.setenv("ANISEARCH_TRACEMOE_URL", f"http://127.0.0.1:{port}")
    done = run_in_process("quota", "--refresh", "--json")
    assert done.returncode == 4
    assert done.stderr.startswith(
        f"anisearch: error: could not refresh: tracemoe: cannot reach 127.0.0.1:{port}:"
    )
    assert {q["window"] for q in json.loads(done.stdout)} == {"rolling-24h", "minute"}


def test_a_refresh_says_which_providers_could_not_be_asked_and_shows_all(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("ANISEARCH_PROVIDERS", "tracemoe,whatanime-ga")  # whatanime-ga without a URL
    monkeypatch.setenv("ANISEARCH_TRACEMOE_URL", f"http://127.0.0.1:{port}")
    done = run_in_process("quota", "--refresh", "--json")
    assert done.returncode == 4  # the first failure's: tracemoe cannot be reached
    errors = [line for line in done.stderr.splitlines() if line.startswith("anisearch: error:")]
    assert len(errors) == 2
    assert errors[0].startswith("anisearch: error: could not refresh: tracemoe: cannot reach")
    assert "whatanime-ga" in errors[1]
    assert {q["provider"] for q in json.loads(done.stdout)} == {"tracemoe", "whatanime-ga"}


def test_a_refresh_says_which_providers_had_nothing_to_ask(
    emulated: Callable[[Any], Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """trace.moe's ``/me`` answers; whatanimeisthis has no quota endpoint for a guest: its line says the
    figures shown are the ledger's, where it showed its documented default as if refreshed."""
    from anisearch_emulators.whatanimeisthis import create_app as whatanimeisthis_app

    monkeypatch.setenv("ANISEARCH_PROVIDERS", "tracemoe,whatanimeisthis")
    monkeypatch.setenv("ANISEARCH_TRACEMOE_URL", emulated(tracemoe_app()).url)
    monkeypatch.setenv("ANISEARCH_WHATANIMEISTHIS_URL", emulated(whatanimeisthis_app()).url)
    monkeypatch.setenv("ANISEARCH_LEDGER", f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    done = run_in_process("quota", "--refresh", "--json")
    assert done.returncode == 0, done.stderr
    notes = [line for line in done.stderr.splitlines() if "no quota endpoint" in line]
    expected = (
        "anisearch: whatanimeisthis has no quota endpoint to ask (for this caller): its figures are the"
    )
    assert notes == [f"{expected} ledger's"]
    assert {q["provider"] for q in json.loads(done.stdout)} == {"tracemoe", "whatanimeisthis"}
    plain = run_in_process("quota", "--json")  # nothing asked, nothing to say
    assert "no quota endpoint" not in plain.stderr


def test_a_reset_of_an_unknown_provider_forgets_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANISEARCH_PROVIDERS", "tracemoe")
    done = run_in_process("quota", "nope", "--reset", "--yes")
    assert done.returncode == 2
    assert done.stderr.startswith("anisearch: error: unknown provider 'nope'")
    assert "forgot" not in done.stderr
    typo = run_in_process("quota", "anilst")  # the metadata provider is a name quota takes too
    assert typo.returncode == 2
    assert "known providers: anilist, tracemoe, whatanime-ga, whatanimeisthis" in typo.stderr


def test_a_reset_starts_a_damaged_ledger_afresh(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    damaged = tmp_path / "ledger.sqlite3"
    damaged.write_bytes(b"SQLite format 3\x00" + b"\xa5" * 8192)
    monkeypatch.setenv("ANISEARCH_LEDGER", f"sqlite:///{damaged}")
    monkeypatch.setenv("ANISEARCH_PROVIDERS", "tracemoe")
    broken = run_in_process("quota")
    assert broken.returncode == 6
    assert "run 'anisearch quota --reset --yes' to start it afresh" in broken.stderr
    assert "hint:" not in broken.stderr  # the error names its own way out, and only that one
    assert run_in_process("quota", "--reset", "--yes").returncode == 0
    assert run_in_process("quota").returncode == 0


def test_reset_without_a_terminal_to_ask_at_needs_yes(tmp_path: Path) -> None:
    """``echo n | anisearch quota --reset`` forgot the ledger without asking: a script must say --yes."""
    done = run_in_process("quota", "tracemoe", "--reset")
    assert done.returncode == 2
    assert "add --yes" in done.stderr
    assert "forgot" not in done.stderr


PASSWORD = "s3cret-pw"


@pytest.fixture
def redis_asking_a_password(redis_url: str) -> Iterator[str]:
    """The session's redis-server asking for :data:`PASSWORD` while the test runs; its URL without it."""
    import redis

    with redis.Redis.from_url(redis_url) as client:
        client.config_set("requirepass", PASSWORD)
    yield redis_url
    with redis.Redis.from_url(redis_url, password=PASSWORD) as client:
        client.config_set("requirepass", "")


@pytest.mark.redis
@pytest.mark.parametrize("written", ["userinfo", "query"])
def test_quota_never_shows_the_redis_password(
    redis_asking_a_password: str, monkeypatch: pytest.MonkeyPatch, written: str
) -> None:
    """It printed the ledger URL as configured (``ledger: redis://:s3cret-pw@…``), while every error
    masked it; redis-py also reads the password from ``?password=``."""
    url = redis_asking_a_password
    if written == "userinfo":
        url = url.replace("redis://", f"redis://:{PASSWORD}@")
    else:
        url = f"{url}?password={PASSWORD}"
    monkeypatch.setenv("ANISEARCH_LEDGER", url)
    monkeypatch.setenv("ANISEARCH_PROVIDERS", "tracemoe")
    for args in (["quota"], ["quota", "--json"], ["quota", "--reset", "--yes"]):
        done = run_in_process(*args)
        assert done.returncode == 0, done.stderr
        assert PASSWORD not in done.stdout + done.stderr
        assert "ledger: redis://" in done.stderr
        assert "127.0.0.1" in done.stderr
    assert "the ledger forgot every provider (redis://" in done.stderr


@pytest.mark.redis
def test_a_wrong_redis_password_says_to_check_it(
    redis_asking_a_password: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not "check that Redis runs there": it runs, and refuses the password."""
    monkeypatch.setenv("ANISEARCH_LEDGER", redis_asking_a_password.replace("redis://", "redis://:wrong@"))
    monkeypatch.setenv("ANISEARCH_PROVIDERS", "tracemoe")
    done = run_in_process("quota")
    assert done.returncode == 6, done.stderr
    assert "check the user and password in ANISEARCH_LEDGER" in done.stderr
    assert "wrong" not in done.stderr


AHEAD = timedelta(hours=2)
"""How far ahead of the Redis server's the clock of the worker that runs ``quota`` below is."""


class _Ahead(datetime):
    """``datetime`` on a machine whose clock runs :data:`AHEAD`: the command's own reading of the time."""

    @classmethod
    def now(cls, tz: tzinfo | None = None) -> Self:
        return cls.fromtimestamp(time.time() + AHEAD.total_seconds(), tz)


@pytest.mark.redis
def test_a_worker_whose_clock_is_off_counts_how_far_away_on_the_redis_ledgers_clock(
    redis_url: str, emulated: Callable[[Any], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The instants are the ledger's, on the Redis server's clock; a worker whose clock ran 2 h ahead
    counted from its own: the minute window that frees in a minute "freed 1 h 59 min ago", and what the
    upstream confirmed a moment ago was "2 h ago"."""
    import anisearch._ledger._base as ledger_base
    from anisearch._cli import _common

    trace = emulated(tracemoe_app())
    monkeypatch.setenv("ANISEARCH_TRACEMOE_URL", trace.url)
    monkeypatch.setenv("ANISEARCH_PROVIDERS", "tracemoe")
    monkeypatch.setenv("ANISEARCH_LEDGER", redis_url)
    demo = Path(__file__).resolve().parents[1] / "examples" / "tinted-good.jpg"
    assert run_in_process("search", str(demo), "--no-cache").returncode == 0  # a worker on the right time
    monkeypatch.setattr(ledger_base, "system_clock", lambda: datetime.now(UTC) + AHEAD)
    monkeypatch.setattr(_common, "datetime", _Ahead)
    done = run_in_process("quota", "tracemoe")
    assert done.returncode == 0, done.stderr
    assert "(in 1 min)" in done.stdout  # the minute window
    assert " ago)" not in done.stdout, done.stdout

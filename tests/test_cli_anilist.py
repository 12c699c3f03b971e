"""End to end: the `anisearch` command against the trace.moe and AniList emulators over loopback.

The acceptance of AniList enrichment: the best hit of ``tinted-good.jpg`` is titled "Kokoro Connect" (MAL
11887, not adult) although trace.moe was never sent ``anilistInfo``; AniList gets one request for every
hit; a second identical run sends it none; with AniList stopped the search still answers, untitled, with
an attempt saying AniList failed.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any

import pytest
from tests.cli_runner import run_in_process
from tests.conftest import run_cli

from anisearch_emulators.anilist import create_app as anilist_app
from anisearch_emulators.tracemoe import create_app as tracemoe_app

pytestmark = pytest.mark.e2e

Cli = Callable[..., "subprocess.CompletedProcess[str]"]


class Recorder:
    """ASGI middleware that remembers the query string of every request the wrapped app receives."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.queries: list[str] = []

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.queries.append(scope["query_string"].decode())
        await self.app(scope, receive, send)


@pytest.fixture
def tracemoe(live_server: Callable[[Any], Any]) -> tuple[Any, Recorder]:
    recorder = Recorder(tracemoe_app())
    return live_server(recorder), recorder


@pytest.fixture
def anilist(live_server: Callable[[Any], Any]) -> Any:
    return live_server(anilist_app())


def search(
    cli: Cli, tracemoe: Any, anilist_url: str, image: Path, *extra: str
) -> tuple[int, dict[str, Any], str]:
    env = {
        "ANISEARCH_TRACEMOE_URL": tracemoe.url,
        "ANISEARCH_ANILIST_URL": anilist_url,
        "ANISEARCH_METADATA": "anilist",
    }
    done = cli("search", str(image), "--json", "-p", "tracemoe", *extra, env=env)
    return done.returncode, json.loads(done.stdout) if done.stdout.strip() else {}, done.stderr


def test_kokoro_connect_is_titled_from_anilist_in_one_request_then_from_the_cache(
    tracemoe: tuple[Any, Recorder], anilist: Any, samples: Path
) -> None:
    server, recorder = tracemoe
    code, result, stderr = search(run_in_process, server, anilist.url, samples / "tinted-good.jpg")
    assert code == 0, stderr
    best = result["hits"][0]
    assert best["anilist_id"] == 11887
    assert best["title"]["romaji"] == "Kokoro Connect"
    assert best["mal_id"] == 11887
    assert best["is_adult"] is False
    assert best["site_url"] == "https://anilist.co/anime/11887"
    assert recorder.queries
    assert not any("anilistInfo" in query for query in recorder.queries)
    state = anilist.app.state.emulator
    assert len(state.requests) == 1
    distinct = list(dict.fromkeys(hit["anilist_id"] for hit in result["hits"]))
    assert state.lookups == [distinct]
    assert [(a["provider"], a["outcome"]) for a in result["attempts"]] == [
        ("tracemoe", "ok"),
        ("anilist", "ok"),
    ]

    # The second run is a process of its own: the titles come from the metadata cache on disk.
    code, again, stderr = search(run_cli, server, anilist.url, samples / "tinted-good.jpg")
    assert code == 0, stderr
    assert again["hits"][0]["title"]["romaji"] == "Kokoro Connect"
    assert len(state.requests) == 1  # every ID came from the metadata cache

    # `cache clear` forgets the titles with the results: the next search asks AniList again
    cleared = run_in_process("cache", "clear")
    assert cleared.stdout.splitlines() == [
        "removed 1 cached result(s)",
        f"removed the cached titles of {len(distinct)} AniList ID(s)",
    ]
    code, third, stderr = search(run_in_process, server, anilist.url, samples / "tinted-good.jpg")
    assert (code, third["hits"][0]["title"]["romaji"]) == (0, "Kokoro Connect"), stderr
    assert len(state.requests) == 2


def test_cache_clear_says_when_another_process_holds_the_titles(monkeypatch: pytest.MonkeyPatch) -> None:
    """Another anisearch holding the titles file: ``cache clear`` printed nothing about them and exited 0,
    the titles left in place."""
    import sqlite3

    from anisearch import _anime_cache
    from anisearch._config import Settings
    from anisearch._enrich import metadata_cache_path

    monkeypatch.setattr(_anime_cache, "_OPEN_WAIT_MS", 200)  # the command's wait, shortened
    path = metadata_cache_path(Settings.load())
    assert path is not None
    _anime_cache.AnimeCache(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        cleared = run_in_process("cache", "clear")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert cleared.returncode == 2, cleared.stdout + cleared.stderr  # as for a result cache it cannot use
    assert f"the cached titles in {path} were not cleared (another process holds it)" in cleared.stderr


_VERSION_0_TABLE = (
    "CREATE TABLE IF NOT EXISTS anime (provider TEXT NOT NULL, anilist_id INTEGER NOT NULL, "
    "expires_at REAL NOT NULL, anime TEXT, PRIMARY KEY (provider, anilist_id))"
)
"""The titles table of a version 0 metadata cache file: an expiry per answer."""


def _older_version_writes(path: Path, *anilist_ids: int) -> None:
    """What an older anisearch does to the titles file: its own table, answers expiring in 2096."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(path)) as older, older:
        older.execute(_VERSION_0_TABLE)
        older.executemany(
            "INSERT OR REPLACE INTO anime VALUES ('anilist', ?, 4e9, NULL)", [(n,) for n in anilist_ids]
        )


def test_cache_clear_counts_the_titles_of_an_older_version(tmp_path: Path) -> None:
    """A titles file an older anisearch wrote (version 0): ``cache clear`` said nothing of the titles it
    removed (opening the file migrated them away), and left what an older process still running wrote
    since in place, unsaid too."""
    import sqlite3

    from anisearch._config import Settings
    from anisearch._enrich import metadata_cache_path

    path = metadata_cache_path(Settings.load())
    assert path is not None
    path.parent.mkdir(parents=True, exist_ok=True)
    _older_version_writes(path, 1, 2, 3)
    first = run_in_process("cache", "clear")
    assert first.returncode == 0, first.stderr
    assert "removed the cached titles of 3 AniList ID(s)" in first.stdout.splitlines()

    _older_version_writes(path, 4, 5)  # an older process still running, after the file was migrated
    second = run_in_process("cache", "clear")
    assert second.returncode == 0, second.stderr
    assert "removed the cached titles of 2 AniList ID(s)" in second.stdout.splitlines()
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT COUNT(*) FROM anime").fetchone() == (0,)

    third = run_in_process("cache", "clear")
    assert not any("cached titles" in line for line in third.stdout.splitlines())  # nothing left to say


def test_the_table_shows_the_title(tracemoe: tuple[Any, Recorder], anilist: Any, samples: Path) -> None:
    server, _ = tracemoe
    env = {
        "ANISEARCH_TRACEMOE_URL": server.url,
        "ANISEARCH_ANILIST_URL": anilist.url,
        "ANISEARCH_METADATA": "anilist",
    }

    done = run_in_process("search", str(samples / "tinted-good.jpg"), "-p", "tracemoe", env=env)
    assert done.returncode == 0, done.stderr
    assert "Kokoro Connect, episode 5" in done.stdout


def test_with_anilist_stopped_the_search_answers_untitled_and_says_anilist_failed(
    tracemoe: tuple[Any, Recorder], live_server: Callable[[Any], Any], samples: Path
) -> None:
    stopped = live_server(anilist_app())
    stopped.stop()
    server, _ = tracemoe
    code, result, stderr = search(run_in_process, server, stopped.url, samples / "tinted-good.jpg")
    assert code == 0, stderr
    best = result["hits"][0]
    assert best["anilist_id"] == 11887
    assert best["title"] is None
    failed = result["attempts"][-1]
    assert (failed["provider"], failed["outcome"], failed["error"]) == (
        "anilist",
        "failed",
        "ProviderConnectionError",
    )
    assert "hits left as their provider gave them" in failed["reason"]


def test_no_adult_drops_nothing_here_and_says_so(
    tracemoe: tuple[Any, Recorder], anilist: Any, samples: Path
) -> None:
    server, _ = tracemoe

    code, result, stderr = search(
        run_in_process, server, anilist.url, samples / "tinted-good.jpg", "--no-adult"
    )
    assert code == 0, stderr
    assert result["adult_hits_dropped"] == 0
    assert all(hit["is_adult"] is not True for hit in result["hits"])


def test_no_anilist_info_turns_the_lookup_off(
    tracemoe: tuple[Any, Recorder], anilist: Any, samples: Path
) -> None:
    server, _ = tracemoe

    code, result, stderr = search(
        run_in_process, server, anilist.url, samples / "tinted-good.jpg", "--no-anilist-info"
    )
    assert code == 0, stderr
    assert anilist.app.state.emulator.requests == []
    assert result["hits"][0]["title"] is None


def test_quota_anilist_shows_the_lookups_the_ledger_counted(
    tracemoe: tuple[Any, Recorder], anilist: Any, samples: Path
) -> None:
    server, _ = tracemoe
    code, _, stderr = search(run_in_process, server, anilist.url, samples / "tinted-good.jpg")
    assert code == 0, stderr
    done = run_in_process("quota", "anilist", "--json", env={"ANISEARCH_ANILIST_URL": anilist.url})
    assert done.returncode == 0, done.stderr
    (minute,) = json.loads(done.stdout)
    assert (minute["provider"], minute["window"]) == ("anilist", "minute")
    assert minute["limit"] == 90
    assert minute["used"] == 1  # the one lookup of the search, confirmed by AniList's headers
    assert minute["source"] == "headers"

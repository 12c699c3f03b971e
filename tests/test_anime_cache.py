"""The metadata cache: per-AniList-ID answers with a TTL (the one in force at the lookup), unknown IDs
remembered, disposable when broken, older files migrated."""

from __future__ import annotations

import logging
import sqlite3
import stat
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest

from anisearch._anime_cache import SCHEMA_VERSION, AnimeCache
from anisearch._models import Anime, Title
from anisearch._sqlite_busy import resetting

KOKORO = Anime(anilist_id=11887, mal_id=11887, title=Title(romaji="Kokoro Connect"), is_adult=False)
WEEK = 7 * 24 * 3600.0
"""AniList's default TTL, seconds."""


class Clock:
    """A settable clock, seconds since the epoch."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def test_answers_and_unknown_ids_come_back_until_they_expire(tmp_path: Path) -> None:
    clock = Clock()
    cache = AnimeCache(tmp_path / "anime.sqlite3", clock=clock)

    async def scenario() -> None:
        await cache.put("anilist", {21: KOKORO.model_copy(update={"anilist_id": 21})})
        clock.now += 3600
        await cache.put("anilist", {11887: KOKORO, 5: None})
        assert await cache.get("anilist", [11887, 5, 21, 99], ttl_seconds=3600) == {11887: KOKORO, 5: None}
        assert await cache.get("other", [11887], ttl_seconds=3600) == {}

    anyio.run(scenario)
    cache.close()
    assert stat.S_IMODE((tmp_path / "anime.sqlite3").stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("ttl_then", "ttl_now", "served"),
    [
        (WEEK, 60.0, False),  # lowered (titles changed upstream): a week's TTL does not stick to old answers
        (WEEK, WEEK, True),
        (60.0, WEEK, True),  # raised: answers a minute's TTL let go are good again
        (60.0, 60.0, False),
    ],
)
def test_the_ttl_in_force_at_the_lookup_applies_to_answers_already_cached(
    tmp_path: Path, ttl_then: float, ttl_now: float, served: bool
) -> None:
    """An answer stored while the TTL was ``ttl_then`` and read 120 s later, the TTL set to ``ttl_now``."""
    clock = Clock()
    path = tmp_path / "anime.sqlite3"
    cache = AnimeCache(path, clock=clock)

    async def scenario() -> dict[int, Any]:
        assert await cache.get("anilist", [11887], ttl_seconds=ttl_then) == {}
        await cache.put("anilist", {11887: KOKORO, 5: None})
        clock.now += 120
        return await cache.get("anilist", [11887, 5], ttl_seconds=ttl_now)

    assert anyio.run(scenario) == ({11887: KOKORO, 5: None} if served else {})
    cache.close()


def test_an_answer_is_stale_once_as_old_as_the_ttl_and_while_stored_after_now(tmp_path: Path) -> None:
    clock = Clock()
    cache = AnimeCache(tmp_path / "anime.sqlite3", clock=clock)
    stored = clock.now
    anyio.run(cache.put, "anilist", {11887: KOKORO})

    def found_at(now: float) -> bool:
        clock.now = now
        return anyio.run(partial(cache.get, "anilist", [11887], ttl_seconds=60.0)) == {11887: KOKORO}

    assert found_at(stored)
    assert found_at(stored + 59.5)
    assert not found_at(stored + 60)
    assert not found_at(stored - 1)  # the clock was set back: its age is unknown
    cache.close()


def test_a_file_of_version_0_opens_and_its_answers_of_unknown_age_are_asked_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Version 0 kept an expiry fixed by the TTL at the store (a week, or more): not an age to check
    against today's TTL. The file opens without a warning, empty, and caches again."""
    path = tmp_path / "anime.sqlite3"
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE anime (provider TEXT NOT NULL, anilist_id INTEGER NOT NULL, expires_at REAL NOT NULL, "
        "anime TEXT, PRIMARY KEY (provider, anilist_id))"
    )
    old.execute("INSERT INTO anime VALUES ('anilist', 11887, 4e9, ?)", (KOKORO.model_dump_json(),))
    old.commit()
    old.close()
    with caplog.at_level(logging.WARNING, logger="anisearch"):
        cache = AnimeCache(path)
        assert cache.usable
        assert anyio.run(partial(cache.get, "anilist", [11887], ttl_seconds=60.0)) == {}
        anyio.run(cache.put, "anilist", {11887: KOKORO})
        assert anyio.run(partial(cache.get, "anilist", [11887], ttl_seconds=60.0)) == {11887: KOKORO}
    cache.close()
    assert caplog.text == ""
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert AnimeCache(path).clear() == 1  # opened again as it is


def version_0(path: Path) -> sqlite3.Connection:
    """A metadata cache file as version 0 left it (WAL, one answer expiring in 2096), its connection open."""
    old = sqlite3.connect(path, isolation_level=None)
    old.execute("PRAGMA journal_mode=WAL")
    old.execute(
        "CREATE TABLE IF NOT EXISTS anime (provider TEXT NOT NULL, anilist_id INTEGER NOT NULL, "
        "expires_at REAL NOT NULL, anime TEXT, PRIMARY KEY (provider, anilist_id))"
    )
    old.execute("INSERT OR REPLACE INTO anime VALUES ('anilist', 11887, 4e9, ?)", (KOKORO.model_dump_json(),))
    return old


def test_a_version_0_process_still_running_never_writes_expiries_as_times_stored(tmp_path: Path) -> None:
    """An older anisearch, started after the upgrade, writes its expiries (a week ahead) where it always
    did; they were read as times stored, served as fresh for up to twice the TTL."""
    clock = Clock()
    path = tmp_path / "anime.sqlite3"
    version_0(path).close()
    cache = AnimeCache(path, clock=clock)  # migrated
    older = version_0(path)  # an older version's process opens the file and stores an answer
    older.execute(
        "INSERT OR REPLACE INTO anime VALUES ('anilist', 21, ?, ?)",
        (clock.now + WEEK, KOKORO.model_copy(update={"anilist_id": 21}).model_dump_json()),
    )
    older.close()
    for later in (0.0, WEEK + 3600, 2 * WEEK - 3600):
        clock.now += later
        assert anyio.run(partial(cache.get, "anilist", [21, 11887], ttl_seconds=WEEK)) == {}
    cache.close()


def test_a_file_another_process_holds_at_the_first_open_is_opened_at_a_later_lookup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A version 0 file another process is writing: a search's first open gave up after 10 s, on its
    event loop. It waits 100 ms; the lookups meanwhile answer nothing, and a lookup after the other
    process is done (once the few seconds between tries have passed) migrates the file and uses it."""
    from anisearch import _anime_cache
    from anisearch._anime_cache import SEARCH_OPEN_WAIT_MS

    monkeypatch.setattr(_anime_cache, "_REOPEN_SECONDS", 0.0)

    path = tmp_path / "anime.sqlite3"
    writer = version_0(path)
    writer.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        cache = AnimeCache(path, open_wait_ms=SEARCH_OPEN_WAIT_MS)
        waited = time.monotonic() - started
        assert cache.usable  # to be opened again
        assert anyio.run(partial(cache.get, "anilist", [11887], ttl_seconds=WEEK)) == {}
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert waited < 3  # 0.1 s and the open's own steps; 10 s before
    anyio.run(cache.put, "anilist", {11887: KOKORO})
    assert anyio.run(partial(cache.get, "anilist", [11887], ttl_seconds=WEEK)) == {11887: KOKORO}
    cache.close()


def test_lookups_while_another_process_holds_the_file_do_not_queue_behind_each_other(tmp_path: Path) -> None:
    """Eight lookups at once, the file held by another process: each retried the open for 1 s, one after
    another (the eighth answered after 8 s). One retries in a while; the others go on without the cache."""
    path = tmp_path / "anime.sqlite3"
    writer = version_0(path)
    writer.execute("BEGIN IMMEDIATE")
    try:
        cache = AnimeCache(path, open_wait_ms=100)

        async def lookups() -> float:
            started = anyio.current_time()
            async with anyio.create_task_group() as group:
                for _ in range(8):
                    group.start_soon(partial(cache.get, "anilist", [11887], ttl_seconds=WEEK))
            return anyio.current_time() - started

        took = anyio.run(lookups)
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert took < 3  # 8 s before
    cache.close()


def test_clearing_a_file_another_process_holds_says_it_was_not_cleared(tmp_path: Path) -> None:
    """``anisearch cache clear`` said nothing, the titles left in place."""
    path = tmp_path / "anime.sqlite3"
    writer = version_0(path)
    writer.execute("BEGIN IMMEDIATE")
    try:
        cache = AnimeCache(path, open_wait_ms=100)
        cleared = cache.clear()
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert cleared is None  # 0 before: as if there had been nothing to clear
    assert cache.problem == "another process holds it"


def test_a_file_of_another_schema_is_replaced(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "anime.sqlite3"
    with sqlite3.connect(path) as other:  # a later version's
        other.execute("CREATE TABLE anime (provider TEXT, anilist_id INTEGER, fetched_at TEXT, anime TEXT)")
        other.execute("PRAGMA user_version=7")
    with caplog.at_level(logging.WARNING, logger="anisearch"):
        cache = AnimeCache(path)
    assert cache.usable
    assert "another schema (version 7)" in caplog.text
    assert "started an empty one" in caplog.text
    anyio.run(cache.put, "anilist", {11887: KOKORO})
    assert anyio.run(partial(cache.get, "anilist", [11887], ttl_seconds=60.0)) == {11887: KOKORO}
    cache.close()


def test_a_corrupt_file_is_replaced(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "anime.sqlite3"
    path.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000)  # a cache file the disk damaged
    with caplog.at_level(logging.WARNING, logger="anisearch"):
        cache = AnimeCache(path)
    assert cache.usable
    assert "started an empty one" in caplog.text
    anyio.run(cache.put, "anilist", {11887: KOKORO})
    assert anyio.run(partial(cache.get, "anilist", [11887], ttl_seconds=60.0)) == {11887: KOKORO}


def test_a_cache_another_process_started_afresh_meanwhile_is_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "anime.sqlite3"
    path.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000)
    fresh = AnimeCache(tmp_path / "fresh.sqlite3")  # the other process's new cache, with an answer in it
    anyio.run(fresh.put, "anilist", {11887: KOKORO})
    fresh.close()
    opened: list[AnimeCache] = []
    with resetting(path):  # the other process is starting it afresh
        opening = threading.Thread(target=lambda: opened.append(AnimeCache(path)))
        opening.start()
        opening.join(0.3)
        assert opening.is_alive()  # waits for the other's reset
        (tmp_path / "fresh.sqlite3").replace(path)
    opening.join(10)
    (cache,) = opened
    assert cache.usable
    assert anyio.run(partial(cache.get, "anilist", [11887], ttl_seconds=60.0)) == {11887: KOKORO}  # kept
    assert "started an empty one" not in caplog.text
    cache.close()


def test_an_unusable_place_warns_once_and_caches_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the directory should be")
    with caplog.at_level(logging.WARNING, logger="anisearch"):
        cache = AnimeCache(blocker / "anime.sqlite3")
        anyio.run(cache.put, "anilist", {11887: KOKORO})
        assert anyio.run(partial(cache.get, "anilist", [11887], ttl_seconds=60.0)) == {}
    assert not cache.usable
    assert caplog.text.count("metadata cache") == 1


def test_with_a_redis_result_cache_the_metadata_cache_stays_a_local_file(tmp_path: Path) -> None:
    from anisearch import Settings
    from anisearch._enrich import open_enricher

    async def never(*args: Any) -> Any:
        raise AssertionError

    settings = Settings.load(cache="redis://127.0.0.1:1/0", cache_dir=tmp_path / "cache", metadata="anilist")
    enricher = open_enricher(settings, never, never)
    enricher.close()
    assert (tmp_path / "cache" / "anime.sqlite3").is_file()
    assert not Path("redis:").exists()


def test_a_lookup_waits_for_another_process_no_longer_than_the_search_deadline(tmp_path: Path) -> None:
    """The cache is disposable: while another process holds the file, a read or a store gives up by the
    search's deadline (0.1 s here; 1 s at most), where it waited 10 s."""
    import sqlite3
    import time

    from anisearch._limits import search_deadline

    path = tmp_path / "anime.sqlite3"
    cache = AnimeCache(path)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process's long write: not even a read gets in

    async def scenario() -> tuple[dict[int, Any], float]:
        token = search_deadline.set(anyio.current_time() + 0.1)
        try:
            started = time.monotonic()
            await cache.put("anilist", {11887: KOKORO})
            found = await cache.get("anilist", [11887], ttl_seconds=3600)
            return found, time.monotonic() - started
        finally:
            search_deadline.reset(token)

    try:
        found, waited = anyio.run(scenario)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert found == {}
    assert waited < 2  # both steps: not the 10 s each waited
    assert cache.usable
    cache.close()


def test_clear_forgets_every_answer(tmp_path: Path) -> None:
    cache = AnimeCache(tmp_path / "anime.sqlite3")

    async def scenario() -> dict[int, Any]:
        await cache.put("anilist", {11887: KOKORO, 5: None})
        assert cache.clear() == 2
        return await cache.get("anilist", [11887, 5], ttl_seconds=3600)

    assert anyio.run(scenario) == {}
    cache.close()

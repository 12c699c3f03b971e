"""The metadata cache: per-AniList-ID answers with a TTL, unknown IDs remembered, disposable when broken."""

from __future__ import annotations

import logging
import stat
import threading
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest

from anisearch._anime_cache import AnimeCache
from anisearch._models import Anime, Title
from anisearch._sqlite_busy import resetting

KOKORO = Anime(anilist_id=11887, mal_id=11887, title=Title(romaji="Kokoro Connect"), is_adult=False)


def test_answers_and_unknown_ids_come_back_until_they_expire(tmp_path: Path) -> None:
    cache = AnimeCache(tmp_path / "anime.sqlite3")

    async def scenario() -> None:
        await cache.put("anilist", {11887: KOKORO, 5: None}, ttl_seconds=3600)
        await cache.put("anilist", {21: KOKORO.model_copy(update={"anilist_id": 21})}, ttl_seconds=-1)
        assert await cache.get("anilist", [11887, 5, 21, 99]) == {11887: KOKORO, 5: None}
        assert await cache.get("other", [11887]) == {}

    anyio.run(scenario)
    cache.close()
    assert stat.S_IMODE((tmp_path / "anime.sqlite3").stat().st_mode) == 0o600


def test_a_corrupt_file_is_replaced(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "anime.sqlite3"
    path.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000)  # a cache file the disk damaged
    with caplog.at_level(logging.WARNING, logger="anisearch"):
        cache = AnimeCache(path)
    assert cache.usable
    assert "started an empty one" in caplog.text
    anyio.run(partial(cache.put, "anilist", {11887: KOKORO}, ttl_seconds=60.0))
    assert anyio.run(cache.get, "anilist", [11887]) == {11887: KOKORO}


def test_a_cache_another_process_started_afresh_meanwhile_is_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "anime.sqlite3"
    path.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000)
    fresh = AnimeCache(tmp_path / "fresh.sqlite3")  # the other process's new cache, with an answer in it
    anyio.run(partial(fresh.put, "anilist", {11887: KOKORO}, ttl_seconds=60.0))
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
    assert anyio.run(cache.get, "anilist", [11887]) == {11887: KOKORO}  # kept, not deleted again
    assert "started an empty one" not in caplog.text
    cache.close()


def test_an_unusable_place_warns_once_and_caches_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the directory should be")
    with caplog.at_level(logging.WARNING, logger="anisearch"):
        cache = AnimeCache(blocker / "anime.sqlite3")
        anyio.run(partial(cache.put, "anilist", {11887: KOKORO}, ttl_seconds=60.0))
        assert anyio.run(cache.get, "anilist", [11887]) == {}
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
            await cache.put("anilist", {11887: KOKORO}, ttl_seconds=3600)
            found = await cache.get("anilist", [11887])
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
        await cache.put("anilist", {11887: KOKORO, 5: None}, ttl_seconds=3600)
        assert cache.clear() == 2
        return await cache.get("anilist", [11887, 5])

    assert anyio.run(scenario) == {}
    cache.close()

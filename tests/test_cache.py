"""The result cache: stores answers, expires them, drops expired previews, and is disposable."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import stat
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import httpx
import pytest
from tests.forked import Job, run_forked

from anisearch import Client, Hit, SearchResult, Settings
from anisearch._cache import ResultCache, cache_key
from anisearch._limits import search_deadline
from anisearch._sqlite_busy import resetting, set_aside

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def result(expires: datetime | None) -> SearchResult:
    hit = Hit(
        provider="tracemoe",
        anilist_id=11887,
        episode=5,
        similarity=0.97,
        video_url="https://x/video/1",
        image_url="https://x/image/1",
        preview_expires_at=expires,
    )
    return SearchResult(hits=[hit], provider="tracemoe", frames_searched=10)


async def test_a_stored_answer_comes_back(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path / "c.sqlite3", ttl_seconds=60)
    key = cache_key("tracemoe", "sha256:abc", ["opts"])
    assert await cache.get(key) is None
    later = datetime.now(UTC) + timedelta(hours=1)
    await cache.put(key, result(later))
    back = await cache.get(key)
    assert back is not None
    assert back.hits[0].video_url == "https://x/video/1"
    assert cache.info().entries == 1


async def test_expired_previews_are_dropped_but_the_hit_stays(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path / "c.sqlite3", ttl_seconds=60)
    await cache.put("k", result(datetime.now(UTC) - timedelta(minutes=1)))
    back = await cache.get("k")
    assert back is not None
    assert back.hits[0].anilist_id == 11887
    assert (back.hits[0].video_url, back.hits[0].image_url) == (None, None)


async def test_entries_expire_after_the_ttl_and_clear_empties(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path / "c.sqlite3", ttl_seconds=0.001)
    await cache.put("k", result(None))
    import anyio

    await anyio.sleep(0.01)
    assert await cache.get("k") is None
    assert cache.info().expired == 1
    assert cache.clear() == 1
    assert cache.info().entries == cache.info().expired == 0


def test_keys_differ_by_provider_image_and_options() -> None:
    keys = {
        cache_key("tracemoe", "sha256:a", ["x"]),
        cache_key("whatanimeisthis", "sha256:a", ["x"]),
        cache_key("tracemoe", "sha256:b", ["x"]),
        cache_key("tracemoe", "sha256:a", ["y"]),
    }
    assert len(keys) == 4


# ---------------------------------------------------------------- the cache is disposable


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == "anisearch"]


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda path: path.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000), id="corrupt"),
        pytest.param(lambda path: path.write_bytes(bytes(8192)), id="zeroed by a crash"),
        pytest.param(
            lambda path: sqlite3.connect(path).executescript(
                "CREATE TABLE results (key TEXT, value BLOB); PRAGMA user_version=7;"
            ),
            id="another schema",
        ),
    ],
)
async def test_a_broken_cache_is_rebuilt_and_works(
    tmp_path: Path, damage: Callable[[Path], object], caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "c.sqlite3"
    damage(path)
    before = path.read_bytes() if path.exists() else None
    cache = ResultCache(path, ttl_seconds=60)
    assert cache.usable
    await cache.put("k", result(None))
    assert await cache.get("k") is not None
    assert len(warnings_of(caplog)) == 1
    assert "started an empty one" in warnings_of(caplog)[0]
    if before:  # moved aside, not deleted: a file misjudged as a damaged cache is not lost
        assert path.with_name("c.sqlite3.damaged").read_bytes() == before


async def test_a_cache_rebuilt_by_another_process_meanwhile_is_used_as_it_is(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "c.sqlite3"
    path.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000)
    elsewhere = ResultCache(tmp_path / "fresh.sqlite3", ttl_seconds=60)
    await elsewhere.put("k", result(None))
    elsewhere.close()
    with resetting(path):  # another process is rebuilding it
        opening = threading.Thread(target=lambda: opened.append(ResultCache(path, ttl_seconds=60)))
        opened: list[ResultCache] = []
        opening.start()
        opening.join(0.3)
        assert opening.is_alive()  # waits for the other's rebuild
        set_aside(path)
        (tmp_path / "fresh.sqlite3").replace(path)  # the other process's new cache, with an answer in it
    opening.join(10)
    (cache,) = opened
    assert await cache.get("k") is not None  # opened as it is, not moved aside again
    assert not path.with_name("c.sqlite3.damaged-2").exists()
    assert warnings_of(caplog) == []


async def test_a_broken_cache_is_rebuilt_without_filelock_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "filelock", None)  # an install that predates the dependency
    path = tmp_path / "c.sqlite3"
    path.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000)
    cache = ResultCache(path, ttl_seconds=60)
    assert cache.usable
    await cache.put("k", result(None))
    assert await cache.get("k") is not None


async def test_a_file_that_is_not_sqlite_is_never_deleted_and_the_cache_is_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "notes.txt"  # the cache setting pointed at somebody's file by mistake
    path.write_bytes(b"my notes\n" * 600)
    path.chmod(0o644)
    cache = ResultCache(path, ttl_seconds=60)
    assert not cache.usable
    await cache.put("k", result(None))
    assert await cache.get("k") is None
    assert cache.clear() == 0  # "anisearch cache clear" too
    assert not cache.usable
    assert path.read_bytes() == b"my notes\n" * 600
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert len(warnings_of(caplog)) == 1
    assert "not a SQLite file" in warnings_of(caplog)[0]


async def test_a_cache_that_cannot_be_opened_warns_once_and_is_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "c.sqlite3"
    path.mkdir()  # a directory where the file should be
    cache = ResultCache(path, ttl_seconds=60)
    assert not cache.usable
    await cache.put("k", result(None))
    assert await cache.get("k") is None
    assert cache.info().entries == 0
    assert len(warnings_of(caplog)) == 1
    assert "searching without it" in warnings_of(caplog)[0]


async def test_a_cache_that_turns_read_only_skips_stores_and_still_answers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Stores into a file that turned read-only are skipped (one warning); what it holds is still found."""
    path = tmp_path / "c.sqlite3"
    cache = ResultCache(path, ttl_seconds=60)
    await cache.put("a", result(None))
    cache.close()
    cache._db = sqlite3.connect(
        f"file:{path}?mode=ro", uri=True, check_same_thread=False, isolation_level=None
    )
    await cache.put("b", result(None))
    await cache.put("c", result(None))
    assert cache.usable
    assert await cache.get("a") is not None
    assert await cache.get("b") is None
    assert len(warnings_of(caplog)) == 1
    assert "readonly" in warnings_of(caplog)[0]


async def test_a_store_that_meets_a_passing_failure_leaves_the_cache_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Another process holding the write lock past the store's wait (a backup, a ``sqlite3`` shell), or a
    disk full for a moment, skips that store only: the answers stored before are found, and the next
    store works (the first such failure turned the cache off until the process ended)."""
    path = tmp_path / "c.sqlite3"
    cache = ResultCache(path, ttl_seconds=60)
    await cache.put("a", result(None))
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process writing, for longer than a store waits
    started = time.monotonic()
    await cache.put("b", result(None))
    waited = time.monotonic() - started
    holder.execute("ROLLBACK")
    holder.close()
    assert waited < 5  # not the 10 s a lookup may wait: the answer is in hand
    assert cache.usable
    assert await cache.get("a") is not None
    await cache.put("c", result(None))
    assert await cache.get("c") is not None
    assert "locked" in warnings_of(caplog)[0]


async def test_a_store_waits_for_a_lock_no_longer_than_the_search_deadline(tmp_path: Path) -> None:
    """The answer is in hand: a store meeting another process's write lock gives up at the search's
    deadline (0.1 s here), not after the store's own second."""
    path = tmp_path / "c.sqlite3"
    cache = ResultCache(path, ttl_seconds=60)
    await cache.put("a", result(None))
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    token = search_deadline.set(anyio.current_time() + 0.1)
    try:
        started = time.monotonic()
        await cache.put("b", result(None))
        waited = time.monotonic() - started
    finally:
        search_deadline.reset(token)
        holder.execute("ROLLBACK")
        holder.close()
    assert waited < 0.8  # the store alone would wait 1 s
    assert await cache.get("b") is None  # skipped, and the cache is still on
    assert cache.usable


async def test_expired_answers_are_deleted_as_new_ones_are_stored(tmp_path: Path) -> None:
    """The file does not grow with answers nobody can use: past their TTL they are deleted."""
    path = tmp_path / "c.sqlite3"
    old = ResultCache(path, ttl_seconds=0.01)
    for n in range(5):
        await old.put(f"old-{n}", result(None), sources=[(f"source-{n}", f"old-{n}")])
    old.close()
    await anyio.sleep(0.05)
    cache = ResultCache(path, ttl_seconds=60)  # a new process: its first store prunes
    assert cache.info().expired == 5
    await cache.put("new", result(None))
    shown = cache.info()
    assert (shown.entries, shown.expired) == (1, 0)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*) FROM sources").fetchone()[0] == 0


def test_clear_always_succeeds(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    cache = ResultCache(path, ttl_seconds=60)
    cache.close()
    path.write_bytes(b"SQLite format 3\x00" + b"garbage" * 1000)  # corrupted under an open cache
    assert cache.clear() == 0
    assert cache.usable
    assert cache.info().entries == 0
    unusable = ResultCache(tmp_path, ttl_seconds=60)  # a directory: nothing to open, nothing to clear
    assert unusable.clear() == 0


async def test_clear_keeps_a_cache_another_process_started_afresh_meanwhile(tmp_path: Path) -> None:
    """Two "anisearch cache clear" of a damaged cache at once: the second clears the fresh cache the first
    made, and does not move it aside (the first's open connection would write into the moved file)."""
    path = tmp_path / "c.sqlite3"
    cache = ResultCache(path, ttl_seconds=60)
    cache.close()
    path.write_bytes(b"SQLite format 3\x00" + b"garbage" * 1000)
    fresh = ResultCache(tmp_path / "fresh.sqlite3", ttl_seconds=60)  # the other process's fresh cache
    await fresh.put("k", result(None))
    fresh.close()
    with resetting(path):  # the other process is starting it afresh
        clearing = threading.Thread(target=lambda: cleared.append(cache.clear()))
        cleared: list[int] = []
        clearing.start()
        clearing.join(0.3)
        assert clearing.is_alive()  # waits for the other's reset
        set_aside(path)
        (tmp_path / "fresh.sqlite3").replace(path)
    clearing.join(10)
    assert cleared == [0]
    assert cache.usable
    assert not path.with_name("c.sqlite3.damaged-2").exists()  # the fresh file stayed in place
    first = ResultCache(path, ttl_seconds=60)
    assert first.info().entries == 0  # and was emptied: the other process sees it cleared
    first.close()


def test_the_cache_file_and_its_directory_are_private(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "c.sqlite3"
    os.umask(0o022)
    cache = ResultCache(path, ttl_seconds=60)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    for extra in path.parent.glob("c.sqlite3-*"):
        assert stat.S_IMODE(extra.stat().st_mode) == 0o600
    cache.close()


def test_a_search_answers_with_a_corrupt_cache(
    tmp_path: Path, samples: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "results.sqlite3"
    path.write_bytes(b"SQLite format 3\x00" + b"\xff" * 7000)  # a cache file the disk damaged
    body = json.loads((samples / "api-v1-search-tinted-good-2021.json").read_text())
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=body))
    settings = Settings.load(
        providers=["tracemoe"], provider_options={"tracemoe": {"url": "https://trace.test"}}, cache=str(path)
    )
    image = (samples / "tinted-good.jpg").read_bytes()
    with Client(settings, transport) as client:
        assert client.search(image).best is not None
        assert client.search(image).cached
    assert len(warnings_of(caplog)) == 1


def test_processes_opening_a_new_cache_at_once_never_delete_each_others(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "c.sqlite3"
    script = (
        "import sys, anyio\n"
        "from pathlib import Path\n"
        "from anisearch import SearchResult\n"
        "from anisearch._cache import ResultCache\n"
        "cache = ResultCache(Path(sys.argv[1]), ttl_seconds=60)\n"
        "anyio.run(cache.put, sys.argv[2], SearchResult(hits=[], provider='tracemoe'))\n"
        "print(cache.usable)\n"
    )
    jobs = [Job([str(path), f"k{i}"]) for i in range(4)]  # four processes, released at once
    workers = run_forked(script, jobs, tmp_path / "processes", together=True, preload=["anisearch._cache"])
    assert [(worker.returncode, worker.stdout.strip()) for worker in workers] == [(0, "True")] * 4
    cache = ResultCache(path, ttl_seconds=60)
    assert cache.info().entries == 4
    assert warnings_of(caplog) == []


async def test_a_due_prune_survives_a_busy_file_and_deletes_at_most_a_batch(tmp_path: Path) -> None:
    """The first store of a process prunes even when another process holds the file for a moment (the
    prune was dropped when the store fell back to its thread), and one prune deletes at most 500 answers
    (a long-unused file is emptied over several stores, never in one long stall)."""
    path = tmp_path / "c.sqlite3"
    ResultCache(path, ttl_seconds=60).close()
    with sqlite3.connect(path) as db:  # 600 answers that expired long ago
        payload = result(None).model_dump_json()
        db.executemany(
            "INSERT INTO results (key, provider, stored_at, expires_at, result) VALUES (?, ?, 0, 1, ?)",
            [(f"old-{n}", "tracemoe", payload) for n in range(600)],
        )
    cache = ResultCache(path, ttl_seconds=60)
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    releasing = threading.Timer(0.3, lambda: holder.execute("ROLLBACK"))
    releasing.start()
    await cache.put("new", result(None))
    releasing.join()
    holder.close()
    shown = cache.info()
    assert (shown.entries, shown.expired) == (1, 100)

"""The result cache: stores answers, expires them, drops expired previews."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from anisearch import Hit, SearchResult
from anisearch._cache import ResultCache, cache_key

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

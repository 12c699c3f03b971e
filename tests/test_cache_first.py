"""A repeated source is answered from the cache before it is decoded."""

from __future__ import annotations

import io
import sqlite3
import subprocess
import sys
import threading
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import respx
from PIL import Image
from tests.conftest import WeakerWhatAnimeIsThis

from anisearch import AsyncClient, Client, Hit, SearchResult, Settings, _image
from anisearch._cache import ResultCache, WouldBlock
from anisearch._cache_first import choose

BASE = "https://trace.test"


def count_hops(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the functions run in worker threads from now on (SQLite ledger calls left out)."""
    hops: list[str] = []
    real_run_sync = anyio.to_thread.run_sync

    async def counted(function: Any, *args: Any, **kwargs: Any) -> Any:
        name = getattr(getattr(function, "func", function), "__name__", "")
        if name in {"read_find_prepare", "prepare", "_get", "_put"}:
            hops.append(name)
        return await real_run_sync(function, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counted)
    return hops


def client(mock: respx.MockRouter) -> Client:
    settings = Settings.load(providers=["tracemoe"], provider_options={"tracemoe": {"url": BASE}})
    return Client(settings, httpx.MockTransport(mock.async_handler))


def test_a_repeated_source_is_answered_without_decoding_it(
    mock: respx.MockRouter, body: dict[str, Any], samples: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    route = mock.post(f"{BASE}/search").respond(200, json=body)
    with client(mock) as searcher:
        first = searcher.search(samples / "tinted-good.jpg")

        def no_decoding(*_: object, **__: object) -> None:
            raise AssertionError("the source was decoded again")

        monkeypatch.setattr(_image, "prepare", no_decoding)
        again = searcher.search(samples / "tinted-good.jpg")
    assert (first.cached, again.cached) == (False, True)
    assert again.hits == first.hits
    assert [attempt.outcome for attempt in again.attempts] == ["cached"]
    assert route.call_count == 1


def test_other_bytes_of_the_same_picture_still_hit_through_the_descriptor(
    mock: respx.MockRouter, body: dict[str, Any], samples: Path
) -> None:
    route = mock.post(f"{BASE}/search").respond(200, json=body)
    with Image.open(samples / "tinted-good.jpg") as image:
        png = io.BytesIO()
        image.save(png, "PNG")
    with client(mock) as searcher:
        first = searcher.search(samples / "tinted-good.jpg")
        other = searcher.search(png.getvalue())  # a new source: decoded once, then found by descriptor
        same = searcher.search(png.getvalue())
    assert (first.cached, other.cached, same.cached) == (False, True, True)
    assert route.call_count == 1


def test_find_stops_at_an_unknown_source_and_reports_a_sure_miss(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path / "c.sqlite3", ttl_seconds=60)
    stored = SearchResult(hits=[Hit(provider="b", anilist_id=1, similarity=0.9)], provider="b")
    pairs = [("source-a", "key-a"), ("source-b", "key-b")]  # a asked first, no answer; b answered
    anyio.run(partial(cache.put, "key-b", stored, sources=pairs))
    found = cache.find(["source-a", "source-b"])
    assert found is not None
    assert found[0] == 1
    assert SearchResult.model_validate_json(found[1]) == stored
    assert cache.find(["source-unknown", "source-b"]) is None  # the first provider cannot be ruled out
    assert cache.find(["source-a"]) == (-1, "")


def test_repeated_bytes_are_answered_on_the_event_loop_without_a_worker_thread(
    mock: respx.MockRouter, body: dict[str, Any], samples: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker thread costs more than the lookup (a hash, two indexed SELECTs on the open file)."""
    data = (samples / "tinted-good.jpg").read_bytes()
    route = mock.post(f"{BASE}/search").respond(200, json=body)
    with client(mock) as searcher:
        first = searcher.search(data)

        async def no_thread(*_: object, **__: object) -> None:
            raise AssertionError("a worker thread was used")

        with monkeypatch.context() as patched:
            patched.setattr(anyio.to_thread, "run_sync", no_thread)
            again = searcher.search(data)
    assert (first.cached, again.cached) == (False, True)
    assert again.hits == first.hits
    assert route.call_count == 1


def test_a_busy_cache_is_read_in_a_worker_thread_instead(
    mock: respx.MockRouter, body: dict[str, Any], samples: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While another thread holds the cache (writing an answer), the event loop does not wait for it."""
    data = (samples / "tinted-good.jpg").read_bytes()
    route = mock.post(f"{BASE}/search").respond(200, json=body)
    with client(mock) as searcher:
        searcher.search(data)
        hops = count_hops(monkeypatch)
        cache = searcher._async._cache  # the open cache, to hold its lock
        assert isinstance(cache, ResultCache)
        release = threading.Timer(0.3, cache._lock.release)
        cache._lock.acquire()
        release.start()
        again = searcher.search(data)
        release.join()
    assert again.cached
    assert route.call_count == 1
    assert hops == ["read_find_prepare"]  # looked up in a worker thread, which waited for the lock


def test_find_without_blocking_raises_would_block_and_keeps_the_cache(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path / "c.sqlite3", ttl_seconds=60)
    holder = threading.Thread(target=cache._lock.acquire)  # another thread writing
    holder.start()
    holder.join()
    with pytest.raises(WouldBlock):
        cache.find(["source-a"], block=False)
    cache._lock.release()

    class Locked:  # the file locked by another process: SQLite answers SQLITE_BUSY at once
        def execute(self, sql: str, *_: object) -> Any:
            if sql.startswith("PRAGMA"):
                return None
            error = sqlite3.OperationalError("database is locked")
            error.sqlite_errorcode = sqlite3.SQLITE_BUSY
            raise error

    real, cache._db = cache._db, Locked()  # type: ignore[assignment]
    with pytest.raises(WouldBlock):
        cache.find(["source-a"], block=False)
    assert cache.usable  # a busy file is not a broken one
    cache._db = real
    assert cache.find(["source-a"], block=False) is None  # unknown source


def test_a_miss_is_prepared_in_the_same_worker_thread_as_the_lookup(
    mock: respx.MockRouter, body: dict[str, Any], samples: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    route = mock.post(f"{BASE}/search").respond(200, json=body)
    hops = count_hops(monkeypatch)
    with client(mock) as searcher:
        result = searcher.search(samples / "tinted-good.jpg")
    assert not result.cached
    assert route.call_count == 1
    assert hops == ["read_find_prepare"]  # no second hop to prepare the image, none to use the cache


def test_an_answer_is_stored_in_a_worker_thread_while_another_thread_holds_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = ResultCache(tmp_path / "c.sqlite3", ttl_seconds=60)
    hops = count_hops(monkeypatch)
    stored = SearchResult(hits=[Hit(provider="b", anilist_id=1, similarity=0.9)], provider="b")
    cache._lock.acquire()
    release = threading.Timer(0.3, cache._lock.release)
    release.start()
    anyio.run(partial(cache.put, "key-b", stored, sources=[("source-b", "key-b")]))
    release.join()
    assert hops == ["_put"]  # the event loop did not wait for the lock
    found = cache.find(["source-b"], block=False)
    assert found is not None
    assert SearchResult.model_validate_json(found[1]) == stored


# ---------------------------------------------------------------- the answer a search would give


DEMO = Path(__file__).resolve().parents[1] / "examples" / "tinted-good.jpg"


def both_emulated(tmp_path: Path) -> Settings:
    """whatanimeisthis first, then trace.moe, at the emulated hosts ``wait.test`` and ``trace.test``, with a
    result cache of the test's own."""
    return Settings.load(
        providers=["whatanimeisthis", "tracemoe"],
        provider_options={
            "tracemoe": {"url": "http://trace.test"},
            "whatanimeisthis": {"url": "http://wait.test"},
        },
        ledger="memory://",
        cache=str(tmp_path / "cache.sqlite3"),
        metadata="off",
    )


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("strategy", ["fallback", "fanout"])
@pytest.mark.anyio
async def test_a_repeated_search_is_answered_from_the_cache_as_it_was_answered_the_first_time(
    tmp_path: Path, strategy: str
) -> None:
    from anisearch_emulators.tracemoe import create_app as tracemoe_app
    from anisearch_emulators.whatanimeisthis import create_app as whatanimeisthis_app

    transport = WeakerWhatAnimeIsThis({"trace.test": tracemoe_app(), "wait.test": whatanimeisthis_app()})
    settings = both_emulated(tmp_path)  # the weaker is asked first
    async with AsyncClient(settings, transport) as searcher:
        first = await searcher.search(DEMO, min_similarity=0.9, strategy=strategy)  # type: ignore[arg-type]
        again = await searcher.search(DEMO, min_similarity=0.9, strategy=strategy)  # type: ignore[arg-type]
        as_bytes = await searcher.search(DEMO.read_bytes(), min_similarity=0.9, strategy=strategy)  # type: ignore[arg-type]
    assert first.best is not None
    assert first.best.similarity > 0.9  # tracemoe's answer: whatanimeisthis's was below the threshold
    assert (again.cached, as_bytes.cached) == (True, True)
    for repeat in (again, as_bytes):
        assert repeat.best == first.best  # not whatanimeisthis's weaker answer, cached first in order
        assert [hit.provider for hit in repeat.hits] == [hit.provider for hit in first.hits]
        # whose answers it holds: a fanout merges every provider's, a fallback gives one
        asked = [a.provider for a in first.attempts] if strategy == "fanout" else [first.provider]
        assert [(a.provider, a.outcome) for a in repeat.attempts] == [(name, "cached") for name in asked]


class _TraceMoeDown(WeakerWhatAnimeIsThis):
    """As :class:`WeakerWhatAnimeIsThis`; trace.moe answers 503 while ``down``; searches counted by host."""

    down = True

    def __init__(self, apps: dict[str, Any]) -> None:
        super().__init__(apps)
        self.searches: dict[str, int] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("search"):
            self.searches[request.url.host] = self.searches.get(request.url.host, 0) + 1
            if self.down and request.url.host == "trace.test":
                return httpx.Response(503, text="<html>Service Unavailable</html>")
        return await super().handle_async_request(request)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("strategy", ["fallback", "fanout"])
@pytest.mark.anyio
async def test_a_provider_whose_answer_is_cached_is_not_asked_again_when_another_must_be(
    tmp_path: Path, strategy: str
) -> None:
    from anisearch_emulators.tracemoe import create_app as tracemoe_app
    from anisearch_emulators.whatanimeisthis import create_app as whatanimeisthis_app

    transport = _TraceMoeDown({"trace.test": tracemoe_app(), "wait.test": whatanimeisthis_app()})
    settings = both_emulated(tmp_path)
    async with AsyncClient(settings, transport) as searcher:
        # whatanimeisthis answers weakly, trace.moe is down: the weak answer is all there is
        first = await searcher.search(DEMO, min_similarity=0.9, strategy=strategy)  # type: ignore[arg-type]
        transport.down = False
        again = await searcher.search(DEMO, min_similarity=0.9, strategy=strategy)  # type: ignore[arg-type]
        third = await searcher.search(DEMO, min_similarity=0.9, strategy=strategy)  # type: ignore[arg-type]
    assert [(a.provider, a.outcome) for a in first.attempts] == [
        ("whatanimeisthis", "ok"),
        ("tracemoe", "failed"),
    ]
    assert first.best is not None
    assert first.best.similarity < 0.9
    # the re-run asks only trace.moe: whatanimeisthis's weak answer comes from the cache, at no quota
    assert [(a.provider, a.outcome) for a in again.attempts] == [
        ("whatanimeisthis", "cached"),
        ("tracemoe", "ok"),
    ]
    assert again.best is not None
    assert again.best.similarity > 0.9
    assert again.best.provider == "tracemoe"
    assert transport.searches == {"wait.test": 1, "trace.test": 2}  # one refused, one answered
    assert third.cached  # now every answer is cached: nobody is asked
    assert transport.searches == {"wait.test": 1, "trace.test": 2}
    assert third.best == again.best


def test_choose_gives_the_answer_the_router_would_give() -> None:
    weak, strong, other = (
        SearchResult(hits=[Hit(provider=name, similarity=s)], provider=name)
        for name, s in (("one", 0.7), ("two", 0.95), ("three", 0.8))
    )

    def fallback(results: list[SearchResult | None], limit: float | None, *, complete: bool = True) -> Any:
        return choose(results, complete=complete, min_similarity=limit, strategy="fallback")

    assert fallback([weak, strong], None) == ((0, weak), True)  # no threshold: the first answer in order
    assert fallback([weak, strong], 0.9) == ((1, strong), True)  # a weak one is passed over
    assert fallback([weak, other], 0.9) == ((1, other), True)  # none confident, all known: the strongest
    assert fallback([weak], 0.9, complete=False) == (None, False)  # one not known yet: prepare to tell
    assert fallback([None, strong], 0.9) == ((1, strong), True)  # no cached answer: passed over
    assert fallback([weak, None], 0.9) == (None, True)  # ...but it might be confident: ask the providers
    assert fallback([None, None], None) == (None, True)
    # fanout: every provider's answer merged, only when every one is cached
    assert choose([weak, None], complete=True, min_similarity=None, strategy="fanout") == (None, True)
    found, sure = choose([weak, strong], complete=True, min_similarity=None, strategy="fanout")
    assert found is not None
    assert (found[0], sure) == (0, True)
    assert sorted(hit.similarity for hit in found[1].hits) == [0.7, 0.95]


def test_a_cached_fanout_answer_is_merged_without_loading_the_engine(tmp_path: Path) -> None:
    script = f"""
import asyncio, sys
from anisearch._cache import ResultCache
from anisearch._cache_first import find_by_digest, source_keys
from anisearch._models import Hit, SearchResult
from anisearch._provider import SearchOptions

from anisearch._provider import UploadLimits

class Named:
    def __init__(self, name): self.name, self.limits = name, UploadLimits(max_width=320, max_height=320)

class Routed:
    def __init__(self, name): self.provider, self.key = Named(name), "key-" + name
    def known_key(self): return self.key

store = ResultCache(__import__("pathlib").Path({str(tmp_path / "c.sqlite3")!r}), ttl_seconds=3600)
keys = source_keys([Routed("a"), Routed("b")], "digest", SearchOptions())
async def fill():
    for name, similarity in (("a", 0.95), ("b", 0.5)):
        hits = [Hit(provider=name, similarity=similarity, anilist_id=1 if name == "a" else 2)]
        await store.put("key-" + name, SearchResult(hits=hits, provider=name), sources=keys)
asyncio.run(fill())  # storing loads anyio; the lookup must load nothing of the engine
loaded = set(sys.modules)
boxes = [(320, 320)] * 2
found, sure = find_by_digest(store, "digest", ["a", "b"], SearchOptions(), boxes, strategy="fanout")
engine = ("httpx", "PIL", "anisearch._image", "anisearch._plan", "anisearch._router")
heavy = [m for m in engine if m in sys.modules and m not in loaded]
print(found[0], sorted(hit.provider for hit in found[1].hits), sure, heavy)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "0 ['a', 'b'] True []"

"""A repeated source is answered from the cache before it is decoded."""

from __future__ import annotations

import io
import json
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import pytest
import respx
from PIL import Image

from anisearch import Client, Hit, SearchResult, Settings, _image
from anisearch._cache import ResultCache

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

BASE = "https://trace.test"


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        yield router


@pytest.fixture
def body(samples: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((samples / "api-v1-search-tinted-good-2021.json").read_text())
    return loaded


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

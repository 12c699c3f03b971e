"""``mode="vector"``: trace.moe is sent its colour layout vector (57 bytes) instead of the image, and answers
the same; a provider without the capability still gets the image."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from anisearch import AsyncClient, ConfigurationError, Settings
from anisearch_emulators.tracemoe import create_app

pytestmark = pytest.mark.anyio

BASE = "http://trace.test"
TINTED = Path(__file__).resolve().parent.parent / "examples" / "tinted-good.jpg"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Recording(httpx.AsyncBaseTransport):
    """The trace.moe emulator in process, keeping every search request it was sent."""

    def __init__(self) -> None:
        self.inner = httpx.ASGITransport(app=create_app())
        self.searches: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/search":
            await request.aread()
            self.searches.append(request)
        return await self.inner.handle_async_request(request)


def client(recording: Recording) -> AsyncClient:
    settings = Settings.load(providers=["tracemoe"], provider_options={"tracemoe": {"url": BASE}})
    return AsyncClient(settings, transport=recording)


async def test_a_vector_search_sends_57_bytes_and_finds_what_the_upload_finds() -> None:
    by_image, by_vector = Recording(), Recording()
    async with client(by_image) as uploads:
        uploaded = await uploads.search(TINTED, cache=False)
    async with client(by_vector) as vectors:
        described = await vectors.search(TINTED, cache=False, mode="vector")

    [upload], [vector] = by_image.searches, by_vector.searches
    assert upload.headers["content-type"].startswith("multipart/form-data")
    assert vector.headers["content-type"] == "application/json"
    assert len(vector.content) == 57  # {"vector": "<44 characters of base64>"}
    assert len(upload.content) > 100 * len(vector.content)
    assert uploaded.best is not None
    assert described.best is not None
    assert (described.best.anilist_id, described.best.episode) == (uploaded.best.anilist_id, 5)
    assert described.best.similarity == pytest.approx(uploaded.best.similarity)


async def test_borders_are_cut_locally_when_a_vector_is_sent() -> None:
    recording = Recording()
    async with client(recording) as vectors:
        await vectors.search(TINTED, cache=False, mode="vector", cut_borders=True)
    [vector] = recording.searches
    assert "cutBorders" not in vector.url.params  # the server cannot crop a descriptor


async def test_an_unknown_mode_is_a_usage_error() -> None:
    recording = Recording()
    async with client(recording) as engine:
        with pytest.raises(ConfigurationError, match="unknown mode"):
            await engine.search(TINTED, mode="sketch")  # type: ignore[arg-type]
    assert recording.searches == []

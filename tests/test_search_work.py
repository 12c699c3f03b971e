"""A search does the image work its providers need, and nothing more."""

from __future__ import annotations

import io
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import httpx
import pytest
import respx
from PIL import Image, ImageDraw

from anisearch import Client, ConfigurationError, InvalidImageError, Settings, _image
from anisearch_providers.tracemoe import descriptor

if TYPE_CHECKING:
    from pathlib import Path

BASE = "https://trace.test"


@pytest.fixture
def described(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """The sizes of the pictures whose colour layout descriptor was computed."""
    sizes: list[tuple[int, int]] = []
    real = descriptor.search_descriptor

    def counted(image: Image.Image, **options: Any) -> tuple[int, ...]:
        sizes.append(image.size)
        return real(image, **options)

    monkeypatch.setattr(descriptor, "search_descriptor", counted)
    return sizes


def client(mock: respx.MockRouter, cache: str) -> Client:
    settings = Settings.load(
        providers=["tracemoe"], provider_options={"tracemoe": {"url": BASE}}, cache=cache, metadata="off"
    )
    return Client(settings, httpx.MockTransport(mock.async_handler))


def test_the_descriptor_is_not_computed_when_the_cache_is_off(
    mock: respx.MockRouter, body: dict[str, Any], samples: Path, described: list[tuple[int, int]]
) -> None:
    route = mock.post(f"{BASE}/search").respond(200, json=body)
    with client(mock, "off") as searcher:
        searcher.search(samples / "tinted-good.jpg")
        searcher.search(samples / "tinted-good.jpg", cache=True)  # no cache configured: nothing to key
    assert route.call_count == 2
    assert described == []


def test_the_descriptor_keys_the_cache_once_per_new_picture(
    mock: respx.MockRouter,
    body: dict[str, Any],
    samples: Path,
    described: list[tuple[int, int]],
    tmp_path: Path,
) -> None:
    route = mock.post(f"{BASE}/search").respond(200, json=body)
    with client(mock, str(tmp_path / "cache.sqlite3")) as searcher:
        searcher.search(samples / "tinted-good.jpg")
        searcher.search(samples / "tinted-good.jpg")  # the same bytes: found by their digest
        searcher.search(samples / "tinted-good.jpg", cache=False)
    assert route.call_count == 2
    assert described == [(320, 180)]  # the upload, as trace.moe describes it


def test_a_plain_jpeg_that_fits_the_box_is_uploaded_byte_for_byte(
    mock: respx.MockRouter, body: dict[str, Any], described: list[tuple[int, int]]
) -> None:
    picture = Image.linear_gradient("L").resize((320, 180)).convert("RGB")
    ImageDraw.Draw(picture).ellipse((80, 45, 160, 90), fill=(200, 30, 30))
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=85)
    source = buffer.getvalue()
    route = mock.post(f"{BASE}/search").respond(200, json=body)
    with client(mock, "off") as searcher:
        searcher.search(source)
    sent = route.calls.last.request
    assert sent.content.count(source) == 1  # the multipart body carries the very bytes given
    assert described == []


def jpeg(size: tuple[int, int]) -> bytes:
    picture = Image.linear_gradient("L").resize(size).convert("RGB")
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def test_only_a_small_still_picture_in_memory_is_quick_to_prepare(samples: Path) -> None:
    screenshot = samples / "tinted-good.jpg"  # 640x360
    assert _image.quick(screenshot.read_bytes())
    assert _image.quick(bytearray(jpeg((320, 180))))
    assert _image.quick(_image.read(screenshot))  # the bytes read (and hashed) already
    assert not _image.quick(screenshot)  # a file is read in a worker thread
    assert not _image.quick(io.BytesIO(screenshot.read_bytes()))
    assert not _image.quick(jpeg((1280, 720)))  # decoding it takes several milliseconds
    assert not _image.quick(b"")
    assert not _image.quick(b"<html>not an image</html>")
    assert not _image.quick(b"\x00\x00\x00\x18ftypmp42" + bytes(64))  # a video
    assert not _image.quick(jpeg((64, 64)) + bytes(_image.QUICK_BYTES))


def test_a_quick_picture_is_prepared_in_place_exactly_as_prepare_does(samples: Path) -> None:
    screenshot = samples / "tinted-good.jpg"  # 640x360
    for source in (screenshot.read_bytes(), _image.read(screenshot), bytearray(jpeg((320, 180)))):
        for box in ((320, 320), (640, 360), (100, 100)):
            expected = _image.prepare(source, max_width=box[0], max_height=box[1])
            assert _image.prepare_quick(source, max_width=box[0], max_height=box[1]) == expected
    assert _image.prepare_quick(screenshot) is None  # a file: for a worker thread
    assert _image.prepare_quick(jpeg((1280, 720))) is None
    assert _image.prepare_quick(b"<html>not an image</html>") is None  # prepare() says why, in a thread
    with pytest.raises(InvalidImageError, match="truncated"):
        _image.prepare_quick(screenshot.read_bytes()[:20_000])
    with pytest.raises(ConfigurationError, match="max_width"):
        _image.prepare_quick(screenshot.read_bytes(), max_width=0)


@pytest.mark.parametrize(("size", "in_thread"), [((640, 360), False), ((1280, 720), True)])
def test_a_small_picture_is_prepared_in_place_and_a_larger_one_in_a_worker_thread(
    mock: respx.MockRouter,
    body: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    size: tuple[int, int],
    in_thread: bool,
) -> None:
    threaded: list[str] = []
    real_run_sync = anyio.to_thread.run_sync

    async def counted(function: Any, *args: Any, **kwargs: Any) -> Any:
        threaded.append(getattr(getattr(function, "func", function), "__name__", ""))
        return await real_run_sync(function, *args, **kwargs)

    route = mock.post(f"{BASE}/search").respond(200, json=body)
    with client(mock, "off") as searcher:
        monkeypatch.setattr(anyio.to_thread, "run_sync", counted)
        result = searcher.search(jpeg(size))
        monkeypatch.undo()
    assert result.hits
    assert route.call_count == 1
    uploaded = Image.open(io.BytesIO(multipart_image(route.calls.last.request)))
    assert max(uploaded.size) == 320  # fitted to trace.moe's box either way
    assert any("prepare" in name for name in threaded) is in_thread


def multipart_image(request: httpx.Request) -> bytes:
    """The bytes of the ``image`` field of a multipart upload."""
    content = request.content
    start = content.index(b"\r\n\r\n", content.index(b'name="image"')) + 4
    boundary = request.headers["content-type"].split("boundary=")[1].encode()
    return content[start : content.index(b"\r\n--" + boundary, start)]


def test_pictures_are_decoded_a_few_at_a_time_however_many_searches_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A decode holds up to 16 bytes a pixel: many searches at once (a gateway's guests) decode no more at
    once than :data:`DECODES_AT_ONCE` (it was anyio's 40 threads: 2.9 GB for four 88 KB WebP uploads)."""
    import threading
    import time

    from anisearch import AsyncClient, _worker

    running, most = 0, 0
    counting = threading.Lock()
    real = _image.prepare_boxes

    def decoding(*args: Any, **options: Any) -> Any:
        nonlocal running, most
        with counting:
            running += 1
            most = max(most, running)
        try:
            time.sleep(0.05)  # long enough for every search to be decoding at once, unbounded
            return real(*args, **options)
        finally:
            with counting:
                running -= 1

    monkeypatch.setattr(_image, "prepare_boxes", decoding)
    answer = {"frameCount": 1, "error": "", "result": []}
    settings = Settings.load(
        providers=["tracemoe"], provider_options={"tracemoe": {"url": BASE}}, cache="off", metadata="off"
    )
    pictures = []
    for n in range(3 * _worker.DECODES_AT_ONCE):
        out = io.BytesIO()
        Image.effect_noise((1280, 720), 40 + n).convert("RGB").save(out, "PNG")  # not quick to prepare
        pictures.append(out.getvalue())

    async def main() -> None:
        transport = httpx.MockTransport(lambda _: httpx.Response(200, json=answer))
        async with AsyncClient(settings, transport) as engine, anyio.create_task_group() as searches:
            for picture in pictures:
                searches.start_soon(partial(engine.search, picture, cache=False))

    anyio.run(main)
    assert most == _worker.DECODES_AT_ONCE


def test_a_search_waiting_its_turn_to_decode_ends_at_its_deadline(tmp_path: Path) -> None:
    """Every decode turn is taken (other searches' large pictures): a search with a deadline does not wait
    past it for a turn; it ends as when no provider answers in time."""
    from anisearch import AllProvidersFailedError, AsyncClient, ProviderTimeoutError, _worker

    picture = tmp_path / "shot.png"  # a file: read and decoded in a worker thread, on a turn
    Image.effect_noise((1280, 720), 40).convert("RGB").save(picture, "PNG")
    answer = {"frameCount": 1, "error": "", "result": []}
    settings = Settings.load(
        providers=["tracemoe"], provider_options={"tracemoe": {"url": BASE}}, cache="off", metadata="off"
    )
    ended: list[AllProvidersFailedError] = []

    async def main() -> None:
        transport = httpx.MockTransport(lambda _: httpx.Response(200, json=answer))
        async with AsyncClient(settings, transport) as engine:
            limiter = _worker.decodes()

            async def decoding_elsewhere() -> None:
                async with limiter:
                    await anyio.sleep(30)

            async with anyio.create_task_group() as others:
                for _ in range(int(limiter.total_tokens)):
                    others.start_soon(decoding_elsewhere)
                await anyio.sleep(0.05)
                with anyio.fail_after(10):  # it waited until a turn came: 30 s
                    try:
                        await engine.search(picture, deadline=0.3, cache=False)
                    except AllProvidersFailedError as exc:
                        ended.append(exc)
                others.cancel_scope.cancel()

    anyio.run(main)
    (failed,) = ended
    assert str(failed) == "no provider answered: tracemoe (failed) (1 sub-exception)"
    assert [(attempt.provider, attempt.outcome, attempt.error) for attempt in failed.attempts] == [
        ("tracemoe", "failed", "ProviderTimeoutError")
    ]
    assert [type(error) for error in failed.exceptions] == [ProviderTimeoutError]
    assert str(failed.exceptions[0]) == (
        "tracemoe: no complete answer before the search's deadline (the picture waited its turn to be"
        " decoded)"
    )

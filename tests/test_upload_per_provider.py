"""Each provider's upload is made for its own box from the source, so what it is sent (and the similarity
it answers) never depends on the other providers of the search; and a provider never asked costs no
image work."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import respx
from PIL import Image, ImageEnhance

from anisearch import Client, InvalidImageError, Settings, _image

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

TRACE = "https://trace.test"
SITE = "https://site.test"
TRACE_BOX = (320, 320)
SITE_BOX = (640, 360)
SITE_BODY = {
    "results": [{"anilistId": 11887, "episode": 5, "from": 1169.2, "to": 1174.9, "similarity": 0.88}]
}


def multipart_image(request: httpx.Request) -> bytes:
    """The bytes of the ``image`` field of a multipart upload."""
    content = request.content
    start = content.index(b"\r\n\r\n", content.index(b'name="image"')) + 4
    boundary = request.headers["content-type"].split("boundary=")[1].encode()
    return content[start : content.index(b"\r\n--" + boundary, start)]


def png_screenshot(samples: Path, brightness: float = 1.0) -> bytes:
    """A 640x360 screenshot saved losslessly, as a screenshot tool saves it (``brightness``: as a player
    brightened it, 1.0 unchanged)."""
    buffer = io.BytesIO()
    picture = Image.open(samples / "tinted-good.jpg").convert("RGB")
    ImageEnhance.Brightness(picture).enhance(brightness).save(buffer, "PNG")
    return buffer.getvalue()


def large_jpeg(samples: Path) -> bytes:
    """A 1920x1080 JPEG: trace.moe's box decodes it at 1/4 scale, whatanimeisthis's at 1/2."""
    buffer = io.BytesIO()
    picture = (
        Image.open(samples / "tinted-good.jpg").convert("RGB").resize((1920, 1080), Image.Resampling.LANCZOS)
    )
    picture.save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


SOURCES: dict[str, Callable[[Path], bytes]] = {"png": png_screenshot, "large-jpeg": large_jpeg}


def searching(mock: respx.MockRouter, cache: str = "off") -> Callable[..., Any]:
    options = {"tracemoe": {"url": TRACE}, "whatanimeisthis": {"url": SITE}}

    def search(source: bytes, providers: list[str], **kwargs: Any) -> Any:
        settings = Settings.load(providers=providers, provider_options=options, cache=cache, metadata="off")
        with Client(settings, httpx.MockTransport(mock.async_handler)) as client:
            return client.search(source, **kwargs)

    return search


@pytest.fixture
def answered(mock: respx.MockRouter, body: dict[str, Any]) -> tuple[respx.Route, respx.Route]:
    """trace.moe's route (its recorded, confident answer) and whatanimeisthis's (0.88)."""
    trace = mock.post(f"{TRACE}/search").respond(200, json=body)
    return trace, mock.post(f"{SITE}/api/anime/search").respond(200, json=SITE_BODY)


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """The upload box each decoding of a source was made for."""
    boxes: list[tuple[int, int]] = []
    real = _image._load

    def counted(source: Any, box: tuple[int, int], *args: Any, **kwargs: Any) -> Any:
        boxes.append(box)
        return real(source, box, *args, **kwargs)

    monkeypatch.setattr(_image, "_load", counted)
    return boxes


@pytest.mark.parametrize("kind", sorted(SOURCES))
def test_each_provider_is_sent_the_upload_it_gets_alone_whichever_providers_are_asked(
    mock: respx.MockRouter, answered: tuple[respx.Route, respx.Route], samples: Path, kind: str
) -> None:
    source = SOURCES[kind](samples)
    trace, site = answered
    search = searching(mock)
    alone_trace = _image.prepare(source, max_width=TRACE_BOX[0], max_height=TRACE_BOX[1]).data
    alone_site = _image.prepare(source, max_width=SITE_BOX[0], max_height=SITE_BOX[1]).data
    assert alone_trace != alone_site

    search(source, ["tracemoe"])
    search(source, ["tracemoe", "whatanimeisthis"], strategy="fanout")
    search(source, ["whatanimeisthis", "tracemoe"], min_similarity=0.95)  # its 0.88 is not enough
    search(source, ["whatanimeisthis"])

    assert [multipart_image(call.request) for call in trace.calls] == [alone_trace] * 3
    assert [multipart_image(call.request) for call in site.calls] == [alone_site] * 3


def test_trace_moe_finds_the_same_similarity_with_or_without_another_provider(
    mock: respx.MockRouter, body: dict[str, Any], samples: Path
) -> None:
    """What a user saw: a lossless screenshot matched 0.9569 alone and 0.9529 beside whatanimeisthis,
    because trace.moe was sent the other provider's JPEG made smaller and encoded again."""
    source = png_screenshot(samples, brightness=1.1)  # a picture whose descriptor the second JPEG moved
    described = []

    def answer(request: httpx.Request) -> httpx.Response:
        from anisearch_providers.tracemoe.descriptor import search_descriptor

        described.append(search_descriptor(Image.open(io.BytesIO(multipart_image(request))).convert("RGB")))
        return httpx.Response(200, json=body)

    mock.post(f"{TRACE}/search").mock(side_effect=answer)
    mock.post(f"{SITE}/api/anime/search").respond(200, json=SITE_BODY)
    search = searching(mock)
    search(source, ["tracemoe"])
    search(source, ["tracemoe", "whatanimeisthis"], strategy="fanout")
    assert len(described) == 2
    assert described[0] == described[1]  # the server describes the same picture either way


@pytest.mark.parametrize("cache", ["off", "sqlite"])
def test_a_confident_first_answer_costs_no_image_work_for_the_next_provider(  # noqa: PLR0917 - fixtures
    mock: respx.MockRouter,
    answered: tuple[respx.Route, respx.Route],
    samples: Path,
    decodes: list[tuple[int, int]],
    tmp_path: Path,
    cache: str,
) -> None:
    source = large_jpeg(samples)
    _, site = answered
    where = "off" if cache == "off" else str(tmp_path / "cache.sqlite3")
    result = searching(mock, cache=where)(source, ["tracemoe", "whatanimeisthis"])
    assert result.provider == "tracemoe"
    assert site.call_count == 0
    assert decodes == [TRACE_BOX]  # decoded once, at the scale trace.moe's upload needs


@pytest.mark.parametrize(("kind", "expected"), [("png", [TRACE_BOX]), ("large-jpeg", [TRACE_BOX, SITE_BOX])])
def test_a_fanout_decodes_the_source_once_unless_a_jpeg_needs_two_scales(  # noqa: PLR0917 - fixtures
    mock: respx.MockRouter,
    answered: tuple[respx.Route, respx.Route],
    samples: Path,
    decodes: list[tuple[int, int]],
    kind: str,
    expected: list[tuple[int, int]],
) -> None:
    searching(mock)(SOURCES[kind](samples), ["tracemoe", "whatanimeisthis"], strategy="fanout")
    assert decodes == expected


def test_an_answer_cached_by_one_provider_alone_serves_a_search_that_asks_it_first(
    mock: respx.MockRouter, answered: tuple[respx.Route, respx.Route], samples: Path, tmp_path: Path
) -> None:
    source = png_screenshot(samples)
    trace, site = answered
    search = searching(mock, cache=str(tmp_path / "cache.sqlite3"))
    first = search(source, ["tracemoe"])
    again = search(source, ["tracemoe", "whatanimeisthis"])
    assert (trace.call_count, site.call_count) == (1, 0)
    assert again.cached
    assert [hit.similarity for hit in again.hits] == [hit.similarity for hit in first.hits]


@pytest.mark.parametrize("kind", ["png", "large-jpeg", "pil"])
def test_prepare_boxes_gives_what_prepare_gives_for_each_box_alone(samples: Path, kind: str) -> None:
    source: Any = Image.open(io.BytesIO(png_screenshot(samples))) if kind == "pil" else SOURCES[kind](samples)
    boxes = [TRACE_BOX, SITE_BOX, (160, 90), TRACE_BOX]
    made = _image.prepare_boxes(source, boxes)
    alone = [_image.prepare(source, max_width=width, max_height=height) for width, height in boxes]
    assert made == alone
    assert [(image.width, image.height) for image in made] == [(320, 180), (640, 360), (160, 90), (320, 180)]


def test_a_bytearray_reused_by_the_caller_during_the_search_changes_no_upload(
    mock: respx.MockRouter, body: dict[str, Any], samples: Path
) -> None:
    source = bytearray(png_screenshot(samples))
    original = bytes(source)

    def answer_and_scribble(request: httpx.Request) -> httpx.Response:
        source[:] = large_jpeg(samples)  # the caller's buffer holds the next picture now
        return httpx.Response(200, json=body)

    mock.post(f"{TRACE}/search").mock(side_effect=answer_and_scribble)
    site = mock.post(f"{SITE}/api/anime/search").respond(200, json=SITE_BODY)
    searching(mock)(source, ["tracemoe", "whatanimeisthis"], min_similarity=0.999)  # both are asked
    alone = _image.prepare(original, max_width=SITE_BOX[0], max_height=SITE_BOX[1]).data
    assert multipart_image(site.calls.last.request) == alone


def test_an_answer_found_by_its_key_is_found_by_the_source_digest_next_time(
    mock: respx.MockRouter,
    body: dict[str, Any],
    samples: Path,
    decodes: list[tuple[int, int]],
    tmp_path: Path,
) -> None:
    """An answer cached under other source aliases (by an older version, which keyed trace.moe's by the
    largest box asked) is found once by preparing the picture, and by the bytes' digest alone after."""
    import sqlite3

    source = png_screenshot(samples)
    trace = mock.post(f"{TRACE}/search").respond(200, json=body)
    path = tmp_path / "cache.sqlite3"
    search = searching(mock, cache=str(path))
    search(source, ["tracemoe", "whatanimeisthis"])
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM sources")  # the raw source's aliases, as an older version wrote them
    decodes.clear()
    assert search(source, ["tracemoe", "whatanimeisthis"]).cached
    assert decodes == [TRACE_BOX]  # found by its result key: the picture was prepared
    decodes.clear()
    assert search(source, ["tracemoe", "whatanimeisthis"]).cached
    assert decodes == []  # and now by the digest of its bytes
    assert trace.call_count == 1


@pytest.mark.parametrize("providers", [["tracemoe"], ["tracemoe", "whatanimeisthis"]])
def test_the_source_is_not_held_while_trace_moe_is_asked(
    mock: respx.MockRouter, body: dict[str, Any], tmp_path: Path, providers: list[str]
) -> None:
    """A 12 MB picture named by its path is read, prepared and let go before the request (the file is read
    again if whatanimeisthis must be asked): a batch queued behind trace.moe's single slot does not hold
    every waiting input in memory."""
    import tracemalloc

    picture = tmp_path / "large.bmp"
    Image.effect_noise((2000, 2000), 64).convert("RGB").save(picture)
    held: list[int] = []

    def answer(request: httpx.Request) -> httpx.Response:
        held.append(tracemalloc.get_traced_memory()[0])
        return httpx.Response(200, json=body)

    mock.post(f"{TRACE}/search").mock(side_effect=answer)
    tracemalloc.start()
    try:
        searching(mock)(picture, providers)
    finally:
        tracemalloc.stop()
    assert picture.stat().st_size > 10_000_000
    assert held[0] < picture.stat().st_size / 4


def test_a_later_providers_upload_that_cannot_be_made_fails_that_provider_only(
    mock: respx.MockRouter,
    answered: tuple[respx.Route, respx.Route],
    samples: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = _image.prepare_boxes

    def refusing(source: Any, boxes: Any, **kwargs: Any) -> Any:
        if SITE_BOX in boxes:
            raise InvalidImageError("the PNG is corrupt and cannot be decoded")
        return real(source, boxes, **kwargs)

    monkeypatch.setattr(_image, "prepare_boxes", refusing)
    _, site = answered
    result = searching(mock)(png_screenshot(samples), ["tracemoe", "whatanimeisthis"], min_similarity=0.999)
    assert result.provider == "tracemoe"  # its answer (asked and charged) is not lost
    assert [(a.provider, a.outcome) for a in result.attempts] == [
        ("tracemoe", "ok"),
        ("whatanimeisthis", "failed"),
    ]
    assert "corrupt" in (result.attempts[1].reason or "")
    assert site.call_count == 0


@pytest.mark.parametrize("cache", ["sqlite", "redis"])
def test_a_provider_that_failed_is_not_asked_again_for_an_answer_the_next_one_cached(
    mock: respx.MockRouter, samples: Path, tmp_path: Path, request: pytest.FixtureRequest, cache: str
) -> None:
    """trace.moe failed; whatanimeisthis answered, and its answer was cached. The same picture again is
    answered from the cache, without trying trace.moe once more (its quota, its single slot): on a Redis
    cache too, which keeps no digest aliases."""
    trace = mock.post(f"{TRACE}/search").respond(500, json={"error": "Search failed."})
    site = mock.post(f"{SITE}/api/anime/search").respond(200, json=SITE_BODY)
    where = str(tmp_path / "cache.sqlite3") if cache == "sqlite" else request.getfixturevalue("redis_url")
    search = searching(mock, cache=where)
    source = png_screenshot(samples)
    assert search(source, ["tracemoe", "whatanimeisthis"]).provider == "whatanimeisthis"
    again = search(source, ["tracemoe", "whatanimeisthis"])
    assert again.cached
    assert (trace.call_count, site.call_count) == (1, 1)


def test_a_pil_image_the_caller_changes_during_the_search_changes_no_upload(
    mock: respx.MockRouter, body: dict[str, Any], samples: Path
) -> None:
    picture = Image.open(io.BytesIO(png_screenshot(samples))).convert("RGB")
    alone = _image.prepare(picture, max_width=SITE_BOX[0], max_height=SITE_BOX[1]).data

    def answer_and_draw(request: httpx.Request) -> httpx.Response:
        picture.paste((255, 0, 0), (0, 0, 640, 360))  # the caller reuses its frame buffer meanwhile
        return httpx.Response(200, json=body)

    mock.post(f"{TRACE}/search").mock(side_effect=answer_and_draw)
    site = mock.post(f"{SITE}/api/anime/search").respond(200, json=SITE_BODY)
    searching(mock)(picture, ["tracemoe", "whatanimeisthis"], min_similarity=0.999)  # both are asked
    assert multipart_image(site.calls.last.request) == alone


def test_a_file_changed_before_the_next_provider_is_asked_fails_that_provider_only(
    mock: respx.MockRouter, body: dict[str, Any], samples: Path, tmp_path: Path
) -> None:
    picture = tmp_path / "shot.png"
    picture.write_bytes(png_screenshot(samples))

    def answer_and_overwrite(request: httpx.Request) -> httpx.Response:
        picture.write_bytes(large_jpeg(samples))  # the next screenshot lands under the same name
        return httpx.Response(200, json=body)

    mock.post(f"{TRACE}/search").mock(side_effect=answer_and_overwrite)
    site = mock.post(f"{SITE}/api/anime/search").respond(200, json=SITE_BODY)
    result = searching(mock)(picture, ["tracemoe", "whatanimeisthis"], min_similarity=0.999)
    assert result.provider == "tracemoe"
    assert [(a.provider, a.outcome) for a in result.attempts] == [
        ("tracemoe", "ok"),
        ("whatanimeisthis", "failed"),
    ]
    assert "changed while it was searched" in (result.attempts[1].reason or "")
    assert site.call_count == 0  # never sent another picture's upload


def test_a_file_named_relatively_or_by_bytes_is_read_again_as_the_same_file(
    mock: respx.MockRouter,
    body: dict[str, Any],
    samples: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The program changes directory while trace.moe is asked; a path object may give bytes
    (``os.scandir(b"...")``): whatanimeisthis still gets the picture that was named."""
    import os

    (tmp_path / "shot.png").write_bytes(png_screenshot(samples))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "shot.png").write_bytes(large_jpeg(samples))  # another picture under the same name
    monkeypatch.chdir(tmp_path)

    def answer_and_move(request: httpx.Request) -> httpx.Response:
        os.chdir(elsewhere)
        return httpx.Response(200, json=body)

    mock.post(f"{TRACE}/search").mock(side_effect=answer_and_move)
    site = mock.post(f"{SITE}/api/anime/search").respond(200, json=SITE_BODY)
    alone = _image.prepare(tmp_path / "shot.png", max_width=SITE_BOX[0], max_height=SITE_BOX[1]).data
    with os.scandir(os.fsencode(tmp_path)) as entries:
        by_bytes = next(entry for entry in entries if entry.name == b"shot.png")
    for source in ("shot.png", by_bytes):
        os.chdir(tmp_path)
        result = searching(mock)(source, ["tracemoe", "whatanimeisthis"], min_similarity=0.999)
        assert [(a.provider, a.outcome) for a in result.attempts] == [
            ("tracemoe", "ok"),
            ("whatanimeisthis", "ok"),
        ]
        assert multipart_image(site.calls.last.request) == alone


DOWNLOAD_HELD = """
import json, sys, tracemalloc
from pathlib import Path
import httpx
from PIL import Image
from anisearch import Client, Settings

picture = Path(sys.argv[1]).read_bytes()
body = json.loads(Path(sys.argv[2]).read_text())
held = []

async def chunks():  # as a socket gives them: nothing else holds the whole picture
    for at in range(0, len(picture), 65536):
        yield picture[at : at + 65536]

def handler(request):
    if request.url.host == "127.0.0.1":  # the picture's address
        return httpx.Response(200, content=chunks(), headers={"content-type": "image/bmp"})
    held.append(tracemalloc.get_traced_memory()[0])  # trace.moe is asked
    return httpx.Response(200, json=body)

options = {"tracemoe": {"url": "https://trace.test"}}
settings = Settings.load(
    providers=["tracemoe"], provider_options=options, cache=sys.argv[3], metadata="off",
    allow_private_urls=True,
)
with Client(settings, httpx.MockTransport(handler)) as client:
    client.search(Image.new("RGB", (64, 36), "purple"))  # modules a first search imports are not held
    held.clear()
    tracemalloc.start()
    client.search("http://127.0.0.1:9/large.bmp")
    tracemalloc.stop()
print(held[0])
"""


@pytest.mark.parametrize("cache", ["off", "sqlite"])
def test_a_downloaded_picture_is_not_held_while_trace_moe_is_asked(
    body: dict[str, Any], tmp_path: Path, cache: str
) -> None:
    """A 12 MB picture downloaded from a URL, with trace.moe alone, is let go once its upload is made. Run in
    a process of its own: the suite's other threads would count in its traced memory."""
    import json
    import subprocess
    import sys

    picture = tmp_path / "large.bmp"
    Image.effect_noise((2000, 2000), 64).convert("RGB").save(picture)
    answer = tmp_path / "answer.json"
    answer.write_text(json.dumps(body))
    store = "off" if cache == "off" else str(tmp_path / "results.sqlite3")
    done = subprocess.run(
        [sys.executable, "-c", DOWNLOAD_HELD, str(picture), str(answer), store],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert picture.stat().st_size > 10_000_000
    assert int(done.stdout.split()[-1]) < picture.stat().st_size / 4  # it was 17.7 MB with the cache on

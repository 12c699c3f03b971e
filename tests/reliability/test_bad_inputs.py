"""A generated corpus of bad inputs: each ends in a typed, one-line error before any request, in bounded
time and memory, or (for a truncation a decoder tolerates) in an ordinary search."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from anisearch import AsyncClient, ImageTooLargeError, InvalidImageError, SearchResult, Settings

pytestmark = pytest.mark.anyio

MIB = 1024 * 1024


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def encoded(kind: str) -> bytes:
    out = io.BytesIO()
    picture = Image.radial_gradient("L").convert("RGB").resize((320, 180))
    picture.save(out, kind)
    return out.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb() -> bytes:
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(b"\0" * 1000))


def corpus() -> Iterator[tuple[str, bytes, bool]]:
    """(name, bytes, must_fail): must_fail is False where a decoder may accept what is left."""
    yield "empty", b"", True
    yield "one byte", b"\xff", True
    for kind in ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF"):
        data = encoded(kind)
        for cut in (4, 16, 64, 200, len(data) // 3, len(data) // 2, len(data) - 20):
            yield f"{kind} cut at {cut}", data[:cut], cut < 64
        yield f"{kind} with a PNG's magic", b"\x89PNG\r\n\x1a\n" + data[8:], kind != "PNG"
    yield "PNG decompression bomb", png_bomb(), True
    yield "HTML page", b"<!doctype html><html><body>403 Forbidden</body></html>", True
    yield "JSON", json.dumps({"error": "not found"}).encode(), True
    yield "PDF", b"%PDF-1.7\n" + b"\0" * 500, True
    yield "ZIP", b"PK\x03\x04" + b"\0" * 500, True
    yield "JPEG magic then HTML", b"\xff\xd8\xff\xe0<html>" + b"a" * 500, True
    yield "HTML then a JPEG (polyglot)", b"<html>" + encoded("JPEG"), True
    yield "SVG", b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', True
    yield "HEIC", b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\0" * 500, True
    yield "random bytes", os.urandom(4096), True
    yield "zeros", bytes(65536), True


CORPUS = list(corpus())


class Counter:
    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def transport(self, samples: Path) -> httpx.MockTransport:
        body = json.loads((samples / "api-v1-search-tinted-good-2021.json").read_text())

        def answer(request: httpx.Request) -> httpx.Response:
            self.requests.append(request)
            return httpx.Response(200, json=body)

        return httpx.MockTransport(answer)


def settings() -> Settings:
    return Settings.load(
        providers=["tracemoe"], provider_options={"tracemoe": {"url": "https://t.test"}}, cache="off"
    )


async def search(source: Any, samples: Path) -> tuple[SearchResult | BaseException, Counter, float]:
    counter = Counter()
    started = time.monotonic()
    async with AsyncClient(settings(), counter.transport(samples)) as client:
        try:
            outcome: SearchResult | BaseException = await client.search(source, deadline=20)
        except InvalidImageError as exc:
            outcome = exc
    return outcome, counter, time.monotonic() - started


def assert_refused(outcome: object, counter: Counter) -> InvalidImageError:
    assert isinstance(outcome, InvalidImageError), outcome
    assert counter.requests == []
    message = str(outcome)
    assert "\n" not in message
    assert message.isprintable()
    return outcome


@pytest.mark.parametrize(("name", "data", "must_fail"), CORPUS, ids=[name for name, _, _ in CORPUS])
async def test_a_bad_input_is_refused_before_any_request(
    name: str, data: bytes, must_fail: bool, samples: Path
) -> None:
    outcome, counter, elapsed = await search(data, samples)
    if must_fail or isinstance(outcome, BaseException):
        assert_refused(outcome, counter)
    else:
        assert len(counter.requests) == 1
    assert elapsed < 5


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp: tmp, "is a directory"),
        (lambda tmp: tmp / "missing.jpg", "no such file"),
        (lambda tmp: str(tmp / "nul\x00byte.jpg"), "not a valid file name"),
        (lambda tmp: tmp / "\x1b[31mred\x1b[0m.jpg", "no such file"),
    ],
    ids=["directory", "missing", "NUL in the path", "escape sequences in the name"],
)
async def test_a_bad_path_is_a_typed_error(
    make: Callable[[Path], Any], message: str, tmp_path: Path, samples: Path
) -> None:
    outcome, counter, _ = await search(make(tmp_path), samples)
    error = assert_refused(outcome, counter)
    assert message in str(error)
    assert "\x1b" not in str(error)


class Failing(io.RawIOBase):
    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        raise OSError(5, "Input/output error")


class Endless(io.RawIOBase):
    """1.2 GB of zeros, produced as they are read (like ``head -c 1200M /dev/zero | anisearch search -``)."""

    def __init__(self, size: int = 1200 * MIB) -> None:
        self.left = size
        self.served = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        size = min(len(buffer), self.left)
        buffer[:size] = bytes(size)
        self.left -= size
        self.served += size
        return size


async def test_a_file_object_that_fails_is_a_typed_error(samples: Path) -> None:
    outcome, counter, _ = await search(Failing(), samples)
    assert "cannot read the input" in str(assert_refused(outcome, counter))


async def test_text_mode_is_a_typed_error(tmp_path: Path, samples: Path) -> None:
    text = tmp_path / "shot.jpg"
    text.write_text("hello")
    with text.open() as handle:
        outcome, counter, _ = await search(handle, samples)
    assert "binary mode" in str(assert_refused(outcome, counter))


async def test_a_huge_stream_is_refused_at_the_input_limit_in_bounded_memory(
    samples: Path, gauge: Callable[[], Any]
) -> None:
    source = Endless()
    with gauge() as used:
        outcome, counter, _ = await search(source, samples)
    assert isinstance(assert_refused(outcome, counter), ImageTooLargeError)
    assert source.served == 100 * MIB + 1  # the rest is never read
    assert used.peak_bytes < 200 * 1000 * 1000


async def test_a_device_is_read_only_up_to_the_limit(samples: Path) -> None:
    outcome, counter, _ = await search("/dev/zero", samples)
    assert isinstance(assert_refused(outcome, counter), ImageTooLargeError)


@pytest.mark.parametrize(
    "stdin", ["sys.stdin.buffer", "pathlib.Path('/dev/stdin')", "open(0, 'rb', buffering=0)"]
)
def test_stdin_in_a_pipeline_is_bounded_by_the_deadline_when_nothing_arrives(stdin: str) -> None:
    script = (
        "import pathlib, sys, time, anisearch\n"
        "settings = anisearch.Settings.load(cache='off')\n"
        "anisearch.Client(settings).close()  # the engine's modules load on first use: before the clock\n"
        "started = time.monotonic()\n"
        "try:\n"
        f"    anisearch.search({stdin}, deadline=1.0, settings=settings)\n"
        "except anisearch.InvalidImageError as exc:\n"
        "    print(f'{time.monotonic() - started:.2f}', exc, flush=True)\n"
    )
    # stdin stays open and empty, as with `sleep 1000 | anisearch search -`
    with subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as process:
        killer = threading.Timer(60, process.kill)  # a regression blocks: fail instead of hanging
        killer.start()
        try:
            assert process.stdout is not None
            output = process.stdout.readline()
        finally:
            killer.cancel()
            process.kill()
    elapsed, _, message = output.partition(" ")
    assert "nothing arrived within" in message
    assert float(elapsed) < 1.0 + 1

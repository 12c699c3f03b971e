"""URLs a stranger might paste into a chat: anisearch downloads only from public addresses, itself.

Every test here runs with the tripwire of ``conftest.py`` armed: a lookup or a connection to anything
but loopback fails the test, and ``connects`` lists every connection attempted.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from anisearch import (
    AsyncClient,
    Client,
    ImageFetchError,
    ImageTooLargeError,
    InvalidImageError,
    Settings,
    _fetch,
)

pytestmark = pytest.mark.anyio

PUBLIC = "93.184.215.14"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Name lookups answered from a table; a name not in it does not resolve. No query is sent."""
    table: dict[str, list[str]] = {"public.test": [PUBLIC]}
    asked: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        asked.append(host)
        if host not in table:
            raise OSError(f"{host}: not in the table")
        return table[host]

    monkeypatch.setattr(_fetch, "resolve", resolve)
    return table


def offline_settings(**extra: Any) -> Settings:
    return Settings.load(**{"providers": ["tracemoe"], "cache": "off", "timeout": 2, **extra})


HOSTILE = [
    "http://169.254.169.254/latest/meta-data/",
    "HTTP://169.254.169.254/latest/meta-data/",
    "http://[::ffff:169.254.169.254]/latest/meta-data/",
    "http://[::ffff:a9fe:a9fe]/",
    "http://2852039166/latest/meta-data/",
    "http://0xa9fea9fe/",
    "http://169.254.43518/",
    "http://[64:ff9b::a9fe:a9fe]/",
    "http://[2002:a9fe:a9fe::1]/",
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://metadata.google.internal./computeMetadata/v1/",
    "http://10.0.0.1/a.jpg",
    "http://172.16.3.4/a.jpg",
    "http://192.168.1.1/a.jpg",
    "http://100.64.0.1/a.jpg",
    "http://127.0.0.1:6379/",
    "http://127.1/",
    "http://localhost:8000/a.jpg",
    "http://[::1]/a.jpg",
    "http://[fe80::1%25eth0]/a.jpg",
    "http://[fd12:3456::1]/a.jpg",
    "http://[fec0::1]/a.jpg",  # deprecated site-local: Python's is_global calls it global
    "http://224.0.0.1/a.jpg",
    "http://0.0.0.0/a.jpg",
    "http://255.255.255.255/a.jpg",
    "https://user:pass@10.1.2.3/a.jpg?token=abc",
]


@pytest.mark.parametrize("url", HOSTILE)
def test_a_private_or_metadata_url_is_refused_before_any_connection(
    url: str, tripwire: Any, dns: dict[str, list[str]]
) -> None:
    with Client(offline_settings()) as client, pytest.raises(ImageFetchError, match="refusing") as caught:
        client.search(url)
    assert caught.value.provider is None  # anisearch refused it (the CLI exits 3)
    assert tripwire.connects == []
    assert "pass" not in str(caught.value)
    assert "abc" not in str(caught.value)


def test_a_name_is_refused_when_any_of_its_addresses_is_private(
    tripwire: Any, dns: dict[str, list[str]]
) -> None:
    dns["mixed.test"] = [PUBLIC, "10.0.0.5"]
    with Client(offline_settings()) as client, pytest.raises(ImageFetchError, match=r"private.*10\.0\.0\.5"):
        client.search("https://mixed.test/a.jpg")
    assert tripwire.connects == []


def test_the_checked_address_is_the_one_connected_to() -> None:
    async def build() -> httpx.Request:
        async def resolve(host: str, port: int) -> list[str]:
            return [PUBLIC]

        original, _fetch.resolve = _fetch.resolve, resolve
        try:
            async with httpx.AsyncClient() as client:
                url = httpx.URL("https://img.example:8443/a.jpg")
                return await _fetch._request(url, client, allow_private=False, pin=True)
        finally:
            _fetch.resolve = original

    request = anyio.run(build)
    assert request.url.host == PUBLIC
    assert request.headers["host"] == "img.example:8443"
    assert request.extensions["sni_hostname"] == "img.example"


class Recorder:
    """A transport that answers from a function and remembers every request."""

    def __init__(self, answer: Callable[[httpx.Request], httpx.Response]) -> None:
        self.requests: list[httpx.Request] = []
        self._answer = answer

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self._answer(request)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)


@pytest.mark.parametrize(
    "target",
    ["http://169.254.169.254/latest/meta-data/", "http://[::1]:8000/", "http://metadata.google.internal/"],
)
def test_a_redirect_into_a_private_range_is_refused(target: str, dns: dict[str, list[str]]) -> None:
    site = Recorder(lambda request: httpx.Response(302, headers={"Location": target}))
    with (
        Client(offline_settings(), site.transport()) as client,
        pytest.raises(ImageFetchError, match="refusing"),
    ):
        client.search("http://public.test/a.jpg")
    assert [str(r.url) for r in site.requests] == ["http://public.test/a.jpg"]


def test_at_most_five_redirects_are_followed(dns: dict[str, list[str]]) -> None:
    site = Recorder(lambda request: httpx.Response(302, headers={"Location": f"{request.url}x"}))
    with (
        Client(offline_settings(), site.transport()) as client,
        pytest.raises(ImageFetchError, match="redirects"),
    ):
        client.search("http://public.test/a")
    assert len(site.requests) == 6


BAD_URLS = [
    ("http://public.test:99999/a.jpg", ImageFetchError, "port"),
    ("http://public.test:0/a.jpg", ImageFetchError, "port"),
    ("http://public.test/" + "a" * 100_000, ImageFetchError, "over the 8192 limit"),
    ("http://public.test/a\x00b.jpg", ImageFetchError, "not a valid URL"),
    ("http:///a.jpg", ImageFetchError, "no host"),
    ("http://public.test/\x1b[31mred.jpg", ImageFetchError, "not a valid URL"),
    ("https://[::1/a.jpg", ImageFetchError, "not a valid URL"),
    ("ftp://public.test/a.jpg", InvalidImageError, "no such file"),
    ("file:///etc/passwd", InvalidImageError, "no such file"),
]


@pytest.mark.parametrize(
    ("url", "error", "message"), BAD_URLS, ids=[f"{i}-{m}" for i, (_, _, m) in enumerate(BAD_URLS)]
)
def test_a_malformed_url_is_a_typed_error_without_a_request(
    url: str, error: type[Exception], message: str, dns: dict[str, list[str]], tripwire: Any
) -> None:
    site = Recorder(lambda request: httpx.Response(200))
    with (
        Client(offline_settings(), site.transport()) as client,
        pytest.raises(error, match=message) as caught,
    ):
        client.search(url)
    assert site.requests == []
    assert tripwire.connects == []
    assert "\x1b" not in str(caught.value)
    assert len(str(caught.value)) < 400


def test_downloads_carry_no_cookie_and_no_credential(samples: Path, dns: dict[str, list[str]]) -> None:
    jpeg = (samples / "tinted-good.jpg").read_bytes()
    body = {"frameCount": 1, "error": "", "result": []}

    def answer(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, content=jpeg, headers={"Set-Cookie": "tracker=1; Path=/"})
        return httpx.Response(200, json=body, headers={"Set-Cookie": "third=party; Path=/"})

    everything = Recorder(answer)
    options = {"tracemoe": {"url": "https://public.test", "key": "trace-key-123"}}
    config = Settings.load(providers=["tracemoe"], provider_options=options, cache="off")
    with Client(config, everything.transport()) as client:
        client.search("https://public.test/a.jpg")
        client.search("https://public.test/b.jpg")
    downloads = [r for r in everything.requests if r.method == "GET"]
    searches = [r for r in everything.requests if r.method == "POST"]
    assert len(downloads) == len(searches) == 2
    for request in downloads:
        assert {"cookie", "authorization", "x-trace-key"}.isdisjoint(request.headers)
    for request in searches:
        assert "cookie" not in request.headers  # no third-party cookie stored and replayed
        assert request.headers["x-trace-key"] == "trace-key-123"


async def test_a_trickling_url_ends_within_the_timeout(fault_server: Callable[..., Any]) -> None:
    def trickle(connection: socket.socket, server: Any) -> None:
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
        while server.sleep(0.2):
            connection.sendall(b" ")

    server = fault_server(trickle)
    async with AsyncClient(offline_settings(allow_private_urls=True)) as client:
        started = time.monotonic()
        with pytest.raises(ImageFetchError, match="within 2 s"), anyio.fail_after(20):
            await client.search(f"{server.url}/a.jpg")
    assert time.monotonic() - started < 2 + 1
    assert server.requests == 1


async def test_an_endless_url_is_cut_at_the_download_limit(
    fault_server: Callable[..., Any], gauge: Callable[[], Any]
) -> None:
    def endless(connection: socket.socket, server: Any) -> None:
        connection.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"40000\r\n" + bytes(0x40000) + b"\r\n"
        while not server.stopping.is_set():
            connection.sendall(chunk)

    server = fault_server(endless)
    async with AsyncClient(offline_settings(allow_private_urls=True, timeout=20)) as client:
        with (
            gauge() as used,
            pytest.raises(
                ImageTooLargeError, match=r"is larger than the 50\.0 MiB \(52428800 bytes\) download limit"
            ),
        ):
            await client.search(f"{server.url}/a.jpg")
    assert used.peak_bytes < 200 * 1024 * 1024


@pytest.mark.parametrize("encoding", ["", "Content-Encoding: identity\r\n"])
async def test_a_url_announcing_more_than_the_download_limit_is_refused_before_its_body(
    fault_server: Callable[..., Any], encoding: str
) -> None:
    sent: list[int] = []

    def announced(connection: socket.socket, server: Any) -> None:  # 200 MiB announced, sent slowly
        head = f"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\n{encoding}Content-Length: {200 << 20}\r\n\r\n"
        connection.sendall(head.encode())
        with contextlib.suppress(OSError):
            while server.sleep(0.1):
                connection.sendall(bytes(1 << 17))
                sent.append(1 << 17)

    server = fault_server(announced)
    async with AsyncClient(offline_settings(allow_private_urls=True, timeout=20)) as client:
        with pytest.raises(ImageTooLargeError) as caught, anyio.fail_after(10):
            await client.search(f"{server.url}/huge.jpg")
    assert str(caught.value) == (
        f"{server.url}/huge.jpg is 200.0 MiB (209715200 bytes) by its Content-Length, "
        "over the 50.0 MiB (52428800 bytes) download limit"
    )
    assert (caught.value.size_bytes, caught.value.limit_bytes) == (200 << 20, 50 << 20)
    assert sum(sent) < 1 << 20  # not read up to the limit first


async def test_a_fifo_without_a_writer_ends_at_the_deadline(tmp_path: Path, gauge: Callable[[], Any]) -> None:
    fifo = tmp_path / "shot.jpg"
    os.mkfifo(fifo)
    done = threading.Event()

    def rescue() -> None:  # if the read blocks (a regression), unblock it after 5 s so the test fails
        if not done.wait(5):
            with contextlib.suppress(OSError), fifo.open("wb"):
                pass

    threading.Thread(target=rescue, daemon=True).start()
    site = Recorder(lambda request: httpx.Response(200))
    async with AsyncClient(offline_settings(timeout=30), site.transport()) as client:
        with gauge() as used, pytest.raises(InvalidImageError, match="nothing arrived within"):
            await client.search(fifo, deadline=1.0)
    done.set()
    assert used.elapsed < 1.0 + 1
    assert site.requests == []


def trickling(write: Callable[[bytes], object]) -> threading.Event:
    """Write a byte every 50 ms with ``write`` in a thread of its own until the event returned is set (or
    the other end is gone)."""
    stop = threading.Event()

    def trickle() -> None:
        while not stop.wait(0.05):
            try:
                write(b"\xff")
            except OSError:
                return

    threading.Thread(target=trickle, daemon=True).start()
    return stop


async def test_a_callers_file_object_that_blocks_ends_at_the_deadline(gauge: Callable[[], Any]) -> None:
    """A socket's file object (as ``urlopen()`` or ``requests``' ``raw`` give) is read with blocking calls:
    the search gives up on it at its deadline, with a typed error, instead of reading for as long as the
    other end trickles."""
    import socket

    ours, theirs = socket.socketpair()
    stop = trickling(theirs.send)
    site = Recorder(lambda request: httpx.Response(200))
    reader = ours.makefile("rb", buffering=0)
    try:
        async with AsyncClient(offline_settings(timeout=30), site.transport()) as client:
            with gauge() as used, pytest.raises(InvalidImageError, match=r"did not arrive within 1\.0 s"):
                await client.search(reader, deadline=1.0)  # type: ignore[arg-type]  # a raw socket file
    finally:
        stop.set()
        theirs.close()  # the read left running in its thread ends
        await anyio.sleep(0.2)
        reader.close()
        ours.close()
    assert used.elapsed < 1.0 + 1
    assert site.requests == []


def test_a_read_given_up_on_never_keeps_the_program_from_exiting() -> None:
    """The reader left behind when a search gives up on a file object must not hold the interpreter at
    exit (a worker thread of the event loop's pool did, for as long as the other end trickled)."""
    import subprocess
    import sys
    import textwrap
    import time

    program = textwrap.dedent(
        """
        import asyncio, socket, threading, time
        import anisearch
        ours, theirs = socket.socketpair()
        def trickle():
            for _ in range(300):
                theirs.send(b"\\xff")
                time.sleep(0.05)
        threading.Thread(target=trickle, daemon=True).start()
        async def main():
            settings = anisearch.Settings.load(
                providers=["tracemoe"], cache="off", ledger="memory://",
                provider_options={"tracemoe": {"url": "http://127.0.0.1:9"}},
            )
            async with anisearch.AsyncClient(settings) as client:
                try:
                    await client.search(ours.makefile("rb", buffering=0), deadline=0.5)
                except anisearch.InvalidImageError as exc:
                    print(exc)
        asyncio.run(main())
        """
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=False
    )
    assert "did not arrive within 0.5 s" in done.stdout, done.stderr
    assert time.monotonic() - started < 10  # the trickle lasts 15 s


def test_memory_and_files_are_never_given_up_on_mid_decoding() -> None:
    """Only a read that may block without a bound is timed: a BytesIO or a file opened "rb" holds a large
    picture whose decoding may take longer than the timeout, and that is no reason to refuse it."""
    import tempfile

    from anisearch._client import _reads_blocking

    with tempfile.TemporaryFile() as file, open(__file__, "rb") as opened:  # noqa: PTH123
        assert not _reads_blocking(io.BytesIO(b"x"))
        assert not _reads_blocking(opened)
        assert not _reads_blocking(file.file if hasattr(file, "file") else file)
    ours, theirs = socket.socketpair()
    with ours, theirs, ours.makefile("rb", buffering=0) as raw:
        assert _reads_blocking(raw)


async def test_a_fifo_that_delivers_too_slowly_is_told_apart_from_one_without_a_writer(
    tmp_path: Path,
) -> None:
    """Bytes arrived, just not all in time: "a pipe with no writer?" sent the user looking for the wrong
    fault (``curl -s URL | anisearch search -`` on a slow download)."""
    fifo = tmp_path / "shot.jpg"
    os.mkfifo(fifo)
    writers: list[Any] = []

    def write(data: bytes) -> None:
        if not writers:  # opened in the trickle's thread: opening a FIFO waits for its reader
            writers.append(fifo.open("wb", buffering=0))
        writers[0].write(data)

    stop = trickling(write)
    site = Recorder(lambda request: httpx.Response(200))
    try:
        async with AsyncClient(offline_settings(timeout=30), site.transport()) as client:
            with pytest.raises(InvalidImageError, match=r"only \d+ bytes arrived within 1\.0 s"):
                await client.search(fifo, deadline=1.0)
    finally:
        stop.set()
        await anyio.sleep(0.1)
        for writer in writers:
            with contextlib.suppress(OSError):
                writer.close()
    assert site.requests == []


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/",
        "http://2852039166/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://[fd00:ec2::254]/",
    ],
)
def test_metadata_stays_refused_when_private_urls_are_allowed(url: str, tripwire: Any) -> None:
    with (
        Client(offline_settings(allow_private_urls=True)) as client,
        pytest.raises(ImageFetchError, match="metadata"),
    ):
        client.search(url)
    assert tripwire.connects == []


def test_a_loopback_redirect_to_metadata_is_refused_when_private_urls_are_allowed(
    fault_server: Callable[..., Any], tripwire: Any
) -> None:
    def redirect(connection: socket.socket, server: Any) -> None:
        connection.sendall(
            b"HTTP/1.1 302 Found\r\nLocation: http://169.254.169.254/latest/meta-data/\r\n"
            b"Content-Length: 0\r\n\r\n"
        )

    server = fault_server(redirect)
    with (
        Client(offline_settings(allow_private_urls=True)) as client,
        pytest.raises(ImageFetchError, match="metadata"),
    ):
        client.search(f"{server.url}/a.jpg")
    assert server.requests == 1
    assert set(tripwire.connects) == {"127.0.0.1"}

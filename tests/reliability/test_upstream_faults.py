"""Upstreams that stall, flood or lie: each attempt ends in time and in bounded memory with a typed
error, and the next provider answers.

trace.moe is pointed at a raw fault server; whatanimeisthis's emulator is the next provider. Every
scenario asserts the typed failure of the first attempt, the fall-through, the elapsed time against
``ANISEARCH_TIMEOUT`` (or the deadline), and a bound on the memory Python allocated meanwhile.
"""

from __future__ import annotations

import json
import socket
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from anisearch import AllProvidersFailedError, AsyncClient, ProviderTimeoutError, Settings
from anisearch_emulators.whatanimeisthis import create_app as whatanimeisthis_app

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

TIMEOUT = 2.0
SCENARIO_BOUND = 20.0
"""No scenario may take longer, whatever breaks: a regression fails the test instead of hanging the run."""
MIB = 1024 * 1024
SMALL_PEAK = 64 * MIB
"""What a search may allocate with a capped answer (the image, one 4 MiB body, parsing): far below 200 MB."""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def send_head(connection: socket.socket, *headers: str) -> None:
    connection.sendall(("HTTP/1.1 200 OK\r\n" + "".join(f"{h}\r\n" for h in headers) + "\r\n").encode())


def trickle(connection: socket.socket, server: Any) -> None:
    send_head(connection, "Content-Type: application/json", "Content-Length: 100000")
    while server.sleep(0.2):
        connection.sendall(b" ")


def slow_headers(connection: socket.socket, server: Any) -> None:
    connection.sendall(b"HTTP/1.1 200 OK\r\n")
    while server.sleep(0.2):
        connection.sendall(b"X-Slow: 1\r\n")


def endless(connection: socket.socket, server: Any) -> None:
    send_head(connection, "Content-Type: application/json", "Transfer-Encoding: chunked")
    chunk = b"10000\r\n" + b" " * 0x10000 + b"\r\n"
    while not server.stopping.is_set():
        connection.sendall(chunk)


def answer_of(size: int) -> Callable[[socket.socket, Any], None]:
    def huge(connection: socket.socket, server: Any) -> None:
        send_head(connection, "Content-Type: application/json", f"Content-Length: {size}")
        block = b" " * 0x10000
        for _ in range(size // len(block)):
            if server.stopping.is_set():
                return
            connection.sendall(block)

    return huge


def gzip_bomb(blocks: tuple[bytes, bytes]) -> Callable[[socket.socket, Any], None]:
    first, following = blocks

    def bomb(connection: socket.socket, server: Any) -> None:  # 1 GiB of zeros in about 1 MB
        send_head(
            connection, "Content-Type: application/json", "Content-Encoding: gzip", "Content-Length: 1100000"
        )
        connection.sendall(first)
        for _ in range(1023):
            if server.stopping.is_set():
                return
            connection.sendall(following)

    return bomb


def many_hits(samples: Path, count: int) -> Callable[[socket.socket, Any], None]:
    body = json.loads((samples / "api-v1-search-tinted-good-2021.json").read_text())
    body["result"] = body["result"][:1] * count
    payload = json.dumps(body).encode()

    def flood(connection: socket.socket, server: Any) -> None:
        send_head(connection, "Content-Type: application/json", f"Content-Length: {len(payload)}")
        connection.sendall(payload)

    return flood


def reset(connection: socket.socket, server: Any) -> None:
    connection.close()


def absurd_header(connection: socket.socket, server: Any) -> None:
    connection.sendall(b"HTTP/1.1 200 OK\r\nX-Huge: " + b"a" * (1 * MIB) + b"\r\n\r\n")


def canned(status: str, headers: list[str], body: bytes) -> Callable[[socket.socket, Any], None]:
    def answer(connection: socket.socket, server: Any) -> None:
        head = "".join(f"{h}\r\n" for h in [*headers, f"Content-Length: {len(body)}"])
        connection.sendall(f"HTTP/1.1 {status}\r\n{head}\r\n".encode() + body)

    return answer


NGINX_500 = (
    b"<html>\r\n<head><title>500 Internal Server Error</title></head>\r\n<body>\r\n"
    b"<center><h1>500 Internal Server Error</h1></center>\r\n"
    b"<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)


def settings(trace_url: str, fallback_url: str, **extra: Any) -> Settings:
    return Settings.load(
        providers=["tracemoe", "whatanimeisthis"],
        provider_options={"tracemoe": {"url": trace_url}, "whatanimeisthis": {"url": fallback_url}},
        timeout=TIMEOUT,
        cache="off",
        **extra,
    )


SCENARIOS = {
    "trickling body": ("trickle", "ProviderTimeoutError"),
    "slow headers": ("slow_headers", "ProviderTimeoutError"),
    "endless body": ("endless", "UpstreamResponseError"),
    "200 MB answer": ("huge", "UpstreamResponseError"),
    "gzip bomb": ("bomb", "UpstreamResponseError"),
    "100 000 hits": ("hits", "UpstreamResponseError"),
    "reset after the request": ("reset", "ProviderConnectionError"),
    "1 MB header": ("absurd_header", "ProviderConnectionError"),
    "JSON nested 100 000 deep": ("deep", "UpstreamResponseError"),
    "Retry-After: 99999999999999999999": ("retry_after", "RateLimitedError"),
    "nginx HTML 500": ("nginx", "ProviderServerError"),
    "a negative quota": ("negative", "UpstreamResponseError"),
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
async def test_a_misbehaving_provider_falls_through_in_time_and_memory(  # noqa: PLR0917 - fixtures
    scenario: str,
    fault_server: Callable[..., Any],
    live_server: Callable[[Any], Any],
    samples: Path,
    gauge: Callable[[], Any],
    gzip_blocks: tuple[bytes, bytes],
) -> None:
    kind, error = SCENARIOS[scenario]
    behaviours: dict[str, Any] = {
        "trickle": trickle,
        "slow_headers": slow_headers,
        "endless": endless,
        "huge": answer_of(200 * 1000 * 1000),
        "bomb": gzip_bomb(gzip_blocks),
        "hits": many_hits(samples, 100_000) if kind == "hits" else None,
        "reset": reset,
        "absurd_header": absurd_header,
        "deep": canned("200 OK", ["Content-Type: application/json"], b"[" * 100_000 + b"]" * 100_000),
        "retry_after": canned(
            "429 Too Many Requests",
            ["Content-Type: text/html", "Retry-After: 99999999999999999999"],
            b"<html/>",
        ),
        "nginx": canned("500 Internal Server Error", ["Content-Type: text/html", "Server: nginx"], NGINX_500),
        "negative": canned(
            "200 OK",
            ["Content-Type: application/json"],
            json.dumps({"frameCount": 1, "error": "", "result": [], "quota": -5, "quotaUsed": -9}).encode(),
        ),
    }
    faulty = fault_server(behaviours[kind])
    fallback = live_server(whatanimeisthis_app())
    image = (samples / "tinted-good.jpg").read_bytes()
    async with AsyncClient(settings(faulty.url, fallback.url)) as client:
        with gauge() as used, anyio.fail_after(SCENARIO_BOUND):
            result = await client.search(image)
    assert result.provider == "whatanimeisthis"
    first = result.attempts[0]
    assert (first.provider, first.outcome, first.error) == ("tracemoe", "failed", error)
    assert faulty.requests >= 1
    assert first.elapsed_seconds is not None
    assert first.elapsed_seconds < TIMEOUT + 1
    assert used.elapsed < TIMEOUT + 1 + (result.attempts[1].elapsed_seconds or 0) + 1
    assert used.peak_bytes < SMALL_PEAK, f"{used.peak_bytes / MIB:.0f} MiB"


async def test_a_deadline_bounds_the_whole_search(
    fault_server: Callable[..., Any], samples: Path, gauge: Callable[[], Any]
) -> None:
    faulty = fault_server(trickle)
    options = {"tracemoe": {"url": faulty.url}}
    config = Settings.load(providers=["tracemoe"], provider_options=options, timeout=30, cache="off")
    image = (samples / "tinted-good.jpg").read_bytes()
    async with AsyncClient(config) as client:
        with (
            gauge() as used,
            pytest.raises(AllProvidersFailedError) as caught,
            anyio.fail_after(SCENARIO_BOUND),
        ):
            await client.search(image, deadline=1.5)
    assert used.elapsed < 1.5 + 1
    assert caught.group_contains(ProviderTimeoutError)


async def test_fanout_returns_what_answered_when_one_provider_stalls(
    fault_server: Callable[..., Any],
    live_server: Callable[[Any], Any],
    samples: Path,
    gauge: Callable[[], Any],
) -> None:
    faulty = fault_server(trickle)
    fallback = live_server(whatanimeisthis_app())
    image = (samples / "tinted-good.jpg").read_bytes()
    async with AsyncClient(settings(faulty.url, fallback.url)) as client:
        with gauge() as used, anyio.fail_after(SCENARIO_BOUND):
            result = await client.search(image, strategy="fanout")
    assert used.elapsed < TIMEOUT + 1 + 1
    assert result.provider == "whatanimeisthis"
    assert result.best is not None
    outcomes = {a.provider: (a.outcome, a.error) for a in result.attempts}
    assert outcomes["tracemoe"] == ("failed", "ProviderTimeoutError")


async def test_a_refused_connection_falls_through(live_server: Callable[[Any], Any], samples: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    fallback = live_server(whatanimeisthis_app())
    image = (samples / "tinted-good.jpg").read_bytes()
    async with AsyncClient(settings(f"http://127.0.0.1:{port}", fallback.url)) as client:
        result = await client.search(image)
    assert result.provider == "whatanimeisthis"
    assert result.attempts[0].error == "ProviderConnectionError"


async def test_a_reset_before_the_request_is_read_falls_through(
    fault_server: Callable[..., Any], live_server: Callable[[Any], Any], samples: Path
) -> None:
    def slam(connection: socket.socket, server: Any) -> None:
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST, not FIN
        connection.close()

    faulty = fault_server(slam, read_request=False)
    fallback = live_server(whatanimeisthis_app())
    image = (samples / "tinted-good.jpg").read_bytes()
    async with AsyncClient(settings(faulty.url, fallback.url)) as client:
        with anyio.fail_after(SCENARIO_BOUND):
            result = await client.search(image)
    assert result.provider == "whatanimeisthis"
    assert result.attempts[0].error == "ProviderConnectionError"

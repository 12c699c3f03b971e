"""The reliability suite's tools: an off-machine tripwire, raw fault servers, a memory gauge.

Nothing here can reach another machine. pytest-socket (``--allow-hosts`` in pyproject) refuses
non-loopback connections, and :func:`tripwire` adds an audit hook that refuses every
name lookup and connection to anything but loopback, and records it, so a regression in the code
under test fails the test instead of sending a packet.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
import threading
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from anisearch_emulators.tracemoe import create_app as tracemoe_app
from anisearch_emulators.whatanimeisthis import create_app as whatanimeisthis_app

_LOOPBACK_NAMES = {"localhost", "localhost.", "ip6-localhost"}


@dataclass
class Tripwire:
    """Whether the audit hook is armed, and what it refused."""

    armed: bool = False
    refused: list[str] = field(default_factory=list)
    connects: list[str] = field(default_factory=list)
    """Every connection attempted while armed, loopback included."""


TRIPWIRE = Tripwire()


def _is_loopback(host: object) -> bool:
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if not isinstance(host, str):
        return False
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if not TRIPWIRE.armed:
        return
    target: object = None
    if event == "socket.getaddrinfo":
        target = args[0]
    elif event in {"socket.connect", "socket.sendto"}:
        address = args[1]
        if isinstance(address, str | bytes):  # a Unix socket path: local by definition
            return
        target = address[0] if isinstance(address, tuple) else address
        TRIPWIRE.connects.append(f"{target}")
    else:
        return
    if target is None or _is_loopback(target):
        return
    TRIPWIRE.refused.append(f"{event} {target!r}")
    raise RuntimeError(f"reliability tripwire: {event} to non-loopback {target!r}")


sys.addaudithook(_audit)  # hooks cannot be removed; the fixture arms and disarms this one


@pytest.fixture(autouse=True)
def tripwire() -> Iterator[Tripwire]:
    """Arm the tripwire for the test; fail it if anything tried to leave the machine."""
    TRIPWIRE.refused.clear()
    TRIPWIRE.connects.clear()
    TRIPWIRE.armed = True
    try:
        yield TRIPWIRE
    finally:
        TRIPWIRE.armed = False
    assert not TRIPWIRE.refused, f"tried to leave the machine: {TRIPWIRE.refused}"


# ---------------------------------------------------------------- fault servers

Behaviour = Callable[[socket.socket, "FaultServer"], None]


class FaultServer:
    """A raw HTTP/1.1 server on 127.0.0.1 that reads each request, then behaves as told (one thread each)."""

    def __init__(self, behaviour: Behaviour, *, read_request: bool = True) -> None:
        self.behaviour = behaviour
        self.read_request = read_request
        self.requests = 0
        self.stopping = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        with connection:
            connection.settimeout(30)
            if not self.read_request:  # e.g. a reset before the request is read
                self.behaviour(connection, self)
                return
            try:
                head = b""
                while b"\r\n\r\n" not in head:
                    data = connection.recv(65536)
                    if not data:
                        return
                    head += data
                headers, _, body = head.partition(b"\r\n\r\n")
                length = 0
                for line in headers.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(body) < length:
                    data = connection.recv(65536)
                    if not data:
                        return
                    body += data
                self.requests += 1
                self.behaviour(connection, self)
            except OSError:  # the client gave up: that is what most scenarios expect
                return

    def sleep(self, seconds: float) -> bool:
        """Wait, unless the server is stopping; False when it is."""
        return not self.stopping.wait(seconds)

    def stop(self) -> None:
        self.stopping.set()
        self._listener.close()


@pytest.fixture
def fault_server() -> Iterator[Callable[[Behaviour], FaultServer]]:
    """Start fault servers; all are stopped after the test."""
    servers: list[FaultServer] = []

    def start(behaviour: Behaviour, *, read_request: bool = True) -> FaultServer:
        server = FaultServer(behaviour, read_request=read_request)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def gzip_blocks() -> tuple[bytes, bytes]:
    """(first, next): a gzip stream of zeros as blocks of 1 MiB each, about 1 KB compressed per block."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(1 << 20)
    first = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    following = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    return first, following


@pytest.fixture(scope="session")
def fallback_app() -> Any:
    """The whatanimeisthis emulator: the next provider that answers when the first one misbehaves."""
    return whatanimeisthis_app()


@pytest.fixture(scope="session")
def trace_app() -> Any:
    return tracemoe_app()


# ---------------------------------------------------------------- gauges


@dataclass
class Gauge:
    elapsed: float = 0.0
    peak_bytes: int = 0


@contextmanager
def measured() -> Iterator[Gauge]:
    """Elapsed seconds and the peak of Python-allocated memory (tracemalloc) within the block."""
    gauge = Gauge()
    tracemalloc.start()
    started = time.monotonic()
    try:
        yield gauge
    finally:
        gauge.elapsed = time.monotonic() - started
        gauge.peak_bytes = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()


@pytest.fixture
def gauge() -> Callable[[], Any]:
    return measured

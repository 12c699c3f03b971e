"""Wake a process waiting for a SQLite ledger's slot as soon as another process frees one.

Every search that waits for a slot binds a Unix datagram socket in a directory beside the ledger file
(``<ledger>.wake/``, mode 0700), named after the scope and the instant it started waiting (where that path
is too long for a socket address, the file is an empty marker and the socket is bound in Linux's abstract
namespace under a name derived from the path). The settle that frees a slot sends one byte to the
longest-waiting socket of the scope, so waiters are woken one at a time, in the order they came, across
every process of the machine; none polls and no herd of waiters races for the freed slot. A socket whose
process died refuses the byte and is removed, and the next one is rung. A waiter never depends on the bell
alone: it also wakes after at most :data:`MAX_NAP_SECONDS` and looks again (a holder that was killed rings
nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
import socket
import sys
import time
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

__all__ = ["MAX_NAP_SECONDS", "Doorbell"]

logger = logging.getLogger("anisearch")

MAX_NAP_SECONDS = 1.0
"""The longest a waiter sleeps without looking again, bell or not (a killed holder rings nothing)."""

_SOCKET_PATH_BYTES = 100
"""Longest socket path used as is: ``sun_path`` holds 108 bytes on Linux, 104 on macOS."""
_ABSTRACT = sys.platform.startswith("linux")
"""Linux binds sockets by name, without a file, in its abstract namespace."""


def _address(path: str) -> str | bytes | None:
    """Where the waiter of the file ``path`` listens: the path, an abstract name, or None (nowhere)."""
    if len(os.fsencode(path)) <= _SOCKET_PATH_BYTES:
        return path
    if _ABSTRACT:
        return b"\0anisearch-" + hashlib.blake2b(os.fsencode(path), digest_size=16).hexdigest().encode()
    return None


class Doorbell:
    """The wake-up sockets of one SQLite ledger file.

    Args:
        ledger: The ledger file; the sockets live in ``<ledger>.wake/``. Where no Unix socket can be bound
            (no ``AF_UNIX``, or a path too long outside Linux), waiters just nap and look again.
    """

    def __init__(self, ledger: Path) -> None:
        self.directory = ledger.with_name(ledger.name + ".wake")
        self._usable = hasattr(socket, "AF_UNIX")

    @staticmethod
    def _prefix(provider: str, scope: str) -> str:
        return hashlib.blake2b(f"{provider}|{scope}".encode(), digest_size=8).hexdigest()

    @contextlib.contextmanager
    def listening(self, provider: str, scope: str) -> Iterator[Listener]:
        """A waiter of the scope: its socket (None where none can be bound: it then just naps and looks
        again) is rung by the next freed slot. Rings it received but did not use, because it left or two
        came at once, are passed to the next waiter when it leaves, so no freed slot waits for a nap's end."""
        listener = Listener(None)
        path = ""
        if self._usable:
            # The system-wide monotonic clock orders waiters across processes, whatever the wall clock does.
            name = f"{self._prefix(provider, scope)}-{time.monotonic_ns():020d}-{secrets.token_hex(4)}"
            path = os.path.join(self.directory, name)  # noqa: PTH118 - a str for the socket calls
            listener = Listener(self._bind(path))
        try:
            yield listener
        finally:
            if listener.sock is not None:
                unused = listener.unused + _read_rings(listener.sock)
                listener.sock.close()
                with contextlib.suppress(OSError):
                    os.unlink(path)  # noqa: PTH108 - the path is a str already
                self.ring(provider, scope, times=unused)

    def _bind(self, path: str) -> socket.socket | None:
        address = _address(path)
        if address is None:
            return None
        sock: socket.socket | None = None
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            sock.settimeout(0.0)  # non-blocking
            sock.bind(address)
            if isinstance(address, bytes):  # an abstract socket: the file is the marker the bell finds
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except OSError as exc:
            if sock is not None:
                sock.close()
            logger.debug("no doorbell socket at %s (%s): the waiting search naps instead", path, exc)
            return None
        return sock

    def ring(self, provider: str, scope: str, times: int = 1) -> None:
        """Wake the ``times`` longest-waiting searches of the scope (dead waiters are skipped and removed).

        Never raises: a bell that cannot ring leaves the waiters to their next look.
        """
        names = self._waiting(provider, scope) if self._usable and times > 0 else []
        if not names:
            return
        try:
            bell = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        except OSError:
            return
        with bell:
            bell.settimeout(0.0)  # non-blocking
            for name in names:
                times -= _rang(bell, os.path.join(self.directory, name))  # noqa: PTH118 - a str for sockets
                if times == 0:
                    return

    def _waiting(self, provider: str, scope: str) -> list[str]:
        """The scope's waiters' file names, longest-waiting first (none when the directory is missing)."""
        prefix = self._prefix(provider, scope) + "-"
        try:
            return sorted(entry.name for entry in self.directory.iterdir() if entry.name.startswith(prefix))
        except OSError:
            return []


def _rang(bell: socket.socket, path: str) -> int:
    """Ring the waiter of ``path``: 1 when it will wake, 0 when it cannot (a dead one is removed)."""
    address = _address(path)
    if address is None:
        return 0  # a waiter this platform cannot reach; it looks again on its own
    try:
        bell.sendto(b"1", address)
    except BlockingIOError:
        return 1  # its queue is full: it was rung already and will look
    except OSError:  # refused or gone: a waiter that died or left; not a waiter any more
        with contextlib.suppress(OSError):
            os.unlink(path)  # noqa: PTH108 - the path is a str already
        return 0
    return 1


class Listener:
    """One waiting search's end of the doorbell (see :meth:`Doorbell.listening`).

    Args:
        sock: Its bound, non-blocking datagram socket; None where none could be bound.
    """

    def __init__(self, sock: socket.socket | None) -> None:
        self.sock = sock
        self.unused = 0
        """Rings received beyond the one each wake-up uses (passed on when the waiter leaves)."""

    async def nap(self, seconds: float, woken: asyncio.Event) -> None:
        """Return when the socket is rung or ``woken`` is set (a slot freed in this process), or after
        ``seconds`` seconds (at most :data:`MAX_NAP_SECONDS`). A ring sets ``woken``."""
        loop = asyncio.get_running_loop()
        if self.sock is not None:
            loop.add_reader(self.sock.fileno(), self._rung, woken)
        try:
            with anyio.move_on_after(min(seconds, MAX_NAP_SECONDS)):
                await woken.wait()
        finally:
            if self.sock is not None:
                loop.remove_reader(self.sock.fileno())

    def _rung(self, woken: asyncio.Event) -> None:
        assert self.sock is not None  # noqa: S101 - only registered with a socket
        rings = _read_rings(self.sock)
        if rings:
            self.unused += rings - (0 if woken.is_set() else 1)
            woken.set()


def _read_rings(sock: socket.socket) -> int:
    """Read every ring waiting on ``sock``; how many there were."""
    rings = 0
    with contextlib.suppress(OSError):  # BlockingIOError: none left
        while sock.recv(16):
            rings += 1
    return rings

"""The SQLite ledger's doorbell: a freed slot wakes the longest-waiting search, in any process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from typing import TYPE_CHECKING

import anyio
import pytest

from anisearch._ledger import _doorbell as doorbell
from anisearch._ledger._doorbell import Doorbell, Listener

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.anyio

RING_FROM_ANOTHER_PROCESS = """
import sys
from pathlib import Path
from anisearch._ledger._doorbell import Doorbell, Listener
Doorbell(Path(sys.argv[1])).ring("tracemoe", "guest")
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def long_naps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doorbell, "MAX_NAP_SECONDS", 60.0)  # so only a ring ends a nap early


async def napped(listener: Listener, seconds: float) -> bool:
    """Nap; True when a ring ended it."""
    woken = asyncio.Event()
    await listener.nap(seconds, woken)
    return woken.is_set()


async def test_a_ring_from_another_process_wakes_the_waiter(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.sqlite3"
    with Doorbell(ledger).listening("tracemoe", "guest") as listener:
        assert listener.sock is not None
        ringer = await anyio.open_process([sys.executable, "-c", RING_FROM_ANOTHER_PROCESS, str(ledger)])
        assert await napped(listener, 30)
        assert await ringer.wait() == 0
    assert list(Doorbell(ledger).directory.iterdir()) == []  # the waiter's socket is gone with it


async def test_the_longest_waiting_search_is_woken_first_and_alone(tmp_path: Path) -> None:
    bell = Doorbell(tmp_path / "ledger.sqlite3")
    with (
        bell.listening("tracemoe", "guest") as first,
        bell.listening("tracemoe", "guest") as second,
        bell.listening("tracemoe", "api-key:other") as other_scope,
    ):
        bell.ring("tracemoe", "guest")
        assert await napped(first, 5)
        assert not await napped(second, 0.2)
        assert not await napped(other_scope, 0.2)
        bell.ring("tracemoe", "guest", times=2)
        assert await napped(first, 5)
        assert await napped(second, 5)


async def test_a_waiter_rung_twice_passes_the_spare_ring_on_when_it_leaves(tmp_path: Path) -> None:
    bell = Doorbell(tmp_path / "ledger.sqlite3")
    with contextlib.ExitStack() as stack:
        first_waiter = bell.listening("tracemoe", "guest")
        first = first_waiter.__enter__()
        second = stack.enter_context(bell.listening("tracemoe", "guest"))
        bell.ring("tracemoe", "guest")
        bell.ring("tracemoe", "guest")  # two slots freed before the first waiter looked: both ring it
        assert await napped(first, 5)
        assert first.unused == 1
        assert not await napped(second, 0.2)
        first_waiter.__exit__(None, None, None)  # it takes one slot and leaves
        assert await napped(second, 5)  # the spare ring, passed on


async def test_a_waiter_leaving_before_it_looked_passes_its_ring_on(tmp_path: Path) -> None:
    bell = Doorbell(tmp_path / "ledger.sqlite3")
    with contextlib.ExitStack() as stack:
        first_waiter = bell.listening("tracemoe", "guest")
        first_waiter.__enter__()
        second = stack.enter_context(bell.listening("tracemoe", "guest"))
        bell.ring("tracemoe", "guest")  # rings the first, which gives up without reading it
        first_waiter.__exit__(None, None, None)
        assert await napped(second, 5)


async def test_a_waiter_that_died_is_skipped_and_forgotten(tmp_path: Path) -> None:
    bell = Doorbell(tmp_path / "ledger.sqlite3")
    with bell.listening("tracemoe", "guest") as dead:
        assert dead.sock is not None
        dead_path = dead.sock.getsockname()
        dead.sock.close()  # its process died: the socket file stays, nobody reads it
        dead.sock = None
        with bell.listening("tracemoe", "guest") as alive:
            bell.ring("tracemoe", "guest")
            assert await napped(alive, 5)
            assert not os.path.exists(dead_path)  # noqa: PTH110 - a socket path from getsockname()


async def test_a_path_too_long_for_a_socket_rings_through_a_marker(tmp_path: Path) -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("abstract sockets are Linux's")
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    bell = Doorbell(deep / "ledger.sqlite3")
    with bell.listening("tracemoe", "guest") as listener:
        assert listener.sock is not None
        (marker,) = bell.directory.iterdir()
        assert marker.is_file()  # an empty marker; the socket has no file of its own
        assert listener.sock.getsockname()[:1] == b"\0"
        bell.ring("tracemoe", "guest")
        assert await napped(listener, 5)
    assert list(bell.directory.iterdir()) == []


async def test_without_a_socket_a_waiter_naps_and_looks_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bell = Doorbell(tmp_path / "ledger.sqlite3")
    monkeypatch.setattr(bell, "_usable", False)
    with bell.listening("tracemoe", "guest") as listener:
        assert listener.sock is None
        bell.ring("tracemoe", "guest")  # rings nobody, raises nothing
        assert not await napped(listener, 0.05)


def test_a_waiter_unreachable_from_here_is_not_a_failure(tmp_path: Path) -> None:
    bell = Doorbell(tmp_path / "ledger.sqlite3")
    bell.directory.mkdir()
    (bell.directory / "not-a-socket").write_text("")
    bell.ring("tracemoe", "guest")  # a stray file of another scope: untouched
    assert (bell.directory / "not-a-socket").exists()

"""Opening a SQLite file that other processes create at the same moment (the result cache, the ledger), and
telling a damaged one of ours from somebody's file."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = [
    "HeldConnection",
    "aside_name",
    "connect",
    "foreign",
    "hold",
    "let_go",
    "locked",
    "open_waiting",
    "quiet_at_fork",
    "replaceable",
    "resetting",
    "set_aside",
]

logger = logging.getLogger("anisearch")

_T = TypeVar("_T")


def locked(exc: Exception) -> bool:
    """Whether SQLite refused because another connection holds the file (busy or locked)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.OperationalError) and code in {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}


def open_waiting(open_file: Callable[[], _T], timeout: float) -> _T:
    """``open_file()``, tried again a few times within ``timeout`` seconds while the file is locked.

    While another process turns a new file to WAL mode or creates its tables, SQLite can answer "database
    is locked" at once instead of waiting out the busy timeout (it does so where waiting could deadlock).
    Processes started together on a fresh machine (a bot fleet, a batch) meet that on their first step.

    Raises:
        sqlite3.Error: What ``open_file`` raised, when it is not a lock or the lock outlasted ``timeout``.
    """
    try:
        return open_file()
    except sqlite3.OperationalError as exc:
        if not locked(exc):
            raise
    from anisearch._retry import retrying, stamina  # only when processes create one file at once

    def tell(retry: int, wait: float) -> None:
        logger.info(
            "a SQLite file is locked while another process creates it; again in %.2f s (retry %d of 7)",
            wait,
            retry,
        )

    with retrying(tell):
        for attempt in stamina().retry_context(
            on=locked, attempts=8, timeout=timeout, wait_initial=0.01, wait_max=0.25
        ):
            with attempt:
                return open_file()
    raise AssertionError("unreachable: stamina re-raises the last error")  # pragma: no cover


SQLITE_HEADER = b"SQLite format 3\x00"
"""The first 16 bytes of every SQLite database file."""


class _Kept:
    """The descriptors this process keeps open on one database file, and how many users it has."""

    __slots__ = ("descriptors", "users")

    def __init__(self, descriptor: int) -> None:
        self.descriptors = [descriptor]
        self.users = 0


_KEPT: dict[tuple[int, int], _Kept] = {}
"""By ``(device, inode)``: the database files this process has open (see :func:`hold`)."""
_KEPT_LOCK = threading.RLock()  # re-entered when a collected connection lets go of its file mid-step
_KEEP = os.name == "posix"

_QUIET_AT_FORK: weakref.WeakSet[Any] = weakref.WeakSet()
"""What uses a SQLite connection only under its own ``_lock`` (the ledger, the caches): see
:func:`_before_fork`."""
_HELD_AT_FORK: list[Any] = []
"""The locks the fork in progress took (one fork at a time: :data:`_FORKING`)."""
_FORKING = threading.Lock()
"""Taken first before a fork and let go last after it: two threads forking at once would otherwise each
let go of the locks the other took."""
_FORK_WAIT_SECONDS = 30.0
"""How long a fork waits for a step in flight in another thread (a step waiting for another process's lock
may take the busy timeout); past it the fork goes on without that step's lock."""


def quiet_at_fork(owner: Any) -> None:
    """Have a fork of this process wait until no thread is in a step of ``owner``'s SQLite connection.

    ``owner`` uses its connection only holding ``owner._lock`` (opening it included). Before the fork its
    ``release_for_fork()``, when it has one, runs holding that lock: what a child must not inherit is let
    go (the ledger closes its connection, opened again by its next step). ``owner`` is held weakly.
    """
    _QUIET_AT_FORK.add(owner)


def _before_fork() -> None:
    """SQLite's bookkeeping of this process's file locks, and its own mutexes, are copied into a forked child
    as they stand. A step in flight in another thread left the child's new connections waiting for a lock
    nobody holds ("database is locked" after the busy timeout) or hung for good on a mutex nobody releases.
    So the fork waits for each owner's lock, then the file lock, in the order the steps take them."""
    _FORKING.acquire()
    for owner in list(_QUIET_AT_FORK):
        lock = owner._lock  # noqa: SLF001 - the lock quiet_at_fork() names
        if lock.acquire(timeout=_FORK_WAIT_SECONDS):
            _HELD_AT_FORK.append(lock)
            release = getattr(owner, "release_for_fork", None)
            if release is not None:
                with contextlib.suppress(Exception):  # the fork goes on; the next step opens it again
                    release()
    if _KEPT_LOCK.acquire(timeout=_FORK_WAIT_SECONDS):
        _HELD_AT_FORK.append(_KEPT_LOCK)


def _after_fork() -> None:
    """In the parent and in the child: the locks taken for the fork are let go (the child's thread is the
    one that took them), every one of them, then the next fork may begin."""
    try:
        while _HELD_AT_FORK:
            with contextlib.suppress(RuntimeError):
                _HELD_AT_FORK.pop().release()
    finally:
        _FORKING.release()


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork, after_in_child=_after_fork)


def _identity(path: Path) -> tuple[int, int]:
    info = os.stat(path)  # noqa: PTH116 - no descriptor is opened, so none is closed
    return info.st_dev, info.st_ino


def hold(path: Path) -> tuple[int, int]:
    """Open the database file ``path`` (created with mode 0600 when missing) before SQLite opens it, and keep
    it open until :func:`let_go`; returns its ``(device, inode)``.

    Closing any descriptor of a file drops every POSIX lock the process holds on it, SQLite's included. A
    WAL database whose shared lock was dropped so looks unused to another process closing its own last
    connection, which then deletes the WAL and shared-memory files that this process goes on writing: the
    ledger splits in two, each half unaware of the other's slots. So this process opens a database file of
    ours at most once while it uses it, and the header reads that tell ours from somebody's file go through
    that descriptor.

    Raises:
        OSError: The file cannot be opened or created.
    """
    if not _KEEP:  # Windows: no POSIX locks to drop, and a file kept open could not be set aside
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            info = os.fstat(descriptor)
        finally:
            os.close(descriptor)
        return info.st_dev, info.st_ino
    with _KEPT_LOCK:
        with contextlib.suppress(FileNotFoundError):
            identity = _identity(path)
            kept = _KEPT.get(identity)
            if kept is not None:
                kept.users += 1
                return identity
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        info = os.fstat(descriptor)
        identity = info.st_dev, info.st_ino
        kept = _KEPT.get(identity)
        if kept is None:
            kept = _KEPT[identity] = _Kept(descriptor)
        else:  # created by another process between the two looks: the same file, now opened twice
            kept.descriptors.append(descriptor)
        kept.users += 1
        return identity


def let_go(identity: tuple[int, int]) -> None:
    """One user of the file :func:`hold` returned ``identity`` for has closed its connection; the last one
    closes the file."""
    with _KEPT_LOCK:
        kept = _KEPT.get(identity)
        if kept is None:
            return
        kept.users -= 1
        if kept.users <= 0:
            del _KEPT[identity]
            for descriptor in kept.descriptors:
                with contextlib.suppress(OSError):
                    os.close(descriptor)


class HeldConnection(sqlite3.Connection):
    """A connection whose file this process keeps open until it is closed (see :func:`connect`)."""

    identity: tuple[int, int]
    """The file's ``(device, inode)`` when it was opened."""
    _release: weakref.finalize[[tuple[int, int]], HeldConnection]

    def close(self) -> None:
        try:
            super().close()
        finally:
            release = getattr(self, "_release", None)
            if release is not None:
                release()  # once: a finalizer runs at most once


def connect(path: Path, **options: Any) -> HeldConnection:
    """``sqlite3.connect(path, **options)`` of a database file of ours, held (:func:`hold`: created with mode
    0600 when missing) until the connection is closed or collected.

    Raises:
        OSError: The file cannot be opened or created.
        sqlite3.Error: SQLite cannot open it.
    """
    identity = hold(path)
    try:
        conn = sqlite3.connect(path, factory=HeldConnection, **options)
    except BaseException:
        let_go(identity)
        raise
    conn.identity = identity
    conn._release = weakref.finalize(conn, let_go, identity)  # noqa: SLF001 - its own attribute
    return conn


def _head(path: Path) -> bytes | None:
    """The file's first 16 bytes (fewer for a shorter file); None when it cannot be read.

    A file this process holds (:func:`hold`) is read through its descriptor, never opened and closed again.
    """
    with _KEPT_LOCK:
        try:
            kept = _KEPT.get(_identity(path))
            if kept is not None:
                return os.pread(kept.descriptors[0], len(SQLITE_HEADER), 0)
            with path.open("rb") as file:  # no connection of this process has it open
                return file.read(len(SQLITE_HEADER))
        except OSError:
            return None


def _ours(head: bytes, *, zeroed_ours: bool) -> bool:
    return head in {b"", SQLITE_HEADER} or (zeroed_ours and head == bytes(len(head)))


def replaceable(path: Path) -> bool:
    """Whether a cache file that failed to open may be deleted and started again: an empty file, a SQLite
    database (a damaged cache, or one of another schema version), or one whose first bytes a crash zeroed.
    Anything else is somebody's file that a setting points at by mistake, and is left as it is."""
    head = _head(path)
    return head is not None and _ours(head, zeroed_ours=True)


def foreign(path: Path, *, zeroed_ours: bool = False) -> bool:
    """Whether ``path`` is somebody's file, never to be written to: it exists and is neither empty nor a
    SQLite database (by its first 16 bytes), nor, with ``zeroed_ours``, zeroed as a crash leaves a file.
    One that cannot be read is not judged here: opening it says why."""
    head = _head(path)
    return head is not None and not _ours(head, zeroed_ours=zeroed_ours)


def aside_name(path: Path) -> Path:
    """Where :func:`set_aside` moves the damaged database ``path``: ``<name>.damaged``, or
    ``<name>.damaged-2`` and so on when an earlier one is kept there."""
    aside = path.with_name(path.name + ".damaged")
    number = 1
    while aside.exists():
        number += 1
        aside = path.with_name(f"{path.name}.damaged-{number}")
    return aside


def set_aside(path: Path) -> Path:
    """Move a damaged database of ours aside (a file misjudged as ours is not lost), and delete its WAL,
    shared memory and journal; the next open starts an empty one. Returns where it went.

    Raises:
        OSError: The directory cannot be written.
    """
    aside = aside_name(path)
    with contextlib.suppress(FileNotFoundError):
        path.replace(aside)
    for tail in ("-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            path.with_name(path.name + tail).unlink()
    return aside


@contextlib.contextmanager
def resetting(path: Path, timeout: float = 30.0) -> Iterator[None]:
    """Hold the lock that every process takes to start the database ``path`` afresh: ``<name>.reset-lock``
    beside it (filelock). Under it, check that the file still needs starting afresh, then move it aside:
    two processes doing so at once never move each other's fresh file aside.

    Raises:
        TimeoutError: Another process held the lock for ``timeout`` seconds (``filelock.Timeout``).
        OSError: The lock file cannot be made.
    """
    try:
        from filelock import FileLock
    except ImportError:  # an install that predates the dependency: as before it, without the lock
        yield
        return
    with FileLock(path.with_name(path.name + ".reset-lock"), timeout=timeout, mode=0o600):
        yield

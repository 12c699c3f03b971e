"""Opening a SQLite file that other processes create at the same moment (the result cache, the ledger), and
telling a damaged one of ours from somebody's file."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = ["aside_name", "foreign", "locked", "open_waiting", "replaceable", "resetting", "set_aside"]

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


def _head(path: Path) -> bytes | None:
    """The file's first 16 bytes (fewer for a shorter file); None when it cannot be read."""
    try:
        with path.open("rb") as file:
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

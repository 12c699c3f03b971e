"""Quota, rate, cooldown and concurrency state: :func:`open_ledger` picks a backend from a URL.

- ``memory://``: this process only (one ledger shared by every client of the process), forgotten at exit;
- ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db`` (SQLAlchemy's spelling: the path is
  what follows ``sqlite:///``): one file shared by the processes of a machine; the default, see
  :func:`default_ledger_url`;
- ``redis://[:password@]host:port/db`` (or ``rediss://``): shared by workers on many machines; needs the
  ``redis`` extra.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import platformdirs

from anisearch._exceptions import ConfigurationError
from anisearch._ledger._base import (
    UPSTREAM_HOLDER,
    Ledger,
    Refusal,
    Stale,
    Ticket,
    holder_is_dead,
    provider_scope,
    scope_id,
    this_holder,
)
from anisearch._ledger._memory import MemoryLedger
from anisearch._ledger._sqlite import SQLiteLedger
from anisearch._ledger._windows import STANDARD_WINDOWS, WindowSpec, zone
from anisearch._limits import REDIS_SECONDS
from anisearch._redact import redact
from anisearch._sqlite_url import expand_home, sqlite_url_path

if TYPE_CHECKING:
    from anisearch._ledger._base import Clock

__all__ = [
    "STANDARD_WINDOWS",
    "UPSTREAM_HOLDER",
    "Ledger",
    "Refusal",
    "Stale",
    "Ticket",
    "WindowSpec",
    "default_ledger_url",
    "holder_is_dead",
    "open_ledger",
    "provider_scope",
    "scope_id",
    "this_holder",
]

SCHEMES = ("memory", "sqlite", "redis", "rediss")


def default_ledger_url(state_dir: Path | None = None) -> str:
    """``sqlite:///`` + ``<state dir>/ledger.sqlite3``; the state dir defaults to
    ``platformdirs.user_state_path("anisearch")``.

    On Linux that is ``sqlite:////home/<user>/.local/state/anisearch/ledger.sqlite3`` (``$XDG_STATE_HOME``
    is honoured).
    """
    directory = state_dir if state_dir is not None else platformdirs.user_state_path("anisearch")
    return "sqlite:///" + str(directory / "ledger.sqlite3")


_SHARED_MEMORY: dict[str, MemoryLedger] = {}
_SHARED_LOCK = threading.Lock()


def _forget_after_fork() -> None:
    """A forked child is a process of its own: its ``memory://`` ledger starts empty, as any new process's.
    It inherited the parent's, slots the parent held included, which the parent frees in its own copy
    only: the child waited out their leases (15 s) for an upstream long free."""
    global _SHARED_LOCK  # noqa: PLW0603 - the lock another thread may have held at the fork
    _SHARED_MEMORY.clear()
    _SHARED_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)


def _shared_memory(timezone: str) -> MemoryLedger:
    """The process's one ``memory://`` ledger (per zone), so no two clients of a process collide."""
    with _SHARED_LOCK:
        if timezone not in _SHARED_MEMORY:
            _SHARED_MEMORY[timezone] = MemoryLedger(timezone=zone(timezone))
        return _SHARED_MEMORY[timezone]


def open_ledger(url: str, *, timezone: str = "UTC", clock: Clock | None = None) -> Ledger:
    """Open the ledger a URL names. Nothing is connected until first use.

    Args:
        url: ``memory://``, ``sqlite:///path`` (relative) or ``sqlite:////path`` (absolute) or a bare
            absolute path, or ``redis://host:port/db``. A path's leading ``~`` is the home directory.
        timezone: IANA zone whose midnight ends the calendar ``day`` and ``month`` windows that do not
            name their own zone (whatanimeisthis.com's daily credits).
        clock: Returns the current aware datetime; the system clock by default (tests inject one). A
            ``memory://`` ledger without a clock is the process's shared one.

    Returns:
        The ledger; close it with ``await ledger.aclose()``.

    Raises:
        ConfigurationError: An unknown scheme (the message lists the supported ones), a SQLite URL
            without a path or with a relative path surely meant as absolute (``sqlite:///tmp/x.db`` where
            ``./tmp`` does not exist and ``/tmp`` does), an unknown time zone, or a Redis URL without the
            ``redis`` extra installed.
    """
    tz = zone(timezone)
    if "://" not in url:
        url = expand_home(url, "the ledger URL")
    if "://" not in url and Path(url).is_absolute():  # a bare absolute path: a SQLite file
        url = f"sqlite:///{url}"
    scheme, sep, _ = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in SCHEMES:
        raise ConfigurationError(
            f"unsupported ledger URL {redact(url)!r}; use memory://, sqlite:///path or redis://host:port/db"
        )
    if scheme == "memory":
        return _shared_memory(timezone) if clock is None else MemoryLedger(timezone=tz, clock=clock)
    if scheme == "sqlite":
        path = sqlite_url_path(url, "the ledger URL")
        return SQLiteLedger(Path(path), url=url, timezone=tz, clock=clock)
    try:
        from redis.asyncio import BlockingConnectionPool, Redis
    except ImportError as exc:
        raise ConfigurationError(
            "the redis:// ledger needs the redis client: pip install 'anisearch-gateway[redis]'"
        ) from exc
    from anisearch._ledger._redis import RedisLedger

    try:
        # A blocking pool: a burst of searches waits for a free connection instead of failing.
        pool = BlockingConnectionPool.from_url(
            url,
            decode_responses=True,
            max_connections=64,
            timeout=30,
            socket_timeout=REDIS_SECONDS,
            socket_connect_timeout=REDIS_SECONDS,
        )
        client = Redis.from_pool(pool)
    except ValueError as exc:
        raise ConfigurationError(f"invalid Redis ledger URL {redact(url)!r}: {exc}") from exc
    return RedisLedger(client, url=redact(url), timezone=tz, clock=clock)

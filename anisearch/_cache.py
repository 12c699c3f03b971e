"""The result cache: the same image never costs quota twice.

A SQLite file (``platformdirs.user_cache_path("anisearch") / "results.sqlite3"`` unless ``ANISEARCH_CACHE``
says otherwise) maps (provider, image key, options) to the provider's :class:`SearchResult` for a TTL.
The image key is the colour layout descriptor for providers that search by it (the answer is a function
of those 33 numbers, so a re-encode or an upscale of the same frame hits the cache) and the SHA-256 of
the source bytes otherwise. Failures are never cached. Preview URLs that have expired are dropped on read.

The cache is disposable: a file that cannot be opened, is corrupt, was written with another schema or is
read-only when it is opened gives one logged warning, and searches go on without it (a corrupt SQLite file
or one of another schema is deleted and rebuilt when its directory allows; a locked or read-only one is
left alone, since another process may be using it, and so is a file that is not SQLite at all: somebody's
file the setting points at by mistake). A failure that says nothing of the file once it is open (locked
too long, disk full, made read-only) skips that one step only. :meth:`ResultCache.clear` always succeeds,
deleting the files if it must. Answers past their TTL are deleted as new ones are stored. The file is
created 0600 and its directory 0700: search history is nobody else's business.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from anisearch._limits import remaining_ms
from anisearch._models import SearchResult, fresh_previews
from anisearch._sqlite_busy import (
    connect,
    foreign,
    locked,
    open_waiting,
    quiet_at_fork,
    replaceable,
    resetting,
    set_aside,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = ["CacheInfo", "ResultCache", "WouldBlock", "cache_key"]

logger = logging.getLogger("anisearch")

T = TypeVar("T")

SCHEMA_VERSION = 1
"""``PRAGMA user_version`` of a cache this version writes; any other version is rebuilt."""
_COLUMNS = ["key", "provider", "stored_at", "expires_at", "result"]
_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    key TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    stored_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    result TEXT NOT NULL
)
"""
_BUSY_TIMEOUT_MS = 10_000
_WRITE_WAIT_MS = 1_000
"""The longest storing an answer waits for another process's write, milliseconds: the answer is in hand,
and a store skipped costs only a later search."""
_PRUNE_EVERY = 64
"""Expired answers and aliases are deleted in one of this many stores (the first of a process included)."""
_PRUNE_ROWS = 500
"""The most expired answers (and aliases) one store deletes."""
_PASSING = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_READONLY,
    }
)
"""Primary SQLite result codes of a failure that says nothing of the file (locked a while, disk full, an I/O
error, made read-only): that lookup or store is skipped, and the next one tries again."""
_SAID_EVERY_SECONDS = 60.0
"""How often a cache that keeps skipping steps says so, at most, seconds."""
_SOURCES_SCHEMA = """
CREATE TABLE IF NOT EXISTS sources (
    source TEXT PRIMARY KEY,
    image_key TEXT NOT NULL,  -- the result key this raw source was stored under for one provider
    expires_at REAL NOT NULL
)
"""


class WouldBlock(Exception):  # noqa: N818 - a signal, like BlockingIOError, not an error
    """A lookup with ``block=False`` would have waited: for another thread's write, or for a file lock."""


async def _in_thread(function: Callable[..., T], *args: object) -> T:
    """``function(*args)`` in a worker thread, for a step that would wait for a lock on the event loop.

    anyio is imported here, not with the module: the CLI's cache hit reads the cache with no event loop.
    """
    import anyio.to_thread

    return await anyio.to_thread.run_sync(function, *args)


def cache_key(provider: str, image_key: str, options: Sequence[object]) -> str:
    """A stable key for one provider's answer to one image with one set of options (hex SHA-256)."""
    material = json.dumps([provider, image_key, [str(option) for option in options]])
    return hashlib.sha256(material.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class CacheInfo:
    """What ``anisearch cache info`` shows."""

    path: Path
    entries: int
    """Stored results that have not expired."""
    expired: int
    """Stored results past their TTL (deleted as new answers are stored, or by ``clear``)."""
    size_bytes: int
    """Size of the SQLite file, bytes."""


def _set_up(db: sqlite3.Connection) -> None:
    """Check the schema of an opened file (refusing another one) and create what is missing."""
    db.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    columns = [row[1] for row in db.execute("PRAGMA table_info(results)")]
    if columns and (columns != _COLUMNS or version not in {0, SCHEMA_VERSION}):
        raise sqlite3.DatabaseError(f"another schema (version {version})")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")  # a disposable cache: no sync on every commit (WAL stays intact)
    db.execute(_SCHEMA)
    db.execute(_SOURCES_SCHEMA)  # which raw source maps to which result key (added in place: no bump)
    db.execute("CREATE INDEX IF NOT EXISTS results_expiry ON results (expires_at)")  # for pruning
    db.execute("CREATE INDEX IF NOT EXISTS sources_expiry ON sources (expires_at)")
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    db.execute("SELECT COUNT(*) FROM results").fetchone()


_SAID: set[tuple[str, str]] = set()
"""The ``(path, problem)`` of every unusable cache warned about in this process."""


class ResultCache:
    """A TTL cache of :class:`SearchResult` in one SQLite file, safe across processes (WAL).

    It never raises for a broken cache: see the module docstring. ``usable`` says whether it works.

    Args:
        path: The SQLite file.
        ttl_seconds: How long an answer is reused, seconds.
    """

    def __init__(self, path: Path, *, ttl_seconds: float) -> None:
        self.path = path
        self.ttl_seconds = ttl_seconds
        self._lock = threading.Lock()
        quiet_at_fork(self)  # a fork waits for a step in flight: a child inherits no SQLite lock of it
        self._warned = False
        self.problem: str | None = None
        """Why the cache is unusable, in words (None while it works)."""
        self._stores = 0
        self._skipped_said = -math.inf
        self._db: sqlite3.Connection | None = None
        with self._lock:  # opening is a step too: a fork waits for it (quiet_at_fork)
            try:
                self._db = open_waiting(self._open, _BUSY_TIMEOUT_MS / 1000)
            except sqlite3.OperationalError as exc:  # locked, read-only, unopenable: another process's use
                self._warn(exc)
            except sqlite3.DatabaseError as exc:  # corrupt or another schema: ours to replace
                if replaceable(path):
                    self._db = self._rebuild(exc)
                else:
                    self._warn(
                        f"{exc}; it is not a SQLite file, so it is left as it is: "
                        "point ANISEARCH_CACHE elsewhere, or delete it"
                    )
            except OSError as exc:
                self._warn(exc)

    # ------------------------------------------------------------ opening

    @property
    def usable(self) -> bool:
        """Whether the cache file is open (False: searches run without a cache)."""
        return self._db is not None

    def _files(self) -> list[Path]:
        return [
            self.path,
            *(self.path.with_name(self.path.name + tail) for tail in ("-wal", "-shm", "-journal")),
        ]

    def _open(self) -> sqlite3.Connection:
        if foreign(self.path, zeroed_ours=True):  # somebody's file: not even its mode changes
            raise sqlite3.DatabaseError("file is not a database")
        directory = self.path.parent
        if not directory.exists():
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(directory, 0o700)  # noqa: PTH101 - whatever the umask
        # created with mode 0600, and kept open by this process while it is used (see _sqlite_busy.hold)
        db = connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
        with contextlib.suppress(OSError):  # another user's file: leave its mode alone
            os.chmod(self.path, 0o600)  # noqa: PTH101
        try:
            _set_up(db)
        except BaseException:
            db.close()
            raise
        for file in self._files():  # WAL and shared-memory files take the database's mode; make sure
            with contextlib.suppress(OSError):
                os.chmod(file, 0o600)  # noqa: PTH101
        return db

    def _rebuild(self, problem: BaseException) -> sqlite3.Connection | None:
        """Move a broken cache aside and start an empty one; None (after one warning) when that fails too.

        Another process may have done so already: the cache is opened once more under the reset lock first.
        """
        try:
            with resetting(self.path, timeout=_BUSY_TIMEOUT_MS / 1000):
                try:
                    return open_waiting(self._open, _BUSY_TIMEOUT_MS / 1000)
                except sqlite3.OperationalError:
                    raise  # locked or unreadable: nothing to move aside
                except sqlite3.DatabaseError:
                    aside = set_aside(self.path)
                db = self._open()
        except (OSError, sqlite3.Error) as exc:
            self._warn(f"{problem}; rebuilding it failed too: {exc}")
            return None
        self._warned = True
        logger.warning(
            "the result cache %s was unusable (%s); started an empty one (the old one is kept as %s)",
            self.path,
            problem,
            aside.name,
        )
        return db

    def _warn(self, problem: object) -> None:
        self.problem = str(problem)
        said = (str(self.path), self.problem)
        if not self._warned and said not in _SAID:  # once per process, however often the file is opened
            self._warned = True
            _SAID.add(said)
            logger.warning("the result cache %s is unusable (%s); searching without it", self.path, problem)

    def _disable(self, problem: BaseException) -> None:
        self._warn(problem)
        db, self._db = self._db, None
        if db is not None:
            with contextlib.suppress(sqlite3.Error):
                db.close()

    def close(self) -> None:
        """Close the file (the cache is unusable afterwards)."""
        with self._lock:
            db, self._db = self._db, None
            if db is not None:
                with contextlib.suppress(sqlite3.Error):
                    db.close()

    # ------------------------------------------------------------ reading and writing

    def _run(
        self, query: Callable[[sqlite3.Connection], T], *, block: bool, wait_ms: int = _BUSY_TIMEOUT_MS
    ) -> T | None:
        """``query`` (reads, or one write transaction) on the open connection, under the lock; None when
        unusable or when it fails.

        A failure that says nothing of the file (:data:`_PASSING`: locked past ``wait_ms`` milliseconds,
        disk full, an I/O error) skips this one step, with a warning at most once a minute; any other
        (a damaged file) disables the cache. With ``block=False`` nothing waits: a lock held by another
        thread, or a file locked by another process (SQLite's busy timeout is 0 then), raises
        :class:`WouldBlock` instead.
        """
        if not self._lock.acquire(blocking=block):
            raise WouldBlock
        try:
            db = self._db
            if db is None:
                return None
            wait = wait_ms if block else 0
            try:
                if wait != _BUSY_TIMEOUT_MS:
                    db.execute(f"PRAGMA busy_timeout={wait}")
                return query(db)
            except sqlite3.OperationalError as exc:
                if not block and locked(exc):
                    raise WouldBlock from exc
                self._failed(exc)
            except sqlite3.Error as exc:
                self._failed(exc)
            finally:
                if wait != _BUSY_TIMEOUT_MS and self._db is not None:
                    with contextlib.suppress(sqlite3.Error):
                        self._db.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
            return None
        finally:
            self._lock.release()

    def _failed(self, exc: sqlite3.Error) -> None:
        code = getattr(exc, "sqlite_errorcode", None)
        if code is None or code & 0xFF not in _PASSING:
            self._disable(exc)
            return
        now = time.monotonic()
        if now - self._skipped_said >= _SAID_EVERY_SECONDS:
            self._skipped_said = now
            logger.warning(
                "the result cache %s could not be used this time (%s); going on without it", self.path, exc
            )

    def _get(self, key: str, now: float, *, block: bool = True) -> str | None:
        def query(db: sqlite3.Connection) -> str | None:
            row = db.execute(
                "SELECT result FROM results WHERE key = ? AND expires_at > ?", (key, now)
            ).fetchone()
            return None if row is None else str(row[0])

        return self._run(query, block=block)

    def _put(
        self,
        answer: tuple[str, str, str] | None,
        now: float,
        sources: Sequence[tuple[str, str]],
        *,
        block: bool = True,
        prune: bool = False,
        wait_ms: int = _WRITE_WAIT_MS,
    ) -> None:
        """Store ``(key, provider, stored JSON)`` (None: only the aliases) and the ``sources`` aliases, in
        one transaction."""

        def write(db: sqlite3.Connection) -> None:
            db.execute("BEGIN IMMEDIATE")  # with block=False, a file locked by another process: WouldBlock
            try:
                if answer is not None:
                    db.execute(
                        "INSERT OR REPLACE INTO results (key, provider, stored_at, expires_at, result) "
                        "VALUES (?, ?, ?, ?, ?)",
                        (*answer[:2], now, now + self.ttl_seconds, answer[2]),
                    )
                db.executemany(
                    "INSERT OR REPLACE INTO sources (source, image_key, expires_at) VALUES (?, ?, ?)",
                    [(*source, now + self.ttl_seconds) for source in sources],
                )
                if prune:  # at most _PRUNE_ROWS of each: a long-unused file is emptied over many stores
                    for table in ("results", "sources"):
                        db.execute(
                            f"DELETE FROM {table} WHERE rowid IN "  # noqa: S608 - the two table names above
                            f"(SELECT rowid FROM {table} WHERE expires_at <= ? LIMIT {_PRUNE_ROWS})",
                            (now,),
                        )
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

        self._run(write, block=block, wait_ms=wait_ms)

    def find(self, sources: Sequence[str], *, block: bool = True) -> tuple[int, str] | None:
        """The first live answer for a raw source, found without decoding it.

        ``sources`` are the source's aliases, one per provider in the order asked (see :meth:`put`). Under
        one lock, on the open connection, each alias gives the result key it was stored under, and that key
        its answer.

        Args:
            sources: The aliases, in the order the providers are asked.
            block: False to raise :class:`WouldBlock` rather than wait for a lock (so that the event loop
                can look up without a worker thread, and fall back to one).

        Returns:
            ``(index in sources, stored JSON)`` of the first hit; ``(-1, "")`` when every alias is known and
            none has an answer; None when an alias is unknown before any hit (the source must be prepared
            to tell), or the cache is unusable.

        Raises:
            WouldBlock: ``block`` is False and the lookup would have had to wait.
        """
        found = self.find_each(sources, lambda _: True, block=block)
        if found is None:
            return None
        answers, complete = found
        for index, payload in enumerate(answers):
            if payload is not None:
                return index, payload
        return (-1, "") if complete else None

    def find_each(
        self, sources: Sequence[str], enough: Callable[[str], bool], *, block: bool = True
    ) -> tuple[list[str | None], bool] | None:
        """The live answer (stored JSON, or None) of each alias in order, up to the first one ``enough``
        accepts, and whether every alias up to there was known.

        The list stops early at an unknown alias (the source must be prepared to tell what its key is;
        ``complete`` is then False). None when the cache is unusable.

        Raises:
            WouldBlock: ``block`` is False and the lookup would have had to wait.
        """
        now = datetime.now(UTC).timestamp()

        def query(db: sqlite3.Connection) -> tuple[list[str | None], bool]:
            answers: list[str | None] = []
            for source in sources:
                row = db.execute(
                    "SELECT image_key FROM sources WHERE source = ? AND expires_at > ?", (source, now)
                ).fetchone()
                if row is None:
                    return answers, False
                found = db.execute(
                    "SELECT result FROM results WHERE key = ? AND expires_at > ?", (row[0], now)
                ).fetchone()
                payload = None if found is None else str(found[0])
                answers.append(payload)
                if payload is not None and enough(payload):
                    break
            return answers, True

        return self._run(query, block=block)

    @staticmethod
    def decode(payload: str) -> SearchResult | None:
        """A stored answer as a :class:`SearchResult`, expired preview URLs removed; None if unreadable.

        The JSON is parsed once by pydantic-core; hits whose previews are still valid are kept as parsed.
        """
        try:
            result = SearchResult.model_validate_json(payload)
        except ValueError:  # written by an incompatible version: treat as a miss
            return None
        now = datetime.now(UTC)
        if all(hit.preview_expires_at is None or hit.preview_expires_at > now for hit in result.hits):
            return result
        return fresh_previews(result, now)

    async def get(self, key: str) -> SearchResult | None:
        """The cached result for ``key``, with expired preview URLs removed, or None (also when unusable).

        Read on the event loop when nothing holds the cache (a primary-key lookup on the open connection),
        else in a worker thread.
        """
        now = datetime.now(UTC).timestamp()
        try:
            payload = self._get(key, now, block=False)
        except WouldBlock:
            payload = await _in_thread(self._get, key, now)
        return None if payload is None else self.decode(payload)

    async def put(self, key: str, result: SearchResult, *, sources: Sequence[tuple[str, str]] = ()) -> None:
        """Store a successful provider answer (nothing when unusable). Callers never store failures.

        Args:
            key: The result key.
            result: The answer.
            sources: ``(source alias, result key)`` pairs to remember with it, one per provider asked, so
                that :meth:`find` goes from the raw source to each provider's result key next time.
        """
        await self._store((key, result.provider or "", result.model_dump_json()), sources)

    async def _store(self, answer: tuple[str, str, str] | None, sources: Sequence[tuple[str, str]]) -> None:
        now = datetime.now(UTC).timestamp()
        due = self._stores % _PRUNE_EVERY == 0  # decided once per store, whichever way it is written
        self._stores += 1
        # the answer is in hand: a wait for another process's lock ends by the search's deadline
        wait_ms = remaining_ms(_WRITE_WAIT_MS)
        if due and self._anything_expired(now):  # deleting is a worker thread's job, never the loop's
            await _in_thread(partial(self._put, answer, now, sources, prune=True, wait_ms=wait_ms))
            return
        try:  # on the event loop when nothing holds the cache (WAL, no sync on commit), else in a thread
            self._put(answer, now, sources, block=False)
        except WouldBlock:
            await _in_thread(partial(self._put, answer, now, sources, wait_ms=wait_ms))

    def _anything_expired(self, now: float) -> bool:
        """Whether an answer or an alias is past its TTL (two index lookups); True when the cache is busy,
        so that the thread that stores deletes them too."""

        def query(db: sqlite3.Connection) -> bool:
            return any(
                db.execute(f"SELECT 1 FROM {table} WHERE expires_at <= ? LIMIT 1", (now,)).fetchone()  # noqa: S608
                for table in ("results", "sources")
            )

        try:
            return bool(self._run(query, block=False))
        except WouldBlock:
            return True

    async def alias(self, sources: Sequence[tuple[str, str]]) -> None:
        """Remember ``(source alias, result key)`` pairs (see :meth:`put`) without storing an answer: for an
        answer found by its result key, so that :meth:`find` finds it from the raw source next time.
        Nothing when unusable."""
        if sources:
            await self._store(None, sources)

    def info(self) -> CacheInfo:
        """Counts and size of the cache file (zero entries when unusable)."""
        now = datetime.now(UTC).timestamp()
        live = expired = 0
        with self._lock:
            if self._db is not None:
                try:
                    live = self._db.execute(
                        "SELECT COUNT(*) FROM results WHERE expires_at > ?", (now,)
                    ).fetchone()[0]
                    expired = self._db.execute(
                        "SELECT COUNT(*) FROM results WHERE expires_at <= ?", (now,)
                    ).fetchone()[0]
                except sqlite3.Error as exc:
                    self._disable(exc)
        size = sum(file.stat().st_size for file in self._files() if file.is_file())
        return CacheInfo(path=self.path, entries=int(live), expired=int(expired), size_bytes=size)

    def clear(self) -> int:
        """Delete every entry; returns how many there were. Never fails: a cache that cannot be emptied
        is moved aside as ``<name>.damaged`` (and rebuilt empty when possible); then the count is 0. A
        file that is not a SQLite database (a setting pointing at somebody's file) is left as it is:
        ``usable`` stays False."""
        with self._lock:
            if self._db is not None:
                try:
                    count = int(self._db.execute("SELECT COUNT(*) FROM results").fetchone()[0])
                    self._db.execute("DELETE FROM results")
                    self._db.execute("DELETE FROM sources")
                    self._db.execute("VACUUM")
                except sqlite3.Error:
                    pass
                else:
                    return count
                with contextlib.suppress(sqlite3.Error):
                    self._db.close()
                self._db = None
            if foreign(self.path, zeroed_ours=True):
                return 0
            try:
                self._db = self._started_afresh()
            except (OSError, sqlite3.Error) as exc:  # TimeoutError (the reset lock) is an OSError
                self._db = None
                self._warn(exc)
            else:
                self.problem = None
            return 0

    def _started_afresh(self) -> sqlite3.Connection:
        """An empty cache in place of one that could not be emptied, under the reset lock: the file is opened
        and emptied once more first, in case another process started it afresh meanwhile (its fresh file is
        not moved aside), else moved aside as ``<name>.damaged``."""
        with resetting(self.path, timeout=_BUSY_TIMEOUT_MS / 1000):
            try:
                db = self._open()
            except sqlite3.OperationalError:
                raise  # locked or unreadable: nothing to move aside
            except sqlite3.DatabaseError:
                pass
            else:
                try:
                    db.execute("DELETE FROM results")
                    db.execute("DELETE FROM sources")
                except sqlite3.Error:
                    db.close()
                else:
                    return db
            with contextlib.suppress(OSError):
                set_aside(self.path)
            return self._open()

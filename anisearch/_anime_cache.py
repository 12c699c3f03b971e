"""The metadata cache: what a metadata provider said about each AniList ID, kept for a TTL.

One SQLite file (``<cache dir>/anime.sqlite3``) holds one row per AniList ID: the :class:`Anime` as JSON,
or nothing for an ID the provider does not know (so it is not asked again either), and when it was stored.
An ID in the cache costs no request while its row is younger than the TTL in force at the lookup (the
provider's ``ttl`` setting, 7 days by default), whatever the TTL was when it was stored: lowering the TTL
makes older rows stale at once, and raising it keeps rows that a shorter TTL had let go (they stay in the
file until they are asked for again and replaced, or cleared).

Files before schema version 1 kept an expiry instead of a time stored, in a table named ``anime``; their
rows, of unknown age, are dropped when the file is opened, and those IDs are asked for again. The table is
now named ``titles``: a process of an older version still running writes expiries to ``anime``, never
into ``titles`` as times stored (they would look fresh for up to twice the TTL). ``anisearch cache clear``
counts both: the answers the migration dropped and those written to ``anime`` since (emptied, never read).

Like the result cache it is disposable: a corrupt file is replaced by an empty one, and a file that cannot
be opened or read gives one logged warning and lookups go on without it. The file is created 0600 in a
0700 directory.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

import anyio.to_thread
from pydantic import ValidationError

from anisearch._limits import remaining_ms
from anisearch._models import Anime
from anisearch._sqlite_busy import connect, locked, quiet_at_fork, replaceable, resetting

__all__ = ["AnimeCache"]

logger = logging.getLogger("anisearch")

SCHEMA_VERSION = 1
"""``PRAGMA user_version`` of a file this version writes; version 0 is migrated, any other rebuilt."""
_COLUMNS = ["provider", "anilist_id", "stored_at", "anime"]
_SCHEMA = """
CREATE TABLE IF NOT EXISTS titles (
    provider TEXT NOT NULL,
    anilist_id INTEGER NOT NULL,
    stored_at REAL NOT NULL,  -- seconds since the epoch
    anime TEXT,
    PRIMARY KEY (provider, anilist_id)
)
"""
_CHUNK = 500
"""IDs per ``IN (...)`` query (SQLite allows 999 parameters in old builds)."""
_WAIT_MS = 1000
"""How long a lookup's read or store waits for another process's lock (at most what is left of the
search's deadline): the cache is disposable, and a search goes on without it rather than wait."""
_REOPEN_SECONDS = 5.0
"""After an open found the file locked, how long lookups go without it before one tries again."""
_OPEN_WAIT_MS = 10_000
"""How long opening (creating the table, switching to WAL) waits for another process's lock, outside a
search (``anisearch cache clear``)."""
SEARCH_OPEN_WAIT_MS = 100
"""How long a search's first open waits (on its event loop): creating or migrating the table takes another
process milliseconds. When another holds the file longer (an older version writing to it while this one
migrates it), the first lookup tries again within its own wait, then one every few seconds."""


def _schema(db: sqlite3.Connection) -> tuple[int, list[str]]:
    """The file's ``PRAGMA user_version`` and its table's columns (none before the table is created)."""
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    return version, [row[1] for row in db.execute("PRAGMA table_info(titles)")]


def _has_old_table(db: sqlite3.Connection) -> bool:
    """Whether the file has version 0's table ``anime`` (before its migration, or written again since by
    an older version's process still running)."""
    found = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'anime'").fetchone()
    return found is not None


def _old_answers(db: sqlite3.Connection) -> int:
    """How many answers the version 0 table ``anime`` holds (0 when there is none)."""
    return int(db.execute("SELECT COUNT(*) FROM anime").fetchone()[0]) if _has_old_table(db) else 0


def _answers_held(db: sqlite3.Connection, *, old: bool) -> int:
    """How many (provider, AniList ID) answers the file holds: in ``titles``, and in ``anime`` when ``old``
    (an ID in both is one answer)."""
    union = " UNION SELECT provider, anilist_id FROM anime" if old else ""
    query = f"SELECT COUNT(*) FROM (SELECT provider, anilist_id FROM titles{union})"  # noqa: S608 - no input in it
    return int(db.execute(query).fetchone()[0])


def _set_up(db: sqlite3.Connection, wait_ms: int) -> int:
    """Create the table, or bring a version 0 file up to date (its table ``anime`` dropped: the age of its
    rows is unknown), waiting ``wait_ms`` at most for another process's lock.

    Returns:
        How many answers of the version 0 table were dropped (0 when nothing was migrated).

    Raises:
        sqlite3.OperationalError: Another process held the file longer than ``wait_ms``.
        sqlite3.DatabaseError: The file holds another schema (it is rebuilt).
    """
    if _schema(db) == (SCHEMA_VERSION, _COLUMNS):
        return 0  # the usual open: nothing to write
    db.execute(f"PRAGMA busy_timeout={wait_ms}")
    db.execute("BEGIN IMMEDIATE")  # one process creates or migrates; the others wait and find it done
    version, columns = _schema(db)
    if version not in (0, SCHEMA_VERSION) or (columns and columns != _COLUMNS):
        raise sqlite3.DatabaseError(f"another schema (version {version})")
    dropped = _old_answers(db)
    db.execute("DROP TABLE IF EXISTS anime")  # version 0's, of expiries
    db.execute(_SCHEMA)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    db.execute("COMMIT")
    return dropped


@contextlib.contextmanager
def _held(lock: threading.Lock, wait_ms: int) -> Iterator[bool]:
    """``lock`` taken for the block, waiting ``wait_ms`` at most (lookups of other searches in this
    process may hold it, each up to its own wait); yields whether it was taken."""
    taken = lock.acquire(timeout=wait_ms / 1000)
    try:
        yield taken
    finally:
        if taken:
            lock.release()


class AnimeCache:
    """Per-AniList-ID answers of a metadata provider, with a TTL; never raises for a broken file.

    Args:
        path: The SQLite file.
        clock: The current time, seconds since the epoch (default: :func:`time.time`); tests move it.
        open_wait_ms: How long opening waits for another process's lock, milliseconds (see
            :data:`SEARCH_OPEN_WAIT_MS`). A file still locked then is opened again by the first lookup,
            then by one every :data:`_REOPEN_SECONDS`.
    """

    def __init__(
        self, path: Path, *, clock: Callable[[], float] = time.time, open_wait_ms: int = _OPEN_WAIT_MS
    ) -> None:
        self.path = path
        self._clock = clock
        self._lock = threading.Lock()
        quiet_at_fork(self)  # a fork waits for a step in flight: a child inherits no SQLite lock of it
        self._db: sqlite3.Connection | None = None
        self._warned = False
        self.problem: str | None = None
        """Why the file could not be used, when it could not."""
        self._locked = False
        """The first open found another process holding the file: a lookup opens it again (see
        :meth:`_opened`)."""
        self._reopen_at = 0.0
        """``time.monotonic()`` before which no lookup tries to open a file found locked."""
        self._migrated_away = 0
        """Answers of a version 0 file that opening it dropped, not yet counted by :meth:`clear`."""
        with self._lock:  # opening is a step too: a fork waits for it (quiet_at_fork)
            try:
                self._db = self._open(open_wait_ms)
            except sqlite3.OperationalError as exc:  # locked, read-only: another process may be using it
                if locked(exc):
                    self._locked = True  # the first lookup tries again; then one in a while
                else:
                    self._warn(exc)
            except sqlite3.DatabaseError as exc:  # corrupt or another schema: ours to replace
                if replaceable(path):
                    self._db = self._rebuild(exc)
                else:
                    self._warn(f"{exc}; it is not a SQLite file, so it is left as it is")
            except OSError as exc:
                self._warn(exc)

    def _rebuild(self, problem: BaseException) -> sqlite3.Connection | None:
        """Delete a broken metadata cache and start an empty one, under the reset lock: another process may
        have started it afresh already (its fresh file is kept); None (after one warning) when that fails."""
        try:
            with resetting(self.path, timeout=10):
                try:
                    return self._open(_OPEN_WAIT_MS)
                except sqlite3.OperationalError:
                    raise  # locked or unreadable: nothing to delete
                except sqlite3.DatabaseError:
                    pass
                for tail in ("", "-wal", "-shm", "-journal"):
                    self.path.with_name(self.path.name + tail).unlink(missing_ok=True)
                db = self._open(_OPEN_WAIT_MS)
        except (OSError, sqlite3.Error) as exc:  # TimeoutError (the reset lock) is an OSError
            self._warn(f"{problem}; rebuilding it failed too: {exc}")
            return None
        logger.warning("the metadata cache %s was unusable (%s); started an empty one", self.path, problem)
        return db

    def _open(self, wait_ms: int) -> sqlite3.Connection:
        directory = self.path.parent
        if not directory.exists():
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        # created with mode 0600, and kept open by this process while it is used (see _sqlite_busy.hold)
        db = connect(self.path, timeout=wait_ms / 1000, isolation_level=None, check_same_thread=False)
        try:
            db.execute(f"PRAGMA busy_timeout={wait_ms}")
            db.execute("PRAGMA journal_mode=WAL")
            self._migrated_away += _set_up(db, wait_ms)
        except BaseException:
            db.close()  # rolls back a migration cut short
            raise
        return db

    def _warn(self, problem: object) -> None:
        self.problem = str(problem)
        if not self._warned:
            self._warned = True
            logger.warning(
                "the metadata cache %s is unusable (%s); looking up without it", self.path, problem
            )

    @property
    def usable(self) -> bool:
        """Whether the file is open, or another process held it at the first open (tried again later)."""
        return self._db is not None or self._locked

    def _opened(self, wait_ms: int) -> sqlite3.Connection | None:
        """The open file (under ``self._lock``): opened again when the first open found it locked, waiting
        ``wait_ms`` at most; None while it stays locked, or when it cannot be used (one warning)."""
        if self._db is None and self._locked and time.monotonic() >= self._reopen_at:
            try:
                self._db = self._open(wait_ms)
            except sqlite3.OperationalError as exc:
                if locked(exc):
                    self._reopen_at = time.monotonic() + _REOPEN_SECONDS  # one try in a while, not each
                else:
                    self._locked = False
                    self._warn(exc)
            except (sqlite3.DatabaseError, OSError) as exc:
                self._locked = False
                self._warn(exc)
            else:
                self._locked = False
        return self._db

    def close(self) -> None:
        """Close the file (the cache is unusable afterwards)."""
        with self._lock:
            db, self._db = self._db, None
            if db is not None:
                with contextlib.suppress(sqlite3.Error):
                    db.close()

    def _get(
        self, provider: str, ids: list[int], now: float, ttl_seconds: float, wait_ms: int
    ) -> dict[int, Anime | None]:
        found: dict[int, Anime | None] = {}
        with _held(self._lock, wait_ms) as held:
            db = self._opened(wait_ms) if held else None
            if db is None:
                return found
            try:
                db.execute(f"PRAGMA busy_timeout={wait_ms}")
                for start in range(0, len(ids), _CHUNK):
                    chunk = ids[start : start + _CHUNK]
                    marks = ",".join("?" * len(chunk))
                    rows = db.execute(
                        f"SELECT anilist_id, anime FROM titles WHERE provider = ? AND stored_at > ? "  # noqa: S608 - only '?' marks are interpolated
                        f"AND stored_at <= ? AND anilist_id IN ({marks})",
                        (provider, now - ttl_seconds, now, *chunk),
                    ).fetchall()
                    for anilist_id, payload in rows:
                        found[int(anilist_id)] = (
                            None if payload is None else Anime.model_validate_json(payload)
                        )
            except (sqlite3.Error, ValidationError) as exc:
                self._warn(exc)
                return {}
        return found

    def _put(
        self, provider: str, answers: Mapping[int, Anime | None], stored_at: float, wait_ms: int
    ) -> None:
        rows = [
            (provider, anilist_id, stored_at, None if anime is None else anime.model_dump_json())
            for anilist_id, anime in answers.items()
        ]
        with _held(self._lock, wait_ms) as held:
            db = self._opened(wait_ms) if held else None
            if db is None:
                return
            try:
                db.execute(f"PRAGMA busy_timeout={wait_ms}")
                db.executemany("INSERT OR REPLACE INTO titles VALUES (?, ?, ?, ?)", rows)
            except sqlite3.Error as exc:
                self._warn(exc)

    async def get(
        self, provider: str, anilist_ids: Iterable[int], *, ttl_seconds: float
    ) -> dict[int, Anime | None]:
        """The answers for ``anilist_ids`` stored less than ``ttl_seconds`` ago: an :class:`Anime`, or None
        for an ID the provider does not know. IDs not in the result are not cached, or stale under this
        TTL (whichever TTL they were stored under), or stored after now by the clock (it was set back).
        Waits for another process's lock no longer than the search's deadline allows (1 s at most), then
        answers nothing."""
        wait_ms = remaining_ms(_WAIT_MS)
        ids = list(anilist_ids)
        return await anyio.to_thread.run_sync(self._get, provider, ids, self._clock(), ttl_seconds, wait_ms)

    async def put(self, provider: str, answers: Mapping[int, Anime | None]) -> None:
        """Store ``answers`` (None: the provider does not know the ID) as of now; skipped (one warning)
        when another process holds the file longer than :meth:`get` would wait."""
        stored_at = self._clock()
        await anyio.to_thread.run_sync(self._put, provider, dict(answers), stored_at, remaining_ms(_WAIT_MS))

    def clear(self) -> int | None:
        """Forget every answer (``anisearch cache clear``): how many were held; None when they could not be
        forgotten, :attr:`problem` saying why (another process holds the file, or it cannot be used).

        A file of version 0 counts its answers too: those that opening it dropped (the migration), and
        those an older version's process still running has written to its table ``anime`` since (deleted
        here; this version never reads them).
        """
        with self._lock:
            db = self._opened(0)  # opening waited already, when another process held the file
            if db is None:
                if self._locked:
                    self.problem = "another process holds it"
                return None
            try:
                db.execute(f"PRAGMA busy_timeout={_OPEN_WAIT_MS}")  # a command: it may wait
                db.execute("BEGIN IMMEDIATE")
                try:
                    old = _has_old_table(db)
                    held = _answers_held(db, old=old)
                    db.execute("DELETE FROM titles")
                    if old:
                        db.execute("DELETE FROM anime")  # kept, emptied: the older process writes to it
                    db.execute("COMMIT")
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                self.problem = "another process holds it" if locked(exc) else str(exc)
                return None
            migrated, self._migrated_away = self._migrated_away, 0
            return held + migrated

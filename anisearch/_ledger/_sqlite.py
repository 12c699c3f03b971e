"""``sqlite:///path``: the ledger in one SQLite file, shared by every process of the machine.

The file is opened on first use, in WAL mode with a busy timeout; every change is one ``BEGIN IMMEDIATE``
transaction, so concurrent processes serialise on SQLite's own lock (no extra file lock). Every call runs
in a worker thread (``anyio.to_thread``), so waiting for the lock never stalls the event loop. The parent
directory is created with mode 0700 and the file with 0600. Times are stored as integer microseconds
since the Unix epoch.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from functools import partial
from typing import TYPE_CHECKING, TypeVar, cast

import anyio.to_thread

from anisearch._exceptions import ConfigurationError
from anisearch._ledger._stored import ScopeRecord, StoredLedger
from anisearch._ledger._windows import Truth, from_us, horizon, to_us

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from datetime import datetime
    from pathlib import Path
    from zoneinfo import ZoneInfo

    from anisearch._ledger._stored import Clock
    from anisearch._ledger._windows import EventKind
    from anisearch._models import QuotaSource, QuotaWindow

__all__ = ["SQLiteLedger"]

_T = TypeVar("_T")
_SCHEMA_VERSION = 1
_BUSY_TIMEOUT_MS = 15_000
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS windows (
        provider TEXT NOT NULL, scope TEXT NOT NULL, window_name TEXT NOT NULL,
        quota_limit INTEGER, used INTEGER, remaining INTEGER,
        observed_at INTEGER NOT NULL, resets_at INTEGER, source TEXT NOT NULL,
        PRIMARY KEY (provider, scope, window_name)) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS scopes (
        provider TEXT NOT NULL, scope TEXT NOT NULL,
        cooldown_until INTEGER, cooldown_reason TEXT, concurrency INTEGER,
        PRIMARY KEY (provider, scope)) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS events (
        provider TEXT NOT NULL, scope TEXT NOT NULL, kind TEXT NOT NULL, at INTEGER NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS events_by_time ON events (provider, scope, kind, at)",
    """CREATE TABLE IF NOT EXISTS leases (
        token TEXT PRIMARY KEY, provider TEXT NOT NULL, scope TEXT NOT NULL, expires_at INTEGER NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS leases_by_scope ON leases (provider, scope, expires_at)",
)


def _transaction(conn: sqlite3.Connection, body: Callable[[sqlite3.Connection], _T]) -> _T:
    """Run ``body`` in one ``BEGIN IMMEDIATE`` transaction (the write lock is taken up front, so two
    writers never deadlock upgrading a read lock)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = body(conn)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


class SQLiteLedger(StoredLedger):
    """The ledger in a SQLite file (``sqlite:///relative/path`` or ``sqlite:////absolute/path``).

    Args:
        path: The database file; its directory is created (mode 0700) on first use.
        url: The URL it was opened from.
        timezone: Zone of the calendar ``day`` and ``month`` windows.
        clock: The current instant (default: the system clock).
    """

    def __init__(self, path: Path, *, url: str, timezone: ZoneInfo, clock: Clock | None = None) -> None:
        super().__init__(url, timezone=timezone, clock=clock)
        self.path = path
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    # ------------------------------------------------------------------ plumbing

    def _connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
            conn = sqlite3.connect(
                self.path, timeout=_BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
            )
            conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > _SCHEMA_VERSION:
                conn.close()
                raise ConfigurationError(
                    f"the ledger at {self.path} was written by a newer anisearch (schema {version}); "
                    "upgrade anisearch or use another ledger URL"
                )
            _transaction(conn, _create_schema)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigurationError(f"cannot open the ledger database {self.path}: {exc}") from exc
        return conn

    def _call(self, body: Callable[[sqlite3.Connection], _T]) -> _T:
        with self._lock:
            if self._conn is None:
                self._conn = self._connect()
            return body(self._conn)

    async def _run(self, body: Callable[[sqlite3.Connection], _T]) -> _T:
        return await anyio.to_thread.run_sync(self._call, body)

    async def _write(self, body: Callable[[sqlite3.Connection], _T]) -> _T:
        return await self._run(partial(_transaction, body=body))

    async def aclose(self) -> None:
        """Close the database connection (it reopens on the next call)."""

        def close() -> None:
            with self._lock:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None

        await anyio.to_thread.run_sync(close)

    # ------------------------------------------------------------------ primitives

    async def _load(self, provider: str, scope: str) -> ScopeRecord:
        def load(conn: sqlite3.Connection) -> ScopeRecord:
            record = ScopeRecord()
            for name, limit, used, remaining, observed, resets, source in conn.execute(
                "SELECT window_name, quota_limit, used, remaining, observed_at, resets_at, source"
                " FROM windows WHERE provider = ? AND scope = ?",
                (provider, scope),
            ):
                window = cast("QuotaWindow", name)
                record.truths[window] = Truth(
                    window=window,
                    observed_at=from_us(observed),
                    limit=limit,
                    used=used,
                    remaining=remaining,
                    resets_at=from_us(resets) if resets is not None else None,
                    source=cast("QuotaSource", source),
                )
            row = conn.execute(
                "SELECT cooldown_until, cooldown_reason, concurrency FROM scopes"
                " WHERE provider = ? AND scope = ?",
                (provider, scope),
            ).fetchone()
            if row is not None:
                record.cooldown_until = from_us(row[0]) if row[0] is not None else None
                record.cooldown_reason, record.concurrency = row[1], row[2]
            return record

        return await self._run(load)

    async def _scopes(self, provider: str | None) -> list[tuple[str, str]]:
        def scopes(conn: sqlite3.Connection) -> list[tuple[str, str]]:
            rows = conn.execute(
                "SELECT provider, scope FROM windows UNION SELECT provider, scope FROM scopes"
            ).fetchall()
            return [(p, s) for p, s in rows if provider is None or p == provider]

        return await self._run(scopes)

    async def _put_truths(self, provider: str, scope: str, truths: Sequence[Truth]) -> None:
        rows = [
            (
                provider,
                scope,
                truth.window,
                truth.limit,
                truth.used,
                truth.remaining,
                to_us(truth.observed_at),
                to_us(truth.resets_at) if truth.resets_at is not None else None,
                truth.source,
            )
            for truth in truths
        ]

        def put(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT INTO windows VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (provider, scope, window_name) DO UPDATE SET"
                " quota_limit = excluded.quota_limit, used = excluded.used, remaining = excluded.remaining,"
                " observed_at = excluded.observed_at, resets_at = excluded.resets_at,"
                " source = excluded.source"
                " WHERE excluded.observed_at >= windows.observed_at",
                rows,
            )
            conn.execute(
                "DELETE FROM events WHERE provider = ?1 AND scope = ?2 AND at <"
                " (SELECT MIN(observed_at) FROM windows WHERE provider = ?1 AND scope = ?2)",
                (provider, scope),
            )

        await self._write(put)

    async def _put_cooldown(self, provider: str, scope: str, until: datetime, reason: str) -> None:
        await self._write(
            lambda conn: conn.execute(
                "INSERT INTO scopes (provider, scope, cooldown_until, cooldown_reason) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (provider, scope) DO UPDATE SET"
                " cooldown_until = excluded.cooldown_until, cooldown_reason = excluded.cooldown_reason"
                " WHERE scopes.cooldown_until IS NULL OR scopes.cooldown_until < excluded.cooldown_until",
                (provider, scope, to_us(until), reason),
            )
        )

    async def _put_concurrency(self, provider: str, scope: str, concurrency: int) -> None:
        await self._write(
            lambda conn: conn.execute(
                "INSERT INTO scopes (provider, scope, concurrency) VALUES (?, ?, ?)"
                " ON CONFLICT (provider, scope) DO UPDATE SET concurrency = excluded.concurrency",
                (provider, scope, concurrency),
            )
        )

    async def _add_event(
        self, provider: str, scope: str, kind: EventKind, at: datetime, now: datetime
    ) -> None:
        def add(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO events VALUES (?, ?, ?, ?)", (provider, scope, kind, to_us(at)))
            conn.execute(
                "DELETE FROM events WHERE provider = ? AND scope = ? AND kind = ? AND at < ?",
                (provider, scope, kind, to_us(now - horizon(kind))),
            )

        await self._write(add)

    async def _events(
        self, provider: str, scope: str, kind: EventKind, since: datetime, need: Callable[[int], int]
    ) -> tuple[int, list[datetime]]:
        where = "FROM events WHERE provider = ? AND scope = ? AND kind = ? AND at >= ?"
        params = (provider, scope, kind, to_us(since))

        def events(conn: sqlite3.Connection) -> tuple[int, list[datetime]]:
            count: int = conn.execute(f"SELECT COUNT(*) {where}", params).fetchone()[0]
            wanted = need(count)
            if not wanted:
                return count, []
            rows = conn.execute(f"SELECT at {where} ORDER BY at LIMIT ?", (*params, wanted))
            return count, [from_us(at) for (at,) in rows]

        return await self._run(events)

    async def _try_acquire(
        self, provider: str, scope: str, *, token: str, slots: int, expires_at: datetime, now: datetime
    ) -> bool:
        def take(conn: sqlite3.Connection) -> bool:
            key = (provider, scope)
            conn.execute(
                "DELETE FROM leases WHERE provider = ? AND scope = ? AND expires_at <= ?", (*key, to_us(now))
            )
            row = conn.execute(
                "SELECT concurrency FROM scopes WHERE provider = ? AND scope = ?", key
            ).fetchone()
            limit = row[0] if row is not None and row[0] else slots
            held = conn.execute(
                "SELECT COUNT(*) FROM leases WHERE provider = ? AND scope = ?", key
            ).fetchone()[0]
            if held >= limit:
                return False
            conn.execute("INSERT INTO leases VALUES (?, ?, ?, ?)", (token, *key, to_us(expires_at)))
            return True

        return await self._write(take)

    async def _release_token(self, provider: str, scope: str, token: str) -> None:
        await self._write(
            lambda conn: conn.execute(
                "DELETE FROM leases WHERE token = ? AND provider = ? AND scope = ?", (token, provider, scope)
            )
        )

    async def clear(self) -> None:
        """Forget every truth, event, cooldown and lease in the file."""

        def clear(conn: sqlite3.Connection) -> None:
            for table in ("windows", "scopes", "events", "leases"):
                conn.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed table names

        await self._write(clear)


def _create_schema(conn: sqlite3.Connection) -> None:
    for statement in _SCHEMA:
        conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")

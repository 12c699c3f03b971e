"""``sqlite:///path``: the ledger in one SQLite file, shared by every process of the machine.

The file is opened on first use, in WAL mode with a busy timeout. Each step (reserve, settle, renew,
inspect) is one ``BEGIN IMMEDIATE`` transaction, so concurrent processes serialise on SQLite's own lock:
it loads the scope's small state (one JSON row: windows, cooldown, reservations in flight), runs the step
(``_logic.py``) over the scope's units (one indexed row each; per-window counts are kept by triggers, so
a step costs the same with 100 000 units as with none), and writes the state back. A step runs on the
event loop when SQLite's write lock is free, else in a worker thread, so waiting for the lock never
stalls the event loop. A search waiting for a slot sleeps on a socket of the file's doorbell
(``_doorbell.py``): whoever frees a slot rings the longest-waiting search of the scope, in any process of
the machine, so hand-over is immediate and nothing polls. The directory is created 0700 and the file
0600. Times are integer microseconds since the Unix epoch.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.to_thread

from anisearch._exceptions import LedgerError
from anisearch._ledger import _logic
from anisearch._ledger._base import Ledger, Nap
from anisearch._ledger._doorbell import Doorbell
from anisearch._ledger._units import WAITERS
from anisearch._limits import remaining_seconds
from anisearch._sqlite_busy import (
    aside_name,
    connect,
    foreign,
    locked,
    open_waiting,
    quiet_at_fork,
    resetting,
    set_aside,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Sequence
    from pathlib import Path
    from zoneinfo import ZoneInfo

    from anisearch._ledger._base import Clock
    from anisearch._ledger._logic import ReserveRequest, ScopeView, SettleRequest, WindowArgs

__all__ = ["SQLiteLedger"]

logger = logging.getLogger("anisearch")

_T = TypeVar("_T")
_SCHEMA_VERSION = 3
_BUSY_TIMEOUT_MS = 15_000
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS scopes (
        provider TEXT NOT NULL, scope TEXT NOT NULL, state TEXT NOT NULL,
        PRIMARY KEY (provider, scope)) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS units (
        provider TEXT NOT NULL, scope TEXT NOT NULL, window_name TEXT NOT NULL, member TEXT NOT NULL,
        leave INTEGER NOT NULL, pending INTEGER NOT NULL,
        PRIMARY KEY (provider, scope, window_name, member)) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS units_by_leave ON units (provider, scope, window_name, leave)",
    # The few units in flight, by leave (an index added to schema 3: older versions read the file as is).
    """CREATE INDEX IF NOT EXISTS units_pending ON units (provider, scope, window_name, leave)
        WHERE pending = 1""",
    # Per-window counts kept by triggers, so counting costs one lookup however many units a window holds.
    """CREATE TABLE IF NOT EXISTS unit_counts (
        provider TEXT NOT NULL, scope TEXT NOT NULL, window_name TEXT NOT NULL,
        total INTEGER NOT NULL, settled INTEGER NOT NULL,
        PRIMARY KEY (provider, scope, window_name)) WITHOUT ROWID""",
    """CREATE TRIGGER IF NOT EXISTS units_added AFTER INSERT ON units BEGIN
        INSERT INTO unit_counts VALUES (new.provider, new.scope, new.window_name, 1, new.pending = 0)
        ON CONFLICT (provider, scope, window_name)
        DO UPDATE SET total = total + 1, settled = settled + (new.pending = 0);
    END""",
    """CREATE TRIGGER IF NOT EXISTS units_removed AFTER DELETE ON units BEGIN
        UPDATE unit_counts SET total = total - 1, settled = settled - (old.pending = 0)
        WHERE provider = old.provider AND scope = old.scope AND window_name = old.window_name;
    END""",
    """CREATE TRIGGER IF NOT EXISTS units_settled AFTER UPDATE OF pending ON units
    WHEN old.pending != new.pending BEGIN
        UPDATE unit_counts SET settled = settled + (new.pending = 0) - (old.pending = 0)
        WHERE provider = new.provider AND scope = new.scope AND window_name = new.window_name;
    END""",
)
_OLD_TABLES = ("windows", "events", "leases")
_BUSY = object()
"""A step that could not run without waiting (see ``SQLiteLedger._try_inline``)."""


def _transaction(conn: sqlite3.Connection, body: Callable[[sqlite3.Connection], _T]) -> _T:
    """Run ``body`` in one ``BEGIN IMMEDIATE`` transaction (the write lock is taken up front, so two
    writers never deadlock upgrading a read lock)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = body(conn)
        conn.execute("COMMIT")
    except BaseException:
        _roll_back(conn)
        raise
    return result


def _roll_back(conn: sqlite3.Connection) -> None:
    """End a failed step's transaction (a failed COMMIT leaves it open), so the next step can begin."""
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


class _Units:
    """:class:`~anisearch._ledger._logic.Units` of one scope, as rows of the ``units`` table."""

    def __init__(self, conn: sqlite3.Connection, provider: str, scope: str) -> None:
        self._conn = conn
        self._key = (provider, scope)

    def _counts(self, window: str) -> tuple[int, int]:
        row = self._conn.execute(
            "SELECT total, settled FROM unit_counts WHERE provider = ? AND scope = ? AND window_name = ?",
            (*self._key, window),
        ).fetchone()
        return (0, 0) if row is None else (int(row[0]), int(row[1]))

    def purge(self, window: str, now: int) -> int:
        cursor = self._conn.execute(
            "DELETE FROM units WHERE provider = ? AND scope = ? AND window_name = ? AND leave <= ?",
            (*self._key, window, now),
        )
        return cursor.rowcount

    def count(self, window: str) -> int:
        return self._counts(window)[0]

    def count_settled(self, window: str) -> int:
        return self._counts(window)[1]

    def count_before(self, window: str, instant: int) -> int:
        row = self._conn.execute(
            "SELECT COUNT(*) FROM units WHERE provider = ? AND scope = ? AND window_name = ? AND leave < ?",
            (*self._key, window, instant),
        ).fetchone()
        return int(row[0])

    def count_settled_before(self, window: str, instant: int) -> int:
        pending = self._conn.execute(
            "SELECT COUNT(*) FROM units WHERE provider = ? AND scope = ? AND window_name = ? AND leave < ?"
            " AND pending = 1",
            (*self._key, window, instant),
        ).fetchone()
        return self.count_before(window, instant) - int(pending[0])

    def kth_leave(self, window: str, k: int) -> int | None:
        row = self._conn.execute(
            "SELECT leave FROM units WHERE provider = ? AND scope = ? AND window_name = ?"
            " ORDER BY leave LIMIT 1 OFFSET ?",
            (*self._key, window, k - 1),
        ).fetchone()
        return int(row[0]) if row is not None else None

    def add(self, window: str, member: str, leave: int) -> None:
        # An upsert, not INSERT OR REPLACE (its implicit delete fires no trigger): a member added again is
        # pending again, which the update trigger counts.
        self._conn.execute(
            "INSERT INTO units VALUES (?, ?, ?, ?, ?, 1)"
            " ON CONFLICT (provider, scope, window_name, member) DO UPDATE SET leave = excluded.leave,"
            " pending = 1",
            (*self._key, window, member, leave),
        )

    def settle(self, window: str, member: str, leave: int | None) -> None:
        self._conn.execute(
            "UPDATE units SET pending = 0, leave = COALESCE(?, leave)"
            " WHERE provider = ? AND scope = ? AND window_name = ? AND member = ? AND pending = 1",
            (leave, *self._key, window, member),
        )

    def remove(self, window: str, member: str) -> None:
        self._conn.execute(
            "DELETE FROM units WHERE provider = ? AND scope = ? AND window_name = ? AND member = ?",
            (*self._key, window, member),
        )

    def drop_oldest_settled(self, window: str, k: int) -> None:
        self._conn.execute(
            "DELETE FROM units WHERE provider = ?1 AND scope = ?2 AND window_name = ?3 AND member IN"
            " (SELECT member FROM units WHERE provider = ?1 AND scope = ?2 AND window_name = ?3"
            " AND pending = 0 ORDER BY leave LIMIT ?4)",
            (*self._key, window, k),
        )


def _state_from_json(text: str) -> _logic.ScopeState:
    data = json.loads(text)
    if not (
        isinstance(data, dict)
        and isinstance(data.get("windows"), dict)
        and isinstance(data.get("held"), dict)
    ):
        raise TypeError("a scope's stored state is not the ledger's")  # damaged, or written by hand
    return _logic.ScopeState(
        **{k: v for k, v in data.items() if k not in ("windows", "held")},
        windows={name: _logic.WindowState(**value) for name, value in data["windows"].items()},
        held={token: _logic.Held(**value) for token, value in data["held"].items()},
    )


def _fields(value: Any) -> dict[str, Any]:
    """A flat dataclass's fields (``dataclasses.asdict`` without its deep copies: a step is hot)."""
    return {name: getattr(value, name) for name in value.__dataclass_fields__}


def _state_to_json(state: _logic.ScopeState) -> str:
    data = _fields(state)
    data["windows"] = {name: _fields(window) for name, window in state.windows.items()}
    data["held"] = {token: _fields(held) for token, held in state.held.items()}
    return json.dumps(data, separators=(",", ":"))


class SQLiteLedger(Ledger):
    """The ledger in a SQLite file (``sqlite:///relative/path`` or ``sqlite:////absolute/path``).

    Args:
        path: The database file; its directory is created (mode 0700) on first use.
        url: The URL it was opened from.
        timezone: Zone of calendar windows that do not name their own.
        clock: The current instant (default: the system clock).
    """

    def __init__(self, path: Path, *, url: str, timezone: ZoneInfo, clock: Clock | None = None) -> None:
        super().__init__(url, timezone=timezone, clock=clock)
        self.path = path.absolute()  # the same file whatever the working directory becomes
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._inline = False
        """Steps may run on the event loop: the file is in WAL mode, where writers never wait for readers."""
        self._inode = 0
        """The open file's inode: another number at the path means the ledger was started afresh."""
        self._bell = Doorbell(path)
        quiet_at_fork(self)

    def release_for_fork(self) -> None:
        """Before this process forks, holding the lock: the connection is closed, so a child inherits no
        SQLite state of this file (SQLite's advice); this process opens it again at its next step."""
        self._drop()

    # ------------------------------------------------------------------ plumbing

    def _error(self, exc: BaseException) -> LedgerError:
        """What is wrong, and the way out: a damaged ledger, or values it cannot read, are for ``anisearch
        quota --reset``; somebody's file is never offered for it."""
        reset = "run 'anisearch quota --reset --yes' to start it afresh (it holds only what anisearch learned"
        if self._damaged(exc):
            advice = (
                f"{reset} about quotas; the reset keeps the damaged file as {aside_name(self.path).name})"
            )
        elif isinstance(exc, ValueError | TypeError | KeyError):  # values no version of anisearch wrote
            advice = f"{reset} about quotas)"
        elif isinstance(exc, sqlite3.DatabaseError) and foreign(self.path):
            advice = "it is not a SQLite file, so it is left as it is: point ANISEARCH_LEDGER elsewhere"
        elif isinstance(exc, Exception) and locked(exc):
            advice = "another process has held it for too long; try again, or set ANISEARCH_LEDGER elsewhere"
        else:
            advice = "check that the file and its directory can be read and written, or set ANISEARCH_LEDGER"
            advice += " to another ledger"
        return LedgerError(f"the quota ledger {self.path} cannot be used ({exc}); {advice}", ledger=self.url)

    def _damaged(self, exc: BaseException | None) -> bool:
        """Whether ``exc`` is SQLite saying the file is damaged (corrupt, or no database), and the file is
        one of ours (empty, or a SQLite header): not somebody's file, not a lock."""
        code = getattr(exc, "sqlite_errorcode", None)  # an extended code: its low byte is the primary one
        damage = isinstance(code, int) and code & 0xFF in {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}
        return damage and not foreign(self.path)

    def _start_afresh(self) -> None:
        """Move a damaged ledger file aside (``set_aside``): the next step creates an empty one, and every
        other process reconnects to it (see :meth:`_replaced`).

        Raises:
            LedgerError: The file cannot be moved (its directory is not writable).
        """
        with self._lock:
            self._drop()
            try:
                with resetting(self.path):
                    if not self._still_damaged():  # another process started it afresh meanwhile: keep theirs
                        return
                    set_aside(self.path)
            except TimeoutError as exc:
                raise LedgerError(
                    f"the quota ledger {self.path} is being started afresh by another process, which has not "
                    "finished; try again",
                    ledger=self.url,
                ) from exc
            except OSError as exc:
                raise self._error(exc) from exc

    def _still_damaged(self) -> bool:
        """Whether the file at the path is still damaged, by SQLite's quick check on a connection of its
        own (the file may be another process's fresh ledger by now)."""
        if not self.path.exists():
            return False
        try:
            with contextlib.closing(sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_MS / 1000)) as conn:
                rows = conn.execute("PRAGMA quick_check(1)").fetchall()
        except sqlite3.DatabaseError as exc:
            return self._damaged(exc)
        return rows != [("ok",)]

    def _replaced(self) -> bool:
        """Whether the open connection's file is no longer the one at the path: another process started
        the ledger afresh (one ``stat`` per step)."""
        try:
            return os.stat(self.path).st_ino != self._inode  # noqa: PTH116 - the cheapest call
        except OSError:
            return True

    def _drop(self) -> None:
        """Close the connection (called holding the lock): the next step opens the file again."""
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None

    def _open(self) -> sqlite3.Connection:
        if foreign(self.path):  # somebody's file: never written to, its mode never changed
            raise sqlite3.DatabaseError("file is not a database")
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # created with mode 0600, and kept open by this process while it is used (see _sqlite_busy.hold)
        conn = connect(
            self.path, timeout=_BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
        )
        self._inode = conn.identity[1]  # replaced after this, the next step just opens it again
        try:
            conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _connect(self) -> sqlite3.Connection:
        conn = self._open()
        try:
            self._set_up(conn)
        except BaseException:
            conn.close()  # opened again on the next try
            raise
        conn.execute("PRAGMA busy_timeout = 0")  # the steps on the event loop never wait (_try_inline)
        return conn

    def _set_up(self, conn: sqlite3.Connection) -> None:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        self._inline = str(mode).lower() == "wal"  # else (no shared memory) every step waits in a thread
        conn.execute("PRAGMA synchronous = NORMAL")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > _SCHEMA_VERSION:
            raise LedgerError(
                f"the quota ledger {self.path} was written by a newer anisearch (schema {version}); "
                "upgrade anisearch or use another ledger URL",
                ledger=self.url,
            )
        _transaction(conn, _create_schema)

    def _call(
        self,
        body: Callable[[sqlite3.Connection], _T],
        busy_ms: int = _BUSY_TIMEOUT_MS,
        *,
        bounded: bool = False,
    ) -> _T:
        """Run ``body`` in this (worker) thread, waiting up to ``busy_ms`` (the busy timeout, or what is
        left of the search's deadline) for SQLite's lock; ``bounded``, also for this process's own (another
        step holds it while it waits for SQLite's)."""
        asked = time.monotonic()
        if not self._lock.acquire(timeout=busy_ms / 1000 if bounded else -1):
            raise LedgerError(
                f"the quota ledger {self.path} is busy: another step of this process held it past the "
                "search's deadline; give the search a longer deadline, or try again",
                ledger=self.url,
            )
        if bounded:  # what is left of the deadline after waiting for this process's lock
            busy_ms = max(0, busy_ms - round((time.monotonic() - asked) * 1000))
        try:
            try:
                if self._conn is not None and self._replaced():
                    self._drop()
                if self._conn is None:  # stamina wants a timeout to retry within: at least 10 ms
                    self._conn = open_waiting(self._connect, max(busy_ms, 10) / 1000)
                conn = self._conn
                conn.execute(f"PRAGMA busy_timeout = {busy_ms}")
                try:
                    return body(conn)
                finally:
                    with contextlib.suppress(sqlite3.Error):  # never hide the step's own error
                        conn.execute("PRAGMA busy_timeout = 0")
            except (OSError, sqlite3.Error, ValueError, TypeError, KeyError) as exc:
                if self._damaged(exc):
                    self._drop()  # the next step opens the file again: a reset may have replaced it
                raise self._error(exc) from exc
        finally:
            self._lock.release()

    async def _write(self, body: Callable[[sqlite3.Connection], _T], *, by_deadline: bool = False) -> _T:
        """Run ``body`` in one transaction: on the event loop when the lock is free, else in a worker thread
        waiting for it up to the busy timeout, or (``by_deadline``) no longer than the search's deadline:
        a search that asks for a slot then fails with a LedgerError in time, not late. What records an
        answer already given always waits the whole timeout."""
        inline = self._try_inline(body)
        if inline is not _BUSY:
            return inline  # type: ignore[return-value]  # not _BUSY, so the body's own result
        cap = _BUSY_TIMEOUT_MS / 1000
        busy_ms = max(0, round((remaining_seconds(cap) if by_deadline else cap) * 1000))
        step = partial(self._call, partial(_transaction, body=body), busy_ms, bounded=by_deadline)
        return await anyio.to_thread.run_sync(step)

    def _try_inline(self, body: Callable[[sqlite3.Connection], _T]) -> _T | object:
        """Run the step on the event loop when nothing makes it wait, else return ``_BUSY``.

        A step is a few hundred microseconds of SQLite work; a worker thread costs as much again, and far
        more on a loaded machine. So the write lock is tried without waiting (busy timeout 0): free, the
        step runs here; taken by another process, or our connection in use by another thread, the step
        goes to a worker thread, which waits for the lock as before. The event loop never waits for a lock.
        The connection's busy timeout is 0 but while a worker thread uses it (``_call``), so this costs no
        statement of its own.
        """
        if self._conn is None or not self._inline or not self._lock.acquire(blocking=False):
            return _BUSY
        try:
            if self._replaced():  # started afresh by another process: reopened in the worker thread
                self._drop()
                return _BUSY
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError:
                return _BUSY  # locked by another process
            try:
                result = body(conn)
                conn.execute("COMMIT")
            except BaseException:
                _roll_back(conn)
                raise
        except (OSError, sqlite3.Error, ValueError, TypeError, KeyError) as exc:
            if self._damaged(exc):
                self._drop()
            raise self._error(exc) from exc
        else:
            return result
        finally:
            self._lock.release()

    def _step(
        self, provider: str, scope: str, run: Callable[[_logic.ScopeState, _Units], _T]
    ) -> Callable[[sqlite3.Connection], _T]:
        def body(conn: sqlite3.Connection) -> _T:
            row = conn.execute(
                "SELECT state FROM scopes WHERE provider = ? AND scope = ?", (provider, scope)
            ).fetchone()
            state = _state_from_json(row[0]) if row is not None else _logic.ScopeState()
            result = run(state, _Units(conn, provider, scope))
            text = _state_to_json(state)
            # A step that changed nothing writes nothing: a refused reserve costs no write to the file.
            if row is None or text != row[0]:
                conn.execute(
                    "INSERT INTO scopes VALUES (?, ?, ?)"
                    " ON CONFLICT (provider, scope) DO UPDATE SET state = excluded.state",
                    (provider, scope, text),
                )
            return result

        return body

    async def aclose(self) -> None:
        """Close the database connections (they reopen on the next call)."""

        def close() -> None:
            with self._lock:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None

        await anyio.to_thread.run_sync(close)

    # ------------------------------------------------------------------ steps

    async def _reserve(self, provider: str, scope: str, request: ReserveRequest) -> Any:
        return await self._write(
            self._step(provider, scope, lambda state, units: _logic.reserve(state, units, request)),
            by_deadline=True,
        )

    async def _settle(self, provider: str, scope: str, request: SettleRequest) -> None:
        freed = await self._write(
            self._step(provider, scope, lambda state, units: _logic.settle(state, units, request))
        )
        if freed:
            WAITERS.notify((self.path, provider, scope))
            self._bell.ring(provider, scope)

    async def _free_slot(self, provider: str, scope: str, token: str) -> None:
        freed = await self._write(
            self._step(provider, scope, lambda state, _units: _logic.free_slot(state, token))
        )
        if freed:
            WAITERS.notify((self.path, provider, scope))
            self._bell.ring(provider, scope)

    async def _wake(self, provider: str, scope: str) -> None:
        WAITERS.notify((self.path, provider, scope))
        self._bell.ring(provider, scope)

    async def _renew(
        self, provider: str, scope: str, token: str, lease_until: int, holder: str | None = None
    ) -> bool:
        def renew(state: _logic.ScopeState, _units: _Units) -> bool:
            held = state.held.get(token)
            if held is not None:
                held.lease_until = lease_until
                if holder is not None:
                    held.holder = holder
            return held is not None

        return await self._write(self._step(provider, scope, renew))

    async def _inspect(self, provider: str, scope: str, now: int, windows: Sequence[WindowArgs]) -> ScopeView:
        return await self._write(
            self._step(
                provider, scope, lambda state, units: _logic.inspect(state, units, now, tuple(windows))
            )
        )

    async def _scopes(self, provider: str | None) -> list[tuple[str, str]]:
        rows = await anyio.to_thread.run_sync(
            self._call, lambda conn: conn.execute("SELECT provider, scope FROM scopes").fetchall()
        )
        return [(p, s) for p, s in rows if provider is None or p == provider]

    async def _clear(self, provider: str | None) -> None:
        """Forget (one provider's) rows; a damaged file is moved aside and started afresh, whatever
        ``provider`` is (nothing in it can be read any more)."""

        def clear(conn: sqlite3.Connection) -> None:
            for table in ("scopes", "units", "unit_counts"):
                if provider is None:
                    conn.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed table names
                else:
                    conn.execute(f"DELETE FROM {table} WHERE provider = ?", (provider,))  # noqa: S608

        try:
            await self._write(clear)
        except LedgerError as exc:
            if not self._damaged(exc.__cause__):
                raise
            logger.warning(
                "the quota ledger %s was damaged (%s): starting it afresh", self.path, exc.__cause__
            )
            await anyio.to_thread.run_sync(self._start_afresh)
            await self._write(clear)  # creates the new file (an empty ledger)

    @contextlib.asynccontextmanager
    async def listening(self, provider: str, scope: str) -> AsyncIterator[Nap]:
        """Listen on a doorbell socket of the scope: a slot freed anywhere on the machine rings it."""
        key = (self.path, provider, scope)
        with self._bell.listening(provider, scope) as listener, WAITERS.watching(key) as nearby:

            async def nap(seconds: float) -> None:
                await listener.nap(seconds, nearby)
                nearby.clear()  # the next nap waits for the next freed slot

            yield Nap(provider, scope, nap)

    async def wait(self, provider: str, scope: str, seconds: float) -> None:
        """Return when a slot of the scope is freed by any process of the machine, or after ``seconds``
        (at most a second: a holder that was killed rings nothing, so the caller looks again)."""
        async with self.listening(provider, scope) as nap:
            await nap(seconds)


def _create_schema(conn: sqlite3.Connection) -> None:
    if conn.execute("PRAGMA user_version").fetchone()[0] < 2:  # noqa: PLR2004 - the schema of units
        for table in _OLD_TABLES:  # schema 1 kept counts only; the upstream's next answer restores them
            conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.execute("DROP TABLE IF EXISTS scopes")
    counted = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'unit_counts'").fetchone() is not None
    for statement in _SCHEMA:
        conn.execute(statement)
    if not counted:  # schema 2 had units but no counts: count what is there once
        conn.execute(
            "INSERT INTO unit_counts SELECT provider, scope, window_name, COUNT(*), SUM(pending = 0)"
            " FROM units GROUP BY provider, scope, window_name"
        )
    conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")

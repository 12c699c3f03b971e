"""The result cache: the same image never costs quota twice.

A SQLite file (``platformdirs.user_cache_path("anisearch") / "results.sqlite3"`` unless ``ANISEARCH_CACHE``
says otherwise) maps (provider, image key, options) to the provider's :class:`SearchResult` for a TTL.
The image key is the colour layout descriptor for providers that search by it (the answer is a function
of those 33 numbers, so a re-encode or an upscale of the same frame hits the cache) and the SHA-256 of
the source bytes otherwise. Failures are never cached. Preview URLs that have expired are dropped on read.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import anyio.to_thread

from anisearch._exceptions import ConfigurationError
from anisearch._models import SearchResult

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["CacheInfo", "ResultCache", "cache_key"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    key TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    stored_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    result TEXT NOT NULL
)
"""


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
    """Stored results past their TTL (removed by the next ``clear`` or overwrite)."""
    size_bytes: int
    """Size of the SQLite file, bytes."""


class ResultCache:
    """A TTL cache of :class:`SearchResult` in one SQLite file, safe across processes (WAL)."""

    def __init__(self, path: Path, *, ttl_seconds: float) -> None:
        self.path = path
        self.ttl_seconds = ttl_seconds
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with closing(self._connect()) as db, db:
                db.execute(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigurationError(f"cannot open the result cache {path}: {exc}") from exc

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA busy_timeout=10000")
        return db

    def _get(self, key: str, now: float) -> str | None:
        with closing(self._connect()) as db:
            row = db.execute(
                "SELECT result FROM results WHERE key = ? AND expires_at > ?", (key, now)
            ).fetchone()
        return None if row is None else str(row[0])

    def _put(self, key: str, provider: str, payload: str, now: float) -> None:
        with closing(self._connect()) as db:
            db.execute(
                "INSERT OR REPLACE INTO results (key, provider, stored_at, expires_at, result) "
                "VALUES (?, ?, ?, ?, ?)",
                (key, provider, now, now + self.ttl_seconds, payload),
            )

    async def get(self, key: str) -> SearchResult | None:
        """The cached result for ``key``, with expired preview URLs removed, or None."""
        now = datetime.now(UTC)
        payload = await anyio.to_thread.run_sync(self._get, key, now.timestamp())
        if payload is None:
            return None
        try:
            result = SearchResult.model_validate_json(payload)
        except ValueError:  # written by an incompatible version: treat as a miss
            return None
        hits = [
            hit
            if hit.preview_expires_at is None or hit.preview_expires_at > now
            else hit.model_copy(update={"video_url": None, "image_url": None, "preview_expires_at": None})
            for hit in result.hits
        ]
        return result.model_copy(update={"hits": hits})

    async def put(self, key: str, result: SearchResult) -> None:
        """Store a successful provider answer. Callers never store failures."""
        payload = result.model_dump_json()
        now = datetime.now(UTC).timestamp()
        await anyio.to_thread.run_sync(self._put, key, result.provider or "", payload, now)

    def info(self) -> CacheInfo:
        """Counts and size of the cache file."""
        now = datetime.now(UTC).timestamp()
        with closing(self._connect()) as db:
            live = db.execute("SELECT COUNT(*) FROM results WHERE expires_at > ?", (now,)).fetchone()[0]
            expired = db.execute("SELECT COUNT(*) FROM results WHERE expires_at <= ?", (now,)).fetchone()[0]
        size = sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*") if p.is_file())
        return CacheInfo(path=self.path, entries=int(live), expired=int(expired), size_bytes=size)

    def clear(self) -> int:
        """Delete every entry; returns how many there were."""
        with closing(self._connect()) as db:
            count = int(db.execute("SELECT COUNT(*) FROM results").fetchone()[0])
            db.execute("DELETE FROM results")
            db.execute("VACUUM")
        return count

"""The documented bounds on everything anisearch reads, in one place.

Every byte anisearch reads comes from somewhere it does not control: a file or a pipe the user named, a URL
a stranger pasted into a chat, an upstream answer. Each has a bound here, so a stalled, lying or hostile
source ends in a typed error within a known time and a known amount of memory.
"""

from __future__ import annotations

import contextvars
import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from anisearch._models import Hit

__all__ = [
    "HASH_IN_PLACE_BYTES",
    "MAX_DOWNLOAD_BYTES",
    "MAX_HITS",
    "MAX_REDIRECTS",
    "MAX_RESPONSE_BYTES",
    "MAX_SOURCE_BYTES",
    "MAX_URL_LENGTH",
    "REDIS_SECONDS",
    "keep_best_hits",
    "remaining_seconds",
    "search_deadline",
    "timed_out",
]

MAX_SOURCE_BYTES = 100 * 1024 * 1024
"""Largest input anisearch reads from a file, stdin, a file object or a URL, bytes (100 MiB). Anything
larger is refused after reading at most this many bytes plus one; anything smaller is decoded and scaled
down to the upload size, however large it is compared with a provider's upload limit."""
HASH_IN_PLACE_BYTES = 4 * 1024 * 1024
"""Largest source (bytes) hashed on the event loop itself, without a worker thread: SHA-256 of 4 MiB takes a
few milliseconds."""
MAX_DOWNLOAD_BYTES = 50 * 1024 * 1024
"""Largest image anisearch downloads from a URL the caller gave, bytes (50 MiB, counted after
decompression)."""
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
"""Largest upstream answer anisearch reads, bytes after decompression (4 MiB; a search answer is a few
KiB). A provider may declare its own ``max_response_bytes``. A larger answer is an
:class:`~anisearch.UpstreamResponseError` for that attempt, and the router falls through."""
MAX_HITS = 100
"""Most hits kept from one answer (the most similar ones)."""

REDIS_SECONDS = 5.0
"""The longest one Redis command (ledger or result cache) or connection attempt may take, seconds: a Redis
that stops answering without closing the connection (paused, or a network path dropped) is then a
``LedgerError`` or a cache miss, not a search that waits forever. A ``socket_timeout`` or
``socket_connect_timeout`` in the Redis URL's query takes precedence."""

MAX_REDIRECTS = 5
"""Most redirects followed when downloading a user's URL."""
MAX_URL_LENGTH = 8192
"""Longest URL anisearch downloads, characters."""

search_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "anisearch_search_deadline", default=None
)
"""When the current search must end, on anyio's clock (``anyio.current_time()``), or None for no bound.
Set by ``AsyncClient.search(deadline=...)``; every send and wait of that search reads it."""


def remaining_seconds(cap: float = math.inf) -> float:
    """Seconds left before the current search's deadline, at most ``cap`` (``cap`` when there is none).

    Must be called inside an event loop. The result may be zero or negative once the deadline passed.
    """
    deadline = search_deadline.get()
    if deadline is None:
        return cap
    import anyio  # here: the CLI's cache hit uses this module's limits with no event loop

    return min(cap, deadline - anyio.current_time())


def remaining_ms(cap_ms: int) -> int:
    """Whole milliseconds left before the current search's deadline, at most ``cap_ms``, never below 0:
    how long a SQLite step may wait for another process's lock (``busy_timeout``). Must be called inside
    an event loop."""
    return max(0, round(remaining_seconds(cap_ms / 1000) * 1000))


def timed_out(budget: float, cap: float) -> str:
    """How a step that ran out of time says so: ``no complete answer within 30 s`` (``cap``, the
    timeout), or ``... before the search's deadline`` when the deadline left less (``budget``) than that:
    the user set the deadline, not the odd remainder."""
    if budget >= cap:
        return f"no complete answer within {cap:g} s"
    return "no complete answer before the search's deadline"


def keep_best_hits(hits: list[Hit], limit: int = MAX_HITS) -> list[Hit]:
    """The ``limit`` most similar hits, similarity descending (the order ``SearchResult.hits`` promises)."""
    return sorted(hits, key=lambda hit: hit.similarity, reverse=True)[:limit]

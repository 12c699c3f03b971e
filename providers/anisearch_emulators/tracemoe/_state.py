"""The trace.moe emulator's accounts, counters and bookkeeping: who is asking, and what they have left.

Private to :mod:`anisearch_emulators.tracemoe`, which documents the behaviour.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import math
import struct
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import escape
from typing import TYPE_CHECKING, Any, Literal

from starlette.responses import Response

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from starlette.requests import Request
    from starlette.types import Scope

    from ._index import IndexedScene

Era = Literal["v1", "v2", "v3"]
JSON_TYPE = "application/json; charset=utf-8"
HTML_TYPE = "text/html; charset=utf-8"
TEXT_TYPE = "text/plain; charset=utf-8"
DAY = 86_400.0
OK = 200
HOUSEKEEPING = 900  # seconds between the server's resets of its concurrency and queue counters
BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True, slots=True)
class EmulatedUser:
    """An API key's account.

    Attributes:
        email: What ``/me`` reports as ``id``.
        quota: Successful searches per window (rolling 24 h in v3, calendar month before).
        concurrency: Parallel ``/search`` requests allowed.
        priority: Queue priority (0 lowest); see :data:`TIERS`.
    """

    email: str
    quota: int = 1000
    concurrency: int = 1
    priority: int = 2

    @classmethod
    def from_tier(cls, tier: int, email: str) -> EmulatedUser:
        """The account of a trace.moe tier (``sql/1.init.sql``), e.g. ``from_tier(4, "a@b.c")``.

        Raises:
            KeyError: ``tier`` is not one of :data:`TIERS`.
        """
        quota, concurrency, priority = TIERS[tier]
        return cls(email=email, quota=quota, concurrency=concurrency, priority=priority)


TIERS: dict[int, tuple[int, int, int]] = {
    0: (100, 1, 0),
    1: (1000, 1, 2),
    2: (5000, 1, 2),
    3: (10000, 1, 5),
    4: (20000, 2, 5),
    5: (50000, 3, 5),
    6: (100000, 4, 6),
    9: (2147483647, 255, 9),
}
"""trace.moe's tiers: id -> (quota, concurrency, priority). Tier 0 is the guest."""


@dataclass(frozen=True, slots=True)
class InjectedFailure:
    """A canned answer for the next ``/search`` request (before any other check; not a success).

    Attributes:
        status: HTTP status.
        body: A mapping (sent as JSON) or text.
        content_type: Defaults to JSON for a mapping and ``text/html`` for text.
        headers: Extra response headers, e.g. ``{"Retry-After": "3"}``.
    """

    status: int
    body: Mapping[str, Any] | str
    content_type: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LoggedSearch:
    """One row of the server's search log: when (epoch seconds), whose (scope), the status it was logged
    with (not always the one answered), and the caller's network."""

    time: float
    scope: str
    code: int
    network: str = ""


@dataclass(frozen=True, slots=True)
class _Caller:
    ip: str
    network: str
    concurrency_id: str
    scope: str
    user: EmulatedUser | None
    quota: int
    concurrency: int
    priority: int


class EmulatorState:
    """Everything the emulator remembers, exposed for tests as ``app.state.emulator``.

    Attributes:
        search_requests: ``/search`` requests received, whatever their outcome (rate-limited included).
        upload_sizes: Bytes of each uploaded image (multipart file or raw body) the search handler read.
        requests: Requests received per path.
        log: Every ``/search`` outcome the server logs (not 403, 413, 429 or a crash), oldest first.
        concurrent: In-flight ``/search`` requests per caller.
        queue: In-flight ``/search`` requests per priority.
        failures: Answers queued by :meth:`fail_next`.
        outage: A database that is down, as the server meets it: ``"postgres"`` (every search query
            throws: Express's HTML 500 page), ``"vector"`` (the vector store: 500
            ``Search failed. Database temporarily unavailable.``), or None (default).
    """

    def __init__(self, clock: Callable[[], float], failures: Iterable[InjectedFailure]) -> None:
        self.clock = clock
        self.search_requests = 0
        self.upload_sizes: list[int] = []
        self.requests: Counter[str] = Counter()
        self.log: list[LoggedSearch] = []
        self.concurrent: dict[str, int] = {}
        self.queue: dict[int, int] = {}
        self.rate: dict[str, tuple[int, float]] = {}
        self.failures: deque[InjectedFailure] = deque(failures)
        self.outage: Literal["postgres", "vector"] | None = None
        self.next_housekeeping = clock() + HOUSEKEEPING

    def fail_next(
        self, status: int, body: Mapping[str, Any] | str, *, times: int = 1, content_type: str | None = None
    ) -> None:
        """Make the next ``times`` ``/search`` requests answer ``status`` with ``body``."""
        self.failures.extend([InjectedFailure(status, body, content_type)] * times)

    def successes(self, scope: str, since: float, network: str | None = None) -> int:
        """Searches of ``scope`` that ended in 200 since ``since`` (epoch seconds); with ``network``,
        those of every caller from that network instead, keyed or not (the server's guest count)."""
        if network is not None:
            return sum(
                1 for row in self.log if row.code == OK and row.network == network and row.time > since
            )
        return sum(1 for row in self.log if row.code == OK and row.scope == scope and row.time > since)

    def housekeeping(self, now: float) -> None:
        """Clear the concurrency and queue counters every 15 minutes, as the server does."""
        if now >= self.next_housekeeping:
            self.concurrent.clear()
            self.queue.clear()
            self.next_housekeeping += HOUSEKEEPING * (1 + (now - self.next_housekeeping) // HOUSEKEEPING)


@dataclass(frozen=True, slots=True)
class _Config:
    era: Era
    quota: int
    concurrency: int
    queue_size: int
    rate_limit: int
    keys: Mapping[str, EmulatedUser]
    latency: float
    log_seconds: float
    max_upload_bytes: int
    max_json_bytes: int
    trust_forwarded_for: bool
    remote_images: Mapping[str, bytes | int]
    fetch_loopback: bool
    index: Sequence[IndexedScene]
    salt: bytes
    quota_window: float = DAY


def js_numbers(value: Any) -> Any:
    """``value`` with every whole float turned into an int, as JavaScript's ``JSON.stringify`` writes it
    (``611.0`` -> ``611``, ``0.0`` -> ``0``)."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: js_numbers(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [js_numbers(item) for item in value]
    return value


def weak_etag(body: bytes) -> str:
    """Express's default ETag (the ``etag`` package, weak): ``W/"<length hex>-<sha1 base64, 27 chars>"``."""
    digest = base64.b64encode(hashlib.sha1(body).digest()).decode()[:27]  # noqa: S324 - Express's cache tag
    return f'W/"{len(body):x}-{digest}"'


def _json(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    text = json.dumps(js_numbers(body), ensure_ascii=False, separators=(",", ":")).encode()
    return Response(text, status, headers={"ETag": weak_etag(text), **(headers or {})}, media_type=JSON_TYPE)


def _error(status: int, message: str) -> Response:
    return _json({"error": message}, status)


def _express_page(status: int, message: str) -> Response:
    """Express's (finalhandler's) HTML error page."""
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>Error</title>\n</head>\n'
        f"<body>\n<pre>{escape(message, quote=False)}</pre>\n</body>\n</html>\n"
    )
    headers = {"Content-Security-Policy": "default-src 'none'", "X-Content-Type-Options": "nosniff"}
    return Response(page, status, headers=headers, media_type=HTML_TYPE)


def _not_found(request: Request) -> Response:
    return _express_page(404, f"Cannot {request.method} {request.url.path}")


def _base62(number: int) -> str:
    digits = ""
    while True:
        number, digit = divmod(number, 62)
        digits = BASE62[digit] + digits
        if not number:
            return digits


def _unbase62(text: str) -> int | None:
    number = 0
    for char in text:
        if char not in BASE62:
            return None
        number = number * 62 + BASE62.index(char)
    return number


class Server:
    """The emulator's configuration and state, with the server's rules for identity, quota and limits."""

    def __init__(self, config: _Config, state: EmulatorState) -> None:
        self.config = config
        self.state = state
        self.era = config.era

    def client_ip(self, scope: Scope, headers: Mapping[str, str]) -> str:
        forwarded = headers.get("x-forwarded-for", "")
        if self.config.trust_forwarded_for and forwarded.strip():
            return forwarded.split(",")[0].strip()
        client = scope.get("client")
        return str(client[0]) if client else "127.0.0.1"

    @staticmethod
    def network(ip: str) -> str:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return ip
        return str(ipaddress.ip_network(f"{ip}/{64 if address.version == 6 else 32}", strict=False))  # noqa: PLR2004

    @staticmethod
    def network_text(network: str) -> str:
        """A network as PostgreSQL prints it: an IPv4 /32 without its mask (``127.0.0.1``)."""
        return network.removesuffix("/32")

    def rate_limit(self, ip: str, now: float) -> tuple[dict[str, str], int | None]:
        """express-rate-limit: a fixed window per client (IPv6 /64) from its first request."""
        key = self.network(ip) if ":" in ip else ip
        hits, reset_at = self.state.rate.get(key, (0, 0.0))
        if reset_at <= now:
            hits, reset_at = 0, now + 60
        hits += 1
        self.state.rate[key] = (hits, reset_at)
        limit = self.config.rate_limit
        remaining, seconds = max(0, limit - hits), max(0, math.ceil(reset_at - now))
        headers = {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": str(math.ceil(reset_at)),
        }
        if self.era == "v3":
            headers |= {
                "RateLimit-Policy": f"{limit};w=60",
                "RateLimit-Limit": str(limit),
                "RateLimit-Remaining": str(remaining),
                "RateLimit-Reset": str(seconds),
            }
        return headers, (seconds if hits > limit else None)

    def api_key(self, request: Request) -> str:
        header = request.headers.get("x-trace-key", "")
        return (request.query_params.get("key") or header) if self.era != "v3" else header

    def caller(self, request: Request, key: str) -> _Caller | None:
        """The caller's scope and limits, or None for an unknown key."""
        ip = self.client_ip(request.scope, request.headers)
        network = self.network(ip)
        if key:
            user = self.config.keys.get(key)
            if user is None:
                return None
            scope = f"user:{user.email}"
            return _Caller(ip, network, scope, scope, user, user.quota, user.concurrency, user.priority)
        concurrency_id = ":".join(ip.split(":")[:4]) if ":" in ip else ip
        guest = self.config
        return _Caller(
            ip, network, concurrency_id, f"guest:{network}", None, guest.quota, guest.concurrency, 0
        )

    def window_start(self, now: float) -> float:
        """Searches after this instant count: a rolling ``quota_window`` (v3) or the calendar month."""
        if self.era == "v3":
            return now - self.config.quota_window
        moment = datetime.fromtimestamp(now, UTC)
        return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp() - 1e-6

    def guest_network(self, caller: _Caller) -> str | None:
        """A guest's network, whose every search counts against its quota, keyed ones too (v3: the
        server counts the log rows of the network without asking whose they are); else None."""
        return caller.network if caller.user is None and self.era == "v3" else None

    def quota_used(self, caller: _Caller, now: float) -> int:
        return self.state.successes(caller.scope, self.window_start(now), self.guest_network(caller))

    def sign(self, text: str) -> str:
        digest = hmac.new(self.config.salt, text.encode(), hashlib.sha1).digest()
        return base64.urlsafe_b64encode(digest[:18]).decode().rstrip("=")

    def preview_id(self, scene: IndexedScene, now: float) -> str:
        """An opaque preview id: file, time, expiry (the next full hour, as upstream); signed, masked."""
        expire = int(now // 3600) * 3600 + 3600
        packed = struct.pack(">III", scene.file_id, int(scene.at * 10000), expire)
        tag = hmac.new(self.config.salt, packed, hashlib.sha1).digest()[:4]
        return _base62(int.from_bytes(b"\x01" + tag + self._mask(tag, packed), "big"))

    def open_preview(self, text: str) -> tuple[int, int] | int:
        """(file id, expiry epoch) of a preview id, or 404 (not one) / 403 (bad signature)."""
        number = _unbase62(text)
        raw = number.to_bytes(17, "big") if number is not None and number < 1 << 136 else b""
        if len(raw) != 17 or raw[0] != 1:  # noqa: PLR2004 - version byte, 4 tag bytes, 12 masked bytes
            return 404
        tag = raw[1:5]
        packed = self._mask(tag, raw[5:])
        if not hmac.compare_digest(hmac.new(self.config.salt, packed, hashlib.sha1).digest()[:4], tag):
            return 403
        file_id, _, expire = struct.unpack(">III", packed)
        return file_id, expire

    def _mask(self, tag: bytes, data: bytes) -> bytes:
        stream = hashlib.sha256(self.config.salt + tag).digest()
        size = len(data)  # at most the 32 bytes of the stream, XORed as one number
        return (int.from_bytes(data, "big") ^ int.from_bytes(stream[:size], "big")).to_bytes(size, "big")

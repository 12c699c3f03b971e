"""The whatanimeisthis emulator's state: accounts, sessions, API keys, quotas, served searches, counters.

Everything is in memory and driven by an injectable clock (seconds since the epoch), so tests can move
time forward across midnight or an hour. Days are UTC calendar days (the site says "midnight").
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote, unquote

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

__all__ = ["ApiKeyRecord", "EmulatorState", "Knobs", "SearchRecord", "SessionRecord", "User", "iso"]

Envelope = Literal["bare", "data", "code"]
Style = Literal["camel", "snake"]
DEFAULT_USERS = {"user@example.com": "correct horse battery staple"}
_SIGNATURE = re.compile(r"[A-Za-z0-9+/]{43}=")
_DAY = 86400


def iso(epoch: float) -> str:
    """An ISO-8601 UTC timestamp with milliseconds and ``Z``, as JavaScript's ``toISOString``."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Knobs:
    """How the emulator behaves; every field is a keyword of ``create_app``.

    Attributes:
        envelope: Response wrapper of the site routes: ``bare`` (the payload), ``data``
            (``{"success": true, "data": ...}``) or ``code`` (``{"code": 0, "message": "ok", "data": ...}``,
            errors as HTTP 200 ``{"code": -1, "message": ...}``).
        style: Field style of search/recent items: ``camel`` (``anilistId``, seconds, similarity 0..1) or
            ``snake`` (``anilist_id``, ``"HH:MM:SS.mmm"`` times, similarity in percent).
        https: The deployment is https: cookies get the ``__Secure-`` prefix and ``Secure``.
        cookie_prefix: better-auth's ``advanced.cookiePrefix``.
        users: email -> password of the accounts that exist.
        paid_credits: Purchased credits each account starts with.
        guest_daily_limit: Searches per UTC day per guest address.
        free_daily_credits: Free credits per account per UTC day.
        hourly_limit: Searches per account per rolling hour.
        sign_in_limit: Sign-ins (and sign-ups) per ``sign_in_window`` seconds per address and path
            (better-auth: 3 per 10 s);
            0 turns the limit off.
        sign_in_window: See ``sign_in_limit``, seconds.
        trust_forwarded: Take the guest's address from ``X-Forwarded-For``.
        trusted_origins: Origins accepted besides the emulator's own.
        base_url: The URL the emulator believes it is served at (its trusted origin); default the request's.
        session_expires_in: Session lifetime, seconds (7 days).
        session_update_age: A session older than this is extended on ``get-session``, seconds (1 day).
        max_upload_bytes: Larger request bodies get the platform's 413, bytes.
        url_images: Image bytes served for URL searches (the emulator never goes on the network).
        min_similarity: Weaker matches are not returned, 0..1.
        public_similarity: A search whose best hit reaches this is listed in recent searches, 0..1.
        history: Past public searches to start with: dicts with ``anilist_id``, ``seconds_ago`` and
            optionally ``episode``, ``at``, ``similarity``, ``title``, ``is_adult``.
        clock: Seconds since the epoch.
        secret: The HMAC key sessions are signed with.
    """

    envelope: Envelope = "bare"
    style: Style = "camel"
    https: bool = False
    cookie_prefix: str = "better-auth"
    users: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_USERS))
    paid_credits: int = 0
    guest_daily_limit: int = 5
    free_daily_credits: int = 10
    hourly_limit: int = 100
    sign_in_limit: int = 3
    sign_in_window: float = 10.0
    trust_forwarded: bool = False
    trusted_origins: Sequence[str] = ()
    base_url: str | None = None
    session_expires_in: int = 7 * _DAY
    session_update_age: int = _DAY
    max_upload_bytes: int = 4_500_000
    url_images: Mapping[str, bytes] = field(default_factory=dict)
    min_similarity: float = 0.5
    public_similarity: float = 0.87
    history: Sequence[Mapping[str, Any]] = ()
    clock: Callable[[], float] = time.time
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))


@dataclass(slots=True)
class User:
    id: str
    email: str
    name: str
    password: str
    created_at: float
    paid_credits: int

    def public(self) -> dict[str, Any]:
        """better-auth's user object."""
        stamp = iso(self.created_at)
        return {
            "id": self.id,
            "name": self.name,
            "email": self.email,
            "emailVerified": False,
            "image": None,
            "createdAt": stamp,
            "updatedAt": stamp,
        }


@dataclass(slots=True)
class SessionRecord:
    id: str
    token: str
    user_id: str
    expires_at: float
    created_at: float
    updated_at: float
    ip_address: str
    user_agent: str
    remember: bool = True

    def public(self) -> dict[str, Any]:
        """better-auth's session object."""
        return {
            "id": self.id,
            "token": self.token,
            "userId": self.user_id,
            "expiresAt": iso(self.expires_at),
            "createdAt": iso(self.created_at),
            "updatedAt": iso(self.updated_at),
            "ipAddress": self.ip_address,
            "userAgent": self.user_agent,
        }


@dataclass(slots=True)
class ApiKeyRecord:
    id: str
    title: str
    key: str
    user_id: str
    created_at: float
    last_used_at: float | None = None


@dataclass(frozen=True, slots=True)
class SearchRecord:
    """A served search whose best hit was strong enough to be listed publicly."""

    id: str
    created_at: float
    anilist_id: int
    title: dict[str, str | None]
    episode: int | float | None
    at: float | None
    similarity: float
    is_adult: bool = False


def _token(length: int = 32) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return "".join(secrets.choice(alphabet) for _ in range(length))


class EmulatorState:
    """Everything the emulator remembers, plus counters tests read (``app.state.emulator``)."""

    def __init__(self, knobs: Knobs) -> None:
        self.knobs = knobs
        now = knobs.clock()
        self.users: dict[str, User] = {}
        for email, password in knobs.users.items():
            self.add_user(email, password)
        self.sessions: dict[str, SessionRecord] = {}
        self.api_keys: list[ApiKeyRecord] = []
        self.searches: list[SearchRecord] = [self._seed(entry, now) for entry in knobs.history]
        self.guest_usage: dict[tuple[str, str], int] = {}
        self.free_used: dict[tuple[str, str], int] = {}
        self.hourly: dict[str, deque[float]] = {}
        self.sign_in_hits: dict[str, tuple[int, float]] = {}  # address + path: (count, last let through)
        # counters
        self.search_requests = 0
        self.searches_served = 0
        self.sign_in_requests = 0
        self.sign_out_requests = 0
        self.get_session_requests = 0
        self.last_search_client: str | None = None

    @staticmethod
    def _seed(entry: Mapping[str, Any], now: float) -> SearchRecord:
        return SearchRecord(
            id=_token(16),
            created_at=now - float(entry.get("seconds_ago", 0)),
            anilist_id=int(entry["anilist_id"]),
            title=dict(entry.get("title") or {"romaji": f"AniList {entry['anilist_id']}"}),
            episode=entry.get("episode"),
            at=entry.get("at"),
            similarity=float(entry.get("similarity", 0.95)),
            is_adult=bool(entry.get("is_adult", False)),
        )

    def add_user(self, email: str, password: str, *, name: str | None = None) -> User:
        """A new account (better-auth ids are 32 characters); sign-up and the ``users`` knob use it."""
        user = User(
            _token(32),
            email.lower(),
            name or email.split("@", maxsplit=1)[0],
            password,
            self.now(),
            self.knobs.paid_credits,
        )
        self.users[user.email] = user
        return user

    # ------------------------------------------------------------ time

    def now(self) -> float:
        """The emulator's clock, seconds since the epoch."""
        return self.knobs.clock()

    def day(self) -> str:
        """Today's UTC date, ``YYYY-MM-DD``."""
        return datetime.fromtimestamp(self.now(), UTC).date().isoformat()

    def next_midnight(self) -> float:
        """When today's UTC day ends, epoch seconds."""
        today = datetime.fromtimestamp(self.now(), UTC).date()
        return (
            datetime(today.year, today.month, today.day, tzinfo=UTC).timestamp()
            + timedelta(days=1).total_seconds()
        )

    # ------------------------------------------------------------ sessions and cookies

    def cookie_name(self, suffix: str) -> str:
        """``[__Secure-]<prefix>.<suffix>``, as better-auth names its cookies."""
        secure = "__Secure-" if self.knobs.https else ""
        return f"{secure}{self.knobs.cookie_prefix}.{suffix}"

    def sign(self, token: str) -> str:
        """The cookie value of a session token: ``<token>.<HMAC-SHA256 base64>``, percent-encoded."""
        digest = hmac.new(self.knobs.secret, token.encode(), hashlib.sha256).digest()
        return quote(f"{token}.{base64.b64encode(digest).decode()}", safe="-_.!~*'()")

    def unsign(self, value: str) -> str | None:
        """The token of a signed cookie value, or None when the signature does not verify."""
        decoded = unquote(value)
        token, _, signature = decoded.rpartition(".")
        if not token or not _SIGNATURE.fullmatch(signature):
            return None
        expected = base64.b64encode(
            hmac.new(self.knobs.secret, token.encode(), hashlib.sha256).digest()
        ).decode()
        return token if hmac.compare_digest(expected, signature) else None

    def create_session(
        self, user: User, ip_address: str, user_agent: str, *, remember: bool
    ) -> SessionRecord:
        """A new session for ``user``, valid ``session_expires_in`` seconds."""
        now = self.now()
        record = SessionRecord(
            id=_token(32),
            token=_token(32),
            user_id=user.id,
            expires_at=now + self.knobs.session_expires_in,
            created_at=now,
            updated_at=now,
            ip_address=ip_address,
            user_agent=user_agent,
            remember=remember,
        )
        self.sessions[record.token] = record
        return record

    def session_from_cookies(self, cookies: Mapping[str, str]) -> SessionRecord | None:
        """The unexpired session the request's session cookie names, or None (expired ones are deleted)."""
        value = cookies.get(self.cookie_name("session_token"))
        token = self.unsign(value) if value else None
        record = self.sessions.get(token) if token else None
        if record is None:
            return None
        if record.expires_at <= self.now():
            del self.sessions[record.token]
            return None
        return record

    def slide(self, record: SessionRecord) -> bool:
        """better-auth's sliding refresh: a session last extended at least the update age ago (and not a
        ``rememberMe: false`` one) is extended to now + the lifetime. Returns whether it moved."""
        now = self.now()
        if not record.remember or now - record.updated_at < self.knobs.session_update_age:
            return False
        record.updated_at = now
        record.expires_at = now + self.knobs.session_expires_in
        return True

    def user_by_id(self, user_id: str) -> User | None:
        """The account with this id, or None."""
        return next((user for user in self.users.values() if user.id == user_id), None)

    # ------------------------------------------------------------ API keys

    def create_key(self, user: User, title: str) -> ApiKeyRecord:
        """A new key for ``user``: 64 random letters, as better-auth's API-key plugin makes them."""
        letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
        key = "".join(secrets.choice(letters) for _ in range(64))
        record = ApiKeyRecord(_token(32), title, key, user.id, self.now())
        self.api_keys.append(record)
        return record

    def user_by_key(self, key: str) -> User | None:
        """The owner of ``key`` (and mark it used), or None for an unknown key."""
        for record in self.api_keys:
            if hmac.compare_digest(record.key, key):
                record.last_used_at = self.now()
                return self.user_by_id(record.user_id)
        return None

    # ------------------------------------------------------------ quotas

    def guest_left(self, address: str) -> int:
        """Searches the guest at ``address`` has left today."""
        return max(self.knobs.guest_daily_limit - self.guest_usage.get((address, self.day()), 0), 0)

    def free_left(self, user: User) -> int:
        """Free credits ``user`` has left today."""
        return max(self.knobs.free_daily_credits - self.free_used.get((user.id, self.day()), 0), 0)

    def hourly_wait(self, user: User) -> float | None:
        """Seconds until ``user`` may search again under the hourly cap, or None when they may now."""
        window = self.hourly.setdefault(user.id, deque())
        now = self.now()
        while window and window[0] <= now - 3600:
            window.popleft()
        if len(window) < self.knobs.hourly_limit:
            return None
        return window[0] + 3600 - now

    def charge(self, user: User | None, address: str) -> None:
        """Count one served search: the guest's daily count, or the user's hour plus a free/paid credit."""
        if user is None:
            key = (address, self.day())
            self.guest_usage[key] = self.guest_usage.get(key, 0) + 1
            return
        self.hourly.setdefault(user.id, deque()).append(self.now())
        if self.free_left(user) > 0:
            key = (user.id, self.day())
            self.free_used[key] = self.free_used.get(key, 0) + 1
        else:
            user.paid_credits -= 1

    def sign_in_wait(self, address: str, path: str) -> int | None:
        """better-auth's limit on sign-in and sign-up: seconds to wait, or None (and count the attempt).

        As its ``rate-limiter/index.ts`` keeps it, per address and path: each request let through counts
        and moves ``lastRequest`` to now; one is refused while the last let through is under a window old
        and ``limit`` have been counted (the wait runs from that last one); a window after it, counting
        starts again.
        """
        limit, window = self.knobs.sign_in_limit, self.knobs.sign_in_window
        if limit <= 0:
            return None
        now = self.now()
        key = f"{address}{path}"
        count, last = self.sign_in_hits.get(key, (0, now))
        since = now - last
        if since < window and count >= limit:
            return math.ceil(last + window - now)
        self.sign_in_hits[key] = (1 if since > window else count + 1, now)
        return None

    def record_search(self, best: SearchRecord) -> None:
        """List a served search publicly (recent searches, rankings)."""
        self.searches.append(best)

    def new_search_id(self) -> str:
        """An id for a served search."""
        return _token(16)

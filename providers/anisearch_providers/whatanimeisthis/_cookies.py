"""A persistent cookie jar for the better-auth session, kept byte for byte in a 0600 file.

better-auth's session cookie value is ``<token>.<HMAC base64>`` percent-encoded (``%3D`` for ``=``);
the site verifies it as sent, so values are stored and sent back exactly as they arrived, never decoded
or re-encoded (``research/whatanimeisthis-contract.md`` §2.1, §7.1). Every response's ``Set-Cookie``
headers update the jar; ``Max-Age=0``, a past ``Expires`` or an empty value delete a cookie.

Sessions slide (better-auth's ``updateAge``): the server extends a session it looks up and re-issues the
cookie only from ``get-session``. The jar therefore remembers when each cookie was last set and when
the session was last confirmed, so the session flow can ask ``get-session`` before the cookie runs out
(:meth:`CookieJar.refresh_due`) and take the extended cookie and expiry from the answer.

The jar file holds cookies and the account's email, never a password. It is written atomically (a
temporary file, then a rename) with mode 0600, in a directory created with mode 0700, and re-read
when another process (``anisearch login``) changed it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
import threading
import time
from email.utils import parsedate_to_datetime
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    import httpx

__all__ = ["CookieJar", "carries_session", "is_session_cookie"]

_FORMAT = 1
REFRESH_EVERY_SECONDS = 86_400.0
"""Ask ``get-session`` at most about once a day (contract §2.4), or every quarter of a shorter lifetime."""
_MAX_AGE = re.compile(r";\s*max-age\s*=\s*(-?\d+)", re.IGNORECASE)


def is_session_cookie(name: str) -> bool:
    """Whether ``name`` is better-auth's session cookie, whatever its prefixes
    (``better-auth.session_token``, ``__Secure-<prefix>.session_token``, ``__Host-...``)."""
    return name.endswith("session_token")


def carries_session(request: httpx.Request) -> bool:
    """Whether ``request`` was sent with a session cookie (its ``Cookie`` header, as the session flow set it).

    The header is ``name=value`` pairs joined by ``; `` (RFC 6265 §4.2.1), values exactly as the site sent
    them, some of which ``SimpleCookie`` refuses: so it is split, not parsed.
    """
    pairs = (pair.partition("=") for pair in request.headers.get("cookie", "").split(";"))
    return any(is_session_cookie(name.strip()) and value for name, _, value in pairs)


def _session_family(name: str) -> bool:
    """Cookies that belong to the session (token, cached session data and its chunks, dont_remember)."""
    return any(part in name for part in ("session_token", "session_data", "dont_remember"))


def _parse_set_cookie(header: str, now: float) -> Iterator[tuple[str, str, float | None, bool]]:
    """(name, raw value, expiry epoch or None, deleted) for one ``Set-Cookie`` header value."""
    jar: SimpleCookie = SimpleCookie()
    with contextlib.suppress(CookieError):
        jar.load(header)
    if not jar:
        # A value SimpleCookie refuses (a space, a comma): keep the first pair as it came.
        name, sep, value = header.split(";", 1)[0].partition("=")
        if not sep or not name.strip():
            return
        match = _MAX_AGE.search(header)
        max_age = int(match.group(1)) if match else None
        until = now + max_age if max_age is not None else None
        yield (
            name.strip(),
            value.strip(),
            until,
            not value.strip() or (max_age is not None and max_age <= 0),
        )
        return
    for name, morsel in jar.items():
        value = morsel.coded_value  # exactly as sent: SimpleCookie only unquotes .value
        expires: float | None = None
        max_age_text = str(morsel["max-age"]).strip()
        if max_age_text.lstrip("-").isdigit():
            expires = now + int(max_age_text)
        elif morsel["expires"]:
            with contextlib.suppress(TypeError, ValueError, IndexError):
                expires = parsedate_to_datetime(str(morsel["expires"])).timestamp()
        yield name, value, expires, not morsel.value or (expires is not None and expires <= now)


def _identity(path: Path) -> tuple[int, int, int]:
    """(inode, mtime, size): every atomic rewrite makes a new inode, so a change is seen even within
    one tick of a coarse file-system clock."""
    info = path.stat()
    return info.st_ino, info.st_mtime_ns, info.st_size


class CookieJar:
    """The site's cookies for one origin, optionally persisted to ``path``.

    Args:
        path: The jar file, or None to keep cookies in memory only.
        origin: The site origin the cookies belong to (``https://whatanimeisthis.com``); a file written
            for another origin is ignored.
        clock: Seconds since the epoch (``time.time``); injectable for tests.
    """

    def __init__(self, path: Path | None, origin: str, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.origin = origin
        self._clock = clock
        self._cookies: dict[str, tuple[str, float | None]] = {}
        self._set_at: dict[str, float] = {}
        self._checked_at: float | None = None
        self._doubted = False
        """The site answered a search sent with the session as a guest's: confirm it before the next."""
        self._doubted_session: str | None = None
        """The session doubted, told by its token's digest (:meth:`_session_id`: the cookie may slide)."""
        self._alive_session: str | None = None
        """The session (its token's digest) the site confirmed alive after it was doubted: its searches
        are answered as a guest's for another reason (its credits spent), so they raise no doubt again."""
        self._no_sign_in_until = 0.0
        """When (``clock()``) the site's wait after a refused sign-in is over: no sign-in before."""
        self._email: str | None = None
        self._stamp: tuple[int, int, int] | None = None  # the file's identity as last read or written
        self._loaded = False
        self._lock = threading.RLock()

    # ------------------------------------------------------------ reading

    def _refresh(self) -> None:
        if self.path is None:
            return
        try:
            stamp: tuple[int, int, int] | None = _identity(self.path)
        except OSError:
            stamp = None
        if self._loaded and stamp == self._stamp:
            return
        self._loaded = True
        self._stamp = stamp
        self._cookies, self._email, self._set_at, self._checked_at = {}, None, {}, None
        self._doubted, self._no_sign_in_until = False, 0.0
        self._doubted_session = self._alive_session = None
        if stamp is None:
            return
        try:
            data: Any = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        if not isinstance(data, dict) or data.get("origin") != self.origin or data.get("format") != _FORMAT:
            return
        email = data.get("email")
        self._email = email if isinstance(email, str) else None
        checked = data.get("checked_at")
        self._checked_at = float(checked) if isinstance(checked, int | float) else None
        self._doubted = data.get("doubted") is True
        doubted, alive = data.get("doubted_session"), data.get("alive_session")
        self._doubted_session = doubted if isinstance(doubted, str) else None
        self._alive_session = alive if isinstance(alive, str) else None
        held = data.get("no_sign_in_until")
        self._no_sign_in_until = float(held) if isinstance(held, int | float) else 0.0
        for entry in data.get("cookies") or []:
            if (
                isinstance(entry, dict)
                and isinstance(entry.get("name"), str)
                and isinstance(entry.get("value"), str)
            ):
                expires = entry.get("expires")
                self._cookies[entry["name"]] = (
                    entry["value"],
                    float(expires) if isinstance(expires, int | float) else None,
                )
                set_at = entry.get("set_at")
                if isinstance(set_at, int | float):
                    self._set_at[entry["name"]] = float(set_at)

    def _live(self) -> dict[str, str]:
        now = self._clock()
        return {
            name: value
            for name, (value, expires) in self._cookies.items()
            if expires is None or expires > now
        }

    @property
    def email(self) -> str | None:
        """The signed-in account's email, when known."""
        with self._lock:
            self._refresh()
            return self._email

    def cookies(self) -> dict[str, str]:
        """Unexpired cookies, name -> raw value."""
        with self._lock:
            self._refresh()
            return self._live()

    def header(self) -> bytes | None:
        """The ``Cookie`` header value (raw bytes, exactly as received), or None when the jar is empty."""
        live = self.cookies()
        if not live:
            return None
        return "; ".join(f"{name}={value}" for name, value in live.items()).encode("latin-1")

    def has_session(self) -> bool:
        """Whether an unexpired session cookie is in the jar."""
        return any(is_session_cookie(name) and value for name, value in self.cookies().items())

    def session_expires(self) -> float | None:
        """When the session cookie runs out (epoch seconds), as its latest ``Set-Cookie`` said; None when
        there is no session or it is a browser-session cookie."""
        with self._lock:
            self._refresh()
            live = self._live()
            return next(
                (self._cookies[name][1] for name in live if is_session_cookie(name) and live[name]), None
            )

    def refresh_due(self) -> bool:
        """Whether the session should be confirmed through ``get-session`` before it is used.

        True when the session cookie has an expiry and neither a ``Set-Cookie`` nor a confirmation came
        for a quarter of its lifetime (at most a day): enough to catch better-auth's sliding refresh
        (``updateAge``, 1 day of 7 by default) long before the cookie runs out, and rare enough to cost
        nothing. A browser-session cookie (``rememberMe: false``) never slides, so it is never due. Any
        session is due once the site answered a search sent with it as a guest's (:meth:`doubt`).
        """
        with self._lock:
            self._refresh()
            if self._doubted and self.has_session():
                return True
            now = self._clock()
            for name, value in self._live().items():
                expires = self._cookies[name][1]
                set_at = self._set_at.get(name)
                if not is_session_cookie(name) or not value or expires is None or set_at is None:
                    continue
                last = max(set_at, self._checked_at or set_at)
                return now - last >= min((expires - set_at) / 4, REFRESH_EVERY_SECONDS)
            return False

    def _session_id(self) -> str | None:
        """Which session the live session cookie names: a digest of its token (the part before the
        signature, which the site keeps when it slides the cookie's expiry), or None (no session)."""
        live = self._live()
        value = next((live[name] for name in live if is_session_cookie(name) and live[name]), None)
        if value is None:
            return None
        return hashlib.sha256(value.partition(".")[0].encode()).hexdigest()[:16]

    def mark_checked(self) -> None:
        """Record that the site just confirmed the session (``get-session`` answered a user). A session
        doubted and now confirmed is remembered as alive: :meth:`doubt` then leaves it be."""
        with self._lock:
            self._refresh()
            self._checked_at = self._clock()
            session = self._session_id()
            if self._doubted and session is not None and session == self._doubted_session:
                self._alive_session = session
            self._doubted, self._doubted_session = False, None
            self._save()

    def doubt(self) -> bool:
        """Record that the site answered a search sent with the session as a guest's (signed out elsewhere,
        or the session revoked): :meth:`refresh_due` then asks ``get-session`` before the session is used
        again, in this process or the next, which forgets it when the site says it is gone.

        A session the site confirmed alive after it was doubted is not doubted again (the site answers
        its searches as a guest's for another reason) until another session is signed in.

        Returns:
            Whether the session is newly doubted (False: already doubted, confirmed alive, or none held).
        """
        with self._lock:
            self._refresh()
            if self._doubted or not self.has_session():
                return False
            session = self._session_id()
            if session is not None and session == self._alive_session:
                return False
            self._doubted, self._doubted_session = True, session
            self._save()
            return True

    def sign_ins_held_until(self) -> float:
        """When (``clock()``) a sign-in may be sent again after the site refused one for now (0: at once);
        kept in the file, so every process waits the site's wait out, not only the one refused."""
        with self._lock:
            self._refresh()
            return self._no_sign_in_until

    def hold_sign_ins(self, until: float) -> None:
        """Record that no sign-in may be sent before ``until`` (``clock()``): the site's wait."""
        with self._lock:
            self._refresh()
            if until > self._no_sign_in_until:
                self._no_sign_in_until = until
                self._save()

    # ------------------------------------------------------------ writing

    def absorb(self, response: httpx.Response) -> bool:
        """Take every ``Set-Cookie`` of a response (one header per cookie, never merged).

        Returns:
            Whether the jar changed.
        """
        headers = [
            value.decode("latin-1") for key, value in response.headers.raw if key.lower() == b"set-cookie"
        ]
        if not headers:
            return False
        with self._lock:
            self._refresh()
            before, set_before = dict(self._cookies), dict(self._set_at)
            now = self._clock()
            for header in headers:
                for name, value, expires, deleted in _parse_set_cookie(header, now):
                    if deleted:
                        self._cookies.pop(name, None)
                        self._set_at.pop(name, None)
                    else:
                        self._cookies[name] = (value, expires)
                        self._set_at[name] = now
            changed = self._cookies != before
            if changed or self._set_at != set_before:
                self._save()
            return changed

    def remember_email(self, email: str | None) -> None:
        """Record which account the session belongs to (shown by ``anisearch credits``; not a secret)."""
        with self._lock:
            self._refresh()
            if email != self._email:
                self._email = email
                self._save()

    def drop_session(self) -> None:
        """Forget the session cookies (the site said the session is gone), keeping any others."""
        with self._lock:
            self._refresh()
            kept = {name: entry for name, entry in self._cookies.items() if not _session_family(name)}
            if kept != self._cookies or self._doubted:
                self._cookies = kept
                self._set_at = {name: when for name, when in self._set_at.items() if name in kept}
                self._checked_at = None
                self._doubted = False
                self._doubted_session = self._alive_session = None
                self._save()

    def clear(self) -> None:
        """Forget everything and delete the jar file; all but the site's wait after a refused sign-in, which
        holds for this address whoever signs in next (the file then keeps it alone until it is over)."""
        with self._lock:
            self._cookies, self._email, self._set_at, self._checked_at = {}, None, {}, None
            self._doubted = False
            self._doubted_session = self._alive_session = None
            self._loaded = True
            self._stamp = None
            if self._no_sign_in_until > self._clock():
                self._save()
            elif self.path is not None:
                self._no_sign_in_until = 0.0
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()

    def _save(self) -> None:
        if self.path is None:
            return
        if not self._cookies and self._email is None and self._no_sign_in_until <= self._clock():
            self.clear()
            return
        data = {
            "format": _FORMAT,
            "origin": self.origin,
            "email": self._email,
            "checked_at": self._checked_at,
            "doubted": self._doubted,
            "doubted_session": self._doubted_session,
            "alive_session": self._alive_session,
            "no_sign_in_until": self._no_sign_in_until or None,
            "cookies": [
                {"name": name, "value": value, "expires": expires, "set_at": self._set_at.get(name)}
                for name, (value, expires) in self._cookies.items()
            ],
        }
        directory = self.path.parent
        if not directory.exists():
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        # a new file of its own (O_EXCL, mode 0600, an unpredictable name): never one planted there before
        descriptor, name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=directory)
        temporary = Path(name)
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                json.dump(data, handle)
            os.replace(temporary, self.path)  # noqa: PTH105 - an atomic rename, the same in pathlib
        except BaseException:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise
        self._stamp = _identity(self.path)
        self._loaded = True

"""Secrets out of every log record and message: URL passwords, secret query values, auth headers, cookies.

:func:`redact` masks a text; :class:`RedactSecrets` applies it to every record of the loggers that see
requests (httpx at INFO, httpcore's connection and protocol loggers at DEBUG, anisearch itself), whatever
the level, so a configured ``user:pass@`` URL, a ``?token=``, an ``Authorization`` header, a provider's
own credential header (registered with :func:`add_secret_headers`) or a sign-in ``Set-Cookie`` never
reaches a handler. :func:`display_url` is the short, masked form of a
URL for error messages, with control characters escaped.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

__all__ = ["LOGGERS", "RedactSecrets", "add_secret_headers", "display_url", "install", "printable", "redact"]

MASK = "***"
LOGGERS = (
    "httpx",
    "httpcore",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "httpcore.socks",
    "anisearch",
    "stamina",
)
"""Loggers whose records are masked (a filter on a parent logger does not see its children's records)."""

_SECRET_NAMES = (
    r"(?:token|key|api_?key|apikey|access_token|password|passwd|secret|signature|sig|auth|session"  # noqa: S105 - names of secret parameters
    r"|credential|hm)"  # an S3 presigned URL's key id; a Discord attachment URL's signature (hm)
)
# Every repetition before a fixed anchor is bounded, so masking stays linear on a 100 KB hostile URL.
_QUERY = re.compile(rf"(?i)([?&;](?:[\w.-]{{0,40}}[_.-])?{_SECRET_NAMES}=)[^&#\s\"'<>]+")
# The userinfo runs to the last "@" before the path (a password may hold "@", "?" or "#": better a host
# masked with it than a password shown).
_USERINFO = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]{0,30}://)[^/\s\"'<>]*@")
_SECRET_HEADERS = {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key"}
"""Headers masked for everyone; a provider adds its own credential header (:func:`add_secret_headers`)."""


def _header_patterns(names: Iterable[str]) -> tuple[re.Pattern[str], re.Pattern[str]]:
    """The ``("name", "value")`` pair (httpcore's debug records) and ``Name: value`` line patterns."""
    alternatives = "|".join(sorted(re.escape(name) for name in names))
    pair = re.compile(rf"(?i)(\(b?['\"](?:{alternatives})['\"],\s*b?)(['\"]).*?(?<!\\)\2")
    line = re.compile(rf"(?im)^(\s*(?:{alternatives})\s*:\s*).+$")
    return pair, line


_HEADERS = dict(zip(("pair", "line"), _header_patterns(_SECRET_HEADERS), strict=True))


def add_secret_headers(names: Iterable[str]) -> None:
    """Mask these headers too, in every record from now on (a provider's credential header, such as
    trace.moe's ``x-trace-key``); names are case-insensitive, adding one twice changes nothing."""
    new = {name.lower() for name in names} - _SECRET_HEADERS
    if new:
        _SECRET_HEADERS.update(new)
        _HEADERS.update(zip(("pair", "line"), _header_patterns(_SECRET_HEADERS), strict=True))


_KEYED_VALUE = re.compile(
    rf"(?i)(['\"]?\b(?:\w{{0,40}}[_-])?{_SECRET_NAMES}['\"]?\s{{0,5}}[:=]\s{{0,5}})(['\"])[^'\"]*\2"
)


def redact(text: str) -> str:
    """``text`` with URL userinfo, secret query values, secret headers and ``key='...'`` pairs masked."""
    if not text:
        return text
    text = _USERINFO.sub(rf"\1{MASK}@", text)
    text = _QUERY.sub(rf"\1{MASK}", text)
    text = _HEADERS["pair"].sub(rf"\1\2{MASK}\2", text)
    text = _HEADERS["line"].sub(rf"\1{MASK}", text)
    return _KEYED_VALUE.sub(rf"\1\2{MASK}\2", text)


def printable(text: str, limit: int = 200) -> str:
    """``text`` with control and other non-printable characters escaped (``\\x1b``), cut to ``limit``."""
    escaped = "".join(
        char if char.isprintable() else char.encode("unicode_escape").decode("ascii") for char in text
    )
    return escaped if len(escaped) <= limit else escaped[: limit - 1] + "…"


def display_url(url: str, limit: int = 120) -> str:
    """A URL as error messages show it: secrets masked, control characters escaped, at most ``limit``."""
    return printable(redact(url), limit)


class RedactSecrets(logging.Filter):
    """Mask secrets in a record's final message (httpcore pre-formats its messages; httpx uses args)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a broken format string: mask the template and keep the record
            message = str(record.msg)
        masked = redact(message)
        if masked != message or record.args:
            record.msg, record.args = masked, None
        return True


def install() -> None:
    """Attach one :class:`RedactSecrets` to each of :data:`LOGGERS` (idempotent)."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(existing, RedactSecrets) for existing in logger.filters):
            logger.addFilter(RedactSecrets())

"""Pure helpers every provider needs: loose JSON coercion, strict JSON, error text, HTTP dates and waits.

Upstream JSON is loose (numbers sent as strings, episodes of four types, missing keys), so the coercions
return None rather than raise, and the callers decide which fields are required. Re-exported by
:mod:`anisearch.provider`; import them from there.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import httpx

from anisearch._exceptions import UpstreamResponseError
from anisearch._models import Episode, QuotaWindow, Title, coerce_episode

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = [
    "MAX_COUNT",
    "MAX_JSON_DEPTH",
    "MAX_RETRY_AFTER_SECONDS",
    "ShapeError",
    "anilist_media_fields",
    "as_bool",
    "as_count",
    "as_episode",
    "as_float",
    "as_int",
    "as_str",
    "body_text",
    "capped_seconds",
    "clamp_similarity",
    "epoch",
    "error_message",
    "fit_inside",
    "http_date",
    "is_multipart_request",
    "json_body",
    "loads",
    "next_hour",
    "request_bytes",
    "request_of",
    "response_date",
    "retry_after_seconds",
    "string_list",
    "title_from",
    "window_for",
    "without",
]

_INT_TEXT = re.compile(r"[+-]?[0-9]+")
_NUMBER_TEXT = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")  # linear: one way to split digits
_TRUE = frozenset({"true", "1", "yes", "on", "y", "t"})
_FALSE = frozenset({"false", "0", "no", "off", "n", "f"})
_HTML_PRE = re.compile(r"<pre>(.*?)</pre>", re.DOTALL | re.IGNORECASE)
_HTML_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.DOTALL | re.IGNORECASE)
_HTML_TAG = re.compile(r"<[^>]+>")
_MAX_MESSAGE = 300
_HOUR = 3600
_SAID_NOW = frozenset({"retry-after", "x-retry-after"})  # a wait in the past there means "now"
_DAY = 86400
_EPOCH_SECONDS = 1_000_000_000  # a reset above this is a Unix time (2001+), below it a delay
_EPOCH_MILLISECONDS = 100_000_000_000  # an epoch above this is in milliseconds (1973+ in ms, 5138 in s)
MAX_JSON_DEPTH = 64
"""Deepest nesting accepted in an upstream JSON body; trace.moe's deepest (``anilistInfo``) is about 6."""
MAX_RETRY_AFTER_SECONDS = 86_400.0
"""Longest wait any upstream header is believed (24 h): a ``Retry-After`` in 2099 or of 10**20 seconds
is read as one day, so a confused server cannot switch a provider off for good."""


# ---------------------------------------------------------------- coercion


def as_float(value: Any) -> float | None:
    """A finite float from a number or a numeric string (``"1169.17"``, ``" 9.5 "``, ``"1e3"``), else None.

    Booleans are not numbers here (``True`` is None), whatever Python thinks; nor are ``"nan"``,
    ``"inf"``, ``"1_000"`` or ``"0x10"``.
    """
    if type(value) is float:  # the common case first: JSON numbers with a fraction
        return value if math.isfinite(value) else None
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip()
        if not _NUMBER_TEXT.fullmatch(text):
            return None
        value = text
    elif not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except (OverflowError, ValueError):  # an int too large for a float
        return None
    return number if math.isfinite(number) else None


def as_int(value: Any) -> int | None:
    """An int from an int, an integral finite float or a numeric string (``"18"``, ``"18.0"``), else None.

    Booleans are not numbers here (``True`` is None). Integer text keeps every digit (no float rounding).
    """
    if type(value) is int:  # the common case first (bool, an int subclass, is not a number here)
        return value
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _INT_TEXT.fullmatch(value.strip()):
        try:
            return int(value.strip())
        except ValueError:  # more digits than Python converts (4300): no count is that large
            return None
    number = as_float(value)
    return int(number) if number is not None and number.is_integer() else None


MAX_COUNT = 2**31 - 1
"""Largest count an upstream is believed to send (a PostgreSQL ``integer``)."""


class ShapeError(ValueError):
    """A body that is JSON but not the shape the upstream sends."""


def as_count(value: Any, name: str) -> int | None:
    """A quota-like count (0..2**31-1) from a loose value; None when absent or not a number.

    Raises:
        ShapeError: The value is a number out of that range (``"quota": -5``) or not whole (``1.5``).
    """
    number = as_int(value)
    if number is None and as_float(value) is not None:
        number = -1  # a fraction: not a count
    if number is not None and not 0 <= number <= MAX_COUNT:
        raise ShapeError(f"{name} is not a count: {str(value)[:40]!r}")
    return number


def as_str(value: Any, *, ids: bool = False) -> str | None:
    """The value if it is a non-blank string, else None.

    Args:
        value: Anything decoded from JSON.
        ids: Also accept an integer, as its decimal text (IDs are sent both ways by some upstreams).
    """
    if ids and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value if isinstance(value, str) and value.strip() else None


def as_bool(value: Any, *, loose: bool = False) -> bool | None:
    """The value if it is a JSON boolean, else None.

    Args:
        value: Anything decoded from JSON.
        loose: Also read ``1``/``0`` and the strings ``true``/``false``, ``yes``/``no``, ``on``/``off``,
            ``y``/``n``, ``t``/``f``, ``1``/``0`` (any case).
    """
    if isinstance(value, bool):
        return value
    if not loose:
        return None
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    return None


def string_list(value: Any) -> list[str]:
    """The strings of a JSON array (anything else in it is dropped); ``[]`` for a non-array."""
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, str) and item]


def clamp_similarity(value: Any) -> float | None:
    """A similarity clamped to 0..1 (upstream scores can stray outside), or None if it is not a number.

    A score on another scale is clamped too (a percentage such as ``96.9`` becomes 1.0): a provider whose
    server may answer in percent divides by 100 first (and says so once in a warning).
    """
    number = as_float(value)
    if number is None:
        return None
    return min(max(number, 0.0), 1.0)


def _episode_part(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)  # PHP's floatval() and JSON encoders send 5 as 5.0
    if isinstance(value, str):
        return value.strip() or None  # "" is "no episode found"
    return value


def as_episode(value: Any) -> Episode:
    """An upstream ``episode`` kept as it came when it is a valid :data:`~anisearch.Episode`, else None.

    ``5``, ``16.5``, ``"5|17"``, ``"OVA/OAD"`` and ``[1, 2]`` pass through; ``5.0`` becomes ``5``; a string is
    stripped and ``""`` becomes None; an object, a boolean, a non-finite number, or a list holding any of
    those becomes None (the hit's ``raw`` still has it).
    """
    if isinstance(value, list):
        return coerce_episode([_episode_part(item) for item in value])
    return coerce_episode(_episode_part(value))


def title_from(
    romaji: Any = None, english: Any = None, native: Any = None, chinese: Any = None
) -> Title | None:
    """A :class:`~anisearch.Title` from loose upstream values, or None when none of them is a string."""
    title = Title(
        romaji=as_str(romaji), english=as_str(english), native=as_str(native), chinese=as_str(chinese)
    )
    if title.preferred() is None:
        return None
    return title


def _whole(value: Any) -> int | None:
    """A count sent as a JSON integer 0..:data:`MAX_COUNT`, else None (a string or a fraction is not one)."""
    if type(value) is not int:  # bool, float, str: not a count AniList sends
        return None
    return value if 0 <= value <= MAX_COUNT else None


def anilist_media_fields(media: Mapping[str, Any]) -> dict[str, Any]:
    """The :class:`~anisearch.Hit` fields (the same names as :class:`~anisearch.Anime`'s) of an AniList
    ``Media`` object, as AniList's API sends it and as upstreams embed it (trace.moe's ``anilistInfo``).

    ``id`` → ``anilist_id``, ``idMal`` → ``mal_id`` (0 is None), ``title{romaji, english, native,
    chinese}`` → ``title``, ``synonyms`` (its strings, as sent), ``isAdult`` → ``is_adult``,
    ``episodes`` → ``episode_count``, ``duration`` (minutes per episode) → ``episode_minutes``,
    ``format``, ``season``, ``seasonYear`` → ``season_year``, ``coverImage{large, medium}`` →
    ``cover_image_url`` (large first), ``siteUrl`` → ``site_url``. Every key is present; a value missing
    or of the wrong type is None (counts and IDs must be JSON integers 0..2**31-1, as AniList sends them).
    """
    titles = media.get("title")
    titles = titles if isinstance(titles, dict) else {}
    cover = media.get("coverImage")
    cover = cover if isinstance(cover, dict) else {}
    return {
        "anilist_id": _whole(media.get("id")),
        "mal_id": _whole(media.get("idMal")) or None,
        "title": title_from(
            titles.get("romaji"), titles.get("english"), titles.get("native"), titles.get("chinese")
        ),
        "synonyms": string_list(media.get("synonyms")),
        "is_adult": as_bool(media.get("isAdult")),
        "episode_count": _whole(media.get("episodes")),
        "episode_minutes": _whole(media.get("duration")),
        "format": as_str(media.get("format")),
        "season": as_str(media.get("season")),
        "season_year": _whole(media.get("seasonYear")),
        "cover_image_url": as_str(cover.get("large")) or as_str(cover.get("medium")),
        "site_url": as_str(media.get("siteUrl")),
    }


# ---------------------------------------------------------------- bodies


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _containers(content: bytes | str) -> int:
    """How many arrays and objects a JSON text can hold at most: its ``[`` and ``{``, strings included.

    No value nests deeper than that, so a body with at most :data:`MAX_JSON_DEPTH` of them (a search
    answer of a few dozen hits) needs no walk in :func:`_too_deep`.
    """
    if isinstance(content, str):
        return content.count("[") + content.count("{")
    return content.count(b"[") + content.count(b"{")


def _too_deep(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether a decoded JSON value nests deeper than ``limit`` (checked without recursion)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
    return False


def loads(content: bytes | str) -> Any:
    """Strict JSON (``NaN``/``Infinity`` refused), nested at most :data:`MAX_JSON_DEPTH` deep.

    Raises:
        ValueError: Not JSON, not UTF-8, or nested too deep (a ``RecursionError`` included).
    """
    try:
        value = json.loads(content, parse_constant=_no_constants)
    except RecursionError as exc:
        raise ValueError("JSON nested too deep") from exc
    if _containers(content) > MAX_JSON_DEPTH and _too_deep(value):
        raise ValueError(f"JSON nested more than {MAX_JSON_DEPTH} deep")
    return value


def json_body(response: httpx.Response, *, provider: str, endpoint: str | None = None) -> Any:
    """The response body decoded as strict JSON (``NaN``/``Infinity`` refused, at most 64 levels deep).

    Raises:
        UpstreamResponseError: The body is not JSON, not UTF-8, or nested absurdly deep.
    """
    try:
        return loads(response.content)
    except ValueError as exc:  # UnicodeDecodeError is a ValueError
        kind = response.headers.get("content-type", "no content type")
        raise UpstreamResponseError(
            f"expected a JSON body, got {kind} ({len(response.content)} bytes)",
            provider=provider,
            status_code=response.status_code,
            endpoint=endpoint,
        ) from exc


def body_text(response: httpx.Response) -> str:
    """The response body as text (undecodable bytes replaced), ``""`` when it was not read."""
    try:
        return response.content.decode("utf-8", errors="replace")
    except httpx.ResponseNotRead:
        return ""


def error_message(response: httpx.Response) -> str:
    """The upstream's error message, one line, at most 300 characters.

    Understood shapes: a JSON object's ``error`` member (``{"error":"Invalid API key"}``), a JSON string
    (the legacy API's ``"Image is empty"``), an Express HTML error page (the text of its ``<pre>``), any
    other HTML page (its ``<title>``: a proxy's ``504 Gateway Time-out``, a framework's ``500: Internal
    Server Error``, never the page's scripts), and plain text. An empty body gives the HTTP reason phrase.
    """
    text = body_text(response).strip()
    message = ""
    if text[:1] in '{"':
        try:
            decoded = loads(text)
        except ValueError:
            decoded = None
        if isinstance(decoded, dict) and isinstance(decoded.get("error"), str):
            message = decoded["error"]
        elif isinstance(decoded, str):
            message = decoded
    if not message and text:
        import html  # an error page: only a failed request pays for the import

        shown = _HTML_PRE.search(text) or _HTML_TITLE.search(text)
        fragment = shown.group(1) if shown else text
        fragment = fragment.replace("<br>", "\n")
        message = html.unescape(_HTML_TAG.sub(" ", fragment)).strip()
    if not message:
        message = response.reason_phrase or f"HTTP {response.status_code}"
    first_line = " ".join(message.split("\n", 1)[0].split())
    return first_line[:_MAX_MESSAGE]


def request_of(response: httpx.Response) -> httpx.Request | None:
    """The request behind ``response``, or None for a response built by hand (tests, a transport)."""
    try:
        return response.request
    except RuntimeError:
        return None


def is_multipart_request(response: httpx.Response) -> bool:
    """Whether the request behind ``response`` was a multipart upload (False when it is unknown)."""
    request = request_of(response)
    content_type: str = request.headers.get("content-type", "") if request is not None else ""
    return content_type.lower().startswith("multipart/form-data")


def request_bytes(response: httpx.Response) -> int | None:
    """How many body bytes the request behind ``response`` sent: its ``Content-Length``, else the length
    of a body already read; None when that cannot be told."""
    request = request_of(response)
    if request is None:
        return None
    declared = as_int(request.headers.get("content-length"))
    if declared is not None and declared >= 0:
        return declared
    try:
        return len(request.content)
    except httpx.RequestNotRead:
        return None


# ---------------------------------------------------------------- time


def http_date(value: str | None) -> datetime | None:
    """An aware UTC datetime from an HTTP-date (``Thu, 07 May 2026 11:15:01 GMT``), or None."""
    if not value:
        return None
    return _http_date(value)


@lru_cache(maxsize=16)  # answers within one second share their Date; the stdlib parser costs ~25 us
def _http_date(value: str) -> datetime | None:
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def response_date(response: httpx.Response) -> datetime | None:
    """The response's ``Date`` header as an aware UTC datetime, or None when absent or unreadable."""
    return http_date(response.headers.get("date"))


def epoch(value: float) -> datetime | None:
    """An aware UTC datetime from Unix seconds, or None when out of range."""
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _reset_delay(value: float, now: datetime) -> float:
    """A reset header's value as seconds from ``now``: an epoch (seconds, or milliseconds past 1973) when
    it is that large, else already a delay."""
    if value > _EPOCH_SECONDS:
        return (value / 1000 if value > _EPOCH_MILLISECONDS else value) - now.timestamp()
    return value


def retry_after_seconds(
    headers: httpx.Headers,
    now: datetime,
    *,
    fallback_to_reset: bool = True,
    also: Sequence[str] = (),
) -> float | None:
    """Seconds to wait, from the first header that says.

    The order: ``X-Retry-After`` (better-auth, seconds), ``Retry-After`` (seconds or an HTTP-date), the
    headers named in ``also`` (seconds, in order: an upstream's own TTL headers), then, when
    ``fallback_to_reset``, ``RateLimit-Reset`` and ``X-RateLimit-Reset`` (seconds, or a Unix epoch in
    seconds or milliseconds when the number is that large). A negative or unreadable value is skipped.

    Args:
        headers: The response headers.
        now: The current aware time, to turn a date or an epoch into seconds.
        fallback_to_reset: Also read the rate-limit reset headers.
        also: More headers holding seconds, tried after ``Retry-After``.

    Returns:
        Seconds (0..:data:`MAX_RETRY_AFTER_SECONDS`, 24 h), or None when no header says.
    """
    for name in ("x-retry-after", "retry-after", *also):
        raw = headers.get(name, "").strip()
        seconds = as_float(raw)
        if seconds is None and raw and name == "retry-after":
            when = http_date(raw)
            seconds = (when - now).total_seconds() if when else None
        if seconds is not None and (seconds >= 0 or name in _SAID_NOW):
            return capped_seconds(seconds)
    if fallback_to_reset:
        for name in ("ratelimit-reset", "x-ratelimit-reset"):
            reset = as_float(headers.get(name))
            if reset is not None:
                return capped_seconds(_reset_delay(reset, now))
    return None


def capped_seconds(seconds: float) -> float:
    """A wait clamped to 0..:data:`MAX_RETRY_AFTER_SECONDS`."""
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


def next_hour(moment: datetime) -> datetime:
    """The first full hour strictly after ``moment`` (UTC)."""
    floor = moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return floor + timedelta(hours=1)


def window_for(seconds: float | None, default: QuotaWindow = "minute") -> QuotaWindow:
    """The standard window name for a window length in seconds: ``day`` from 86400, ``hour`` from 3600,
    ``minute`` below; ``default`` when the length is unknown (None)."""
    if seconds is None:
        return default
    if seconds >= _DAY:
        return "day"
    return "hour" if seconds >= _HOUR else "minute"


def without(mapping: Mapping[str, Any], *keys: str) -> dict[str, Any]:
    """A copy of ``mapping`` without ``keys`` (to keep an upstream body in ``raw`` minus personal data)."""
    return {key: value for key, value in mapping.items() if key not in keys}


def fit_inside(size: tuple[int, int], box: tuple[int, int], *, enlarge: bool = False) -> tuple[int, int]:
    """``size`` scaled to fit inside ``box`` (pixels), aspect kept, each side at least 1.

    Args:
        size: ``(width, height)``, pixels.
        box: ``(width, height)`` to fit inside, pixels.
        enlarge: Scale a smaller image up to touch the box (trace.moe's 320x320 search image); by default
            an image is only ever scaled down.
    """
    width, height = size
    scale = min(box[0] / width, box[1] / height)
    if not enlarge:
        scale = min(scale, 1.0)
    return max(1, round(width * scale)), max(1, round(height * scale))

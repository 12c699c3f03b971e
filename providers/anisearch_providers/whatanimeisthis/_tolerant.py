"""Tolerant reading of whatanimeisthis.com JSON: envelopes, aliases, loose numbers, times and dates.

None of the site's response shapes is documented (``research/whatanimeisthis-contract.md`` §4, §7), so
everything here accepts the plausible variants: a bare payload, ``{data}`` and the template envelope
``{code, message, data}``; camelCase and snake_case keys; numbers sent as strings; similarity as a
fraction or a percentage; times as seconds, milliseconds (``*Ms`` fields) or ``"HH:MM:SS.ms"``; dates as
ISO-8601 or epoch seconds/milliseconds; booleans as ``true``, ``1`` or ``"true"``.

The coercions return None rather than raise: the callers decide what is required and raise
:class:`~anisearch.UpstreamResponseError` naming it. Numbers, strings and booleans are read with the SDK's
coercions (``as_str(..., ids=True)``, ``as_bool(..., loose=True)``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from anisearch.provider import as_float

if TYPE_CHECKING:
    from collections.abc import Iterable

    import httpx

__all__ = [
    "ENVELOPE_KEYS",
    "LIST_KEYS",
    "Body",
    "as_datetime",
    "as_seconds",
    "as_similarity",
    "find_list",
    "in_percent",
    "pick",
    "pick_seconds",
    "read_body",
    "unwrap",
    "variants",
]

ENVELOPE_KEYS = frozenset(
    {
        "code", "message", "msg", "success", "status", "error", "errors", "meta", "pagination", "total",
        "page", "pageSize", "page_size", "limit", "offset", "hasMore", "has_more",
    }
)  # fmt: skip
"""Keys that may sit next to ``data`` in an envelope (§7.2); they are kept as metadata."""

LIST_KEYS = (
    "results", "result", "items", "data", "rankings", "ranking", "searches", "recentSearches",
    "recent_searches", "records", "rows", "list", "docs", "matches", "candidates", "apiKeys", "apikeys",
    "api_keys", "keys",
)  # fmt: skip
"""Where a list payload may be, first match wins (§7.4)."""

_CAMEL_HUMP = re.compile(r"(?<=[a-z0-9])([A-Z])")
_CLOCK = re.compile(r"(?:(\d+):)?(\d+):(\d{1,2}(?:\.\d+)?)")
_EPOCH_MS = 100_000_000_000  # epoch values above this are milliseconds (1973 in ms, year 5138 in s)


@dataclass(frozen=True, slots=True)
class Body:
    """A response body read once: its JSON value when it is JSON, else its text.

    Attributes:
        status: The HTTP status.
        is_json: Whether the body parsed as JSON (an empty body counts as JSON ``null``).
        json: The decoded value (None for ``null`` and an empty body); None when not JSON.
        text: The body as text (replacement characters for undecodable bytes).
    """

    status: int
    is_json: bool
    json: Any
    text: str


def read_body(response: httpx.Response) -> Body:
    """Decode a response body the way §7.1 says: JSON when it says so or looks so, else text.

    Never raises: a body that claims JSON but does not parse is kept as text.
    """
    raw = response.content
    text = raw.decode("utf-8", errors="replace")
    stripped = text.strip()
    if not stripped:
        return Body(response.status_code, is_json=True, json=None, text="")
    content_type = response.headers.get("content-type", "").lower()
    if "json" in content_type or stripped[:1] in "{[" or stripped == "null":
        try:
            value = json.loads(stripped)
        except (ValueError, RecursionError):
            return Body(response.status_code, is_json=False, json=None, text=text)
        return Body(response.status_code, is_json=True, json=value, text=text)
    return Body(response.status_code, is_json=False, json=None, text=text)


def variants(name: str) -> tuple[str, ...]:
    """A key's spellings: as given, snake_case and camelCase (``anilistId`` -> ``anilist_id``)."""
    snake = _CAMEL_HUMP.sub(r"_\1", name).lower()
    head, *rest = snake.split("_")
    camel = head + "".join(part[:1].upper() + part[1:] for part in rest)
    return tuple(dict.fromkeys((name, snake, camel)))


def pick(mapping: Any, *names: str) -> Any:
    """The first non-null value under any spelling of ``names`` (in order), or None.

    ``mapping`` may be anything: a non-mapping has no keys.
    """
    if not isinstance(mapping, Mapping):
        return None
    for name in names:
        for key in variants(name):
            value = mapping.get(key)
            if value is not None:
                return value
    return None


def as_seconds(value: Any) -> float | None:
    """Seconds from a number, a numeric string, ``"HH:MM:SS(.ms)"`` or ``"MM:SS"``; None otherwise."""
    number = as_float(value)
    if number is not None:
        return number if number >= 0 else None
    if not isinstance(value, str):
        return None
    match = _CLOCK.fullmatch(value.strip())
    if match is None:
        return None
    hours, minutes, seconds = match.groups()
    if float(seconds) >= 60 or (hours is not None and int(minutes) >= 60):  # noqa: PLR2004 - a clock's digits
        return None
    return int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds)


def pick_seconds(mapping: Any, *names: str) -> float | None:
    """Seconds under the first of ``names`` present; ``<name>Ms``/``<name>_ms`` fields are divided by 1000."""
    if not isinstance(mapping, Mapping):
        return None
    for name in names:
        millis = as_float(pick(mapping, f"{name}Ms", f"{name}_ms"))
        if millis is not None and millis >= 0:
            return millis / 1000
        seconds = as_seconds(pick(mapping, name))
        if seconds is not None:
            return seconds
    return None


def in_percent(values: Iterable[Any]) -> bool:
    """Whether an answer's similarities are percentages: one of them is written with "%", or is a plain
    number in (1, 100].

    One answer uses one scale, so this is decided for all of its values together (contract §7.5): a
    weak hit of 0.95 % beside a 12.5 % one is 0.0095, not 0.95.
    """
    for value in values:
        if isinstance(value, str) and value.strip().endswith("%"):
            return True  # "95%" says the answer's scale as plainly as 95 does
        number = as_float(value)
        if number is not None and 1 < number <= 100:  # noqa: PLR2004
            return True
    return False


def as_similarity(value: Any, *, percent: bool | None = None) -> float | None:
    """A similarity in 0..1: fractions as given, percentages divided by 100 (``"93%"`` always).

    Args:
        value: The upstream's similarity field.
        percent: Whether the answer's numbers are percentages (:func:`in_percent` of all of them); None
            decides from this value alone: one in (1, 100] is a percentage.

    Returns None for anything else (negative, over 100, not a number).
    """
    if isinstance(value, str) and value.strip().endswith("%"):
        value, percent = value.strip()[:-1], True
    number = as_float(value)
    if number is None or number < 0:
        return None
    if percent is None:
        percent = number > 1
    if percent:
        return number / 100 if number <= 100 else None  # noqa: PLR2004
    return number if number <= 1 else None


def as_datetime(value: Any) -> datetime | None:
    """An aware datetime from ISO-8601 (``Z`` or an offset; naive means UTC) or epoch s/ms; else None."""
    number = as_float(value)
    if number is not None:
        if number <= 0:
            return None
        seconds = number / 1000 if number > _EPOCH_MS else number
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if not isinstance(value, str):
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def unwrap(value: Any) -> tuple[Any, dict[str, Any]]:
    """Peel an envelope off a success body (§7.2): the payload, and the envelope's other keys.

    ``{"data": x, "total": 3}`` and ``{"code": 0, "message": "ok", "data": x}`` give ``x``; a dict whose
    other keys are not envelope keys is itself the payload (unless ``code`` or ``success`` shows it is an
    envelope); a list is the payload.
    """
    if not isinstance(value, dict) or "data" not in value or value["data"] is None:
        return value, {}
    siblings = {key: item for key, item in value.items() if key != "data"}
    if set(siblings) <= ENVELOPE_KEYS or "code" in siblings or "success" in siblings:
        return value["data"], siblings
    return value, {}


def find_list(payload: Any, keys: tuple[str, ...] = LIST_KEYS) -> list[Any] | None:
    """The list in a payload (§7.4): the payload itself, the first list under ``keys``, or the only list.

    Returns None when there is none (or several unnamed ones).
    """
    if isinstance(payload, list):
        return payload
    if not isinstance(payload, dict):
        return None
    for key in keys:
        value = payload.get(key)
        if isinstance(value, list):
            return value
        if isinstance(value, dict) and key == "data":
            nested = find_list(value, tuple(k for k in keys if k != "data"))
            if nested is not None:
                return nested
    lists = [value for value in payload.values() if isinstance(value, list)]
    return lists[0] if len(lists) == 1 else None
